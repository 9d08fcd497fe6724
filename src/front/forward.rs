//! The cache flow of a proxied request: look up, decide by RFC 9111, answer from the store, join
//! or lead a fill, revalidate (serving stale when that fails and may), or pass an uncacheable
//! exchange through; then invalidate after unsafe methods. Every proxied answer leaves with its
//! `Cache-Status` member and without the fields of the target list. Owns no state; everything
//! lives in `Proxy`.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::cache::cache_control::CacheControl;
use crate::cache::head::{Entry, Head};
use crate::cache::key::CacheKey;
use crate::cache::lookup::{lookup, Lookup};
use crate::cache::policy::{self, Failure, Freshness, Heuristic, NotStorable, Reuse, Stored};
use crate::cache::rules::Treatment;
use crate::error::{Error, Kind, Side};
use crate::fetch::origin::relaying_interim;
use crate::fetch::ranges::Ahead;
use crate::fetch::{Got, Miss};
use crate::front::cache_status::{CacheStatusField, Fwd};
use crate::front::interim::Interim;
use crate::front::redirect::{self, Asker};
use crate::front::relink::Relink;
use crate::front::Proxy;
use crate::front::{answer, ranged};
use crate::metrics::{CacheStatus, Source};

/// RFC 9211's field.
const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");

/// An answer and how it was obtained (`None`: passed through or not a cache decision).
pub type Answer = (Response<Body>, Option<CacheStatus>);

/// The request data the cache flow needs once the body has been split off.
pub struct Ask<'a> {
    pub method: &'a Method,
    pub target: &'a Uri,
    pub headers: &'a HeaderMap,
    pub version: http::Version,
    /// How the rules treat this key (heuristic, target list, key fields).
    pub treat: Treatment<'a>,
    /// The client connection's file job, when it can send stored bodies with `sendfile`.
    pub sendfile: Option<&'a crate::sendfile::Slot>,
    /// A mirror request's link rewriting, when its answer may be an index page.
    pub relink: Option<&'a Relink>,
    /// The group member that proved itself, on a mirror with `redirect_to_peers`.
    pub asker: Option<&'a Asker>,
}

impl<'a> Ask<'a> {
    /// What the fetcher needs of this request for a miss on `key` (revalidating `stale`).
    fn miss<'b>(&'b self, key: &'b str, stale: Option<&'b Arc<Entry>>) -> Miss<'b> {
        Miss {
            key,
            uri: self.target,
            headers: self.headers,
            version: self.version,
            treat: &self.treat,
            stale,
        }
    }
}

/// Handles GET and HEAD through the cache; other methods go to `pass_through`. `sendfile` is the
/// client connection's file job, if it has one. With `relink` (a mirror request), an index page
/// goes out with its links rewritten, whichever source answered: the one place where outgoing
/// bodies are transformed.
///
/// An HTTP/1.1 client also gets the 1xx responses of the origin requests made for it (see
/// `interim`; `interim` is its connection's queue): they are written before this returns its
/// answer, or its error.
pub async fn handle(
    app: &Arc<Proxy>,
    req: Request<Incoming>,
    target: Uri,
    sendfile: Option<&crate::sendfile::Slot>,
    relink: Option<&Relink>,
    interim: Option<&Interim>,
) -> Result<Answer, Error> {
    let interim = interim.filter(|_| req.version() == http::Version::HTTP_11);
    let window = interim.map(Interim::open);
    let hook = window.as_ref().map(|w| w.hook(app.metrics.clone()));
    let answer = relaying_interim(hook, proxied(app, req, target, sendfile, relink)).await;
    drop(window);
    if let Some(i) = interim {
        i.drained().await;
    }
    answer
}

/// [`handle`] without the interim responses.
async fn proxied(
    app: &Arc<Proxy>,
    req: Request<Incoming>,
    target: Uri,
    sendfile: Option<&crate::sendfile::Slot>,
    relink: Option<&Relink>,
) -> Result<Answer, Error> {
    let mut trace = CacheStatusField::default();
    let cacheable_method = req.method() == Method::GET || req.method() == Method::HEAD;
    let Some(key) = CacheKey::from_uri(&target).filter(|_| cacheable_method) else {
        trace.fwd = Some(if cacheable_method {
            Fwd::Bypass
        } else {
            Fwd::Method
        });
        let answer = Box::pin(pass_through(app, req, &target, &mut trace)).await?;
        return Ok(finish(app, answer, &trace));
    };
    let (mut parts, _body) = req.into_parts();
    if let Some(r) = relink {
        r.ask(&mut parts.headers);
    }
    let asker = parts.extensions.get::<Asker>().copied();
    let ask = Ask {
        method: &parts.method,
        target: &target,
        headers: &parts.headers,
        version: parts.version,
        treat: app.rules.treat(key.as_str()),
        sendfile,
        relink,
        asker: asker.as_ref(),
    };
    let (resp, status) = cached(app, &ask, key.as_str(), &mut trace).await?;
    let resp = match relink {
        Some(r) => Box::pin(r.finish(ask.method, resp)).await,
        None => resp,
    };
    Ok(finish(app, (resp, status), &trace))
}

/// The last touch on every proxied answer: the fields of the target list (RFC 9213) never
/// leave, and this cache's `Cache-Status` member is appended after any from upstream (RFC 9211
/// §2: the member closest to the user comes last).
fn finish(app: &Proxy, (mut resp, status): Answer, trace: &CacheStatusField) -> Answer {
    let headers = resp.headers_mut();
    for name in app.rules.targets() {
        headers.remove(name);
    }
    if let Ok(v) = HeaderValue::try_from(trace.member(resp.status())) {
        resp.headers_mut().append(CACHE_STATUS, v);
    }
    (resp, status)
}

/// Remaining freshness in whole seconds, negative when stale (RFC 9211 §2.4 `ttl`).
fn ttl(stored: &Stored<'_>, now: SystemTime, h: Heuristic<'_>) -> i64 {
    ttl_secs(stored.freshness(now, h))
}

/// `ttl` of a freshness already judged.
fn ttl_secs(f: Freshness) -> i64 {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    match f {
        Freshness::Fresh { ttl } => secs(ttl),
        Freshness::Stale { by } => -secs(by),
    }
}

/// `ttl` of a fill's head or a stored entry, right now.
fn ttl_of(head: &Head, h: Heuristic<'_>) -> i64 {
    ttl(&head.stored(&head.headers()), SystemTime::now(), h)
}

async fn cached(
    app: &Arc<Proxy>,
    ask: &Ask<'_>,
    key: &str,
    trace: &mut CacheStatusField,
) -> Result<Answer, Error> {
    let req_cc = CacheControl::from_request(ask.headers);
    let now = SystemTime::now();
    let h = ask.treat.heuristic;
    let mut stale = None;
    match lookup(&app.store, key, &ask.treat, ask.headers).await {
        Lookup::Missing => trace.fwd = Some(Fwd::UriMiss),
        Lookup::OtherVariants => trace.fwd = Some(Fwd::VaryMiss),
        Lookup::Found(entry) => {
            let headers = entry.headers();
            let stored = entry.stored(&headers);
            let (reuse, freshness) = policy::judge(&stored, &req_cc, now, h);
            trace.ttl = Some(ttl_secs(freshness));
            if reuse == Reuse::Fresh {
                // A content server sends a member to the members that hold it.
                if let Some(a) = redirect::offer(app, ask, &entry, &headers, trace) {
                    return Ok(a);
                }
            }
            match reuse {
                // One call site for the answers from the store: one state in this future.
                Reuse::Fresh | Reuse::StaleAllowed | Reuse::StaleWhileRevalidate => {
                    if let Some(a) = from_store(app, ask, &entry, headers, CacheStatus::Hit).await {
                        trace.hit = true;
                        if reuse == Reuse::StaleWhileRevalidate {
                            trace.detail = Some("stale-while-revalidate");
                            revalidate_in_background(app, ask, key, entry);
                        }
                        return Ok(a);
                    }
                    *trace = unreadable();
                }
                Reuse::Revalidate => {
                    // Fresh, and reusable but for the request's directives: `fwd=request`.
                    let by_request = matches!(freshness, Freshness::Fresh { .. })
                        && policy::reuse(&stored, &CacheControl::default(), now, h) == Reuse::Fresh;
                    trace.fwd = Some(if by_request { Fwd::Request } else { Fwd::Stale });
                    if policy::validators(&headers).is_empty() {
                        trace.detail = Some("stale-without-validators");
                    }
                    stale = Some(entry);
                }
            }
        }
    }
    if req_cc.only_if_cached {
        return Err(Error::downstream(
            Kind::OnlyIfCached,
            "only-if-cached: no usable stored response",
        ));
    }
    // Misses and revalidations are boxed: a hit's future stays small.
    if ask.method == Method::HEAD && stale.is_none() {
        return Box::pin(head_through(app, ask, trace)).await;
    }
    let result = Box::pin(fetch(app, ask, key, stale.as_ref(), trace)).await;
    let Some(entry) = stale else {
        return result;
    };
    // RFC 9111 §4.2.4: what a failed revalidation gets, decided in one place.
    let failure = match &result {
        Ok((resp, _)) if resp.status().is_server_error() => {
            Some((Failure::ServerError, "origin-server-error"))
        }
        Err(e) if e.side == Side::Upstream && unreachable(e.kind) => {
            Some((Failure::Unreachable, e.kind.as_str()))
        }
        Err(e) if e.side != Side::Downstream => Some((Failure::ServerError, e.kind.as_str())),
        _ => None,
    };
    let Some((failure, why)) = failure else {
        return result;
    };
    let headers = entry.headers();
    let stored = entry.stored(&headers);
    let now = SystemTime::now();
    if !policy::serve_stale_on_error(&stored, &req_cc, now, h, failure) {
        return result;
    }
    tracing::info!(%key, why, "revalidation failed; serving the stored response stale");
    *trace = CacheStatusField {
        hit: true,
        ttl: Some(ttl(&stored, now, h)),
        detail: Some(why),
        ..CacheStatusField::default()
    };
    drop(result);
    Box::pin(from_store(app, ask, &entry, headers, CacheStatus::Hit))
        .await
        .ok_or_else(|| {
            Error::upstream(
                Kind::ConnectFailed,
                "origin failed and the stale copy is unreadable",
            )
        })
}

/// Error kinds that mean no response came from the origin: the cache is disconnected (RFC
/// 9111 §4.2.4): refused, closed or timed out, or no trustworthy TLS session.
fn unreachable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::ConnectFailed
            | Kind::ConnectTimeout
            | Kind::ResponseTimeout
            | Kind::UpstreamProtocol
            | Kind::Tls
    )
}

/// The trace of a request whose fresh stored copy turned out unreadable: it goes on as a miss.
fn unreadable() -> CacheStatusField {
    CacheStatusField {
        fwd: Some(Fwd::UriMiss),
        detail: Some("stored-body-unreadable"),
        ..CacheStatusField::default()
    }
}

/// Answers from `entry`; `stored` are its header fields, unpacked once per request.
async fn from_store(
    app: &Arc<Proxy>,
    ask: &Ask<'_>,
    entry: &Arc<Entry>,
    stored: HeaderMap,
    status: CacheStatus,
) -> Option<Answer> {
    let age = entry.timing.current_age(SystemTime::now());
    answer::from_entry(
        ask.method,
        ask.headers,
        entry,
        stored,
        age,
        &app.store,
        &app.metrics,
        ask.sendfile,
        ask.relink,
    )
    .await
    .map(|r| (r, Some(status)))
}

/// Miss or revalidation: asks the fetcher (the one miss entry point) and answers from what it
/// got. A stored entry that turns out unreadable (it is dropped) costs one more ask.
async fn fetch(
    app: &Arc<Proxy>,
    ask: &Ask<'_>,
    key: &str,
    stale: Option<&Arc<Entry>>,
    trace: &mut CacheStatusField,
) -> Result<Answer, Error> {
    let miss = ask.miss(key, stale);
    let h = ask.treat.heuristic;
    let mut tries = 2;
    loop {
        tries -= 1;
        match app.fetcher.fill(&miss).await? {
            Got::Fill {
                fill,
                head,
                status,
                peer,
            } => {
                trace.stored = true;
                trace.fwd_status = Some(head.status);
                trace.ttl = Some(ttl_of(&head.head, h));
                trace.collapsed = status == CacheStatus::Collapsed;
                if let Some(copy) = peer {
                    trace.peer = Some(copy.node.to_string());
                    if copy.revalidated {
                        trace.fwd_status = Some(StatusCode::NOT_MODIFIED);
                    }
                }
                // The origin made a MISS for this very request: no Age of ours (RFC 9111 §5.1).
                let age = (status != CacheStatus::Miss)
                    .then(|| head.timing.current_age(SystemTime::now()));
                let ahead = (ask.method == Method::GET).then_some(Ahead {
                    fetcher: &app.fetcher,
                    key,
                    uri: ask.target,
                    headers: ask.headers,
                    version: ask.version,
                });
                let resp = answer::from_fill(
                    ask.method,
                    ask.headers,
                    &fill,
                    &head,
                    age,
                    ask.relink,
                    ahead.as_ref(),
                );
                return Ok((resp, Some(status)));
            }
            Got::Stored { entry, status } => {
                let headers = entry.headers();
                let t = ttl(&entry.stored(&headers), SystemTime::now(), h);
                if let Some(a) = from_store(app, ask, &entry, headers, status).await {
                    *trace = match status {
                        CacheStatus::Hit => CacheStatusField {
                            hit: true,
                            ttl: Some(t),
                            ..CacheStatusField::default()
                        },
                        _ => CacheStatusField {
                            collapsed: status == CacheStatus::Collapsed,
                            fwd_status: Some(StatusCode::NOT_MODIFIED),
                            ttl: Some(t),
                            detail: None,
                            ..std::mem::take(trace)
                        },
                    };
                    return Ok(a);
                }
                if status == CacheStatus::Revalidated || tries == 0 {
                    return Err(Error::storage("the stored entry is unreadable"));
                }
            }
            Got::Span(span) => {
                trace.fwd_status = Some(span.head.status);
                trace.ttl = Some(ttl_of(&span.head, h));
                trace.peer = Some(span.node.to_string());
                trace.detail = Some("range-not-filled");
                return Ok((ranged::from_peer(span), Some(CacheStatus::Peer)));
            }
            Got::Direct { resp, why, passed } => {
                let (resp, upstream) = ranged::unstored(app, ask, resp, passed).await?;
                trace.fwd_status = Some(upstream);
                trace.ttl = None;
                trace.detail = Some(why);
                return Ok((resp, Some(CacheStatus::Miss)));
            }
        }
    }
}

/// stale-while-revalidate: refresh `entry` without making anyone wait (RFC 5861 §3).
fn revalidate_in_background(app: &Arc<Proxy>, ask: &Ask<'_>, key: &str, entry: Arc<Entry>) {
    app.fetcher.refresh(&ask.miss(key, None), entry);
}

/// HEAD without a stored GET: ask upstream with HEAD, store nothing.
async fn head_through(
    app: &Arc<Proxy>,
    ask: &Ask<'_>,
    trace: &mut CacheStatusField,
) -> Result<Answer, Error> {
    let resp = app
        .fetcher
        .pass(
            Method::HEAD,
            ask.target,
            ask.headers,
            ask.version,
            body::empty(),
        )
        .await?;
    trace.fwd_status = Some(resp.status());
    trace.detail = Some(NotStorable::Method.as_str());
    Ok((relay(app, ask.method, resp), Some(CacheStatus::Miss)))
}

/// Any other method (or a non-http(s) target): forward with its body, relay the answer, and
/// invalidate what an unsafe method changed (RFC 9111 §4.4).
async fn pass_through(
    app: &Arc<Proxy>,
    req: Request<Incoming>,
    target: &Uri,
    trace: &mut CacheStatusField,
) -> Result<Answer, Error> {
    let (parts, incoming) = req.into_parts();
    let resp = app
        .fetcher
        .pass(
            parts.method.clone(),
            target,
            &parts.headers,
            parts.version,
            body::from_client(incoming),
        )
        .await?;
    trace.fwd_status = Some(resp.status());
    for uri in policy::invalidations(&parts.method, resp.status(), target, resp.headers()) {
        if let Some(k) = CacheKey::from_uri(&uri) {
            let store = app.store.clone();
            let k = k.as_str().to_owned();
            let _ = tokio::task::spawn_blocking(move || store.invalidate(&k)).await;
        }
    }
    Ok((relay(app, &parts.method, resp), None))
}

/// Relays an upstream response: hop-by-hop fields removed, body streamed with the read timeout.
/// A HEAD client gets no body, even when the upstream request was a GET (a revalidation).
pub(super) fn relay(app: &Arc<Proxy>, method: &Method, resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, incoming) = resp.into_parts();
    crate::http::headers::strip_hop_by_hop(&mut parts.headers);
    let bodyless = method == Method::HEAD
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED
        || parts.status.is_informational();
    let body = if bodyless {
        body::empty()
    } else {
        relay_body(app, incoming)
    };
    Response::from_parts(parts, body)
}

fn relay_body(app: &Arc<Proxy>, mut incoming: Incoming) -> Body {
    use http_body::Body as _;
    let len = incoming.size_hint().exact();
    if incoming.is_end_stream() {
        return body::empty();
    }
    let (tx, out) = body::channel(len);
    let timeout = app.fetcher.origin.read_timeout();
    let metrics = app.metrics.clone();
    tokio::spawn(async move {
        loop {
            match tokio::time::timeout(timeout, incoming.frame()).await {
                Ok(None) => return,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        metrics.bytes_from(Source::Origin, data.len() as u64);
                        if tx.send(Ok(data)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Some(Err(e))) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
                Err(_) => {
                    let _ = tx.send(Err("upstream stalled".into())).await;
                    return;
                }
            }
        }
    });
    out
}

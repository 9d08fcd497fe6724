//! The cache flow of a proxied request: look up, decide by RFC 9111, answer from the store, join
//! or lead a fill, revalidate, or pass an uncacheable exchange through; then invalidate after
//! unsafe methods. Owns no state; everything lives in `App`.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::app::App;
use crate::body::{self, Body};
use crate::cache::cache_control::CacheControl;
use crate::cache::inflight::{Join, Outcome};
use crate::cache::key::{CacheKey, Variant};
use crate::cache::policy::{self, Heuristic, Reuse, Stored};
use crate::cache::rules::Treatment;
use crate::cache::store::Entry;
use crate::error::{Error, Kind};
use crate::fetch::{Fetched, Led, Wanted};
use crate::front::answer;
use crate::front::relink::Relink;
use crate::metrics::{CacheStatus, Source};

/// How many times a request re-joins after the fill it followed was abandoned by its leader.
const MAX_JOINS: usize = 3;

/// An answer and how it was obtained (`None`: passed through or not a cache decision).
pub type Answer = (Response<Body>, Option<CacheStatus>);

/// The request data the cache flow needs once the body has been split off.
pub struct Ask<'a> {
    pub method: &'a Method,
    pub target: &'a Uri,
    pub headers: &'a HeaderMap,
    pub version: http::Version,
    /// The client connection's file job, when it can send stored bodies with `sendfile`.
    pub sendfile: Option<&'a crate::sendfile::Slot>,
    /// A mirror request's link rewriting, when its answer may be an index page.
    pub relink: Option<&'a Relink>,
}

/// Handles GET and HEAD through the cache; other methods go to `pass_through`. `sendfile` is the
/// client connection's file job, if it has one. With `relink` (a mirror request), an index page
/// goes out with its links rewritten, whichever source answered: the one place where outgoing
/// bodies are transformed.
pub async fn handle(
    app: &Arc<App>,
    req: Request<Incoming>,
    target: Uri,
    sendfile: Option<&crate::sendfile::Slot>,
    relink: Option<&Relink>,
) -> Result<Answer, Error> {
    let cacheable_method = req.method() == Method::GET || req.method() == Method::HEAD;
    let Some(key) = CacheKey::from_uri(&target).filter(|_| cacheable_method) else {
        return pass_through(app, req, &target).await;
    };
    let (mut parts, _body) = req.into_parts();
    if let Some(r) = relink {
        r.ask(&mut parts.headers);
    }
    let ask = Ask {
        method: &parts.method,
        target: &target,
        headers: &parts.headers,
        version: parts.version,
        sendfile,
        relink,
    };
    let (resp, status) = cached(app, &ask, key.as_str()).await?;
    let resp = match relink {
        Some(r) => r.finish(ask.method, resp).await,
        None => resp,
    };
    Ok((resp, status))
}

/// Picks the stored variant matching the request's `Vary`-named fields and the key fields of
/// the URL's rule (RFC 9111 §4.1).
async fn select(
    app: &App,
    key: &str,
    treat: &Treatment<'_>,
    req: &HeaderMap,
) -> Option<Arc<Entry>> {
    let variants = app.store.lookup(key).await?;
    variants
        .entries
        .iter()
        .find(|e| {
            // Nothing to select by (no Vary, no key fields): it matches every request.
            (e.variant.as_str().is_empty() && treat.key_fields.is_empty())
                || Variant::of_request(&treat.vary(&e.headers()), req).as_ref() == Some(&e.variant)
        })
        .cloned()
}

async fn cached(app: &Arc<App>, ask: &Ask<'_>, key: &str) -> Result<Answer, Error> {
    let req_cc = CacheControl::from_request(ask.headers);
    let now = SystemTime::now();
    let treat = app.rules.treat(key);
    let h = treat.heuristic;
    let mut stale = None;
    if let Some(entry) = select(app, key, &treat, ask.headers).await {
        let headers = entry.headers();
        let stored = Stored {
            status: entry.status,
            headers: &headers,
            timing: entry.timing,
        };
        match policy::reuse(&stored, &req_cc, now, h) {
            Reuse::Fresh | Reuse::StaleAllowed => {
                if let Some(a) = from_store(app, ask, &entry, headers, CacheStatus::Hit).await {
                    return Ok(a);
                }
            }
            Reuse::StaleWhileRevalidate => {
                if let Some(a) = from_store(app, ask, &entry, headers, CacheStatus::Hit).await {
                    revalidate_in_background(app, ask, key, entry);
                    return Ok(a);
                }
            }
            Reuse::Revalidate => stale = Some(entry),
        }
    }
    if req_cc.only_if_cached {
        return Err(Error::downstream(
            Kind::OnlyIfCached,
            "only-if-cached: no usable stored response",
        ));
    }
    if ask.method == Method::HEAD && stale.is_none() {
        return head_through(app, ask).await;
    }
    let result = fetch(app, ask, key, &treat, stale.as_ref()).await;
    match (result, stale) {
        (Ok((resp, status)), Some(entry))
            if resp.status().is_server_error() && may_serve_stale(&entry, &req_cc, h) =>
        {
            tracing::info!(%key, status = %resp.status(), "origin error; serving stale (stale-if-error)");
            drop((resp, status));
            Ok(stale_answer(app, ask, &entry).await?)
        }
        (Err(e), Some(entry))
            if e.side != crate::error::Side::Downstream && may_serve_stale(&entry, &req_cc, h) =>
        {
            tracing::info!(%key, "origin failed ({e}); serving stale (stale-if-error)");
            Ok(stale_answer(app, ask, &entry).await?)
        }
        (r, _) => r,
    }
}

fn may_serve_stale(entry: &Entry, req_cc: &CacheControl, h: Heuristic) -> bool {
    let headers = entry.headers();
    let stored = Stored {
        status: entry.status,
        headers: &headers,
        timing: entry.timing,
    };
    policy::stale_if_error(&stored, req_cc, SystemTime::now(), h)
}

async fn stale_answer(app: &Arc<App>, ask: &Ask<'_>, entry: &Arc<Entry>) -> Result<Answer, Error> {
    from_store(app, ask, entry, entry.headers(), CacheStatus::Hit)
        .await
        .ok_or_else(|| {
            Error::upstream(
                Kind::ConnectFailed,
                "origin failed and the stale copy is unreadable",
            )
        })
}

/// Answers from `entry`; `stored` are its header fields, unpacked once per request.
async fn from_store(
    app: &Arc<App>,
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

/// Miss or revalidation: join the fill of `key` or lead it.
async fn fetch(
    app: &Arc<App>,
    ask: &Ask<'_>,
    key: &str,
    treat: &Treatment<'_>,
    stale: Option<&Arc<Entry>>,
) -> Result<Answer, Error> {
    for _ in 0..MAX_JOINS {
        match app.inflight.join(key) {
            Join::Leader(permit) => {
                if stale.is_none() {
                    // A fill may have been committed between our lookup and our join.
                    if let Some(entry) = select(app, key, treat, ask.headers).await {
                        drop(permit);
                        if let Some(a) =
                            from_store(app, ask, &entry, entry.headers(), CacheStatus::Hit).await
                        {
                            return Ok(a);
                        }
                        continue;
                    }
                }
                return lead(app, ask, key, permit, stale, true).await;
            }
            Join::Follower(fill) => match fill.head().await {
                Ok(head) => {
                    let vary = treat.vary(&head.headers);
                    if Variant::of_request(&vary, ask.headers).as_ref() != Some(&head.variant) {
                        break; // another variant: fetch our own
                    }
                    let resp = answer::from_fill(ask.method, ask.headers, &fill, &head, ask.relink);
                    return Ok((resp, Some(CacheStatus::Collapsed)));
                }
                Err(Outcome::Freshened(entry)) => {
                    if let Some(a) =
                        from_store(app, ask, &entry, entry.headers(), CacheStatus::Collapsed).await
                    {
                        return Ok(a);
                    }
                }
                Err(Outcome::Failed(e)) => return Err(e),
                Err(Outcome::NotShared) => break,
                Err(_) => continue, // abandoned: somebody (maybe us) leads anew
            },
            Join::Full => return unstored(app, ask, Method::GET).await,
        }
    }
    match app.inflight.solo() {
        Some(permit) => lead(app, ask, key, permit, stale, false).await,
        None => unstored(app, ask, Method::GET).await,
    }
}

/// Leads the fill of `permit` (in a task of its own, which goes on if this client leaves) and
/// answers from what it got; `group`: try the peers first on a miss.
async fn lead(
    app: &Arc<App>,
    ask: &Ask<'_>,
    key: &str,
    permit: crate::cache::inflight::FillPermit,
    stale: Option<&Arc<Entry>>,
    group: bool,
) -> Result<Answer, Error> {
    let fill = permit.fill().clone();
    let want = Wanted {
        key: key.to_owned(),
        uri: ask.target.clone(),
        headers: ask.headers.clone(),
        version: ask.version,
    };
    let led = app
        .fetcher
        .lead_in_task(permit, want, stale.cloned(), group)
        .await
        .map_err(|e| Error::internal(format!("the fill's leader failed: {e}")))??;
    match led {
        Led::Peer(head) => {
            let resp = answer::from_fill(ask.method, ask.headers, &fill, &head, ask.relink);
            Ok((resp, Some(CacheStatus::Peer)))
        }
        Led::Fetched(fetched) => answer_fetched(app, ask, &fill, fetched).await,
    }
}

/// The client's answer to what a fill's leader got from the origin.
async fn answer_fetched(
    app: &Arc<App>,
    ask: &Ask<'_>,
    fill: &Arc<crate::cache::inflight::Fill>,
    fetched: Fetched,
) -> Result<Answer, Error> {
    match fetched {
        Fetched::Filling(head) => {
            let resp = answer::from_fill(ask.method, ask.headers, fill, &head, ask.relink);
            Ok((resp, Some(CacheStatus::Miss)))
        }
        Fetched::Freshened(entry) => {
            from_store(app, ask, &entry, entry.headers(), CacheStatus::Revalidated)
                .await
                .ok_or_else(|| Error::storage("freshened entry unreadable"))
        }
        Fetched::Direct(resp) => Ok((relay(app, resp), Some(CacheStatus::Miss))),
    }
}

/// stale-while-revalidate: refresh `entry` without making anyone wait (RFC 5861 §3).
fn revalidate_in_background(app: &Arc<App>, ask: &Ask<'_>, key: &str, entry: Arc<Entry>) {
    let Join::Leader(permit) = app.inflight.join(key) else {
        return; // somebody is already fetching it
    };
    let want = Wanted {
        key: key.to_owned(),
        uri: ask.target.clone(),
        headers: ask.headers.clone(),
        version: ask.version,
    };
    let task = app.fetcher.lead_in_task(permit, want, Some(entry), false);
    let key = key.to_owned();
    tokio::spawn(async move {
        if let Ok(Err(e)) = task.await {
            tracing::info!(%key, "background revalidation failed: {e}");
        }
    });
}

/// HEAD without a stored GET: ask upstream with HEAD, store nothing.
async fn head_through(app: &Arc<App>, ask: &Ask<'_>) -> Result<Answer, Error> {
    unstored(app, ask, Method::HEAD).await
}

/// Asks upstream with `method` and the client's own fields, relays the answer, stores nothing.
/// For GET: a miss while `cache.max_fills` fills run (counted).
async fn unstored(app: &Arc<App>, ask: &Ask<'_>, method: Method) -> Result<Answer, Error> {
    if method == Method::GET {
        crate::metrics::Metrics::inc(&app.metrics.fills_passed_unstored);
    }
    let req = app.fetcher.upstream_request(
        method,
        ask.target,
        ask.headers,
        ask.version,
        body::empty(),
    )?;
    crate::metrics::Metrics::inc(&app.metrics.origin_requests);
    let resp = app.fetcher.origin.send(req).await?;
    Ok((relay(app, resp), Some(CacheStatus::Miss)))
}

/// Any other method (or a non-http(s) target): forward with its body, relay the answer, and
/// invalidate what an unsafe method changed (RFC 9111 §4.4).
async fn pass_through(
    app: &Arc<App>,
    req: Request<Incoming>,
    target: &Uri,
) -> Result<Answer, Error> {
    let (parts, incoming) = req.into_parts();
    let upstream = app.fetcher.upstream_request(
        parts.method.clone(),
        target,
        &parts.headers,
        parts.version,
        body::from_client(incoming),
    )?;
    crate::metrics::Metrics::inc(&app.metrics.origin_requests);
    let resp = app.fetcher.origin.send(upstream).await?;
    for uri in policy::invalidations(&parts.method, resp.status(), target, resp.headers()) {
        if let Some(k) = CacheKey::from_uri(&uri) {
            let store = app.store.clone();
            let k = k.as_str().to_owned();
            let _ = tokio::task::spawn_blocking(move || store.invalidate(&k)).await;
        }
    }
    Ok((relay(app, resp), None))
}

/// Relays an upstream response: hop-by-hop fields removed, body streamed with the read timeout.
fn relay(app: &Arc<App>, resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, incoming) = resp.into_parts();
    crate::front::headers::strip_hop_by_hop(&mut parts.headers);
    let bodyless = parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED
        || parts.status.is_informational();
    let body = if bodyless {
        body::empty()
    } else {
        relay_body(app, incoming)
    };
    Response::from_parts(parts, body)
}

fn relay_body(app: &Arc<App>, mut incoming: Incoming) -> Body {
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

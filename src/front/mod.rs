//! The client-facing side: the proxy listener, access control, routing, and the per-request
//! envelope (X-Cache, Via, access log, counters). Errors become responses only in `respond`.

pub mod admin;
pub mod answer;
pub mod cache_status;
pub mod classify;
pub mod forward;
pub mod intercept;
pub mod interim;
pub mod links;
pub mod meter;
pub mod pac;
pub mod ranged;
pub mod redirect;
pub mod relink;
pub mod respond;
mod state;
pub mod tunnel;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::accesslog::Record;
use crate::body::{self, Body, BodyEnd};
use crate::error::{Error, Kind};
use crate::metrics::{CacheStatus, ErrorRecord, Metrics};
use crate::sendfile::{SendfileIo, Slot};

use self::classify::{classify, Route, Routing};
use self::interim::{Interim, InterimIo};
pub use self::state::{Proxy, SHUTDOWN_GRACE};

/// This cache's result field (`HIT`, `MISS`, …).
const X_CACHE: http::HeaderName = http::HeaderName::from_static("x-cache");

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `stop` turns true, then drains them.
pub async fn serve(listener: TcpListener, app: Arc<Proxy>, stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(open) = Open::admit(&app) else {
                    refuse(&app, tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (app, stop) = (app.clone(), stop.clone());
                conns.spawn(async move {
                    connection(app, tcp, peer, stop).await;
                    drop(open);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stopped(&mut stopping) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown grace period over; cutting {} connections",
            conns.len()
        );
        conns.abort_all();
    }
}

/// One client connection, counted against `proxy.max_connections` until dropped.
struct Open(Arc<Metrics>);

impl Open {
    /// A place for one more connection, if the bound allows.
    fn admit(app: &Proxy) -> Option<Open> {
        let max = app.config.proxy.max_connections as u64;
        app.metrics
            .connections_open
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .ok()?;
        Some(Open(app.metrics.clone()))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

/// A connection beyond `proxy.max_connections`: counted, told 503 if its socket takes the
/// bytes at once, and closed. Nothing of it is read.
fn refuse(app: &Proxy, tcp: tokio::net::TcpStream) {
    Metrics::inc(&app.metrics.connections_refused);
    let e = Error::new(
        Kind::Busy,
        crate::error::Side::Internal,
        format!(
            "{} client connections are open (proxy.max_connections)",
            app.config.proxy.max_connections
        ),
    );
    let _ = tcp.try_write(&respond::error_bytes(&e));
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// What the handler knows about the client connection a request came on.
pub struct Client {
    pub peer: SocketAddr,
    /// Whether `proxy.allow` admits the client.
    pub allowed: bool,
    /// The connection's file job for `sendfile` (plain TCP connections only).
    pub slot: Option<Slot>,
    /// The site served when the connection is a decrypted `CONNECT` tunnel.
    pub site: Option<intercept::Site>,
    /// The queue the connection's IO writes the origins' 1xx responses from (see `interim`).
    pub interim: Option<Interim>,
    pub stop: watch::Receiver<bool>,
}

/// When a request arrived: the wall clock for the log, tokio's clock for durations.
#[derive(Debug, Clone, Copy)]
pub struct Arrived {
    pub start: SystemTime,
    pub began: tokio::time::Instant,
}

impl Arrived {
    fn now() -> Arrived {
        Arrived {
            start: SystemTime::now(),
            began: tokio::time::Instant::now(),
        }
    }
}

async fn connection(
    app: Arc<Proxy>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let allowed = app.config.proxy.allow.allows(peer.ip());
    // The connection's file job: stored bodies put it there, the IO sends it with `sendfile`.
    let slot = Slot::default();
    let interim = Interim::default();
    let io = InterimIo::new(SendfileIo::new(tcp, slot.clone()), interim.clone());
    let client = Arc::new(Client {
        peer,
        allowed,
        slot: Some(slot),
        site: None,
        interim: Some(interim),
        stop,
    });
    serve_http1(TokioIo::new(io), app, client).await;
}

/// Serves HTTP/1.1 requests on `io` with `handle` until the client goes or the proxy stops
/// (then the open response may finish).
pub(crate) async fn serve_http1<I>(io: I, app: Arc<Proxy>, client: Arc<Client>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut stop = client.stop.clone();
    let peer = client.peer;
    let svc = service_fn(move |req: Request<Incoming>| {
        let (app, client) = (app.clone(), client.clone());
        async move { Ok::<_, Infallible>(handle(app, &client, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let conn = builder.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            return;
        }
        _ = stopped(&mut stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// One request: (inside an intercepted tunnel, its absolute https form), ACL, loop check,
/// route, answer, then decorate and log.
async fn handle(app: Arc<Proxy>, client: &Client, req: Request<Incoming>) -> Response<Body> {
    let arrived = Arrived::now();
    let (start, began, peer) = (arrived.start, arrived.began, client.peer);
    let method = req.method().clone();
    let mut url = classify::loggable(req.uri());
    let req = match &client.site {
        None => Ok(req),
        Some(site) => site
            .absolute(req)
            .inspect(|r| url = classify::loggable(r.uri())),
    };
    let outcome = match req {
        Err(e) => Err(e),
        Ok(_) if !client.allowed => {
            Metrics::inc(&app.metrics.denied);
            Err(Error::downstream(
                Kind::Forbidden,
                format!("client {} is not allowed to use this proxy", peer.ip()),
            ))
        }
        Ok(req) if app.fetcher.via.is_in(req.headers()) => Err(Error::downstream(
            Kind::LoopDetected,
            "request came back to this proxy (Via)",
        )),
        Ok(req) => route(&app, req, client, arrived).await,
    };
    let (mut resp, status, result) = match outcome {
        Ok((resp, Some(s))) => (resp, Some(s), s.as_str()),
        Ok((resp, None)) => (resp, None, "NONE"),
        Err(e) => {
            Metrics::inc(&app.metrics.errors);
            if e.side != crate::error::Side::Downstream {
                tracing::warn!(%url, "{e}");
            }
            let unix_secs = start
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            app.metrics.record_error(ErrorRecord::new(
                unix_secs,
                peer.ip().to_string(),
                method.to_string(),
                &url,
                respond::status_of(&e).as_u16(),
                e.kind.as_str(),
                &e.detail,
            ));
            let tag = if e.kind == Kind::Forbidden {
                "DENIED"
            } else {
                "ERROR"
            };
            (respond::error_response(&e), None, tag)
        }
    };
    match status {
        Some(s) => {
            app.metrics.request(s);
            resp.headers_mut()
                .insert(X_CACHE, HeaderValue::from_static(s.as_str()));
        }
        None => Metrics::inc(&app.metrics.requests_other),
    }
    if method == Method::CONNECT && resp.status() == StatusCode::OK {
        return resp; // an open tunnel: `meter::Tunnel` logs it when it ends
    }
    if method != Method::CONNECT {
        app.fetcher
            .via
            .append(resp.headers_mut(), http::Version::HTTP_11);
    }
    let source = match status {
        Some(CacheStatus::Hit | CacheStatus::Revalidated | CacheStatus::Collapsed) => "cache",
        Some(CacheStatus::Peer) => "peer",
        Some(CacheStatus::Miss) => "origin",
        None => "-",
    };
    let code = resp.status().as_u16();
    let log_app = app.clone();
    let (parts, body) = resp.into_parts();
    let body = body::observed(body, move |bytes, end| {
        log_app
            .metrics
            .bytes_to_clients
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        log_app.access.log(&Record {
            start,
            duration: began.elapsed(),
            client: peer,
            result,
            status: code,
            bytes,
            method: method.as_str(),
            url: &url,
            source,
            end: if end == BodyEnd::Complete {
                "complete"
            } else {
                "cut"
            },
            up: None,
        });
    });
    let mut resp = Response::from_parts(parts, body);
    if code >= 400 && resp.headers().get(header::CONNECTION).is_none() && result == "DENIED" {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn route(
    app: &Arc<Proxy>,
    mut req: Request<Incoming>,
    client: &Client,
    arrived: Arrived,
) -> Result<forward::Answer, Error> {
    classify::check_host_fields(req.headers())?;
    let routing = Routing {
        listen: app.listen,
        mirrors: &app.config.mirrors,
        connect_ports: &app.config.proxy.connect_ports,
    };
    let route = classify(req.method(), req.uri(), &routing);
    let redirects = match &route {
        Route::Mirror { mirror, .. } => app
            .config
            .mirrors
            .get(*mirror)
            .is_some_and(|m| m.redirect_to_peers),
        _ => false,
    };
    redirect::take(app, &mut req, redirects);
    match route {
        Route::Reject(e) => Err(e),
        Route::Admin { page } => {
            let host = req
                .uri()
                .authority()
                .map(|a| a.as_str())
                .or_else(|| req.headers().get(header::HOST)?.to_str().ok());
            admin::page(app, &page, host).map(|r| (r, None))
        }
        Route::Connect { host, port } => {
            if app
                .intercept
                .as_ref()
                .is_some_and(|i| i.hosts.matches(&host))
            {
                let resp = intercept::open(app, req, host, port, client, arrived);
                return Ok((resp, None));
            }
            // Boxed, like every path a cache hit does not take: the hit's future stays small
            // (it is moved whole several times per request; see `forward::handle`).
            let resp = Box::pin(tunnel::open(app, req, host, port, client, arrived)).await?;
            Ok((resp, None))
        }
        Route::Forward { target } => forward(app, req, target, client, false).await,
        Route::Mirror { target, .. } => forward(app, req, target, client, true).await,
    }
}

/// A forward or (`mirror`) mirror request through the cache: one call site, so the request's
/// future holds one `forward::handle` state, not one per route.
async fn forward(
    app: &Arc<Proxy>,
    req: Request<Incoming>,
    target: http::Uri,
    client: &Client,
    mirror: bool,
) -> Result<forward::Answer, Error> {
    let sendfile = client.slot.as_ref().filter(|_| app.config.cache.sendfile);
    let relink = mirror
        .then(|| app.relinker.for_request(req.uri(), req.headers()))
        .flatten();
    let interim = client.interim.as_ref();
    forward::handle(app, req, target, sendfile, relink.as_ref(), interim).await
}

//! The proxy's own pages: under `/_peercache/` the live dashboard, the status JSON, the
//! Prometheus metrics and the interception CA's certificate; `/proxy.pac` (and `/wpad.dat`) and `/favicon.ico`. Allowed clients only
//! (the ACL runs before routing).

pub mod status_text;

use std::sync::Arc;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use crate::error::{Error, Kind};
use crate::front::classify::{FAVICON_PAGE, PAC_PAGE};
use crate::front::pac;
use crate::front::Proxy;

/// The dashboard: one self-contained page (no external resource) that polls the status JSON.
const DASHBOARD: &str = include_str!("dashboard.html");
/// The icon browsers ask for (an SVG: every current browser takes one at `/favicon.ico`).
const FAVICON: &str = include_str!("favicon.svg");
/// Fills listed on the status page (the oldest); `inflight` counts them all.
const FILLS_LISTED: usize = 20;

/// Answers an admin page, or 404. `host` is the authority the client used to reach us (for the
/// PAC file's `PROXY` line).
pub fn page(app: &Arc<Proxy>, page: &str, host: Option<&str>) -> Result<Response<Body>, Error> {
    let (ctype, text) = match page {
        "" => ("text/html; charset=utf-8", DASHBOARD.to_owned()),
        "status" => ("application/json", status_json(app).to_string()),
        "metrics" => ("text/plain; version=0.0.4", app.metrics.to_prometheus()),
        "ca.pem" => return ca_pem(app),
        PAC_PAGE => {
            let proxy = pac::proxy_authority(host, app.listen);
            let intercepted: Vec<String> = (app.config.intercept.hosts.patterns().iter())
                .map(ToString::to_string)
                .collect();
            let text = pac::generate(&proxy, &intercepted, &app.config.proxy.pac_direct);
            (pac::CONTENT_TYPE, text)
        }
        FAVICON_PAGE => ("image/svg+xml", FAVICON.to_owned()),
        other => {
            return Err(Error::downstream(
                Kind::NotFound,
                format!("no admin page {other:?}"),
            ))
        }
    };
    let mut r = Response::new(body::full(text));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The interception CA's certificate, for clients to import; 404 when interception is off.
fn ca_pem(app: &Arc<Proxy>) -> Result<Response<Body>, Error> {
    let Some(intercept) = &app.intercept else {
        return Err(Error::downstream(
            Kind::NotFound,
            "no CA in use: interception is off ([intercept] hosts is empty); `peercache ca` \
             makes the CA and prints where it is",
        ));
    };
    let mut r = Response::new(body::full(intercept.leaves.ca().cert_pem().to_owned()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"peercache-ca.pem\""),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The status document: identity, cache occupancy, fills in progress, every counter, their
/// history over the last minutes and the last errors. Fields are only ever added (scripts read
/// it).
pub fn status_json(app: &Arc<Proxy>) -> serde_json::Value {
    let stats = app.store.stats();
    let summary = app.metrics.summary();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "via": app.fetcher.via.as_str(),
        "uptime_secs": app.started.elapsed().as_secs(),
        "listen": app.listen.to_string(),
        "cache": {
            "dir": app.config.cache.dir.display().to_string(),
            "max_size": app.config.cache.max_size,
            "max_object_size": app.config.cache.max_object_size,
            "urls": stats.urls,
            "used_bytes": stats.used_bytes,
            "blobs": stats.blobs,
            "weighted_kib": stats.weighted_kib,
        },
        "inflight": app.inflight.len(),
        "fills_running": app.inflight.running(),
        "fills": app.inflight.progress(FILLS_LISTED),
        "intercept": app.intercept.as_ref().map(|i| serde_json::json!({
            "hosts": i.hosts.patterns().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ca_cert": app.config.intercept.ca_cert.display().to_string(),
            "ca_fingerprint": i.leaves.ca().fingerprint(),
            "leaves_cached": i.leaves.cached(),
        })),
        "counters": app.metrics.to_json(),
        "summary": {
            "hit_ratio": summary.hit_ratio,
            "bytes_saved": summary.bytes_saved,
        },
        "history": app.metrics.history_json(),
        "recent_errors": app.metrics.recent_errors(),
        "peers": app.peers.as_ref().map(|p| p.status_json()),
    })
}

/// Fetches `/_peercache/status` from the proxy at `proxy` (e.g. "http://127.0.0.1:3128").
/// Every error names the address it tried.
pub async fn fetch_status(proxy: &str) -> Result<String, String> {
    use http_body_util::BodyExt;
    let bad_url = |why: &str| {
        format!("--proxy {proxy:?}: {why} (expected a URL such as \"http://127.0.0.1:3128\")")
    };
    let uri: http::Uri = proxy
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad_url(&e.to_string()))?;
    let host = uri.host().ok_or_else(|| bad_url("no host"))?.to_owned();
    let port = uri.port_u16().unwrap_or(3128);
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let tcp = crate::fetch::connect::tcp(&host, port, std::time::Duration::from_secs(5))
        .await
        .map_err(|e| {
            format!(
                "cannot reach the proxy at {addr}: {e} (is `peercache run` running there? \
                 --proxy names another address)"
            )
        })?;
    let talk = |e: hyper::Error| format!("the proxy at {addr}: {e}");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(talk)?;
    tokio::spawn(conn);
    let req = http::Request::get("/_peercache/status")
        .header(header::HOST, addr.as_str())
        .body(body::empty())
        .map_err(|e| format!("{addr}: {e}"))?;
    let resp = send.send_request(req).await.map_err(talk)?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(talk)?.to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!(
            "the proxy at {addr} answered {status}: {}",
            text.trim_end()
        ))
    }
}

//! The pages under `/_peercache/` on the proxy port: status JSON, Prometheus metrics, an index.

use std::sync::Arc;

use http::{header, HeaderValue, Response, StatusCode};

use crate::app::App;
use crate::body::{self, Body};
use crate::error::{Error, Kind};

/// Answers an admin page, or 404.
pub fn page(app: &Arc<App>, page: &str) -> Result<Response<Body>, Error> {
    let (ctype, text) = match page {
        "" => ("text/plain; charset=utf-8", index()),
        "status" => ("application/json", status_json(app).to_string()),
        "metrics" => ("text/plain; version=0.0.4", app.metrics.to_prometheus()),
        "ca.pem" => return ca_pem(app),
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

fn index() -> String {
    "peercache admin pages:\n  /_peercache/status   JSON status\n  /_peercache/metrics  Prometheus metrics\n  /_peercache/ca.pem   the interception CA certificate\n"
        .to_owned()
}

/// The interception CA's certificate, for clients to import; 404 when interception is off.
fn ca_pem(app: &Arc<App>) -> Result<Response<Body>, Error> {
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

/// The status document: identity, cache occupancy, fills in progress and every counter.
pub fn status_json(app: &Arc<App>) -> serde_json::Value {
    let stats = app.store.stats();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "via": &*app.fetcher.via,
        "uptime_secs": app.started.elapsed().as_secs(),
        "listen": app.listen.to_string(),
        "cache": {
            "dir": app.config.cache.dir.display().to_string(),
            "max_size": app.config.cache.max_size,
            "max_object_size": app.config.cache.max_object_size,
            "urls": stats.urls,
            "blobs": stats.blobs,
            "weighted_kib": stats.weighted_kib,
        },
        "inflight": app.inflight.len(),
        "intercept": app.intercept.as_ref().map(|i| serde_json::json!({
            "hosts": i.hosts.patterns().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ca_cert": app.config.intercept.ca_cert.display().to_string(),
            "ca_fingerprint": i.leaves.ca().fingerprint(),
            "leaves_cached": i.leaves.cached(),
        })),
        "counters": app.metrics.to_json(),
        "peers": app.peers.as_ref().map(|p| p.status_json()),
    })
}

/// Fetches `/_peercache/status` from the proxy at `proxy` (e.g. "http://127.0.0.1:3128").
pub async fn fetch_status(proxy: &str) -> Result<String, String> {
    use http_body_util::BodyExt;
    let uri: http::Uri = proxy.parse().map_err(|e| format!("{proxy}: {e}"))?;
    let host = uri.host().ok_or("the proxy URL needs a host")?.to_owned();
    let port = uri.port_u16().unwrap_or(3128);
    let tcp = crate::fetch::connect::tcp(&host, port, std::time::Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get("/_peercache/status")
        .header(header::HOST, format!("{host}:{port}"))
        .body(body::empty())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{status}: {text}"))
    }
}

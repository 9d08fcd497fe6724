//! CONNECT tunnels (RFC 9110 §9.3.6): connect upstream first, answer 200, then copy bytes both
//! ways until either side closes. Never looks inside the tunnel.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::app::App;
use crate::body::{self, Body};
use crate::error::{Error, Kind, Side};
use crate::fetch::connect;
use crate::metrics::Metrics;

/// Opens the upstream side, then upgrades the client connection into a byte pipe.
pub async fn open(
    app: &Arc<App>,
    req: Request<Incoming>,
    host: String,
    port: u16,
) -> Result<Response<Body>, Error> {
    let upstream = connect::stream_to(
        app.config.upstream.proxy.as_ref(),
        &host,
        port,
        app.config.upstream.connect_timeout,
    )
    .await
    .map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::TimedOut {
            Kind::ConnectTimeout
        } else {
            Kind::ConnectFailed
        };
        Error::new(kind, Side::Upstream, format!("CONNECT {host}:{port}: {e}"))
    })?;
    Metrics::inc(&app.metrics.tunnels);
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!("tunnel to {host}:{port} ended: {e}");
                }
            }
            Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
        }
    });
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

//! Opaque CONNECT tunnels (RFC 9110 §9.3.6): connect upstream first, answer 200, then copy bytes
//! both ways until both sides close or the tunnel idles out. Never looks inside the tunnel.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{self, Body};
use crate::error::{Error, Kind, Side};
use crate::fetch::connect;
use crate::front::meter::{End, Metered, Tunnel};
use crate::front::Proxy;
use crate::front::{Arrived, Client};

/// Opens the upstream side, then upgrades the client connection into a byte pipe.
pub async fn open(
    app: &Arc<Proxy>,
    req: Request<Incoming>,
    host: String,
    port: u16,
    client: &Client,
    arrived: Arrived,
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
    let target = req.uri().to_string();
    let mut tunnel = Tunnel::open(app, client.peer, target, arrived, "TUNNEL");
    let idle_limit = app.config.proxy.tunnel_idle_timeout;
    tokio::spawn(async move {
        let end = match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let traffic = tunnel.traffic();
                let mut client = Metered::new(TokioIo::new(upgraded), traffic.clone());
                let mut upstream = upstream;
                tokio::select! {
                    r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match r {
                        Ok(_) => End::Complete,
                        Err(e) => {
                            tracing::debug!("tunnel to {host}:{port} ended: {e}");
                            End::Cut
                        }
                    },
                    _ = traffic.idle(idle_limit) => End::Idle,
                }
            }
            Err(e) => {
                tracing::debug!("CONNECT upgrade failed: {e}");
                End::Cut
            }
        };
        tunnel.ended(end);
    });
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

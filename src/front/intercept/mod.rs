//! HTTPS interception of listed hosts: answer the CONNECT, complete TLS with a leaf for the server name, then serve the requests inside as absolute-form `https://` requests through the same handler as every other request. Never decrypts an unlisted host.

pub mod ca;
pub mod leaf;
mod site;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{self, Body};
use crate::config::HostPatterns;
use crate::front::interim::{Interim, InterimIo};
use crate::front::meter::{End, Metered, Tunnel};
use crate::front::Proxy;
use crate::front::{Arrived, Client};
use crate::metrics::Metrics;

use self::ca::Ca;
use self::leaf::Leaves;
pub use self::site::{served_name, Site};

/// Time allowed from the 200 to the end of the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The interception side of the proxy: which hosts, and the leaves issued for them.
pub struct Interceptor {
    pub hosts: HostPatterns,
    pub leaves: Leaves,
}

impl Interceptor {
    pub fn new(hosts: HostPatterns, ca: Ca, metrics: Arc<Metrics>) -> Result<Self, String> {
        Ok(Interceptor {
            hosts,
            leaves: Leaves::new(ca, metrics)?,
        })
    }
}

/// Answers the CONNECT with 200 and serves the decrypted tunnel in a task; its requests go
/// through `front::handle` as absolute-form https requests.
pub fn open(
    app: &Arc<Proxy>,
    req: Request<Incoming>,
    host: String,
    port: u16,
    client: &Client,
    arrived: Arrived,
) -> Response<Body> {
    let target = req.uri().to_string();
    let tunnel = Tunnel::open(app, client.peer, target, arrived, "INTERCEPT");
    let (app, peer, stop) = (app.clone(), client.peer, client.stop.clone());
    tokio::spawn(async move {
        let mut tunnel = tunnel;
        let traffic = tunnel.traffic();
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("CONNECT upgrade failed: {e}");
                return;
            }
        };
        let io = Metered::new(TokioIo::new(upgraded), traffic.clone());
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept(&app, io, &host));
        let (tls, name) = match handshake.await {
            Ok(Ok(done)) => done,
            Ok(Err(why)) => return refused(&app, &mut tunnel, &host, &why),
            Err(_) => return refused(&app, &mut tunnel, &host, "handshake timed out"),
        };
        Metrics::inc(&app.metrics.intercepted);
        let interim = Interim::default();
        let client = Arc::new(Client {
            peer,
            allowed: true,
            slot: None,
            site: Some(Site::new(name, port)),
            interim: Some(interim.clone()),
            stop,
        });
        let io = TokioIo::new(InterimIo::new(tls, interim));
        let idle_limit = app.config.proxy.tunnel_idle_timeout;
        let end = tokio::select! {
            _ = crate::front::serve_http1(io, app, client) => End::Complete,
            _ = traffic.idle(idle_limit) => End::Idle,
        };
        tunnel.ended(end);
    });
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}

fn refused(app: &Proxy, tunnel: &mut Tunnel, host: &str, why: &str) {
    Metrics::inc(&app.metrics.intercept_handshake_failures);
    tracing::info!("intercepted CONNECT {host}: TLS with the client failed: {why}");
    tunnel.ended(End::TlsFailed);
}

/// Reads the ClientHello, picks the name to serve and completes the handshake with its leaf.
async fn accept<IO>(
    app: &Proxy,
    io: IO,
    connect_host: &str,
) -> Result<(tokio_rustls::server::TlsStream<IO>, String), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let intercept = app
        .intercept
        .as_ref()
        .ok_or("interception is not configured")?;
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
        .await
        .map_err(|e| format!("no TLS ClientHello ({e})"))?;
    let sni = start.client_hello().server_name().map(str::to_owned);
    let name = served_name(connect_host, sni.as_deref(), &intercept.hosts)?;
    let config = intercept.leaves.server_config(&name, SystemTime::now())?;
    let tls = start
        .into_stream(config)
        .await
        .map_err(|e| format!("the client refused the handshake ({e})"))?;
    Ok((tls, name))
}

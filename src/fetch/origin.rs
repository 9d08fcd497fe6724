//! The upstream HTTP client: pooled keep-alive connections to origins (http, and https through
//! rustls), directly or through the parent proxy, with connect and response deadlines.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::Body;
use crate::config::{ParentProxy, Upstream};
use crate::error::{Error, Kind};
use crate::fetch::connect;

/// A connection to an origin or to the parent proxy.
pub enum Stream {
    Plain { tcp: TcpStream, proxied: bool },
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            // A plain connection to the parent proxy carries absolute-form requests.
            Stream::Plain { proxied, .. } => Connected::new().proxy(*proxied),
            Stream::Tls(_) => Connected::new(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain { tcp, .. } => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain { tcp, .. } => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain { tcp, .. } => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain { tcp, .. } => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain { tcp, .. } => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain { tcp, .. } => tcp.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Opens connections for the pooled client.
#[derive(Clone)]
pub struct Connector {
    tls: tokio_rustls::TlsConnector,
    parent: Option<Arc<ParentProxy>>,
    timeout: Duration,
}

impl Connector {
    async fn open(self, dst: Uri) -> io::Result<Stream> {
        let host = dst
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI has no host"))?
            .to_owned();
        let https = dst.scheme_str() == Some("https");
        let port = dst.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !https {
            return Ok(match &self.parent {
                Some(p) => Stream::Plain {
                    tcp: connect::tcp(&p.host, p.port, self.timeout).await?,
                    proxied: true,
                },
                None => Stream::Plain {
                    tcp: connect::tcp(&host, port, self.timeout).await?,
                    proxied: false,
                },
            });
        }
        let tcp = connect::stream_to(self.parent.as_deref(), &host, port, self.timeout).await?;
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name = rustls::pki_types::ServerName::try_from(bare)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = tokio::time::timeout(self.timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.open(dst).await.map(TokioIo::new) })
    }
}

/// Told each interim (1xx) response an origin sends before its final response: status and
/// header fields, never stored.
pub type OnInterim = Arc<dyn Fn(http::StatusCode, &http::HeaderMap) + Send + Sync>;

tokio::task_local! {
    static ON_INTERIM: OnInterim;
}

/// Runs `fut` with `hook` told the 1xx responses to the origin requests it sends itself: the
/// hook is task-local, so requests sent from tasks it spawns (background revalidation, a
/// fill's resumption) never reach it.
pub async fn relaying_interim<F: Future>(hook: Option<OnInterim>, fut: F) -> F::Output {
    match hook {
        Some(hook) => ON_INTERIM.scope(hook, fut).await,
        None => fut.await,
    }
}

/// The client all upstream requests go through.
#[derive(Clone)]
pub struct Origin {
    client: Client<Connector, Body>,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Origin {
    pub fn new(cfg: &Upstream, tls: rustls::ClientConfig) -> Origin {
        let connector = Connector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            parent: cfg.proxy.clone().map(Arc::new),
            timeout: cfg.connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        Origin {
            client,
            connect_timeout: cfg.connect_timeout,
            read_timeout: cfg.read_timeout,
        }
    }

    /// How long to wait between two body frames before the source counts as stalled.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// Sends `req` (absolute URI, end-to-end headers, `Host` set) and waits for the response head;
    /// its 1xx responses go to the hook of [`relaying_interim`], if any.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, Error> {
        if let Ok(hook) = ON_INTERIM.try_with(Arc::clone) {
            hyper::ext::on_informational(&mut req, move |r| hook(r.status(), r.headers()));
        }
        let target = req.uri().to_string();
        let deadline = self.connect_timeout + self.read_timeout;
        match tokio::time::timeout(deadline, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e, &target)),
            Err(_) => Err(Error::upstream(
                Kind::ResponseTimeout,
                format!("no response from {target} within {deadline:?}"),
            )),
        }
    }
}

/// Maps a client error to our kinds by walking its source chain.
fn classify(e: &hyper_util::client::legacy::Error, target: &str) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut detail = e.to_string();
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        if let Some(io) = s.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::TimedOut {
                return Error::upstream(Kind::ConnectTimeout, format!("{target}: {io}"));
            }
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Error::upstream(Kind::Tls, format!("{target}: {tls}"));
            }
        }
        source = s.source();
    }
    let kind = if e.is_connect() {
        Kind::ConnectFailed
    } else {
        Kind::UpstreamProtocol
    };
    Error::upstream(kind, format!("{target}: {detail}"))
}

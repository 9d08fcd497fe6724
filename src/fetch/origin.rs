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
    static ON_INTERIM: Option<OnInterim>;
}

/// Runs `fut` with `hook` told the 1xx responses to the origin requests it sends itself: the
/// hook is task-local, so requests sent from tasks it spawns (background revalidation, a
/// fill's resumption) never reach it. The returned future holds `fut` once (an `async fn`
/// awaiting it in one of two arms held it, and so the whole request's state, twice over).
pub fn relaying_interim<F: Future>(
    hook: Option<OnInterim>,
    fut: F,
) -> impl Future<Output = F::Output> {
    ON_INTERIM.scope(hook, fut)
}

/// The hook of the [`relaying_interim`] this task runs in, if any: for a task spawned to send a
/// request on this one's behalf (a fill's leader), so that its 1xx still reach the client.
pub fn interim_hook() -> Option<OnInterim> {
    ON_INTERIM.try_with(Option::clone).ok().flatten()
}

/// The client all upstream requests go through.
#[derive(Clone)]
pub struct Origin {
    client: Client<Connector, Body>,
    connect_timeout: Duration,
    read_timeout: Duration,
    /// Requests go through `upstream.proxy`.
    parent: bool,
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
            parent: cfg.proxy.is_some(),
        }
    }

    /// Whether requests go through the parent proxy rather than straight to the origin.
    pub fn through_parent(&self) -> bool {
        self.parent
    }

    /// How long to wait between two body frames before the source counts as stalled.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// Sends `req` (absolute URI, end-to-end headers, `Host` set) and waits for the response head;
    /// its 1xx responses go to the hook of [`relaying_interim`], if any.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, Error> {
        if let Some(hook) = interim_hook() {
            hyper::ext::on_informational(&mut req, move |r| hook(r.status(), r.headers()));
        }
        let target = req.uri().to_string();
        let deadline = self.connect_timeout + self.read_timeout;
        match tokio::time::timeout(deadline, self.client.request(req)).await {
            Ok(Ok(mut resp)) => {
                let size = head_size(&resp);
                if size > MAX_HEAD {
                    return Err(Error::upstream(
                        Kind::UpstreamProtocol,
                        format!(
                            "{target}: response head of {size} bytes (the limit is {MAX_HEAD})"
                        ),
                    ));
                }
                drop_body_length(resp.status(), resp.headers_mut());
                Ok(resp)
            }
            Ok(Err(e)) => Err(classify(&e, &target)),
            Err(_) => Err(Error::upstream(
                Kind::ResponseTimeout,
                format!("no response from {target} within {deadline:?}"),
            )),
        }
    }
}

/// The largest response head taken from an origin: status line and fields as sent. Larger ones
/// are refused with a 502 (hyper itself holds at most ~400 KiB while parsing).
pub const MAX_HEAD: usize = 64 * 1024;

/// The size of a response head on the wire (status line, fields, blank line).
fn head_size<B>(resp: &Response<B>) -> usize {
    let fields: usize = resp
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    "HTTP/1.1 200 \r\n".len() + fields + 2
}

/// RFC 9112 §6.3: a `Transfer-Encoding` overrides `Content-Length`, which then must not be
/// forwarded (hyper framed the body by the former); a 1xx, 204 or 304 has no body, so no length.
fn drop_body_length(status: http::StatusCode, h: &mut http::HeaderMap) {
    let bodiless = status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    if bodiless || h.contains_key(http::header::TRANSFER_ENCODING) {
        h.remove(http::header::CONTENT_LENGTH);
    }
}

/// Maps a client error to our kinds by walking its source chain.
fn classify(e: &hyper_util::client::legacy::Error, target: &str) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut detail = e.to_string();
    while let Some(s) = source {
        if let Some(client) = s.downcast_ref::<crate::body::ClientBodyError>() {
            return Error::downstream(Kind::BadRequest, client.to_string());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, HeaderMap, HeaderValue, StatusCode};

    #[test]
    fn a_body_length_goes_where_the_body_is_framed_otherwise_or_absent() {
        let cases = [
            (200, true, true, false),
            (200, false, true, true),
            (204, false, true, false),
            (304, false, true, false),
            (103, false, true, false),
            (404, true, true, false),
        ];
        for (status, chunked, cl, kept) in cases {
            let mut h = HeaderMap::new();
            if chunked {
                h.insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
            }
            if cl {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
            }
            drop_body_length(StatusCode::from_u16(status).unwrap(), &mut h);
            assert_eq!(
                h.contains_key(header::CONTENT_LENGTH),
                kept,
                "{status} {chunked}"
            );
        }
    }

    #[test]
    fn the_head_size_counts_every_field() {
        let mut r = Response::new(());
        assert_eq!(head_size(&r), 17);
        r.headers_mut()
            .insert("x-a", HeaderValue::from_static("12345"));
        assert_eq!(head_size(&r), 17 + 3 + 2 + 5 + 2);
    }
}

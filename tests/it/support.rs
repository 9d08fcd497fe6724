//! Test support: an origin that counts its requests, proxies on loopback, a small HTTP client,
//! and a bounded `wait_until`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use peercache::app::{Running, Server};
use peercache::body::{self, Body};
use peercache::config::Config;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Waits until `cond` holds, checking every 10 ms, for at most `limit`.
pub async fn wait_until<F: FnMut() -> bool>(limit: Duration, mut cond: F) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How the origin's body is produced.
#[derive(Clone)]
pub enum Payload {
    Bytes(Bytes),
    /// Sends `first`, waits until the gate opens, then sends `rest` (or cuts the connection).
    Gated {
        first: Bytes,
        rest: Option<Bytes>,
        gate: watch::Receiver<bool>,
    },
    /// Sends nothing, not even the head, until the gate opens; then the head and `body`.
    HeadGated {
        body: Bytes,
        gate: watch::Receiver<bool>,
    },
    /// Sends `chunk` again and again, chunked, until the receiver goes away.
    Endless(Arc<Endless>),
}

/// An endless body and what became of it.
#[derive(Default)]
pub struct Endless {
    pub chunk: Bytes,
    /// Bytes handed to the connection so far.
    pub sent: std::sync::atomic::AtomicU64,
    /// Set once the receiver went away and the origin stopped sending.
    pub stopped: std::sync::atomic::AtomicBool,
}

impl Endless {
    pub fn new(chunk: Bytes) -> Arc<Endless> {
        Arc::new(Endless {
            chunk,
            ..Endless::default()
        })
    }
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One origin answer.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub payload: Payload,
}

impl Reply {
    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            payload: Payload::Bytes(body.into()),
        }
    }
    pub fn status(mut self, s: u16) -> Reply {
        self.status = s;
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
    /// A 200 of `body` cacheable for 10 minutes, with the ETag `etag` (a quoted tag).
    pub fn cacheable(body: impl Into<Bytes>, etag: &str) -> Reply {
        Reply::ok(body)
            .header("cache-control", "max-age=600")
            .header("etag", etag)
    }
}

/// A cacheable 200 of `len` bytes (`Content-Length` set) that sends `first`, then `rest` once
/// `gate` opens (or cuts the body when `rest` is `None`).
pub fn gated(first: Bytes, rest: Option<Bytes>, gate: watch::Receiver<bool>, len: usize) -> Reply {
    Reply {
        status: 200,
        headers: vec![
            ("cache-control".into(), "max-age=600".into()),
            ("content-length".into(), len.to_string()),
        ],
        payload: Payload::Gated { first, rest, gate },
    }
}

impl Reply {
    /// A 200 cacheable for 10 minutes with the `Content-Length` of both parts, whose body
    /// stops after `first` until `gate` opens.
    pub fn gated(first: Bytes, rest: Bytes, gate: watch::Receiver<bool>) -> Reply {
        let len = first.len() + rest.len();
        gated(first, Some(rest), gate, len)
    }
}

type Handler = Arc<dyn Fn(&http::request::Parts) -> Reply + Send + Sync>;

/// What the origin saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
}

/// An in-process origin server on 127.0.0.1 that counts requests per path.
#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    scheme: &'static str,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    routes: Arc<Mutex<HashMap<String, Handler>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    pub async fn start() -> Origin {
        Self::start_with(None).await
    }

    /// An https origin with the test certificate for 127.0.0.1 (`tests/fixtures/`).
    pub async fn start_tls() -> Origin {
        Self::start_with(Some(tls_acceptor())).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = Origin {
            addr: listener.local_addr().unwrap(),
            scheme: if tls.is_some() { "https" } else { "http" },
            connections: Arc::default(),
            routes: Arc::default(),
            seen: Arc::default(),
        };
        let o = origin.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                o.connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let o = o.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let o = o.clone();
                        async move { Ok::<_, std::convert::Infallible>(o.answer(req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        origin
    }

    /// Serves `reply` for `path`.
    pub fn route(&self, path: &str, reply: Reply) {
        self.route_fn(path, move |_| reply.clone());
    }

    pub fn route_fn(
        &self,
        path: &str,
        f: impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static,
    ) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), Arc::new(f));
    }

    /// Serves `not_modified` to a request whose `If-None-Match` is `etag`, `full` to any other.
    pub fn route_conditional(&self, path: &str, etag: &str, full: Reply, not_modified: Reply) {
        let etag = etag.to_owned();
        self.route_fn(path, move |req| {
            let matches = req
                .headers
                .get("if-none-match")
                .is_some_and(|v| v.as_bytes() == etag.as_bytes());
            if matches {
                not_modified.clone()
            } else {
                full.clone()
            }
        });
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests seen for `path` (any method).
    pub fn hits(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .count()
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, _) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        self.seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            path: path.clone(),
            headers: parts.headers.clone(),
        });
        let handler = self.routes.lock().unwrap().get(&path).cloned();
        let Some(handler) = handler else {
            let mut r = Response::new(body::full("no such route"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        };
        let reply = handler(&parts);
        if let Some(r) = ranged(&parts, &reply) {
            return r;
        }
        let body = match reply.payload {
            Payload::Bytes(b) => body::full(b),
            Payload::HeadGated { body, mut gate } => {
                let _ = gate.wait_for(|open| *open).await;
                body::full(body)
            }
            Payload::Endless(e) => {
                let (tx, b) = body::channel(None);
                tokio::spawn(async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    while tx.send(Ok(e.chunk.clone())).await.is_ok() {
                        e.sent.fetch_add(e.chunk.len() as u64, SeqCst);
                    }
                    e.stopped.store(true, SeqCst);
                });
                b
            }
            Payload::Gated {
                first,
                rest,
                mut gate,
            } => {
                let (tx, b) = body::channel(None);
                tokio::spawn(async move {
                    if tx.send(Ok(first)).await.is_err() {
                        return;
                    }
                    let _ = gate.wait_for(|open| *open).await;
                    match rest {
                        Some(rest) => {
                            let _ = tx.send(Ok(rest)).await;
                        }
                        None => {
                            let _ = tx.send(Err("origin cut".into())).await;
                        }
                    }
                });
                b
            }
        };
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(reply.status).unwrap();
        for (k, v) in reply.headers {
            r.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        r
    }
}

/// A parent proxy on 127.0.0.1 (what `upstream.proxy` names): it forwards absolute-form
/// `http://` requests to their origin and counts them by target URL.
#[derive(Clone)]
pub struct Parent {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Parent {
    pub async fn start() -> Parent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let parent = Parent {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
        };
        let p = parent.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let p = p.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let p = p.clone();
                        async move { Ok::<_, std::convert::Infallible>(p.forward(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        parent
    }

    /// Requests forwarded for `url` (the absolute target, as `Origin::url` spells it).
    pub fn hits(&self, url: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|u| *u == url)
            .count()
    }

    /// The `upstream.proxy` value for this parent.
    pub fn config(&self) -> peercache::config::ParentProxy {
        peercache::config::ParentProxy {
            host: "127.0.0.1".into(),
            port: self.addr.port(),
        }
    }

    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let failed = |why: String| {
            let mut r = Response::new(body::full(why));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        };
        self.seen.lock().unwrap().push(req.uri().to_string());
        let Some(authority) = req.uri().authority().map(|a| a.to_string()) else {
            return failed("not an absolute-form target".into());
        };
        let (mut parts, incoming) = req.into_parts();
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap();
        let tcp = match TcpStream::connect(&authority).await {
            Ok(t) => t,
            Err(e) => return failed(e.to_string()),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::from_parts(parts, incoming);
        match sender.send_request(req).await {
            Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed()),
            Err(e) => failed(e.to_string()),
        }
    }
}

/// A config for a test proxy: loopback, port 0, cache in `dir`, no access log.
pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default_config();
    c.proxy.listen = "127.0.0.1:0".parse().unwrap();
    c.cache.dir = dir.to_owned();
    c.intercept.ca_cert = dir.join("ca/ca.pem");
    c.intercept.ca_key = dir.join("ca/ca.key");
    c.log.access = false;
    c.upstream.connect_timeout = Duration::from_secs(2);
    c.upstream.read_timeout = Duration::from_secs(5);
    c
}

pub async fn start_proxy(c: Config) -> Running {
    Server::bind(c).await.expect("proxy starts").spawn()
}

/// A response as the client saw it. `body` is `Err` when the body was cut.
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Result<Bytes, String>,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn x_cache(&self) -> &str {
        self.header("x-cache")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.body.as_ref().expect("complete body")).into_owned()
    }

    /// Reads a whole response.
    pub async fn read(resp: Response<Incoming>) -> Got {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| e.to_string());
        Got {
            status,
            headers,
            body,
        }
    }
}

/// Sends one request through the proxy at `proxy` on a fresh connection.
pub async fn send(proxy: SocketAddr, method: &str, url: &str, headers: &[(&str, &str)]) -> Got {
    Got::read(send_head(proxy, method, url, headers).await).await
}

pub async fn get(proxy: SocketAddr, url: &str) -> Got {
    send(proxy, "GET", url, &[]).await
}

/// Sends an origin-form request for `path` to the proxy (as a client of a mirror route does),
/// with `Host` naming the proxy.
pub async fn get_path(proxy: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let host = proxy.to_string();
    let mut all = vec![("host", host.as_str())];
    all.extend_from_slice(headers);
    send(proxy, "GET", path, &all).await
}

/// A `[[mirror]]` route from `prefix` to `upstream`.
pub fn mirror(prefix: &str, upstream: &str) -> peercache::config::Mirror {
    peercache::config::Mirror {
        prefix: prefix.into(),
        upstream: upstream.parse().unwrap(),
        redirect_to_peers: false,
        npm_tarballs: false,
    }
}

/// Sends a request and returns as soon as the head arrives (the body streams on).
pub async fn send_head(
    proxy: SocketAddr,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let uri: http::Uri = url.parse().unwrap();
    let mut req = Request::builder().method(method).uri(uri.clone());
    if let Some(a) = uri.authority() {
        req = req.header("host", a.as_str());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    sender.send_request(req).await.unwrap()
}

/// Sends `CONNECT target` (`host:port`) through `proxy` and returns the tunnel once it is
/// answered 200 (nothing of the tunnel is read).
pub async fn tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "CONNECT {target}: {head}");
    s
}

/// A TLS client trusting only the certificates in the PEM text `ca_pem`.
pub fn tls_trusting(ca_pem: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An HTTP/1.1 connection inside a TLS session inside a `CONNECT` tunnel.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// CONNECTs to `target` through `proxy`, completes TLS with server name `name` (an IP address
/// sends no SNI) using `tls`, and returns an HTTP/1.1 sender plus the certificates the server
/// presented. `Err` when the TLS handshake fails.
pub async fn https_through(
    proxy: SocketAddr,
    target: &str,
    name: &str,
    tls: &tokio_rustls::TlsConnector,
) -> std::io::Result<(Sender, Vec<rustls::pki_types::CertificateDer<'static>>)> {
    let tcp = tunnel(proxy, target).await;
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let stream = tls.connect(name, tcp).await?;
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok((sender, certs))
}

/// Sends `GET target` with `Host: host` on an open connection and reads the whole answer.
pub async fn get_on(sender: &mut Sender, target: &str, host: &str) -> Got {
    let req = Request::get(target)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    Got::read(sender.send_request(req).await.unwrap()).await
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Deterministic test bytes.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Deterministic bytes without repeats (a blake3 stream), made fast even in debug builds.
pub fn noise(len: usize, seed: u8) -> Bytes {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out.into()
}

/// The test TLS material's directory.
pub fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(fixtures().join("server.pem"))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
    let key = PrivateKeyDer::from_pem_file(fixtures().join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A peercache process started from the built binary.
pub struct Proc {
    pub child: Child,
    pub addr: std::net::SocketAddr,
}

impl Proc {
    /// Starts `peercache run` on 127.0.0.1:`port` with its cache under `dir`; stdout (the access
    /// log, when `access` is on) goes to `dir/stdout.log`.
    pub async fn start(dir: &Path, port: u16, access: bool) -> Proc {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        Proc::start_with(
            dir,
            addr,
            &format!("[log]\naccess = {access}\nlevel = \"warn\"\n"),
        )
        .await
    }

    /// Starts `peercache run` listening on `addr`, cache under `dir`, plus `extra` TOML (it
    /// follows `[proxy] listen`, so its first keys may be more `[proxy]` keys).
    pub async fn start_with(dir: &Path, addr: SocketAddr, extra: &str) -> Proc {
        let conf = dir.join("peercache.toml");
        std::fs::write(
            &conf,
            format!(
                "[proxy]\nlisten = \"{addr}\"\n{extra}\n[cache]\ndir = \"{}\"\n",
                dir.join("cache").display()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_peercache"))
            .args(["run", "--config"])
            .arg(&conf)
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let mut up = false;
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            up,
            "peercache did not start listening: {}",
            std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
        );
        Proc { child, addr }
    }

    /// Starts `peercache run` as a member of a peer group on `ip` (proxy and peer port free
    /// ones there), cache under `dir`, cluster key `key`, joining through `seed` when given;
    /// returns it and its peer address.
    pub async fn start_peer(
        dir: &Path,
        ip: &str,
        key: &Path,
        seed: Option<SocketAddr>,
    ) -> (Proc, SocketAddr) {
        Proc::start_peer_with(dir, ip, key, seed, "").await
    }

    /// [`Proc::start_peer`] with `peers_keys` added to its `[peers]` table.
    pub async fn start_peer_with(
        dir: &Path,
        ip: &str,
        key: &Path,
        seed: Option<SocketAddr>,
        peers_keys: &str,
    ) -> (Proc, SocketAddr) {
        let peer: SocketAddr = format!("{ip}:{}", free_port_on(ip)).parse().unwrap();
        let proxy: SocketAddr = format!("{ip}:{}", free_port_on(ip)).parse().unwrap();
        let seeds = seed
            .map(|s| format!("seeds = [\"{s}\"]\n"))
            .unwrap_or_default();
        let extra = format!(
            "[log]\naccess = false\nlevel = \"warn\"\n[peers]\nenabled = true\nlisten = \"{peer}\"\nkey_file = \"{}\"\n{seeds}{peers_keys}\n",
            key.display()
        );
        (Proc::start_with(dir, proxy, &extra).await, peer)
    }

    /// Sends a signal by name (`STOP`, `CONT`…) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} failed");
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy's `/_peercache/status` JSON (asserting a 200).
pub async fn status_json(proxy: SocketAddr) -> serde_json::Value {
    let r = get(proxy, &format!("http://{proxy}/_peercache/status")).await;
    assert_eq!(r.status, 200, "status page");
    serde_json::from_str(&r.text()).expect("status JSON")
}

/// Polls the proxy's status JSON until `cond` holds (at most `limit`); returns the last one.
pub async fn wait_for_status(
    proxy: SocketAddr,
    limit: Duration,
    mut cond: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let s = status_json(proxy).await;
        if cond(&s) || tokio::time::Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The proxy's `/_peercache/metrics` text (asserting a 200).
pub async fn metrics_text(proxy: SocketAddr) -> String {
    let r = get(proxy, &format!("http://{proxy}/_peercache/metrics")).await;
    assert_eq!(r.status, 200, "metrics page");
    r.text()
}

pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port free for both TCP and UDP on `ip` (the peer port uses both).
pub fn free_port_on(ip: &str) -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind(format!("{ip}:0")).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(format!("{ip}:{port}")).is_ok() {
            return port;
        }
    }
}

/// The 206 a range-capable origin sends for `bytes=N-` or `bytes=N-M` of a 200 with an ETag
/// (`If-Range` compared with it), its gated bytes included; `None` (the whole reply) for any
/// other request, or a reply that says `Accept-Ranges: none`.
fn ranged(req: &http::request::Parts, reply: &Reply) -> Option<Response<Body>> {
    let range = req.headers.get("range")?.to_str().ok()?;
    let (first, last) = range.strip_prefix("bytes=")?.split_once('-')?;
    let start: usize = first.parse().ok()?;
    let last: Option<usize> = match last {
        "" => None,
        n => Some(n.parse().ok()?),
    };
    let no_ranges = reply
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("accept-ranges") && v == "none");
    if no_ranges {
        return None;
    }
    let etag = reply
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.clone())?;
    if let Some(if_range) = req.headers.get("if-range") {
        if if_range.to_str().ok()? != etag {
            return None;
        }
    }
    let whole = match &reply.payload {
        Payload::Bytes(b) => b.clone(),
        Payload::Gated {
            first,
            rest: Some(rest),
            ..
        } => [first.as_ref(), rest.as_ref()].concat().into(),
        Payload::Gated { rest: None, .. } | Payload::HeadGated { .. } | Payload::Endless(_) => {
            return None
        }
    };
    if reply.status != 200 || start >= whole.len() {
        return None;
    }
    let end = last.map_or(whole.len(), |l| (l + 1).min(whole.len()));
    let mut r = Response::new(body::full(whole.slice(start..end)));
    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    for (k, v) in &reply.headers {
        if !k.eq_ignore_ascii_case("content-length") {
            r.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
    }
    r.headers_mut().insert(
        "content-range",
        format!("bytes {start}-{}/{}", end - 1, whole.len())
            .parse()
            .unwrap(),
    );
    Some(r)
}

/// `body` at `path`, fresh for 10 minutes with the strong ETag `"v1"` (a fill can resume it
/// from the origin with `Range` and `If-Range`).
pub fn served(origin: &Origin, path: &str, body: &Bytes) {
    origin.route(
        path,
        Reply::ok(body.clone())
            .header("cache-control", "max-age=600")
            .header("etag", "\"v1\""),
    );
}

/// One node of a test peer group (in-process).
pub struct Node {
    pub proxy: Running,
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn peers(&self) -> &std::sync::Arc<peercache::peer::Peers> {
        self.proxy.app.peers.as_ref().expect("peering on")
    }
    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }
}

/// The key hash peers use for `url`.
pub fn key_hash_of(url: &str) -> [u8; 32] {
    let uri: http::Uri = url.parse().unwrap();
    peercache::cache::key::CacheKey::from_uri(&uri)
        .unwrap()
        .hash()
}

/// Waits until `node` knows `holders` holders of `url` (complete or in flight).
pub async fn wait_holders(node: &Node, url: &str, holders: usize) {
    wait_sources(node, url, holders, false).await;
}

/// Waits until `node`'s index names at least `holders` complete copies of `url` (a holder
/// whose `have` has not arrived yet is only in flight, and no source of pieces).
pub async fn wait_complete_holders(node: &Node, url: &str, holders: usize) {
    wait_sources(node, url, holders, true).await;
}

/// Waits (bounded) until `node` lists `holders` sources of `url`, only complete ones if
/// `complete`.
async fn wait_sources(node: &Node, url: &str, holders: usize, complete: bool) {
    let kh = key_hash_of(url);
    let p = node.peers().clone();
    let count = || {
        p.sources(&kh, None)
            .iter()
            .filter(|s| !complete || s.complete.is_some())
            .count()
    };
    let what = if complete {
        "complete cop(ies)"
    } else {
        "holder(s)"
    };
    assert!(
        wait_until(Duration::from_secs(5), || count() >= holders).await,
        "index never showed {holders} {what} of {url}"
    );
}

/// Writes a cluster key shared by a test group.
pub fn write_key(path: &Path, byte: u8) {
    std::fs::write(path, hex32([byte; 32])).unwrap();
}

fn hex32(b: [u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A config for node `i` of a group: proxy and peer port on 127.0.0.(2+i), seeded by `seed`.
pub fn peer_config(dir: &Path, i: usize, key: &Path, seed: Option<SocketAddr>) -> Config {
    let mut c = config(dir);
    let ip = format!("127.0.0.{}", 2 + i);
    c.proxy.listen = format!("{ip}:0").parse().unwrap();
    c.peers.enabled = true;
    c.peers.listen = format!("{ip}:0").parse().unwrap();
    c.peers.advertise = None;
    c.peers.seeds = seed.map(|s| vec![s.to_string()]).unwrap_or_default();
    c.peers.key_file = key.to_owned();
    c.peers.connect_timeout = Duration::from_millis(250);
    c
}

/// The peer knobs of test nodes: fast gossip timings (on the WAN preset's base for nodes given
/// a site label) and a 100 ms claim window (200 ms while the group spans sites).
pub fn fast_tuning() -> peercache::peer::PeerTuning {
    use peercache::peer::membership::{Profile, Timings};
    peercache::peer::PeerTuning {
        timings: Timings::fast(),
        wan_timings: Timings {
            profile: Profile::Wan,
            ..Timings::fast()
        },
        claim_window: Duration::from_millis(100),
        wan_claim_window: Duration::from_millis(200),
        ..Default::default()
    }
}

/// Starts a node in-process with fast gossip timings.
pub async fn start_node(c: Config, dir: tempfile::TempDir) -> Node {
    start_node_tuned(c, dir, fast_tuning()).await
}

/// Starts a node in-process with `tuning`.
pub async fn start_node_tuned(
    c: Config,
    dir: tempfile::TempDir,
    tuning: peercache::peer::PeerTuning,
) -> Node {
    let proxy = Server::bind_tuned(c, tuning)
        .await
        .expect("node starts")
        .spawn();
    Node { proxy, dir }
}

/// Starts `n` nodes sharing one key, all seeded by the first, and waits until each sees the others.
pub async fn cluster(n: usize) -> (Vec<Node>, tempfile::TempDir) {
    cluster_tuned(n, |_, _, _| {}).await
}

/// `cluster`, with `edit` applied to every node's config.
pub async fn cluster_with(n: usize, edit: impl Fn(&mut Config)) -> (Vec<Node>, tempfile::TempDir) {
    cluster_tuned(n, |_, c, _| edit(c)).await
}

/// [`cluster`] with node `i`'s config and peer knobs adjusted by `tune(i, config, tuning)`.
pub async fn cluster_tuned(
    n: usize,
    tune: impl Fn(usize, &mut Config, &mut peercache::peer::PeerTuning),
) -> (Vec<Node>, tempfile::TempDir) {
    let keydir = tempdir();
    let key = keydir.path().join("cluster.key");
    write_key(&key, 7);
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let dir = tempdir();
        let seed = nodes.first().map(|n| n.peers().membership_addr());
        let mut c = peer_config(dir.path(), i, &key, seed);
        let mut tuning = fast_tuning();
        tune(i, &mut c, &mut tuning);
        nodes.push(start_node_tuned(c, dir, tuning).await);
    }
    wait_formed(&nodes, n - 1).await;
    (nodes, keydir)
}

/// Waits until each of `nodes` sees `members` active members.
pub async fn wait_formed(nodes: &[Node], members: usize) {
    let all = nodes.iter().map(|n| n.peers().clone()).collect::<Vec<_>>();
    assert!(
        wait_until(Duration::from_secs(10), || all.iter().all(|p| p
            .members()
            .iter()
            .filter(|m| m.state.is_active())
            .count()
            == members))
        .await,
        "the group did not form"
    );
}

/// Reads `resp`'s body until at least `n` bytes came (each frame within 5 s), and returns them.
pub async fn read_at_least(resp: &mut Response<Incoming>, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(5), resp.body_mut().frame())
            .await
            .expect("a frame within 5 s")
            .expect("more body")
            .expect("not cut");
        if let Ok(d) = frame.into_data() {
            got.extend_from_slice(&d);
        }
    }
    got
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The body files of the store in the cache directory `dir` (not their `.obao` outboards).
pub fn blobs_under(dir: &Path) -> Vec<std::path::PathBuf> {
    files_under(&dir.join("objects"))
        .into_iter()
        .filter(|p| p.extension().is_none())
        .collect()
}

/// Flips the byte at `at` of the stored body `hash` in `node`'s store, behind its back.
pub fn corrupt_blob(node: &Node, hash: &blake3::Hash, at: usize) {
    corrupt_blob_at(node, hash, [at]);
}

/// Flips the byte at each of `offsets` of the stored body `hash` in `node`'s store.
pub fn corrupt_blob_at(node: &Node, hash: &blake3::Hash, offsets: impl IntoIterator<Item = usize>) {
    let hex = hash.to_hex();
    let path = node
        .dir
        .path()
        .join("objects")
        .join(&hex[..2])
        .join(&hex[2..]);
    let mut bytes = std::fs::read(&path).unwrap();
    for at in offsets {
        bytes[at] ^= 0x20;
    }
    std::fs::write(&path, bytes).unwrap();
}

/// Body bytes `node` counts as downloaded from the member `id` (its status page).
pub fn bytes_from(node: &Node, id: peercache::peer::wire::NodeId) -> u64 {
    member_counter(&node.peers().status_json(), id, "bytes_from")
}

/// Body bytes `node` counts as uploaded to the member `id`.
pub fn bytes_to(node: &Node, id: peercache::peer::wire::NodeId) -> u64 {
    member_counter(&node.peers().status_json(), id, "bytes_to")
}

/// A per-member counter of a node's peer status (0 when the member is not listed).
pub fn member_counter(
    peers: &serde_json::Value,
    id: peercache::peer::wire::NodeId,
    name: &str,
) -> u64 {
    peers["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.to_string())
        .map(|m| m[name].as_u64().unwrap())
        .unwrap_or(0)
}

/// What a [`RawOrigin`] does with one request.
pub enum RawStep {
    /// Writes these bytes: a whole response, or interim responses and then the final one.
    Send(Vec<u8>),
    /// Writes `first`, waits until `gate` opens, then writes `rest`.
    Gated {
        first: Vec<u8>,
        gate: watch::Receiver<bool>,
        rest: Vec<u8>,
    },
    /// Closes the connection without answering.
    Close,
}

type RawScript = Arc<dyn Fn(usize, &str) -> RawStep + Send + Sync>;

/// An origin on 127.0.0.1 that writes raw bytes (what hyper's server cannot: 1xx responses, a
/// connection closed instead of an answer). `script(n, path)` decides, `n` counting the
/// requests for `path` from 0; connections are kept alive between requests.
#[derive(Clone)]
pub struct RawOrigin {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<watch::Sender<bool>>,
}

impl RawOrigin {
    pub async fn start(script: impl Fn(usize, &str) -> RawStep + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = RawOrigin {
            addr: listener.local_addr().unwrap(),
            heads: Arc::default(),
            stop: Arc::new(watch::channel(false).0),
        };
        let script: RawScript = Arc::new(script);
        let heads = origin.heads.clone();
        let stop = origin.stop.clone();
        let mut stopped = stop.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { return };
                        let conn = raw_connection(tcp, script.clone(), heads.clone());
                        let mut stopped = stop.subscribe();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = conn => {}
                                _ = stopped.wait_for(|s| *s) => {}
                            }
                        });
                    }
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        });
        origin
    }

    /// Closes the port and every connection: from now on connections are refused.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The request heads received for `path`, in order, lower-cased.
    pub fn heads(&self, path: &str) -> Vec<String> {
        let first_line = |h: &String| h.lines().next().unwrap_or("").to_owned();
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| first_line(h).split(' ').nth(1) == Some(path))
            .cloned()
            .collect()
    }
}

async fn raw_connection(mut tcp: TcpStream, script: RawScript, heads: Arc<Mutex<Vec<String>>>) {
    use tokio::io::AsyncWriteExt;
    loop {
        let Some(head) = read_head(&mut tcp).await else {
            return;
        };
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let n = {
            let mut all = heads.lock().unwrap();
            all.push(head.clone());
            all.iter()
                .filter(|h| h.split(' ').nth(1) == Some(path.as_str()))
                .count()
                - 1
        };
        match script(n, &path) {
            RawStep::Send(bytes) => {
                if tcp.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            RawStep::Gated {
                first,
                mut gate,
                rest,
            } => {
                if tcp.write_all(&first).await.is_err() {
                    return;
                }
                let _ = gate.wait_for(|open| *open).await;
                if tcp.write_all(&rest).await.is_err() {
                    return;
                }
            }
            RawStep::Close => return,
        }
    }
}

/// Reads one message head (through the blank line) from `tcp`; `None` at EOF or after 5 s.
pub async fn read_head(tcp: &mut TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// A whole raw response: status line, `fields` (`name: value`), a `Content-Length` and `body`.
pub fn raw_response(status: &str, fields: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in fields {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

/// The parameters of this proxy's `Cache-Status` member (the last one), e.g. `hit`,
/// `ttl=600`; `None` when the response has none of ours.
pub fn our_cache_status(got: &Got) -> Option<Vec<String>> {
    let all: Vec<&str> = got
        .headers
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let ours = all.last()?.trim();
    let mut params = ours.split(';').map(|p| p.trim().to_owned());
    (params.next()?.as_str() == "peercache").then(|| params.collect())
}

/// A TCP relay on `ip` in front of `upstream` that records every byte its clients send, as
/// someone on the path between two nodes could.
pub struct Recorder {
    pub addr: SocketAddr,
    captured: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    pub async fn start(ip: &str, upstream: SocketAddr) -> Recorder {
        let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let captured: Arc<Mutex<Vec<u8>>> = Arc::default();
        let cap = captured.clone();
        let ip: std::net::IpAddr = ip.parse().unwrap();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cap = cap.clone();
                tokio::spawn(async move {
                    let sock = tokio::net::TcpSocket::new_v4().unwrap();
                    sock.bind(SocketAddr::new(ip, 0)).unwrap();
                    let Ok(server) = sock.connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            cap.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                    };
                    let down = tokio::io::copy(&mut sr, &mut cw);
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Recorder { addr, captured }
    }

    /// Everything the relay's clients have sent so far.
    pub fn captured(&self) -> Vec<u8> {
        self.captured.lock().unwrap().clone()
    }
}

/// Sends `bytes` as they are from a socket bound to `from_ip` to `to`, and returns the status
/// code of the response (0 when no response head came back within 5 s).
pub async fn raw_request(from_ip: &str, to: SocketAddr, bytes: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from_ip.parse().unwrap(), 0))
        .unwrap();
    let mut tcp = sock.connect(to).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(2).any(|w| w == b"\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return 0;
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A program on the PATH, if there is one.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Headless Chromium (Debian's `chromium` package; `.ci/run` installs it), if installed.
pub fn chromium() -> Option<std::path::PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| on_path(name))
}

/// Runs headless Chromium on `url` with `args` (e.g. `--dump-dom`) after letting the page run
/// for `budget_ms` of virtual time; returns its stdout. No proxy, no network beyond `url`.
pub async fn headless(chromium: &Path, url: &str, args: &[String], budget_ms: u32) -> String {
    let profile = tempdir();
    let out_path = profile.path().join("stdout");
    let err_path = profile.path().join("stderr");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(args)
        .arg(url)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("chromium starts");
    let mut status = None;
    let finished = wait_until(Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(finished, "chromium did not finish within 60 s: {stderr}");
    assert!(
        status.is_some_and(|s| s.success()),
        "chromium failed ({status:?}): {stderr}"
    );
    std::fs::read_to_string(&out_path).unwrap()
}

/// Runs `peercache ARGS` to its exit (at most 20 s), output captured.
pub fn peercache(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..2000 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("peercache {args:?} did not exit within 20 s");
}

/// Sends `request` as raw bytes on a fresh connection to `proxy` and returns everything that
/// comes back until the connection closes (at most 5 s), as text. For requests a client library
/// would refuse to send; end them with `Connection: close`.
pub async fn raw(proxy: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The stored entry for `url` on `proxy` (its first variant), if any.
pub async fn stored(
    proxy: &Running,
    url: &str,
) -> Option<std::sync::Arc<peercache::cache::head::Entry>> {
    let uri: http::Uri = url.parse().unwrap();
    let key = peercache::cache::key::CacheKey::from_uri(&uri).unwrap();
    let variants = proxy.app.store.lookup(key.as_str()).await?;
    variants.entries.first().cloned()
}

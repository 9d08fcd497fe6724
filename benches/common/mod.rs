//! What the end-to-end benches share: a real `peercache` process on a free loopback port with a
//! config written into a temporary directory, the proxy's memory as the kernel reports it, bench
//! origins (http and https), a keep-alive client, a bounded one-shot client and latency
//! percentiles. Each bench uses a part.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// A running `peercache` process; killed when dropped.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Proxy {
    /// Starts `peercache run` on a free 127.0.0.1 port with its cache in `dir/cache`; `extra` is
    /// TOML placed right after `[cache] dir` (more `[cache]` keys, then other tables; not
    /// `[proxy]`). `prefix` is a command the binary runs under
    /// (e.g. `["taskset", "-c", "1"]`). Waits (bounded) until the port accepts.
    pub async fn start(dir: &Path, extra: &str, prefix: &[&str]) -> Proxy {
        Self::start_with(dir, "", extra, prefix).await
    }

    /// `start` with `proxy_keys` added to the `[proxy]` table (e.g. `connect_ports = [8443]`).
    pub async fn start_with(dir: &Path, proxy_keys: &str, extra: &str, prefix: &[&str]) -> Proxy {
        let bin = Path::new(env!("CARGO_BIN_EXE_peercache"));
        Self::start_bin(bin, dir, proxy_keys, extra, prefix).await
    }

    /// `start_with` of the binary `bin` (e.g. an older build, for a same-run comparison). Its
    /// stdout (the access log, when on) goes to `dir/stdout.log`, a file as in production.
    pub async fn start_bin(
        bin: &Path,
        dir: &Path,
        proxy_keys: &str,
        extra: &str,
        prefix: &[&str],
    ) -> Proxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let conf = dir.join("peercache.toml");
        std::fs::write(
            &conf,
            format!(
                "[proxy]\nlisten = \"127.0.0.1:{port}\"\n{proxy_keys}\n[cache]\ndir = \"{}\"\n{extra}\n",
                dir.join("cache").display()
            ),
        )
        .expect("config");
        let stdout = std::fs::File::create(dir.join("stdout.log")).expect("stdout.log");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&conf)
            .stdout(stdout)
            .spawn()
            .expect("start peercache");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Proxy { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/proc/PID/status` memory figure in KiB (`VmRSS`, `VmHWM`…), 0 if unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time a process used so far (user + system, all threads), from `/proc/PID/stat`; zero if
/// unreadable. Clock-tick resolution (10 ms).
pub fn cpu_time(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command (which may hold spaces): state is field 3, utime 14.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Serves HTTP/1.1 on a fresh 127.0.0.1 port with `answer` for every request (a bench origin);
/// returns its address. Runs until the runtime ends.
pub async fn origin<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<peercache::body::Body>> + Send + 'static,
{
    origin_with(None, answer).await
}

/// `origin` over TLS with the test certificate for 127.0.0.1 (`tests/fixtures/`, whose CA is
/// `tests/fixtures/ca.pem`).
pub async fn origin_tls<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<peercache::body::Body>> + Send + 'static,
{
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture("server.pem"))
        .expect("server.pem")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).expect("server.key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    origin_with(Some(acceptor), answer).await
}

/// A file of the test TLS material.
pub fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

async fn origin_with<F, Fut>(tls: Option<tokio_rustls::TlsAcceptor>, answer: F) -> SocketAddr
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<peercache::body::Body>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (answer, tls) = (answer.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = answer(req);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http.serve_connection(io, svc).await;
                        }
                    }
                    None => {
                        let io = hyper_util::rt::TokioIo::new(tcp);
                        let _ = http.serve_connection(io, svc).await;
                    }
                }
            });
        }
    });
    addr
}

/// A numeric knob from the environment, or `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0..=1) of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// A keep-alive HTTP/1.1 client connection (plain or over TLS).
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A client connection to `addr` over any stream.
pub async fn handshake<IO>(io: IO) -> Sender
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}

/// A plain client connection to the proxy.
pub async fn connect(proxy: SocketAddr) -> Sender {
    let tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect proxy");
    let _ = tcp.set_nodelay(true);
    handshake(tcp).await
}

/// `GET url` with `Host: host`: the status and the body.
pub async fn get_body(send: &mut Sender, url: &str, host: &str) -> (u16, Bytes) {
    let req = hyper::Request::get(url)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, body)
}

/// `GET url` (`Host: bench`): the status and the body length.
pub async fn get(send: &mut Sender, url: &str) -> (u16, usize) {
    let (status, body) = get_body(send, url, "bench").await;
    (status, body.len())
}

/// The client side's runtime: one worker thread, so the proxy (pinned elsewhere) gets its CPU.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A response's `X-Cache` value (`-` without one).
pub fn x_cache(h: &http::HeaderMap) -> String {
    h.get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// What a client got for one request.
pub struct Got {
    pub status: u16,
    pub x_cache: String,
    pub body: Bytes,
}

/// One GET of `url` through the proxy at `proxy` on a fresh connection (`Host: bench`), body
/// read whole, within `limit`: `None` on any failure or timeout, so a fault script neither hangs
/// nor panics.
pub async fn get_once(proxy: SocketAddr, url: &str, limit: Duration) -> Option<Got> {
    tokio::time::timeout(limit, async {
        let tcp = tokio::net::TcpStream::connect(proxy).await.ok()?;
        let mut send = handshake(tcp).await;
        let req = hyper::Request::get(url)
            .header("host", "bench")
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = send.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let x_cache = x_cache(resp.headers());
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(Got {
            status,
            x_cache,
            body,
        })
    })
    .await
    .ok()
    .flatten()
}

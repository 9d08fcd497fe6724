//! What the end-to-end benches share: a real `peercache` process on a free loopback port with a
//! config written into a temporary directory, the proxy's memory as the kernel reports it, an
//! origin and a one-shot client.
// Each bench uses a part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let conf = dir.join("peercache.toml");
        std::fs::write(
            &conf,
            format!(
                "[proxy]\nlisten = \"127.0.0.1:{port}\"\n[cache]\ndir = \"{}\"\n{extra}\n",
                dir.join("cache").display()
            ),
        )
        .expect("config");
        let bin = env!("CARGO_BIN_EXE_peercache");
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
            .stdout(Stdio::null())
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

/// Serves HTTP/1.1 on a fresh 127.0.0.1 port with `answer` for every request (a bench origin);
/// returns its address. Runs until the runtime ends.
pub async fn origin<F, Fut>(answer: F) -> SocketAddr
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
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = answer(req);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// What a client got for one request.
pub struct Got {
    pub status: u16,
    pub x_cache: String,
    pub body: bytes::Bytes,
}

/// One GET of `url` through the proxy at `proxy` (absolute-form, fresh connection), body read
/// whole, within `limit`; `None` on any failure or timeout.
pub async fn get(proxy: SocketAddr, url: &str, limit: Duration) -> Option<Got> {
    use http_body_util::BodyExt;
    tokio::time::timeout(limit, async {
        let tcp = tokio::net::TcpStream::connect(proxy).await.ok()?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get(url)
            .header("host", "bench")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .ok()?;
        let resp = send.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let x_cache = resp
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
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

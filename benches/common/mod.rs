//! What the end-to-end benches share: a real `peercache` process on a free loopback port with a
//! config written into a temporary directory, and the proxy's memory as the kernel reports it.

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

//! End-to-end: one large object (default 1 GiB; `BIG_MB` to change) through a real `peercache`
//! process, first as a MISS (streamed to disk and to the client at once), then as a HIT.
//! Reports throughput and the proxy's peak RSS (VmHWM). Run: `cargo bench --bench big_object`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

mod common;

const CHUNK: usize = 256 * 1024;

fn chunk() -> Bytes {
    Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

async fn origin(len: u64) -> std::net::SocketAddr {
    let data = chunk();
    common::origin(move |_req| {
        let data = data.clone();
        async move {
            let (tx, body) = peercache::body::channel(Some(len));
            tokio::spawn(async move {
                let mut left = len;
                while left > 0 {
                    let n = left.min(CHUNK as u64) as usize;
                    if tx.send(Ok(data.slice(..n))).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            });
            hyper::Response::builder()
                .header("content-length", len)
                .header("cache-control", "max-age=3600")
                .body(body)
                .expect("response")
        }
    })
    .await
}

async fn fetch(proxy: std::net::SocketAddr, url: &str) -> (u64, String, Duration) {
    let start = Instant::now();
    let tcp = TcpStream::connect(proxy).await.expect("connect proxy");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(url)
        .header("host", "bench")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let x_cache = common::x_cache(resp.headers());
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.expect("body frame").into_data() {
            n += d.len() as u64;
        }
    }
    (n, x_cache, start.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` compatibility
    }
    let mb: u64 = std::env::var("BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let len = mb * 1024 * 1024;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let origin = origin(len).await;
        let dir = tempfile::tempdir().expect("tempdir");
        // BIG_SENDFILE=0 sends hits through the copy path instead of sendfile(2).
        let sendfile = std::env::var("BIG_SENDFILE").map_or(true, |v| v != "0");
        let proxy_proc = common::Proxy::start(
            dir.path(),
            &format!("max_size = \"8GiB\"\nsendfile = {sendfile}\n[log]\naccess = false\nlevel = \"warn\""),
            &[],
        )
        .await;
        let proxy = proxy_proc.addr;
        let pid = proxy_proc.pid();
        let url = format!("http://{origin}/big");
        println!("big_object: {mb} MiB through peercache (pid {pid})");
        for pass in ["first", "second"] {
            let (n, x_cache, took) = fetch(proxy, &url).await;
            assert_eq!(n, len, "whole body");
            println!(
                "  {pass:6} {x_cache:6} {:8.1} MiB/s  {:6.2} s  proxy peak RSS {} MiB",
                mb as f64 / took.as_secs_f64(),
                took.as_secs_f64(),
                common::status_kib(pid, "VmHWM") / 1024
            );
        }
        drop(proxy_proc);
    });
}

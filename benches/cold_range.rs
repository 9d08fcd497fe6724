//! End-to-end: a range at 90 % of a cold large object (default 200 MiB; `RANGE_MB`) from a slow
//! origin (`RANGE_MBPS` MiB/s, default 20, with `RANGE_FIRST_MS` ms before every answer's first
//! byte, default 100) through a real `peercache` process: the range's first and last byte, as
//! against the origin asked directly and the download reaching the offset; then the object
//! stored by the background fill, with `cache.range_fill = "whole"` and `"none"`.
//! Run: `cargo bench --bench cold_range`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

mod common;

const CHUNK: usize = 64 * 1024;
const RANGE_LEN: u64 = 1 << 20;

/// The origin: the whole object or one `bytes=a-b` range of it (ETag `"r1"`), each answer
/// after `first` and at `rate` bytes per second.
async fn origin(len: u64, rate: u64, first: Duration) -> std::net::SocketAddr {
    let data = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    common::origin(move |req| {
        let data = data.clone();
        async move {
            let span = req
                .headers()
                .get("range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|v| v.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
            let (start, end) = span.map_or((0, len), |(a, b)| (a, (b + 1).min(len)));
            tokio::time::sleep(first).await;
            let (tx, body) = peercache::body::channel(Some(end - start));
            tokio::spawn(async move {
                let began = Instant::now();
                let mut pos = start;
                while pos < end {
                    // Bytes at the rate: the next chunk goes when its time has come.
                    let due = Duration::from_secs_f64((pos - start) as f64 / rate as f64);
                    tokio::time::sleep_until((began + due).into()).await;
                    let off = (pos % CHUNK as u64) as usize;
                    let n = ((end - pos) as usize).min(CHUNK - off);
                    if tx.send(Ok(data.slice(off..off + n))).await.is_err() {
                        return;
                    }
                    pos += n as u64;
                }
            });
            let mut r = hyper::Response::builder()
                .header("content-length", end - start)
                .header("cache-control", "max-age=3600")
                .header("etag", "\"r1\"");
            if span.is_some() {
                r = r
                    .status(206)
                    .header("content-range", format!("bytes {start}-{}/{len}", end - 1));
            }
            r.body(body).expect("response")
        }
    })
    .await
}

/// What a client saw of one GET: status, X-Cache, first and last body byte after sending.
struct Timed {
    status: u16,
    x_cache: String,
    first: Duration,
    last: Duration,
    bytes: u64,
}

async fn timed(addr: std::net::SocketAddr, url: &str, range: Option<(u64, u64)>) -> Timed {
    let mut send = common::connect(addr).await;
    let mut req = hyper::Request::get(url).header("host", "bench");
    if let Some((a, b)) = range {
        req = req.header("range", format!("bytes={a}-{b}"));
    }
    let began = Instant::now();
    let resp = send
        .send_request(req.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let x_cache = common::x_cache(resp.headers());
    let mut body = resp.into_body();
    let (mut first, mut bytes) = (None, 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.expect("body frame").into_data() {
            first.get_or_insert_with(|| began.elapsed());
            bytes += d.len() as u64;
        }
    }
    let last = began.elapsed();
    Timed {
        status,
        x_cache,
        first: first.unwrap_or(last),
        last,
        bytes,
    }
}

fn show(what: &str, t: &Timed) {
    println!(
        "  {what:44} {} {:6} first byte {:7.3} s  last byte {:7.3} s  ({} bytes)",
        t.status,
        t.x_cache,
        t.first.as_secs_f64(),
        t.last.as_secs_f64(),
        t.bytes
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` compatibility
    }
    let mb = common::knob("RANGE_MB", 200);
    let rate = common::knob("RANGE_MBPS", 20) << 20;
    let first = Duration::from_millis(common::knob("RANGE_FIRST_MS", 100));
    let len = mb << 20;
    let at = len / 10 * 9;
    let range = Some((at, at + RANGE_LEN - 1));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let origin = origin(len, rate, first).await;
        println!(
            "cold_range: {mb} MiB at {} MiB/s, {} ms to each first byte; a 1 MiB range at 90 %",
            rate >> 20,
            first.as_millis()
        );
        let direct = timed(origin, &format!("http://{origin}/direct"), range).await;
        show("origin asked directly", &direct);
        for fill in ["whole", "none"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let extra = format!(
                "max_size = \"8GiB\"\nrange_fill = \"{fill}\"\n[log]\naccess = false\nlevel = \"warn\""
            );
            let proxy = common::Proxy::start(dir.path(), &extra, &[]).await;
            let url = format!("http://{origin}/{fill}");
            println!(" range_fill = \"{fill}\"");
            let cold = timed(proxy.addr, &url, range).await;
            show("cold range", &cold);
            assert_eq!((cold.status, cold.bytes), (206, RANGE_LEN));
            // The background fill (if any) stores the object; the same range again after it.
            let began = Instant::now();
            let limit = Duration::from_secs_f64(len as f64 / rate as f64 * 2.0 + 30.0);
            let status = format!("http://{}/_peercache/status", proxy.addr);
            while began.elapsed() < limit {
                let running = common::get_once(proxy.addr, &status, Duration::from_secs(5))
                    .await
                    .and_then(|g| serde_json::from_slice::<serde_json::Value>(&g.body).ok())
                    .and_then(|s| s["fills_running"].as_u64());
                if running == Some(0) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if fill == "whole" {
                println!(
                    "  background fill done {:.1} s after the cold range began",
                    (cold.last + began.elapsed()).as_secs_f64()
                );
            }
            let again = timed(proxy.addr, &url, range).await;
            show("the range again", &again);
        }
        let expected = at as f64 / rate as f64 + first.as_secs_f64();
        println!("  (a download reaching 90 % would take {expected:.1} s)");
    });
}

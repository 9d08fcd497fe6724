//! Large verified hits go out with `sendfile`: byte-exact, ranges, keep-alive and pipelining, and
//! a blob that shrinks under a response cuts it instead of completing it.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::*;

/// Bytes without a short period (an offset error or zeros would show).
fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

fn sent(proxy: &peercache::app::Running) -> u64 {
    proxy.app.metrics.sendfile_bytes.load(Relaxed)
}

const BIG: usize = 3 << 20;

fn request(origin: &Origin, path: &str, extra: &str) -> String {
    format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\n{extra}\r\n",
        origin.url(path),
        origin.addr
    )
}

/// One response read off a raw connection: status, header fields (lower-case names), body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = vec![];
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            return (status, headers);
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
}

/// Reads one response with a `Content-Length` body.
async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Raw {
    let (status, headers) = read_head(r).await;
    let mut raw = Raw {
        status,
        headers,
        body: vec![],
    };
    let len: usize = raw.header("content-length").parse().unwrap();
    raw.body = vec![0; len];
    r.read_exact(&mut raw.body).await.unwrap();
    raw
}

async fn big_origin() -> (Origin, Bytes) {
    let origin = Origin::start().await;
    let body = noise(BIG, 1);
    origin.route(
        "/big",
        Reply::ok(body.clone()).header("cache-control", "max-age=3600"),
    );
    (origin, body)
}

#[tokio::test]
async fn verified_big_hits_are_sent_with_sendfile_byte_for_byte() {
    let (origin, body) = big_origin().await;
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;

    let miss = get(proxy.addr, &origin.url("/big")).await;
    assert_eq!((miss.status, miss.x_cache()), (200, "MISS"));
    assert!(miss.body.unwrap() == body);
    assert_eq!(sent(&proxy), 0, "a miss is not sent from the file");
    // The blob was hashed while it was written: every hit goes out with sendfile.
    for round in 1..=2 {
        let before = sent(&proxy);
        let hit = get(proxy.addr, &origin.url("/big")).await;
        assert_eq!((hit.status, hit.x_cache()), (200, "HIT"), "round {round}");
        assert_eq!(hit.header("content-length"), BIG.to_string());
        assert!(hit.body.unwrap() == body, "round {round}: bytes differ");
        assert_eq!(sent(&proxy) - before, BIG as u64, "round {round}");
    }
    assert_eq!(origin.hits("/big"), 1);

    // HEAD sends no body.
    let before = sent(&proxy);
    let head = send(proxy.addr, "HEAD", &origin.url("/big"), &[]).await;
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, "3145728")
    );
    assert_eq!(sent(&proxy), before);

    let v = status_json(proxy.addr).await;
    assert_eq!(v["counters"]["sendfile_bytes"], 2 * BIG as u64);
    assert!(metrics_text(proxy.addr)
        .await
        .contains(&format!("peercache_sendfile_bytes_total {}", 2 * BIG)));
    proxy.stop().await;
}

#[tokio::test]
async fn with_sendfile_off_big_hits_are_read_and_copied() {
    let (origin, body) = big_origin().await;
    let dir = tempdir();
    let mut c = config(dir.path());
    c.cache.sendfile = false;
    let proxy = start_proxy(c).await;
    for want in ["MISS", "HIT", "HIT"] {
        let r = get(proxy.addr, &origin.url("/big")).await;
        assert_eq!((r.status, r.x_cache()), (200, want));
        assert!(r.body.unwrap() == body);
    }
    assert_eq!(sent(&proxy), 0, "cache.sendfile = false");
    assert_eq!(origin.hits("/big"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_range_of_a_big_hit_is_sent_with_sendfile() {
    let (origin, body) = big_origin().await;
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    get(proxy.addr, &origin.url("/big")).await;

    let before = sent(&proxy);
    let part = send(
        proxy.addr,
        "GET",
        &origin.url("/big"),
        &[("range", "bytes=1000000-2000123")],
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        format!("bytes 1000000-2000123/{BIG}")
    );
    assert!(part.body.unwrap() == body.slice(1_000_000..2_000_124));
    assert_eq!(sent(&proxy) - before, 1_000_124);
    assert_eq!(origin.hits("/big"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn the_first_hit_after_a_restart_is_hashed_then_hits_use_sendfile() {
    let (origin, body) = big_origin().await;
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    get(proxy.addr, &origin.url("/big")).await;
    proxy.stop().await;

    let proxy = start_proxy(config(dir.path())).await;
    let first = get(proxy.addr, &origin.url("/big")).await;
    assert_eq!(first.x_cache(), "HIT");
    assert!(first.body.unwrap() == body);
    assert_eq!(sent(&proxy), 0, "an unverified blob is read and hashed");
    let second = get(proxy.addr, &origin.url("/big")).await;
    assert_eq!(second.x_cache(), "HIT");
    assert!(second.body.unwrap() == body);
    assert_eq!(sent(&proxy), BIG as u64);
    assert_eq!(origin.hits("/big"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn pipelined_responses_on_one_connection_each_get_their_own_bytes() {
    let (origin, body) = big_origin().await;
    let small = noise(5000, 2);
    origin.route(
        "/small",
        Reply::ok(small.clone()).header("cache-control", "max-age=3600"),
    );
    let other = noise(BIG + 12345, 3);
    origin.route(
        "/other",
        Reply::ok(other.clone()).header("cache-control", "max-age=3600"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    for p in ["/big", "/small", "/other"] {
        assert_eq!(get(proxy.addr, &origin.url(p)).await.x_cache(), "MISS");
    }

    // All requests in one write: each next request is already read while the previous
    // response is still on its way out.
    let before = sent(&proxy);
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (rd, mut wr) = tcp.into_split();
    let mut rd = BufReader::new(rd);
    let reqs = [
        request(&origin, "/big", ""),
        request(&origin, "/small", ""),
        request(&origin, "/other", ""),
        request(&origin, "/big", "range: bytes=7-20\r\n"),
        request(&origin, "/big", ""),
    ]
    .concat();
    wr.write_all(reqs.as_bytes()).await.unwrap();
    // Read late: the proxy fills the socket and waits with body bytes still queued.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expect = [
        (200, body.clone()),
        (200, small.clone()),
        (200, other.clone()),
        (206, body.slice(7..21)),
        (200, body.clone()),
    ];
    for (i, (status, want)) in expect.iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(20), read_response(&mut rd))
            .await
            .expect("response in time");
        assert_eq!((r.status, r.header("x-cache")), (*status, "HIT"), "#{i}");
        assert!(r.body == want.as_ref(), "#{i}: bytes differ");
    }
    assert_eq!(
        sent(&proxy) - before,
        (2 * BIG + other.len() + 14) as u64,
        "the small body comes from memory, the rest from the file"
    );
    // The same connection, request by request (keep-alive, not pipelined).
    for (path, want) in [("/small", &small), ("/big", &body), ("/small", &small)] {
        wr.write_all(request(&origin, path, "").as_bytes())
            .await
            .unwrap();
        let r = read_response(&mut rd).await;
        assert!(r.body == want.as_ref(), "{path}");
    }
    assert_eq!(origin.hits("/big"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_blob_that_shrinks_under_a_hit_cuts_the_response_and_the_proxy_goes_on() {
    let origin = Origin::start().await;
    let len = 32 << 20;
    let body = noise(len, 4);
    origin.route(
        "/shrinks",
        Reply::ok(body.clone()).header("cache-control", "max-age=3600"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    assert_eq!(
        get(proxy.addr, &origin.url("/shrinks")).await.x_cache(),
        "MISS"
    );
    let blob = blobs_under(dir.path()).pop().expect("one blob");

    // A slow reader: a small receive window keeps most of the body in the file.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    let tcp = sock.connect(proxy.addr).await.unwrap();
    let (rd, mut wr) = tcp.into_split();
    let mut rd = BufReader::new(rd);
    wr.write_all(request(&origin, "/shrinks", "").as_bytes())
        .await
        .unwrap();
    let (status, headers) = read_head(&mut rd).await;
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-length".into(), len.to_string())));
    let mut got = vec![0; 1000];
    rd.read_exact(&mut got).await.unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut rest = vec![];
    // An error (reset) or an early end: either way, fewer bytes than announced.
    let _ = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut rest))
        .await
        .expect("the connection ends");
    got.extend_from_slice(&rest);
    assert!(
        got.len() < len,
        "a shrunk blob must not be served as complete ({} of {len} bytes)",
        got.len()
    );
    assert!(
        got[..] == body[..got.len()],
        "what arrived is the real prefix"
    );

    // The proxy serves on: the shrunk blob is dropped and fetched again.
    let again = get(proxy.addr, &origin.url("/shrinks")).await;
    assert_eq!((again.status, again.x_cache()), (200, "MISS"));
    assert!(again.body.unwrap() == body);
    assert_eq!(origin.hits("/shrinks"), 2);
    let hit = get(proxy.addr, &origin.url("/shrinks")).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert!(hit.body.unwrap() == body);
    proxy.stop().await;
}

//! Everything that grows with remote input is bounded, and counted when the bound is hit:
//! client connections, fills running at once, bodies over `max_object_size`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::support::*;

#[tokio::test]
async fn connections_beyond_max_connections_get_503_and_are_counted() {
    let origin = Origin::start().await;
    origin.route("/x", Reply::ok("x"));
    let dir = tempdir();
    let mut c = config(dir.path());
    c.proxy.max_connections = 2;
    let proxy = start_proxy(c).await;
    let open = || proxy.app.metrics.connections_open.load(Relaxed);
    let idle_a = TcpStream::connect(proxy.addr).await.unwrap();
    let _idle_b = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || open() == 2).await);
    let r = raw(
        proxy.addr,
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.url("/x"),
            origin.addr
        )
        .as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r:?}");
    assert!(r.contains("x-peercache-error: busy"), "{r:?}");
    assert_eq!(origin.hits("/x"), 0);
    drop(idle_a);
    assert!(wait_until(Duration::from_secs(5), || open() == 1).await);
    assert_eq!(get(proxy.addr, &origin.url("/x")).await.text(), "x");
    assert!(wait_until(Duration::from_secs(5), || open() == 1).await);
    let s = status_json(proxy.addr).await;
    assert_eq!(s["counters"]["limits"]["connections_refused"], 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_beyond_max_fills_is_passed_through_unstored_and_counted() {
    let origin = Origin::start().await;
    let body = pattern(100_000, 1);
    let (gate_open, gate) = watch::channel(false);
    origin.route(
        "/slow",
        Reply::gated(body.slice(..1000), body.slice(1000..), gate),
    );
    origin.route(
        "/other",
        Reply::ok("other").header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let mut c = config(dir.path());
    c.cache.max_fills = 1;
    let proxy = start_proxy(c).await;
    let slow = send_head(proxy.addr, "GET", &origin.url("/slow"), &[]).await;
    assert_eq!(proxy.app.inflight.running(), 1, "the slow fill runs");
    for _ in 0..2 {
        let r = get(proxy.addr, &origin.url("/other")).await;
        assert_eq!((r.status, r.text().as_str()), (200, "other"));
    }
    assert_eq!(
        origin.hits("/other"),
        2,
        "not stored while the only fill runs"
    );
    gate_open.send(true).unwrap();
    assert!(Got::read(slow).await.body.unwrap() == body);
    assert!(wait_until(Duration::from_secs(5), || proxy.app.inflight.running() == 0).await);
    let r = get(proxy.addr, &origin.url("/other")).await;
    assert_eq!(r.x_cache(), "MISS");
    assert_eq!(
        get(proxy.addr, &origin.url("/other")).await.x_cache(),
        "HIT"
    );
    let s = status_json(proxy.addr).await;
    assert_eq!(s["counters"]["limits"]["fills_passed_unstored"], 2);
    proxy.stop().await;
}

/// Bytes in the files under `dir` now.
fn bytes_under(dir: &std::path::Path) -> u64 {
    files_under(dir)
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_is_stored_up_to_max_object_size_then_passed_through_and_ends_with_its_reader(
) {
    const LIMIT: u64 = 1024 * 1024;
    let origin = Origin::start().await;
    let dir = tempdir();
    let mut c = config(dir.path());
    c.cache.max_object_size = LIMIT;
    let proxy = start_proxy(c).await;
    // The client reads past the limit (the rest is passed through), or leaves before it (the
    // fill goes on to the limit, then ends: nobody is left to take the rest).
    for (path, reads) in [("/past", 3 * LIMIT), ("/before", LIMIT / 4)] {
        let endless = Endless::new(pattern(64 * 1024, 5));
        origin.route(
            path,
            Reply {
                status: 200,
                headers: vec![("cache-control".into(), "max-age=600".into())],
                payload: Payload::Endless(endless.clone()),
            },
        );
        let mut resp = send_head(proxy.addr, "GET", &origin.url(path), &[]).await;
        assert_eq!(resp.status(), 200);
        let mut got = 0u64;
        while got < reads {
            use http_body_util::BodyExt;
            let frame = tokio::time::timeout(Duration::from_secs(5), resp.body_mut().frame())
                .await
                .expect("the body goes on past the limit")
                .expect("a frame")
                .expect("not cut");
            got += frame.into_data().map_or(0, |d| d.len() as u64);
            let tmp = bytes_under(&dir.path().join("tmp"));
            assert!(tmp <= LIMIT, "{path}: {tmp} bytes in tmp/ after {got} sent");
        }
        drop(resp); // the only reader leaves
        assert!(
            wait_until(Duration::from_secs(5), || endless.stopped()).await,
            "{path}: the fill ended with its last reader ({} bytes sent)",
            endless.sent()
        );
        assert!(wait_until(Duration::from_secs(5), || proxy.app.inflight.running() == 0).await);
        assert!(bytes_under(&dir.path().join("tmp")) <= LIMIT);
    }
    assert!(proxy.app.store.stats().urls == 0, "nothing stored");
    let s = status_json(proxy.addr).await;
    assert_eq!(s["counters"]["limits"]["fills_over_size"], 2);
    proxy.stop().await;
}

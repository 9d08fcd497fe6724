//! Collapsed forwarding and serve-while-downloading, and what a cut origin does to readers.

use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_make_one_origin_request_and_stream_before_it_ends() {
    let origin = Origin::start().await;
    let body = pattern(300_000, 3);
    let (open, gate) = watch::channel(false);
    origin.route(
        "/slow",
        gated(
            body.slice(..100_000),
            Some(body.slice(100_000..)),
            gate,
            body.len(),
        ),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let url = origin.url("/slow");

    // Every client gets its head and its first bytes while the origin is still holding back.
    let mut clients = Vec::new();
    for _ in 0..50 {
        let resp = send_head(proxy.addr, "GET", &url, &[]).await;
        clients.push(resp);
    }
    let mut statuses = Vec::new();
    let mut firsts = Vec::new();
    for resp in &mut clients {
        statuses.push(resp.headers()["x-cache"].to_str().unwrap().to_owned());
        // The first bytes arrive while the origin is still sending.
        firsts.push(read_at_least(resp, 1000).await);
    }
    assert_eq!(origin.hits("/slow"), 1);
    assert_eq!(statuses.iter().filter(|s| *s == "MISS").count(), 1);
    assert_eq!(statuses.iter().filter(|s| *s == "COLLAPSED").count(), 49);
    open.send(true).unwrap();
    for (resp, first) in clients.into_iter().zip(firsts) {
        let rest = resp.into_body().collect().await.unwrap().to_bytes();
        let mut all = first;
        all.extend_from_slice(&rest);
        assert!(all == body, "every client gets the whole, correct body");
    }
    assert_eq!(origin.hits("/slow"), 1);
    // A late joiner is a hit.
    assert_eq!(get(proxy.addr, &url).await.x_cache(), "HIT");
    proxy.stop().await;
}

#[tokio::test]
async fn a_late_joiner_gets_the_body_from_byte_zero() {
    let origin = Origin::start().await;
    let body = pattern(200_000, 9);
    let (open, gate) = watch::channel(false);
    origin.route(
        "/late",
        gated(
            body.slice(..150_000),
            Some(body.slice(150_000..)),
            gate,
            body.len(),
        ),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let url = origin.url("/late");
    let first = send_head(proxy.addr, "GET", &url, &[]).await;
    // Wait until the proxy has the first part on disk, then join.
    let app = proxy.app.clone();
    assert!(wait_until(Duration::from_secs(5), || !app.inflight.is_empty()).await);
    let (addr, late_url) = (proxy.addr, url.clone());
    let late = tokio::spawn(async move { send(addr, "GET", &late_url, &[]).await });
    let app2 = app.clone();
    assert!(
        wait_until(Duration::from_secs(5), || app2
            .metrics
            .requests(peercache::metrics::CacheStatus::Collapsed)
            == 1)
        .await
    );
    open.send(true).unwrap();
    let late = late.await.unwrap();
    assert_eq!(late.x_cache(), "COLLAPSED");
    assert!(late.body.unwrap() == body);
    assert!(first.into_body().collect().await.unwrap().to_bytes() == body);
    assert_eq!(origin.hits("/late"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn the_fetch_goes_on_when_the_first_client_leaves() {
    let origin = Origin::start().await;
    let body = pattern(100_000, 1);
    let (open, gate) = watch::channel(false);
    origin.route(
        "/leave",
        gated(body.slice(..10), Some(body.slice(10..)), gate, body.len()),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let url = origin.url("/leave");
    let resp = send_head(proxy.addr, "GET", &url, &[]).await;
    drop(resp); // the client goes away mid-body
    open.send(true).unwrap();
    let app = proxy.app.clone();
    assert!(
        wait_until(Duration::from_secs(5), || app.store.stats().urls > 0).await,
        "the body is stored anyway"
    );
    let r = get(proxy.addr, &url).await;
    assert_eq!(r.x_cache(), "HIT");
    assert!(r.body.unwrap() == body);
    assert_eq!(origin.hits("/leave"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn an_origin_cut_mid_body_cuts_every_reader_and_stores_nothing() {
    let origin = Origin::start().await;
    let body = pattern(50_000, 5);
    let (open, gate) = watch::channel(false);
    origin.route("/cut", gated(body.slice(..20_000), None, gate, body.len()));
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let url = origin.url("/cut");
    let a = send_head(proxy.addr, "GET", &url, &[]).await;
    let app = proxy.app.clone();
    assert!(wait_until(Duration::from_secs(5), || !app.inflight.is_empty()).await);
    let b = send_head(proxy.addr, "GET", &url, &[]).await;
    assert_eq!(b.headers()["x-cache"], "COLLAPSED");
    open.send(true).unwrap();
    assert!(
        a.into_body().collect().await.is_err(),
        "the leader's client sees a cut"
    );
    assert!(
        b.into_body().collect().await.is_err(),
        "the follower sees a cut"
    );
    assert!(proxy.app.store.stats().urls == 0, "nothing stored");
    // The next request goes to the origin again and succeeds.
    origin.route(
        "/cut",
        Reply::ok(body.clone()).header("cache-control", "max-age=600"),
    );
    let r = get(proxy.addr, &url).await;
    assert_eq!(r.x_cache(), "MISS");
    assert!(r.body.unwrap() == body);
    assert_eq!(origin.hits("/cut"), 2);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_leaves_before_the_head_neither_abandons_the_fill_nor_asks_twice() {
    let origin = Origin::start().await;
    let body = pattern(40_000, 9);
    let (open, gate) = watch::channel(false);
    origin.route(
        "/late",
        Reply {
            status: 200,
            headers: vec![("cache-control".into(), "max-age=600".into())],
            payload: Payload::HeadGated {
                body: body.clone(),
                gate,
            },
        },
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let url = origin.url("/late");
    let (addr, u) = (proxy.addr, url.clone());
    let first = tokio::spawn(async move { send_head(addr, "GET", &u, &[]).await });
    assert!(wait_until(Duration::from_secs(5), || origin.hits("/late") == 1).await);
    first.abort(); // client 1 leaves before any head came back
    let metrics = proxy.app.metrics.clone();
    assert!(
        wait_until(Duration::from_secs(5), || metrics
            .connections_open
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0)
        .await,
        "the proxy saw client 1 go"
    );
    let u = url.clone();
    let second = tokio::spawn(async move { get(addr, &u).await });
    let inflight = proxy.app.inflight.clone();
    assert!(
        wait_until(Duration::from_secs(5), || origin.hits("/late") > 1
            || inflight.get(&url).is_some_and(|f| f.watchers() >= 1))
        .await,
        "client 2 joined a fill or asked again"
    );
    open.send(true).unwrap();
    let got = second.await.unwrap();
    assert!(got.body.unwrap() == body);
    assert_eq!(
        origin.hits("/late"),
        1,
        "one origin request for both clients"
    );
    assert_eq!(get(proxy.addr, &url).await.x_cache(), "HIT");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collapsed_answer_carries_the_current_age_and_the_leaders_does_not() {
    let origin = Origin::start().await;
    let body = pattern(30_000, 4);
    let (open, gate) = watch::channel(false);
    let an_hour_ago =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
    let mut reply = Reply::gated(body.slice(..1000), body.slice(1000..), gate);
    reply.headers.push(("date".into(), an_hour_ago));
    reply.headers[0].1 = "max-age=7200".into();
    origin.route("/aged", reply);
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let url = origin.url("/aged");
    let leader = send_head(proxy.addr, "GET", &url, &[]).await;
    let follower = send_head(proxy.addr, "GET", &url, &[]).await;
    open.send(true).unwrap();
    assert_eq!(leader.headers()["x-cache"], "MISS");
    assert!(
        leader.headers().get("age").is_none(),
        "the origin made it for this request"
    );
    assert_eq!(follower.headers()["x-cache"], "COLLAPSED");
    let age: u64 = follower.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!((3600..3700).contains(&age), "Age {age}");
    assert!(Got::read(follower).await.body.unwrap() == body);
    drop(leader);
    proxy.stop().await;
}

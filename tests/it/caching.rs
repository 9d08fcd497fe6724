//! RFC 9111 behaviour seen from a client: hits, freshness, revalidation, Vary, conditionals, ranges.

use crate::support::*;

#[tokio::test]
async fn a_second_fetch_is_a_hit_and_the_origin_sees_one_request() {
    let origin = Origin::start().await;
    origin.route(
        "/a",
        Reply::ok("hello").header("cache-control", "max-age=3600"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;

    let first = get(proxy.addr, &origin.url("/a")).await;
    assert_eq!(
        (first.status, first.text().as_str(), first.x_cache()),
        (200, "hello", "MISS")
    );
    let second = get(proxy.addr, &origin.url("/a")).await;
    assert_eq!(
        (second.status, second.text().as_str(), second.x_cache()),
        (200, "hello", "HIT")
    );
    assert!(
        second.header("age").parse::<u64>().is_ok(),
        "a hit carries Age"
    );
    assert!(
        second.header("via").contains("peercache-"),
        "a hit carries Via"
    );
    assert_eq!(origin.hits("/a"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn responses_that_must_not_be_stored_are_fetched_every_time() {
    let origin = Origin::start().await;
    origin.route(
        "/nostore",
        Reply::ok("x").header("cache-control", "no-store"),
    );
    origin.route(
        "/private",
        Reply::ok("x").header("cache-control", "private, max-age=60"),
    );
    origin.route(
        "/cookie",
        Reply::ok("x")
            .header("cache-control", "max-age=60")
            .header("set-cookie", "id=1"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    for path in ["/nostore", "/private", "/cookie"] {
        for _ in 0..2 {
            let r = get(proxy.addr, &origin.url(path)).await;
            assert_eq!(r.x_cache(), "MISS", "{path}");
        }
        assert_eq!(origin.hits(path), 2, "{path}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_with_authorization_is_not_stored_unless_the_response_allows_it() {
    let origin = Origin::start().await;
    origin.route(
        "/plain",
        Reply::ok("secret").header("cache-control", "max-age=60"),
    );
    origin.route(
        "/public",
        Reply::ok("shared").header("cache-control", "public, max-age=60"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let auth = [("authorization", "Bearer t")];
    for _ in 0..2 {
        send(proxy.addr, "GET", &origin.url("/plain"), &auth).await;
        send(proxy.addr, "GET", &origin.url("/public"), &auth).await;
    }
    assert_eq!(origin.hits("/plain"), 2);
    assert_eq!(origin.hits("/public"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_with_its_validators() {
    let origin = Origin::start().await;
    // Age 100 > max-age 60: stored, but stale at once.
    origin.route_fn("/v", |req| {
        if req
            .headers
            .get("if-none-match")
            .map(|v| v == "\"v1\"")
            .unwrap_or(false)
        {
            Reply::ok("")
                .status(304)
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=3600")
        } else {
            Reply::ok("body-v1")
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=60")
                .header("age", "100")
        }
    });
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    assert_eq!(get(proxy.addr, &origin.url("/v")).await.x_cache(), "MISS");
    let second = get(proxy.addr, &origin.url("/v")).await;
    assert_eq!(
        (second.x_cache(), second.text().as_str()),
        ("REVALIDATED", "body-v1")
    );
    let seen = origin.seen("/v");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["if-none-match"], "\"v1\"");
    // The 304's max-age=3600 now makes it fresh.
    let third = get(proxy.addr, &origin.url("/v")).await;
    assert_eq!((third.x_cache(), third.text().as_str()), ("HIT", "body-v1"));
    assert_eq!(origin.hits("/v"), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn a_changed_resource_replaces_the_stale_copy() {
    let origin = Origin::start().await;
    let version = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let v = version.clone();
    origin.route_fn("/defs", move |_| {
        let n = v.load(std::sync::atomic::Ordering::SeqCst);
        Reply::ok(format!("definitions-{n}"))
            .header("etag", &format!("\"{n}\""))
            .header("cache-control", "max-age=60")
            .header("age", if n == 1 { "61" } else { "0" })
    });
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    assert_eq!(
        get(proxy.addr, &origin.url("/defs")).await.text(),
        "definitions-1"
    );
    version.store(2, std::sync::atomic::Ordering::SeqCst);
    let r = get(proxy.addr, &origin.url("/defs")).await;
    assert_eq!((r.x_cache(), r.text().as_str()), ("MISS", "definitions-2"));
    let r = get(proxy.addr, &origin.url("/defs")).await;
    assert_eq!((r.x_cache(), r.text().as_str()), ("HIT", "definitions-2"));
    proxy.stop().await;
}

#[tokio::test]
async fn request_directives_no_cache_max_age_and_only_if_cached() {
    let origin = Origin::start().await;
    origin.route("/d", Reply::ok("d").header("cache-control", "max-age=3600"));
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let miss = send(
        proxy.addr,
        "GET",
        &origin.url("/d"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(miss.status, 504);
    assert_eq!(origin.hits("/d"), 0);
    get(proxy.addr, &origin.url("/d")).await;
    let hit = send(
        proxy.addr,
        "GET",
        &origin.url("/d"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!((hit.status, hit.x_cache()), (200, "HIT"));
    send(
        proxy.addr,
        "GET",
        &origin.url("/d"),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(origin.hits("/d"), 2, "no-cache goes to the origin");
    send(
        proxy.addr,
        "GET",
        &origin.url("/d"),
        &[("cache-control", "max-age=0")],
    )
    .await;
    assert_eq!(origin.hits("/d"), 3, "max-age=0 goes to the origin");
    send(
        proxy.addr,
        "GET",
        &origin.url("/d"),
        &[("pragma", "no-cache")],
    )
    .await;
    assert_eq!(origin.hits("/d"), 4, "Pragma: no-cache goes to the origin");
    proxy.stop().await;
}

#[tokio::test]
async fn vary_keeps_one_entry_per_variant() {
    let origin = Origin::start().await;
    origin.route_fn("/v", |req| {
        let enc = req
            .headers
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        Reply::ok(format!("enc={enc}"))
            .header("vary", "Accept-Encoding")
            .header("cache-control", "max-age=600")
    });
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let gz = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];
    assert_eq!(
        send(proxy.addr, "GET", &origin.url("/v"), &gz).await.text(),
        "enc=gzip"
    );
    assert_eq!(
        send(proxy.addr, "GET", &origin.url("/v"), &br).await.text(),
        "enc=br"
    );
    let again = send(proxy.addr, "GET", &origin.url("/v"), &gz).await;
    assert_eq!(
        (again.text().as_str(), again.x_cache()),
        ("enc=gzip", "HIT")
    );
    let again = send(proxy.addr, "GET", &origin.url("/v"), &br).await;
    assert_eq!((again.text().as_str(), again.x_cache()), ("enc=br", "HIT"));
    assert_eq!(origin.hits("/v"), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn conditional_head_and_range_requests_are_answered_from_the_cache() {
    let origin = Origin::start().await;
    let body = pattern(1000, 7);
    origin.route(
        "/r",
        Reply::ok(body.clone())
            .header("etag", "\"e\"")
            .header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let url = origin.url("/r");
    get(proxy.addr, &url).await;

    let nm = send(proxy.addr, "GET", &url, &[("if-none-match", "\"e\"")]).await;
    assert_eq!((nm.status, nm.x_cache()), (304, "HIT"));
    assert_eq!(nm.body.as_ref().unwrap().len(), 0);

    let head = send(proxy.addr, "HEAD", &url, &[]).await;
    assert_eq!((head.status, head.header("content-length")), (200, "1000"));
    assert_eq!(head.x_cache(), "HIT");

    let part = send(proxy.addr, "GET", &url, &[("range", "bytes=10-19")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), "bytes 10-19/1000");
    assert_eq!(part.body.as_ref().unwrap(), &body.slice(10..20));

    let tail = send(proxy.addr, "GET", &url, &[("range", "bytes=-5")]).await;
    assert_eq!(tail.body.as_ref().unwrap(), &body.slice(995..));

    let bad = send(proxy.addr, "GET", &url, &[("range", "bytes=5000-")]).await;
    assert_eq!(
        (bad.status, bad.header("content-range")),
        (416, "bytes */1000")
    );
    assert_eq!(origin.hits("/r"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target_and_its_location() {
    let origin = Origin::start().await;
    origin.route_fn("/item", |req| {
        if req.method == http::Method::POST {
            Reply::ok("posted").status(201).header("location", "/other")
        } else {
            Reply::ok("item").header("cache-control", "max-age=600")
        }
    });
    origin.route(
        "/other",
        Reply::ok("other").header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    get(proxy.addr, &origin.url("/item")).await;
    get(proxy.addr, &origin.url("/other")).await;
    assert_eq!(get(proxy.addr, &origin.url("/item")).await.x_cache(), "HIT");
    let post = send(proxy.addr, "POST", &origin.url("/item"), &[]).await;
    assert_eq!((post.status, post.text().as_str()), (201, "posted"));
    assert_eq!(
        get(proxy.addr, &origin.url("/item")).await.x_cache(),
        "MISS"
    );
    assert_eq!(
        get(proxy.addr, &origin.url("/other")).await.x_cache(),
        "MISS"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn stale_if_error_serves_the_stale_copy_and_must_revalidate_does_not() {
    let origin = Origin::start().await;
    origin.route(
        "/sie",
        Reply::ok("old")
            .header("cache-control", "max-age=1, stale-if-error=600")
            .header("age", "5"),
    );
    origin.route(
        "/mr",
        Reply::ok("old")
            .header("cache-control", "max-age=1, must-revalidate")
            .header("age", "5"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    get(proxy.addr, &origin.url("/sie")).await;
    get(proxy.addr, &origin.url("/mr")).await;
    // Now the origin fails.
    origin.route("/sie", Reply::ok("down").status(503));
    origin.route("/mr", Reply::ok("down").status(503));
    let r = get(proxy.addr, &origin.url("/sie")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "old"));
    let r = get(proxy.addr, &origin.url("/mr")).await;
    assert_eq!(
        r.status, 503,
        "must-revalidate: the origin's error, never the stale copy"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let origin = Origin::start().await;
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = n.clone();
    origin.route_fn("/swr", move |_| {
        let i = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let age = if i == 1 { "5" } else { "0" };
        Reply::ok(format!("v{i}"))
            .header("cache-control", "max-age=1, stale-while-revalidate=600")
            .header("age", age)
    });
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    assert_eq!(get(proxy.addr, &origin.url("/swr")).await.text(), "v1");
    let r = get(proxy.addr, &origin.url("/swr")).await;
    assert_eq!(
        (r.x_cache(), r.text().as_str()),
        ("HIT", "v1"),
        "stale copy served at once"
    );
    let o = origin.clone();
    assert!(wait_until(std::time::Duration::from_secs(5), || o.hits("/swr") == 2).await);
    let url = origin.url("/swr");
    let mut fresh = String::new();
    for _ in 0..100 {
        fresh = get(proxy.addr, &url).await.text();
        if fresh == "v2" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(fresh, "v2");
    proxy.stop().await;
}

#[tokio::test]
async fn the_cache_stays_within_max_size_and_evicted_bodies_leave_the_disk() {
    let origin = Origin::start().await;
    for i in 0..8 {
        origin.route(
            &format!("/e{i}"),
            Reply::ok(pattern(20_000, i)).header("cache-control", "max-age=600"),
        );
    }
    let dir = tempdir();
    let mut c = config(dir.path());
    c.cache.max_size = 64 * 1024;
    c.cache.max_object_size = 64 * 1024;
    let proxy = start_proxy(c).await;
    for i in 0..8 {
        let r = get(proxy.addr, &origin.url(&format!("/e{i}"))).await;
        assert!(r.body.unwrap() == pattern(20_000, i));
    }
    let app = proxy.app.clone();
    // Eviction happens as each object is stored: nothing to wait for.
    let stats = app.store.stats();
    assert!(stats.weighted_kib <= 64, "{stats:?}");
    assert_eq!(
        stats.urls, 3,
        "three 20 kB objects fit in 64 KiB: {stats:?}"
    );
    let blobs = blobs_under(dir.path()).len();
    assert_eq!((blobs, app.store.stats().blobs), (3, 3));
    // Each kept body has its outboard beside it; the evicted ones' went with them.
    let all = files_under(&dir.path().join("objects")).len();
    assert_eq!(all - blobs, 3);
    proxy.stop().await;
}

#[tokio::test]
async fn the_least_recently_used_object_is_evicted_first() {
    let origin = Origin::start().await;
    for i in 0..4 {
        origin.route(
            &format!("/l{i}"),
            Reply::ok(pattern(20_000, i)).header("cache-control", "max-age=600"),
        );
    }
    let dir = tempdir();
    let mut c = config(dir.path());
    c.cache.max_size = 64 * 1024; // room for three
    c.cache.max_object_size = 64 * 1024;
    let proxy = start_proxy(c).await;
    let fetch = |i: usize| {
        let url = origin.url(&format!("/l{i}"));
        async move {
            let r = get(proxy.addr, &url).await;
            assert!(r.body.as_ref().unwrap() == &pattern(20_000, i as u8));
            r.x_cache().to_owned()
        }
    };
    for i in 0..3 {
        assert_eq!(fetch(i).await, "MISS");
    }
    assert_eq!(fetch(0).await, "HIT", "l0 used again");
    assert_eq!(fetch(3).await, "MISS", "l3 makes room by evicting one");
    for i in [0, 2, 3] {
        assert_eq!(fetch(i).await, "HIT", "l{i} kept");
    }
    assert_eq!(
        fetch(1).await,
        "MISS",
        "l1, the least recently used, was evicted"
    );
    assert_eq!(origin.hits("/l0"), 1);
    assert_eq!(origin.hits("/l1"), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn objects_over_max_object_size_pass_through_unstored() {
    let origin = Origin::start().await;
    origin.route(
        "/big",
        Reply::ok(pattern(30_000, 1)).header("cache-control", "max-age=600"),
    );
    let (_open, gate) = tokio::sync::watch::channel(true);
    origin.route(
        "/big-chunked",
        Reply {
            status: 200,
            headers: vec![("cache-control".into(), "max-age=600".into())],
            payload: Payload::Gated {
                first: pattern(15_000, 2),
                rest: Some(pattern(15_000, 3)),
                gate,
            },
        },
    );
    let dir = tempdir();
    let mut c = config(dir.path());
    c.cache.max_object_size = 20_000;
    let proxy = start_proxy(c).await;
    for path in ["/big", "/big-chunked"] {
        for _ in 0..2 {
            let r = get(proxy.addr, &origin.url(path)).await;
            assert_eq!((r.status, r.x_cache()), (200, "MISS"), "{path}");
            assert_eq!(r.body.unwrap().len(), 30_000, "{path}");
        }
        assert_eq!(origin.hits(path), 2, "{path}");
    }
    assert!(proxy.app.store.stats().urls == 0);
    proxy.stop().await;
}

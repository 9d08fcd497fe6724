//! The peer group: nodes on 127.0.0.2, 127.0.0.3… share one cache.

use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_gets_the_object_from_the_first_over_the_lan() {
    let origin = Origin::start().await;
    let body = pattern(300_000, 1);
    origin.route(
        "/pkg.deb",
        Reply::ok(body.clone())
            .header("cache-control", "max-age=600")
            .header("etag", "\"p1\""),
    );
    let (nodes, _key) = cluster(2).await;
    let url = origin.url("/pkg.deb");

    let a = get(nodes[0].addr(), &url).await;
    assert_eq!(a.x_cache(), "MISS");
    wait_holders(&nodes[1], &url, 1).await;
    let b = get(nodes[1].addr(), &url).await;
    assert_eq!(b.x_cache(), "PEER");
    // RFC 9211: forwarded (to a peer, named by our extension parameter) and stored.
    let params = our_cache_status(&b).expect("Cache-Status");
    let peer = format!("peercache-peer=\"{}\"", nodes[0].peers().id);
    for p in ["fwd=uri-miss", "stored", peer.as_str()] {
        assert!(params.iter().any(|x| x == p), "{p} in {params:?}");
    }
    assert!(b.body.unwrap() == body, "the peer copy is byte-exact");
    assert_eq!(origin.hits("/pkg.deb"), 1, "the WAN is crossed once");
    // A uploaded it once, as verified pieces of its stored copy.
    let up = nodes[0].peers().status_json();
    assert_eq!(up["uploads"], 1);
    assert_eq!(up["bytes_uploaded"], 300_000);
    // B stored it: a hit now, and a second holder in A's index.
    assert_eq!(get(nodes[1].addr(), &url).await.x_cache(), "HIT");
    wait_holders(&nodes[0], &url, 1).await;
    let v = status_json(nodes[1].addr()).await;
    assert_eq!(v["counters"]["bytes_by_source"]["peer"], 300_000);
    assert_eq!(v["peers"]["members"].as_array().unwrap().len(), 1);
    assert_eq!(v["peers"]["members"][0]["bytes_from"], 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_asking_for_the_same_cold_slow_object_make_one_origin_request() {
    let origin = Origin::start().await;
    let body = pattern(400_000, 5);
    let (open, gate) = watch::channel(false);
    origin.route(
        "/iso",
        Reply {
            status: 200,
            headers: vec![
                ("cache-control".into(), "max-age=600".into()),
                ("etag".into(), "\"iso\"".into()),
                ("content-length".into(), body.len().to_string()),
            ],
            payload: Payload::Gated {
                first: body.slice(..100_000),
                rest: Some(body.slice(100_000..)),
                gate,
            },
        },
    );
    let (nodes, _key) = cluster(5).await;
    let url = origin.url("/iso");
    let mut clients = Vec::new();
    for n in &nodes {
        let (addr, url) = (n.addr(), url.clone());
        clients.push(tokio::spawn(async move {
            send_head(addr, "GET", &url, &[]).await
        }));
    }
    let mut heads = Vec::new();
    for c in clients {
        heads.push(c.await.unwrap());
    }
    // Every client has its head while the origin still holds the rest back.
    open.send(true).unwrap();
    let mut results = Vec::new();
    for h in heads {
        let x = h.headers()["x-cache"].to_str().unwrap().to_owned();
        let got = h.into_body().collect().await.unwrap().to_bytes();
        assert!(got == body, "every node serves the whole, correct body");
        results.push(x);
    }
    assert_eq!(
        origin.hits("/iso"),
        1,
        "one origin request for the whole group: {results:?}"
    );
    assert_eq!(
        results.iter().filter(|r| *r == "MISS").count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|r| *r == "PEER").count(),
        4,
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_serves_wrong_bytes_is_caught_by_the_hash() {
    let origin = Origin::start().await;
    let body = pattern(50_000, 3);
    origin.route(
        "/defs.dat",
        Reply::ok(body.clone()).header("cache-control", "max-age=600"),
    );
    let (nodes, _key) = cluster(2).await;
    let url = origin.url("/defs.dat");
    get(nodes[0].addr(), &url).await;
    wait_holders(&nodes[1], &url, 1).await;
    // Corrupt A's stored body behind its back (A hashed it when it stored it, so it serves it
    // without checking again): the first chunk group is bad, which B finds before it starts.
    corrupt_blob(&nodes[0], &blake3::hash(&body), 1234);

    let b = get(nodes[1].addr(), &url).await;
    assert_eq!(
        b.x_cache(),
        "MISS",
        "the bad copy is refused and the origin is used"
    );
    assert!(b.body.unwrap() == body);
    assert_eq!(origin.hits("/defs.dat"), 2);
    let st = nodes[1].peers().status_json();
    assert_eq!(st["bad_hashes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_credentialed_responses_never_leave_their_node() {
    let origin = Origin::start().await;
    origin.route(
        "/me",
        Reply::ok("mine").header("cache-control", "private, max-age=600"),
    );
    origin.route(
        "/cookie",
        Reply::ok("session page").header("cache-control", "max-age=600"),
    );
    origin.route(
        "/public",
        Reply::ok("everyone").header("cache-control", "max-age=600"),
    );
    let (nodes, _key) = cluster(2).await;
    get(nodes[0].addr(), &origin.url("/me")).await;
    send(
        nodes[0].addr(),
        "GET",
        &origin.url("/cookie"),
        &[("cookie", "sid=1")],
    )
    .await;
    get(nodes[0].addr(), &origin.url("/public")).await;
    // The public one shows up in B's index; the others never do.
    wait_holders(&nodes[1], &origin.url("/public"), 1).await;
    for path in ["/me", "/cookie"] {
        let kh = key_hash_of(&origin.url(path));
        assert!(
            nodes[1].peers().sources(&kh, None).is_empty(),
            "{path} advertised"
        );
    }
    assert_eq!(
        get(nodes[1].addr(), &origin.url("/me")).await.x_cache(),
        "MISS"
    );
    assert_eq!(
        get(nodes[1].addr(), &origin.url("/cookie")).await.x_cache(),
        "MISS"
    );
    assert_eq!(
        get(nodes[1].addr(), &origin.url("/public")).await.x_cache(),
        "PEER"
    );
    assert_eq!(origin.hits("/me"), 2);
    assert_eq!(origin.hits("/cookie"), 2);
    assert_eq!(origin.hits("/public"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_key_can_neither_join_nor_download() {
    let origin = Origin::start().await;
    origin.route("/x", Reply::ok("x").header("cache-control", "max-age=600"));
    let (nodes, _key) = cluster(2).await;
    get(nodes[0].addr(), &origin.url("/x")).await;
    // An intruder with another key, seeded by node 0.
    let dir = tempdir();
    let bad_key = dir.path().join("other.key");
    write_key(&bad_key, 9);
    let c = peer_config(
        dir.path(),
        5,
        &bad_key,
        Some(nodes[0].peers().membership_addr()),
    );
    let intruder = start_node(c, dir).await;
    let p0 = nodes[0].peers().clone();
    assert!(
        wait_until(Duration::from_secs(5), || p0.status_json()
            ["rejected_packets"]
            .as_u64()
            .unwrap_or(0)
            >= 2)
        .await
    );
    assert!(
        intruder.peers().members().is_empty(),
        "the intruder sees nobody"
    );
    assert_eq!(p0.members().len(), 1, "node 0 only lists node 1");
    // Direct download attempts from the transfer port are refused.
    let hash = stored(&nodes[0].proxy, &origin.url("/x"))
        .await
        .unwrap()
        .hash;
    let path = peercache::peer::client::object_path(hash.as_bytes());
    let resp = intruder
        .peers()
        .client
        .get(p0.id, p0.membership_addr(), &path, 0)
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let anon = send(
        p0.membership_addr(),
        "GET",
        &format!("http://{}{path}", p0.membership_addr()),
        &[],
    )
    .await;
    assert_eq!(anon.status, 401);
    assert!(p0.status_json()["rejected_requests"].as_u64().unwrap() >= 2);
    // And the intruder's proxy still works on its own, from the origin.
    assert_eq!(
        get(intruder.addr(), &origin.url("/x")).await.x_cache(),
        "MISS"
    );
    assert_eq!(origin.hits("/x"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_peer_copy_is_revalidated_with_the_origin_and_its_body_still_comes_from_the_peer() {
    let origin = Origin::start().await;
    let body = pattern(80_000, 8);
    let b2 = body.clone();
    origin.route_fn("/av.defs", move |req| {
        if req
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"d1\"")
        {
            Reply::ok("")
                .status(304)
                .header("etag", "\"d1\"")
                .header("cache-control", "max-age=600")
        } else {
            // Stale on arrival: Age beyond max-age.
            Reply::ok(b2.clone())
                .header("etag", "\"d1\"")
                .header("cache-control", "max-age=60")
                .header("age", "120")
        }
    });
    let (nodes, _key) = cluster(2).await;
    let url = origin.url("/av.defs");
    get(nodes[0].addr(), &url).await;
    wait_holders(&nodes[1], &url, 1).await;
    let b = get(nodes[1].addr(), &url).await;
    assert_eq!(b.x_cache(), "PEER");
    let params = our_cache_status(&b).expect("Cache-Status");
    assert!(params.iter().any(|x| x == "fwd-status=304"), "{params:?}");
    assert!(b.body.unwrap() == body);
    let seen = origin.seen("/av.defs");
    assert_eq!(seen.len(), 2, "one full fetch, one conditional request");
    assert_eq!(seen[1].headers["if-none-match"], "\"d1\"");
    // The 304 made B's copy fresh: a hit.
    assert_eq!(get(nodes[1].addr(), &url).await.x_cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_and_advertises_its_entries_again() {
    let origin = Origin::start().await;
    origin.route(
        "/keep",
        Reply::ok(pattern(20_000, 4)).header("cache-control", "max-age=600"),
    );
    let (mut nodes, keydir) = cluster(2).await;
    let url = origin.url("/keep");
    get(nodes[0].addr(), &url).await;
    wait_holders(&nodes[1], &url, 1).await;

    // Node 0 leaves (clean stop); node 1 drops its entries.
    let old = nodes.remove(0);
    let peer_addr = old.peers().membership_addr();
    let Node { proxy, dir } = old;
    proxy.stop().await;
    let kh = key_hash_of(&url);
    let p1 = nodes[0].peers().clone();
    assert!(
        wait_until(Duration::from_secs(5), || p1.sources(&kh, None).is_empty()).await,
        "a departed node's entries are dropped"
    );

    // It comes back on the same addresses with its cache directory.
    let mut c = peer_config(
        dir.path(),
        0,
        &keydir.path().join("cluster.key"),
        Some(p1.membership_addr()),
    );
    c.peers.listen = peer_addr;
    let back = start_node(c, dir).await;
    wait_holders(&nodes[0], &url, 1).await;
    assert_eq!(get(nodes[0].addr(), &url).await.x_cache(), "PEER");
    assert_eq!(origin.hits("/keep"), 1);
    drop(back);
}

/// Node A as a real `peercache` process (which a test can kill or stop) on 127.0.0.2, and
/// node B in-process on 127.0.0.3 (its config adjusted by `tune`), joined in one group.
async fn real_peer_and_node(
    tune: impl FnOnce(&mut peercache::config::Config),
) -> (Proc, tempfile::TempDir, Node) {
    let adir = tempdir();
    let key = adir.path().join("cluster.key");
    write_key(&key, 3);
    let (a, a_peer) = Proc::start_peer(adir.path(), "127.0.0.2", &key, None).await;
    let bdir = tempdir();
    let mut c = peer_config(bdir.path(), 1, &key, Some(a_peer));
    tune(&mut c);
    let b = start_node(c, bdir).await;
    let pb = b.peers().clone();
    assert!(
        wait_until(Duration::from_secs(10), || !pb.members().is_empty()).await,
        "B joins A: {}",
        std::fs::read_to_string(adir.path().join("stderr.log")).unwrap_or_default()
    );
    (a, adir, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_peer_costs_seconds_not_the_read_timeout() {
    let origin = Origin::start().await;
    let body = pattern(50_000, 8);
    origin.route(
        "/defs.dat",
        Reply::ok(body.clone()).header("cache-control", "max-age=600"),
    );
    let (a, _adir, b) =
        real_peer_and_node(|c| c.upstream.read_timeout = Duration::from_secs(30)).await;
    let url = origin.url("/defs.dat");
    assert_eq!(get(a.addr, &url).await.x_cache(), "MISS");
    wait_holders(&b, &url, 1).await;
    // A hangs: its sockets still accept (the kernel does that), but nothing answers. B asks it
    // at once, before gossip can call it down.
    a.signal("STOP");
    let asked = tokio::time::Instant::now();
    let r = get(b.addr(), &url).await;
    let took = asked.elapsed();
    a.signal("CONT");
    assert_eq!((r.status, r.x_cache()), (200, "MISS"));
    assert!(r.body.unwrap() == body);
    assert_eq!(origin.hits("/defs.dat"), 2);
    assert!(
        took < Duration::from_secs(15),
        "fell back after {took:?}, not after the 30 s read timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_transfer_is_replaced_and_the_client_sees_no_gap() {
    let origin = Origin::start().await;
    let body = pattern(600_000, 6);
    let (open, gate) = watch::channel(false);
    origin.route(
        "/installer.msi",
        Reply {
            status: 200,
            headers: vec![
                ("cache-control".into(), "max-age=600".into()),
                ("etag".into(), "\"v7\"".into()),
                ("content-length".into(), body.len().to_string()),
            ],
            payload: Payload::Gated {
                first: body.slice(..250_000),
                rest: Some(body.slice(250_000..)),
                gate,
            },
        },
    );
    // Node A is a real process we can kill -9; node B runs in-process.
    let (a, _adir, b) = real_peer_and_node(|_| {}).await;
    let pb = b.peers().clone();
    let url = origin.url("/installer.msi");
    let _a_client = send_head(a.addr, "GET", &url, &[]).await; // A is now downloading
    let kh = key_hash_of(&url);
    assert!(
        wait_until(Duration::from_secs(5), || !pb.sources(&kh, None).is_empty()).await,
        "B sees A's fill"
    );
    let mut resp = send_head(b.addr(), "GET", &url, &[]).await;
    assert_eq!(resp.headers()["x-cache"], "PEER");
    let mut got = read_at_least(&mut resp, 100_000).await;
    a.kill9(); // mid-transfer: A had 250 kB of 600 kB
    open.send(true).unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    got.extend_from_slice(&rest);
    assert!(
        got == body,
        "one uninterrupted, correct body ({} bytes)",
        got.len()
    );
    let seen = origin.seen("/installer.msi");
    assert_eq!(seen.len(), 2, "A's fetch, then B's resume");
    assert_eq!(seen[1].headers["if-range"], "\"v7\"");
    assert!(seen[1].headers["range"]
        .to_str()
        .unwrap()
        .starts_with("bytes="));
    // Counted as the log tells it: one resumption, and the dead holder left out for a while.
    assert_eq!(pb.status_json()["failovers"], 1);
    assert_eq!(pb.status_json()["bad_hashes"], 0);
    // B stored the spliced body: a hit, byte-exact.
    let again = get(b.addr(), &url).await;
    assert_eq!(again.x_cache(), "HIT");
    assert!(again.body.unwrap() == body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_on_one_node_withdraws_its_copy_from_the_group() {
    let origin = Origin::start().await;
    origin.route_fn("/doc", |req| {
        if req.method == http::Method::PUT {
            Reply::ok("updated").status(204)
        } else {
            Reply::ok("doc").header("cache-control", "max-age=600")
        }
    });
    let (nodes, _key) = cluster(2).await;
    let url = origin.url("/doc");
    get(nodes[0].addr(), &url).await;
    wait_holders(&nodes[1], &url, 1).await;
    send(nodes[0].addr(), "PUT", &url, &[]).await;
    let kh = key_hash_of(&url);
    let p1 = nodes[1].peers().clone();
    assert!(
        wait_until(Duration::from_secs(5), || p1.sources(&kh, None).is_empty()).await,
        "the dropped update reached B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_max_uploads_get_503() {
    let origin = Origin::start().await;
    let (_open, gate) = watch::channel(false);
    origin.route(
        "/slow",
        gated(pattern(10_000, 1), Some(pattern(10_000, 2)), gate, 20_000),
    );
    origin.route(
        "/small",
        Reply::ok("small").header("cache-control", "max-age=600"),
    );
    let keydir = tempdir();
    let key = keydir.path().join("cluster.key");
    write_key(&key, 4);
    let adir = tempdir();
    let mut ac = peer_config(adir.path(), 0, &key, None);
    ac.peers.max_uploads = 1;
    let a = start_node(ac, adir).await;
    let bdir = tempdir();
    let b = start_node(
        peer_config(bdir.path(), 1, &key, Some(a.peers().membership_addr())),
        bdir,
    )
    .await;
    let pa = a.peers().clone();
    assert!(wait_until(Duration::from_secs(10), || !pa.members().is_empty()).await);
    get(a.addr(), &origin.url("/small")).await;
    let _reader = send_head(a.addr(), "GET", &origin.url("/slow"), &[]).await;
    let app = a.proxy.app.clone();
    assert!(wait_until(Duration::from_secs(5), || !app.inflight.is_empty()).await);
    // One upload (the in-flight fill) takes the only slot…
    let fill = peercache::peer::client::fill_path(&key_hash_of(&origin.url("/slow")));
    let held = b
        .peers()
        .client
        .get(pa.id, pa.membership_addr(), &fill, 0)
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    // …so the next one is turned away, for the caller to try another source.
    let small = stored(&a.proxy, &origin.url("/small")).await.unwrap();
    let obj = peercache::peer::client::object_path(small.hash.as_bytes());
    let refused = b
        .peers()
        .client
        .get(pa.id, pa.membership_addr(), &obj, 0)
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_body_is_not_served_by_hash_even_to_a_member() {
    let origin = Origin::start().await;
    origin.route(
        "/cookie-page",
        Reply::ok("personal page").header("cache-control", "max-age=600"),
    );
    let (nodes, _key) = cluster(2).await;
    // Stored locally (a cookie request's response), but not shareable.
    send(
        nodes[0].addr(),
        "GET",
        &origin.url("/cookie-page"),
        &[("cookie", "sid=42")],
    )
    .await;
    let entry = stored(&nodes[0].proxy, &origin.url("/cookie-page"))
        .await
        .unwrap();
    assert!(!entry.shareable);
    let path = peercache::peer::client::object_path(entry.hash.as_bytes());
    let p0 = nodes[0].peers();
    let resp = nodes[1]
        .peers()
        .client
        .get(p0.id, p0.membership_addr(), &path, 0)
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "a member asking by hash gets nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_copy_is_answered_with_its_current_age() {
    let origin = Origin::start().await;
    let an_hour_ago =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
    origin.route(
        "/aged",
        Reply::ok(pattern(20_000, 2))
            .header("cache-control", "max-age=7200")
            .header("date", &an_hour_ago),
    );
    let (nodes, _key) = cluster(2).await;
    let url = origin.url("/aged");
    let a = get(nodes[0].addr(), &url).await;
    assert_eq!((a.x_cache(), a.header("age")), ("MISS", ""));
    wait_holders(&nodes[1], &url, 1).await;
    let b = get(nodes[1].addr(), &url).await;
    assert_eq!(b.x_cache(), "PEER");
    let age: u64 = b.header("age").parse().expect("an Age field");
    assert!((3600..3700).contains(&age), "Age {age}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_large_copy_is_counted_its_peer_penalised_and_the_next_request_goes_elsewhere() {
    let origin = Origin::start().await;
    let body = pattern(2 * 1024 * 1024 + 77, 5);
    origin.route(
        "/big.iso",
        Reply::ok(body.clone())
            .header("cache-control", "max-age=600")
            .header("etag", "\"i1\""),
    );
    let (nodes, _key) = cluster(2).await;
    let url = origin.url("/big.iso");
    assert_eq!(get(nodes[0].addr(), &url).await.x_cache(), "MISS");
    wait_holders(&nodes[1], &url, 1).await;
    // Corrupt A's stored body behind its back, in the middle.
    let hash = stored(&nodes[0].proxy, &url).await.unwrap().hash;
    corrupt_blob(&nodes[0], &hash, 1_500_000);

    // B's first request finds the bad copy (its client may see a cut: unverified bytes went
    // out before the hash was known). It is counted and A is penalised.
    let first = get(nodes[1].addr(), &url).await;
    if let Ok(b) = &first.body {
        assert!(*b == body, "never a wrong body served as complete");
    }
    let (a_id, b_peers) = (nodes[0].peers().id, nodes[1].peers().clone());
    assert!(
        wait_until(Duration::from_secs(5), || b_peers.status_json()
            ["bad_hashes"]
            == 1)
        .await,
        "bad_hashes: {}",
        b_peers.status_json()["bad_hashes"]
    );
    let kh = key_hash_of(&url);
    assert!(
        b_peers.sources(&kh, None).iter().all(|s| s.node != a_id),
        "A is left out while penalised"
    );
    // The next request goes elsewhere (the origin) and gets the one correct body.
    let again = get(nodes[1].addr(), &url).await;
    assert!(again.body.unwrap() == body);
    assert_eq!(b_peers.status_json()["bad_hashes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_no_store_is_honoured_on_the_peer_path_too() {
    let origin = Origin::start().await;
    let body = pattern(40_000, 6);
    origin.route(
        "/ns",
        Reply::ok(body.clone()).header("cache-control", "max-age=600"),
    );
    let (nodes, _key) = cluster(2).await;
    let url = origin.url("/ns");
    assert_eq!(get(nodes[0].addr(), &url).await.x_cache(), "MISS");
    wait_holders(&nodes[1], &url, 1).await;
    // RFC 9111 §5.2.1.5: nothing of this exchange is stored, wherever the body comes from.
    let b = send(
        nodes[1].addr(),
        "GET",
        &url,
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(b.x_cache(), "PEER");
    assert!(b.body.unwrap() == body);
    let store = nodes[1].proxy.app.store.clone();
    assert_eq!(store.stats().urls, 0, "B stored the copy");
    assert_eq!(get(nodes[1].addr(), &url).await.x_cache(), "PEER");
    assert_eq!(origin.hits("/ns"), 1);
}

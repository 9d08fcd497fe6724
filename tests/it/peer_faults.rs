//! The group's glue under faults (issue 9, peer side): replayed requests, busy holders, cancelled
//! claims, pull storms, floods and seeds that resolve late.

use std::time::Duration;

use http_body_util::BodyExt;
use peercache::peer::client::object_path;

use crate::support::*;

/// `request` (one HTTP/1.1 head, no body) with `line` added as a header field.
fn with_field(request: &[u8], line: &str) -> Vec<u8> {
    let end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let mut out = request[..end + 2].to_vec();
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

fn counter(p: &peercache::peer::Peers, name: &str) -> u64 {
    p.status_json()[name].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_peer_request_is_worthless_to_anyone_else() {
    let origin = Origin::start().await;
    let body = pattern(40_000, 2);
    origin.route(
        "/tool.tgz",
        Reply::ok(body.clone()).header("cache-control", "max-age=600"),
    );
    let (nodes, _key) = cluster(3).await;
    get(nodes[0].addr(), &origin.url("/tool.tgz")).await;
    let (a, b, c) = (
        nodes[0].peers().clone(),
        nodes[1].peers().clone(),
        nodes[2].peers().clone(),
    );
    let hash = nodes[0].proxy.app.store.entries()[0].hash;
    let path = object_path(hash.as_bytes());

    // B asks A through a relay that records the bytes on the wire.
    let relay = Recorder::start("127.0.0.9", a.membership_addr()).await;
    let first = b.client.get(a.id, relay.addr, &path, 0).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.into_body().collect().await.unwrap().to_bytes() == body);
    let captured = relay.captured();
    assert!(captured.starts_with(b"GET /peer/v1/objects/"));

    let (a_before, c_before) = (
        counter(&a, "rejected_requests"),
        counter(&c, "rejected_requests"),
    );
    let a_addr = a.membership_addr();
    // The exact bytes again, from the relay's address and from another one.
    assert_eq!(raw_request("127.0.0.9", a_addr, &captured).await, 401);
    assert_eq!(raw_request("127.0.0.77", a_addr, &captured).await, 401);
    // The same request asking for a part of the body.
    let ranged = with_field(&captured, "range: bytes=0-99");
    assert_eq!(raw_request("127.0.0.77", a_addr, &ranged).await, 401);
    // Another member, which never saw it.
    assert_eq!(
        raw_request("127.0.0.77", c.membership_addr(), &captured).await,
        401
    );
    assert_eq!(counter(&a, "rejected_requests"), a_before + 3);
    assert_eq!(counter(&c, "rejected_requests"), c_before + 1);

    // A fresh request from B is served.
    let fresh = b.client.get(a.id, a_addr, &path, 0).await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert!(fresh.into_body().collect().await.unwrap().to_bytes() == body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_the_claim_window_leaves_no_claim_behind() {
    use tokio::io::AsyncWriteExt;
    let origin = Origin::start().await;
    origin.route(
        "/cold.iso",
        Reply::ok("cold").header("cache-control", "max-age=600"),
    );
    let (nodes, _key) = cluster_tuned(2, |_, _, t| t.claim_window = Duration::from_secs(30)).await;
    let url = origin.url("/cold.iso");
    let kh = key_hash_of(&url);
    let (a, b) = (nodes[0].peers().clone(), nodes[1].peers().clone());

    // A client asks A for a cold object: A claims it and waits out the (long) claim window.
    let mut client = tokio::net::TcpStream::connect(nodes[0].addr())
        .await
        .unwrap();
    let request = format!("GET {url} HTTP/1.1\r\nhost: {}\r\n\r\n", origin.addr);
    client.write_all(request.as_bytes()).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || b
            .sources(&kh, None)
            .iter()
            .any(|s| s.node == a.id && s.complete.is_none()))
        .await,
        "B sees A's claim"
    );
    assert_eq!(counter(&a, "own_claims"), 1);

    // The client leaves before the window ends: the claim goes with it.
    drop(client);
    assert!(
        wait_until(Duration::from_secs(5), || b.sources(&kh, None).is_empty()).await,
        "B's index still lists A as fetching the object"
    );
    assert!(
        wait_until(Duration::from_secs(5), || counter(&a, "own_claims") == 0).await,
        "A still counts an open claim"
    );
    assert_eq!(origin.hits("/cold.iso"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_holder_is_not_banned_and_its_copy_still_serves_the_group() {
    use peercache::peer::client::fill_path;
    use tokio::sync::watch;
    let origin = Origin::start().await;
    let body = pattern(200_000, 9);
    origin.route(
        "/big.deb",
        Reply::ok(body.clone())
            .header("cache-control", "max-age=600")
            .header("etag", "\"b1\""),
    );
    let (_open, gate) = watch::channel(false);
    origin.route(
        "/slow",
        Reply {
            status: 200,
            headers: vec![
                ("cache-control".into(), "max-age=600".into()),
                ("content-length".into(), "20000".into()),
            ],
            payload: Payload::Gated {
                first: pattern(10_000, 1),
                rest: Some(pattern(10_000, 2)),
                gate,
            },
        },
    );
    // A is the only holder and serves one upload at a time; B, C and D want the object at once.
    let (nodes, _key) = cluster_tuned(4, |i, c, _| {
        if i == 0 {
            c.peers.max_uploads = 1;
        }
    })
    .await;
    let a = nodes[0].peers().clone();
    let url = origin.url("/big.deb");
    assert_eq!(get(nodes[0].addr(), &url).await.x_cache(), "MISS");
    for n in &nodes[1..] {
        wait_holders(n, &url, 1).await;
    }
    // A's only upload slot is taken: a member streams A's fill of a slow object.
    let _reader = send_head(nodes[0].addr(), "GET", &origin.url("/slow"), &[]).await;
    let slow = fill_path(&key_hash_of(&origin.url("/slow")));
    let held = nodes[3]
        .peers()
        .client
        .get(a.id, a.membership_addr(), &slow, 0)
        .await
        .unwrap();
    assert_eq!(held.status(), 200);

    let mut asks = Vec::new();
    for n in &nodes[1..] {
        let (addr, url) = (n.addr(), url.clone());
        asks.push(tokio::spawn(async move { get(addr, &url).await }));
    }
    assert!(
        wait_until(Duration::from_secs(5), || counter(&a, "uploads_refused")
            >= 3)
        .await,
        "each requester was told A is busy"
    );
    // The slot comes free while they back off.
    drop(held);
    for ask in asks {
        let got = ask.await.unwrap();
        assert_eq!(
            got.x_cache(),
            "PEER",
            "from A or from another requester's copy"
        );
        assert!(got.body.unwrap() == body);
    }
    assert_eq!(
        origin.hits("/big.deb"),
        1,
        "busy is not a reason to cross the WAN"
    );
    // Nobody banned A: it still ranks as a source everywhere.
    let kh = key_hash_of(&url);
    for n in &nodes[1..] {
        assert!(
            n.peers().sources(&kh, None).iter().any(|s| s.node == a.id),
            "A is still a source"
        );
        // …and told each how busy it was, which ranking uses.
        assert!(n.peers().client.reported_uploads(a.id).is_some());
    }
}

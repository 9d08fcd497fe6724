//! The group's glue under faults (issue 9, peer side): replayed requests, busy holders, cancelled
//! claims, pull storms, floods and seeds that resolve late.

use std::sync::Arc;
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
    let hash = stored(&nodes[0].proxy, &origin.url("/tool.tgz"))
        .await
        .unwrap()
        .hash;
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
async fn a_client_that_leaves_during_the_claim_window_neither_ends_the_fill_nor_leaves_a_claim() {
    use tokio::io::AsyncWriteExt;
    let origin = Origin::start().await;
    origin.route(
        "/cold.iso",
        Reply::ok("cold").header("cache-control", "max-age=600"),
    );
    let (nodes, _key) = cluster_tuned(2, |_, _, t| t.claim_window = Duration::from_secs(1)).await;
    let url = origin.url("/cold.iso");
    let kh = key_hash_of(&url);
    let (a, b) = (nodes[0].peers().clone(), nodes[1].peers().clone());

    // A client asks A for a cold object: A claims it and waits out the claim window.
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

    // The client leaves: the fill goes on in its own task (the claim with it), fetches the
    // object once, and the claim turns into A's copy.
    drop(client);
    assert!(
        wait_until(Duration::from_secs(5), || b
            .sources(&kh, None)
            .iter()
            .any(|s| s.node == a.id && s.complete.is_some()))
        .await,
        "B's index lists A as holding the object"
    );
    assert!(
        wait_until(Duration::from_secs(5), || counter(&a, "own_claims") == 0).await,
        "A still counts an open claim"
    );
    assert_eq!(origin.hits("/cold.iso"), 1);
    assert_eq!(get(nodes[1].addr(), &url).await.x_cache(), "PEER");
    assert_eq!(origin.hits("/cold.iso"), 1);
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
        gated(pattern(10_000, 1), Some(pattern(10_000, 2)), gate, 20_000),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_catches_up_with_an_index_larger_than_one_page() {
    let origin = Origin::start().await;
    let urls: Vec<String> = (0..5)
        .map(|i| origin.url(&format!("/pkg{i}.deb")))
        .collect();
    for i in 0..5 {
        origin.route(
            &format!("/pkg{i}.deb"),
            Reply::ok(pattern(5_000, i)).header("cache-control", "max-age=600"),
        );
    }
    // A answers catch-up two stored keys at a time.
    let (mut nodes, keydir) = cluster_tuned(1, |_, _, t| t.index_page = 2).await;
    for url in &urls {
        assert_eq!(get(nodes[0].addr(), url).await.x_cache(), "MISS");
    }
    let a = nodes[0].peers().clone();
    let dir = tempdir();
    let c = peer_config(
        dir.path(),
        1,
        &keydir.path().join("cluster.key"),
        Some(a.membership_addr()),
    );
    nodes.push(start_node(c, dir).await);
    let b = nodes[1].peers().clone();
    assert!(
        wait_until(Duration::from_secs(10), || b.status_json()["index"]
            ["entries"]
            == 5)
        .await,
        "B learnt all five of A's entries: {}",
        b.status_json()["index"]
    );
    assert!(
        counter(&a, "snapshot_pages") >= 3,
        "five keys, two per page: {}",
        a.status_json()
    );
    for url in &urls {
        assert_eq!(get(nodes[1].addr(), url).await.x_cache(), "PEER");
    }
    assert!(urls
        .iter()
        .all(|u| origin.hits(&u[u.rfind('/').unwrap()..]) == 1));
}

/// A member of the group made by hand: its gossip is a real `Membership`, its peer port a small
/// server that counts the index pulls it gets and answers them only when told.
struct FakeMember {
    id: peercache::peer::wire::NodeId,
    membership: peercache::peer::membership::Membership,
    pulls: Arc<std::sync::atomic::AtomicUsize>,
    max_open: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeMember {
    async fn start(
        ip: &str,
        key: &std::path::Path,
        seed: std::net::SocketAddr,
        reply: peercache::peer::wire::IndexReply,
        answer: tokio::sync::watch::Receiver<bool>,
    ) -> FakeMember {
        use peercache::peer::membership::{Membership, MembershipConfig, Timings};
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let port = free_port_on(ip);
        let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let (pulls, open, max_open) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let body = bytes::Bytes::from(postcard::to_stdvec(&reply).unwrap());
        let (p, o, m) = (pulls.clone(), open.clone(), max_open.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (p, o, m, body, answer) = (
                    p.clone(),
                    o.clone(),
                    m.clone(),
                    body.clone(),
                    answer.clone(),
                );
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let (p, o, m, body, mut answer) = (
                            p.clone(),
                            o.clone(),
                            m.clone(),
                            body.clone(),
                            answer.clone(),
                        );
                        async move {
                            p.fetch_add(1, SeqCst);
                            let now = o.fetch_add(1, SeqCst) + 1;
                            m.fetch_max(now, SeqCst);
                            let _ = answer.wait_for(|go| *go).await;
                            o.fetch_sub(1, SeqCst);
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                peercache::body::full(body),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        let id = match &reply {
            peercache::peer::wire::IndexReply::Updates { node, .. }
            | peercache::peer::wire::IndexReply::Snapshot { node, .. } => *node,
        };
        let key = peercache::peer::auth::ClusterKey::load(key).unwrap();
        let (tx, _events) = Membership::events();
        let membership = Membership::start_with_timings(
            MembershipConfig {
                id,
                bind: addr,
                advertise: addr,
                site: "lab".into(),
                seeds: vec![seed],
                key,
            },
            Timings::fast(),
            tx,
        )
        .await
        .unwrap();
        FakeMember {
            id,
            membership,
            pulls,
            max_open,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_gapped_updates_makes_one_pull_at_a_time() {
    use peercache::peer::wire::{IndexReply, NodeId, Tagged, Update};
    use std::sync::atomic::Ordering::SeqCst;
    let (nodes, keydir) = cluster(1).await;
    let a = nodes[0].peers().clone();
    let fake = NodeId::random();
    let epoch = 1_700_000_000_000;
    let tagged: Vec<Tagged> = (1..=40u8)
        .map(|i| Tagged {
            node: fake,
            epoch,
            seq: u64::from(i),
            update: Update::Have {
                key: [i; 32],
                hash: [i; 32],
                len: 10,
                fresh_until: 4_000_000_000,
            },
        })
        .collect();
    let reply = IndexReply::Updates {
        node: fake,
        epoch,
        updates: tagged.clone(),
    };
    let (answer, answer_rx) = tokio::sync::watch::channel(false);
    let member = FakeMember::start(
        "127.0.0.20",
        &keydir.path().join("cluster.key"),
        a.membership_addr(),
        reply,
        answer_rx,
    )
    .await;
    assert_eq!(member.id, fake);
    // A sees the member come up and pulls its index: the member holds that pull open.
    assert!(
        wait_until(Duration::from_secs(10), || member.pulls.load(SeqCst) == 1).await,
        "A pulls when the member comes up"
    );
    // Then 39 updates arrive, all after a gap (seq 1 is never gossiped).
    for t in &tagged[1..] {
        member.membership.broadcast(postcard::to_stdvec(t).unwrap());
    }
    assert!(
        wait_until(Duration::from_secs(10), || counter(
            &a,
            "index_pulls_coalesced"
        ) >= 39)
        .await,
        "every gap joined the pull in flight: {}",
        a.status_json()
    );
    assert_eq!(member.max_open.load(SeqCst), 1, "one pull in flight");
    answer.send(true).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || a.status_json()["index"]
            ["entries"]
            == 40)
        .await,
        "the pull brought everything: {}",
        a.status_json()["index"]
    );
    assert_eq!(member.max_open.load(SeqCst), 1, "never more than one");
    assert!(
        member.pulls.load(SeqCst) <= 3,
        "{}",
        member.pulls.load(SeqCst)
    );
    member.membership.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_to_the_peer_port_does_not_lock_members_out() {
    let origin = Origin::start().await;
    let body = pattern(30_000, 4);
    origin.route(
        "/flood.bin",
        Reply::ok(body.clone()).header("cache-control", "max-age=600"),
    );
    let (nodes, _key) = cluster_tuned(2, |i, _, t| {
        if i == 0 {
            t.connections.per_ip = 4;
        }
    })
    .await;
    let a = nodes[0].peers().clone();
    let url = origin.url("/flood.bin");
    get(nodes[0].addr(), &url).await;
    wait_holders(&nodes[1], &url, 1).await;
    // 20 idle connections from one address that never send a request.
    let mut flood = Vec::new();
    for _ in 0..20 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.50:0".parse().unwrap()).unwrap();
        flood.push(sock.connect(a.membership_addr()).await.unwrap());
    }
    assert!(
        wait_until(Duration::from_secs(5), || counter(
            &a,
            "connections_refused"
        ) >= 16)
        .await,
        "the flood hit the per-address limit: {}",
        a.status_json()
    );
    // A member is still served.
    let b = get(nodes[1].addr(), &url).await;
    assert_eq!(b.x_cache(), "PEER");
    assert!(b.body.unwrap() == body);
    assert_eq!(origin.hits("/flood.bin"), 1);
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_name_that_resolves_late_is_retried_while_alone() {
    use peercache::peer::seeds::Resolver;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    let (nodes, keydir) = cluster(1).await;
    let a = nodes[0].peers().clone();
    let a_addr = a.membership_addr();
    // B's only seed is a name that does not resolve yet.
    let (known, asked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (k, n) = (known.clone(), asked.clone());
    let resolver = Resolver::new(move |seed| {
        n.fetch_add(1, SeqCst);
        let ok = k.load(SeqCst) && seed == "seed.peercache.test:3129";
        Box::pin(async move {
            if ok {
                Ok(vec![a_addr])
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such host",
                ))
            }
        })
    });
    let dir = tempdir();
    let mut c = peer_config(dir.path(), 1, &keydir.path().join("cluster.key"), None);
    c.peers.seeds = vec!["seed.peercache.test:3129".into()];
    let tuning = peercache::peer::PeerTuning {
        resolver,
        ..fast_tuning()
    };
    let b = start_node_tuned(c, dir, tuning).await;
    assert!(
        wait_until(Duration::from_secs(5), || asked.load(SeqCst) >= 2).await,
        "B tries the name again while alone"
    );
    assert!(b.peers().members().is_empty());
    // The name starts resolving (DNS caught up): B joins.
    known.store(true, SeqCst);
    let pb = b.peers().clone();
    assert!(
        wait_until(Duration::from_secs(10), || pb
            .members()
            .iter()
            .any(|m| m.id == a.id && m.state.is_active()))
        .await,
        "B joined through the seed once it resolved"
    );
    assert!(
        wait_until(Duration::from_secs(5), || a.members().len() == 1).await,
        "A sees B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_entry_names_another_body_than_the_index_is_not_a_source() {
    use peercache::peer::index::body_id;
    use peercache::peer::wire::{IndexReply, NodeId, Tagged, Update};
    let origin = Origin::start().await;
    let body = pattern(200_000, 6);
    served(&origin, "/app.tar", &body);
    let (nodes, keydir) = cluster(2).await;
    let url = origin.url("/app.tar");
    let (a, b) = (nodes[0].peers().clone(), nodes[1].peers().clone());
    assert_eq!(get(nodes[0].addr(), &url).await.x_cache(), "MISS");
    wait_holders(&nodes[1], &url, 1).await;

    // A member gossips, in A's name, that A now holds another body for the URL (as after a
    // lost update, or a lie): B's index names that body for A, while A's entry names its own.
    let fake = NodeId::random();
    let (_answer, answer_rx) = tokio::sync::watch::channel(true);
    let nothing = IndexReply::Updates {
        node: fake,
        epoch: 1,
        updates: Vec::new(),
    };
    let member = FakeMember::start(
        "127.0.0.21",
        &keydir.path().join("cluster.key"),
        b.membership_addr(),
        nothing,
        answer_rx,
    )
    .await;
    let head = b.heads().into_iter().find(|(n, _)| *n == a.id).unwrap().1;
    let other = *blake3::hash(b"another body").as_bytes();
    let kh = key_hash_of(&url);
    let forged = Tagged {
        node: a.id,
        epoch: head.epoch,
        seq: head.seq + 1,
        update: Update::Have {
            key: kh,
            hash: other,
            len: body.len() as u64,
            fresh_until: 4_000_000_000,
        },
    };
    let named = |b: &peercache::peer::Peers| {
        b.sources(&kh, None)
            .iter()
            .any(|s| s.node == a.id && s.complete == Some((body_id(&other), body.len() as u64)))
    };
    // Sent again until it lands (the fake may still be joining; a duplicate is ignored).
    assert!(
        wait_until(Duration::from_secs(10), || {
            member
                .membership
                .broadcast(postcard::to_stdvec(&forged).unwrap());
            named(&b)
        })
        .await,
        "B's index names the other body for A"
    );

    // B asks A for its entry, finds a whole hash without the index's id, and goes to the
    // origin: it never takes (nor verifies) A's body against a hash the index did not name.
    let got = get(nodes[1].addr(), &url).await;
    assert_eq!(got.x_cache(), "MISS");
    assert!(got.body.unwrap() == body);
    assert_eq!(origin.hits("/app.tar"), 2, "A once, B once");
    assert_eq!(bytes_from(&nodes[1], a.id), 0, "nothing came from A");
    assert_eq!(
        counter(&b, "bad_hashes"),
        0,
        "a holder of another body is not a liar"
    );
    member.membership.leave().await;
}

//! The content-server redirect (issue 10, part 1): a node in front of a content server
//! (`[[mirror]] redirect_to_peers`) sends a member that asks for an object another member holds
//! to that member, and serves everyone else as before. Content server C on 127.0.0.2, members
//! A (127.0.0.3) and B (127.0.0.4); C's mirrors `/files/` and `/alias/` are two names for one
//! upstream, so members hold the same body under URLs of their own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method};
use peercache::config::{Config, Mirror};
use peercache::metrics::Metrics;
use peercache::peer::auth::{ClusterKey, RequestSigner};
use peercache::peer::membership::Timings;
use peercache::peer::wire::NodeId;
use peercache::peer::{redirect, PeerTuning, Peers};

use crate::support::*;

const SIZE: usize = 300_000;

/// C's mirrors: `/files/`, `/alias/` and `/mirror/`, all onto `upstream`, all redirecting
/// members.
fn content_mirrors(upstream: &str) -> Vec<Mirror> {
    ["/files/", "/alias/", "/mirror/"]
        .into_iter()
        .map(|prefix| Mirror {
            redirect_to_peers: true,
            ..mirror(prefix, upstream)
        })
        .collect()
}

/// The origin behind C: `/pkgs/tool.deb` and `/pkgs/other.deb` (cacheable, strong ETags).
async fn content_origin() -> Origin {
    let origin = Origin::start().await;
    for (path, seed) in [("/pkgs/tool.deb", 1), ("/pkgs/other.deb", 2)] {
        origin.route(
            path,
            Reply::ok(noise(SIZE, seed))
                .header("cache-control", "max-age=600")
                .header("etag", &format!("\"v{seed}\""))
                .header("content-type", "application/vnd.debian.binary-package"),
        );
    }
    origin
}

/// An address on C's IP for its proxy.
fn c_proxy_addr() -> String {
    format!("127.0.0.2:{}", free_port_on("127.0.0.2"))
}

/// C (proxy on `c_proxy`), A and B in front of `origin`, B reaching C through `b_via`.
async fn content_group(
    origin: &Origin,
    c_proxy: &str,
    b_via: &str,
) -> (Vec<Node>, tempfile::TempDir) {
    cluster_tuned(3, |i, c, _| tune(i, c, origin, c_proxy, b_via)).await
}

/// Node `i`'s config as [`cluster_tuned`] makes them: node 0 is the content server C (proxy on
/// `c_proxy`), node 2 is B, whose own mirror `/debian/` leads to C's `/alias/` through
/// `b_upstream` (C's proxy, or a relay in front of it).
fn tune(i: usize, c: &mut Config, origin: &Origin, c_proxy: &str, b_upstream: &str) {
    match i {
        0 => {
            c.proxy.listen = c_proxy.parse().unwrap();
            c.mirrors = content_mirrors(&origin.url("/pkgs/"));
        }
        2 => c.mirrors = vec![mirror("/debian/", &format!("http://{b_upstream}/alias/"))],
        _ => {}
    }
}

/// Waits until C's index lists `holder` among the members holding `url`'s body (as C stored
/// it), for anyone else asking.
async fn wait_body_holder(c: &Node, url: &str, holder: NodeId) {
    let entry = stored(&c.proxy, url).await.expect("C stored it");
    let p = c.peers().clone();
    let asker = NodeId([0; 16]);
    assert!(
        wait_until(Duration::from_secs(5), || p
            .body_sources(&entry.hash, entry.len, asker)
            .iter()
            .any(|s| s.node == holder))
        .await,
        "C never learnt that {holder} holds {url}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_asking_under_its_own_url_is_sent_to_the_member_that_holds_it() {
    let origin = content_origin().await;
    let c_proxy = c_proxy_addr();
    let (nodes, _key) = content_group(&origin, &c_proxy, &c_proxy).await;
    let (c, a, b) = (&nodes[0], &nodes[1], &nodes[2]);
    let (cm, bm) = (&c.proxy.app.metrics, &b.proxy.app.metrics);
    let body = noise(SIZE, 1);

    // A fetches through C as a forward proxy: the first copy in the group comes from C.
    let first = get(a.addr(), &format!("http://{c_proxy}/files/tool.deb")).await;
    assert_eq!((first.status, first.x_cache()), (200, "MISS"));
    assert!(first.body.unwrap() == body);
    assert_eq!(origin.hits("/pkgs/tool.deb"), 1);
    let upstream = origin.url("/pkgs/tool.deb");
    wait_body_holder(c, &upstream, a.peers().id).await;
    let c_sent = || Metrics::get(&cm.bytes_to_clients);
    assert!(wait_until(Duration::from_secs(5), || c_sent() >= SIZE as u64).await);
    let c_sent_before = c_sent();

    // B asks for it under its own mirror, through C's other name for it: a URL B's own index
    // has never heard of.
    let b_url = format!("http://{c_proxy}/alias/tool.deb");
    assert!(b.peers().sources(&key_hash_of(&b_url), None).is_empty());
    let got = get_path(b.addr(), "/debian/tool.deb", &[]).await;
    assert_eq!((got.status, got.x_cache()), (200, "PEER"));
    assert!(
        got.body.as_ref().unwrap() == &body,
        "B's client gets the bytes"
    );
    assert_eq!(
        got.header("etag"),
        "\"v1\"",
        "with the head C would have sent"
    );
    assert_eq!(
        got.header("content-type"),
        "application/vnd.debian.binary-package"
    );
    let peer = format!("peercache-peer=\"{}\"", a.peers().id);
    assert!(
        got.header("cache-status").contains(&peer),
        "{}",
        got.header("cache-status")
    );
    assert_eq!(origin.hits("/pkgs/tool.deb"), 1, "C's origin is asked once");
    assert_eq!(Metrics::get(&cm.redirects_sent), 1);
    assert_eq!(Metrics::get(&bm.redirects_followed), 1);
    assert_eq!(Metrics::get(&bm.redirect_fallbacks), 0);
    // C sent the body once (to A); to B only the redirect.
    let for_b = c_sent() - c_sent_before;
    assert!(for_b < 4096, "C sent {for_b} bytes for B's request");

    // B stored it under its own URL and tells the group like any fill.
    let again = get_path(b.addr(), "/debian/tool.deb", &[]).await;
    assert_eq!((again.x_cache(), again.header("etag")), ("HIT", "\"v1\""));
    assert!(again.body.unwrap() == body);
    wait_body_holder(c, &upstream, b.peers().id).await;

    // A client that is no member gets the object from C as always.
    let plain = get_path(c.addr(), "/files/tool.deb", &[]).await;
    assert_eq!(
        (plain.status, plain.x_cache(), plain.header("location")),
        (200, "HIT", "")
    );
    assert!(plain.body.unwrap() == body);
    // A member's request with credentials is served by C (it never goes to another machine).
    let secret = format!("http://{c_proxy}/mirror/tool.deb");
    let creds = send(a.addr(), "GET", &secret, &[("authorization", "Basic dTpw")]).await;
    assert_eq!((creds.status, creds.x_cache()), (200, "MISS"));
    // An object nobody else holds is C's to serve.
    let only_c = get_path(c.addr(), "/files/other.deb", &[]).await;
    assert_eq!(only_c.x_cache(), "MISS");
    let other = get_path(b.addr(), "/debian/other.deb", &[]).await;
    assert_eq!((other.status, other.x_cache()), (200, "MISS"));
    assert!(other.body.unwrap() == noise(SIZE, 2));
    assert_eq!(
        Metrics::get(&cm.redirects_sent),
        1,
        "nothing else was redirected"
    );
    assert_eq!(Metrics::get(&cm.redirect_proofs_refused), 0);
    // The counts are on the status page and in the metrics.
    let status = status_json(c.addr()).await;
    assert_eq!(status["counters"]["redirects"]["sent"], 1);
    let followed = "peercache_redirects_total{event=\"followed\"} 1";
    assert!(metrics_text(b.addr()).await.contains(followed));
}

/// Whether `p` leaves `node` out of its choices for now.
fn penalised(p: &Peers, node: NodeId) -> bool {
    let status = p.status_json();
    let members = status["members"].as_array().cloned().unwrap_or_default();
    members
        .iter()
        .any(|m| m["id"] == node.to_string() && m["penalised"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_died_sends_the_member_back_to_the_content_server_once() {
    let origin = content_origin().await;
    let keydir = tempdir();
    let key = keydir.path().join("cluster.key");
    write_key(&key, 5);
    let c_proxy = c_proxy_addr();
    // Slow to call a silent member down: A is still a member to C and B when B asks.
    let tuning = || PeerTuning {
        timings: Timings {
            suspect_to_down_after: Duration::from_secs(30),
            ..Timings::fast()
        },
        ..fast_tuning()
    };
    let (cdir, bdir, adir) = (tempdir(), tempdir(), tempdir());
    let mut cc = peer_config(cdir.path(), 0, &key, None);
    tune(0, &mut cc, &origin, &c_proxy, &c_proxy);
    let c = start_node_tuned(cc, cdir, tuning()).await;
    let seed = c.peers().membership_addr();
    // A is a real process, to be killed with -9.
    let (a, a_peer) = Proc::start_peer(adir.path(), "127.0.0.3", &key, Some(seed)).await;
    let mut bc = peer_config(bdir.path(), 2, &key, Some(seed));
    tune(2, &mut bc, &origin, &c_proxy, &c_proxy);
    let b = start_node_tuned(bc, bdir, tuning()).await;
    let (pc, pb) = (c.peers().clone(), b.peers().clone());
    let a_id = || pc.members().iter().find(|m| m.addr == a_peer).map(|m| m.id);
    assert!(
        wait_until(Duration::from_secs(10), || a_id().is_some()
            && pb.members().len() == 2)
        .await,
        "the group did not form"
    );
    let a_id = a_id().unwrap();
    let sees_c = wait_for_status(a.addr, Duration::from_secs(10), |s| {
        s["peers"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2)
    })
    .await;
    assert_eq!(sees_c["peers"]["members"].as_array().map(Vec::len), Some(2));

    let first = get(a.addr, &format!("http://{c_proxy}/files/tool.deb")).await;
    assert_eq!((first.status, first.x_cache()), (200, "MISS"));
    wait_body_holder(&c, &origin.url("/pkgs/tool.deb"), a_id).await;

    a.kill9();
    let got = get_path(b.addr(), "/debian/tool.deb", &[]).await;
    // C sent B to A; A refused the connection; B went back to C, which served it.
    assert_eq!((got.status, got.x_cache()), (200, "MISS"));
    assert!(got.body.unwrap() == noise(SIZE, 1));
    let (cm, bm) = (&c.proxy.app.metrics, &b.proxy.app.metrics);
    assert_eq!(
        Metrics::get(&cm.redirects_sent),
        1,
        "redirected once, no loop"
    );
    assert_eq!(Metrics::get(&bm.redirects_followed), 0);
    assert_eq!(Metrics::get(&bm.redirect_fallbacks), 1);
    assert_eq!(
        origin.hits("/pkgs/tool.deb"),
        1,
        "C served it from its store"
    );
    assert!(penalised(&pb, a_id), "B leaves A out for a while");
    assert!(penalised(&pc, a_id), "and so does C, told by B's marker");
    // The next member to ask is not sent to A.
    let again = get(b.addr(), &format!("http://{c_proxy}/files/tool.deb")).await;
    assert_eq!((again.status, again.x_cache()), (200, "MISS"));
    assert_eq!(Metrics::get(&cm.redirects_sent), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_lying_about_the_bytes_is_caught_and_the_content_server_finishes_the_body() {
    let origin = content_origin().await;
    let c_proxy = c_proxy_addr();
    let (nodes, _key) = content_group(&origin, &c_proxy, &c_proxy).await;
    let (c, a, b) = (&nodes[0], &nodes[1], &nodes[2]);
    let a_url = format!("http://{c_proxy}/files/tool.deb");
    assert_eq!(get(a.addr(), &a_url).await.x_cache(), "MISS");
    wait_body_holder(c, &origin.url("/pkgs/tool.deb"), a.peers().id).await;
    // A's disk goes bad in the middle of the body; A still offers it.
    let hash = stored(&a.proxy, &a_url).await.unwrap().hash;
    corrupt_blob(a, &hash, SIZE / 2);

    let got = get_path(b.addr(), "/debian/tool.deb", &[]).await;
    assert_eq!((got.status, got.x_cache()), (200, "PEER"));
    assert!(got.body.unwrap() == noise(SIZE, 1), "one correct body");
    let pb = b.peers();
    assert_eq!(
        pb.status_json()["bad_hashes"],
        1,
        "the bad piece was caught"
    );
    assert_eq!(pb.status_json()["failovers"], 1);
    assert!(penalised(pb, a.peers().id));
    assert!(penalised(c.peers(), a.peers().id));
    let (cm, bm) = (&c.proxy.app.metrics, &b.proxy.app.metrics);
    assert_eq!(Metrics::get(&cm.redirects_sent), 1);
    assert_eq!(Metrics::get(&bm.redirects_followed), 1);
    assert_eq!(
        Metrics::get(&bm.redirect_fallbacks),
        1,
        "the rest came from C"
    );
    assert_eq!(origin.hits("/pkgs/tool.deb"), 1);
    // What B stored is the right body.
    let again = get_path(b.addr(), "/debian/tool.deb", &[]).await;
    assert_eq!(again.x_cache(), "HIT");
    assert!(again.body.unwrap() == noise(SIZE, 1));
}

/// A request for C's `/alias/tool.deb` with `proof` as its `x-peercache-auth`.
fn request_with(c_proxy: &str, proof: &str) -> Vec<u8> {
    format!(
        "GET /alias/tool.deb HTTP/1.1\r\nhost: {c_proxy}\r\nx-peercache-auth: {proof}\r\nconnection: close\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_stale_membership_proof_gets_no_redirect() {
    let origin = content_origin().await;
    let c_proxy = c_proxy_addr();
    // B reaches C through a relay on C's address that records what B sends.
    let relay = Recorder::start("127.0.0.2", c_proxy.parse().unwrap()).await;
    let (nodes, keydir) = content_group(&origin, &c_proxy, &relay.addr.to_string()).await;
    let (c, a, b) = (&nodes[0], &nodes[1], &nodes[2]);
    assert_eq!(
        get(a.addr(), &format!("http://{c_proxy}/files/tool.deb"))
            .await
            .x_cache(),
        "MISS"
    );
    wait_body_holder(c, &origin.url("/pkgs/tool.deb"), a.peers().id).await;
    let got = get_path(b.addr(), "/debian/tool.deb", &[]).await;
    assert_eq!((got.status, got.x_cache()), (200, "PEER"));
    let captured = relay.captured();
    assert!(
        captured.starts_with(b"GET /alias/tool.deb "),
        "{:?}",
        String::from_utf8_lossy(&captured)
    );
    let cm = &c.proxy.app.metrics;
    assert_eq!(Metrics::get(&cm.redirects_sent), 1);

    // B's request again, byte for byte, from another address and from B's own: served as a
    // non-member's would be (200 with the body), not redirected.
    let c_addr = c.addr();
    assert_eq!(raw_request("127.0.0.9", c_addr, &captured).await, 200);
    assert_eq!(raw_request("127.0.0.4", c_addr, &captured).await, 200);
    assert_eq!(Metrics::get(&cm.redirect_proofs_refused), 2);

    // A proof B could have made (the cluster key, B's id, for C) but stamped outside its
    // window; then the same made now, which is redirected.
    let key = ClusterKey::load(&keydir.path().join("cluster.key")).unwrap();
    let signer = RequestSigner::new(&key);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let proof = |at: u64, nonce: u8| {
        let (from, to) = (b.peers().id, c.peers().id);
        let none = HeaderMap::new();
        redirect::prove(
            &signer,
            from,
            to,
            &Method::GET,
            "/alias/tool.deb",
            &none,
            at,
            [nonce; 16],
        )
    };
    let stale = request_with(&c_proxy, &proof(now - 301_000, 1));
    assert_eq!(raw_request("127.0.0.4", c_addr, &stale).await, 200);
    assert_eq!(Metrics::get(&cm.redirect_proofs_refused), 3);
    let fresh = request_with(&c_proxy, &proof(now, 2));
    assert_eq!(raw_request("127.0.0.4", c_addr, &fresh).await, 302);
    assert_eq!(Metrics::get(&cm.redirects_sent), 2);
    assert_eq!(origin.hits("/pkgs/tool.deb"), 1);
}

//! A group that spans two sites: an object crosses the WAN to the origin once and between the
//! sites at most once; later requesters copy it from their own site. Also: a group whose origin
//! access goes through a parent proxy fetches through it once, and the status page shows sites.

use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::support::*;

/// Site of node `i` in a 2 + 2 group: nodes 0, 1 in "east", 2, 3 in "west".
fn site(i: usize) -> &'static str {
    if i < 2 {
        "east"
    } else {
        "west"
    }
}

/// 2 + 2 nodes in two sites.
async fn two_sites() -> (Vec<Node>, tempfile::TempDir) {
    cluster_tuned(4, |i, c, _| c.peers.site = site(i).into()).await
}

/// Body bytes `node` received from each member, by the member's site (`[same, other]`), from the
/// per-peer counters of its status document.
fn received_by_site(node: &Node) -> [u64; 2] {
    let s = node.peers().status_json();
    let mut by = [0, 0];
    for m in s["members"].as_array().unwrap() {
        let other = m["site"] != s["site"];
        by[usize::from(other)] += m["bytes_from"].as_u64().unwrap();
    }
    by
}

/// Body bytes that crossed between the sites: what every node received from members of the
/// other site (per peer), checked against the nodes' own cross-site totals.
fn crossed(nodes: &[Node]) -> u64 {
    let per_peer: u64 = nodes.iter().map(|n| received_by_site(n)[1]).sum();
    let total = |field: &str| -> u64 {
        nodes
            .iter()
            .map(|n| {
                n.peers().status_json()["cross_site"][field]
                    .as_u64()
                    .unwrap()
            })
            .sum()
    };
    let (totals, sent) = (total("bytes_received"), total("bytes_sent"));
    assert_eq!(per_peer, totals, "per-peer counters and totals agree");
    assert_eq!(sent, totals, "what one site sent, the other received");
    per_peer
}

/// A cacheable object whose body stops after 100 000 bytes until `gate` opens.
fn gated_object(origin: &Origin, path: &str, body: &bytes::Bytes, gate: watch::Receiver<bool>) {
    origin.route(
        path,
        Reply {
            status: 200,
            headers: vec![
                ("cache-control".into(), "max-age=600".into()),
                ("etag".into(), format!("\"{path}\"")),
                ("content-length".into(), body.len().to_string()),
            ],
            payload: Payload::Gated {
                first: body.slice(..100_000),
                rest: Some(body.slice(100_000..)),
                gate,
            },
        },
    );
}

/// GETs `url` through every node of `which` at once; returns the X-Cache values once every
/// client has its response head (the bodies are read after `open` is sent true).
async fn at_once(
    nodes: &[Node],
    which: &[usize],
    url: &str,
    open: &watch::Sender<bool>,
) -> Vec<(usize, String, bytes::Bytes)> {
    let mut clients = Vec::new();
    for &i in which {
        let (addr, url) = (nodes[i].addr(), url.to_owned());
        clients.push((
            i,
            tokio::spawn(async move { send_head(addr, "GET", &url, &[]).await }),
        ));
    }
    let mut heads = Vec::new();
    for (i, c) in clients {
        heads.push((i, c.await.unwrap()));
    }
    open.send(true).unwrap();
    let mut got = Vec::new();
    for (i, h) in heads {
        let x = h.headers()["x-cache"].to_str().unwrap().to_owned();
        let body = h.into_body().collect().await.unwrap().to_bytes();
        got.push((i, x, body));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_in_two_sites_fetch_a_cold_object_once_and_cross_between_them_once() {
    let origin = Origin::start().await;
    let body = pattern(400_000, 21);
    let (open, gate) = watch::channel(false);
    gated_object(&origin, "/iso", &body, gate);
    let (nodes, _key) = two_sites().await;
    let url = origin.url("/iso");

    let got = at_once(&nodes, &[0, 1, 2, 3], &url, &open).await;
    let results: Vec<&str> = got.iter().map(|(_, x, _)| x.as_str()).collect();
    for (i, _, b) in &got {
        assert!(*b == body, "node {i} serves the whole, correct body");
    }
    assert_eq!(origin.hits("/iso"), 1, "one origin request: {results:?}");
    assert_eq!(
        results.iter().filter(|r| **r == "MISS").count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|r| **r == "PEER").count(),
        3,
        "{results:?}"
    );
    assert_eq!(
        crossed(&nodes),
        400_000,
        "the body crossed between the sites once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_requesters_copy_from_their_own_site_and_a_site_copies_from_the_other_once() {
    let origin = Origin::start().await;
    let (nodes, _key) = two_sites().await;

    // One requester per site at once: one origin fetch, one crossing.
    let cold = pattern(300_000, 22);
    let (open, gate) = watch::channel(false);
    gated_object(&origin, "/cold", &cold, gate);
    let url = origin.url("/cold");
    let got = at_once(&nodes, &[0, 2], &url, &open).await;
    assert!(got.iter().all(|(_, _, b)| *b == cold));
    assert_eq!(origin.hits("/cold"), 1);
    assert_eq!(crossed(&nodes), 300_000);
    // Later requesters, one in each site: from their own site, nothing more crosses.
    for (later, first) in [(1, 0), (3, 2)] {
        wait_holders(&nodes[later], &url, 2).await;
        let before = received_by_site(&nodes[later]);
        let g = get(nodes[later].addr(), &url).await;
        assert_eq!(g.x_cache(), "PEER");
        assert!(g.body.unwrap() == cold);
        let after = received_by_site(&nodes[later]);
        assert_eq!(
            after[0] - before[0],
            300_000,
            "node {later} copied from node {first}'s site"
        );
        assert_eq!(
            after[1], before[1],
            "node {later} took nothing across the WAN"
        );
    }
    assert_eq!(origin.hits("/cold"), 1);
    assert_eq!(crossed(&nodes), 300_000);

    // A site holds it; both nodes of the other site want it at once: one of them relays it,
    // the other copies from that relay.
    let warm = pattern(300_000, 23);
    origin.route(
        "/warm",
        Reply::ok(warm.clone()).header("cache-control", "max-age=600"),
    );
    let url = origin.url("/warm");
    assert_eq!(get(nodes[0].addr(), &url).await.x_cache(), "MISS");
    for n in &nodes[2..] {
        wait_holders(n, &url, 1).await;
    }
    let before = West::now(&nodes);
    let (b2, b3) = tokio::join!(get(nodes[2].addr(), &url), get(nodes[3].addr(), &url));
    assert_eq!((b2.x_cache(), b3.x_cache()), ("PEER", "PEER"));
    assert!(b2.body.unwrap() == warm && b3.body.unwrap() == warm);
    assert_eq!(origin.hits("/warm"), 1);
    before.one_relay_crossed(&nodes, 300_000);

    // The same while the east site is still fetching it (its head sent, the body held back):
    // the west nodes wait for that head before one of them relays.
    let flight = pattern(300_000, 24);
    let (open, gate) = watch::channel(false);
    gated_object(&origin, "/flight", &flight, gate);
    let url = origin.url("/flight");
    let east = send_head(nodes[1].addr(), "GET", &url, &[]).await;
    assert_eq!(east.headers()["x-cache"], "MISS");
    for n in &nodes[2..] {
        wait_holders(n, &url, 1).await;
    }
    let before = West::now(&nodes);
    let west = [2, 3].map(|i| {
        let (addr, url) = (nodes[i].addr(), url.clone());
        tokio::spawn(async move { get(addr, &url).await })
    });
    // Both west nodes are copying (in flight) before the origin sends the rest.
    wait_holders(&nodes[1], &url, 2).await;
    open.send(true).unwrap();
    assert!(east.into_body().collect().await.unwrap().to_bytes() == flight);
    for w in west {
        let g = w.await.unwrap();
        assert_eq!(g.x_cache(), "PEER");
        assert!(g.body.unwrap() == flight);
    }
    assert_eq!(origin.hits("/flight"), 1);
    before.one_relay_crossed(&nodes, 300_000);
}

/// What had crossed, in all and into each west node, before a round.
struct West {
    crossed: u64,
    into: [u64; 2],
}

impl West {
    fn now(nodes: &[Node]) -> West {
        West {
            crossed: crossed(nodes),
            into: [2, 3].map(|i| received_by_site(&nodes[i])[1]),
        }
    }

    /// Since `self`, `len` bytes crossed, all into one west node (the relay); its site mate
    /// copied from it.
    fn one_relay_crossed(&self, nodes: &[Node], len: u64) {
        assert_eq!(crossed(nodes) - self.crossed, len, "the body crossed once");
        let now = [2, 3].map(|i| received_by_site(&nodes[i])[1]);
        let mut deltas = [now[0] - self.into[0], now[1] - self.into[1]];
        deltas.sort_unstable();
        assert_eq!(deltas, [0, len], "one west node crossed, the other did not");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_behind_a_parent_proxy_fetches_through_it_once_and_shares_the_copy() {
    let origin = Origin::start().await;
    let parent = Parent::start().await;
    let body = pattern(300_000, 25);
    let (open, gate) = watch::channel(false);
    gated_object(&origin, "/tool.tar", &body, gate);
    let (nodes, _key) = cluster_tuned(3, |_, c, _| {
        c.peers.site = "branch".into();
        c.upstream.proxy = Some(parent.config());
    })
    .await;
    let url = origin.url("/tool.tar");

    // Two nodes at once, then the third: the parent is asked once for the whole group.
    let got = at_once(&nodes, &[0, 1], &url, &open).await;
    assert!(got.iter().all(|(_, _, b)| *b == body));
    let mut results: Vec<String> = got.into_iter().map(|(_, x, _)| x).collect();
    wait_holders(&nodes[2], &url, 2).await;
    let later = get(nodes[2].addr(), &url).await;
    assert!(later.body.as_ref().unwrap() == &body);
    results.push(later.x_cache().to_owned());
    results.sort();
    assert_eq!(results, ["MISS", "PEER", "PEER"]);
    assert_eq!(parent.hits(&url), 1, "one request through the parent");
    assert_eq!(origin.hits("/tool.tar"), 1);
    // The other two copies came from the group, not through the parent.
    let uploaded: u64 = nodes
        .iter()
        .map(|n| n.peers().status_json()["bytes_uploaded"].as_u64().unwrap())
        .sum();
    assert_eq!(uploaded, 600_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_each_members_site_and_what_crossed_between_sites() {
    let origin = Origin::start().await;
    let body = pattern(200_000, 26);
    origin.route(
        "/doc.pdf",
        Reply::ok(body.clone()).header("cache-control", "max-age=600"),
    );
    let (nodes, _key) = two_sites().await;
    let url = origin.url("/doc.pdf");
    get(nodes[0].addr(), &url).await;
    wait_holders(&nodes[2], &url, 1).await;
    assert_eq!(get(nodes[2].addr(), &url).await.x_cache(), "PEER");

    // JSON: our site, the gossip preset a site label picks, each member's site.
    let v = status_json(nodes[2].addr()).await;
    let p = &v["peers"];
    assert_eq!(
        (p["site"].as_str(), p["gossip_profile"].as_str()),
        (Some("west"), Some("wan"))
    );
    assert_eq!(p["cross_site"]["bytes_received"], 200_000);
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != 2) {
        let id = n.peers().id.to_string();
        let m = p["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id.as_str())
            .expect("every node is listed");
        assert_eq!(m["site"], site(i), "node {i}");
    }
    // The summary for people (`peercache status`) says the same.
    let out = peercache(&["status", "--proxy", &format!("http://{}", nodes[2].addr())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("at site \"west\" (wan gossip), 3 active members"),
        "{text}"
    );
    assert!(
        text.contains("across sites: received 195.3 KiB  sent 0 B"),
        "{text}"
    );
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != 2) {
        let short = &n.peers().id.to_string()[..8];
        let line = text
            .lines()
            .find(|l| l.contains(short))
            .expect("a line per member");
        assert!(line.contains(&format!("site \"{}\"", site(i))), "{line}");
    }
}

//! Copies from several holders at once: a large object comes in pieces from up to
//! `peers.parallel_holders` holders in parallel, each piece verified before any of its bytes go
//! on; a holder that lies or dies loses its pieces to the others, and the client gets one
//! correct body.

use std::time::Duration;

use http_body_util::BodyExt;
use peercache::peer::wire::NodeId;

use crate::support::*;

const MIB: usize = 1024 * 1024;
const GROUP: usize = 16 * 1024;

/// The holders of `url` that `node` would ask, best first.
fn holders(node: &Node, url: &str) -> Vec<NodeId> {
    let kh = key_hash_of(url);
    node.peers()
        .sources(&kh, None)
        .iter()
        .map(|s| s.node)
        .collect()
}

/// Nodes 0, 1 and 2 of `nodes` fetch `url` in turn (from the origin, then from the group), and
/// node 3 sees all three as holders.
async fn three_holders(nodes: &[Node], url: &str) {
    assert_eq!(get(nodes[0].addr(), url).await.x_cache(), "MISS");
    for (i, n) in nodes.iter().enumerate().take(3).skip(1) {
        wait_complete_holders(n, url, i).await;
        assert_eq!(get(n.addr(), url).await.x_cache(), "PEER");
    }
    wait_complete_holders(&nodes[3], url, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_copy_goes_bad_mid_object_sends_one_wrong_piece_that_no_client_gets() {
    let origin = Origin::start().await;
    let body = noise(50 * MIB, 21);
    served(&origin, "/dvd.iso", &body);
    // A uploads at full speed, B and C at 16 MiB/s: A serves most pieces of D's copy, surely
    // some past the middle.
    let (nodes, _key) = cluster_tuned(4, |i, c, _| {
        if i == 1 || i == 2 {
            c.peers.upload_rate = 16 * MIB as u64;
        }
    })
    .await;
    let url = origin.url("/dvd.iso");
    three_holders(&nodes, &url).await;
    let (a, b, c) = (
        nodes[0].peers().id,
        nodes[1].peers().id,
        nodes[2].peers().id,
    );

    // A's copy goes bad from the middle on: a byte flipped in every chunk group. A hashed the
    // body when it stored it, so it serves it as it is now: only D's checks can catch it.
    let bad = (25 * MIB..50 * MIB).step_by(GROUP).map(|at| at + 100);
    corrupt_blob_at(&nodes[0], &blake3::hash(&body), bad);

    let d = get(nodes[3].addr(), &url).await;
    assert_eq!(d.x_cache(), "PEER");
    assert!(
        d.body.unwrap() == body,
        "byte-exact: no wrong piece reached the client"
    );
    let st = nodes[3].peers().status_json();
    let ranges: Vec<_> = origin
        .seen("/dvd.iso")
        .iter()
        .map(|s| s.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges, vec![None], "every piece came from the group: {st}");
    assert_eq!(st["multi_copies"], 1, "{st}");
    assert_eq!(
        st["bad_hashes"], 1,
        "A sent one wrong piece, then nothing more"
    );
    assert_eq!(st["failovers"], 0, "the copy never needed a resume");
    for (name, id) in [("A", a), ("B", b), ("C", c)] {
        assert!(bytes_from(&nodes[3], id) > 0, "{name} sent pieces");
    }
    // A is left out of D's choices for a while; B and C are not.
    let mut now = holders(&nodes[3], &url);
    now.sort();
    let mut honest = vec![b, c];
    honest.sort();
    assert_eq!(now, honest);
    // D stored the correct body.
    let again = get(nodes[3].addr(), &url).await;
    assert_eq!(again.x_cache(), "HIT");
    assert!(again.body.unwrap() == body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_holders_held_to_one_upload_and_a_rate_each_send_part_of_the_copy() {
    let origin = Origin::start().await;
    let body = noise(8 * MIB, 22);
    served(&origin, "/image.qcow2", &body);
    let piece = 256 * 1024;
    let (nodes, _key) = cluster_tuned(4, |_, c, _| {
        c.peers.max_uploads = 1;
        c.peers.upload_rate = 8 * MIB as u64;
        c.peers.piece_size = piece;
    })
    .await;
    let url = origin.url("/image.qcow2");
    three_holders(&nodes, &url).await;
    let refused = |n: &Node| n.peers().status_json()["uploads_refused"].clone();
    let refused_before: Vec<_> = nodes[..3].iter().map(refused).collect();

    let d = get(nodes[3].addr(), &url).await;
    assert_eq!(d.x_cache(), "PEER");
    assert!(d.body.unwrap() == body);
    assert_eq!(origin.hits("/image.qcow2"), 1);
    let d_id = nodes[3].peers().id;
    let mut total = 0;
    for (i, holder) in nodes[..3].iter().enumerate() {
        let id = holder.peers().id;
        // Counted on both sides, per member: D's bytes from it, its bytes to D.
        let got = bytes_from(&nodes[3], id);
        assert!(
            got >= piece,
            "holder {i} sent {got} bytes, less than a piece"
        );
        assert!(
            bytes_to(holder, d_id) >= got,
            "holder {i} counts its uploads to D"
        );
        // D asked it one piece at a time: never refused at its one upload slot.
        assert_eq!(refused(holder), refused_before[i], "holder {i}");
        total += got;
    }
    assert!(total >= body.len() as u64);
    assert_eq!(nodes[3].peers().status_json()["multi_copies"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_mid_copy_loses_its_pieces_to_the_others() {
    let origin = Origin::start().await;
    let body = noise(6 * MIB, 23);
    served(&origin, "/update.bin", &body);
    // A is a real process (to be killed); B, C and D run in-process. Every holder uploads at
    // 4 MiB/s, so that D's copy takes a while.
    let adir = tempdir();
    let key = adir.path().join("cluster.key");
    write_key(&key, 5);
    let (a, a_peer) = Proc::start_peer_with(
        adir.path(),
        "127.0.0.2",
        &key,
        None,
        "upload_rate = \"4MiB\"",
    )
    .await;
    let mut nodes = Vec::new();
    for i in 1..4 {
        let dir = tempdir();
        let mut c = peer_config(dir.path(), i, &key, Some(a_peer));
        c.peers.upload_rate = 4 * MIB as u64;
        c.peers.piece_size = 256 * 1024;
        nodes.push(start_node(c, dir).await);
    }
    wait_formed(&nodes, 3).await;
    let url = origin.url("/update.bin");
    assert_eq!(get(a.addr, &url).await.x_cache(), "MISS");
    for (i, n) in nodes.iter().enumerate().take(2) {
        wait_complete_holders(n, &url, i + 1).await;
        assert_eq!(get(n.addr(), &url).await.x_cache(), "PEER");
    }
    let d = &nodes[2];
    wait_complete_holders(d, &url, 3).await;
    let a_id = d
        .peers()
        .members()
        .iter()
        .find(|m| m.addr == a_peer)
        .map(|m| m.id)
        .unwrap();

    let mut resp = send_head(d.addr(), "GET", &url, &[]).await;
    assert_eq!(resp.headers()["x-cache"], "PEER");
    let mut got = read_at_least(&mut resp, MIB).await;
    assert!(bytes_from(d, a_id) > 0, "A was sending pieces");
    a.kill9(); // mid-copy: the client has 1 MiB of 6
    let rest = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    got.extend_from_slice(&rest);
    assert!(got == body, "one correct body ({} bytes)", got.len());
    assert_eq!(origin.hits("/update.bin"), 1);
    let st = d.peers().status_json();
    // A's request failed (or the next one to it did) and the rest of its piece went to B or C,
    // unless one of them was racing A for it already.
    let moved = st["pieces_reassigned"].as_u64().unwrap() + st["pieces_raced"].as_u64().unwrap();
    assert!(moved >= 1, "A's piece went to the others: {st}");
    assert_eq!(st["failovers"], 0, "the copy itself carried on, no resume");
    for n in &nodes[..2] {
        assert!(bytes_from(d, n.peers().id) > 0);
    }
    let again = get(d.addr(), &url).await;
    assert_eq!(again.x_cache(), "HIT");
    assert!(again.body.unwrap() == body);
}

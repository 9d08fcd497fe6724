//! Verified pieces: a peer's copy is checked chunk group by chunk group against the advertised
//! blake3, so a bad piece never reaches a client; it is fetched again from another holder or the
//! origin, and the peer that sent it is penalised.

use crate::support::*;

const MIB: usize = 1024 * 1024;
const GROUP: usize = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wrong_piece_mid_object_never_reaches_the_client_and_comes_from_the_other_holder() {
    let origin = Origin::start().await;
    let body = noise(50 * MIB, 9);
    served(&origin, "/big.iso", &body);
    // One holder at a time: the copy resumes from the next one (`tests/it/multiholder.rs` has
    // the same story with several at once).
    let (nodes, _key) = cluster_with(3, |c| c.peers.parallel_holders = 1).await;
    let url = origin.url("/big.iso");
    // A fetches it from the origin, B from A: two holders of the same blake3.
    assert_eq!(get(nodes[0].addr(), &url).await.x_cache(), "MISS");
    wait_holders(&nodes[1], &url, 1).await;
    assert_eq!(get(nodes[1].addr(), &url).await.x_cache(), "PEER");
    wait_holders(&nodes[2], &url, 2).await;

    // The holder C will ask first flips one byte in the middle of its stored body. It hashed
    // that body when it stored it, so it serves it as it is now: only C's check can catch it.
    let kh = key_hash_of(&url);
    let order: Vec<_> = nodes[2]
        .peers()
        .sources(&kh, None)
        .iter()
        .map(|s| s.node)
        .collect();
    let (liar, honest) = (order[0], order[1]);
    let liar_node = nodes.iter().find(|n| n.peers().id == liar).unwrap();
    let flipped = 25 * MIB + 12_345;
    corrupt_blob(liar_node, &blake3::hash(&body), flipped);

    let c = get(nodes[2].addr(), &url).await;
    assert_eq!(c.x_cache(), "PEER");
    assert!(
        c.body.unwrap() == body,
        "byte-exact: the bad piece never reached the client"
    );
    assert_eq!(
        origin.hits("/big.iso"),
        1,
        "the piece came from the other holder"
    );
    let st = nodes[2].peers().status_json();
    assert_eq!(st["bad_hashes"], 1);
    assert_eq!(st["failovers"], 1);
    // The liar's bytes stop at the start of its bad chunk group; the other holder sent the rest.
    let bad_group = (flipped / GROUP * GROUP) as u64;
    assert_eq!(bytes_from(&nodes[2], liar), bad_group);
    assert_eq!(bytes_from(&nodes[2], honest), (50 * MIB) as u64 - bad_group);
    // The liar is left out of C's choices for a while; the honest holder is not.
    let now: Vec<_> = nodes[2]
        .peers()
        .sources(&kh, None)
        .iter()
        .map(|s| s.node)
        .collect();
    assert_eq!(now, vec![honest]);
    // C stored the correct body.
    let again = get(nodes[2].addr(), &url).await;
    assert_eq!(again.x_cache(), "HIT");
    assert!(again.body.unwrap() == body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_piece_from_the_only_holder_is_fetched_again_from_the_origin_with_range() {
    let origin = Origin::start().await;
    let body = noise(3 * MIB, 4);
    served(&origin, "/pkg.tar", &body);
    let (nodes, _key) = cluster(2).await;
    let url = origin.url("/pkg.tar");
    get(nodes[0].addr(), &url).await;
    wait_holders(&nodes[1], &url, 1).await;
    let flipped = 2 * MIB + 777;
    corrupt_blob(&nodes[0], &blake3::hash(&body), flipped);

    let b = get(nodes[1].addr(), &url).await;
    assert_eq!(b.x_cache(), "PEER");
    assert!(b.body.unwrap() == body);
    let seen = origin.seen("/pkg.tar");
    assert_eq!(seen.len(), 2);
    let bad_group = flipped / GROUP * GROUP;
    assert_eq!(
        seen[1].headers["range"],
        format!("bytes={bad_group}-").as_str()
    );
    assert_eq!(seen[1].headers["if-range"], "\"v1\"");
    assert_eq!(nodes[1].peers().status_json()["bad_hashes"], 1);
    assert!(
        nodes[1]
            .peers()
            .sources(&key_hash_of(&url), None)
            .is_empty(),
        "the holder that lied is penalised"
    );
}

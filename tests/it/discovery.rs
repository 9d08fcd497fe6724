//! Zero-config discovery: nodes with `peers.discover = "mdns"` and no seeds find each other
//! with multicast DNS on loopback and share objects; a node with another key is found but never
//! let in.

use std::time::Duration;

use peercache::config::Discover;
use peercache::peer::PeerTuning;

use crate::support::*;

/// Does multicast DNS work on this machine's loopback? One daemon announces a service and
/// another browses for it on `port`, loopback only.
fn multicast_works(port: u16) -> bool {
    use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
    let ty = "_peercache-probe._udp.local.";
    let daemons: Vec<ServiceDaemon> = (0..2)
        .filter_map(|_| ServiceDaemon::new_with_port(port).ok())
        .collect();
    if daemons.len() < 2 {
        return false;
    }
    for d in &daemons {
        let _ = d.disable_interface(IfKind::All);
        let _ = d.enable_interface(IfKind::LoopbackV4);
    }
    let info = ServiceInfo::new(
        ty,
        "probe",
        "probe.local.",
        "127.0.0.1",
        9,
        &[("v", "1")][..],
    );
    let registered = info.is_ok_and(|info| daemons[0].register(info).is_ok());
    let found = match daemons[1].browse(ty) {
        Ok(rx) if registered => {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            std::iter::from_fn(|| {
                let left = deadline.checked_duration_since(std::time::Instant::now())?;
                rx.recv_timeout(left).ok()
            })
            .any(|e| matches!(e, ServiceEvent::ServiceResolved(_)))
        }
        _ => false,
    };
    for d in daemons {
        let _ = d.shutdown();
    }
    found
}

#[tokio::test]
async fn two_nodes_without_seeds_find_each_other_with_mdns() {
    let origin = Origin::start().await;
    origin.route(
        "/shared.tar",
        Reply::ok(pattern(50_000, 4)).header("cache-control", "max-age=600"),
    );
    // A port of our own instead of 5353: this test's nodes find only each other.
    let tuning = PeerTuning {
        mdns_port: free_port(),
        ..fast_tuning()
    };
    let keys = tempdir();
    let (key, other_key) = (keys.path().join("a.key"), keys.path().join("b.key"));
    write_key(&key, 1);
    write_key(&other_key, 2);
    let mut nodes = Vec::new();
    for (i, key) in [(0, &key), (1, &key), (2, &other_key)] {
        let dir = tempdir();
        let mut c = peer_config(dir.path(), i, key, None);
        c.peers.discover = Discover::Mdns;
        nodes.push(start_node_tuned(c, dir, tuning.clone()).await);
    }
    let peers: Vec<_> = nodes.iter().map(|n| n.peers().clone()).collect();
    let active = |i: usize| {
        peers[i]
            .members()
            .iter()
            .filter(|m| m.state.is_active())
            .map(|m| m.id)
            .collect::<Vec<_>>()
    };
    let joined = wait_until(Duration::from_secs(15), || {
        active(0) == [peers[1].id] && active(1) == [peers[0].id]
    })
    .await;
    if !joined && !multicast_works(free_port()) {
        println!("SKIPPED: multicast DNS does not work on this machine's loopback");
        return;
    }
    assert!(joined, "a sees {:?}, b sees {:?}", active(0), active(1));

    // They behave as a group: b gets from a what a fetched.
    assert_eq!(
        get(nodes[0].addr(), &origin.url("/shared.tar"))
            .await
            .x_cache(),
        "MISS"
    );
    let from_b = get(nodes[1].addr(), &origin.url("/shared.tar")).await;
    assert_eq!(from_b.x_cache(), "PEER");
    assert_eq!(from_b.body.as_ref().unwrap(), &pattern(50_000, 4));
    assert_eq!(origin.hits("/shared.tar"), 1);

    // The node with another key is seen on the LAN but is nobody's member.
    let s = wait_for_status(nodes[0].addr(), Duration::from_secs(10), |s| {
        s["peers"]["discovery"]["other_group"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        s["peers"]["discovery"]["other_group"].as_u64() >= Some(1),
        "{s}"
    );
    // The pair met through discovery: at least one of them handed the other to membership
    // (whichever heard the other first; the second may learn of it through the join itself).
    let mut handed = 0;
    for node in &nodes[..2] {
        let s = status_json(node.addr()).await;
        handed += s["peers"]["discovery"]["handed_to_membership"]
            .as_u64()
            .unwrap_or(0);
    }
    assert!(handed >= 1, "neither node handed the other to membership");
    assert!(active(2).is_empty(), "{:?}", active(2));
    for i in 0..2 {
        assert!(!peers[i].members().iter().any(|m| m.id == peers[2].id));
    }
}

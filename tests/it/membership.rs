//! Membership on real UDP sockets: joins through seeds, broadcasts, keys, failure detection,
//! leaves and restarts, with fast timings on loopback.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use peercache::peer::auth::ClusterKey;
use peercache::peer::identity::MAX_SITE_LEN;
use peercache::peer::membership::{
    Event, MemberInfo, MemberState, Membership, MembershipConfig, Timings,
};
use peercache::peer::wire::NodeId;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

struct Node {
    m: Membership,
    events: mpsc::Receiver<Event>,
}

impl Node {
    fn id(&self) -> NodeId {
        self.m.node_id()
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn start(
    id: NodeId,
    key: &ClusterKey,
    port: u16,
    seeds: &[SocketAddr],
    timings: Timings,
) -> Node {
    let (tx, events) = Membership::events();
    let cfg = MembershipConfig {
        id,
        bind: loopback(port),
        advertise: loopback(0),
        site: "lab".into(),
        seeds: seeds.to_vec(),
        key: key.clone(),
    };
    let m = Membership::start_with_timings(cfg, timings, tx)
        .await
        .expect("start membership");
    Node { m, events }
}

/// A seed and two nodes that join through it, each seeing the other two.
async fn trio(key: &ClusterKey, timings: Timings) -> (Node, Node, Node) {
    let a = start(NodeId::random(), key, 0, &[], timings.clone()).await;
    let seed = [a.m.advertise()];
    let b = start(NodeId::random(), key, 0, &seed, timings.clone()).await;
    let c = start(NodeId::random(), key, 0, &seed, timings).await;
    for n in [&a, &b, &c] {
        wait_view(&n.m, "every node sees two alive members", |v| {
            alive(v).len() == 2
        })
        .await;
    }
    (a, b, c)
}

fn alive(v: &[MemberInfo]) -> Vec<NodeId> {
    v.iter()
        .filter(|m| m.state == MemberState::Alive)
        .map(|m| m.id)
        .collect()
}

fn state_of(v: &[MemberInfo], id: NodeId) -> Option<MemberState> {
    v.iter().find(|m| m.id == id).map(|m| m.state)
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting until {what}"),
    }
}

async fn wait_view(m: &Membership, what: &str, pred: impl FnMut(&Vec<MemberInfo>) -> bool) {
    let mut rx = m.subscribe();
    within(what, rx.wait_for(pred))
        .await
        .expect("membership task alive");
}

/// Polls a condition that has no channel (a counter) until it holds, within `WAIT`.
async fn until(what: &str, cond: impl Fn() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Waits for the first event matching `pred`, skipping others.
async fn next_event(n: &mut Node, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    within(what, async {
        loop {
            match n.events.recv().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("event channel closed"),
            }
        }
    })
    .await
}

fn drain(n: &mut Node) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = n.events.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test]
async fn three_nodes_join_through_one_seed() {
    let key = ClusterKey::generate();
    let (mut a, mut b, mut c) = trio(&key, Timings::fast()).await;
    let ids = [a.id(), b.id(), c.id()];
    for n in [&mut a, &mut b, &mut c] {
        let me = n.id();
        let mut others: Vec<NodeId> = ids.iter().copied().filter(|i| *i != me).collect();
        others.sort();
        assert_eq!(alive(&n.m.members()), others);
        let ups: Vec<NodeId> = drain(n)
            .into_iter()
            .filter_map(|e| match e {
                Event::Up(info) => Some(info.id),
                _ => None,
            })
            .collect();
        for o in &others {
            assert!(ups.contains(o), "Up for {o} on {me}: {ups:?}");
        }
        assert!(n.m.members().iter().all(|m| m.site == "lab"));
        assert_eq!(n.m.rejected_packets(), 0);
    }
    let info =
        a.m.members()
            .into_iter()
            .find(|m| m.id == b.id())
            .expect("b");
    assert_eq!(info.addr, b.m.advertise());
}

#[tokio::test]
async fn a_node_started_before_its_seed_joins_when_the_seed_appears() {
    let key = ClusterKey::generate();
    // Hold the seed's future port and see the early node's announce go unanswered.
    let holder = UdpSocket::bind(loopback(0)).await.expect("bind");
    let seed_addr = holder.local_addr().expect("addr");
    let b = start(NodeId::random(), &key, 0, &[seed_addr], Timings::fast()).await;
    let mut buf = [0u8; 2048];
    within("the early node announces", holder.recv_from(&mut buf))
        .await
        .expect("recv");
    drop(holder);

    let a = start(
        NodeId::random(),
        &key,
        seed_addr.port(),
        &[],
        Timings::fast(),
    )
    .await;
    wait_view(&b.m, "b sees the seed", |v| alive(v) == [a.id()]).await;
    wait_view(&a.m, "the seed sees b", |v| alive(v) == [b.id()]).await;
}

#[tokio::test]
async fn a_seed_listed_by_another_of_its_addresses_accepts_the_announce() {
    let key = ClusterKey::generate();
    let (tx, _a_events) = Membership::events();
    let cfg = MembershipConfig {
        id: NodeId::random(),
        bind: SocketAddr::from(([0, 0, 0, 0], 0)),
        advertise: loopback(0),
        site: "lab".into(),
        seeds: Vec::new(),
        key: key.clone(),
    };
    let a = Membership::start_with_timings(cfg, Timings::fast(), tx)
        .await
        .expect("start seed");
    // The seed advertises 127.0.0.1 but is listed as 127.0.0.2 (same host, same socket).
    let listed = SocketAddr::from(([127, 0, 0, 2], a.local_addr().port()));
    let b = start(NodeId::random(), &key, 0, &[listed], Timings::fast()).await;
    wait_view(&b.m, "b joins through the other address", |v| {
        alive(v) == [a.node_id()]
    })
    .await;
    let seen = b.m.members();
    assert_eq!(seen[0].addr, a.advertise());
}

#[tokio::test]
async fn a_broadcast_reaches_every_other_member_exactly_once() {
    let key = ClusterKey::generate();
    let (a, b, c) = trio(&key, Timings::fast()).await;
    let mut nodes = [a, b, c];
    for n in nodes.iter_mut() {
        drain(n);
    }
    let payload = |from: usize, i: usize| format!("update {i} from node {from}").into_bytes();
    for i in 0..10 {
        nodes[0].m.broadcast(payload(0, i));
        nodes[1].m.broadcast(payload(1, i));
    }
    for (me, node) in nodes.iter_mut().enumerate() {
        let mut want: Vec<Vec<u8>> = (0..2)
            .filter(|from| *from != me)
            .flat_map(|from| (0..10).map(move |i| payload(from, i)))
            .collect();
        want.sort();
        let mut got = Vec::new();
        while got.len() < want.len() {
            let e = next_event(node, "all broadcasts arrive", |e| {
                matches!(e, Event::Broadcast(_))
            })
            .await;
            if let Event::Broadcast(p) = e {
                got.push(p);
            }
        }
        got.sort();
        assert_eq!(got, want, "node {me} got each payload once, never its own");
    }
    // Every payload is retransmitted several times (gossip every 50 ms): watch a window of
    // retransmissions for any second delivery.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (me, node) in nodes.iter_mut().enumerate() {
        let again: Vec<Event> = drain(node)
            .into_iter()
            .filter(|e| matches!(e, Event::Broadcast(_)))
            .collect();
        assert!(again.is_empty(), "node {me} got duplicates: {again:?}");
    }
}

#[tokio::test]
async fn a_node_with_another_key_cannot_join() {
    let key = ClusterKey::generate();
    let a = start(NodeId::random(), &key, 0, &[], Timings::fast()).await;
    let seed = [a.m.advertise()];
    let b = start(NodeId::random(), &key, 0, &seed, Timings::fast()).await;
    let intruder = start(
        NodeId::random(),
        &ClusterKey::generate(),
        0,
        &seed,
        Timings::fast(),
    )
    .await;
    wait_view(&b.m, "b joins", |v| alive(v) == [a.id()]).await;
    until("the seed rejects several announces", || {
        a.m.rejected_packets() >= 3
    })
    .await;
    for n in [&a.m, &b.m] {
        assert_eq!(state_of(&n.members(), intruder.id()), None);
    }
    assert!(intruder.m.members().is_empty());
    assert_eq!(b.m.rejected_packets(), 0);
}

#[tokio::test]
async fn a_stopped_node_is_declared_down() {
    let key = ClusterKey::generate();
    let (mut a, b, c) = trio(&key, Timings::fast()).await;
    let gone = c.id();
    drain(&mut a);
    c.m.abort().await;
    for n in [&a.m, &b.m] {
        wait_view(n, "the stopped node is Down", |v| {
            state_of(v, gone) == Some(MemberState::Down)
        })
        .await;
    }
    let e = next_event(&mut a, "Down event", |e| matches!(e, Event::Down(_))).await;
    assert!(matches!(e, Event::Down(id) if id == gone));
    assert_eq!(alive(&a.m.members()), [b.id()]);
}

#[tokio::test]
async fn a_clean_leave_is_seen_as_down_quickly() {
    // Suspicion takes 60 s here, so a Down within the 10 s wait can only come from the leave.
    let t = Timings {
        suspect_to_down_after: Duration::from_secs(60),
        ..Timings::fast()
    };
    let key = ClusterKey::generate();
    let (mut a, b, c) = trio(&key, t).await;
    let gone = c.id();
    drain(&mut a);
    c.m.leave().await;
    for n in [&a.m, &b.m] {
        wait_view(n, "the leaver is Down", |v| {
            state_of(v, gone) == Some(MemberState::Down)
        })
        .await;
    }
    let e = next_event(&mut a, "Down event", |e| matches!(e, Event::Down(_))).await;
    assert!(matches!(e, Event::Down(id) if id == gone));
}

#[tokio::test]
async fn a_restarted_node_is_alive_again_after_being_declared_down() {
    let key = ClusterKey::generate();
    let (mut a, b, c) = trio(&key, Timings::fast()).await;
    let id = c.id();
    let port = c.m.local_addr().port();
    c.m.abort().await;
    for n in [&a.m, &b.m] {
        wait_view(n, "the stopped node is Down", |v| {
            state_of(v, id) == Some(MemberState::Down)
        })
        .await;
    }
    drain(&mut a);

    let c2 = start(id, &key, port, &[a.m.advertise()], Timings::fast()).await;
    for n in [&a.m, &b.m] {
        wait_view(n, "the restarted node is Alive", |v| {
            state_of(v, id) == Some(MemberState::Alive)
        })
        .await;
    }
    wait_view(&c2.m, "the restarted node sees both", |v| {
        alive(v).len() == 2
    })
    .await;
    let e = next_event(&mut a, "Up event", |e| matches!(e, Event::Up(_))).await;
    assert!(matches!(e, Event::Up(info) if info.id == id && info.addr == c2.m.advertise()));
    // Exactly one entry per node id.
    assert_eq!(a.m.members().len(), 2);
}

#[tokio::test]
async fn a_node_restarted_before_suspicion_ends_rejoins_without_a_down() {
    let t = Timings {
        suspect_to_down_after: Duration::from_secs(60),
        ..Timings::fast()
    };
    let key = ClusterKey::generate();
    let (mut a, mut b, c) = trio(&key, t.clone()).await;
    let id = c.id();
    let port = c.m.local_addr().port();
    drain(&mut a);
    drain(&mut b);
    c.m.abort().await;
    let c2 = start(id, &key, port, &[a.m.advertise()], t).await;
    for n in [&mut a, &mut b] {
        // The new process (a new bump) is announced as Up so its index can be pulled again.
        let e = next_event(n, "Up for the new process", |e| matches!(e, Event::Up(_))).await;
        assert!(matches!(e, Event::Up(info) if info.id == id));
        assert!(!drain(n).iter().any(|e| matches!(e, Event::Down(_))));
        assert_eq!(state_of(&n.m.members(), id), Some(MemberState::Alive));
    }
    wait_view(&c2.m, "the restarted node sees both", |v| {
        alive(v).len() == 2
    })
    .await;
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let (tx, _rx) = Membership::events();
    let cfg = MembershipConfig {
        id: NodeId::random(),
        bind: loopback(0),
        advertise: SocketAddr::from(([0, 0, 0, 0], 0)),
        site: "x".into(),
        seeds: Vec::new(),
        key: ClusterKey::generate(),
    };
    let e = Membership::start_with_timings(cfg.clone(), Timings::fast(), tx.clone())
        .await
        .expect_err("wildcard advertise");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    let long_site = MembershipConfig {
        site: "s".repeat(MAX_SITE_LEN + 1),
        advertise: loopback(0),
        ..cfg.clone()
    };
    let e = Membership::start_with_timings(long_site, Timings::fast(), tx.clone())
        .await
        .expect_err("long site");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    let bad_t = Timings {
        probe_rtt: Duration::from_secs(5),
        ..Timings::fast()
    };
    let ok_cfg = MembershipConfig {
        advertise: loopback(0),
        ..cfg
    };
    let e = Membership::start_with_timings(ok_cfg, bad_t, tx)
        .await
        .expect_err("rtt > period");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

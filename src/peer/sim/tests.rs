//! The simulator at small scale: determinism, propagation, failure detection, partitions,
//! joins, and gossip timings across a slow or lossy WAN between two sites.

use std::time::Duration;

use super::*;
use crate::peer::index::tests::have;

fn lan(nodes: usize, seed: u64) -> Sim {
    Sim::new(SimConfig {
        seed,
        ..SimConfig::new(nodes, Timings::lan(), Network::lan())
    })
}

#[test]
fn an_update_reaches_every_node_of_fifty_within_a_second() {
    let mut sim = lan(50, 3);
    sim.run_for(Duration::from_secs(2));
    let probe = sim.advertise(7, have(1, 1));
    sim.run_for(Duration::from_secs(1));
    let spread = sim.spread(probe);
    assert_eq!(spread.reached, 49, "{spread:?}");
    assert!(
        spread.p100.is_some_and(|t| t < Duration::from_secs(1)),
        "{spread:?}"
    );
    assert!(sim.in_sync(0, 7) && sim.in_sync(49, 7));
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let run = |seed| {
        let mut sim = Sim::new(SimConfig {
            seed,
            ..SimConfig::new(30, Timings::lan(), Network::lan().with_loss(0.01))
        });
        sim.run_for(Duration::from_secs(2));
        let probes: Vec<ProbeId> = (0..5u8)
            .map(|i| {
                let p = sim.advertise(usize::from(i) * 5, have(i, i));
                sim.run_for(Duration::from_millis(100));
                p
            })
            .collect();
        sim.kill(29);
        sim.run_for(Duration::from_secs(10));
        let spreads: Vec<Spread> = probes.iter().map(|p| sim.spread(*p)).collect();
        (
            sim.totals(),
            spreads,
            sim.down_spread(29, Duration::from_millis(2500)),
        )
    };
    let a = run(11);
    assert_eq!(a, run(11));
    assert_ne!(a.0, run(12).0);
    assert!(a.0.events > 1000 && a.0.gossip_sent > 0, "{:?}", a.0);
}

#[test]
fn a_dead_node_is_dropped_by_every_other_within_the_suspicion_timeout() {
    let mut sim = lan(30, 5);
    sim.run_for(Duration::from_secs(2));
    sim.advertise(4, have(1, 1));
    sim.run_for(Duration::from_millis(500));
    assert_eq!(sim.index_entries(9), 1);
    let killed = sim.now();
    sim.kill(4);
    sim.run_for(Duration::from_secs(15));
    let down = sim.down_spread(4, killed);
    assert_eq!(down.reached, 29, "{down:?}");
    let t = Timings::lan();
    let bound = t.suspect_to_down_after + t.probe_period * 4;
    assert!(down.p100.is_some_and(|d| d < bound), "{down:?}");
    assert!((0..30)
        .filter(|&i| i != 4)
        .all(|i| sim.index_entries(i) == 0));
}

#[test]
fn a_healed_partition_converges_with_the_updates_of_both_sides() {
    let mut sim = lan(40, 9);
    sim.run_for(Duration::from_secs(2));
    sim.partition(|i| u8::from(i >= 20));
    let a = sim.advertise(3, have(1, 1));
    let b = sim.advertise(33, have(2, 2));
    sim.run_for(Duration::from_secs(15));
    // Each side declared the other Down and sees only its own update.
    assert_eq!(sim.members(3), 19);
    assert!(sim.in_sync(5, 3) && !sim.in_sync(25, 3));
    assert!(sim.in_sync(25, 33) && !sim.in_sync(5, 33));
    assert!(!sim.converged(&[3, 33]));
    sim.heal();
    let deadline = sim.now() + Duration::from_secs(30);
    assert!(
        sim.run_until_every(deadline, Duration::from_secs(1), |s| s.converged(&[3, 33])),
        "members of node 0 after heal: {}",
        sim.members(0)
    );
    // Gossip reached its own side, the pulls after the heal the other.
    assert_eq!(sim.spread(a).reached, 39);
    assert_eq!(sim.spread(b).reached, 39);
    assert_eq!(sim.index_entries(0), 2);
    assert_eq!(sim.index_entries(39), 2);
}

#[test]
fn a_new_node_learns_every_member_and_pulls_every_entry() {
    let mut sim = lan(60, 2);
    sim.run_for(Duration::from_secs(2));
    for n in 0..60 {
        sim.preload(n, (0..50u8).map(move |k| have(k, (n % 200) as u8)));
    }
    let newbie = sim.join(0);
    let deadline = sim.now() + Duration::from_secs(10);
    assert!(
        sim.run_until_every(deadline, Duration::from_millis(100), |s| {
            s.members(newbie) == 60 && s.index_entries(newbie) == 60 * 50
        })
    );
    assert!(sim.totals().pulls >= 60);
}

#[test]
fn a_group_taken_to_hold_preloaded_entries_pulls_none_and_a_new_node_pulls_them_all() {
    let mut sim = lan(20, 2);
    sim.run_for(Duration::from_secs(2));
    for n in 0..20 {
        sim.preload_held(n, (0..10u8).map(move |k| have(k, n as u8)));
    }
    let before = sim.totals();
    // Long enough for every node's anti-entropy rounds, which show the members' new heads.
    sim.run_for(crate::peer::anti_entropy::every(19) * 3);
    let after = sim.totals();
    assert!(after.heads_rounds > before.heads_rounds, "{after:?}");
    assert_eq!(after.pulls, before.pulls, "the group pulled what it holds");
    let newbie = sim.join(0);
    let deadline = sim.now() + Duration::from_secs(10);
    assert!(
        sim.run_until_every(deadline, Duration::from_millis(100), |s| {
            s.members(newbie) == 20 && s.index_entries(newbie) == 20 * 10
        })
    );
}

#[test]
fn a_quiet_node_that_advertised_during_a_partition_is_caught_up_after_the_heal() {
    // A site of 5 nodes is cut off for longer than the suspicion timeout; each side advertises
    // once, early, then falls quiet. The big side declares every node of the site Down, but
    // the site, probing only 5 members a second, has not declared each big-side node Down by
    // the heal: those it still counts as members show it no Up and gossip nothing more, so
    // only their heads (told in pulls) bring their updates over.
    let mut sim = lan(40, 4);
    sim.run_for(Duration::from_secs(2));
    sim.partition(|i| u8::from(i >= 35));
    sim.run_for(Duration::from_millis(200));
    let origins = [3, 8, 13, 21, 29, 37];
    for (i, &o) in origins.iter().enumerate() {
        sim.advertise(o, have(10 + i as u8, 1));
    }
    let t = Timings::lan();
    sim.run_for(t.suspect_to_down_after + t.probe_period * 2);
    let missed = origins[..5]
        .iter()
        .filter(|&&o| (35..40).any(|i| !sim.in_sync(i, o) && sim.sees(i, o)))
        .count();
    assert!(
        missed > 0,
        "the site saw every origin go Down: no quiet member to test"
    );
    assert!(!sim.converged(&origins));
    sim.heal();
    let deadline = sim.now() + Duration::from_secs(20);
    assert!(
        sim.run_until_every(deadline, Duration::from_millis(500), |s| s
            .converged(&origins)),
        "{} origins still missing at the site",
        origins
            .iter()
            .filter(|&&o| (35..40).any(|i| i != o && !sim.in_sync(i, o)))
            .count()
    );
    assert!((0..40).all(|i| sim.index_entries(i) == 6 - usize::from(origins.contains(&i))));
}

#[test]
fn updates_gossip_never_brought_arrive_through_anti_entropy() {
    // Two nodes record an update each that reaches nobody by gossip (as when every
    // transmission of it was lost, say to a partition too short for anyone to be declared
    // Down) and is followed by no other update of theirs: no gap, no `Up`, so no pull. Only
    // the periodic comparison of heads with random members brings them over.
    let mut sim = lan(12, 6);
    sim.run_for(Duration::from_secs(2));
    sim.preload(2, std::iter::once(have(1, 1)));
    sim.preload(8, std::iter::once(have(2, 2)));
    sim.run_for(Duration::from_secs(1));
    assert!(!sim.in_sync(9, 2) && !sim.in_sync(3, 8));
    let deadline = sim.now() + crate::peer::anti_entropy::every(11) * 6;
    assert!(sim.run_until_every(deadline, Duration::from_secs(1), |s| s.converged(&[2, 8])));
    let t = sim.totals();
    assert!(t.heads_rounds > 0 && t.downs == 0, "{t:?}");
    assert!((0..12).all(|i| sim.index_entries(i) == 2 - usize::from(i == 2 || i == 8)));
}

/// Down events seen in a group of 4 + 4 nodes in two sites whose WAN link delays packets by
/// `one_way_ms` (+ ~50 ms) and loses `loss` of them, over `secs` of virtual time. Nobody dies:
/// every Down is a flap.
fn flaps(timings: Timings, one_way_ms: u64, loss: f64, secs: u64, seed: u64) -> u64 {
    let wan = Network {
        base: Duration::from_millis(one_way_ms),
        jitter: Duration::from_millis(50),
        max: Duration::from_millis(one_way_ms * 3),
        ..Network::wan().with_loss(loss)
    };
    let mut sim = Sim::new(SimConfig {
        seed,
        sites: Some(TwoSites { first: 4, wan }),
        ..SimConfig::new(8, timings, Network::lan())
    });
    sim.run_for(Duration::from_secs(secs));
    sim.totals().downs
}

/// `peers.profile = "wan"`, and "auto" once the other site is in view: members across a slow
/// link (1.5 s one way: a round trip three times the LAN preset's probe period) or a lossy one
/// (40 % of packets lost) stay members for ten minutes; on the LAN preset the slow link flaps
/// them within a minute.
#[test]
fn wan_timings_do_not_flap_members_behind_a_slow_or_lossy_link() {
    assert_eq!(flaps(Timings::wan(), 1500, 0.05, 600, 4), 0, "slow link");
    assert!(
        flaps(Timings::lan(), 1500, 0.05, 60, 4) > 0,
        "the LAN preset flaps on the same link"
    );
    assert_eq!(flaps(Timings::wan(), 200, 0.4, 600, 5), 0, "lossy link");
    assert_eq!(
        flaps(Timings::auto(), 200, 0.4, 600, 5),
        0,
        "auto: switched"
    );
}

/// "auto" on one site keeps the LAN preset (a dead node is dropped within the LAN suspicion
/// time); once a member of another site joins, every node switches to the WAN preset and the
/// group stays whole and keeps spreading updates.
#[test]
fn auto_timings_switch_to_wan_when_another_site_joins() {
    let mut sim = Sim::new(SimConfig {
        seed: 8,
        ..SimConfig::new(6, Timings::auto(), Network::lan())
    });
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.switched(), 0, "one site: LAN timings");
    let killed = sim.now();
    sim.kill(5);
    sim.run_for(Duration::from_secs(12));
    let t = Timings::lan();
    let down = sim.down_spread(5, killed);
    assert_eq!(down.reached, 5, "{down:?}");
    assert!(
        down.p100
            .is_some_and(|d| d < t.suspect_to_down_after + t.probe_period * 4),
        "{down:?}"
    );
    let far = sim.join_site(0, "b");
    let deadline = sim.now() + Duration::from_secs(10);
    assert!(
        sim.run_until_every(deadline, Duration::from_millis(100), |s| {
            s.members(far) == 5 && s.switched() == 6
        })
    );
    // Every live node rebuilt foca on the WAN preset and knows every other; updates still spread.
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.totals().downs, 5, "only the dead node went Down");
    assert!((0..5).chain([far]).all(|i| sim.members(i) == 5));
    let probe = sim.advertise(2, have(3, 3));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.spread(probe).reached, 5);
}

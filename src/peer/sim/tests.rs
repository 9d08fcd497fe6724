//! The simulator at small scale: determinism, propagation, failure detection, partitions,
//! joins.

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

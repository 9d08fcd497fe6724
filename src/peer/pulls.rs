//! Index catch-up pulls, one per node at a time: a gap seen while a pull of that node runs makes
//! that pull go again when it ends instead of starting another; failed pulls back off. Pure: no
//! I/O, no clocks.

use std::collections::HashMap;
use std::time::Duration;

use super::wire::NodeId;

/// Waits before retrying a failed (or refused: the node is busy serving snapshots) pull; after
/// the last the pull gives up until the next gap or the node's next `Up`.
pub const RETRIES: [Duration; 6] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Rounds one pull may run back to back (each one only after the last made progress or a new
/// gap arrived meanwhile); then it ends, and the next gap starts a new one.
pub const MAX_ROUNDS: u32 = 64;

/// What to do about a gap (or an `Up`) for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// No pull of this node runs: start one.
    Start,
    /// One runs: it will go again when it ends (coalesced; nothing to start).
    Coalesced,
}

/// The pulls running, per node.
///
/// Invariant: at most one pull per node is running; a node is in the map exactly while its pull
/// runs, so the map holds no more nodes than pulls were started for (members only: callers
/// start pulls only for members).
#[derive(Debug, Default)]
pub struct Pulls {
    /// Node → (another round asked for while this one ran, rounds run).
    running: HashMap<NodeId, (bool, u32)>,
}

impl Pulls {
    /// A pull of `node` is wanted.
    pub fn want(&mut self, node: NodeId) -> Want {
        match self.running.get_mut(&node) {
            Some((again, _)) => {
                *again = true;
                Want::Coalesced
            }
            None => {
                self.running.insert(node, (false, 1));
                Want::Start
            }
        }
    }

    /// A round of `node`'s pull ended; `progress`: it applied something and the index still
    /// shows a gap for the node. Whether to run another round (the pull stays running) or end.
    pub fn round_done(&mut self, node: NodeId, progress: bool) -> bool {
        let Some((again, rounds)) = self.running.get_mut(&node) else {
            return false;
        };
        if (*again || progress) && *rounds < MAX_ROUNDS {
            *again = false;
            *rounds += 1;
            true
        } else {
            self.running.remove(&node);
            false
        }
    }

    /// `node`'s pull ends (gave up, or the node left).
    pub fn end(&mut self, node: NodeId) {
        self.running.remove(&node);
    }

    /// Pulls running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

/// The wait before retry `attempt` (0-based) of a failed pull; `None` once they are spent.
pub fn retry_after(attempt: usize) -> Option<Duration> {
    RETRIES.get(attempt).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u8) -> NodeId {
        NodeId([i; 16])
    }

    #[test]
    fn one_pull_per_node_and_gaps_meanwhile_make_it_go_again() {
        let mut p = Pulls::default();
        assert_eq!(p.want(n(1)), Want::Start);
        for _ in 0..100 {
            assert_eq!(p.want(n(1)), Want::Coalesced);
        }
        assert_eq!(p.want(n(2)), Want::Start, "other nodes are independent");
        assert_eq!(p.running(), 2);
        // The burst asked for one more round, not a hundred.
        assert!(p.round_done(n(1), false));
        assert!(!p.round_done(n(1), false));
        assert_eq!(p.running(), 1);
        assert_eq!(p.want(n(1)), Want::Start, "ended: the next gap starts anew");
    }

    #[test]
    fn a_round_that_made_progress_on_a_remaining_gap_goes_again_but_not_forever() {
        // Each round: (it made progress on a remaining gap, a gap arrived while it ran).
        type Rounds = &'static [(bool, bool)];
        // (rounds, whether each one goes again)
        let cases: &[(Rounds, &[bool])] = &[
            (&[(false, false)], &[false]),
            (&[(true, false), (false, false)], &[true, false]),
            (
                &[(false, true), (true, false), (false, false)],
                &[true, true, false],
            ),
        ];
        for (rounds, want) in cases {
            let mut p = Pulls::default();
            p.want(n(1));
            let got: Vec<bool> = rounds
                .iter()
                .map(|(progress, gap)| {
                    if *gap {
                        p.want(n(1));
                    }
                    p.round_done(n(1), *progress)
                })
                .collect();
            assert_eq!(&got, want, "{rounds:?}");
        }
        let mut p = Pulls::default();
        p.want(n(1));
        let rounds = (0..).take_while(|_| p.round_done(n(1), true)).count();
        assert_eq!(
            rounds as u32,
            MAX_ROUNDS - 1,
            "a node that never closes its gap"
        );
        assert_eq!(p.running(), 0);
    }

    #[test]
    fn ending_and_retries() {
        let mut p = Pulls::default();
        p.want(n(1));
        p.want(n(1));
        p.end(n(1));
        assert_eq!(p.running(), 0);
        assert!(
            !p.round_done(n(1), true),
            "an ended pull has no rounds left"
        );
        p.end(n(9));
        let waits: Vec<Duration> = (0..).map_while(retry_after).collect();
        assert_eq!(waits, RETRIES);
        assert!(waits.windows(2).all(|w| w[0] < w[1]), "backs off");
        assert!(waits.iter().sum::<Duration>() < Duration::from_secs(10));
    }
}

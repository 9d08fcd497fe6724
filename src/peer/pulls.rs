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

/// Names one pull of a node, so that ending it never ends a later one of the same node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullId(u64);

/// What to do about a gap (or an `Up`) for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// No pull of this node runs: start one, known as this id.
    Start(PullId),
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
    running: HashMap<NodeId, Run>,
    next: u64,
}

/// A running pull.
#[derive(Debug)]
struct Run {
    id: PullId,
    /// Another round was asked for while this one ran.
    again: bool,
    /// Rounds run so far.
    rounds: u32,
}

impl Pulls {
    /// A pull of `node` is wanted.
    pub fn want(&mut self, node: NodeId) -> Want {
        match self.running.get_mut(&node) {
            Some(run) => {
                run.again = true;
                Want::Coalesced
            }
            None => {
                let id = PullId(self.next);
                self.next += 1;
                let run = Run {
                    id,
                    again: false,
                    rounds: 1,
                };
                self.running.insert(node, run);
                Want::Start(id)
            }
        }
    }

    /// A round of `node`'s pull ended; `progress`: it applied something and the index still
    /// shows a gap for the node. Whether to run another round (the pull stays running) or end.
    pub fn round_done(&mut self, node: NodeId, id: PullId, progress: bool) -> bool {
        let Some(run) = self.running.get_mut(&node).filter(|r| r.id == id) else {
            return false;
        };
        if (run.again || progress) && run.rounds < MAX_ROUNDS {
            run.again = false;
            run.rounds += 1;
            true
        } else {
            self.running.remove(&node);
            false
        }
    }

    /// Pull `id` of `node` ends, however (gave up, the node left, its task was dropped); a no-op
    /// when it already ended or a later pull of the node runs.
    pub fn end(&mut self, node: NodeId, id: PullId) {
        if self.running.get(&node).is_some_and(|r| r.id == id) {
            self.running.remove(&node);
        }
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

    fn start(p: &mut Pulls, node: NodeId) -> PullId {
        match p.want(node) {
            Want::Start(id) => id,
            Want::Coalesced => panic!("a pull of {node} already runs"),
        }
    }

    #[test]
    fn one_pull_per_node_and_gaps_meanwhile_make_it_go_again() {
        let mut p = Pulls::default();
        let Want::Start(one) = p.want(n(1)) else {
            panic!("the first gap starts a pull")
        };
        for _ in 0..100 {
            assert_eq!(p.want(n(1)), Want::Coalesced);
        }
        assert!(
            matches!(p.want(n(2)), Want::Start(_)),
            "other nodes are independent"
        );
        assert_eq!(p.running(), 2);
        // The burst asked for one more round, not a hundred.
        assert!(p.round_done(n(1), one, false));
        assert!(!p.round_done(n(1), one, false));
        assert_eq!(p.running(), 1);
        assert!(
            matches!(p.want(n(1)), Want::Start(id) if id != one),
            "ended: the next gap starts anew"
        );
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
            let id = start(&mut p, n(1));
            let got: Vec<bool> = rounds
                .iter()
                .map(|(progress, gap)| {
                    if *gap {
                        p.want(n(1));
                    }
                    p.round_done(n(1), id, *progress)
                })
                .collect();
            assert_eq!(&got, want, "{rounds:?}");
        }
        let mut p = Pulls::default();
        let id = start(&mut p, n(1));
        let rounds = (0..).take_while(|_| p.round_done(n(1), id, true)).count();
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
        let old = start(&mut p, n(1));
        p.want(n(1));
        p.end(n(1), old);
        assert_eq!(p.running(), 0);
        assert!(
            !p.round_done(n(1), old, true),
            "an ended pull has no rounds left"
        );
        let new = start(&mut p, n(1));
        p.end(n(1), old);
        assert_eq!(
            p.running(),
            1,
            "a late end of an old pull leaves the new one"
        );
        assert!(!p.round_done(n(1), new, false), "nothing more to pull");
        assert_eq!(p.running(), 0);
        p.end(n(9), new);
        let waits: Vec<Duration> = (0..).map_while(retry_after).collect();
        assert_eq!(waits, RETRIES);
        assert!(waits.windows(2).all(|w| w[0] < w[1]), "backs off");
        assert!(waits.iter().sum::<Duration>() < Duration::from_secs(10));
    }
}

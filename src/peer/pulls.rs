//! Index catch-up pulls, one per node at a time: a gap seen while a pull of that node runs makes
//! that pull go again when it ends instead of starting another; failed pulls back off. Pure: no
//! I/O, no clocks.

use std::collections::HashMap;
use std::time::Duration;

use super::wire::NodeId;

/// Failed (or refused: the node is busy serving snapshots) rounds a pull retries before it
/// gives up, unless we are behind the node (see [`retry_after`]).
pub const RETRIES: u32 = 6;

/// The first wait before retrying a failed round; each further one doubles, up to
/// [`MAX_RETRY_WAIT`].
pub const FIRST_RETRY_WAIT: Duration = Duration::from_millis(100);

/// The longest wait between two rounds of a pull that keeps failing.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

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

/// The wait before retry `attempt` (0-based) of a failed pull, or `None` to give up.
///
/// The waits double from [`FIRST_RETRY_WAIT`] up to [`MAX_RETRY_WAIT`], each cut by up to half
/// by `jitter` (0.0..1.0, drawn per retry) so that the many nodes that found one holder busy at
/// the same moment (a partition heals, a node comes back) do not all come back together. After
/// [`RETRIES`] failures the pull gives up unless `behind`: we track no stream of the node or know
/// it has updates we lack ([`Index::behind`](super::index::Index::behind)). Nothing else would
/// ever make us pull them (a quiet node gossips nothing that shows a gap), so such a pull goes on
/// while the node stays a member: one pull per member, one round per [`MAX_RETRY_WAIT`] at most.
pub fn retry_after(attempt: u32, behind: bool, jitter: f64) -> Option<Duration> {
    if attempt >= RETRIES && !behind {
        return None;
    }
    let doubled = FIRST_RETRY_WAIT.saturating_mul(1u32 << attempt.min(16));
    let wait = doubled.min(MAX_RETRY_WAIT);
    Some(wait.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0))
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
    }

    #[test]
    fn failed_pulls_back_off_with_jitter_and_go_on_only_while_we_are_behind() {
        let waits = |behind: bool, jitter: f64| -> Vec<Duration> {
            (0..40)
                .map_while(|a| retry_after(a, behind, jitter))
                .collect()
        };
        let ms = Duration::from_millis;
        // (behind, jitter, the waits)
        let cases: &[(bool, f64, &[Duration])] = &[
            (
                false,
                0.0,
                &[ms(100), ms(200), ms(400), ms(800), ms(1600), ms(3200)],
            ),
            (
                false,
                1.0,
                &[ms(50), ms(100), ms(200), ms(400), ms(800), ms(1600)],
            ),
        ];
        for (behind, jitter, want) in cases {
            assert_eq!(waits(*behind, *jitter), *want, "{behind} {jitter}");
        }
        assert!(waits(false, 0.0).iter().sum::<Duration>() < Duration::from_secs(10));
        // Behind a member: on for ever, capped, never below half the cap once there.
        let on = waits(true, 0.0);
        assert_eq!(on.len(), 40);
        assert_eq!(on[..6], *waits(false, 0.0));
        assert_eq!(on[9..], [MAX_RETRY_WAIT; 31]);
        assert_eq!(
            retry_after(u32::MAX, true, 0.5),
            Some(MAX_RETRY_WAIT * 3 / 4)
        );
        assert!((0..=10).all(|j| {
            let w = retry_after(30, true, f64::from(j) / 10.0).unwrap_or_default();
            w >= MAX_RETRY_WAIT / 2 && w <= MAX_RETRY_WAIT
        }));
    }
}

//! When to compare stream heads with a random member (`GET /peer/v1/heads`): the index's repair
//! of updates that gossip lost and that no later update showed as a gap; pure: no I/O, no
//! clocks (times are durations since the node started).
//!
//! Gossip is the fast path, and a gap in a node's sequence makes us pull what we missed; a node
//! that pulls from us tells us its own head, so we pull back when we lag. What none of these
//! repairs is the last update of a node that falls quiet, lost to us while neither of us
//! declared the other Down: most often an update made while a partition cut us off for not much
//! longer than the suspicion timeout (too short for every node to be declared Down, so no `Up`
//! and no pull follows the heal), or an update all of whose transmissions were lost. A round asks
//! one random member for the head of every stream it has applied; a head past ours makes us pull
//! that node. What one node knows reaches every other in a few rounds, as with any rumour.

use std::time::Duration;

/// Bytes one stream's head takes in a heads reply, at most (a 16-byte node id and two varints).
pub const HEAD_BYTES: u64 = 32;

/// Heads reply bytes per second each node may cost the group on average, in and out: the
/// rounds are spaced so that a group of any size stays within it.
pub const BUDGET: u64 = 1024;

/// The shortest and the longest wait between two rounds (past 9 600 members the budget gives
/// way to the longest).
pub const MIN_EVERY: Duration = Duration::from_secs(10);
pub const MAX_EVERY: Duration = Duration::from_secs(300);

/// The wait between two rounds in a group of `members` other nodes: one reply of `members`
/// heads per [`BUDGET`], between [`MIN_EVERY`] and [`MAX_EVERY`] (10 s up to 320 members, 31 s
/// at 1 000, 156 s at 5 000).
pub fn every(members: usize) -> Duration {
    let bytes = (members as u64 + 1).saturating_mul(HEAD_BYTES);
    Duration::from_secs_f64(bytes as f64 / BUDGET as f64).clamp(MIN_EVERY, MAX_EVERY)
}

/// The schedule of one node's rounds.
#[derive(Debug, Clone, Default)]
pub struct AntiEntropy {
    /// When the last round started (None: none yet; the first comes one period after the start).
    last: Option<Duration>,
}

impl AntiEntropy {
    /// When the next round is due in a group of `members` other nodes.
    pub fn due(&self, members: usize) -> Duration {
        self.last.unwrap_or(Duration::ZERO) + every(members)
    }

    /// Starts a round at `now` if one is due; false if not yet.
    pub fn start(&mut self, now: Duration, members: usize) -> bool {
        if now < self.due(members) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_spaced_to_keep_heads_within_the_budget() {
        let s = Duration::from_secs;
        // (other members, the wait)
        let cases = [
            (0, MIN_EVERY),
            (100, MIN_EVERY),
            (319, MIN_EVERY),
            (999, Duration::from_millis(31_250)),
            (4_999, Duration::from_millis(156_250)),
            (1_000_000, MAX_EVERY),
        ];
        for (members, want) in cases {
            assert_eq!(every(members), want, "{members}");
            let per_s = (members as u64 + 1) * HEAD_BYTES;
            let within = per_s as f64 / every(members).as_secs_f64() <= BUDGET as f64 + 0.5;
            assert!(within || want == MAX_EVERY, "{members}");
        }
        let mut ae = AntiEntropy::default();
        assert_eq!(ae.due(100), s(10));
        assert!(!ae.start(s(9), 100), "not due yet");
        assert!(ae.start(s(10), 100));
        assert!(!ae.start(s(15), 100));
        assert_eq!(ae.due(999), s(10) + every(999), "the group grew: later");
        assert!(ae.start(s(45), 999));
        assert_eq!(ae.due(100), s(55));
    }
}

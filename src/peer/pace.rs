//! The cap on this node's uploads (`peers.upload_rate`): one link that every upload frame
//! reserves before it goes out, so that all uploads together stay under the rate, whoever asks.
//! Pure: no clocks (the time since a fixed start is passed in).

use std::time::Duration;

/// Idle link time that still counts: timer lateness does not slow a lone upload below the
/// cap, and a link idle for longer gives no credit for a burst.
pub const BURST: Duration = Duration::from_millis(10);

/// A link of `rate` bytes per second.
///
/// Invariant: the frames reserved from one moment on start no faster than `rate` allows, after
/// at most [`BURST`] worth of idle time taken back.
#[derive(Debug)]
pub struct Link {
    rate: u64,
    /// When the link is free for the next frame.
    free_at: Duration,
}

impl Link {
    /// A link of `rate` bytes per second (at least 1).
    pub fn new(rate: u64) -> Link {
        Link {
            rate: rate.max(1),
            free_at: Duration::ZERO,
        }
    }

    /// Reserves the link for a frame of `n` bytes at `now`; returns when the frame may go.
    pub fn reserve(&mut self, n: u64, now: Duration) -> Duration {
        let start = self.free_at.max(now.saturating_sub(BURST));
        let nanos = u128::from(n) * 1_000_000_000 / u128::from(self.rate);
        self.free_at = start + Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64);
        start.max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn frames_go_out_at_the_rate_whoever_reserves_them() {
        // 1000 bytes per second: a 100-byte frame takes 100 ms of the link.
        // (name, reservations as (bytes, now), expected start of each)
        type Case = (&'static str, Vec<(u64, Duration)>, Vec<Duration>);
        let cases: Vec<Case> = vec![
            (
                "one upload, frames back to back",
                vec![(100, ms(0)), (100, ms(0)), (100, ms(0))],
                vec![ms(0), ms(100), ms(200)],
            ),
            (
                "two uploads share the link",
                vec![(100, ms(0)), (50, ms(0)), (100, ms(10))],
                vec![ms(0), ms(100), ms(150)],
            ),
            (
                "an idle link gives at most the burst back",
                vec![(100, ms(0)), (100, ms(1000)), (100, ms(1000))],
                vec![ms(0), ms(1000), ms(1090)],
            ),
            (
                "a late timer costs nothing within the burst",
                vec![(100, ms(0)), (100, ms(105)), (100, ms(205))],
                vec![ms(0), ms(105), ms(205)],
            ),
            (
                "an empty frame is free",
                vec![(0, ms(5)), (0, ms(5))],
                vec![ms(5), ms(5)],
            ),
        ];
        for (name, frames, want) in cases {
            let mut link = Link::new(1000);
            let got: Vec<Duration> = frames
                .iter()
                .map(|(n, now)| link.reserve(*n, *now))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_long_run_moves_rate_bytes_per_second() {
        let mut link = Link::new(12 * 1024 * 1024);
        let mut at = Duration::ZERO;
        for _ in 0..12 * 16 {
            at = link.reserve(64 * 1024, at);
        }
        // 192 frames of 64 KiB = 12 MiB, each 5.208333 ms of the link: the last starts one
        // frame short of a second.
        assert_eq!(at, Duration::from_nanos(191 * 5_208_333));
    }
}

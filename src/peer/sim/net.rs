//! The simulated network: one-way latency drawn from a distribution, random loss, partitions,
//! and each node's download link shared first come, first served; pure: a seeded RNG, no clocks.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

/// How the simulated network behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    /// Smallest one-way delay of a packet.
    pub base: Duration,
    /// Mean of the exponential delay added to `base` (queueing, scheduling).
    pub jitter: Duration,
    /// Largest one-way delay (the exponential tail is cut here).
    pub max: Duration,
    /// Chance that a UDP packet is lost (0.0..1.0). TCP transfers are not lost, only slowed.
    pub loss: f64,
    /// Each node's download link, in bytes per second (TCP catch-up transfers share it).
    pub bandwidth: u64,
    /// What one snapshot page costs its server to read from its store.
    pub page_cost: Duration,
}

impl Network {
    /// A switched office LAN: 0.1 ms + ~0.15 ms one way, 1 Gbit/s links.
    pub fn lan() -> Self {
        Network {
            base: Duration::from_micros(100),
            jitter: Duration::from_micros(150),
            max: Duration::from_millis(5),
            loss: 0.0,
            bandwidth: 1_000_000_000 / 8,
            page_cost: Duration::from_millis(5),
        }
    }

    /// Sites over a WAN: 20 ms + ~15 ms one way, 100 Mbit/s links.
    pub fn wan() -> Self {
        Network {
            base: Duration::from_millis(20),
            jitter: Duration::from_millis(15),
            max: Duration::from_millis(200),
            loss: 0.0,
            bandwidth: 100_000_000 / 8,
            page_cost: Duration::from_millis(5),
        }
    }

    /// The same network with `loss` packet loss.
    pub fn with_loss(self, loss: f64) -> Self {
        Network { loss, ..self }
    }

    /// One packet's one-way delay.
    pub(super) fn delay(&self, rng: &mut StdRng) -> Duration {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        let extra = self.jitter.as_secs_f64() * -u.ln();
        (self.base + Duration::from_secs_f64(extra.min(self.max.as_secs_f64()))).min(self.max)
    }

    /// Whether one packet is lost.
    pub(super) fn lost(&self, rng: &mut StdRng) -> bool {
        self.loss > 0.0 && rng.random_bool(self.loss.min(1.0))
    }

    /// Time to push `bytes` through one link.
    pub(super) fn transfer(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.bandwidth.max(1) as f64)
    }
}

/// Which side of a partition each node is on; nodes on different sides cannot talk.
#[derive(Clone, Debug, Default)]
pub(super) struct Sides {
    side: Vec<u8>,
}

impl Sides {
    /// Splits nodes `0..n` by `side_of`.
    pub(super) fn split(n: usize, side_of: impl Fn(usize) -> u8) -> Self {
        Sides {
            side: (0..n).map(side_of).collect(),
        }
    }

    /// Whether `a` and `b` can reach each other (nodes added after the split are on side 0).
    pub(super) fn connected(&self, a: usize, b: usize) -> bool {
        let of = |i: usize| self.side.get(i).copied().unwrap_or(0);
        self.side.is_empty() || of(a) == of(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_stay_within_their_bounds_and_loss_follows_the_rate() {
        let net = Network::lan().with_loss(0.25);
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..10_000).map(|_| net.delay(&mut rng)).collect();
        assert!(delays.iter().all(|d| *d >= net.base && *d <= net.max));
        let mean = delays.iter().sum::<Duration>() / 10_000;
        let want = net.base + net.jitter;
        assert!(mean > want * 9 / 10 && mean < want * 11 / 10, "{mean:?}");
        let lost = (0..10_000).filter(|_| net.lost(&mut rng)).count();
        assert!((2_200..2_800).contains(&lost), "{lost}");
        assert!(!(0..1000).any(|_| Network::lan().lost(&mut rng)));
        assert_eq!(net.transfer(125_000_000), Duration::from_secs(1));
    }

    #[test]
    fn a_partition_separates_its_sides_only() {
        let whole = Sides::default();
        assert!(whole.connected(0, 5));
        let halves = Sides::split(4, |i| (i % 2) as u8);
        assert!(halves.connected(0, 2) && halves.connected(1, 3));
        assert!(!halves.connected(0, 1));
        assert!(halves.connected(9, 0), "a later node is on side 0");
    }
}

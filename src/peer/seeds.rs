//! Seeds given by name (`peers.seeds`): resolved at start, and those that did not resolve tried
//! again, with back-off, for as long as the node knows no member. Owns no socket; it hands the
//! addresses to the membership task (`Membership::join`, like discovered candidates).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Peers;

/// The longest wait between two attempts at resolving the seeds left.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// A name lookup result, as a future.
pub type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// How a seed's `host:port` becomes addresses: DNS by default; tests inject their own.
#[derive(Clone)]
pub struct Resolver(Arc<dyn Fn(String) -> Lookup + Send + Sync>);

impl Resolver {
    /// A resolver from a function.
    pub fn new(f: impl Fn(String) -> Lookup + Send + Sync + 'static) -> Self {
        Resolver(Arc::new(f))
    }

    /// The system resolver (`tokio::net::lookup_host`).
    pub fn dns() -> Self {
        Resolver::new(|seed| {
            Box::pin(async move { Ok(tokio::net::lookup_host(seed).await?.collect()) })
        })
    }

    /// The addresses of `seed`; an empty answer counts as a failure.
    pub async fn resolve(&self, seed: &str) -> io::Result<Vec<SocketAddr>> {
        let addrs = (self.0)(seed.to_owned()).await?;
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
        }
        Ok(addrs)
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::dns()
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver(..)")
    }
}

/// Resolves every seed once: the addresses found, and the seeds that did not resolve (logged).
pub async fn resolve_all(seeds: &[String], resolver: &Resolver) -> (Vec<SocketAddr>, Vec<String>) {
    let mut found = Vec::new();
    let mut left = Vec::new();
    for s in seeds {
        match resolver.resolve(s).await {
            Ok(addrs) => found.extend(addrs),
            Err(e) => {
                tracing::warn!("peers.seeds: cannot resolve {s} (will retry while alone): {e}");
                left.push(s.clone());
            }
        }
    }
    (found, left)
}

/// The wait before attempt `attempt` (0-based) at the seeds left: `first`, doubling, at most
/// [`MAX_RETRY`].
pub fn retry_after(first: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(MAX_RETRY)
}

/// While the node knows no member, tries the seeds `left` again (waits from `first` on, see
/// [`retry_after`]) and gives those that resolve to the membership task; ends when none is left
/// or the node stops.
pub async fn keep_resolving(
    peers: Weak<Peers>,
    mut left: Vec<String>,
    resolver: Resolver,
    first: Duration,
) {
    let Some(mut view) = peers.upgrade().map(|p| p.membership.subscribe()) else {
        return;
    };
    let mut attempt = 0;
    while !left.is_empty() {
        // Parked while we have members (Err: the node stopped).
        if view
            .wait_for(|v| !v.iter().any(|m| m.state.is_active()))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(retry_after(first, attempt)).await;
        attempt = attempt.saturating_add(1);
        let mut found = Vec::new();
        let mut still = Vec::new();
        for s in left {
            match resolver.resolve(&s).await {
                Ok(addrs) => {
                    tracing::info!("peers.seeds: {s} resolved to {addrs:?}");
                    found.extend(addrs);
                }
                Err(e) => {
                    tracing::debug!("peers.seeds: {s} still does not resolve: {e}");
                    still.push(s);
                }
            }
        }
        left = still;
        if !found.is_empty() {
            let Some(p) = peers.upgrade() else { return };
            for addr in found {
                p.membership.join(addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_minute() {
        let first = Duration::from_secs(3);
        let waits: Vec<u64> = (0..8).map(|a| retry_after(first, a).as_secs()).collect();
        assert_eq!(waits, [3, 6, 12, 24, 48, 60, 60, 60]);
        assert_eq!(retry_after(first, u32::MAX), MAX_RETRY);
        assert_eq!(
            retry_after(Duration::from_millis(250), 1),
            Duration::from_millis(500)
        );
    }

    #[tokio::test]
    async fn seeds_that_resolve_and_those_left_for_later() {
        let resolver = Resolver::new(|seed| {
            Box::pin(async move {
                match seed.as_str() {
                    "one:1" => Ok(vec![SocketAddr::from(([10, 0, 0, 1], 1))]),
                    "empty:1" => Ok(vec![]),
                    _ => Err(io::Error::new(io::ErrorKind::NotFound, "nxdomain")),
                }
            })
        });
        let seeds = ["one:1", "empty:1", "gone:1"].map(String::from);
        let (found, left) = resolve_all(&seeds, &resolver).await;
        assert_eq!(found, [SocketAddr::from(([10, 0, 0, 1], 1))]);
        assert_eq!(left, ["empty:1", "gone:1"]);
    }
}

//! Recent addresses of origin hosts by name, so that telling whether a fill goes to a group
//! member's address (a content server) costs no second DNS lookup per fill: each name is looked
//! up at most once per [`HOST_TTL`]; at most [`MAX_HOSTS`] names are kept, all forgotten at once
//! (and counted) when a new one finds them full. Looks names up only; never connects.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::peer::seeds::Resolver;

/// Names remembered at most (a forward proxy sees any number of hosts).
pub const MAX_HOSTS: usize = 1024;
/// How long a name's addresses are used before it is looked up again.
pub const HOST_TTL: Duration = Duration::from_secs(30);

/// (name, port) → its addresses and when they were looked up.
type Known = HashMap<(String, u16), (Arc<[IpAddr]>, Instant)>;

/// The addresses origin names resolved to lately.
pub struct HostAddrs {
    resolver: Resolver,
    known: Mutex<Known>,
    /// Counts each time the memory is full and forgotten whole (`redirect_hosts_forgotten`).
    metrics: Arc<Metrics>,
}

impl HostAddrs {
    /// Resolves with `resolver`.
    pub fn new(resolver: Resolver, metrics: Arc<Metrics>) -> Self {
        HostAddrs {
            resolver,
            known: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The addresses of `host` (a name, or an IP literal with or without brackets) at `port`;
    /// empty when the name does not resolve (not remembered: the next fill tries again).
    pub async fn of(&self, host: &str, port: u16) -> Arc<[IpAddr]> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Arc::from([ip]);
        }
        let name = (bare.to_ascii_lowercase(), port);
        let now = Instant::now();
        if let Some((ips, at)) = self.lock().get(&name) {
            if now.duration_since(*at) < HOST_TTL {
                return ips.clone();
            }
        }
        let Ok(addrs) = self.resolver.resolve(&format!("{}:{port}", name.0)).await else {
            return Arc::from([]);
        };
        let mut ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
        ips.sort();
        ips.dedup();
        let ips: Arc<[IpAddr]> = ips.into();
        let mut known = self.lock();
        if known.len() >= MAX_HOSTS && !known.contains_key(&name) {
            known.retain(|_, (_, at)| now.duration_since(*at) < HOST_TTL);
            if known.len() >= MAX_HOSTS {
                known.clear();
                Metrics::inc(&self.metrics.redirect_hosts_forgotten);
            }
        }
        known.insert(name, (ips.clone(), now));
        ips
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// A resolver that knows `*.test` names (each at 10.0.0.1 and 10.0.0.2) and counts lookups.
    fn counting() -> (Resolver, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let resolver = Resolver::new(move |name| {
            counter.fetch_add(1, Relaxed);
            Box::pin(async move {
                let (host, port) = name.rsplit_once(':').unwrap_or((&name, "0"));
                let port: u16 = port.parse().unwrap_or(0);
                if host.ends_with(".test") {
                    Ok(vec![
                        SocketAddr::from(([10, 0, 0, 2], port)),
                        SocketAddr::from(([10, 0, 0, 1], port)),
                        SocketAddr::from(([10, 0, 0, 2], port)),
                    ])
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "nxdomain",
                    ))
                }
            })
        });
        (resolver, asked)
    }

    #[tokio::test(start_paused = true)]
    async fn names_are_looked_up_once_per_ttl_and_literals_never() {
        let (resolver, asked) = counting();
        let metrics = Arc::new(Metrics::default());
        let hosts = HostAddrs::new(resolver, metrics.clone());
        let both: [IpAddr; 2] = [[10, 0, 0, 1].into(), [10, 0, 0, 2].into()];
        assert_eq!(&*hosts.of("mirror.test", 3128).await, both);
        assert_eq!(&*hosts.of("MIRROR.test", 3128).await, both);
        assert_eq!(asked.load(Relaxed), 1, "the second ask is remembered");
        assert_eq!(
            &*hosts.of("127.0.0.4", 80).await,
            [IpAddr::from([127, 0, 0, 4])]
        );
        let v6 = IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
        assert_eq!(&*hosts.of("[::1]", 80).await, [v6]);
        assert!(hosts.of("gone.example", 80).await.is_empty());
        assert!(hosts.of("gone.example", 80).await.is_empty());
        assert_eq!(
            asked.load(Relaxed),
            3,
            "literals are not looked up, failures not remembered"
        );
        tokio::time::advance(HOST_TTL).await;
        hosts.of("mirror.test", 3128).await;
        assert_eq!(asked.load(Relaxed), 4, "looked up again after its time");
        assert_eq!(Metrics::get(&metrics.redirect_hosts_forgotten), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_memory_is_bounded_and_cleared_when_full() {
        let (resolver, asked) = counting();
        let metrics = Arc::new(Metrics::default());
        let hosts = HostAddrs::new(resolver, metrics.clone());
        let forgotten = || Metrics::get(&metrics.redirect_hosts_forgotten);
        for i in 0..MAX_HOSTS {
            hosts.of(&format!("h{i}.test"), 80).await;
        }
        assert_eq!(hosts.lock().len(), MAX_HOSTS);
        // Expired names make room first.
        tokio::time::advance(HOST_TTL).await;
        hosts.of("late.test", 80).await;
        assert_eq!((hosts.lock().len(), forgotten()), (1, 0));
        // Full of live names: all are forgotten, and counted.
        for i in 0..MAX_HOSTS - 1 {
            hosts.of(&format!("g{i}.test"), 80).await;
        }
        hosts.of("one-more.test", 80).await;
        assert_eq!((hosts.lock().len(), forgotten()), (1, 1));
        assert_eq!(asked.load(Relaxed), 2 * MAX_HOSTS + 1);
    }
}

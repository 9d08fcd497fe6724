//! Zero-config discovery on the LAN (`peers.discover = "mdns"`): announces this node as a
//! DNS-SD service `_peercache._udp.local.` over multicast DNS and browses for the others. It only
//! finds candidates ([`candidates`], pure) and hands their addresses to membership, which lets in
//! only nodes holding the cluster key. [`Mdns`] owns the mdns-sd daemon and the task that feeds
//! membership.

pub mod candidates;

use std::net::SocketAddr;
use std::sync::Arc;

use mdns_sd::{DaemonEvent, IfKind, IfPredicate, ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::peer::membership::Membership;
use crate::peer::wire::NodeId;

pub use self::candidates::{
    on_seen, txt_records, Candidates, DiscoveryStats, Seen, MAX_CANDIDATES,
};

/// The DNS-SD service type every node announces and browses.
pub const SERVICE_TYPE: &str = "_peercache._udp.local.";
/// The multicast DNS port (RFC 6762).
pub const MDNS_PORT: u16 = 5353;

/// The mdns-sd event as a [`Seen`]; `None` for the events discovery has no use for.
fn seen(event: ServiceEvent) -> Option<Seen> {
    match event {
        ServiceEvent::ServiceResolved(r) => Some(Seen::Resolved {
            txt: r
                .txt_properties
                .iter()
                .map(|p| (p.key().to_owned(), p.val_str().to_owned()))
                .collect(),
            addrs: r.addresses.iter().map(|a| a.to_ip_addr()).collect(),
            port: r.port,
        }),
        ServiceEvent::ServiceRemoved(_, fullname) => Some(Seen::Removed {
            instance: fullname.split('.').next().unwrap_or_default().to_owned(),
        }),
        _ => None,
    }
}

/// What [`Mdns::start`] needs.
#[derive(Debug, Clone)]
pub struct MdnsConfig {
    pub id: NodeId,
    pub site: String,
    /// Our peer address: announced, and its interface is the one used (a loopback address
    /// selects the loopback interface).
    pub advertise: SocketAddr,
    pub fingerprint: String,
    /// [`MDNS_PORT`] except in tests.
    pub port: u16,
}

/// The running discovery: the mdns-sd daemon (its own thread) and the task that feeds
/// membership. Dropping it withdraws our service and stops both.
pub struct Mdns {
    daemon: ServiceDaemon,
    fullname: String,
    task: tokio::task::JoinHandle<()>,
    pub stats: Arc<DiscoveryStats>,
}

impl Mdns {
    /// Starts announcing and browsing on the interface of `cfg.advertise`.
    pub fn start(cfg: MdnsConfig, membership: Membership) -> Result<Mdns, String> {
        let daemon = ServiceDaemon::new_with_port(cfg.port).map_err(|e| e.to_string())?;
        let ip = cfg.advertise.ip();
        let on_our_lan = IfPredicate::new(move |intf| {
            intf.ip() == ip
                || (ip.is_loopback() && intf.is_loopback() && intf.ip().is_ipv4() == ip.is_ipv4())
        });
        let setup = daemon
            .disable_interface(IfKind::All)
            .and_then(|()| daemon.enable_interface(IfKind::Predicate(on_our_lan)));
        if let Err(e) = setup {
            let _ = daemon.shutdown();
            return Err(e.to_string());
        }
        let instance = cfg.id.to_string();
        let host = format!("{instance}.local.");
        let txt = txt_records(cfg.id, &cfg.site, &cfg.fingerprint);
        let props: Vec<(&str, &str)> = txt.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &host,
            ip,
            cfg.advertise.port(),
            &props[..],
        )
        .map_err(|e| e.to_string())?;
        let fullname = info.get_fullname().to_owned();
        let browse = daemon
            .register(info)
            .and_then(|()| daemon.browse(SERVICE_TYPE));
        let events = match browse {
            Ok(events) => events,
            Err(e) => {
                let _ = daemon.shutdown();
                return Err(e.to_string());
            }
        };
        // The daemon's own trouble (a multicast group it cannot join, a socket error) is only
        // told on its monitor channel: log it.
        let monitor = daemon.monitor().ok();
        let stats = Arc::new(DiscoveryStats::default());
        let counted = stats.clone();
        let task = tokio::spawn(async move {
            let mut candidates = Candidates::new(cfg.id, MAX_CANDIDATES);
            loop {
                let problem = async {
                    match &monitor {
                        Some(m) => m.recv_async().await.ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    event = events.recv_async() => {
                        let Ok(event) = event else { return };
                        if let Some(s) = seen(event) {
                            on_seen(&s, &cfg.fingerprint, &mut candidates, &counted, |addr| {
                                membership.join(addr)
                            });
                        }
                    }
                    Some(event) = problem => {
                        if let DaemonEvent::Error(e) = event {
                            tracing::warn!("mDNS discovery: {e}");
                        }
                    }
                }
            }
        });
        tracing::info!(service = %fullname, "announcing and browsing with mDNS");
        Ok(Mdns {
            daemon,
            fullname,
            task,
            stats,
        })
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        // Sends goodbye packets, so the others forget us at once.
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
        self.task.abort();
    }
}

//! The rules of LAN discovery: the TXT records a node announces, which announcements make a
//! candidate (not ourselves, not another group, readable), and the bound on candidates. Pure;
//! no sockets, no mDNS.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::config::MAX_SITE_LEN;
use crate::peer::wire::NodeId;

/// Most distinct nodes remembered as candidates; others are ignored (and counted) until one
/// of them goes away.
pub const MAX_CANDIDATES: usize = 64;
/// The TXT record format this node writes and reads.
const TXT_VERSION: &str = "1";

/// The TXT records of this node's service: format version, node id, site, and the cluster
/// key's fingerprint (a derived hash, not key material) so that other groups on the same LAN
/// are not even tried.
pub fn txt_records(id: NodeId, site: &str, fingerprint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("v", TXT_VERSION.to_owned()),
        ("id", id.to_string()),
        ("site", site.to_owned()),
        ("key", fingerprint.to_owned()),
    ]
}

/// A node found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: NodeId,
    pub site: String,
    /// Its peer address (gossip and transfer).
    pub addr: SocketAddr,
}

/// Why an announcement is not handed to membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// A TXT record is missing or wrong, or there is no usable address.
    Malformed(&'static str),
    /// Our own announcement.
    Ourselves,
    /// A node of another group (another cluster key).
    OtherGroup,
    /// Already handed over at this address.
    Known,
    /// [`MAX_CANDIDATES`] other nodes are remembered already.
    Full,
}

/// Reads one resolved service: its TXT records (through `txt`), addresses and port. Prefers an
/// IPv4 address (the others are tried by nobody: one address per node is enough), the lowest
/// for a stable choice.
pub fn parse<'a>(
    txt: impl Fn(&str) -> Option<&'a str>,
    addrs: &[IpAddr],
    port: u16,
    fingerprint: &str,
) -> Result<Found, Ignored> {
    if txt("v") != Some(TXT_VERSION) {
        return Err(Ignored::Malformed("TXT v is not 1"));
    }
    let id = txt("id")
        .and_then(|s| s.parse::<NodeId>().ok())
        .ok_or(Ignored::Malformed("TXT id is not a node id"))?;
    if txt("key") != Some(fingerprint) {
        return Err(Ignored::OtherGroup);
    }
    let site = txt("site")
        .filter(|s| !s.is_empty() && s.len() <= MAX_SITE_LEN)
        .ok_or(Ignored::Malformed("TXT site is missing or too long"))?;
    if port == 0 {
        return Err(Ignored::Malformed("port 0"));
    }
    let ip = addrs
        .iter()
        .filter(|ip| !ip.is_unspecified() && !ip.is_multicast())
        .min_by_key(|ip| (ip.is_ipv6(), **ip))
        .ok_or(Ignored::Malformed("no address"))?;
    Ok(Found {
        id,
        site: site.to_owned(),
        addr: SocketAddr::new(*ip, port),
    })
}

/// The nodes handed to membership so far, by id; at most [`MAX_CANDIDATES`].
#[derive(Debug)]
pub struct Candidates {
    me: NodeId,
    known: HashMap<NodeId, SocketAddr>,
    cap: usize,
}

impl Candidates {
    pub fn new(me: NodeId, cap: usize) -> Self {
        Candidates {
            me,
            known: HashMap::new(),
            cap,
        }
    }

    /// The address to hand to membership, or why not: ourselves, a node already handed over
    /// at this address, or a new node when the set is full. A known node at a new address is
    /// handed over again.
    pub fn offer(&mut self, found: &Found) -> Result<SocketAddr, Ignored> {
        if found.id == self.me {
            return Err(Ignored::Ourselves);
        }
        match self.known.get(&found.id) {
            Some(addr) if *addr == found.addr => return Err(Ignored::Known),
            None if self.known.len() >= self.cap => return Err(Ignored::Full),
            _ => {}
        }
        self.known.insert(found.id, found.addr);
        Ok(found.addr)
    }

    /// The node withdrew its service (it stopped): when it comes back, it is a candidate again.
    pub fn forget(&mut self, id: NodeId) {
        self.known.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// What discovery did, for the status page.
#[derive(Debug, Default)]
pub struct DiscoveryStats {
    /// Candidates handed to membership.
    pub handed: AtomicU64,
    /// Announcements of other groups.
    pub other_group: AtomicU64,
    /// Announcements that could not be read.
    pub malformed: AtomicU64,
    /// New nodes ignored because [`MAX_CANDIDATES`] were remembered.
    pub full: AtomicU64,
}

impl DiscoveryStats {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "handed_to_membership": self.handed.load(Relaxed),
            "other_group": self.other_group.load(Relaxed),
            "malformed": self.malformed.load(Relaxed),
            "ignored_full": self.full.load(Relaxed),
        })
    }
}

/// One browse result, as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Resolved {
        txt: HashMap<String, String>,
        addrs: Vec<IpAddr>,
        port: u16,
    },
    /// A service went away; `instance` is the first label of its name (our node ids).
    Removed { instance: String },
}

/// Applies one browse result: a usable new candidate goes to `join`; everything is counted.
pub fn on_seen(
    seen: &Seen,
    fingerprint: &str,
    candidates: &mut Candidates,
    stats: &DiscoveryStats,
    mut join: impl FnMut(SocketAddr),
) {
    match seen {
        Seen::Resolved { txt, addrs, port } => {
            let found = parse(
                |k| txt.get(k).map(String::as_str),
                addrs,
                *port,
                fingerprint,
            );
            match found.and_then(|f| candidates.offer(&f).map(|addr| (f, addr))) {
                Ok((f, addr)) => {
                    tracing::info!(node = %f.id, %addr, site = %f.site, "discovered a peer (mDNS)");
                    stats.handed.fetch_add(1, Relaxed);
                    join(addr);
                }
                Err(Ignored::OtherGroup) => {
                    stats.other_group.fetch_add(1, Relaxed);
                }
                Err(Ignored::Malformed(why)) => {
                    tracing::debug!(why, "unreadable peercache mDNS announcement");
                    stats.malformed.fetch_add(1, Relaxed);
                }
                Err(Ignored::Full) => {
                    stats.full.fetch_add(1, Relaxed);
                }
                Err(Ignored::Ourselves | Ignored::Known) => {}
            }
        }
        Seen::Removed { instance } => {
            if let Ok(id) = instance.parse::<NodeId>() {
                candidates.forget(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a1b2c3d4";

    fn id(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    fn txt(node: NodeId, key: &str) -> HashMap<String, String> {
        txt_records(node, "lab", key)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn announcements_table() {
        let good = txt(id(2), KEY);
        let without = |k: &str| {
            let mut t = good.clone();
            t.remove(k);
            t
        };
        let with = |k: &str, v: &str| {
            let mut t = good.clone();
            t.insert(k.to_owned(), v.to_owned());
            t
        };
        let v4 = vec![ip("fd00::2"), ip("192.168.1.20"), ip("10.0.0.2")];
        type Case = (
            HashMap<String, String>,
            Vec<IpAddr>,
            u16,
            Result<&'static str, Ignored>,
        );
        let cases: Vec<Case> = vec![
            (good.clone(), v4.clone(), 3129, Ok("10.0.0.2:3129")),
            (
                good.clone(),
                vec![ip("fd00::2")],
                3129,
                Ok("[fd00::2]:3129"),
            ),
            (
                txt(id(2), "ffffffff"),
                v4.clone(),
                3129,
                Err(Ignored::OtherGroup),
            ),
            (
                without("v"),
                v4.clone(),
                3129,
                Err(Ignored::Malformed("TXT v is not 1")),
            ),
            (
                with("v", "2"),
                v4.clone(),
                3129,
                Err(Ignored::Malformed("TXT v is not 1")),
            ),
            (
                with("id", "nope"),
                v4.clone(),
                3129,
                Err(Ignored::Malformed("TXT id is not a node id")),
            ),
            (
                without("site"),
                v4.clone(),
                3129,
                Err(Ignored::Malformed("TXT site is missing or too long")),
            ),
            (
                with("site", &"s".repeat(65)),
                v4.clone(),
                3129,
                Err(Ignored::Malformed("TXT site is missing or too long")),
            ),
            (
                good.clone(),
                vec![],
                3129,
                Err(Ignored::Malformed("no address")),
            ),
            (
                good.clone(),
                vec![ip("0.0.0.0"), ip("224.0.0.251")],
                3129,
                Err(Ignored::Malformed("no address")),
            ),
            (
                good.clone(),
                v4.clone(),
                0,
                Err(Ignored::Malformed("port 0")),
            ),
        ];
        for (t, addrs, port, want) in cases {
            let got = parse(|k| t.get(k).map(String::as_str), &addrs, port, KEY);
            let got = got.map(|f| {
                assert_eq!((f.id, f.site.as_str()), (id(2), "lab"));
                f.addr.to_string()
            });
            assert_eq!(got, want.map(str::to_owned), "{t:?} {addrs:?} {port}");
        }
    }

    #[test]
    fn candidates_skip_ourselves_and_known_nodes_and_are_bounded() {
        let mut c = Candidates::new(id(1), 2);
        let found = |n: u8, addr: &str| Found {
            id: id(n),
            site: "lab".into(),
            addr: addr.parse().unwrap(),
        };
        let a = "10.0.0.2:3129".parse().unwrap();
        assert_eq!(c.offer(&found(1, "10.0.0.1:3129")), Err(Ignored::Ourselves));
        assert_eq!(c.offer(&found(2, "10.0.0.2:3129")), Ok(a));
        assert_eq!(c.offer(&found(2, "10.0.0.2:3129")), Err(Ignored::Known));
        let moved = "10.0.0.9:3129".parse().unwrap();
        assert_eq!(
            c.offer(&found(2, "10.0.0.9:3129")),
            Ok(moved),
            "a new address"
        );
        assert!(c.offer(&found(3, "10.0.0.3:3129")).is_ok());
        assert_eq!(c.offer(&found(4, "10.0.0.4:3129")), Err(Ignored::Full));
        assert_eq!(c.len(), 2);
        c.forget(id(3));
        assert!(c.offer(&found(4, "10.0.0.4:3129")).is_ok(), "room again");
        c.forget(id(2));
        assert!(
            c.offer(&found(2, "10.0.0.9:3129")).is_ok(),
            "back after a goodbye"
        );
    }

    #[test]
    fn browse_results_feed_membership_once_per_node_and_are_counted() {
        let mut c = Candidates::new(id(1), MAX_CANDIDATES);
        let stats = DiscoveryStats::default();
        let resolved = |node: NodeId, key: &str, a: &str| Seen::Resolved {
            txt: txt(node, key),
            addrs: vec![ip(a)],
            port: 3129,
        };
        let events = [
            resolved(id(1), KEY, "10.0.0.1"),
            resolved(id(2), KEY, "10.0.0.2"),
            resolved(id(2), KEY, "10.0.0.2"),
            resolved(id(3), "00000000", "10.0.0.3"),
            Seen::Resolved {
                txt: HashMap::new(),
                addrs: vec![ip("10.0.0.4")],
                port: 3129,
            },
            Seen::Removed {
                instance: id(2).to_string(),
            },
            Seen::Removed {
                instance: "printer".into(),
            },
            resolved(id(2), KEY, "10.0.0.2"),
        ];
        let mut joined = Vec::new();
        for e in &events {
            on_seen(e, KEY, &mut c, &stats, |addr| joined.push(addr.to_string()));
        }
        assert_eq!(
            joined,
            ["10.0.0.2:3129", "10.0.0.2:3129"],
            "again after its goodbye"
        );
        let s = stats.to_json();
        assert_eq!(
            (
                &s["handed_to_membership"],
                &s["other_group"],
                &s["malformed"]
            ),
            (&2.into(), &1.into(), &1.into())
        );
    }
}

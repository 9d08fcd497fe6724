//! The foca `Identity` of a peercache node (id, advertised address, site, restart bump); pure, no I/O.
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::peer::wire::NodeId;

/// Longest accepted `site` label, in bytes: identities travel in every gossip packet header, so
/// their size bounds the room left for broadcasts. The config refuses longer labels.
pub use crate::config::MAX_SITE_LEN;

/// How one peercache process appears in the SWIM group.
///
/// foca's unique address is `addr` (the advertised UDP/TCP address, which only one process can
/// hold). When two identities share it, the larger `bump` wins, so a node restarted at the same
/// address — whatever its id — replaces its previous incarnation at once, even while the others
/// still remember it as Down.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    /// The node's id (stable across restarts when the operator keeps it).
    pub id: NodeId,
    /// Where the others reach this node: gossip over UDP and the transfer API over TCP.
    pub addr: SocketAddr,
    /// Site label, preferred by peer selection. Shared, not copied: foca clones identities
    /// for every member it picks (a probe, a gossip round, each member of a feed).
    pub site: Arc<str>,
    /// Orders identities at the same address: `(start time in ms) << 16 | random 16 bits`,
    /// plus one per automatic rejoin.
    pub bump: u64,
}

impl PeerIdentity {
    /// The identity of a process started at `now_unix_ms`; `random` breaks ties between two
    /// starts in the same millisecond.
    pub fn new(
        id: NodeId,
        addr: SocketAddr,
        site: Arc<str>,
        now_unix_ms: u64,
        random: u16,
    ) -> Self {
        PeerIdentity {
            id,
            addr,
            site,
            bump: initial_bump(now_unix_ms, random),
        }
    }

    /// A placeholder for a seed known only by address. foca accepts an `Announce` whose
    /// destination has the receiver's address, whatever the other fields say.
    pub fn seed(addr: SocketAddr) -> Self {
        PeerIdentity {
            id: NodeId([0; 16]),
            addr,
            site: Arc::from(""),
            bump: 0,
        }
    }
}

/// A start-time-ordered bump: a later start wins the address conflict against an earlier one as
/// long as the wall clock did not step back by more than the restart took. A purely random bump
/// would lose half the time against the identity it replaces and leave the node outside the
/// group until the others forget the old one.
pub fn initial_bump(now_unix_ms: u64, random: u16) -> u64 {
    (now_unix_ms << 16) | u64::from(random)
}

impl foca::Identity for PeerIdentity {
    type Addr = SocketAddr;

    /// Called by foca when the group declared us Down: rejoin at once with a winning identity.
    fn renew(&self) -> Option<Self> {
        Some(PeerIdentity {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}[{}]#{:x}",
            self.id, self.addr, self.site, self.bump
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{Codec, Header, Identity, Message, PostcardCodec};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn a_later_start_wins_the_address_conflict() {
        let a = addr("10.0.0.1:3129");
        let id = NodeId([1; 16]);
        let first = PeerIdentity::new(id, a, "x".into(), 1_700_000_000_000, u16::MAX);
        let restarted = PeerIdentity::new(id, a, "x".into(), 1_700_000_000_001, 0);
        assert!(restarted.win_addr_conflict(&first));
        assert!(!first.win_addr_conflict(&restarted));
        // A different id restarted at the same address replaces it too.
        let other = PeerIdentity::new(NodeId([2; 16]), a, "x".into(), 1_700_000_000_002, 0);
        assert!(other.win_addr_conflict(&restarted));
    }

    #[test]
    fn renewed_identity_wins_and_keeps_id_and_address() {
        let me = PeerIdentity::new(NodeId([1; 16]), addr("10.0.0.1:1"), "s".into(), 5, 9);
        let renewed = me.renew().expect("renewable");
        assert!(renewed.win_addr_conflict(&me));
        assert_eq!(
            (renewed.id, renewed.addr(), &renewed.site),
            (me.id, me.addr, &me.site)
        );
        assert_ne!(renewed, me);
    }

    #[test]
    fn seed_placeholder_has_only_the_address() {
        let s = PeerIdentity::seed(addr("10.0.0.9:3129"));
        assert_eq!(s.addr(), addr("10.0.0.9:3129"));
        assert_eq!(s.bump, 0);
    }

    /// The largest header (two IPv6 identities with the longest site and bump) leaves room for a
    /// `MAX_BROADCAST_LEN` payload in one 1400-byte foca packet.
    #[test]
    fn largest_header_leaves_room_for_a_broadcast() {
        let big = PeerIdentity {
            id: NodeId([0xff; 16]),
            addr: addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
            site: "s".repeat(MAX_SITE_LEN).into(),
            bump: u64::MAX,
        };
        let header = Header {
            src: big.clone(),
            src_incarnation: u16::MAX,
            dst: big,
            message: Message::Broadcast,
        };
        let mut buf = Vec::new();
        PostcardCodec
            .encode_header(&header, &mut buf)
            .expect("encode");
        let room = 1400 - buf.len() - 2; // foca's u16 length prefix per broadcast
        assert!(
            room >= crate::peer::membership::MAX_BROADCAST_LEN,
            "header {} bytes, room {room}",
            buf.len()
        );
    }
}

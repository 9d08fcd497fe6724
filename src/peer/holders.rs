//! Who in the group can stand in for a content server, and who a redirect names: the live
//! members that hold a body under any key (best first for the member asking), the members at
//! an address, the member at a transfer address. Reads the index, the member view and the
//! penalties; no I/O.

use std::net::{IpAddr, SocketAddr};

use super::index::body_id;
use super::redirect::{MAX_HOLDERS, MAX_PROOFS};
use super::select::{self, Candidate};
use super::wire::NodeId;
use super::{lock, now_ms, Peers, Source};

impl Peers {
    /// Live members other than `asker` holding the complete body `hash` of `len` bytes under
    /// any key, best first for `asker` (its own site first, then as [`select::rank`] orders, our
    /// penalties leaving out those that failed lately), at most [`MAX_HOLDERS`]. Empty unless
    /// this node keeps body holders (a content server).
    pub fn body_sources(&self, hash: &blake3::Hash, len: u64, asker: NodeId) -> Vec<Source> {
        let body = body_id(hash.as_bytes());
        let holders = lock(&self.index).body_holders(&body, len);
        let asker_site = self.membership.member(asker).map(|m| m.site);
        let mut cands = Vec::new();
        let mut found = Vec::new();
        for node in holders.into_iter().filter(|n| *n != asker) {
            let Some(m) = self.membership.member(node).filter(|m| m.state.is_active()) else {
                continue;
            };
            cands.push(Candidate {
                node,
                same_site: asker_site.as_deref() == Some(m.site.as_str()),
                complete: true,
                fresh: true,
                // Our RTT to it says nothing of the asker's.
                rtt: None,
                uploads: self.client.reported_uploads(node).unwrap_or(0),
            });
            found.push(Source {
                node,
                addr: m.addr,
                same_site: m.site == self.site,
                complete: Some((body, len)),
            });
        }
        let order = select::rank(cands, &lock(&self.penalties), now_ms());
        order
            .into_iter()
            .filter_map(|n| found.iter().find(|s| s.node == n).cloned())
            .take(MAX_HOLDERS)
            .collect()
    }

    /// Live members whose advertised address is one of `ips`, in node-id order, at most
    /// [`MAX_PROOFS`]: who a request to those addresses may be reaching.
    pub fn members_at(&self, ips: &[IpAddr]) -> Vec<NodeId> {
        let view = self.membership.subscribe();
        let mut out: Vec<NodeId> = (view.borrow().iter())
            .filter(|m| m.state.is_active() && ips.contains(&m.addr.ip()))
            .map(|m| m.id)
            .collect();
        out.sort();
        out.truncate(MAX_PROOFS);
        out
    }

    /// The live member whose transfer address is `addr`, as a source of the complete body
    /// `hash` of `len` bytes; `None` for an address no member has, ourselves, or a member our
    /// penalties leave out for now.
    pub fn source_at(&self, addr: SocketAddr, hash: &blake3::Hash, len: u64) -> Option<Source> {
        let view = self.membership.subscribe();
        let (node, same_site) = (view.borrow().iter())
            .find(|m| m.addr == addr && m.state.is_active())
            .map(|m| (m.id, m.site == self.site))?;
        if lock(&self.penalties).is_penalised(node, now_ms()) {
            return None;
        }
        Some(Source {
            node,
            addr,
            same_site,
            complete: Some((body_id(hash.as_bytes()), len)),
        })
    }

    /// Is `node` a live member of the group?
    pub fn is_member(&self, node: NodeId) -> bool {
        self.addr_of(node).is_some()
    }
}

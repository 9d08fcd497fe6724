//! The claim step of a miss the group may serve (the two-site rule of `peer::sites`): copy at
//! once from a holder on our site; else claim the key and wait for competing claims — the whole
//! group's on a cold object, our site mates' when only other sites hold it — then keep the
//! holders we may follow. Never transfers a body.

use std::sync::Arc;

use crate::cache::inflight::FillPermit;
use crate::peer::sites::{self, Before, Seen};
use crate::peer::wire::{KeyHash, NodeId};
use crate::peer::{Peers, Source};

use super::Fetcher;

impl Fetcher {
    /// The holders of `key` to try, best first, after claiming it when the rule says so (the
    /// permit holds the claim: it is withdrawn when the fill ends, or at once if this request is
    /// cancelled meanwhile). Empty: go to the origin.
    pub(super) async fn claimed_sources(
        &self,
        peers: &Arc<Peers>,
        permit: &mut FillPermit,
        key: &str,
        kh: &KeyHash,
    ) -> Vec<Source> {
        let mut sources = peers.sources(kh, None);
        let mut vouched = Vec::new();
        if let Before::Remote { probe: Some(node) } = sites::before_claim(&seen(&sources)) {
            if let Some(src) = sources.iter().find(|s| s.node == node) {
                if has_head(peers, src, kh).await {
                    vouched.push(node);
                }
            }
            // A site mate may have claimed it while we waited.
            sources = peers.sources(kh, None);
        }
        let window = match sites::before_claim(&seen(&sources)) {
            Before::Copy => return sources,
            Before::Cold => peers.cold_claim_window(),
            // Only site mates' claims matter now: they arrive within the LAN window.
            Before::Remote { .. } => peers.claim_window,
        };
        permit.hold(peers.claim(key));
        tokio::time::sleep(window).await;
        let me = peers.id;
        let mut sources = peers.sources(kh, None);
        sources.retain(|s| sites::may_follow(&seen_one(s), me, &vouched));
        sources
    }
}

fn seen_one(s: &Source) -> Seen {
    Seen {
        node: s.node,
        same_site: s.same_site,
        complete: s.complete.is_some(),
    }
}

fn seen(sources: &[Source]) -> Vec<Seen> {
    sources.iter().map(seen_one).collect()
}

/// Whether `src` answers with a response head for `kh` (a stored copy, or a fill whose source
/// answered): then it has chosen its own source, and following it cannot close a cycle.
async fn has_head(peers: &Arc<Peers>, src: &Source, kh: &KeyHash) -> bool {
    let node: NodeId = src.node;
    match peers.client.entries(node, src.addr, kh).await {
        Ok(reply) => reply.in_flight.is_some() || !reply.complete.is_empty(),
        Err(e) => {
            tracing::info!(%node, "remote holder did not answer with a head: {e}");
            peers.failed(node, &e);
            false
        }
    }
}

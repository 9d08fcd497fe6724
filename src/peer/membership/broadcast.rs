//! foca's custom-broadcast handler (deliver each index update once) and the rule that bounds
//! the broadcast backlog; no I/O (it hands payloads to the task over a bounded queue).

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use foca::{BroadcastHandler, Invalidates};
use tokio::sync::mpsc;

use crate::peer::identity::PeerIdentity;

use super::Counters;

/// How many broadcast hashes are remembered for deduplication (32 bytes each, plus the set).
const SEEN_CAPACITY: usize = 16_384;

/// Dedupe key of a custom broadcast: blake3 of its bytes.
pub(super) struct PayloadHash([u8; 32]);

impl Invalidates for PayloadHash {
    fn invalidates(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// foca's broadcast handler: relays each payload once and hands new ones from the network to the
/// task (which forwards them as `Event::Broadcast` after the member events of the same packet).
pub(super) struct Dedupe {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    delivered: mpsc::Sender<Vec<u8>>,
    counters: Arc<Counters>,
}

impl Dedupe {
    pub(super) fn new(delivered: mpsc::Sender<Vec<u8>>, counters: Arc<Counters>) -> Self {
        Dedupe {
            seen: HashSet::new(),
            order: VecDeque::new(),
            delivered,
            counters,
        }
    }
}

impl BroadcastHandler<PeerIdentity> for Dedupe {
    type Key = PayloadHash;
    type Error = Infallible;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&PeerIdentity>,
    ) -> Result<Option<PayloadHash>, Infallible> {
        let hash = *blake3::hash(data).as_bytes();
        if !self.seen.insert(hash) {
            return Ok(None);
        }
        self.order.push_back(hash);
        if self.order.len() > SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        // `None` is our own `add_broadcast`: remembered so it is never delivered back to us.
        if sender.is_some() {
            if let Err(mpsc::error::TrySendError::Full(_)) = self.delivered.try_send(data.to_vec())
            {
                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Some(PayloadHash(hash)))
    }
}

/// Most broadcasts waiting in foca's queue. foca keeps each one until it has been sent
/// `max_transmissions` times, so updates produced faster than gossip carries them would pile up
/// without bound; beyond this many, new ones are held back (only the latest is kept).
pub(super) const MAX_BACKLOG: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    Queue,
    Alone,
    HoldBack,
}

/// Whether a new broadcast enters foca's queue. Dropping an index update loses nothing for
/// good: each carries its sequence number, so a member that receives a later one sees the gap
/// and pulls the journal; the held-back latest one is queued when the queue drains, so the
/// last update of a burst is not lost either.
pub(super) fn admit(members: usize, backlog: usize) -> Admit {
    if members == 0 {
        Admit::Alone
    } else if backlog >= MAX_BACKLOG {
        Admit::HoldBack
    } else {
        Admit::Queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_are_queued_only_with_members_and_room() {
        assert_eq!(admit(0, 0), Admit::Alone);
        assert_eq!(admit(3, 0), Admit::Queue);
        assert_eq!(admit(3, MAX_BACKLOG - 1), Admit::Queue);
        assert_eq!(admit(3, MAX_BACKLOG), Admit::HoldBack);
    }
}

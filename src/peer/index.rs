//! The group's index as one node sees it (key → holders of other nodes) and its merge of
//! tagged updates and catch-up replies; pure: no I/O, no clocks, never panics on what peers send.
//! This node's own outgoing updates are the journal's (`peer::journal`).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::wire::{IndexReply, KeyHash, NodeId, Tagged, Update};

/// Out-of-order updates kept per node while waiting for the missing ones. Past this, further
/// out-of-order updates are not kept (the pull that fills the gap brings them again); counted.
pub const MAX_BUFFERED_PER_NODE: usize = 10_000;

/// Other nodes whose streams the index tracks at most. Updates from a node beyond this are
/// refused and counted (a node applies only members' updates, so this is a backstop).
pub const MAX_NODES: usize = 16_384;

/// What one node holds for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HolderState {
    /// A complete, shareable response whose body has blake3 `hash`; `fresh_until` in unix secs.
    Complete {
        hash: [u8; 32],
        len: u64,
        fresh_until: u64,
    },
    /// Being downloaded right now; may be streamed while it fills.
    InFlight,
}

/// A node that holds (or is fetching) a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub node: NodeId,
    pub state: HolderState,
}

/// The outcome of [`Index::apply`].
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied (n = how many updates took effect, buffered ones included).
    Applied(usize),
    /// Already applied or older than what we have (or our own): ignored.
    Duplicate,
    /// Out of order: buffered; pull `GET /peer/v1/index?since={since}` from `node`.
    ///
    /// Returned for every update that lands beyond the gap, so callers coalesce pulls per node.
    Gap {
        node: NodeId,
        epoch: u64,
        since: u64,
    },
    /// From a node not tracked yet while [`MAX_NODES`] are: ignored.
    Refused,
}

/// What the index knows about one other node's update stream.
///
/// Invariant: every key in `pending` is > `seq + 1` once the updates that can be are applied.
#[derive(Debug)]
struct Peer {
    epoch: u64,
    /// Last seq applied in `epoch` (0: none).
    seq: u64,
    /// Out-of-order updates waiting for the ones before them.
    pending: BTreeMap<u64, Update>,
    /// Keys this node holds: the reverse of `Index::holders`, to drop them all at once.
    keys: HashSet<KeyHash>,
}

impl Peer {
    fn new(epoch: u64) -> Self {
        Peer {
            epoch,
            seq: 0,
            pending: BTreeMap::new(),
            keys: HashSet::new(),
        }
    }
}

/// Per key, its holders in node order; never an empty map.
type Holders = HashMap<KeyHash, BTreeMap<NodeId, HolderState>>;

/// The whole group's index as seen by one node: which nodes hold (or are fetching) which key.
///
/// Invariant: changes only through tagged updates, applied per (node, epoch) strictly in seq
/// order, so any delivery order with any duplicates ends in the same state as in-order delivery.
/// The own node never appears in it.
#[derive(Debug)]
pub struct Index {
    own: NodeId,
    peers: HashMap<NodeId, Peer>,
    holders: Holders,
    /// Updates or replies refused because [`MAX_NODES`] were tracked.
    refused: u64,
    /// Out-of-order updates not buffered because [`MAX_BUFFERED_PER_NODE`] were.
    overflowed: u64,
}

impl Index {
    /// An empty index for node `own`; updates from `own` are ignored.
    pub fn new(own: NodeId) -> Self {
        Index {
            own,
            peers: HashMap::new(),
            holders: HashMap::new(),
            refused: 0,
            overflowed: 0,
        }
    }

    /// Whether `node`'s stream is tracked or may be (fewer than [`MAX_NODES`] are); counts a
    /// refusal.
    fn room_for(&mut self, node: NodeId) -> bool {
        if self.peers.contains_key(&node) || self.peers.len() < MAX_NODES {
            return true;
        }
        self.refused += 1;
        false
    }

    /// Applies one gossiped update. A new epoch for a node means that process restarted: all it
    /// had is forgotten first. A smaller epoch than the known one is stale and ignored.
    pub fn apply(&mut self, t: Tagged) -> Applied {
        if t.node == self.own {
            return Applied::Duplicate;
        }
        if !self.room_for(t.node) {
            return Applied::Refused;
        }
        let Some(peer) = stream(&mut self.peers, &mut self.holders, t.node, t.epoch) else {
            return Applied::Duplicate;
        };
        if t.seq <= peer.seq {
            return Applied::Duplicate;
        }
        if peer.seq.checked_add(1) == Some(t.seq) {
            set(&mut self.holders, &mut peer.keys, t.node, t.update);
            peer.seq = t.seq;
            return Applied::Applied(1 + drain(&mut self.holders, peer, t.node));
        }
        if peer.pending.contains_key(&t.seq) {
            return Applied::Duplicate;
        }
        if peer.pending.len() < MAX_BUFFERED_PER_NODE {
            peer.pending.insert(t.seq, t.update);
        } else {
            self.overflowed += 1;
        }
        Applied::Gap {
            node: t.node,
            epoch: peer.epoch,
            since: peer.seq,
        }
    }

    /// Applies the answer to a catch-up pull; returns how many updates (or snapshot entries)
    /// took effect, buffered ones included.
    ///
    /// A new epoch for a node = that process restarted: forget everything it had, then apply.
    /// `Updates` are applied in order as if gossiped (they may still leave a gap, see
    /// [`Index::gap`]). A whole `Snapshot` (its pages gathered: `next` is `None`) newer than
    /// what we applied replaces the node's entries and its seq, then the buffered updates after
    /// that seq are applied; an older one, or a single page of a longer one, is ignored.
    pub fn apply_reply(&mut self, reply: IndexReply) -> usize {
        match reply {
            IndexReply::Updates {
                node,
                epoch,
                updates,
            } => {
                if node == self.own
                    || !self.room_for(node)
                    || stream(&mut self.peers, &mut self.holders, node, epoch).is_none()
                {
                    return 0;
                }
                updates
                    .into_iter()
                    .filter(|t| t.node == node && t.epoch == epoch)
                    .map(|t| match self.apply(t) {
                        Applied::Applied(n) => n,
                        Applied::Duplicate | Applied::Gap { .. } | Applied::Refused => 0,
                    })
                    .sum()
            }
            IndexReply::Snapshot {
                node,
                epoch,
                seq,
                entries,
                next,
            } => {
                if node == self.own || next.is_some() || !self.room_for(node) {
                    return 0;
                }
                let Some(peer) = stream(&mut self.peers, &mut self.holders, node, epoch) else {
                    return 0;
                };
                if seq <= peer.seq {
                    return 0;
                }
                clear(&mut self.holders, peer, node);
                for update in entries {
                    if !matches!(update, Update::Dropped { .. }) {
                        set(&mut self.holders, &mut peer.keys, node, update);
                    }
                }
                peer.seq = seq;
                peer.pending = match seq.checked_add(1) {
                    Some(next) => peer.pending.split_off(&next),
                    None => BTreeMap::new(),
                };
                let installed = peer.keys.len();
                installed + drain(&mut self.holders, peer, node)
            }
        }
    }

    /// A node was declared down: drops all its entries and forgets its stream (if it comes back,
    /// its next update shows a gap and a pull restores it). Returns how many entries were dropped.
    pub fn remove_node(&mut self, node: NodeId) -> usize {
        match self.peers.remove(&node) {
            Some(mut peer) => clear(&mut self.holders, &mut peer, node),
            None => 0,
        }
    }

    /// Who holds (or is fetching) `key`, in node-id order; never includes the own node.
    pub fn holders(&self, key: &KeyHash) -> Vec<Holder> {
        self.holders.get(key).map_or_else(Vec::new, |nodes| {
            nodes
                .iter()
                .map(|(node, state)| Holder {
                    node: *node,
                    state: state.clone(),
                })
                .collect()
        })
    }

    /// Distinct keys with at least one holder.
    pub fn keys(&self) -> usize {
        self.holders.len()
    }

    /// (key, node) pairs: the total number of holders over all keys.
    pub fn entries(&self) -> usize {
        self.peers.values().map(|p| p.keys.len()).sum()
    }

    /// Other nodes whose update stream the index tracks (heard from and not removed).
    pub fn nodes(&self) -> usize {
        self.peers.len()
    }

    /// Updates and replies refused because [`MAX_NODES`] streams were tracked.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Out-of-order updates dropped because [`MAX_BUFFERED_PER_NODE`] were buffered.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// The epoch and last seq applied for `node`, if it is tracked.
    pub fn applied(&self, node: NodeId) -> Option<(u64, u64)> {
        self.peers.get(&node).map(|p| (p.epoch, p.seq))
    }

    /// If `node` has buffered updates waiting for missing ones: the (epoch, since) to pull.
    /// For retrying a failed pull, or after an `Updates` reply that did not close the gap.
    pub fn gap(&self, node: NodeId) -> Option<(u64, u64)> {
        self.peers
            .get(&node)
            .filter(|p| !p.pending.is_empty())
            .map(|p| (p.epoch, p.seq))
    }
}

/// The stream state for `node` in `epoch`, created if unknown and reset (its entries dropped) if
/// `epoch` is newer than the known one; None if `epoch` is stale.
fn stream<'a>(
    peers: &'a mut HashMap<NodeId, Peer>,
    holders: &mut Holders,
    node: NodeId,
    epoch: u64,
) -> Option<&'a mut Peer> {
    let peer = peers.entry(node).or_insert_with(|| Peer::new(epoch));
    if epoch < peer.epoch {
        return None;
    }
    if epoch > peer.epoch {
        clear(holders, peer, node);
        *peer = Peer::new(epoch);
    }
    Some(peer)
}

/// Sets `node`'s state for the update's key (`Dropped` removes it).
fn set(holders: &mut Holders, keys: &mut HashSet<KeyHash>, node: NodeId, update: Update) {
    let (key, state) = match update {
        Update::Have {
            key,
            hash,
            len,
            fresh_until,
        } => (
            key,
            HolderState::Complete {
                hash,
                len,
                fresh_until,
            },
        ),
        Update::InFlight { key } => (key, HolderState::InFlight),
        Update::Dropped { key } => {
            unset(holders, &key, node);
            keys.remove(&key);
            return;
        }
    };
    holders.entry(key).or_default().insert(node, state);
    keys.insert(key);
}

fn unset(holders: &mut Holders, key: &KeyHash, node: NodeId) {
    if let Some(nodes) = holders.get_mut(key) {
        nodes.remove(&node);
        if nodes.is_empty() {
            holders.remove(key);
        }
    }
}

/// Drops every entry of `node`; returns how many.
fn clear(holders: &mut Holders, peer: &mut Peer, node: NodeId) -> usize {
    let n = peer.keys.len();
    for key in peer.keys.drain() {
        unset(holders, &key, node);
    }
    n
}

/// Applies the buffered updates that now follow on; returns how many.
fn drain(holders: &mut Holders, peer: &mut Peer, node: NodeId) -> usize {
    let mut n = 0;
    while let Some(next) = peer.seq.checked_add(1) {
        let Some(update) = peer.pending.remove(&next) else {
            break;
        };
        set(holders, &mut peer.keys, node, update);
        peer.seq = next;
        n += 1;
    }
    n
}

#[cfg(test)]
pub(crate) mod tests;

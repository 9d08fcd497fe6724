//! The group's index as one node sees it (key → holders of other nodes) and its merge of
//! tagged updates and catch-up replies; pure: no I/O, no clocks, never panics on what peers send.
//! This node's own outgoing updates are the journal's (`peer::journal`).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

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
    id: NodeId,
    epoch: u64,
    /// Last seq applied in `epoch` (0: none).
    seq: u64,
    /// Out-of-order updates waiting for the ones before them.
    pending: BTreeMap<u64, Update>,
    /// How many keys this node holds (or is fetching) in the index.
    entries: usize,
}

impl Peer {
    fn new(id: NodeId, epoch: u64) -> Self {
        Peer {
            id,
            epoch,
            seq: 0,
            pending: BTreeMap::new(),
            entries: 0,
        }
    }
}

/// A node's slot: the index names nodes by a `u16` (fewer than [`MAX_NODES`] are tracked).
type Slot = u16;

/// No object: the holder is fetching the key.
const IN_FLIGHT: u32 = u32::MAX;

/// One node's hold on one key: 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hold {
    node: Slot,
    /// The body's entry in [`Objects`], or [`IN_FLIGHT`].
    object: u32,
    /// Unix seconds, saturated at `u32::MAX` (year 2106, "for ever").
    fresh_until: u32,
}

/// One key and its holders (in no particular order; [`Index::holders`] sorts them).
#[derive(Debug)]
struct KeyHolders {
    key: KeyHash,
    holds: Box<[Hold]>,
}

/// Distinct bodies (blake3 hash and length), each stored once however many keys and nodes
/// hold it, counted so that the last holder frees it.
#[derive(Debug, Default)]
struct Objects {
    /// Slot → (hash, len, holders); a free slot has 0 holders and is listed in `free`.
    slab: Vec<([u8; 32], u64, u32)>,
    free: Vec<u32>,
    /// Slab slots by (hash, len).
    by_hash: HashTable<u32>,
    /// Slot → the nodes holding it, once per (key, node) hold: kept only when asked for
    /// ([`Index::with_body_holders`], a content server), so other nodes pay nothing for it.
    nodes: Option<Vec<Box<[Slot]>>>,
}

impl Objects {
    /// The slot of (`hash`, `len`), one more holder (`node`) counted.
    fn acquire(&mut self, hasher: &RandomState, hash: [u8; 32], len: u64, node: Slot) -> u32 {
        let h = hasher.hash_one((&hash, len));
        let slab = &mut self.slab;
        let found = self.by_hash.find(h, |&i| {
            let (oh, ol, _) = slab[i as usize];
            oh == hash && ol == len
        });
        let i = match found {
            Some(&i) => {
                slab[i as usize].2 += 1;
                i
            }
            None => {
                let i = match self.free.pop() {
                    Some(i) => {
                        slab[i as usize] = (hash, len, 1);
                        i
                    }
                    None => {
                        // At most one object per (key, node) entry: fewer than u32::MAX.
                        let i = u32::try_from(slab.len()).unwrap_or(IN_FLIGHT - 1);
                        slab.push((hash, len, 1));
                        i
                    }
                };
                self.by_hash.insert_unique(h, i, |&j| {
                    let (oh, ol, _) = slab[j as usize];
                    hasher.hash_one((&oh, ol))
                });
                i
            }
        };
        if let Some(nodes) = &mut self.nodes {
            if nodes.len() <= i as usize {
                nodes.resize_with(i as usize + 1, Default::default);
            }
            let held = &mut nodes[i as usize];
            let mut grown = Vec::with_capacity(held.len() + 1);
            grown.extend_from_slice(held);
            grown.push(node);
            *held = grown.into_boxed_slice();
        }
        i
    }

    /// One holder (`node`) fewer for `object` (nothing for [`IN_FLIGHT`]); the last frees it.
    fn release(&mut self, hasher: &RandomState, object: u32, node: Slot) {
        let Some(entry) = self.slab.get_mut(object as usize) else {
            return;
        };
        entry.2 = entry.2.saturating_sub(1);
        let last = entry.2 == 0;
        let h = hasher.hash_one((&entry.0, entry.1));
        if let Some(held) = self.nodes.as_mut().and_then(|n| n.get_mut(object as usize)) {
            if let Some(at) = held.iter().position(|&s| s == node) {
                let mut rest = std::mem::take(held).into_vec();
                rest.swap_remove(at);
                *held = rest.into_boxed_slice();
            }
        }
        if !last {
            return;
        }
        if let Ok(found) = self.by_hash.find_entry(h, |&i| i == object) {
            found.remove();
        }
        self.free.push(object);
    }

    fn get(&self, object: u32) -> Option<([u8; 32], u64)> {
        self.slab.get(object as usize).map(|&(h, l, _)| (h, l))
    }

    /// The slot of (`hash`, `len`), if some node holds that body.
    fn find(&self, hasher: &RandomState, hash: &[u8; 32], len: u64) -> Option<u32> {
        let h = hasher.hash_one((hash, len));
        self.by_hash
            .find(h, |&i| {
                let (oh, ol, _) = self.slab[i as usize];
                oh == *hash && ol == len
            })
            .copied()
    }
}

/// The whole group's index as seen by one node: which nodes hold (or are fetching) which key.
///
/// Invariant: changes only through tagged updates, applied per (node, epoch) strictly in seq
/// order, so any delivery order with any duplicates ends in the same state as in-order delivery.
/// The own node never appears in it.
///
/// Memory: one [`KeyHolders`] per key (its 32-byte hash and a boxed slice of 12-byte holds), one
/// body record per distinct body (its 32-byte hash once, however many nodes hold it), node ids
/// kept once per node as 2-byte slots. Dropping every entry of a node (it went Down, or
/// restarted) is one pass over the keys: there is no per-node list of keys to keep.
#[derive(Debug)]
pub struct Index {
    own: NodeId,
    /// Tracked nodes by id, and their slot in `peers`.
    slots: HashMap<NodeId, Slot>,
    /// Slot → the node's stream (None: a free slot).
    peers: Vec<Option<Peer>>,
    free_slots: Vec<Slot>,
    keys: HashTable<KeyHolders>,
    objects: Objects,
    /// Hashes keys and bodies; randomly keyed, so that peers cannot aim at one bucket.
    hasher: RandomState,
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
            slots: HashMap::new(),
            peers: Vec::new(),
            free_slots: Vec::new(),
            keys: HashTable::new(),
            objects: Objects::default(),
            hasher: RandomState::new(),
            refused: 0,
            overflowed: 0,
        }
    }

    /// Also keeps, for each body, the nodes that hold it (under any key), so that
    /// [`Index::body_holders`] answers without a pass over the keys. A content server asks for
    /// it (`[[mirror]] redirect_to_peers`); it costs a few bytes per body and holder.
    pub fn with_body_holders(mut self, on: bool) -> Self {
        if on && self.objects.nodes.is_none() {
            self.objects.nodes = Some(Vec::new());
        }
        self
    }

    /// `node`'s slot, taken if it is not tracked yet and fewer than [`MAX_NODES`] are (else
    /// counts a refusal).
    fn slot(&mut self, node: NodeId, epoch: u64) -> Option<Slot> {
        if let Some(&s) = self.slots.get(&node) {
            return Some(s);
        }
        if self.slots.len() >= MAX_NODES {
            self.refused += 1;
            return None;
        }
        let s = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.peers.push(None);
                // MAX_NODES fits a u16.
                Slot::try_from(self.peers.len() - 1).unwrap_or(Slot::MAX)
            }
        };
        self.peers[usize::from(s)] = Some(Peer::new(node, epoch));
        self.slots.insert(node, s);
        Some(s)
    }

    fn peer(&mut self, s: Slot) -> Option<&mut Peer> {
        self.peers.get_mut(usize::from(s)).and_then(Option::as_mut)
    }

    /// The stream slot for `node` in `epoch`, created if unknown and reset (its entries
    /// dropped) if `epoch` is newer than the known one; None if `epoch` is stale or no room.
    fn stream(&mut self, node: NodeId, epoch: u64) -> Option<Slot> {
        let s = self.slot(node, epoch)?;
        let known = self.peer(s)?.epoch;
        if epoch < known {
            return None;
        }
        if epoch > known {
            self.clear(s);
            *self.peer(s)? = Peer::new(node, epoch);
        }
        Some(s)
    }

    /// Applies one gossiped update. A new epoch for a node means that process restarted: all it
    /// had is forgotten first. A smaller epoch than the known one is stale and ignored.
    pub fn apply(&mut self, t: Tagged) -> Applied {
        if t.node == self.own {
            return Applied::Duplicate;
        }
        if !self.slots.contains_key(&t.node) && self.slots.len() >= MAX_NODES {
            self.refused += 1;
            return Applied::Refused;
        }
        let Some(s) = self.stream(t.node, t.epoch) else {
            return Applied::Duplicate;
        };
        let Some(peer) = self.peer(s) else {
            return Applied::Duplicate;
        };
        if t.seq <= peer.seq {
            return Applied::Duplicate;
        }
        if peer.seq.checked_add(1) == Some(t.seq) {
            peer.seq = t.seq;
            self.set(s, t.update);
            return Applied::Applied(1 + self.drain(s));
        }
        if peer.pending.contains_key(&t.seq) {
            return Applied::Duplicate;
        }
        let gap = Applied::Gap {
            node: t.node,
            epoch: peer.epoch,
            since: peer.seq,
        };
        if peer.pending.len() < MAX_BUFFERED_PER_NODE {
            peer.pending.insert(t.seq, t.update);
        } else {
            self.overflowed += 1;
        }
        gap
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
                if node == self.own || self.stream(node, epoch).is_none() {
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
                if node == self.own || next.is_some() {
                    return 0;
                }
                let Some(s) = self.stream(node, epoch) else {
                    return 0;
                };
                if self.peer(s).is_none_or(|p| seq <= p.seq) {
                    return 0;
                }
                self.clear(s);
                self.keys
                    .reserve(entries.len(), |k| self.hasher.hash_one(k.key));
                for update in entries {
                    if !matches!(update, Update::Dropped { .. }) {
                        self.set(s, update);
                    }
                }
                let Some(peer) = self.peer(s) else {
                    return 0;
                };
                peer.seq = seq;
                peer.pending = match seq.checked_add(1) {
                    Some(next) => peer.pending.split_off(&next),
                    None => BTreeMap::new(),
                };
                let installed = peer.entries;
                installed + self.drain(s)
            }
        }
    }

    /// A node was declared down: drops all its entries and forgets its stream (if it comes back,
    /// its next update shows a gap and a pull restores it). Returns how many entries were dropped.
    pub fn remove_node(&mut self, node: NodeId) -> usize {
        let Some(s) = self.slots.remove(&node) else {
            return 0;
        };
        let dropped = self.clear(s);
        if let Some(p) = self.peers.get_mut(usize::from(s)) {
            *p = None;
            self.free_slots.push(s);
        }
        dropped
    }

    /// Who holds (or is fetching) `key`, in node-id order; never includes the own node.
    pub fn holders(&self, key: &KeyHash) -> Vec<Holder> {
        let h = self.hasher.hash_one(key);
        let Some(k) = self.keys.find(h, |k| k.key == *key) else {
            return Vec::new();
        };
        let mut out: Vec<Holder> = k
            .holds
            .iter()
            .filter_map(|hold| {
                let peer = self.peers.get(usize::from(hold.node))?.as_ref()?;
                let state = match self.objects.get(hold.object) {
                    Some((hash, len)) if hold.object != IN_FLIGHT => HolderState::Complete {
                        hash,
                        len,
                        fresh_until: u64::from(hold.fresh_until),
                    },
                    _ => HolderState::InFlight,
                };
                Some(Holder {
                    node: peer.id,
                    state,
                })
            })
            .collect();
        out.sort_by_key(|h| h.node);
        out
    }

    /// The nodes that hold the body `hash` of `len` bytes complete, under any key, in node-id
    /// order, each once; never the own node. Empty unless the index keeps body holders
    /// ([`Index::with_body_holders`]).
    pub fn body_holders(&self, hash: &[u8; 32], len: u64) -> Vec<NodeId> {
        let Some(nodes) = &self.objects.nodes else {
            return Vec::new();
        };
        let Some(object) = self.objects.find(&self.hasher, hash, len) else {
            return Vec::new();
        };
        let mut out: Vec<NodeId> = nodes
            .get(object as usize)
            .into_iter()
            .flat_map(|held| held.iter())
            .filter_map(|&s| Some(self.peers.get(usize::from(s))?.as_ref()?.id))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Distinct keys with at least one holder.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// (key, node) pairs: the total number of holders over all keys.
    pub fn entries(&self) -> usize {
        self.peers.iter().flatten().map(|p| p.entries).sum()
    }

    /// Other nodes whose update stream the index tracks (heard from and not removed).
    pub fn nodes(&self) -> usize {
        self.slots.len()
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
        let s = self.slots.get(&node)?;
        let p = self.peers.get(usize::from(*s))?.as_ref()?;
        Some((p.epoch, p.seq))
    }

    /// If `node` has buffered updates waiting for missing ones: the (epoch, since) to pull.
    /// For retrying a failed pull, or after an `Updates` reply that did not close the gap.
    pub fn gap(&self, node: NodeId) -> Option<(u64, u64)> {
        let s = self.slots.get(&node)?;
        let p = self.peers.get(usize::from(*s))?.as_ref()?;
        (!p.pending.is_empty()).then_some((p.epoch, p.seq))
    }

    /// Sets slot `s`'s state for the update's key (`Dropped` removes it).
    fn set(&mut self, s: Slot, update: Update) {
        let (key, object, fresh_until) = match update {
            Update::Have {
                key,
                hash,
                len,
                fresh_until,
            } => {
                let object = self.objects.acquire(&self.hasher, hash, len, s);
                (key, object, u32::try_from(fresh_until).unwrap_or(u32::MAX))
            }
            Update::InFlight { key } => (key, IN_FLIGHT, 0),
            Update::Dropped { key } => {
                self.unset(s, &key);
                return;
            }
        };
        let hold = Hold {
            node: s,
            object,
            fresh_until,
        };
        let h = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        let entry = self
            .keys
            .entry(h, |k| k.key == key, |k| hasher.hash_one(k.key));
        let k = entry.or_insert_with(|| KeyHolders {
            key,
            holds: Box::new([]),
        });
        let holds = &mut k.into_mut().holds;
        match holds.iter_mut().find(|old| old.node == s) {
            Some(old) => {
                let previous = std::mem::replace(old, hold);
                if previous.object != IN_FLIGHT {
                    self.objects.release(&self.hasher, previous.object, s);
                }
            }
            None => {
                let mut grown = Vec::with_capacity(holds.len() + 1);
                grown.extend_from_slice(holds);
                grown.push(hold);
                *holds = grown.into_boxed_slice();
                if let Some(p) = self.peer(s) {
                    p.entries += 1;
                }
            }
        }
    }

    /// Removes slot `s`'s hold on `key`, if any.
    fn unset(&mut self, s: Slot, key: &KeyHash) {
        let h = self.hasher.hash_one(key);
        let Ok(entry) = self.keys.find_entry(h, |k| k.key == *key) else {
            return;
        };
        let Some(at) = entry.get().holds.iter().position(|hold| hold.node == s) else {
            return;
        };
        let object = entry.get().holds[at].object;
        if entry.get().holds.len() == 1 {
            entry.remove();
        } else {
            let (mut k, _) = entry.remove();
            let mut rest = k.holds.into_vec();
            rest.swap_remove(at);
            k.holds = rest.into_boxed_slice();
            self.keys
                .insert_unique(h, k, |k| self.hasher.hash_one(k.key));
        }
        if object != IN_FLIGHT {
            self.objects.release(&self.hasher, object, s);
        }
        if let Some(p) = self.peer(s) {
            p.entries = p.entries.saturating_sub(1);
        }
    }

    /// Drops every entry of slot `s` (one pass over the keys); returns how many.
    fn clear(&mut self, s: Slot) -> usize {
        let n = self.peer(s).map_or(0, |p| std::mem::take(&mut p.entries));
        if n == 0 {
            return 0;
        }
        let objects = &mut self.objects;
        let hasher = &self.hasher;
        self.keys.retain(|k| {
            if let Some(at) = k.holds.iter().position(|hold| hold.node == s) {
                let object = k.holds[at].object;
                if object != IN_FLIGHT {
                    objects.release(hasher, object, s);
                }
                if k.holds.len() == 1 {
                    return false;
                }
                let mut rest = std::mem::take(&mut k.holds).into_vec();
                rest.swap_remove(at);
                k.holds = rest.into_boxed_slice();
            }
            true
        });
        n
    }

    /// Applies the buffered updates of slot `s` that now follow on; returns how many.
    fn drain(&mut self, s: Slot) -> usize {
        let mut n = 0;
        loop {
            let Some(peer) = self.peer(s) else {
                return n;
            };
            let Some(next) = peer.seq.checked_add(1) else {
                return n;
            };
            let Some(update) = peer.pending.remove(&next) else {
                return n;
            };
            peer.seq = next;
            self.set(s, update);
            n += 1;
        }
    }

    /// Every key with a holder (tests compare whole states).
    #[cfg(test)]
    pub(crate) fn all_keys(&self) -> Vec<KeyHash> {
        self.keys.iter().map(|k| k.key).collect()
    }

    /// Bodies held by at least one node (tests check they are shared and freed).
    #[cfg(test)]
    pub(crate) fn objects(&self) -> usize {
        self.objects.by_hash.len()
    }

    /// Buffered updates of `node` (tests check the bound).
    #[cfg(test)]
    pub(crate) fn pending(&self, node: NodeId) -> usize {
        self.slots
            .get(&node)
            .and_then(|s| self.peers.get(usize::from(*s))?.as_ref())
            .map_or(0, |p| p.pending.len())
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! The group's index as one node sees it (key → holders of other nodes) and its merge of
//! tagged updates and catch-up replies; pure: no I/O, no clocks, never panics on what peers send.
//! This node's own outgoing updates are the journal's (`peer::journal`).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

#[cfg(test)]
use self::keys::KeyId;
pub use self::keys::{body_id, BodyId, MAX_LEN};
use self::keys::{Body, Hold, Keys, Slot};
use super::wire::{Head, IndexReply, KeyHash, NodeId, Tagged, Update};

mod keys;

/// Out-of-order updates kept per node while waiting for the missing ones. Past this, further
/// out-of-order updates are not kept (the pull that fills the gap brings them again); counted.
pub const MAX_BUFFERED_PER_NODE: usize = 10_000;

/// Other nodes whose streams the index tracks at most. Updates from a node beyond this are
/// refused and counted (a node applies only members' updates, so this is a backstop).
pub const MAX_NODES: usize = 16_384;

/// What one node holds for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HolderState {
    /// A complete, shareable response whose body's blake3 hash starts with `body` (the holder's
    /// entry names the whole hash); `fresh_until` in unix secs.
    Complete {
        body: BodyId,
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
    /// The highest seq of `epoch` the node told us it has (see [`Index::heard`]).
    heard: u64,
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
            heard: 0,
            entries: 0,
        }
    }
}

/// Body → the nodes holding it complete, once per (key, node) hold: kept only on a content
/// server ([`Index::with_body_holders`]), so other nodes pay nothing for it.
///
/// Invariant: `by_body` lists each slot in use once, under its body's hash; a slot in use has
/// at least one node; a free slot has none and is listed in `free`.
#[derive(Debug, Default)]
struct BodyHolders {
    slab: Vec<(Body, Box<[Slot]>)>,
    free: Vec<u32>,
    by_body: HashTable<u32>,
    /// Randomly keyed, so that peers cannot aim at one bucket.
    hasher: RandomState,
}

impl BodyHolders {
    /// The slot of `body`, if a node holds it.
    fn find(&self, body: &Body) -> Option<u32> {
        let slab = &self.slab;
        (self.by_body)
            .find(self.hasher.hash_one(body), |&i| slab[i as usize].0 == *body)
            .copied()
    }

    /// The nodes holding `body`, once per key they hold it under.
    fn nodes(&self, body: &Body) -> &[Slot] {
        self.find(body)
            .and_then(|i| self.slab.get(i as usize))
            .map_or(&[], |(_, nodes)| &nodes[..])
    }

    fn add(&mut self, body: Body, node: Slot) {
        if let Some(i) = self.find(&body) {
            let held = &mut self.slab[i as usize].1;
            let mut grown = Vec::with_capacity(held.len() + 1);
            grown.extend_from_slice(held);
            grown.push(node);
            *held = grown.into_boxed_slice();
            return;
        }
        // At most one slot per (key, node) hold: fewer than u32::MAX.
        let entry = (body, Box::from([node]));
        let i = keys::place(&mut self.slab, &mut self.free, entry, u32::MAX);
        let (slab, hasher) = (&self.slab, &self.hasher);
        (self.by_body).insert_unique(hasher.hash_one(body), i, |&j| {
            hasher.hash_one(slab[j as usize].0)
        });
    }

    /// `hold` left the index: its node no longer holds its body there (when bodies are kept).
    fn released(bodies: &mut Option<BodyHolders>, hold: Hold) {
        let (Some(bodies), Some(body)) = (bodies, hold.body) else {
            return;
        };
        let Some(i) = bodies.find(&body) else {
            return;
        };
        let held = &mut bodies.slab[i as usize].1;
        if let Some(at) = held.iter().position(|&s| s == hold.node) {
            let mut rest = std::mem::take(held).into_vec();
            rest.swap_remove(at);
            *held = rest.into_boxed_slice();
        }
        if held.is_empty() {
            if let Ok(found) =
                (bodies.by_body).find_entry(bodies.hasher.hash_one(body), |&j| j == i)
            {
                found.remove();
            }
            bodies.free.push(i);
        }
    }
}

/// The whole group's index as seen by one node: which nodes hold (or are fetching) which key.
///
/// Invariant: changes only through tagged updates, applied per (node, epoch) strictly in seq
/// order, so any delivery order with any duplicates ends in the same state as in-order delivery.
/// The own node never appears in it.
///
/// Memory: one 48-byte record per key in [`Keys`] (a 16-byte [`KeyId`], the key's body as a
/// 16-byte [`BodyId`] and 6-byte length, and its first hold: node slot and freshness; a key
/// held by several nodes keeps the others as 12-byte holds in one boxed slice, a holder of
/// another body than the key's in a side table), node ids kept once per node as 2-byte slots.
/// No table by body, but on a content server ([`Index::with_body_holders`]). Dropping every
/// entry of a node (it went Down, or restarted) is one pass over the keys: there is no per-node
/// list of keys to keep.
#[derive(Debug)]
pub struct Index {
    own: NodeId,
    /// Tracked nodes by id, and their slot in `peers`.
    slots: HashMap<NodeId, Slot>,
    /// Slot → the node's stream (None: a free slot).
    peers: Vec<Option<Peer>>,
    free_slots: Vec<Slot>,
    keys: Keys,
    /// Only on a content server.
    bodies: Option<BodyHolders>,
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
            keys: Keys::default(),
            bodies: None,
            refused: 0,
            overflowed: 0,
        }
    }

    /// Also keeps, for each body, the nodes that hold it (under any key), so that
    /// [`Index::body_holders`] answers without a pass over the keys. A content server asks for
    /// it (`[[mirror]] redirect_to_peers`); it costs a table entry per body and 2 bytes per
    /// holder.
    pub fn with_body_holders(mut self, on: bool) -> Self {
        if on && self.bodies.is_none() {
            self.bodies = Some(BodyHolders::default());
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
                self.keys.reserve(entries.len());
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
        let mut out: Vec<Holder> = self
            .keys
            .holds(key)
            .filter_map(|hold| {
                let peer = self.peers.get(usize::from(hold.node))?.as_ref()?;
                let state = match hold.body {
                    Some(b) => HolderState::Complete {
                        body: b.id,
                        len: b.len,
                        fresh_until: u64::from(hold.fresh_until),
                    },
                    None => HolderState::InFlight,
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

    /// The nodes that hold the body `body` of `len` bytes complete, under any key, in node-id
    /// order, each once; never the own node. Empty unless the index keeps body holders
    /// ([`Index::with_body_holders`]).
    pub fn body_holders(&self, body: &BodyId, len: u64) -> Vec<NodeId> {
        let Some(bodies) = &self.bodies else {
            return Vec::new();
        };
        let body = Body { id: *body, len };
        let mut out: Vec<NodeId> = (bodies.nodes(&body).iter())
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

    /// The head of every stream we track: its epoch and the last seq we applied.
    pub fn heads(&self) -> Vec<(NodeId, Head)> {
        self.peers
            .iter()
            .flatten()
            .map(|p| {
                let head = Head {
                    epoch: p.epoch,
                    seq: p.seq,
                };
                (p.id, head)
            })
            .collect()
    }

    /// If `node` has buffered updates waiting for missing ones, or told us of a later seq than
    /// we applied ([`Index::heard`]): the (epoch, since) to pull. For retrying a failed pull, or
    /// after an `Updates` reply that did not close the gap.
    pub fn gap(&self, node: NodeId) -> Option<(u64, u64)> {
        let s = self.slots.get(&node)?;
        let p = self.peers.get(usize::from(*s))?.as_ref()?;
        (!p.pending.is_empty() || p.heard > p.seq).then_some((p.epoch, p.seq))
    }

    /// Whether we miss something of `node`'s: we track no stream of it (never pulled, or
    /// dropped when it went Down), or it shows a [`Index::gap`]. A member we miss something of
    /// is pulled until we do not.
    pub fn behind(&self, node: NodeId) -> bool {
        node != self.own && (!self.slots.contains_key(&node) || self.gap(node).is_some())
    }

    /// `node`'s stream stands at (`epoch`, `seq`) at least: the node said so when it asked us
    /// for our updates, or a member had applied that much ([`Index::heads`]). A later seq of the epoch we track shows as a [`Index::gap`]. Returns whether to pull from
    /// it: we are [`Index::behind`] it, or it names a newer epoch (left as it is until a pull
    /// brings that epoch's entries: a claim alone never drops what we hold of the node).
    pub fn heard(&mut self, node: NodeId, epoch: u64, seq: u64) -> bool {
        let Some(&s) = self.slots.get(&node) else {
            return node != self.own;
        };
        let Some(p) = self.peer(s) else {
            return false;
        };
        if epoch == p.epoch {
            p.heard = p.heard.max(seq);
        }
        epoch > p.epoch || self.behind(node)
    }

    /// Sets slot `s`'s state for the update's key (`Dropped` removes it, and so does a body
    /// longer than [`MAX_LEN`]: no body is that long, and the index could not name it).
    fn set(&mut self, s: Slot, update: Update) {
        let (key, hold) = match update {
            Update::Have {
                key,
                hash,
                len,
                fresh_until,
            } if len <= MAX_LEN => {
                let body = Body {
                    id: body_id(&hash),
                    len,
                };
                let fresh_until = u32::try_from(fresh_until).unwrap_or(u32::MAX);
                let hold = Hold {
                    node: s,
                    fresh_until,
                    body: Some(body),
                };
                (key, hold)
            }
            Update::InFlight { key } => {
                let hold = Hold {
                    node: s,
                    fresh_until: 0,
                    body: None,
                };
                (key, hold)
            }
            Update::Have { key, .. } | Update::Dropped { key } => {
                self.unset(s, &key);
                return;
            }
        };
        if let (Some(bodies), Some(body)) = (&mut self.bodies, hold.body) {
            bodies.add(body, s);
        }
        match self.keys.set(&key, hold) {
            Some(previous) => BodyHolders::released(&mut self.bodies, previous),
            None => {
                if let Some(p) = self.peer(s) {
                    p.entries += 1;
                }
            }
        }
    }

    /// Removes slot `s`'s hold on `key`, if any.
    fn unset(&mut self, s: Slot, key: &KeyHash) {
        let Some(hold) = self.keys.unset(key, s) else {
            return;
        };
        BodyHolders::released(&mut self.bodies, hold);
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
        let bodies = &mut self.bodies;
        self.keys
            .unset_all(s, |hold| BodyHolders::released(bodies, hold));
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

    /// Every key with a holder and its holders, as [`Index::holders`] lists them (tests compare
    /// whole states).
    #[cfg(test)]
    pub(crate) fn dump(&self) -> BTreeMap<KeyId, Vec<Holder>> {
        self.keys
            .all()
            .into_iter()
            .map(|(id, _)| {
                let mut key = [0; 32];
                key[..16].copy_from_slice(&id);
                (id, self.holders(&key))
            })
            .collect()
    }

    /// Bodies held under a key other than the key's own (tests check they are freed).
    #[cfg(test)]
    pub(crate) fn odd_bodies(&self) -> usize {
        self.keys.odd_bodies()
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

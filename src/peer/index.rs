//! The group's index as one node sees it (key → holders) and this node's own update journal;
//! pure merge logic: no I/O, no clocks, never panics on what peers send.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::wire::{IndexReply, KeyHash, NodeId, Tagged, Update};

/// Out-of-order updates kept per node while waiting for the missing ones. Past this, further
/// out-of-order updates are not kept (the pull that fills the gap brings them again).
pub const MAX_BUFFERED_PER_NODE: usize = 10_000;

/// Default number of own updates a [`Journal`] keeps for incremental catch-up.
pub const DEFAULT_JOURNAL_CAPACITY: usize = 4096;

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
}

impl Index {
    /// An empty index for node `own`; updates from `own` are ignored.
    pub fn new(own: NodeId) -> Self {
        Index {
            own,
            peers: HashMap::new(),
            holders: HashMap::new(),
        }
    }

    /// Applies one gossiped update. A new epoch for a node means that process restarted: all it
    /// had is forgotten first. A smaller epoch than the known one is stale and ignored.
    pub fn apply(&mut self, t: Tagged) -> Applied {
        if t.node == self.own {
            return Applied::Duplicate;
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
    /// [`Index::gap`]). A `Snapshot` newer than what we applied replaces the node's entries and
    /// its seq, then the buffered updates after that seq are applied; an older one is ignored.
    pub fn apply_reply(&mut self, reply: IndexReply) -> usize {
        match reply {
            IndexReply::Updates {
                node,
                epoch,
                updates,
            } => {
                if node == self.own
                    || stream(&mut self.peers, &mut self.holders, node, epoch).is_none()
                {
                    return 0;
                }
                updates
                    .into_iter()
                    .filter(|t| t.node == node && t.epoch == epoch)
                    .map(|t| match self.apply(t) {
                        Applied::Applied(n) => n,
                        Applied::Duplicate | Applied::Gap { .. } => 0,
                    })
                    .sum()
            }
            IndexReply::Snapshot {
                node,
                epoch,
                seq,
                entries,
            } => {
                if node == self.own {
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

/// A snapshot's stamp, taken from a [`Journal`] before its entries are gathered.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotAt {
    node: NodeId,
    epoch: u64,
    seq: u64,
}

impl SnapshotAt {
    /// The `Snapshot` of `entries` (one update per key), sorted by key.
    pub fn of(self, mut entries: Vec<Update>) -> IndexReply {
        entries.sort_by(|a, b| a.key().cmp(b.key()));
        IndexReply::Snapshot {
            node: self.node,
            epoch: self.epoch,
            seq: self.seq,
            entries,
        }
    }
}

/// What a [`Journal`] answers a snapshot from: the keys this node holds or is fetching now.
/// The in-memory map (the default) keeps every recorded update; a node with a large store
/// implements it over its store instead, so that each stored key is not kept twice.
pub trait OwnState {
    /// Called with every update the journal records, in order.
    fn record(&mut self, update: &Update);
    /// The current `Have` and `InFlight` updates, one per key (any order).
    fn snapshot(&self) -> Vec<Update>;
}

impl OwnState for HashMap<KeyHash, Update> {
    fn record(&mut self, update: &Update) {
        match update {
            Update::Have { key, .. } | Update::InFlight { key } => {
                self.insert(*key, update.clone());
            }
            Update::Dropped { key } => {
                self.remove(key);
            }
        }
    }

    fn snapshot(&self) -> Vec<Update> {
        self.values().cloned().collect()
    }
}

/// This node's own outgoing updates: assigns seqs, keeps a bounded journal (default
/// [`DEFAULT_JOURNAL_CAPACITY`]) for incremental catch-up, and tells its [`OwnState`] (which
/// answers snapshots) of every update.
///
/// Invariant: the journal holds the last `min(seq, capacity)` updates, consecutive, ending at
/// `seq`; the state holds exactly the keys whose last update is `Have` or `InFlight`.
#[derive(Debug)]
pub struct Journal<S: OwnState = HashMap<KeyHash, Update>> {
    node: NodeId,
    epoch: u64,
    seq: u64,
    capacity: usize,
    log: VecDeque<Tagged>,
    state: S,
}

impl Journal {
    /// An empty journal for `node` in `epoch` keeping up to `capacity` updates, with its state
    /// in memory.
    ///
    /// Peers treat a smaller epoch than one they know as stale, so a restarted process must use
    /// a larger one (e.g. the start time in unix milliseconds), not merely a different one.
    pub fn new(node: NodeId, epoch: u64, capacity: usize) -> Self {
        let mut j = Journal::with_state(node, epoch, capacity, HashMap::new());
        j.seq = 0; // the state is empty: nothing to stand for
        j
    }
}

impl<S: OwnState> Journal<S> {
    /// [`Journal::new`] with the given state, which already holds what the node holds: seq 1
    /// stands for that starting state (it is in no update), so an asker with nothing (`since`
    /// 0) gets a snapshot, and the first recorded update is seq 2.
    pub fn with_state(node: NodeId, epoch: u64, capacity: usize, state: S) -> Self {
        Journal {
            node,
            epoch,
            seq: 1,
            capacity,
            log: VecDeque::with_capacity(capacity.min(DEFAULT_JOURNAL_CAPACITY)),
            state,
        }
    }

    pub fn state(&self) -> &S {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    /// Tags `update` with the next seq, journals it and updates the current state
    /// (`Dropped` removes the key). The result is what to gossip.
    pub fn record(&mut self, update: Update) -> Tagged {
        self.seq = self.seq.saturating_add(1);
        self.state.record(&update);
        let tagged = Tagged {
            node: self.node,
            epoch: self.epoch,
            seq: self.seq,
            update,
        };
        if self.capacity > 0 {
            if self.log.len() >= self.capacity {
                self.log.pop_front();
            }
            self.log.push_back(tagged.clone());
        }
        tagged
    }

    /// The answer to `GET /peer/v1/index?since=N`: `Updates` after `since` when the journal
    /// still covers `since + 1` (empty when there is nothing new), else a `Snapshot`. A `since`
    /// beyond our seq can only come from another epoch of ours, so it gets a `Snapshot` too.
    pub fn since(&self, since: u64) -> IndexReply {
        self.updates_since(None, since)
            .unwrap_or_else(|| self.snapshot_of(self.state.snapshot()))
    }

    /// Like [`Journal::since`], for an asker that says which epoch its `since` counts in: any
    /// other epoch than ours gets a `Snapshot`. Prefer it when the request carries the epoch.
    pub fn since_in(&self, epoch: u64, since: u64) -> IndexReply {
        self.updates_since(Some(epoch), since)
            .unwrap_or_else(|| self.snapshot_of(self.state.snapshot()))
    }

    /// The `Updates` answer when the journal covers the asker (same epoch, if it says one);
    /// `None` when it needs a snapshot. With [`Journal::snapshot_at`], lets a caller build a
    /// large snapshot without holding the journal: a state read after this call holds at least
    /// what it held at `seq`, and replaying later updates over more is harmless.
    pub fn updates_since(&self, epoch: Option<u64>, since: u64) -> Option<IndexReply> {
        if epoch.is_some_and(|e| e != self.epoch) {
            return None;
        }
        let covered = since == self.seq
            || (since < self.seq
                && self
                    .log
                    .front()
                    .is_some_and(|first| first.seq <= since.saturating_add(1)));
        covered.then(|| self.updates_after(since))
    }

    /// Where a snapshot taken now stands (node, epoch, seq); see [`SnapshotAt::of`].
    pub fn snapshot_at(&self) -> SnapshotAt {
        SnapshotAt {
            node: self.node,
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    fn snapshot_of(&self, entries: Vec<Update>) -> IndexReply {
        self.snapshot_at().of(entries)
    }

    /// The last seq assigned (0 before the first update).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn updates_after(&self, since: u64) -> IndexReply {
        IndexReply::Updates {
            node: self.node,
            epoch: self.epoch,
            updates: self.log.iter().filter(|t| t.seq > since).cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    const OWN: NodeId = NodeId([0xee; 16]);
    const E1: u64 = 1_700_000_000_000;
    const E2: u64 = E1 + 5_000;

    fn n(i: u8) -> NodeId {
        NodeId([i; 16])
    }

    fn k(i: u8) -> KeyHash {
        [i; 32]
    }

    fn have(key: u8, body: u8) -> Update {
        Update::Have {
            key: k(key),
            hash: [body; 32],
            len: u64::from(body) * 100,
            fresh_until: 1_800_000_000,
        }
    }

    fn complete(body: u8) -> HolderState {
        HolderState::Complete {
            hash: [body; 32],
            len: u64::from(body) * 100,
            fresh_until: 1_800_000_000,
        }
    }

    fn inflight(key: u8) -> Update {
        Update::InFlight { key: k(key) }
    }

    fn dropped(key: u8) -> Update {
        Update::Dropped { key: k(key) }
    }

    fn tag(node: NodeId, epoch: u64, seq: u64, update: Update) -> Tagged {
        Tagged {
            node,
            epoch,
            seq,
            update,
        }
    }

    fn holder(node: NodeId, state: HolderState) -> Holder {
        Holder { node, state }
    }

    /// The whole observable state: every key's holders.
    fn dump(ix: &Index) -> BTreeMap<KeyHash, Vec<Holder>> {
        ix.holders
            .keys()
            .map(|key| (*key, ix.holders(key)))
            .collect()
    }

    #[test]
    fn a_later_seq_replaces_the_nodes_state_for_the_key() {
        // (updates of node 1 applied in order, holders of key 1 afterwards)
        let cases: Vec<(Vec<Update>, Vec<Holder>)> = vec![
            (vec![have(1, 5)], vec![holder(n(1), complete(5))]),
            (vec![inflight(1)], vec![holder(n(1), HolderState::InFlight)]),
            (
                vec![inflight(1), have(1, 5)],
                vec![holder(n(1), complete(5))],
            ),
            (vec![have(1, 5), dropped(1)], vec![]),
            (vec![inflight(1), dropped(1)], vec![]),
            (
                vec![have(1, 5), have(1, 6)],
                vec![holder(n(1), complete(6))],
            ),
            (
                vec![have(1, 5), inflight(1)],
                vec![holder(n(1), HolderState::InFlight)],
            ),
            (vec![dropped(1)], vec![]),
            (
                vec![have(1, 5), dropped(1), have(1, 7)],
                vec![holder(n(1), complete(7))],
            ),
            (vec![have(2, 5)], vec![]),
        ];
        for (updates, want) in cases {
            let mut ix = Index::new(OWN);
            for (i, u) in updates.iter().enumerate() {
                let applied = ix.apply(tag(n(1), E1, i as u64 + 1, u.clone()));
                assert_eq!(applied, Applied::Applied(1), "{updates:?}");
            }
            assert_eq!(ix.holders(&k(1)), want, "{updates:?}");
            assert_eq!(
                ix.entries(),
                ix.holders.values().map(BTreeMap::len).sum::<usize>()
            );
        }
    }

    #[test]
    fn in_order_updates_apply_one_by_one() {
        let mut ix = Index::new(OWN);
        assert_eq!(ix.applied(n(1)), None);
        assert_eq!(ix.apply(tag(n(1), E1, 1, inflight(1))), Applied::Applied(1));
        assert_eq!(ix.apply(tag(n(1), E1, 2, have(2, 9))), Applied::Applied(1));
        assert_eq!(ix.apply(tag(n(1), E1, 3, have(1, 8))), Applied::Applied(1));
        assert_eq!(ix.holders(&k(1)), vec![holder(n(1), complete(8))]);
        assert_eq!(ix.holders(&k(2)), vec![holder(n(1), complete(9))]);
        assert_eq!(ix.holders(&k(3)), vec![]);
        assert_eq!((ix.keys(), ix.entries(), ix.nodes()), (2, 2, 1));
        assert_eq!(ix.applied(n(1)), Some((E1, 3)));
        assert_eq!(ix.gap(n(1)), None);
    }

    #[test]
    fn duplicates_and_old_seqs_are_ignored() {
        let mut ix = Index::new(OWN);
        ix.apply(tag(n(1), E1, 1, have(1, 5)));
        ix.apply(tag(n(1), E1, 2, dropped(1)));
        let before = dump(&ix);
        assert_eq!(ix.apply(tag(n(1), E1, 1, have(1, 5))), Applied::Duplicate);
        assert_eq!(ix.apply(tag(n(1), E1, 2, dropped(1))), Applied::Duplicate);
        // A seq we already passed, even with other content, changes nothing.
        assert_eq!(ix.apply(tag(n(1), E1, 1, have(3, 3))), Applied::Duplicate);
        assert_eq!(ix.apply(tag(n(1), E1, 0, have(3, 3))), Applied::Duplicate);
        assert_eq!(dump(&ix), before);
        assert_eq!(ix.applied(n(1)), Some((E1, 2)));
    }

    #[test]
    fn reordered_updates_are_buffered_then_applied_in_seq_order() {
        let mut ix = Index::new(OWN);
        let gap = Applied::Gap {
            node: n(1),
            epoch: E1,
            since: 0,
        };
        assert_eq!(ix.apply(tag(n(1), E1, 3, dropped(1))), gap);
        assert_eq!(ix.holders(&k(1)), vec![]);
        assert_eq!(ix.gap(n(1)), Some((E1, 0)));
        assert_eq!(ix.apply(tag(n(1), E1, 2, have(1, 5))), gap);
        // The same buffered update again is a duplicate, not a second gap report.
        assert_eq!(ix.apply(tag(n(1), E1, 3, dropped(1))), Applied::Duplicate);
        assert_eq!(ix.apply(tag(n(1), E1, 5, have(2, 2))), gap);
        assert_eq!(ix.apply(tag(n(1), E1, 1, inflight(1))), Applied::Applied(3));
        // 1 InFlight, 2 Have, 3 Dropped: gone, whatever the arrival order.
        assert_eq!(ix.holders(&k(1)), vec![]);
        assert_eq!(ix.holders(&k(2)), vec![]);
        assert_eq!(ix.applied(n(1)), Some((E1, 3)));
        assert_eq!(ix.gap(n(1)), Some((E1, 3)));
        assert_eq!(ix.apply(tag(n(1), E1, 4, inflight(2))), Applied::Applied(2));
        assert_eq!(ix.holders(&k(2)), vec![holder(n(1), complete(2))]);
        assert_eq!(ix.gap(n(1)), None);
    }

    #[test]
    fn a_gap_is_filled_by_pulling_the_journal() {
        let mut journal = Journal::new(n(1), E1, DEFAULT_JOURNAL_CAPACITY);
        let sent: Vec<Tagged> = [have(1, 1), have(2, 2), dropped(1), inflight(3), have(3, 3)]
            .into_iter()
            .map(|u| journal.record(u))
            .collect();
        let mut ix = Index::new(OWN);
        assert_eq!(ix.apply(sent[0].clone()), Applied::Applied(1));
        // 2 and 3 are lost.
        let gap = Applied::Gap {
            node: n(1),
            epoch: E1,
            since: 1,
        };
        assert_eq!(ix.apply(sent[3].clone()), gap);
        assert_eq!(ix.apply(sent[4].clone()), gap);
        let reply = journal.since_in(E1, 1);
        assert!(matches!(&reply, IndexReply::Updates { updates, .. } if updates.len() == 4));
        // 2 and 3 take effect, then buffered 4 and 5; the reply's own 4 and 5 are duplicates.
        assert_eq!(ix.apply_reply(reply), 4);
        assert_eq!(ix.applied(n(1)), Some((E1, 5)));
        assert_eq!(ix.gap(n(1)), None);
        assert_eq!(ix.holders(&k(1)), vec![]);
        assert_eq!(ix.holders(&k(2)), vec![holder(n(1), complete(2))]);
        assert_eq!(ix.holders(&k(3)), vec![holder(n(1), complete(3))]);
        // Pulling again changes nothing.
        assert_eq!(ix.apply_reply(journal.since_in(E1, 5)), 0);
        assert_eq!(ix.apply_reply(journal.since_in(E1, 0)), 0);
    }

    #[test]
    fn a_snapshot_replaces_the_nodes_entries_then_applies_buffered_updates() {
        let mut ix = Index::new(OWN);
        ix.apply(tag(n(1), E1, 1, have(1, 1)));
        ix.apply(tag(n(1), E1, 2, have(2, 2)));
        ix.apply(tag(n(2), E1, 1, have(1, 7)));
        // Updates 12 and 13 arrive before the snapshot taken at 11; 11 itself is buffered too.
        assert!(matches!(
            ix.apply(tag(n(1), E1, 11, have(9, 9))),
            Applied::Gap { .. }
        ));
        assert!(matches!(
            ix.apply(tag(n(1), E1, 12, have(4, 4))),
            Applied::Gap { .. }
        ));
        assert!(matches!(
            ix.apply(tag(n(1), E1, 13, dropped(3))),
            Applied::Gap { .. }
        ));
        let snapshot = IndexReply::Snapshot {
            node: n(1),
            epoch: E1,
            seq: 11,
            entries: vec![have(3, 3), inflight(5), dropped(6)],
        };
        // 2 entries installed + 2 buffered updates (12, 13) applied.
        assert_eq!(ix.apply_reply(snapshot.clone()), 4);
        assert_eq!(ix.applied(n(1)), Some((E1, 13)));
        assert_eq!(ix.gap(n(1)), None);
        assert_eq!(ix.holders(&k(1)), vec![holder(n(2), complete(7))]);
        assert_eq!(ix.holders(&k(2)), vec![]);
        assert_eq!(ix.holders(&k(3)), vec![]);
        assert_eq!(ix.holders(&k(4)), vec![holder(n(1), complete(4))]);
        assert_eq!(ix.holders(&k(5)), vec![holder(n(1), HolderState::InFlight)]);
        assert_eq!(ix.holders(&k(6)), vec![]);
        assert_eq!(ix.holders(&k(9)), vec![]);
        assert_eq!((ix.keys(), ix.entries(), ix.nodes()), (3, 3, 2));
        // The same or an older snapshot is ignored.
        let before = dump(&ix);
        assert_eq!(ix.apply_reply(snapshot), 0);
        let old = IndexReply::Snapshot {
            node: n(1),
            epoch: E1,
            seq: 3,
            entries: vec![],
        };
        assert_eq!(ix.apply_reply(old), 0);
        assert_eq!(dump(&ix), before);
    }

    #[test]
    fn a_new_epoch_resets_the_node_and_an_old_one_is_stale() {
        let mut ix = Index::new(OWN);
        ix.apply(tag(n(1), E1, 1, have(1, 1)));
        ix.apply(tag(n(1), E1, 2, have(2, 2)));
        ix.apply(tag(n(2), E1, 1, have(1, 7)));
        // Restarted process, first update lost: its old entries go at once.
        let gap = Applied::Gap {
            node: n(1),
            epoch: E2,
            since: 0,
        };
        assert_eq!(ix.apply(tag(n(1), E2, 2, have(3, 3))), gap);
        assert_eq!(ix.holders(&k(1)), vec![holder(n(2), complete(7))]);
        assert_eq!(ix.holders(&k(2)), vec![]);
        assert_eq!(ix.applied(n(1)), Some((E2, 0)));
        assert_eq!(ix.apply(tag(n(1), E2, 1, have(2, 8))), Applied::Applied(2));
        // Late gossip from the previous process changes nothing.
        let before = dump(&ix);
        assert_eq!(ix.apply(tag(n(1), E1, 3, have(4, 4))), Applied::Duplicate);
        let stale_updates = IndexReply::Updates {
            node: n(1),
            epoch: E1,
            updates: vec![tag(n(1), E1, 3, have(4, 4))],
        };
        let stale_snapshot = IndexReply::Snapshot {
            node: n(1),
            epoch: E1,
            seq: 9,
            entries: vec![have(4, 4)],
        };
        assert_eq!(ix.apply_reply(stale_updates), 0);
        assert_eq!(ix.apply_reply(stale_snapshot), 0);
        assert_eq!(dump(&ix), before);
        assert_eq!(ix.applied(n(1)), Some((E2, 2)));
        // A new epoch seen first in a snapshot resets too.
        let newer = IndexReply::Snapshot {
            node: n(1),
            epoch: E2 + 1,
            seq: 1,
            entries: vec![have(6, 6)],
        };
        assert_eq!(ix.apply_reply(newer), 1);
        assert_eq!(ix.holders(&k(2)), vec![]);
        assert_eq!(ix.holders(&k(6)), vec![holder(n(1), complete(6))]);
        assert_eq!(ix.applied(n(1)), Some((E2 + 1, 1)));
    }

    #[test]
    fn an_updates_reply_from_a_new_epoch_that_does_not_connect_leaves_a_gap() {
        let mut ix = Index::new(OWN);
        ix.apply(tag(n(1), E1, 1, have(1, 1)));
        let reply = IndexReply::Updates {
            node: n(1),
            epoch: E2,
            updates: vec![tag(n(1), E2, 2, have(2, 2)), tag(n(1), E2, 3, have(3, 3))],
        };
        assert_eq!(ix.apply_reply(reply), 0);
        assert_eq!(ix.holders(&k(1)), vec![]);
        assert_eq!(ix.gap(n(1)), Some((E2, 0)));
    }

    #[test]
    fn an_updates_reply_ignores_updates_of_another_node_or_epoch() {
        let mut ix = Index::new(OWN);
        let reply = IndexReply::Updates {
            node: n(1),
            epoch: E1,
            updates: vec![
                tag(n(2), E1, 1, have(2, 2)),
                tag(n(1), E2, 1, have(3, 3)),
                tag(OWN, E1, 1, have(4, 4)),
                tag(n(1), E1, 1, have(1, 1)),
            ],
        };
        assert_eq!(ix.apply_reply(reply), 1);
        assert_eq!(ix.keys(), 1);
        assert_eq!(ix.holders(&k(1)), vec![holder(n(1), complete(1))]);
        assert_eq!(ix.applied(n(2)), None);
        assert_eq!(ix.applied(n(1)), Some((E1, 1)));
    }

    #[test]
    fn a_dead_node_loses_its_entries_and_comes_back_through_a_pull() {
        let mut ix = Index::new(OWN);
        ix.apply(tag(n(1), E1, 1, have(1, 1)));
        ix.apply(tag(n(1), E1, 2, inflight(2)));
        ix.apply(tag(n(2), E1, 1, have(1, 7)));
        assert_eq!(ix.remove_node(n(1)), 2);
        assert_eq!(ix.holders(&k(1)), vec![holder(n(2), complete(7))]);
        assert_eq!(ix.holders(&k(2)), vec![]);
        assert_eq!((ix.keys(), ix.entries(), ix.nodes()), (1, 1, 1));
        assert_eq!(ix.applied(n(1)), None);
        assert_eq!(ix.remove_node(n(1)), 0);
        assert_eq!(ix.remove_node(n(9)), 0);
        // It was only suspected: its next update shows what we lack.
        assert_eq!(
            ix.apply(tag(n(1), E1, 3, have(3, 3))),
            Applied::Gap {
                node: n(1),
                epoch: E1,
                since: 0
            }
        );
    }

    #[test]
    fn own_updates_are_ignored() {
        let mut ix = Index::new(OWN);
        assert_eq!(ix.apply(tag(OWN, E1, 1, have(1, 1))), Applied::Duplicate);
        assert_eq!(ix.apply(tag(OWN, E1, 5, have(1, 1))), Applied::Duplicate);
        let updates = IndexReply::Updates {
            node: OWN,
            epoch: E1,
            updates: vec![tag(OWN, E1, 1, have(1, 1))],
        };
        let snapshot = IndexReply::Snapshot {
            node: OWN,
            epoch: E1,
            seq: 1,
            entries: vec![have(1, 1)],
        };
        assert_eq!(ix.apply_reply(updates), 0);
        assert_eq!(ix.apply_reply(snapshot), 0);
        assert_eq!(ix.remove_node(OWN), 0);
        assert_eq!((ix.keys(), ix.entries(), ix.nodes()), (0, 0, 0));
        assert_eq!(ix.applied(OWN), None);
    }

    #[test]
    fn holders_of_one_key_from_different_nodes_coexist_in_node_order() {
        let mut ix = Index::new(OWN);
        ix.apply(tag(n(3), E1, 1, inflight(1)));
        ix.apply(tag(n(1), E2, 1, have(1, 5)));
        ix.apply(tag(n(2), E1, 1, have(1, 6)));
        assert_eq!(
            ix.holders(&k(1)),
            vec![
                holder(n(1), complete(5)),
                holder(n(2), complete(6)),
                holder(n(3), HolderState::InFlight),
            ]
        );
        ix.apply(tag(n(2), E1, 2, dropped(1)));
        assert_eq!(ix.holders(&k(1)).len(), 2);
        assert_eq!((ix.keys(), ix.entries(), ix.nodes()), (1, 2, 3));
    }

    #[test]
    fn the_buffer_is_bounded_and_a_pull_still_catches_up() {
        let mut journal = Journal::new(n(1), E1, 2 * MAX_BUFFERED_PER_NODE);
        let sent: Vec<Tagged> = (0..MAX_BUFFERED_PER_NODE + 10)
            .map(|i| journal.record(have((i % 200) as u8, (i % 251) as u8)))
            .collect();
        let mut ix = Index::new(OWN);
        for t in &sent[1..] {
            assert!(matches!(ix.apply(t.clone()), Applied::Gap { since: 0, .. }));
        }
        assert_eq!(ix.peers[&n(1)].pending.len(), MAX_BUFFERED_PER_NODE);
        assert_eq!(
            ix.apply(sent[0].clone()),
            Applied::Applied(1 + MAX_BUFFERED_PER_NODE)
        );
        // The 9 updates that did not fit in the buffer come with the pull.
        let since = MAX_BUFFERED_PER_NODE as u64 + 1;
        assert_eq!(ix.gap(n(1)), None);
        assert_eq!(ix.apply_reply(journal.since(since)), 9);
        let mut truth = Index::new(OWN);
        truth.apply_reply(journal.since_in(0, 0));
        assert_eq!(dump(&ix), dump(&truth));
    }

    #[test]
    fn extreme_seqs_do_not_panic() {
        let mut ix = Index::new(OWN);
        let top = tag(n(1), u64::MAX, u64::MAX, have(1, 1));
        assert!(matches!(ix.apply(top.clone()), Applied::Gap { .. }));
        let snapshot = IndexReply::Snapshot {
            node: n(1),
            epoch: u64::MAX,
            seq: u64::MAX - 1,
            entries: vec![],
        };
        assert_eq!(ix.apply_reply(snapshot), 1);
        assert_eq!(ix.apply(top), Applied::Duplicate);
        let snapshot = IndexReply::Snapshot {
            node: n(1),
            epoch: u64::MAX,
            seq: u64::MAX,
            entries: vec![have(2, 2)],
        };
        assert_eq!(ix.apply_reply(snapshot), 0);
        assert_eq!(ix.holders(&k(1)), vec![holder(n(1), complete(1))]);
        assert_eq!(ix.applied(n(1)), Some((u64::MAX, u64::MAX)));
        let journal = Journal::new(n(2), 1, 4);
        assert!(matches!(
            journal.since(u64::MAX),
            IndexReply::Snapshot { .. }
        ));
    }

    fn seqs(reply: &IndexReply) -> Option<Vec<u64>> {
        match reply {
            IndexReply::Updates { updates, .. } => Some(updates.iter().map(|t| t.seq).collect()),
            IndexReply::Snapshot { .. } => None,
        }
    }

    #[test]
    fn journal_since_switches_to_a_snapshot_past_its_capacity() {
        // (capacity, updates recorded, since, Some(seqs) for Updates or None for a Snapshot)
        let cases: &[(usize, u64, u64, Option<&[u64]>)] = &[
            (4, 0, 0, Some(&[])),
            (4, 0, 1, None),
            (4, 3, 0, Some(&[1, 2, 3])),
            (4, 4, 0, Some(&[1, 2, 3, 4])),
            (4, 5, 0, None),
            (4, 5, 1, Some(&[2, 3, 4, 5])),
            (4, 6, 1, None),
            (4, 6, 2, Some(&[3, 4, 5, 6])),
            (4, 6, 5, Some(&[6])),
            (4, 6, 6, Some(&[])),
            (4, 6, 7, None),
            (1, 6, 5, Some(&[6])),
            (1, 6, 4, None),
            (0, 6, 6, Some(&[])),
            (0, 6, 5, None),
            (0, 0, 0, Some(&[])),
        ];
        for &(capacity, recorded, since, want) in cases {
            let mut journal = Journal::new(n(1), E1, capacity);
            for i in 0..recorded {
                journal.record(have(i as u8, 1));
            }
            let reply = journal.since(since);
            assert_eq!(
                seqs(&reply).as_deref(),
                want,
                "capacity {capacity}, {recorded} recorded, since {since}"
            );
            if let IndexReply::Snapshot { seq, epoch, .. } = reply {
                assert_eq!((epoch, seq), (E1, recorded));
            }
        }
    }

    #[test]
    fn a_journal_that_starts_with_a_state_answers_an_empty_asker_with_a_snapshot() {
        let mut start = HashMap::new();
        OwnState::record(&mut start, &have(1, 1));
        let mut journal = Journal::with_state(n(1), E2, 8, start);
        let mut ix = Index::new(OWN);
        // A restarted node: its first update (seq 2) shows a gap to a member that knows nothing.
        let first = journal.record(have(2, 2));
        assert_eq!(first.seq, 2);
        assert!(matches!(ix.apply(first), Applied::Gap { since: 0, .. }));
        assert_eq!(seqs(&journal.since(0)), None, "a snapshot");
        ix.apply_reply(journal.since(0));
        assert_eq!(ix.holders(&k(1)), vec![holder(n(1), complete(1))]);
        assert_eq!(ix.holders(&k(2)), vec![holder(n(1), complete(2))]);
        assert_eq!(seqs(&journal.since(1)), Some(vec![2]));
    }

    #[test]
    fn a_snapshot_gathered_after_its_stamp_converges_once_later_updates_replay() {
        let mut journal = Journal::new(n(1), E1, 8);
        journal.record(have(1, 1));
        assert_eq!(journal.updates_since(Some(E2), 1), None, "another epoch");
        assert_eq!(
            journal.updates_since(None, 0).map(|r| seqs(&r)),
            Some(Some(vec![1]))
        );
        // The stamp is taken, then the state moves on before the entries are read.
        let at = journal.snapshot_at();
        let later = [journal.record(dropped(1)), journal.record(have(2, 2))];
        let snapshot = at.of(journal.state().snapshot()); // already without 1, with 2
        let mut ix = Index::new(OWN);
        ix.apply_reply(snapshot);
        for t in later {
            ix.apply(t);
        }
        assert_eq!(ix.applied(n(1)), Some((E1, 3)));
        assert_eq!(ix.holders(&k(1)), vec![]);
        assert_eq!(ix.holders(&k(2)), vec![holder(n(1), complete(2))]);
    }

    #[test]
    fn journal_since_in_another_epoch_is_a_snapshot() {
        let mut journal = Journal::new(n(1), E2, 8);
        journal.record(have(1, 1));
        journal.record(have(2, 2));
        assert_eq!(seqs(&journal.since_in(E2, 1)), Some(vec![2]));
        assert_eq!(seqs(&journal.since_in(E1, 1)), None);
        assert_eq!(seqs(&journal.since_in(E1, 2)), None);
        assert_eq!(seqs(&journal.since_in(0, 0)), None);
    }

    #[test]
    fn journal_keeps_the_current_state_for_snapshots() {
        let mut journal = Journal::new(n(1), E1, 2);
        assert!(journal.state().is_empty());
        let first = journal.record(inflight(3));
        assert_eq!(first, tag(n(1), E1, 1, inflight(3)));
        journal.record(have(1, 1));
        journal.record(have(3, 3));
        journal.record(inflight(2));
        journal.record(dropped(1));
        journal.record(dropped(9));
        assert_eq!(
            (journal.seq(), journal.epoch(), journal.state().len()),
            (6, E1, 2)
        );
        assert_eq!(
            journal.since(0),
            IndexReply::Snapshot {
                node: n(1),
                epoch: E1,
                seq: 6,
                entries: vec![inflight(2), have(3, 3)],
            }
        );
    }

    /// Random updates from three nodes (one of which may restart), delivered shuffled with
    /// duplicates, or with losses followed by one pull per node: always the in-order state.
    #[test]
    fn any_interleaving_with_duplicates_ends_in_the_in_order_state() {
        let mut rng = StdRng::seed_from_u64(0x9ee2_cac4e);
        let ids = [n(1), n(2), n(3)];
        // (Updates, Snapshot) replies used by the pulls: both paths must be exercised.
        let mut replies = (0, 0);
        let mut restarts = 0;
        for round in 0..60 {
            let mut journals: Vec<Journal> =
                ids.iter().map(|id| Journal::new(*id, E1, 8)).collect();
            let mut sent = Vec::new();
            for _ in 0..rng.random_range(1..200) {
                let i = rng.random_range(0..ids.len());
                if rng.random_bool(0.01) {
                    let epoch = journals[i].epoch() + rng.random_range(1..1000);
                    journals[i] = Journal::new(ids[i], epoch, 8);
                    restarts += 1;
                }
                let key = rng.random_range(0..6u8);
                let update = match rng.random_range(0..3) {
                    0 => have(key, rng.random()),
                    1 => inflight(key),
                    _ => dropped(key),
                };
                sent.push(journals[i].record(update));
            }

            let mut in_order = Index::new(OWN);
            for t in &sent {
                assert!(matches!(in_order.apply(t.clone()), Applied::Applied(1)));
            }
            let mut truth = Index::new(OWN);
            for journal in &journals {
                truth.apply_reply(journal.since_in(0, 0));
            }
            let want = dump(&in_order);
            assert_eq!(dump(&truth), want, "round {round}: journals disagree");

            let mut delivered = sent.clone();
            for t in &sent {
                if rng.random_bool(0.3) {
                    delivered.push(t.clone());
                }
            }
            delivered.shuffle(&mut rng);

            let mut shuffled = Index::new(OWN);
            for t in &delivered {
                shuffled.apply(t.clone());
            }
            assert_eq!(dump(&shuffled), want, "round {round}: shuffled");

            let mut lossy = Index::new(OWN);
            for t in delivered.iter().filter(|_| rng.random_bool(0.7)) {
                lossy.apply(t.clone());
            }
            for journal in &journals {
                let (epoch, since) = lossy.applied(journal.node).unwrap_or((0, 0));
                let reply = journal.since_in(epoch, since);
                match &reply {
                    IndexReply::Updates { .. } => replies.0 += 1,
                    IndexReply::Snapshot { .. } => replies.1 += 1,
                }
                lossy.apply_reply(reply);
            }
            assert_eq!(dump(&lossy), want, "round {round}: lossy then pulled");

            for journal in &journals {
                let node = journal.node;
                let head = Some((journal.epoch(), journal.seq()));
                // A node that sent nothing is unknown unless pulled from.
                let sent_any = in_order.applied(node).is_some();
                assert_eq!(sent_any, journal.seq() > 0, "round {round}");
                assert_eq!(
                    shuffled.applied(node),
                    in_order.applied(node),
                    "round {round}"
                );
                assert_eq!(lossy.applied(node), head, "round {round}");
                assert_eq!(shuffled.gap(node), None, "round {round}");
                assert_eq!(lossy.gap(node), None, "round {round}");
            }
        }
        assert!(replies.0 > 10 && replies.1 > 10, "{replies:?}");
        assert!(restarts > 5, "{restarts}");
    }
}

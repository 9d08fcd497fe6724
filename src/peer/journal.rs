//! This node's own outgoing index updates: sequence numbers, the bounded journal that answers
//! incremental catch-up, and the snapshot stamp; pure: no I/O, no clocks.

use std::collections::{HashMap, VecDeque};

use super::wire::{Head, IndexReply, KeyHash, NodeId, Tagged, Update};

/// Default number of own updates a [`Journal`] keeps for incremental catch-up.
pub const DEFAULT_JOURNAL_CAPACITY: usize = 4096;

/// A snapshot's stamp, taken from a [`Journal`] before its entries are gathered.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotAt {
    node: NodeId,
    epoch: u64,
    seq: u64,
}

impl SnapshotAt {
    /// The whole `Snapshot` of `entries` (one update per key), sorted by key.
    pub fn of(self, entries: Vec<Update>) -> IndexReply {
        self.page(entries, None)
    }

    /// One page of a snapshot: `entries` sorted by key; `next` names the key to ask after when
    /// more follows.
    pub fn page(self, mut entries: Vec<Update>, next: Option<KeyHash>) -> IndexReply {
        entries.sort_by(|a, b| a.key().cmp(b.key()));
        IndexReply::Snapshot {
            node: self.node,
            epoch: self.epoch,
            seq: self.seq,
            entries,
            next,
        }
    }

    /// The same stamp at another seq: a later page of a snapshot that an asker started at
    /// `seq` (the entries are read now; see [`Journal::updates_since`] for why that is safe).
    pub fn at_seq(self, seq: u64) -> SnapshotAt {
        SnapshotAt { seq, ..self }
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
    /// Updates that fell off the full journal (askers behind them get a snapshot).
    evicted: u64,
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
            log: VecDeque::new(),
            evicted: 0,
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
                self.evicted += 1;
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
    #[cfg(test)]
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

    /// Where our stream stands, as a pull tells the node it asks.
    pub fn head(&self) -> Head {
        Head {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// The last seq assigned (0 before the first update).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Updates that fell off the journal because it was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
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
mod tests;

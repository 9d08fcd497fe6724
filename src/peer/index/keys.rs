//! The index's table of keys and their holds, laid out for memory: a key held by one node costs
//! one 32-byte record and a 4-byte slot in a hash table, no allocation of its own; pure: no I/O.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::peer::wire::KeyHash;

/// A node's slot: the index names nodes by a `u16`.
pub(super) type Slot = u16;

/// The index's name for a key: the first 16 bytes of its blake3 hash.
///
/// 128 bits keep two keys apart as well as the whole hash does for every purpose the index has:
/// by chance, two of even 10^12 keys share a prefix with odds of about 10^-15; on purpose, a
/// pair takes about 2^64 hashes to find, and buys nothing that a member (who holds the cluster
/// key, and so may advertise anything for any key) could not do more simply. A collision only
/// names a holder of one key as a holder of the other: a lookup asks that holder for the key by
/// its whole hash, gets nothing for it, and goes to the next source (bodies are checked against
/// their content hash in any case).
pub(super) type KeyId = [u8; 16];

/// The [`KeyId`] of a key hash.
pub(super) fn key_id(key: &KeyHash) -> KeyId {
    let mut id = [0; 16];
    id.copy_from_slice(&key[..16]);
    id
}

/// One node's hold on one key: 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Hold {
    pub node: Slot,
    /// The body's entry in the index's body table, or `IN_FLIGHT`.
    pub object: u32,
    /// Unix seconds, saturated at `u32::MAX` (year 2106, "for ever").
    pub fresh_until: u32,
}

/// No further holds: `KeyHolders::more` of a key held by one node.
const NO_MORE: u32 = u32::MAX;

/// One key and its holders (in no particular order): the first inline, the others in
/// [`Keys::more`]. 32 bytes.
#[derive(Debug)]
struct KeyHolders {
    key: KeyId,
    first: Hold,
    /// The key's slot in [`Keys::more`], or [`NO_MORE`].
    more: u32,
}

/// Every key with at least one hold.
///
/// Invariant: `records` holds each key once; `table` maps each key's hash to its position in
/// `records`, and nothing else; a `more` slot is used by exactly one record and is never empty.
#[derive(Debug, Default)]
pub(super) struct Keys {
    /// Dense: a removed record's place is taken by the last one, so the vector never holds
    /// holes (a hash table of whole records would leave up to half its room empty).
    records: Vec<KeyHolders>,
    /// Positions in `records`, by the key's hash.
    table: HashTable<u32>,
    /// The holds after the first of keys held by several nodes; a free slot is empty.
    more: Vec<Box<[Hold]>>,
    free_more: Vec<u32>,
    /// Randomly keyed, so that peers cannot aim at one bucket.
    hasher: RandomState,
}

impl Keys {
    fn hash(&self, key: &KeyId) -> u64 {
        self.hasher.hash_one(key)
    }

    fn position(&self, key: &KeyId) -> Option<usize> {
        let records = &self.records;
        self.table
            .find(self.hash(key), |&at| records[at as usize].key == *key)
            .map(|&at| at as usize)
    }

    /// Room for `n` more keys.
    pub(super) fn reserve(&mut self, n: usize) {
        self.records.reserve(n);
        let (records, hasher) = (&self.records, &self.hasher);
        self.table
            .reserve(n, |&at| hasher.hash_one(records[at as usize].key));
    }

    /// Keys with at least one hold.
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// The holds on `key` (none if nobody holds it).
    pub(super) fn holds(&self, key: &KeyHash) -> impl Iterator<Item = &Hold> {
        let record = self.position(&key_id(key)).map(|at| &self.records[at]);
        let more = record.and_then(|r| self.more.get(r.more as usize));
        record
            .map(|r| &r.first)
            .into_iter()
            .chain(more.into_iter().flat_map(|m| m.iter()))
    }

    /// Sets `hold.node`'s hold on `key`; returns the one it replaces, if any.
    pub(super) fn set(&mut self, key: &KeyHash, hold: Hold) -> Option<Hold> {
        let id = key_id(key);
        let (records, hasher) = (&self.records, &self.hasher);
        let entry = self.table.entry(
            hasher.hash_one(id),
            |&at| records[at as usize].key == id,
            |&at| hasher.hash_one(records[at as usize].key),
        );
        let at = match entry {
            hashbrown::hash_table::Entry::Occupied(found) => *found.get() as usize,
            hashbrown::hash_table::Entry::Vacant(room) => {
                room.insert(u32::try_from(self.records.len()).unwrap_or(u32::MAX));
                self.records.push(KeyHolders {
                    key: id,
                    first: hold,
                    more: NO_MORE,
                });
                return None;
            }
        };
        let record = &mut self.records[at];
        if record.first.node == hold.node {
            return Some(std::mem::replace(&mut record.first, hold));
        }
        if let Some(more) = self.more.get_mut(record.more as usize) {
            if let Some(old) = more.iter_mut().find(|h| h.node == hold.node) {
                return Some(std::mem::replace(old, hold));
            }
            let mut grown = Vec::with_capacity(more.len() + 1);
            grown.extend_from_slice(more);
            grown.push(hold);
            *more = grown.into_boxed_slice();
            return None;
        }
        record.more = match self.free_more.pop() {
            Some(slot) => {
                self.more[slot as usize] = Box::new([hold]);
                slot
            }
            None => {
                self.more.push(Box::new([hold]));
                // Fewer slots than keys, and fewer keys than positions.
                u32::try_from(self.more.len() - 1).unwrap_or(NO_MORE)
            }
        };
        None
    }

    /// Removes `node`'s hold on `key`; returns it, if there was one.
    pub(super) fn unset(&mut self, key: &KeyHash, node: Slot) -> Option<Hold> {
        let at = self.position(&key_id(key))?;
        self.take(at, node)
    }

    /// Removes `node`'s hold on every key, handing each to `removed`; one pass over the keys.
    pub(super) fn unset_all(&mut self, node: Slot, mut removed: impl FnMut(Hold)) {
        let mut at = 0;
        while at < self.records.len() {
            let before = self.records.len();
            if let Some(hold) = self.take(at, node) {
                removed(hold);
            }
            // A removed record's place was taken by the last one: look at it next.
            if self.records.len() == before {
                at += 1;
            }
        }
    }

    /// Removes `node`'s hold from the record at `at` (and the record if it was its last).
    fn take(&mut self, at: usize, node: Slot) -> Option<Hold> {
        let record = &mut self.records[at];
        let slot = record.more as usize;
        let Some(more) = self.more.get_mut(slot) else {
            if record.first.node != node {
                return None;
            }
            let hold = record.first;
            self.remove(at);
            return Some(hold);
        };
        let hold = if record.first.node == node {
            let hold = record.first;
            // A slot in use is never empty.
            record.first = *more.last()?;
            hold
        } else {
            let i = more.iter().position(|h| h.node == node)?;
            let hold = more[i];
            more[i] = more[more.len() - 1];
            hold
        };
        if more.len() == 1 {
            *more = Box::new([]);
            self.free_more.push(u32::try_from(slot).unwrap_or(NO_MORE));
            record.more = NO_MORE;
        } else {
            *more = more[..more.len() - 1].into();
        }
        Some(hold)
    }

    /// Removes the record at `at`; the last record takes its place.
    fn remove(&mut self, at: usize) {
        let hash = self.hash(&self.records[at].key);
        let pos = u32::try_from(at).unwrap_or(u32::MAX);
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == pos) {
            entry.remove();
        }
        let last = self.records.len() - 1;
        self.records.swap_remove(at);
        if at != last {
            let moved = self.hash(&self.records[at].key);
            let last = u32::try_from(last).unwrap_or(u32::MAX);
            if let Some(i) = self.table.find_mut(moved, |&i| i == last) {
                *i = pos;
            }
        }
    }

    /// Every key and its holds (tests compare whole states).
    #[cfg(test)]
    pub(super) fn all(&self) -> Vec<(KeyId, Vec<Hold>)> {
        self.records
            .iter()
            .map(|r| {
                let more = self.more.get(r.more as usize).map_or(&[][..], |m| &m[..]);
                (
                    r.key,
                    std::iter::once(r.first)
                        .chain(more.iter().copied())
                        .collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn hold(node: Slot, object: u32) -> Hold {
        Hold {
            node,
            object,
            fresh_until: object ^ 0x5555,
        }
    }

    type Model = BTreeMap<KeyId, BTreeMap<Slot, Hold>>;

    fn state(keys: &Keys) -> Model {
        keys.all()
            .into_iter()
            .map(|(id, holds)| {
                let by_node: BTreeMap<Slot, Hold> = holds.iter().map(|h| (h.node, *h)).collect();
                assert_eq!(by_node.len(), holds.len(), "one hold per node");
                (id, by_node)
            })
            .collect()
    }

    #[test]
    fn sets_unsets_and_whole_node_removals_match_a_plain_map() {
        let mut rng = StdRng::seed_from_u64(13);
        let mut keys = Keys::default();
        let mut model = Model::new();
        let key = |i: u8| [i; 32];
        for round in 0..20_000u32 {
            let (k, node) = (rng.random_range(0..40u8), rng.random_range(0..6 as Slot));
            match rng.random_range(0..10) {
                0..=5 => {
                    let h = hold(node, round);
                    let old = model.entry(key_id(&key(k))).or_default().insert(node, h);
                    assert_eq!(keys.set(&key(k), h), old);
                }
                6..=8 => {
                    let id = key_id(&key(k));
                    let old = model.get_mut(&id).and_then(|m| m.remove(&node));
                    model.retain(|_, m| !m.is_empty());
                    assert_eq!(keys.unset(&key(k), node), old);
                }
                _ if round % 50 == 0 => {
                    let mut want: Vec<Hold> =
                        model.values_mut().filter_map(|m| m.remove(&node)).collect();
                    model.retain(|_, m| !m.is_empty());
                    let mut got = Vec::new();
                    keys.unset_all(node, |h| got.push(h));
                    want.sort_by_key(|h| h.object);
                    got.sort_by_key(|h| h.object);
                    assert_eq!(got, want);
                }
                _ => {}
            }
            if round % 500 == 0 {
                assert_eq!(state(&keys), model, "round {round}");
            }
        }
        assert_eq!(state(&keys), model);
        assert_eq!(keys.len(), model.len());
        for (i, m) in (0..40u8).map(|i| (i, model.get(&key_id(&key(i))))) {
            let mut got: Vec<Hold> = keys.holds(&key(i)).copied().collect();
            got.sort_by_key(|h| h.node);
            let want: Vec<Hold> = m.map(|m| m.values().copied().collect()).unwrap_or_default();
            assert_eq!(got, want, "key {i}");
        }
        // Every record can be found by its key after all the moves.
        for (id, _) in keys.all() {
            let mut key = [0; 32];
            key[..16].copy_from_slice(&id);
            assert!(keys.holds(&key).next().is_some());
        }
    }

    #[test]
    fn a_key_held_by_one_node_costs_one_record_of_32_bytes() {
        assert_eq!(std::mem::size_of::<KeyHolders>(), 32);
        assert_eq!(std::mem::size_of::<Hold>(), 12);
        let mut keys = Keys::default();
        keys.set(&[1; 32], hold(1, 1));
        keys.set(&[2; 32], hold(1, 2));
        assert!(keys.more.is_empty(), "no slot for a single hold");
        keys.set(&[1; 32], hold(2, 3));
        assert_eq!(keys.more.len(), 1);
        keys.unset(&[1; 32], 1);
        assert_eq!(
            keys.free_more.len(),
            1,
            "back to one hold: the slot is freed"
        );
        let left: Vec<Hold> = keys.holds(&[1; 32]).copied().collect();
        assert_eq!(left, [hold(2, 3)]);
        keys.set(&[2; 32], hold(3, 4));
        assert!(keys.free_more.is_empty(), "a freed slot is used again");
    }
}

//! The index's table of keys and their holds, laid out for memory: a key held by one node costs
//! one 48-byte record (its body's id and length inline) and a 4-byte slot in a hash table, no
//! allocation of its own; pure: no I/O.

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
    prefix(key)
}

/// The first 16 bytes of a blake3 hash: what names a key ([`KeyId`]) or a body ([`BodyId`]).
fn prefix(hash: &[u8; 32]) -> [u8; 16] {
    let mut id = [0; 16];
    id.copy_from_slice(&hash[..16]);
    id
}

/// The index's name for a body: the first 16 bytes of its blake3 hash (the wire, gossip and
/// snapshots, carries the whole hash; the index keeps this much of it).
///
/// 128 bits name a body as well as the whole hash does for what the index is for, choosing
/// whom to ask: by chance, two of even 10^12 bodies share a prefix with odds of about 10^-15;
/// on purpose, a body whose id is that of a given body takes about 2^128 hashes (a second
/// preimage), a pair of bodies made to share one about 2^64 and buys nothing a member (who may
/// advertise anything) could not do more simply. The index never verifies a body: a requester
/// asks the holder for the key's entry, which carries the whole hash, takes the copy only if
/// that hash has this id (and the length is the index's), then verifies every piece against the
/// whole hash.
pub type BodyId = [u8; 16];

/// The [`BodyId`] of a body's blake3 hash.
pub fn body_id(hash: &[u8; 32]) -> BodyId {
    prefix(hash)
}

/// The longest body the index records: 2^48 - 2 bytes (256 TiB), the length kept in 6 bytes.
pub const MAX_LEN: u64 = (1 << 48) - 2;

/// The stored length of a record whose holds are all in flight: it names no body.
const NO_BODY: u64 = (1 << 48) - 1;

/// A complete body as the index names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Body {
    pub id: BodyId,
    /// At most [`MAX_LEN`].
    pub len: u64,
}

/// One node's hold on one key, as [`Keys`] takes and hands it (stored packed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Hold {
    pub node: Slot,
    /// Unix seconds, saturated at `u32::MAX` (year 2106, "for ever"); 0 for a fetch in flight.
    pub fresh_until: u32,
    /// The complete body held, or `None`: the node is fetching the key.
    pub body: Option<Body>,
}

/// No further holds: `KeyHolders::more` of a key held by one node.
const NO_MORE: u32 = u32::MAX;

/// One key, its body and its first hold; the other holds in [`Keys::more`]. 48 bytes.
///
/// Invariant: if any hold on the key is complete, the first is, and `body`/`len` are its body
/// (the key's inline body); else `len` is [`NO_BODY`].
#[derive(Debug)]
struct KeyHolders {
    key: KeyId,
    body: BodyId,
    /// Little-endian; [`NO_BODY`] when the key has no complete hold.
    len: [u8; 6],
    node: Slot,
    fresh_until: u32,
    /// The key's slot in [`Keys::more`], or [`NO_MORE`].
    more: u32,
}

impl KeyHolders {
    /// A record of `key` whose inline body is `body` and whose first hold is `first`.
    fn new(key: KeyId, first: Hold) -> Self {
        let (body, len) = match first.body {
            Some(b) => (b.id, b.len),
            None => ([0; 16], NO_BODY),
        };
        let mut packed = [0; 6];
        packed.copy_from_slice(&len.to_le_bytes()[..6]);
        KeyHolders {
            key,
            body,
            len: packed,
            node: first.node,
            fresh_until: first.fresh_until,
            more: NO_MORE,
        }
    }

    /// The key's inline body, if it has a complete hold.
    fn inline(&self) -> Option<Body> {
        let mut len = [0; 8];
        len[..6].copy_from_slice(&self.len);
        let len = u64::from_le_bytes(len);
        (len != NO_BODY).then_some(Body { id: self.body, len })
    }

    fn first(&self) -> Hold {
        Hold {
            node: self.node,
            fresh_until: self.fresh_until,
            body: self.inline(),
        }
    }
}

/// [`Small::body`] of a hold on the key's inline body.
const INLINE: u32 = u32::MAX;
/// [`Small::body`] of a hold in flight.
const IN_FLIGHT: u32 = u32::MAX - 1;

/// A hold after the first: 12 bytes.
#[derive(Clone, Copy, Debug)]
struct Small {
    node: Slot,
    fresh_until: u32,
    /// [`INLINE`], [`IN_FLIGHT`], or the hold's slot in [`Keys::odd`] (a body other than the
    /// key's inline one).
    body: u32,
}

/// Records per chunk of [`Records`].
const CHUNK: usize = 1024;

/// The key records, dense, in chunks of [`CHUNK`]: growing never copies them and leaves at most
/// one chunk's room unused (a doubling vector leaves up to half its room empty).
///
/// Invariant: every chunk but the last is full, and the last is not empty.
#[derive(Debug, Default)]
struct Records {
    chunks: Vec<Vec<KeyHolders>>,
    len: usize,
}

impl Records {
    fn get(&self, at: usize) -> &KeyHolders {
        &self.chunks[at / CHUNK][at % CHUNK]
    }

    fn get_mut(&mut self, at: usize) -> &mut KeyHolders {
        &mut self.chunks[at / CHUNK][at % CHUNK]
    }

    fn push(&mut self, record: KeyHolders) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(last) = self.chunks.last_mut() {
            last.push(record);
            self.len += 1;
        }
    }

    /// Removes the record at `at` (< len); the last record takes its place.
    fn swap_remove(&mut self, at: usize) {
        let Some(last_chunk) = self.chunks.last_mut() else {
            return;
        };
        let Some(last) = last_chunk.pop() else {
            return;
        };
        if last_chunk.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        if at < self.len {
            *self.get_mut(at) = last;
        }
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = &KeyHolders> {
        self.chunks.iter().flatten()
    }
}

/// Puts `value` in a free slot of `slab` (listed in `free`), else in a new one; returns the
/// slot. Callers keep fewer slots than `last`, which stands in for any slot past it.
pub(super) fn place<T>(slab: &mut Vec<T>, free: &mut Vec<u32>, value: T, last: u32) -> u32 {
    match free.pop() {
        Some(slot) => {
            slab[slot as usize] = value;
            slot
        }
        None => {
            slab.push(value);
            u32::try_from(slab.len() - 1).map_or(last, |slot| slot.min(last))
        }
    }
}

/// Every key with at least one hold.
///
/// Invariant: `records` holds each key once; `table` maps each key's hash to its position in
/// `records`, and nothing else; a `more` slot is used by exactly one record and is never empty;
/// an `odd` slot is used by exactly one [`Small`], whose body is not its key's inline one.
#[derive(Debug, Default)]
pub(super) struct Keys {
    /// Dense: a removed record's place is taken by the last one, so it never holds holes.
    records: Records,
    /// Positions in `records`, by the key's hash.
    table: HashTable<u32>,
    /// The holds after the first of keys held by several nodes; a free slot is empty.
    more: Vec<Box<[Small]>>,
    free_more: Vec<u32>,
    /// Bodies held under a key other than its inline one (rare: the holders of a key nearly
    /// always hold the same body); a free slot's value is stale.
    odd: Vec<Body>,
    free_odd: Vec<u32>,
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
            .find(self.hash(key), |&at| records.get(at as usize).key == *key)
            .map(|&at| at as usize)
    }

    /// Room for `n` more keys.
    pub(super) fn reserve(&mut self, n: usize) {
        let (records, hasher) = (&self.records, &self.hasher);
        self.table
            .reserve(n, |&at| hasher.hash_one(records.get(at as usize).key));
    }

    /// Keys with at least one hold.
    pub(super) fn len(&self) -> usize {
        self.records.len
    }

    /// Bodies held under a key other than its inline one.
    #[cfg(test)]
    pub(super) fn odd_bodies(&self) -> usize {
        self.odd.len() - self.free_odd.len()
    }

    /// The holds on `key` (none if nobody holds it).
    pub(super) fn holds(&self, key: &KeyHash) -> impl Iterator<Item = Hold> + '_ {
        let record = self.position(&key_id(key)).map(|at| self.records.get(at));
        let more = record.and_then(|r| Some((r, self.more.get(r.more as usize)?)));
        let rest = more
            .into_iter()
            .flat_map(move |(r, m)| m.iter().map(move |s| self.unpack(r, s)));
        record.map(KeyHolders::first).into_iter().chain(rest)
    }

    /// The hold `small` stands for in `record`.
    fn unpack(&self, record: &KeyHolders, small: &Small) -> Hold {
        let body = match small.body {
            INLINE => record.inline(),
            IN_FLIGHT => None,
            slot => self.odd.get(slot as usize).copied(),
        };
        Hold {
            node: small.node,
            fresh_until: small.fresh_until,
            body,
        }
    }

    /// Sets `hold.node`'s hold on `key`; returns the one it replaces, if any.
    pub(super) fn set(&mut self, key: &KeyHash, hold: Hold) -> Option<Hold> {
        let id = key_id(key);
        let (records, hasher) = (&self.records, &self.hasher);
        let entry = self.table.entry(
            hasher.hash_one(id),
            |&at| records.get(at as usize).key == id,
            |&at| hasher.hash_one(records.get(at as usize).key),
        );
        let at = match entry {
            hashbrown::hash_table::Entry::Occupied(found) => *found.get() as usize,
            hashbrown::hash_table::Entry::Vacant(room) => {
                room.insert(u32::try_from(self.records.len).unwrap_or(u32::MAX));
                self.records.push(KeyHolders::new(id, hold));
                return None;
            }
        };
        let record = self.records.get_mut(at);
        if record.more == NO_MORE && record.node == hold.node {
            let old = record.first();
            *record = KeyHolders::new(id, hold);
            return Some(old);
        }
        if let Some(old) = self.set_small(at, hold) {
            return old;
        }
        let (mut holds, inline) = self.take_all(at);
        let old = match holds.iter_mut().find(|h| h.node == hold.node) {
            Some(h) => Some(std::mem::replace(h, hold)),
            None => {
                holds.push(hold);
                None
            }
        };
        self.put_all(at, holds, inline);
        old
    }

    /// Sets or adds `hold` among the holds after the first of the record at `at` when it leaves
    /// the layout as it is (another node than the first's, holding the key's inline body or in
    /// flight): `Some` of the hold it replaces, if any; `None` if it would not (then
    /// [`Keys::put_all`] lays the holds out again).
    fn set_small(&mut self, at: usize, hold: Hold) -> Option<Option<Hold>> {
        let record = self.records.get(at);
        if record.node == hold.node {
            return None;
        }
        let body = match hold.body {
            None => IN_FLIGHT,
            Some(b) if Some(b) == record.inline() => INLINE,
            Some(_) => return None,
        };
        let small = Small {
            node: hold.node,
            fresh_until: hold.fresh_until,
            body,
        };
        let slot = record.more;
        let Some(more) = self.more.get(slot as usize) else {
            let slot = self.new_more(Box::new([small]));
            self.records.get_mut(at).more = slot;
            return Some(None);
        };
        let Some(i) = more.iter().position(|s| s.node == hold.node) else {
            let mut grown = Vec::with_capacity(more.len() + 1);
            grown.extend_from_slice(more);
            grown.push(small);
            self.more[slot as usize] = grown.into_boxed_slice();
            return Some(None);
        };
        let old = self.unpack(record, &more[i]);
        self.free_if_odd(more[i].body);
        self.more[slot as usize][i] = small;
        Some(Some(old))
    }

    /// Frees `body`'s slot in `odd` if it names one (not [`INLINE`] or [`IN_FLIGHT`]).
    fn free_if_odd(&mut self, body: u32) {
        if body != INLINE && body != IN_FLIGHT {
            self.free_odd.push(body);
        }
    }

    /// Removes `node`'s hold on `key`; returns it, if there was one.
    pub(super) fn unset(&mut self, key: &KeyHash, node: Slot) -> Option<Hold> {
        let at = self.position(&key_id(key))?;
        self.take(at, node)
    }

    /// Removes `node`'s hold on every key, handing each to `removed`; one pass over the keys.
    pub(super) fn unset_all(&mut self, node: Slot, mut removed: impl FnMut(Hold)) {
        let mut at = 0;
        while at < self.records.len {
            let before = self.records.len;
            if let Some(hold) = self.take(at, node) {
                removed(hold);
            }
            // A removed record's place was taken by the last one: look at it next.
            if self.records.len == before {
                at += 1;
            }
        }
    }

    /// Removes `node`'s hold from the record at `at` (and the record if it was its last).
    fn take(&mut self, at: usize, node: Slot) -> Option<Hold> {
        let record = self.records.get(at);
        let Some(more) = self.more.get(record.more as usize) else {
            if record.node != node {
                return None;
            }
            let hold = record.first();
            self.remove(at);
            return Some(hold);
        };
        if record.node != node {
            // Not the first: the others stay as they are.
            let i = more.iter().position(|s| s.node == node)?;
            let hold = self.unpack(record, &more[i]);
            let (slot, body) = (record.more, more[i].body);
            self.free_if_odd(body);
            let mut rest = std::mem::take(&mut self.more[slot as usize]).into_vec();
            rest.swap_remove(i);
            if rest.is_empty() {
                self.free_more.push(slot);
                self.records.get_mut(at).more = NO_MORE;
            } else {
                self.more[slot as usize] = rest.into_boxed_slice();
            }
            return Some(hold);
        }
        let (mut holds, inline) = self.take_all(at);
        let i = holds.iter().position(|h| h.node == node)?;
        let hold = holds.swap_remove(i);
        // The record had a `more` slot: at least one hold is left.
        self.put_all(at, holds, inline);
        Some(hold)
    }

    /// The holds of the record at `at`, its `more` and `odd` slots freed (the record keeps its
    /// first hold until [`Keys::put_all`]), and its inline body.
    fn take_all(&mut self, at: usize) -> (Vec<Hold>, Option<Body>) {
        let record = self.records.get(at);
        let mut holds = vec![record.first()];
        let inline = record.inline();
        let slot = record.more;
        if let Some(more) = self.more.get_mut(slot as usize) {
            let more = std::mem::take(more);
            self.free_more.push(slot);
            let record = self.records.get(at);
            holds.extend(more.iter().map(|s| self.unpack(record, s)));
            for s in more.iter() {
                self.free_if_odd(s.body);
            }
            self.records.get_mut(at).more = NO_MORE;
        }
        (holds, inline)
    }

    /// Stores `holds` (not empty) in the record at `at`, whose `more` slot is free: the inline
    /// body stays `inline` if a hold still holds it, else becomes the first complete hold's.
    fn put_all(&mut self, at: usize, mut holds: Vec<Hold>, inline: Option<Body>) {
        let inline = inline
            .filter(|b| holds.iter().any(|h| h.body == Some(*b)))
            .or_else(|| holds.iter().find_map(|h| h.body));
        let first = inline
            .and_then(|b| holds.iter().position(|h| h.body == Some(b)))
            .unwrap_or(0);
        if first >= holds.len() {
            return;
        }
        let first = holds.swap_remove(first);
        let key = self.records.get(at).key;
        let mut record = KeyHolders::new(key, first);
        if !holds.is_empty() {
            let more: Box<[Small]> = holds
                .iter()
                .map(|h| Small {
                    node: h.node,
                    fresh_until: h.fresh_until,
                    body: match h.body {
                        None => IN_FLIGHT,
                        Some(b) if Some(b) == inline => INLINE,
                        Some(b) => self.new_odd(b),
                    },
                })
                .collect();
            record.more = self.new_more(more);
        }
        *self.records.get_mut(at) = record;
    }

    /// A slot in `odd` holding `body` (one per hold: fewer than [`IN_FLIGHT`]).
    fn new_odd(&mut self, body: Body) -> u32 {
        place(&mut self.odd, &mut self.free_odd, body, IN_FLIGHT - 1)
    }

    /// A slot in `more` holding `holds` (fewer than keys, and keys fewer than positions).
    fn new_more(&mut self, holds: Box<[Small]>) -> u32 {
        place(&mut self.more, &mut self.free_more, holds, NO_MORE - 1)
    }

    /// Removes the record at `at`; the last record takes its place.
    fn remove(&mut self, at: usize) {
        let hash = self.hash(&self.records.get(at).key);
        let pos = u32::try_from(at).unwrap_or(u32::MAX);
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == pos) {
            entry.remove();
        }
        let last = self.records.len - 1;
        self.records.swap_remove(at);
        if at != last {
            let moved = self.hash(&self.records.get(at).key);
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
                let rest = more.iter().map(|s| self.unpack(r, s));
                (r.key, std::iter::once(r.first()).chain(rest).collect())
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

    fn body(b: u8) -> Body {
        Body {
            id: [b; 16],
            len: u64::from(b) * 10,
        }
    }

    /// A hold of `node` on body `b` (0: in flight), its freshness telling holds apart.
    fn hold(node: Slot, b: u8, fresh_until: u32) -> Hold {
        Hold {
            node,
            fresh_until,
            body: (b > 0).then(|| body(b)),
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

    /// The layout's invariants: a complete hold first whenever there is one, odd bodies only
    /// for bodies other than the inline one, and every odd slot used once.
    fn check_layout(keys: &Keys) {
        let mut odd_used = 0;
        for r in keys.records.iter() {
            let more = keys.more.get(r.more as usize).map_or(&[][..], |m| &m[..]);
            assert!(
                r.more == NO_MORE || !more.is_empty(),
                "a used slot is never empty"
            );
            let any_complete = more.iter().any(|s| s.body != IN_FLIGHT);
            assert!(r.inline().is_some() || !any_complete, "complete hold first");
            for s in more
                .iter()
                .filter(|s| s.body != INLINE && s.body != IN_FLIGHT)
            {
                odd_used += 1;
                assert_ne!(Some(keys.odd[s.body as usize]), r.inline(), "odd is odd");
            }
        }
        assert_eq!(odd_used, keys.odd_bodies());
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
                    // Mostly one body per key (the key's number), now and then another or none.
                    let b = match rng.random_range(0..6) {
                        0 => 0,
                        1 => rng.random_range(1..4),
                        _ => k + 1,
                    };
                    let h = hold(node, b, round);
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
                    want.sort_by_key(|h| h.fresh_until);
                    got.sort_by_key(|h| h.fresh_until);
                    assert_eq!(got, want);
                }
                _ => {}
            }
            if round % 500 == 0 {
                assert_eq!(state(&keys), model, "round {round}");
                check_layout(&keys);
            }
        }
        assert_eq!(state(&keys), model);
        check_layout(&keys);
        assert_eq!(keys.len(), model.len());
        for (i, m) in (0..40u8).map(|i| (i, model.get(&key_id(&key(i))))) {
            let mut got: Vec<Hold> = keys.holds(&key(i)).collect();
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
    fn a_key_held_by_one_node_costs_one_record_of_48_bytes() {
        assert_eq!(std::mem::size_of::<KeyHolders>(), 48);
        assert_eq!(std::mem::size_of::<Small>(), 12);
        let mut keys = Keys::default();
        keys.set(&[1; 32], hold(1, 1, 10));
        keys.set(&[2; 32], hold(1, 2, 20));
        assert!(keys.more.is_empty(), "no slot for a single hold");
        keys.set(&[1; 32], hold(2, 1, 30));
        assert_eq!(keys.more.len(), 1);
        assert_eq!(keys.odd_bodies(), 0, "the same body is kept once");
        keys.unset(&[1; 32], 1);
        assert_eq!(
            keys.free_more.len(),
            1,
            "back to one hold: the slot is freed"
        );
        let left: Vec<Hold> = keys.holds(&[1; 32]).collect();
        assert_eq!(left, [hold(2, 1, 30)]);
        keys.set(&[2; 32], hold(3, 2, 40));
        assert!(keys.free_more.is_empty(), "a freed slot is used again");
    }

    #[test]
    fn records_grow_by_chunks_and_stay_dense_through_removals() {
        let mut keys = Keys::default();
        let key = |i: u32| {
            let mut k = [0; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k
        };
        let n = 2 * CHUNK as u32 + 5;
        for i in 0..n {
            keys.set(&key(i), hold(1, 1, i));
        }
        assert_eq!(keys.records.chunks.len(), 3);
        assert!(keys.records.chunks.iter().all(|c| c.capacity() == CHUNK));
        // Removing from the front moves the last records in; the last chunk goes when empty.
        for i in 0..6 {
            assert_eq!(keys.unset(&key(i), 1), Some(hold(1, 1, i)));
        }
        assert_eq!((keys.len(), keys.records.chunks.len()), (n as usize - 6, 2));
        for i in 6..n {
            assert_eq!(keys.holds(&key(i)).collect::<Vec<_>>(), [hold(1, 1, i)]);
        }
    }

    #[test]
    fn a_holder_of_another_body_is_odd_until_it_is_the_only_one() {
        let mut keys = Keys::default();
        let k = [7; 32];
        // In flight first: the record names no body; a complete hold then takes the front.
        keys.set(&k, hold(1, 0, 0));
        keys.set(&k, hold(2, 5, 50));
        assert_eq!(keys.records.get(0).inline(), Some(body(5)));
        assert_eq!(keys.records.get(0).node, 2);
        // Another body under the same key is odd; the same body again is not.
        keys.set(&k, hold(3, 6, 60));
        keys.set(&k, hold(4, 5, 51));
        assert_eq!(keys.odd_bodies(), 1);
        // Releasing the odd hold frees its body; replacing the inline holders keeps the
        // inline body while one holds it, then the remaining body moves inline.
        keys.set(&k, hold(3, 0, 0));
        assert_eq!(keys.odd_bodies(), 0);
        keys.set(&k, hold(3, 6, 61));
        assert_eq!(keys.odd_bodies(), 1);
        keys.unset(&k, 2);
        assert_eq!(
            keys.records.get(0).inline(),
            Some(body(5)),
            "node 4 holds it"
        );
        keys.set(&k, hold(4, 0, 0));
        assert_eq!(keys.records.get(0).inline(), Some(body(6)));
        assert_eq!(keys.odd_bodies(), 0, "the odd body became the inline one");
        let mut got: Vec<Hold> = keys.holds(&k).collect();
        got.sort_by_key(|h| h.node);
        assert_eq!(got, [hold(1, 0, 0), hold(3, 6, 61), hold(4, 0, 0)]);
        keys.unset_all(3, |_| {});
        assert_eq!(keys.records.get(0).inline(), None, "all in flight");
        keys.unset_all(1, |_| {});
        keys.unset_all(4, |_| {});
        assert_eq!((keys.len(), keys.odd_bodies()), (0, 0));
    }
}

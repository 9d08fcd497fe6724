//! The in-memory index of stored URLs, small enough for millions of entries: per URL only its
//! key hash, its weight in the size budget, whether a variant may be shared, and the blobs its
//! variants reference (~100 bytes). Heads stay in redb rows and a bounded memory cache.
//!
//! Eviction is CLOCK (second chance), an LRU approximation with O(1) bookkeeping: a lookup marks
//! a URL referenced; when the total weight exceeds the budget, the hand walks the slots, clears
//! marks and evicts the first unmarked URL it meets. New URLs start unmarked, so a scan of
//! one-time objects evicts itself before it evicts anything that was asked for twice.
//!
//! Pure data structure: no I/O, no locking (the store holds it under a mutex).

use hashbrown::HashTable;

/// A URL's identity in memory, on disk and in the peer group: blake3 of the cache key.
pub type Fp = [u8; 32];

/// What the index keeps about one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Bytes the URL costs in the size budget (bodies plus an estimate of their heads).
    pub weight: u64,
    /// Some variant may be handed to other machines.
    pub shareable: bool,
    /// Version of the URL's row (increases with every change), to tell a cached head current.
    pub gen: u64,
    /// Bodies its variants reference, one reference each.
    pub blobs: Box<[blake3::Hash]>,
}

/// One URL that left the index; the caller releases its blobs and deletes its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub fp: Fp,
    pub blobs: Box<[blake3::Hash]>,
}

#[derive(Debug)]
struct Slot {
    fp: Fp,
    meta: Meta,
    referenced: bool,
    live: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Index {
    /// Slot numbers, found by the slot's own `fp` (so the 32-byte hash is stored once). An `fp`
    /// is a blake3 output, uniformly random: its first bytes are the table's hash.
    map: HashTable<u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    hand: usize,
    weight: u64,
    max_weight: u64,
}

impl Index {
    /// An empty index that keeps the total weight at or below `max_weight`.
    pub fn new(max_weight: u64) -> Self {
        Index {
            map: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            weight: 0,
            max_weight,
        }
    }

    fn hash(fp: &Fp) -> u64 {
        u64::from_le_bytes(fp[..8].try_into().expect("8 bytes"))
    }

    fn find(&self, fp: &Fp) -> Option<usize> {
        self.map
            .find(Self::hash(fp), |&i| self.slots[i as usize].fp == *fp)
            .map(|&i| i as usize)
    }

    /// Removes `fp` from the table (not from its slot).
    fn unmap(&mut self, fp: &Fp) -> Option<usize> {
        let slots = &self.slots;
        let found = self
            .map
            .find_entry(Self::hash(fp), |&i| slots[i as usize].fp == *fp)
            .ok()?;
        let (i, _) = found.remove();
        Some(i as usize)
    }

    /// Number of URLs held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total weight of the URLs held.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// The `gen` held for `fp`, if any; marks it referenced (a use).
    pub fn touch(&mut self, fp: &Fp) -> Option<u64> {
        let i = self.find(fp)?;
        let slot = &mut self.slots[i];
        slot.referenced = true;
        Some(slot.meta.gen)
    }

    /// What is held for `fp`, without marking it.
    pub fn get(&self, fp: &Fp) -> Option<&Meta> {
        self.find(fp).map(|i| &self.slots[i].meta)
    }

    /// Holds `meta` for `fp`, replacing what was held; returns the replaced blobs (the caller
    /// releases them). Does not evict: call [`Index::evict`] next.
    pub fn insert(&mut self, fp: Fp, meta: Meta) -> Option<Box<[blake3::Hash]>> {
        self.weight += meta.weight;
        if let Some(i) = self.find(&fp) {
            let slot = &mut self.slots[i];
            let old = std::mem::replace(&mut slot.meta, meta);
            self.weight -= old.weight;
            return Some(old.blobs);
        }
        let slot = Slot {
            fp,
            meta,
            referenced: false,
            live: true,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 URLs")
            }
        };
        let slots = &self.slots;
        self.map
            .insert_unique(Self::hash(&fp), i, |&j| Self::hash(&slots[j as usize].fp));
        None
    }

    /// Forgets `fp`; `None` if it was not held.
    pub fn remove(&mut self, fp: &Fp) -> Option<Removed> {
        let i = self.unmap(fp)?;
        Some(self.vacate(i))
    }

    fn vacate(&mut self, i: usize) -> Removed {
        let slot = &mut self.slots[i];
        slot.live = false;
        slot.referenced = false;
        let meta = std::mem::replace(
            &mut slot.meta,
            Meta {
                weight: 0,
                shareable: false,
                gen: 0,
                blobs: Box::new([]),
            },
        );
        self.weight -= meta.weight;
        self.free.push(i as u32);
        Removed {
            fp: slot.fp,
            blobs: meta.blobs,
        }
    }

    /// Evicts URLs until the total weight is within the budget, sparing `keep` (the URL just
    /// stored). Returns what left, in eviction order.
    pub fn evict(&mut self, keep: &Fp) -> Vec<Removed> {
        let mut out = Vec::new();
        // Two full turns clear every mark; a third finds only `keep` or nothing left to evict.
        let mut budget = self.slots.len().saturating_mul(3);
        while self.weight > self.max_weight && budget > 0 && !self.slots.is_empty() {
            budget -= 1;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[self.hand];
            if !slot.live || slot.fp == *keep {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            let fp = slot.fp;
            self.unmap(&fp);
            out.push(self.vacate(self.hand));
        }
        out
    }

    /// Every URL held, with its meta (in no particular order).
    pub fn iter(&self) -> impl Iterator<Item = (&Fp, &Meta)> {
        self.slots
            .iter()
            .filter(|s| s.live)
            .map(|s| (&s.fp, &s.meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fp {
        [n; 32]
    }

    fn meta(weight: u64, blob: u8) -> Meta {
        Meta {
            weight,
            shareable: true,
            gen: 1,
            blobs: vec![blake3::hash(&[blob])].into_boxed_slice(),
        }
    }

    fn fill(ix: &mut Index, n: u8) {
        for i in 0..n {
            ix.insert(fp(i), meta(10, i));
            assert!(ix.evict(&fp(i)).is_empty());
        }
    }

    #[test]
    fn insert_replace_remove_keep_the_weight_exact() {
        let mut ix = Index::new(1000);
        assert_eq!(ix.insert(fp(1), meta(10, 1)), None);
        assert_eq!(ix.insert(fp(2), meta(20, 2)), None);
        assert_eq!(ix.weight(), 30);
        let old = ix.insert(fp(1), meta(5, 3)).expect("replaced");
        assert_eq!(&*old, &[blake3::hash(&[1])]);
        assert_eq!(ix.weight(), 25);
        assert_eq!(ix.get(&fp(1)).map(|m| m.weight), Some(5));
        let gone = ix.remove(&fp(2)).expect("held");
        assert_eq!((gone.fp, ix.weight(), ix.len()), (fp(2), 5, 1));
        assert_eq!(ix.remove(&fp(2)), None);
        // A freed slot is reused.
        ix.insert(fp(9), meta(1, 9));
        assert_eq!(ix.slots.len(), 2);
        assert_eq!(ix.iter().count(), 2);
    }

    #[test]
    fn unreferenced_urls_go_first_and_a_touch_buys_a_second_chance() {
        let mut ix = Index::new(50);
        fill(&mut ix, 5);
        assert_eq!(ix.touch(&fp(0)), Some(1));
        assert_eq!(ix.touch(&fp(1)), Some(1));
        assert_eq!(ix.touch(&fp(200)), None);
        ix.insert(fp(5), meta(10, 5));
        let gone = ix.evict(&fp(5));
        assert_eq!(gone.len(), 1);
        assert!(
            gone[0].fp != fp(0) && gone[0].fp != fp(1) && gone[0].fp != fp(5),
            "evicted a referenced or the new URL: {:?}",
            gone[0].fp[0]
        );
        assert_eq!(ix.weight(), 50);
        assert!(ix.get(&fp(0)).is_some() && ix.get(&fp(1)).is_some());
    }

    #[test]
    fn when_everything_is_referenced_the_hand_clears_marks_and_still_evicts() {
        let mut ix = Index::new(40);
        fill(&mut ix, 4);
        for i in 0..4 {
            ix.touch(&fp(i));
        }
        ix.insert(fp(4), meta(25, 4));
        let gone = ix.evict(&fp(4));
        assert_eq!((gone.len(), ix.weight()), (3, 35), "{gone:?}");
        assert!(ix.get(&fp(4)).is_some(), "the URL just stored stays");
    }

    #[test]
    fn the_url_just_stored_is_spared_even_when_it_alone_is_over_budget() {
        let mut ix = Index::new(10);
        ix.insert(fp(1), meta(8, 1));
        ix.insert(fp(2), meta(30, 2));
        let gone = ix.evict(&fp(2));
        assert_eq!(gone.iter().map(|r| r.fp).collect::<Vec<_>>(), vec![fp(1)]);
        assert_eq!((ix.len(), ix.weight()), (1, 30));
        assert!(
            ix.evict(&fp(2)).is_empty(),
            "terminates with nothing else to evict"
        );
    }

    #[test]
    fn a_one_time_scan_does_not_flush_a_url_used_twice() {
        let mut ix = Index::new(100);
        ix.insert(fp(0), meta(10, 0));
        ix.touch(&fp(0));
        for i in 1..=200u8 {
            ix.insert(fp(i), meta(10, i));
            ix.evict(&fp(i));
            if i % 5 == 0 {
                ix.touch(&fp(0)); // still in use
            }
        }
        assert!(ix.get(&fp(0)).is_some(), "the URL in use survived the scan");
        assert!(ix.weight() <= 100);
    }
}

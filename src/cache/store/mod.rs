//! The on-disk cache: metadata rows in redb (`rows`), bodies as files named by their blake3
//! hash (`blobs`), and a compact in-memory index (`cache::index`) that bounds the total size;
//! heads of recently used URLs and small verified bodies are kept in two bounded memory caches
//! (`hot`). This module keeps the three in step: one order of changes, a change reported only
//! once its row is durable. Blocking I/O: async callers use [`Store::lookup`] or go through
//! `spawn_blocking`.

mod blobs;
mod hot;
mod rows;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http::HeaderMap;

use crate::cache::head::{Entry, Head, PackedHeaders};
use crate::cache::index::{Fp, Index, Meta};
use crate::cache::key::key_hash;
use crate::cache::outboard::Outboard;
use crate::cache::policy::Timing;
use crate::error::Result;

use self::blobs::Blobs;
use self::rows::{RowOp, Rows};

pub use self::hot::{HEADS_BYTES, HOT_BYTES};

/// At most this many Vary variants are kept per URL; the oldest goes first.
const MAX_VARIANTS: usize = 8;

/// All stored variants of one URL. Replaced as a whole on every change; `gen` tells versions apart.
#[derive(Debug)]
pub struct Variants {
    pub gen: u64,
    pub entries: Vec<Arc<Entry>>,
}

impl Variants {
    /// What the in-memory index keeps about these variants.
    fn meta(&self) -> Meta {
        Meta {
            weight: self.entries.iter().map(|e| e.weight_bytes()).sum(),
            shareable: self.entries.iter().any(|e| e.shareable),
            gen: self.gen,
            blobs: self.entries.iter().map(|e| e.hash).collect(),
        }
    }
}

struct Inner {
    rows: Rows,
    blobs: Blobs,
    /// Serialises changes (row queued, index and heads updated) so they apply in one order.
    commit_lock: Mutex<()>,
    /// Every stored URL; taken briefly, inside `commit_lock` when both are held.
    index: Mutex<Index>,
    /// Decoded variants of recently used URLs, checked against the index's `gen`.
    heads: hot::Heads,
    next_gen: AtomicU64,
    /// Told the key hash of every URL that left the store (evicted or invalidated).
    on_removed: std::sync::OnceLock<RemovalHook>,
}

/// See [`Store::on_removed`].
pub type RemovalHook = Box<dyn Fn(&Fp) + Send + Sync>;

/// What memory alone says about a URL (see [`Store::lookup`]).
enum InMemory {
    Absent,
    Found(Arc<Variants>),
    /// Stored, with its row not in the heads cache: this `gen` is to be read from disk.
    OnDisk(u64),
}

impl Inner {
    fn in_memory(&self, fp: &Fp) -> InMemory {
        let Some(gen) = lock(&self.index).touch(fp) else {
            return InMemory::Absent;
        };
        match self.heads.get(fp) {
            Some(v) if v.gen == gen => InMemory::Found(v),
            _ => InMemory::OnDisk(gen),
        }
    }

    /// The current variants of the URL with key hash `fp` (reads its row on a heads-cache
    /// miss). `None` also when the row on disk is not yet the version the index holds (its
    /// change is still queued).
    fn get(&self, fp: &Fp) -> Option<Arc<Variants>> {
        match self.in_memory(fp) {
            InMemory::Absent => None,
            InMemory::Found(v) => Some(v),
            InMemory::OnDisk(gen) => self.load(fp, gen),
        }
    }

    /// Reads version `gen` of `fp`'s row into the heads cache.
    fn load(&self, fp: &Fp, gen: u64) -> Option<Arc<Variants>> {
        let v = Arc::new(self.rows.read(fp).filter(|v| v.gen == gen)?);
        self.heads.insert(*fp, v.clone());
        Some(v)
    }

    /// Forgets the URL `fp` in memory (index, heads, blob references) if `held` accepts what
    /// the index holds of it; `true` if it did.
    fn forget(&self, fp: &Fp, held: impl Fn(&Meta) -> bool) -> bool {
        let gone = {
            let mut index = lock(&self.index);
            match index.get(fp) {
                Some(m) if held(m) => index.remove(fp),
                _ => None,
            }
        };
        let Some(gone) = gone else {
            return false;
        };
        self.heads.invalidate(fp);
        self.blobs.release(&gone.blobs);
        true
    }

    fn removed(&self, fps: &[Fp]) {
        if let Some(hook) = self.on_removed.get() {
            for fp in fps {
                hook(fp);
            }
        }
    }
}

/// The cache store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Verified small bodies by content hash, so that hot objects skip the disk and the re-hash.
    hot: hot::Bodies,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Statistics for the status page.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StoreStats {
    pub urls: u64,
    /// Bytes counted against `max_size` (bodies and a small charge per URL).
    pub used_bytes: u64,
    pub weighted_kib: u64,
    pub blobs: u64,
}

impl Store {
    /// Opens (or creates) the cache under `dir`, bounded to `max_size` bytes: loads every valid
    /// row, drops rows whose blob is missing or of the wrong size, removes orphan blobs and
    /// leftover temporary files (a crash leaves nothing that is later served as complete).
    pub fn open(dir: &Path, max_size: u64) -> Result<Store> {
        let blobs = Blobs::open(dir)?;
        let rows = Rows::open(&dir.join("index.redb"))?;
        Self::with(blobs, rows, max_size)
    }

    fn with(blobs: Blobs, rows: Rows, max_size: u64) -> Result<Store> {
        let inner = Arc::new(Inner {
            rows,
            blobs,
            commit_lock: Mutex::new(()),
            index: Mutex::new(Index::new(max_size)),
            heads: hot::heads(),
            next_gen: AtomicU64::new(1),
            on_removed: std::sync::OnceLock::new(),
        });
        let store = Store {
            inner,
            hot: hot::bodies(),
        };
        store.load()?;
        Ok(store)
    }

    fn load(&self) -> Result<()> {
        let inner = &self.inner;
        let mut rewrite: Vec<(Fp, Option<Vec<u8>>)> = Vec::new();
        let mut max_gen = 0;
        {
            let rows = inner.rows.scan(|e| inner.blobs.present(e))?;
            let mut index = lock(&inner.index);
            for row in rows {
                let Some((key, total, variants)) = row.decoded.filter(|d| !d.2.entries.is_empty())
                else {
                    rewrite.push((row.fp, None));
                    continue;
                };
                if variants.entries.len() != total {
                    rewrite.push((row.fp, Some(Rows::encode(&key, &variants)?)));
                }
                max_gen = max_gen.max(variants.gen);
                inner.blobs.retain(&variants.entries);
                index.insert(row.fp, variants.meta());
            }
            // A smaller max_size than last time: evict down to it now.
            for gone in index.evict(&[0; 32]) {
                inner.blobs.release(&gone.blobs);
                rewrite.push((gone.fp, None));
            }
        }
        inner.next_gen.store(max_gen + 1, Ordering::Relaxed);
        let mut last = None;
        for (fp, row) in rewrite {
            last = Some(inner.rows.queue(fp, row.map_or(RowOp::Delete, RowOp::Put)));
        }
        if let Some(last) = last {
            rows::wait(last)?;
        }
        inner.blobs.sweep_orphans();
        Ok(())
    }

    /// Opens the blob of `entry` for reading; `None` if it is missing or has the wrong size.
    pub fn open_blob(&self, entry: &Entry) -> Option<File> {
        self.inner.blobs.open_for(entry)
    }

    /// A new temporary file for a body being downloaded, opened for reading and writing.
    pub fn temp_file(&self) -> io::Result<(PathBuf, File)> {
        self.inner.blobs.temp_file()
    }

    /// The stored variants of a URL, if any. Blocking: may read its row from disk.
    pub fn get(&self, key: &str) -> Option<Arc<Variants>> {
        self.inner.get(&key_hash(key))
    }

    /// [`Store::get`] for async callers: answers from memory when it can, else reads the row on
    /// the blocking pool.
    pub async fn lookup(&self, key: &str) -> Option<Arc<Variants>> {
        self.lookup_hash(&key_hash(key)).await
    }

    /// [`Store::lookup`] by key hash (peers ask by hash; the entries carry the key).
    pub async fn lookup_hash(&self, fp: &Fp) -> Option<Arc<Variants>> {
        match self.inner.in_memory(fp) {
            InMemory::Absent => None,
            InMemory::Found(v) => Some(v),
            InMemory::OnDisk(gen) => {
                let (inner, fp) = (self.inner.clone(), *fp);
                tokio::task::spawn_blocking(move || inner.load(&fp, gen))
                    .await
                    .ok()
                    .flatten()
            }
        }
    }

    /// Does some shareable entry use this body? Only such bodies are handed to other machines
    /// by content hash (a private entry may share a public response's blob).
    pub fn is_shared_body(&self, hash: &blake3::Hash) -> bool {
        self.inner.blobs.is_shared(hash)
    }

    /// Does the store hold a variant of `key` that may be handed to other machines?
    pub fn holds_shareable(&self, key: &str) -> bool {
        lock(&self.inner.index)
            .get(&key_hash(key))
            .is_some_and(|m| m.shareable)
    }

    /// Stores a complete, verified body (the temp file at `temp`, whose blake3 is `entry.hash`)
    /// with its head. The body becomes visible only once it is renamed into `objects/` and its
    /// row is committed. Replaces a stored entry with the same variant. An error means it is
    /// not stored: not in memory, and its row not durable.
    pub fn commit(&self, entry: Entry, temp: &Path) -> Result<Arc<Entry>> {
        let hash = entry.hash;
        self.inner.blobs.place(temp, &hash, entry.len)?;
        let stored = self.put(entry);
        self.inner.blobs.release(&[hash]); // the reference taken by `place`; `put` took its own
        stored
    }

    /// Replaces the head of a stored entry (after a 304), keeping its body.
    pub fn freshen(&self, old: &Entry, headers: HeaderMap, timing: Timing) -> Result<Arc<Entry>> {
        let entry = Entry {
            head: Head {
                headers: PackedHeaders::pack(&headers),
                timing,
                ..old.head.clone()
            },
            ..old.clone()
        };
        self.put(entry)
    }

    /// Inserts `entry` into the variants of its key: queues the row, updates the index (taking
    /// references to the new set of blobs, releasing the old), evicts beyond the size budget,
    /// then waits until the row is durable. A row that could not be made durable is undone in
    /// memory (the URL is forgotten) and reported as an error: never served, never advertised.
    fn put(&self, entry: Entry) -> Result<Arc<Entry>> {
        let inner = &self.inner;
        let entry = Arc::new(entry);
        let fp = key_hash(&entry.key);
        let (ours, gen, last, evicted) = {
            let _guard = lock(&inner.commit_lock);
            // The other variants, when their current version is at hand (a row still queued
            // reads as absent: the new entry then stands alone, which is merely a smaller cache).
            let mut entries: Vec<Arc<Entry>> = inner
                .get(&fp)
                .map(|v| {
                    v.entries
                        .iter()
                        .filter(|e| e.variant != entry.variant)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            entries.insert(0, entry.clone());
            entries.truncate(MAX_VARIANTS);
            let variants = Variants {
                gen: inner.next_gen.fetch_add(1, Ordering::Relaxed),
                entries,
            };
            let row = Rows::encode(&entry.key, &variants)?;
            let meta = variants.meta();
            let gen = variants.gen;
            inner.blobs.retain(&variants.entries);
            let ours = inner.rows.queue(fp, RowOp::Put(row));
            inner.heads.insert(fp, Arc::new(variants));
            let (replaced, evicted) = {
                let mut index = lock(&inner.index);
                let replaced = index.insert(fp, meta);
                (replaced, index.evict(&fp))
            };
            if let Some(old) = replaced {
                inner.blobs.release(&old);
            }
            let mut last = None;
            for gone in &evicted {
                inner.heads.invalidate(&gone.fp);
                inner.blobs.release(&gone.blobs);
                last = Some(inner.rows.queue(gone.fp, RowOp::Delete));
            }
            (ours, gen, last, evicted)
        };
        // Outside the lock, so that concurrent commits share one transaction.
        let durable = rows::wait(ours);
        if let Some(last) = last {
            if let Err(e) = rows::wait(last) {
                tracing::error!(
                    "evicted rows not deleted on disk (dropped at the next start): {e}"
                );
            }
        }
        inner.removed(&evicted.iter().map(|g| g.fp).collect::<Vec<_>>());
        if let Err(e) = durable {
            tracing::error!(key = %entry.key, "the row could not be made durable; not stored: {e}");
            // Only this version: a newer one stored meanwhile stands.
            let _guard = lock(&inner.commit_lock);
            if inner.forget(&fp, |m| m.gen == gen) {
                inner.removed(&[fp]);
            }
            return Err(e);
        }
        Ok(entry)
    }

    /// Forgets every variant of `key` (invalidation after an unsafe method).
    /// The row is deleted before this returns.
    pub fn invalidate(&self, key: &str) -> Result<()> {
        self.invalidate_where(key, |_| true)
    }

    /// Forgets every variant of `key` if one of them still uses the body `hash` (its blob was
    /// found missing or corrupt). A reader holding an older version must not drop a newer one
    /// stored meanwhile, whose blob is fine.
    pub fn invalidate_if_uses(&self, key: &str, hash: &blake3::Hash) -> Result<()> {
        self.invalidate_where(key, |m| m.blobs.contains(hash))
    }

    fn invalidate_where(&self, key: &str, held: impl Fn(&Meta) -> bool) -> Result<()> {
        let inner = &self.inner;
        let fp = key_hash(key);
        let deleted = {
            let _guard = lock(&inner.commit_lock);
            if !inner.forget(&fp, held) {
                return Ok(());
            }
            inner.rows.queue(fp, RowOp::Delete)
        };
        rows::wait(deleted)?;
        inner.removed(&[fp]);
        Ok(())
    }

    pub fn stats(&self) -> StoreStats {
        let (urls, weight) = {
            let index = lock(&self.inner.index);
            (index.len() as u64, index.weight())
        };
        StoreStats {
            urls,
            used_bytes: weight,
            weighted_kib: weight.div_ceil(1024),
            blobs: self.inner.blobs.count() as u64,
        }
    }

    /// Calls `f` with the rows (a key's hash and its variants) after `after` (from the first
    /// when `None`), in key-hash order, at most `max_rows` of them. Returns the last row's hash
    /// when it stopped at `max_rows` (more may follow), `None` at the end. Blocking: reads from
    /// disk, one short read transaction, so a caller pages through a large store in steps.
    pub fn for_each_row_after(
        &self,
        after: Option<&Fp>,
        max_rows: usize,
        f: impl FnMut(&Fp, &[Arc<Entry>]),
    ) -> Option<Fp> {
        self.inner.rows.each_after(after, max_rows, f)
    }

    /// Was this blob hashed since the store was opened?
    pub fn is_verified(&self, hash: &blake3::Hash) -> bool {
        self.inner.blobs.is_verified(hash)
    }

    /// A whole read of this blob matched its hash.
    pub fn mark_verified(&self, hash: &blake3::Hash) {
        self.inner.blobs.mark_verified(hash)
    }

    /// A verified small body from memory, if it is there.
    pub fn hot(&self, hash: &blake3::Hash) -> Option<bytes::Bytes> {
        self.hot.get(hash)
    }

    /// Keeps a verified small body in memory (content-addressed, so it never goes stale).
    pub fn remember(&self, hash: blake3::Hash, body: bytes::Bytes) {
        self.hot.insert(hash, body);
    }

    /// Registers the hook told about every URL that leaves the store (once; later calls are
    /// ignored). It runs on the thread that stored or invalidated, and must not block.
    pub fn on_removed(&self, hook: RemovalHook) {
        let _ = self.inner.on_removed.set(hook);
    }

    /// Opens a referenced blob by its content hash (peers ask for bodies this way).
    pub fn open_blob_by_hash(&self, hash: &blake3::Hash) -> Option<File> {
        self.inner.blobs.open_by_hash(hash)
    }

    /// The outboard of a referenced blob of `len` bytes, for serving verified pieces of it.
    /// A blob stored before outboards existed (or whose outboard file was lost) gets one now:
    /// the blob is read and hashed whole, and used only if it still matches `hash`. Blocking.
    pub fn outboard(&self, hash: &blake3::Hash, len: u64) -> Result<Outboard> {
        self.inner.blobs.outboard(hash, len)
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! The on-disk cache: metadata rows in redb, bodies as files named by their blake3 hash, and a
//! compact in-memory index (`cache::index`) that bounds the total size. Heads of recently used
//! URLs and small verified bodies are kept in two bounded moka caches; everything else is read
//! from disk when asked for. Owns every file under the cache directory. Blocking I/O: async
//! callers use [`Store::lookup`] or go through `spawn_blocking`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::cache::index::{Fp, Index, Meta};
use crate::cache::key::{key_hash, Variant};
use crate::cache::outboard::{self, Outboard};
use crate::cache::policy::Timing;
use crate::error::{Error, Result};

/// One row per URL, keyed by its key hash.
const URLS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("urls");
/// The table of format 1 (rows keyed by the key string); dropped at start-up if present.
const FORMAT1_ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// Bumped when the row encoding changes; rows of another version are dropped at start-up.
const RECORD_VERSION: u8 = 2;
/// redb's page cache (its default is 1 GiB).
const REDB_CACHE: usize = 4 * 1024 * 1024;
/// At most this many Vary variants are kept per URL; the oldest goes first.
const MAX_VARIANTS: usize = 8;

/// One stored response: its head, its age bookkeeping and the blob holding its body.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Primary cache key (normalised URL).
    pub key: String,
    /// Secondary key: the request's values of the fields named by `Vary`.
    pub variant: Variant,
    pub status: StatusCode,
    /// Response header fields as stored (hop-by-hop fields already removed), packed.
    pub head: PackedHeaders,
    pub timing: Timing,
    /// blake3 of the body; names the blob file.
    pub hash: blake3::Hash,
    /// Body length in bytes.
    pub len: u64,
    /// May be handed to other machines (RFC 9111 shared-cacheable and not credentialed).
    pub shareable: bool,
}

impl Entry {
    /// The stored header fields.
    pub fn headers(&self) -> HeaderMap {
        self.head.unpack()
    }

    /// Bytes the entry costs in the size budget: body, its outboard, and an estimate of its head.
    fn weight_bytes(&self) -> u64 {
        let head = self.head.0.len();
        self.len
            + outboard::size(self.len)
            + (head + self.key.len() + self.variant.as_str().len() + 64) as u64
    }
}

/// Header fields packed into one allocation as `name:value\n` lines (a name never contains
/// `:`, a value never contains `\n`). An entry keeps its head this way — a few hundred bytes
/// instead of a `HeaderMap`'s kilobyte — and unpacks it when it is used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackedHeaders(Box<[u8]>);

impl PackedHeaders {
    pub fn pack(headers: &HeaderMap) -> Self {
        let mut out = Vec::with_capacity(
            headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 2)
                .sum(),
        );
        for (name, value) in headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        PackedHeaders(out.into_boxed_slice())
    }

    fn from_pairs(pairs: &[(String, Vec<u8>)]) -> Option<Self> {
        headers_from_pairs(pairs).map(|h| Self::pack(&h))
    }

    pub fn unpack(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in self.0.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(&line[colon + 1..]),
            ) {
                h.append(n, v);
            }
        }
        h
    }

    /// Each field as (name, value bytes), in order.
    pub fn pairs(&self) -> Vec<(String, Vec<u8>)> {
        header_pairs(&self.unpack())
    }
}

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

    /// Estimated memory these variants hold in the heads cache.
    fn memory(&self) -> u32 {
        let bytes: usize = self
            .entries
            .iter()
            .map(|e| e.key.len() + e.head.0.len() + e.variant.as_str().len() + ENTRY_OVERHEAD)
            .sum();
        u32::try_from(bytes + CACHE_NODE_OVERHEAD).unwrap_or(u32::MAX)
    }
}

/// Rough memory of an `Entry` beyond its strings, and of one moka cache node beyond its key and
/// value (measured: 100 000 entries in a moka 0.12 sync cache cost ~350 bytes each more than in
/// a `HashMap`), for the weighers that bound the two memory caches by what they really hold.
const ENTRY_OVERHEAD: usize = 200;
const CACHE_NODE_OVERHEAD: usize = 384;

#[derive(Serialize, Deserialize)]
struct Record {
    version: u8,
    key: String,
    gen: u64,
    entries: Vec<EntryRecord>,
}

impl Record {
    /// The variants a row holds, keeping the entries `check` accepts; `None` if the row is of
    /// another version.
    fn into_variants(self, check: impl Fn(&Entry) -> bool) -> Option<Variants> {
        if self.version != RECORD_VERSION {
            return None;
        }
        let entries = self
            .entries
            .into_iter()
            .filter_map(|r| r.into_entry(&self.key))
            .filter(|e| check(e))
            .map(Arc::new)
            .collect();
        Some(Variants {
            gen: self.gen,
            entries,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct EntryRecord {
    variant: String,
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    timing: TimingRecord,
    hash: [u8; 32],
    len: u64,
    shareable: bool,
}

/// A response's age bookkeeping in milliseconds since the epoch, as rows and peers carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingRecord {
    pub request_time_ms: u64,
    pub response_time_ms: u64,
    pub corrected_initial_age_ms: u64,
}

impl From<&Timing> for TimingRecord {
    fn from(t: &Timing) -> Self {
        let millis = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        };
        TimingRecord {
            request_time_ms: millis(t.request_time),
            response_time_ms: millis(t.response_time),
            corrected_initial_age_ms: t.corrected_initial_age.as_millis() as u64,
        }
    }
}

impl TimingRecord {
    pub fn timing(&self) -> Timing {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        Timing {
            request_time: at(self.request_time_ms),
            response_time: at(self.response_time_ms),
            corrected_initial_age: Duration::from_millis(self.corrected_initial_age_ms),
        }
    }
}

/// Header fields as (name, value bytes) pairs, in order.
pub fn header_pairs(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// The header map of such pairs; `None` if a name or value is invalid.
pub fn headers_from_pairs(pairs: &[(String, Vec<u8>)]) -> Option<HeaderMap> {
    let mut h = HeaderMap::with_capacity(pairs.len());
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).ok()?,
            HeaderValue::from_bytes(v).ok()?,
        );
    }
    Some(h)
}

impl EntryRecord {
    fn of(e: &Entry) -> Self {
        EntryRecord {
            variant: e.variant.as_str().to_owned(),
            status: e.status.as_u16(),
            headers: e.head.pairs(),
            timing: TimingRecord::from(&e.timing),
            hash: *e.hash.as_bytes(),
            len: e.len,
            shareable: e.shareable,
        }
    }

    fn into_entry(self, key: &str) -> Option<Entry> {
        let head = PackedHeaders::from_pairs(&self.headers)?;
        Some(Entry {
            key: key.to_owned(),
            variant: Variant::from_stored(self.variant),
            status: StatusCode::from_u16(self.status).ok()?,
            head,
            timing: self.timing.timing(),
            hash: blake3::Hash::from_bytes(self.hash),
            len: self.len,
            shareable: self.shareable,
        })
    }
}

struct Inner {
    dir: PathBuf,
    db: redb::Database,
    /// Blob reference counts. Its lock is also held around every rename into and unlink from
    /// `objects/`, so a blob is never deleted while a commit is creating it.
    blobs: Mutex<HashMap<blake3::Hash, Blob>>,
    /// Serialises changes (row queued, index and heads updated) so they apply in one order.
    commit_lock: Mutex<()>,
    /// Every stored URL; taken briefly, inside `commit_lock` when both are held.
    index: Mutex<Index>,
    /// Decoded variants of recently used URLs, checked against the index's `gen`.
    heads: moka::sync::Cache<Fp, Arc<Variants>>,
    next_gen: AtomicU64,
    temp_seq: AtomicU64,
    /// Told the key hash of every URL that left the store (evicted or invalidated).
    on_removed: std::sync::OnceLock<RemovalHook>,
    /// Row changes for the committer thread, applied in the order they were queued.
    rows: mpsc::Sender<RowWrite>,
}

/// One queued change to a metadata row.
enum RowOp {
    Put(Vec<u8>),
    Delete,
}

type RowWrite = (Fp, RowOp, mpsc::SyncSender<Result<()>>);

/// Most row changes committed in one redb transaction.
const MAX_BATCH: usize = 1024;

/// What the store knows of one blob file.
#[derive(Debug, Default, Clone, Copy)]
struct Blob {
    refs: u32,
    /// Its bytes were hashed since this process opened the store (written by us, or read back
    /// whole and matched): later reads need not hash it again.
    verified: bool,
    /// Backs (or backed, since the store was opened) a shareable entry: its bytes are a public
    /// response's, so other machines may have them even if a private entry shares the blob.
    shared: bool,
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
    /// Where the blob with this content hash lives: `objects/ab/cdef…`.
    fn blob_path(&self, hash: &blake3::Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir
            .join("objects")
            .join(&hex.as_str()[..2])
            .join(&hex.as_str()[2..])
    }

    /// Where the blob's verified-streaming outboard lives: `objects/ab/cdef….obao`.
    fn outboard_path(&self, hash: &blake3::Hash) -> PathBuf {
        outboard::beside(&self.blob_path(hash))
    }

    /// Makes the outboard of the `len`-byte body in `body` under `tmp/`, checking that the body
    /// still hashes to `hash`; the caller renames it into place. `None`: the body needs none.
    fn make_outboard(&self, body: &File, hash: &blake3::Hash, len: u64) -> Result<Option<PathBuf>> {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp =
            self.dir
                .join("tmp")
                .join(format!("{}-{seq}{}", std::process::id(), outboard::SUFFIX));
        let root = outboard::make(body, len, &tmp).map_err(|e| {
            outboard::remove(&tmp);
            Error::storage(format!("cannot make the outboard: {e}"))
        })?;
        if root != *hash {
            outboard::remove(&tmp);
            return Err(Error::storage("the body file does not match its blake3"));
        }
        Ok((outboard::size(len) > 0).then_some(tmp))
    }

    /// Queues a row change; the receiver yields once it is durable. Callers queue under
    /// `commit_lock` (so changes keep their order) and wait after releasing it (so that
    /// concurrent commits share one fsync).
    fn queue_row(&self, fp: Fp, op: RowOp) -> mpsc::Receiver<Result<()>> {
        let (tx, rx) = mpsc::sync_channel(1);
        if let Err(mpsc::SendError((_, _, tx))) = self.rows.send((fp, op, tx)) {
            let _ = tx.send(Err(Error::storage("the row committer is gone")));
        }
        rx
    }

    fn encode(key: &str, variants: &Variants) -> Result<Vec<u8>> {
        let record = Record {
            version: RECORD_VERSION,
            key: key.to_owned(),
            gen: variants.gen,
            entries: variants
                .entries
                .iter()
                .map(|e| EntryRecord::of(e))
                .collect(),
        };
        postcard::to_stdvec(&record).map_err(Error::storage)
    }

    /// Applies a batch of row changes in one transaction (one fsync).
    fn commit_rows(&self, batch: &[RowWrite]) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::storage)?;
        {
            let mut table = txn.open_table(URLS).map_err(Error::storage)?;
            for (fp, op, _) in batch {
                match op {
                    RowOp::Put(bytes) => {
                        table
                            .insert(fp.as_slice(), bytes.as_slice())
                            .map_err(Error::storage)?;
                    }
                    RowOp::Delete => {
                        table.remove(fp.as_slice()).map_err(Error::storage)?;
                    }
                }
            }
        }
        txn.commit().map_err(Error::storage)
    }

    /// Reads the row of `fp`; `None` if there is none (or it is not a row of that key hash).
    fn read_row(&self, fp: &Fp) -> Option<Variants> {
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(URLS).ok()?;
        let row = table.get(fp.as_slice()).ok()??;
        let record: Record = postcard::from_bytes(row.value()).ok()?;
        if key_hash(&record.key) != *fp {
            return None;
        }
        record.into_variants(|_| true)
    }

    /// Takes one reference to the blob of each entry.
    fn retain(&self, entries: &[Arc<Entry>]) {
        let mut blobs = lock(&self.blobs);
        for e in entries {
            let b = blobs.entry(e.hash).or_default();
            b.refs += 1;
            b.shared |= e.shareable;
        }
    }

    /// Drops one reference to each blob; the last one deletes its file.
    fn release(&self, hashes: &[blake3::Hash]) {
        let mut blobs = lock(&self.blobs);
        for hash in hashes {
            let gone = match blobs.get_mut(hash) {
                Some(b) if b.refs > 1 => {
                    b.refs -= 1;
                    false
                }
                Some(_) => true,
                None => false,
            };
            if gone {
                blobs.remove(hash);
                let _ = fs::remove_file(self.blob_path(hash));
                outboard::remove(&self.outboard_path(hash));
            }
        }
    }

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
        let v = Arc::new(self.read_row(fp).filter(|v| v.gen == gen)?);
        self.heads.insert(*fp, v.clone());
        Some(v)
    }

    fn removed(&self, fps: &[Fp]) {
        if let Some(hook) = self.on_removed.get() {
            for fp in fps {
                hook(fp);
            }
        }
    }
}

fn wait_row(rx: mpsc::Receiver<Result<()>>) -> Result<()> {
    rx.recv()
        .unwrap_or_else(|_| Err(Error::storage("the row committer is gone")))
}

/// The committer thread: drains queued row changes in batches, one transaction each, and tells
/// every waiter the batch's result. Holds the store weakly, so the store (and its database
/// lock) goes away as soon as its last user drops it.
fn committer_loop(inner: std::sync::Weak<Inner>, rx: mpsc::Receiver<RowWrite>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let result = match inner.upgrade() {
            Some(inner) => inner.commit_rows(&batch),
            None => Err(Error::storage("the store is closed")),
        };
        for (_, _, done) in batch {
            let _ = done.send(result.clone());
        }
    }
}

/// The cache store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Verified small bodies by content hash, so that hot objects skip the disk and the re-hash.
    hot: moka::sync::Cache<blake3::Hash, bytes::Bytes>,
}

/// Memory for small bodies (the hot-object cache, like Squid's `cache_mem`).
pub const HOT_BYTES: u64 = 16 * 1024 * 1024;
/// Memory for the decoded heads of recently used URLs.
pub const HEADS_BYTES: u64 = 4 * 1024 * 1024;

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
        for sub in ["objects", "tmp"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| {
                Error::storage(format!("cannot create {}: {e}", dir.join(sub).display()))
            })?;
        }
        clear_dir(&dir.join("tmp"));
        // redb caches up to 1 GiB by default; the heads cache in front of it is what stays hot.
        let db = redb::Builder::new()
            .set_cache_size(REDB_CACHE)
            .create(dir.join("index.redb"))
            .map_err(|e| Error::storage(format!("{}: {e}", dir.join("index.redb").display())))?;
        let (rows, rows_rx) = mpsc::channel::<RowWrite>();
        let heads = moka::sync::Cache::builder()
            .max_capacity(HEADS_BYTES)
            .weigher(|_k: &Fp, v: &Arc<Variants>| v.memory())
            .build();
        let inner = Arc::new(Inner {
            rows,
            dir: dir.to_owned(),
            db,
            blobs: Mutex::new(HashMap::new()),
            commit_lock: Mutex::new(()),
            index: Mutex::new(Index::new(max_size)),
            heads,
            next_gen: AtomicU64::new(1),
            temp_seq: AtomicU64::new(0),
            on_removed: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("peercache-rows".into())
            .spawn(move || committer_loop(weak, rows_rx))
            .map_err(|e| Error::storage(format!("cannot start the row committer: {e}")))?;
        let hot = moka::sync::Cache::builder()
            .max_capacity(HOT_BYTES)
            .weigher(|_k: &blake3::Hash, v: &bytes::Bytes| {
                u32::try_from(v.len() + CACHE_NODE_OVERHEAD).unwrap_or(u32::MAX)
            })
            .build();
        let store = Store { inner, hot };
        store.load()?;
        Ok(store)
    }

    fn load(&self) -> Result<()> {
        let inner = &self.inner;
        drop_format1(&inner.db)?;
        let mut rewrite: Vec<(Fp, Option<Vec<u8>>)> = Vec::new();
        let mut max_gen = 0;
        {
            let txn = inner.db.begin_read().map_err(Error::storage)?;
            let table = match txn.open_table(URLS) {
                Ok(t) => Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(Error::storage(e)),
            };
            let mut index = lock(&inner.index);
            let rows = match &table {
                Some(t) => Some(t.iter().map_err(Error::storage)?),
                None => None,
            };
            for row in rows.into_iter().flatten() {
                let (k, v) = row.map_err(Error::storage)?;
                let Ok(fp) = Fp::try_from(k.value()) else {
                    continue; // not a row of ours; nothing to delete it by either
                };
                let record = postcard::from_bytes::<Record>(v.value())
                    .ok()
                    .filter(|r| key_hash(&r.key) == fp);
                let Some((key, total)) = record.as_ref().map(|r| (r.key.clone(), r.entries.len()))
                else {
                    rewrite.push((fp, None));
                    continue;
                };
                let variants = record
                    .and_then(|r| r.into_variants(|e| self.blob_ok(e)))
                    .filter(|v| !v.entries.is_empty());
                let Some(variants) = variants else {
                    rewrite.push((fp, None));
                    continue;
                };
                if variants.entries.len() != total {
                    rewrite.push((fp, Some(Inner::encode(&key, &variants)?)));
                }
                max_gen = max_gen.max(variants.gen);
                inner.retain(&variants.entries);
                index.insert(fp, variants.meta());
            }
            // A smaller max_size than last time: evict down to it now.
            for gone in index.evict(&[0; 32]) {
                inner.release(&gone.blobs);
                rewrite.push((gone.fp, None));
            }
        }
        inner.next_gen.store(max_gen + 1, Ordering::Relaxed);
        let mut last = None;
        for (fp, row) in rewrite {
            last = Some(inner.queue_row(fp, row.map_or(RowOp::Delete, RowOp::Put)));
        }
        if let Some(last) = last {
            wait_row(last)?;
        }
        self.sweep_orphans();
        Ok(())
    }

    fn blob_ok(&self, e: &Entry) -> bool {
        fs::metadata(self.inner.blob_path(&e.hash))
            .map(|m| m.is_file() && m.len() == e.len)
            .unwrap_or(false)
    }

    /// Deletes blob files that no row references.
    fn sweep_orphans(&self) {
        let blobs = lock(&self.inner.blobs);
        let Ok(fans) = fs::read_dir(self.inner.dir.join("objects")) else {
            return;
        };
        for fan in fans.flatten() {
            let Ok(files) = fs::read_dir(fan.path()) else {
                continue;
            };
            let prefix = fan.file_name().to_string_lossy().into_owned();
            for f in files.flatten() {
                let name = format!("{prefix}{}", f.file_name().to_string_lossy());
                let name = name.strip_suffix(outboard::SUFFIX).unwrap_or(&name);
                let referenced = blake3::Hash::from_hex(name.as_bytes())
                    .map(|h| blobs.contains_key(&h))
                    .unwrap_or(false);
                if !referenced {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
    }

    /// Opens the blob of `entry` for reading; `None` if it is missing or has the wrong size.
    pub fn open_blob(&self, entry: &Entry) -> Option<File> {
        let f = File::open(self.inner.blob_path(&entry.hash)).ok()?;
        let len = f.metadata().ok()?.len();
        (len == entry.len).then_some(f)
    }

    /// A new temporary file for a body being downloaded, opened for reading and writing.
    pub fn temp_file(&self) -> io::Result<(PathBuf, File)> {
        let seq = self.inner.temp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.inner.dir.join("tmp").join(format!(
            "{}-{seq}-{:08x}.part",
            std::process::id(),
            rand::random::<u32>()
        ));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
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

    /// Does some shareable entry use this body (see `Blob::shared`)? Only such bodies are
    /// handed to other machines by content hash.
    pub fn is_shared_body(&self, hash: &blake3::Hash) -> bool {
        lock(&self.inner.blobs).get(hash).is_some_and(|b| b.shared)
    }

    /// Does the store hold a variant of `key` that may be handed to other machines?
    pub fn holds_shareable(&self, key: &str) -> bool {
        lock(&self.inner.index)
            .get(&key_hash(key))
            .is_some_and(|m| m.shareable)
    }

    /// Stores a complete, verified body (the temp file at `temp`, whose blake3 is `entry.hash`)
    /// with its head. The body becomes visible only once it is renamed into `objects/` and its
    /// row is committed. Replaces a stored entry with the same variant.
    pub fn commit(&self, entry: Entry, temp: &Path) -> Result<Arc<Entry>> {
        // The outboard is made from the file as written (a second read, from the page cache
        // as a rule) and goes into place first: a blob in `objects/` has its outboard.
        let body = File::open(temp).map_err(Error::storage)?;
        let made = self.inner.make_outboard(&body, &entry.hash, entry.len)?;
        drop(body);
        {
            let mut blobs = lock(&self.inner.blobs);
            let dest = self.inner.blob_path(&entry.hash);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(Error::storage)?;
            }
            if let Some(ob) = made {
                fs::rename(&ob, self.inner.outboard_path(&entry.hash)).map_err(|e| {
                    outboard::remove(&ob);
                    Error::storage(e)
                })?;
            }
            fs::rename(temp, &dest).map_err(Error::storage)?;
            let b = blobs.entry(entry.hash).or_default();
            b.refs += 1;
            b.verified = true; // hashed while it was written
        }
        let hash = entry.hash;
        let stored = self.put(entry);
        self.inner.release(&[hash]); // the reference taken above; `put` took its own
        stored
    }

    /// Replaces the head of a stored entry (after a 304), keeping its body.
    pub fn freshen(&self, old: &Entry, headers: HeaderMap, timing: Timing) -> Result<Arc<Entry>> {
        let entry = Entry {
            head: PackedHeaders::pack(&headers),
            timing,
            ..old.clone()
        };
        self.put(entry)
    }

    /// Inserts `entry` into the variants of its key: queues the row, updates the index (taking
    /// references to the new set of blobs, releasing the old), evicts beyond the size budget,
    /// then waits until the row is durable.
    fn put(&self, entry: Entry) -> Result<Arc<Entry>> {
        let inner = &self.inner;
        let entry = Arc::new(entry);
        let fp = key_hash(&entry.key);
        let (durable, evicted) = {
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
            let row = Inner::encode(&entry.key, &variants)?;
            let meta = variants.meta();
            inner.retain(&variants.entries);
            let mut durable = inner.queue_row(fp, RowOp::Put(row));
            inner.heads.insert(fp, Arc::new(variants));
            let (replaced, evicted) = {
                let mut index = lock(&inner.index);
                let replaced = index.insert(fp, meta);
                (replaced, index.evict(&fp))
            };
            if let Some(old) = replaced {
                inner.release(&old);
            }
            for gone in &evicted {
                inner.heads.invalidate(&gone.fp);
                inner.release(&gone.blobs);
                // Queued after our own row: waiting for the last covers both.
                durable = inner.queue_row(gone.fp, RowOp::Delete);
            }
            (durable, evicted)
        };
        // Outside the lock, so that concurrent commits share one transaction.
        if let Err(e) = wait_row(durable) {
            tracing::error!(key = %entry.key, "stored in memory but not persisted: {e}");
        }
        inner.removed(&evicted.iter().map(|g| g.fp).collect::<Vec<_>>());
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
            let gone = {
                let mut index = lock(&inner.index);
                match index.get(&fp) {
                    Some(m) if held(m) => index.remove(&fp),
                    _ => None,
                }
            };
            let Some(gone) = gone else {
                return Ok(());
            };
            inner.heads.invalidate(&fp);
            inner.release(&gone.blobs);
            inner.queue_row(fp, RowOp::Delete)
        };
        wait_row(deleted)?;
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
            blobs: lock(&self.inner.blobs).len() as u64,
        }
    }

    /// Calls `f` with every stored entry, read from disk (for the status page and tests).
    /// Blocking.
    pub fn for_each_entry(&self, mut f: impl FnMut(&Arc<Entry>)) {
        self.for_each_row_after(None, usize::MAX, |_, entries| {
            entries.iter().for_each(&mut f)
        });
    }

    /// Calls `f` with the rows (a key's hash and its variants) after `after` (from the first
    /// when `None`), in key-hash order, at most `max_rows` of them. Returns the last row's hash
    /// when it stopped at `max_rows` (more may follow), `None` at the end. Blocking: reads from
    /// disk, one short read transaction, so a caller pages through a large store in steps.
    pub fn for_each_row_after(
        &self,
        after: Option<&Fp>,
        max_rows: usize,
        mut f: impl FnMut(&Fp, &[Arc<Entry>]),
    ) -> Option<Fp> {
        let txn = self.inner.db.begin_read().ok()?;
        let table = txn.open_table(URLS).ok()?;
        let rows = match after {
            Some(a) => table.range::<&[u8]>((
                std::ops::Bound::Excluded(&a[..]),
                std::ops::Bound::Unbounded,
            )),
            None => table.iter(),
        }
        .ok()?;
        let mut n = 0;
        for (k, v) in rows.flatten() {
            let Ok(fp) = Fp::try_from(k.value()) else {
                continue;
            };
            let variants = postcard::from_bytes::<Record>(v.value())
                .ok()
                .and_then(|r| r.into_variants(|_| true));
            if let Some(v) = variants {
                f(&fp, &v.entries);
            }
            n += 1;
            if n >= max_rows {
                return Some(fp);
            }
        }
        None
    }

    /// Every stored entry (see [`Store::for_each_entry`]).
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        let mut all = Vec::new();
        self.for_each_entry(|e| all.push(e.clone()));
        all
    }

    /// Every stored URL key (for tests and the status page). Blocking.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        self.for_each_entry(|e| {
            if keys.last() != Some(&e.key) {
                keys.push(e.key.clone());
            }
        });
        keys
    }

    /// Was this blob hashed since the store was opened?
    pub fn is_verified(&self, hash: &blake3::Hash) -> bool {
        lock(&self.inner.blobs)
            .get(hash)
            .is_some_and(|b| b.verified)
    }

    /// A whole read of this blob matched its hash.
    pub fn mark_verified(&self, hash: &blake3::Hash) {
        if let Some(b) = lock(&self.inner.blobs).get_mut(hash) {
            b.verified = true;
        }
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
        if !lock(&self.inner.blobs).contains_key(hash) {
            return None;
        }
        File::open(self.inner.blob_path(hash)).ok()
    }

    /// The outboard of a referenced blob of `len` bytes, for serving verified pieces of it.
    /// A blob stored before outboards existed (or whose outboard file was lost) gets one now:
    /// the blob is read and hashed whole, and used only if it still matches `hash`. Blocking.
    pub fn outboard(&self, hash: &blake3::Hash, len: u64) -> Result<Outboard> {
        let inner = &self.inner;
        let path = inner.outboard_path(hash);
        if let Some(ob) = outboard::open(&path, *hash, len) {
            return Ok(ob);
        }
        let body = self
            .open_blob_by_hash(hash)
            .ok_or_else(|| Error::storage("no such blob"))?;
        if body.metadata().map_err(Error::storage)?.len() != len {
            return Err(Error::storage("the blob is not of its advertised length"));
        }
        tracing::info!(%hash, len, "making the outboard of a blob stored without one");
        if let Some(made) = inner.make_outboard(&body, hash, len)? {
            let blobs = lock(&inner.blobs);
            let renamed = if blobs.contains_key(hash) {
                fs::rename(&made, &path).map_err(Error::storage)
            } else {
                Err(Error::storage("the blob was deleted meanwhile"))
            };
            drop(blobs);
            outboard::remove(&made);
            renamed?;
        }
        outboard::open(&path, *hash, len).ok_or_else(|| Error::storage("outboard unreadable"))
    }

    /// How many distinct blobs are referenced.
    pub fn blob_count(&self) -> usize {
        lock(&self.inner.blobs).len()
    }
}

/// Drops the rows of format 1, whose blobs then go as orphans (a cache, so a cold start).
fn drop_format1(db: &redb::Database) -> Result<()> {
    let txn = db.begin_write().map_err(Error::storage)?;
    let existed = txn.delete_table(FORMAT1_ENTRIES).map_err(Error::storage)?;
    txn.commit().map_err(Error::storage)?;
    if existed {
        tracing::warn!("the cache index has an older format; starting with an empty cache");
    }
    Ok(())
}

fn clear_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Storing bodies in tests, here and in the modules built on the store.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::io::Write;

    /// Commits `body` for `key` (variant `variant`, `max-age=60`) as a fill would.
    pub(crate) fn commit_body(
        store: &Store,
        key: &str,
        variant: &str,
        body: &[u8],
        shareable: bool,
    ) -> Arc<Entry> {
        let (path, mut file) = store.temp_file().unwrap();
        file.write_all(body).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        let now = SystemTime::now();
        let entry = Entry {
            key: key.to_owned(),
            variant: Variant::from_stored(variant.to_owned()),
            status: StatusCode::OK,
            head: PackedHeaders::pack(&headers),
            timing: Timing {
                request_time: now,
                response_time: now,
                corrected_initial_age: Duration::ZERO,
            },
            hash: blake3::hash(body),
            len: body.len() as u64,
            shareable,
        };
        store.commit(entry, &path).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Store, key: &str, variant: &str, body: &[u8]) -> Arc<Entry> {
        testing::commit_body(store, key, variant, body, true)
    }

    fn blob_files(dir: &Path) -> usize {
        fs::read_dir(dir.join("objects"))
            .unwrap()
            .flatten()
            .map(|fan| fs::read_dir(fan.path()).unwrap().count())
            .sum()
    }

    #[test]
    fn a_url_whose_head_left_memory_is_read_back_from_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let stored = put(&store, "http://a/x", "", b"body one");
        store.inner.heads.invalidate_all();
        store.inner.heads.run_pending_tasks();
        assert!(matches!(
            store.inner.in_memory(&key_hash("http://a/x")),
            InMemory::OnDisk(_)
        ));
        let got = store.get("http://a/x").expect("read from its row");
        let e = &got.entries[0];
        assert_eq!(
            (e.hash, e.len, e.status, e.headers()),
            (stored.hash, 8, StatusCode::OK, stored.headers())
        );
        assert!(matches!(
            store.inner.in_memory(&key_hash("http://a/x")),
            InMemory::Found(_)
        ));
        assert!(store.get("http://a/other").is_none());
    }

    #[test]
    fn variants_share_a_row_and_a_replaced_body_leaves_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        put(&store, "http://a/x", "gzip", b"zipped");
        put(&store, "http://a/x", "br", b"brotli");
        assert_eq!(store.get("http://a/x").unwrap().entries.len(), 2);
        assert_eq!(blob_files(dir.path()), 2);
        let stale = store.get("http://a/x").unwrap();
        put(&store, "http://a/x", "gzip", b"zipped v2");
        // The old gzip body is gone; the brotli one is kept; a stale cached head is not served.
        assert_eq!(blob_files(dir.path()), 2);
        store
            .inner
            .heads
            .insert(key_hash("http://a/x"), stale.clone());
        let now = store.get("http://a/x").unwrap();
        assert!(now.gen > stale.gen);
        let lens: Vec<u64> = now.entries.iter().map(|e| e.len).collect();
        assert_eq!(lens, vec![9, 6]);
    }

    #[test]
    fn rows_survive_a_restart_and_a_smaller_budget_evicts_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            for i in 0..3u8 {
                put(&store, &format!("http://a/{i}"), "", &[i; 1000]);
            }
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.stats().urls, 3);
        assert_eq!(store.get("http://a/1").unwrap().entries[0].len, 1000);
        drop(store);
        // Room for two: one goes at start-up, with its row and its blob.
        let store = Store::open(dir.path(), 2600).unwrap();
        assert_eq!((store.stats().urls, store.stats().blobs), (2, 2));
        assert_eq!(blob_files(dir.path()), 2);
        assert_eq!(store.keys().len(), 2);
    }

    #[test]
    fn a_corrupt_old_body_does_not_drop_the_newer_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let old = put(&store, "http://a/x", "", b"version one");
        let new = put(&store, "http://a/x", "", b"version two");
        // A reader of the old version found its blob gone (replaced): nothing happens.
        store.invalidate_if_uses("http://a/x", &old.hash).unwrap();
        assert_eq!(store.get("http://a/x").unwrap().entries[0].hash, new.hash);
        // The current body found corrupt: the URL goes.
        store.invalidate_if_uses("http://a/x", &new.hash).unwrap();
        assert!(store.get("http://a/x").is_none());
        assert_eq!(blob_files(dir.path()), 0);
    }

    #[test]
    fn a_stored_blob_has_its_outboard_beside_it_until_the_blob_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let e = put(&store, "http://a/big", "", &body);
        let small = put(&store, "http://a/small", "", b"one chunk group");
        let ob_path = store.inner.outboard_path(&e.hash);
        assert_eq!(
            fs::metadata(&ob_path).unwrap().len(),
            outboard::size(100_000)
        );
        assert!(!store.inner.outboard_path(&small.hash).exists());
        let ob = store.outboard(&e.hash, 100_000).unwrap();
        assert_eq!(bao_tree::io::sync::Outboard::root(&ob), e.hash);
        assert!(store.outboard(&small.hash, small.len).is_ok());
        // A restart keeps it (it is no orphan); the blob's removal takes it along.
        drop((store, ob));
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(ob_path.exists());
        store.invalidate("http://a/big").unwrap();
        assert!(!ob_path.exists());
        assert_eq!(blob_files(dir.path()), 1);
    }

    #[test]
    fn a_blob_stored_without_an_outboard_gets_one_when_first_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let body: Vec<u8> = (0..70_000u32).map(|i| (i % 13) as u8).collect();
        let e = put(&store, "http://a/old", "", &body);
        let ob_path = store.inner.outboard_path(&e.hash);
        fs::remove_file(&ob_path).unwrap();
        assert!(store.outboard(&e.hash, e.len).is_ok());
        assert_eq!(
            fs::metadata(&ob_path).unwrap().len(),
            outboard::size(70_000)
        );
        // A blob that no longer matches its hash gets none (and is not served).
        fs::remove_file(&ob_path).unwrap();
        let blob = store.inner.blob_path(&e.hash);
        let mut bytes = fs::read(&blob).unwrap();
        bytes[5] ^= 1;
        fs::write(&blob, bytes).unwrap();
        assert!(store.outboard(&e.hash, e.len).is_err());
        assert!(!ob_path.exists());
        assert!(store.outboard(&blake3::hash(b"unknown"), 70_000).is_err());
    }

    #[test]
    fn invalidation_deletes_row_and_blob_and_tells_the_hook() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        store.on_removed(Box::new(move |fp| lock(&sink).push(*fp)));
        put(&store, "http://a/x", "", b"x");
        assert!(store.holds_shareable("http://a/x"));
        store.invalidate("http://a/x").unwrap();
        assert!(store.get("http://a/x").is_none());
        assert!(!store.holds_shareable("http://a/x"));
        assert_eq!(blob_files(dir.path()), 0);
        assert!(store.keys().is_empty());
        assert_eq!(*lock(&told), vec![key_hash("http://a/x")]);
    }
}

//! The on-disk cache: metadata rows in redb, bodies as files named by their blake3 hash, and a
//! moka index that bounds the total size. Owns every file under the cache directory; only its
//! janitor thread deletes blobs. Blocking I/O: async callers go through `spawn_blocking`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use moka::notification::RemovalCause;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::cache::key::Variant;
use crate::cache::policy::Timing;
use crate::error::{Error, Result};

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// Bumped when the row encoding changes; rows of another version are dropped at start-up.
const RECORD_VERSION: u8 = 1;
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

    /// Bytes the entry costs in the size budget: body plus an estimate of its head.
    fn weight_bytes(&self) -> u64 {
        let head = self.head.0.len();
        self.len + (head + self.key.len() + self.variant.as_str().len() + 64) as u64
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

#[derive(Serialize, Deserialize)]
struct Record {
    version: u8,
    gen: u64,
    entries: Vec<EntryRecord>,
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

/// What the moka listener hands the janitor.
struct Removed {
    key: String,
    value: Arc<Variants>,
    cause: RemovalCause,
}

struct Inner {
    dir: PathBuf,
    db: redb::Database,
    /// Blob reference counts. Its lock is also held around every rename into and unlink from
    /// `objects/`, so a blob is never deleted while a commit is creating it.
    blobs: Mutex<HashMap<blake3::Hash, Blob>>,
    /// Serialises row writes with the index update that goes with them.
    commit_lock: Mutex<()>,
    next_gen: AtomicU64,
    temp_seq: AtomicU64,
    /// Told the key of every URL that left the store (evicted or invalidated).
    on_removed: std::sync::OnceLock<RemovalHook>,
    /// Row changes for the committer thread, applied in the order they were queued.
    rows: mpsc::Sender<RowWrite>,
}

/// One queued change to a metadata row.
enum RowOp {
    Put(Vec<u8>),
    Delete,
    /// Delete only if the row still holds this generation (an eviction racing a newer commit).
    DeleteIfGen(u64),
}

type RowWrite = (String, RowOp, mpsc::SyncSender<Result<()>>);

/// Most row changes committed in one redb transaction.
const MAX_BATCH: usize = 1024;

/// What the store knows of one blob file.
#[derive(Debug, Default, Clone, Copy)]
struct Blob {
    refs: u32,
    /// Its bytes were hashed since this process opened the store (written by us, or read back
    /// whole and matched): later reads need not hash it again.
    verified: bool,
}

/// See [`Store::on_removed`].
pub type RemovalHook = Box<dyn Fn(&str) + Send + Sync>;

impl Inner {
    /// Where the blob with this content hash lives: `objects/ab/cdef…`.
    fn blob_path(&self, hash: &blake3::Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir
            .join("objects")
            .join(&hex.as_str()[..2])
            .join(&hex.as_str()[2..])
    }

    /// Queues a row change; the receiver yields once it is durable. Callers queue under
    /// `commit_lock` (so changes keep their order) and wait after releasing it (so that
    /// concurrent commits share one fsync).
    fn queue_row(&self, key: &str, op: RowOp) -> mpsc::Receiver<Result<()>> {
        let (tx, rx) = mpsc::sync_channel(1);
        if let Err(mpsc::SendError((_, _, tx))) = self.rows.send((key.to_owned(), op, tx)) {
            let _ = tx.send(Err(Error::storage("the row committer is gone")));
        }
        rx
    }

    fn encode(variants: &Variants) -> Result<Vec<u8>> {
        let record = Record {
            version: RECORD_VERSION,
            gen: variants.gen,
            entries: variants
                .entries
                .iter()
                .map(|e| EntryRecord::of(e))
                .collect(),
        };
        postcard::to_stdvec(&record).map_err(Error::storage)
    }

    fn op_for(variants: Option<&Variants>) -> Result<RowOp> {
        Ok(match variants {
            Some(v) => RowOp::Put(Self::encode(v)?),
            None => RowOp::Delete,
        })
    }

    /// Writes a row and waits until it is durable.
    fn write_row(&self, key: &str, variants: Option<&Variants>) -> Result<()> {
        let rx = self.queue_row(key, Self::op_for(variants)?);
        wait_row(rx)
    }

    /// Applies a batch of row changes in one transaction (one fsync).
    fn commit_rows(&self, batch: &[RowWrite]) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::storage)?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(Error::storage)?;
            for (key, op, _) in batch {
                match op {
                    RowOp::Put(bytes) => {
                        table
                            .insert(key.as_str(), bytes.as_slice())
                            .map_err(Error::storage)?;
                    }
                    RowOp::Delete => {
                        table.remove(key.as_str()).map_err(Error::storage)?;
                    }
                    RowOp::DeleteIfGen(gen) => {
                        let current = table
                            .get(key.as_str())
                            .map_err(Error::storage)?
                            .and_then(|row| postcard::from_bytes::<Record>(row.value()).ok())
                            .map(|r| r.gen);
                        if current == Some(*gen) {
                            table.remove(key.as_str()).map_err(Error::storage)?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(Error::storage)
    }

    /// Drops one reference to a blob; the last one deletes its file.
    fn release(&self, hash: &blake3::Hash) {
        let mut blobs = lock(&self.blobs);
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
        }
    }

    fn current_gen(&self, key: &str) -> Option<u64> {
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(ENTRIES).ok()?;
        let row = table.get(key).ok()??;
        let record: Record = postcard::from_bytes(row.value()).ok()?;
        Some(record.gen)
    }

    /// Handles one removal reported by the index: an evicted key loses its row (unless a newer
    /// version replaced it meanwhile), and every removed version gives back its blob references.
    fn removed(&self, removed: Removed) {
        let gone = removed.cause != RemovalCause::Replaced;
        if gone {
            // Queued behind every earlier row change (an invalidation's own delete included),
            // and a no-op if a newer version was committed meanwhile.
            let rx = {
                let _guard = lock(&self.commit_lock);
                self.queue_row(&removed.key, RowOp::DeleteIfGen(removed.value.gen))
            };
            if let Err(e) = wait_row(rx) {
                tracing::warn!(key = %removed.key, "cannot delete the row of a removed entry: {e}");
            }
        }
        for e in &removed.value.entries {
            self.release(&e.hash);
        }
        if gone && self.current_gen(&removed.key).is_none() {
            if let Some(hook) = self.on_removed.get() {
                hook(&removed.key);
            }
        }
    }
}

fn wait_row(rx: mpsc::Receiver<Result<()>>) -> Result<()> {
    rx.recv()
        .unwrap_or_else(|_| Err(Error::storage("the row committer is gone")))
}

/// The committer thread: drains queued row changes in batches, one transaction each, and tells
/// every waiter the batch's result. Holds the store weakly, like the janitor.
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

/// The janitor thread: the only deleter of blobs. It holds the store weakly, so the store (and
/// its database lock) goes away as soon as its last user drops it.
fn janitor_loop(inner: std::sync::Weak<Inner>, rx: mpsc::Receiver<Removed>) {
    while let Ok(removed) = rx.recv() {
        let Some(inner) = inner.upgrade() else { return };
        inner.removed(removed);
    }
}

/// The cache store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    index: moka::sync::Cache<String, Arc<Variants>>,
    /// Verified small bodies by content hash, so that hot objects skip the disk and the re-hash.
    hot: moka::sync::Cache<blake3::Hash, bytes::Bytes>,
}

/// Bytes of small bodies kept in memory (the hot-object cache, like Squid's `cache_mem`).
pub const HOT_BYTES: u64 = 16 * 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Statistics for the status page.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StoreStats {
    pub urls: u64,
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
        // redb caches up to 1 GiB by default; rows are read only at start-up, so keep it small.
        let db = redb::Builder::new()
            .set_cache_size(REDB_CACHE)
            .create(dir.join("index.redb"))
            .map_err(|e| Error::storage(format!("{}: {e}", dir.join("index.redb").display())))?;
        let (rows, rows_rx) = mpsc::channel::<RowWrite>();
        let inner = Arc::new(Inner {
            rows,
            dir: dir.to_owned(),
            db,
            blobs: Mutex::new(HashMap::new()),
            commit_lock: Mutex::new(()),
            next_gen: AtomicU64::new(1),
            temp_seq: AtomicU64::new(0),
            on_removed: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("peercache-rows".into())
            .spawn(move || committer_loop(weak, rows_rx))
            .map_err(|e| Error::storage(format!("cannot start the row committer: {e}")))?;

        let (tx, rx) = mpsc::channel::<Removed>();
        let tx = Mutex::new(tx);
        let index = moka::sync::Cache::builder()
            .max_capacity((max_size / 1024).max(1))
            .weigher(|_k: &String, v: &Arc<Variants>| {
                let bytes: u64 = v.entries.iter().map(|e| e.weight_bytes()).sum();
                u32::try_from(bytes / 1024 + 1).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |key: Arc<String>, value, cause| {
                let _ = lock(&tx).send(Removed {
                    key: (*key).clone(),
                    value,
                    cause,
                });
            })
            .build();
        let hot = moka::sync::Cache::builder()
            .max_capacity(HOT_BYTES)
            .weigher(|_k: &blake3::Hash, v: &bytes::Bytes| {
                u32::try_from(v.len()).unwrap_or(u32::MAX)
            })
            .build();
        let store = Store { inner, index, hot };
        store.load()?;
        let janitor = Arc::downgrade(&store.inner);
        std::thread::Builder::new()
            .name("peercache-janitor".into())
            .spawn(move || janitor_loop(janitor, rx))
            .map_err(|e| Error::storage(format!("cannot start janitor: {e}")))?;
        Ok(store)
    }

    fn load(&self) -> Result<()> {
        let mut drop_keys = Vec::new();
        let mut max_gen = 0;
        {
            let txn = self.inner.db.begin_read().map_err(Error::storage)?;
            let table = match txn.open_table(ENTRIES) {
                Ok(t) => Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(Error::storage(e)),
            };
            if let Some(table) = table {
                for row in table.iter().map_err(Error::storage)? {
                    let (k, v) = row.map_err(Error::storage)?;
                    let key = k.value().to_owned();
                    let record: Option<Record> = postcard::from_bytes(v.value())
                        .ok()
                        .filter(|r: &Record| r.version == RECORD_VERSION);
                    let Some(record) = record else {
                        drop_keys.push(key);
                        continue;
                    };
                    let total = record.entries.len();
                    let entries: Vec<Arc<Entry>> = record
                        .entries
                        .into_iter()
                        .filter_map(|r| r.into_entry(&key))
                        .filter(|e| self.blob_ok(e))
                        .map(Arc::new)
                        .collect();
                    if entries.len() != total || entries.is_empty() {
                        drop_keys.push(key.clone());
                    }
                    if !entries.is_empty() {
                        max_gen = max_gen.max(record.gen);
                        self.insert_index(
                            key,
                            Variants {
                                gen: record.gen,
                                entries,
                            },
                        );
                    }
                }
            }
        }
        self.inner.next_gen.store(max_gen + 1, Ordering::Relaxed);
        // Rows that lost entries are rewritten from what was kept (or deleted).
        for key in drop_keys {
            let kept = self.index.get(&key);
            self.inner.write_row(&key, kept.as_deref())?;
        }
        self.index.run_pending_tasks();
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

    /// The stored variants of a URL, if any.
    pub fn get(&self, key: &str) -> Option<Arc<Variants>> {
        self.index.get(key)
    }

    /// Stores a complete, verified body (the temp file at `temp`, whose blake3 is `entry.hash`)
    /// with its head. The body becomes visible only once it is renamed into `objects/` and its
    /// row is committed. Replaces a stored entry with the same variant.
    pub fn commit(&self, entry: Entry, temp: &Path) -> Result<Arc<Entry>> {
        {
            let mut blobs = lock(&self.inner.blobs);
            let dest = self.inner.blob_path(&entry.hash);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(Error::storage)?;
            }
            fs::rename(temp, &dest).map_err(Error::storage)?;
            let b = blobs.entry(entry.hash).or_default();
            b.refs += 1;
            b.verified = true; // hashed while it was written
        }
        self.put(entry, false)
    }

    /// Replaces the head of a stored entry (after a 304), keeping its body.
    pub fn freshen(&self, old: &Entry, headers: HeaderMap, timing: Timing) -> Result<Arc<Entry>> {
        let entry = Entry {
            head: PackedHeaders::pack(&headers),
            timing,
            ..old.clone()
        };
        self.put(entry, true)
    }

    /// Inserts `entry` into the variants of its key, persisting the row first. The caller holds a
    /// reference to the blob already (`commit`), or asks us to take one (`incref`).
    fn put(&self, entry: Entry, incref: bool) -> Result<Arc<Entry>> {
        let entry = Arc::new(entry);
        let durable = {
            let _guard = lock(&self.inner.commit_lock);
            let mut entries: Vec<Arc<Entry>> = self
                .index
                .get(&entry.key)
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
                gen: self.inner.next_gen.fetch_add(1, Ordering::Relaxed),
                entries,
            };
            let op = match Inner::op_for(Some(&variants)) {
                Ok(op) => op,
                Err(e) => {
                    if !incref {
                        self.inner.release(&entry.hash); // the reference `commit` took
                    }
                    return Err(e);
                }
            };
            {
                let mut blobs = lock(&self.inner.blobs);
                for e in &variants.entries {
                    if !Arc::ptr_eq(e, &entry) || incref {
                        blobs.entry(e.hash).or_default().refs += 1;
                    }
                }
            }
            let durable = self.inner.queue_row(&entry.key, op);
            self.insert_index_counted(entry.key.clone(), variants);
            durable
        };
        // Outside the lock, so that concurrent commits share one transaction.
        if let Err(e) = wait_row(durable) {
            tracing::error!(key = %entry.key, "stored in memory but not persisted: {e}");
        }
        Ok(entry)
    }

    /// Index insert for rows loaded at start-up: takes one blob reference per entry.
    fn insert_index(&self, key: String, variants: Variants) {
        {
            let mut blobs = lock(&self.inner.blobs);
            for e in &variants.entries {
                blobs.entry(e.hash).or_default().refs += 1;
            }
        }
        self.insert_index_counted(key, variants);
    }

    fn insert_index_counted(&self, key: String, variants: Variants) {
        self.index.insert(key, Arc::new(variants));
    }

    /// Forgets every variant of `key` (invalidation after an unsafe method, or a corrupt blob).
    /// The row is deleted before this returns; the blobs go when the janitor gets to them.
    pub fn invalidate(&self, key: &str) -> Result<()> {
        let deleted = {
            let _guard = lock(&self.inner.commit_lock);
            if self.index.get(key).is_none() {
                return Ok(());
            }
            // Row first: the janitor, told by the index, checks that no row is left before it
            // reports the key as gone (it waits behind this change in the queue).
            let deleted = self.inner.queue_row(key, RowOp::Delete);
            self.index.invalidate(key);
            deleted
        };
        wait_row(deleted)
    }

    /// Runs moka's pending maintenance (evictions, listener calls) now.
    pub fn sync(&self) {
        self.index.run_pending_tasks();
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            urls: self.index.entry_count(),
            weighted_kib: self.index.weighted_size(),
            blobs: lock(&self.inner.blobs).len() as u64,
        }
    }

    /// Every URL key currently indexed (for tests and the status page).
    pub fn keys(&self) -> Vec<String> {
        self.index.iter().map(|(k, _)| (*k).clone()).collect()
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
    /// ignored). It runs on the janitor thread and must not block.
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

    /// Every stored entry (for advertising what this node holds).
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.index
            .iter()
            .flat_map(|(_, v)| v.entries.clone())
            .collect()
    }

    /// How many distinct blobs are referenced.
    pub fn blob_count(&self) -> usize {
        lock(&self.inner.blobs).len()
    }
}

fn clear_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
}

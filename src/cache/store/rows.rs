//! The metadata rows: one row per URL in redb, keyed by the blake3 of its key, holding all its
//! variants (postcard). Changes are queued to one committer thread that applies them in
//! batches, one transaction (one fsync) each, and tells every waiter whether its change became
//! durable. Blocking; knows nothing of blobs or memory caches.

use std::sync::{mpsc, Arc, Weak};

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::Variants;
use crate::cache::head::{Entry, EntryRecord};
use crate::cache::index::Fp;
use crate::cache::key::key_hash;
use crate::error::{Error, Result};

/// One row per URL, keyed by its key hash.
const URLS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("urls");
/// The table of format 1 (rows keyed by the key string); dropped at start-up if present.
const FORMAT1_ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// Bumped when the row encoding changes; rows of another version are dropped at start-up.
const RECORD_VERSION: u8 = 2;
/// redb's page cache (its default is 1 GiB).
const REDB_CACHE: usize = 4 * 1024 * 1024;
/// Most row changes committed in one redb transaction.
const MAX_BATCH: usize = 1024;

/// One queued change to a metadata row.
pub(super) enum RowOp {
    Put(Vec<u8>),
    Delete,
}

type RowWrite = (Fp, RowOp, mpsc::SyncSender<Result<()>>);

/// Says once whether a queued change became durable.
pub(super) type Durable = mpsc::Receiver<Result<()>>;

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

/// A row as read back: its key hash, and its variants when it decodes as a row of that hash
/// (`None`: not a row of ours, to be deleted).
pub(super) struct Row {
    pub(super) fp: Fp,
    pub(super) decoded: Option<(String, usize, Variants)>,
}

/// The rows of the store.
pub(super) struct Rows {
    db: Arc<redb::Database>,
    /// Changes for the committer thread, applied in the order they were queued.
    tx: mpsc::Sender<RowWrite>,
}

impl Rows {
    /// Opens (or creates) the database at `path` and starts its committer thread.
    pub(super) fn open(path: &std::path::Path) -> Result<Rows> {
        // redb caches up to 1 GiB by default; the heads cache in front of it is what stays hot.
        let db = redb::Builder::new()
            .set_cache_size(REDB_CACHE)
            .create(path)
            .map_err(|e| Error::storage(format!("{}: {e}", path.display())))?;
        Self::on(db)
    }

    /// Rows in `db` (a database on another backend in tests).
    pub(super) fn on(db: redb::Database) -> Result<Rows> {
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel::<RowWrite>();
        let weak = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("peercache-rows".into())
            .spawn(move || committer_loop(weak, rx))
            .map_err(|e| Error::storage(format!("cannot start the row committer: {e}")))?;
        drop_format1(&db)?;
        Ok(Rows { db, tx })
    }

    /// Queues a row change; the receiver yields once it is durable (or not). Callers queue in
    /// the order changes must apply, and wait without holding their locks, so that concurrent
    /// commits share one transaction.
    pub(super) fn queue(&self, fp: Fp, op: RowOp) -> Durable {
        let (tx, rx) = mpsc::sync_channel(1);
        if let Err(mpsc::SendError((_, _, tx))) = self.tx.send((fp, op, tx)) {
            let _ = tx.send(Err(Error::storage("the row committer is gone")));
        }
        rx
    }

    /// The encoding of `variants` as the row of `key`.
    pub(super) fn encode(key: &str, variants: &Variants) -> Result<Vec<u8>> {
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

    /// Reads the row of `fp`; `None` if there is none (or it is not a row of that key hash).
    pub(super) fn read(&self, fp: &Fp) -> Option<Variants> {
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(URLS).ok()?;
        let row = table.get(fp.as_slice()).ok()??;
        let record: Record = postcard::from_bytes(row.value()).ok()?;
        if key_hash(&record.key) != *fp {
            return None;
        }
        record.into_variants(|_| true)
    }

    /// Every row, for loading the store at start-up: each with its key, how many variants the
    /// row holds and those `check` accepts.
    pub(super) fn scan(&self, check: impl Fn(&Entry) -> bool) -> Result<Vec<Row>> {
        let txn = self.db.begin_read().map_err(Error::storage)?;
        let table = match txn.open_table(URLS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(Error::storage(e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(Error::storage)? {
            let (k, v) = row.map_err(Error::storage)?;
            let Ok(fp) = Fp::try_from(k.value()) else {
                continue; // not a row of ours; nothing to delete it by either
            };
            let decoded = postcard::from_bytes::<Record>(v.value())
                .ok()
                .filter(|r| key_hash(&r.key) == fp)
                .and_then(|r| {
                    let (key, total) = (r.key.clone(), r.entries.len());
                    r.into_variants(&check).map(|v| (key, total, v))
                });
            out.push(Row { fp, decoded });
        }
        Ok(out)
    }

    /// Calls `f` with the rows (a key's hash and its variants) after `after` (from the first
    /// when `None`), in key-hash order, at most `max_rows` of them. Returns the last row's hash
    /// when it stopped at `max_rows` (more may follow), `None` at the end. One short read
    /// transaction, so a caller pages through a large store in steps.
    pub(super) fn each_after(
        &self,
        after: Option<&Fp>,
        max_rows: usize,
        mut f: impl FnMut(&Fp, &[Arc<Entry>]),
    ) -> Option<Fp> {
        let txn = self.db.begin_read().ok()?;
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
}

/// Waits until a queued change is durable.
pub(super) fn wait(rx: Durable) -> Result<()> {
    rx.recv()
        .unwrap_or_else(|_| Err(Error::storage("the row committer is gone")))
}

/// Applies a batch of row changes in one transaction (one fsync).
fn commit(db: &redb::Database, batch: &[RowWrite]) -> Result<()> {
    let txn = db.begin_write().map_err(Error::storage)?;
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

/// The committer thread: drains queued row changes in batches, one transaction each, and tells
/// every waiter the batch's result. Holds the database weakly, so that it (and its file lock)
/// goes away as soon as the store does.
fn committer_loop(db: Weak<redb::Database>, rx: mpsc::Receiver<RowWrite>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let result = match db.upgrade() {
            Some(db) => commit(&db, &batch),
            None => Err(Error::storage("the store is closed")),
        };
        for (_, _, done) in batch {
            let _ = done.send(result.clone());
        }
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

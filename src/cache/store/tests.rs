//! The store's tests, and a helper that stores bodies for the modules built on it.

/// Storing bodies in tests, here and in the modules built on the store.
pub(crate) mod testing {
    use super::super::*;
    use crate::cache::key::Variant;
    use http::{HeaderValue, StatusCode};
    use std::io::Write;
    use std::time::{Duration, SystemTime};

    /// Commits `body` for `key` (variant `variant`, `max-age=60`) as a fill would.
    pub(crate) fn commit_body(
        store: &Store,
        key: &str,
        variant: &str,
        body: &[u8],
        shareable: bool,
    ) -> Arc<Entry> {
        try_commit_body(store, key, variant, body, shareable).unwrap()
    }

    /// [`commit_body`], telling whether the store took it.
    pub(crate) fn try_commit_body(
        store: &Store,
        key: &str,
        variant: &str,
        body: &[u8],
        shareable: bool,
    ) -> Result<Arc<Entry>> {
        let (path, mut file) = store.temp_file().unwrap();
        file.write_all(body).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        let now = SystemTime::now();
        let timing = Timing {
            request_time: now,
            response_time: now,
            corrected_initial_age: Duration::ZERO,
        };
        let variant = Variant::from_stored(variant.to_owned());
        let entry = Entry {
            key: key.to_owned(),
            head: Head::new(StatusCode::OK, &headers, timing, variant, shareable),
            hash: blake3::hash(body),
            len: body.len() as u64,
        };
        store.commit(entry, &path)
    }
}

use super::*;
use crate::cache::outboard;
use http::StatusCode;
use std::fs;

/// Rows in the database now.
fn rows_on_disk(store: &Store) -> usize {
    let mut n = 0;
    store.for_each_row_after(None, usize::MAX, |_, _| n += 1);
    n
}

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
    assert_eq!(rows_on_disk(&store), 2);
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
    let ob_path = store.inner.blobs.outboard_path(&e.hash);
    assert_eq!(
        fs::metadata(&ob_path).unwrap().len(),
        outboard::size(100_000)
    );
    assert!(!store.inner.blobs.outboard_path(&small.hash).exists());
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
    let ob_path = store.inner.blobs.outboard_path(&e.hash);
    fs::remove_file(&ob_path).unwrap();
    assert!(store.outboard(&e.hash, e.len).is_ok());
    assert_eq!(
        fs::metadata(&ob_path).unwrap().len(),
        outboard::size(70_000)
    );
    // A blob that no longer matches its hash gets none (and is not served).
    fs::remove_file(&ob_path).unwrap();
    let blob = store.inner.blobs.path(&e.hash);
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
    assert_eq!(rows_on_disk(&store), 0);
    assert_eq!(*lock(&told), vec![key_hash("http://a/x")]);
}

/// A database in memory whose syncs fail while `failing` is set (a disk that refuses writes).
#[derive(Debug)]
struct Flaky {
    inner: redb::backends::InMemoryBackend,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl redb::StorageBackend for Flaky {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.inner.read(offset, len)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the disk refuses"));
        }
        self.inner.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }
}

#[test]
fn a_row_that_cannot_be_made_durable_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let db = redb::Builder::new()
        .create_with_backend(Flaky {
            inner: redb::backends::InMemoryBackend::new(),
            failing: failing.clone(),
        })
        .unwrap();
    let store = Store::with(
        Blobs::open(dir.path()).unwrap(),
        Rows::on(db).unwrap(),
        1 << 20,
    )
    .unwrap();
    let told = Arc::new(Mutex::new(Vec::new()));
    let sink = told.clone();
    store.on_removed(Box::new(move |fp| lock(&sink).push(*fp)));
    put(&store, "http://a/kept", "", b"kept");
    failing.store(true, Ordering::SeqCst);
    let stored = testing::try_commit_body(&store, "http://a/lost", "", b"lost", true);
    // The disk refuses: it is not reported stored, nor served, counted or left on disk; the
    // entry stored before stays.
    assert!(stored.is_err(), "reported as stored");
    assert!(store.get("http://a/lost").is_none());
    assert!(store.get("http://a/kept").is_some());
    assert_eq!(store.stats().urls, 1);
    assert_eq!(blob_files(dir.path()), 1);
    assert_eq!(
        *lock(&told),
        vec![key_hash("http://a/lost")],
        "whoever announced them hears they are gone"
    );
}

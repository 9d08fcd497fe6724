//! The body files: blobs named by their blake3 under `objects/ab/cdef…` with their verified-
//! streaming outboards beside them (`….obao`), reference-counted across the URLs that share
//! them, and the temporary files fills write to under `tmp/`. Only this module creates, renames
//! or deletes files under the cache directory. Blocking.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cache::head::Entry;
use crate::cache::outboard::{self, Outboard};
use crate::error::{Error, Result};

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

/// The blob files under one cache directory.
pub(super) struct Blobs {
    dir: PathBuf,
    /// Reference counts. The lock is also held around every rename into and unlink from
    /// `objects/`, so a blob is never deleted while a commit is creating it.
    refs: Mutex<HashMap<blake3::Hash, Blob>>,
    temp_seq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Blobs {
    /// The blobs under `dir`: `objects/` and `tmp/` are created, and `tmp/` emptied (a crash
    /// leaves nothing there that is ever served).
    pub(super) fn open(dir: &Path) -> Result<Blobs> {
        for sub in ["objects", "tmp"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| {
                Error::storage(format!("cannot create {}: {e}", dir.join(sub).display()))
            })?;
        }
        if let Ok(entries) = fs::read_dir(dir.join("tmp")) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Blobs {
            dir: dir.to_owned(),
            refs: Mutex::new(HashMap::new()),
            temp_seq: AtomicU64::new(0),
        })
    }

    /// Where the blob with this content hash lives: `objects/ab/cdef…`.
    pub(super) fn path(&self, hash: &blake3::Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir
            .join("objects")
            .join(&hex.as_str()[..2])
            .join(&hex.as_str()[2..])
    }

    /// Where the blob's verified-streaming outboard lives: `objects/ab/cdef….obao`.
    pub(super) fn outboard_path(&self, hash: &blake3::Hash) -> PathBuf {
        outboard::beside(&self.path(hash))
    }

    /// A new temporary file for a body being downloaded, opened for reading and writing.
    pub(super) fn temp_file(&self) -> io::Result<(PathBuf, File)> {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join("tmp").join(format!(
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

    /// Moves the complete, hashed body at `temp` (blake3 `hash`, `len` bytes) into `objects/`,
    /// its outboard first, and takes one reference to it, which the caller releases once the
    /// entries using it hold theirs.
    pub(super) fn place(&self, temp: &Path, hash: &blake3::Hash, len: u64) -> Result<()> {
        // The outboard is made from the file as written (a second read, from the page cache
        // as a rule) and goes into place first: a blob in `objects/` has its outboard.
        let body = File::open(temp).map_err(Error::storage)?;
        let made = self.make_outboard(&body, hash, len)?;
        drop(body);
        let mut refs = lock(&self.refs);
        let dest = self.path(hash);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(Error::storage)?;
        }
        if let Some(ob) = made {
            fs::rename(&ob, self.outboard_path(hash)).map_err(|e| {
                outboard::remove(&ob);
                Error::storage(e)
            })?;
        }
        fs::rename(temp, &dest).map_err(Error::storage)?;
        let b = refs.entry(*hash).or_default();
        b.refs += 1;
        b.verified = true; // hashed while it was written
        Ok(())
    }

    /// Takes one reference to the blob of each entry.
    pub(super) fn retain(&self, entries: &[Arc<Entry>]) {
        let mut refs = lock(&self.refs);
        for e in entries {
            let b = refs.entry(e.hash).or_default();
            b.refs += 1;
            b.shared |= e.shareable;
        }
    }

    /// Drops one reference to each blob; the last one deletes its file and outboard.
    pub(super) fn release(&self, hashes: &[blake3::Hash]) {
        let mut refs = lock(&self.refs);
        for hash in hashes {
            let gone = match refs.get_mut(hash) {
                Some(b) if b.refs > 1 => {
                    b.refs -= 1;
                    false
                }
                Some(_) => true,
                None => false,
            };
            if gone {
                refs.remove(hash);
                let _ = fs::remove_file(self.path(hash));
                outboard::remove(&self.outboard_path(hash));
            }
        }
    }

    /// Is the blob of `e` there, of its length (checked when rows are loaded)?
    pub(super) fn present(&self, e: &Entry) -> bool {
        fs::metadata(self.path(&e.hash))
            .map(|m| m.is_file() && m.len() == e.len)
            .unwrap_or(false)
    }

    /// Deletes blob files (and outboards) that no row references.
    pub(super) fn sweep_orphans(&self) {
        let refs = lock(&self.refs);
        let Ok(fans) = fs::read_dir(self.dir.join("objects")) else {
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
                    .map(|h| refs.contains_key(&h))
                    .unwrap_or(false);
                if !referenced {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
    }

    /// Opens the blob of `entry` for reading; `None` if it is missing or has the wrong size.
    pub(super) fn open_for(&self, entry: &Entry) -> Option<File> {
        let f = File::open(self.path(&entry.hash)).ok()?;
        let len = f.metadata().ok()?.len();
        (len == entry.len).then_some(f)
    }

    /// Opens a referenced blob by its content hash.
    pub(super) fn open_by_hash(&self, hash: &blake3::Hash) -> Option<File> {
        if !lock(&self.refs).contains_key(hash) {
            return None;
        }
        File::open(self.path(hash)).ok()
    }

    /// Was this blob hashed since the store was opened?
    pub(super) fn is_verified(&self, hash: &blake3::Hash) -> bool {
        lock(&self.refs).get(hash).is_some_and(|b| b.verified)
    }

    /// A whole read of this blob matched its hash.
    pub(super) fn mark_verified(&self, hash: &blake3::Hash) {
        if let Some(b) = lock(&self.refs).get_mut(hash) {
            b.verified = true;
        }
    }

    /// Does some shareable entry use this body?
    pub(super) fn is_shared(&self, hash: &blake3::Hash) -> bool {
        lock(&self.refs).get(hash).is_some_and(|b| b.shared)
    }

    /// How many distinct blobs are referenced.
    pub(super) fn count(&self) -> usize {
        lock(&self.refs).len()
    }

    /// The outboard of a referenced blob of `len` bytes. A blob stored before outboards existed
    /// (or whose outboard file was lost) gets one now: the blob is read and hashed whole, and
    /// used only if it still matches `hash`.
    pub(super) fn outboard(&self, hash: &blake3::Hash, len: u64) -> Result<Outboard> {
        let path = self.outboard_path(hash);
        if let Some(ob) = outboard::open(&path, *hash, len) {
            return Ok(ob);
        }
        let body = self
            .open_by_hash(hash)
            .ok_or_else(|| Error::storage("no such blob"))?;
        if body.metadata().map_err(Error::storage)?.len() != len {
            return Err(Error::storage("the blob is not of its advertised length"));
        }
        tracing::info!(%hash, len, "making the outboard of a blob stored without one");
        if let Some(made) = self.make_outboard(&body, hash, len)? {
            let refs = lock(&self.refs);
            let renamed = if refs.contains_key(hash) {
                fs::rename(&made, &path).map_err(Error::storage)
            } else {
                Err(Error::storage("the blob was deleted meanwhile"))
            };
            drop(refs);
            outboard::remove(&made);
            renamed?;
        }
        outboard::open(&path, *hash, len).ok_or_else(|| Error::storage("outboard unreadable"))
    }
}

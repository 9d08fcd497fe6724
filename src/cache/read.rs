//! Reading bodies out of their files: spans of a fill's temporary file, and stored blobs
//! streamed in chunks, hashed on the way when this process has not hashed them yet (a mismatch
//! cuts the body before its last byte and drops the entry). Blocking reads run on the blocking
//! pool.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use crate::body::{self, Body};
use crate::cache::head::Entry;
use crate::cache::store::Store;
use crate::metrics::{Metrics, Source};

/// Bytes read from a body file per step.
pub const CHUNK: usize = 512 * 1024;

/// Reads up to `CHUNK` bytes of `[pos, limit)` from `file` on the blocking pool.
pub async fn read_span(file: Arc<File>, pos: u64, limit: u64) -> std::io::Result<Bytes> {
    let want = (limit - pos).min(CHUNK as u64) as usize;
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            let n = file.read_at(&mut buf[got..], pos + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        Ok(Bytes::from(buf))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Reads up to `CHUNK` bytes of `[pos, end)` from a file this response alone reads, at its
/// current offset (after seeking to `pos` when `seek`). Sequential reads fill fresh buffers
/// without zeroing them first, one pass less over every byte than `read_span`.
async fn read_next(
    file: Arc<File>,
    pos: u64,
    end: u64,
    seek: bool,
) -> std::io::Result<bytes::Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let want = (end - pos).min(CHUNK as u64);
    tokio::task::spawn_blocking(move || {
        let mut f: &File = &file;
        if seek {
            f.seek(SeekFrom::Start(pos))?;
        }
        let mut buf = Vec::with_capacity(want as usize);
        f.take(want).read_to_end(&mut buf)?;
        Ok(bytes::Bytes::from(buf))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Opens an entry's blob on the blocking pool; `None` if it is missing or of the wrong size.
pub async fn open(store: &Store, entry: &Arc<Entry>) -> Option<Arc<File>> {
    let (store, e) = (store.clone(), entry.clone());
    tokio::task::spawn_blocking(move || store.open_blob(&e))
        .await
        .ok()
        .flatten()
        .map(Arc::new)
}

pub async fn drop_corrupt(store: &Store, metrics: &Metrics, key: &str, hash: blake3::Hash) {
    tracing::warn!(%key, "stored body missing or corrupt; dropping the entry");
    Metrics::inc(&metrics.corrupt_blobs);
    let (store, key) = (store.clone(), key.to_owned());
    let _ = tokio::task::spawn_blocking(move || store.invalidate_if_uses(&key, &hash)).await;
}

/// Checks a whole body streamed from the store against its hash.
pub struct Verify {
    pub hash: blake3::Hash,
    pub key: String,
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

/// Streams `[start, end)` of a complete file as it is (peer uploads: the receiver verifies).
pub fn stream_span(file: Arc<File>, start: u64, end: u64) -> Body {
    stream_file(file, start, end, None, None)
}

/// Streams `[start, end)` of a complete file. With `verify`, the whole body is hashed on the way
/// and a mismatch cuts the response before its last byte and drops the entry.
pub fn stream_file(
    file: Arc<File>,
    start: u64,
    end: u64,
    verify: Option<Verify>,
    metrics: Option<Arc<Metrics>>,
) -> Body {
    let (tx, body) = body::channel(Some(end - start));
    tokio::spawn(async move {
        let mut hasher = verify.as_ref().map(|_| blake3::Hasher::new());
        let mut pos = start;
        while pos < end {
            let chunk = match read_next(file.clone(), pos, end, pos == start).await {
                Ok(b) if !b.is_empty() => b,
                _ => {
                    let _ = tx.send(Err("stored body unreadable".into())).await;
                    return;
                }
            };
            pos += chunk.len() as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
                if pos == end {
                    // Hold the last chunk back until the hash is known.
                    if let Some(v) = &verify {
                        if h.finalize() != v.hash {
                            drop_corrupt(&v.store, &v.metrics, &v.key, v.hash).await;
                            let _ = tx.send(Err("stored body corrupt".into())).await;
                            return;
                        }
                        v.store.mark_verified(&v.hash);
                    }
                }
            }
            if let Some(m) = &metrics {
                m.bytes_from(Source::Cache, chunk.len() as u64);
            }
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    body
}

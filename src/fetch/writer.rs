//! Drains a source body into a fill's temporary file, hashing it as it goes, and commits it to the
//! store once complete. A stalled, failed or short source breaks the fill; nothing is stored then.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body::Body as HttpBody;
use http_body_util::BodyExt;

use crate::cache::inflight::{FillPermit, Head, Outcome};
use crate::cache::store::{Entry, Store};
use crate::metrics::{Metrics, Source};

/// Everything the writer needs besides the body.
pub struct FillJob {
    pub permit: FillPermit,
    pub file: Arc<File>,
    pub head: Arc<Head>,
    pub key: String,
    pub shareable: bool,
    pub store: Store,
    pub max_object_size: u64,
    pub read_timeout: Duration,
    pub metrics: Arc<Metrics>,
    pub source: Source,
}

/// Runs the fill to its end. Readers follow through the fill's state; the outcome is `Stored`,
/// `Complete` (not stored: too large or a storage error) or `Broken`.
pub async fn run<B>(job: FillJob, mut body: B)
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let FillJob {
        mut permit,
        file,
        head,
        key,
        shareable,
        store,
        max_object_size,
        read_timeout,
        metrics,
        source,
    } = job;
    let mut hasher = blake3::Hasher::new();
    let mut written: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(read_timeout, body.frame()).await {
            Err(_) => {
                tracing::warn!(%key, written, "source stalled for {read_timeout:?}; fill broken");
                return; // dropping the permit breaks the fill
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::warn!(%key, written, "source failed mid-body: {e}");
                return;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not stored
        };
        if data.is_empty() {
            continue;
        }
        hasher.update(&data);
        let n = data.len() as u64;
        let f = file.clone();
        let at = written;
        let wrote = tokio::task::spawn_blocking(move || f.write_all_at(&data, at)).await;
        if !matches!(wrote, Ok(Ok(()))) {
            tracing::error!(%key, "cannot write the body file; fill broken");
            return;
        }
        written += n;
        metrics.bytes_from(source, n);
        permit.fill().advance(n);
    }
    if head.len.is_some_and(|len| len != written) {
        tracing::warn!(%key, written, "source body length differs from Content-Length");
        return;
    }
    if written > max_object_size {
        permit.finish(Outcome::Complete);
        return;
    }
    let Some(temp) = permit.temp.clone() else {
        permit.finish(Outcome::Complete);
        return;
    };
    let entry = Entry {
        key: key.clone(),
        variant: head.variant.clone(),
        status: head.status,
        headers: head.headers.clone(),
        timing: head.timing,
        hash: hasher.finalize(),
        len: written,
        shareable,
    };
    // No fsync: every read from the store re-hashes the body, so a blob torn by a power loss is
    // caught and dropped, and a process crash loses nothing the page cache holds.
    drop(file);
    let committed = tokio::task::spawn_blocking(move || store.commit(entry, &temp)).await;
    match committed {
        Ok(Ok(entry)) => {
            permit.temp = None;
            permit.finish(Outcome::Stored(entry));
        }
        Ok(Err(e)) => {
            tracing::error!(%key, "cannot store: {e}");
            permit.finish(Outcome::Complete);
        }
        Err(e) => {
            tracing::error!(%key, "store task failed: {e}");
            permit.finish(Outcome::Complete);
        }
    }
}

//! Drains a source body into a fill's temporary file, hashing it as it goes, resuming from the
//! next source at the byte reached when one fails, and commits to the store once complete and
//! verified. A body that no source can finish, or whose hash is wrong, is never stored. Every
//! failure of a source is told, with who failed and how (busy, gone, stalled, bad bytes), to a
//! [`Report`], as is every resumption: the peer side penalises and counts from that.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use crate::body::Body;
use crate::cache::head::Entry;
use crate::cache::head::FillHead;
use crate::cache::inflight::{FillPermit, Outcome};
use crate::cache::store::Store;
use crate::error::{Error, Kind};
use crate::metrics::{Metrics, Source};
use crate::peer::pieces::PieceError;
use crate::peer::wire::NodeId;

/// Who feeds a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feeder {
    /// The origin, directly or through the parent proxy.
    Origin,
    /// A member of the peer group.
    Peer(NodeId),
    /// Several members at once (`fetch::parallel`), each charged there for what it did.
    Holders,
}

impl Feeder {
    fn source(self) -> Source {
        match self {
            Feeder::Origin => Source::Origin,
            Feeder::Peer(_) | Feeder::Holders => Source::Peer,
        }
    }
}

impl std::fmt::Display for Feeder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Feeder::Origin => f.write_str("origin"),
            Feeder::Peer(node) => write!(f, "peer {node}"),
            Feeder::Holders => f.write_str("several peers"),
        }
    }
}

/// How a source failed the fill it fed (or was asked to feed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It refused for lack of capacity (503): not a bad source.
    Busy,
    /// It does not have the body (any more): 404.
    Gone,
    /// No byte for the feed's read timeout.
    Stalled,
    /// Bytes that do not match the body's blake3: at `offset` when a verifying feed knows
    /// where, `None` when only the whole body's hash told.
    BadBytes { offset: Option<u64> },
    /// Unreachable, cut mid-body, or an answer that is no answer.
    Failed,
}

impl Fault {
    /// What an error asking a source for the body means.
    pub fn of(e: &Error) -> Fault {
        match e.kind {
            Kind::Busy => Fault::Busy,
            Kind::NotFound => Fault::Gone,
            Kind::ConnectTimeout | Kind::ResponseTimeout => Fault::Stalled,
            _ => Fault::Failed,
        }
    }
}

impl Fault {
    /// What a body's error means: a verifying feed names the offset of a bad piece; anything
    /// else cut the body.
    fn of_body(e: &(dyn std::error::Error + 'static)) -> Fault {
        match e.downcast_ref::<PieceError>() {
            Some(PieceError::BadPiece { offset }) => Fault::BadBytes {
                offset: Some(*offset),
            },
            _ => Fault::Failed,
        }
    }
}

/// Told what the writer learns about its sources; the peer side penalises and counts there.
pub trait Report: Send + Sync {
    /// `from` failed this fill this way.
    fn fault(&self, from: Feeder, fault: Fault);
    /// The fill goes on from `to` at byte `offset`, after the source before it failed.
    fn resumed(&self, to: Feeder, offset: u64);
}

/// A [`Report`] that only logs (no peer group).
pub struct LogOnly;

impl Report for LogOnly {
    fn fault(&self, _: Feeder, _: Fault) {}
    fn resumed(&self, _: Feeder, _: u64) {}
}

/// A body being read from one source.
pub struct Feed {
    pub body: Body,
    /// Longest silence tolerated before the source counts as stalled.
    pub read_timeout: Duration,
    pub from: Feeder,
}

/// Future returned by [`Resume::resume`].
pub type ResumeFuture<'a> = Pin<Box<dyn Future<Output = Result<Feed, Error>> + Send + 'a>>;

/// Another source for the rest of a body: asked for the bytes from `offset` on (a `Range`
/// request), it must deliver exactly those bytes of the same representation, or fail.
pub trait Resume: Send + Sync {
    /// Who it is (blamed when it cannot deliver).
    fn feeder(&self) -> Feeder;
    fn resume(&self, offset: u64) -> ResumeFuture<'_>;
}

/// Told about the stored entry right after the commit.
pub type OnCommit = Box<dyn FnOnce(&Arc<Entry>) + Send>;

/// Everything the writer needs besides the first body.
pub struct FillJob {
    pub permit: FillPermit,
    pub file: Arc<File>,
    pub head: Arc<FillHead>,
    pub key: String,
    pub store: Store,
    pub max_object_size: u64,
    pub metrics: Arc<Metrics>,
    /// The blake3 the body must have (a complete copy advertised by a peer).
    pub expected: Option<blake3::Hash>,
    /// Where to continue when the current source fails, in order.
    pub fallbacks: Vec<Box<dyn Resume>>,
    /// Commit the body once complete and verified; else the fill ends `Complete`, unstored.
    pub keep: bool,
    /// Called with the stored entry after the commit (advertising it to the group).
    pub on_commit: Option<OnCommit>,
    /// Told each source's failure and each resumption.
    pub report: Arc<dyn Report>,
}

/// How a write ended (the fill's readers learn it through the fill's outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteEnd {
    Stored,
    /// Complete but not stored (too large, storage error).
    Complete,
    /// No source could finish the body.
    Broken,
    /// The body did not match the expected hash: discarded.
    BadHash,
}

/// Runs the fill to its end. Readers follow through the fill's state.
pub async fn run(job: FillJob, first: Feed) -> WriteEnd {
    let FillJob {
        mut permit,
        file,
        head,
        key,
        store,
        max_object_size,
        metrics,
        expected,
        fallbacks,
        keep,
        on_commit,
        report,
    } = job;
    let mut fallbacks = fallbacks.into_iter();
    let mut feed = first;
    let mut hasher = blake3::Hasher::new();
    let mut written: u64 = 0;
    let mut spilling = false;
    // Peers that fed bytes: blamed if the whole body turns out wrong.
    let mut fed_by: Vec<Feeder> = Vec::new();
    loop {
        let (fault, failure) = match tokio::time::timeout(feed.read_timeout, feed.body.frame())
            .await
        {
            Err(_) => (
                Fault::Stalled,
                format!("stalled for {:?}", feed.read_timeout),
            ),
            Ok(Some(Err(e))) => (Fault::of_body(&*e), format!("failed: {e}")),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not stored
                };
                if data.is_empty() {
                    continue;
                }
                hasher.update(&data);
                let n = data.len() as u64;
                if !spilling && written + n > max_object_size {
                    // Stop storing at the limit: the readers attached now get the rest.
                    tracing::info!(%key, written, "over cache.max_object_size; passed through, not stored");
                    Metrics::inc(&metrics.fills_over_size);
                    permit.stop_storing(written);
                    spilling = true;
                }
                if spilling {
                    if !permit.fill().spill(data).await {
                        tracing::debug!(%key, written, "no reader left past the store limit; fill ends");
                        return WriteEnd::Broken;
                    }
                } else {
                    let (f, at) = (file.clone(), written);
                    let wrote =
                        tokio::task::spawn_blocking(move || f.write_all_at(&data, at)).await;
                    if !matches!(wrote, Ok(Ok(()))) {
                        tracing::error!(%key, "cannot write the body file; fill broken");
                        return WriteEnd::Broken;
                    }
                }
                written += n;
                metrics.bytes_from(feed.from.source(), n);
                if !fed_by.contains(&feed.from) {
                    fed_by.push(feed.from);
                }
                permit.fill().advance(n);
                continue;
            }
        };
        tracing::warn!(%key, source = %feed.from, written, "source {failure}; resuming");
        report.fault(feed.from, fault);
        match resume(&mut fallbacks, written, &*report).await {
            Some(next) => feed = next,
            None => {
                tracing::warn!(%key, written, "no source can finish the body; fill broken");
                return WriteEnd::Broken; // dropping the permit breaks the fill
            }
        }
    }
    if head.len.is_some_and(|len| len != written) {
        tracing::warn!(%key, written, "body length differs from Content-Length");
        return WriteEnd::Broken;
    }
    let hash = hasher.finalize();
    if expected.is_some_and(|e| e != hash) {
        tracing::warn!(%key, ?fed_by, "body does not match its advertised blake3; discarded");
        for from in fed_by {
            report.fault(from, Fault::BadBytes { offset: None });
        }
        return WriteEnd::BadHash;
    }
    if spilling || !keep {
        permit.finish(Outcome::Complete);
        return WriteEnd::Complete;
    }
    let Some(temp) = permit.temp.clone() else {
        permit.finish(Outcome::Complete);
        return WriteEnd::Complete;
    };
    let entry = Entry {
        key: key.clone(),
        head: head.head.clone(),
        hash,
        len: written,
    };
    // No fsync: after a restart every blob is hashed in full on its first whole read, so a blob
    // torn by a power loss is caught and dropped; a process crash loses nothing the page cache
    // holds.
    drop(file);
    let committed = tokio::task::spawn_blocking(move || store.commit(entry, &temp)).await;
    match committed {
        Ok(Ok(entry)) => {
            permit.temp = None;
            if let Some(f) = on_commit {
                f(&entry);
            }
            permit.finish(Outcome::Stored(entry));
            WriteEnd::Stored
        }
        Ok(Err(e)) => {
            tracing::error!(%key, "cannot store: {e}");
            permit.finish(Outcome::Complete);
            WriteEnd::Complete
        }
        Err(e) => {
            tracing::error!(%key, "store task failed: {e}");
            permit.finish(Outcome::Complete);
            WriteEnd::Complete
        }
    }
}

/// The first fallback that can deliver the body from `offset` on; each that cannot is told to
/// `report`, and so is the one that can.
async fn resume(
    fallbacks: &mut std::vec::IntoIter<Box<dyn Resume>>,
    offset: u64,
    report: &dyn Report,
) -> Option<Feed> {
    for next in fallbacks.by_ref() {
        match next.resume(offset).await {
            Ok(feed) => {
                tracing::info!(offset, source = %feed.from, "resumed");
                report.resumed(feed.from, offset);
                return Some(feed);
            }
            Err(e) => {
                tracing::warn!(offset, source = %next.feeder(), "fallback failed: {e}");
                report.fault(next.feeder(), Fault::of(&e));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;

//! Collapsed forwarding and serve-while-downloading: at most one fill per cache key; its writer
//! appends to a temporary file and any number of readers tail that file from byte 0, waiting for
//! more. Knows nothing about where bytes come from (origin, peer) or about HTTP semantics.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::cache::key::Variant;
use crate::cache::policy::Timing;
use crate::cache::store::Entry;
use crate::error::Error;

/// Bytes read from a body file per step.
pub const CHUNK: usize = 512 * 1024;

/// The response head a fill is downloading the body of.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    /// End-to-end header fields (hop-by-hop removed).
    pub headers: HeaderMap,
    /// Body length when the source announced it.
    pub len: Option<u64>,
    pub timing: Timing,
    /// The variant of the request that started the fill (its values of the `Vary` fields).
    pub variant: Variant,
    /// May other machines read this fill (RFC 9111 shared-cacheable, not credentialed)?
    pub shareable: bool,
}

/// How a fill ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The body is complete, verified and stored.
    Stored(Arc<Entry>),
    /// A conditional request got 304: the stored entry was freshened and serves everyone.
    Freshened(Arc<Entry>),
    /// The body is complete in the file but was not stored (too large, storage error).
    Complete,
    /// The response cannot be shared with other requests (not storable); fetch on your own.
    NotShared,
    /// The source failed before a response head arrived.
    Failed(Error),
    /// The source failed mid-body: readers cut their responses; nothing is stored.
    Broken,
    /// The fill's owner went away before a response head arrived.
    Abandoned,
}

/// What readers observe.
#[derive(Debug, Clone, Default)]
pub struct FillState {
    pub head: Option<Arc<Head>>,
    /// Bytes of the body present in the file.
    pub written: u64,
    pub outcome: Option<Outcome>,
}

/// One download in progress.
#[derive(Debug)]
pub struct Fill {
    state: watch::Sender<FillState>,
    file: Mutex<Option<Arc<File>>>,
    started: tokio::time::Instant,
}

/// How far one fill has come, for the status page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FillProgress {
    pub key: String,
    /// Body bytes in the file so far.
    pub written: u64,
    /// The body length, when the source announced it.
    pub expected: Option<u64>,
    /// Seconds since the fill began.
    pub secs: u64,
}

impl Fill {
    fn new() -> Arc<Fill> {
        Arc::new(Fill {
            state: watch::channel(FillState::default()).0,
            file: Mutex::new(None),
            started: tokio::time::Instant::now(),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<FillState> {
        self.state.subscribe()
    }

    /// Subscriptions to this fill's state right now: every reader streaming its body holds one,
    /// and so does every request waiting for its head.
    pub fn watchers(&self) -> usize {
        self.state.receiver_count()
    }

    fn file(&self) -> Option<Arc<File>> {
        self.file.lock().ok().and_then(|f| f.clone())
    }

    /// Publishes the response head and the file its body is being written to.
    pub fn start(&self, head: Arc<Head>, file: Arc<File>) {
        if let Ok(mut f) = self.file.lock() {
            *f = Some(file);
        }
        self.state.send_modify(|s| s.head = Some(head));
    }

    /// `n` more bytes are in the file.
    pub fn advance(&self, n: u64) {
        self.state.send_modify(|s| s.written += n);
    }

    fn end(&self, outcome: Outcome) {
        self.state.send_if_modified(|s| {
            if s.outcome.is_some() {
                return false;
            }
            s.outcome = Some(outcome);
            true
        });
    }

    /// Waits until the fill has a head, or ended without one.
    pub async fn head(&self) -> Result<Arc<Head>, Outcome> {
        let mut rx = self.subscribe();
        let state = rx
            .wait_for(|s| s.head.is_some() || s.outcome.is_some())
            .await
            .map(|s| s.clone())
            .unwrap_or_else(|_| FillState {
                outcome: Some(Outcome::Abandoned),
                ..FillState::default()
            });
        match (state.head, state.outcome) {
            (Some(h), _) => Ok(h),
            (None, o) => Err(o.unwrap_or(Outcome::Abandoned)),
        }
    }

    /// Waits for the final outcome.
    pub async fn outcome(&self) -> Outcome {
        let mut rx = self.subscribe();
        rx.wait_for(|s| s.outcome.is_some())
            .await
            .ok()
            .and_then(|s| s.outcome.clone())
            .unwrap_or(Outcome::Abandoned)
    }

    /// Streams bytes `[start, end)` of the body (`end = None`: to the end of the body), waiting
    /// for the writer as needed. A broken fill cuts the stream.
    pub fn body(self: &Arc<Self>, start: u64, end: Option<u64>) -> Body {
        let len = end.map(|e| e.saturating_sub(start));
        let (tx, body) = body::channel(len);
        let fill = self.clone();
        tokio::spawn(async move {
            let mut rx = fill.subscribe();
            let mut pos = start;
            loop {
                let state = rx.borrow_and_update().clone();
                let limit = end.map_or(state.written, |e| e.min(state.written));
                if pos < limit {
                    let Some(file) = fill.file() else { break };
                    match read_span(file, pos, limit).await {
                        Ok(b) if !b.is_empty() => {
                            pos += b.len() as u64;
                            let whole = state.head.as_ref().and_then(|h| h.len);
                            if whole.is_some() && end == whole && Some(pos) == end {
                                // The last byte of the whole body: hold it back until the fill
                                // is committed, so that a client never sees a complete body the
                                // cache then refuses (or a peer's body that failed its hash),
                                // and the next request finds the entry stored.
                                if !matches!(
                                    fill.outcome().await,
                                    Outcome::Stored(_) | Outcome::Complete
                                ) {
                                    let _ = tx
                                        .send(Err("source failed at the end of the body".into()))
                                        .await;
                                    return;
                                }
                            }
                            if tx.send(Ok(b)).await.is_err() {
                                return; // the client went away
                            }
                            continue;
                        }
                        _ => {
                            let _ = tx.send(Err("cannot read the body file".into())).await;
                            return;
                        }
                    }
                }
                if end.is_some_and(|e| pos >= e) {
                    return;
                }
                match &state.outcome {
                    Some(Outcome::Stored(_) | Outcome::Complete) if pos >= state.written => {
                        if end.is_some_and(|e| pos < e) {
                            let _ = tx.send(Err("body shorter than announced".into())).await;
                        }
                        return;
                    }
                    Some(Outcome::Stored(_) | Outcome::Complete) => continue,
                    Some(_) => {
                        let _ = tx.send(Err("source failed mid-body".into())).await;
                        return;
                    }
                    None => {}
                }
                if rx.changed().await.is_err() {
                    let _ = tx.send(Err("fill abandoned".into())).await;
                    return;
                }
            }
            let _ = tx.send(Err("fill has no body file".into())).await;
        });
        body
    }
}

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

/// The right to run the fill of a key. Dropping it without `finish` ends the fill as `Abandoned`
/// (before a head) or `Broken` (after one), and frees the key for a new fill.
#[derive(Debug)]
pub struct FillPermit {
    fill: Arc<Fill>,
    slot: Option<(Arc<Inflight>, String)>,
    /// The temporary file, deleted when the permit goes unless `finish` kept it.
    pub temp: Option<PathBuf>,
    /// Dropped when the fill ends, after its outcome is published.
    guards: Guards,
}

/// Values whose lifetime is the fill's (see [`FillPermit::hold`]).
#[derive(Default)]
struct Guards(Vec<Box<dyn std::any::Any + Send + Sync>>);

impl std::fmt::Debug for Guards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Guards({})", self.0.len())
    }
}

impl FillPermit {
    /// Keeps `guard` until the fill ends — finished, broken, abandoned or cancelled with the
    /// request that led it — then drops it (e.g. the peer group's claim on the key).
    pub fn hold(&mut self, guard: impl Send + Sync + 'static) {
        self.guards.0.push(Box::new(guard));
    }

    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    /// Ends the fill with `outcome` and frees the key. Call it after the store commit, so that a
    /// request arriving in between finds the stored entry or still joins this fill.
    pub fn finish(mut self, outcome: Outcome) {
        self.release(outcome);
    }

    fn release(&mut self, outcome: Outcome) {
        if let Some((inflight, key)) = self.slot.take() {
            inflight.remove(&key, &self.fill);
        }
        self.fill.end(outcome);
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        let outcome = if self.fill.state.borrow().head.is_some() {
            Outcome::Broken
        } else {
            Outcome::Abandoned
        };
        self.release(outcome);
    }
}

/// How a request joins the fills of its key.
#[derive(Debug)]
pub enum Join {
    /// Nobody is fetching this key: you are, and others may join you.
    Leader(FillPermit),
    /// Somebody is: read their fill.
    Follower(Arc<Fill>),
}

/// The fills in progress, by cache key.
#[derive(Debug, Default)]
pub struct Inflight {
    fills: Mutex<HashMap<String, Arc<Fill>>>,
}

impl Inflight {
    pub fn new() -> Arc<Inflight> {
        Arc::new(Inflight::default())
    }

    /// Joins the fill of `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: &str) -> Join {
        let Ok(mut fills) = self.fills.lock() else {
            return Join::Leader(Self::solo());
        };
        if let Some(f) = fills.get(key) {
            return Join::Follower(f.clone());
        }
        let fill = Fill::new();
        fills.insert(key.to_owned(), fill.clone());
        Join::Leader(FillPermit {
            fill,
            slot: Some((self.clone(), key.to_owned())),
            temp: None,
            guards: Guards::default(),
        })
    }

    /// A fill nobody else can join (a request that may not share, e.g. a Vary mismatch).
    pub fn solo() -> FillPermit {
        FillPermit {
            fill: Fill::new(),
            slot: None,
            temp: None,
            guards: Guards::default(),
        }
    }

    /// The fill in progress for `key`, if any (the peer transfer API streams it to others).
    pub fn get(&self, key: &str) -> Option<Arc<Fill>> {
        self.fills.lock().ok().and_then(|f| f.get(key).cloned())
    }

    pub fn len(&self) -> usize {
        self.fills.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// The `limit` oldest fills in progress with how far each has come, oldest first.
    pub fn progress(&self, limit: usize) -> Vec<FillProgress> {
        let Ok(fills) = self.fills.lock() else {
            return Vec::new();
        };
        let mut all: Vec<(&String, &Arc<Fill>)> = fills.iter().collect();
        all.sort_by_key(|(_, f)| f.started);
        all.into_iter()
            .take(limit)
            .map(|(key, fill)| {
                let state = fill.state.borrow();
                FillProgress {
                    key: key.clone(),
                    written: state.written,
                    expected: state.head.as_ref().and_then(|h| h.len),
                    secs: fill.started.elapsed().as_secs(),
                }
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, key: &str, fill: &Arc<Fill>) {
        if let Ok(mut fills) = self.fills.lock() {
            if fills.get(key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
                fills.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops.
    struct Guard(Arc<AtomicUsize>);

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn held_guards_end_with_the_fill_however_it_ends() {
        let inflight = Inflight::new();
        for (how, end) in [("finished", Some(Outcome::NotShared)), ("abandoned", None)] {
            let dropped = Arc::new(AtomicUsize::new(0));
            let Join::Leader(mut permit) = inflight.join("k") else {
                panic!("{how}: a leader");
            };
            permit.hold(Guard(dropped.clone()));
            permit.hold(Guard(dropped.clone()));
            let fill = permit.fill().clone();
            assert_eq!(dropped.load(Ordering::SeqCst), 0, "{how}");
            match end {
                Some(outcome) => permit.finish(outcome),
                None => drop(permit),
            }
            assert_eq!(dropped.load(Ordering::SeqCst), 2, "{how}");
            // The guards go after the outcome is published and the key is free again.
            assert!(fill.subscribe().borrow().outcome.is_some(), "{how}");
            assert!(inflight.get("k").is_none(), "{how}");
        }
    }
}

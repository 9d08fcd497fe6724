//! Collapsed forwarding and serve-while-downloading: at most one fill per cache key; its writer
//! appends to a temporary file and any number of readers tail that file from byte 0, waiting for
//! more. Knows nothing about where bytes come from (origin, peer) or about HTTP semantics.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::cache::head::{Entry, FillHead};
use crate::cache::read::read_span;
use crate::cache::spill::Spill;
use crate::error::Error;

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
    pub head: Option<Arc<FillHead>>,
    /// Bytes of the body received so far.
    pub written: u64,
    /// Once the body outgrew `cache.max_object_size`: the file holds the bytes before this
    /// offset, the [`Spill`] those after (for the readers attached then); nothing is stored.
    pub stored_to: Option<u64>,
    pub outcome: Option<Outcome>,
}

/// One download in progress.
#[derive(Debug)]
pub struct Fill {
    state: watch::Sender<FillState>,
    file: Mutex<Option<Arc<File>>>,
    started: tokio::time::Instant,
    /// Bytes past the store limit, and where each body reader is.
    spill: Spill,
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
    /// Requests reading it or waiting for its head (see [`Fill::watchers`]).
    pub readers: usize,
}

impl Fill {
    fn new() -> Arc<Fill> {
        Arc::new(Fill {
            state: watch::channel(FillState::default()).0,
            file: Mutex::new(None),
            started: tokio::time::Instant::now(),
            spill: Spill::default(),
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
    pub fn start(&self, head: Arc<FillHead>, file: Arc<File>) {
        if let Ok(mut f) = self.file.lock() {
            *f = Some(file);
        }
        self.state.send_modify(|s| s.head = Some(head));
    }

    /// Adds bytes past the store limit once the slowest reader leaves room; `false` when no
    /// reader is attached (the fill may end).
    pub async fn spill(&self, data: Bytes) -> bool {
        self.spill.push(data).await
    }

    /// The next bytes of `[pos, limit)`, from the file or, past the store limit, the spill;
    /// `None` when they cannot be had (no file, unreadable, or let go by the spill).
    async fn bytes_at(&self, pos: u64, limit: u64, stored_to: Option<u64>) -> Option<Bytes> {
        match stored_to {
            Some(to) if pos >= to => self.spill.read(pos, limit - pos),
            _ => {
                let file = self.file()?;
                let limit = stored_to.map_or(limit, |to| to.min(limit));
                read_span(file, pos, limit).await.ok()
            }
        }
    }

    /// `n` more bytes are in the file (or the spill).
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
    pub async fn head(&self) -> Result<Arc<FillHead>, Outcome> {
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
        // Attached now, not when the task first runs: a writer past the store limit must see
        // every reader it has.
        let cursor = Cursor::attach(&fill, start);
        tokio::spawn(async move {
            let mut rx = fill.subscribe();
            let mut pos = start;
            loop {
                let state = rx.borrow_and_update().clone();
                let limit = end.map_or(state.written, |e| e.min(state.written));
                if pos < limit {
                    match fill.bytes_at(pos, limit, state.stored_to).await {
                        Some(b) if !b.is_empty() => {
                            pos += b.len() as u64;
                            cursor.advance(pos);
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
                            let _ = tx.send(Err("cannot read the body".into())).await;
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
        });
        body
    }
}

/// A body reader's place in its fill, for the spill's backpressure; it leaves when dropped.
struct Cursor {
    fill: Arc<Fill>,
    id: u64,
}

impl Cursor {
    fn attach(fill: &Arc<Fill>, pos: u64) -> Cursor {
        Cursor {
            fill: fill.clone(),
            id: fill.spill.attach(pos),
        }
    }

    fn advance(&self, pos: u64) {
        self.fill.spill.advance(self.id, pos);
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.fill.spill.leave(self.id);
    }
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
    /// This fill's place under the bound on fills; freed with the permit.
    _counted: Counted,
}

/// One running fill, counted against [`Inflight`]'s bound until dropped.
#[derive(Debug)]
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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

    /// The body outgrew the store limit at `at` bytes: nothing will be stored. The temporary
    /// file is deleted (readers keep what they opened), the key is freed for new fills, and
    /// the bytes from `at` on go to the spill, for the readers attached now.
    pub fn stop_storing(&mut self, at: u64) {
        if let Some((inflight, key)) = self.slot.take() {
            inflight.remove(&key, &self.fill);
        }
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
        self.fill.spill.start(at);
        self.fill.state.send_modify(|s| s.stored_to = Some(at));
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
    /// Nobody is, and `max_fills` fills are running: fetch without storing.
    Full,
}

/// The fills in progress, by cache key, and how many run at once (keyed and solo).
#[derive(Debug)]
pub struct Inflight {
    fills: Mutex<HashMap<String, Arc<Fill>>>,
    /// Fills running now (their permits alive), never more than `max`.
    running: Arc<AtomicUsize>,
    max: usize,
}

impl Inflight {
    /// At most `max_fills` fills at once (each holds a temporary file and a source).
    pub fn new(max_fills: usize) -> Arc<Inflight> {
        Arc::new(Inflight {
            fills: Mutex::default(),
            running: Arc::default(),
            max: max_fills,
        })
    }

    /// A place under the bound, if one is free.
    fn count(&self) -> Option<Counted> {
        let taken = self
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        taken.ok().map(|_| Counted(self.running.clone()))
    }

    /// Joins the fill of `key`, or starts one if the bound allows.
    pub fn join(self: &Arc<Self>, key: &str) -> Join {
        let Ok(mut fills) = self.fills.lock() else {
            return self.solo().map_or(Join::Full, Join::Leader);
        };
        if let Some(f) = fills.get(key) {
            return Join::Follower(f.clone());
        }
        let Some(counted) = self.count() else {
            return Join::Full;
        };
        let fill = Fill::new();
        fills.insert(key.to_owned(), fill.clone());
        Join::Leader(FillPermit {
            fill,
            slot: Some((self.clone(), key.to_owned())),
            temp: None,
            _counted: counted,
            guards: Guards::default(),
        })
    }

    /// A fill nobody else can join (a request that may not share, e.g. a Vary mismatch), if
    /// the bound allows one more.
    pub fn solo(&self) -> Option<FillPermit> {
        Some(FillPermit {
            fill: Fill::new(),
            slot: None,
            temp: None,
            guards: Guards::default(),
            _counted: self.count()?,
        })
    }

    /// Fills running now, keyed or solo.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
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
                    readers: fill.watchers(),
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

    #[test]
    fn fills_beyond_the_bound_are_refused_until_one_ends() {
        let inflight = Inflight::new(2);
        let Join::Leader(a) = inflight.join("a") else {
            panic!("a leads")
        };
        assert!(
            matches!(inflight.join("a"), Join::Follower(_)),
            "joining needs no room"
        );
        let b = inflight.solo().expect("room for a second fill");
        assert_eq!(inflight.running(), 2);
        assert!(matches!(inflight.join("c"), Join::Full));
        assert!(inflight.solo().is_none());
        drop(b);
        a.finish(Outcome::NotShared);
        assert_eq!(inflight.running(), 0);
        assert!(matches!(inflight.join("c"), Join::Leader(_)));
    }

    /// Counts its drops.
    struct Guard(Arc<AtomicUsize>);

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn held_guards_end_with_the_fill_however_it_ends() {
        let inflight = Inflight::new(8);
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

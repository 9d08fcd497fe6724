//! A complete body copied from several holders at once: one request at a time per holder, for
//! the span `peer::schedule` gives it, each verified piece by piece (`peer::pieces`) before its
//! bytes count, handed on in order as one body. A holder that fails, stalls or lies loses its
//! piece to the others and is charged for it. I/O only: who fetches what is the plan's.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::body::{self, Body, BoxError};
use crate::error::Error;
use crate::peer::pieces::{self, PieceError};
use crate::peer::schedule::{Assign, Counts, Failure, FetchId, Plan};
use crate::peer::select::Fault;
use crate::peer::{PeerStats, Peers, Source};

/// Future returned by [`Spans::span`].
pub type SpanFuture<'a> = Pin<Box<dyn Future<Output = Result<Body, Error>> + Send + 'a>>;

/// Where the spans of one body come from: holders by their index, best first.
pub trait Spans: Send + Sync + 'static {
    /// The verified bytes `[from, to)` of the body from holder `holder`.
    fn span(&self, holder: usize, from: u64, to: u64) -> SpanFuture<'_>;
    /// Holder `holder` failed the copy this way.
    fn charge(&self, holder: usize, fault: Fault);
    /// Where the copy counts what it did.
    fn stats(&self) -> &PeerStats;
}

/// How a copy is cut: pieces, the bytes it may hold ahead of the reader, and the longest
/// silence of a holder before its piece goes to another.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    pub piece: u64,
    pub window: u64,
    pub stall: Duration,
}

/// The body of `len` bytes from `spans`' `holders` holders at once, in order. It fails at the
/// first byte no holder could bring (the writer then resumes from its other sources). Dropping
/// it ends the copy and every request it runs.
pub fn copy<S: Spans>(spans: Arc<S>, holders: usize, len: u64, cut: Cut) -> Body {
    spans.stats().multi_copies.fetch_add(1, Relaxed);
    let (out, body) = body::channel(Some(len));
    let (events_tx, events) = mpsc::channel(EVENTS);
    let run = Copy {
        spans,
        plan: Plan::new(len, cut.piece, cut.window, holders),
        cut,
        started: Instant::now(),
        workers: JoinSet::new(),
        running: HashMap::new(),
        events_tx,
        published: Counts::default(),
        held: 0,
    };
    let task = tokio::spawn(run.run(events, out));
    body::observed(body, move |_, _| task.abort())
}

/// Bytes handed on per frame at most (about): chunks that arrived are joined up to it, so the
/// fill's writer makes few large writes rather than one per verified group.
const FRAME: usize = 256 * 1024;

/// Events queued from the requests to the copy, each at most the verified groups that were
/// ready at once (`peer::pieces` joins them up to 256 KiB): at most 2 MiB in transit.
const EVENTS: usize = 8;

enum Event {
    Data(FetchId, Bytes),
    /// The span's body ended.
    End(Assign),
    Failed(Assign, Lapse),
}

/// How a request failed.
enum Lapse {
    /// No usable answer (refused, unreachable, no head in time).
    Refused(Error),
    /// No byte for the stall limit.
    Stalled,
    /// The body failed (a bad piece, a cut).
    Body(BoxError),
}

impl Lapse {
    /// What it means for the plan, and what to charge the holder (`None`: nothing, or it was
    /// charged already where the bad piece was found).
    fn judge(&self) -> (Failure, Option<Fault>) {
        match self {
            Lapse::Refused(e) => match Fault::of(e) {
                Some(Fault::Busy) => (Failure::Busy, Some(Fault::Busy)),
                Some(Fault::Gone) => (Failure::Gone, Some(Fault::Gone)),
                Some(Fault::Bad) => (Failure::Bad, Some(Fault::Bad)),
                None => (Failure::Bad, None),
            },
            Lapse::Stalled => (Failure::Bad, Some(Fault::Bad)),
            Lapse::Body(e) => match e.downcast_ref::<PieceError>() {
                Some(PieceError::BadPiece { .. }) => (Failure::Bad, None),
                _ => (Failure::Bad, Some(Fault::Bad)),
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Lapse::Refused(e) => e.to_string(),
            Lapse::Stalled => "stalled".into(),
            Lapse::Body(e) => e.to_string(),
        }
    }
}

/// One copy in progress. Dropping it (the copy ended, or its body was dropped and the task
/// aborted) aborts its requests and takes what it held off the `reorder_bytes` gauge.
struct Copy<S: Spans> {
    spans: Arc<S>,
    plan: Plan,
    cut: Cut,
    started: Instant,
    workers: JoinSet<()>,
    /// The requests running, until their end is handled or they are cancelled.
    running: HashMap<FetchId, AbortHandle>,
    events_tx: mpsc::Sender<Event>,
    /// The plan's counts and held bytes as last added to the stats.
    published: Counts,
    held: u64,
}

impl<S: Spans> Drop for Copy<S> {
    fn drop(&mut self) {
        self.spans
            .stats()
            .reorder_bytes
            .fetch_sub(self.held, Relaxed);
    }
}

impl<S: Spans> Copy<S> {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn run(mut self, mut events: mpsc::Receiver<Event>, out: body::Sender) {
        loop {
            for a in self.plan.assign(self.now_ms()) {
                self.start(a);
            }
            self.publish();
            if self.plan.done() {
                return;
            }
            // What arrived in order goes on first; then the rest is the fallbacks' business.
            if self.plan.stuck() && !self.plan.ready() {
                let offset = self.plan.released();
                tracing::warn!(offset, "no holder left to finish the copy");
                let cut = PieceError::Failed {
                    offset,
                    reason: "no holder left".into(),
                };
                let _ = out.send(Err(Box::new(cut))).await;
                return;
            }
            let wake = self
                .plan
                .next_wake(self.now_ms())
                .map(|ms| self.started + Duration::from_millis(ms));
            tokio::select! {
                permit = out.reserve(), if self.plan.ready() => match (permit, self.plan.take(FRAME)) {
                    (Ok(permit), Some(data)) => permit.send(Ok(data)),
                    (Err(_), _) => return,
                    (Ok(_), None) => {}
                },
                event = events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => return,
                },
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
                _ = out.closed() => return,
            }
        }
    }

    /// Starts the request of `a` on a task of the copy's.
    fn start(&mut self, a: Assign) {
        tracing::debug!(holder = a.holder, from = a.from, to = a.to, why = ?a.why, "piece");
        let (spans, tx, stall) = (self.spans.clone(), self.events_tx.clone(), self.cut.stall);
        let handle = self.workers.spawn(async move {
            let event = match fetch(&*spans, a, &tx, stall).await {
                Ok(()) => Event::End(a),
                Err(lapse) => Event::Failed(a, lapse),
            };
            let _ = tx.send(event).await;
        });
        self.running.insert(a.fetch, handle);
    }

    fn handle(&mut self, event: Event) {
        let now = self.now_ms();
        match event {
            Event::Data(fetch, data) => {
                for cancelled in self.plan.arrived(fetch, data, now) {
                    if let Some(task) = self.running.remove(&cancelled) {
                        task.abort();
                    }
                }
            }
            Event::End(a) => {
                self.running.remove(&a.fetch);
                if self.plan.ended(a.fetch, now) {
                    tracing::info!(holder = a.holder, "piece cut short");
                    self.spans.charge(a.holder, Fault::Bad);
                }
            }
            Event::Failed(a, lapse) => {
                // A cancelled request's failure is no news.
                if self.running.remove(&a.fetch).is_none() {
                    return;
                }
                let (failure, fault) = lapse.judge();
                tracing::info!(holder = a.holder, "piece not fetched: {}", lapse.describe());
                if let Some(fault) = fault {
                    self.spans.charge(a.holder, fault);
                }
                self.plan.failed(a.fetch, failure, now);
            }
        }
        // Reap the requests that ended (their results are nothing).
        while self.workers.try_join_next().is_some() {}
    }

    /// Adds what changed in the plan's counts and held bytes to the stats.
    fn publish(&mut self) {
        let stats = self.spans.stats();
        let c = self.plan.counts();
        stats
            .pieces_reassigned
            .fetch_add(c.orphans - self.published.orphans, Relaxed);
        stats
            .pieces_raced
            .fetch_add(c.races - self.published.races, Relaxed);
        stats
            .window_waits
            .fetch_add(c.window_waits - self.published.window_waits, Relaxed);
        self.published = c;
        let held = self.plan.buffered();
        if held >= self.held {
            stats.reorder_bytes.fetch_add(held - self.held, Relaxed);
        } else {
            stats.reorder_bytes.fetch_sub(self.held - held, Relaxed);
        }
        self.held = held;
    }
}

/// Runs one request: its verified bytes go to the copy as they come.
async fn fetch<S: Spans>(
    spans: &S,
    a: Assign,
    tx: &mpsc::Sender<Event>,
    stall: Duration,
) -> Result<(), Lapse> {
    let mut body = spans
        .span(a.holder, a.from, a.to)
        .await
        .map_err(Lapse::Refused)?;
    loop {
        match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => return Err(Lapse::Stalled),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(Lapse::Body(e)),
            Ok(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if !data.is_empty() && tx.send(Event::Data(a.fetch, data)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// The holders of one complete body (same blake3 and length), best first, as the group
/// advertises them.
pub struct Team {
    pub peers: Arc<Peers>,
    pub holders: Vec<Source>,
    pub hash: blake3::Hash,
    pub len: u64,
}

impl Spans for Team {
    fn span(&self, holder: usize, from: u64, to: u64) -> SpanFuture<'_> {
        Box::pin(async move {
            let src = self
                .holders
                .get(holder)
                .ok_or_else(|| Error::internal("no such holder"))?;
            pieces::fetch_span(&self.peers, src, self.hash, self.len, (from, to)).await
        })
    }

    fn charge(&self, holder: usize, fault: Fault) {
        if let Some(src) = self.holders.get(holder) {
            self.peers.charge(src.node, fault);
        }
    }

    fn stats(&self) -> &PeerStats {
        &self.peers.stats
    }
}

#[cfg(test)]
mod tests;

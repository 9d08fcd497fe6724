//! A fill's bytes past `cache.max_object_size`: no longer written to its file but held in
//! memory — at most [`SPILL_MAX`] — for the readers that were attached, each byte until every
//! one of them has taken it. The writer waits for the slowest reader (a pass-through's
//! backpressure) and stops when none is left. Knows nothing of sources or HTTP.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// Most bytes held past the limit (one more chunk may come on top of it).
pub const SPILL_MAX: u64 = 1024 * 1024;
/// How long a full spill waits for a reader to attach when none is.
pub const NOBODY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The spilled bytes of one fill and where its readers are.
#[derive(Debug, Default)]
pub struct Spill {
    inner: Mutex<Inner>,
    /// A reader moved on or left.
    moved: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// Body offset of the first byte held.
    base: u64,
    chunks: VecDeque<Bytes>,
    held: u64,
    /// Each attached reader's next body offset.
    cursors: HashMap<u64, u64>,
    next_id: u64,
}

impl Inner {
    /// Readers ever attached (ids are handed out in order).
    fn ever_attached(&self) -> bool {
        self.next_id > 0
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Spill {
    /// Bytes from body offset `at` on are spilled (the file holds those before).
    pub fn start(&self, at: u64) {
        let mut g = lock(&self.inner);
        g.base = at;
        g.chunks.clear();
        g.held = 0;
    }

    /// A reader attached at body offset `pos`; see [`Spill::advance`] and [`Spill::leave`].
    pub fn attach(&self, pos: u64) -> u64 {
        let mut g = lock(&self.inner);
        let id = g.next_id;
        g.next_id += 1;
        g.cursors.insert(id, pos);
        id
    }

    /// Reader `id` has taken every byte before `pos`.
    pub fn advance(&self, id: u64, pos: u64) {
        if let Some(at) = lock(&self.inner).cursors.get_mut(&id) {
            *at = pos;
        }
        self.moved.notify_one();
    }

    /// Reader `id` is gone.
    pub fn leave(&self, id: u64) {
        lock(&self.inner).cursors.remove(&id);
        self.moved.notify_one();
    }

    /// Adds the next bytes once there is room (bytes every reader took are let go). `false`
    /// when every reader that attached has left, or — none having attached yet — the spill is
    /// full and none attached within [`NOBODY_WAIT`]: nobody wants the rest. (A request that got
    /// the fill may attach a moment after the limit was reached; nothing is let go while no
    /// reader is attached.)
    pub async fn push(&self, data: Bytes) -> bool {
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let nobody = {
                let mut g = lock(&self.inner);
                if g.cursors.is_empty() && g.ever_attached() {
                    return false;
                }
                if let Some(slowest) = g.cursors.values().min().copied() {
                    while let Some(first) = g.chunks.front() {
                        let n = first.len() as u64;
                        if g.base + n > slowest {
                            break;
                        }
                        g.chunks.pop_front();
                        g.base += n;
                        g.held -= n;
                    }
                }
                if g.held < SPILL_MAX {
                    g.held += data.len() as u64;
                    g.chunks.push_back(data);
                    return true;
                }
                g.cursors.is_empty()
            };
            if !nobody {
                moved.await;
            } else if tokio::time::timeout(NOBODY_WAIT, moved).await.is_err() {
                return false;
            }
        }
    }

    /// Up to `max` bytes from body offset `pos` (empty: not spilled yet); `None` when they were
    /// let go already (a reader that attached after they were taken by all the others).
    pub fn read(&self, pos: u64, max: u64) -> Option<Bytes> {
        let g = lock(&self.inner);
        if pos < g.base {
            return None;
        }
        let mut at = g.base;
        for c in &g.chunks {
            let n = c.len() as u64;
            if pos < at + n {
                let from = (pos - at) as usize;
                let to = (pos - at).saturating_add(max).min(n) as usize;
                return Some(c.slice(from..to));
            }
            at += n;
        }
        Some(Bytes::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn the_writer_waits_for_the_slowest_reader_and_stops_without_readers() {
        let spill = Arc::new(Spill::default());
        spill.start(100);
        let (fast, slow) = (spill.attach(100), spill.attach(100));
        let chunk = Bytes::from(vec![7u8; (SPILL_MAX / 2) as usize]);
        assert!(spill.push(chunk.clone()).await);
        assert!(spill.push(chunk.clone()).await);
        // Full: the third chunk waits until the slow reader has taken the first.
        let writer = tokio::spawn({
            let (spill, chunk) = (spill.clone(), chunk.clone());
            async move { spill.push(chunk).await }
        });
        spill.advance(fast, 100 + 2 * chunk.len() as u64);
        tokio::task::yield_now().await;
        assert!(!writer.is_finished(), "the slow reader holds the room");
        assert_eq!(spill.read(100, 10).unwrap().len(), 10);
        spill.advance(slow, 100 + chunk.len() as u64);
        assert!(writer.await.unwrap());
        // What every reader took is let go; a reader that comes for it is told so.
        assert!(spill.read(100, 10).is_none());
        assert_eq!(spill.read(100 + chunk.len() as u64, 5).unwrap().len(), 5);
        assert!(spill
            .read(100 + 3 * chunk.len() as u64, 5)
            .unwrap()
            .is_empty());
        spill.leave(fast);
        spill.leave(slow);
        assert!(
            !spill.push(chunk.clone()).await,
            "full, and nobody left to read it"
        );
        // Before any reader attached, what fits is kept for one that may still come.
        let fresh = Spill::default();
        fresh.start(0);
        assert!(fresh.push(chunk.clone()).await);
        assert!(fresh.push(chunk).await);
        let late = fresh.attach(0);
        assert_eq!(fresh.read(0, 4).unwrap().len(), 4);
        fresh.leave(late);
    }
}

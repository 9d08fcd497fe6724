//! Which holder fetches which piece when one body is copied from several holders at once, and
//! the verified bytes that arrived ahead of their turn until they can be handed on in order.
//! Pieces go out in order inside a window ahead of the bytes handed on (the reorder bound), the
//! rest of a failed holder's piece goes to the others, and an idle holder that is clearly faster
//! than a piece's fetcher fetches that piece too (work stealing, the endgame): the first to reach
//! its end wins and the other is cancelled. Pure: no I/O, no clocks (`now_ms` is passed in);
//! `fetch::parallel` makes the requests.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::select::BUSY_RETRIES;

/// Names one request for a span of the body (a fetch); never reused within a plan.
pub type FetchId = u64;

/// A holder's speed is trusted once it has sent this many bytes (or half a piece, if less).
const SAMPLE: u64 = 64 * 1024;
/// A fetch that brought no byte for this long is as slow as can be: any idle holder may race it.
pub const SLOW_START_MS: u64 = 250;
/// An idle holder races a piece's fetcher only when it is at least this many times faster.
const FASTER: u128 = 2;
/// Fetches of one piece at a time (its fetcher and one racer).
const MAX_FETCHERS: usize = 2;
/// How often an idle holder looks again for a piece worth racing.
pub const RECHECK_MS: u64 = 50;

/// Why a holder was given a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The next piece nobody fetched yet.
    Next,
    /// The rest of a piece whose fetcher failed.
    Orphan,
    /// A piece another holder is fetching, much more slowly (endgame duplication).
    Race,
}

/// A request to make: bytes `[from, to)` of the body from holder `holder` (its index in the
/// list the plan was made with, best first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assign {
    pub fetch: FetchId,
    pub holder: usize,
    pub from: u64,
    pub to: u64,
    pub why: Why,
}

/// How a fetch failed, which decides what becomes of its holder for the rest of the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It refused for lack of capacity (503): asked again after [`BUSY_RETRIES`], then left out.
    Busy,
    /// It no longer has the body: left out.
    Gone,
    /// A bad piece, a cut, a stall, no answer: left out.
    Bad,
}

/// What the plan did, for the status page.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Pieces (or their rest) given to another holder after theirs failed.
    pub orphans: u64,
    /// Races started: a piece fetched by a second, faster holder.
    pub races: u64,
    /// Times a holder was left idle because the next piece lay past the window.
    pub window_waits: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Fetching,
    /// Its fetch brought the end of its piece; it is idle once that fetch's body ends (the
    /// holder then let go of its upload slot, so a next request is not refused as busy).
    Finishing(FetchId),
    Resting {
        until_ms: u64,
    },
    Out,
}

#[derive(Debug)]
struct Holder {
    state: State,
    /// Bytes it brought, over `ms` of fetching (finished fetches; the running one is added).
    bytes: u64,
    ms: u64,
    busy_answers: usize,
    /// Counted in `window_waits` since it last went idle.
    waiting: bool,
}

#[derive(Debug)]
struct Piece {
    end: u64,
    /// End of the verified prefix that arrived (from any fetch); the piece's start at first.
    have: u64,
    /// The bytes from the piece's start (or the bytes handed on, if further) to `have`, not
    /// yet handed on.
    buf: VecDeque<Bytes>,
    fetchers: usize,
    /// A fetch of it failed and none runs now.
    orphaned: bool,
}

#[derive(Debug)]
struct Fetch {
    id: FetchId,
    holder: usize,
    piece: u64,
    /// The next byte this fetch brings.
    at: u64,
    started_ms: u64,
    bytes: u64,
}

/// How many holders a body of `len` bytes is copied from at once: at most `max` and the
/// `holders` there are, no more than it has pieces of `piece` bytes, and one for a body shorter
/// than two pieces.
pub fn width(len: u64, piece: u64, max: usize, holders: usize) -> usize {
    let piece = piece.max(1);
    if len / 2 < piece {
        return 1;
    }
    let pieces = usize::try_from(len.div_ceil(piece)).unwrap_or(usize::MAX);
    max.min(holders).min(pieces).max(1)
}

/// The reorder bound of a copy from `width` holders in pieces of `piece` bytes: two pieces per
/// holder, so that a holder that finished its piece early takes the next one while the head
/// piece is still coming.
pub fn window(width: usize, piece: u64) -> u64 {
    2 * width as u64 * piece
}

/// The schedule of one copy.
///
/// Invariants: a piece starts being fetched only while it starts less than `window` bytes past
/// the bytes handed on, so the bytes held never exceed `window + piece`, and only the pieces
/// from the first not handed on to the window's end are kept (whatever length a holder
/// advertised); every fetch covers the rest of one piece, from that piece's `have` when it
/// started; bytes are handed on in order, each once.
#[derive(Debug)]
pub struct Plan {
    len: u64,
    piece: u64,
    /// Pieces in the body.
    count: u64,
    window: u64,
    /// Bytes after which a holder's speed is known.
    sample: u64,
    /// Pieces `head..head + pieces.len()`, made as the window reaches them.
    pieces: VecDeque<Piece>,
    holders: Vec<Holder>,
    fetches: Vec<Fetch>,
    next_id: FetchId,
    released: u64,
    /// The first piece not wholly handed on.
    head: u64,
    buffered: u64,
    counts: Counts,
}

impl Plan {
    /// A plan for a body of `len` bytes in pieces of `piece` bytes (the last may be shorter),
    /// fetched from `holders` holders, holding at most `window` bytes (at least one piece) ahead
    /// of the bytes handed on.
    pub fn new(len: u64, piece: u64, window: u64, holders: usize) -> Plan {
        let piece = piece.max(1);
        let holders = (0..holders)
            .map(|_| Holder {
                state: State::Idle,
                bytes: 0,
                ms: 0,
                busy_answers: 0,
                waiting: false,
            })
            .collect();
        Plan {
            len,
            piece,
            count: len.div_ceil(piece),
            window: window.max(piece),
            sample: SAMPLE.min(piece / 2).max(1),
            pieces: VecDeque::new(),
            holders,
            fetches: Vec::new(),
            next_id: 0,
            released: 0,
            head: 0,
            buffered: 0,
            counts: Counts::default(),
        }
    }

    /// The requests to make now: one for each idle holder that has something to fetch. Holders
    /// are served in their order (best first).
    pub fn assign(&mut self, now_ms: u64) -> Vec<Assign> {
        let mut out = Vec::new();
        for h in 0..self.holders.len() {
            if let State::Resting { until_ms } = self.holders[h].state {
                if until_ms <= now_ms {
                    self.holders[h].state = State::Idle;
                }
            }
            if self.holders[h].state != State::Idle {
                continue;
            }
            let pick = match self.next_piece() {
                Some(next) => Some(next),
                None => self.race_for(h, now_ms),
            };
            let Some((piece, why)) = pick else {
                let made = self.head + self.pieces.len() as u64;
                let waits = made < self.count
                    || self
                        .pieces
                        .iter()
                        .any(|p| p.fetchers == 0 && p.have < p.end);
                if waits && !self.holders[h].waiting {
                    self.holders[h].waiting = true;
                    self.counts.window_waits += 1;
                }
                continue;
            };
            match why {
                Why::Orphan => self.counts.orphans += 1,
                Why::Race => self.counts.races += 1,
                Why::Next => {}
            }
            let id = self.next_id;
            self.next_id += 1;
            let p = self.at_mut(piece);
            p.fetchers += 1;
            p.orphaned = false;
            let (from, to) = (p.have, p.end);
            self.fetches.push(Fetch {
                id,
                holder: h,
                piece,
                at: from,
                started_ms: now_ms,
                bytes: 0,
            });
            let holder = &mut self.holders[h];
            holder.state = State::Fetching;
            holder.waiting = false;
            out.push(Assign {
                fetch: id,
                holder: h,
                from,
                to,
                why,
            });
        }
        out
    }

    /// The first piece inside the window that is incomplete and fetched by nobody (made now
    /// if the window just reached it).
    fn next_piece(&mut self) -> Option<(u64, Why)> {
        let limit = self.released.saturating_add(self.window);
        let mut i = self.head;
        while i < self.count && i * self.piece < limit {
            if i == self.head + self.pieces.len() as u64 {
                let start = i * self.piece;
                self.pieces.push_back(Piece {
                    end: (start + self.piece).min(self.len),
                    have: start,
                    buf: VecDeque::new(),
                    fetchers: 0,
                    orphaned: false,
                });
            }
            let p = self.at(i);
            if p.fetchers == 0 && p.have < p.end {
                let why = if p.orphaned { Why::Orphan } else { Why::Next };
                return Some((i, why));
            }
            i += 1;
        }
        None
    }

    /// Piece `i`, which is kept (from the head to the last made).
    fn at(&self, i: u64) -> &Piece {
        &self.pieces[(i - self.head) as usize]
    }

    fn at_mut(&mut self, i: u64) -> &mut Piece {
        &mut self.pieces[(i - self.head) as usize]
    }

    /// The first piece whose only fetcher `h` should race: it brought nothing for
    /// [`SLOW_START_MS`], or both speeds are known and `h` is [`FASTER`] times faster.
    fn race_for(&self, h: usize, now_ms: u64) -> Option<(u64, Why)> {
        let mine = self.speed(h, now_ms);
        self.fetches
            .iter()
            .filter(|f| {
                let p = self.at(f.piece);
                p.fetchers < MAX_FETCHERS && p.have < p.end
            })
            .filter(|f| {
                let silent = f.bytes == 0 && now_ms.saturating_sub(f.started_ms) >= SLOW_START_MS;
                let slower = match (mine, self.speed(f.holder, now_ms)) {
                    (Some((b1, t1)), Some((b2, t2))) => {
                        u128::from(b1) * u128::from(t2) >= FASTER * u128::from(b2) * u128::from(t1)
                    }
                    _ => false,
                };
                silent || slower
            })
            .map(|f| f.piece)
            .min()
            .map(|p| (p, Why::Race))
    }

    /// Bytes and milliseconds of holder `h`'s fetching so far, once it brought enough to tell
    /// (milliseconds at least 1).
    fn speed(&self, h: usize, now_ms: u64) -> Option<(u64, u64)> {
        let holder = &self.holders[h];
        let running = self
            .fetches
            .iter()
            .filter(|f| f.holder == h)
            .map(|f| now_ms.saturating_sub(f.started_ms))
            .sum::<u64>();
        (holder.bytes >= self.sample).then(|| (holder.bytes, (holder.ms + running).max(1)))
    }

    /// Verified bytes of fetch `fetch`, following what it brought before. Returns the fetches
    /// to cancel: the other fetchers of a piece this completed (a fetcher that brought nothing
    /// of it in [`SLOW_START_MS`] or more, silent or hung, is out for the rest of the copy).
    /// Bytes of a fetch the plan no longer knows (cancelled, failed) are ignored.
    pub fn arrived(&mut self, fetch: FetchId, data: Bytes, now_ms: u64) -> Vec<FetchId> {
        let Some(fi) = self.fetches.iter().position(|f| f.id == fetch) else {
            return Vec::new();
        };
        let f = &mut self.fetches[fi];
        let p = &mut self.pieces[(f.piece - self.head) as usize];
        let at = f.at;
        let to = (at + data.len() as u64).min(p.end);
        if at > p.have || to <= at {
            // A fetch starts at its piece's `have` and `have` only grows: never behind it.
            return Vec::new();
        }
        let n = to - at;
        f.at = to;
        f.bytes += n;
        self.holders[f.holder].bytes += n;
        if to > p.have {
            let fresh = data.slice((p.have - at) as usize..n as usize);
            self.buffered += fresh.len() as u64;
            p.buf.push_back(fresh);
            p.have = to;
        }
        if p.have < p.end {
            return Vec::new();
        }
        // Complete: every fetch of this piece ends; this one's holder finishes its body, the
        // others are cancelled, and a holder that brought nothing of it for the slow start
        // while another fetched it is left out of this copy.
        let piece = f.piece;
        let mut cancel = Vec::new();
        let mut i = 0;
        while i < self.fetches.len() {
            if self.fetches[i].piece == piece {
                let f = self.fetches.swap_remove(i);
                let silent = f.bytes == 0 && now_ms.saturating_sub(f.started_ms) >= SLOW_START_MS;
                let next = if f.id == fetch {
                    State::Finishing(fetch)
                } else if silent {
                    State::Out
                } else {
                    State::Idle
                };
                self.end_fetch(&f, now_ms, next);
                if f.id != fetch {
                    cancel.push(f.id);
                }
            } else {
                i += 1;
            }
        }
        self.at_mut(piece).fetchers = 0;
        cancel
    }

    /// The body of fetch `fetch` ended: after the end of its piece its holder is free again;
    /// before, it is a cut, and `true`.
    pub fn ended(&mut self, fetch: FetchId, now_ms: u64) -> bool {
        if let Some(h) = self.finishing(fetch) {
            self.holders[h].state = State::Idle;
            return false;
        }
        let cut = self.fetches.iter().any(|f| f.id == fetch);
        self.failed(fetch, Failure::Bad, now_ms);
        cut
    }

    /// The holder whose fetch `fetch` brought its piece's end and has yet to end.
    fn finishing(&self, fetch: FetchId) -> Option<usize> {
        self.holders
            .iter()
            .position(|h| h.state == State::Finishing(fetch))
    }

    /// Fetch `fetch` failed: its piece keeps what arrived, the rest goes to another holder;
    /// its holder rests (busy) or is out for the rest of the copy (also when the failure came
    /// after the end of its piece).
    pub fn failed(&mut self, fetch: FetchId, how: Failure, now_ms: u64) {
        let Some(fi) = self.fetches.iter().position(|f| f.id == fetch) else {
            if let Some(h) = self.finishing(fetch) {
                self.holders[h].state = self.after(h, how, now_ms);
                if how == Failure::Busy {
                    self.holders[h].busy_answers += 1;
                }
            }
            return;
        };
        let f = self.fetches.swap_remove(fi);
        let p = self.at_mut(f.piece);
        p.fetchers -= 1;
        if p.fetchers == 0 {
            p.orphaned = true;
        }
        let next = self.after(f.holder, how, now_ms);
        if how == Failure::Busy {
            self.holders[f.holder].busy_answers += 1;
        }
        self.end_fetch(&f, now_ms, next);
    }

    /// What holder `h` becomes after failing this way.
    fn after(&self, h: usize, how: Failure, now_ms: u64) -> State {
        match how {
            Failure::Busy => match BUSY_RETRIES.get(self.holders[h].busy_answers) {
                Some(wait) => State::Resting {
                    until_ms: now_ms + wait.as_millis() as u64,
                },
                None => State::Out,
            },
            Failure::Gone | Failure::Bad => State::Out,
        }
    }

    fn end_fetch(&mut self, f: &Fetch, now_ms: u64, next: State) {
        let h = &mut self.holders[f.holder];
        h.ms += now_ms.saturating_sub(f.started_ms);
        h.state = next;
        h.waiting = false;
    }

    /// The next bytes in order, if they arrived: what arrived of them at once, up to about
    /// `max` bytes (the chunks that arrived, each a verified group or less, joined until they
    /// reach `max`), so that the reader handles few large frames.
    pub fn take(&mut self, max: usize) -> Option<Bytes> {
        let first = self.pop()?;
        if first.len() >= max || !self.ready() {
            return Some(first);
        }
        let mut joined = BytesMut::with_capacity(max.min(first.len() + self.buffered as usize));
        joined.extend_from_slice(&first);
        while joined.len() < max {
            let Some(next) = self.pop() else {
                break;
            };
            joined.extend_from_slice(&next);
        }
        Some(joined.freeze())
    }

    /// The next chunk in order, if it arrived.
    fn pop(&mut self) -> Option<Bytes> {
        let p = self.pieces.front_mut()?;
        let data = p.buf.pop_front()?;
        self.released += data.len() as u64;
        self.buffered -= data.len() as u64;
        if self.released == p.end {
            self.pieces.pop_front();
            self.head += 1;
        }
        Some(data)
    }

    /// Whether [`take`](Self::take) has bytes to give.
    pub fn ready(&self) -> bool {
        self.pieces.front().is_some_and(|p| !p.buf.is_empty())
    }

    /// Every byte was handed on.
    pub fn done(&self) -> bool {
        self.released == self.len
    }

    /// Bytes handed on so far.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Bytes held that arrived but were not handed on.
    pub fn buffered(&self) -> u64 {
        self.buffered
    }

    /// No holder is left to finish the body.
    pub fn stuck(&self) -> bool {
        !self.done() && self.holders.iter().all(|h| h.state == State::Out)
    }

    /// When to ask the plan again without news: when the first resting holder may be asked
    /// again, and every [`RECHECK_MS`] while a holder is idle and others fetch (speeds change
    /// as time passes: a race may become worth it).
    pub fn next_wake(&self, now_ms: u64) -> Option<u64> {
        let idle = self.holders.iter().any(|h| h.state == State::Idle);
        let recheck = (idle && !self.fetches.is_empty()).then_some(now_ms + RECHECK_MS);
        self.holders
            .iter()
            .filter_map(|h| match h.state {
                State::Resting { until_ms } => Some(until_ms),
                _ => None,
            })
            .chain(recheck)
            .min()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }
}

#[cfg(test)]
mod tests;

//! Which peer to ask for a body: ranking holders, what a failure costs the peer (busy, gone or
//! bad), back-off from busy holders and smoothed RTTs; pure, no I/O and no clocks (`now_ms` is
//! always passed in).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::Duration;

use super::index::body_id;
use super::wire::NodeId;
use super::Source;
use crate::error::{Error, Kind, Side};

/// How long a peer that failed us badly (bad hash, lies, unreachable, hung) is not asked again.
pub const PENALTY: Duration = Duration::from_secs(60);
/// How long a busy peer (503 at its `max_uploads`) is ranked after the others.
pub const BUSY: Duration = Duration::from_secs(1);
/// Waits before asking busy holders again within one request; after the last, the origin.
pub const BUSY_RETRIES: [Duration; 3] = [
    Duration::from_millis(150),
    Duration::from_millis(300),
    Duration::from_millis(600),
];

/// How a peer failed a request, which decides what it costs the peer. Busy and gone are not bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It is at its `max_uploads` (503) or cannot take the request just now: others are tried
    /// first for [`BUSY`], and it is asked again after a short back-off ([`BUSY_RETRIES`]).
    Busy,
    /// It no longer has the object (404: evicted, or its fill ended; the `Dropped` is on its
    /// way): no penalty, it is only skipped for the rest of the request.
    Gone,
    /// A bad hash, a malformed or lying reply, a timeout, unreachable: left out for [`PENALTY`].
    Bad,
}

impl Fault {
    /// The peer's part in `e`, or `None` when the failure is not the peer's (no matching variant,
    /// our own storage, the origin).
    pub fn of(e: &Error) -> Option<Fault> {
        if e.side != Side::Peer {
            return None;
        }
        Some(match e.kind {
            Kind::Busy => Fault::Busy,
            Kind::NotFound => Fault::Gone,
            _ => Fault::Bad,
        })
    }
}

impl Source {
    /// Whether the holder's entry for the key, naming a complete body of blake3 `hash` and
    /// `len` bytes, is a copy to take from it: the body the index names for it (the same
    /// [`BodyId`](super::index::BodyId) and length), or any when the index last heard it was
    /// fetching the key (it finished since). Otherwise the holder is no source for this body:
    /// it is skipped as if it had no entry, and no body is ever verified against a hash the
    /// index named for another.
    pub fn names(&self, hash: &[u8; 32], len: Option<u64>) -> bool {
        self.complete
            .is_none_or(|(body, want)| body == body_id(hash) && len == Some(want))
    }

    /// Whether the index names the complete body of blake3 `hash` and `len` bytes for this
    /// holder (a holder of the same body, for a copy from several at once).
    pub fn holds(&self, hash: &[u8; 32], len: u64) -> bool {
        self.complete == Some((body_id(hash), len))
    }
}

/// The wait before round `round` (0-based) of asking busy holders again; `None` once the retries
/// are spent (the request goes to the origin).
pub fn busy_retry(round: usize) -> Option<Duration> {
    BUSY_RETRIES.get(round).copied()
}

/// A node that holds (or is fetching) the wanted key, with what we know about reaching it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub node: NodeId,
    /// Same `site` label as this node.
    pub same_site: bool,
    /// Holds the complete body (else it is still downloading it).
    pub complete: bool,
    /// Its copy was fresh by the group's rules as of its `Have` (`fresh_until` still ahead):
    /// a stale one costs a revalidation with the origin first.
    pub fresh: bool,
    /// Smoothed round-trip time, if ever measured (see [`RttTable`]).
    pub rtt: Option<Duration>,
    /// Uploads it was serving when it last answered us (`x-peercache-uploads`).
    pub uploads: u32,
}

/// Order: same site first; then not busy before busy; then complete before in-flight; then
/// fresh before stale; then lowest measured RTT (unknown last); then fewest active uploads;
/// then node id (deterministic). Penalised nodes are left out, and a node listed twice appears once, at its
/// best rank.
pub fn rank(cands: Vec<Candidate>, penalties: &Penalties, now_ms: u64) -> Vec<NodeId> {
    let mut cands: Vec<Candidate> = cands
        .into_iter()
        .filter(|c| !penalties.is_penalised(c.node, now_ms))
        .collect();
    cands.sort_by_key(|c| {
        (
            Reverse(c.same_site),
            penalties.is_busy(c.node, now_ms),
            Reverse(c.complete),
            Reverse(c.fresh),
            // None sorts after every Some.
            c.rtt.is_none(),
            c.rtt,
            c.uploads,
            c.node,
        )
    });
    let mut ranked: Vec<NodeId> = Vec::with_capacity(cands.len());
    for c in cands {
        if !ranked.contains(&c.node) {
            ranked.push(c.node);
        }
    }
    ranked
}

/// What failures cost peers: a bad peer is left out for a while, a busy one ranked last for a
/// moment.
///
/// Invariant: a node is penalised (busy) while `now_ms < until`; a longer penalty is never
/// shortened by a shorter one; expired entries are pruned whenever one is added, so the maps hold
/// only nodes that failed us within the last [`PENALTY`].
#[derive(Debug, Default)]
pub struct Penalties {
    until: HashMap<NodeId, u64>,
    busy_until: HashMap<NodeId, u64>,
}

impl Penalties {
    /// Records `fault` of `node` at `now_ms`: `Bad` leaves it out of rankings for [`PENALTY`],
    /// `Busy` ranks it last for [`BUSY`], `Gone` costs nothing.
    pub fn record(&mut self, node: NodeId, fault: Fault, now_ms: u64) {
        match fault {
            Fault::Bad => self.penalise(node, now_ms, PENALTY.as_millis() as u64),
            Fault::Busy => extend(&mut self.busy_until, node, now_ms, BUSY.as_millis() as u64),
            Fault::Gone => {}
        }
    }

    /// Leaves `node` out of rankings from `now_ms` for `for_ms` milliseconds (or longer if it
    /// already has a longer penalty).
    pub fn penalise(&mut self, node: NodeId, now_ms: u64, for_ms: u64) {
        extend(&mut self.until, node, now_ms, for_ms);
    }

    /// Whether `node` is still penalised at `now_ms` (no longer once `now_ms` reaches the end).
    pub fn is_penalised(&self, node: NodeId, now_ms: u64) -> bool {
        self.until.get(&node).is_some_and(|until| now_ms < *until)
    }

    /// Whether `node` said it was busy less than [`BUSY`] ago.
    pub fn is_busy(&self, node: NodeId, now_ms: u64) -> bool {
        self.busy_until
            .get(&node)
            .is_some_and(|until| now_ms < *until)
    }
}

/// Sets `node`'s end to `now_ms + for_ms` unless it is already later; drops expired entries.
fn extend(map: &mut HashMap<NodeId, u64>, node: NodeId, now_ms: u64, for_ms: u64) {
    map.retain(|_, until| *until > now_ms);
    let until = now_ms.saturating_add(for_ms);
    let entry = map.entry(node).or_insert(until);
    *entry = (*entry).max(until);
}

/// Exponentially weighted RTT per node (alpha 1/8 like TCP's SRTT, RFC 6298 §2).
///
/// Invariant: the first sample sets the estimate; each later one moves it 1/8 of the way.
#[derive(Debug, Default)]
pub struct RttTable {
    srtt: HashMap<NodeId, Duration>,
}

impl RttTable {
    /// Folds one measured round trip into `node`'s estimate: `srtt = 7/8 srtt + 1/8 sample`.
    pub fn observe(&mut self, node: NodeId, sample: Duration) {
        self.srtt
            .entry(node)
            .and_modify(|srtt| *srtt = (*srtt - *srtt / 8).saturating_add(sample / 8))
            .or_insert(sample);
    }

    /// The smoothed RTT of `node`, if it was ever measured.
    pub fn get(&self, node: NodeId) -> Option<Duration> {
        self.srtt.get(&node).copied()
    }

    /// Drops `node`'s estimate (it left the group or restarted).
    pub fn forget(&mut self, node: NodeId) {
        self.srtt.remove(&node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u8) -> NodeId {
        NodeId([i; 16])
    }

    /// A baseline candidate: same site, complete, fresh, RTT unknown, idle.
    fn cand(i: u8) -> Candidate {
        Candidate {
            node: n(i),
            same_site: true,
            complete: true,
            fresh: true,
            rtt: None,
            uploads: 0,
        }
    }

    #[test]
    fn a_holders_entry_is_taken_only_for_the_body_the_index_names() {
        let hash = [7u8; 32];
        let mut other = hash;
        other[31] = 8; // same id (first 16 bytes), another body: a crafted collision
        let mut named_elsewhere = hash;
        named_elsewhere[0] = 8;
        let src = |complete| Source {
            node: n(1),
            addr: "127.0.0.1:1".parse().unwrap(),
            same_site: true,
            complete,
        };
        let indexed = src(Some((body_id(&hash), 100)));
        // (index says, entry's hash, entry's len, taken)
        let table: [(&Source, [u8; 32], Option<u64>, bool); 6] = [
            (&indexed, hash, Some(100), true),
            (&indexed, named_elsewhere, Some(100), false),
            (&indexed, hash, Some(99), false),
            (&indexed, hash, None, false),
            // The id is what the index keeps; the whole hash then checks every piece.
            (&indexed, other, Some(100), true),
            (&src(None), named_elsewhere, Some(5), true),
        ];
        for (i, (source, hash, len, taken)) in table.into_iter().enumerate() {
            assert_eq!(source.names(&hash, len), taken, "row {i}");
        }
        assert!(indexed.holds(&hash, 100));
        assert!(!indexed.holds(&hash, 101));
        assert!(!indexed.holds(&named_elsewhere, 100));
        assert!(!src(None).holds(&hash, 100));
    }

    fn ms(v: u64) -> Option<Duration> {
        Some(Duration::from_millis(v))
    }

    fn ids(v: &[u8]) -> Vec<NodeId> {
        v.iter().map(|i| n(*i)).collect()
    }

    #[test]
    fn each_rule_alone_and_combined() {
        let other_site = |c: Candidate| Candidate {
            same_site: false,
            ..c
        };
        let in_flight = |c: Candidate| Candidate {
            complete: false,
            fresh: false,
            ..c
        };
        let stale = |c: Candidate| Candidate { fresh: false, ..c };
        let rtt = |c: Candidate, v| Candidate { rtt: ms(v), ..c };
        let uploads = |c: Candidate, u| Candidate { uploads: u, ..c };
        // (name, candidates, expected order)
        let cases: Vec<(&str, Vec<Candidate>, Vec<NodeId>)> = vec![
            ("empty", vec![], vec![]),
            (
                "node id breaks ties",
                vec![cand(3), cand(1), cand(2)],
                ids(&[1, 2, 3]),
            ),
            (
                "same site first",
                vec![other_site(cand(1)), cand(2)],
                ids(&[2, 1]),
            ),
            (
                "complete before in-flight",
                vec![in_flight(cand(1)), cand(2)],
                ids(&[2, 1]),
            ),
            (
                "fresh before stale",
                vec![stale(cand(1)), cand(2)],
                ids(&[2, 1]),
            ),
            (
                "complete beats fresh",
                vec![in_flight(cand(1)), stale(cand(2))],
                ids(&[2, 1]),
            ),
            (
                "fresh beats rtt",
                vec![stale(rtt(cand(1), 1)), rtt(cand(2), 900)],
                ids(&[2, 1]),
            ),
            (
                "lowest rtt first, unknown last",
                vec![
                    cand(1),
                    rtt(cand(2), 30),
                    rtt(cand(3), 10),
                    rtt(cand(4), 20),
                ],
                ids(&[3, 4, 2, 1]),
            ),
            (
                "zero rtt is a measurement",
                vec![cand(1), rtt(cand(2), 0)],
                ids(&[2, 1]),
            ),
            (
                "fewest uploads first",
                vec![
                    uploads(cand(1), 5),
                    uploads(cand(2), 0),
                    uploads(cand(3), 2),
                ],
                ids(&[2, 3, 1]),
            ),
            (
                "same site beats complete",
                vec![other_site(cand(1)), in_flight(cand(2))],
                ids(&[2, 1]),
            ),
            (
                "complete beats rtt",
                vec![in_flight(rtt(cand(1), 1)), rtt(cand(2), 900)],
                ids(&[2, 1]),
            ),
            (
                "rtt beats uploads",
                vec![uploads(rtt(cand(1), 10), 0), uploads(rtt(cand(2), 5), 50)],
                ids(&[2, 1]),
            ),
            (
                "unknown rtt loses to a slow measured one",
                vec![cand(1), rtt(cand(2), 5_000)],
                ids(&[2, 1]),
            ),
            (
                "uploads beat node id",
                vec![uploads(cand(1), 1), cand(2)],
                ids(&[2, 1]),
            ),
            (
                "all rules",
                vec![
                    other_site(rtt(cand(1), 1)),
                    in_flight(rtt(cand(2), 1)),
                    uploads(rtt(cand(3), 8), 9),
                    uploads(rtt(cand(4), 8), 2),
                    rtt(cand(5), 3),
                    cand(6),
                    in_flight(other_site(cand(7))),
                    other_site(cand(8)),
                ],
                ids(&[5, 4, 3, 6, 2, 1, 8, 7]),
            ),
            (
                "a node listed twice appears once",
                vec![in_flight(cand(1)), cand(2), cand(1)],
                ids(&[1, 2]),
            ),
        ];
        for (name, cands, want) in cases {
            assert_eq!(rank(cands, &Penalties::default(), 0), want, "{name}");
        }
    }

    #[test]
    fn penalised_nodes_are_left_out_until_the_penalty_ends() {
        let mut penalties = Penalties::default();
        penalties.penalise(n(2), 1_000, 500);
        let cands = vec![cand(1), cand(2), cand(3)];
        let at = |t| rank(cands.clone(), &penalties, t);
        assert_eq!(at(1_000), ids(&[1, 3]));
        assert_eq!(at(1_499), ids(&[1, 3]));
        assert_eq!(at(1_500), ids(&[1, 2, 3]));
        assert!(!penalties.is_penalised(n(1), 1_200));
    }

    #[test]
    fn a_shorter_penalty_does_not_shorten_a_longer_one() {
        let mut penalties = Penalties::default();
        penalties.penalise(n(1), 0, 10_000);
        penalties.penalise(n(1), 100, 50);
        assert!(penalties.is_penalised(n(1), 9_999));
        penalties.penalise(n(1), 9_000, 5_000);
        assert!(penalties.is_penalised(n(1), 13_999));
        assert!(!penalties.is_penalised(n(1), 14_000));
    }

    #[test]
    fn expired_penalties_are_pruned() {
        let mut penalties = Penalties::default();
        penalties.penalise(n(1), 0, 1_000);
        penalties.penalise(n(2), 0, 100);
        penalties.record(n(4), Fault::Busy, 0);
        assert!(penalties.is_penalised(n(1), 10) && penalties.is_penalised(n(2), 10));
        // Adding a penalty drops the expired ones, of either kind.
        penalties.record(n(5), Fault::Busy, 2_000);
        assert_eq!(penalties.busy_until.len(), 1);
        penalties.penalise(n(3), 100, u64::MAX);
        assert_eq!(penalties.until.len(), 2, "n(1) has 900 ms to go");
        penalties.penalise(n(3), 1_000, u64::MAX);
        assert_eq!(penalties.until.len(), 1);
        assert!(penalties.is_penalised(n(3), u64::MAX - 1));
        assert!(!penalties.is_penalised(n(3), u64::MAX));
    }

    #[test]
    fn busy_and_gone_are_not_bad() {
        let peer = |kind| Error::new(kind, Side::Peer, "x");
        let cases = [
            (peer(Kind::Busy), Some(Fault::Busy)),
            (peer(Kind::NotFound), Some(Fault::Gone)),
            (peer(Kind::UpstreamProtocol), Some(Fault::Bad)),
            (peer(Kind::ConnectTimeout), Some(Fault::Bad)),
            (peer(Kind::UpstreamBodyCut), Some(Fault::Bad)),
            (
                Error::new(Kind::NotFound, Side::Internal, "no variant"),
                None,
            ),
            (Error::upstream(Kind::ConnectFailed, "origin"), None),
            (Error::storage("disk"), None),
        ];
        for (e, want) in cases {
            assert_eq!(Fault::of(&e), want, "{e}");
        }
        let cands = vec![cand(1), cand(2), cand(3)];
        let mut p = Penalties::default();
        p.record(n(1), Fault::Gone, 0);
        assert_eq!(
            rank(cands.clone(), &p, 0),
            ids(&[1, 2, 3]),
            "gone costs nothing"
        );
        p.record(n(1), Fault::Busy, 0);
        assert_eq!(
            rank(cands.clone(), &p, 0),
            ids(&[2, 3, 1]),
            "busy: others first"
        );
        let busy_ms = BUSY.as_millis() as u64;
        assert_eq!(rank(cands.clone(), &p, busy_ms - 1), ids(&[2, 3, 1]));
        assert_eq!(
            rank(cands.clone(), &p, busy_ms),
            ids(&[1, 2, 3]),
            "and soon back"
        );
        p.record(n(2), Fault::Bad, 0);
        assert_eq!(
            rank(cands.clone(), &p, busy_ms),
            ids(&[1, 3]),
            "bad: left out"
        );
        assert!(p.is_penalised(n(2), PENALTY.as_millis() as u64 - 1));
        // Busy does not outrank the site: a busy holder on our site before another site's.
        let far = Candidate {
            same_site: false,
            ..cand(4)
        };
        let mut q = Penalties::default();
        q.record(n(1), Fault::Busy, 0);
        assert_eq!(rank(vec![far, cand(1)], &q, 0), ids(&[1, 4]));
        // Retries: a few short waits, then the origin.
        let waits: Vec<Duration> = (0..).map_while(busy_retry).collect();
        assert_eq!(waits, BUSY_RETRIES);
        assert!(waits.iter().sum::<Duration>() < Duration::from_secs(2));
    }

    #[test]
    fn rtt_is_an_ewma_with_alpha_one_eighth() {
        let mut table = RttTable::default();
        assert_eq!(table.get(n(1)), None);
        table.observe(n(1), Duration::from_millis(80));
        assert_eq!(table.get(n(1)), ms(80));
        table.observe(n(1), Duration::from_millis(160));
        assert_eq!(table.get(n(1)), ms(90));
        table.observe(n(1), Duration::from_millis(10));
        // 90 - 90/8 + 10/8 = 90 - 11.25 + 1.25
        assert_eq!(table.get(n(1)), ms(80));
        for _ in 0..200 {
            table.observe(n(1), Duration::from_millis(20));
        }
        let settled = table.get(n(1)).unwrap_or_default();
        assert!(settled.abs_diff(Duration::from_millis(20)) < Duration::from_micros(1));
        assert_eq!(table.get(n(2)), None);
        table.forget(n(1));
        assert_eq!(table.get(n(1)), None);
    }

    #[test]
    fn rtt_extremes_do_not_panic() {
        let mut table = RttTable::default();
        table.observe(n(1), Duration::MAX);
        table.observe(n(1), Duration::MAX);
        assert!(table.get(n(1)).is_some());
        table.observe(n(2), Duration::ZERO);
        table.observe(n(2), Duration::ZERO);
        assert_eq!(table.get(n(2)), Some(Duration::ZERO));
    }

    #[test]
    fn ranking_uses_the_rtt_table() {
        let mut table = RttTable::default();
        table.observe(n(1), Duration::from_millis(40));
        table.observe(n(2), Duration::from_millis(4));
        let cands: Vec<Candidate> = [1, 2, 3]
            .into_iter()
            .map(|i| Candidate {
                rtt: table.get(n(i)),
                ..cand(i)
            })
            .collect();
        assert_eq!(rank(cands, &Penalties::default(), 0), ids(&[2, 1, 3]));
    }
}

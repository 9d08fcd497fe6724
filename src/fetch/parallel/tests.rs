use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

use super::*;
use crate::error::{Kind, Side};

const K: u64 = 1024;

/// What a fake holder does.
#[derive(Debug, Clone, Copy)]
enum Holder {
    /// Sends 4 KiB frames, one per `per_frame`.
    Good { per_frame: Duration },
    /// Like a good one, but a span covering this byte fails there as a bad piece.
    LiesAt(u64),
    /// Like a good one, until it sent this many bytes in all; then every body is cut.
    DiesAfter(u64),
    /// Every request is refused with 503.
    Busy,
    /// Answers, then never sends a byte.
    Silent,
}

const FAST: Holder = Holder::Good {
    per_frame: Duration::from_millis(1),
};

struct Fake {
    body: Bytes,
    holders: Vec<Holder>,
    /// (holder, from, to) of every request.
    asked: Mutex<Vec<(usize, u64, u64)>>,
    charged: Mutex<Vec<(usize, Fault)>>,
    /// Bytes each holder sent.
    sent: Vec<AtomicUsize>,
    /// Span bodies still fed.
    open: Arc<AtomicUsize>,
    stats: PeerStats,
}

fn fake(len: u64, holders: Vec<Holder>) -> Arc<Fake> {
    let body: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4093) as u8).collect();
    Arc::new(Fake {
        body: Bytes::from(body),
        sent: holders.iter().map(|_| AtomicUsize::new(0)).collect(),
        holders,
        asked: Mutex::default(),
        charged: Mutex::default(),
        open: Arc::default(),
        stats: PeerStats::default(),
    })
}

/// Counts a fed body until its feeder ends.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Spans for Fake {
    fn span(&self, holder: usize, from: u64, to: u64) -> SpanFuture<'_> {
        self.asked.lock().unwrap().push((holder, from, to));
        let behaviour = self.holders[holder];
        Box::pin(async move {
            let (per_frame, lie_at, dies_after) = match behaviour {
                Holder::Busy => return Err(Error::new(Kind::Busy, Side::Peer, "busy")),
                Holder::Good { per_frame } => (per_frame, None, None),
                Holder::LiesAt(at) => (Duration::from_millis(1), Some(at), None),
                Holder::DiesAfter(n) => (Duration::from_millis(1), None, Some(n)),
                Holder::Silent => (Duration::from_secs(3600), None, None),
            };
            self.open.fetch_add(1, Relaxed);
            let open = Open(self.open.clone());
            let (tx, body) = body::channel(Some(to - from));
            let data = self.body.slice(from as usize..to as usize);
            let sent = &self.sent[holder];
            let already = sent.load(Relaxed) as u64;
            let budget = dies_after.map(|n| n.saturating_sub(already));
            sent.fetch_add(
                budget.map_or(data.len(), |b| data.len().min(b as usize)),
                Relaxed,
            );
            tokio::spawn(async move {
                let _open = open;
                let mut at = from;
                for frame in data.chunks(4 * K as usize) {
                    tokio::select! {
                        _ = tokio::time::sleep(per_frame) => {}
                        _ = tx.closed() => return,
                    }
                    let end = at + frame.len() as u64;
                    if let Some(lie) = lie_at.filter(|l| (at..end).contains(l)) {
                        let _ = tx
                            .send(Err(Box::new(PieceError::BadPiece { offset: lie })))
                            .await;
                        return;
                    }
                    if budget.is_some_and(|b| end - from > b) {
                        let cut = PieceError::Failed {
                            offset: at,
                            reason: "reset".into(),
                        };
                        let _ = tx.send(Err(Box::new(cut))).await;
                        return;
                    }
                    if tx.send(Ok(Bytes::copy_from_slice(frame))).await.is_err() {
                        return;
                    }
                    at = end;
                }
            });
            Ok(body)
        })
    }

    fn charge(&self, holder: usize, fault: Fault) {
        self.charged.lock().unwrap().push((holder, fault));
    }

    fn stats(&self) -> &PeerStats {
        &self.stats
    }
}

impl Fake {
    fn charged(&self) -> Vec<(usize, Fault)> {
        self.charged.lock().unwrap().clone()
    }
    fn asked_of(&self, holder: usize) -> Vec<(u64, u64)> {
        let asked = self.asked.lock().unwrap();
        asked
            .iter()
            .filter(|a| a.0 == holder)
            .map(|a| (a.1, a.2))
            .collect()
    }
}

const CUT: Cut = Cut {
    piece: 64 * K,
    window: 256 * K,
    stall: Duration::from_secs(2),
};

async fn read_all(spans: &Arc<Fake>, len: u64) -> Result<Bytes, (Vec<u8>, BoxError)> {
    let mut body = copy(spans.clone(), spans.holders.len(), len, CUT);
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => got.extend_from_slice(&f.into_data().unwrap()),
            Err(e) => return Err((got, e)),
        }
    }
    Ok(Bytes::from(got))
}

#[tokio::test(start_paused = true)]
async fn three_holders_each_bring_pieces_and_the_body_comes_in_order() {
    let f = fake(1000 * K + 123, vec![FAST, FAST, FAST]);
    let got = read_all(&f, f.body.len() as u64).await.unwrap();
    assert!(got == f.body);
    for h in 0..3 {
        assert!(!f.asked_of(h).is_empty(), "holder {h} asked");
    }
    assert_eq!(f.charged(), vec![]);
    assert_eq!(f.stats.multi_copies.load(Relaxed), 1);
    assert_eq!(f.stats.reorder_bytes.load(Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_liar_loses_its_piece_and_is_not_asked_again() {
    let lie = 500 * K + 77;
    let f = fake(1000 * K, vec![FAST, Holder::LiesAt(lie), FAST]);
    let got = read_all(&f, 1000 * K).await.unwrap();
    assert!(got == f.body, "the bad piece never came through");
    let asked = f.asked_of(1);
    let (from, to) = *asked.last().unwrap();
    assert!(
        (from..to).contains(&lie),
        "the liar was asked nothing after its lie: {asked:?}"
    );
    // A bad piece is charged where it is found (`peer::pieces`), not twice.
    assert_eq!(f.charged(), vec![]);
    assert!(f.stats.pieces_reassigned.load(Relaxed) >= 1);
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_dies_is_charged_and_its_pieces_go_to_the_others() {
    let f = fake(1000 * K, vec![FAST, Holder::DiesAfter(100 * K), FAST]);
    let got = read_all(&f, 1000 * K).await.unwrap();
    assert!(got == f.body);
    assert_eq!(f.charged(), vec![(1, Fault::Bad)]);
    assert_eq!(f.asked_of(1).len(), 2, "a whole piece, then a cut one");
    assert!(f.stats.pieces_reassigned.load(Relaxed) >= 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_holder_is_raced_and_left_out_uncharged() {
    let f = fake(1000 * K, vec![FAST, Holder::Silent, FAST]);
    let got = read_all(&f, 1000 * K).await.unwrap();
    assert!(got == f.body);
    assert_eq!(f.asked_of(1).len(), 1);
    assert_eq!(
        f.charged(),
        vec![],
        "others took its piece before the stall limit"
    );
    assert!(f.stats.pieces_raced.load(Relaxed) >= 1);
    assert!(wait_closed(&f).await);
}

#[tokio::test(start_paused = true)]
async fn holders_silent_past_the_stall_limit_are_charged() {
    let f = fake(1000 * K, vec![Holder::Silent, Holder::Silent]);
    let started = Instant::now();
    let (got, _) = read_all(&f, 1000 * K).await.unwrap_err();
    assert!(got.is_empty());
    assert_eq!(started.elapsed(), CUT.stall, "cut at the stall limit");
    let mut charged = f.charged();
    charged.sort_by_key(|c| c.0);
    assert_eq!(charged, vec![(0, Fault::Bad), (1, Fault::Bad)]);
}

#[tokio::test(start_paused = true)]
async fn a_busy_holder_is_asked_again_after_a_back_off() {
    let steady = Holder::Good {
        per_frame: Duration::from_millis(4),
    };
    // The steady holder takes about 2 s, longer than the back-offs.
    let f = fake(2000 * K, vec![Holder::Busy, steady]);
    let got = read_all(&f, 2000 * K).await.unwrap();
    assert!(got == f.body);
    // Refused four times (at once, then after each back-off), then left out.
    assert_eq!(f.asked_of(0).len(), 4);
    assert_eq!(f.charged(), vec![(0, Fault::Busy); 4]);
}

#[tokio::test(start_paused = true)]
async fn a_much_slower_holder_is_raced_and_its_request_cancelled() {
    let slow = Holder::Good {
        per_frame: Duration::from_millis(40),
    };
    let f = fake(1000 * K, vec![slow, FAST, FAST]);
    let got = read_all(&f, 1000 * K).await.unwrap();
    assert!(got == f.body);
    assert!(f.stats.pieces_raced.load(Relaxed) >= 1);
    assert_eq!(f.charged(), vec![], "slow is not bad");
    // Whatever the slow holder was still sending was cancelled.
    assert!(wait_closed(&f).await);
}

/// Waits (virtual time) until every span body the fake fed is closed.
async fn wait_closed(f: &Fake) -> bool {
    for _ in 0..100 {
        if f.open.load(Relaxed) == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(start_paused = true)]
async fn with_every_holder_gone_the_body_fails_after_correct_bytes_only() {
    let f = fake(
        1000 * K,
        vec![Holder::DiesAfter(150 * K), Holder::DiesAfter(100 * K)],
    );
    let (got, e) = read_all(&f, 1000 * K).await.unwrap_err();
    assert!(got[..] == f.body[..got.len()], "a correct prefix");
    assert!(!got.is_empty() && got.len() < 250 * K as usize);
    assert_eq!(
        e.downcast_ref::<PieceError>(),
        Some(&PieceError::Failed {
            offset: got.len() as u64,
            reason: "no holder left".into()
        })
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_body_ends_every_request() {
    let slow = Holder::Good {
        per_frame: Duration::from_millis(5),
    };
    let f = fake(4000 * K, vec![slow, slow, slow]);
    let mut body = copy(f.clone(), 3, 4000 * K, CUT);
    let mut got = 0;
    while got < 300 * K as usize {
        got += body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap()
            .len();
    }
    assert!(f.open.load(Relaxed) > 0);
    drop(body);
    assert!(wait_closed(&f).await, "no request outlives the copy");
    assert_eq!(f.stats.reorder_bytes.load(Relaxed), 0);
}

use super::*;

const P: u64 = 100;

/// A request as (holder, from, to, why).
type Span = (usize, u64, u64, Why);

fn spans(a: &[Assign]) -> Vec<Span> {
    a.iter().map(|a| (a.holder, a.from, a.to, a.why)).collect()
}

/// No fetch to cancel.
const NONE: Vec<FetchId> = Vec::new();

fn bytes(n: u64, fill: u8) -> Bytes {
    Bytes::from(vec![fill; n as usize])
}

/// Everything `take` gives now, concatenated.
fn drain(plan: &mut Plan) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = plan.take(usize::MAX) {
        out.extend_from_slice(&b);
    }
    out
}

/// The running fetch of `holder` in `assigned`.
fn of(assigned: &[Assign], holder: usize) -> FetchId {
    assigned.iter().find(|a| a.holder == holder).unwrap().fetch
}

#[test]
fn how_many_holders_a_copy_uses() {
    // (len, piece, max, holders, width)
    let cases = [
        (0, 100, 4, 3, 1),
        (199, 100, 4, 3, 1),
        (200, 100, 4, 3, 2),
        (201, 100, 4, 3, 3),
        (10_000, 100, 4, 3, 3),
        (10_000, 100, 4, 9, 4),
        (10_000, 100, 1, 9, 1),
        (10_000, 100, 4, 0, 1),
        (u64::MAX, 1, 64, 100, 64),
    ];
    for (len, piece, max, holders, want) in cases {
        assert_eq!(
            width(len, piece, max, holders),
            want,
            "{len} {piece} {max} {holders}"
        );
    }
}

#[test]
fn holders_start_on_consecutive_pieces_in_their_order() {
    // (len, holders, window in pieces, expected spans)
    let cases: Vec<(u64, usize, u64, Vec<Span>)> = vec![
        (
            1000,
            3,
            8,
            vec![
                (0, 0, 100, Why::Next),
                (1, 100, 200, Why::Next),
                (2, 200, 300, Why::Next),
            ],
        ),
        // The last piece is shorter.
        (
            250,
            4,
            8,
            vec![
                (0, 0, 100, Why::Next),
                (1, 100, 200, Why::Next),
                (2, 200, 250, Why::Next),
            ],
        ),
        // The window lets only two pieces start.
        (
            1000,
            3,
            2,
            vec![(0, 0, 100, Why::Next), (1, 100, 200, Why::Next)],
        ),
        (0, 2, 2, vec![]),
    ];
    for (len, holders, window, want) in cases {
        let mut plan = Plan::new(len, P, window * P, holders);
        assert_eq!(spans(&plan.assign(0)), want, "len {len} holders {holders}");
        assert_eq!(plan.done(), len == 0);
    }
}

#[test]
fn only_the_pieces_inside_the_window_are_kept_whatever_the_length() {
    // A holder may advertise any length: the plan keeps the pieces it may fetch, no more.
    let mut plan = Plan::new(u64::MAX / 2, P, 4 * P, 3);
    let a = plan.assign(0);
    assert_eq!(a.len(), 3);
    assert_eq!(plan.pieces.len(), 3);
    plan.arrived(of(&a, 0), bytes(100, 0), 1);
    plan.ended(of(&a, 0), 1);
    assert_eq!(spans(&plan.assign(1)), vec![(0, 300, 400, Why::Next)]);
    assert_eq!(plan.pieces.len(), 4, "the window's four pieces");
    assert_eq!(drain(&mut plan).len(), 100);
    assert_eq!(plan.pieces.len(), 3, "the piece handed on is dropped");
}

#[test]
fn bytes_that_arrive_out_of_order_are_handed_on_in_order() {
    let mut plan = Plan::new(300, P, 3 * P, 3);
    let a = plan.assign(0);
    // Pieces 2 and 1 arrive first: nothing to hand on yet, and they are held.
    plan.arrived(of(&a, 2), bytes(100, 2), 1);
    plan.arrived(of(&a, 1), bytes(60, 1), 1);
    assert!(!plan.ready());
    assert_eq!(plan.buffered(), 160);
    // The head piece's bytes go on as they come, then the rest in order.
    plan.arrived(of(&a, 0), bytes(30, 0), 2);
    assert_eq!(drain(&mut plan), vec![0; 30]);
    plan.arrived(of(&a, 0), bytes(70, 0), 3);
    plan.arrived(of(&a, 1), bytes(40, 1), 3);
    let want: Vec<u8> = [vec![0; 70], vec![1; 100], vec![2; 100]].concat();
    assert_eq!(drain(&mut plan), want);
    assert!(plan.done());
    assert_eq!((plan.released(), plan.buffered()), (300, 0));
}

#[test]
fn a_holder_is_asked_again_once_the_body_of_its_finished_piece_ended() {
    let mut plan = Plan::new(1000, P, 10 * P, 1);
    let a = plan.assign(0);
    plan.arrived(a[0].fetch, bytes(100, 0), 1);
    // Its last byte is in, but the holder may still hold its upload slot for that request.
    assert_eq!(plan.assign(2), vec![]);
    assert!(!plan.ended(a[0].fetch, 3), "not a cut");
    assert_eq!(spans(&plan.assign(3)), vec![(0, 100, 200, Why::Next)]);
}

#[test]
fn chunks_that_arrived_are_handed_on_joined_up_to_the_frame_size() {
    let mut plan = Plan::new(300, P, 3 * P, 2);
    let a = plan.assign(0);
    for n in [10, 20, 30, 40] {
        plan.arrived(of(&a, 0), bytes(n, 0), 1);
    }
    plan.ended(of(&a, 0), 1);
    plan.arrived(of(&a, 1), bytes(60, 1), 1);
    // With a 50-byte maximum: 10+20+30 reach it; then 40, joined with piece 1's 60 (in order).
    let lens: Vec<usize> = std::iter::from_fn(|| plan.take(50))
        .map(|b| b.len())
        .collect();
    assert_eq!(lens, vec![60, 100]);
    let b = plan.assign(2);
    assert_eq!(spans(&b), vec![(0, 200, 300, Why::Next)]);
    plan.arrived(of(&a, 1), bytes(40, 1), 2);
    assert_eq!(plan.take(50).map(|b| b.len()), Some(40), "what there is");
    // A chunk at least as large as the maximum goes as it is.
    plan.arrived(of(&b, 0), bytes(100, 2), 3);
    assert_eq!(plan.take(50).map(|b| b.len()), Some(100));
    assert_eq!(plan.take(50), None);
    assert!(plan.done());
}

#[test]
fn the_window_bounds_what_is_held_and_idle_holders_wait_for_it() {
    let mut plan = Plan::new(1000, P, 2 * P, 3);
    let a = plan.assign(0);
    assert_eq!(a.len(), 2, "two pieces fit the window");
    // Holder 1 finishes piece 1; piece 2 lies past the window: holder 1 and 2 wait, counted
    // once each however often the plan is asked.
    plan.arrived(of(&a, 1), bytes(100, 1), 5);
    plan.ended(of(&a, 1), 5);
    assert_eq!(plan.assign(5), vec![]);
    assert_eq!(plan.assign(6), vec![]);
    assert_eq!(plan.counts().window_waits, 2);
    // The head piece arrives but is not handed on yet: still no room.
    plan.arrived(of(&a, 0), bytes(100, 0), 7);
    plan.ended(of(&a, 0), 7);
    assert_eq!(plan.assign(7), vec![]);
    assert_eq!(plan.buffered(), 200);
    // Handing it on opens the window by two pieces.
    assert_eq!(drain(&mut plan).len(), 200);
    assert_eq!(
        spans(&plan.assign(8)),
        vec![(0, 200, 300, Why::Next), (1, 300, 400, Why::Next)]
    );
}

#[test]
fn the_rest_of_a_failed_holders_piece_goes_to_the_next_idle_holder() {
    // (how it failed, its state afterwards: asked again at, or never)
    let cases = [
        (Failure::Bad, None),
        (Failure::Gone, None),
        (Failure::Busy, Some(10 + BUSY_RETRIES[0].as_millis() as u64)),
    ];
    for (how, back_at) in cases {
        let mut plan = Plan::new(300, P, 3 * P, 2);
        let a = plan.assign(0);
        plan.arrived(of(&a, 0), bytes(40, 0), 5);
        plan.arrived(of(&a, 1), bytes(100, 1), 6);
        plan.ended(of(&a, 1), 6);
        plan.failed(of(&a, 0), how, 10);
        // Holder 1 is idle: it takes the rest of piece 0 before piece 2.
        assert_eq!(
            spans(&plan.assign(10)),
            vec![(1, 40, 100, Why::Orphan)],
            "{how:?}"
        );
        assert_eq!(plan.counts().orphans, 1);
        assert_eq!(plan.next_wake(10), back_at, "{how:?}");
        if let Some(at) = back_at {
            assert_eq!(plan.assign(at - 1), vec![]);
            assert_eq!(spans(&plan.assign(at)), vec![(0, 200, 300, Why::Next)]);
        }
        assert!(!plan.stuck());
    }
}

#[test]
fn a_busy_holder_is_asked_again_after_each_back_off_then_left_out() {
    let mut plan = Plan::new(1000, P, 10 * P, 1);
    let mut now = 0;
    for wait in BUSY_RETRIES {
        let a = plan.assign(now);
        assert_eq!(a.len(), 1, "asked at {now}");
        plan.failed(a[0].fetch, Failure::Busy, now);
        assert_eq!(plan.next_wake(now), Some(now + wait.as_millis() as u64));
        now += wait.as_millis() as u64;
    }
    let a = plan.assign(now);
    plan.failed(a[0].fetch, Failure::Busy, now);
    assert_eq!(plan.next_wake(now), None);
    assert!(plan.stuck(), "no holder left");
}

#[test]
fn stale_bytes_and_failures_of_ended_fetches_change_nothing() {
    let mut plan = Plan::new(200, P, 2 * P, 2);
    let a = plan.assign(0);
    plan.failed(of(&a, 0), Failure::Bad, 1);
    assert_eq!(plan.arrived(of(&a, 0), bytes(50, 9), 2), NONE);
    plan.failed(of(&a, 0), Failure::Busy, 2);
    assert_eq!(plan.buffered(), 0);
    // Holder 1 fetches, holder 0 is out: nobody to wake for.
    assert_eq!(plan.next_wake(2), None);
    assert_eq!(plan.arrived(77, bytes(50, 9), 2), NONE);
}

#[test]
fn an_idle_holder_races_a_much_slower_one_and_the_first_to_finish_wins() {
    // Pieces of 100 KiB: in 2 s holder 0 brings 70 KiB, holder 1 two whole pieces.
    let k = 1024;
    let mut plan = Plan::new(300 * k, 100 * k, 300 * k, 2);
    let a = plan.assign(0);
    plan.arrived(of(&a, 1), bytes(100 * k, 1), 1024);
    plan.ended(of(&a, 1), 1024);
    let b = plan.assign(1024);
    assert_eq!(spans(&b), vec![(1, 200 * k, 300 * k, Why::Next)]);
    plan.arrived(of(&a, 0), bytes(70 * k, 0), 2000);
    plan.arrived(of(&b, 1), bytes(100 * k, 2), 2048);
    plan.ended(of(&b, 1), 2048);
    // Holder 1 is idle with nothing new to fetch: it takes what remains of holder 0's piece.
    let c = plan.assign(2048);
    assert_eq!(spans(&c), vec![(1, 70 * k, 100 * k, Why::Race)]);
    assert_eq!(plan.counts().races, 1);
    // Both bring bytes; the racer finishes first and holder 0's fetch is cancelled.
    assert_eq!(plan.arrived(of(&a, 0), bytes(10 * k, 0), 3000), NONE);
    assert_eq!(
        plan.arrived(of(&c, 1), bytes(30 * k, 0), 3100),
        vec![of(&a, 0)]
    );
    // Holder 0's later bytes are ignored; the body is whole and in order.
    plan.arrived(of(&a, 0), bytes(20 * k, 0), 3200);
    let got = drain(&mut plan);
    assert_eq!(got.len() as u64, 300 * k);
    assert!(got[..100 * k as usize].iter().all(|b| *b == 0));
    assert!(plan.done());
}

#[test]
fn who_races_whom() {
    let k = 1024;
    // (name, holder 0's bytes and ms on piece 0 so far, holder 1's speed on piece 1 (bytes,
    // ms), now, races?)
    let cases = [
        ("twice as fast", (64 * k, 1000), (100 * k, 781), 1000, true),
        (
            "not twice as fast",
            (64 * k, 1000),
            (100 * k, 800),
            1000,
            false,
        ),
        (
            "fetcher's speed not known yet",
            (10 * k, 1000),
            (100 * k, 10),
            1000,
            false,
        ),
        (
            "silent fetcher, just started",
            (0, 0),
            (100 * k, 10),
            SLOW_START_MS - 1,
            false,
        ),
        (
            "silent fetcher, slow start",
            (0, 0),
            (100 * k, 10),
            SLOW_START_MS,
            true,
        ),
    ];
    for (name, (b0, t0), (b1, t1), now, races) in cases {
        let mut plan = Plan::new(200 * k, 100 * k, 200 * k, 2);
        let a = plan.assign(0);
        if b0 > 0 {
            plan.arrived(of(&a, 0), bytes(b0, 0), t0);
        }
        plan.arrived(of(&a, 1), bytes(b1, 1), t1);
        plan.ended(of(&a, 1), t1);
        let t = now.max(t0).max(t1);
        let got = plan.assign(t);
        assert_eq!(got.len() == 1, races, "{name}: {got:?}");
        if !races {
            // Holder 1 waits idle: the plan wants to look again soon.
            assert_eq!(plan.next_wake(t), Some(t + RECHECK_MS), "{name}");
        }
        if races {
            assert_eq!((got[0].from, got[0].why), (b0, Why::Race), "{name}");
        }
    }
}

#[test]
fn a_piece_is_raced_by_one_holder_at_most() {
    let k = 1024;
    let mut plan = Plan::new(400 * k, 100 * k, 400 * k, 4);
    let a = plan.assign(0);
    // Holders 1..3 finish at once; holder 0 has sent nothing for the slow start.
    for h in 1..4 {
        plan.arrived(of(&a, h), bytes(100 * k, h as u8), 10);
        plan.ended(of(&a, h), 10);
    }
    let b = plan.assign(SLOW_START_MS);
    assert_eq!(spans(&b), vec![(1, 0, 100 * k, Why::Race)]);
}

#[test]
fn a_silent_holder_that_loses_the_race_is_left_out_a_slow_one_is_not() {
    let k = 1024;
    // (holder 0's bytes of piece 0 before the race, who fetches the last piece)
    for (before, last) in [(0, 1), (64 * k, 0)] {
        let mut plan = Plan::new(400 * k, 100 * k, 300 * k, 2);
        let a = plan.assign(0);
        if before > 0 {
            plan.arrived(of(&a, 0), bytes(before, 0), 1);
        }
        plan.arrived(of(&a, 1), bytes(100 * k, 1), 1);
        plan.ended(of(&a, 1), 1);
        let b = plan.assign(1);
        plan.arrived(of(&b, 1), bytes(100 * k, 2), 2);
        plan.ended(of(&b, 1), 2);
        let c = plan.assign(3000);
        assert_eq!(spans(&c), vec![(1, before, 100 * k, Why::Race)]);
        plan.arrived(of(&c, 1), bytes(100 * k - before, 0), 3001);
        plan.ended(of(&c, 1), 3001);
        assert_eq!(drain(&mut plan).len() as u64, 300 * k);
        let d = plan.assign(3002);
        assert_eq!(
            spans(&d)[0],
            (last, 300 * k, 400 * k, Why::Next),
            "{before} bytes before the race"
        );
        if last == 0 {
            // Holder 0 is known to be slow: the idle holder races it at once.
            assert_eq!(spans(&d)[1], (1, 300 * k, 400 * k, Why::Race));
        }
    }
}

#[test]
fn a_holder_raced_at_once_stays_in_the_copy() {
    let k = 1024;
    // Holder 1 is known to be slow; holder 0 races its next piece at once and wins before
    // holder 1 brought a byte of it: holder 1 was not silent for the slow start, so it stays.
    // (The window of four pieces leaves holder 0 nothing new to fetch.)
    let mut plan = Plan::new(600 * k, 100 * k, 400 * k, 2);
    let a = plan.assign(0);
    plan.arrived(of(&a, 0), bytes(100 * k, 0), 10);
    plan.ended(of(&a, 0), 10);
    plan.arrived(of(&a, 1), bytes(100 * k, 1), 1000);
    plan.ended(of(&a, 1), 1000);
    let b = plan.assign(1000);
    assert_eq!(
        spans(&b),
        vec![
            (0, 200 * k, 300 * k, Why::Next),
            (1, 300 * k, 400 * k, Why::Next)
        ]
    );
    plan.arrived(of(&b, 0), bytes(100 * k, 2), 1010);
    plan.ended(of(&b, 0), 1010);
    let c = plan.assign(1010);
    assert_eq!(spans(&c), vec![(0, 300 * k, 400 * k, Why::Race)]);
    assert_eq!(
        plan.arrived(of(&c, 0), bytes(100 * k, 3), 1020),
        vec![of(&b, 1)]
    );
    plan.ended(of(&c, 0), 1020);
    assert_eq!(drain(&mut plan).len() as u64, 400 * k);
    let d = plan.assign(1020);
    assert_eq!(d.len(), 2, "both holders get a piece: {d:?}");
}

#[test]
fn when_every_holder_is_out_the_copy_is_stuck_at_the_bytes_handed_on() {
    let mut plan = Plan::new(300, P, 3 * P, 2);
    let a = plan.assign(0);
    plan.arrived(of(&a, 0), bytes(100, 0), 1);
    plan.ended(of(&a, 0), 1);
    plan.arrived(of(&a, 1), bytes(50, 1), 1);
    assert_eq!(
        drain(&mut plan).len(),
        150,
        "piece 0 and the first half of piece 1"
    );
    let b = plan.assign(1);
    plan.failed(of(&b, 0), Failure::Gone, 2);
    assert!(!plan.stuck(), "holder 1 is still fetching");
    assert!(plan.ended(of(&a, 1), 3), "a cut");
    assert!(!plan.ended(of(&a, 0), 3), "long over");
    assert!(plan.stuck());
    assert_eq!(plan.released(), 150);
    assert_eq!(plan.assign(4), vec![]);
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Holders of random speeds that fail, lie, refuse or stall at random, with a reader that
/// takes the bytes at random moments: the body comes out whole and in order (or the copy is
/// stuck with every holder out, having handed on only correct bytes), and the bytes held
/// never exceed the window plus one piece.
#[test]
fn random_runs_hand_on_the_body_in_order_within_the_bound() {
    // What the runs went through, so that the test is seen to cover each path.
    let (mut total, mut stuck, mut done) = (Counts::default(), 0, 0);
    for seed in 1..200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let len = 1 + rng.below(5000);
        let piece = 1 + rng.below(700);
        let window = piece * (1 + rng.below(6));
        let holders = 1 + rng.below(5) as usize;
        let body: Vec<u8> = (0..len).map(|i| (i * 31 + i / 7) as u8).collect();
        let speed: Vec<u64> = (0..holders).map(|_| 1 + rng.below(60)).collect();
        let mut plan = Plan::new(len, piece, window, holders);
        let mut running: Vec<(Assign, u64)> = Vec::new(); // (request, next byte)
        let mut finishing: Vec<FetchId> = Vec::new(); // brought their end, body not ended yet
        let mut out = Vec::new();
        let mut now = 0;
        let mut steps = 0;
        while !plan.done() && !plan.stuck() {
            steps += 1;
            assert!(steps < 100_000, "seed {seed}: no progress");
            now += 1 + rng.below(20);
            for fetch in finishing.drain(..) {
                plan.ended(fetch, now);
            }
            for a in plan.assign(now) {
                running.push((a, a.from));
            }
            if running.is_empty() {
                // Resting holders, or a full window the reader has to open.
                out.extend(drain(&mut plan));
                if let Some(w) = plan.next_wake(now) {
                    now = now.max(w);
                }
                continue;
            }
            let i = rng.below(running.len() as u64) as usize;
            let (a, at) = running[i];
            match rng.below(200) {
                0 => {
                    plan.failed(a.fetch, Failure::Bad, now);
                    running.swap_remove(i);
                }
                1 => {
                    plan.failed(a.fetch, Failure::Busy, now);
                    running.swap_remove(i);
                }
                2 => {
                    plan.ended(a.fetch, now);
                    running.swap_remove(i);
                }
                _ => {
                    let n = (1 + rng.below(speed[a.holder] * 4)).min(a.to - at);
                    let data = Bytes::copy_from_slice(&body[at as usize..(at + n) as usize]);
                    let cancelled = plan.arrived(a.fetch, data, now);
                    running[i].1 += n;
                    if running[i].1 == a.to {
                        // Its body ends after the last byte, now or a little later.
                        if rng.below(2) == 0 {
                            plan.ended(a.fetch, now);
                        } else {
                            finishing.push(a.fetch);
                        }
                    }
                    running.retain(|(r, at)| !cancelled.contains(&r.fetch) && *at < r.to);
                }
            }
            assert!(
                plan.buffered() <= window + piece,
                "seed {seed}: {} held, window {window} piece {piece}",
                plan.buffered()
            );
            assert!(
                plan.pieces.len() as u64 <= window / piece + 1,
                "seed {seed}"
            );
            if rng.below(3) == 0 {
                out.extend(drain(&mut plan));
            }
        }
        out.extend(drain(&mut plan));
        assert_eq!(out.len() as u64, plan.released(), "seed {seed}");
        assert!(out[..] == body[..out.len()], "seed {seed}: wrong bytes");
        if plan.stuck() {
            stuck += 1;
        } else {
            assert_eq!(out.len() as u64, len, "seed {seed}");
            done += 1;
        }
        let c = plan.counts();
        total.orphans += c.orphans;
        total.races += c.races;
        total.window_waits += c.window_waits;
    }
    assert!(stuck > 0 && done > 100, "{stuck} stuck, {done} done");
    assert!(
        total.orphans > 0 && total.races > 0 && total.window_waits > 0,
        "{total:?}"
    );
}

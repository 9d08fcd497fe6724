//! The async core on its own, as pingora tests its cache lock: fills fed by fake sources
//! (channel bodies, scripted fallbacks), read by fills' readers, committed to a real store in a
//! temporary directory; stalls on paused time. No sockets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;

use super::*;
use crate::body;
use crate::cache::head::Head;
use crate::cache::inflight::{Inflight, Join};
use crate::cache::key::Variant;
use crate::cache::policy::Timing;

const P1: NodeId = NodeId([1; 16]);
const P2: NodeId = NodeId([2; 16]);
const P3: NodeId = NodeId([3; 16]);

/// What a fill told its report, in order.
#[derive(Default)]
struct Told(Mutex<Vec<String>>);

impl Report for Told {
    fn fault(&self, from: Feeder, fault: Fault) {
        self.0.lock().unwrap().push(format!("{from} {fault:?}"));
    }
    fn resumed(&self, to: Feeder, offset: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("resumed from {to} at {offset}"));
    }
}

impl Told {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A fallback that answers as scripted: the bytes from the offset asked, or an error.
struct Scripted {
    from: Feeder,
    whole: Option<Bytes>,
    error: Kind,
}

impl Resume for Scripted {
    fn feeder(&self) -> Feeder {
        self.from
    }
    fn resume(&self, offset: u64) -> ResumeFuture<'_> {
        Box::pin(async move {
            match &self.whole {
                Some(b) => Ok(Feed {
                    body: body::full(b.slice(offset as usize..)),
                    read_timeout: Duration::from_secs(2),
                    from: self.from,
                }),
                None => Err(Error::new(self.error, crate::error::Side::Peer, "scripted")),
            }
        })
    }
}

fn bytes(n: usize) -> Bytes {
    (0..n).map(|i| (i % 251) as u8).collect::<Vec<_>>().into()
}

/// A fill of `key` started on a store in `dir`, as `Fetcher::start_fill` starts one.
struct Started {
    store: Store,
    inflight: Arc<Inflight>,
    fill: Arc<crate::cache::inflight::Fill>,
    job: FillJob,
}

fn start(
    dir: &std::path::Path,
    len: Option<u64>,
    expected: Option<blake3::Hash>,
    fallbacks: Vec<Box<dyn Resume>>,
    report: Arc<dyn Report>,
) -> Started {
    let store = Store::open(dir, 1 << 30).unwrap();
    let inflight = Inflight::new(4);
    let Join::Leader(mut permit) = inflight.join("http://a/x") else {
        panic!("leads")
    };
    let (path, file) = store.temp_file().unwrap();
    let file = Arc::new(file);
    permit.temp = Some(path);
    let now = SystemTime::now();
    let timing = Timing {
        request_time: now,
        response_time: now,
        corrected_initial_age: Duration::ZERO,
    };
    let variant = Variant::from_stored(String::new());
    let head = Arc::new(FillHead {
        head: Head::new(StatusCode::OK, &HeaderMap::new(), timing, variant, true),
        len,
    });
    permit.fill().start(head.clone(), file.clone());
    let fill = permit.fill().clone();
    let job = FillJob {
        permit,
        file,
        head,
        key: "http://a/x".into(),
        store: store.clone(),
        max_object_size: 1 << 30,
        metrics: Arc::default(),
        expected,
        fallbacks,
        keep: true,
        on_commit: None,
        report,
    };
    Started {
        store,
        inflight,
        fill,
        job,
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_peer_is_blamed_and_the_body_goes_on_from_the_next_source_that_can() {
    let whole = bytes(300_000);
    let dir = tempfile::tempdir().unwrap();
    let told = Arc::new(Told::default());
    let fallbacks: Vec<Box<dyn Resume>> = vec![
        Box::new(Scripted {
            from: Feeder::Peer(P2),
            whole: None,
            error: Kind::Busy,
        }),
        Box::new(Scripted {
            from: Feeder::Peer(P3),
            whole: Some(whole.clone()),
            error: Kind::Internal,
        }),
    ];
    let hash = blake3::hash(&whole);
    let len = Some(whole.len() as u64);
    let s = start(dir.path(), len, Some(hash), fallbacks, told.clone());
    // The first holder sends 100 000 bytes, then nothing (its sender is kept alive).
    let (tx, first) = body::channel(None);
    tx.send(Ok(whole.slice(..100_000))).await.unwrap();
    let reader = s.fill.body(0, len);
    let feed = Feed {
        body: first,
        read_timeout: Duration::from_secs(2),
        from: Feeder::Peer(P1),
    };
    let end = run(s.job, feed).await;
    assert_eq!(end, WriteEnd::Stored);
    assert_eq!(
        told.lines(),
        [
            format!("peer {P1} Stalled"),
            format!("peer {P2} Busy"),
            format!("resumed from peer {P3} at 100000"),
        ]
    );
    let got = reader.collect().await.unwrap().to_bytes();
    assert!(got == whole, "one body, no gap");
    let stored = s.store.get("http://a/x").unwrap();
    assert_eq!(stored.entries[0].hash, hash);
    assert!(s.inflight.get("http://a/x").is_none());
    drop(tx);
}

#[tokio::test]
async fn a_fill_of_unknown_length_is_read_to_its_end_and_stored() {
    let whole = bytes(70_000);
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), None, None, Vec::new(), Arc::new(LogOnly));
    let (tx, first) = body::channel(None);
    let reader = s.fill.body(0, None);
    let feed = Feed {
        body: first,
        read_timeout: Duration::from_secs(2),
        from: Feeder::Peer(P1),
    };
    let writer = tokio::spawn(run(s.job, feed));
    for part in [0..30_000, 30_000..60_000, 60_000..70_000] {
        tx.send(Ok(whole.slice(part))).await.unwrap();
    }
    drop(tx); // the source ends the body: its length is what came
    assert_eq!(writer.await.unwrap(), WriteEnd::Stored);
    assert!(reader.collect().await.unwrap().to_bytes() == whole);
    assert_eq!(s.store.get("http://a/x").unwrap().entries[0].len, 70_000);
}

#[tokio::test]
async fn a_copy_that_fails_its_hash_is_never_stored_never_served_whole_and_blamed() {
    let whole = bytes(50_000);
    let dir = tempfile::tempdir().unwrap();
    let told = Arc::new(Told::default());
    let wrong = blake3::hash(b"another body");
    let len = Some(whole.len() as u64);
    let s = start(dir.path(), len, Some(wrong), Vec::new(), told.clone());
    let reader = s.fill.body(0, len);
    let feed = Feed {
        body: body::full(whole),
        read_timeout: Duration::from_secs(2),
        from: Feeder::Peer(P1),
    };
    assert_eq!(run(s.job, feed).await, WriteEnd::BadHash);
    assert_eq!(
        told.lines(),
        [format!("peer {P1} BadBytes {{ offset: None }}")]
    );
    assert!(reader.collect().await.is_err(), "cut before its last byte");
    assert!(s.store.get("http://a/x").is_none());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn a_fill_whose_writer_is_cancelled_cuts_its_readers_and_frees_the_key() {
    let whole = bytes(20_000);
    let dir = tempfile::tempdir().unwrap();
    let len = Some(whole.len() as u64);
    let s = start(dir.path(), len, None, Vec::new(), Arc::new(LogOnly));
    let (tx, first) = body::channel(None);
    tx.send(Ok(whole.slice(..5_000))).await.unwrap();
    let reader = s.fill.body(0, len);
    let feed = Feed {
        body: first,
        read_timeout: Duration::from_secs(60),
        from: Feeder::Origin,
    };
    let writer = tokio::spawn(run(s.job, feed));
    let mut rx = s.fill.subscribe();
    rx.wait_for(|st| st.written == 5_000).await.unwrap();
    writer.abort(); // the task that owned the permit is gone mid-body
    assert!(reader.collect().await.is_err());
    assert!(matches!(s.inflight.join("http://a/x"), Join::Leader(_)));
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    drop(tx);
}

#[tokio::test]
async fn an_abandoned_leader_hands_the_key_to_the_next_request() {
    let inflight = Inflight::new(4);
    let Join::Leader(permit) = inflight.join("k") else {
        panic!("leads")
    };
    let Join::Follower(fill) = inflight.join("k") else {
        panic!("follows")
    };
    let waiting = tokio::spawn(async move { fill.head().await.err() });
    drop(permit); // before any head
    assert!(matches!(
        waiting.await.unwrap(),
        Some(crate::cache::inflight::Outcome::Abandoned)
    ));
    assert!(matches!(inflight.join("k"), Join::Leader(_)));
}

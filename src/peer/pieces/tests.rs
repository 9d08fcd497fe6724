use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::*;
use crate::cache::outboard::GROUP_BYTES;

/// Pseudo-random bytes: no 64-byte window repeats, so a test can find one in an encoding.
fn body_of(len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(b"pieces")
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A stored body and its outboard, as a holder has them.
struct Held {
    _dir: tempfile::TempDir,
    data: File,
    hash: blake3::Hash,
    len: u64,
    ob_path: std::path::PathBuf,
}

impl Held {
    fn new(body: &[u8]) -> Held {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, body).unwrap();
        let data = File::open(&blob).unwrap();
        let ob_path = outboard::beside(&blob);
        let hash = outboard::make(&data, body.len() as u64, &ob_path).unwrap();
        Held {
            _dir: dir,
            data,
            hash,
            len: body.len() as u64,
            ob_path,
        }
    }

    fn outboard(&self) -> Outboard {
        outboard::open(&self.ob_path, self.hash, self.len).unwrap()
    }

    /// The whole encoded answer for `[start, end)`, as the transfer API would send it.
    fn encoded(&self, start: u64, end: u64, validate: bool) -> Result<Vec<u8>, String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        // On a thread of its own, as on the blocking pool (it blocks on the channel).
        let ob = self.outboard();
        let ran = std::thread::scope(|s| {
            s.spawn(move || encode(&self.data, &ob, start, end, validate, tx))
                .join()
                .unwrap()
        });
        let mut out = Vec::new();
        while let Ok(Ok(b)) = rx.try_recv() {
            out.extend_from_slice(&b);
        }
        ran.map(|_| out).map_err(|e| e.to_string())
    }
}

/// What a requester gets from `encoded`: the bytes released before the end or the error, and
/// the error, if any.
async fn decode(
    encoded: Vec<u8>,
    hash: blake3::Hash,
    len: u64,
    span: (u64, u64),
    bad: Arc<AtomicU64>,
) -> (Vec<u8>, Option<PieceError>) {
    let on_bad: OnBad = Box::new(move |offset| bad.store(offset + 1, Relaxed));
    // Delivered in uneven frames, so that reads straddle them.
    let (tx, stream) = body::channel(None);
    tokio::spawn(async move {
        for c in encoded.chunks(7_001) {
            let _ = tx.send(Ok(Bytes::copy_from_slice(c))).await;
        }
    });
    let mut v = verify(stream, hash, len, span, on_bad);
    let mut got = Vec::new();
    while let Some(frame) = v.frame().await {
        match frame {
            Ok(f) => got.extend_from_slice(f.data_ref().unwrap()),
            Err(e) => return (got, Some(*e.downcast::<PieceError>().unwrap())),
        }
    }
    (got, None)
}

const LENGTHS: [usize; 9] = [0, 1, 1024, 16_383, 16_384, 16_385, 49_157, 65_536, 300_001];

#[tokio::test]
async fn every_span_of_every_shape_comes_back_byte_exact() {
    for len in LENGTHS {
        let body = body_of(len);
        let held = Held::new(&body);
        assert_eq!(held.hash, blake3::hash(&body));
        let l = len as u64;
        let mut spans = vec![(0, l)];
        for start in [1, 1023, 1024, 1025, 16_383, 16_384, 16_385, 50_001, l / 2] {
            if start < l {
                spans.push((start, l));
                spans.push((start, (start + 2_000).min(l)));
                spans.push((start, start + 1));
            }
        }
        for span in spans {
            let bad = Arc::new(AtomicU64::new(0));
            let enc = held.encoded(span.0, span.1, true).unwrap();
            assert_eq!(enc, held.encoded(span.0, span.1, false).unwrap());
            let (got, err) = decode(enc, held.hash, l, span, bad.clone()).await;
            assert_eq!(err, None, "len {len} span {span:?}");
            assert!(
                got == body[span.0 as usize..span.1 as usize],
                "len {len} span {span:?}"
            );
            assert_eq!(bad.load(Relaxed), 0);
        }
    }
}

#[tokio::test]
async fn the_encoding_is_the_data_plus_about_64_bytes_per_group() {
    let held = Held::new(&body_of(1 << 20));
    let enc = held.encoded(0, 1 << 20, false).unwrap();
    // 64 groups: 63 parents of 64 bytes.
    assert_eq!(enc.len(), (1 << 20) + 63 * 64);
    assert_eq!(outboard::size(1 << 20), 63 * 64);
}

#[tokio::test]
async fn a_flipped_data_bit_fails_at_its_group_and_nothing_of_that_group_is_released() {
    let body = body_of(100_000);
    let held = Held::new(&body);
    let enc = held.encoded(0, 100_000, false).unwrap();
    // Find the byte of body offset 40_000 (group 2) in the stream and flip it.
    let mut bad_enc = enc.clone();
    let at = find(&enc, &body[40_000..40_064]);
    bad_enc[at] ^= 0x04;
    let bad = Arc::new(AtomicU64::new(0));
    let (got, err) = decode(bad_enc, held.hash, 100_000, (0, 100_000), bad.clone()).await;
    assert_eq!(err, Some(PieceError::BadPiece { offset: 32_768 }));
    assert!(got == body[..32_768], "groups 0 and 1 only");
    assert_eq!(bad.load(Relaxed), 32_768 + 1, "told once, with the offset");
}

#[tokio::test]
async fn a_flipped_parent_hash_fails_before_the_data_it_covers() {
    // Four groups: root [0-1 | 2-3], P(0-1), L0, L1, P(2-3), L2, L3.
    let body = body_of(65_536);
    let held = Held::new(&body);
    let mut enc = held.encoded(0, 65_536, false).unwrap();
    let p23 = 64 + 64 + 2 * GROUP_BYTES as usize;
    enc[p23 + 40] ^= 0x80;
    let bad = Arc::new(AtomicU64::new(0));
    let (got, err) = decode(enc, held.hash, 65_536, (0, 65_536), bad.clone()).await;
    assert_eq!(err, Some(PieceError::BadPiece { offset: 32_768 }));
    assert!(got == body[..32_768]);
    // The root's own pair: nothing at all is released.
    let mut enc = held.encoded(0, 65_536, false).unwrap();
    enc[3] ^= 1;
    let (got, err) = decode(enc, held.hash, 65_536, (0, 65_536), bad).await;
    assert_eq!(err, Some(PieceError::BadPiece { offset: 0 }));
    assert!(got.is_empty());
}

#[tokio::test]
async fn a_span_starting_inside_a_group_is_checked_in_aligned_subtrees() {
    let body = body_of(100_000);
    let held = Held::new(&body);
    // From 20_500 (inside group 1 = chunks 16..32, at chunk 20): the rest of the group comes
    // as the aligned subtrees [20, 24) and [24, 32) with their parent hashes.
    let enc = held.encoded(20_500, 100_000, false).unwrap();
    let bad = Arc::new(AtomicU64::new(0));
    for (flip, failed_at) in [(26 * 1024 + 7, 24 * 1024), (23 * 1024 + 1, 20_500)] {
        let mut enc = enc.clone();
        let at = find(&enc, &body[flip..flip + 64]);
        enc[at] ^= 0x10;
        let (got, err) = decode(enc, held.hash, 100_000, (20_500, 100_000), bad.clone()).await;
        assert_eq!(err, Some(PieceError::BadPiece { offset: failed_at }));
        assert!(got == body[20_500..failed_at as usize]);
    }
}

#[tokio::test]
async fn a_holder_with_a_corrupt_blob_refuses_to_encode_it_when_validating() {
    let body = body_of(100_000);
    let held = Held::new(&body);
    let mut bytes = body.clone();
    bytes[70_000] ^= 1;
    std::fs::write(held._dir.path().join("blob"), &bytes).unwrap();
    let err = held.encoded(0, 100_000, true).unwrap_err();
    assert!(err.contains("LeafHashMismatch"), "{err}");
    // Unvalidated, it goes out, and the requester catches it.
    let enc = held.encoded(0, 100_000, false).unwrap();
    let bad = Arc::new(AtomicU64::new(0));
    let (got, err) = decode(enc, held.hash, 100_000, (0, 100_000), bad).await;
    assert_eq!(err, Some(PieceError::BadPiece { offset: 65_536 }));
    assert_eq!(got.len(), 65_536);
}

#[tokio::test]
async fn a_stream_cut_short_or_for_another_body_is_not_released_as_complete() {
    let body = body_of(100_000);
    let held = Held::new(&body);
    let enc = held.encoded(0, 100_000, false).unwrap();
    let bad = Arc::new(AtomicU64::new(0));
    let cut = enc[..enc.len() - 10].to_vec();
    let (got, err) = decode(cut, held.hash, 100_000, (0, 100_000), bad.clone()).await;
    assert_eq!(err, Some(PieceError::Cut { offset: 98_304 }));
    assert_eq!(got.len(), 98_304);
    assert_eq!(bad.load(Relaxed), 0, "a cut is no lie");
    // Right bytes, a wrong length claimed: what verifies is released, the body never completes.
    let (got, err) = decode(enc, held.hash, 100_001, (0, 100_001), bad).await;
    assert!(err.is_some());
    assert!(got.len() < 100_000 && got == body[..got.len()]);
    // An empty body is checked too: a stream for the empty body cannot stand for another hash.
    let empty = Held::new(b"");
    let enc = empty.encoded(0, 0, false).unwrap();
    assert!(enc.is_empty());
    let (_, err) = decode(
        enc,
        blake3::hash(b"x"),
        0,
        (0, 0),
        Arc::new(AtomicU64::new(0)),
    )
    .await;
    assert_eq!(err, Some(PieceError::BadPiece { offset: 0 }));
}

#[test]
fn spans_in_queries() {
    use SpanError::*;
    type Want = Result<(u64, u64), SpanError>;
    let table: [(&str, u64, Want); 12] = [
        ("", 100, Ok((0, 100))),
        ("start=10", 100, Ok((10, 100))),
        ("start=10&end=20", 100, Ok((10, 20))),
        ("end=20&start=99", 100, Err(Unsatisfiable)),
        ("start=99", 100, Ok((99, 100))),
        ("start=100", 100, Err(Unsatisfiable)),
        ("end=101", 100, Err(Unsatisfiable)),
        ("start=5&end=5", 100, Err(Unsatisfiable)),
        ("", 0, Ok((0, 0))),
        ("start=0&end=0", 0, Ok((0, 0))),
        ("start=-1", 100, Err(Malformed)),
        ("start=1&other=x", 100, Ok((1, 100))),
    ];
    for (q, len, want) in table {
        assert_eq!(span(q, len), want, "{q:?} of {len}");
    }
    let h = blake3::hash(b"x");
    let p = path(&h, 3, 9);
    assert_eq!(p, format!("/peer/v1/pieces/{}?start=3&end=9", h.to_hex()));
    assert_eq!(span(p.split_once('?').unwrap().1, 9), Ok((3, 9)));
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("present")
}

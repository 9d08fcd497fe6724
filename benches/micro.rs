//! Micro-benchmarks of the hot pure code: Cache-Control parsing, the reuse decision, cache keys,
//! and blake3 over 64 KiB frames. Run: `cargo bench --bench micro`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use peercache::cache::cache_control::CacheControl;
use peercache::cache::key::CacheKey;
use peercache::cache::policy::{self, Heuristic, Stored, Timing};

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let resp = headers(&[
        (
            "cache-control",
            "public, max-age=3600, s-maxage=600, stale-while-revalidate=30",
        ),
        ("date", "Tue, 24 Nov 2026 10:00:00 GMT"),
        ("etag", "\"abc\""),
        ("content-type", "application/octet-stream"),
    ]);
    c.bench_function("cache_control_parse", |b| {
        b.iter(|| CacheControl::from_headers(black_box(&resp)))
    });

    let t0 = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let timing = Timing::new(t0, t0, &resp);
    let stored = Stored {
        status: StatusCode::OK,
        headers: &resp,
        timing,
    };
    let req_cc = CacheControl::default();
    let now: SystemTime = t0 + Duration::from_secs(100);
    c.bench_function("reuse_decision", |b| {
        b.iter(|| policy::reuse(black_box(&stored), &req_cc, now, Heuristic::default()))
    });

    let uri: Uri = "http://Deb.Example.org:80/debian/pool/main/p/peercache/peercache_1.0_amd64.deb"
        .parse()
        .expect("uri");
    c.bench_function("cache_key_and_hash", |b| {
        b.iter(|| CacheKey::from_uri(black_box(&uri)).map(|k| k.hash()))
    });

    let frame = vec![0x5au8; 64 * 1024];
    let mut g = c.benchmark_group("blake3");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("64KiB_frame", |b| {
        let mut h = blake3::Hasher::new();
        b.iter(|| {
            h.update(black_box(&frame));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

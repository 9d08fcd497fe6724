//! Micro-benchmarks of the hot pure code: Cache-Control parsing, the reuse decision (with and
//! without a targeted field, RFC 9213), cache keys,
//! the freshness rules' lookup, the peer index, the store's URL index, blake3 over 64 KiB
//! frames, verified pieces (outboard, encode, decode), mirror link rewriting, and issuing an
//! interception leaf certificate.
//! Run: `cargo bench --bench micro`.

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
    // RFC 9213 with the default target list: no targeted field in the response (the common
    // case), and one that decides.
    let cdn = [http::HeaderName::from_static("cdn-cache-control")];
    let targeted = Heuristic {
        targets: &cdn,
        ..Heuristic::default()
    };
    c.bench_function("reuse_decision_no_targeted_field", |b| {
        b.iter(|| policy::reuse(black_box(&stored), &req_cc, now, targeted))
    });
    let mut resp_cdn = resp.clone();
    resp_cdn.insert(
        "cdn-cache-control",
        HeaderValue::from_static("max-age=86400, stale-while-revalidate=30"),
    );
    let stored_cdn = Stored {
        headers: &resp_cdn,
        ..stored
    };
    c.bench_function("reuse_decision_targeted", |b| {
        b.iter(|| policy::reuse(black_box(&stored_cdn), &req_cc, now, targeted))
    });

    let uri: Uri = "http://Deb.Example.org:80/debian/pool/main/p/peercache/peercache_1.0_amd64.deb"
        .parse()
        .expect("uri");
    c.bench_function("cache_key_and_hash", |b| {
        b.iter(|| CacheKey::from_uri(black_box(&uri)).map(|k| k.hash()))
    });

    // Freshness rules: every preset on (the default), one URL a preset names and one it does not
    // (the latter must try every pattern).
    use peercache::cache::rules::Rules;
    use peercache::config::Preset;
    let rules = Rules::new(&[], &Preset::ALL, Heuristic::default()).expect("presets compile");
    let matched = "http://deb.example.org/debian/pool/main/p/peercache/peercache_1.0_amd64.deb";
    let unmatched = "https://www.example.org/assets/app.3f9c2b.js";
    let mut g = c.benchmark_group("rules_lookup");
    g.bench_function("preset_match", |b| {
        b.iter(|| rules.treat(black_box(matched)).heuristic.rule)
    });
    g.bench_function("no_match", |b| {
        b.iter(|| rules.treat(black_box(unmatched)).heuristic.rule)
    });
    g.finish();

    // Peer index: apply 10k `have` updates from 8 nodes, then look keys up.
    use peercache::peer::index::Index;
    use peercache::peer::wire::{NodeId, Tagged, Update};
    let nodes: Vec<NodeId> = (0..8u8).map(|i| NodeId([i + 1; 16])).collect();
    let updates: Vec<Tagged> = (0..10_000u64)
        .map(|i| {
            let node = nodes[(i % 8) as usize];
            Tagged {
                node,
                epoch: 1,
                seq: i / 8 + 1,
                update: Update::Have {
                    key: *blake3::hash(&i.to_le_bytes()).as_bytes(),
                    hash: [7; 32],
                    len: 1024,
                    fresh_until: 0,
                },
            }
        })
        .collect();
    c.bench_function("peer_index_apply_10k", |b| {
        b.iter(|| {
            let mut index = Index::new(NodeId([0; 16]));
            for t in &updates {
                index.apply(t.clone());
            }
            index
        })
    });
    let mut index = Index::new(NodeId([0; 16]));
    for t in &updates {
        index.apply(t.clone());
    }
    let probe = *blake3::hash(&4242u64.to_le_bytes()).as_bytes();
    c.bench_function("peer_index_lookup", |b| {
        b.iter(|| index.holders(black_box(&probe)))
    });

    // Store's URL index: a hit's touch, and a store's insert with CLOCK eviction at a full
    // budget of 100 000 URLs.
    use peercache::cache::index::{Index as UrlIndex, Meta};
    let fps: Vec<[u8; 32]> = (0..200_000u64)
        .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
        .collect();
    let meta = |i: usize| Meta {
        weight: 1000,
        shareable: true,
        gen: i as u64,
        blobs: vec![blake3::Hash::from_bytes(fps[i])].into_boxed_slice(),
    };
    let mut urls = UrlIndex::new(100_000 * 1000);
    for (i, fp) in fps.iter().enumerate().take(100_000) {
        urls.insert(*fp, meta(i));
    }
    c.bench_function("url_index_touch", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 7919) % 100_000;
            urls.touch(black_box(&fps[i]))
        })
    });
    c.bench_function("url_index_insert_evict", |b| {
        let mut i = 100_000;
        b.iter(|| {
            i = if i + 1 == fps.len() { 0 } else { i + 1 };
            urls.insert(fps[i], meta(i));
            urls.evict(&fps[i])
        })
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

    pieces(c);

    // Mirror link rewriting over an npm-like metadata document: 20 000 versions, each with a
    // tarball URL under the mirror's upstream and a homepage URL under none (about 8 MiB).
    use peercache::front::links::LinkTable;
    let upstream: Uri = "https://registry.npmjs.org/".parse().expect("uri");
    let table = LinkTable::new([(&upstream, "/npm/")]);
    let rewrite = table.for_client("127.0.0.1:3128").expect("authority");
    let doc: String = (0..20_000)
        .map(|i| {
            format!(
                "\"1.0.{i}\":{{\"name\":\"pkg\",\"version\":\"1.0.{i}\",\"homepage\":\"https://github.com/o/pkg#readme\",\
                 \"dist\":{{\"integrity\":\"sha512-{i:0>86}\",\"shasum\":\"{i:0>40}\",\
                 \"tarball\":\"https://registry.npmjs.org/pkg/-/pkg-1.0.{i}.tgz\"}},\
                 \"description\":\"{}\"}},",
                "x".repeat(180)
            )
        })
        .collect();
    let mut g = c.benchmark_group("links");
    g.throughput(Throughput::Bytes(doc.len() as u64));
    g.sample_size(20);
    g.bench_function("rewrite_npm_metadata", |b| {
        b.iter(|| rewrite.apply(black_box(doc.as_bytes())).len())
    });
    g.finish();

    leaves(c);
}

/// The cost of a leaf for a host seen for the first time: the certificate alone (one ECDSA
/// P-256 signature), and the whole TLS server config as a first connection gets it.
fn leaves(c: &mut Criterion) {
    use peercache::front::intercept::{ca::Ca, leaf};
    let now = SystemTime::now();
    let (cert, key) = Ca::generate("bench", now).expect("CA");
    let ca = || Ca::from_pem(&cert, &key, now, "ca.pem", "ca.key").expect("CA");
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let signer = ca();
    c.bench_function("leaf_issue", |b| {
        b.iter(|| leaf::issue(&signer, &leaf_key, black_box("files.example.org"), now))
    });
    let metrics = std::sync::Arc::new(peercache::metrics::Metrics::default());
    let leaves = leaf::Leaves::new(ca(), metrics).expect("leaves");
    let mut i = 0u64;
    c.bench_function("leaf_server_config_new_name", |b| {
        b.iter(|| {
            i += 1;
            leaves.server_config(&format!("h{i}.example.org"), now)
        })
    });
}

/// Verified pieces of a 16 MiB body: making its outboard (once per stored body), encoding it as
/// a holder does (reading the file; checked against the outboard or not), and decoding it as a
/// requester does, from 64 KiB frames. Prints the outboard's size beside the body's.
fn pieces(c: &mut Criterion) {
    use http_body_util::BodyExt;
    use peercache::cache::outboard;
    use peercache::peer::pieces;

    const LEN: u64 = 16 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let blob = dir.path().join("blob");
    let mut body = vec![0u8; LEN as usize];
    blake3::Hasher::new()
        .update(b"bench")
        .finalize_xof()
        .fill(&mut body);
    std::fs::write(&blob, &body).expect("write");
    let file = std::fs::File::open(&blob).expect("open");
    let ob_path = outboard::beside(&blob);
    let hash = outboard::make(&file, LEN, &ob_path).expect("outboard");
    println!(
        "outboard of a {} MiB body: {} bytes ({:.3} % of the body)",
        LEN >> 20,
        outboard::size(LEN),
        outboard::size(LEN) as f64 * 100.0 / LEN as f64
    );
    let ob = outboard::open(&ob_path, hash, LEN).expect("opens");
    let encode = |validate: bool| {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        pieces::encode(&file, &ob, 0, LEN, validate, tx).expect("encodes");
        let mut frames = Vec::new();
        while let Ok(Ok(f)) = rx.try_recv() {
            frames.push(f);
        }
        frames
    };
    let frames = encode(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    let mut g = c.benchmark_group("pieces");
    g.throughput(Throughput::Bytes(LEN));
    g.sample_size(20);
    let scratch = dir.path().join("scratch.obao");
    g.bench_function("outboard_make_16MiB", |b| {
        b.iter(|| outboard::make(&file, LEN, &scratch).expect("outboard"))
    });
    g.bench_function("encode_16MiB", |b| b.iter(|| encode(false)));
    g.bench_function("encode_validated_16MiB", |b| b.iter(|| encode(true)));
    g.bench_function("decode_verify_16MiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (tx, encoded) = peercache::body::channel(None);
                let feed = frames.clone();
                tokio::spawn(async move {
                    for f in feed {
                        let _ = tx.send(Ok(f)).await;
                    }
                });
                let mut v = pieces::verify(encoded, hash, LEN, (0, LEN), Box::new(|_| {}));
                let mut n = 0;
                while let Some(Ok(f)) = v.frame().await {
                    n += f.data_ref().map_or(0, |d| d.len());
                }
                assert_eq!(n as u64, LEN);
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

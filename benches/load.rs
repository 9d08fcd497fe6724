//! End-to-end load bench, no external tool: a real `peercache` process in front of an
//! in-process origin. Measures (a) 1 KiB hits: req/s, p50, p99 over LOAD_CONNS keep-alive
//! connections, with the access log on (the default; lines go to a file) and off, in
//! LOAD_ROUNDS alternating rounds of LOAD_SECS each, pooled, and the ratio of the two — plus a
//! third process of an older binary when LOAD_BASELINE names one (same-run A/B of a change);
//! (b) LOAD_COLD concurrent requests for one cold object the origin answers after 200 ms: origin
//! fetches and time until the last response beyond the origin's own 200 ms; (c) RSS with
//! LOAD_ENTRIES cached entries. Run: `cargo bench --bench load`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

mod common;

use common::{connect, get, knob, percentile};

/// Origin: /1k, /slow/<n> (after 200 ms), /small/<n> (100 bytes); counts requests per path kind.
async fn origin(slow_hits: Arc<AtomicUsize>) -> SocketAddr {
    let kib = Bytes::from(vec![b'x'; 1024]);
    common::origin(move |req: hyper::Request<hyper::body::Incoming>| {
        let (kib, slow_hits) = (kib.clone(), slow_hits.clone());
        async move {
            let path = req.uri().path().to_owned();
            let body = if path.starts_with("/slow/") {
                slow_hits.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                kib
            } else if path.starts_with("/small/") {
                Bytes::from(format!("{path:100}"))
            } else {
                kib
            };
            hyper::Response::builder()
                .header("cache-control", "max-age=3600")
                .body(peercache::body::full(body))
                .expect("response")
        }
    })
    .await
}

/// One hit phase: `conns` connections each sending GET `url` back to back for `secs`; the
/// latencies of every answer (each checked: 200, 1 KiB).
async fn hits(proxy: SocketAddr, url: &str, conns: usize, secs: u64) -> Vec<Duration> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut send = connect(proxy).await;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let (status, n) = get(&mut send, &url).await;
                assert_eq!((status, n), (200, 1024));
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    lat
}

/// A proxy measured in the hit rounds: its name, config and binary.
struct Variant {
    name: &'static str,
    extra: &'static str,
    bin: PathBuf,
}

/// Pooled figures of one variant: req/s and sorted latencies.
fn summary(lat: &mut [Duration], secs: f64) -> (f64, f64, f64) {
    lat.sort();
    (
        lat.len() as f64 / secs,
        percentile(lat, 0.50).as_secs_f64() * 1e3,
        percentile(lat, 0.99).as_secs_f64() * 1e3,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let conns = knob("LOAD_CONNS", 50) as usize;
    let secs = knob("LOAD_SECS", 5);
    let rounds = knob("LOAD_ROUNDS", 2);
    let cold = knob("LOAD_COLD", 100) as usize;
    let entries = knob("LOAD_ENTRIES", 100_000) as usize;
    let rt = common::runtime();
    rt.block_on(async move {
        let slow_hits = Arc::new(AtomicUsize::new(0));
        let origin = origin(slow_hits.clone()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        // Pin the proxy to CPU 1 when taskset exists (the load runs in this process);
        // LOAD_WRAPPER=heaptrack (say) runs it under a profiler instead.
        let wrapper = std::env::var("LOAD_WRAPPER").ok();
        let prefix: Vec<&str> = match &wrapper {
            Some(w) => vec![w.as_str()],
            None if Command::new("taskset").arg("-V").output().is_ok() => vec!["taskset", "-c", "1"],
            None => vec![],
        };
        // LOAD_PEERING=1: the node also runs its peer group side (alone in its group), so the
        // RSS figure includes what advertising every entry costs.
        let mut extra = String::from("[log]\naccess = false\nlevel = \"warn\"\n");
        if knob("LOAD_PEERING", 0) == 1 {
            let key = dir.path().join("cluster.key");
            peercache::peer::auth::ClusterKey::write_new(&key).expect("cluster key");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            extra += &format!(
                "[peers]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\nkey_file = \"{}\"\n",
                key.display()
            );
        }
        println!(
            "load: {} cores, proxies run as {prefix:?}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );

        // (a) 1 KiB hits: every variant in each round, in turn, each on its own process.
        let here = PathBuf::from(env!("CARGO_BIN_EXE_peercache"));
        let mut variants = vec![
            Variant { name: "log on (default)", extra: "", bin: here.clone() },
            Variant { name: "log off", extra: "[log]\naccess = false\n", bin: here },
        ];
        if let Ok(base) = std::env::var("LOAD_BASELINE") {
            let bin = PathBuf::from(base);
            variants.push(Variant { name: "LOAD_BASELINE, log on", extra: "", bin: bin.clone() });
            variants.push(Variant { name: "LOAD_BASELINE, log off", extra: "[log]\naccess = false\n", bin });
        }
        let url = format!("http://{origin}/1k");
        let mut procs = Vec::new();
        for (i, v) in variants.iter().enumerate() {
            let vdir = dir.path().join(format!("hits{i}"));
            std::fs::create_dir_all(&vdir).expect("variant dir");
            let p = common::Proxy::start_bin(&v.bin, &vdir, "", v.extra, &prefix).await;
            let mut warm = connect(p.addr).await;
            assert_eq!(get(&mut warm, &url).await, (200, 1024));
            procs.push(p);
        }
        let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
        let mut cpu = vec![Duration::ZERO; variants.len()];
        for round in 0..rounds {
            for (i, p) in procs.iter().enumerate() {
                let before = common::cpu_time(p.pid());
                let got = hits(p.addr, &url, conns, secs).await;
                let used = common::cpu_time(p.pid()).saturating_sub(before);
                println!(
                    "  round {}: {:<22} {:>7.0} req/s, proxy CPU {:.1} µs per hit",
                    round + 1,
                    variants[i].name,
                    got.len() as f64 / secs as f64,
                    used.as_secs_f64() * 1e6 / got.len().max(1) as f64
                );
                cpu[i] += used;
                lat[i].extend(got);
            }
        }
        let total = (rounds * secs) as f64;
        let mut rps = Vec::new();
        let mut per_hit = Vec::new();
        for (i, v) in variants.iter().enumerate() {
            let n = lat[i].len().max(1) as f64;
            let (r, p50, p99) = summary(&mut lat[i], total);
            let us = cpu[i].as_secs_f64() * 1e6 / n;
            println!(
                "  1 KiB hits, {:<22} {r:>7.0} req/s over {conns} connections, p50 {p50:.2} ms, p99 {p99:.2} ms, proxy CPU {us:.1} µs per hit, RSS {} MiB",
                v.name,
                common::status_kib(procs[i].pid(), "VmRSS") / 1024
            );
            rps.push(r);
            per_hit.push(us);
        }
        // CPU per hit is what a busy, shared machine still measures well; req/s needs a quiet one.
        println!(
            "  log on ÷ log off: req/s {:.3}, CPU per hit {:.3} (the log costs {:.1} % of hit throughput by req/s, {:.1} % by CPU; {rounds} rounds × {secs} s, pooled)",
            rps[0] / rps[1],
            per_hit[0] / per_hit[1],
            (1.0 - rps[0] / rps[1]) * 100.0,
            (1.0 - per_hit[1] / per_hit[0]) * 100.0
        );
        for (i, log) in [(2, "on"), (3, "off")] {
            if let (Some(base), Some(base_us)) = (rps.get(i), per_hit.get(i)) {
                println!(
                    "  this build ÷ LOAD_BASELINE (log {log}): req/s {:.3}, CPU per hit {:.3}",
                    rps[i - 2] / base,
                    per_hit[i - 2] / base_us
                );
            }
        }
        let log_lines = |i: usize| {
            std::fs::read(dir.path().join(format!("hits{i}/stdout.log")))
                .map(|b| b.iter().filter(|&&c| c == b'\n').count())
                .unwrap_or(0)
        };
        println!(
            "  access-log lines written: {} (log on), {} (log off)",
            log_lines(0),
            log_lines(1)
        );
        drop(procs);

        // (b) and (c) on one more process, the log off (and the peer side on with LOAD_PEERING).
        let proxy_proc = common::Proxy::start(dir.path(), &extra, &prefix).await;
        let pid = proxy_proc.pid();
        let proxy = proxy_proc.addr;

        // (b) cold collapse.
        let url = format!("http://{origin}/slow/cold");
        let mut senders = Vec::new();
        for _ in 0..cold {
            senders.push(connect(proxy).await);
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for mut s in senders {
            let url = url.clone();
            tasks.push(tokio::spawn(async move { get(&mut s, &url).await }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("cold task"), (200, 1024));
        }
        let took = start.elapsed();
        println!(
            "  {cold} concurrent cold requests: {} origin fetch(es), last response {:.1} ms after the origin's 200 ms",
            slow_hits.load(Ordering::SeqCst),
            (took.as_secs_f64() - 0.2) * 1e3
        );

        // (c) RSS with many entries.
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let fill_start = Instant::now();
        for _ in 0..conns {
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                let mut send = connect(proxy).await;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= entries {
                        return;
                    }
                    let (status, _) = get(&mut send, &format!("http://{origin}/small/{i}")).await;
                    assert_eq!(status, 200);
                }
            }));
        }
        for t in tasks {
            t.await.expect("fill task");
        }
        let filled = fill_start.elapsed();
        let status = {
            let mut s = connect(proxy).await;
            let req = hyper::Request::get("/_peercache/status")
                .header("host", "bench")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let resp = s.send_request(req).await.expect("status");
            let b = resp.into_body().collect().await.expect("status body").to_bytes();
            serde_json::from_slice::<serde_json::Value>(&b).expect("status json")
        };
        println!(
            "  {entries} distinct small misses stored in {:.1} s ({:.0}/s); {} URLs cached; proxy RSS {} MiB",
            filled.as_secs_f64(),
            entries as f64 / filled.as_secs_f64(),
            status["cache"]["urls"],
            common::status_kib(pid, "VmRSS") / 1024
        );
        if std::env::var("LOAD_SMAPS").is_ok() {
            let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
            let mut big: Vec<(u64, String)> = Vec::new();
            let mut name = String::new();
            for line in smaps.lines() {
                if line.contains('-') && !line.starts_with(|c: char| c.is_ascii_uppercase()) {
                    name = line.split_whitespace().nth(5).unwrap_or("[anon]").to_owned();
                } else if let Some(v) = line.strip_prefix("Rss:") {
                    let kb: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                    big.push((kb, name.clone()));
                }
            }
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
            let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
            println!("    open fds {fds}, threads {threads}");
            let mut names = std::collections::BTreeMap::new();
            if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for t in tasks.flatten() {
                    let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                    *names.entry(comm.trim().to_owned()).or_insert(0) += 1;
                }
            }
            println!("    threads by name: {names:?}");
            big.sort();
            for (kb, name) in big.iter().rev().take(8) {
                println!("    {kb:>8} kB {name}");
            }
        }
        drop(proxy_proc);
    });
}

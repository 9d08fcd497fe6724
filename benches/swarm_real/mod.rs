//! `cargo bench --bench swarm -- --real N`: N real `peercache` processes on 127.0.0.2… (small
//! caches, production LAN timings) to check the simulation against: gossip bytes per node per
//! second at rest (the status page's `gossip_bytes_sent`), the time for an advertised entry to
//! reach every other node (status pages polled), and the time for the others to drop a node
//! killed with SIGKILL. Every process is stopped at the end (killed when dropped).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

/// What the real run measured.
pub struct Real {
    pub ready: Duration,
    pub rest: f64,
    /// Per entry: when 50 %, 99 % and 100 % of the others had it (None: not within 10 s).
    pub reach: Vec<(Option<Duration>, Option<Duration>, Option<Duration>)>,
    pub down: (Option<Duration>, Option<Duration>),
    pub poll: Duration,
    /// The slowest status poll of the whole group while entries spread.
    pub slowest_poll: Duration,
    /// Counters of the peer status pages summed over the nodes (name, total) at rest before the
    /// entries are advertised, and after they spread: how updates arrived other than by gossip,
    /// and what was refused or dropped.
    pub counters: Vec<(&'static str, u64, u64)>,
}

/// The status page counters [`Real::counters`] sums.
const COUNTERS: [&str; 9] = [
    "index_pulls",
    "index_pull_failures",
    "snapshots_refused",
    "connections_refused",
    "heads_rounds",
    "heads_behind",
    "gossip_events_dropped",
    "gossip_broadcasts_dropped",
    "updates_from_strangers",
];

/// [`COUNTERS`] summed over `nodes`.
async fn counters(nodes: &[Node]) -> Vec<(&'static str, u64)> {
    let mut sums = vec![0u64; COUNTERS.len()];
    for n in nodes {
        if let Some(s) = status(n.proxy).await {
            let p = &s["peers"];
            for (sum, name) in sums.iter_mut().zip(COUNTERS) {
                *sum += p[name]
                    .as_u64()
                    .or_else(|| p["index"][name].as_u64())
                    .unwrap_or(0);
            }
        }
    }
    COUNTERS.into_iter().zip(sums).collect()
}

struct Node {
    proxy: SocketAddr,
    child: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start(dir: &Path, key: &Path, i: usize, seed: Option<SocketAddr>) -> (Node, SocketAddr) {
    let ip = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i).expect("at most 250 nodes"));
    let (p, q) = (free_port(ip), free_port(ip));
    let home = dir.join(format!("node-{i}"));
    std::fs::create_dir_all(&home).expect("node dir");
    let seeds = seed.map(|s| format!("\"{s}\"")).unwrap_or_default();
    let conf = format!(
        "[proxy]\nlisten = \"{ip}:{p}\"\n[cache]\ndir = \"{}\"\nmax_size = \"16MiB\"\nmax_object_size = \"1MiB\"\n\
         [log]\naccess = false\nlevel = \"error\"\n\
         [peers]\nenabled = true\nlisten = \"{ip}:{q}\"\nseeds = [{seeds}]\nkey_file = \"{}\"\n",
        home.join("cache").display(),
        key.display()
    );
    let conf_path = home.join("peercache.toml");
    std::fs::write(&conf_path, conf).expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .args(["run", "--config"])
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start peercache");
    let node = Node {
        proxy: SocketAddr::from((ip, p)),
        child: Some(child),
    };
    (node, SocketAddr::from((ip, q)))
}

async fn status(proxy: SocketAddr) -> Option<serde_json::Value> {
    let got = common::get_once(proxy, "/_peercache/status", Duration::from_secs(3)).await?;
    serde_json::from_slice(&got.body).ok()
}

/// (active members: alive or suspect, index entries, gossip bytes sent) of every node, polled at
/// once.
async fn poll(nodes: &[Node]) -> Vec<Option<(usize, u64, u64)>> {
    let polls = nodes.iter().map(|n| n.proxy).map(|proxy| async move {
        let s = status(proxy).await?;
        let p = &s["peers"];
        let active = p["members"]
            .as_array()
            .map(|m| m.iter().filter(|m| m["state"] != "down").count())
            .unwrap_or(0);
        Some((
            active,
            p["index"]["entries"].as_u64().unwrap_or(0),
            p["gossip_bytes_sent"].as_u64().unwrap_or(0),
        ))
    });
    let mut out = Vec::new();
    for h in polls.map(tokio::spawn).collect::<Vec<_>>() {
        out.push(h.await.ok().flatten());
    }
    out
}

/// Runs `n` real nodes and measures; every bound is a deadline, never a sleep as a condition.
pub async fn run(n: usize, dir: &Path) -> Real {
    let key: PathBuf = dir.join("cluster.key");
    let hex: String = blake3::hash(b"peercache swarm bench key")
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(&key, format!("{hex}\n")).expect("key file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600));
    }
    let origin = common::origin(|req: hyper::Request<hyper::body::Incoming>| async move {
        let body = format!("object {}", req.uri().path());
        hyper::Response::builder()
            .header("cache-control", "public, max-age=3600")
            .body(peercache::body::full(body))
            .expect("response")
    })
    .await;

    let t0 = Instant::now();
    let mut nodes = Vec::new();
    let (first, seed) = start(dir, &key, 0, None);
    nodes.push(first);
    for i in 1..n {
        nodes.push(start(dir, &key, i, Some(seed)).0);
    }
    let deadline = t0 + Duration::from_secs(120);
    loop {
        let s = poll(&nodes).await;
        if s.iter().all(|s| s.is_some_and(|(a, _, _)| a == n - 1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group of {n} not formed in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ready = t0.elapsed();

    // At rest, once the joins have been gossiped.
    tokio::time::sleep(Duration::from_secs(5)).await; // settling, not a condition
    let sent = |s: &[Option<(usize, u64, u64)>]| s.iter().flatten().map(|s| s.2).sum::<u64>();
    let before = sent(&poll(&nodes).await);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await; // the measuring window itself
    let after = sent(&poll(&nodes).await);
    let rest = (after - before) as f64 / n as f64 / t.elapsed().as_secs_f64();

    let at_rest = counters(&nodes).await;

    // Entries advertised one at a time: a claim, then a Have, from node k·7 mod n.
    let mut reach = Vec::new();
    let mut own = vec![0usize; n];
    let mut polls = 0u32;
    let mut slowest_poll = Duration::ZERO;
    let poll_start = Instant::now();
    for k in 0..10usize {
        let from = k * 7 % n;
        let url = format!("http://{origin}/obj/{k}");
        // The node claims the key (an `InFlight` update) as the request arrives, then advertises
        // `Have`: the first of the two to arrive counts. The status pages are polled while the
        // fetch runs.
        let t = Instant::now();
        let proxy = nodes[from].proxy;
        let fetch =
            tokio::spawn(
                async move { common::get_once(proxy, &url, Duration::from_secs(10)).await },
            );
        own[from] += 1;
        let mut seen: Vec<Option<Duration>> = vec![None; n];
        seen[from] = Some(Duration::ZERO);
        let deadline = t + Duration::from_secs(10);
        while seen.iter().any(Option::is_none) && Instant::now() < deadline {
            let asked = Instant::now();
            let s = poll(&nodes).await;
            slowest_poll = slowest_poll.max(asked.elapsed());
            polls += 1;
            let now = t.elapsed();
            for (i, st) in s.iter().enumerate() {
                // Its own entries are not in its index.
                if seen[i].is_none() && st.is_some_and(|(_, e, _)| e as usize + own[i] > k) {
                    seen[i] = Some(now);
                }
            }
        }
        let got = fetch.await.ok().flatten().expect("fetch through the proxy");
        assert_eq!(got.status, 200);
        let mut times: Vec<Option<Duration>> = seen
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != from)
            .map(|(_, t)| *t)
            .collect();
        // None (never) sorts last.
        times.sort_by_key(|t| t.unwrap_or(Duration::MAX));
        let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).max(1) - 1];
        reach.push((at(0.5), at(0.99), at(1.0)));
    }
    let poll_every = poll_start.elapsed() / polls.max(1);
    let counters: Vec<(&str, u64, u64)> = at_rest
        .into_iter()
        .zip(counters(&nodes).await)
        .map(|((k, a), (_, b))| (k, a, b))
        .collect();

    // A node dies (it advertised an entry).
    let victim = n - 1;
    let got = common::get_once(
        nodes[victim].proxy,
        &format!("http://{origin}/obj/victim"),
        Duration::from_secs(10),
    )
    .await;
    assert!(got.is_some_and(|g| g.status == 200));
    tokio::time::sleep(Duration::from_secs(1)).await; // let the entry spread first
    let killed = Instant::now();
    if let Some(mut c) = nodes[victim].child.take() {
        let _ = c.kill(); // SIGKILL
        let _ = c.wait();
    }
    let others = &nodes[..victim];
    let mut dropped: Vec<Option<Duration>> = vec![None; others.len()];
    let deadline = killed + Duration::from_secs(60);
    while dropped.iter().any(Option::is_none) && Instant::now() < deadline {
        let s = poll(others).await;
        let now = killed.elapsed();
        for (i, st) in s.iter().enumerate() {
            // Down, and its entry is gone (the 10 others' remain).
            let others_entries = 10 - own[i];
            if dropped[i].is_none()
                && st.is_some_and(|(a, e, _)| a == n - 2 && e as usize <= others_entries)
            {
                dropped[i] = Some(now);
            }
        }
    }
    let mut times: Vec<Duration> = dropped.iter().flatten().copied().collect();
    times.sort();
    let down = (
        times.get(times.len().saturating_sub(1) / 2).copied(),
        (times.len() == others.len()).then(|| times[times.len() - 1]),
    );
    drop(nodes);
    Real {
        ready,
        rest,
        reach,
        down,
        poll: poll_every,
        slowest_poll,
        counters,
    }
}

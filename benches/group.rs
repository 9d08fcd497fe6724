//! End-to-end: a peer group of real `peercache` processes (default 8; `GROUP_NODES`) behind a slow
//! WAN link. An in-process origin serves one object per round (default 200 MiB; `GROUP_MB`) and its
//! total upload, across all connections, is paced to `GROUP_MBIT` Mbit/s (default 100), like a
//! shared WAN link. Rounds, each with a fresh (cold) object:
//!
//! - `alone`: node 0 alone fetches the object: T1, the link-limited baseline;
//! - `simultaneous`: every node requests it at once (one origin fetch expected, the rest PEER);
//! - `sequential`: node 0, then 1, … each after the previous one finished;
//! - `peering off`: fresh nodes without peering, all at once (N origin fetches expected);
//! - two sites (`GROUP_SITE_NODES` + `GROUP_SITE_NODES` nodes, default 2 + 2, labelled "a" and
//!   "b"): every node's peer port sits behind a gateway (`group_wan`) that paces what one site
//!   sends the other to `GROUP_WAN_MBIT` Mbit/s each way (default twice the origin's rate, so the
//!   origin stays the slower link) and counts it. Rounds: both sites at once; then one node of
//!   site a, and after it every node of site b at once. Prints origin bytes ÷ size and inter-site
//!   bytes ÷ size. `GROUP_SITES_ONLY=1` runs only these.
//! - multi-holder: a fresh group whose nodes cap their uploads (`GROUP_UPLOAD_MBIT`, default
//!   200): `GROUP_HOLDERS` (default 7) nodes get the object one after the other, then a node
//!   copies it from all of them at once and another one holder at a time.
//!   `GROUP_MULTI_ONLY=1` runs only this.
//!
//! Every body is checked byte for byte against the expected content. Prints a markdown table of
//! origin bytes ÷ object size and the time until the last node has the whole body.
//! Nodes listen on 127.0.0.2, 127.0.0.3, … (loopback only). Run: `cargo bench --bench group`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

mod group_wan;

use group_wan::{Link, Wan};

/// Pacing unit of the origin's link.
const CHUNK: usize = 64 * 1024;
/// Period of the deterministic content (a prime, so objects do not line up with chunks).
const PAT: usize = 1_048_573;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deterministic bytes: object `name`'s byte `i` is `buf[(i + seed(name)) % PAT]`; `buf` holds the
/// period twice so that every piece of up to `PAT` bytes is one contiguous slice.
struct Content {
    buf: Bytes,
}

impl Content {
    fn new() -> Self {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut one = Vec::with_capacity(PAT);
        for _ in 0..PAT {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            one.push((x >> 24) as u8);
        }
        let mut buf = one.clone();
        buf.extend_from_slice(&one);
        Content {
            buf: Bytes::from(buf),
        }
    }

    fn seed(name: &str) -> usize {
        let h = blake3::hash(name.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        (u64::from_le_bytes(b) % PAT as u64) as usize
    }

    /// Bytes `off..off + n` of the object with `seed` (`n <= PAT`).
    fn slice(&self, seed: usize, off: u64, n: usize) -> Bytes {
        let start = ((off % PAT as u64) as usize + seed) % PAT;
        self.buf.slice(start..start + n)
    }

    /// Whether `data` is what the object with `seed` holds at `off`.
    fn matches(&self, seed: usize, off: u64, data: &[u8]) -> bool {
        let mut pos = off;
        for piece in data.chunks(CHUNK) {
            if self.slice(seed, pos, piece.len()) != piece {
                return false;
            }
            pos += piece.len() as u64;
        }
        true
    }
}

#[derive(Default, Clone, Copy)]
struct ObjStats {
    /// Body bytes handed to the origin's connections.
    bytes: u64,
    requests: u64,
    /// Requests answered with a 206.
    ranged: u64,
    /// Bodies still being sent.
    active: u64,
    /// When the first request for the object arrived.
    first_request: Option<Instant>,
    /// When the last body byte was handed over (any request).
    last_sent: Option<Instant>,
}

/// The origin: its upload is one shared, paced link.
struct Origin {
    len: u64,
    content: Arc<Content>,
    link: Link,
    stats: Mutex<HashMap<String, ObjStats>>,
}

impl Origin {
    fn stats(&self, name: &str) -> ObjStats {
        lock(&self.stats).get(name).copied().unwrap_or_default()
    }
}

/// Decrements the active-body count of an object when the sending task ends (however it ends).
struct Active(Arc<Origin>, String);

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(s) = lock(&self.0.stats).get_mut(&self.1) {
            s.active -= 1;
        }
    }
}

/// `bytes=N-` or `bytes=N-M` → (first, last exclusive), clamped to `len`; `None` if unparsable.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let first: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => len,
        last => last.parse::<u64>().ok()?.saturating_add(1).min(len),
    };
    Some((first, end))
}

fn handle(
    o: &Arc<Origin>,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<peercache::body::Body> {
    let text = |status: u16, msg: &str| {
        hyper::Response::builder()
            .status(status)
            .body(peercache::body::full(msg.to_owned()))
            .expect("response")
    };
    let Some(name) = req.uri().path().strip_prefix("/obj/") else {
        return text(404, "no such object\n");
    };
    if name.is_empty() || name.contains('/') {
        return text(404, "no such object\n");
    }
    let name = name.to_owned();
    let len = o.len;
    let etag = format!("\"{name}\"");
    {
        let mut stats = lock(&o.stats);
        let s = stats.entry(name.clone()).or_default();
        s.requests += 1;
        s.first_request.get_or_insert_with(Instant::now);
    }

    let mut range = None;
    if let Some(r) = req
        .headers()
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        let if_range_ok = match req.headers().get(http::header::IF_RANGE) {
            None => true,
            Some(v) => v.as_bytes() == etag.as_bytes(),
        };
        if if_range_ok {
            range = parse_range(r, len);
            if matches!(range, Some((first, end)) if first >= end) {
                return hyper::Response::builder()
                    .status(416)
                    .header("content-range", format!("bytes */{len}"))
                    .body(peercache::body::empty())
                    .expect("response");
            }
        }
    }
    let (first, end) = range.unwrap_or((0, len));
    let mut resp = hyper::Response::builder()
        .header("content-length", end - first)
        .header("etag", &etag)
        .header("cache-control", "max-age=3600")
        .header("accept-ranges", "bytes");
    if range.is_some() {
        lock(&o.stats).entry(name.clone()).or_default().ranged += 1;
        resp = resp
            .status(206)
            .header("content-range", format!("bytes {first}-{}/{len}", end - 1));
    }
    if req.method() == http::Method::HEAD {
        return resp.body(peercache::body::empty()).expect("response");
    }
    let (tx, body) = peercache::body::channel(Some(end - first));
    lock(&o.stats).entry(name.clone()).or_default().active += 1;
    let o = o.clone();
    tokio::spawn(async move {
        let seed = Content::seed(&name);
        let active = Active(o.clone(), name);
        let mut pos = first;
        while pos < end {
            let n = (end - pos).min(CHUNK as u64) as usize;
            tokio::time::sleep_until(o.link.reserve(n)).await;
            if tx.send(Ok(o.content.slice(seed, pos, n))).await.is_err() {
                return;
            }
            if let Some(s) = lock(&o.stats).get_mut(&active.1) {
                s.bytes += n as u64;
                s.last_sent = Some(Instant::now());
            }
            pos += n as u64;
        }
    });
    resp.body(body).expect("response")
}

async fn start_origin(o: Arc<Origin>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let o = o.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let resp = handle(&o, &req);
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// A port free for both TCP and UDP on `ip`, none of `not`.
fn free_port(ip: Ipv4Addr, not: &[u16]) -> u16 {
    for _ in 0..200 {
        let Ok(tcp) = std::net::TcpListener::bind((ip, 0)) else {
            continue;
        };
        let Ok(port) = tcp.local_addr().map(|a| a.port()) else {
            continue;
        };
        if !not.contains(&port) && std::net::UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

struct Node {
    proxy: SocketAddr,
    stderr: PathBuf,
    child: Option<Child>,
}

/// The running nodes; dropping it kills every one of them (also on panic).
#[derive(Default)]
struct Group {
    nodes: Vec<Node>,
}

impl Drop for Group {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Two sites joined by `wan`: nodes `0..first` on site "a", the rest on site "b".
struct Sites<'a> {
    wan: &'a Arc<Wan>,
    first: usize,
}

/// The loopback address of node `i`.
fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + i as u8)
}

impl Group {
    /// Starts `count` nodes in `dir`/`tag`-i, with peering when `key` is given; with `sites`,
    /// each node is labelled with its site and advertises its gateway on the WAN. Node i's
    /// `[peers]` table gets the keys `peers_keys(i)` too.
    async fn start(
        dir: &Path,
        tag: &str,
        count: usize,
        key: Option<&Path>,
        sites: Option<Sites<'_>>,
        peers_keys: &dyn Fn(usize) -> String,
    ) -> Group {
        let mut group = Group::default();
        let mut seed_addr = None;
        for i in 0..count {
            let ip = node_ip(i);
            let p = free_port(ip, &[]);
            let home = dir.join(format!("{tag}-{i}"));
            std::fs::create_dir_all(&home).expect("node dir");
            let mut conf = format!(
                "[proxy]\nlisten = \"{ip}:{p}\"\n[cache]\ndir = \"{}\"\nmax_size = \"8GiB\"\n\
                 [log]\naccess = false\nlevel = \"warn\"\n",
                home.join("cache").display()
            );
            if let Some(key) = key {
                let q = free_port(ip, &[p]);
                let mut reach = SocketAddr::from((ip, q));
                if let Some(sites) = &sites {
                    let gateway = SocketAddr::from((ip, free_port(ip, &[p, q])));
                    let site = u8::from(i >= sites.first);
                    sites.wan.gateway(gateway, reach, site).await;
                    reach = gateway;
                    conf.push_str(&format!(
                        "[peers]\nadvertise = \"{gateway}\"\nsite = \"{}\"\n",
                        ["a", "b"][usize::from(site)]
                    ));
                } else {
                    conf.push_str("[peers]\n");
                }
                let seeds = match seed_addr {
                    None => {
                        seed_addr = Some(reach.to_string());
                        String::new()
                    }
                    Some(ref s) => format!("\"{s}\""),
                };
                conf.push_str(&format!(
                    "enabled = true\nlisten = \"{ip}:{q}\"\nseeds = [{seeds}]\n\
                     key_file = \"{}\"\n{}\n",
                    key.display(),
                    peers_keys(i)
                ));
            }
            let conf_path = home.join("peercache.toml");
            std::fs::write(&conf_path, conf).expect("config");
            let stderr = home.join("stderr.log");
            let err_file = std::fs::File::create(&stderr).expect("stderr file");
            let child = Command::new(env!("CARGO_BIN_EXE_peercache"))
                .args(["run", "--config"])
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err_file)
                .spawn()
                .expect("start peercache");
            group.nodes.push(Node {
                proxy: SocketAddr::from((ip, p)),
                stderr,
                child: Some(child),
            });
        }
        group
    }

    /// Panics (with the node's stderr) if a node has exited.
    fn check_alive(&mut self) {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if let Some(c) = n.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    let log = std::fs::read_to_string(&n.stderr).unwrap_or_default();
                    panic!("node {i} exited ({st}); stderr:\n{log}");
                }
            }
        }
    }

    /// Waits (bounded) until every node answers its status page and, with peering, lists the
    /// others as alive members.
    async fn wait_ready(&mut self, peering: bool, limit: Duration) -> Duration {
        let t0 = Instant::now();
        let want = self.nodes.len() - 1;
        loop {
            self.check_alive();
            let mut seen = Vec::new();
            for n in &self.nodes {
                seen.push(match status(n.proxy).await {
                    None => None,
                    Some(_) if !peering => Some(0),
                    Some(s) => Some(alive_members(&s)),
                });
            }
            let ready = seen
                .iter()
                .all(|s| matches!(s, Some(a) if !peering || *a == want));
            if ready {
                return t0.elapsed();
            }
            if t0.elapsed() > limit {
                panic!("group not ready after {limit:?}: alive members seen per node {seen:?} (want {want})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM to every node, then a bounded wait; whatever is left is killed.
    fn stop(&mut self) {
        for n in &self.nodes {
            if let Some(c) = n.child.as_ref() {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// The distinct lines of every node's stderr (warnings and errors), a few per node.
    fn print_logs(&self, tag: &str) {
        for (i, n) in self.nodes.iter().enumerate() {
            let log = std::fs::read_to_string(&n.stderr).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                continue;
            }
            println!("  {tag} node {i}: {} stderr line(s), e.g.:", lines.len());
            let mut shown: Vec<&str> = Vec::new();
            for l in &lines {
                if shown.len() >= 6 {
                    break;
                }
                if !shown.contains(l) {
                    shown.push(l);
                    let cut: String = l.chars().take(300).collect();
                    println!("    {cut}");
                }
            }
        }
    }
}

fn alive_members(s: &serde_json::Value) -> usize {
    s["peers"]["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["state"] == "alive").count())
        .unwrap_or(0)
}

/// `GET /_peercache/status` on a node's proxy port (origin form), bounded.
async fn status(proxy: SocketAddr) -> Option<serde_json::Value> {
    let work = async {
        let tcp = TcpStream::connect(proxy).await.ok()?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/_peercache/status")
            .header("host", proxy.to_string())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = send.send_request(req).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let bytes = resp.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&bytes).ok()
    };
    tokio::time::timeout(Duration::from_secs(3), work)
        .await
        .ok()
        .flatten()
}

struct Fetched {
    x_cache: String,
    /// Response head received, from the request's start.
    head: Duration,
    /// From the request's own start.
    took: Duration,
    /// From the round's start.
    done_at: Duration,
    /// `None` when the whole, correct body arrived.
    problem: Option<String>,
}

/// One GET of `url` through `proxy`, checking every byte; bounded by `limit`.
async fn fetch(
    proxy: SocketAddr,
    url: &str,
    content: &Content,
    seed: usize,
    len: u64,
    round_start: Instant,
    limit: Duration,
) -> Fetched {
    let start = Instant::now();
    let mut x_cache = "-".to_owned();
    let mut head = Duration::ZERO;
    let mut n = 0u64;
    let work = async {
        let tcp = TcpStream::connect(proxy)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let host = url
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
            .unwrap_or("origin");
        let req = hyper::Request::get(url)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        head = start.elapsed();
        x_cache = resp
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        if resp.status() != http::StatusCode::OK {
            return Err(format!("status {}", resp.status()));
        }
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body cut after {n} bytes: {e}"))?;
            if let Ok(d) = frame.into_data() {
                if n + d.len() as u64 > len {
                    return Err(format!("body longer than {len}"));
                }
                if !content.matches(seed, n, &d) {
                    return Err(format!("wrong bytes at {n}..{}", n + d.len() as u64));
                }
                n += d.len() as u64;
            }
        }
        if n != len {
            return Err(format!("short body: {n} of {len} bytes"));
        }
        Ok(())
    };
    let problem = match tokio::time::timeout(limit, work).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!("timed out after {limit:?}")),
    };
    Fetched {
        x_cache,
        head,
        took: start.elapsed(),
        done_at: round_start.elapsed(),
        problem,
    }
}

struct Row {
    round: &'static str,
    origin_ratio: f64,
    /// Transfer bytes between the sites ÷ object size (two-site rounds).
    crossed: Option<f64>,
    origin_requests: u64,
    ranged: u64,
    last: Duration,
    x_cache: String,
}

/// "1 MISS, 7 PEER" in the order first seen.
fn tally(results: &[Fetched]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in results {
        match counts.iter_mut().find(|(k, _)| *k == r.x_cache) {
            Some((_, c)) => *c += 1,
            None => counts.push((r.x_cache.clone(), 1)),
        }
    }
    counts
        .iter()
        .map(|(k, c)| format!("{c} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Bench {
    origin: Arc<Origin>,
    origin_addr: SocketAddr,
    content: Arc<Content>,
    len: u64,
    limit: Duration,
    drain: Duration,
    problems: Vec<String>,
}

impl Bench {
    fn url(&self, name: &str) -> String {
        format!("http://{}/obj/{name}", self.origin_addr)
    }

    /// Every node in `nodes` at once (`parallel`) or one after the other.
    async fn round(&mut self, nodes: &[SocketAddr], name: &str, parallel: bool) -> Vec<Fetched> {
        let url = self.url(name);
        let seed = Content::seed(name);
        let t0 = Instant::now();
        let mut results = Vec::new();
        if parallel {
            let mut tasks = Vec::new();
            for &proxy in nodes {
                let (url, content, len, limit) =
                    (url.clone(), self.content.clone(), self.len, self.limit);
                tasks.push(tokio::spawn(async move {
                    fetch(proxy, &url, &content, seed, len, t0, limit).await
                }));
            }
            for t in tasks {
                results.push(t.await.expect("fetch task"));
            }
        } else {
            for &proxy in nodes {
                results
                    .push(fetch(proxy, &url, &self.content, seed, self.len, t0, self.limit).await);
            }
        }
        for (i, r) in results.iter().enumerate() {
            if let Some(p) = &r.problem {
                self.problems
                    .push(format!("{name}: node {i} ({}): {p}", r.x_cache));
            }
        }
        // Let origin transfers that outlive the clients (a fill goes on without its client) end,
        // so that they are counted and do not slow the next round down.
        let d0 = Instant::now();
        while self.origin.stats(name).active > 0 && d0.elapsed() < self.drain {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let s = self.origin.stats(name);
        let rel = |t: Option<Instant>| {
            t.map_or("-".to_owned(), |t| {
                format!("{:.2}", t.saturating_duration_since(t0).as_secs_f64())
            })
        };
        let heads = results.iter().map(|r| r.head.as_secs_f64());
        println!(
            "  {name}: origin first request +{} s, last byte sent +{} s; response heads after \
             {:.2}..{:.2} s; last body complete +{:.2} s",
            rel(s.first_request),
            rel(s.last_sent),
            heads.clone().fold(f64::INFINITY, f64::min),
            heads.fold(0.0, f64::max),
            results
                .iter()
                .map(|r| r.done_at.as_secs_f64())
                .fold(0.0, f64::max),
        );
        let active = s.active;
        if active > 0 {
            self.problems.push(format!(
                "{name}: {active} origin transfer(s) still running {:?} after the round",
                self.drain
            ));
        }
        results
    }

    fn row(&self, round: &'static str, name: &str, results: &[Fetched]) -> Row {
        let s = self.origin.stats(name);
        Row {
            round,
            origin_ratio: s.bytes as f64 / self.len as f64,
            crossed: None,
            origin_requests: s.requests,
            ranged: s.ranged,
            last: results.iter().map(|r| r.done_at).max().unwrap_or_default(),
            x_cache: tally(results),
        }
    }
}

/// A compact line per node from its status page.
async fn print_status(tag: &str, nodes: &[SocketAddr]) {
    for (i, &proxy) in nodes.iter().enumerate() {
        let Some(s) = status(proxy).await else {
            println!("  {tag} node {i}: no status");
            continue;
        };
        let c = &s["counters"];
        let r = &c["requests_by_result"];
        let b = &c["bytes_by_source"];
        let mib = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64 / 1048576.0;
        let mut line = format!(
            "  {tag} node {i}: MISS {} PEER {} HIT {} COLLAPSED {} errors {} origin_requests {} | MiB from origin {:.1} peer {:.1} cache {:.1}",
            r["MISS"], r["PEER"], r["HIT"], r["COLLAPSED"], c["errors"], c["origin_requests"],
            mib(&b["origin"]), mib(&b["peer"]), mib(&b["cache"]),
        );
        let p = &s["peers"];
        if p.is_object() {
            line.push_str(&format!(
                " | uploads {} MiB up {:.1} failovers {} bad_hashes {} rejected {}/{}",
                p["uploads"],
                mib(&p["bytes_uploaded"]),
                p["failovers"],
                p["bad_hashes"],
                p["rejected_packets"],
                p["rejected_requests"],
            ));
        }
        println!("{line}");
    }
}

/// The two-site rounds: `per_site` + `per_site` nodes whose sites are joined by a WAN of
/// `wan_mbit` Mbit/s per direction (faster than the origin's link); prints origin bytes ÷ size
/// and the transfer bytes that crossed between the sites ÷ size.
async fn two_sites(bench: &mut Bench, dir: &Path, key: &Path, per_site: usize, wan_mbit: u64) {
    let count = 2 * per_site;
    let ips = (0..count)
        .map(|i| (IpAddr::V4(node_ip(i)), u8::from(i >= per_site)))
        .collect();
    let wan = Wan::new(wan_mbit, ips);
    let sites = Sites {
        wan: &wan,
        first: per_site,
    };
    let mut group = Group::start(dir, "site", count, Some(key), Some(sites), &|_| {
        String::new()
    })
    .await;
    let joined = group
        .wait_ready(
            true,
            Duration::from_secs(30).max(Duration::from_secs(count as u64 * 3)),
        )
        .await;
    println!(
        "  two sites ({per_site} + {per_site} nodes, WAN {wan_mbit} Mbit/s each way) formed in \
         {:.2} s",
        joined.as_secs_f64()
    );
    for (i, n) in group.nodes.iter().enumerate() {
        let s = status(n.proxy).await.expect("status of a ready node");
        let id = s["peers"]["id"].as_str().expect("node id");
        wan.learn(id, u8::from(i >= per_site));
    }
    let proxies: Vec<SocketAddr> = group.nodes.iter().map(|n| n.proxy).collect();
    let mut rows = Vec::new();
    let mut row = |bench: &Bench, round, name, r: &[Fetched], crossed: u64| {
        let mut row = bench.row(round, name, r);
        row.crossed = Some(crossed as f64 / bench.len as f64);
        rows.push(row);
    };

    let before = wan.crossed();
    let r = bench.round(&proxies, "sites", true).await;
    row(
        bench,
        "both sites at once",
        "sites",
        &r,
        wan.crossed() - before,
    );

    // Site a has it (one node fetched it); then every node of site b at once.
    let before = wan.crossed();
    bench.round(&proxies[..1], "relay", false).await;
    let r = bench.round(&proxies[per_site..], "relay", true).await;
    row(
        bench,
        "site b at once after site a",
        "relay",
        &r,
        wan.crossed() - before,
    );

    print_status("sites", &proxies).await;
    group.print_logs("sites");
    group.stop();
    drop(group);
    println!();
    println!(
        "two sites: GROUP_SITE_NODES={per_site} GROUP_WAN_MBIT={wan_mbit}; gossip across the WAN \
         {:.1} KiB in all",
        wan.gossip.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    );
    println!();
    println!("| round | origin bytes ÷ size | inter-site bytes ÷ size | origin requests (206) | time until the last node has it (s) | X-Cache |");
    println!("|---|---:|---:|---:|---:|---|");
    for row in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {} ({}) | {:.2} | {} |",
            row.round,
            row.origin_ratio,
            row.crossed.unwrap_or(0.0),
            row.origin_requests,
            row.ranged,
            row.last.as_secs_f64(),
            row.x_cache
        );
    }
    for row in &rows {
        if row.origin_ratio > 1.05 || row.crossed.is_some_and(|c| c > 1.05) {
            println!(
                "NOTE: {}: origin sent {:.2}×, the WAN carried {:.2}× the object size (> 1.05)",
                row.round,
                row.origin_ratio,
                row.crossed.unwrap_or(0.0)
            );
        }
    }
}

/// What the multi-holder round measured.
struct Multi {
    holders: usize,
    cap_mbit: u64,
    /// The copy by a node asking one holder at a time, then by one asking all at once.
    one: Fetched,
    all: Fetched,
    /// MiB the second requester got from each holder.
    spread: Vec<f64>,
    /// Its counters: copies from several holders, pieces raced, reassigned, window waits.
    counters: [u64; 4],
}

impl Multi {
    fn print(&self, len: u64) {
        let mib = len as f64 / 1048576.0;
        let rate = |f: &Fetched| mib / f.took.as_secs_f64().max(1e-9);
        println!();
        println!(
            "| copy of one {mib:.0} MiB object held by {} nodes, each uploading at most {} Mbit/s | time (s) | MiB/s | X-Cache |",
            self.holders, self.cap_mbit
        );
        println!("|---|---:|---:|---|");
        println!(
            "| one holder at a time (`parallel_holders = 1`) | {:.2} | {:.0} | {} |",
            self.one.took.as_secs_f64(),
            rate(&self.one),
            self.one.x_cache
        );
        println!(
            "| {} holders at once (`parallel_holders = {}`) | {:.2} | {:.0} | {} |",
            self.holders,
            self.holders,
            self.all.took.as_secs_f64(),
            rate(&self.all),
            self.all.x_cache
        );
        println!();
        println!(
            "multi-holder copy: MiB from each holder {}; multi_copies {}, pieces_raced {}, \
             pieces_reassigned {}, window_waits {}",
            self.spread
                .iter()
                .map(|m| format!("{m:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.counters[0],
            self.counters[1],
            self.counters[2],
            self.counters[3],
        );
    }
}

/// The multi-holder round: a fresh group whose nodes each cap their uploads at
/// `GROUP_UPLOAD_MBIT` (default 200; machines on a LAN, each held back by its own link).
/// `GROUP_HOLDERS` nodes (default 7) get one object one after the other; then one requester
/// copies it one holder at a time (`parallel_holders = 1`) and another from all of them at once.
async fn multi_round(bench: &mut Bench, dir: &Path, key: &Path) -> Option<Multi> {
    let holders = knob("GROUP_HOLDERS", 7).min(60) as usize;
    let cap_mbit = knob("GROUP_UPLOAD_MBIT", 200).max(9);
    let cap = cap_mbit * 1_000_000 / 8;
    let keys = move |i: usize| {
        let parallel = if i == holders { 1 } else { holders };
        format!("upload_rate = {cap}\nparallel_holders = {parallel}\n")
    };
    let mut group = Group::start(dir, "multi", holders + 2, Some(key), None, &keys).await;
    group
        .wait_ready(
            true,
            Duration::from_secs(30).max(Duration::from_secs(holders as u64 * 3)),
        )
        .await;
    let proxies: Vec<SocketAddr> = group.nodes.iter().map(|n| n.proxy).collect();
    println!("  multi-holder group: {holders} holders capped at {cap_mbit} Mbit/s, 2 requesters");
    bench.round(&proxies[..holders], "multi", false).await;
    // Both requesters know every holder before they ask.
    let t0 = Instant::now();
    loop {
        let mut known = Vec::new();
        for &p in &proxies[holders..] {
            known.push(
                status(p)
                    .await
                    .map_or(0, |s| s["peers"]["index"]["entries"].as_u64().unwrap_or(0)),
            );
        }
        if known.iter().all(|&k| k >= holders as u64) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bench.problems.push(format!(
                "multi: requesters know {known:?} holders, want {holders}"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (url, seed) = (bench.url("multi"), Content::seed("multi"));
    // The one asking all holders goes first, so that both find the same holders.
    let mut copies = Vec::new();
    for &p in [proxies[holders + 1], proxies[holders]].iter() {
        let f = fetch(
            p,
            &url,
            &bench.content,
            seed,
            bench.len,
            Instant::now(),
            bench.limit,
        )
        .await;
        if let Some(e) = &f.problem {
            bench.problems.push(format!("multi: requester {p}: {e}"));
        }
        copies.push(f);
    }
    let st = status(proxies[holders + 1]).await.unwrap_or_default();
    let p = &st["peers"];
    let spread = p["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["bytes_from"].as_u64())
                .filter(|&b| b > 0)
                .map(|b| b as f64 / 1048576.0)
                .collect()
        })
        .unwrap_or_default();
    let counter = |name: &str| p[name].as_u64().unwrap_or(0);
    let counters = [
        counter("multi_copies"),
        counter("pieces_raced"),
        counter("pieces_reassigned"),
        counter("window_waits"),
    ];
    print_status("multi", &proxies).await;
    group.print_logs("multi");
    group.stop();
    drop(group);
    let one = copies.pop()?;
    let all = copies.pop()?;
    Some(Multi {
        holders,
        cap_mbit,
        one,
        all,
        spread,
        counters,
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` compatibility
    }
    let mb = knob("GROUP_MB", 200);
    let count = knob("GROUP_NODES", 8).min(200) as usize;
    let mbit = knob("GROUP_MBIT", 100);
    let per_site = knob("GROUP_SITE_NODES", 2).min(100) as usize;
    let wan_mbit = knob("GROUP_WAN_MBIT", 2 * mbit);
    let sites_only = knob("GROUP_SITES_ONLY", 0) == 1;
    let multi_only = knob("GROUP_MULTI_ONLY", 0) == 1;
    let len = mb * 1024 * 1024;
    let link_secs = len as f64 * 8.0 / (mbit as f64 * 1e6);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ok = rt.block_on(async move {
        let content = Arc::new(Content::new());
        let origin = Arc::new(Origin {
            len,
            content: content.clone(),
            link: Link::mbit(mbit),
            stats: Mutex::new(HashMap::new()),
        });
        let origin_addr = start_origin(origin.clone()).await;
        let mut bench = Bench {
            origin,
            origin_addr,
            content,
            len,
            // Generous: even N full transfers in a row over the link fit.
            limit: Duration::from_secs_f64(3.0 * count as f64 * link_secs + 60.0),
            drain: Duration::from_secs_f64(1.5 * link_secs + 10.0),
            problems: Vec::new(),
        };
        // Declared before the groups, so it is deleted after they are stopped.
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("cluster.key");
        let hex: String = blake3::hash(b"peercache group bench key")
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

        if !sites_only && !multi_only {
            println!(
                "group: {count} nodes, {mb} MiB objects, origin link {mbit} Mbit/s \
                 (≈ {link_secs:.1} s per object), {cores} cores, origin {origin_addr}"
            );
            let mut rows = Vec::new();
            let mut seq_times = Vec::new();

            let mut group = Group::start(dir.path(), "peer", count, Some(&key), None, &|_| String::new()).await;
            let joined = group
                .wait_ready(true, Duration::from_secs(30).max(Duration::from_secs(count as u64 * 3)))
                .await;
            println!("  peer group formed in {:.2} s", joined.as_secs_f64());
            let proxies: Vec<SocketAddr> = group.nodes.iter().map(|n| n.proxy).collect();

            let r = bench.round(&proxies[..1], "alone", false).await;
            rows.push(bench.row("alone", "alone", &r));
            let t1 = rows[0].last;

            let r = bench.round(&proxies, "sim", true).await;
            rows.push(bench.row("simultaneous", "sim", &r));
            println!(
                "  simultaneous, per node (s): {}",
                r.iter()
                    .map(|f| format!("{:.2} {}", f.took.as_secs_f64(), f.x_cache))
                    .collect::<Vec<_>>()
                    .join(", ")
            );

            let r = bench.round(&proxies, "seq", false).await;
            rows.push(bench.row("sequential", "seq", &r));
            seq_times.extend(r.iter().map(|f| (f.took, f.x_cache.clone())));

            print_status("peering", &proxies).await;
            group.print_logs("peering");
            group.stop();
            drop(group);
            for i in 0..count {
                let _ = std::fs::remove_dir_all(dir.path().join(format!("peer-{i}")));
            }

            let mut group = Group::start(dir.path(), "solo", count, None, None, &|_| String::new()).await;
            group.wait_ready(false, Duration::from_secs(30)).await;
            let proxies: Vec<SocketAddr> = group.nodes.iter().map(|n| n.proxy).collect();
            let r = bench.round(&proxies, "off", true).await;
            rows.push(bench.row("peering off", "off", &r));
            print_status("no-peering", &proxies).await;
            group.print_logs("no-peering");
            group.stop();
            drop(group);

            println!();
            println!(
                "machine: {cores} cores; GROUP_MB={mb} GROUP_NODES={count} GROUP_MBIT={mbit}; \
                 link time per object {link_secs:.2} s"
            );
            println!();
            println!("| round | origin bytes ÷ size | origin requests (206) | time until the last node has it (s) | ratio to T1 | X-Cache |");
            println!("|---|---:|---:|---:|---:|---|");
            for row in &rows {
                println!(
                    "| {} | {:.2} | {} ({}) | {:.2} | {:.2} | {} |",
                    row.round,
                    row.origin_ratio,
                    row.origin_requests,
                    row.ranged,
                    row.last.as_secs_f64(),
                    row.last.as_secs_f64() / t1.as_secs_f64().max(1e-9),
                    row.x_cache
                );
            }
            println!();
            println!(
                "sequential, per node (s): {}",
                seq_times
                    .iter()
                    .map(|(t, x)| format!("{:.2} {x}", t.as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for row in &rows[1..3] {
                if row.origin_ratio > 1.05 {
                    // A performance finding, not a failure: the group fetched the object more than once.
                    println!(
                        "NOTE: {}: origin sent {:.2}× the object size (> 1.05; peering should fetch it once)",
                        row.round, row.origin_ratio
                    );
                }
            }
        }
        if !multi_only {
            two_sites(&mut bench, dir.path(), &key, per_site, wan_mbit).await;
        }
        if !sites_only {
            if let Some(m) = multi_round(&mut bench, dir.path(), &key).await {
                m.print(len);
            }
        }
        for p in &bench.problems {
            println!("PROBLEM: {p}");
        }
        bench.problems.is_empty()
    });
    drop(rt);
    if !ok {
        std::process::exit(1);
    }
}

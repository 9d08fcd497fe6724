//! Fault script, miss-path side of issue 9 (see `faults.rs` for how to run it):
//!
//! - `endless`: an origin whose chunked body never ends, `max_object_size = "20MiB"`; a client
//!   reads 60 MiB and leaves. `tmp/` never holds more than 20 MiB, the fill ends with its last
//!   reader (the origin stops being read), nothing is stored.
//! - `corrupt`: a 5 MiB object whose copy on node A is corrupted on disk in the middle; node B
//!   asks for it. B's client gets the one correct body, B counts one bad hash and leaves A out.
//! - `kill9`: 20 rounds; in each a fresh node A is downloading an object (the origin holds the
//!   rest back) while B streams it from A's fill; A gets `kill -9` mid-transfer. B's client
//!   gets 20 correct bodies, and B counts 20 fail-overs (each resumed from the origin at the
//!   byte reached, with `Range` and `If-Range`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use tokio::sync::watch;

use super::{common, free_port, peer_status, until, WAIT};

const MIB: u64 = 1024 * 1024;

/// Deterministic bytes for `path` (so a corrupt or misplaced byte shows).
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// The bench origin: `/endless` (a chunked body that never ends), fixed bodies with a strong
/// ETag that honour `Range: bytes=N-` (206), and bodies held back after their first part until
/// their gate opens.
#[derive(Default)]
struct Origin {
    bodies: Mutex<HashMap<String, Bytes>>,
    gates: Mutex<HashMap<String, watch::Receiver<bool>>>,
    /// Bytes of `/endless` handed to the connection, and its streams still being read.
    endless_sent: AtomicU64,
    endless_open: AtomicU64,
}

impl Origin {
    fn body(&self, path: &str, body: Bytes) {
        self.bodies
            .lock()
            .expect("bodies")
            .insert(path.into(), body);
    }

    fn gate(&self, path: &str) -> watch::Sender<bool> {
        let (tx, rx) = watch::channel(false);
        self.gates.lock().expect("gates").insert(path.into(), rx);
        tx
    }

    async fn answer(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<peercache::body::Body> {
        let path = req.uri().path().to_owned();
        if path == "/endless" {
            return self.endless();
        }
        let body = self.bodies.lock().expect("bodies").get(&path).cloned();
        let Some(body) = body else {
            let mut r = hyper::Response::new(peercache::body::empty());
            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
            return r;
        };
        let etag = format!("\"{}\"", blake3::hash(&body).to_hex());
        let from: Option<usize> = req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
            .filter(|_| {
                req.headers()
                    .get("if-range")
                    .is_none_or(|v| v.as_bytes() == etag.as_bytes())
            });
        let mut r = match from {
            Some(n) if n < body.len() => {
                let mut r = hyper::Response::new(peercache::body::full(body.slice(n..)));
                *r.status_mut() = hyper::StatusCode::PARTIAL_CONTENT;
                let range = format!("bytes {n}-{}/{}", body.len() - 1, body.len());
                r.headers_mut().insert(
                    "content-range",
                    HeaderValue::from_str(&range).expect("range"),
                );
                r
            }
            _ => {
                let gate = self.gates.lock().expect("gates").get(&path).cloned();
                let len = body.len();
                let b = match gate {
                    None => peercache::body::full(body),
                    Some(mut gate) => {
                        let (tx, b) = peercache::body::channel(Some(len as u64));
                        tokio::spawn(async move {
                            let first = body.slice(..len / 4);
                            if tx.send(Ok(first)).await.is_err() {
                                return;
                            }
                            let _ = gate.wait_for(|open| *open).await;
                            let _ = tx.send(Ok(body.slice(len / 4..))).await;
                        });
                        b
                    }
                };
                hyper::Response::new(b)
            }
        };
        let h = r.headers_mut();
        h.insert("cache-control", HeaderValue::from_static("max-age=600"));
        h.insert("etag", HeaderValue::from_str(&etag).expect("etag"));
        r
    }

    fn endless(self: Arc<Self>) -> hyper::Response<peercache::body::Body> {
        let (tx, b) = peercache::body::channel(None);
        let chunk = pattern(64 * 1024, 7);
        self.endless_open.fetch_add(1, SeqCst);
        tokio::spawn(async move {
            while tx.send(Ok(chunk.clone())).await.is_ok() {
                self.endless_sent.fetch_add(chunk.len() as u64, SeqCst);
            }
            self.endless_open.fetch_sub(1, SeqCst);
        });
        let mut r = hyper::Response::new(b);
        r.headers_mut()
            .insert("cache-control", HeaderValue::from_static("max-age=600"));
        r
    }
}

async fn start_origin() -> (Arc<Origin>, SocketAddr) {
    let origin = Arc::new(Origin::default());
    let o = origin.clone();
    let addr = common::origin(move |req| o.clone().answer(req)).await;
    (origin, addr)
}

/// Bytes in the files under `dir` (recursively) right now.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Sends `GET url` through `proxy` and returns the response as soon as its head is in.
async fn open(proxy: SocketAddr, url: &str) -> Option<hyper::Response<hyper::body::Incoming>> {
    let tcp = tokio::net::TcpStream::connect(proxy).await.ok()?;
    let mut send = common::handshake(tcp).await;
    let req = hyper::Request::get(url)
        .header("host", "bench")
        .body(Full::new(Bytes::new()))
        .ok()?;
    tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .ok()?
        .ok()
}

/// Reads `resp`'s body until `want` bytes came (or it ended, failed or stalled for [`WAIT`]);
/// what came, and whether it ended well.
async fn read_up_to(
    resp: &mut hyper::Response<hyper::body::Incoming>,
    want: usize,
    mut each: impl FnMut(usize),
) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    while got.len() < want {
        match tokio::time::timeout(WAIT, resp.body_mut().frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(d) = frame.into_data() {
                    got.extend_from_slice(&d);
                    each(got.len());
                }
            }
            Ok(None) => return (got, true),
            _ => return (got, false),
        }
    }
    (got, true)
}

/// The cache-side counters of a node's status JSON.
async fn status(proxy: SocketAddr) -> serde_json::Value {
    let url = format!("http://{proxy}/_peercache/status");
    common::get_once(proxy, &url, WAIT)
        .await
        .and_then(|g| serde_json::from_slice::<serde_json::Value>(&g.body).ok())
        .unwrap_or_default()
}

pub async fn endless() -> bool {
    const LIMIT: u64 = 20 * MIB;
    const READ: usize = 60 * MIB as usize;
    let (origin, at) = start_origin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = common::Proxy::start(
        dir.path(),
        "max_object_size = \"20MiB\"\n[log]\naccess = false\nlevel = \"warn\"\n",
        &[],
    )
    .await;
    let tmp = dir.path().join("cache/tmp");
    println!("endless origin body, max_object_size = 20 MiB");
    let Some(mut resp) = open(proxy.addr, &format!("http://{at}/endless")).await else {
        println!("  no answer: FAIL");
        return false;
    };
    let mut max_tmp = 0;
    let (got, read_ok) = read_up_to(&mut resp, READ, |_| {
        max_tmp = max_tmp.max(bytes_under(&tmp));
    })
    .await;
    drop(resp); // the only reader leaves
    let sent_when_left = origin.endless_sent.load(SeqCst);
    let stopped = until(|| async { origin.endless_open.load(SeqCst) == 0 }).await;
    let sent = origin.endless_sent.load(SeqCst);
    let s = status(proxy.addr).await;
    let (urls, over) = (
        s["cache"]["urls"].as_u64().unwrap_or(u64::MAX),
        s["counters"]["limits"]["fills_over_size"]
            .as_u64()
            .unwrap_or(0),
    );
    let after = bytes_under(&tmp);
    println!(
        "  the client read {:.1} MiB ({}), then left",
        got.len() as f64 / MIB as f64,
        if read_ok { "uncut" } else { "CUT" }
    );
    println!(
        "  tmp/ peak while reading: {:.1} MiB (limit 20 MiB); after: {after} bytes",
        max_tmp as f64 / MIB as f64
    );
    println!(
        "  origin read: {:.1} MiB when the client left, {:.1} MiB in all; stream ended: {stopped}",
        sent_when_left as f64 / MIB as f64,
        sent as f64 / MIB as f64
    );
    println!("  stored URLs: {urls}; fills_over_size: {over}");
    let ok = read_ok && max_tmp <= LIMIT && after <= LIMIT && stopped && urls == 0 && over == 1;
    println!("  {}", if ok { "PASS" } else { "FAIL" });
    ok
}

/// A group node's config (peer port `listen`, joined through `seeds`).
fn node(key: &Path, listen: SocketAddr, seeds: &[SocketAddr]) -> String {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[log]\naccess = false\nlevel = \"warn\"\n[peers]\nenabled = true\nlisten = \"{listen}\"\n\
         seeds = [{}]\nkey_file = \"{}\"\nconnect_timeout = \"250ms\"\n",
        seeds.join(", "),
        key.display()
    )
}

/// Writes a cluster key of `byte`s at `path`, readable by this user alone.
fn write_key(path: &Path, byte: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{}\n", byte.repeat(32))).expect("key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A peer address on `ip` with a free port.
fn peer_addr(ip: &str) -> SocketAddr {
    format!("{ip}:{}", free_port(ip)).parse().expect("addr")
}

/// B's status entry for the member at peer address `addr`.
async fn member(b: SocketAddr, addr: SocketAddr) -> serde_json::Value {
    peer_status(b).await["members"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|m| m["addr"] == addr.to_string().as_str())
                .cloned()
        })
        .unwrap_or_default()
}

fn counter(v: &serde_json::Value, name: &str) -> u64 {
    v[name].as_u64().unwrap_or(0)
}

pub async fn corrupt() -> bool {
    let (origin, at) = start_origin().await;
    let body = pattern(5 * MIB as usize, 3);
    origin.body("/big5", body.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.key");
    write_key(&key, "6b");
    let (adir, bdir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&adir).expect("dir");
    std::fs::create_dir_all(&bdir).expect("dir");
    let (a_peer, b_peer) = (peer_addr("127.0.0.2"), peer_addr("127.0.0.3"));
    let a = common::Proxy::start(&adir, &node(&key, a_peer, &[]), &[]).await;
    let b = common::Proxy::start(&bdir, &node(&key, b_peer, &[a_peer]), &[]).await;
    println!("a corrupt 5 MiB copy on a peer");
    let url = format!("http://{at}/big5");
    let first = common::get_once(a.addr, &url, WAIT).await;
    let holds = until(|| async { peer_status(b.addr).await["index"]["entries"] == 1 }).await;
    // Flip one byte in the middle of A's blob (not its outboard), behind A's back.
    let blob = walk(&adir.join("cache/objects"))
        .into_iter()
        .find(|f| std::fs::metadata(f).is_ok_and(|m| m.len() == body.len() as u64));
    let corrupted = blob.is_some_and(|f| {
        std::fs::read(&f)
            .map(|mut bytes| {
                bytes[2_500_000] ^= 0x5a;
                std::fs::write(&f, bytes).is_ok()
            })
            .unwrap_or(false)
    });
    let got = common::get_once(b.addr, &url, WAIT).await;
    let st = peer_status(b.addr).await;
    let a_member = member(b.addr, a_peer).await;
    let correct = got
        .as_ref()
        .is_some_and(|g| g.status == 200 && g.body == body);
    println!(
        "  setup: A fetched it ({}), B sees A hold it ({holds}), A's blob corrupted: {corrupted}",
        first.map_or("failed".into(), |g| g.x_cache)
    );
    println!(
        "  B's client: {} {}, the one correct body: {correct}",
        got.as_ref().map_or(0, |g| g.status),
        got.as_ref().map_or("-", |g| g.x_cache.as_str()),
    );
    println!(
        "  B: bad_hashes {} (expected 1), failovers {}, A penalised: {}",
        counter(&st, "bad_hashes"),
        counter(&st, "failovers"),
        a_member["penalised"]
    );
    let ok = holds
        && corrupted
        && correct
        && counter(&st, "bad_hashes") == 1
        && a_member["penalised"] == true;
    println!("  {}", if ok { "PASS" } else { "FAIL" });
    ok
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

pub async fn kill9() -> bool {
    const ROUNDS: usize = 20;
    let (origin, at) = start_origin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.key");
    write_key(&key, "7c");
    let bdir = dir.path().join("b");
    std::fs::create_dir_all(&bdir).expect("dir");
    let b_peer = peer_addr("127.0.0.3");
    let b = common::Proxy::start(&bdir, &node(&key, b_peer, &[]), &[]).await;
    println!("{ROUNDS} holders killed with kill -9 mid-transfer");
    let mut correct = 0;
    let mut notes = Vec::new();
    for round in 0..ROUNDS {
        let path = format!("/obj{round}");
        let body = pattern(2 * MIB as usize, round as u8);
        origin.body(&path, body.clone());
        let gate = origin.gate(&path);
        // A fresh holder each round: a killed one stays left out (penalised) for a while.
        let adir = dir.path().join(format!("a{round}"));
        std::fs::create_dir_all(&adir).expect("dir");
        let a_peer = peer_addr("127.0.0.2");
        let mut a = common::Proxy::start(&adir, &node(&key, a_peer, &[b_peer]), &[]).await;
        let joined = until(|| async { member(b.addr, a_peer).await["state"] == "alive" }).await;
        let url = format!("http://{at}{path}");
        let entries = counter(&peer_status(b.addr).await["index"], "entries");
        let a_client = open(a.addr, &url).await; // A is downloading, the origin holds the rest
        let claimed =
            until(|| async { counter(&peer_status(b.addr).await["index"], "entries") > entries })
                .await;
        let mut b_resp = open(b.addr, &url).await;
        let x_cache = b_resp
            .as_ref()
            .and_then(|r| r.headers().get("x-cache").cloned())
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .unwrap_or_default();
        let (mut got, _) = match b_resp.as_mut() {
            Some(r) => read_up_to(r, 64 * 1024, |_| {}).await,
            None => (Vec::new(), false),
        };
        let _ = a.child.kill(); // SIGKILL, mid-transfer
        let _ = a.child.wait();
        drop(a_client);
        let _ = gate.send(true);
        let ended = match b_resp.as_mut() {
            Some(r) => {
                let (rest, ended) = read_up_to(r, usize::MAX, |_| {}).await;
                got.extend_from_slice(&rest);
                ended
            }
            None => false,
        };
        let good = ended && got == body[..];
        correct += usize::from(good);
        if !(good && joined && claimed && x_cache == "PEER") {
            notes.push(format!(
                "round {round}: joined {joined}, claimed {claimed}, {x_cache}, {} bytes, ended {ended}",
                got.len()
            ));
        }
    }
    let failovers = counter(&peer_status(b.addr).await, "failovers");
    println!(
        "  correct bodies: {correct} of {ROUNDS}; B's failovers: {failovers} (expected {ROUNDS})"
    );
    for n in &notes {
        println!("  {n}");
    }
    let ok = correct == ROUNDS && failovers == ROUNDS as u64;
    println!("  {}", if ok { "PASS" } else { "FAIL" });
    ok
}

//! Fault script of issue 9: real `peercache` processes on loopback, bounded, no internet.
//! Run: `cargo bench --bench faults [-- SECTION…]` with sections `replay`, `endless`,
//! `corrupt`, `kill9` (default: all); exit status 1 when a fault is not handled.
//!
//! `replay`: node A (127.0.0.2) advertises its peer port through a relay on 127.0.0.9 that
//! forwards gossip and records every byte member B (127.0.0.3) sends to A's transfer API, as
//! someone on the path could. After B copied an object from A, the captured request for the
//! body is sent to A again, byte for byte: from the relay's address, from another address
//! (127.0.0.77), and with a `Range` added. Each must be refused (401) and counted in A's
//! `rejected_requests` / `replayed_requests`, while B's own fresh request still works.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

mod common;
#[path = "faults/miss.rs"]
mod faults_miss;

const WAIT: Duration = Duration::from_secs(10);

/// A port free for TCP and UDP on `ip`.
fn free_port(ip: &str) -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind(format!("{ip}:0")).expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(format!("{ip}:{port}")).is_ok() {
            return port;
        }
    }
}

/// Relays `front` → `back`: UDP datagrams one way (answers go to the sender's advertised
/// address, not through here) and TCP both ways, recording what TCP clients send.
async fn relay(front: SocketAddr, back: SocketAddr) -> Arc<Mutex<Vec<u8>>> {
    let captured: Arc<Mutex<Vec<u8>>> = Arc::default();
    let udp = UdpSocket::bind(front).await.expect("relay udp");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&buf[..n], back).await;
        }
    });
    let tcp = TcpListener::bind(front).await.expect("relay tcp");
    let cap = captured.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = tcp.accept().await {
            let cap = cap.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(back).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        cap.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend_from_slice(&buf[..n]);
                    }
                };
                let _ = tokio::join!(up, tokio::io::copy(&mut sr, &mut cw));
            });
        }
    });
    captured
}

/// Sends `bytes` from `from_ip` to `to`; the response's status code (0: none within 5 s).
async fn replay(from_ip: &str, to: SocketAddr, bytes: &[u8]) -> u16 {
    let attempt = async {
        let sock = TcpSocket::new_v4().ok()?;
        sock.bind(SocketAddr::new(from_ip.parse().ok()?, 0)).ok()?;
        let mut tcp = sock.connect(to).await.ok()?;
        tcp.write_all(bytes).await.ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = tcp.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&head)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// The peer part of a node's status JSON.
async fn peer_status(proxy: SocketAddr) -> serde_json::Value {
    let url = format!("http://{proxy}/_peercache/status");
    common::get_once(proxy, &url, WAIT)
        .await
        .and_then(|g| serde_json::from_slice::<serde_json::Value>(&g.body).ok())
        .map(|v| v["peers"].clone())
        .unwrap_or_default()
}

/// Polls `cond` every 50 ms for at most [`WAIT`].
async fn until<F: std::future::Future<Output = bool>>(mut cond: impl FnMut() -> F) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The last complete request head in `captured` whose request line starts with `prefix`.
fn request(captured: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(captured);
    text.split_inclusive("\r\n\r\n")
        .filter(|r| r.starts_with(prefix) && r.ends_with("\r\n\r\n"))
        .last()
        .map(|r| r.as_bytes().to_vec())
}

/// `head` with `line` added as a header field.
fn with_field(head: &[u8], line: &str) -> Vec<u8> {
    let mut out = head[..head.len() - 2].to_vec();
    out.extend_from_slice(format!("{line}\r\n\r\n").as_bytes());
    out
}

async fn replay_scenario() -> bool {
    let body = Bytes::from(
        (0..1_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let b2 = body.clone();
    let origin = common::origin(move |_req| {
        let b = b2.clone();
        async move {
            let mut r = hyper::Response::new(peercache::body::full(b));
            r.headers_mut().insert(
                "cache-control",
                hyper::header::HeaderValue::from_static("max-age=600"),
            );
            r
        }
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).expect("key");
    let port = free_port("127.0.0.2");
    let (a_peer, via): (SocketAddr, SocketAddr) = (
        format!("127.0.0.2:{port}").parse().expect("addr"),
        format!("127.0.0.9:{port}").parse().expect("addr"),
    );
    let captured = relay(via, a_peer).await;
    let node = |listen: String, advertise: SocketAddr, seeds: &str| {
        format!(
            "[log]\naccess = false\nlevel = \"warn\"\n[peers]\nenabled = true\nlisten = \"{listen}\"\n\
             advertise = \"{advertise}\"\nseeds = [{seeds}]\nkey_file = \"{}\"\n",
            key.display()
        )
    };
    let (adir, bdir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&adir).expect("dir");
    std::fs::create_dir_all(&bdir).expect("dir");
    let a = common::Proxy::start(&adir, &node(a_peer.to_string(), via, ""), &[]).await;
    let b_port = free_port("127.0.0.3");
    let b_peer: SocketAddr = format!("127.0.0.3:{b_port}").parse().expect("addr");
    let b = common::Proxy::start(
        &bdir,
        &node(b_peer.to_string(), b_peer, &format!("\"{via}\"")),
        &[],
    )
    .await;

    let url = format!("http://{origin}/tool.tgz");
    let first = common::get_once(a.addr, &url, WAIT).await;
    let holds = until(|| async { peer_status(b.addr).await["index"]["entries"] == 1 }).await;
    let copy = common::get_once(b.addr, &url, WAIT).await;
    let copied = copy
        .as_ref()
        .is_some_and(|g| g.status == 200 && g.x_cache == "PEER" && g.body == body);
    println!("replay of a captured peer request");
    println!(
        "  setup: A fetched it ({}), B sees A hold it ({holds}), B copied it from A: {copied}",
        first.map_or("failed".into(), |g| g.x_cache)
    );
    // A complete copy comes in verified pieces (`/peer/v1/pieces/`), an older node's by hash.
    let captured = captured.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(captured) = request(&captured, "GET /peer/v1/pieces/")
        .or_else(|| request(&captured, "GET /peer/v1/objects/"))
    else {
        println!("  no request for a body went through the relay: cannot run");
        return false;
    };
    let before = peer_status(a.addr).await;
    let cases = [
        (
            "the same bytes, from the relay's address",
            "127.0.0.9",
            captured.clone(),
        ),
        (
            "the same bytes, from another address",
            "127.0.0.77",
            captured.clone(),
        ),
        (
            "with a Range added",
            "127.0.0.77",
            with_field(&captured, "range: bytes=0-99"),
        ),
    ];
    let mut ok = holds && copied;
    println!("  | replayed request | status | expected |");
    println!("  |---|---|---|");
    for (what, from, bytes) in cases {
        let status = replay(from, a_peer, &bytes).await;
        ok &= status == 401;
        println!("  | {what} | {status} | 401 |");
    }
    let after = peer_status(a.addr).await;
    let moved = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    let (rejected, replayed) = (moved("rejected_requests"), moved("replayed_requests"));
    println!(
        "  A counted {rejected} rejected requests, {replayed} of them replays (expected 3, 2)"
    );
    ok &= rejected == 3 && replayed == 2;
    // B's own requests still work: each is signed anew.
    let other = format!("http://{origin}/other.tgz");
    let stored = common::get_once(a.addr, &other, WAIT).await.is_some();
    let seen =
        stored && until(|| async { peer_status(b.addr).await["index"]["entries"] == 2 }).await;
    let fresh = common::get_once(b.addr, &other, WAIT).await;
    println!(
        "  a fresh request from B for another object A holds: {}",
        fresh
            .as_ref()
            .map_or("failed".into(), |g| format!("{} {}", g.status, g.x_cache))
    );
    ok &= seen && fresh.is_some_and(|g| g.status == 200 && g.x_cache == "PEER" && g.body == body);
    println!("  {}", if ok { "PASS" } else { "FAIL" });
    ok
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` compatibility
    }
    let asked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| asked.is_empty() || asked.iter().any(|a| a == name);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut ok = true;
    if wants("replay") {
        ok &= rt.block_on(replay_scenario());
    }
    if wants("endless") {
        ok &= rt.block_on(faults_miss::endless());
    }
    if wants("corrupt") {
        ok &= rt.block_on(faults_miss::corrupt());
    }
    if wants("kill9") {
        ok &= rt.block_on(faults_miss::kill9());
    }
    if !ok {
        std::process::exit(1);
    }
}

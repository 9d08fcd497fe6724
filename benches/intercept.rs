//! Intercepted HTTPS against plain HTTP, same run, same `peercache` process (pinned to CPU 1
//! when taskset exists): 1 KiB hits over INTERCEPT_CONNS keep-alive connections for
//! INTERCEPT_SECS, alternating plain-http and intercepted rounds INTERCEPT_ROUNDS times (pooled),
//! then the ratio; and INTERCEPT_NEW sequential new connections with one hit each (CONNECT and TLS
//! handshake included). Run: `cargo bench --bench intercept`.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

mod common;

use common::{get_body, handshake, knob, percentile, Sender};

/// How a connection reaches the 1 KiB object.
#[derive(Clone)]
enum Kind {
    /// Absolute-form `http://origin/1k` on a plain connection.
    Plain { proxy: SocketAddr, url: String },
    /// `GET /1k` inside a CONNECT tunnel decrypted by the proxy.
    Intercepted {
        proxy: SocketAddr,
        target: String,
        tls: tokio_rustls::TlsConnector,
    },
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Plain { .. } => "plain http",
            Kind::Intercepted { .. } => "intercepted https",
        }
    }

    async fn open(&self) -> Sender {
        match self {
            Kind::Plain { proxy, .. } => common::connect(*proxy).await,
            Kind::Intercepted { proxy, target, tls } => {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut tcp = tokio::net::TcpStream::connect(proxy).await.expect("proxy");
                let _ = tcp.set_nodelay(true);
                tcp.write_all(
                    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
                )
                .await
                .expect("CONNECT");
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    tcp.read_exact(&mut byte).await.expect("CONNECT answer");
                    head.push(byte[0]);
                }
                assert!(head.starts_with(b"HTTP/1.1 200"), "CONNECT refused");
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
                let stream = tls.connect(name, tcp).await.expect("TLS with our CA");
                handshake(stream).await
            }
        }
    }

    async fn hit(&self, send: &mut Sender) {
        let (url, host) = match self {
            Kind::Plain { url, .. } => (url.as_str(), "bench"),
            Kind::Intercepted { target, .. } => ("/1k", target.as_str()),
        };
        let (status, body) = get_body(send, url, host).await;
        assert_eq!((status, body.len()), (200, 1024));
    }
}

/// Latencies of 1 KiB hits over `conns` connections for `secs`.
async fn hits(kind: &Kind, conns: usize, secs: u64) -> Vec<Duration> {
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(kind.open().await);
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for mut send in senders {
        let kind = kind.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                kind.hit(&mut send).await;
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let conns = knob("INTERCEPT_CONNS", 50) as usize;
    let secs = knob("INTERCEPT_SECS", 5);
    let rounds = knob("INTERCEPT_ROUNDS", 3);
    let fresh = knob("INTERCEPT_NEW", 200) as usize;
    let rt = common::runtime();
    rt.block_on(async move {
        let kib = Bytes::from(vec![b'x'; 1024]);
        let answer = move |_req: hyper::Request<hyper::body::Incoming>| {
            let kib = kib.clone();
            async move {
                hyper::Response::builder()
                    .header("cache-control", "max-age=3600")
                    .body(peercache::body::full(kib))
                    .expect("response")
            }
        };
        let http_origin = common::origin(answer.clone()).await;
        let tls_origin = common::origin_tls(answer).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix: &[&str] = if Command::new("taskset").arg("-V").output().is_ok() {
            &["taskset", "-c", "1"]
        } else {
            &[]
        };
        let extra = format!(
            "[upstream]\nca_file = \"{}\"\n[intercept]\nhosts = [\"127.0.0.1\"]\n\
             [log]\naccess = false\nlevel = \"warn\"\n",
            common::fixture("ca.pem").display()
        );
        let ports = format!("connect_ports = [{}]", tls_origin.port());
        let proxy_proc = common::Proxy::start_with(dir.path(), &ports, &extra, prefix).await;
        let proxy = proxy_proc.addr;
        let mut admin = common::connect(proxy).await;
        let (status, ca) = get_body(&mut admin, "/_peercache/ca.pem", "bench").await;
        assert_eq!(status, 200, "the proxy serves its CA");
        let tls = {
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(&ca).expect("CA PEM")).expect("root");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        };
        let kinds = [
            Kind::Plain {
                proxy,
                url: format!("http://{http_origin}/1k"),
            },
            Kind::Intercepted {
                proxy,
                target: tls_origin.to_string(),
                tls,
            },
        ];
        println!(
            "intercept: peercache pid {}, {conns} connections, {rounds} rounds of {secs} s each",
            proxy_proc.pid()
        );
        for kind in &kinds {
            let mut warm = kind.open().await;
            kind.hit(&mut warm).await; // the miss; every later request is a hit
        }
        let mut lat: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (i, kind) in kinds.iter().enumerate() {
                lat[i].extend(hits(kind, conns, secs).await);
            }
        }
        let mut rate = [0.0; 2];
        for (i, kind) in kinds.iter().enumerate() {
            lat[i].sort();
            rate[i] = lat[i].len() as f64 / (secs * rounds) as f64;
            println!(
                "  1 KiB hits, {:<17}: {:>7.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                kind.name(),
                rate[i],
                percentile(&lat[i], 0.50).as_secs_f64() * 1e3,
                percentile(&lat[i], 0.99).as_secs_f64() * 1e3
            );
        }
        println!("  intercepted / plain: {:.2}x", rate[1] / rate[0]);
        for kind in &kinds {
            let mut each = Vec::new();
            for _ in 0..fresh {
                let t = Instant::now();
                let mut send = kind.open().await;
                kind.hit(&mut send).await;
                each.push(t.elapsed());
            }
            each.sort();
            println!(
                "  new connection + 1 hit, {:<17}: p50 {:.2} ms, p99 {:.2} ms ({fresh} in sequence)",
                kind.name(),
                percentile(&each, 0.50).as_secs_f64() * 1e3,
                percentile(&each, 0.99).as_secs_f64() * 1e3
            );
        }
        drop(proxy_proc);
    });
}

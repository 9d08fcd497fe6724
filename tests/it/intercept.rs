//! HTTPS interception: listed hosts are decrypted with our CA's leaves and cached like any https
//! URL; other tunnels stay opaque; every tunnel is logged and counted when it ends.

use std::path::Path;
use std::time::Duration;

use peercache::config::{Config, HostPatterns};
use peercache::metrics::Metrics;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// A proxy config intercepting `hosts`, allowed to CONNECT to `origin`'s port, trusting the
/// test origin's CA upstream.
fn intercepting(dir: &Path, origin: &Origin, hosts: &[&str]) -> Config {
    let mut c = config(dir);
    c.proxy.connect_ports = vec![origin.addr.port()];
    c.upstream.ca_file = Some(fixtures().join("ca.pem"));
    c.intercept.hosts = HostPatterns::parse(hosts.iter().copied()).unwrap();
    c
}

/// The proxy's CA certificate (PEM).
fn our_ca(app: &peercache::front::Proxy) -> String {
    let intercept = app.intercept.as_ref().expect("interception on");
    intercept.leaves.ca().cert_pem().to_owned()
}

/// A connection to `target` through `proxy`, decrypted by it, as a client trusting only its CA.
async fn decrypted(proxy: &peercache::app::Running, target: &str) -> Sender {
    let tls = tls_trusting(our_ca(&proxy.app).as_bytes());
    let name = target.rsplit_once(':').expect("host:port").0;
    https_through(proxy.addr, target, name, &tls)
        .await
        .expect("the client accepts our leaf")
        .0
}

/// Whether the proxy counts `n` failed client handshakes (within a bounded wait).
async fn handshake_failures(proxy: &peercache::app::Running, n: u64) -> bool {
    let app = proxy.app.clone();
    wait_until(Duration::from_secs(5), || {
        Metrics::get(&app.metrics.intercept_handshake_failures) == n
    })
    .await
}

fn counter(v: &serde_json::Value, name: &str) -> u64 {
    v["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name}"))
}

fn x509(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}

#[tokio::test]
async fn a_listed_host_is_decrypted_with_our_leaf_and_its_responses_cached() {
    let origin = Origin::start_tls().await;
    origin.route(
        "/pkg.whl",
        Reply::ok("wheel bytes").header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let proxy = start_proxy(intercepting(dir.path(), &origin, &["127.0.0.1"])).await;

    // The CA is made on the first run and served to allowed clients.
    let ca = get(
        proxy.addr,
        &format!("http://{}/_peercache/ca.pem", proxy.addr),
    )
    .await;
    assert_eq!(ca.status, 200);
    assert_eq!(ca.header("content-type"), "application/x-pem-file");
    let ca_pem = ca.body.unwrap();
    assert_eq!(ca_pem, std::fs::read(dir.path().join("ca/ca.pem")).unwrap());

    // A client trusting only that CA gets the body over TLS, from a leaf for the host.
    let tls = tls_trusting(&ca_pem);
    let target = origin.addr.to_string();
    let (mut conn, certs) = https_through(proxy.addr, &target, "127.0.0.1", &tls)
        .await
        .expect("the client accepts our leaf");
    assert_eq!(certs.len(), 1, "the leaf alone");
    let leaf = x509(&certs[0]);
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        format!("{:?}", san.general_names),
        "[IPAddress([127, 0, 0, 1])]"
    );
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap();
    assert_eq!(leaf.issuer(), x509(&ca_der).subject());

    let r = get_on(&mut conn, "/pkg.whl", &target).await;
    assert_eq!(
        (r.status, r.text().as_str(), r.x_cache()),
        (200, "wheel bytes", "MISS")
    );
    assert_eq!(
        get_on(&mut conn, "/pkg.whl", &target).await.x_cache(),
        "HIT"
    );
    // A new tunnel finds it too, and so does a plain absolute-form request: one cache key.
    let mut again = decrypted(&proxy, &target).await;
    assert_eq!(
        get_on(&mut again, "/pkg.whl", &target).await.x_cache(),
        "HIT"
    );
    assert_eq!(
        get(proxy.addr, &origin.url("/pkg.whl")).await.x_cache(),
        "HIT"
    );
    assert_eq!(origin.hits("/pkg.whl"), 1);

    // A request inside the tunnel for another host is misdirected.
    let other = get_on(&mut again, "/pkg.whl", "localhost").await;
    assert_eq!(other.status, 421);
    assert_eq!(other.header("x-peercache-error"), "misdirected");

    let v = status_json(proxy.addr).await;
    assert_eq!(counter(&v, "intercepted"), 2);
    assert_eq!(
        counter(&v, "intercept_leaves_issued"),
        1,
        "one leaf, cached"
    );
    assert_eq!(v["intercept"]["hosts"][0], "127.0.0.1");
    assert!(metrics_text(proxy.addr)
        .await
        .contains("peercache_intercepted_total 2"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_host_name_gets_a_leaf_for_its_sni_and_an_unlisted_sni_is_refused() {
    let origin = Origin::start_tls().await;
    origin.route(
        "/n",
        Reply::ok("named").header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let proxy = start_proxy(intercepting(dir.path(), &origin, &["localhost"])).await;
    let ca_pem = our_ca(&proxy.app);
    let tls = tls_trusting(ca_pem.as_bytes());
    let target = format!("localhost:{}", origin.addr.port());

    let (mut conn, certs) = https_through(proxy.addr, &target, "localhost", &tls)
        .await
        .unwrap();
    let san = x509(&certs[0])
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .clone();
    assert_eq!(format!("{san:?}"), "[DNSName(\"localhost\")]");
    let r = get_on(&mut conn, "/n", &target).await;
    assert_eq!((r.status, r.text().as_str()), (200, "named"));

    // A listed CONNECT host does not get a certificate for an unlisted server name.
    let refused = https_through(proxy.addr, &target, "bank.example", &tls).await;
    assert!(refused.is_err(), "no leaf for an unlisted name");
    assert!(handshake_failures(&proxy, 1).await);
    assert_eq!(Metrics::get(&proxy.app.metrics.intercept_leaves_issued), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_refuses_our_leaf_costs_only_its_own_connection() {
    let origin = Origin::start_tls().await;
    origin.route("/ok", Reply::ok("still serving"));
    let dir = tempdir();
    let proxy = start_proxy(intercepting(dir.path(), &origin, &["127.0.0.1"])).await;
    let target = origin.addr.to_string();

    // This client trusts another CA (the test origin's), so it rejects our leaf.
    let stranger = tls_trusting(&std::fs::read(fixtures().join("ca.pem")).unwrap());
    let e = https_through(proxy.addr, &target, "127.0.0.1", &stranger)
        .await
        .expect_err("the client refuses our certificate");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    assert!(
        handshake_failures(&proxy, 1).await,
        "the refusal is counted"
    );

    let mut conn = decrypted(&proxy, &target).await;
    let r = get_on(&mut conn, "/ok", &target).await;
    assert_eq!((r.status, r.text().as_str()), (200, "still serving"));
    assert_eq!(Metrics::get(&proxy.app.metrics.intercepted), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn an_upstream_with_an_untrusted_certificate_is_a_502_never_a_downgrade() {
    let origin = Origin::start_tls().await;
    origin.route("/x", Reply::ok("x"));
    let dir = tempdir();
    let mut c = intercepting(dir.path(), &origin, &["127.0.0.1"]);
    c.upstream.ca_file = None; // the origin's CA is unknown to the proxy
    let proxy = start_proxy(c).await;
    let target = origin.addr.to_string();
    let mut conn = decrypted(&proxy, &target).await;
    let r = get_on(&mut conn, "/x", &target).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-peercache-error"), "tls");
    assert!(r.text().contains("UnknownIssuer"), "{}", r.text());
    assert_eq!(
        origin.hits("/x"),
        0,
        "nothing was sent to the unverified upstream"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_serves_an_intercepted_url_from_its_peer() {
    let origin = Origin::start_tls().await;
    let body = pattern(100_000, 9);
    origin.route(
        "/crate.tar.gz",
        Reply::ok(body.clone())
            .header("cache-control", "max-age=600")
            .header("etag", "\"c1\""),
    );
    let port = origin.addr.port();
    let (nodes, _key) = cluster_with(2, |c| {
        c.proxy.connect_ports = vec![port];
        c.upstream.ca_file = Some(fixtures().join("ca.pem"));
        c.intercept.hosts = HostPatterns::parse(["127.0.0.1"]).unwrap();
    })
    .await;
    let target = origin.addr.to_string();
    let fetch = |i: usize| {
        let (proxy, target) = (&nodes[i].proxy, target.clone());
        async move {
            let mut conn = decrypted(proxy, &target).await;
            get_on(&mut conn, "/crate.tar.gz", &target).await
        }
    };
    assert_eq!(fetch(0).await.x_cache(), "MISS");
    // B learns that A holds the https URL.
    wait_holders(&nodes[1], &origin.url("/crate.tar.gz"), 1).await;
    let b = fetch(1).await;
    assert_eq!(b.x_cache(), "PEER");
    assert!(b.body.unwrap() == body, "byte-exact");
    assert_eq!(origin.hits("/crate.tar.gz"), 1);
}

/// An origin that echoes every byte back until the client closes.
async fn echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tunnels_are_logged_with_their_bytes_when_they_end() {
    let echo = echo().await;
    let origin = Origin::start_tls().await;
    origin.route(
        "/log",
        Reply::ok("logged").header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let extra = format!(
        "connect_ports = [{}, {}]\n[upstream]\nca_file = \"{}\"\n\
         [intercept]\nhosts = [\"127.0.0.1\"]\nca_cert = \"{}\"\n\
         [log]\naccess = true\nlevel = \"warn\"\n",
        echo.port(),
        origin.addr.port(),
        fixtures().join("ca.pem").display(),
        dir.path().join("ca.pem").display(),
    );
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proc = Proc::start_with(dir.path(), addr, &extra).await;

    // An opaque tunnel: 1000 bytes each way, byte for byte.
    let sent = pattern(1000, 3);
    let mut s = tunnel(proc.addr, &format!("localhost:{}", echo.port())).await;
    s.write_all(&sent).await.unwrap();
    let mut back = vec![0u8; 1000];
    s.read_exact(&mut back).await.unwrap();
    assert!(back == sent, "tunnelled untouched");
    drop(s);

    // An intercepted one: its request is logged as https, the tunnel with its TLS bytes.
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let target = origin.addr.to_string();
    let (mut conn, _) = https_through(proc.addr, &target, "127.0.0.1", &tls_trusting(&ca))
        .await
        .unwrap();
    assert_eq!(get_on(&mut conn, "/log", &target).await.text(), "logged");
    drop(conn);

    let log = dir.path().join("stdout.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let echo_line = format!(
        " TUNNEL/200 1000 CONNECT localhost:{} - complete up=1000",
        echo.port()
    );
    let https_line = format!(" MISS/200 6 GET https://{target}/log origin complete");
    let intercept_line = format!(" CONNECT {target} - complete up=");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let text = read();
            text.contains(&echo_line)
                && text.contains(&https_line)
                && text
                    .lines()
                    .any(|l| l.contains(" INTERCEPT/200 ") && l.contains(&intercept_line))
        })
        .await,
        "access log: {}",
        read()
    );
    let v = status_json(proc.addr).await;
    assert_eq!(counter(&v, "tunnels"), 2);
    assert_eq!(counter(&v, "intercepted"), 1);
    assert!(counter(&v, "tunnel_bytes_up") > 1000, "TLS bytes too: {v}");
    assert!(
        counter(&v, "tunnel_bytes_down") > 1000,
        "TLS bytes too: {v}"
    );
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_counted() {
    let echo = echo().await;
    let dir = tempdir();
    let mut c = config(dir.path());
    c.proxy.connect_ports = vec![echo.port()];
    c.proxy.tunnel_idle_timeout = Duration::from_millis(200);
    let proxy = start_proxy(c).await;
    let mut s = tunnel(proxy.addr, &echo.to_string()).await;
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).await.unwrap();
    // Then silence: the proxy closes the tunnel.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "closed after idling: {closed:?}"
    );
    let app = proxy.app.clone();
    assert!(
        wait_until(Duration::from_secs(5), || Metrics::get(
            &app.metrics.tunnels_idle_closed
        ) == 1)
        .await
    );
    proxy.stop().await;
}

#[tokio::test]
async fn without_interception_there_is_no_ca_to_serve() {
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let r = get(
        proxy.addr,
        &format!("http://{}/_peercache/ca.pem", proxy.addr),
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("interception is off"), "{}", r.text());
    assert!(!dir.path().join("ca").exists(), "no CA is made");
    proxy.stop().await;
}

#[tokio::test]
async fn the_pac_file_sends_the_intercepted_hosts_through_the_proxy() {
    let dir = tempdir();
    let mut c = config(dir.path());
    c.intercept.hosts = HostPatterns::parse(["files.example.org", "*.example.net"]).unwrap();
    let proxy = start_proxy(c).await;
    let pac = send(proxy.addr, "GET", "/proxy.pac", &[("host", "proxy.lan")]).await;
    assert_eq!(pac.status, 200);
    let text = pac.text();
    let https = "if (url.substring(0, 6) == \"https:\" && (host == \"files.example.org\" || \
                 dnsDomainIs(host, \".example.net\"))) return proxy;";
    assert!(text.contains(https), "{text}");
    proxy.stop().await;
}

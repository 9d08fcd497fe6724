//! Forward-proxy behaviour: headers, methods, CONNECT, mirrors, access control, bad input.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

#[tokio::test]
async fn hop_by_hop_fields_are_removed_and_via_is_added() {
    let origin = Origin::start().await;
    origin.route(
        "/h",
        Reply::ok("h")
            .header("x-end", "kept")
            .header("keep-alive", "timeout=5"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let r = send(
        proxy.addr,
        "GET",
        &origin.url("/h"),
        &[
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic eA=="),
            ("x-app", "2"),
        ],
    )
    .await;
    assert_eq!(r.header("x-end"), "kept");
    assert_eq!(r.header("keep-alive"), "");
    let seen = &origin.seen("/h")[0];
    assert!(seen.headers.get("x-secret").is_none());
    assert!(seen.headers.get("proxy-authorization").is_none());
    assert_eq!(seen.headers["x-app"], "2");
    assert!(seen.headers["via"].to_str().unwrap().contains("peercache-"));
    assert_eq!(seen.headers["host"], origin.addr.to_string().as_str());
    proxy.stop().await;
}

#[tokio::test]
async fn other_methods_pass_through_with_their_bodies() {
    let origin = Origin::start().await;
    origin.route(
        "/p",
        Reply::ok("done")
            .status(201)
            .header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    for m in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = send(proxy.addr, m, &origin.url("/p"), &[]).await;
        assert_eq!((r.status, r.text().as_str()), (201, "done"), "{m}");
    }
    let methods: Vec<String> = origin.seen("/p").into_iter().map(|s| s.method).collect();
    assert_eq!(methods, ["POST", "PUT", "DELETE", "OPTIONS"]);
    proxy.stop().await;
}

#[tokio::test]
async fn clients_outside_allow_get_403_and_nothing_else() {
    let origin = Origin::start().await;
    origin.route("/x", Reply::ok("x"));
    let dir = tempdir();
    let mut c = config(dir.path());
    c.proxy.allow = peercache::http::acl::Acl::new(vec!["10.0.0.0/8".parse().unwrap()]);
    let proxy = start_proxy(c).await;
    let r = get(proxy.addr, &origin.url("/x")).await;
    assert_eq!(r.status, 403);
    let r = get(
        proxy.addr,
        &format!("http://{}/_peercache/status", proxy.addr),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = send(proxy.addr, "CONNECT", &origin.addr.to_string(), &[]).await;
    assert_eq!(r.status, 403);
    assert_eq!(origin.hits("/x"), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn garbage_gets_400_and_the_proxy_keeps_serving() {
    let origin = Origin::start().await;
    origin.route("/ok", Reply::ok("fine"));
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"HELLO WORLD HTTP/9.9 \x00\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 400"), "got {text:?}");
    }
    // Origin-form requests that match no route are bad requests too.
    let r = get(proxy.addr, &format!("http://{}/index.html", proxy.addr)).await;
    assert_eq!(r.status, 400);
    let r = get(proxy.addr, &origin.url("/ok")).await;
    assert_eq!(r.text(), "fine");
    proxy.stop().await;
}

#[tokio::test]
async fn unreachable_origins_get_502_with_a_reason() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let r = get(proxy.addr, &format!("http://{addr}/x")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-peercache-error"), "connect-failed");
    proxy.stop().await;
}

#[tokio::test]
async fn connect_tunnels_to_allowed_ports_only() {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let dir = tempdir();
    let mut c = config(dir.path());
    c.proxy.connect_ports = vec![echo_addr.port()];
    let proxy = start_proxy(c).await;

    let mut s = tunnel(proxy.addr, &echo_addr.to_string()).await;
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");

    let r = send(proxy.addr, "CONNECT", "127.0.0.1:25", &[]).await;
    assert_eq!(r.status, 403);
    proxy.stop().await;
}

#[tokio::test]
async fn mirror_routes_fetch_from_their_upstream_and_cache() {
    let origin = Origin::start().await;
    origin.route(
        "/debian/dists/stable/Release",
        Reply::ok("release").header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let mut c = config(dir.path());
    c.mirrors = vec![mirror("/deb/", &origin.url("/debian/"))];
    let proxy = start_proxy(c).await;
    let url = format!("http://{}/deb/dists/stable/Release", proxy.addr);
    let r = get(proxy.addr, &url).await;
    assert_eq!(
        (r.status, r.text().as_str(), r.x_cache()),
        (200, "release", "MISS")
    );
    assert_eq!(get(proxy.addr, &url).await.x_cache(), "HIT");
    let seen = &origin.seen("/debian/dists/stable/Release")[0];
    assert_eq!(seen.headers["host"], origin.addr.to_string().as_str());
    assert_eq!(origin.hits("/debian/dists/stable/Release"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn the_status_page_counts_requests_by_result() {
    let origin = Origin::start().await;
    origin.route("/s", Reply::ok("s").header("cache-control", "max-age=600"));
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    get(proxy.addr, &origin.url("/s")).await;
    get(proxy.addr, &origin.url("/s")).await;
    let v = status_json(proxy.addr).await;
    assert_eq!(v["counters"]["requests_by_result"]["HIT"], 1);
    assert_eq!(v["counters"]["requests_by_result"]["MISS"], 1);
    assert_eq!(v["counters"]["origin_requests"], 1);
    assert_eq!(v["cache"]["urls"], 1);
    assert!(metrics_text(proxy.addr)
        .await
        .contains("peercache_requests_total{result=\"HIT\"} 1"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_that_loops_back_is_refused() {
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let via = format!("1.1 {}", proxy.app.fetcher.via);
    let r = send(proxy.addr, "GET", "http://127.0.0.1:9/x", &[("via", &via)]).await;
    assert_eq!(r.status, 508);
    proxy.stop().await;
}

#[tokio::test]
async fn an_https_mirror_upstream_is_fetched_over_tls_and_cached() {
    let origin = Origin::start_tls().await;
    origin.route(
        "/simple/pkg/",
        Reply::ok("index").header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let mut c = config(dir.path());
    c.upstream.ca_file = Some(fixtures().join("ca.pem"));
    c.mirrors = vec![mirror("/pypi/", &origin.url("/"))];
    let proxy = start_proxy(c).await;
    let url = format!("http://{}/pypi/simple/pkg/", proxy.addr);
    let r = get(proxy.addr, &url).await;
    assert_eq!(
        (r.status, r.text().as_str(), r.x_cache()),
        (200, "index", "MISS")
    );
    assert_eq!(get(proxy.addr, &url).await.x_cache(), "HIT");
    assert_eq!(origin.hits("/simple/pkg/"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn an_untrusted_https_upstream_is_a_502_tls_error() {
    let origin = Origin::start_tls().await;
    origin.route("/x", Reply::ok("x"));
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await; // no ca_file: the test CA is unknown
    let r = get(proxy.addr, &origin.url("/x")).await;
    assert_eq!(r.status, 502);
    assert_eq!(origin.hits("/x"), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_parent_proxy_carries_http_and_tunnels_https() {
    let http_origin = Origin::start().await;
    http_origin.route(
        "/p",
        Reply::ok("plain").header("cache-control", "max-age=600"),
    );
    let tls_origin = Origin::start_tls().await;
    tls_origin.route(
        "/s",
        Reply::ok("secure").header("cache-control", "max-age=600"),
    );
    // The parent is another peercache that allows CONNECT to the https origin's port.
    let parent_dir = tempdir();
    let mut pc = config(parent_dir.path());
    pc.proxy.connect_ports = vec![tls_origin.addr.port()];
    let parent = start_proxy(pc).await;
    let child_dir = tempdir();
    let mut cc = config(child_dir.path());
    cc.upstream.proxy = Some(peercache::config::ParentProxy {
        host: "127.0.0.1".into(),
        port: parent.addr.port(),
    });
    cc.upstream.ca_file = Some(fixtures().join("ca.pem"));
    let child = start_proxy(cc).await;

    let r = get(child.addr, &http_origin.url("/p")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    let via: Vec<String> = http_origin.seen("/p")[0]
        .headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let via = via.join(", ");
    assert!(
        via.contains(child.app.fetcher.via.as_str())
            && via.contains(parent.app.fetcher.via.as_str()),
        "{via}"
    );

    let r = get(child.addr, &tls_origin.url("/s")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "secure"));
    assert_eq!(
        peercache::metrics::Metrics::get(&parent.app.metrics.tunnels),
        1
    );
    assert_eq!(
        get(child.addr, &tls_origin.url("/s")).await.x_cache(),
        "HIT"
    );
    assert_eq!(tls_origin.hits("/s"), 1);
    child.stop().await;
    parent.stop().await;
}

#[tokio::test]
async fn clients_keep_alive_and_upstream_connections_are_pooled() {
    let origin = Origin::start().await;
    origin.route("/k1", Reply::ok("one"));
    origin.route("/k2", Reply::ok("two"));
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    // Two requests on one client connection.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (path, want) in [("/k1", "one"), ("/k2", "two")] {
        let req = http::Request::get(origin.url(path))
            .header("host", origin.addr.to_string())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, want);
    }
    // Both went over one pooled upstream connection.
    assert_eq!(origin.connections(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_target_with_userinfo_is_refused_and_never_reaches_the_origin() {
    let origin = Origin::start().await;
    origin.route("/u", Reply::ok("u"));
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let target = format!("http://user:secret@{}/u", origin.addr);
    let r = raw(
        proxy.addr,
        format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            origin.addr
        )
        .as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "got {r:?}");
    assert!(r.contains("x-peercache-error: bad-request"), "got {r:?}");
    assert_eq!(
        origin.hits("/u"),
        0,
        "credentials in the URL never leave the proxy"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn client_faults_are_400_not_502() {
    let origin = Origin::start().await;
    origin.route("/p", Reply::ok("p"));
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let o = origin.addr;
    let requests = [
        // Two Host fields (RFC 9112 §3.2).
        format!("GET http://{o}/p HTTP/1.1\r\nHost: {o}\r\nHost: other.example\r\nConnection: close\r\n\r\n"),
        // Authorities that name no reachable port, or no host.
        "GET http://127.0.0.1:0/p HTTP/1.1\r\nHost: 127.0.0.1:0\r\nConnection: close\r\n\r\n".into(),
        "GET http://127.0.0.1:99999/p HTTP/1.1\r\nHost: 127.0.0.1:99999\r\nConnection: close\r\n\r\n".into(),
        "GET http://[::zz]/p HTTP/1.1\r\nHost: [::zz]\r\nConnection: close\r\n\r\n".into(),
        "GET http://:8080/p HTTP/1.1\r\nHost: :8080\r\nConnection: close\r\n\r\n".into(),
        // A chunked request body that is not chunked.
        format!("POST http://{o}/p HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nnot a chunk\r\n\r\n"),
    ];
    for req in &requests {
        let r = raw(proxy.addr, req.as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{req:?} got {r:?}");
    }
    assert_eq!(origin.hits("/p"), 0);
    proxy.stop().await;
}

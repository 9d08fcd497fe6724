//! HTTP caching, second round (issue 11): interim responses, stale when the origin is gone,
//! targeted cache control, `Cache-Status`, conditional requests on a miss, HEAD revalidation.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::support::*;

/// The value of parameter `name` in this proxy's `Cache-Status` member.
fn param(got: &Got, name: &str) -> Option<String> {
    our_cache_status(got)?
        .into_iter()
        .find_map(|p| p.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

/// Our member without its `ttl` (whose exact value depends on the clock).
fn member_without_ttl(got: &Got) -> String {
    let params = our_cache_status(got).expect("a Cache-Status member of ours");
    let kept: Vec<String> = params
        .into_iter()
        .filter(|p| !p.starts_with("ttl="))
        .collect();
    ["peercache".to_owned()]
        .into_iter()
        .chain(kept)
        .collect::<Vec<_>>()
        .join("; ")
}

fn ttl(got: &Got) -> i64 {
    param(got, "ttl").expect("ttl").parse().expect("an integer")
}

async fn proxy() -> (peercache::app::Running, tempfile::TempDir) {
    let dir = tempdir();
    let p = start_proxy(config(dir.path())).await;
    (p, dir)
}

/// Sends `request` on a fresh raw connection to the proxy.
async fn raw_client(proxy: std::net::SocketAddr, request: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

/// RFC 9110 §15.2: a 103 from the origin reaches an HTTP/1.1 client while the origin is still
/// working on the final response; the final response is stored as usual, and the next request
/// is a HIT that carries nothing of the 103.
#[tokio::test]
async fn early_hints_reach_the_client_before_the_final_response_and_are_never_stored() {
    let (open, gate) = watch::channel(false);
    let origin = RawOrigin::start(move |_, _| RawStep::Gated {
        first: b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n".to_vec(),
        gate: gate.clone(),
        rest: raw_response(
            "200 OK",
            &[("cache-control", "max-age=600"), ("etag", "\"p1\"")],
            "the page",
        ),
    })
    .await;
    let (p, _dir) = proxy().await;
    let url = origin.url("/page");
    let mut tcp = raw_client(
        p.addr,
        &format!("GET {url} HTTP/1.1\r\nhost: {}\r\n\r\n", origin.addr),
    )
    .await;
    // The origin has not sent its 200 yet: the 103 came through on its own.
    let hints = String::from_utf8(read_head(&mut tcp).await.expect("a 103")).unwrap();
    assert!(hints.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{hints}");
    assert!(
        hints.contains("link: </app.css>; rel=preload\r\n"),
        "{hints}"
    );
    open.send(true).unwrap();
    let head = String::from_utf8(read_head(&mut tcp).await.expect("the 200")).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("x-cache: MISS\r\n"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("link:"), "{head}");
    let mut body = [0u8; 8];
    tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut body)
        .await
        .unwrap();
    assert_eq!(&body, b"the page");

    let again = get(p.addr, &url).await;
    assert_eq!(again.x_cache(), "HIT");
    assert_eq!(again.text(), "the page");
    assert!(
        again.headers.get("link").is_none(),
        "the 103's fields were not stored"
    );
    assert_eq!(origin.heads("/page").len(), 1);
    let v = status_json(p.addr).await;
    assert_eq!(v["counters"]["interim"]["relayed"], 1);
    assert_eq!(v["counters"]["interim"]["dropped"], 0);
    assert!(metrics_text(p.addr)
        .await
        .contains("peercache_interim_total{outcome=\"relayed\"} 1\n"));
}

/// RFC 9110 §15.2: an HTTP/1.0 client never gets a 1xx.
#[tokio::test]
async fn an_http10_client_gets_no_interim_response() {
    let origin = RawOrigin::start(|_, _| {
        let mut bytes = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n".to_vec();
        bytes.extend(raw_response(
            "200 OK",
            &[("cache-control", "max-age=60")],
            "x",
        ));
        RawStep::Send(bytes)
    })
    .await;
    let (p, _dir) = proxy().await;
    let mut tcp = raw_client(
        p.addr,
        &format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/old")),
    )
    .await;
    let head = String::from_utf8(read_head(&mut tcp).await.expect("a response")).unwrap();
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
}

/// Stale on arrival (Age beyond max-age) with a validator: the next request revalidates.
fn stale_page(cache_control: &str) -> Vec<u8> {
    raw_response(
        "200 OK",
        &[
            ("cache-control", cache_control),
            ("age", "120"),
            ("etag", "\"e1\""),
        ],
        "old body",
    )
}

/// RFC 9111 §4.2.4: the origin closes the connection while a stale entry is revalidated: the
/// stale entry is served, with its Age, unless `must-revalidate` forbids it (then 502).
#[tokio::test]
async fn origin_closing_during_revalidation_gets_the_stale_copy_unless_must_revalidate() {
    let origin = RawOrigin::start(|n, path| match (n, path) {
        (0, "/lenient") => RawStep::Send(stale_page("max-age=60")),
        (0, "/strict") => RawStep::Send(stale_page("max-age=60, must-revalidate")),
        _ => RawStep::Close,
    })
    .await;
    let (p, _dir) = proxy().await;

    let url = origin.url("/lenient");
    assert_eq!(get(p.addr, &url).await.x_cache(), "MISS");
    let stale = get(p.addr, &url).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.text(), "old body");
    assert_eq!(stale.x_cache(), "HIT");
    let age: u64 = stale.header("age").parse().expect("an Age");
    assert!(age >= 120, "Age {age}");
    assert!(ttl(&stale) <= -60, "stale by a minute at least");
    assert_eq!(
        member_without_ttl(&stale),
        "peercache; hit; detail=upstream-protocol"
    );
    let heads = origin.heads("/lenient");
    assert_eq!(heads.len(), 2);
    assert!(heads[1].contains("if-none-match: \"e1\""), "{}", heads[1]);

    let url = origin.url("/strict");
    assert_eq!(get(p.addr, &url).await.x_cache(), "MISS");
    let refused = get(p.addr, &url).await;
    assert_eq!(refused.status, 502);
    assert_eq!(refused.header("x-peercache-error"), "upstream-protocol");
    assert!(
        refused.headers.get("cache-status").is_none(),
        "an error of ours"
    );
    assert_eq!(origin.heads("/strict").len(), 2);
}

/// RFC 9111 §4.2.4: the origin is gone (connections refused) while a stale entry is
/// revalidated: the stale entry is served; a client that asked for a validated answer
/// (`no-cache`) gets the error instead.
#[tokio::test]
async fn origin_gone_gets_the_stale_copy_unless_the_client_asks_for_validation() {
    let origin = RawOrigin::start(|_, _| RawStep::Send(stale_page("max-age=60"))).await;
    let (p, _dir) = proxy().await;
    let url = origin.url("/gone");
    assert_eq!(get(p.addr, &url).await.x_cache(), "MISS");
    origin.stop();
    let addr = origin.addr;
    assert!(
        wait_until(Duration::from_secs(5), || std::net::TcpStream::connect(
            addr
        )
        .is_err())
        .await,
        "the origin's port still accepts"
    );
    let stale = get(p.addr, &url).await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "old body"));
    assert!(stale.header("age").parse::<u64>().expect("an Age") >= 120);
    let detail = param(&stale, "detail").expect("a detail");
    assert!(
        ["connect-failed", "upstream-protocol"].contains(&detail.as_str()),
        "{detail}"
    );
    let strict = send(p.addr, "GET", &url, &[("cache-control", "no-cache")]).await;
    assert_eq!(strict.status, 502);
    assert_eq!(strict.header("x-peercache-error"), "connect-failed");
}

/// RFC 9213: `CDN-Cache-Control` decides for this cache and never reaches the client.
#[tokio::test]
async fn cdn_cache_control_replaces_cache_control_and_is_not_forwarded() {
    let origin = Origin::start().await;
    origin.route(
        "/not-for-us",
        Reply::ok("fresh every time")
            .header("cdn-cache-control", "no-store")
            .header("cache-control", "max-age=3600"),
    );
    origin.route(
        "/only-for-us",
        Reply::ok("cdn copy")
            .header("cdn-cache-control", "max-age=3600")
            .header("cache-control", "no-store"),
    );
    let dir = tempdir();
    let mut c = config(dir.path());
    c.mirrors = vec![mirror("/m/", &origin.url("/"))];
    let p = start_proxy(c).await;

    // Forward-proxy traffic.
    let url = origin.url("/not-for-us");
    for _ in 0..2 {
        let r = get(p.addr, &url).await;
        assert_eq!(r.x_cache(), "MISS");
        assert_eq!(r.header("cache-control"), "max-age=3600");
        assert!(r.headers.get("cdn-cache-control").is_none());
        assert_eq!(
            member_without_ttl(&r),
            "peercache; fwd=uri-miss; detail=no-store-response"
        );
    }
    assert_eq!(origin.hits("/not-for-us"), 2);
    let url = origin.url("/only-for-us");
    assert_eq!(get(p.addr, &url).await.x_cache(), "MISS");
    let hit = get(p.addr, &url).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.text(), "cdn copy");
    assert_eq!(
        hit.header("cache-control"),
        "no-store",
        "other caches still must not store it"
    );
    assert!(hit.headers.get("cdn-cache-control").is_none());
    assert_eq!(origin.hits("/only-for-us"), 1);

    // A mirror route follows the same rule.
    let m = get_path(p.addr, "/m/not-for-us", &[]).await;
    assert_eq!(m.x_cache(), "MISS");
    assert!(m.headers.get("cdn-cache-control").is_none());
    assert_eq!(
        get_path(p.addr, "/m/not-for-us", &[]).await.x_cache(),
        "MISS"
    );
    assert_eq!(origin.hits("/not-for-us"), 4);
    origin.route(
        "/mirrored",
        Reply::ok("mirror copy")
            .header("cdn-cache-control", "max-age=3600")
            .header("cache-control", "private, no-cache"),
    );
    assert_eq!(get_path(p.addr, "/m/mirrored", &[]).await.x_cache(), "MISS");
    let m = get_path(p.addr, "/m/mirrored", &[]).await;
    assert_eq!((m.x_cache(), m.text().as_str()), ("HIT", "mirror copy"));
    assert_eq!(m.header("cache-control"), "private, no-cache");
    assert!(m.headers.get("cdn-cache-control").is_none());
    assert_eq!(origin.hits("/mirrored"), 1);
}

/// RFC 9211: one member of ours per proxied answer, after the origin's own.
#[tokio::test]
async fn cache_status_tells_how_each_answer_was_made() {
    let origin = Origin::start().await;
    origin.route(
        "/stored",
        Reply::ok("s")
            .header("cache-control", "max-age=600")
            .header("cache-status", "OriginCache; hit"),
    );
    origin.route(
        "/private",
        Reply::ok("p").header("cache-control", "private, max-age=600"),
    );
    origin.route_conditional(
        "/stale",
        "\"s1\"",
        Reply::ok("stale body")
            .header("etag", "\"s1\"")
            .header("cache-control", "max-age=60")
            .header("age", "120"),
        Reply::ok("")
            .status(304)
            .header("etag", "\"s1\"")
            .header("cache-control", "max-age=600"),
    );
    origin.route(
        "/lang",
        Reply::ok("l")
            .header("cache-control", "max-age=600")
            .header("vary", "accept-language"),
    );
    let (p, _dir) = proxy().await;

    let miss = get(p.addr, &origin.url("/stored")).await;
    assert_eq!(miss.x_cache(), "MISS");
    assert_eq!(member_without_ttl(&miss), "peercache; fwd=uri-miss; stored");
    assert!((598..=600).contains(&ttl(&miss)), "{}", ttl(&miss));
    let hit = get(p.addr, &origin.url("/stored")).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(member_without_ttl(&hit), "peercache; hit");
    assert!((590..=600).contains(&ttl(&hit)));
    let lines: Vec<&str> = hit
        .headers
        .get_all("cache-status")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(lines[0], "OriginCache; hit", "upstream's member first");
    assert_eq!(lines.len(), 2);

    let private = get(p.addr, &origin.url("/private")).await;
    assert_eq!(private.x_cache(), "MISS");
    assert_eq!(
        member_without_ttl(&private),
        "peercache; fwd=uri-miss; detail=private"
    );

    assert_eq!(get(p.addr, &origin.url("/stale")).await.x_cache(), "MISS");
    let revalidated = get(p.addr, &origin.url("/stale")).await;
    assert_eq!(revalidated.x_cache(), "REVALIDATED");
    assert_eq!(
        member_without_ttl(&revalidated),
        "peercache; fwd=stale; fwd-status=304"
    );
    assert!(ttl(&revalidated) > 500);
    // A fresh copy the client will not take unvalidated: fwd=request.
    let asked = send(
        p.addr,
        "GET",
        &origin.url("/stale"),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(asked.x_cache(), "REVALIDATED");
    assert_eq!(
        member_without_ttl(&asked),
        "peercache; fwd=request; fwd-status=304"
    );

    let lang = |v: &'static str| {
        let url = origin.url("/lang");
        async move { send(p.addr, "GET", &url, &[("accept-language", v)]).await }
    };
    let en = lang("en").await;
    assert_eq!(member_without_ttl(&en), "peercache; fwd=uri-miss; stored");
    let de = lang("de").await;
    assert_eq!(member_without_ttl(&de), "peercache; fwd=vary-miss; stored");
    let en_again = lang("EN;q=1.0").await;
    assert_eq!(
        en_again.x_cache(),
        "HIT",
        "the same language range, normalised"
    );

    let post = send(p.addr, "POST", &origin.url("/stored"), &[]).await;
    assert_eq!(member_without_ttl(&post), "peercache; fwd=method");
}

/// RFC 9111 §4.3.2: with nothing stored, the client's validators go to the origin: its 304
/// answers the client (nothing stored), its 200 is stored as usual.
#[tokio::test]
async fn a_conditional_miss_is_passed_to_the_origin() {
    let origin = Origin::start().await;
    origin.route_conditional(
        "/doc",
        "\"v1\"",
        Reply::ok("version 1")
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=600"),
        Reply::ok("").status(304).header("etag", "\"v1\""),
    );
    let (p, _dir) = proxy().await;
    let url = origin.url("/doc");
    let not_modified = send(p.addr, "GET", &url, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.x_cache(), "MISS");
    let seen = origin.seen("/doc");
    assert_eq!(seen[0].headers["if-none-match"], "\"v1\"");
    // Nothing was stored: the next plain GET goes to the origin and is stored.
    assert_eq!(get(p.addr, &url).await.x_cache(), "MISS");
    assert_eq!(get(p.addr, &url).await.x_cache(), "HIT");
    // A client validator that no longer matches: the origin's 200 is stored, and the stored
    // copy now answers conditionals itself.
    let url2 = origin.url("/doc?2");
    origin.route(
        "/doc?2",
        Reply::ok("v2")
            .header("etag", "\"v2\"")
            .header("cache-control", "max-age=600"),
    );
    let full = send(p.addr, "GET", &url2, &[("if-none-match", "\"old\"")]).await;
    assert_eq!((full.status, full.text().as_str()), (200, "v2"));
    let local = send(p.addr, "GET", &url2, &[("if-none-match", "\"v2\"")]).await;
    assert_eq!((local.status, local.x_cache()), (304, "HIT"));
    assert_eq!(origin.hits("/doc?2"), 1);
}

/// RFC 9111 §4.3.5: a HEAD for a stale entry revalidates it; a 304 freshens the stored head,
/// which the next GET then serves with the stored body.
#[tokio::test]
async fn head_on_a_stale_entry_revalidates_and_freshens_the_stored_head() {
    let origin = Origin::start().await;
    origin.route_conditional(
        "/file",
        "\"f1\"",
        Reply::ok("file body")
            .header("etag", "\"f1\"")
            .header("cache-control", "max-age=60")
            .header("age", "120")
            .header("x-version", "first"),
        Reply::ok("")
            .status(304)
            .header("etag", "\"f1\"")
            .header("cache-control", "max-age=600")
            .header("x-version", "checked"),
    );
    let (p, _dir) = proxy().await;
    let url = origin.url("/file");
    assert_eq!(get(p.addr, &url).await.x_cache(), "MISS");
    let head = send(p.addr, "HEAD", &url, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.x_cache(), "REVALIDATED");
    assert_eq!(head.header("x-version"), "checked");
    assert_eq!(head.header("content-length"), "9");
    assert!(head.body.as_ref().unwrap().is_empty());
    let seen = origin.seen("/file");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["if-none-match"], "\"f1\"");
    let hit = get(p.addr, &url).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.text(), "file body");
    assert_eq!(hit.header("x-version"), "checked");
    assert_eq!(origin.hits("/file"), 2);
}

/// …and when the origin's answer is a new representation, it replaces the stored one (it was
/// a GET) while the HEAD client gets its head alone.
#[tokio::test]
async fn head_on_a_stale_changed_entry_stores_the_new_representation() {
    let origin = Origin::start().await;
    origin.route_fn("/file", |req| {
        if req.headers.get("if-none-match").is_some() {
            Reply::ok("new body!")
                .header("etag", "\"f2\"")
                .header("cache-control", "max-age=600")
        } else {
            Reply::ok("old")
                .header("etag", "\"f1\"")
                .header("cache-control", "max-age=60")
                .header("age", "120")
        }
    });
    let (p, _dir) = proxy().await;
    let url = origin.url("/file");
    assert_eq!(get(p.addr, &url).await.x_cache(), "MISS");
    let head = send(p.addr, "HEAD", &url, &[]).await;
    assert_eq!((head.status, head.header("etag")), (200, "\"f2\""));
    assert!(head.body.as_ref().unwrap().is_empty());
    // The new body is stored once its fill ends (the HEAD client did not wait for it).
    let s = wait_for_status(p.addr, Duration::from_secs(5), |s| s["inflight"] == 0).await;
    assert_eq!(s["inflight"], 0, "the fill ended");
    let hit = get(p.addr, &url).await;
    assert_eq!((hit.x_cache(), hit.text().as_str()), ("HIT", "new body!"));
    assert_eq!(origin.hits("/file"), 2);
}

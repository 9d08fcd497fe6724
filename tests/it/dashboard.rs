//! What an operator sees: the live dashboard in a real browser, the status document's fills and
//! errors, the PAC file and the icon.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::support::*;

/// Where `PEERCACHE_UPDATE_SCREENSHOTS=1 cargo test --test it the_dashboard` writes the
/// README's screenshots.
const SCREENSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/screenshots");

/// The text of the element with this id in a dumped DOM (`id="x" …>text<`).
fn element_text<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(&rest[start..start + end])
}

#[tokio::test]
async fn the_dashboard_shows_the_counts_members_fills_and_errors_in_a_browser() {
    let Some(chromium) = chromium() else {
        println!("SKIPPED: no chromium on the PATH (.ci/run installs Debian's `chromium`)");
        return;
    };
    let origin = Origin::start().await;
    let (nodes, _key) = cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Steps of 50 ms instead of 5 s, so that a moment of traffic draws the chart.
    a.proxy
        .app
        .metrics
        .set_history_step(Duration::from_millis(50));
    let steps = |s: &serde_json::Value| {
        s["history"]["bytes"]["cache"]
            .as_array()
            .map_or(0, Vec::len)
    };
    for round in 0..6usize {
        let path = format!("/index-{round}");
        let body = pattern(8192 * (1 + round % 3), round as u8);
        origin.route(
            &path,
            Reply::ok(body).header("cache-control", "max-age=600"),
        );
        for _ in 0..=round % 4 {
            get(a.addr(), &origin.url(&path)).await;
        }
        let before = steps(&status_json(a.addr()).await);
        let s = wait_for_status(a.addr(), Duration::from_secs(5), |s| steps(s) > before).await;
        assert!(steps(&s) > before, "the history moves on");
    }
    let before = status_json(a.addr()).await["counters"]["requests_by_result"].clone();
    let count = |r: &str, more: u64| (before[r].as_u64().unwrap() + more).to_string();

    origin.route(
        "/pkg.deb",
        Reply::ok(pattern(64 * 1024, 1)).header("cache-control", "max-age=600"),
    );
    for (node, want) in [(a, "MISS"), (a, "HIT"), (b, "PEER")] {
        assert_eq!(
            get(node.addr(), &origin.url("/pkg.deb")).await.x_cache(),
            want
        );
    }
    assert_eq!(origin.hits("/pkg.deb"), 1);
    let refused = get(a.addr(), &format!("http://127.0.0.1:{}/gone", free_port())).await;
    assert_eq!(refused.status, 502);
    // A download in progress: its head and the first 300 000 of 1 000 000 bytes.
    let (gate, gate_rx) = watch::channel(false);
    let big_iso = Reply::gated(pattern(300_000, 2), pattern(700_000, 3), gate_rx);
    origin.route("/big.iso", big_iso);
    let big = send_head(a.addr(), "GET", &origin.url("/big.iso"), &[]).await;
    assert_eq!(big.status(), 200);
    let s = wait_for_status(a.addr(), Duration::from_secs(5), |s| {
        s["fills"][0]["written"] == 300_000
    })
    .await;
    assert_eq!(
        s["fills"][0]["written"], 300_000,
        "the fill's progress reaches the status"
    );

    let url = format!("http://{}/_peercache/", a.addr());
    let member = b.peers().id.to_string();
    let hits = count("HIT", 1);
    let row = format!(
        "<td>{}</td><td>default</td><td class=\"alive\">alive</td>",
        &member[..8]
    );
    let mut dom = String::new();
    // The page polls the status once loaded, and a loaded machine may show the member as
    // suspect for a moment: give it a few tries.
    for _ in 0..5 {
        dom = headless(&chromium, &url, &["--dump-dom".into()], 4000).await;
        if element_text(&dom, "n-HIT") == Some(hits.as_str()) && dom.contains(&row) {
            break;
        }
    }
    assert_eq!(element_text(&dom, "n-HIT"), Some(hits.as_str()), "{dom}");
    // The download in progress is a MISS too.
    assert_eq!(
        element_text(&dom, "n-MISS"),
        Some(count("MISS", 2).as_str())
    );
    assert!(
        element_text(&dom, "live").is_some_and(|t| t.starts_with("live")),
        "{dom}"
    );
    assert!(dom.contains(&row), "member row: {dom}");
    assert!(
        dom.contains("293.0 KiB of 976.6 KiB"),
        "the fill's progress: {dom}"
    );
    assert!(dom.contains("502 connect-failed"), "{dom}");
    assert_eq!(
        dom.matches("<polyline").count(),
        3,
        "one line per source: {dom}"
    );

    // The README's screenshots, at desktop and phone width: only when asked for (two more
    // browser runs the suite does not need).
    if std::env::var_os("PEERCACHE_UPDATE_SCREENSHOTS").is_some() {
        std::fs::create_dir_all(SCREENSHOTS).unwrap();
        for (name, size) in [
            ("dashboard.png", "1280,800"),
            ("dashboard-phone.png", "390,844"),
        ] {
            let path = format!("{SCREENSHOTS}/{name}");
            let args = [
                format!("--window-size={size}"),
                format!("--screenshot={path}"),
            ];
            headless(&chromium, &url, &args, 4000).await;
            let png = std::fs::read(&path).unwrap();
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
        }
    }
    gate.send(true).unwrap();
    drop(big);
}

#[tokio::test]
async fn the_status_document_lists_fills_in_progress_and_the_last_errors() {
    let origin = Origin::start().await;
    let (gate, gate_rx) = watch::channel(false);
    let slow = Reply::gated(
        Bytes::from_static(b"abcd"),
        Bytes::from_static(b"efghij"),
        gate_rx,
    );
    origin.route("/slow", slow);
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let head = send_head(proxy.addr, "GET", &origin.url("/slow"), &[]).await;
    let addr = proxy.addr;
    let s = wait_for_status(addr, Duration::from_secs(5), |s| {
        s["fills"][0]["written"] == 4
    })
    .await;
    let fill = &s["fills"][0];
    assert_eq!(fill["written"], 4, "{fill}");
    assert_eq!(fill["expected"], 10);
    assert_eq!(fill["key"].as_str(), Some(origin.url("/slow").as_str()));
    gate.send(true).unwrap();
    use http_body_util::BodyExt;
    assert_eq!(
        &head.into_body().collect().await.unwrap().to_bytes()[..],
        b"abcdefghij"
    );
    let s = status_json(addr).await;
    assert_eq!(s["fills"], serde_json::json!([]), "the fill is over");

    let port = free_port();
    let gone = format!("http://127.0.0.1:{port}/missing");
    assert_eq!(get(addr, &gone).await.status, 502);
    let s = status_json(addr).await;
    let e = &s["recent_errors"][0];
    assert_eq!(e["status"], 502);
    assert_eq!(e["kind"], "connect-failed");
    assert_eq!(e["method"], "GET");
    assert_eq!(e["url"].as_str(), Some(gone.as_str()));
    assert_eq!(e["client"], "127.0.0.1");
    assert!(e["detail"].as_str().unwrap().contains("refused"), "{e}");
    assert_eq!(s["counters"]["errors"], 1);
    assert_eq!(s["summary"]["hit_ratio"], 0.0, "one MISS");
    proxy.stop().await;
}

#[tokio::test]
async fn the_icon_is_answered_and_is_no_error() {
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let r = send(proxy.addr, "GET", "/favicon.ico", &[("host", "127.0.0.1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "image/svg+xml");
    assert!(r.text().starts_with("<svg"));
    let page = get(proxy.addr, &format!("http://{}/_peercache/", proxy.addr)).await;
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(page.text().contains("href=\"/favicon.ico\""));
    // Self-contained: no script, style, font or image from elsewhere.
    let html = page.text();
    let outside = html
        .replace("\"http://www.w3.org/2000/svg\"", "")
        .contains("//");
    assert!(
        !outside && !html.contains(" src="),
        "an external resource in the page"
    );
    let s = status_json(proxy.addr).await;
    assert_eq!(s["counters"]["errors"], 0);
    assert_eq!(s["recent_errors"], serde_json::json!([]));
    proxy.stop().await;
}

/// Evaluates `FindProxyForURL` for each URL with node, with the PAC helpers a browser provides
/// (name lookups answered from a fixed table).
fn evaluate_pac(node: &std::path::Path, pac: &str, urls: &[&str]) -> Vec<String> {
    let script = format!(
        r#"
function shExpMatch(s, p) {{
  return new RegExp("^" + p.replace(/[.+^${{}}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$").test(s);
}}
function dnsDomainIs(h, d) {{ return h.length >= d.length && h.substring(h.length - d.length) == d; }}
function dnsResolve(h) {{ return {{ "files.corp.example": "10.1.2.3", "public.example": "93.184.216.34" }}[h] || null; }}
function isInNet(ip, net, mask) {{
  const n = (s) => s.split(".").reduce((a, b) => a * 256 + Number(b), 0);
  return ((n(ip) & n(mask)) >>> 0) === ((n(net) & n(mask)) >>> 0);
}}
{pac}
const urls = {urls};
for (const u of urls) console.log(FindProxyForURL(u, new URL(u).hostname.replace(/^\[|\]$/g, "")));
"#,
        urls = serde_json::to_string(urls).unwrap()
    );
    let out = Command::new(node).arg("-e").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_pac_file_sends_http_through_the_address_the_client_used() {
    let dir = tempdir();
    let mut c = config(dir.path());
    c.proxy.pac_direct = peercache::config::Config::parse(
        "[proxy]\npac_direct = [\"*.local\", \"intranet.example.org\", \"10.0.0.0/8\"]",
        "test.toml",
    )
    .unwrap()
    .proxy
    .pac_direct;
    let proxy = start_proxy(c).await;
    let port = proxy.addr.port();
    let pac = send(
        proxy.addr,
        "GET",
        "/proxy.pac",
        &[("host", "proxy.example.lan")],
    )
    .await;
    assert_eq!(pac.status, 200);
    assert_eq!(
        pac.header("content-type"),
        "application/x-ns-proxy-autoconfig"
    );
    let text = pac.text();
    let line = format!("var proxy = \"PROXY proxy.example.lan:{port}; DIRECT\";");
    assert!(text.contains(&line), "{text}");
    for host in [
        "dnsDomainIs(host, \".local\")",
        "host == \"intranet.example.org\"",
        "isInNet(ip, \"10.0.0.0\", \"255.0.0.0\")",
    ] {
        assert!(text.contains(host), "{host} in {text}");
    }
    let wpad = send(
        proxy.addr,
        "GET",
        "/wpad.dat",
        &[("host", &format!("10.0.0.11:{port}"))],
    )
    .await;
    assert_eq!(
        wpad.header("content-type"),
        "application/x-ns-proxy-autoconfig"
    );
    assert!(wpad
        .text()
        .contains(&format!("\"PROXY 10.0.0.11:{port}; DIRECT\"")));

    let Some(node) = on_path("node") else {
        println!("SKIPPED evaluating the PAC file: no `node` on the PATH (its text was checked)");
        return;
    };
    let via = format!("PROXY proxy.example.lan:{port}; DIRECT");
    let cases = [
        (
            "http://deb.debian.org/debian/dists/stable/Release",
            via.as_str(),
        ),
        ("http://public.example/x", via.as_str()),
        ("https://deb.debian.org/", "DIRECT"),
        ("http://localhost:8080/", "DIRECT"),
        ("http://127.0.0.1:3128/_peercache/", "DIRECT"),
        ("http://proxy.example.lan:3128/_peercache/", "DIRECT"),
        ("http://[::1]/", "DIRECT"),
        ("http://printer.local/", "DIRECT"),
        ("http://intranet.example.org/wiki", "DIRECT"),
        ("http://10.9.8.7/", "DIRECT"),
        ("http://files.corp.example/", "DIRECT"),
        ("ftp://ftp.example/", "DIRECT"),
    ];
    let urls: Vec<&str> = cases.iter().map(|(u, _)| *u).collect();
    let got = evaluate_pac(&node, &text, &urls);
    let want: Vec<String> = cases.iter().map(|(_, w)| (*w).to_owned()).collect();
    assert_eq!(got, want, "{urls:#?}");
    proxy.stop().await;
}

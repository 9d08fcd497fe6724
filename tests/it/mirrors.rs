//! Mirrors that keep their links: index pages served through mirror routes (pip's HTML and JSON
//! simple API, npm metadata, cargo's config.json) lead the client back through the proxy for
//! every file they name, while the store keeps the origin's bytes.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::support::*;

const WHEEL: &str = "/packages/ab/cd/demo-1.0-py3-none-any.whl";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The `href="…"` links of an HTML page.
fn hrefs(page: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// The origin-form path of `link`, which must lead to `proxy`; the fragment is dropped.
fn on_proxy(link: &str, proxy: SocketAddr) -> String {
    let rest = link
        .strip_prefix(&format!("http://{proxy}"))
        .unwrap_or_else(|| panic!("{link} does not lead to the proxy at {proxy}"));
    rest.split('#').next().unwrap().to_owned()
}

/// A PyPI-like pair of origins (the index, and the files host its pages link to) behind one proxy
/// with a mirror for each.
struct Pypi {
    index: Origin,
    files: Origin,
    proxy: peercache::app::Running,
    _dir: tempfile::TempDir,
}

async fn pypi() -> Pypi {
    let index = Origin::start().await;
    let files = Origin::start().await;
    files.route(
        WHEEL,
        Reply::ok("wheel bytes")
            .header("cache-control", "max-age=600")
            .header("content-type", "application/octet-stream"),
    );
    let dir = tempdir();
    let mut c = config(dir.path());
    c.mirrors = vec![
        mirror("/pypi/", &index.url("/")),
        mirror("/pypi-files/", &files.url("/")),
    ];
    let proxy = start_proxy(c).await;
    Pypi {
        index,
        files,
        proxy,
        _dir: dir,
    }
}

/// pip's simple page for `demo` (PEP 503), linking to the files host and to a host no mirror
/// covers; gzip'd when the request accepts it, like PyPI's CDN.
fn simple_page(index: &Origin, files: &Origin) {
    let page = format!(
        "<!DOCTYPE html><html><body>\n\
         <a href=\"{}#sha256=00ff\" data-requires-python=\"&gt;=3.8\">demo-1.0-py3-none-any.whl</a><br/>\n\
         <a href=\"https://elsewhere.example/demo-0.9.tar.gz\">demo-0.9.tar.gz</a>\n\
         </body></html>\n",
        files.url(WHEEL)
    );
    index.route_fn("/simple/demo/", move |req| {
        let accepts_gzip = req
            .headers
            .get("accept-encoding")
            .is_some_and(|v| v.to_str().unwrap_or("").contains("gzip"));
        let reply = if accepts_gzip {
            Reply::ok(gzip(page.as_bytes())).header("content-encoding", "gzip")
        } else {
            Reply::ok(page.clone())
        };
        reply
            .header("content-type", "text/html; charset=utf-8")
            .header("cache-control", "max-age=600")
            .header("etag", "\"p1\"")
            .header("vary", "Accept-Encoding")
    });
}

/// Follows a link found in a page: through the proxy, stored, and the files origin asked once.
async fn follow_twice(proxy: SocketAddr, link: &str, body: &str, files: &Origin, path: &str) {
    let first = get_path(proxy, &on_proxy(link, proxy), &[]).await;
    assert_eq!((first.status, first.text().as_str()), (200, body));
    assert_eq!(first.x_cache(), "MISS");
    let second = get_path(proxy, &on_proxy(link, proxy), &[]).await;
    assert_eq!((second.text().as_str(), second.x_cache()), (body, "HIT"));
    assert_eq!(files.hits(path), 1, "{path} crossed the WAN once");
}

#[tokio::test]
async fn a_pip_html_index_leads_pip_to_the_files_through_the_proxy() {
    let p = pypi().await;
    simple_page(&p.index, &p.files);
    let proxy = p.proxy.addr;
    let ae = [("accept-encoding", "gzip, deflate, br")];
    let page = get_path(proxy, "/pypi/simple/demo/", &ae).await;
    assert_eq!((page.status, page.x_cache()), (200, "MISS"));
    // Decoded and sent in identity, with the rewritten length.
    assert_eq!(page.header("content-encoding"), "");
    let text = page.text();
    assert_eq!(page.header("content-length"), text.len().to_string());
    let links = hrefs(&text);
    assert_eq!(
        links,
        vec![
            format!("http://{proxy}/pypi-files{WHEEL}#sha256=00ff"),
            "https://elsewhere.example/demo-0.9.tar.gz".to_owned(),
        ]
    );
    assert!(text.contains("data-requires-python=\"&gt;=3.8\""));
    // Upstream was asked only for codings the rewriter reads.
    let asked = &p.index.seen("/simple/demo/")[0];
    assert_eq!(asked.headers["accept-encoding"], "gzip, deflate");

    follow_twice(proxy, &links[0], "wheel bytes", &p.files, WHEEL).await;

    // The page itself is a hit the second time, rewritten the same way.
    let again = get_path(proxy, "/pypi/simple/demo/", &ae).await;
    assert_eq!((again.x_cache(), again.text()), ("HIT", text));
    assert_eq!(p.index.hits("/simple/demo/"), 1);
    let v = status_json(proxy).await;
    assert_eq!(v["counters"]["links"]["rewritten"], 2);
    p.proxy.stop().await;
}

#[tokio::test]
async fn the_store_keeps_the_origin_bytes_and_the_rewritten_page_has_its_own_validators() {
    let p = pypi().await;
    simple_page(&p.index, &p.files);
    let proxy = p.proxy.addr;
    let page = get_path(proxy, "/pypi/simple/demo/", &[]).await;
    let text = page.text();
    let etag = page.header("etag").to_owned();
    assert!(
        etag.starts_with("\"p1-rw") && etag.ends_with('"'),
        "derived ETag: {etag}"
    );
    assert_eq!(page.header("accept-ranges"), "none");

    // The same URL asked as a plain forward-proxy request: the stored entry, as the origin sent it.
    let stored = get(proxy, &p.index.url("/simple/demo/")).await;
    assert_eq!(stored.x_cache(), "HIT");
    assert_eq!(stored.header("etag"), "\"p1\"");
    assert!(stored.text().contains(&p.files.url(WHEEL)));
    assert!(!stored.text().contains("/pypi-files/"));
    assert_eq!(p.index.hits("/simple/demo/"), 1);

    // The derived tag validates the rewritten page; the origin's does not.
    let fresh = get_path(proxy, "/pypi/simple/demo/", &[("if-none-match", &etag)]).await;
    assert_eq!((fresh.status, fresh.x_cache()), (304, "HIT"));
    assert_eq!(fresh.header("etag"), etag);
    let other = get_path(proxy, "/pypi/simple/demo/", &[("if-none-match", "\"p1\"")]).await;
    assert_eq!((other.status, other.text()), (200, text.clone()));

    // Ranges are ignored on a rewritten page: the whole of it, 200.
    let ranged = get_path(proxy, "/pypi/simple/demo/", &[("range", "bytes=0-9")]).await;
    assert_eq!((ranged.status, ranged.text()), (200, text.clone()));

    // HEAD: the derived validator, and no length (known only once the body is rewritten).
    let head = send(
        proxy,
        "HEAD",
        "/pypi/simple/demo/",
        &[("host", &proxy.to_string())],
    )
    .await;
    assert_eq!((head.status, head.header("etag")), (200, etag.as_str()));
    assert_eq!(head.header("content-length"), "");
    assert_eq!(p.index.hits("/simple/demo/"), 1);
    p.proxy.stop().await;
}

#[tokio::test]
async fn a_pep_691_json_index_leads_to_the_files_through_the_proxy() {
    let p = pypi().await;
    let doc = serde_json::json!({
        "meta": {"api-version": "1.1"},
        "name": "demo",
        "files": [{
            "filename": "demo-1.0-py3-none-any.whl",
            "url": p.files.url(WHEEL),
            "hashes": {"sha256": "00ff"},
        }],
    });
    p.index.route(
        "/simple/demo/",
        Reply::ok(doc.to_string())
            .header("content-type", "application/vnd.pypi.simple.v1+json")
            .header("cache-control", "max-age=600"),
    );
    let proxy = p.proxy.addr;
    let accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.01";
    let got = get_path(proxy, "/pypi/simple/demo/", &[("accept", accept)]).await;
    assert_eq!(got.status, 200);
    let v: serde_json::Value = serde_json::from_str(&got.text()).expect("still JSON");
    let url = v["files"][0]["url"].as_str().unwrap();
    assert_eq!(url, format!("http://{proxy}/pypi-files{WHEEL}"));
    assert_eq!(v["files"][0]["hashes"]["sha256"], "00ff");
    follow_twice(proxy, url, "wheel bytes", &p.files, WHEEL).await;
    p.proxy.stop().await;
}

/// An npm registry: metadata whose tarball URLs point at the registry itself.
async fn npm_registry() -> (Origin, peercache::app::Running, tempfile::TempDir) {
    let registry = Origin::start().await;
    for (name, tarball) in [
        ("left-pad", "/left-pad/-/left-pad-1.3.0.tgz"),
        ("@scope/pkg", "/@scope/pkg/-/pkg-1.0.0.tgz"),
    ] {
        // JSON-escaped slashes, as some registries write them.
        let url = registry.url(tarball).replace('/', "\\/");
        let doc = format!(
            "{{\"name\":\"{name}\",\"versions\":{{\"1.0.0\":{{\"dist\":{{\"tarball\":\"{url}\",\"integrity\":\"sha512-x\"}}}}}}}}"
        );
        registry.route(
            &format!("/{name}"),
            Reply::ok(doc)
                .header("content-type", "application/vnd.npm.install-v1+json")
                .header("cache-control", "max-age=300"),
        );
        registry.route(
            tarball,
            Reply::ok(format!("tarball of {name}"))
                .header("content-type", "application/octet-stream")
                .header("cache-control", "max-age=600"),
        );
    }
    let dir = tempdir();
    let mut c = config(dir.path());
    let mut npm = mirror("/npm/", &registry.url("/"));
    npm.npm_tarballs = true;
    c.mirrors = vec![npm];
    (registry, start_proxy(c).await, dir)
}

#[tokio::test]
async fn npm_metadata_leads_to_the_tarball_through_the_proxy_with_or_without_the_prefix() {
    let (registry, proxy, _dir) = npm_registry().await;
    let addr = proxy.addr;
    let accept = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
    let meta = get_path(addr, "/npm/left-pad", &[("accept", accept)]).await;
    let v: serde_json::Value = serde_json::from_str(&meta.text()).expect("still JSON");
    let tarball = v["versions"]["1.0.0"]["dist"]["tarball"].as_str().unwrap();
    assert_eq!(
        tarball,
        format!("http://{addr}/npm/left-pad/-/left-pad-1.3.0.tgz")
    );
    let path = "/left-pad/-/left-pad-1.3.0.tgz";
    follow_twice(addr, tarball, "tarball of left-pad", &registry, path).await;

    // npm's replace-registry-host (a lockfile entry on the registry's host): the prefix is gone,
    // and the same stored tarball answers.
    let bare = get_path(addr, path, &[]).await;
    assert_eq!(
        (bare.status, bare.text().as_str(), bare.x_cache()),
        (200, "tarball of left-pad", "HIT")
    );
    assert_eq!(registry.hits(path), 1);

    // A scoped package asked first without the prefix.
    let scoped = get_path(addr, "/@scope/pkg/-/pkg-1.0.0.tgz", &[]).await;
    assert_eq!(
        (scoped.status, scoped.text().as_str(), scoped.x_cache()),
        (200, "tarball of @scope/pkg", "MISS")
    );
    // Any other path without a prefix is still refused.
    assert_eq!(get_path(addr, "/left-pad", &[]).await.status, 400);
    proxy.stop().await;
}

#[tokio::test]
async fn cargo_config_json_sends_crate_downloads_through_the_proxy() {
    let index = Origin::start().await;
    let dl = Origin::start().await;
    // crates.io's shape: `dl` has no trailing slash; `api` is on a host no mirror covers.
    let config_json = format!(
        "{{\n  \"dl\": \"{}\",\n  \"api\": \"https://crates.example\"\n}}\n",
        dl.url("/crates")
    );
    index.route(
        "/config.json",
        Reply::ok(config_json)
            .header("content-type", "application/json")
            .header("cache-control", "max-age=300"),
    );
    let krate = "/crates/demo/1.0.0/download";
    dl.route(
        krate,
        Reply::ok("crate bytes").header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let mut c = config(dir.path());
    c.mirrors = vec![
        mirror("/crates-index/", &index.url("/")),
        mirror("/crates-dl/", &dl.url("/crates/")),
    ];
    let proxy = start_proxy(c).await;
    let addr = proxy.addr;
    let got = get_path(addr, "/crates-index/config.json", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&got.text()).unwrap();
    assert_eq!(v["dl"], format!("http://{addr}/crates-dl"));
    assert_eq!(v["api"], "https://crates.example");
    // cargo appends /{crate}/{version}/download to a `dl` without markers.
    let link = format!("{}/demo/1.0.0/download", v["dl"].as_str().unwrap());
    follow_twice(addr, &link, "crate bytes", &dl, krate).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_collapsed_reader_of_a_page_still_downloading_gets_it_rewritten_too() {
    let p = pypi().await;
    let (open, gate) = watch::channel(false);
    let page = format!("<a href=\"{}\">w</a>", p.files.url(WHEEL));
    let (first, rest) = page.split_at(10);
    let payload = Payload::Gated {
        first: first.to_owned().into(),
        rest: Some(rest.to_owned().into()),
        gate,
    };
    let reply = Reply {
        payload,
        ..Reply::ok("")
    };
    p.index.route(
        "/simple/demo/",
        reply
            .header("content-type", "text/html")
            .header("cache-control", "max-age=600"),
    );
    let proxy = p.proxy.addr;
    let key = p.index.url("/simple/demo/");
    let app = p.proxy.app.clone();
    let watchers = move || app.inflight.get(&key).map_or(0, |f| f.watchers());
    let a = tokio::spawn(async move { get_path(proxy, "/pypi/simple/demo/", &[]).await });
    assert!(wait_until(Duration::from_secs(5), || watchers() == 1).await);
    let b = tokio::spawn(async move { get_path(proxy, "/pypi/simple/demo/", &[]).await });
    assert!(
        wait_until(Duration::from_secs(5), || watchers() == 2).await,
        "the second reader joined the fill"
    );
    open.send(true).unwrap();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let want = format!("<a href=\"http://{proxy}/pypi-files{WHEEL}\">w</a>");
    assert_eq!((a.x_cache(), a.text()), ("MISS", want.clone()));
    assert_eq!((b.x_cache(), b.text()), ("COLLAPSED", want));
    assert_eq!(p.index.hits("/simple/demo/"), 1);
    p.proxy.stop().await;
}

#[tokio::test]
async fn a_page_in_a_coding_the_rewriter_cannot_read_goes_out_as_sent_and_is_counted() {
    let p = pypi().await;
    p.index.route(
        "/simple/demo/",
        Reply::ok("opaque brotli bytes")
            .header("content-type", "text/html")
            .header("content-encoding", "br")
            .header("cache-control", "max-age=600")
            .header("etag", "\"b1\""),
    );
    let got = get_path(p.proxy.addr, "/pypi/simple/demo/", &[]).await;
    assert_eq!(got.text(), "opaque brotli bytes");
    assert_eq!(got.header("content-encoding"), "br");
    assert_eq!(got.header("etag"), "\"b1\"");
    let v = status_json(p.proxy.addr).await;
    assert_eq!(v["counters"]["links"]["skipped_coding"], 1);
    assert_eq!(v["counters"]["links"]["rewritten"], 0);
    assert!(metrics_text(p.proxy.addr)
        .await
        .contains("peercache_links_skipped_total{reason=\"coding\"} 1"));
    p.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_copy_of_a_page_is_the_origin_bytes_rewritten_for_each_node() {
    let index = Origin::start().await;
    let files = Origin::start().await;
    simple_page(&index, &files);
    let (up_index, up_files) = (index.url("/"), files.url("/"));
    let (nodes, _key) = cluster_with(2, |c| {
        c.mirrors = vec![
            mirror("/pypi/", &up_index),
            mirror("/pypi-files/", &up_files),
        ]
    })
    .await;
    let (a, b) = (nodes[0].addr(), nodes[1].addr());
    let from_a = get_path(a, "/pypi/simple/demo/", &[]).await;
    assert_eq!(from_a.x_cache(), "MISS");
    let key =
        peercache::cache::key::CacheKey::from_uri(&index.url("/simple/demo/").parse().unwrap())
            .unwrap()
            .hash();
    let peers = nodes[1].peers().clone();
    assert!(
        wait_until(Duration::from_secs(5), || !peers
            .sources(&key, None)
            .is_empty())
        .await,
        "B learns that A holds the page"
    );
    let from_b = get_path(b, "/pypi/simple/demo/", &[]).await;
    assert_eq!(from_b.x_cache(), "PEER");
    assert_eq!(index.hits("/simple/demo/"), 1);
    // Each node points the client at itself, and the validators say the pages differ.
    assert_eq!(
        hrefs(&from_b.text())[0],
        format!("http://{b}/pypi-files{WHEEL}#sha256=00ff")
    );
    assert_ne!(from_a.header("etag"), from_b.header("etag"));
    // What B stored from A is the origin's page, byte for byte.
    let stored = get(b, &index.url("/simple/demo/")).await;
    assert_eq!(stored.x_cache(), "HIT");
    let resp = send_head(a, "GET", &index.url("/simple/demo/"), &[]).await;
    let original = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(stored.body.unwrap(), original);
}

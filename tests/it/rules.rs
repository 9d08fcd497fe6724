//! Freshness rules: what an origin leaves unsaid is filled in by `[[rule]]` entries and the
//! built-in presets, the same way on every node; what it does say still wins.

use std::time::Duration;

use peercache::config::{Config, Pattern, Rule};

use crate::support::*;

/// A Debian pool path: the `debian` preset names it immutable.
const POOL_DEB: &str = "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";

/// A user `[[rule]]`.
fn rule(pattern: &str, fresh: Option<Duration>, immutable: bool) -> Rule {
    Rule {
        pattern: Pattern::new(pattern).unwrap(),
        fresh,
        immutable,
        key_fields: vec![],
    }
}

/// A proxy with `rules` before the default presets.
async fn proxy_with(dir: &std::path::Path, rules: Vec<Rule>) -> peercache::app::Running {
    let mut c: Config = config(dir);
    c.rules.user = rules;
    start_proxy(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_immutable_object_from_a_silent_origin_is_a_hit_here_and_a_peer_copy_there() {
    let origin = Origin::start().await;
    let body = pattern(200_000, 3);
    // No Cache-Control, no ETag, no Last-Modified: the origin says nothing.
    origin.route(POOL_DEB, Reply::ok(body.clone()));
    let (nodes, _key) = cluster(2).await;
    let url = origin.url(POOL_DEB);

    let first = get(nodes[0].addr(), &url).await;
    assert_eq!(first.x_cache(), "MISS");
    assert!(first.body.unwrap() == body);
    let again = get(nodes[0].addr(), &url).await;
    assert_eq!(
        again.x_cache(),
        "HIT",
        "the debian preset makes the pool file fresh"
    );
    assert!(again.body.unwrap() == body);

    wait_holders(&nodes[1], &url, 1).await;
    let there = get(nodes[1].addr(), &url).await;
    assert_eq!(
        there.x_cache(),
        "PEER",
        "the peer's copy has no validators, yet the rule makes it usable"
    );
    assert!(there.body.unwrap() == body, "the peer copy is byte-exact");
    assert_eq!(get(nodes[1].addr(), &url).await.x_cache(), "HIT");
    assert_eq!(
        origin.hits(POOL_DEB),
        1,
        "the origin is asked once for the group"
    );
}

#[tokio::test]
async fn a_user_rule_lifetime_makes_a_silent_origin_cacheable_within_that_lifetime() {
    let origin = Origin::start().await;
    origin.route("/reports/daily.csv", Reply::ok("a,b\n1,2\n"));
    // Already an hour old when it arrives (Age is not a lifetime: the rule still applies).
    origin.route("/reports/old.csv", Reply::ok("x,y\n").header("age", "3600"));
    let dir = tempdir();
    let hour = Some(Duration::from_secs(3600));
    let proxy = proxy_with(
        dir.path(),
        vec![rule(r"/reports/[^/?]+\.csv$", hour, false)],
    )
    .await;

    let url = origin.url("/reports/daily.csv");
    assert_eq!(get(proxy.addr, &url).await.x_cache(), "MISS");
    let hit = get(proxy.addr, &url).await;
    assert_eq!((hit.x_cache(), hit.text().as_str()), ("HIT", "a,b\n1,2\n"));
    assert_eq!(origin.hits("/reports/daily.csv"), 1);

    // Past the rule's lifetime, with no validator to revalidate with: fetched again.
    let old = origin.url("/reports/old.csv");
    assert_eq!(get(proxy.addr, &old).await.x_cache(), "MISS");
    assert_eq!(get(proxy.addr, &old).await.x_cache(), "MISS");
    assert_eq!(origin.hits("/reports/old.csv"), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn without_a_rule_a_silent_response_is_not_stored() {
    let origin = Origin::start().await;
    origin.route("/files/report.bin", Reply::ok("no word from the origin"));
    origin.route(POOL_DEB, Reply::ok("a package"));
    let dir = tempdir();
    let mut c = config(dir.path());
    c.rules.presets.clear();
    let proxy = start_proxy(c).await;

    for path in ["/files/report.bin", POOL_DEB] {
        let url = origin.url(path);
        for _ in 0..2 {
            let got = get(proxy.addr, &url).await;
            assert_eq!((got.status, got.x_cache()), (200, "MISS"), "{path}");
        }
        assert_eq!(
            origin.hits(path),
            2,
            "{path}: nothing stored, nothing reused"
        );
    }
    let status = status_json(proxy.addr).await;
    assert_eq!(status["cache"]["urls"], 0, "{status}");
    proxy.stop().await;
}

#[tokio::test]
async fn no_store_private_authorization_and_vary_star_win_over_a_rule() {
    let origin = Origin::start().await;
    origin.route(
        "/imm/no-store",
        Reply::ok("n").header("cache-control", "no-store"),
    );
    origin.route(
        "/imm/private",
        Reply::ok("p").header("cache-control", "private"),
    );
    origin.route("/imm/vary-star", Reply::ok("v").header("vary", "*"));
    origin.route("/imm/for-alice", Reply::ok("alice's"));
    let dir = tempdir();
    let proxy = proxy_with(dir.path(), vec![rule("/imm/", None, true)]).await;

    for path in ["/imm/no-store", "/imm/private", "/imm/vary-star"] {
        let url = origin.url(path);
        assert_eq!(get(proxy.addr, &url).await.x_cache(), "MISS", "{path}");
        assert_eq!(get(proxy.addr, &url).await.x_cache(), "MISS", "{path}");
        assert_eq!(origin.hits(path), 2, "{path}");
    }
    let url = origin.url("/imm/for-alice");
    let auth = [("authorization", "Bearer alice")];
    for _ in 0..2 {
        let got = send(proxy.addr, "GET", &url, &auth).await;
        assert_eq!((got.x_cache(), got.text().as_str()), ("MISS", "alice's"));
    }
    let anonymous = get(proxy.addr, &url).await;
    assert_eq!(
        anonymous.x_cache(),
        "MISS",
        "nobody else gets alice's answer"
    );
    assert_eq!(origin.hits("/imm/for-alice"), 3);
    proxy.stop().await;
}

/// npm's two documents for one URL: abbreviated for installs, full otherwise.
const ABBREVIATED: &str =
    "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
const FULL: &str = "application/json";

fn npm_origin(origin: &Origin, path: &str) {
    origin.route_fn(path, |req| {
        let accept = req
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let doc = if accept.contains("vnd.npm.install-v1") {
            "{\"abbreviated\":true}"
        } else {
            "{\"full\":true,\"readme\":\"...\"}"
        };
        // Like some registries: a lifetime, and a Vary that does not name Accept.
        Reply::ok(doc)
            .header("cache-control", "public, max-age=300")
            .header("vary", "Accept-Encoding")
    });
}

#[tokio::test]
async fn npm_metadata_is_kept_apart_by_accept() {
    let origin = Origin::start().await;
    npm_origin(&origin, "/npm/left-pad");
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let url = origin.url("/npm/left-pad");
    let ask = |accept: &'static str| {
        let url = url.clone();
        async move { send(proxy.addr, "GET", &url, &[("accept", accept)]).await }
    };

    let a = ask(ABBREVIATED).await;
    assert_eq!(
        (a.x_cache(), a.text().as_str()),
        ("MISS", "{\"abbreviated\":true}")
    );
    let b = ask(FULL).await;
    assert_eq!(
        (b.x_cache(), b.text().as_str()),
        ("MISS", "{\"full\":true,\"readme\":\"...\"}"),
        "the full document is fetched, not the abbreviated one handed over"
    );
    assert_eq!(origin.hits("/npm/left-pad"), 2);
    let a = ask(ABBREVIATED).await;
    assert_eq!(
        (a.x_cache(), a.text().as_str()),
        ("HIT", "{\"abbreviated\":true}")
    );
    let b = ask(FULL).await;
    assert_eq!(
        (b.x_cache(), b.text().as_str()),
        ("HIT", "{\"full\":true,\"readme\":\"...\"}")
    );
    assert_eq!(origin.hits("/npm/left-pad"), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn without_the_npm_preset_one_client_would_get_the_others_document() {
    let origin = Origin::start().await;
    npm_origin(&origin, "/npm/left-pad");
    let dir = tempdir();
    let mut c = config(dir.path());
    c.rules.presets.clear();
    let proxy = start_proxy(c).await;
    let url = origin.url("/npm/left-pad");

    let a = send(proxy.addr, "GET", &url, &[("accept", ABBREVIATED)]).await;
    assert_eq!(a.x_cache(), "MISS");
    let b = send(proxy.addr, "GET", &url, &[("accept", FULL)]).await;
    assert_eq!(
        (b.x_cache(), b.text().as_str()),
        ("HIT", "{\"abbreviated\":true}"),
        "the origin's Vary alone cannot tell them apart"
    );
    proxy.stop().await;
}

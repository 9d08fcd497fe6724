//! Ranges on objects not stored yet: a range far into a cold object is answered from a ranged
//! request of its own while the whole object is filled in the background (`cache.range_fill`
//! says whether), tied to the fill's representation; a range of a fill in progress is read
//! from the fill when the fill holds it, fetched ahead when it is far.

use std::time::Duration;

use bytes::Bytes;
use peercache::config::RangeFill;
use tokio::sync::watch;

use crate::support::*;

const MIB: usize = 1024 * 1024;
/// The debug-build stand-in for a large video: big enough that the download reaching 90 % would
/// show, small enough to keep the suite fast.
const LEN: usize = 16 * MIB;
/// What the slow origin sends of the whole body before it holds the rest behind a gate.
const FIRST: usize = 2 * MIB;

/// Routes `path` to a cacheable 200 of `body` with ETag `"m1"` whose whole-body answer stops
/// after [`FIRST`] bytes until the returned gate opens; ranged requests are answered at once.
fn slow_movie(origin: &Origin, path: &str, body: &Bytes) -> watch::Sender<bool> {
    let (gate, rx) = watch::channel(false);
    let reply = Reply::gated(body.slice(..FIRST), body.slice(FIRST..), rx).header("etag", "\"m1\"");
    origin.route(path, reply);
    gate
}

/// The origin's requests for `path` without Range: whole-body downloads.
fn whole_requests(origin: &Origin, path: &str) -> usize {
    let seen = origin.seen(path);
    seen.iter()
        .filter(|s| !s.headers.contains_key("range"))
        .count()
}

fn range(start: usize, last: usize) -> String {
    format!("bytes={start}-{last}")
}

async fn ranged(proxy: std::net::SocketAddr, url: &str, start: usize, last: usize) -> Got {
    send(proxy, "GET", url, &[("range", &range(start, last))]).await
}

/// Waits until `url` is stored on `proxy`.
async fn wait_stored(proxy: &peercache::app::Running, url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stored(proxy, url).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} stored in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_far_into_a_cold_object_comes_before_the_download_reaches_it_and_the_object_is_stored(
) {
    let origin = Origin::start().await;
    let body = noise(LEN, 1);
    let gate = slow_movie(&origin, "/movie.mp4", &body);
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let url = origin.url("/movie.mp4");

    // A player seeks to 90 % of the cold object. The origin holds the whole body after FIRST
    // bytes until the gate opens, and the gate opens only after the client got its range: the
    // bytes cannot have come from the download.
    let at = LEN * 9 / 10;
    let last = at + 256 * 1024 - 1;
    let part = ranged(proxy.addr, &url, at, last).await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        format!("bytes {at}-{last}/{LEN}")
    );
    assert_eq!(part.header("etag"), "\"m1\"");
    assert!(
        part.body.unwrap() == body.slice(at..=last),
        "the range's bytes"
    );
    // One whole-body download (the background fill) and one ranged request tied to it.
    let seen = origin.seen("/movie.mp4");
    assert_eq!(seen.len(), 2);
    assert_eq!(whole_requests(&origin, "/movie.mp4"), 1);
    let asked = seen
        .iter()
        .find(|s| s.headers.contains_key("range"))
        .unwrap();
    assert_eq!(asked.headers["range"], range(at, last).as_str());
    assert_eq!(asked.headers["if-range"], "\"m1\"");
    let s = status_json(proxy.addr).await;
    assert_eq!(s["counters"]["ranges"]["ahead"], 1);
    assert!(s["fills"][0]["written"].as_u64().unwrap() <= FIRST as u64);

    // The fill goes on in the background; the object is complete and stored afterwards.
    gate.send(true).unwrap();
    wait_stored(&proxy, &url).await;
    let whole = get(proxy.addr, &url).await;
    assert_eq!(whole.x_cache(), "HIT");
    assert!(whole.body.unwrap() == body);
    // A later range is a hit too; the origin sent the whole body once.
    let again = ranged(proxy.addr, &url, 1000, 1999).await;
    assert_eq!((again.status, again.x_cache()), (206, "HIT"));
    assert!(again.body.unwrap() == body.slice(1000..2000));
    assert_eq!(whole_requests(&origin, "/movie.mp4"), 1);
    assert_eq!(origin.hits("/movie.mp4"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_inside_a_fill_is_read_from_it_and_one_far_ahead_of_it_is_fetched_ahead() {
    let origin = Origin::start().await;
    let body = noise(LEN, 2);
    let gate = slow_movie(&origin, "/show.mkv", &body);
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let url = origin.url("/show.mkv");

    // A client downloads the whole object; the fill gets FIRST bytes, then waits on the gate.
    let first = send_head(proxy.addr, "GET", &url, &[]).await;
    assert_eq!(first.status(), 200);
    let s = wait_for_status(proxy.addr, Duration::from_secs(10), |s| {
        s["fills"][0]["written"] == FIRST as u64
    })
    .await;
    assert_eq!(s["fills"][0]["written"], FIRST as u64);

    // A range the fill holds is read from it: no request upstream.
    let inside = ranged(proxy.addr, &url, 1000, 100_999).await;
    assert_eq!((inside.status, inside.x_cache()), (206, "COLLAPSED"));
    assert!(inside.body.unwrap() == body.slice(1000..101_000));
    assert_eq!(origin.hits("/show.mkv"), 1);

    // A range far ahead of the fill is fetched ahead, before the fill gets there.
    let at = LEN / 2;
    let last = at + 99_999;
    let ahead = ranged(proxy.addr, &url, at, last).await;
    assert_eq!((ahead.status, ahead.x_cache()), (206, "COLLAPSED"));
    assert!(ahead.body.unwrap() == body.slice(at..=last));
    assert_eq!(origin.hits("/show.mkv"), 2);
    assert_eq!(whole_requests(&origin, "/show.mkv"), 1);

    gate.send(true).unwrap();
    let whole = Got::read(first).await;
    assert!(whole.body.unwrap() == body);
    wait_stored(&proxy, &url).await;
    assert_eq!(get(proxy.addr, &url).await.x_cache(), "HIT");
    assert_eq!(whole_requests(&origin, "/show.mkv"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_fill_none_or_a_limit_starts_no_download_for_a_range_beyond_it() {
    let origin = Origin::start().await;
    let body = noise(4 * MIB, 3);
    for path in ["/a.iso", "/b.iso"] {
        origin.route(path, Reply::cacheable(body.clone(), "\"i1\""));
    }
    let (a, b) = (origin.url("/a.iso"), origin.url("/b.iso"));
    let at = 3 * MIB;

    // "none": the range goes upstream as asked; nothing is filled, nothing stored.
    let dir = tempdir();
    let mut c = config(dir.path());
    c.cache.range_fill = RangeFill::None;
    let proxy = start_proxy(c).await;
    let part = ranged(proxy.addr, &a, at, at + 9).await;
    assert_eq!((part.status, part.x_cache()), (206, "MISS"));
    assert_eq!(
        part.header("content-range"),
        format!("bytes {at}-{}/{}", at + 9, 4 * MIB)
    );
    assert!(part.body.as_ref().unwrap() == &body.slice(at..at + 10));
    assert_eq!(
        our_cache_status(&part).unwrap(),
        ["fwd=uri-miss", "detail=range-not-filled"]
    );
    assert_eq!(
        (origin.hits("/a.iso"), whole_requests(&origin, "/a.iso")),
        (1, 0)
    );
    // Even a range at byte 0 starts no fill under "none"; a plain GET does.
    assert_eq!(ranged(proxy.addr, &a, 0, 9).await.status, 206);
    assert_eq!(whole_requests(&origin, "/a.iso"), 0);
    assert!(stored(&proxy, &a).await.is_none(), "a 206 is never stored");
    assert_eq!(
        status_json(proxy.addr).await["counters"]["ranges"]["unfilled"],
        2
    );
    let full = get(proxy.addr, &a).await;
    assert_eq!(full.x_cache(), "MISS");
    assert!(full.body.unwrap() == body);
    assert_eq!(whole_requests(&origin, "/a.iso"), 1);

    // A byte limit: a range beyond it starts nothing, one within it starts the whole fill.
    let dir = tempdir();
    let mut c = config(dir.path());
    c.cache.range_fill = RangeFill::UpTo(MIB as u64);
    let proxy = start_proxy(c).await;
    assert_eq!(ranged(proxy.addr, &b, at, at + 9).await.status, 206);
    assert_eq!(whole_requests(&origin, "/b.iso"), 0);
    assert_eq!(
        send(proxy.addr, "GET", &b, &[("range", "bytes=-10")])
            .await
            .status,
        206,
        "a suffix range begins near the end: beyond the limit"
    );
    assert_eq!(whole_requests(&origin, "/b.iso"), 0);
    let within = ranged(proxy.addr, &b, MIB, MIB + 9).await;
    assert_eq!((within.status, within.x_cache()), (206, "MISS"));
    assert!(within.body.unwrap() == body.slice(MIB..MIB + 10));
    wait_stored(&proxy, &b).await;
    assert_eq!(whole_requests(&origin, "/b.iso"), 1);
    assert_eq!(get(proxy.addr, &b).await.x_cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ranged_answer_of_another_representation_or_a_200_is_never_served_the_fill_serves_it() {
    let origin = Origin::start().await;
    let body = noise(LEN, 4);
    let other = noise(LEN, 5);
    let at = LEN * 9 / 10;
    let last = at + 65_535;
    // "/changed": the object changed between the fill's request and the ranged one, and the
    // origin ignores If-Range: its 206 carries another ETag and other bytes.
    let (changed_gate, rx) = watch::channel(false);
    let whole = Reply::gated(body.slice(..FIRST), body.slice(FIRST..), rx).header("etag", "\"v1\"");
    let changed_part = Reply {
        status: 206,
        headers: vec![
            ("etag".into(), "\"v2\"".into()),
            ("content-range".into(), format!("bytes {at}-{last}/{LEN}")),
        ],
        payload: Payload::Bytes(other.slice(at..=last)),
    };
    origin.route_fn("/changed", move |req| {
        if req.headers.contains_key("range") {
            changed_part.clone()
        } else {
            whole.clone()
        }
    });
    // "/whole": an origin that does not do ranges sends the whole body (held at its gate) again.
    let (gate, rx) = watch::channel(false);
    origin.route(
        "/whole",
        Reply::gated(body.slice(..FIRST), body.slice(FIRST..), rx)
            .header("etag", "\"m1\"")
            .header("accept-ranges", "none"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;

    for (n, (path, gate)) in [("/changed", changed_gate), ("/whole", gate)]
        .into_iter()
        .enumerate()
    {
        let url = origin.url(path);
        let client = tokio::spawn(async move { ranged(proxy.addr, &url, at, last).await });
        // The ranged request was answered and refused…
        let s = wait_for_status(proxy.addr, Duration::from_secs(10), |s| {
            s["counters"]["ranges"]["refused"] == n as u64 + 1
        })
        .await;
        assert_eq!(s["counters"]["ranges"]["refused"], n as u64 + 1, "{path}");
        assert_eq!(s["counters"]["ranges"]["ahead"], 0, "{path}");
        assert_eq!(origin.hits(path), 2, "{path}");
        // …so the range waits for the fill, which brings the representation the client was
        // promised (the fill's head, ETag included), byte-exact.
        gate.send(true).unwrap();
        let got = client.await.unwrap();
        assert_eq!(got.status, 206, "{path}");
        assert_eq!(
            got.header("content-range"),
            format!("bytes {at}-{last}/{LEN}")
        );
        assert!(
            got.body.unwrap() == body.slice(at..=last),
            "{path}: the fill's bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_range_and_several_ranges_on_a_cold_object() {
    let origin = Origin::start().await;
    let body = noise(4 * MIB, 6);
    for path in ["/a", "/b", "/d", "/e"] {
        let mut reply = Reply::cacheable(body.clone(), "\"e1\"");
        if path == "/e" {
            reply = reply.header("accept-ranges", "none");
        }
        origin.route(path, reply);
    }
    let at = 3 * MIB;
    let tail = format!("bytes={at}-");

    // With the fill (the default): an If-Range that does not match, or several ranges, get the
    // whole body (RFC 9110 §13.1.5, §14.2), from the fill; nothing is fetched ahead.
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    let stale = [("range", tail.as_str()), ("if-range", "\"e0\"")];
    let whole = send(proxy.addr, "GET", &origin.url("/a"), &stale).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body.unwrap() == body);
    let several = [("range", "bytes=0-9,3145728-3145737")];
    let whole = send(proxy.addr, "GET", &origin.url("/b"), &several).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body.unwrap() == body);
    assert_eq!(
        origin.hits("/a") + origin.hits("/b"),
        2,
        "no ranged requests"
    );
    // An If-Range that matches the fill's ETag: the range, fetched ahead of the slow fill.
    let movie = noise(LEN, 6);
    let gate = slow_movie(&origin, "/c", &movie);
    let far = LEN - MIB;
    let from_far = format!("bytes={far}-");
    let matching = [("range", from_far.as_str()), ("if-range", "\"m1\"")];
    let part = send(proxy.addr, "GET", &origin.url("/c"), &matching).await;
    assert_eq!(part.status, 206);
    assert!(part.body.unwrap() == movie.slice(far..));
    assert_eq!(origin.seen("/c")[1].headers["if-range"], "\"m1\"");
    gate.send(true).unwrap();
    let current = [("range", tail.as_str()), ("if-range", "\"e1\"")];

    // Without the fill the client's Range and If-Range go upstream as they are; a 200 is cut
    // here by the same rules.
    let dir = tempdir();
    let mut c = config(dir.path());
    c.cache.range_fill = RangeFill::None;
    let proxy = start_proxy(c).await;
    let whole = send(proxy.addr, "GET", &origin.url("/d"), &stale).await;
    assert_eq!(whole.status, 200, "If-Range false: the origin's whole 200");
    assert!(whole.body.unwrap() == body);
    assert_eq!(origin.seen("/d")[0].headers["if-range"], "\"e0\"");
    // An origin that ignores Range sends 200: the client still gets its range.
    let part = send(proxy.addr, "GET", &origin.url("/e"), &current).await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        format!("bytes {at}-{}/{}", 4 * MIB - 1, 4 * MIB)
    );
    assert!(part.body.unwrap() == body.slice(at..));
    let part = send(proxy.addr, "GET", &origin.url("/e"), &stale).await;
    assert_eq!(
        part.status, 200,
        "cut by If-Range rules: the tag does not match"
    );
    assert!(part.body.unwrap() == body);
    assert!(stored(&proxy, &origin.url("/e")).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_of_an_object_too_big_to_store_is_asked_for_with_range() {
    let origin = Origin::start().await;
    let body = noise(4 * MIB, 7);
    origin.route("/huge", Reply::cacheable(body.clone(), "\"h1\""));
    let dir = tempdir();
    let mut c = config(dir.path());
    c.cache.max_object_size = MIB as u64;
    let proxy = start_proxy(c).await;
    let url = origin.url("/huge");
    let at = 3 * MIB;

    // The fill's answer is too big to store: a range far into it is asked for on its own.
    let part = ranged(proxy.addr, &url, at, at + 99).await;
    assert_eq!(part.status, 206);
    assert!(part.body.as_ref().unwrap() == &body.slice(at..at + 100));
    assert!(our_cache_status(&part)
        .unwrap()
        .contains(&"detail=too-big".to_owned()));
    let seen = origin.seen("/huge");
    assert_eq!(seen.len(), 2);
    assert!(!seen[0].headers.contains_key("range"));
    assert_eq!(seen[1].headers["range"], range(at, at + 99).as_str());
    // A range near the start is cut out of that answer.
    let near = ranged(proxy.addr, &url, 10, 19).await;
    assert_eq!(near.status, 206);
    assert!(near.body.unwrap() == body.slice(10..20));
    assert_eq!(origin.hits("/huge"), 3);
    assert!(stored(&proxy, &url).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_of_a_cold_object_comes_from_a_peers_copy_not_the_origin() {
    let origin = Origin::start().await;
    let body = noise(LEN, 8);
    origin.route("/film.mp4", Reply::cacheable(body.clone(), "\"f1\""));
    let (nodes, _key) = cluster(2).await;
    let url = origin.url("/film.mp4");
    assert_eq!(get(nodes[0].addr(), &url).await.x_cache(), "MISS");
    wait_holders(&nodes[1], &url, 1).await;

    // B has it neither stored nor in flight: its fill comes from A, and so does the range,
    // as verified pieces of A's copy, fetched ahead of the fill.
    let at = LEN * 9 / 10;
    let last = at + 99_999;
    let part = ranged(nodes[1].addr(), &url, at, last).await;
    assert_eq!((part.status, part.x_cache()), (206, "PEER"));
    assert!(part.body.unwrap() == body.slice(at..=last));
    assert_eq!(origin.hits("/film.mp4"), 1, "the WAN is crossed once");
    let s = status_json(nodes[1].addr()).await;
    assert_eq!(s["counters"]["ranges"]["ahead"], 1);
    assert_eq!(nodes[0].peers().status_json()["uploads"], 2);
    wait_stored(&nodes[1].proxy, &url).await;
    assert_eq!(get(nodes[1].addr(), &url).await.x_cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_range_fill_none_a_range_still_comes_from_a_peers_copy_and_nothing_is_stored() {
    let origin = Origin::start().await;
    let body = noise(4 * MIB, 9);
    origin.route("/song.flac", Reply::cacheable(body.clone(), "\"s1\""));
    let (nodes, _key) = cluster_with(2, |c| c.cache.range_fill = RangeFill::None).await;
    let url = origin.url("/song.flac");
    assert_eq!(get(nodes[0].addr(), &url).await.x_cache(), "MISS");
    wait_holders(&nodes[1], &url, 1).await;

    let at = 3 * MIB + 5;
    let part = ranged(nodes[1].addr(), &url, at, at + 999).await;
    assert_eq!((part.status, part.x_cache()), (206, "PEER"));
    assert_eq!(
        part.header("content-range"),
        format!("bytes {at}-{}/{}", at + 999, 4 * MIB)
    );
    assert_eq!(part.header("etag"), "\"s1\"");
    assert!(!part.header("age").is_empty());
    let params = our_cache_status(&part).unwrap();
    let peer = format!("peercache-peer=\"{}\"", nodes[0].peers().id);
    for p in ["fwd=uri-miss", "detail=range-not-filled", peer.as_str()] {
        assert!(params.iter().any(|x| x == p), "{p} in {params:?}");
    }
    assert!(part.body.unwrap() == body.slice(at..at + 1000));
    assert_eq!(origin.hits("/song.flac"), 1);
    assert_eq!(nodes[0].peers().status_json()["uploads"], 1);
    assert!(stored(&nodes[1].proxy, &url).await.is_none());
    assert_eq!(status_json(nodes[1].addr()).await["fills_running"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_beyond_max_fills_starts_no_fill_and_is_counted() {
    let origin = Origin::start().await;
    let first = noise(LEN, 10);
    let gate = slow_movie(&origin, "/one", &first);
    let body = noise(4 * MIB, 11);
    origin.route("/two", Reply::cacheable(body.clone(), "\"t1\""));
    let dir = tempdir();
    let mut c = config(dir.path());
    c.cache.max_fills = 1;
    let proxy = start_proxy(c).await;

    // One fill runs (held at the origin's gate): the bound is reached.
    let one = send_head(proxy.addr, "GET", &origin.url("/one"), &[]).await;
    assert_eq!(one.status(), 200);
    // A range of another cold object goes upstream as asked, and is counted.
    let at = 3 * MIB;
    let part = ranged(proxy.addr, &origin.url("/two"), at, at + 9).await;
    assert_eq!(part.status, 206);
    assert!(our_cache_status(&part)
        .unwrap()
        .contains(&"detail=max-fills".to_owned()));
    assert!(part.body.unwrap() == body.slice(at..at + 10));
    assert_eq!(
        origin.seen("/two")[0].headers["range"],
        range(at, at + 9).as_str()
    );
    let s = status_json(proxy.addr).await;
    assert_eq!(s["counters"]["limits"]["fills_passed_unstored"], 1);
    assert_eq!(s["fills_running"], 1);
    assert!(stored(&proxy, &origin.url("/two")).await.is_none());
    gate.send(true).unwrap();
    assert!(Got::read(one).await.body.unwrap() == first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_takes_over_from_a_ranged_answer_it_overtakes() {
    let origin = Origin::start().await;
    let body = noise(LEN, 12);
    let at = LEN * 9 / 10;
    let last = at + 199_999;
    let half = at + 100_000;
    // The whole body waits at the first gate; the ranged answer sends half the range, then
    // stalls for good (its gate never opens).
    let (whole_gate, rx) = watch::channel(false);
    let whole = Reply::gated(body.slice(..FIRST), body.slice(FIRST..), rx).header("etag", "\"m1\"");
    let (_stalled, rx) = watch::channel(false);
    let part = Reply {
        status: 206,
        headers: vec![
            ("etag".into(), "\"m1\"".into()),
            ("content-range".into(), format!("bytes {at}-{last}/{LEN}")),
        ],
        payload: Payload::Gated {
            first: body.slice(at..half),
            rest: Some(body.slice(half..=last)),
            gate: rx,
        },
    };
    origin.route_fn("/switch", move |req| {
        if req.headers.contains_key("range") {
            part.clone()
        } else {
            whole.clone()
        }
    });
    let dir = tempdir();
    let mut c = config(dir.path());
    c.upstream.read_timeout = Duration::from_secs(120);
    let proxy = start_proxy(c).await;
    let url = origin.url("/switch");

    let resp = send_head(proxy.addr, "GET", &url, &[("range", &range(at, last))]).await;
    assert_eq!(resp.status(), 206);
    wait_for_status(proxy.addr, Duration::from_secs(10), |s| {
        s["counters"]["ranges"]["ahead"] == 1
    })
    .await;
    // The download completes; the client's range finishes from it, long before the stalled
    // ranged answer would time out.
    whole_gate.send(true).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), Got::read(resp))
        .await
        .expect("the download took over");
    assert!(got.body.unwrap() == body.slice(at..=last));
    assert_eq!(origin.hits("/switch"), 2);
    assert_eq!(
        status_json(proxy.addr).await["counters"]["ranges"]["refused"],
        0
    );
}

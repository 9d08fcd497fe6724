//! What survives a restart and a `kill -9`: committed entries stay hits, partial bodies vanish.

use std::time::Duration;

use tokio::sync::watch;

use crate::support::*;

#[tokio::test]
async fn a_clean_restart_keeps_the_cache() {
    let origin = Origin::start().await;
    origin.route(
        "/keep",
        Reply::ok(pattern(70_000, 2)).header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    get(proxy.addr, &origin.url("/keep")).await;
    proxy.stop().await;

    let proxy = start_proxy(config(dir.path())).await;
    let r = get(proxy.addr, &origin.url("/keep")).await;
    assert_eq!(r.x_cache(), "HIT");
    assert!(r.body.unwrap() == pattern(70_000, 2));
    assert_eq!(origin.hits("/keep"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_corrupt_blob_is_a_miss_and_is_replaced() {
    let origin = Origin::start().await;
    let body = pattern(5000, 4);
    origin.route(
        "/c",
        Reply::ok(body.clone()).header("cache-control", "max-age=600"),
    );
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    get(proxy.addr, &origin.url("/c")).await;
    proxy.stop().await;
    // Flip a byte in the stored body.
    let blob = blobs_under(dir.path()).pop().expect("one blob");
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();

    let proxy = start_proxy(config(dir.path())).await;
    let r = get(proxy.addr, &origin.url("/c")).await;
    assert_eq!(r.x_cache(), "MISS");
    assert!(r.body.unwrap() == body);
    assert_eq!(origin.hits("/c"), 2);
    let r = get(proxy.addr, &origin.url("/c")).await;
    assert_eq!(r.x_cache(), "HIT");
    assert!(r.body.unwrap() == body);
    proxy.stop().await;
}

#[tokio::test]
async fn after_kill_9_committed_entries_are_hits_and_partial_bodies_are_gone() {
    let origin = Origin::start().await;
    let done = pattern(100_000, 6);
    origin.route(
        "/done",
        Reply::ok(done.clone()).header("cache-control", "max-age=600"),
    );
    let partial = pattern(400_000, 8);
    let (_open, gate) = watch::channel(false);
    origin.route(
        "/partial",
        Reply {
            status: 200,
            headers: vec![
                ("cache-control".into(), "max-age=600".into()),
                ("content-length".into(), partial.len().to_string()),
            ],
            payload: Payload::Gated {
                first: partial.slice(..200_000),
                rest: Some(partial.slice(200_000..)),
                gate,
            },
        },
    );
    let dir = tempdir();
    let port = free_port();
    let proc = Proc::start(dir.path(), port, false).await;
    assert_eq!(get(proc.addr, &origin.url("/done")).await.x_cache(), "MISS");
    // Start the partial download and wait until part of it is on disk.
    let _reader = send_head(proc.addr, "GET", &origin.url("/partial"), &[]).await;
    let tmp = dir.path().join("cache/tmp");
    assert!(
        wait_until(Duration::from_secs(5), || files_under(&tmp)
            .iter()
            .any(|f| f.metadata().map(|m| m.len() > 0).unwrap_or(false)))
        .await,
        "partial body on disk"
    );
    proc.kill9();

    // The origin now answers the whole body at once.
    origin.route(
        "/partial",
        Reply::ok(partial.clone()).header("cache-control", "max-age=600"),
    );
    let proc = Proc::start(dir.path(), port, false).await;
    let r = get(proc.addr, &origin.url("/done")).await;
    assert_eq!(r.x_cache(), "HIT");
    assert!(r.body.unwrap() == done);
    let r = get(proc.addr, &origin.url("/partial")).await;
    assert_eq!(
        r.x_cache(),
        "MISS",
        "a partial body is never served from the cache"
    );
    assert!(r.body.unwrap() == partial);
    assert_eq!(origin.hits("/done"), 1);
    assert_eq!(origin.hits("/partial"), 2);
    drop(proc);
}

//! Origins that break the framing rules: both `Content-Length` and `Transfer-Encoding`, a body
//! length on a 204 or 304, a head too large to hold. The client gets a well-framed answer or a
//! 502.

use crate::support::*;

/// An origin answering every request with `answer`.
async fn answering(answer: String) -> RawOrigin {
    RawOrigin::start(move |_, _| RawStep::Send(answer.clone().into_bytes())).await
}

#[tokio::test]
async fn content_length_beside_transfer_encoding_is_dropped_and_the_body_arrives_whole() {
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which a proxy must not forward.
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    for cc in ["max-age=600", "no-store"] {
        let origin = answering(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\
             Cache-Control: {cc}\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        ))
        .await;
        let r = get(proxy.addr, &origin.url("/both")).await;
        assert_eq!(r.status, 200, "{cc}");
        assert_ne!(r.header("content-length"), "100", "{cc}");
        assert_eq!(r.body.as_deref().ok(), Some(&b"hello world"[..]), "{cc}");
        if cc == "max-age=600" {
            let again = get(proxy.addr, &origin.url("/both")).await;
            assert_eq!(
                (again.x_cache(), again.text().as_str()),
                ("HIT", "hello world")
            );
            assert_eq!(again.header("content-length"), "11");
        }
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_204_or_304_never_carries_a_body_length() {
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    for status in ["204 No Content", "304 Not Modified"] {
        let origin = answering(format!(
            "HTTP/1.1 {status}\r\nContent-Length: 7\r\nETag: \"e\"\r\n\r\n"
        ))
        .await;
        let r = raw(
            proxy.addr,
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nIf-None-Match: \"e\"\r\nConnection: close\r\n\r\n",
                origin.url("/none"),
                origin.addr
            )
            .as_bytes(),
        )
        .await;
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{r:?}");
        assert!(!r.to_ascii_lowercase().contains("content-length"), "{r:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_response_head_over_64_kib_is_a_502_and_is_not_stored() {
    let mut head =
        String::from("HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 2\r\n");
    for i in 0..70 {
        head.push_str(&format!("X-Filler-{i}: {}\r\n", "f".repeat(1000)));
    }
    head.push_str("\r\nok");
    let origin = answering(head).await;
    let dir = tempdir();
    let proxy = start_proxy(config(dir.path())).await;
    for _ in 0..2 {
        let r = get(proxy.addr, &origin.url("/fat")).await;
        assert_eq!(r.status, 502);
        assert_eq!(r.header("x-peercache-error"), "upstream-protocol");
    }
    assert_eq!(origin.heads("/fat").len(), 2, "nothing was stored");
    proxy.stop().await;
}

//! The one place where an error becomes a status code and a response. No I/O.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use crate::error::{Error, Kind, Side};

/// Response header naming the proxy error, for scripts and for humans.
pub const ERROR_HEADER: &str = "x-peercache-error";

/// The status an error is answered with, decided first by who is at fault (RFC 9110 §15):
/// the client → 4xx (by kind; a loop is 508, `only-if-cached` 504), upstream or a peer →
/// 504 for a timeout, 503 when busy, else 502; ours → 503 when busy (a bound was hit), else
/// 500.
pub fn status_of(e: &Error) -> StatusCode {
    match (e.side, e.kind) {
        (_, Kind::LoopDetected) => StatusCode::LOOP_DETECTED,
        (_, Kind::OnlyIfCached) => StatusCode::GATEWAY_TIMEOUT,
        (Side::Downstream, Kind::Forbidden | Kind::PortNotAllowed) => StatusCode::FORBIDDEN,
        (Side::Downstream, Kind::NotFound) => StatusCode::NOT_FOUND,
        (Side::Downstream, Kind::Misdirected) => StatusCode::MISDIRECTED_REQUEST,
        (Side::Downstream, _) => StatusCode::BAD_REQUEST,
        (Side::Upstream | Side::Peer, Kind::ConnectTimeout | Kind::ResponseTimeout) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        (Side::Upstream | Side::Peer | Side::Internal, Kind::Busy) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        (Side::Upstream | Side::Peer, _) => StatusCode::BAD_GATEWAY,
        (Side::Internal, _) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The text body of the answer to `e`.
fn error_text(status: StatusCode, e: &Error) -> String {
    format!(
        "peercache: {} {}: {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        e.detail
    )
}

/// A short text response for `e`, never stored by anyone (`Cache-Control: no-store`).
pub fn error_response(e: &Error) -> Response<Body> {
    let status = status_of(e);
    let text = error_text(status, e);
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(ERROR_HEADER, HeaderValue::from_static(e.kind.as_str()));
    resp
}

/// The same answer as raw HTTP/1.1 bytes that close the connection, for a connection refused
/// before any request is read (no HTTP machinery is spent on it).
pub fn error_bytes(e: &Error) -> Vec<u8> {
    let status = status_of(e);
    let text = error_text(status, e);
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\n\
         {ERROR_HEADER}: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{text}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        e.kind.as_str(),
        text.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_side_at_fault_and_the_kind_decide_the_status() {
        use Side::*;
        let cases = [
            (Downstream, Kind::BadRequest, 400),
            (Downstream, Kind::Forbidden, 403),
            (Downstream, Kind::PortNotAllowed, 403),
            (Downstream, Kind::NotFound, 404),
            (Downstream, Kind::Misdirected, 421),
            (Downstream, Kind::LoopDetected, 508),
            (Downstream, Kind::OnlyIfCached, 504),
            // A client's fault is a 4xx whatever went wrong with its request (its body, say).
            (Downstream, Kind::UpstreamProtocol, 400),
            (Upstream, Kind::ConnectTimeout, 504),
            (Upstream, Kind::ResponseTimeout, 504),
            (Upstream, Kind::ConnectFailed, 502),
            (Upstream, Kind::UpstreamProtocol, 502),
            (Upstream, Kind::UpstreamBodyCut, 502),
            (Upstream, Kind::Tls, 502),
            (Peer, Kind::UpstreamProtocol, 502),
            (Peer, Kind::ResponseTimeout, 504),
            (Peer, Kind::Busy, 503),
            (Internal, Kind::Busy, 503),
            (Internal, Kind::NotFound, 500),
            (Internal, Kind::Storage, 500),
            (Internal, Kind::Internal, 500),
        ];
        for (side, kind, status) in cases {
            let e = Error::new(kind, side, "x");
            assert_eq!(status_of(&e).as_u16(), status, "{side:?} {kind:?}");
        }
    }

    #[test]
    fn raw_bytes_say_the_same_and_close() {
        let e = Error::new(Kind::Busy, Side::Internal, "full");
        let text = String::from_utf8(error_bytes(&e)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nx-peercache-error: busy\r\n"), "{text}");
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
        let body = "peercache: 503 Service Unavailable: full\n";
        assert!(text.ends_with(&format!("content-length: {}\r\n\r\n{body}", body.len())));
    }

    #[test]
    fn the_response_names_the_error() {
        let r = error_response(&Error::upstream(Kind::ConnectFailed, "refused"));
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers()[ERROR_HEADER], "connect-failed");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    }
}

//! The one place where an error becomes a status code and a response. No I/O.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use crate::error::{Error, Kind};

/// Response header naming the proxy error, for scripts and for humans.
pub const ERROR_HEADER: &str = "x-peercache-error";

/// The status an error is answered with: the client's fault → 4xx, upstream's → 502/504,
/// ours → 500.
pub fn status_of(e: &Error) -> StatusCode {
    match e.kind {
        Kind::BadRequest => StatusCode::BAD_REQUEST,
        Kind::Forbidden | Kind::PortNotAllowed => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Misdirected => StatusCode::MISDIRECTED_REQUEST,
        Kind::LoopDetected => StatusCode::LOOP_DETECTED,
        Kind::OnlyIfCached | Kind::ConnectTimeout | Kind::ResponseTimeout => {
            StatusCode::GATEWAY_TIMEOUT
        }
        Kind::ConnectFailed | Kind::UpstreamProtocol | Kind::UpstreamBodyCut | Kind::Tls => {
            StatusCode::BAD_GATEWAY
        }
        Kind::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Storage | Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A short text response for `e`, never stored by anyone (`Cache-Control: no-store`).
pub fn error_response(e: &Error) -> Response<Body> {
    let status = status_of(e);
    let text = format!(
        "peercache: {} {}: {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        e.detail
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Side;

    #[test]
    fn each_kind_maps_to_the_status_of_whoever_is_at_fault() {
        let cases = [
            (Kind::BadRequest, 400),
            (Kind::Forbidden, 403),
            (Kind::PortNotAllowed, 403),
            (Kind::NotFound, 404),
            (Kind::Misdirected, 421),
            (Kind::LoopDetected, 508),
            (Kind::OnlyIfCached, 504),
            (Kind::ConnectTimeout, 504),
            (Kind::ResponseTimeout, 504),
            (Kind::ConnectFailed, 502),
            (Kind::UpstreamProtocol, 502),
            (Kind::Tls, 502),
            (Kind::Busy, 503),
            (Kind::Storage, 500),
            (Kind::Internal, 500),
        ];
        for (kind, status) in cases {
            let e = Error::new(kind, Side::Upstream, "x");
            assert_eq!(status_of(&e).as_u16(), status, "{kind:?}");
        }
    }

    #[test]
    fn the_response_names_the_error() {
        let r = error_response(&Error::upstream(Kind::ConnectFailed, "refused"));
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers()[ERROR_HEADER], "connect-failed");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    }
}

//! Helpers shared by the policy's table tests: a fixed clock origin, dates, header maps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// An arbitrary whole-second origin for every test clock.
pub(super) const T0: u64 = 1_700_000_000;

pub(super) fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub(super) fn date(secs: u64) -> String {
    httpdate::fmt_http_date(t(secs))
}

/// Header lines (name, value) of one table row.
pub(super) type Fields<'a> = Vec<(&'a str, &'a str)>;
/// Header lines whose values are computed (dates).
pub(super) type Owned = Vec<(&'static str, String)>;

pub(super) fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).expect("test name"),
            HeaderValue::from_str(v).expect("test value"),
        );
    }
    h
}

pub(super) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(super) fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("test status")
}

/// The default target list, `CDN-Cache-Control` (RFC 9213 §3).
pub(super) static CDN: [HeaderName; 1] = [HeaderName::from_static("cdn-cache-control")];

/// The default heuristic with `CDN-Cache-Control` as the target list.
pub(super) fn cdn() -> crate::cache::policy::Heuristic<'static> {
    crate::cache::policy::Heuristic {
        targets: &CDN,
        ..Default::default()
    }
}

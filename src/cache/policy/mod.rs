//! RFC 9111 shared-cache rules, one file per concern: storing (`storable`), age (`age`),
//! freshness (`freshness`), reuse and serving stale (`reuse`), revalidation (`validate`) and
//! invalidation (`invalidate`). Pure: no I/O, no clock (`now` is always a parameter).

mod age;
mod date;
mod freshness;
mod invalidate;
mod reuse;
mod storable;
mod targeted;
mod validate;

#[cfg(test)]
mod testing;

use std::time::SystemTime;

use http::{HeaderMap, HeaderName};

pub use age::Timing;
pub use freshness::{freshness, freshness_lifetime, Freshness, Heuristic, Lifetime, IMMUTABLE};
pub use invalidate::invalidations;
pub use reuse::{forbids_stale, judge, reuse, serve_stale_on_error, Failure, Reuse, Stored};
pub use storable::{shareable, storability, NotStorable, Storability};
pub use targeted::Directives;
pub use validate::{merge_not_modified, validators};

/// The first field line of `name` as an HTTP-date, parsed as leniently as a cache recipient may
/// ([`date`]), a two-digit year read against `reference`; `None` when absent or invalid.
fn http_date(h: &HeaderMap, name: &HeaderName, reference: SystemTime) -> Option<SystemTime> {
    date::HttpDate::parse(h.get(name)?.as_bytes())?.at(reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::cache_control::CacheControl;
    use http::{HeaderValue, Method, StatusCode, Uri};
    use testing::*;

    #[test]
    fn hostile_header_values_never_panic() {
        let nasty: [&[u8]; 6] = [
            b"",
            b"\xff\xfe",
            b"99999999999999999999999999999",
            b"=,=,\"",
            b"Fri, 31 Dec 9999 23:59:59 GMT",
            b"-1",
        ];
        let names = [
            "cache-control",
            "date",
            "expires",
            "age",
            "last-modified",
            "etag",
            "vary",
            "location",
            "content-location",
            "connection",
            "pragma",
            "cdn-cache-control",
        ];
        for v in nasty {
            let mut h = HeaderMap::new();
            for n in names {
                h.append(n, HeaderValue::from_bytes(v).expect("value"));
            }
            let timing = Timing::new(t(T0), t(T0), &h);
            let stored = Stored {
                status: StatusCode::OK,
                headers: &h,
                timing,
            };
            let req_cc = CacheControl::from_request(&h);
            for hr in [Heuristic::default(), cdn()] {
                let _ = storability(&Method::GET, &h, StatusCode::OK, &h, hr);
                let _ = shareable(&h, &h, hr);
                let _ = reuse(&stored, &req_cc, t(T0 + 1), hr);
                let _ = serve_stale_on_error(&stored, &req_cc, t(T0 + 1), hr, Failure::Unreachable);
                let _ = freshness_lifetime(StatusCode::OK, &h, t(T0), hr);
            }
            let _ = validators(&h);
            let mut m = h.clone();
            merge_not_modified(&mut m, &h);
            let target: Uri = "http://h.example/a".parse().expect("target");
            let _ = invalidations(&Method::POST, StatusCode::OK, &target, &h);
        }
    }
}

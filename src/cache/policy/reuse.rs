//! Whether a stored response may answer a request, or serve stale after an error (RFC 9111 §4, §4.2.4; RFC 5861); pure.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

use super::age::Timing;
use super::freshness::{freshness, freshness_lifetime, lifetime, Freshness, Heuristic};
use super::targeted::Directives;
use crate::cache::cache_control::{CacheControl, MaxStale};

/// What to do with a stored response for this request (RFC 9111 §4, §4.2.4, §5.2.1; RFC 5861 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it without contacting the origin.
    Fresh,
    /// Stale, but the request's max-stale accepts it and nothing forbids serving stale: serve it.
    StaleAllowed,
    /// Stale within the response's stale-while-revalidate window: serve it and revalidate in the
    /// background.
    StaleWhileRevalidate,
    /// Must be validated with the origin first (stale; response or request no-cache; request
    /// max-age / min-fresh not met).
    Revalidate,
}

/// Inputs about the stored response; its `Cache-Control` is parsed from `headers`.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The stored response's status.
    pub status: StatusCode,
    /// The stored response's header fields (after any 304 merge).
    pub headers: &'a HeaderMap,
    /// Its age bookkeeping (from the last response or 304 received).
    pub timing: Timing,
}

impl Stored<'_> {
    /// Freshness of the stored response at `now` (RFC 9111 §4.2).
    pub fn freshness(&self, now: SystemTime, h: Heuristic<'_>) -> Freshness {
        let lifetime = freshness_lifetime(self.status, self.headers, self.timing.response_time, h);
        freshness(lifetime, self.timing.current_age(now))
    }
}

/// What to do with `stored` for a request whose directives are `req_cc`, at `now`.
///
/// In order: the response's `no-cache` (§5.2.2.4) or the request's (§5.2.1.4) → `Revalidate`.
/// Request `max-age=N` with age > N → `Revalidate`, whatever max-stale says (§5.2.1.1).
/// Fresh: `min-fresh=N` (§5.2.1.3) demands a remaining lifetime ≥ N, else `Revalidate`; otherwise
/// `Fresh`. Stale: `Revalidate` when [`forbids_stale`] (must-revalidate, proxy-revalidate,
/// s-maxage: §4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10) or when the request has `min-fresh` (it asks
/// for freshness; the most restrictive directive wins, §4.2.1); then the response's
/// `stale-while-revalidate=N` with stale-by ≤ N → `StaleWhileRevalidate` (preferred to
/// max-stale because it also refreshes the copy); then the request's `max-stale` (any, or
/// stale-by ≤ N) → `StaleAllowed`; else `Revalidate`.
pub fn reuse(
    stored: &Stored<'_>,
    req_cc: &CacheControl,
    now: SystemTime,
    h: Heuristic<'_>,
) -> Reuse {
    judge(stored, req_cc, now, h).0
}

/// [`reuse`], and the stored response's freshness at `now` ([`Stored::freshness`]), its
/// directives read once: a cache hit needs both (the second for `Cache-Status`'s `ttl`).
pub fn judge(
    stored: &Stored<'_>,
    req_cc: &CacheControl,
    now: SystemTime,
    h: Heuristic<'_>,
) -> (Reuse, Freshness) {
    let d = Directives::of(stored.headers, h.targets);
    let age = stored.timing.current_age(now);
    let life = lifetime(
        stored.status,
        stored.headers,
        &d,
        stored.timing.response_time,
        h,
    );
    let fresh = freshness(life, age);
    (decide(&d.cc, req_cc, age, fresh), fresh)
}

/// The rules of [`reuse`], over the response's directives `resp_cc`, its `age` and freshness.
fn decide(resp_cc: &CacheControl, req_cc: &CacheControl, age: Duration, fresh: Freshness) -> Reuse {
    if resp_cc.no_cache || req_cc.no_cache {
        return Reuse::Revalidate;
    }
    if req_cc.max_age.is_some_and(|n| age > Duration::from_secs(n)) {
        return Reuse::Revalidate;
    }
    match fresh {
        Freshness::Fresh { ttl } => match req_cc.min_fresh {
            Some(n) if ttl < Duration::from_secs(n) => Reuse::Revalidate,
            _ => Reuse::Fresh,
        },
        Freshness::Stale { by } => {
            if forbids_stale(resp_cc) || req_cc.min_fresh.is_some() {
                Reuse::Revalidate
            } else if within(by, resp_cc.stale_while_revalidate) {
                Reuse::StaleWhileRevalidate
            } else if max_stale_accepts(req_cc, by) {
                Reuse::StaleAllowed
            } else {
                Reuse::Revalidate
            }
        }
    }
}

/// `by` ≤ `window` seconds, when there is a window.
fn within(by: Duration, window: Option<u64>) -> bool {
    window.is_some_and(|n| by <= Duration::from_secs(n))
}

fn max_stale_accepts(req_cc: &CacheControl, by: Duration) -> bool {
    match req_cc.max_stale {
        Some(MaxStale::Any) => true,
        Some(MaxStale::Seconds(n)) => by <= Duration::from_secs(n),
        None => false,
    }
}

/// How revalidating a stored response failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No response came: the origin refused or closed the connection, or timed out — the cache
    /// is "disconnected" (RFC 9111 §4.2.4).
    Unreachable,
    /// The origin answered with a 5xx status.
    ServerError,
}

/// After a failed revalidation: may the stored response be served stale (RFC 9111 §4.2.4)?
///
/// Never when [`forbids_stale`] (`must-revalidate`, `proxy-revalidate`, `s-maxage`, `no-cache`
/// in the directives this cache obeys). Otherwise yes when it is stale by at most N seconds of
/// the response's or the request's `stale-if-error=N` (RFC 5861 §4), or the request's
/// `max-stale` accepts that staleness (§5.2.1.2): explicit permissions, for either failure.
/// Without one, only when the origin is [`Failure::Unreachable`] (§4.2.4 lets a disconnected
/// cache serve stale) and the request did not ask for a validated or fresher response:
/// `no-cache` (§5.2.1.4), `min-fresh` (§5.2.1.3) or a `max-age` the copy's age exceeds
/// (§5.2.1.1) each get the error instead. A 5xx is an answer, not a disconnection: it is
/// relayed unless permitted. A still-fresh copy that needed validation (request `no-cache`,
/// `max-age`, `min-fresh`) counts as stale by zero.
pub fn serve_stale_on_error(
    stored: &Stored<'_>,
    req_cc: &CacheControl,
    now: SystemTime,
    h: Heuristic<'_>,
    failure: Failure,
) -> bool {
    let resp_cc = Directives::of(stored.headers, h.targets).cc;
    if forbids_stale(&resp_cc) {
        return false;
    }
    let by = match stored.freshness(now, h) {
        Freshness::Fresh { .. } => Duration::ZERO,
        Freshness::Stale { by } => by,
    };
    let permitted = within(by, resp_cc.stale_if_error)
        || within(by, req_cc.stale_if_error)
        || max_stale_accepts(req_cc, by);
    let age = stored.timing.current_age(now);
    let wants_validation = req_cc.no_cache
        || req_cc.min_fresh.is_some()
        || req_cc.max_age.is_some_and(|n| age > Duration::from_secs(n));
    permitted || (failure == Failure::Unreachable && !wants_validation)
}

/// True when a stored copy must never be served without a successful validation, so that on an
/// origin failure the client gets 504 (RFC 9111 §4.2.4, §5.2.2.2): the response's directives
/// (`cc`, from [`Directives`]) have `must-revalidate`, `proxy-revalidate` (we are a shared
/// cache), `s-maxage` (which implies proxy-revalidate, §5.2.2.10) or `no-cache` (§5.2.2.4,
/// listed by §4.2.4).
pub fn forbids_stale(cc: &CacheControl) -> bool {
    cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some() || cc.no_cache
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::testing::*;
    use http::header::DATE;
    use http::HeaderValue;

    /// A stored 200 received at T0 (sent at T0, Date T0 unless `headers` has one) and `now`
    /// `age` seconds later.
    fn reuse_at(headers: &[(&str, &str)], req: &[(&str, &str)], age: u64) -> Reuse {
        let mut h = hm(headers);
        if !h.contains_key(DATE) {
            h.insert(DATE, HeaderValue::from_str(&date(T0)).expect("date"));
        }
        let stored = Stored {
            status: StatusCode::OK,
            headers: &h,
            timing: Timing::new(t(T0), t(T0), &h),
        };
        let req_cc = CacheControl::from_request(&hm(req));
        let (now, h) = (t(T0 + age), Heuristic::default());
        let (reused, fresh) = judge(&stored, &req_cc, now, h);
        // `judge` reads the directives once; its freshness is the stored response's own.
        assert_eq!(fresh, stored.freshness(now, h));
        reused
    }

    #[test]
    fn reuse_table() {
        use Reuse::*;
        let cc = |v| ("cache-control", v);
        let lm = date(T0 - 1_000);
        let past = date(T0 - 50);
        let exp = date(T0 + 60);
        #[rustfmt::skip]
        let cases: Vec<(&str, Fields<'_>, Fields<'_>, u64, Reuse)> = vec![
            ("fresh at lifetime-1s", vec![cc("max-age=60")], vec![], 59, Fresh),
            ("stale at lifetime", vec![cc("max-age=60")], vec![], 60, Revalidate),
            ("stale past lifetime", vec![cc("max-age=60")], vec![], 61, Revalidate),
            ("immutable is still bounded by max-age", vec![cc("max-age=60, immutable")], vec![], 60, Revalidate),
            ("Expires fresh", vec![("expires", &exp)], vec![], 59, Fresh),
            ("Expires stale", vec![("expires", &exp)], vec![], 60, Revalidate),
            ("Age header counts: fresh", vec![cc("max-age=60"), ("age", "50")], vec![], 9, Fresh),
            ("Age header counts: stale", vec![cc("max-age=60"), ("age", "50")], vec![], 10, Revalidate),
            ("old Date counts: fresh", vec![cc("max-age=60"), ("date", &past)], vec![], 9, Fresh),
            ("old Date counts: stale", vec![cc("max-age=60"), ("date", &past)], vec![], 10, Revalidate),
            ("heuristic fresh", vec![("last-modified", &lm)], vec![], 99, Fresh),
            ("heuristic stale", vec![("last-modified", &lm)], vec![], 100, Revalidate),
            ("no info at all", vec![], vec![], 0, Revalidate),
            ("response no-cache while fresh", vec![cc("max-age=60, no-cache")], vec![], 0, Revalidate),
            ("qualified no-cache while fresh", vec![cc("max-age=60, no-cache=\"set-cookie\"")], vec![], 0, Revalidate),
            ("response no-cache beats max-stale", vec![cc("no-cache")], vec![cc("max-stale")], 0, Revalidate),
            ("request no-cache", vec![cc("max-age=60")], vec![cc("no-cache")], 0, Revalidate),
            ("request pragma no-cache", vec![cc("max-age=60")], vec![("pragma", "no-cache")], 0, Revalidate),
            ("request no-cache beats swr", vec![cc("max-age=60, stale-while-revalidate=60")], vec![cc("no-cache")], 61, Revalidate),
            ("request max-age met", vec![cc("max-age=60")], vec![cc("max-age=30")], 30, Fresh),
            ("request max-age exceeded", vec![cc("max-age=60")], vec![cc("max-age=30")], 31, Revalidate),
            ("request max-age=0 at age 0", vec![cc("max-age=60")], vec![cc("max-age=0")], 0, Fresh),
            ("request max-age=0 at age 1", vec![cc("max-age=60")], vec![cc("max-age=0")], 1, Revalidate),
            ("request max-age beats max-stale", vec![cc("max-age=10")], vec![cc("max-age=30, max-stale")], 31, Revalidate),
            ("request max-age beats swr", vec![cc("max-age=10, stale-while-revalidate=100")], vec![cc("max-age=30")], 31, Revalidate),
            ("request max-age within, stale, max-stale", vec![cc("max-age=10")], vec![cc("max-age=30, max-stale")], 20, StaleAllowed),
            ("min-fresh met exactly", vec![cc("max-age=60")], vec![cc("min-fresh=10")], 50, Fresh),
            ("min-fresh not met", vec![cc("max-age=60")], vec![cc("min-fresh=10")], 51, Revalidate),
            ("min-fresh forbids stale with max-stale", vec![cc("max-age=60")], vec![cc("min-fresh=1, max-stale")], 70, Revalidate),
            ("min-fresh forbids swr", vec![cc("max-age=60, stale-while-revalidate=60")], vec![cc("min-fresh=1")], 61, Revalidate),
            ("max-stale any", vec![cc("max-age=60")], vec![cc("max-stale")], 100_000, StaleAllowed),
            ("max-stale at its edge", vec![cc("max-age=60")], vec![cc("max-stale=5")], 65, StaleAllowed),
            ("max-stale just past", vec![cc("max-age=60")], vec![cc("max-stale=5")], 66, Revalidate),
            ("max-stale fresh is just fresh", vec![cc("max-age=60")], vec![cc("max-stale=5")], 10, Fresh),
            ("must-revalidate forbids max-stale", vec![cc("max-age=60, must-revalidate")], vec![cc("max-stale")], 61, Revalidate),
            ("proxy-revalidate forbids max-stale", vec![cc("max-age=60, proxy-revalidate")], vec![cc("max-stale")], 61, Revalidate),
            ("s-maxage forbids max-stale", vec![cc("s-maxage=60")], vec![cc("max-stale")], 61, Revalidate),
            ("must-revalidate fresh is fresh", vec![cc("max-age=60, must-revalidate")], vec![], 59, Fresh),
            ("s-maxage fresh", vec![cc("s-maxage=60, max-age=1")], vec![], 59, Fresh),
            ("swr at staleness 0", vec![cc("max-age=60, stale-while-revalidate=30")], vec![], 60, StaleWhileRevalidate),
            ("swr at its edge", vec![cc("max-age=60, stale-while-revalidate=30")], vec![], 90, StaleWhileRevalidate),
            ("swr just past", vec![cc("max-age=60, stale-while-revalidate=30")], vec![], 91, Revalidate),
            ("swr past, max-stale accepts", vec![cc("max-age=60, stale-while-revalidate=30")], vec![cc("max-stale")], 91, StaleAllowed),
            ("swr preferred to max-stale", vec![cc("max-age=60, stale-while-revalidate=30")], vec![cc("max-stale")], 70, StaleWhileRevalidate),
            ("swr fresh is fresh", vec![cc("max-age=60, stale-while-revalidate=30")], vec![], 59, Fresh),
            ("swr forbidden by must-revalidate", vec![cc("max-age=60, stale-while-revalidate=30, must-revalidate")], vec![], 61, Revalidate),
            ("swr forbidden by s-maxage", vec![cc("s-maxage=60, stale-while-revalidate=30")], vec![], 61, Revalidate),
            ("request swr means nothing", vec![cc("max-age=60")], vec![cc("stale-while-revalidate=30")], 61, Revalidate),
        ];
        for (what, resp, req, age, want) in cases {
            assert_eq!(reuse_at(&resp, &req, age), want, "{what}");
        }
    }

    /// (on a 5xx, when unreachable).
    fn stale_at(headers: &[(&str, &str)], req: &[(&str, &str)], age: u64) -> (bool, bool) {
        let h = hm(headers);
        let stored = Stored {
            status: StatusCode::OK,
            headers: &h,
            timing: Timing::new(t(T0), t(T0), &h),
        };
        let req_cc = CacheControl::from_request(&hm(req));
        let on = |f| serve_stale_on_error(&stored, &req_cc, t(T0 + age), Heuristic::default(), f);
        (on(Failure::ServerError), on(Failure::Unreachable))
    }

    /// RFC 5861 §4 and RFC 9111 §4.2.4: explicit permissions serve stale on any failure.
    #[test]
    fn stale_if_error_table() {
        let cc = |v| ("cache-control", v);
        #[rustfmt::skip]
        let cases: Vec<(&str, Fields<'_>, Fields<'_>, u64, bool)> = vec![
            ("response sie inside", vec![cc("max-age=60, stale-if-error=60")], vec![], 100, true),
            ("response sie at its edge", vec![cc("max-age=60, stale-if-error=60")], vec![], 120, true),
            ("response sie just past", vec![cc("max-age=60, stale-if-error=60")], vec![], 121, false),
            ("request sie at its edge", vec![cc("max-age=60")], vec![cc("stale-if-error=60")], 120, true),
            ("request sie just past", vec![cc("max-age=60")], vec![cc("stale-if-error=60")], 121, false),
            ("either window suffices", vec![cc("max-age=60, stale-if-error=10")], vec![cc("stale-if-error=100")], 150, true),
            ("sie=0 at staleness 0", vec![cc("max-age=60, stale-if-error=0")], vec![], 60, true),
            ("sie=0 a second later", vec![cc("max-age=60, stale-if-error=0")], vec![], 61, false),
            ("no permission", vec![cc("max-age=60")], vec![], 61, false),
            ("swr is not sie", vec![cc("max-age=60, stale-while-revalidate=600")], vec![], 61, false),
            ("max-stale any", vec![cc("max-age=60")], vec![cc("max-stale")], 10_000, true),
            ("max-stale at its edge", vec![cc("max-age=60")], vec![cc("max-stale=10")], 70, true),
            ("max-stale just past", vec![cc("max-age=60")], vec![cc("max-stale=10")], 71, false),
            ("must-revalidate forbids", vec![cc("max-age=60, stale-if-error=600, must-revalidate")], vec![cc("max-stale")], 61, false),
            ("proxy-revalidate forbids", vec![cc("max-age=60, stale-if-error=600, proxy-revalidate")], vec![], 61, false),
            ("s-maxage forbids", vec![cc("s-maxage=60, stale-if-error=600")], vec![], 61, false),
            ("no-cache forbids", vec![cc("no-cache, stale-if-error=600")], vec![], 0, false),
            ("fresh copy without permission", vec![cc("max-age=60")], vec![cc("no-cache")], 10, false),
            ("fresh copy with sie", vec![cc("max-age=60, stale-if-error=1")], vec![cc("no-cache")], 10, true),
        ];
        for (what, resp, req, age, want) in cases {
            assert_eq!(stale_at(&resp, &req, age).0, want, "{what}");
            if want {
                assert!(stale_at(&resp, &req, age).1, "{what}: unreachable too");
            }
        }
    }

    /// RFC 9111 §4.2.4: a disconnected cache may serve stale unless a directive forbids it or
    /// the request asked for validation; a 5xx needs an explicit permission.
    #[test]
    fn stale_when_disconnected_table() {
        let cc = |v| ("cache-control", v);
        // (what, response fields, request fields, age, (on a 5xx, when unreachable)).
        type Row<'a> = (&'a str, Fields<'a>, Fields<'a>, u64, (bool, bool));
        #[rustfmt::skip]
        let cases: Vec<Row<'_>> = vec![
            ("stale, no permission: only when unreachable", vec![cc("max-age=60")], vec![], 600, (false, true)),
            ("very stale still", vec![cc("max-age=60")], vec![], 1_000_000, (false, true)),
            ("heuristic lifetime", vec![("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")], vec![], 1_000_000_000, (false, true)),
            ("must-revalidate forbids", vec![cc("max-age=60, must-revalidate")], vec![], 600, (false, false)),
            ("proxy-revalidate forbids", vec![cc("max-age=60, proxy-revalidate")], vec![], 600, (false, false)),
            ("s-maxage forbids", vec![cc("s-maxage=60")], vec![], 600, (false, false)),
            ("no-cache forbids", vec![cc("no-cache")], vec![], 600, (false, false)),
            ("request no-cache gets the error", vec![cc("max-age=60")], vec![cc("no-cache")], 600, (false, false)),
            ("request pragma no-cache gets the error", vec![cc("max-age=60")], vec![("pragma", "no-cache")], 600, (false, false)),
            ("request min-fresh gets the error", vec![cc("max-age=60")], vec![cc("min-fresh=1")], 600, (false, false)),
            ("request max-age exceeded gets the error", vec![cc("max-age=60")], vec![cc("max-age=100")], 600, (false, false)),
            ("request max-age=0 gets the error", vec![cc("max-age=60")], vec![cc("max-age=0")], 600, (false, false)),
            ("request max-age not exceeded", vec![cc("max-age=60")], vec![cc("max-age=1000")], 600, (false, true)),
            ("request no-cache with max-stale", vec![cc("max-age=60")], vec![cc("no-cache, max-stale")], 600, (true, true)),
        ];
        for (what, resp, req, age, want) in cases {
            assert_eq!(stale_at(&resp, &req, age), want, "{what}");
        }
    }

    /// RFC 9213 §2.2: must-revalidate and no-cache in the targeted field count, Cache-Control's
    /// do not.
    #[test]
    fn reuse_rfc9213_targeted_table() {
        use Reuse::*;
        let at = |fields: &[(&str, &str)], req: &[(&str, &str)], age: u64| {
            let mut h = hm(fields);
            h.insert(DATE, HeaderValue::from_str(&date(T0)).expect("date"));
            let stored = Stored {
                status: StatusCode::OK,
                headers: &h,
                timing: Timing::new(t(T0), t(T0), &h),
            };
            let req_cc = CacheControl::from_request(&hm(req));
            let (reused, fresh) = judge(&stored, &req_cc, t(T0 + age), cdn());
            assert_eq!(fresh, stored.freshness(t(T0 + age), cdn()));
            (
                reused,
                serve_stale_on_error(&stored, &req_cc, t(T0 + age), cdn(), Failure::ServerError),
            )
        };
        let max_stale = [("cache-control", "max-stale")];
        // (what, response fields, request fields, age, (reuse, stale on error)).
        type Row<'a> = (&'a str, Fields<'a>, Fields<'a>, u64, (Reuse, bool));
        #[rustfmt::skip]
        let cases: Vec<Row<'_>> = vec![
            ("targeted lifetime", vec![("cdn-cache-control", "max-age=600"), ("cache-control", "max-age=1")], vec![], 300, (Fresh, false)),
            ("targeted no-cache", vec![("cdn-cache-control", "no-cache, max-age=600")], vec![], 1, (Revalidate, false)),
            ("Cache-Control no-cache ignored", vec![("cdn-cache-control", "max-age=600"), ("cache-control", "no-cache")], vec![], 1, (Fresh, false)),
            ("targeted must-revalidate forbids stale", vec![("cdn-cache-control", "max-age=60, must-revalidate")], max_stale.to_vec(), 61, (Revalidate, false)),
            ("Cache-Control must-revalidate ignored", vec![("cdn-cache-control", "max-age=60"), ("cache-control", "must-revalidate")], max_stale.to_vec(), 61, (StaleAllowed, true)),
            ("targeted stale-if-error", vec![("cdn-cache-control", "max-age=60, stale-if-error=60")], vec![], 100, (Revalidate, true)),
        ];
        for (what, resp, req, age, want) in cases {
            assert_eq!(at(&resp, &req, age), want, "{what}");
        }
    }

    #[test]
    fn forbids_stale_table() {
        let cases = [
            ("nothing", "max-age=5", false),
            ("must-revalidate", "must-revalidate", true),
            ("proxy-revalidate", "Proxy-Revalidate", true),
            ("s-maxage", "s-maxage=5", true),
            ("invalid s-maxage still present", "s-maxage=x", true),
            ("no-cache", "no-cache", true),
            ("swr", "stale-while-revalidate=5, stale-if-error=5", false),
            ("public", "public, immutable", false),
        ];
        for (what, value, want) in cases {
            assert_eq!(
                forbids_stale(&CacheControl::from_headers(&hm(&[(
                    "cache-control",
                    value
                )]))),
                want,
                "{what}"
            );
        }
        assert!(!forbids_stale(&CacheControl::default()), "no Cache-Control");
    }
}

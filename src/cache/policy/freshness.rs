//! Freshness lifetime and freshness of a response (RFC 9111 §4.2.1, §4.2.2), with this cache's heuristic and rules; pure.

use std::time::{Duration, SystemTime};

use http::header::{DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, HeaderName, StatusCode};

use super::http_date;
use super::storable::heuristically_cacheable;
use super::targeted::Directives;
use crate::cache::cache_control::CacheControl;
use crate::grammar::DELTA_SECONDS_MAX;

/// How this cache reads a response's lifetime beyond what `Cache-Control` says to every cache:
/// the target list of RFC 9213 fields it obeys instead (`targets`, see [`super::Directives`]),
/// and what it assumes about a response that states no lifetime (RFC 9111 §4.2.2): the lifetime
/// a configured rule gives its URL (`rule`, from `cache::rules`), else `percent` of (Date -
/// Last-Modified), at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heuristic<'a> {
    /// Percentage of (Date - Last-Modified) used as the lifetime.
    pub percent: u32,
    /// Upper bound of a heuristic lifetime.
    pub max: Duration,
    /// The lifetime a rule gives this response's URL, if a rule matched it.
    pub rule: Option<Lifetime>,
    /// The target list (RFC 9213 §2.2): response fields whose directives replace
    /// `Cache-Control` and `Expires` for this cache, most applicable first.
    pub targets: &'a [HeaderName],
}

impl Default for Heuristic<'_> {
    /// 10 % of the time since Last-Modified, at most 24 hours (RFC 9111 §4.2.2's suggestion); no
    /// rule, no target list.
    fn default() -> Self {
        Heuristic {
            percent: 10,
            max: Duration::from_secs(24 * 60 * 60),
            rule: None,
            targets: &[],
        }
    }
}

/// A lifetime a configured rule gives the responses of a URL that state none themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Fresh for this long (zero: revalidated on every use).
    For(Duration),
    /// The URL names bytes that never change: a 200 is fresh for [`IMMUTABLE`].
    Immutable,
}

/// The lifetime of an immutable response: the longest HTTP can state (2^31 s, RFC 9111 §1.2.2).
pub const IMMUTABLE: Duration = Duration::from_secs(DELTA_SECONDS_MAX);

/// The lifetime `h.rule` gives a response: `Immutable` only to a 200 (a 404 at an immutable URL
/// may be a file not there yet), `For(d)` to a status the heuristic may apply to (§4.2.2: one
/// heuristically cacheable, or `public`). `None` when no rule applies.
pub(super) fn rule_lifetime(
    status: StatusCode,
    cc: &CacheControl,
    h: Heuristic<'_>,
) -> Option<Duration> {
    match h.rule? {
        Lifetime::Immutable => (status == StatusCode::OK).then_some(IMMUTABLE),
        Lifetime::For(d) => (heuristically_cacheable(status) || cc.public).then_some(d),
    }
}

/// RFC 9111 §4.2.1 for a shared cache, with the directives of [`super::Directives`] (a targeted
/// field of `h.targets` in place of `Cache-Control` and `Expires`, RFC 9213 §2.2), first that
/// applies:
/// 1. `s-maxage`, 2. `max-age` (an invalid argument of either gives zero),
/// 3. `Expires - Date` (Date missing or invalid → `response_time`; an invalid Expires → zero;
///    Expires before Date → zero),
/// 4. a configured rule's lifetime for the URL (`h.rule`, see `rule_lifetime`): a heuristic
///    of this cache's choosing, which §4.2.2 allows where nothing explicit is said,
/// 5. the heuristic (§4.2.2) when there is no explicit information and the status is
///    heuristically cacheable or the response is `public`: `h.percent` of (Date -
///    Last-Modified), capped at `h.max`; zero without a valid Last-Modified or with one after
///    Date,
/// 6. else zero.
pub fn freshness_lifetime(
    status: StatusCode,
    resp: &HeaderMap,
    response_time: SystemTime,
    h: Heuristic<'_>,
) -> Duration {
    lifetime(
        status,
        resp,
        &Directives::of(resp, h.targets),
        response_time,
        h,
    )
}

/// [`freshness_lifetime`] with the response's directives already read (`d`, of `resp` and
/// `h.targets`).
pub(super) fn lifetime(
    status: StatusCode,
    resp: &HeaderMap,
    d: &Directives,
    response_time: SystemTime,
    h: Heuristic<'_>,
) -> Duration {
    let cc = &d.cc;
    if let Some(s) = cc.s_maxage.or(cc.max_age) {
        return Duration::from_secs(s);
    }
    let date = http_date(resp, &DATE, response_time).unwrap_or(response_time);
    if d.expires(resp) {
        return http_date(resp, &EXPIRES, response_time)
            .and_then(|expires| expires.duration_since(date).ok())
            .unwrap_or(Duration::ZERO);
    }
    if let Some(lifetime) = rule_lifetime(status, cc, h) {
        return lifetime;
    }
    if !(heuristically_cacheable(status) || cc.public) {
        return Duration::ZERO;
    }
    let Some(since) =
        http_date(resp, &LAST_MODIFIED, response_time).and_then(|lm| date.duration_since(lm).ok())
    else {
        return Duration::ZERO;
    };
    let scaled = since.as_nanos().saturating_mul(u128::from(h.percent)) / 100;
    if scaled >= h.max.as_nanos() {
        return h.max;
    }
    const NANOS: u128 = 1_000_000_000;
    // `scaled` < `h.max`, so it fits a Duration; the nanosecond part is < 10^9.
    u64::try_from(scaled / NANOS).map_or(h.max, |s| {
        Duration::new(s, u32::try_from(scaled % NANOS).unwrap_or(0))
    })
}

/// Whether a stored response is fresh (RFC 9111 §4.2): `Fresh` iff `lifetime > age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Fresh for `ttl` more (always > 0).
    Fresh { ttl: Duration },
    /// Stale by `by` (0 at the exact moment the lifetime is reached).
    Stale { by: Duration },
}

/// RFC 9111 §4.2: fresh iff `lifetime > current_age`.
pub fn freshness(lifetime: Duration, current_age: Duration) -> Freshness {
    if lifetime > current_age {
        Freshness::Fresh {
            ttl: lifetime - current_age,
        }
    } else {
        Freshness::Stale {
            by: current_age - lifetime,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::testing::*;

    #[test]
    fn freshness_lifetime_table() {
        let h = Heuristic::default();
        let rule = |l| Heuristic { rule: Some(l), ..h };
        let imm = rule(Lifetime::Immutable);
        let day = rule(Lifetime::For(secs(86_400)));
        let lm = |ago: u64| ("last-modified", date(T0 - ago));
        #[rustfmt::skip]
        let cases: Vec<(&str, u16, Owned, Heuristic, Duration)> = vec![
            ("s-maxage beats max-age", 200, vec![("cache-control", "max-age=100, s-maxage=10".into())], h, secs(10)),
            ("s-maxage=0 beats max-age", 200, vec![("cache-control", "s-maxage=0, max-age=100".into())], h, secs(0)),
            ("max-age", 200, vec![("cache-control", "max-age=100".into())], h, secs(100)),
            ("max-age beats Expires", 200, vec![("cache-control", "max-age=100".into()), ("expires", date(T0 + 9999))], h, secs(100)),
            ("invalid max-age: stale, no heuristic", 200, vec![("cache-control", "max-age=soon".into()), lm(100_000)], h, secs(0)),
            ("max-age on a 500", 500, vec![("cache-control", "max-age=7".into())], h, secs(7)),
            ("Expires - Date", 200, vec![("date", date(T0)), ("expires", date(T0 + 3600))], h, secs(3600)),
            ("Expires - response time without Date", 200, vec![("expires", date(T0 + 60))], h, secs(60)),
            ("Expires - response time with invalid Date", 200, vec![("date", "nope".into()), ("expires", date(T0 + 60))], h, secs(60)),
            ("Date in the future: Expires - Date", 200, vec![("date", date(T0 + 500)), ("expires", date(T0 + 600))], h, secs(100)),
            ("Date in the past: Expires - Date", 200, vec![("date", date(T0 - 500)), ("expires", date(T0 + 100))], h, secs(600)),
            ("Expires before Date", 200, vec![("date", date(T0)), ("expires", date(T0 - 1))], h, secs(0)),
            ("Expires = Date", 200, vec![("date", date(T0)), ("expires", date(T0))], h, secs(0)),
            ("Expires invalid: expired, no heuristic", 200, vec![("expires", "0".into()), lm(100_000)], h, secs(0)),
            ("obsolete RFC 850 Expires", 200, vec![("date", "Sun, 06 Nov 1994 08:49:37 GMT".into()), ("expires", "Sunday, 06-Nov-94 08:50:37 GMT".into())], h, secs(60)),
            ("obsolete asctime Expires", 200, vec![("date", "Sun, 06 Nov 1994 08:49:37 GMT".into()), ("expires", "Sun Nov  6 08:50:37 1994".into())], h, secs(60)),
            // RFC 9110 §5.6.7, RFC 9111 §4.2: a cache parses dates leniently...
            ("lower-case Expires", 200, vec![("date", "Sun, 06 Nov 1994 08:49:37 GMT".into()), ("expires", "sun, 06 nov 1994 08:50:37 gmt".into())], h, secs(60)),
            ("asctime Expires, wrong weekday", 200, vec![("date", "Sun, 06 Nov 1994 08:49:37 GMT".into()), ("expires", "Wed Nov  6 08:50:37 1994".into())], h, secs(60)),
            ("IMF Date, wrong weekday", 200, vec![("date", "Mon, 06 Nov 1994 08:49:37 GMT".into()), ("expires", "Sun, 06 Nov 1994 08:50:37 GMT".into())], h, secs(60)),
            // ...but an invalid one still means "already expired" (RFC 9111 §5.3).
            ("Expires in another zone: expired", 200, vec![("expires", "Sun, 06 Nov 2094 08:50:37 UTC".into())], h, secs(0)),
            ("Expires on 31 Nov: expired", 200, vec![("expires", "Sun, 31 Nov 2094 08:50:37 GMT".into())], h, secs(0)),
            ("lower-case Last-Modified heuristic", 200, vec![("date", date(T0)), ("last-modified", date(T0 - 10_000).to_lowercase())], h, secs(1_000)),
            ("heuristic 10 %", 200, vec![lm(10_000)], h, secs(1_000)),
            ("heuristic uses Date", 200, vec![("date", date(T0 - 1_000)), lm(11_000)], h, secs(1_000)),
            ("heuristic just under the cap", 200, vec![lm(863_990)], h, secs(86_399)),
            ("heuristic at the cap", 200, vec![lm(864_000)], h, secs(86_400)),
            ("heuristic over the cap", 200, vec![lm(100 * 86_400)], h, secs(86_400)),
            ("heuristic sub-second share", 200, vec![lm(5)], h, Duration::from_millis(500)),
            ("heuristic without Last-Modified", 200, vec![("date", date(T0))], h, secs(0)),
            ("heuristic Last-Modified after Date", 200, vec![("last-modified", date(T0 + 10))], h, secs(0)),
            ("heuristic Last-Modified invalid", 200, vec![("last-modified", "last week".into())], h, secs(0)),
            ("heuristic 404", 404, vec![lm(10_000)], h, secs(1_000)),
            ("no heuristic for 302", 302, vec![lm(10_000)], h, secs(0)),
            ("no heuristic for 206", 206, vec![lm(10_000)], h, secs(0)),
            ("heuristic for public 302", 302, vec![("cache-control", "public".into()), lm(10_000)], h, secs(1_000)),
            ("custom heuristic", 200, vec![lm(1_000)], Heuristic { percent: 50, max: secs(3600), ..h }, secs(500)),
            ("custom heuristic capped", 200, vec![lm(10_000)], Heuristic { percent: 50, max: secs(3600), ..h }, secs(3600)),
            ("huge percent does not overflow", 200, vec![lm(10_000)], Heuristic { percent: u32::MAX, max: Duration::MAX, ..h }, Duration::from_secs(10_000 * u64::from(u32::MAX) / 100)),
            ("percent 0", 200, vec![lm(10_000)], Heuristic { percent: 0, max: secs(3600), ..h }, secs(0)),
            ("nothing at all on a 302", 302, vec![], h, secs(0)),
            // A rule's lifetime: only where nothing explicit is said, before the heuristic.
            ("rule: immutable 200", 200, vec![lm(10_000)], imm, IMMUTABLE),
            ("rule: immutable without anything", 200, vec![], imm, IMMUTABLE),
            ("rule: immutable is not for a 404", 404, vec![lm(10_000)], imm, secs(1_000)),
            ("rule: immutable is not for a 301", 301, vec![], imm, secs(0)),
            ("rule: fresh beats the heuristic", 200, vec![lm(10_000)], day, secs(86_400)),
            ("rule: fresh on a 404", 404, vec![], day, secs(86_400)),
            ("rule: fresh not on a 302", 302, vec![lm(10_000)], day, secs(0)),
            ("rule: fresh on a public 302", 302, vec![("cache-control", "public".into())], day, secs(86_400)),
            ("rule: zero means revalidate", 200, vec![lm(100_000)], rule(Lifetime::For(secs(0))), secs(0)),
            ("rule: max-age wins over immutable", 200, vec![("cache-control", "max-age=60".into())], imm, secs(60)),
            ("rule: max-age=0 wins over fresh", 200, vec![("cache-control", "max-age=0".into())], day, secs(0)),
            ("rule: s-maxage wins", 200, vec![("cache-control", "s-maxage=7".into())], imm, secs(7)),
            ("rule: Expires wins", 200, vec![("date", date(T0)), ("expires", date(T0 + 30))], imm, secs(30)),
            ("rule: invalid Expires wins (stale)", 200, vec![("expires", "0".into())], imm, secs(0)),
            ("rule: no-cache does not change the lifetime", 200, vec![("cache-control", "no-cache".into())], imm, IMMUTABLE),
        ];
        for (what, code, headers, heur, want) in cases {
            let hv: Fields<'_> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(
                freshness_lifetime(status(code), &hm(&hv), t(T0), heur),
                want,
                "{what}"
            );
        }
    }

    /// RFC 9213 §2.2: the targeted field's lifetime, and no Expires beside it.
    #[test]
    fn freshness_lifetime_rfc9213_targeted_table() {
        let lm = |ago: u64| ("last-modified", date(T0 - ago));
        #[rustfmt::skip]
        let cases: Vec<(&str, Owned, Duration)> = vec![
            ("targeted max-age beats Cache-Control", vec![("cdn-cache-control", "max-age=600".into()), ("cache-control", "max-age=60".into())], secs(600)),
            ("targeted s-maxage", vec![("cdn-cache-control", "s-maxage=7, max-age=600".into())], secs(7)),
            ("Cache-Control ignored even without a targeted lifetime", vec![("cdn-cache-control", "public".into()), ("cache-control", "max-age=60".into()), lm(10_000)], secs(1_000)),
            ("Expires ignored", vec![("cdn-cache-control", "must-revalidate".into()), ("expires", date(T0 + 3600)), lm(10_000)], secs(1_000)),
            ("targeted max-age=0", vec![("cdn-cache-control", "max-age=0".into()), ("cache-control", "max-age=60".into())], secs(0)),
            ("invalid targeted field: Cache-Control", vec![("cdn-cache-control", "max-age=1.0000".into()), ("cache-control", "max-age=60".into())], secs(60)),
            ("valid field, decimal max-age ignored", vec![("cdn-cache-control", "max-age=1.0".into()), ("cache-control", "max-age=60".into())], secs(0)),
            ("invalid targeted value type: ignored, heuristic", vec![("cdn-cache-control", "max-age=\"60\"".into()), lm(10_000)], secs(1_000)),
        ];
        for (what, headers, want) in cases {
            let hv: Fields<'_> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(
                freshness_lifetime(status(200), &hm(&hv), t(T0), cdn()),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn freshness_boundaries() {
        let cases = [
            (
                "age lifetime-1s",
                secs(60),
                secs(59),
                Freshness::Fresh { ttl: secs(1) },
            ),
            (
                "age = lifetime is stale",
                secs(60),
                secs(60),
                Freshness::Stale { by: secs(0) },
            ),
            (
                "age lifetime+1s",
                secs(60),
                secs(61),
                Freshness::Stale { by: secs(1) },
            ),
            (
                "zero lifetime",
                secs(0),
                secs(0),
                Freshness::Stale { by: secs(0) },
            ),
            (
                "a nanosecond left",
                secs(60),
                secs(60) - Duration::from_nanos(1),
                Freshness::Fresh {
                    ttl: Duration::from_nanos(1),
                },
            ),
        ];
        for (what, lifetime, age, want) in cases {
            assert_eq!(freshness(lifetime, age), want, "{what}");
        }
    }
}

//! RFC 9111 shared-cache rules (store, age, freshness, reuse, validate, invalidate); pure: no I/O, no clock.

use std::time::{Duration, SystemTime};

use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_LOCATION, COOKIE, DATE,
    ETAG, EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, Method, StatusCode, Uri};

use crate::cache::cache_control::{CacheControl, MaxStale};
use crate::grammar::{trim_ows as trim, DELTA_SECONDS_MAX};

/// Why a response may not be stored (RFC 9111 §3). `as_str()` gives a short kebab-case reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// The request method is not GET (only GET responses are stored).
    Method,
    /// The status is not final, not understood, or 304.
    Status,
    /// 206: we never store partial content.
    Partial,
    /// The request carried `Cache-Control: no-store` (RFC 9111 §5.2.1.5).
    NoStoreRequest,
    /// The response carried `no-store` (RFC 9111 §5.2.2.5) without an applicable `must-understand`.
    NoStoreResponse,
    /// The response carried `private` (RFC 9111 §5.2.2.7).
    Private,
    /// The request carried `Authorization` and nothing allows shared caching (RFC 9111 §3.5).
    Authorization,
    /// `Vary: *` (RFC 9111 §4.1): no later request can ever match it.
    VaryStar,
    /// `Set-Cookie` without `public` or `s-maxage` (our choice, stricter than RFC 9111 §7.3).
    SetCookie,
    /// No explicit freshness and a status that is not heuristically cacheable (RFC 9111 §3).
    NoFreshnessInfo,
    /// No explicit freshness, no validator and no rule lifetime: it could never be reused
    /// without fetching it whole again (RFC 9111 §3 lets a cache decline to store).
    NeverReusable,
}

impl NotStorable {
    /// A short kebab-case reason for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::Status => "status",
            NotStorable::Partial => "partial",
            NotStorable::NoStoreRequest => "no-store-request",
            NotStorable::NoStoreResponse => "no-store-response",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::VaryStar => "vary-star",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::NoFreshnessInfo => "no-freshness-info",
            NotStorable::NeverReusable => "no-lifetime-no-validator",
        }
    }
}

impl std::fmt::Display for NotStorable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a shared cache may store a response (RFC 9111 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storability {
    /// A shared cache may store it.
    Storable,
    /// It must not be stored, for this reason.
    NotStorable(NotStorable),
}

/// Statuses defined as heuristically cacheable (RFC 9111 §4.2.2, RFC 9110 §15.1), minus 206
/// which we never store.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Final statuses whose semantics RFC 9110 §15 defines; we store no other (304 excluded: it only
/// ever freshens a stored response, RFC 9111 §4.3.4).
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// RFC 9111 §3 and §3.5 for a shared cache; the first failing rule, in the order of
/// [`NotStorable`]'s variants, is the reason.
///
/// - Only GET responses are stored (HEAD and every other method: `Method`).
/// - The status must be final and understood (RFC 9110 §15); 206 is `Partial`; 304 is `Status`.
/// - The request's `no-store` forbids storing (§5.2.1.5). The response's `no-store` forbids it
///   unless `must-understand` is also present (§5.2.2.3: we understand every status we store).
/// - `private`, qualified or not, forbids a shared cache (§5.2.2.7).
/// - A request with `Authorization` is stored only when the response has `public`, `s-maxage`
///   or `must-revalidate` (§3.5).
/// - `Vary: *` is `VaryStar`. `Set-Cookie` is `SetCookie` unless `public` or `s-maxage` (a
///   deliberate, safer-than-RFC choice: never hand one user's cookie to another).
/// - It needs explicit freshness (`public`, `max-age`, `s-maxage`, an `Expires` field, even an
///   invalid one which makes it stale) or a heuristically cacheable status (§4.2.2); else
///   `NoFreshnessInfo`. A response with `no-cache` IS storable (revalidated on every use) when
///   the next rule lets it be.
/// - Without a stated lifetime (`max-age`, `s-maxage`, `Expires`) it needs a validator
///   (`ETag`, a valid `Last-Modified`) or a lifetime > 0 from the rule in `h`; else
///   `NeverReusable`: it could only ever be served after fetching it whole again.
///
/// A rule never makes storable what the rules above refuse (`no-store`, `private`,
/// `Authorization`, `Vary: *`, `Set-Cookie`, a status outside §4.2.2).
pub fn storability(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
    h: Heuristic,
) -> Storability {
    let fail = Storability::NotStorable;
    if method != Method::GET {
        return fail(NotStorable::Method);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        return fail(NotStorable::Partial);
    }
    if !understood(status) {
        return fail(NotStorable::Status);
    }
    let req_cc = CacheControl::from_headers(req);
    if req_cc.no_store {
        return fail(NotStorable::NoStoreRequest);
    }
    let cc = CacheControl::from_headers(resp);
    if cc.no_store && !cc.must_understand {
        return fail(NotStorable::NoStoreResponse);
    }
    if cc.private {
        return fail(NotStorable::Private);
    }
    if req.contains_key(AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return fail(NotStorable::Authorization);
    }
    if vary_star(resp) {
        return fail(NotStorable::VaryStar);
    }
    if resp.contains_key(SET_COOKIE) && !(cc.public || cc.s_maxage.is_some()) {
        return fail(NotStorable::SetCookie);
    }
    let explicit =
        cc.public || cc.max_age.is_some() || cc.s_maxage.is_some() || resp.contains_key(EXPIRES);
    if !explicit && !heuristically_cacheable(status) {
        return fail(NotStorable::NoFreshnessInfo);
    }
    if !states_lifetime(&cc, resp)
        && validators(resp).is_empty()
        && rule_lifetime(status, &cc, h).is_none_or(|d| d.is_zero())
    {
        return fail(NotStorable::NeverReusable);
    }
    Storability::Storable
}

/// The response states its lifetime: `s-maxage`, `max-age` or `Expires` (RFC 9111 §4.2.1),
/// valid or not (an invalid one means already stale).
fn states_lifetime(cc: &CacheControl, resp: &HeaderMap) -> bool {
    cc.s_maxage.is_some() || cc.max_age.is_some() || resp.contains_key(EXPIRES)
}

/// `Vary` lists `*` on any of its field lines (RFC 9110 §12.5.5).
fn vary_star(resp: &HeaderMap) -> bool {
    resp.get_all(VARY)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b',').any(|m| trim(m) == b"*"))
}

/// May this stored response be handed to *another machine* (peer sharing)?
///
/// Never when the response is `private` or `no-store` (even with `must-understand`), when the
/// request had `no-store`, or `Vary: *`; never when the request carried `Authorization` or
/// `Cookie`, or the response `Set-Cookie`, unless the response is explicitly `public` or has
/// `s-maxage` (RFC 9111 §3.5, stricter: `must-revalidate` alone does not make it shareable).
pub fn shareable(req: &HeaderMap, resp: &HeaderMap) -> bool {
    let cc = CacheControl::from_headers(resp);
    if cc.private || cc.no_store || CacheControl::from_headers(req).no_store || vary_star(resp) {
        return false;
    }
    let credentialed = req.contains_key(AUTHORIZATION)
        || req.contains_key(COOKIE)
        || resp.contains_key(SET_COOKIE);
    !credentialed || cc.public || cc.s_maxage.is_some()
}

/// RFC 9111 §4.2.3 age bookkeeping kept with a stored response.
///
/// Invariant: `request_time` is when the request was sent, `response_time` when the response
/// head arrived (both on this node's clock); `corrected_initial_age` is the response's age at
/// `response_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When the request that produced the response was sent.
    pub request_time: SystemTime,
    /// When the response head was received.
    pub response_time: SystemTime,
    /// The response's age at `response_time`.
    pub corrected_initial_age: Duration,
}

impl Timing {
    /// From the moment the request was sent, the moment the response head arrived, and the
    /// response's headers (RFC 9111 §4.2.3):
    /// `apparent_age = max(0, response_time - Date)`,
    /// `corrected_age_value = Age + (response_time - request_time)`,
    /// `corrected_initial_age = max(apparent_age, corrected_age_value)`.
    /// A missing or invalid Date gives `apparent_age = 0`; a missing or invalid Age counts as 0;
    /// a response that "arrived before it was sent" (clock step) has no response delay.
    pub fn new(request_time: SystemTime, response_time: SystemTime, resp: &HeaderMap) -> Self {
        let apparent_age = http_date(resp, &DATE)
            .and_then(|date| response_time.duration_since(date).ok())
            .unwrap_or(Duration::ZERO);
        let age_value = resp
            .get(http::header::AGE)
            .and_then(|v| parse_delta(v.as_bytes()))
            .map_or(Duration::ZERO, Duration::from_secs);
        let response_delay = response_time
            .duration_since(request_time)
            .unwrap_or(Duration::ZERO);
        let corrected_age_value = age_value.saturating_add(response_delay);
        Timing {
            request_time,
            response_time,
            corrected_initial_age: apparent_age.max(corrected_age_value),
        }
    }

    /// `current_age = corrected_initial_age + (now - response_time)`, never negative: a `now`
    /// before `response_time` adds nothing (RFC 9111 §4.2.3).
    pub fn current_age(&self, now: SystemTime) -> Duration {
        let resident = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        self.corrected_initial_age.saturating_add(resident)
    }
}

/// delta-seconds (RFC 9111 §1.2.2), saturating at 2^31; `None` unless only digits (after OWS).
fn parse_delta(v: &[u8]) -> Option<u64> {
    crate::grammar::delta_seconds(trim(v))
}

/// The first field line of `name` as an HTTP-date (RFC 9110 §5.6.7), if valid.
fn http_date(h: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let v = h.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(v.trim()).ok()
}

/// What this cache assumes about a response that states no lifetime (RFC 9111 §4.2.2): the
/// lifetime a configured rule gives its URL (`rule`, from `cache::rules`), else `percent` of
/// (Date - Last-Modified), at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heuristic {
    /// Percentage of (Date - Last-Modified) used as the lifetime.
    pub percent: u32,
    /// Upper bound of a heuristic lifetime.
    pub max: Duration,
    /// The lifetime a rule gives this response's URL, if a rule matched it.
    pub rule: Option<Lifetime>,
}

impl Default for Heuristic {
    /// 10 % of the time since Last-Modified, at most 24 hours (RFC 9111 §4.2.2's suggestion); no
    /// rule.
    fn default() -> Self {
        Heuristic {
            percent: 10,
            max: Duration::from_secs(24 * 60 * 60),
            rule: None,
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
fn rule_lifetime(status: StatusCode, cc: &CacheControl, h: Heuristic) -> Option<Duration> {
    match h.rule? {
        Lifetime::Immutable => (status == StatusCode::OK).then_some(IMMUTABLE),
        Lifetime::For(d) => (heuristically_cacheable(status) || cc.public).then_some(d),
    }
}

/// RFC 9111 §4.2.1 for a shared cache, first that applies:
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
    h: Heuristic,
) -> Duration {
    let cc = CacheControl::from_headers(resp);
    if let Some(s) = cc.s_maxage.or(cc.max_age) {
        return Duration::from_secs(s);
    }
    let date = http_date(resp, &DATE).unwrap_or(response_time);
    if resp.contains_key(EXPIRES) {
        return http_date(resp, &EXPIRES)
            .and_then(|expires| expires.duration_since(date).ok())
            .unwrap_or(Duration::ZERO);
    }
    if let Some(lifetime) = rule_lifetime(status, &cc, h) {
        return lifetime;
    }
    if !(heuristically_cacheable(status) || cc.public) {
        return Duration::ZERO;
    }
    let Some(since) = http_date(resp, &LAST_MODIFIED).and_then(|lm| date.duration_since(lm).ok())
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
    pub fn freshness(&self, now: SystemTime, h: Heuristic) -> Freshness {
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
pub fn reuse(stored: &Stored<'_>, req_cc: &CacheControl, now: SystemTime, h: Heuristic) -> Reuse {
    let resp_cc = CacheControl::from_headers(stored.headers);
    if resp_cc.no_cache || req_cc.no_cache {
        return Reuse::Revalidate;
    }
    let age = stored.timing.current_age(now);
    if req_cc.max_age.is_some_and(|n| age > Duration::from_secs(n)) {
        return Reuse::Revalidate;
    }
    match stored.freshness(now, h) {
        Freshness::Fresh { ttl } => match req_cc.min_fresh {
            Some(n) if ttl < Duration::from_secs(n) => Reuse::Revalidate,
            _ => Reuse::Fresh,
        },
        Freshness::Stale { by } => {
            if forbids_stale(stored.headers) || req_cc.min_fresh.is_some() {
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

/// After a failed revalidation (origin unreachable, or 5xx): may the stored response be served?
///
/// Never when [`forbids_stale`]. Otherwise yes when it is stale by at most N seconds of the
/// response's or the request's `stale-if-error=N` (RFC 5861 §4), or the request's `max-stale`
/// accepts that staleness (RFC 9111 §4.2.4). A still-fresh copy that needed validation (request
/// `no-cache`, `max-age`, `min-fresh`) counts as stale by zero: served only under one of those
/// same permissions.
pub fn stale_if_error(
    stored: &Stored<'_>,
    req_cc: &CacheControl,
    now: SystemTime,
    h: Heuristic,
) -> bool {
    if forbids_stale(stored.headers) {
        return false;
    }
    let by = match stored.freshness(now, h) {
        Freshness::Fresh { .. } => Duration::ZERO,
        Freshness::Stale { by } => by,
    };
    let resp_cc = CacheControl::from_headers(stored.headers);
    within(by, resp_cc.stale_if_error)
        || within(by, req_cc.stale_if_error)
        || max_stale_accepts(req_cc, by)
}

/// True when a stored copy must never be served without a successful validation, so that on an
/// origin failure the client gets 504 (RFC 9111 §4.2.4, §5.2.2.2): the response has
/// `must-revalidate`, `proxy-revalidate` (we are a shared cache), `s-maxage` (which implies
/// proxy-revalidate, §5.2.2.10) or `no-cache` (§5.2.2.4, listed by §4.2.4).
pub fn forbids_stale(resp: &HeaderMap) -> bool {
    let cc = CacheControl::from_headers(resp);
    cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some() || cc.no_cache
}

/// RFC 9111 §4.3.1: the conditional headers for revalidating a stored response:
/// `If-None-Match` from its first `ETag`, `If-Modified-Since` from its `Last-Modified` when that
/// is a valid HTTP-date (sent as stored). Empty when it has no validators.
pub fn validators(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(etag) = stored.get(ETAG).filter(|v| !trim(v.as_bytes()).is_empty()) {
        out.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = stored.get(LAST_MODIFIED) {
        if http_date(stored, &LAST_MODIFIED).is_some() {
            out.insert(IF_MODIFIED_SINCE, lm.clone());
        }
    }
    out
}

/// Fields a 304 never changes in the stored response: the body's framing and coding (our stored
/// body is the bytes as received, so Content-Length and Content-Encoding describe it), and the
/// hop-by-hop and proxy-authentication fields a cache never stores (RFC 9111 §3.1).
const KEPT_ON_304: [HeaderName; 9] = [
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    TRANSFER_ENCODING,
    CONNECTION,
    TE,
    TRAILER,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
];

/// RFC 9111 §3.2 / §4.3.4: freshens stored headers with those of a 304. Every field of the 304
/// replaces all stored lines of the same name, except Content-Length and Content-Encoding (the
/// stored body is unchanged, §3.2 allows keeping fields that ensure its integrity), hop-by-hop
/// fields (Connection, the fields it names, Keep-Alive, Proxy-Connection, TE, Trailer,
/// Transfer-Encoding, Upgrade) and Proxy-Authenticate / Proxy-Authentication-Info /
/// Proxy-Authorization (§3.1). Stored fields the 304 lacks are kept.
pub fn merge_not_modified(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    let connection_listed: Vec<Vec<u8>> = not_modified
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|n| trim(n).to_ascii_lowercase())
        .collect();
    for name in not_modified.keys() {
        let kept = KEPT_ON_304.contains(name)
            || matches!(
                name.as_str(),
                "keep-alive" | "proxy-connection" | "proxy-authentication-info"
            )
            || connection_listed
                .iter()
                .any(|n| n.as_slice() == name.as_str().as_bytes());
        if kept {
            continue;
        }
        stored.remove(name);
        for value in not_modified.get_all(name) {
            stored.append(name.clone(), value.clone());
        }
    }
}

/// RFC 9111 §4.4: the URIs a non-error response (2xx or 3xx) to an unsafe request invalidates:
/// the target URI, then `Location` and `Content-Location` when, resolved against the target
/// (RFC 3986 §5.2: absolute, network-path `//h/x`, absolute-path `/x`, relative path `x`,
/// `../x`, query-only `?q`; fragments dropped), they have the same origin as the target
/// (scheme and host case-insensitively, effective port with 80/443 defaults). No duplicates.
/// Safe methods (GET HEAD OPTIONS TRACE) and error or 1xx statuses invalidate nothing; every
/// other method, known or not, is unsafe. Unparsable references are skipped.
pub fn invalidations(
    method: &Method,
    status: StatusCode,
    target: &Uri,
    resp: &HeaderMap,
) -> Vec<Uri> {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];
    if safe.contains(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut out = vec![target.clone()];
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(reference) = resp.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Some(uri) = resolve(target, reference.trim()) else {
            continue;
        };
        if same_origin(target, &uri) && !out.iter().any(|u| u == &uri) {
            out.push(uri);
        }
    }
    out
}

/// The port a URI names, or its scheme's default.
fn effective_port(uri: &Uri) -> Option<u16> {
    uri.port_u16().or_else(|| match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
        Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
        _ => None,
    })
}

/// Same scheme, host and effective port (RFC 6454 §4, as RFC 9110 §4.3.1 uses it).
fn same_origin(a: &Uri, b: &Uri) -> bool {
    let (Some(sa), Some(sb), Some(ha), Some(hb)) =
        (a.scheme_str(), b.scheme_str(), a.host(), b.host())
    else {
        // Origin-form target: only references resolved against it (no authority) match.
        return a.authority().is_none()
            && b.authority().is_none()
            && a.scheme().is_none()
            && b.scheme().is_none();
    };
    sa.eq_ignore_ascii_case(sb)
        && ha.eq_ignore_ascii_case(hb)
        && effective_port(a) == effective_port(b)
}

/// Resolves `reference` against `base` (RFC 3986 §5.2.2, without fragments).
fn resolve(base: &Uri, reference: &str) -> Option<Uri> {
    let reference = reference.split('#').next().unwrap_or_default();
    if has_scheme(reference) {
        let uri: Uri = reference.parse().ok()?;
        return rebuild(
            uri.scheme().cloned(),
            uri.authority().cloned(),
            &normalise(&uri),
        );
    }
    let scheme = base.scheme().cloned();
    if let Some(rest) = reference.strip_prefix("//") {
        let scheme = scheme?;
        let uri: Uri = format!("{}://{rest}", scheme.as_str()).parse().ok()?;
        return rebuild(Some(scheme), uri.authority().cloned(), &normalise(&uri));
    }
    let authority = base.authority().cloned();
    let (ref_path, ref_query) = match reference.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (reference, None),
    };
    let (path, query) = if ref_path.is_empty() {
        (base.path().to_owned(), ref_query.or(base.query()))
    } else if ref_path.starts_with('/') {
        (remove_dot_segments(ref_path), ref_query)
    } else {
        let base_path = base.path();
        let dir = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
        (remove_dot_segments(&format!("{dir}{ref_path}")), ref_query)
    };
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    rebuild(scheme, authority, &pq)
}

/// `scheme ":"` at the start of `s` (RFC 3986 §3.1).
fn has_scheme(s: &str) -> bool {
    match s.find(':') {
        Some(i) if i > 0 => {
            let scheme = &s[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        _ => false,
    }
}

/// Path (dot segments removed) and query of an absolute URI.
fn normalise(uri: &Uri) -> String {
    let path = remove_dot_segments(uri.path());
    match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

fn rebuild(scheme: Option<Scheme>, authority: Option<Authority>, pq: &str) -> Option<Uri> {
    let pq: PathAndQuery = pq.parse().ok()?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = scheme;
    parts.authority = authority;
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).ok()
}

/// RFC 3986 §5.2.4, for an absolute path; the result always starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::DELTA_SECONDS_MAX;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    /// An arbitrary whole-second origin for every test clock.
    const T0: u64 = 1_700_000_000;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(t(secs))
    }

    /// Header lines (name, value) of one table row.
    type Fields<'a> = Vec<(&'a str, &'a str)>;
    /// Header lines whose values are computed (dates).
    type Owned = Vec<(&'static str, String)>;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("test name"),
                HeaderValue::from_str(v).expect("test value"),
            );
        }
        h
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).expect("test status")
    }

    #[test]
    fn storability_table() {
        use NotStorable as R;
        let ok = Storability::Storable;
        let no = Storability::NotStorable;
        let ma = ("cache-control", "max-age=60");
        let et = ("etag", "\"v\"");
        #[rustfmt::skip]
        let cases: Vec<(&str, Method, Fields<'_>, u16, Fields<'_>, Storability)> = vec![
            ("plain GET 200 max-age", Method::GET, vec![], 200, vec![ma], ok),
            ("HEAD", Method::HEAD, vec![], 200, vec![ma], no(R::Method)),
            ("POST", Method::POST, vec![], 200, vec![ma], no(R::Method)),
            ("method beats no-store", Method::HEAD, vec![], 200, vec![("cache-control", "no-store")], no(R::Method)),
            ("1xx not final", Method::GET, vec![], 103, vec![ma], no(R::Status)),
            ("304 never stored as such", Method::GET, vec![], 304, vec![ma], no(R::Status)),
            ("unknown 2xx", Method::GET, vec![], 299, vec![ma], no(R::Status)),
            ("unknown 5xx", Method::GET, vec![], 599, vec![ma], no(R::Status)),
            ("206", Method::GET, vec![], 206, vec![ma], no(R::Partial)),
            ("500 with max-age", Method::GET, vec![], 500, vec![ma], ok),
            ("request no-store", Method::GET, vec![("cache-control", "no-store")], 200, vec![ma], no(R::NoStoreRequest)),
            ("request pragma is not no-store", Method::GET, vec![("pragma", "no-cache")], 200, vec![ma], ok),
            ("response no-store", Method::GET, vec![], 200, vec![("cache-control", "max-age=60, no-store")], no(R::NoStoreResponse)),
            ("response NO-STORE on second line", Method::GET, vec![], 200, vec![ma, ("cache-control", "NO-STORE")], no(R::NoStoreResponse)),
            ("must-understand overrides no-store", Method::GET, vec![], 200, vec![("cache-control", "must-understand, no-store, max-age=5")], ok),
            ("must-understand on a status we don't know", Method::GET, vec![], 299, vec![("cache-control", "must-understand, no-store")], no(R::Status)),
            ("private", Method::GET, vec![], 200, vec![("cache-control", "private, max-age=60")], no(R::Private)),
            ("qualified private", Method::GET, vec![], 200, vec![("cache-control", "private=\"set-cookie, x\", max-age=60")], no(R::Private)),
            ("private beats authorization", Method::GET, vec![("authorization", "Basic x")], 200, vec![("cache-control", "private")], no(R::Private)),
            ("authorization, only max-age", Method::GET, vec![("authorization", "Basic x")], 200, vec![ma], no(R::Authorization)),
            ("authorization, proxy-revalidate is not enough", Method::GET, vec![("authorization", "Basic x")], 200, vec![("cache-control", "proxy-revalidate, max-age=5")], no(R::Authorization)),
            ("authorization + public", Method::GET, vec![("authorization", "Basic x")], 200, vec![("cache-control", "public"), et], ok),
            ("authorization + s-maxage", Method::GET, vec![("authorization", "Basic x")], 200, vec![("cache-control", "s-maxage=5")], ok),
            ("authorization + must-revalidate", Method::GET, vec![("authorization", "Basic x")], 200, vec![("cache-control", "must-revalidate"), et], ok),
            ("vary star", Method::GET, vec![], 200, vec![ma, ("vary", "*")], no(R::VaryStar)),
            ("vary star in a list", Method::GET, vec![], 200, vec![ma, ("vary", "accept , *")], no(R::VaryStar)),
            ("vary star on second line", Method::GET, vec![], 200, vec![ma, ("vary", "accept"), ("vary", "*")], no(R::VaryStar)),
            ("vary named fields", Method::GET, vec![], 200, vec![ma, ("vary", "accept-encoding, *x")], ok),
            ("set-cookie + max-age", Method::GET, vec![], 200, vec![ma, ("set-cookie", "a=b")], no(R::SetCookie)),
            ("set-cookie heuristic", Method::GET, vec![], 200, vec![("set-cookie", "a=b")], no(R::SetCookie)),
            ("set-cookie + public", Method::GET, vec![], 200, vec![("cache-control", "public"), ("set-cookie", "a=b"), et], ok),
            ("set-cookie + s-maxage", Method::GET, vec![], 200, vec![("cache-control", "s-maxage=9"), ("set-cookie", "a=b")], ok),
            ("vary star beats set-cookie", Method::GET, vec![], 200, vec![("vary", "*"), ("set-cookie", "a=b")], no(R::VaryStar)),
            ("302 no info", Method::GET, vec![], 302, vec![], no(R::NoFreshnessInfo)),
            ("307 no info", Method::GET, vec![], 307, vec![("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")], no(R::NoFreshnessInfo)),
            ("302 max-age", Method::GET, vec![], 302, vec![ma], ok),
            ("302 s-maxage", Method::GET, vec![], 302, vec![("cache-control", "s-maxage=1")], ok),
            ("302 public", Method::GET, vec![], 302, vec![("cache-control", "public"), et], ok),
            ("302 expires", Method::GET, vec![], 302, vec![("expires", "Mon, 01 Jan 2024 00:00:00 GMT")], ok),
            ("302 invalid expires still explicit", Method::GET, vec![], 302, vec![("expires", "0")], ok),
            ("302 max-age=0", Method::GET, vec![], 302, vec![("cache-control", "max-age=0")], ok),
            ("302 only no-cache", Method::GET, vec![], 302, vec![("cache-control", "no-cache")], no(R::NoFreshnessInfo)),
            ("no-cache is storable", Method::GET, vec![], 200, vec![("cache-control", "no-cache"), et], ok),
        ];
        for (what, method, req, code, resp, want) in cases {
            let got = storability(
                &method,
                &hm(&req),
                status(code),
                &hm(&resp),
                Heuristic::default(),
            );
            assert_eq!(got, want, "{what}");
        }
    }

    /// Issue 9.3: a response that states no lifetime needs a validator or a rule's lifetime; a
    /// rule never lifts no-store, private, Authorization, Vary: * or Set-Cookie.
    #[test]
    fn storability_needs_a_lifetime_a_validator_or_a_rule() {
        use NotStorable as R;
        let ok = Storability::Storable;
        let no = Storability::NotStorable;
        let none = Heuristic::default();
        let rule = |l| Heuristic {
            rule: Some(l),
            ..none
        };
        let imm = rule(Lifetime::Immutable);
        let day = rule(Lifetime::For(secs(86_400)));
        let zero = rule(Lifetime::For(secs(0)));
        let auth = ("authorization", "Basic x");
        let lm = "Mon, 01 Jan 2024 00:00:00 GMT";
        #[rustfmt::skip]
        let cases: Vec<(&str, Fields<'_>, u16, Fields<'_>, Heuristic, Storability)> = vec![
            ("nothing at all", vec![], 200, vec![], none, no(R::NeverReusable)),
            ("only Date and a type", vec![], 200, vec![("date", lm), ("content-type", "text/plain")], none, no(R::NeverReusable)),
            ("ETag", vec![], 200, vec![("etag", "\"v\"")], none, ok),
            ("empty ETag is no validator", vec![], 200, vec![("etag", "")], none, no(R::NeverReusable)),
            ("Last-Modified", vec![], 200, vec![("last-modified", lm)], none, ok),
            ("invalid Last-Modified is no validator", vec![], 200, vec![("last-modified", "soon")], none, no(R::NeverReusable)),
            ("max-age", vec![], 200, vec![("cache-control", "max-age=5")], none, ok),
            ("max-age=0 still states it", vec![], 200, vec![("cache-control", "max-age=0")], none, ok),
            ("s-maxage", vec![], 200, vec![("cache-control", "s-maxage=5")], none, ok),
            ("Expires", vec![], 200, vec![("expires", lm)], none, ok),
            ("public alone states no lifetime", vec![], 200, vec![("cache-control", "public")], none, no(R::NeverReusable)),
            ("no-cache alone", vec![], 200, vec![("cache-control", "no-cache")], none, no(R::NeverReusable)),
            ("404 with nothing", vec![], 404, vec![], none, no(R::NeverReusable)),
            ("immutable rule", vec![], 200, vec![], imm, ok),
            ("immutable rule on a 404: no lifetime", vec![], 404, vec![], imm, no(R::NeverReusable)),
            ("immutable rule on a 404 with a validator", vec![], 404, vec![("etag", "\"v\"")], imm, ok),
            ("fresh rule", vec![], 200, vec![], day, ok),
            ("fresh rule on a 404", vec![], 404, vec![], day, ok),
            ("fresh rule on a 302 (not heuristic)", vec![], 302, vec![], day, no(R::NoFreshnessInfo)),
            ("zero rule without validator", vec![], 200, vec![], zero, no(R::NeverReusable)),
            ("zero rule with validator", vec![], 200, vec![("etag", "\"v\"")], zero, ok),
            ("rule vs no-store", vec![], 200, vec![("cache-control", "no-store")], imm, no(R::NoStoreResponse)),
            ("rule vs request no-store", vec![("cache-control", "no-store")], 200, vec![], imm, no(R::NoStoreRequest)),
            ("rule vs private", vec![], 200, vec![("cache-control", "private")], imm, no(R::Private)),
            ("rule vs Authorization", vec![auth], 200, vec![], imm, no(R::Authorization)),
            ("rule vs Vary: *", vec![], 200, vec![("vary", "*")], day, no(R::VaryStar)),
            ("rule vs Set-Cookie", vec![], 200, vec![("set-cookie", "a=b")], imm, no(R::SetCookie)),
            ("rule with public Authorization", vec![auth], 200, vec![("cache-control", "public")], imm, ok),
        ];
        for (what, req, code, resp, h, want) in cases {
            let got = storability(&Method::GET, &hm(&req), status(code), &hm(&resp), h);
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn storability_heuristic_statuses() {
        let validated = hm(&[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")]);
        let h = Heuristic::default();
        for code in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            let got = storability(&Method::GET, &HeaderMap::new(), status(code), &validated, h);
            assert_eq!(got, Storability::Storable, "{code}");
        }
        for code in [201, 202, 205, 302, 303, 307, 400, 403, 500, 502, 503, 504] {
            let got = storability(&Method::GET, &HeaderMap::new(), status(code), &validated, h);
            let want = Storability::NotStorable(NotStorable::NoFreshnessInfo);
            assert_eq!(got, want, "{code}");
        }
    }

    #[test]
    fn not_storable_reasons_are_distinct_kebab_case() {
        use NotStorable::*;
        let all = [
            Method,
            Status,
            Partial,
            NoStoreRequest,
            NoStoreResponse,
            Private,
            Authorization,
            VaryStar,
            SetCookie,
            NoFreshnessInfo,
            NeverReusable,
        ];
        let names: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{n}"
            );
            assert!(!names[..i].contains(n), "duplicate {n}");
        }
        assert_eq!(Authorization.to_string(), "authorization");
        assert_eq!(NoFreshnessInfo.as_str(), "no-freshness-info");
    }

    #[test]
    fn shareable_table() {
        let ma = ("cache-control", "max-age=60");
        #[rustfmt::skip]
        let cases: Vec<(&str, Fields<'_>, Fields<'_>, bool)> = vec![
            ("plain", vec![], vec![ma], true),
            ("private", vec![], vec![("cache-control", "private, public")], false),
            ("no-store", vec![], vec![("cache-control", "no-store, public")], false),
            ("no-store + must-understand still never shared", vec![], vec![("cache-control", "no-store, must-understand, public")], false),
            ("request no-store", vec![("cache-control", "no-store")], vec![ma], false),
            ("vary star", vec![], vec![ma, ("vary", "*")], false),
            ("authorization", vec![("authorization", "Bearer t")], vec![ma], false),
            ("authorization + must-revalidate: local only", vec![("authorization", "Bearer t")], vec![("cache-control", "must-revalidate")], false),
            ("authorization + public", vec![("authorization", "Bearer t")], vec![("cache-control", "public")], true),
            ("authorization + s-maxage", vec![("authorization", "Bearer t")], vec![("cache-control", "s-maxage=5")], true),
            ("cookie", vec![("cookie", "sid=1")], vec![ma], false),
            ("cookie + public", vec![("cookie", "sid=1")], vec![("cache-control", "public, max-age=5")], true),
            ("set-cookie", vec![], vec![ma, ("set-cookie", "a=b")], false),
            ("set-cookie + s-maxage", vec![], vec![("cache-control", "s-maxage=5"), ("set-cookie", "a=b")], true),
        ];
        for (what, req, resp, want) in cases {
            assert_eq!(shareable(&hm(&req), &hm(&resp)), want, "{what}");
        }
    }

    #[test]
    fn timing_table() {
        #[rustfmt::skip]
        let cases: Vec<(&str, u64, u64, Owned, Duration)> = vec![
            ("no Date, no Age: response delay", T0, T0 + 2, vec![], secs(2)),
            ("Date = response time", T0, T0 + 2, vec![("date", date(T0 + 2))], secs(2)),
            ("Date in the past beats delay", T0, T0 + 2, vec![("date", date(T0 - 98))], secs(100)),
            ("Date in the future: no apparent age", T0, T0 + 2, vec![("date", date(T0 + 500))], secs(2)),
            ("Age plus delay", T0, T0 + 2, vec![("age", "30".into())], secs(32)),
            ("Age with OWS", T0, T0 + 2, vec![("age", " 30 ".into())], secs(32)),
            ("Age vs older Date: max", T0, T0 + 2, vec![("age", "30".into()), ("date", date(T0 - 98))], secs(100)),
            ("Age beats Date", T0, T0 + 2, vec![("age", "300".into()), ("date", date(T0 - 98))], secs(302)),
            ("Age invalid ignored", T0, T0 + 2, vec![("age", "abc".into())], secs(2)),
            ("Age negative ignored", T0, T0 + 2, vec![("age", "-5".into())], secs(2)),
            ("Age list ignored", T0, T0 + 2, vec![("age", "5, 6".into())], secs(2)),
            ("Age huge saturates", T0, T0 + 2, vec![("age", "99999999999999999999".into())], secs(DELTA_SECONDS_MAX + 2)),
            ("first Age line", T0, T0, vec![("age", "7".into()), ("age", "9".into())], secs(7)),
            ("Date invalid ignored", T0, T0 + 2, vec![("date", "yesterday".into())], secs(2)),
            ("clock stepped back: no delay", T0 + 5, T0, vec![], secs(0)),
        ];
        for (what, req_t, resp_t, headers, want) in cases {
            let h: Fields<'_> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let timing = Timing::new(t(req_t), t(resp_t), &hm(&h));
            assert_eq!(timing.corrected_initial_age, want, "{what}");
            assert_eq!(timing.request_time, t(req_t), "{what}");
            assert_eq!(timing.response_time, t(resp_t), "{what}");
        }
    }

    #[test]
    fn current_age_table() {
        let timing = Timing {
            request_time: t(T0 - 1),
            response_time: t(T0),
            corrected_initial_age: secs(30),
        };
        let cases = [
            ("at arrival", t(T0), secs(30)),
            ("10 s later", t(T0 + 10), secs(40)),
            (
                "sub-second",
                t(T0) + Duration::from_millis(1500),
                Duration::from_millis(31_500),
            ),
            (
                "clock before arrival: never negative",
                t(T0 - 100),
                secs(30),
            ),
        ];
        for (what, now, want) in cases {
            assert_eq!(timing.current_age(now), want, "{what}");
        }
        let huge = Timing {
            corrected_initial_age: Duration::MAX,
            ..timing
        };
        assert_eq!(huge.current_age(t(T0 + 1)), Duration::MAX, "saturates");
    }

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
        reuse(&stored, &req_cc, t(T0 + age), Heuristic::default())
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

    fn sie_at(headers: &[(&str, &str)], req: &[(&str, &str)], age: u64) -> bool {
        let h = hm(headers);
        let stored = Stored {
            status: StatusCode::OK,
            headers: &h,
            timing: Timing::new(t(T0), t(T0), &h),
        };
        stale_if_error(
            &stored,
            &CacheControl::from_request(&hm(req)),
            t(T0 + age),
            Heuristic::default(),
        )
    }

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
            assert_eq!(sie_at(&resp, &req, age), want, "{what}");
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
                forbids_stale(&hm(&[("cache-control", value)])),
                want,
                "{what}"
            );
        }
        assert!(!forbids_stale(&HeaderMap::new()), "no Cache-Control");
    }

    #[test]
    fn validators_table() {
        let lm = "Mon, 01 Jan 2024 00:00:00 GMT";
        #[rustfmt::skip]
        let cases: Vec<(&str, Fields<'_>, Fields<'_>)> = vec![
            ("both", vec![("etag", "\"v1\""), ("last-modified", lm)], vec![("if-none-match", "\"v1\""), ("if-modified-since", lm)]),
            ("etag only", vec![("etag", "\"v1\"")], vec![("if-none-match", "\"v1\"")]),
            ("weak etag kept as is", vec![("etag", "W/\"v1\"")], vec![("if-none-match", "W/\"v1\"")]),
            ("first etag line", vec![("etag", "\"a\""), ("etag", "\"b\"")], vec![("if-none-match", "\"a\"")]),
            ("empty etag ignored", vec![("etag", "")], vec![]),
            ("last-modified only", vec![("last-modified", lm)], vec![("if-modified-since", lm)]),
            ("invalid last-modified ignored", vec![("last-modified", "yesterday")], vec![]),
            ("none", vec![("date", lm), ("cache-control", "max-age=5")], vec![]),
        ];
        for (what, stored, want) in cases {
            assert_eq!(validators(&hm(&stored)), hm(&want), "{what}");
        }
    }

    #[test]
    fn merge_not_modified_table() {
        #[rustfmt::skip]
        let cases: Vec<(&str, Fields<'_>, Fields<'_>, Fields<'_>)> = vec![
            ("replace and add",
                vec![("etag", "\"a\""), ("cache-control", "max-age=60"), ("x-old", "1"), ("date", "old")],
                vec![("etag", "\"b\""), ("cache-control", "max-age=120"), ("date", "new"), ("x-new", "2")],
                vec![("etag", "\"b\""), ("cache-control", "max-age=120"), ("x-old", "1"), ("date", "new"), ("x-new", "2")]),
            ("all lines of a name replaced by all lines of the 304",
                vec![("link", "<a>"), ("link", "<b>"), ("link", "<c>")],
                vec![("link", "<x>"), ("link", "<y>")],
                vec![("link", "<x>"), ("link", "<y>")]),
            ("content-length and content-encoding kept",
                vec![("content-length", "10"), ("content-encoding", "gzip")],
                vec![("content-length", "0"), ("content-encoding", "br")],
                vec![("content-length", "10"), ("content-encoding", "gzip")]),
            ("content-length not added",
                vec![],
                vec![("content-length", "0"), ("transfer-encoding", "chunked")],
                vec![]),
            ("hop-by-hop and connection-listed dropped",
                vec![("x-hop", "old")],
                vec![("connection", "X-Hop, close"), ("x-hop", "new"), ("keep-alive", "5"), ("proxy-connection", "x"), ("upgrade", "h2c"), ("te", "trailers"), ("trailer", "x")],
                vec![("x-hop", "old")]),
            ("proxy auth fields dropped",
                vec![],
                vec![("proxy-authenticate", "Basic"), ("proxy-authentication-info", "x"), ("proxy-authorization", "y")],
                vec![]),
            ("empty 304 changes nothing",
                vec![("etag", "\"a\""), ("vary", "accept")],
                vec![],
                vec![("etag", "\"a\""), ("vary", "accept")]),
        ];
        for (what, stored, not_modified, want) in cases {
            let mut merged = hm(&stored);
            merge_not_modified(&mut merged, &hm(&not_modified));
            assert_eq!(merged, hm(&want), "{what}");
        }
    }

    /// (what, method, status, target, response fields, URIs invalidated in order).
    type InvalidationRow = (
        &'static str,
        Method,
        u16,
        &'static str,
        Fields<'static>,
        Vec<&'static str>,
    );

    #[test]
    fn invalidations_table() {
        let purge = Method::from_bytes(b"PURGEX").expect("method");
        let target = "http://h.example/a/b";
        #[rustfmt::skip]
        let cases: Vec<InvalidationRow> = vec![
            ("GET", Method::GET, 200, target, vec![("location", "/x")], vec![]),
            ("HEAD", Method::HEAD, 200, target, vec![], vec![]),
            ("OPTIONS", Method::OPTIONS, 200, target, vec![], vec![]),
            ("TRACE", Method::TRACE, 200, target, vec![], vec![]),
            ("POST 200", Method::POST, 200, target, vec![], vec![target]),
            ("DELETE 204", Method::DELETE, 204, target, vec![], vec![target]),
            ("PATCH 200", Method::PATCH, 200, target, vec![], vec![target]),
            ("unknown method is unsafe", purge.clone(), 200, target, vec![], vec![target]),
            ("POST 303 with Location", Method::POST, 303, target, vec![("location", "/done")], vec![target, "http://h.example/done"]),
            ("POST 100", Method::POST, 100, target, vec![], vec![]),
            ("POST 404", Method::POST, 404, target, vec![("location", "/x")], vec![]),
            ("POST 500", Method::POST, 500, target, vec![], vec![]),
            ("PUT 201 Location absolute-path", Method::PUT, 201, target, vec![("location", "/items/1?v=2")], vec![target, "http://h.example/items/1?v=2"]),
            ("Content-Location too", Method::PUT, 200, target, vec![("location", "/l"), ("content-location", "/c")], vec![target, "http://h.example/l", "http://h.example/c"]),
            ("relative path", Method::POST, 201, target, vec![("location", "x")], vec![target, "http://h.example/a/x"]),
            ("dot-dot path", Method::POST, 201, target, vec![("location", "../x/./y")], vec![target, "http://h.example/x/y"]),
            ("dot-dot beyond root", Method::POST, 201, target, vec![("location", "../../../x")], vec![target, "http://h.example/x"]),
            ("query only", Method::POST, 201, target, vec![("location", "?q=1")], vec![target, "http://h.example/a/b?q=1"]),
            ("fragment dropped", Method::POST, 201, target, vec![("location", "/x#top")], vec![target, "http://h.example/x"]),
            ("same as target not repeated", Method::POST, 201, target, vec![("location", "b"), ("content-location", "http://h.example/a/b")], vec![target]),
            ("absolute same origin", Method::POST, 201, target, vec![("location", "http://h.example/z")], vec![target, "http://h.example/z"]),
            ("absolute same origin, case and default port", Method::POST, 201, target, vec![("location", "HTTP://H.Example:80/z")], vec![target, "http://H.Example:80/z"]),
            ("other host", Method::POST, 201, target, vec![("location", "http://evil.example/a/b")], vec![target]),
            ("other scheme", Method::POST, 201, target, vec![("location", "https://h.example/z")], vec![target]),
            ("other port", Method::POST, 201, target, vec![("location", "http://h.example:8080/z")], vec![target]),
            ("network-path same host", Method::POST, 201, target, vec![("location", "//h.example/n")], vec![target, "http://h.example/n"]),
            ("network-path other host", Method::POST, 201, target, vec![("content-location", "//other.example/n")], vec![target]),
            ("https default port", Method::POST, 201, "https://h.example/a", vec![("location", "https://h.example:443/z")], vec!["https://h.example/a", "https://h.example:443/z"]),
            ("explicit port target", Method::POST, 201, "http://h.example:8080/a", vec![("location", "/z"), ("content-location", "http://h.example/z")], vec!["http://h.example:8080/a", "http://h.example:8080/z"]),
            ("unparsable skipped", Method::POST, 201, target, vec![("location", "http://"), ("content-location", "/ok")], vec![target, "http://h.example/ok"]),
            ("spaces skipped", Method::POST, 201, target, vec![("location", "/a b")], vec![target]),
            ("other scheme kind skipped", Method::POST, 201, target, vec![("location", "mailto:x@h.example")], vec![target]),
            ("origin-form target, relative reference", Method::POST, 201, "/a/b", vec![("location", "c")], vec!["/a/b", "/a/c"]),
            ("origin-form target, absolute reference", Method::POST, 201, "/a/b", vec![("location", "http://h.example/c")], vec!["/a/b"]),
        ];
        for (what, method, code, target, resp, want) in cases {
            let target: Uri = target.parse().expect("target");
            let got: Vec<String> = invalidations(&method, status(code), &target, &hm(&resp))
                .iter()
                .map(Uri::to_string)
                .collect();
            assert_eq!(got, want, "{what}");
        }
        // A non-UTF-8 Location is skipped, never a panic.
        let mut resp = HeaderMap::new();
        resp.insert(LOCATION, HeaderValue::from_bytes(b"/\xff").expect("value"));
        let target: Uri = target.parse().expect("target");
        assert_eq!(
            invalidations(&Method::POST, StatusCode::OK, &target, &resp),
            vec![target]
        );
    }

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
            let _ = storability(&Method::GET, &h, StatusCode::OK, &h, Heuristic::default());
            let _ = shareable(&h, &h);
            let _ = reuse(&stored, &req_cc, t(T0 + 1), Heuristic::default());
            let _ = stale_if_error(&stored, &req_cc, t(T0 + 1), Heuristic::default());
            let _ = validators(&h);
            let mut m = h.clone();
            merge_not_modified(&mut m, &h);
            let target: Uri = "http://h.example/a".parse().expect("target");
            let _ = invalidations(&Method::POST, StatusCode::OK, &target, &h);
        }
    }
}

//! Whether a shared cache may store a response, and hand it to another machine (RFC 9111 §3, §3.5); pure, no I/O.

use http::header::{AUTHORIZATION, COOKIE, SET_COOKIE, VARY};
use http::{HeaderMap, Method, StatusCode};

use super::freshness::{rule_lifetime, Heuristic};
use super::targeted::Directives;
use super::validate::validators;
use crate::cache::cache_control::CacheControl;
use crate::grammar::trim_ows as trim;

/// Why a response may not be stored (RFC 9111 §3). `as_str()` gives a short kebab-case reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// The request method is not GET (only GET responses are stored).
    Method,
    /// The status is not final (1xx), not a valid HTTP status (600..=999), or 304.
    Status,
    /// 206: we never store partial content.
    Partial,
    /// `must-understand` on a status whose requirements this cache does not know (RFC 9111
    /// §5.2.2.3).
    MustUnderstand,
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
            NotStorable::MustUnderstand => "must-understand",
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
pub(super) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Final statuses whose semantics RFC 9110 §15 defines, the ones `must-understand` lets this cache
/// store (RFC 9111 §5.2.2.3).
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
/// - The status must be final and valid (200..=599, RFC 9110 §15) and not 304 (it only ever
///   freshens a stored response, §4.3.4): else `Status`; 206 is `Partial`. Any other final
///   status may be stored, known or not (§3), when the rules below let it.
/// - `must-understand` (§5.2.2.3) limits storing to statuses whose semantics RFC 9110 defines
///   (`MustUnderstand` for any other), and then overrides `no-store`.
/// - The request's `no-store` forbids storing (§5.2.1.5). The response's `no-store` forbids it
///   unless `must-understand` is also present.
/// - `private`, qualified or not, forbids a shared cache (§5.2.2.7).
/// - A request with `Authorization` is stored only when the response has `public`, `s-maxage`
///   or `must-revalidate` (§3.5).
/// - `Vary: *` is `VaryStar`. `Set-Cookie` is `SetCookie` unless `public` or `s-maxage` (a
///   deliberate, safer-than-RFC choice: never hand one user's cookie to another).
/// - It needs explicit freshness (`public`, `max-age`, `s-maxage`, an `Expires` field, even an
///   invalid one which makes it stale) or a heuristically cacheable status (§4.2.2, RFC 9110
///   §15.1's list); else `NoFreshnessInfo`. This is what admits an unknown status. A response with `no-cache` IS storable (revalidated on every use) when
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
    h: Heuristic<'_>,
) -> Storability {
    let fail = Storability::NotStorable;
    if method != Method::GET {
        return fail(NotStorable::Method);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        return fail(NotStorable::Partial);
    }
    if !(200..=599).contains(&status.as_u16()) || status == StatusCode::NOT_MODIFIED {
        return fail(NotStorable::Status);
    }
    let d = Directives::of(resp, h.targets);
    let cc = &d.cc;
    if cc.must_understand && !understood(status) {
        return fail(NotStorable::MustUnderstand);
    }
    let req_cc = CacheControl::from_headers(req);
    if req_cc.no_store {
        return fail(NotStorable::NoStoreRequest);
    }
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
    let explicit = cc.public || states_lifetime(&d, resp);
    if !explicit && !heuristically_cacheable(status) {
        return fail(NotStorable::NoFreshnessInfo);
    }
    if !states_lifetime(&d, resp)
        && validators(resp).is_empty()
        && rule_lifetime(status, cc, h).is_none_or(|d| d.is_zero())
    {
        return fail(NotStorable::NeverReusable);
    }
    Storability::Storable
}

/// The response states its lifetime: `s-maxage`, `max-age` or a heeded `Expires` (RFC 9111
/// §4.2.1), valid or not (an invalid one means already stale).
fn states_lifetime(d: &Directives, resp: &HeaderMap) -> bool {
    d.cc.s_maxage.is_some() || d.cc.max_age.is_some() || d.expires(resp)
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
pub fn shareable(req: &HeaderMap, resp: &HeaderMap, h: Heuristic<'_>) -> bool {
    let cc = Directives::of(resp, h.targets).cc;
    if cc.private || cc.no_store || CacheControl::from_headers(req).no_store || vary_star(resp) {
        return false;
    }
    let credentialed = req.contains_key(AUTHORIZATION)
        || req.contains_key(COOKIE)
        || resp.contains_key(SET_COOKIE);
    !credentialed || cc.public || cc.s_maxage.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::testing::*;
    use crate::cache::policy::Lifetime;
    use http::HeaderMap;

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
            // RFC 9111 §3: any final status with explicit freshness, known or not.
            ("unknown 2xx with max-age", Method::GET, vec![], 299, vec![ma], ok),
            ("unknown 5xx with max-age", Method::GET, vec![], 599, vec![ma], ok),
            ("unknown 4xx with Expires", Method::GET, vec![], 499, vec![("expires", "Mon, 01 Jan 2024 00:00:00 GMT")], ok),
            ("unknown 2xx public", Method::GET, vec![], 299, vec![("cache-control", "public"), et], ok),
            ("418 with s-maxage", Method::GET, vec![], 418, vec![("cache-control", "s-maxage=5")], ok),
            ("unknown 2xx without explicit freshness", Method::GET, vec![], 299, vec![et, ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")], no(R::NoFreshnessInfo)),
            ("600 is no HTTP status", Method::GET, vec![], 600, vec![ma], no(R::Status)),
            ("999 is no HTTP status", Method::GET, vec![], 999, vec![ma], no(R::Status)),
            ("206", Method::GET, vec![], 206, vec![ma], no(R::Partial)),
            ("500 with max-age", Method::GET, vec![], 500, vec![ma], ok),
            ("request no-store", Method::GET, vec![("cache-control", "no-store")], 200, vec![ma], no(R::NoStoreRequest)),
            ("request pragma is not no-store", Method::GET, vec![("pragma", "no-cache")], 200, vec![ma], ok),
            ("response no-store", Method::GET, vec![], 200, vec![("cache-control", "max-age=60, no-store")], no(R::NoStoreResponse)),
            ("response NO-STORE on second line", Method::GET, vec![], 200, vec![ma, ("cache-control", "NO-STORE")], no(R::NoStoreResponse)),
            ("must-understand overrides no-store", Method::GET, vec![], 200, vec![("cache-control", "must-understand, no-store, max-age=5")], ok),
            // RFC 9111 §5.2.2.3: must-understand stores only statuses we know.
            ("must-understand on a status we don't know", Method::GET, vec![], 299, vec![("cache-control", "must-understand, no-store, max-age=5")], no(R::MustUnderstand)),
            ("must-understand alone on a status we don't know", Method::GET, vec![], 299, vec![("cache-control", "must-understand, max-age=5")], no(R::MustUnderstand)),
            ("must-understand on a known 404", Method::GET, vec![], 404, vec![("cache-control", "must-understand, no-store, max-age=5")], ok),
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

    /// RFC 9213 §2.2: a targeted field on the target list replaces Cache-Control and Expires
    /// for storing; an invalid one is ignored.
    #[test]
    fn storability_rfc9213_targeted_table() {
        use NotStorable as R;
        let ok = Storability::Storable;
        let no = Storability::NotStorable;
        let cdn_cc = |v| ("cdn-cache-control", v);
        let cc = |v| ("cache-control", v);
        let et = ("etag", "\"v\"");
        let auth = ("authorization", "Basic x");
        #[rustfmt::skip]
        let cases: Vec<(&str, Fields<'_>, Fields<'_>, Storability)> = vec![
            ("max-age beside Cache-Control: no-store", vec![], vec![cdn_cc("max-age=600"), cc("no-store")], ok),
            ("no-store beside Cache-Control: max-age", vec![], vec![cdn_cc("no-store"), cc("max-age=3600")], no(R::NoStoreResponse)),
            ("private beside Cache-Control: public", vec![], vec![cdn_cc("private"), cc("public, max-age=60")], no(R::Private)),
            ("no-cache with a validator", vec![], vec![cdn_cc("no-cache"), cc("no-store"), et], ok),
            ("'none' lifts Cache-Control: no-store", vec![], vec![cdn_cc("none"), cc("no-store"), et], ok),
            ("Expires ignored: no lifetime, no validator", vec![], vec![cdn_cc("public"), ("expires", "Mon, 01 Jan 2024 00:00:00 GMT")], no(R::NeverReusable)),
            ("unknown status: Cache-Control's max-age does not count", vec![], vec![cdn_cc("none"), cc("max-age=60")], no(R::NoFreshnessInfo)),
            ("unknown status with a targeted max-age", vec![], vec![cdn_cc("max-age=60"), cc("no-store")], ok),
            ("invalid targeted field: Cache-Control decides", vec![], vec![cdn_cc("Max-Age=60"), cc("no-store")], no(R::NoStoreResponse)),
            ("empty targeted field: Cache-Control decides", vec![], vec![cdn_cc(""), cc("max-age=60")], ok),
            ("Authorization with targeted public", vec![auth], vec![cdn_cc("public, max-age=5"), cc("private")], ok),
            ("Authorization without targeted permission", vec![auth], vec![cdn_cc("max-age=5"), cc("public")], no(R::Authorization)),
            ("request no-store still wins", vec![cc("no-store")], vec![cdn_cc("max-age=5")], no(R::NoStoreRequest)),
        ];
        for (what, req, resp, want) in cases {
            let code = if what.starts_with("unknown status") {
                299
            } else {
                200
            };
            let got = storability(&Method::GET, &hm(&req), status(code), &hm(&resp), cdn());
            assert_eq!(got, want, "{what}");
        }
        // Without a target list the same field changes nothing (RFC 9213 §2.2).
        let resp = hm(&[cdn_cc("max-age=600"), cc("no-store")]);
        assert_eq!(
            storability(
                &Method::GET,
                &HeaderMap::new(),
                StatusCode::OK,
                &resp,
                Heuristic::default()
            ),
            no(R::NoStoreResponse)
        );
    }

    #[test]
    fn not_storable_reasons_are_distinct_kebab_case() {
        use NotStorable::*;
        let all = [
            Method,
            Status,
            Partial,
            MustUnderstand,
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
            assert_eq!(
                shareable(&hm(&req), &hm(&resp), Heuristic::default()),
                want,
                "{what}"
            );
        }
        // RFC 9213: the targeted field decides for our group too.
        let resp = hm(&[
            ("cdn-cache-control", "public, max-age=5"),
            ("cache-control", "private"),
        ]);
        let auth = hm(&[("authorization", "Bearer t")]);
        assert!(shareable(&auth, &resp, cdn()));
        assert!(!shareable(&auth, &resp, Heuristic::default()));
        let private = hm(&[
            ("cdn-cache-control", "private"),
            ("cache-control", "public"),
        ]);
        assert!(!shareable(&HeaderMap::new(), &private, cdn()));
    }
}

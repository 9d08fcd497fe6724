//! The `Cache-Status` member this cache appends to a proxied response (RFC 9211), built from a
//! decision value; pure, no I/O.
//!
//! The member is named `peercache` (the product: RFC 9211 §2 lets the name be one; the node
//! is in `Via`). Parameters, in this order: `hit`, or `fwd` with `fwd-status` (only when the
//! next hop's status differs from the one sent, §2.3's default), `stored` and `collapsed`; then
//! `ttl` (remaining freshness in seconds, negative when stale, §2.4); `peercache-peer` naming
//! the group member whose copy was used; `detail` with a short reason a response was not
//! stored or a stored one not used as is (§2.8). RFC 9211 §2.2's `fwd` values are a closed
//! list, so a peer answer is `fwd=uri-miss` (the request went on, to a peer) with the
//! vendor-prefixed extension parameter `peercache-peer` (§4 asks unregistered parameters to be
//! named after their vendor).

use http::StatusCode;

/// The cache's name in its member.
pub const NAME: &str = "peercache";

/// Why a request went forward (RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// Configured not to handle it (e.g. a target that has no cache key).
    Bypass,
    /// The method's semantics require forwarding (anything but GET and HEAD).
    Method,
    /// Nothing stored for the URI.
    UriMiss,
    /// Responses stored for the URI, none selected by this request's `Vary`-named fields.
    VaryMiss,
    /// A fresh response was selected, but the request's directives did not allow it.
    Request,
    /// The selected response was stale.
    Stale,
}

impl Fwd {
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
        }
    }
}

/// How this cache handled one request: the content of its `Cache-Status` member.
///
/// Invariant (RFC 9211 §2.1): `hit` and `fwd` are exclusive; `fwd_status`, `stored` and
/// `collapsed` only mean something with `fwd`, and are left out without it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatusField {
    /// Served from the store without going forward.
    pub hit: bool,
    /// Why the request went forward, when it did.
    pub fwd: Option<Fwd>,
    /// The next hop's status (origin or peer), when one answered.
    pub fwd_status: Option<StatusCode>,
    /// The response is being stored (it is committed once its body is complete and verified;
    /// a body that turns out larger than `cache.max_object_size` is passed on unstored).
    pub stored: bool,
    /// The request joined another request's fetch.
    pub collapsed: bool,
    /// Remaining freshness in whole seconds (negative: stale by that much).
    pub ttl: Option<i64>,
    /// The group member whose copy answered.
    pub peer: Option<String>,
    /// A short kebab-case reason (`NotStorable::as_str`, `too-big`, an error kind…).
    pub detail: Option<&'static str>,
}

impl CacheStatusField {
    /// The member, for a response sent with status `sent`: e.g. `peercache; hit; ttl=376`,
    /// `peercache; fwd=stale; fwd-status=304; ttl=60`, `peercache; fwd=uri-miss; detail=private`.
    pub fn member(&self, sent: StatusCode) -> String {
        let mut out = String::with_capacity(64);
        out.push_str(NAME);
        if self.hit {
            out.push_str("; hit");
        } else if let Some(fwd) = self.fwd {
            out.push_str("; fwd=");
            out.push_str(fwd.as_str());
            if let Some(s) = self.fwd_status.filter(|s| *s != sent) {
                out.push_str("; fwd-status=");
                out.push_str(s.as_str());
            }
            if self.stored {
                out.push_str("; stored");
            }
            if self.collapsed {
                out.push_str("; collapsed");
            }
        }
        if let Some(ttl) = self.ttl {
            out.push_str("; ttl=");
            if ttl < 0 {
                out.push('-');
            }
            crate::grammar::push_decimal(&mut out, ttl.unsigned_abs());
        }
        if let Some(peer) = &self.peer {
            out.push_str("; peercache-peer=");
            push_sf_string(&mut out, peer);
        }
        if let Some(detail) = self.detail {
            out.push_str("; detail=");
            if is_sf_token(detail) {
                out.push_str(detail);
            } else {
                push_sf_string(&mut out, detail);
            }
        }
        out
    }
}

/// RFC 8941 §3.3.4: `( ALPHA / "*" ) *( tchar / ":" / "/" )`.
fn is_sf_token(s: &str) -> bool {
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*');
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b))
}

/// RFC 8941 §4.1.6: a String, `"` and `\` escaped; bytes outside printable ASCII become `?`.
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9211 §2 and §3's examples, and this cache's uses of each parameter.
    #[test]
    fn rfc9211_members_table() {
        let ok = StatusCode::OK;
        let d = CacheStatusField::default;
        #[rustfmt::skip]
        let cases: Vec<(&str, CacheStatusField, StatusCode, &str)> = vec![
            ("fresh hit", CacheStatusField { hit: true, ttl: Some(376), ..d() }, ok, "peercache; hit; ttl=376"),
            ("stale hit", CacheStatusField { hit: true, ttl: Some(-412), detail: Some("connect-failed"), ..d() }, ok, "peercache; hit; ttl=-412; detail=connect-failed"),
            ("a 304 from the store is a hit", CacheStatusField { hit: true, ttl: Some(5), ..d() }, StatusCode::NOT_MODIFIED, "peercache; hit; ttl=5"),
            ("miss stored", CacheStatusField { fwd: Some(Fwd::UriMiss), fwd_status: Some(ok), stored: true, ttl: Some(60), ..d() }, ok, "peercache; fwd=uri-miss; stored; ttl=60"),
            ("miss not stored", CacheStatusField { fwd: Some(Fwd::UriMiss), fwd_status: Some(ok), detail: Some("private"), ..d() }, ok, "peercache; fwd=uri-miss; detail=private"),
            ("revalidated", CacheStatusField { fwd: Some(Fwd::Stale), fwd_status: Some(StatusCode::NOT_MODIFIED), ttl: Some(60), ..d() }, ok, "peercache; fwd=stale; fwd-status=304; ttl=60"),
            ("fresh but the request asked", CacheStatusField { fwd: Some(Fwd::Request), fwd_status: Some(StatusCode::NOT_MODIFIED), ..d() }, ok, "peercache; fwd=request; fwd-status=304"),
            ("vary miss", CacheStatusField { fwd: Some(Fwd::VaryMiss), fwd_status: Some(ok), stored: true, ..d() }, ok, "peercache; fwd=vary-miss; stored"),
            ("collapsed", CacheStatusField { fwd: Some(Fwd::UriMiss), stored: true, collapsed: true, ..d() }, ok, "peercache; fwd=uri-miss; stored; collapsed"),
            ("peer", CacheStatusField { fwd: Some(Fwd::UriMiss), fwd_status: Some(ok), stored: true, peer: Some("0a1b".into()), ..d() }, ok, "peercache; fwd=uri-miss; stored; peercache-peer=\"0a1b\""),
            ("method", CacheStatusField { fwd: Some(Fwd::Method), fwd_status: Some(StatusCode::CREATED), ..d() }, StatusCode::CREATED, "peercache; fwd=method"),
            ("bypass", CacheStatusField { fwd: Some(Fwd::Bypass), ..d() }, ok, "peercache; fwd=bypass"),
            ("a 304 made from a 200 fill", CacheStatusField { fwd: Some(Fwd::UriMiss), fwd_status: Some(ok), stored: true, ..d() }, StatusCode::NOT_MODIFIED, "peercache; fwd=uri-miss; fwd-status=200; stored"),
            ("hit excludes fwd", CacheStatusField { hit: true, fwd: Some(Fwd::Stale), stored: true, ..d() }, ok, "peercache; hit"),
            ("stored means nothing without fwd", CacheStatusField { stored: true, collapsed: true, fwd_status: Some(ok), ..d() }, ok, "peercache"),
            ("detail that is no token", CacheStatusField { hit: true, detail: Some("a b\"c"), ..d() }, ok, "peercache; hit; detail=\"a b\\\"c\""),
            ("peer with odd bytes", CacheStatusField { fwd: Some(Fwd::UriMiss), peer: Some("x\\é".into()), ..d() }, ok, "peercache; fwd=uri-miss; peercache-peer=\"x\\\\?\""),
        ];
        for (what, field, sent, want) in cases {
            let got = field.member(sent);
            assert_eq!(got, want, "{what}");
            assert!(
                http::HeaderValue::from_str(&got).is_ok(),
                "{what}: a valid field value"
            );
        }
    }

    #[test]
    fn every_fwd_value_is_one_rfc9211_defines() {
        let defined = [
            "bypass",
            "method",
            "uri-miss",
            "vary-miss",
            "miss",
            "request",
            "stale",
            "partial",
        ];
        for f in [
            Fwd::Bypass,
            Fwd::Method,
            Fwd::UriMiss,
            Fwd::VaryMiss,
            Fwd::Request,
            Fwd::Stale,
        ] {
            assert!(defined.contains(&f.as_str()), "{f:?}");
        }
    }
}

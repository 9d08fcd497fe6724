//! Parses `Cache-Control` (and a request's `Pragma`) into directives; pure, no I/O, never panics.

use http::header::{CACHE_CONTROL, PRAGMA};
use http::HeaderMap;

use crate::grammar::trim_ows as trim;

/// The largest delta-seconds value kept; bigger ones saturate to it (RFC 9111 §1.2.2).
pub use crate::grammar::DELTA_SECONDS_MAX;

/// The directives of all `Cache-Control` field lines of one message (RFC 9111 §5.2).
///
/// Invariants: every number is at most [`DELTA_SECONDS_MAX`]; a directive that occurs more than
/// once keeps its first occurrence; unknown directives are dropped; qualified `no-cache="f"` and
/// `private="f"` set the unqualified flag (RFC 9111 §5.2.2.4, §5.2.2.7).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age` (RFC 9111 §5.2.1.1, §5.2.2.1). An invalid argument gives `Some(0)`: the response
    /// is treated as stale (RFC 9111 §4.2.1).
    pub max_age: Option<u64>,
    /// `s-maxage` (RFC 9111 §5.2.2.10). An invalid argument gives `Some(0)`.
    pub s_maxage: Option<u64>,
    /// Request `max-stale` (RFC 9111 §5.2.1.2). An invalid argument drops the directive.
    pub max_stale: Option<MaxStale>,
    /// Request `min-fresh` (RFC 9111 §5.2.1.3). An invalid argument drops the directive.
    pub min_fresh: Option<u64>,
    /// `no-cache` (RFC 9111 §5.2.1.4, §5.2.2.4), qualified or not.
    pub no_cache: bool,
    /// `no-store` (RFC 9111 §5.2.1.5, §5.2.2.5).
    pub no_store: bool,
    /// `no-transform` (RFC 9111 §5.2.1.6, §5.2.2.6).
    pub no_transform: bool,
    /// Request `only-if-cached` (RFC 9111 §5.2.1.7).
    pub only_if_cached: bool,
    /// Response `must-revalidate` (RFC 9111 §5.2.2.2).
    pub must_revalidate: bool,
    /// Response `proxy-revalidate` (RFC 9111 §5.2.2.8).
    pub proxy_revalidate: bool,
    /// Response `must-understand` (RFC 9111 §5.2.2.3).
    pub must_understand: bool,
    /// Response `private` (RFC 9111 §5.2.2.7), qualified or not.
    pub private: bool,
    /// Response `public` (RFC 9111 §5.2.2.9).
    pub public: bool,
    /// Response `immutable` (RFC 8246).
    pub immutable: bool,
    /// `stale-while-revalidate` (RFC 5861 §3). An invalid argument drops the directive.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861 §4). An invalid argument drops the directive.
    pub stale_if_error: Option<u64>,
}

/// The argument of a request's `max-stale` (RFC 9111 §5.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` without an argument: a stale response of any staleness is acceptable.
    Any,
    /// `max-stale=N`: a response stale by at most N seconds is acceptable.
    Seconds(u64),
}

impl CacheControl {
    /// All Cache-Control field lines of `headers`, combined in order as one list (RFC 9111 §5.2).
    ///
    /// Directive names are case-insensitive; arguments are tokens or quoted-strings; commas
    /// inside a quoted-string do not split. Non-UTF-8 bytes are tolerated (such a directive is
    /// simply unknown or its argument invalid).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut parser = Parser::default();
        for value in headers.get_all(CACHE_CONTROL) {
            for (name, arg) in Directives::new(value.as_bytes()) {
                parser.directive(name, &arg);
            }
        }
        parser.cc
    }

    /// Same as [`CacheControl::from_headers`], for a *request*: when no Cache-Control field line
    /// is present at all, `Pragma: no-cache` sets `no_cache` (RFC 9111 §5.4). A Cache-Control
    /// field line, even one without known directives, makes `Pragma` ignored.
    pub fn from_request(headers: &HeaderMap) -> Self {
        let mut cc = Self::from_headers(headers);
        if !headers.contains_key(CACHE_CONTROL) {
            cc.no_cache = headers.get_all(PRAGMA).iter().any(|v| {
                Directives::new(v.as_bytes())
                    .any(|(name, _)| name.eq_ignore_ascii_case(b"no-cache"))
            });
        }
        cc
    }
}

/// The argument of one directive as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg<'a> {
    /// No `=`.
    Absent,
    /// A token (borrowed from the field), or a quoted-string with its quotes removed and
    /// escapes resolved.
    Value(std::borrow::Cow<'a, [u8]>),
    /// An unterminated quoted-string, or bytes after the closing quote.
    Malformed,
}

/// Parses delta-seconds (`1*DIGIT`), saturating at [`DELTA_SECONDS_MAX`] (RFC 9111 §1.2.2).
fn delta_seconds(arg: &Arg<'_>) -> Option<u64> {
    let Arg::Value(v) = arg else { return None };
    crate::grammar::delta_seconds(v)
}

/// Which directives with an argument have been seen, so that the first occurrence wins.
#[derive(Default)]
struct Parser {
    cc: CacheControl,
    seen: [bool; 6],
}

impl Parser {
    /// `true` the first time `slot` is asked for.
    fn first(&mut self, slot: usize) -> bool {
        !std::mem::replace(&mut self.seen[slot], true)
    }

    fn directive(&mut self, name: &[u8], arg: &Arg<'_>) {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let cc = &mut self.cc;
        if is("no-cache") {
            cc.no_cache = true;
        } else if is("no-store") {
            cc.no_store = true;
        } else if is("no-transform") {
            cc.no_transform = true;
        } else if is("only-if-cached") {
            cc.only_if_cached = true;
        } else if is("must-revalidate") {
            cc.must_revalidate = true;
        } else if is("proxy-revalidate") {
            cc.proxy_revalidate = true;
        } else if is("must-understand") {
            cc.must_understand = true;
        } else if is("private") {
            cc.private = true;
        } else if is("public") {
            cc.public = true;
        } else if is("immutable") {
            cc.immutable = true;
        } else if is("max-age") {
            if self.first(0) {
                self.cc.max_age = Some(delta_seconds(arg).unwrap_or(0));
            }
        } else if is("s-maxage") {
            if self.first(1) {
                self.cc.s_maxage = Some(delta_seconds(arg).unwrap_or(0));
            }
        } else if is("max-stale") {
            if self.first(2) {
                self.cc.max_stale = match arg {
                    Arg::Absent => Some(MaxStale::Any),
                    _ => delta_seconds(arg).map(MaxStale::Seconds),
                };
            }
        } else if is("min-fresh") {
            if self.first(3) {
                self.cc.min_fresh = delta_seconds(arg);
            }
        } else if is("stale-while-revalidate") {
            if self.first(4) {
                self.cc.stale_while_revalidate = delta_seconds(arg);
            }
        } else if is("stale-if-error") && self.first(5) {
            self.cc.stale_if_error = delta_seconds(arg);
        }
    }
}

/// Iterates over the `name[=arg]` elements of one field value; empty elements are skipped.
struct Directives<'a> {
    rest: &'a [u8],
}

impl<'a> Directives<'a> {
    fn new(value: &'a [u8]) -> Self {
        Directives { rest: value }
    }
}

/// Removes the quotes and escapes of a quoted-string starting at `s[0] == b'"'`.
fn unquote(s: &[u8]) -> Arg<'static> {
    let mut out = Vec::with_capacity(s.len());
    let mut iter = s.iter().skip(1);
    while let Some(&b) = iter.next() {
        match b {
            b'\\' => match iter.next() {
                Some(&escaped) => out.push(escaped),
                None => return Arg::Malformed,
            },
            b'"' => {
                return if iter.next().is_none() {
                    Arg::Value(out.into())
                } else {
                    Arg::Malformed
                };
            }
            _ => out.push(b),
        }
    }
    Arg::Malformed
}

impl<'a> Iterator for Directives<'a> {
    type Item = (&'a [u8], Arg<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            // Find the comma that ends this element, skipping quoted-strings.
            let mut quoted = false;
            let mut escaped = false;
            let mut end = self.rest.len();
            for (i, &b) in self.rest.iter().enumerate() {
                if quoted {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        quoted = false;
                    }
                } else if b == b'"' {
                    quoted = true;
                } else if b == b',' {
                    end = i;
                    break;
                }
            }
            let element = trim(&self.rest[..end]);
            self.rest = self.rest.get(end + 1..).unwrap_or_default();
            if element.is_empty() {
                continue;
            }
            let (name, arg) = match element.iter().position(|&b| b == b'=') {
                None => (element, Arg::Absent),
                Some(eq) => {
                    let raw = trim(&element[eq + 1..]);
                    let arg = if raw.first() == Some(&b'"') {
                        unquote(raw)
                    } else {
                        Arg::Value(raw.into())
                    };
                    (trim(&element[..eq]), arg)
                }
            };
            return Some((name, arg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Raw header lines (name, bytes) of one table row.
    type RawFields = Vec<(&'static str, &'static [u8])>;

    fn map(name: &'static str, lines: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append(name, HeaderValue::from_bytes(line).expect("test value"));
        }
        h
    }

    fn cc(lines: &[&[u8]]) -> CacheControl {
        CacheControl::from_headers(&map("cache-control", lines))
    }

    #[test]
    fn directives_table() {
        let d = CacheControl::default;
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<&[u8]>, CacheControl)> = vec![
            ("empty map", vec![], d()),
            ("empty value", vec![b""], d()),
            ("only commas and spaces", vec![b" , ,, "], d()),
            ("max-age", vec![b"max-age=60"], CacheControl { max_age: Some(60), ..d() }),
            ("name case-insensitive", vec![b"Max-Age=60"], CacheControl { max_age: Some(60), ..d() }),
            ("quoted max-age", vec![b"max-age=\"60\""], CacheControl { max_age: Some(60), ..d() }),
            ("OWS around =", vec![b"max-age = 60"], CacheControl { max_age: Some(60), ..d() }),
            ("max-age zero", vec![b"max-age=0"], CacheControl { max_age: Some(0), ..d() }),
            ("max-age letters is stale", vec![b"max-age=abc"], CacheControl { max_age: Some(0), ..d() }),
            ("max-age negative is stale", vec![b"max-age=-1"], CacheControl { max_age: Some(0), ..d() }),
            ("max-age no arg is stale", vec![b"max-age"], CacheControl { max_age: Some(0), ..d() }),
            ("max-age empty arg is stale", vec![b"max-age="], CacheControl { max_age: Some(0), ..d() }),
            ("max-age fraction is stale", vec![b"max-age=1.5"], CacheControl { max_age: Some(0), ..d() }),
            ("max-age unterminated quote is stale", vec![b"max-age=\"60"], CacheControl { max_age: Some(0), ..d() }),
            ("max-age junk after quote is stale", vec![b"max-age=\"60\"x"], CacheControl { max_age: Some(0), ..d() }),
            ("max-age 2^31-1 kept", vec![b"max-age=2147483647"], CacheControl { max_age: Some(2_147_483_647), ..d() }),
            ("max-age 2^31 kept", vec![b"max-age=2147483648"], CacheControl { max_age: Some(DELTA_SECONDS_MAX), ..d() }),
            ("max-age 2^31+1 saturates", vec![b"max-age=2147483649"], CacheControl { max_age: Some(DELTA_SECONDS_MAX), ..d() }),
            ("max-age beyond u64 saturates", vec![b"max-age=99999999999999999999999999"], CacheControl { max_age: Some(DELTA_SECONDS_MAX), ..d() }),
            ("leading zeros", vec![b"max-age=0007"], CacheControl { max_age: Some(7), ..d() }),
            ("duplicate: first wins", vec![b"max-age=10, max-age=20"], CacheControl { max_age: Some(10), ..d() }),
            ("duplicate across lines: first wins", vec![b"max-age=10", b"max-age=20"], CacheControl { max_age: Some(10), ..d() }),
            ("invalid first occurrence still wins", vec![b"max-age=x, max-age=20"], CacheControl { max_age: Some(0), ..d() }),
            ("s-maxage", vec![b"s-maxage=30"], CacheControl { s_maxage: Some(30), ..d() }),
            ("s-maxage invalid is stale", vec![b"s-maxage=soon"], CacheControl { s_maxage: Some(0), ..d() }),
            ("max-stale bare", vec![b"max-stale"], CacheControl { max_stale: Some(MaxStale::Any), ..d() }),
            ("max-stale seconds", vec![b"max-stale=5"], CacheControl { max_stale: Some(MaxStale::Seconds(5)), ..d() }),
            ("max-stale quoted", vec![b"max-stale=\"5\""], CacheControl { max_stale: Some(MaxStale::Seconds(5)), ..d() }),
            ("max-stale invalid dropped", vec![b"max-stale=lots"], d()),
            ("min-fresh", vec![b"min-fresh=20"], CacheControl { min_fresh: Some(20), ..d() }),
            ("min-fresh invalid dropped", vec![b"min-fresh=-5"], d()),
            ("swr and sie", vec![b"stale-while-revalidate=30, stale-if-error=600"],
                CacheControl { stale_while_revalidate: Some(30), stale_if_error: Some(600), ..d() }),
            ("swr invalid dropped", vec![b"stale-while-revalidate=x"], d()),
            ("flags", vec![b"no-cache, no-store, no-transform, only-if-cached, must-revalidate"],
                CacheControl { no_cache: true, no_store: true, no_transform: true, only_if_cached: true, must_revalidate: true, ..d() }),
            ("more flags", vec![b"PROXY-REVALIDATE,must-understand,private,public,immutable"],
                CacheControl { proxy_revalidate: true, must_understand: true, private: true, public: true, immutable: true, ..d() }),
            ("qualified no-cache with comma does not split", vec![b"no-cache=\"a, max-age=5\", max-age=9"],
                CacheControl { no_cache: true, max_age: Some(9), ..d() }),
            ("qualified private with comma does not split", vec![b"private=\"x, y\""], CacheControl { private: true, ..d() }),
            ("escaped quote inside quoted-string", vec![b"private=\"a\\\", public\", max-age=3"],
                CacheControl { private: true, max_age: Some(3), ..d() }),
            ("unterminated quote swallows the rest", vec![b"no-cache=\"a, public"], CacheControl { no_cache: true, ..d() }),
            ("unknown directives ignored", vec![b"foo, bar=\"1,2\", max-age=1"], CacheControl { max_age: Some(1), ..d() }),
            ("prefix of a name is unknown", vec![b"max-ages=5, no-cachex"], d()),
            ("non-UTF-8 ignored", vec![b"\xff\xfe, public, max-age=\xff"], CacheControl { public: true, max_age: Some(0), ..d() }),
            ("tabs and spaces", vec![b"\t public ,\tmax-age=5 "], CacheControl { public: true, max_age: Some(5), ..d() }),
            ("lines combined", vec![b"public", b"max-age=5"], CacheControl { public: true, max_age: Some(5), ..d() }),
        ];
        for (what, lines, want) in cases {
            assert_eq!(cc(&lines), want, "{what}");
        }
    }

    #[test]
    fn request_pragma_table() {
        #[rustfmt::skip]
        let cases: Vec<(&str, RawFields, bool)> = vec![
            ("pragma no-cache alone", vec![("pragma", b"no-cache")], true),
            ("pragma case-insensitive in a list", vec![("pragma", b"foo, No-Cache")], true),
            ("pragma other", vec![("pragma", b"foo")], false),
            ("cache-control present: pragma ignored", vec![("pragma", b"no-cache"), ("cache-control", b"max-age=5")], false),
            ("cache-control no-cache", vec![("cache-control", b"no-cache")], true),
            ("nothing", vec![], false),
        ];
        for (what, fields, want) in cases {
            let mut h = HeaderMap::new();
            for (n, v) in fields {
                h.append(n, HeaderValue::from_bytes(v).expect("test value"));
            }
            assert_eq!(CacheControl::from_request(&h).no_cache, want, "{what}");
        }
        // A response's Pragma is never consulted (RFC 9111 §5.4).
        assert!(!CacheControl::from_headers(&map("pragma", &[b"no-cache"])).no_cache);
    }
}

//! Targeted cache control (RFC 9213): which response directives this cache obeys — those of the
//! first field of its target list with a valid, non-empty value, in place of `Cache-Control` and
//! `Expires`; pure, never panics.
//!
//! A targeted field is a Structured Field Dictionary (RFC 8941 §3.2), parsed here as RFC 8941
//! §4.2 says: one that fails to parse, or is empty, is ignored as if absent (RFC 9213 §2.1), so
//! `CDN-Cache-Control: Max-Age=60` (upper case is no SF key) leaves `Cache-Control` in charge.
//! A directive whose value has the wrong type is ignored (§2.1: "SHOULD NOT consume values that
//! violate these inferred constraints"), parameters are ignored, and a key given twice keeps its
//! last value (RFC 8941 §4.2.2).

use http::header::EXPIRES;
use http::{HeaderMap, HeaderName};

use crate::cache::cache_control::CacheControl;
use crate::grammar::DELTA_SECONDS_MAX;

/// The response directives this cache obeys (RFC 9213 §2.2).
///
/// Invariant: `targeted` is true exactly when a field of the target list supplied `cc`; then
/// `Cache-Control` and `Expires` are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    pub cc: CacheControl,
    pub targeted: bool,
}

impl Directives {
    /// The directives of `resp` for a cache whose target list is `targets` (RFC 9213 §2.2): the
    /// first listed field present with a valid, non-empty value, else `Cache-Control`.
    pub fn of(resp: &HeaderMap, targets: &[HeaderName]) -> Directives {
        for name in targets {
            if let Some(cc) = targeted(resp, name) {
                return Directives { cc, targeted: true };
            }
        }
        Directives {
            cc: CacheControl::from_headers(resp),
            targeted: false,
        }
    }

    /// Whether the response has an `Expires` field this cache heeds (none under a targeted
    /// field, RFC 9213 §2.2).
    pub fn expires(&self, resp: &HeaderMap) -> bool {
        !self.targeted && resp.contains_key(EXPIRES)
    }
}

/// The directives of the field `name` when it is present, valid and non-empty.
fn targeted(resp: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
    let mut lines = resp.get_all(name).iter().peekable();
    lines.peek()?;
    // RFC 8941 §4.2: the lines of a field combine into one value, joined by commas.
    let mut value = Vec::new();
    for (i, line) in lines.enumerate() {
        if i > 0 {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(line.as_bytes());
    }
    let members = parse_dictionary(&value)?;
    if members.is_empty() {
        return None;
    }
    let mut cc = CacheControl::default();
    for (key, item) in &members {
        apply(&mut cc, key, item);
    }
    Some(cc)
}

/// One response directive (RFC 9111 §5.2.2, RFC 5861, RFC 8246) mapped from its SF value.
fn apply(cc: &mut CacheControl, key: &[u8], item: &Item) {
    let flag = matches!(item, Item::Bool(true));
    let seconds = match item {
        Item::Int(n) => u64::try_from(*n).ok().map(|n| n.min(DELTA_SECONDS_MAX)),
        _ => None,
    };
    match key {
        b"max-age" => cc.max_age = seconds.or(cc.max_age),
        b"s-maxage" => cc.s_maxage = seconds.or(cc.s_maxage),
        b"stale-while-revalidate" => {
            cc.stale_while_revalidate = seconds.or(cc.stale_while_revalidate);
        }
        b"stale-if-error" => cc.stale_if_error = seconds.or(cc.stale_if_error),
        // Qualified forms carry a String of field names (RFC 9213 §2.1).
        b"no-cache" => cc.no_cache = flag || matches!(item, Item::Str),
        b"private" => cc.private = flag || matches!(item, Item::Str),
        b"no-store" => cc.no_store = flag,
        b"no-transform" => cc.no_transform = flag,
        b"must-revalidate" => cc.must_revalidate = flag,
        b"proxy-revalidate" => cc.proxy_revalidate = flag,
        b"must-understand" => cc.must_understand = flag,
        b"public" => cc.public = flag,
        b"immutable" => cc.immutable = flag,
        _ => {}
    }
}

/// What a dictionary member's value is, as far as cache directives care.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Bool(bool),
    Int(i64),
    Str,
    /// A token, decimal, byte sequence or inner list: no directive takes one.
    Other,
}

/// RFC 8941 §4.2 and §4.2.2: a whole field value as a Dictionary, duplicate keys keeping their
/// last value in their first position; `None` on any syntax error.
fn parse_dictionary(input: &[u8]) -> Option<Vec<(Vec<u8>, Item)>> {
    let mut p = Parser { s: input, i: 0 };
    p.skip_sp();
    let mut members: Vec<(Vec<u8>, Item)> = Vec::new();
    while !p.done() {
        let key = p.key()?;
        let item = if p.eat(b'=') {
            p.member_value()?
        } else {
            p.parameters()?;
            Item::Bool(true)
        };
        match members.iter_mut().find(|(k, _)| *k == key) {
            Some(m) => m.1 = item,
            None => members.push((key, item)),
        }
        p.skip_ows();
        if p.done() {
            break;
        }
        if !p.eat(b',') {
            return None;
        }
        p.skip_ows();
        if p.done() {
            return None; // a trailing comma
        }
    }
    Some(members)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn skip_sp(&mut self) {
        while self.eat(b' ') {}
    }

    fn skip_ows(&mut self) {
        while self.eat(b' ') || self.eat(b'\t') {}
    }

    /// `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )` (§4.2.3.3).
    fn key(&mut self) -> Option<Vec<u8>> {
        let start = self.i;
        match self.peek()? {
            b'a'..=b'z' | b'*' => self.i += 1,
            _ => return None,
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.i += 1;
        }
        Some(self.s[start..self.i].to_vec())
    }

    /// An Item or an Inner List, with its parameters (§4.2.1.1).
    fn member_value(&mut self) -> Option<Item> {
        if self.peek() == Some(b'(') {
            self.inner_list()?;
            return Some(Item::Other);
        }
        let item = self.bare_item()?;
        self.parameters()?;
        Some(item)
    }

    /// `"(" *SP [ item *( 1*SP item ) *SP ] ")" parameters` (§4.2.1.2).
    fn inner_list(&mut self) -> Option<()> {
        self.eat(b'(');
        loop {
            self.skip_sp();
            if self.eat(b')') {
                return self.parameters();
            }
            self.bare_item()?;
            self.parameters()?;
            match self.peek()? {
                b' ' | b')' => {}
                _ => return None,
            }
        }
    }

    /// `*( ";" *SP key [ "=" bare-item ] )` (§4.2.3.2); values are ignored.
    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip_sp();
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    /// §4.2.3.1: Integer, Decimal, String, Token, Byte Sequence or Boolean.
    fn bare_item(&mut self) -> Option<Item> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b'A'..=b'Z' | b'a'..=b'z' | b'*' => {
                self.i += 1;
                while self
                    .peek()
                    .is_some_and(|b| is_tchar(b) || b == b':' || b == b'/')
                {
                    self.i += 1;
                }
                Some(Item::Other)
            }
            b':' => {
                self.i += 1;
                while self
                    .peek()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
                {
                    self.i += 1;
                }
                self.eat(b':').then_some(Item::Other)
            }
            b'?' => {
                self.i += 1;
                let v = match self.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return None,
                };
                self.i += 1;
                Some(Item::Bool(v))
            }
            _ => None,
        }
    }

    /// §4.2.4: at most 15 integer digits, or 12 + "." + 1..=3 for a Decimal.
    fn number(&mut self) -> Option<Item> {
        let negative = self.eat(b'-');
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        let int_digits = self.i - start;
        if int_digits == 0 {
            return None;
        }
        if self.eat(b'.') {
            let frac = self.i;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.i += 1;
            }
            let frac_digits = self.i - frac;
            return (int_digits <= 12 && (1..=3).contains(&frac_digits)).then_some(Item::Other);
        }
        if int_digits > 15 {
            return None;
        }
        let n: i64 = std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()?;
        Some(Item::Int(if negative { -n } else { n }))
    }

    /// §4.2.5: printable ASCII, with `\"` and `\\` as the only escapes.
    fn string(&mut self) -> Option<Item> {
        self.i += 1;
        loop {
            match self.peek()? {
                b'\\' => {
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' => self.i += 1,
                        _ => return None,
                    }
                }
                b'"' => {
                    self.i += 1;
                    return Some(Item::Str);
                }
                0x20..=0x7e => self.i += 1,
                _ => return None,
            }
        }
    }
}

/// tchar (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::testing::hm;

    fn cdn() -> Vec<HeaderName> {
        vec![HeaderName::from_static("cdn-cache-control")]
    }

    /// RFC 9213 §2.1, §2.2 and RFC 8941 §4.2: which field decides, and how it parses.
    #[test]
    fn rfc9213_directives_table() {
        let d = CacheControl::default;
        let cdn_cc = |v| ("cdn-cache-control", v);
        let cc = |v| ("cache-control", v);
        // (what, response fields, the targeted directives or None for Cache-Control).
        type Row<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<CacheControl>);
        #[rustfmt::skip]
        let cases: Vec<Row<'_>> = vec![
            // None: Cache-Control decides (targeted = false).
            ("no targeted field", vec![cc("max-age=5")], None),
            ("targeted max-age replaces no-store", vec![cdn_cc("max-age=600"), cc("no-store")], Some(CacheControl { max_age: Some(600), ..d() })),
            ("targeted no-store replaces max-age", vec![cdn_cc("no-store"), cc("max-age=3600")], Some(CacheControl { no_store: true, ..d() })),
            ("private, no-cache, must-revalidate", vec![cdn_cc("private, no-cache, must-revalidate")], Some(CacheControl { private: true, no_cache: true, must_revalidate: true, ..d() })),
            ("qualified forms are Strings", vec![cdn_cc("private=\"set-cookie\", no-cache=\"x, y\"")], Some(CacheControl { private: true, no_cache: true, ..d() })),
            ("an unknown directive is still a valid field", vec![cdn_cc("none"), cc("no-store")], Some(d())),
            ("all the numbers", vec![cdn_cc("s-maxage=1, stale-while-revalidate=2, stale-if-error=3")], Some(CacheControl { s_maxage: Some(1), stale_while_revalidate: Some(2), stale_if_error: Some(3), ..d() })),
            ("flags", vec![cdn_cc("public, immutable, proxy-revalidate, must-understand, no-transform")], Some(CacheControl { public: true, immutable: true, proxy_revalidate: true, must_understand: true, no_transform: true, ..d() })),
            ("huge max-age saturates", vec![cdn_cc("max-age=999999999999999")], Some(CacheControl { max_age: Some(DELTA_SECONDS_MAX), ..d() })),
            ("last duplicate wins", vec![cdn_cc("max-age=10, max-age=20")], Some(CacheControl { max_age: Some(20), ..d() })),
            ("lines combine", vec![cdn_cc("max-age=10"), cdn_cc("no-store")], Some(CacheControl { max_age: Some(10), no_store: true, ..d() })),
            ("?0 turns a flag off", vec![cdn_cc("no-store, no-store=?0, public=?1")], Some(CacheControl { public: true, ..d() })),
            ("parameters ignored", vec![cdn_cc("max-age=60;a=1;b, no-store;x")], Some(CacheControl { max_age: Some(60), no_store: true, ..d() })),
            ("wrong types ignored", vec![cdn_cc("max-age=1.5, s-maxage=\"60\", stale-if-error=-1, no-store=foo")], Some(d())),
            ("inner list is a valid value", vec![cdn_cc("x=(a \"b\" 1), max-age=5")], Some(CacheControl { max_age: Some(5), ..d() })),
            ("byte sequence is a valid value", vec![cdn_cc("x=:aGk=:, max-age=5")], Some(CacheControl { max_age: Some(5), ..d() })),
            ("OWS around commas", vec![cdn_cc("max-age=5 ,\tno-cache")], Some(CacheControl { max_age: Some(5), no_cache: true, ..d() })),
            // Invalid or empty: ignored, Cache-Control decides.
            ("empty", vec![cdn_cc(""), cc("max-age=5")], None),
            ("upper-case key", vec![cdn_cc("Max-Age=60"), cc("no-store")], None),
            ("trailing comma", vec![cdn_cc("max-age=60,")], None),
            ("empty member", vec![cdn_cc("max-age=60,,no-store")], None),
            ("space before =", vec![cdn_cc("max-age =60")], None),
            ("unterminated string", vec![cdn_cc("private=\"x")], None),
            ("bad escape", vec![cdn_cc("private=\"\\x\"")], None),
            ("16-digit integer", vec![cdn_cc("max-age=1234567890123456")], None),
            ("decimal with 4 fraction digits", vec![cdn_cc("x=1.2345")], None),
            ("bad boolean", vec![cdn_cc("no-store=?2")], None),
            ("unterminated inner list", vec![cdn_cc("x=(a b")], None),
            ("junk after an item", vec![cdn_cc("max-age=60 no-store")], None),
            ("leading tab", vec![cdn_cc("\tmax-age=60")], None),
        ];
        for (what, fields, want) in cases {
            let got = Directives::of(&hm(&fields), &cdn());
            match want {
                Some(cc) => assert_eq!(got, Directives { cc, targeted: true }, "{what}"),
                None => assert!(!got.targeted, "{what}: {got:?}"),
            }
        }
    }

    /// RFC 9213 §2.2: the first field of the target list with a valid value wins; Expires only
    /// counts without one; an empty target list is plain Cache-Control.
    #[test]
    fn rfc9213_target_list_order() {
        let list = [
            HeaderName::from_static("peercache-cache-control"),
            HeaderName::from_static("cdn-cache-control"),
        ];
        let both = hm(&[
            ("cdn-cache-control", "max-age=1"),
            ("peercache-cache-control", "max-age=2"),
            ("expires", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ]);
        let d = Directives::of(&both, &list);
        assert_eq!(d.cc.max_age, Some(2));
        assert!(!d.expires(&both), "a targeted field silences Expires");
        let first_invalid = hm(&[
            ("cdn-cache-control", "max-age=1"),
            ("peercache-cache-control", "Bad"),
        ]);
        assert_eq!(Directives::of(&first_invalid, &list).cc.max_age, Some(1));
        let plain = Directives::of(&both, &[]);
        assert_eq!((plain.targeted, plain.cc.max_age), (false, None));
        assert!(plain.expires(&both));
    }

    #[test]
    fn hostile_values_never_panic() {
        let nasty: [&[u8]; 8] = [
            b"\xff",
            b"a=\"\xff\"",
            b"a=(((",
            b"a=-",
            b"a=:",
            b"a=?",
            b"-99999999999999999",
            b"a;",
        ];
        for v in nasty {
            let mut h = HeaderMap::new();
            h.insert(
                "cdn-cache-control",
                http::HeaderValue::from_bytes(v).expect("value"),
            );
            assert!(!Directives::of(&h, &cdn()).targeted, "{v:?}");
        }
    }
}

//! Cache keys: the primary key of a request target and the Vary secondary key; pure, no I/O.

use std::fmt;

use http::{HeaderMap, HeaderName, Uri};

use crate::grammar::{is_ows, trim_ows};

/// The primary cache key of a request target (RFC 9111 §2): `scheme://host[:port]/path[?query]`.
///
/// Invariant: the scheme is `http` or `https`; scheme and host are lower-cased; the default port
/// (80 for http, 443 for https) and an empty port are dropped, a port with leading zeros is
/// written without them; userinfo and fragment are never part of the key; an empty path is `/`;
/// the hex digits of every percent-encoding in path and query are upper-case (RFC 3986 §6.2.2.1).
/// Nothing else is rewritten: the query keeps its order, `?` with an empty query is kept
/// (RFC 3986 §6.2.3), percent-encoded unreserved characters and dot-segments are left as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

/// The id of a (normalised) key string in the store, on disk and in the peer group: its blake3.
pub fn key_hash(key: &str) -> [u8; 32] {
    blake3::hash(key.as_bytes()).into()
}

impl CacheKey {
    /// The key of an absolute URI. None if the URI has no scheme or host, the scheme is not
    /// http/https, or the port is not a number in 0..=65535.
    pub fn from_uri(uri: &Uri) -> Option<Self> {
        // Built with one allocation, the key itself: this runs for every request.
        let scheme = uri.scheme_str()?;
        let (scheme, default_port) = if scheme.eq_ignore_ascii_case("http") {
            ("http", 80)
        } else if scheme.eq_ignore_ascii_case("https") {
            ("https", 443)
        } else {
            return None;
        };
        let authority = uri.authority()?.as_str();
        // Userinfo is not part of the target's identity (RFC 9110 §4.2.4 deprecates it).
        let host_port = match authority.rfind('@') {
            Some(at) => &authority[at + 1..],
            None => authority,
        };
        let (host, port) = split_host_port(host_port)?;
        if host.is_empty() {
            return None;
        }

        let mut key = String::with_capacity(
            scheme.len() + authority.len() + uri.path().len() + uri.query().map_or(0, str::len) + 8,
        );
        key.push_str(scheme);
        key.push_str("://");
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            key.push_str(&host.to_ascii_lowercase());
        } else {
            key.push_str(host);
        }
        if let Some(port) = port {
            if port != default_port {
                key.push(':');
                crate::grammar::push_decimal(&mut key, port.into());
            }
        }
        let path = uri.path();
        if path.is_empty() {
            key.push('/');
        } else {
            push_upper_percent(&mut key, path);
        }
        if let Some(query) = uri.query() {
            key.push('?');
            push_upper_percent(&mut key, query);
        }
        Some(CacheKey(key))
    }

    /// The key as a string; equal keys have equal strings.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// blake3 of the key string: the id peers use for this key.
    pub fn hash(&self) -> [u8; 32] {
        key_hash(&self.0)
    }

    /// Hex form of `hash()` (64 lowercase hex chars).
    pub fn hash_hex(&self) -> String {
        blake3::hash(self.0.as_bytes()).to_hex().to_string()
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `host[:port]` (host possibly an IP literal in brackets). The port is None when absent
/// or empty (RFC 3986 §6.2.3); the whole split is None when the port is not a u16.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, rest) = if s.starts_with('[') {
        let close = s.find(']')?;
        s.split_at(close + 1)
    } else {
        match s.rfind(':') {
            Some(colon) => s.split_at(colon),
            None => (s, ""),
        }
    };
    let port = match rest.strip_prefix(':') {
        None if rest.is_empty() => None,
        None => return None,
        Some("") => None,
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            let trimmed = digits.trim_start_matches('0');
            if trimmed.is_empty() {
                Some(0)
            } else if trimmed.len() > 5 {
                return None;
            } else {
                Some(trimmed.parse::<u16>().ok()?)
            }
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// Appends `s` with the two hex digits after each `%` upper-cased (RFC 3986 §6.2.2.1); a `%`
/// not followed by two hex digits is copied as is.
fn push_upper_percent(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            out.push('%');
            out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
            out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
            i += 3;
        } else {
            // Copy the run up to the next '%' in one go (keeps UTF-8 boundaries intact).
            let end = bytes[i + 1..]
                .iter()
                .position(|&c| c == b'%')
                .map_or(bytes.len(), |p| i + 1 + p);
            out.push_str(&s[i..end]);
            i = end;
        }
    }
}

/// The Vary field of a response (RFC 9110 §12.5.5, RFC 9111 §4.1).
///
/// Invariant: `Fields` is non-empty, lower-cased, deduplicated and sorted by name. `Any` never
/// matches a request: it comes from `*` anywhere in the field, or from a member that is not a
/// valid field name (a Vary the cache cannot evaluate must not be served from the cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No Vary field, or only empty list members: the response does not vary.
    None,
    /// `*` (or an unparseable member): a stored response never matches (RFC 9111 §4.1).
    Any,
    /// The named request fields select the response.
    Fields(Vec<HeaderName>),
}

impl Vary {
    /// Reads every Vary line of a response. RFC 9110 §12.5.5, RFC 9110 §5.6.1 (empty list
    /// members are ignored).
    pub fn from_headers(resp: &HeaderMap) -> Self {
        let mut names: Vec<HeaderName> = Vec::new();
        for line in resp.get_all(http::header::VARY) {
            for member in line.as_bytes().split(|&b| b == b',') {
                let member = trim_ows(member);
                if member.is_empty() {
                    continue;
                }
                if member == b"*" {
                    return Vary::Any;
                }
                match HeaderName::from_bytes(member) {
                    Ok(name) => names.push(name),
                    Err(_) => return Vary::Any,
                }
            }
        }
        if names.is_empty() {
            return Vary::None;
        }
        Vary::sorted(names)
    }

    /// This Vary plus the request fields `extra` (a rule's `key_fields`), as if the response
    /// had named them too; `Any` stays `Any`, and no extra fields change nothing.
    pub fn with_fields(self, extra: &[HeaderName]) -> Self {
        if extra.is_empty() {
            return self;
        }
        let mut names = match self {
            Vary::Any => return Vary::Any,
            Vary::None => Vec::new(),
            Vary::Fields(names) => names,
        };
        names.extend_from_slice(extra);
        Vary::sorted(names)
    }

    /// `Fields` of non-empty `names`, sorted by name and deduplicated (the invariant).
    fn sorted(mut names: Vec<HeaderName>) -> Self {
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        Vary::Fields(names)
    }
}

/// The secondary cache key (RFC 9111 §4.1): the request's values of the fields named by Vary.
///
/// Encoding (injective): one line per Vary field in the order of [`Vary::Fields`], lines joined
/// with `\n`. A field absent from the request is written as its bare name; a present field as
/// `name=value`, so absent and empty (`name=`) differ. The value is normalised (all field lines
/// combined with `", "`, whitespace around commas removed, runs of SP/HTAB folded to one SP,
/// leading and trailing whitespace removed; `Accept-Encoding` and `Accept-Language` further by
/// [`negotiated`], RFC 9111 §4.1's "normalizing both header field values") and then escaped: `%`, `=` and every byte outside
/// visible ASCII and SP become `%XX`. Names never contain `=`, `%`-escaped values never contain
/// `\n` or `=`, so two different (name, value) lists never give the same string. The string is
/// empty exactly for a response without Vary.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Variant(String);

impl Variant {
    /// The variant a request selects under `vary`; None for `Vary::Any` (never matches).
    /// RFC 9111 §4.1.
    pub fn of_request(vary: &Vary, req: &HeaderMap) -> Option<Self> {
        let names = match vary {
            Vary::None => return Some(Variant::default()),
            Vary::Any => return None,
            Vary::Fields(names) => names,
        };
        let mut out = String::new();
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(name.as_str());
            let mut lines = req.get_all(name).iter().peekable();
            if lines.peek().is_none() {
                continue;
            }
            let mut combined: Vec<u8> = Vec::new();
            for (j, line) in lines.enumerate() {
                if j > 0 {
                    combined.extend_from_slice(b", ");
                }
                combined.extend_from_slice(line.as_bytes());
            }
            out.push('=');
            let value = negotiated(name, &combined).unwrap_or_else(|| normalise(&combined));
            escape_into(&mut out, &value);
        }
        Some(Variant(out))
    }

    /// The encoded form, as persisted by the store.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a variant from a string previously returned by [`Variant::as_str`].
    pub fn from_stored(s: String) -> Self {
        Variant(s)
    }
}

/// Whitespace around commas removed, inner runs of SP/HTAB folded to one SP, ends trimmed.
fn normalise(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for (i, member) in value.split(|&b| b == b',').enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut in_ws = false;
        for &b in trim_ows(member) {
            if is_ows(b) {
                in_ws = true;
            } else {
                if in_ws {
                    out.push(b' ');
                    in_ws = false;
                }
                out.push(b);
            }
        }
    }
    out
}

/// The canonical form of an `Accept-Encoding` or `Accept-Language` value: two values with the
/// same canonical form select the same representation (RFC 9110 §12.5.3, §12.5.4). `None` for
/// any other field, or a value this cannot read (then [`normalise`] keeps it as sent).
///
/// Each member is `token [ OWS ";" OWS "q=" qvalue ]` (RFC 9110 §12.4.2): names are lower-cased,
/// a weight of 1 (`q=1`, `q=1.000`, none) is dropped and any other is written in its shortest
/// form (`q=0.5`), exact duplicates are dropped, and members are ordered by descending weight.
/// Within one weight, codings are sorted by name (the server picks among equally acceptable
/// codings), while language ranges keep their order (RFC 9110 §12.5.4: some servers read it as
/// a priority). `q=0` members stay: "not acceptable" changes the choice. Empty members are
/// dropped (RFC 9110 §5.6.1); an empty value stays empty.
fn negotiated(name: &HeaderName, value: &[u8]) -> Option<Vec<u8>> {
    let sort_names = if name == http::header::ACCEPT_ENCODING {
        true
    } else if name == http::header::ACCEPT_LANGUAGE {
        false
    } else {
        return None;
    };
    let mut members: Vec<(Vec<u8>, u16)> = Vec::new();
    for member in value.split(|&b| b == b',') {
        let member = trim_ows(member);
        if member.is_empty() {
            continue;
        }
        let (token, weight) = match member.iter().position(|&b| b == b';') {
            None => (member, 1000),
            Some(i) => (trim_ows(&member[..i]), weight(trim_ows(&member[i + 1..]))?),
        };
        let token_ok = !token.is_empty()
            && token
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token_ok {
            return None;
        }
        let m = (token.to_ascii_lowercase(), weight);
        if !members.contains(&m) {
            members.push(m);
        }
    }
    if sort_names {
        members.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    } else {
        members.sort_by_key(|m| std::cmp::Reverse(m.1)); // stable: keeps the order within a weight
    }
    let mut out = Vec::with_capacity(value.len());
    for (i, (token, w)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(token);
        if *w < 1000 {
            let digits = format!("{w:03}");
            out.extend_from_slice(b";q=0.");
            out.extend_from_slice(digits.trim_end_matches('0').as_bytes());
            if *w == 0 {
                out.pop(); // "q=0." → "q=0"
            }
        }
    }
    Some(out)
}

/// `"q=" qvalue` (RFC 9110 §12.4.2, `q` case-insensitive) in thousandths; `None` otherwise.
fn weight(param: &[u8]) -> Option<u16> {
    let [q, b'=', value @ ..] = param else {
        return None;
    };
    if !q.eq_ignore_ascii_case(&b'q') {
        return None;
    }
    let (int, frac) = match value.iter().position(|&b| b == b'.') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = frac
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn escape_into(out: &mut String, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        if (b' '..=b'~').contains(&b) && b != b'%' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Header lines (name, raw value) of one table row.
    type Fields = Vec<(&'static str, &'static [u8])>;

    fn key(s: &str) -> Option<String> {
        let uri: Uri = s.parse().ok()?;
        CacheKey::from_uri(&uri).map(|k| k.as_str().to_owned())
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("test name");
            let value = HeaderValue::from_bytes(value).expect("test value");
            map.append(name, value);
        }
        map
    }

    fn names(list: &[&str]) -> Vary {
        Vary::Fields(
            list.iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).expect("test name"))
                .collect(),
        )
    }

    #[test]
    fn primary_key_normalisation() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://example.com/a", Some("http://example.com/a")),
            ("http://example.com", Some("http://example.com/")),
            ("http://example.com:80/a", Some("http://example.com/a")),
            ("http://example.com:080/a", Some("http://example.com/a")),
            ("http://example.com:/a", Some("http://example.com/a")),
            ("http://example.com:443/a", Some("http://example.com:443/a")),
            ("https://example.com:443/a", Some("https://example.com/a")),
            ("https://example.com:80/a", Some("https://example.com:80/a")),
            (
                "https://example.com:8443",
                Some("https://example.com:8443/"),
            ),
            (
                "HTTP://ExAmple.COM/Path/A",
                Some("http://example.com/Path/A"),
            ),
            ("HtTpS://EXAMPLE.com/", Some("https://example.com/")),
            ("http://[::1]:8080/x", Some("http://[::1]:8080/x")),
            ("http://[::1]:80/x", Some("http://[::1]/x")),
            ("http://[::FFFF:1]/", Some("http://[::ffff:1]/")),
            ("http://127.0.0.1:3128/", Some("http://127.0.0.1:3128/")),
            (
                "http://a/%7e%2fb?q=%aa%Bb",
                Some("http://a/%7E%2Fb?q=%AA%BB"),
            ),
            ("http://a/100%25", Some("http://a/100%25")),
            ("http://a/?b=2&a=1", Some("http://a/?b=2&a=1")),
            ("http://a?x=1", Some("http://a/?x=1")),
            ("http://a/?", Some("http://a/?")),
            ("http://a/x#frag", Some("http://a/x")),
            ("http://user:pw@a/x", Some("http://a/x")),
            ("http://a:99999/", None),
            ("http://a:65535/", Some("http://a:65535/")),
            ("ftp://a/", None),
            ("a:80", None),
            ("/relative", None),
        ];
        for (input, want) in cases {
            assert_eq!(key(input).as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn percent_handling_is_byte_safe() {
        let cases: &[(&str, &str)] = &[
            ("/", "/"),
            ("/%", "/%"),
            ("/%a", "/%a"),
            ("/%zz", "/%zz"),
            ("/%ab%", "/%AB%"),
            ("/a%2fb%2F", "/a%2Fb%2F"),
        ];
        for (input, want) in cases {
            let mut out = String::new();
            push_upper_percent(&mut out, input);
            assert_eq!(out, *want, "input {input:?}");
        }
    }

    #[test]
    fn hash_is_blake3_of_the_key() {
        let k = CacheKey::from_uri(&Uri::from_static("http://example.com/")).expect("key");
        assert_eq!(k.hash(), *blake3::hash(b"http://example.com/").as_bytes());
        let hex = k.hash_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(k.to_string(), "http://example.com/");
        let other = CacheKey::from_uri(&Uri::from_static("http://example.com/x")).expect("key");
        assert_ne!(k.hash(), other.hash());
    }

    #[test]
    fn vary_parsing() {
        let cases: Vec<(Fields, Vary)> = vec![
            (vec![], Vary::None),
            (vec![("vary", b"")], Vary::None),
            (vec![("vary", b" , ,")], Vary::None),
            (vec![("vary", b"*")], Vary::Any),
            (vec![("vary", b"Accept-Encoding, *")], Vary::Any),
            (vec![("vary", b"accept"), ("vary", b"*")], Vary::Any),
            (vec![("vary", b"bad name")], Vary::Any),
            (
                vec![("vary", b"Accept-Encoding")],
                names(&["accept-encoding"]),
            ),
            (
                vec![("vary", b"User-Agent, accept-encoding , ACCEPT-ENCODING")],
                names(&["accept-encoding", "user-agent"]),
            ),
            (
                vec![("vary", b"X-B"), ("vary", b"x-a,x-b")],
                names(&["x-a", "x-b"]),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(Vary::from_headers(&headers(&pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn vary_with_rule_fields() {
        let accept = [HeaderName::from_static("accept")];
        let cases: Vec<(Vary, &[HeaderName], Vary)> = vec![
            (Vary::None, &[], Vary::None),
            (Vary::None, &accept, names(&["accept"])),
            (Vary::Any, &accept, Vary::Any),
            (
                names(&["accept-encoding"]),
                &accept,
                names(&["accept", "accept-encoding"]),
            ),
            (
                names(&["accept", "x-a"]),
                &accept,
                names(&["accept", "x-a"]),
            ),
            (names(&["x-a"]), &[], names(&["x-a"])),
        ];
        for (vary, extra, want) in cases {
            assert_eq!(
                vary.clone().with_fields(extra),
                want,
                "{vary:?} + {extra:?}"
            );
        }
        // A rule's field selects the variant as a Vary field would, normalised the same way.
        let by_rule = Vary::None.with_fields(&accept);
        let by_vary = Vary::from_headers(&headers(&[("vary", b"Accept")]));
        let req = headers(&[("accept", b"application/json ,  */*")]);
        let v = Variant::of_request(&by_rule, &req).expect("fields");
        assert_eq!(v.as_str(), "accept=application/json,*/*");
        assert_eq!(Variant::of_request(&by_vary, &req), Some(v));
    }

    #[test]
    fn variant_encoding() {
        let ae_ua = names(&["accept-encoding", "user-agent"]);
        let cases: Vec<(&Vary, Fields, Option<&str>)> = vec![
            (&Vary::None, vec![("accept", b"x")], Some("")),
            (&Vary::Any, vec![], None),
            (
                &ae_ua,
                vec![("accept-encoding", b"gzip, br")],
                Some("accept-encoding=br,gzip\nuser-agent"),
            ),
            (
                &ae_ua,
                vec![("accept-encoding", b"gzip"), ("user-agent", b"")],
                Some("accept-encoding=gzip\nuser-agent="),
            ),
            (
                &ae_ua,
                vec![("accept-encoding", b"gzip"), ("accept-encoding", b"br")],
                Some("accept-encoding=br,gzip\nuser-agent"),
            ),
            (
                &ae_ua,
                vec![("user-agent", b"  Mozilla/5.0   (X11;\t Linux)  ")],
                Some("accept-encoding\nuser-agent=Mozilla/5.0 (X11; Linux)"),
            ),
            (
                &ae_ua,
                vec![("user-agent", b"a=b%c\xff")],
                Some("accept-encoding\nuser-agent=a%3Db%25c%FF"),
            ),
        ];
        for (vary, pairs, want) in cases {
            let got = Variant::of_request(vary, &headers(&pairs));
            assert_eq!(got.as_ref().map(Variant::as_str), want, "{pairs:?}");
        }
    }

    #[test]
    fn variant_equivalent_requests_match() {
        let vary = names(&["accept-encoding"]);
        let forms: &[&[(&str, &[u8])]] = &[
            &[("accept-encoding", b"gzip,br")],
            &[("accept-encoding", b"gzip , br")],
            &[("accept-encoding", b" gzip,   br ")],
            &[("accept-encoding", b"gzip"), ("accept-encoding", b"br")],
            &[("Accept-Encoding", b"gzip,\tbr")],
        ];
        let first = Variant::of_request(&vary, &headers(forms[0]));
        for form in forms {
            assert_eq!(
                Variant::of_request(&vary, &headers(form)),
                first,
                "{form:?}"
            );
        }
    }

    /// RFC 9111 §4.1 lets a cache normalise the fields Vary names; RFC 9110 §12.4.2, §12.5.3
    /// and §12.5.4 say which differences never change the choice: the case of codings and
    /// language tags, whitespace, an explicit q=1, duplicates, the order of codings, and the
    /// order of language ranges of different weights.
    #[test]
    fn rfc9110_negotiation_fields_normalised_table() {
        let ae = HeaderName::from_static("accept-encoding");
        let al = HeaderName::from_static("accept-language");
        let accept = HeaderName::from_static("accept");
        #[rustfmt::skip]
        let cases: Vec<(&HeaderName, &[u8], Option<&str>)> = vec![
            (&ae, b"gzip, br", Some("br,gzip")),
            (&ae, b"br,gzip", Some("br,gzip")),
            (&ae, b"BR, GZIP;q=1.0", Some("br,gzip")),
            (&ae, b"gzip;Q=1, br ; q=1.000", Some("br,gzip")),
            (&ae, b"gzip;q=0.5, br", Some("br,gzip;q=0.5")),
            (&ae, b"br;q=0.50, gzip;q=0.500", Some("br;q=0.5,gzip;q=0.5")),
            (&ae, b"gzip, identity;q=0", Some("gzip,identity;q=0")),
            (&ae, b"gzip, identity;q=0.000", Some("gzip,identity;q=0")),
            (&ae, b"*;q=0.001, deflate", Some("deflate,*;q=0.001")),
            (&ae, b"gzip, gzip, , br", Some("br,gzip")),
            (&ae, b"", Some("")),
            // q=0 keeps its member: "not acceptable" is not "absent".
            (&ae, b"gzip, br;q=0", Some("gzip,br;q=0")),
            // Unreadable: left to the generic normalisation.
            (&ae, b"gzip;q=2", None),
            (&ae, b"gzip;q=0.5555", None),
            (&ae, b"gzip;level=9", None),
            (&ae, b"gzip;q=", None),
            (&ae, b"gz ip", None),
            (&al, b"de-DE, en;q=0.8", Some("de-de,en;q=0.8")),
            (&al, b"en;q=0.8 , DE-de", Some("de-de,en;q=0.8")),
            (&al, b"fr, en", Some("fr,en")),
            (&al, b"en, fr", Some("en,fr")),
            (&al, b"fr;q=1.0, en;q=0.5, de;q=0.5", Some("fr,en;q=0.5,de;q=0.5")),
            (&al, b"*", Some("*")),
            (&accept, b"text/html, */*", None),
        ];
        for (name, value, want) in cases {
            let got = negotiated(name, value).map(|v| String::from_utf8(v).expect("ascii"));
            assert_eq!(
                got.as_deref(),
                want,
                "{name}: {:?}",
                String::from_utf8_lossy(value)
            );
        }
        // Through Variant: equivalent requests select the same stored response, others do not.
        let vary = names(&["accept-encoding", "accept-language"]);
        let v = |ae: &'static [u8], al: &'static [u8]| {
            Variant::of_request(
                &vary,
                &headers(&[("accept-encoding", ae), ("accept-language", al)]),
            )
        };
        assert_eq!(v(b"gzip, br", b"en"), v(b"BR,gzip;q=1.0", b"EN;q=1"));
        assert_ne!(v(b"gzip, br", b"en"), v(b"gzip, br;q=0", b"en"));
        assert_ne!(v(b"gzip", b"en, fr"), v(b"gzip", b"fr, en"));
        assert_eq!(v(b"gzip", b"en;q=0.5, fr"), v(b"gzip", b"fr, en;q=0.5"));
    }

    #[test]
    fn variant_never_collides() {
        let vary = names(&["x-a", "x-b"]);
        // Each request differs from every other in what the Vary fields say.
        let requests: Vec<Vec<(&str, &[u8])>> = vec![
            vec![],
            vec![("x-a", b"")],
            vec![("x-b", b"")],
            vec![("x-a", b""), ("x-b", b"")],
            vec![("x-a", b"1"), ("x-b", b"2")],
            vec![("x-a", b"1=x-b")],
            vec![("x-a", b"1"), ("x-b", b"")],
            vec![("x-a", b"%3D")],
            vec![("x-a", b"=")],
            vec![("x-a", b"a b")],
            vec![("x-a", b"ab")],
            vec![("x-a", b"a,b")],
        ];
        let mut seen = std::collections::HashSet::new();
        for req in &requests {
            let map = headers(req);
            let v = Variant::of_request(&vary, &map).expect("fields");
            assert!(seen.insert(v.as_str().to_owned()), "collision for {req:?}");
        }
        // A raw newline cannot be in a HeaderValue, but the escaping covers it anyway.
        let mut s = String::new();
        escape_into(&mut s, &normalise(b"1\nx-b=2"));
        assert_eq!(s, "1%0Ax-b%3D2");
        // A different Vary over the same request gives a different variant.
        let req = headers(&[("x-a", b"1")]);
        let a = Variant::of_request(&names(&["x-a"]), &req);
        let ab = Variant::of_request(&vary, &req);
        assert_ne!(a, ab);
        assert_ne!(Variant::of_request(&Vary::None, &req), a);
    }

    #[test]
    fn variant_round_trips_through_storage() {
        let vary = names(&["accept-language"]);
        let v = Variant::of_request(&vary, &headers(&[("accept-language", b"de, en;q=0.5")]))
            .expect("fields");
        assert_eq!(v.as_str(), "accept-language=de,en;q%3D0.5");
        assert_eq!(Variant::from_stored(v.as_str().to_owned()), v);
    }
}

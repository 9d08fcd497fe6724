//! Hop-by-hop field removal and Via handling for forwarded messages; pure, no I/O.

use http::header::{
    CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
    VIA,
};
use http::{HeaderMap, HeaderName, HeaderValue, Version};

use crate::grammar::{is_ows, trim_ows};

/// Removes the hop-by-hop fields (RFC 9110 §7.6.1): Connection, Keep-Alive, Proxy-Connection, TE,
/// Trailer, Transfer-Encoding, Upgrade, Proxy-Authorization, Proxy-Authenticate, and every field
/// named as a connection option in any Connection line (comma lists, case-insensitive).
///
/// Invariant: afterwards none of those names is present. Option names that are not valid field
/// names are skipped. The RFC makes no exception for end-to-end names listed in Connection (even
/// `Host`): the caller sets Host from the target URI after stripping (RFC 9112 §3.2).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .filter_map(|option| HeaderName::from_bytes(trim_ows(option)).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    let fixed = [
        CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        PROXY_AUTHORIZATION,
        PROXY_AUTHENTICATE,
    ];
    for name in fixed {
        headers.remove(name);
    }
}

/// This proxy's `Via` identity (RFC 9110 §7.6.3): its pseudonym, made a token once, and the
/// HTTP/1.1 line it appends to every response, encoded once. Cheap to clone.
///
/// The pseudonym should be a token; each character that is not a tchar (RFC 9110 §5.6.2) is
/// written as `-`, and an empty pseudonym as `-`. [`Via::is_in`] compares with the same
/// token, so after `via.append(h, v)`, `via.is_in(h)` is always true.
#[derive(Debug, Clone)]
pub struct Via {
    token: std::sync::Arc<str>,
    /// `1.1 <token>`: only tchars, digits, '.' and one space, always a valid field value.
    http11: HeaderValue,
}

impl Via {
    pub fn new(pseudonym: &str) -> Via {
        let token = token_of(pseudonym);
        let http11 = HeaderValue::try_from(format!("1.1 {token}"))
            .unwrap_or_else(|_| HeaderValue::from_static("1.1 -"));
        Via {
            token: token.into(),
            http11,
        }
    }

    /// The pseudonym as it appears in `Via` lines.
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// Appends one Via line `"<protocol-version> <pseudonym>"`, e.g. `1.1 peercache-ab12`;
    /// existing Via lines are kept. The version is `0.9`, `1.0`, `1.1`, `2` or `3` (the
    /// protocol name is omitted because it is HTTP).
    pub fn append(&self, headers: &mut HeaderMap, version: Version) {
        if version == Version::HTTP_11 {
            headers.append(VIA, self.http11.clone());
            return;
        }
        let line = format!("{} {}", protocol_version(version), self.token);
        if let Ok(value) = HeaderValue::from_str(&line) {
            headers.append(VIA, value);
        }
    }

    /// True if a Via member of any line names this pseudonym as its received-by (alone or with
    /// a `:port`), compared ASCII case-insensitively: a forwarding loop, to be answered with
    /// 508 (RFC 9110 §7.6.3). Comments are skipped, so a pseudonym that only appears inside a
    /// comment does not count.
    pub fn is_in(&self, headers: &HeaderMap) -> bool {
        headers.get_all(VIA).iter().any(|line| {
            split_members(line.as_bytes())
                .into_iter()
                .any(|member| received_by_matches(member, self.token.as_bytes()))
        })
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.token)
    }
}

fn protocol_version(version: Version) -> &'static str {
    if version == Version::HTTP_09 {
        "0.9"
    } else if version == Version::HTTP_10 {
        "1.0"
    } else if version == Version::HTTP_2 {
        "2"
    } else if version == Version::HTTP_3 {
        "3"
    } else {
        "1.1"
    }
}

/// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" /
/// "~" / DIGIT / ALPHA (RFC 9110 §5.6.2)
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn token_of(pseudonym: &str) -> String {
    if pseudonym.is_empty() {
        return "-".to_owned();
    }
    pseudonym
        .chars()
        .map(|c| if is_tchar(c) { c } else { '-' })
        .collect()
}

/// Splits a Via line at commas outside comments, dropping the comments themselves (nested
/// parentheses and quoted-pairs honoured; RFC 9110 §5.6.5).
fn split_members(line: &[u8]) -> Vec<Vec<u8>> {
    let mut members = Vec::new();
    let mut current = Vec::new();
    let mut depth = 0usize;
    let mut escaped = false;
    for &b in line {
        if depth > 0 {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'(' {
                depth += 1;
            } else if b == b')' {
                depth -= 1;
            }
            continue;
        }
        match b {
            b'(' => {
                depth = 1;
                // A comment separates words like whitespace.
                current.push(b' ');
            }
            b',' => members.push(std::mem::take(&mut current)),
            _ => current.push(b),
        }
    }
    members.push(current);
    members
}

/// `received-protocol RWS received-by [RWS comment]`: true if received-by is `wanted` or
/// `wanted:port`.
fn received_by_matches(member: Vec<u8>, wanted: &[u8]) -> bool {
    let mut words = member
        .split(|&b| is_ows(b))
        .filter(|w| !w.is_empty())
        .skip(1);
    let Some(by) = words.next() else {
        return false;
    };
    if by.len() < wanted.len() || !by[..wanted.len()].eq_ignore_ascii_case(wanted) {
        return false;
    }
    match &by[wanted.len()..] {
        [] => true,
        [b':', port @ ..] => !port.is_empty() && port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header lines of one table row.
    type Fields = Vec<(&'static str, &'static str)>;

    use crate::http::testing::map;

    fn names(m: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = m.keys().map(|k| k.as_str().to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_fields_are_removed() {
        let cases: Vec<(&str, Fields, Vec<&str>)> = vec![
            (
                "fixed list",
                vec![
                    ("connection", "keep-alive"),
                    ("keep-alive", "timeout=5"),
                    ("proxy-connection", "keep-alive"),
                    ("te", "trailers"),
                    ("trailer", "x-checksum"),
                    ("transfer-encoding", "chunked"),
                    ("upgrade", "websocket"),
                    ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                    ("proxy-authenticate", "Basic"),
                    ("accept", "*/*"),
                    ("authorization", "Bearer x"),
                ],
                vec!["accept", "authorization"],
            ),
            (
                "connection options over several lines",
                vec![
                    ("connection", "X-Foo, close"),
                    ("connection", " x-bar ,,\tX-BAZ"),
                    ("x-foo", "1"),
                    ("x-foo", "2"),
                    ("x-bar", "1"),
                    ("x-baz", "1"),
                    ("x-keep", "1"),
                    ("host", "example.com"),
                ],
                vec!["host", "x-keep"],
            ),
            (
                "invalid option names are skipped",
                vec![("connection", "bad name, x-a"), ("x-a", "1"), ("bad", "1")],
                vec!["bad"],
            ),
            ("nothing to strip", vec![("accept", "*/*")], vec!["accept"]),
            ("empty", vec![], vec![]),
        ];
        for (name, pairs, want) in cases {
            let mut h = map(&pairs);
            strip_hop_by_hop(&mut h);
            assert_eq!(names(&h), want, "{name}");
        }
    }

    #[test]
    fn non_utf8_connection_line_never_panics() {
        let mut h = HeaderMap::new();
        h.append(
            CONNECTION,
            HeaderValue::from_bytes(b"x-a, \xff\xfe, x-b").expect("test value"),
        );
        h.append(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("1"),
        );
        h.append(
            HeaderName::from_static("x-c"),
            HeaderValue::from_static("1"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), vec!["x-c"]);
    }

    #[test]
    fn via_is_appended_per_version() {
        let cases = [
            (Version::HTTP_09, "0.9 peercache-ab12"),
            (Version::HTTP_10, "1.0 peercache-ab12"),
            (Version::HTTP_11, "1.1 peercache-ab12"),
            (Version::HTTP_2, "2 peercache-ab12"),
            (Version::HTTP_3, "3 peercache-ab12"),
        ];
        for (version, want) in cases {
            let mut h = map(&[("via", "1.0 fred, 1.1 p.example.net")]);
            Via::new("peercache-ab12").append(&mut h, version);
            let lines: Vec<&str> = h
                .get_all(VIA)
                .iter()
                .map(|v| v.to_str().expect("ascii"))
                .collect();
            assert_eq!(
                lines,
                vec!["1.0 fred, 1.1 p.example.net", want],
                "{version:?}"
            );
        }
    }

    #[test]
    fn via_pseudonym_is_made_a_token() {
        let cases = [
            ("node a/b", "1.1 node-a-b"),
            ("", "1.1 -"),
            ("bad\r\nx: y", "1.1 bad--x--y"),
            ("é", "1.1 -"),
        ];
        for (pseudonym, want) in cases {
            let mut h = HeaderMap::new();
            let via = Via::new(pseudonym);
            via.append(&mut h, Version::HTTP_11);
            assert_eq!(h.get(VIA).map(|v| v.as_bytes()), Some(want.as_bytes()));
            assert!(via.is_in(&h), "{pseudonym:?}");
            let mut h10 = HeaderMap::new();
            via.append(&mut h10, Version::HTTP_10);
            assert!(via.is_in(&h10), "{pseudonym:?}");
        }
    }

    #[test]
    fn via_loop_detection() {
        let me = "peercache-ab12";
        let cases: Vec<(&str, Vec<&str>, bool)> = vec![
            ("no via", vec![], false),
            ("other proxies", vec!["1.1 squid, 1.0 fred"], false),
            ("only one", vec!["1.1 peercache-ab12"], true),
            ("later member", vec!["1.0 fred, 1.1 peercache-ab12"], true),
            (
                "second line",
                vec!["1.0 fred", "1.1 peercache-ab12 (peercache)"],
                true,
            ),
            ("with port", vec!["1.1 peercache-ab12:3128"], true),
            ("case", vec!["HTTP/1.1 PeerCache-AB12"], true),
            (
                "prefix of a longer name",
                vec!["1.1 peercache-ab123"],
                false,
            ),
            (
                "longer name with port",
                vec!["1.1 peercache-ab12x:3128"],
                false,
            ),
            ("bad port", vec!["1.1 peercache-ab12:http"], false),
            ("as protocol", vec!["peercache-ab12 fred"], false),
            (
                "inside a comment",
                vec!["1.1 fred (via 1.1 peercache-ab12, x)"],
                false,
            ),
            (
                "nested comment",
                vec!["1.1 fred (a (b, 1.1 peercache-ab12) c)"],
                false,
            ),
            (
                "escaped paren",
                vec!["1.1 fred (a \\) , 1.1 peercache-ab12)"],
                false,
            ),
            (
                "after a comment",
                vec!["1.1 fred (a, b), 1.1 peercache-ab12"],
                true,
            ),
            (
                "no space before comment",
                vec!["1.1 peercache-ab12(x)"],
                true,
            ),
        ];
        for (name, lines, want) in cases {
            let pairs: Vec<(&str, &str)> = lines.iter().map(|l| ("via", *l)).collect();
            assert_eq!(Via::new(me).is_in(&map(&pairs)), want, "{name}");
        }
    }

    #[test]
    fn via_with_non_utf8_never_panics() {
        let mut h = HeaderMap::new();
        h.append(
            VIA,
            HeaderValue::from_bytes(b"1.1 \xff\xfe, 1.1 x").expect("test value"),
        );
        assert!(!Via::new("peercache").is_in(&h));
        assert!(Via::new("x").is_in(&h));
    }
}

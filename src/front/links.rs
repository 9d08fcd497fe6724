//! Link rewriting for mirror index pages: absolute URLs under a mirror's upstream base become that
//! mirror's path on this proxy. Pure; no I/O, and no HTML or JSON parser (a prefix scan).
//!
//! Which responses are index pages (`is_index_type`), which codings the rewriter can read
//! (`coding`, `decodable_accept_encoding`), and the rewrite itself (`LinkTable::for_client`, then
//! `Rewrite::apply`): bytes in, bytes out, everything outside a matched URL prefix kept byte for
//! byte.

use std::borrow::Cow;

use http::Uri;

use crate::cache::key::CacheKey;
use crate::grammar::trim_ows;

/// Largest body, after decoding, that is rewritten; a larger one goes out as the origin sent it.
/// npm's full metadata documents reach tens of MB.
pub const MAX_BODY: u64 = 64 * 1024 * 1024;

/// Hashed into every rewrite's tag: bump it when the rewriting changes, so derived ETags change.
const FORMAT: &[u8] = b"peercache-links-1";

/// Is this `Content-Type` an index format whose links are rewritten? HTML (pip's simple pages,
/// PEP 503), JSON (npm metadata, cargo's `config.json`), PyPI's simple API in either form
/// (`application/vnd.pypi.simple.v1+json`, `…+html`, PEP 691) and npm's abbreviated metadata
/// (`application/vnd.npm.install-v1+json`). Parameters (`charset`) are ignored, case is not
/// significant. Anything else, signed or checksummed formats included, is never touched.
pub fn is_index_type(content_type: &[u8]) -> bool {
    let media = content_type
        .split(|&b| b == b';')
        .next()
        .map(trim_ows)
        .unwrap_or_default()
        .to_ascii_lowercase();
    match media.as_slice() {
        b"text/html" | b"application/json" | b"application/vnd.npm.install-v1+json" => true,
        m => {
            m.starts_with(b"application/vnd.pypi.simple.")
                && (m.ends_with(b"+json") || m.ends_with(b"+html"))
        }
    }
}

/// A body's content coding, as far as the rewriter is concerned (RFC 9110 §8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    /// HTTP's `deflate`: zlib-wrapped (RFC 1950), though some servers send raw deflate.
    Deflate,
}

/// The coding named by a `Content-Encoding` value (absent: identity); `None` for codings the
/// rewriter cannot read (`br`, `zstd`, `compress`) and for stacked codings (`gzip, gzip`).
pub fn coding(content_encoding: Option<&[u8]>) -> Option<Coding> {
    let Some(value) = content_encoding else {
        return Some(Coding::Identity);
    };
    match trim_ows(value).to_ascii_lowercase().as_slice() {
        b"" | b"identity" => Some(Coding::Identity),
        b"gzip" | b"x-gzip" => Some(Coding::Gzip),
        b"deflate" => Some(Coding::Deflate),
        _ => None,
    }
}

/// What happens to a mirror answer on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Not an index page (or not a 200): sent as it is, not counted.
    Untouched,
    /// An index page, in this coding: decoded, rewritten, sent in identity.
    Rewrite(Coding),
    /// An index page that is sent as the origin sent it, and counted.
    Skip(Skip),
}

/// Why an index page goes out without its links rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Over [`MAX_BODY`], as announced or once decoded.
    TooLarge,
    /// A coding the rewriter cannot read, or a body that does not decode.
    Coding,
    /// The memory budget for bodies being rewritten is spent.
    Busy,
}

impl Skip {
    pub const ALL: [Skip; 3] = [Skip::TooLarge, Skip::Coding, Skip::Busy];

    pub fn as_str(self) -> &'static str {
        match self {
            Skip::TooLarge => "too-large",
            Skip::Coding => "coding",
            Skip::Busy => "busy",
        }
    }
}

/// The plan for an answer with this status, `Content-Type`, `Content-Encoding` and length (when
/// known): only a 200 of an index type is rewritten, and only within [`MAX_BODY`] in a coding the
/// rewriter reads. The same head always gets the same plan, so preconditions judged before the
/// body is read agree with what is sent.
pub fn plan(
    status: u16,
    content_type: Option<&[u8]>,
    content_encoding: Option<&[u8]>,
    len: Option<u64>,
) -> Plan {
    if status != 200 || !content_type.is_some_and(is_index_type) {
        return Plan::Untouched;
    }
    match coding(content_encoding) {
        None => Plan::Skip(Skip::Coding),
        Some(_) if len.is_some_and(|n| n > MAX_BODY) => Plan::Skip(Skip::TooLarge),
        Some(c) => Plan::Rewrite(c),
    }
}

/// A mirror request's `Accept-Encoding` with only the codings the rewriter can read (gzip,
/// deflate, identity; their parameters kept), so that an index page is never stored in a coding
/// it cannot rewrite. `None` when nothing is left: ask for identity (no field).
pub fn decodable_accept_encoding(value: &[u8]) -> Option<Vec<u8>> {
    let kept: Vec<&[u8]> = value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|member| {
            let name = member.split(|&b| b == b';').next().map(trim_ows);
            let name = name.unwrap_or_default().to_ascii_lowercase();
            matches!(
                name.as_slice(),
                b"gzip" | b"x-gzip" | b"deflate" | b"identity"
            )
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join(&b", "[..]))
}

/// The configured mirrors' upstream bases and prefixes; built once from the config.
///
/// Invariant: every base is a normalised cache-key URL ending with `/`, every prefix starts and
/// ends with `/` (the config's mirror invariants), longest base first (ties: file order).
#[derive(Debug, Clone, Default)]
pub struct LinkTable {
    bases: Vec<(String, String)>,
}

impl LinkTable {
    /// `(upstream, prefix)` of each mirror, in file order.
    pub fn new<'a>(mirrors: impl IntoIterator<Item = (&'a Uri, &'a str)>) -> LinkTable {
        let mut bases: Vec<(String, String)> = mirrors
            .into_iter()
            .filter_map(|(upstream, prefix)| {
                let base = CacheKey::from_uri(upstream)?.as_str().to_owned();
                (base.ends_with('/') && prefix.starts_with('/') && prefix.ends_with('/'))
                    .then(|| (base, prefix.to_owned()))
            })
            .collect();
        bases.sort_by_key(|(base, _)| std::cmp::Reverse(base.len()));
        LinkTable { bases }
    }

    /// The rewrite for a client that reached this proxy as `http://{authority}` (its `Host`).
    /// `None` without mirrors, or when `authority` is not a plain `host[:port]` (it is written
    /// into pages, so nothing that could end an attribute or a string gets in).
    pub fn for_client(&self, authority: &str) -> Option<Rewrite> {
        if self.bases.is_empty() || !plain_authority(authority) {
            return None;
        }
        let mut pairs = Vec::with_capacity(self.bases.len() * 2);
        let mut hasher = blake3::Hasher::new();
        hasher.update(FORMAT);
        for (base, prefix) in &self.bases {
            let to = format!("http://{authority}{prefix}");
            hasher.update(base.as_bytes());
            hasher.update(b"\0");
            hasher.update(to.as_bytes());
            hasher.update(b"\0");
            pairs.push(Pair::new(json_escaped(base), json_escaped(&to), b"\\/"));
            pairs.push(Pair::new(base.as_bytes().to_vec(), to.into_bytes(), b"/"));
        }
        let hex = hasher.finalize().to_hex();
        Some(Rewrite {
            pairs,
            tag: format!("rw{}", &hex.as_str()[..10]),
        })
    }
}

/// `host[:port]` made only of letters, digits, `.`, `-`, `:` and IPv6 brackets.
fn plain_authority(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 261
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        && a.parse::<http::uri::Authority>().is_ok()
}

/// `/` written as `\/`, as some JSON encoders do (RFC 8259 §7 allows either).
fn json_escaped(s: &str) -> Vec<u8> {
    s.replace('/', "\\/").into_bytes()
}

/// One base to replace: `from` ends with `slash` (`/` or `\/`), and so does `to`.
#[derive(Debug, Clone)]
struct Pair {
    from: Vec<u8>,
    to: Vec<u8>,
    slash: usize,
}

impl Pair {
    fn new(from: Vec<u8>, to: Vec<u8>, slash: &[u8]) -> Pair {
        Pair {
            from,
            to,
            slash: slash.len(),
        }
    }

    /// At the start of `at`: the length of the matched base and its replacement. The base matches
    /// with its trailing slash, or without it when the URL ends there (cargo's
    /// `"dl": "https://static.crates.io/crates"` under the base `https://static.crates.io/crates/`).
    fn matches<'p>(&'p self, at: &[u8]) -> Option<(usize, &'p [u8])> {
        if at.starts_with(&self.from) {
            return Some((self.from.len(), &self.to));
        }
        let bare = &self.from[..self.from.len() - self.slash];
        let next = at.get(bare.len()).copied();
        (at.starts_with(bare) && next.is_none_or(ends_url))
            .then(|| (bare.len(), &self.to[..self.to.len() - self.slash]))
    }
}

/// A byte before which a URL may start: not a letter, digit or anything that would make the match
/// part of a longer URL (`git+https://…`, `…/https://…`, `?u=https://…`).
fn starts_url_after(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'"' | b'\'' | b'(' | b'<' | b'>' | b'[' | b'{' | b',' | b';' | b'\\' | b'`'
        )
}

/// A byte that ends a URL written without its trailing slash.
fn ends_url(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b')' | b'<' | b'>' | b']' | b'}' | b',')
}

/// One client's rewrite: every mirror base, plain and JSON-escaped, with its replacement on this
/// proxy, and a tag naming the whole mapping (for derived ETags).
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// Longest `from` first, so the most specific base wins.
    pairs: Vec<Pair>,
    tag: String,
}

impl Rewrite {
    /// `rw` and 10 hex digits of a hash over the mapping: the same for every request that gets
    /// the same rewrite, different when a base, a prefix or the client's authority differs.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// `body` with every URL that starts with a mirror base (at a URL boundary) moved to that
    /// mirror's path on this proxy; borrowed as is when nothing matched. One pass: replaced text
    /// is not scanned again.
    pub fn apply<'a>(&self, body: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        for i in memchr::memmem::find_iter(body, b"http") {
            if i < copied || (i > 0 && !starts_url_after(body[i - 1])) {
                continue;
            }
            let at = &body[i..];
            let Some((len, to)) = self.pairs.iter().find_map(|p| p.matches(at)) else {
                continue;
            };
            let out = out.get_or_insert_with(|| Vec::with_capacity(body.len() + body.len() / 8));
            out.extend_from_slice(&body[copied..i]);
            out.extend_from_slice(to);
            copied = i + len;
        }
        match out {
            None => Cow::Borrowed(body),
            Some(mut out) => {
                out.extend_from_slice(&body[copied..]);
                Cow::Owned(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(mirrors: &[(&str, &str)]) -> LinkTable {
        let uris: Vec<(Uri, &str)> = mirrors
            .iter()
            .map(|(u, p)| (u.parse().unwrap(), *p))
            .collect();
        LinkTable::new(uris.iter().map(|(u, p)| (u, *p)))
    }

    fn pypi() -> Rewrite {
        table(&[
            ("https://pypi.org/", "/pypi/"),
            ("https://files.pythonhosted.org/", "/pypi-files/"),
            ("https://registry.npmjs.org/", "/npm/"),
            ("https://static.crates.io/crates/", "/crates-dl/"),
            ("https://deb.example.org/debian/", "/debian/"),
            ("https://deb.example.org/debian/security/", "/security/"),
            ("HTTP://Plain.Example:80/x/", "/plain/"),
        ])
        .for_client("127.0.0.1:3128")
        .unwrap()
    }

    #[test]
    fn rewrite_table() {
        let rw = pypi();
        let cases: &[(&str, &str)] = &[
            // pip's simple page (PEP 503): the file link moves to the files mirror, fragment kept.
            (
                r#"<a href="https://files.pythonhosted.org/packages/ab/cd/x-1.0-py3-none-any.whl#sha256=00ff" data-requires-python="&gt;=3.8">x</a>"#,
                r#"<a href="http://127.0.0.1:3128/pypi-files/packages/ab/cd/x-1.0-py3-none-any.whl#sha256=00ff" data-requires-python="&gt;=3.8">x</a>"#,
            ),
            // PEP 691 JSON.
            (
                r#"{"files":[{"url":"https://files.pythonhosted.org/packages/x.tar.gz","hashes":{}}]}"#,
                r#"{"files":[{"url":"http://127.0.0.1:3128/pypi-files/packages/x.tar.gz","hashes":{}}]}"#,
            ),
            // npm metadata, plain and with JSON-escaped slashes.
            (
                r#""dist":{"tarball":"https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz"}"#,
                r#""dist":{"tarball":"http://127.0.0.1:3128/npm/left-pad/-/left-pad-1.3.0.tgz"}"#,
            ),
            (
                r#""tarball":"https:\/\/registry.npmjs.org\/@s\/p\/-\/p-1.0.0.tgz""#,
                r#""tarball":"http:\/\/127.0.0.1:3128\/npm\/@s\/p\/-\/p-1.0.0.tgz""#,
            ),
            // cargo's config.json: `dl` has no trailing slash; `api` is under no mirror.
            (
                r#"{"dl":"https://static.crates.io/crates","api":"https://crates.io"}"#,
                r#"{"dl":"http://127.0.0.1:3128/crates-dl","api":"https://crates.io"}"#,
            ),
            (
                r#"{"dl":"https:\/\/static.crates.io\/crates"}"#,
                r#"{"dl":"http:\/\/127.0.0.1:3128\/crates-dl"}"#,
            ),
            (
                r#"{"dl": "https://static.crates.io/crates/{crate}/{version}/download"}"#,
                r#"{"dl": "http://127.0.0.1:3128/crates-dl/{crate}/{version}/download"}"#,
            ),
            // The most specific base wins; a sibling path is not under the base.
            (
                "'https://deb.example.org/debian/security/a' 'https://deb.example.org/debian/b' 'https://deb.example.org/debian-ports/c'",
                "'http://127.0.0.1:3128/security/a' 'http://127.0.0.1:3128/debian/b' 'https://deb.example.org/debian-ports/c'",
            ),
            // The base as normalised (scheme and host lower case, default port dropped).
            (
                "(http://plain.example/x/y)",
                "(http://127.0.0.1:3128/plain/y)",
            ),
            // Not at a URL boundary, or not under the base: untouched.
            ("https://pypi.org.evil.com/x", "https://pypi.org.evil.com/x"),
            ("git+https://pypi.org/x", "git+https://pypi.org/x"),
            ("https://a.example/?u=https://pypi.org/x", "https://a.example/?u=https://pypi.org/x"),
            ("https://a.example/https://pypi.org/x", "https://a.example/https://pypi.org/x"),
            ("http://pypi.org/x", "http://pypi.org/x"),
            ("https://static.crates.io/cratesx", "https://static.crates.io/cratesx"),
            ("https://static.crates.io/crates?x", "https://static.crates.io/crates?x"),
            // At the start and at the end of the body.
            ("https://pypi.org/simple/", "http://127.0.0.1:3128/pypi/simple/"),
            ("https://pypi.org", "http://127.0.0.1:3128/pypi"),
            ("", ""),
            ("http", "http"),
        ];
        for (input, want) in cases {
            let got = rw.apply(input.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), *want, "input: {input}");
        }
    }

    #[test]
    fn untouched_bodies_are_borrowed_byte_for_byte() {
        let rw = pypi();
        let body = "<html>\u{e9} https://example.com/ https://pypi.org.evil/ \u{0}\u{ff}</html>";
        assert!(matches!(rw.apply(body.as_bytes()), Cow::Borrowed(b) if b == body.as_bytes()));
        let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        assert!(matches!(rw.apply(&binary), Cow::Borrowed(_)));
    }

    #[test]
    fn every_occurrence_is_rewritten_once() {
        let rw = pypi();
        let page: String = (0..1000)
            .map(|i| format!("<a href=\"https://files.pythonhosted.org/p/{i}.whl\">{i}</a>\n"))
            .collect();
        let got = String::from_utf8(rw.apply(page.as_bytes()).into_owned()).unwrap();
        assert_eq!(
            got.matches("http://127.0.0.1:3128/pypi-files/p/").count(),
            1000
        );
        assert!(!got.contains("pythonhosted"));
        // The replacement is not scanned again, even when it names another base.
        let looped = table(&[
            ("http://127.0.0.1:3128/", "/again/"),
            ("https://a.example/", "/a/"),
        ])
        .for_client("127.0.0.1:3128")
        .unwrap();
        assert_eq!(
            &*looped.apply(b"\"https://a.example/x\""),
            b"\"http://127.0.0.1:3128/a/x\""
        );
    }

    #[test]
    fn the_tag_names_the_mapping() {
        let t = table(&[("https://pypi.org/", "/pypi/")]);
        let a = t.for_client("127.0.0.1:3128").unwrap();
        assert_eq!(a.tag(), t.for_client("127.0.0.1:3128").unwrap().tag());
        assert!(a.tag().starts_with("rw") && a.tag().len() == 12);
        assert_ne!(a.tag(), t.for_client("10.0.0.1:3128").unwrap().tag());
        let other_prefix = table(&[("https://pypi.org/", "/py/")]);
        assert_ne!(
            a.tag(),
            other_prefix.for_client("127.0.0.1:3128").unwrap().tag()
        );
    }

    #[test]
    fn only_plain_authorities_are_written_into_pages() {
        let t = table(&[("https://pypi.org/", "/pypi/")]);
        for ok in [
            "127.0.0.1:3128",
            "proxy.lan",
            "[::1]:3128",
            "Proxy-1.example:8080",
        ] {
            assert!(t.for_client(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "a\"b",
            "a b",
            "a/b",
            "u@host",
            "host:port:x<",
            "h\\x",
            "[::1",
        ] {
            assert!(t.for_client(bad).is_none(), "{bad:?}");
        }
        assert!(LinkTable::default().for_client("127.0.0.1:3128").is_none());
    }

    #[test]
    fn index_types() {
        for yes in [
            "text/html",
            "text/html; charset=utf-8",
            "Application/JSON",
            "application/vnd.pypi.simple.v1+json",
            "application/vnd.pypi.simple.v1+html",
            "application/vnd.npm.install-v1+json; charset=utf-8",
        ] {
            assert!(is_index_type(yes.as_bytes()), "{yes}");
        }
        for no in [
            "",
            "text/plain",
            "application/octet-stream",
            "application/x-tar",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/jsonx",
            "text/htmlx",
        ] {
            assert!(!is_index_type(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn plans() {
        use Plan::*;
        let html = Some(&b"text/html; charset=utf-8"[..]);
        let wheel = Some(&b"application/octet-stream"[..]);
        let gz = Some(&b"gzip"[..]);
        // (status, Content-Type, Content-Encoding, length, plan)
        type Row<'a> = (u16, Option<&'a [u8]>, Option<&'a [u8]>, Option<u64>, Plan);
        let cases: &[Row] = &[
            (200, html, None, Some(10), Rewrite(Coding::Identity)),
            (200, html, None, None, Rewrite(Coding::Identity)),
            (200, html, gz, Some(10), Rewrite(Coding::Gzip)),
            (200, html, None, Some(MAX_BODY), Rewrite(Coding::Identity)),
            (
                200,
                html,
                None,
                Some(MAX_BODY + 1),
                Skip(super::Skip::TooLarge),
            ),
            (200, html, Some(b"br"), Some(10), Skip(super::Skip::Coding)),
            (200, wheel, None, Some(10), Untouched),
            (200, None, None, Some(10), Untouched),
            (206, html, None, Some(10), Untouched),
            (404, html, None, Some(10), Untouched),
            (304, None, None, None, Untouched),
        ];
        for (status, ct, ce, len, want) in cases {
            assert_eq!(
                plan(*status, *ct, *ce, *len),
                *want,
                "{status} {ct:?} {ce:?} {len:?}"
            );
        }
    }

    #[test]
    fn codings() {
        let cases: &[(Option<&str>, Option<Coding>)] = &[
            (None, Some(Coding::Identity)),
            (Some("identity"), Some(Coding::Identity)),
            (Some(" GZIP "), Some(Coding::Gzip)),
            (Some("x-gzip"), Some(Coding::Gzip)),
            (Some("deflate"), Some(Coding::Deflate)),
            (Some("br"), None),
            (Some("zstd"), None),
            (Some("gzip, gzip"), None),
        ];
        for (value, want) in cases {
            assert_eq!(coding(value.map(str::as_bytes)), *want, "{value:?}");
        }
    }

    #[test]
    fn accept_encoding_keeps_what_can_be_decoded() {
        let cases: &[(&str, Option<&str>)] = &[
            ("gzip, deflate, br", Some("gzip, deflate")),
            ("gzip,deflate", Some("gzip, deflate")),
            ("br;q=1.0, gzip;q=0.8, *;q=0.1", Some("gzip;q=0.8")),
            ("br, zstd", None),
            ("identity", Some("identity")),
            ("", None),
        ];
        for (value, want) in cases {
            let got = decodable_accept_encoding(value.as_bytes());
            assert_eq!(
                got.as_deref().map(|v| std::str::from_utf8(v).unwrap()),
                *want,
                "{value}"
            );
        }
    }
}

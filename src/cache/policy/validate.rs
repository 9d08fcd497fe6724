//! Revalidation: the conditional fields for a stored response, and merging a 304 into it (RFC 9111 §3.2, §4.3); pure.

use http::header::{
    CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use http::{HeaderMap, HeaderName};

use super::date::HttpDate;
use crate::grammar::trim_ows as trim;

/// RFC 9111 §4.3.1: the conditional headers for revalidating a stored response:
/// `If-None-Match` from its first `ETag`, `If-Modified-Since` from its `Last-Modified` when that
/// is a valid HTTP-date (sent as stored). Empty when it has no validators.
pub fn validators(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(etag) = stored.get(ETAG).filter(|v| !trim(v.as_bytes()).is_empty()) {
        out.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = stored.get(LAST_MODIFIED) {
        if HttpDate::parse(lm.as_bytes()).is_some() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::testing::*;

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
            ("lenient last-modified kept as sent", vec![("last-modified", "mon, 01 jan 2024 00:00:00 gmt")], vec![("if-modified-since", "mon, 01 jan 2024 00:00:00 gmt")]),
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
}

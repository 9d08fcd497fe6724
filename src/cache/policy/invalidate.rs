//! Invalidation after unsafe methods: which URIs a response invalidates (RFC 9111 §4.4, RFC 3986 §5.2); pure.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, StatusCode, Uri};

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
    use crate::cache::policy::testing::*;
    use http::HeaderValue;

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
}

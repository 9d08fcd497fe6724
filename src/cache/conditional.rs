//! Client preconditions and Range against a stored complete response; pure, no I/O, no clock.

use std::cmp::Ordering;
use std::time::SystemTime;

use http::header::{
    CACHE_CONTROL, CONTENT_LOCATION, DATE, ETAG, EXPIRES, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE, VARY,
};
use http::{HeaderMap, HeaderName, Method};

use crate::grammar::{is_ows, trim_ows};

/// The outcome of a request's preconditions against a stored response (RFC 9110 §13.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Every precondition holds (or none applies): answer normally (then consider Range).
    Proceed,
    /// If-None-Match or If-Modified-Since is false for GET/HEAD: answer 304 (RFC 9110 §15.4.5).
    NotModified,
    /// If-Match or If-Unmodified-Since is false: answer 412 (RFC 9110 §15.5.13).
    Failed,
}

/// Evaluates If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since against the stored
/// response headers (ETag, Last-Modified, Date), in the order of RFC 9110 §13.2.2.
///
/// - Only GET and HEAD are evaluated; any other method gives `Proceed`, because a cache must not
///   evaluate preconditions of a request it cannot satisfy from its store (RFC 9111 §4.3.2): the
///   request goes to the origin, which evaluates them.
/// - The caller calls this only for a stored 2xx response: for any other stored status the
///   preconditions are ignored (RFC 9110 §13.2.1), which is `Proceed`.
/// - If-Match (RFC 9110 §13.1.1) uses strong comparison, If-None-Match (§13.1.2) weak comparison
///   (RFC 9110 §8.8.3.2). `*` means "a current representation exists", which holds for a stored
///   response; `*` is recognised only as the whole field value. List members that are not valid
///   entity-tags never match, so a malformed If-Match fails (412) and a malformed If-None-Match
///   lets the full response through.
/// - If-Unmodified-Since (§13.1.4) is ignored when If-Match is present, when it is not exactly one
///   valid HTTP-date, or when the stored response has no valid Last-Modified.
/// - If-Modified-Since (§13.1.3) is ignored when If-None-Match is present or when it is not exactly
///   one valid HTTP-date. It is compared with Last-Modified, or, without one, with the stored Date
///   (RFC 9111 §4.3.2); with neither it is ignored.
pub fn evaluate(method: &Method, req: &HeaderMap, stored: &HeaderMap) -> Precondition {
    if method != Method::GET && method != Method::HEAD {
        return Precondition::Proceed;
    }
    // The stored validators are read only for a request that has a precondition (most have
    // none: this runs for every cache hit).
    let etag = || stored_etag(stored);
    let last_modified = || single_date(stored, &LAST_MODIFIED);

    // Step 1 and 2: the state-protecting preconditions.
    if req.contains_key(IF_MATCH) {
        let holds = match tag_list(req, &IF_MATCH) {
            TagList::Any => true,
            TagList::Tags(tags) => etag().is_some_and(|e| tags.iter().any(|t| t.strong_eq(&e))),
        };
        if !holds {
            return Precondition::Failed;
        }
    } else if let Some((since, modified)) =
        single_date(req, &IF_UNMODIFIED_SINCE).and_then(|s| Some((s, last_modified()?)))
    {
        if modified > since {
            return Precondition::Failed;
        }
    }

    // Step 3 and 4: the cache-validating preconditions.
    if req.contains_key(IF_NONE_MATCH) {
        let any_matches = match tag_list(req, &IF_NONE_MATCH) {
            TagList::Any => true,
            TagList::Tags(tags) => etag().is_some_and(|e| tags.iter().any(|t| t.weak_eq(&e))),
        };
        if any_matches {
            return Precondition::NotModified;
        }
    } else if let Some(since) = single_date(req, &IF_MODIFIED_SINCE) {
        if let Some(modified) = last_modified().or_else(|| single_date(stored, &DATE)) {
            if modified <= since {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// The header fields of a 304 generated from the stored response (RFC 9110 §15.4.5): every line of
/// Cache-Control, Content-Location, Date, ETag, Expires, Vary and Last-Modified that the stored
/// response has, and nothing else. Age (RFC 9111 §5.1) and Via are the caller's to add.
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let fields = [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        LAST_MODIFIED,
    ];
    let mut out = HeaderMap::new();
    for name in fields {
        for value in stored.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The ETag of a representation derived from the stored one (a mirror page with its links
/// rewritten): the stored entity-tag with `-{suffix}` appended to its opaque part, weakness kept
/// (`"v1"` → `"v1-rwab12"`, `W/"v1"` → `W/"v1-rwab12"`). `None` when the stored response has no
/// single valid ETag or `suffix` holds a character an entity-tag cannot carry. A different
/// representation needs a different strong validator (RFC 9110 §8.8.3).
pub fn derived_etag(stored: &HeaderMap, suffix: &str) -> Option<http::HeaderValue> {
    let tag = stored_etag(stored)?;
    if !suffix.bytes().all(is_etagc) {
        return None;
    }
    let mut out = Vec::with_capacity(tag.opaque.len() + suffix.len() + 5);
    if tag.weak {
        out.extend_from_slice(b"W/");
    }
    out.push(b'"');
    out.extend_from_slice(tag.opaque);
    out.push(b'-');
    out.extend_from_slice(suffix.as_bytes());
    out.push(b'"');
    http::HeaderValue::from_bytes(&out).ok()
}

/// What to send for a request's Range (RFC 9110 §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Ignore Range: 200 with the whole representation.
    Full,
    /// 206 with bytes `start..=end`; invariant: `start <= end < len`.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len` (RFC 9110 §15.5.17).
    Unsatisfiable,
}

/// Answers a single `bytes=` range (`first-last`, `first-`, `-suffix`) of a stored representation of
/// `len` bytes. RFC 9110 §14.1.2, §14.2, §13.1.5.
///
/// Call after [`evaluate`] gave `Proceed` (RFC 9110 §13.2.2 step 5).
/// - `Full` when: the method is not GET (Range is defined for GET only); there is no Range or more
///   than one Range line; the unit is not `bytes` (compared case-insensitively); the range set is
///   syntactically invalid (including `last < first`); it holds several ranges (§14.2 lets a server
///   ignore Range; we send the whole body rather than multipart/byteranges); If-Range does not
///   match; or the representation is empty (`len == 0`: §14.2 lets a server ignore Range when the
///   representation has no content, and an empty 206 cannot be expressed by Content-Range).
/// - If-Range (§13.1.5) matches when it is a strong entity-tag strongly equal to the stored ETag,
///   or an HTTP-date equal to the stored Last-Modified; a weak tag, an invalid value or a missing
///   stored validator never matches.
/// - `Unsatisfiable` when the first position is at or beyond `len`, or the suffix length is 0.
/// - Otherwise `Partial`, with `end` clipped to `len - 1`; a suffix longer than `len` covers the
///   whole body (`0..=len-1`). Numbers of any length are accepted without overflow.
pub fn range(method: &Method, req: &HeaderMap, stored: &HeaderMap, len: u64) -> RangeAnswer {
    if method != Method::GET || len == 0 {
        return RangeAnswer::Full;
    }
    let Some(spec) = single_range(req) else {
        return RangeAnswer::Full;
    };
    if req.contains_key(IF_RANGE) && !if_range_holds(req, stored) {
        return RangeAnswer::Full;
    }
    let last_byte = len - 1;
    match spec {
        ByteRange::Suffix(n) => {
            let n = parse_saturating(n);
            if n == 0 {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial {
                    start: len.saturating_sub(n),
                    end: last_byte,
                }
            }
        }
        ByteRange::From { first, last } => {
            let start = parse_saturating(first);
            if start >= len {
                return RangeAnswer::Unsatisfiable;
            }
            let end = last.map_or(last_byte, |l| parse_saturating(l).min(last_byte));
            RangeAnswer::Partial { start, end }
        }
    }
}

/// The one range-spec of a request's only `Range` line, if it is a valid `bytes` range.
fn single_range(req: &HeaderMap) -> Option<ByteRange<'_>> {
    let mut lines = req.get_all(RANGE).iter();
    let (Some(value), None) = (lines.next(), lines.next()) else {
        return None;
    };
    parse_byte_range(value.as_bytes())
}

/// Where a request's one byte range begins, judged before the representation's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstByte {
    /// `first-` or `first-last`: at this offset.
    At(u64),
    /// `-suffix`: the last bytes, wherever they begin.
    FromEnd,
}

/// The first byte a request's `Range` asks for, when [`range`] would treat it as one range:
/// a GET with one `Range` line holding one valid `bytes` range-spec. `None` otherwise (no
/// Range, several ranges, another unit, invalid syntax, not a GET): [`range`] answers those
/// with the whole representation. If-Range is not judged here (it needs the representation).
pub fn first_byte(method: &Method, req: &HeaderMap) -> Option<FirstByte> {
    if method != Method::GET {
        return None;
    }
    Some(match single_range(req)? {
        ByteRange::From { first, .. } => FirstByte::At(parse_saturating(first)),
        ByteRange::Suffix(_) => FirstByte::FromEnd,
    })
}

/// The validator a cache sends in `If-Range` to tie a ranged request to the representation
/// whose fields are `stored` (RFC 9110 §13.1.5): its strong entity-tag; with no entity-tag at
/// all, its Last-Modified when that is a strong validator — at least one second before the
/// same response's Date (§8.8.2.2). `None` otherwise (a weak tag, several or invalid lines, no
/// validator): no ranged answer can be proved to be of this representation.
pub fn if_range_validator(stored: &HeaderMap) -> Option<http::HeaderValue> {
    if stored.contains_key(ETAG) {
        stored_etag(stored).filter(|t| !t.weak)?;
        return stored.get(ETAG).cloned();
    }
    let modified = single_date(stored, &LAST_MODIFIED)?;
    let date = single_date(stored, &DATE)?;
    let strong = date
        .duration_since(modified)
        .is_ok_and(|d| d >= std::time::Duration::from_secs(1));
    stored.get(LAST_MODIFIED).filter(|_| strong).cloned()
}

/// Does `validator` (an If-Range value) hold for a response with the fields `answer`? The
/// comparison of RFC 9110 §13.1.5: an entity-tag strongly equal to the answer's ETag, or a date
/// equal to its Last-Modified. Anything else (a weak tag, an invalid value, a missing or
/// repeated validator in the answer) is false.
pub fn validator_holds(validator: &http::HeaderValue, answer: &HeaderMap) -> bool {
    let value = trim_ows(validator.as_bytes());
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        return match (parse_single_tag(value), stored_etag(answer)) {
            (Some(tag), Some(etag)) => tag.strong_eq(&etag),
            _ => false,
        };
    }
    let date = std::str::from_utf8(value)
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok());
    match (date, single_date(answer, &LAST_MODIFIED)) {
        (Some(date), Some(modified)) => date == modified,
        _ => false,
    }
}

/// The Content-Range value for an answer (RFC 9110 §14.4): `bytes start-end/len` for `Partial`,
/// `bytes */len` for `Unsatisfiable`, None for `Full`.
pub fn content_range(answer: RangeAnswer, len: u64) -> Option<String> {
    match answer {
        RangeAnswer::Full => None,
        RangeAnswer::Partial { start, end } => Some(format!("bytes {start}-{end}/{len}")),
        RangeAnswer::Unsatisfiable => Some(format!("bytes */{len}")),
    }
}

/// An entity-tag (RFC 9110 §8.8.3): `opaque` is the text between the quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

impl EntityTag<'_> {
    /// RFC 9110 §8.8.3.2 strong comparison: both strong and identical.
    fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// RFC 9110 §8.8.3.2 weak comparison: identical opaque tags, weakness ignored.
    fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

enum TagList<'a> {
    Any,
    Tags(Vec<EntityTag<'a>>),
}

/// etagc = %x21 / %x23-7E / obs-text
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

/// Parses one entity-tag at the start of `s`; returns it and the rest of the input.
fn parse_tag_prefix(s: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, s) = match s.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let s = s.strip_prefix(b"\"")?;
    let close = s.iter().position(|&b| b == b'"')?;
    let opaque = &s[..close];
    if !opaque.iter().all(|&b| is_etagc(b)) {
        return None;
    }
    Some((EntityTag { weak, opaque }, &s[close + 1..]))
}

/// A field value that is exactly one entity-tag (surrounding OWS allowed).
fn parse_single_tag(s: &[u8]) -> Option<EntityTag<'_>> {
    match parse_tag_prefix(trim_ows(s))? {
        (tag, []) => Some(tag),
        _ => None,
    }
}

/// The stored ETag, if it is exactly one line holding one valid entity-tag.
fn stored_etag(stored: &HeaderMap) -> Option<EntityTag<'_>> {
    let mut lines = stored.get_all(ETAG).iter();
    match (lines.next(), lines.next()) {
        (Some(v), None) => parse_single_tag(v.as_bytes()),
        _ => None,
    }
}

/// `"*" / #entity-tag` over all lines of `name` (RFC 9110 §13.1.1, §13.1.2). Invalid members are
/// skipped (they match nothing); commas inside quotes belong to the tag.
fn tag_list<'a>(req: &'a HeaderMap, name: &HeaderName) -> TagList<'a> {
    let mut lines = req.get_all(name).iter().peekable();
    let mut tags = Vec::new();
    let mut first = true;
    while let Some(line) = lines.next() {
        let bytes = line.as_bytes();
        if first && lines.peek().is_none() && trim_ows(bytes) == b"*" {
            return TagList::Any;
        }
        first = false;
        let mut rest = bytes;
        loop {
            // Skip separators and empty members.
            while let [b, tail @ ..] = rest {
                if is_ows(*b) || *b == b',' {
                    rest = tail;
                } else {
                    break;
                }
            }
            if rest.is_empty() {
                break;
            }
            match parse_tag_prefix(rest) {
                Some((tag, tail)) => {
                    let after = trim_ows(tail);
                    if after.is_empty() || after[0] == b',' {
                        tags.push(tag);
                        rest = after;
                        continue;
                    }
                    rest = skip_member(after);
                }
                None => rest = skip_member(rest),
            }
        }
    }
    TagList::Tags(tags)
}

/// Skips an invalid list member up to (not including) the next comma outside quotes.
fn skip_member(s: &[u8]) -> &[u8] {
    let mut quoted = false;
    for (i, &b) in s.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => return &s[i..],
            _ => {}
        }
    }
    &[]
}

/// A field that is exactly one line holding a valid HTTP-date (RFC 9110 §5.6.7).
fn single_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut lines = headers.get_all(name).iter();
    match (lines.next(), lines.next()) {
        (Some(v), None) => {
            let text = std::str::from_utf8(trim_ows(v.as_bytes())).ok()?;
            httpdate::parse_http_date(text).ok()
        }
        _ => None,
    }
}

/// RFC 9110 §13.1.5: an entity-tag strongly matching the stored ETag, or a date equal to the
/// stored Last-Modified. Anything else (several lines, invalid value) is false.
fn if_range_holds(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut lines = req.get_all(IF_RANGE).iter();
    match (lines.next(), lines.next()) {
        (Some(value), None) => validator_holds(value, stored),
        _ => false,
    }
}

/// One syntactically valid byte range-spec, its numbers still as ASCII digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange<'a> {
    /// `first-` or `first-last`, with `last >= first` checked.
    From {
        first: &'a [u8],
        last: Option<&'a [u8]>,
    },
    /// `-suffix`
    Suffix(&'a [u8]),
}

/// `bytes=<one range-spec>` (RFC 9110 §14.1.2); None for another unit, invalid syntax, or a set
/// that does not hold exactly one range-spec.
fn parse_byte_range(value: &[u8]) -> Option<ByteRange<'_>> {
    let value = trim_ows(value);
    let eq = value.iter().position(|&b| b == b'=')?;
    if !trim_ows(&value[..eq]).eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut members = value[eq + 1..]
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|m| !m.is_empty());
    let (Some(spec), None) = (members.next(), members.next()) else {
        return None;
    };
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        return is_digits(last).then_some(ByteRange::Suffix(last));
    }
    if !is_digits(first) {
        return None;
    }
    if last.is_empty() {
        return Some(ByteRange::From { first, last: None });
    }
    if !is_digits(last) || cmp_decimal(last, first) == Ordering::Less {
        return None;
    }
    Some(ByteRange::From {
        first,
        last: Some(last),
    })
}

fn is_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// Compares two digit strings as unbounded decimal numbers.
fn cmp_decimal(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |s: &[u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Digits to u64, saturating at u64::MAX (RFC 9110 §14.1.1: anticipate large numerals).
fn parse_saturating(digits: &[u8]) -> u64 {
    digits
        .iter()
        .try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?
                .checked_add(u64::from(d.saturating_sub(b'0')))
        })
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Request header lines of one table row.
    type Fields = Vec<(&'static str, &'static str)>;

    const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const BEFORE: &str = "Sat, 05 Nov 1994 08:49:37 GMT";
    const AFTER: &str = "Mon, 07 Nov 1994 08:49:37 GMT";

    use crate::http::testing::map;

    fn stored() -> HeaderMap {
        map(&[("etag", "\"v1\""), ("last-modified", LM), ("date", AFTER)])
    }

    #[test]
    fn preconditions() {
        use Precondition::*;
        let weak_stored = map(&[("etag", "W/\"v1\""), ("last-modified", LM)]);
        let no_validators = HeaderMap::new();
        let date_only = map(&[("date", LM)]);
        let s = stored();
        let cases: Vec<(&str, Fields, &HeaderMap, Precondition)> = vec![
            ("no conditions", vec![], &s, Proceed),
            // If-Match: strong comparison.
            ("if-match same", vec![("if-match", "\"v1\"")], &s, Proceed),
            ("if-match other", vec![("if-match", "\"v2\"")], &s, Failed),
            (
                "if-match list",
                vec![("if-match", "\"a\", \"v1\"")],
                &s,
                Proceed,
            ),
            (
                "if-match lines",
                vec![("if-match", "\"a\""), ("if-match", "\"v1\"")],
                &s,
                Proceed,
            ),
            (
                "if-match weak req",
                vec![("if-match", "W/\"v1\"")],
                &s,
                Failed,
            ),
            (
                "if-match weak stored",
                vec![("if-match", "\"v1\"")],
                &weak_stored,
                Failed,
            ),
            ("if-match star", vec![("if-match", "*")], &s, Proceed),
            (
                "if-match star no etag",
                vec![("if-match", "*")],
                &no_validators,
                Proceed,
            ),
            (
                "if-match no stored etag",
                vec![("if-match", "\"v1\"")],
                &no_validators,
                Failed,
            ),
            ("if-match unquoted", vec![("if-match", "v1")], &s, Failed),
            (
                "if-match star in list",
                vec![("if-match", "*, \"x\"")],
                &s,
                Failed,
            ),
            // If-Unmodified-Since.
            ("ius equal", vec![("if-unmodified-since", LM)], &s, Proceed),
            (
                "ius after",
                vec![("if-unmodified-since", AFTER)],
                &s,
                Proceed,
            ),
            (
                "ius before",
                vec![("if-unmodified-since", BEFORE)],
                &s,
                Failed,
            ),
            (
                "ius invalid",
                vec![("if-unmodified-since", "yesterday")],
                &s,
                Proceed,
            ),
            (
                "ius no lm",
                vec![("if-unmodified-since", BEFORE)],
                &date_only,
                Proceed,
            ),
            (
                "ius ignored with if-match",
                vec![("if-match", "\"v1\""), ("if-unmodified-since", BEFORE)],
                &s,
                Proceed,
            ),
            // If-None-Match: weak comparison.
            (
                "inm same",
                vec![("if-none-match", "\"v1\"")],
                &s,
                NotModified,
            ),
            (
                "inm weak req",
                vec![("if-none-match", "W/\"v1\"")],
                &s,
                NotModified,
            ),
            (
                "inm weak stored",
                vec![("if-none-match", "\"v1\"")],
                &weak_stored,
                NotModified,
            ),
            ("inm other", vec![("if-none-match", "\"v2\"")], &s, Proceed),
            (
                "inm list",
                vec![("if-none-match", "\"a\",W/\"v1\"")],
                &s,
                NotModified,
            ),
            (
                "inm comma inside tag",
                vec![("if-none-match", "\"v1,x\", \"y\"")],
                &s,
                Proceed,
            ),
            ("inm star", vec![("if-none-match", "*")], &s, NotModified),
            (
                "inm no stored etag",
                vec![("if-none-match", "\"v1\"")],
                &no_validators,
                Proceed,
            ),
            (
                "inm garbage",
                vec![("if-none-match", "v1, \"")],
                &s,
                Proceed,
            ),
            (
                "inm lowercase w",
                vec![("if-none-match", "w/\"v1\"")],
                &s,
                Proceed,
            ),
            (
                "inm garbage then match",
                vec![("if-none-match", "x\"a,b\"y, \"v1\"")],
                &s,
                NotModified,
            ),
            // If-Modified-Since.
            (
                "ims equal",
                vec![("if-modified-since", LM)],
                &s,
                NotModified,
            ),
            (
                "ims after",
                vec![("if-modified-since", AFTER)],
                &s,
                NotModified,
            ),
            (
                "ims before",
                vec![("if-modified-since", BEFORE)],
                &s,
                Proceed,
            ),
            (
                "ims invalid",
                vec![("if-modified-since", "garbage")],
                &s,
                Proceed,
            ),
            (
                "ims rfc850",
                vec![("if-modified-since", "Sunday, 06-Nov-94 08:49:37 GMT")],
                &s,
                NotModified,
            ),
            (
                "ims asctime",
                vec![("if-modified-since", "Sun Nov  6 08:49:37 1994")],
                &s,
                NotModified,
            ),
            (
                "ims two lines",
                vec![("if-modified-since", LM), ("if-modified-since", AFTER)],
                &s,
                Proceed,
            ),
            (
                "ims falls back to date",
                vec![("if-modified-since", LM)],
                &date_only,
                NotModified,
            ),
            (
                "ims date newer",
                vec![("if-modified-since", BEFORE)],
                &date_only,
                Proceed,
            ),
            (
                "ims no validators",
                vec![("if-modified-since", AFTER)],
                &no_validators,
                Proceed,
            ),
            (
                "ims ignored with inm",
                vec![("if-none-match", "\"v2\""), ("if-modified-since", AFTER)],
                &s,
                Proceed,
            ),
            // Order of §13.2.2.
            (
                "if-match fails before inm",
                vec![("if-match", "\"v2\""), ("if-none-match", "\"v1\"")],
                &s,
                Failed,
            ),
            (
                "ius fails before ims",
                vec![
                    ("if-unmodified-since", BEFORE),
                    ("if-modified-since", AFTER),
                ],
                &s,
                Failed,
            ),
            (
                "if-match holds then inm",
                vec![("if-match", "\"v1\""), ("if-none-match", "\"v1\"")],
                &s,
                NotModified,
            ),
        ];
        for (name, req, stored, want) in cases {
            assert_eq!(evaluate(&Method::GET, &map(&req), stored), want, "{name}");
        }
    }

    #[test]
    fn methods_other_than_get_and_head_are_not_evaluated() {
        let s = stored();
        let inm = map(&[("if-none-match", "\"v1\"")]);
        let im = map(&[("if-match", "\"v2\"")]);
        assert_eq!(evaluate(&Method::HEAD, &inm, &s), Precondition::NotModified);
        assert_eq!(evaluate(&Method::HEAD, &im, &s), Precondition::Failed);
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert_eq!(evaluate(&m, &inm, &s), Precondition::Proceed, "{m}");
            assert_eq!(evaluate(&m, &im, &s), Precondition::Proceed, "{m}");
        }
    }

    #[test]
    fn non_utf8_and_odd_values_never_panic() {
        let mut req = HeaderMap::new();
        for name in [
            IF_MATCH,
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_UNMODIFIED_SINCE,
            IF_RANGE,
            RANGE,
        ] {
            for v in [&b"\xff\xfe"[..], b"", b"\"", b"W/", b"bytes=-", b"\"\xff\""] {
                req.append(
                    name.clone(),
                    HeaderValue::from_bytes(v).expect("test value"),
                );
            }
        }
        let s = stored();
        // Multiple junk If-Match lines hold no matching tag: 412.
        assert_eq!(evaluate(&Method::GET, &req, &s), Precondition::Failed);
        assert_eq!(range(&Method::GET, &req, &s, 10), RangeAnswer::Full);
        let mut obs = HeaderMap::new();
        obs.insert(
            IF_NONE_MATCH,
            HeaderValue::from_bytes(b"\"\xff\"").expect("test value"),
        );
        let mut stored_obs = HeaderMap::new();
        stored_obs.insert(
            ETAG,
            HeaderValue::from_bytes(b"\"\xff\"").expect("test value"),
        );
        assert_eq!(
            evaluate(&Method::GET, &obs, &stored_obs),
            Precondition::NotModified
        );
    }

    #[test]
    fn not_modified_carries_only_the_listed_fields() {
        let s = map(&[
            ("cache-control", "max-age=60"),
            ("cache-control", "public"),
            ("content-location", "/a.en"),
            ("date", LM),
            ("etag", "\"v1\""),
            ("expires", AFTER),
            ("vary", "accept-encoding"),
            ("last-modified", LM),
            ("content-type", "text/plain"),
            ("content-length", "42"),
            ("set-cookie", "a=b"),
        ]);
        let h = not_modified_headers(&s);
        assert_eq!(h.len(), 8);
        assert_eq!(h.get_all(CACHE_CONTROL).iter().count(), 2);
        for absent in ["content-type", "content-length", "set-cookie"] {
            assert!(!h.contains_key(absent), "{absent}");
        }
        assert!(not_modified_headers(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn ranges() {
        use RangeAnswer::*;
        let s = stored();
        let p = |start, end| Partial { start, end };
        let cases: Vec<(&str, Fields, u64, RangeAnswer)> = vec![
            ("no range", vec![], 100, Full),
            ("first-last", vec![("range", "bytes=0-9")], 100, p(0, 9)),
            ("first-", vec![("range", "bytes=90-")], 100, p(90, 99)),
            ("suffix", vec![("range", "bytes=-10")], 100, p(90, 99)),
            (
                "suffix longer than body",
                vec![("range", "bytes=-500")],
                100,
                p(0, 99),
            ),
            (
                "suffix zero",
                vec![("range", "bytes=-0")],
                100,
                Unsatisfiable,
            ),
            (
                "end clipped",
                vec![("range", "bytes=50-1000")],
                100,
                p(50, 99),
            ),
            ("last byte", vec![("range", "bytes=99-99")], 100, p(99, 99)),
            (
                "start at len",
                vec![("range", "bytes=100-")],
                100,
                Unsatisfiable,
            ),
            (
                "start beyond len",
                vec![("range", "bytes=200-300")],
                100,
                Unsatisfiable,
            ),
            ("unit case", vec![("range", "Bytes=1-2")], 100, p(1, 2)),
            (
                "ows around member",
                vec![("range", "bytes= 1-2 ,")],
                100,
                p(1, 2),
            ),
            ("unknown unit", vec![("range", "items=0-1")], 100, Full),
            ("no equals", vec![("range", "bytes 0-1")], 100, Full),
            ("last before first", vec![("range", "bytes=5-4")], 100, Full),
            ("not digits", vec![("range", "bytes=a-b")], 100, Full),
            ("negative first", vec![("range", "bytes=--5")], 100, Full),
            ("inner space", vec![("range", "bytes=1 -2")], 100, Full),
            ("empty set", vec![("range", "bytes=")], 100, Full),
            ("lone dash", vec![("range", "bytes=-")], 100, Full),
            (
                "several ranges",
                vec![("range", "bytes=0-1,5-6")],
                100,
                Full,
            ),
            (
                "two lines",
                vec![("range", "bytes=0-1"), ("range", "bytes=5-6")],
                100,
                Full,
            ),
            (
                "huge numbers",
                vec![("range", "bytes=99999999999999999999999-")],
                100,
                Unsatisfiable,
            ),
            (
                "huge last",
                vec![("range", "bytes=3-99999999999999999999999")],
                100,
                p(3, 99),
            ),
            (
                "huge suffix",
                vec![("range", "bytes=-99999999999999999999999")],
                100,
                p(0, 99),
            ),
            (
                "huge last before huge first",
                vec![(
                    "range",
                    "bytes=99999999999999999999999-99999999999999999999998",
                )],
                100,
                Full,
            ),
            (
                "leading zeros",
                vec![("range", "bytes=007-0009")],
                100,
                p(7, 9),
            ),
            (
                "empty body, int range",
                vec![("range", "bytes=0-")],
                0,
                Full,
            ),
            ("empty body, suffix", vec![("range", "bytes=-5")], 0, Full),
            // If-Range.
            (
                "if-range etag",
                vec![("range", "bytes=0-1"), ("if-range", "\"v1\"")],
                100,
                p(0, 1),
            ),
            (
                "if-range other",
                vec![("range", "bytes=0-1"), ("if-range", "\"v2\"")],
                100,
                Full,
            ),
            (
                "if-range weak",
                vec![("range", "bytes=0-1"), ("if-range", "W/\"v1\"")],
                100,
                Full,
            ),
            (
                "if-range date",
                vec![("range", "bytes=0-1"), ("if-range", LM)],
                100,
                p(0, 1),
            ),
            (
                "if-range later date",
                vec![("range", "bytes=0-1"), ("if-range", AFTER)],
                100,
                Full,
            ),
            (
                "if-range garbage",
                vec![("range", "bytes=0-1"), ("if-range", "v1")],
                100,
                Full,
            ),
            (
                "if-range false beats 416",
                vec![("range", "bytes=500-"), ("if-range", "\"v2\"")],
                100,
                Full,
            ),
            (
                "if-range without range",
                vec![("if-range", "\"v1\"")],
                100,
                Full,
            ),
        ];
        for (name, req, len, want) in cases {
            assert_eq!(range(&Method::GET, &map(&req), &s, len), want, "{name}");
        }
    }

    #[test]
    fn range_only_for_get_and_strong_stored_validators() {
        let req = map(&[("range", "bytes=0-1")]);
        let s = stored();
        assert_eq!(range(&Method::HEAD, &req, &s, 10), RangeAnswer::Full);
        assert_eq!(range(&Method::POST, &req, &s, 10), RangeAnswer::Full);
        let weak = map(&[("etag", "W/\"v1\"")]);
        let if_range = map(&[("range", "bytes=0-1"), ("if-range", "\"v1\"")]);
        assert_eq!(range(&Method::GET, &if_range, &weak, 10), RangeAnswer::Full);
        let no_lm = map(&[("date", LM)]);
        let if_date = map(&[("range", "bytes=0-1"), ("if-range", LM)]);
        assert_eq!(range(&Method::GET, &if_date, &no_lm, 10), RangeAnswer::Full);
    }

    #[test]
    fn first_bytes() {
        use FirstByte::*;
        let cases: Vec<(&str, Fields, Option<FirstByte>)> = vec![
            ("no range", vec![], None),
            ("first-last", vec![("range", "bytes=10-19")], Some(At(10))),
            ("first-", vec![("range", "bytes=900-")], Some(At(900))),
            ("suffix", vec![("range", "bytes=-5")], Some(FromEnd)),
            (
                "if-range not judged",
                vec![("range", "bytes=3-"), ("if-range", "\"x\"")],
                Some(At(3)),
            ),
            (
                "huge",
                vec![("range", "bytes=99999999999999999999999-")],
                Some(At(u64::MAX)),
            ),
            ("several ranges", vec![("range", "bytes=0-1,5-6")], None),
            (
                "two lines",
                vec![("range", "bytes=0-1"), ("range", "bytes=5-6")],
                None,
            ),
            ("other unit", vec![("range", "items=0-1")], None),
            ("invalid", vec![("range", "bytes=5-4")], None),
        ];
        for (name, req, want) in cases {
            assert_eq!(first_byte(&Method::GET, &map(&req)), want, "{name}");
        }
        let req = map(&[("range", "bytes=0-1")]);
        assert_eq!(first_byte(&Method::HEAD, &req), None, "HEAD");
    }

    #[test]
    fn if_range_validators_and_what_they_hold_for() {
        let one_sec_later = "Sun, 06 Nov 1994 08:49:38 GMT";
        // (stored fields, validator sent)
        type Row = (&'static str, Fields, Option<&'static str>);
        let cases: Vec<Row> = vec![
            (
                "strong etag",
                vec![("etag", "\"v1\""), ("last-modified", LM)],
                Some("\"v1\""),
            ),
            (
                "weak etag, no date fallback",
                vec![("etag", "W/\"v1\""), ("last-modified", LM), ("date", AFTER)],
                None,
            ),
            (
                "two etags",
                vec![("etag", "\"a\""), ("etag", "\"b\"")],
                None,
            ),
            (
                "invalid etag",
                vec![("etag", "v1"), ("last-modified", LM), ("date", AFTER)],
                None,
            ),
            (
                "strong last-modified",
                vec![("last-modified", LM), ("date", AFTER)],
                Some(LM),
            ),
            (
                "one second is enough",
                vec![("last-modified", LM), ("date", one_sec_later)],
                Some(LM),
            ),
            (
                "same second is weak",
                vec![("last-modified", LM), ("date", LM)],
                None,
            ),
            (
                "date before",
                vec![("last-modified", LM), ("date", BEFORE)],
                None,
            ),
            ("no date", vec![("last-modified", LM)], None),
            ("nothing", vec![], None),
        ];
        for (name, stored, want) in cases {
            let got = if_range_validator(&map(&stored));
            assert_eq!(got.as_ref().and_then(|v| v.to_str().ok()), want, "{name}");
        }
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        let holds: Vec<(&str, &str, Fields, bool)> = vec![
            ("same tag", "\"v1\"", vec![("etag", "\"v1\"")], true),
            ("other tag", "\"v1\"", vec![("etag", "\"v2\"")], false),
            ("answer weak", "\"v1\"", vec![("etag", "W/\"v1\"")], false),
            (
                "answer has none",
                "\"v1\"",
                vec![("last-modified", LM)],
                false,
            ),
            ("same date", LM, vec![("last-modified", LM)], true),
            ("other date", LM, vec![("last-modified", AFTER)], false),
            ("date vs tag only", LM, vec![("etag", "\"v1\"")], false),
        ];
        for (name, validator, answer, want) in holds {
            assert_eq!(
                validator_holds(&v(validator), &map(&answer)),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn content_range_values() {
        let cases = [
            (RangeAnswer::Full, 10, None),
            (
                RangeAnswer::Partial { start: 0, end: 9 },
                10,
                Some("bytes 0-9/10"),
            ),
            (
                RangeAnswer::Partial { start: 5, end: 5 },
                10,
                Some("bytes 5-5/10"),
            ),
            (RangeAnswer::Unsatisfiable, 10, Some("bytes */10")),
            (RangeAnswer::Unsatisfiable, 0, Some("bytes */0")),
        ];
        for (answer, len, want) in cases {
            assert_eq!(content_range(answer, len).as_deref(), want, "{answer:?}");
        }
    }

    #[test]
    fn decimal_helpers() {
        assert_eq!(cmp_decimal(b"0010", b"9"), Ordering::Greater);
        assert_eq!(cmp_decimal(b"000", b"0"), Ordering::Equal);
        assert_eq!(cmp_decimal(b"12", b"13"), Ordering::Less);
        assert_eq!(parse_saturating(b"18446744073709551615"), u64::MAX);
        assert_eq!(parse_saturating(b"18446744073709551616"), u64::MAX);
        assert_eq!(parse_saturating(b"42"), 42);
    }

    #[test]
    fn derived_etags_keep_weakness_and_differ_from_the_stored_tag() {
        // (stored header lines, suffix, derived ETag)
        type Row = (
            &'static [(&'static str, &'static str)],
            &'static str,
            Option<&'static str>,
        );
        let cases: &[Row] = &[
            (&[("etag", "\"v1\"")], "rwab12", Some("\"v1-rwab12\"")),
            (&[("etag", "W/\"v1\"")], "rwab12", Some("W/\"v1-rwab12\"")),
            (&[("etag", " \"\" ")], "rw0", Some("\"-rw0\"")),
            (&[], "rwab12", None),
            (&[("etag", "v1")], "rwab12", None),
            (&[("etag", "\"a\""), ("etag", "\"b\"")], "rwab12", None),
            (&[("etag", "\"v1\"")], "bad\"suffix", None),
        ];
        for (stored, suffix, want) in cases {
            let got = derived_etag(&map(stored), suffix);
            assert_eq!(
                got.as_ref().and_then(|v| v.to_str().ok()),
                *want,
                "{stored:?} + {suffix}"
            );
        }
        // The derived tag matches itself (304) and never the stored one.
        let derived = derived_etag(&stored(), "rwab12").unwrap();
        let view = map(&[("etag", derived.to_str().unwrap())]);
        let inm = |t: &str| map(&[("if-none-match", t)]);
        assert_eq!(
            evaluate(&Method::GET, &inm("\"v1-rwab12\""), &view),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(&Method::GET, &inm("\"v1\""), &view),
            Precondition::Proceed
        );
    }
}

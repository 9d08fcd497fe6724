//! Ranges of objects not stored yet, decided: whether a range request starts the whole fill
//! (`cache.range_fill`), whether a range of a fill in progress waits for it or is fetched ahead,
//! whether a ranged answer may stand in for the fill's bytes, and what becomes of an answer
//! that is not stored. Pure: no I/O, no clock.

use http::header::{CONTENT_ENCODING, CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::cache::conditional::{self, validator_holds, FirstByte, Precondition, RangeAnswer};
use crate::cache::inflight::{FillState, Outcome};
use crate::cache::policy::Reuse;
use crate::config::RangeFill;

/// How far ahead of a fill's written bytes a range may begin and still wait for the fill: the
/// fill brings bytes this close within moments, where a ranged request costs a round trip and
/// a second stream of the same bytes.
pub const NEAR: u64 = 1 << 20;

/// Does a range request for an object that is neither stored nor being fetched start the
/// download of the whole object (`cache.range_fill`, the offset rule of Squid's
/// `range_offset_limit`)? A suffix range begins near the end: beyond any byte limit.
pub fn starts_fill(limit: RangeFill, first: FirstByte) -> bool {
    match (limit, first) {
        (RangeFill::Whole, _) => true,
        (RangeFill::None, _) => false,
        (RangeFill::UpTo(max), FirstByte::At(at)) => at <= max,
        (RangeFill::UpTo(_), FirstByte::FromEnd) => false,
    }
}

/// Where the bytes of a range of a fill in progress come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// From the fill: it holds them, or soon will.
    Fill,
    /// From a ranged request of their own, until the fill catches up.
    Ahead,
}

/// A range beginning at `start` of a fill holding `written` bytes: read from the fill unless
/// the range begins at least [`NEAR`] bytes past them and a validator (`tied`) can tie a ranged
/// answer to the fill's representation — without one, no ranged answer can be proved to hold
/// the same bytes, and the range waits for the fill.
pub fn read(start: u64, written: u64, tied: bool) -> Read {
    if tied && start.saturating_sub(written) >= NEAR {
        Read::Ahead
    } else {
        Read::Fill
    }
}

/// Has the fill caught up with a client read ahead of it at `pos`? It has when it holds the
/// byte at `pos` in its file and has not failed: the rest of the range is then read from it
/// (the same bytes, as the ranged answer was tied to its representation).
pub fn caught_up(fill: &FillState, pos: u64) -> bool {
    let failed = !matches!(
        fill.outcome,
        None | Some(Outcome::Stored(_) | Outcome::Complete)
    );
    fill.written > pos && fill.stored_to.is_none() && !failed
}

/// The `Range` field asking for bytes `start..=last`.
pub fn range_field(start: u64, last: u64) -> String {
    format!("bytes={start}-{last}")
}

/// Why a ranged answer may not stand in for bytes of a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a 206: the source ignored Range, or If-Range told it the representation changed.
    Status,
    /// A multipart/byteranges answer to a request for one range.
    Multipart,
    /// No Content-Range, or one for other bytes or another length.
    ContentRange,
    /// The validator the fill has does not hold for the answer (another ETag/Last-Modified).
    Validator,
    /// Another content coding than the fill's.
    Coding,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Status => "not-206",
            Refused::Multipart => "multipart",
            Refused::ContentRange => "content-range",
            Refused::Validator => "validator",
            Refused::Coding => "coding",
        }
    }
}

/// What a ranged request asked for: bytes `start..=last` of the fill's representation, which
/// has `len` bytes, the fields `fill` and the If-Range `validator`.
pub struct Asked<'a> {
    pub start: u64,
    pub last: u64,
    pub len: u64,
    pub validator: &'a HeaderValue,
    pub fill: &'a HeaderMap,
}

/// May an answer (`status`, fields `answer`) to a ranged request stand in for the bytes it
/// asked for? The checks of nginx's slice module — a 206 of one part whose Content-Range
/// names exactly the bytes asked and the fill's length, the fill's ETag — plus the If-Range
/// comparison itself (RFC 9110 §13.1.5: the answer's validator must be the one sent, so a
/// source that ignored If-Range is caught too) and the same content coding. A peer's stored
/// copy is judged with its head as `answer` and a made-up 206 status.
pub fn check(asked: &Asked<'_>, status: StatusCode, answer: &HeaderMap) -> Result<(), Refused> {
    if status != StatusCode::PARTIAL_CONTENT {
        return Err(Refused::Status);
    }
    let multipart = answer.get(CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .to_ascii_lowercase()
            .starts_with(b"multipart/byteranges")
    });
    if multipart {
        return Err(Refused::Multipart);
    }
    let mut lines = answer.get_all(CONTENT_RANGE).iter();
    let range = match (lines.next(), lines.next()) {
        (Some(v), None) => content_range(v.as_bytes()),
        _ => None,
    };
    if range != Some((asked.start, asked.last, Some(asked.len))) {
        return Err(Refused::ContentRange);
    }
    same_representation(asked, answer)
}

/// Does the validator sent hold for `answer`, and does it have the fill's content coding?
pub fn same_representation(asked: &Asked<'_>, answer: &HeaderMap) -> Result<(), Refused> {
    if !validator_holds(asked.validator, answer) {
        return Err(Refused::Validator);
    }
    if codings(asked.fill) != codings(answer) {
        return Err(Refused::Coding);
    }
    Ok(())
}

/// Every Content-Encoding coding, lower case, in order (none for identity).
fn codings(h: &HeaderMap) -> Vec<String> {
    h.get_all(CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect()
}

/// `bytes first-last/complete` (RFC 9110 §14.4; `*` for an unknown length) as numbers, when
/// `last >= first` and `last < complete`; `None` for anything else (an unsatisfied-range form
/// too).
pub fn content_range(value: &[u8]) -> Option<(u64, u64, Option<u64>)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (unit, rest) = text.split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (span, complete) = rest.trim_start().split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (first, last) = (number(first)?, number(last)?);
    let complete = match complete {
        "*" => None,
        n => Some(number(n)?),
    };
    let fits = last >= first && complete.is_none_or(|c| last < c);
    fits.then_some((first, last, complete))
}

/// The bytes `start..=end` a peer's stored copy (`status`, fields `stored`, `len` bytes; `reuse`
/// as RFC 9111 judged it for this request) can answer a range that starts no fill with, as if
/// this cache held it: only a 200 that may be served without the origin, whose preconditions
/// all hold, and which the request's Range (If-Range judged against it) cuts to one range.
/// `None` sends the request upstream as asked.
pub fn span_of_copy(
    req: &HeaderMap,
    status: StatusCode,
    reuse: Reuse,
    stored: &HeaderMap,
    len: u64,
) -> Option<(u64, u64)> {
    let usable = status == StatusCode::OK
        && matches!(reuse, Reuse::Fresh | Reuse::StaleAllowed)
        && conditional::evaluate(&Method::GET, req, stored) == Precondition::Proceed;
    match conditional::range(&Method::GET, req, stored, len) {
        RangeAnswer::Partial { start, end } if usable => Some((start, end)),
        _ => None,
    }
}

/// What becomes of an answer that is not stored, to a request for one range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unstored {
    /// Relay it as it is (a 206 of the client's own request, an error, no single range).
    Relay,
    /// Cut the client's range out of this whole 200 (If-Range judged against it).
    Cut,
    /// Drop it and ask again for the client's range: the range begins too far into the body.
    AskRanged,
}

/// An answer that will not be stored (`status`; `len` from its Content-Length) to a request
/// whose one range begins at `first` (`None`: no single range). `passed`: the client's request
/// went upstream as it was, its Range and If-Range with it, so a 200 means the source ignored
/// the range or the representation changed — the cut, judged against the 200's own
/// validators, tells which. A fill's request (no Range) that came back unstorable is cut when
/// the range begins within [`NEAR`] bytes, else asked again with Range.
pub fn unstored(
    first: Option<FirstByte>,
    passed: bool,
    status: StatusCode,
    len: Option<u64>,
) -> Unstored {
    let Some(first) = first else {
        return Unstored::Relay;
    };
    if status != StatusCode::OK {
        return Unstored::Relay;
    }
    let near = match first {
        FirstByte::At(at) => at < NEAR,
        FirstByte::FromEnd => len.is_some_and(|l| l <= NEAR),
    };
    if passed || near {
        Unstored::Cut
    } else {
        Unstored::AskRanged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::map;

    const MIB: u64 = 1 << 20;

    #[test]
    fn what_range_fill_allows() {
        use FirstByte::*;
        use RangeFill::*;
        let cases = [
            (Whole, At(0), true),
            (Whole, At(u64::MAX), true),
            (Whole, FromEnd, true),
            (None, At(0), false),
            (None, FromEnd, false),
            (UpTo(MIB), At(0), true),
            (UpTo(MIB), At(MIB), true),
            (UpTo(MIB), At(MIB + 1), false),
            (UpTo(MIB), FromEnd, false),
            (UpTo(0), At(0), true),
            (UpTo(0), At(1), false),
        ];
        for (limit, first, want) in cases {
            assert_eq!(starts_fill(limit, first), want, "{limit:?} {first:?}");
        }
    }

    #[test]
    fn ranged_or_wait_for_the_fill() {
        use Read::*;
        // (start, written, tied, read)
        let cases = [
            (0, 0, true, Fill),
            (MIB - 1, 0, true, Fill),
            (MIB, 0, true, Ahead),
            (90 * MIB, 0, true, Ahead),
            (90 * MIB, 0, false, Fill),
            (5 * MIB, 4 * MIB + 1, true, Fill),
            (5 * MIB, 4 * MIB, true, Ahead),
            (3 * MIB, 4 * MIB, true, Fill),
            (u64::MAX, u64::MAX - 1, true, Fill),
        ];
        for (start, written, tied, want) in cases {
            assert_eq!(read(start, written, tied), want, "{start} {written} {tied}");
        }
        assert_eq!(range_field(5, 9), "bytes=5-9");
    }

    #[test]
    fn the_fill_catches_up_with_a_reader_ahead_of_it() {
        let at = |written, stored_to, outcome| FillState {
            written,
            stored_to,
            outcome,
            ..FillState::default()
        };
        // (state, pos, caught up)
        let cases = [
            ("behind", at(10, None, None), 10, false),
            ("holds the byte", at(11, None, None), 10, true),
            ("complete", at(100, None, Some(Outcome::Complete)), 10, true),
            ("broken", at(100, None, Some(Outcome::Broken)), 10, false),
            (
                "abandoned",
                at(100, None, Some(Outcome::Abandoned)),
                10,
                false,
            ),
            ("past the store limit", at(100, Some(50), None), 10, false),
        ];
        for (name, state, pos, want) in cases {
            assert_eq!(caught_up(&state, pos), want, "{name}");
        }
    }

    #[test]
    fn content_range_values() {
        type Row = (&'static str, Option<(u64, u64, Option<u64>)>);
        let cases: &[Row] = &[
            ("bytes 0-9/10", Some((0, 9, Some(10)))),
            ("Bytes 5-5/10", Some((5, 5, Some(10)))),
            ("bytes 5-9/*", Some((5, 9, None))),
            (" bytes 1-2/3 ", Some((1, 2, Some(3)))),
            ("bytes 9-5/10", None),
            ("bytes 5-10/10", None),
            ("bytes */10", None),
            ("bytes 1-2", None),
            ("items 1-2/3", None),
            ("bytes +1-2/3", None),
            ("bytes 1-2/-3", None),
            ("bytes 1-99999999999999999999999/*", None),
            ("", None),
        ];
        for (v, want) in cases {
            assert_eq!(content_range(v.as_bytes()), *want, "{v}");
        }
        assert_eq!(content_range(b"bytes \xff-1/2"), None);
    }

    #[test]
    fn a_ranged_answer_stands_in_only_for_the_same_bytes_of_the_same_representation() {
        let fill = map(&[("etag", "\"v1\""), ("content-type", "video/mp4")]);
        let etag = HeaderValue::from_static("\"v1\"");
        let asked = Asked {
            start: 900,
            last: 999,
            len: 1000,
            validator: &etag,
            fill: &fill,
        };
        let partial = StatusCode::PARTIAL_CONTENT;
        let good = [("etag", "\"v1\""), ("content-range", "bytes 900-999/1000")];
        type Row = (
            &'static str,
            StatusCode,
            Vec<(&'static str, &'static str)>,
            Result<(), Refused>,
        );
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = good.to_vec();
            v.extend_from_slice(extra);
            v
        };
        let cases: Vec<Row> = vec![
            ("exact", partial, good.to_vec(), Ok(())),
            ("a 200", StatusCode::OK, good.to_vec(), Err(Refused::Status)),
            (
                "a 416",
                StatusCode::RANGE_NOT_SATISFIABLE,
                good.to_vec(),
                Err(Refused::Status),
            ),
            (
                "other etag",
                partial,
                vec![("etag", "\"v2\""), ("content-range", "bytes 900-999/1000")],
                Err(Refused::Validator),
            ),
            (
                "weak etag",
                partial,
                vec![
                    ("etag", "W/\"v1\""),
                    ("content-range", "bytes 900-999/1000"),
                ],
                Err(Refused::Validator),
            ),
            (
                "no etag",
                partial,
                vec![("content-range", "bytes 900-999/1000")],
                Err(Refused::Validator),
            ),
            (
                "other bytes",
                partial,
                vec![("etag", "\"v1\""), ("content-range", "bytes 800-999/1000")],
                Err(Refused::ContentRange),
            ),
            (
                "fewer bytes",
                partial,
                vec![("etag", "\"v1\""), ("content-range", "bytes 900-950/1000")],
                Err(Refused::ContentRange),
            ),
            (
                "other length",
                partial,
                vec![("etag", "\"v1\""), ("content-range", "bytes 900-999/2000")],
                Err(Refused::ContentRange),
            ),
            (
                "unknown length",
                partial,
                vec![("etag", "\"v1\""), ("content-range", "bytes 900-999/*")],
                Err(Refused::ContentRange),
            ),
            (
                "no content-range",
                partial,
                vec![("etag", "\"v1\"")],
                Err(Refused::ContentRange),
            ),
            (
                "two content-ranges",
                partial,
                with(&[("content-range", "bytes 900-999/1000")]),
                Err(Refused::ContentRange),
            ),
            (
                "multipart",
                partial,
                with(&[("content-type", "multipart/byteranges; boundary=x")]),
                Err(Refused::Multipart),
            ),
            (
                "gzip",
                partial,
                with(&[("content-encoding", "gzip")]),
                Err(Refused::Coding),
            ),
            (
                "identity is none",
                partial,
                with(&[("content-encoding", "identity")]),
                Ok(()),
            ),
        ];
        for (name, status, answer, want) in cases {
            assert_eq!(check(&asked, status, &map(&answer)), want, "{name}");
        }
        // The same coding on both sides is fine; Last-Modified as the validator compares dates.
        let gz = map(&[("etag", "\"v1\""), ("content-encoding", "GZIP")]);
        let gz_asked = Asked { fill: &gz, ..asked };
        let answer = map(&[
            ("etag", "\"v1\""),
            ("content-encoding", "gzip"),
            ("content-range", "bytes 900-999/1000"),
        ]);
        assert_eq!(check(&gz_asked, partial, &answer), Ok(()));
        let lm = HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        let by_date = Asked {
            validator: &lm,
            ..asked
        };
        let dated = |d: &'static str| {
            map(&[
                ("last-modified", d),
                ("content-range", "bytes 900-999/1000"),
            ])
        };
        assert_eq!(
            check(&by_date, partial, &dated("Sun, 06 Nov 1994 08:49:37 GMT")),
            Ok(())
        );
        assert_eq!(
            check(&by_date, partial, &dated("Sun, 06 Nov 1994 08:49:38 GMT")),
            Err(Refused::Validator)
        );
    }

    #[test]
    fn which_peer_copies_answer_a_range_that_starts_no_fill() {
        let stored = map(&[("etag", "\"p1\"")]);
        let ok = StatusCode::OK;
        // (case, request, status, reuse, span)
        type Row = (
            &'static str,
            Vec<(&'static str, &'static str)>,
            StatusCode,
            Reuse,
            Option<(u64, u64)>,
        );
        let cases: Vec<Row> = vec![
            (
                "fresh",
                vec![("range", "bytes=900-")],
                ok,
                Reuse::Fresh,
                Some((900, 999)),
            ),
            (
                "stale allowed",
                vec![("range", "bytes=-10")],
                ok,
                Reuse::StaleAllowed,
                Some((990, 999)),
            ),
            (
                "stale",
                vec![("range", "bytes=900-")],
                ok,
                Reuse::Revalidate,
                None,
            ),
            (
                "swr",
                vec![("range", "bytes=900-")],
                ok,
                Reuse::StaleWhileRevalidate,
                None,
            ),
            (
                "a 404",
                vec![("range", "bytes=900-")],
                StatusCode::NOT_FOUND,
                Reuse::Fresh,
                None,
            ),
            (
                "if-range holds",
                vec![("range", "bytes=1-2"), ("if-range", "\"p1\"")],
                ok,
                Reuse::Fresh,
                Some((1, 2)),
            ),
            (
                "if-range fails",
                vec![("range", "bytes=1-2"), ("if-range", "\"p0\"")],
                ok,
                Reuse::Fresh,
                None,
            ),
            (
                "if-none-match",
                vec![("range", "bytes=1-2"), ("if-none-match", "\"p1\"")],
                ok,
                Reuse::Fresh,
                None,
            ),
            (
                "if-match fails",
                vec![("range", "bytes=1-2"), ("if-match", "\"p0\"")],
                ok,
                Reuse::Fresh,
                None,
            ),
            (
                "beyond the end",
                vec![("range", "bytes=1000-")],
                ok,
                Reuse::Fresh,
                None,
            ),
            (
                "several ranges",
                vec![("range", "bytes=1-2,5-6")],
                ok,
                Reuse::Fresh,
                None,
            ),
        ];
        for (name, req, status, reuse, want) in cases {
            assert_eq!(
                span_of_copy(&map(&req), status, reuse, &stored, 1000),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn answers_that_are_not_stored() {
        use FirstByte::*;
        use Unstored::*;
        let ok = StatusCode::OK;
        // (first, passed, status, len, what)
        let cases = [
            (None, false, ok, Some(10 * MIB), Relay),
            (None, true, ok, Some(10 * MIB), Relay),
            (
                Some(At(9 * MIB)),
                true,
                StatusCode::PARTIAL_CONTENT,
                None,
                Relay,
            ),
            (Some(At(9 * MIB)), true, StatusCode::NOT_FOUND, None, Relay),
            (Some(At(9 * MIB)), false, StatusCode::NOT_FOUND, None, Relay),
            (Some(At(9 * MIB)), true, ok, Some(10 * MIB), Cut),
            (Some(At(9 * MIB)), false, ok, Some(10 * MIB), AskRanged),
            (Some(At(9 * MIB)), false, ok, None, AskRanged),
            (Some(At(MIB - 1)), false, ok, Some(10 * MIB), Cut),
            (Some(FromEnd), false, ok, Some(MIB), Cut),
            (Some(FromEnd), false, ok, Some(MIB + 1), AskRanged),
            (Some(FromEnd), false, ok, None, AskRanged),
            (Some(FromEnd), true, ok, None, Cut),
        ];
        for (first, passed, status, len, want) in cases {
            assert_eq!(
                unstored(first, passed, status, len),
                want,
                "{first:?} {passed} {status} {len:?}"
            );
        }
    }
}

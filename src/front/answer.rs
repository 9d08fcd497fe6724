//! Builds a client's answer from a stored entry or a fill in progress: client preconditions
//! (304/412), Range (206/416), HEAD, `Age`. Bodies are read from files; a stored body is checked
//! against its blake3 hash as it is read, and a mismatch is never served as complete.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::body::{self, Body};
use crate::cache::conditional::{self, Precondition, RangeAnswer};
use crate::cache::head::Entry;
use crate::cache::head::FillHead;
use crate::cache::inflight::Fill;
use crate::cache::read::{drop_corrupt, open, read_span, stream_file, Verify};
use crate::cache::store::Store;
use crate::fetch::ranges::Ahead;
use crate::front::relink::Relink;
use crate::metrics::{Metrics, Source};
use crate::sendfile;

/// Bodies up to this size are read whole and verified before the response starts (a corrupt
/// small blob becomes a clean miss instead of a cut), and kept in the store's memory cache.
const SMALL_BODY: u64 = 256 * 1024;

/// What shape the answer takes, decided from the request and the representation's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    NotModified,
    PreconditionFailed,
    Full,
    Partial { start: u64, end: u64 },
    Unsatisfiable,
}

/// RFC 9110 §13.2.2 and §14: preconditions and ranges only apply to a 200 representation.
fn shape(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    stored: &HeaderMap,
    len: Option<u64>,
) -> Shape {
    if status != StatusCode::OK {
        return Shape::Full;
    }
    match conditional::evaluate(method, req, stored) {
        Precondition::NotModified => return Shape::NotModified,
        Precondition::Failed => return Shape::PreconditionFailed,
        Precondition::Proceed => {}
    }
    let Some(len) = len else { return Shape::Full };
    match conditional::range(method, req, stored, len) {
        RangeAnswer::Full => Shape::Full,
        RangeAnswer::Partial { start, end } => Shape::Partial { start, end },
        RangeAnswer::Unsatisfiable => Shape::Unsatisfiable,
    }
}

fn with_head(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// Sets `Content-Length` to `n`, unless it already says so (as a stored head usually does).
fn set_len(h: &mut HeaderMap, n: u64) {
    let mut buf = [0; 20];
    let digits = crate::grammar::decimal(n, &mut buf);
    if h.get(header::CONTENT_LENGTH).map(HeaderValue::as_bytes) != Some(digits) {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// The answers that need no body bytes; `None` for Full and Partial.
fn bodiless(shape: Shape, headers: &HeaderMap, len: Option<u64>) -> Option<Response<Body>> {
    match shape {
        Shape::NotModified => Some(with_head(
            StatusCode::NOT_MODIFIED,
            conditional::not_modified_headers(headers),
            body::empty(),
        )),
        Shape::PreconditionFailed => {
            let mut h = HeaderMap::new();
            set_len(&mut h, 0);
            Some(with_head(StatusCode::PRECONDITION_FAILED, h, body::empty()))
        }
        Shape::Unsatisfiable => {
            let mut h = HeaderMap::new();
            let len = len.unwrap_or(0);
            if let Some(cr) = conditional::content_range(RangeAnswer::Unsatisfiable, len) {
                if let Ok(v) = HeaderValue::from_str(&cr) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
            set_len(&mut h, 0);
            Some(with_head(
                StatusCode::RANGE_NOT_SATISFIABLE,
                h,
                body::empty(),
            ))
        }
        Shape::Full | Shape::Partial { .. } => None,
    }
}

/// Status and headers of a Partial answer.
fn partial_head(mut h: HeaderMap, start: u64, end: u64, len: u64) -> HeaderMap {
    let answer = RangeAnswer::Partial { start, end };
    if let Some(cr) = conditional::content_range(answer, len) {
        if let Ok(v) = HeaderValue::from_str(&cr) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    set_len(&mut h, end - start + 1);
    h
}

/// The shape of an answer, judged on the representation the client gets: with `relink` and a
/// head it rewrites, the derived validators (a 304 carries them too) and no ranges (RFC 9110
/// §14.2 lets a server ignore Range; the rewritten bytes are only known once read whole).
/// Returns the shape and the 304's header fields.
fn judged_shape(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    headers: &HeaderMap,
    len: Option<u64>,
    relink: Option<&Relink>,
) -> (Shape, Option<HeaderMap>) {
    match relink.and_then(|r| r.judged(status, headers, len)) {
        Some(judged) => (shape(method, req, status, &judged, None), Some(judged)),
        None => (shape(method, req, status, headers, len), None),
    }
}

/// Answers from a stored entry whose header fields the caller already unpacked (`stored`).
/// `None` when its blob is missing, truncated or (small bodies)
/// corrupt: the caller then treats the request as a miss. The entry is invalidated in that case.
/// With `sendfile` (the client connection's file job), a large blob already verified goes out
/// with zero copies. With `relink`, preconditions and ranges are judged as `judged_shape` says;
/// the body itself is rewritten by the caller.
#[allow(clippy::too_many_arguments)]
pub async fn from_entry(
    method: &Method,
    req: &HeaderMap,
    entry: &Arc<Entry>,
    stored: HeaderMap,
    age: Duration,
    store: &Store,
    metrics: &Arc<Metrics>,
    sendfile: Option<&sendfile::Slot>,
    relink: Option<&Relink>,
) -> Option<Response<Body>> {
    let mut headers = stored;
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    let len = Some(entry.len);
    let (shape, judged) = judged_shape(method, req, entry.status, &headers, len, relink);
    if let Some(r) = bodiless(shape, judged.as_ref().unwrap_or(&headers), len) {
        return Some(r);
    }
    // A body that is rewritten on its way out is read, never sent from the file.
    let sendfile = sendfile.filter(|_| judged.is_none());
    let (status, headers, start, end, whole) = match shape {
        Shape::Partial { start, end } => (
            StatusCode::PARTIAL_CONTENT,
            partial_head(headers, start, end, entry.len),
            start,
            end + 1,
            false,
        ),
        _ => {
            set_len(&mut headers, entry.len);
            (entry.status, headers, 0, entry.len, true)
        }
    };
    if entry.len <= SMALL_BODY {
        // Small bodies: from the memory cache, or read whole and verified before answering.
        let bytes = match store.hot(&entry.hash) {
            Some(b) => b,
            None => {
                let bytes = match open(store, entry).await {
                    Some(file) => read_span(file, 0, entry.len).await.ok(),
                    None => None,
                };
                let Some(bytes) =
                    bytes.filter(|b| b.len() as u64 == entry.len && blake3::hash(b) == entry.hash)
                else {
                    drop_corrupt(store, metrics, &entry.key, entry.hash).await;
                    return None;
                };
                store.remember(entry.hash, bytes.clone());
                bytes
            }
        };
        if method == Method::HEAD {
            return Some(with_head(status, headers, body::empty()));
        }
        let part = bytes.slice(start as usize..end as usize);
        metrics.bytes_from(Source::Cache, part.len() as u64);
        return Some(with_head(status, headers, body::full(part)));
    }
    let Some(file) = open(store, entry).await else {
        drop_corrupt(store, metrics, &entry.key, entry.hash).await;
        return None;
    };
    if method == Method::HEAD {
        return Some(with_head(status, headers, body::empty()));
    }
    // A blob is hashed in full once per process (on its first whole read); after that the
    // page cache serves it as is, straight to the socket when the connection can.
    let verified = store.is_verified(&entry.hash);
    if let Some(slot) = sendfile.filter(|_| verified) {
        let m = metrics.clone();
        let counter: sendfile::Counter = Arc::new(move |n| {
            m.bytes_from(Source::Cache, n);
            m.sendfile_bytes
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        });
        let body = sendfile::body(slot.clone(), file, start, end, Some(counter));
        return Some(with_head(status, headers, body));
    }
    let check = (whole && !verified).then(|| Verify {
        hash: entry.hash,
        key: entry.key.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
    });
    let body = stream_file(file, start, end, check, Some(metrics.clone()));
    Some(with_head(status, headers, body))
}

/// Answers from a fill in progress (the leader's own client, or a collapsed follower). `age`
/// (RFC 9111 §5.1) for every answer but the one the origin made for this very request. With
/// `relink`, preconditions and ranges are judged as `judged_shape` says. With `ahead`, a range
/// the fill will not reach soon is fetched ahead of it (see [`Ahead::body`]).
pub fn from_fill(
    method: &Method,
    req: &HeaderMap,
    fill: &Arc<Fill>,
    head: &FillHead,
    age: Option<Duration>,
    relink: Option<&Relink>,
    ahead: Option<&Ahead<'_>>,
) -> Response<Body> {
    let mut headers = head.headers();
    if let Some(age) = age {
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
    let (shape, judged) = judged_shape(method, req, head.status, &headers, head.len, relink);
    if let Some(r) = bodiless(shape, judged.as_ref().unwrap_or(&headers), head.len) {
        return r;
    }
    let (status, headers, span) = match (shape, head.len) {
        (Shape::Partial { start, end }, Some(len)) => (
            StatusCode::PARTIAL_CONTENT,
            partial_head(headers, start, end, len),
            Some((start, end + 1)),
        ),
        _ => {
            if let Some(len) = head.len {
                set_len(&mut headers, len);
            } else {
                headers.remove(header::CONTENT_LENGTH);
            }
            (head.status, headers, None)
        }
    };
    if method == Method::HEAD {
        return with_head(status, headers, body::empty());
    }
    let body = match (span, ahead) {
        (Some((start, end)), Some(ahead)) => ahead.body(fill, head, start, end),
        (Some((start, end)), None) => fill.body(start, Some(end)),
        (None, _) => fill.body(0, head.len),
    };
    with_head(status, headers, body)
}

/// A 206 of bytes `start..=end` of a representation of `len` bytes with the fields `headers`
/// (Age included), whose `body` holds exactly those bytes.
pub fn partial(headers: HeaderMap, start: u64, end: u64, len: u64, body: Body) -> Response<Body> {
    let headers = partial_head(headers, start, end, len);
    with_head(StatusCode::PARTIAL_CONTENT, headers, body)
}

/// Answers from a whole response that is not stored (its `status` and hop-by-hop-free
/// `headers`, a `body` of `len` bytes on its way from upstream): preconditions and Range judged
/// against it as for a stored one, a range cut out of the body as it streams.
pub fn from_whole(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    headers: HeaderMap,
    len: u64,
    body: Body,
) -> Response<Body> {
    let shape = shape(method, req, status, &headers, Some(len));
    if let Some(r) = bodiless(shape, &headers, Some(len)) {
        return r;
    }
    match shape {
        Shape::Partial { start, end } => with_head(
            StatusCode::PARTIAL_CONTENT,
            partial_head(headers, start, end, len),
            body::window(body, start, end + 1 - start),
        ),
        _ => with_head(status, headers, body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn shape_applies_preconditions_and_ranges_to_200_only() {
        let stored = h(&[("etag", "\"v1\"")]);
        let get = Method::GET;
        assert_eq!(
            shape(
                &get,
                &h(&[("if-none-match", "\"v1\"")]),
                StatusCode::OK,
                &stored,
                Some(10)
            ),
            Shape::NotModified
        );
        assert_eq!(
            shape(
                &get,
                &h(&[("if-none-match", "\"v1\"")]),
                StatusCode::NOT_FOUND,
                &stored,
                Some(10)
            ),
            Shape::Full
        );
        assert_eq!(
            shape(
                &get,
                &h(&[("range", "bytes=2-4")]),
                StatusCode::OK,
                &stored,
                Some(10)
            ),
            Shape::Partial { start: 2, end: 4 }
        );
        assert_eq!(
            shape(
                &get,
                &h(&[("range", "bytes=20-")]),
                StatusCode::OK,
                &stored,
                Some(10)
            ),
            Shape::Unsatisfiable
        );
        // Unknown length (a chunked fill): the whole body.
        assert_eq!(
            shape(
                &get,
                &h(&[("range", "bytes=2-4")]),
                StatusCode::OK,
                &stored,
                None
            ),
            Shape::Full
        );
        assert_eq!(
            shape(
                &get,
                &h(&[("if-match", "\"v2\"")]),
                StatusCode::OK,
                &stored,
                Some(10)
            ),
            Shape::PreconditionFailed
        );
    }
}

//! Sends mirror answers with their links rewritten (`front::links`): decides which answers are,
//! reads and decodes their bodies within a shared memory budget, and fixes their heads
//! (`Content-Length`, a derived `ETag`). Never touches what is stored or shared with peers.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{self, Body, BoxError};
use crate::cache::conditional;
use crate::config::Mirror;
use crate::fetch::content_length;
use crate::metrics::Metrics;

use super::links::{self, Coding, LinkTable, Plan, Rewrite, Skip, MAX_BODY};

/// Memory for bodies being rewritten, all requests together: what is read, decoded and written.
/// Past it an index page goes out as the origin sent it (counted as `busy`).
pub const BUDGET: u64 = 256 * 1024 * 1024;

/// Bodies up to this size are decoded and rewritten on the runtime thread; larger ones on the
/// blocking pool.
const INLINE: usize = 64 * 1024;

/// Checksums of the origin's bytes, wrong for a rewritten body.
const DIGESTS: [&str; 4] = ["content-md5", "digest", "content-digest", "repr-digest"];

/// The rewriting shared by every request: the mirrors' link table and the memory budget.
pub struct Relinker {
    table: LinkTable,
    budget: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Relinker {
    pub fn new(mirrors: &[Mirror], metrics: Arc<Metrics>) -> Relinker {
        let table = LinkTable::new(mirrors.iter().map(|m| (&m.upstream, m.prefix.as_str())));
        Relinker {
            table,
            budget: Arc::new(Semaphore::new(kib(BUDGET))),
            metrics,
        }
    }

    /// The rewrite for one mirror request, towards the authority the client used (the target's
    /// when it came in absolute form, else `Host`); `None` without a usable one.
    pub fn for_request(&self, uri: &Uri, headers: &HeaderMap) -> Option<Relink> {
        let authority = match uri.authority() {
            Some(a) => a.as_str(),
            None => headers.get(header::HOST)?.to_str().ok()?,
        };
        Some(Relink {
            rewrite: self.table.for_client(authority)?,
            budget: self.budget.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

/// One mirror request's rewrite.
pub struct Relink {
    rewrite: Rewrite,
    budget: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Relink {
    /// Narrows the request's `Accept-Encoding` to codings the rewriter reads, so that an index
    /// page is never fetched (and stored) in one it cannot rewrite.
    pub fn ask(&self, headers: &mut HeaderMap) {
        let Some(value) = headers.get(header::ACCEPT_ENCODING) else {
            return;
        };
        match links::decodable_accept_encoding(value.as_bytes())
            .and_then(|v| HeaderValue::from_bytes(&v).ok())
        {
            Some(v) => headers.insert(header::ACCEPT_ENCODING, v),
            None => headers.remove(header::ACCEPT_ENCODING),
        };
    }

    /// The head preconditions are judged on when an answer with this head goes out rewritten:
    /// its ETag derived from the stored one. `None` when it goes out as stored.
    pub fn judged(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        len: Option<u64>,
    ) -> Option<HeaderMap> {
        if !matches!(plan_of(status, headers, len), Plan::Rewrite(_)) {
            return None;
        }
        let mut judged = headers.clone();
        self.derive_etag(&mut judged);
        Some(judged)
    }

    /// The answer as the client gets it: a 200 index page with its links rewritten (read whole,
    /// decoded, sent in identity with its own `Content-Length` and derived `ETag`, no ranges);
    /// anything else untouched. A page that cannot be rewritten goes out as it came, counted.
    pub async fn finish(&self, method: &Method, resp: Response<Body>) -> Response<Body> {
        let len = content_length(resp.headers());
        let coding = match plan_of(resp.status(), resp.headers(), len) {
            Plan::Untouched => return resp,
            Plan::Skip(why) => {
                self.skipped(why);
                return resp;
            }
            Plan::Rewrite(coding) => coding,
        };
        let (mut parts, body) = resp.into_parts();
        if method == Method::HEAD {
            // The rewritten length is only known from the body: a HEAD answer goes without one.
            self.rewritten_head(&mut parts.headers, coding, None);
            return Response::from_parts(parts, body);
        }
        let budget = Reservation::new(self.budget.clone());
        let (input, mut budget) = match collect(body, len, budget).await {
            Ok(whole) => whole,
            Err(Partial { read, rest, why }) => {
                if let Some(why) = why {
                    self.skipped(why);
                }
                return Response::from_parts(parts, resend(read, rest, len));
            }
        };
        let rewrite = self.rewrite.clone();
        let work = {
            let input = input.clone();
            move || {
                let out = relink(&rewrite, coding, &input, &mut budget);
                (out, budget)
            }
        };
        let (out, budget) = if input.len() <= INLINE {
            work()
        } else {
            match tokio::task::spawn_blocking(work).await {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!("link rewriting failed: {e}");
                    return Response::from_parts(parts, body::full(input));
                }
            }
        };
        match out {
            Ok(out) => {
                Metrics::inc(&self.metrics.links_rewritten);
                self.rewritten_head(&mut parts.headers, coding, Some(out.len() as u64));
                // The budget is held until the rewritten body has been sent (or dropped).
                let body = body::observed(body::full(out), move |_, _| drop(budget));
                Response::from_parts(parts, body)
            }
            Err(why) => {
                self.skipped(why);
                Response::from_parts(parts, body::full(input))
            }
        }
    }

    fn skipped(&self, why: Skip) {
        tracing::debug!(
            reason = why.as_str(),
            "mirror index page sent without rewriting"
        );
        let m = &self.metrics;
        Metrics::inc(match why {
            Skip::TooLarge => &m.links_too_large,
            Skip::Coding => &m.links_coding,
            Skip::Busy => &m.links_busy,
        });
    }

    /// The stored ETag with this rewrite's tag; removed when it is not a valid entity-tag.
    fn derive_etag(&self, headers: &mut HeaderMap) {
        match conditional::derived_etag(headers, self.rewrite.tag()) {
            Some(etag) => headers.insert(header::ETAG, etag),
            None => headers.remove(header::ETAG),
        };
    }

    /// The head of a rewritten representation: derived ETag, identity coding, no ranges, no
    /// digests of the origin's bytes, and `len` as its length (none when unknown).
    fn rewritten_head(&self, headers: &mut HeaderMap, coding: Coding, len: Option<u64>) {
        self.derive_etag(headers);
        if coding != Coding::Identity {
            headers.remove(header::CONTENT_ENCODING);
        }
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
        for name in DIGESTS {
            headers.remove(HeaderName::from_static(name));
        }
        match len {
            Some(n) => headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n)),
            None => headers.remove(header::CONTENT_LENGTH),
        };
    }
}

fn plan_of(status: StatusCode, headers: &HeaderMap, len: Option<u64>) -> Plan {
    links::plan(
        status.as_u16(),
        headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes),
        headers
            .get(header::CONTENT_ENCODING)
            .map(HeaderValue::as_bytes),
        len,
    )
}

/// `n` bytes as whole KiB permits (rounded up).
fn kib(n: u64) -> usize {
    usize::try_from(n.div_ceil(1024)).unwrap_or(usize::MAX)
}

/// A share of the rewriting budget, grown as buffers grow; returned when dropped.
struct Reservation {
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    fn new(budget: Arc<Semaphore>) -> Reservation {
        Reservation { budget, held: None }
    }

    /// Holds at least `bytes` of the budget; false (holding what it held) when it is spent.
    fn cover(&mut self, bytes: u64) -> bool {
        let have = self
            .held
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits);
        let want = kib(bytes);
        if want <= have {
            return true;
        }
        let Ok(more) = u32::try_from(want - have) else {
            return false;
        };
        match self.budget.clone().try_acquire_many_owned(more) {
            Ok(p) => {
                match self.held.as_mut() {
                    Some(held) => held.merge(p),
                    None => self.held = Some(p),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// A body that was not read whole: what was read, the rest (or the error that ended it), and
/// why it is not rewritten (`None`: the body failed, and so will the answer).
struct Partial {
    read: Vec<Bytes>,
    rest: Result<Body, BoxError>,
    why: Option<Skip>,
}

/// Reads a whole body of at most [`MAX_BODY`] bytes within the budget.
async fn collect(
    mut body: Body,
    len: Option<u64>,
    mut budget: Reservation,
) -> Result<(Bytes, Reservation), Partial> {
    let mut read: Vec<Bytes> = Vec::new();
    let mut total: u64 = 0;
    if len.is_some_and(|n| !budget.cover(n)) {
        return Err(Partial {
            read,
            rest: Ok(body),
            why: Some(Skip::Busy),
        });
    }
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                return Err(Partial {
                    read,
                    rest: Err(e),
                    why: None,
                })
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        read.push(data);
        let why = if total > MAX_BODY {
            Some(Skip::TooLarge)
        } else if !budget.cover(total) {
            Some(Skip::Busy)
        } else {
            None
        };
        if why.is_some() {
            return Err(Partial {
                read,
                rest: Ok(body),
                why,
            });
        }
    }
    let whole = match read.len() {
        1 => read.pop().unwrap_or_default(),
        _ => read.concat().into(),
    };
    Ok((whole, budget))
}

/// The body again: the frames already read, then the rest (or its error).
fn resend(read: Vec<Bytes>, rest: Result<Body, BoxError>, len: Option<u64>) -> Body {
    let (tx, out) = body::channel(len);
    tokio::spawn(async move {
        for chunk in read {
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        let mut rest = match rest {
            Ok(rest) => rest,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        while let Some(frame) = rest.frame().await {
            let sent = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => tx.send(Ok(data)).await,
                    Err(_) => continue,
                },
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    out
}

/// Decodes `input` and rewrites its links, within [`MAX_BODY`] and the budget.
fn relink(
    rewrite: &Rewrite,
    coding: Coding,
    input: &Bytes,
    budget: &mut Reservation,
) -> Result<Bytes, Skip> {
    let held = input.len() as u64;
    let decoded = match coding {
        Coding::Identity => input.clone(),
        _ => decode(coding, input, MAX_BODY, |n| budget.cover(held + n))?.into(),
    };
    let out = match rewrite.apply(&decoded) {
        std::borrow::Cow::Borrowed(_) => return Ok(decoded),
        std::borrow::Cow::Owned(out) => out,
    };
    if !budget.cover(held + decoded.len() as u64 + out.len() as u64) {
        return Err(Skip::Busy);
    }
    Ok(out.into())
}

/// Decodes a gzip or deflate body (both zlib-wrapped and raw deflate, as servers send either),
/// at most [`MAX_BODY`] bytes; `room(n)` is asked before the output grows to `n` bytes.
fn decode(
    coding: Coding,
    input: &[u8],
    limit: u64,
    mut room: impl FnMut(u64) -> bool,
) -> Result<Vec<u8>, Skip> {
    let mut out = Vec::new();
    let mut read = |r: &mut dyn Read, out: &mut Vec<u8>| read_bounded(r, out, limit, &mut room);
    let result = match coding {
        Coding::Identity => return Ok(input.to_vec()),
        Coding::Gzip => read(&mut flate2::read::MultiGzDecoder::new(input), &mut out),
        Coding::Deflate => {
            let zlib = read(&mut flate2::read::ZlibDecoder::new(input), &mut out);
            if zlib == Err(Skip::Coding) {
                out.clear();
                read(&mut flate2::read::DeflateDecoder::new(input), &mut out)
            } else {
                zlib
            }
        }
    };
    result.map(|()| out)
}

/// Reads `r` to its end into `out` in steps, within `limit` bytes and what `room` allows.
fn read_bounded(
    r: &mut dyn Read,
    out: &mut Vec<u8>,
    limit: u64,
    room: &mut impl FnMut(u64) -> bool,
) -> Result<(), Skip> {
    const STEP: u64 = 64 * 1024;
    loop {
        let filled = out.len() as u64;
        if filled > limit {
            return Err(Skip::TooLarge);
        }
        if !room(filled + STEP) {
            return Err(Skip::Busy);
        }
        match r.take(STEP).read_to_end(out) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(_) => return Err(Skip::Coding),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_what_servers_send_and_refuses_the_rest() {
        let page: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let all = |c, input: &[u8]| decode(c, input, MAX_BODY, |_| true);
        assert_eq!(all(Coding::Gzip, &gzip(&page)), Ok(page.clone()));
        // Two gzip members one after the other are one body (RFC 1952 §2.2).
        let two = [gzip(b"ab"), gzip(b"cd")].concat();
        assert_eq!(all(Coding::Gzip, &two), Ok(b"abcd".to_vec()));
        assert_eq!(all(Coding::Deflate, &zlib(&page)), Ok(page.clone()));
        assert_eq!(all(Coding::Deflate, &raw_deflate(&page)), Ok(page.clone()));
        assert_eq!(all(Coding::Gzip, b"not gzip at all"), Err(Skip::Coding));
        assert_eq!(all(Coding::Deflate, b"not deflate"), Err(Skip::Coding));
        let mut cut = gzip(&page);
        cut.truncate(cut.len() / 2);
        assert_eq!(all(Coding::Gzip, &cut), Err(Skip::Coding));
        // The budget is asked before every step.
        let mut asked = Vec::new();
        let got = decode(Coding::Gzip, &gzip(&page), MAX_BODY, |n| {
            asked.push(n);
            n < 300_000
        });
        assert_eq!(got, Err(Skip::Busy));
        assert!(asked.len() > 1 && asked.iter().all(|&n| n <= 300_000 + 64 * 1024));
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_bound() {
        let limit = 1024 * 1024;
        let bomb = gzip(&vec![0u8; 4 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024);
        let mut peak = 0;
        let got = decode(Coding::Gzip, &bomb, limit, |n| {
            peak = peak.max(n);
            true
        });
        assert_eq!(got, Err(Skip::TooLarge));
        assert!(peak <= limit + 2 * 64 * 1024, "peak {peak}");
        assert_eq!(
            decode(Coding::Gzip, &bomb, 4 * 1024 * 1024, |_| true).map(|v| v.len()),
            Ok(4 * 1024 * 1024)
        );
    }

    #[test]
    fn reservations_share_one_budget_and_return_it() {
        let sem = Arc::new(Semaphore::new(kib(10 * 1024)));
        let mut a = Reservation::new(sem.clone());
        assert!(a.cover(4 * 1024));
        assert!(a.cover(6 * 1024)); // grows by the difference
        let mut b = Reservation::new(sem.clone());
        assert!(!b.cover(5 * 1024));
        assert!(b.cover(4 * 1024));
        assert_eq!(sem.available_permits(), 0);
        drop(a);
        assert_eq!(sem.available_permits(), 6);
        assert!(b.cover(10 * 1024));
    }
}

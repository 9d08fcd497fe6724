//! Ranges of objects not stored yet, fetched. A range of a fill in progress that the fill will
//! not reach soon is fetched ahead with a ranged request of its own — a peer's verified copy,
//! else the origin with `Range` and the fill's validator in `If-Range` — and read from the fill
//! again once the fill catches up with the client; an answer that cannot be tied to the fill's
//! representation is dropped and the fill serves the range. A range that `cache.range_fill`
//! lets start no fill goes upstream as asked. The decisions are [`plan`]'s; never builds a
//! response (`front` answers).

pub mod plan;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderValue, Method, Uri};
use http_body_util::BodyExt;

use crate::body::{self, Body};
use crate::cache::cache_control::CacheControl;
use crate::cache::conditional;
use crate::cache::head::{FillHead, Head};
use crate::cache::inflight::Fill;
use crate::cache::key::Variant;
use crate::cache::policy;
use crate::error::Error;
use crate::metrics::{Metrics, Source};
use crate::peer::wire::NodeId;
use crate::peer::{key_hash, pieces, Peers, Source as PeerSource};

use super::miss::{Got, Miss};
use super::peer::PEER_STALL;
use super::{Fetcher, FILL_DROPS};

/// Peers with a complete copy asked for a range before the origin.
const PEER_TRIES: usize = 2;

/// The client's request a range is fetched ahead for.
pub struct Ahead<'a> {
    pub fetcher: &'a Fetcher,
    pub key: &'a str,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub version: http::Version,
}

impl Ahead<'_> {
    /// Bytes `[start, end)` of `fill`, whose head is `head`: from the fill when it holds them or
    /// soon will ([`plan::read`]); else from a ranged request tied to the fill's representation
    /// (its bytes as soon as the source sends them), and from the fill once it has caught up
    /// with the client. A ranged answer that cannot be tied to the fill (another validator, a
    /// 200, other bytes), or a source that fails or stalls, leaves the rest of the range to the
    /// fill: the client gets the same bytes later, never other bytes.
    pub fn body(&self, fill: &Arc<Fill>, head: &FillHead, start: u64, end: u64) -> Body {
        let written = fill.subscribe().borrow().written;
        let fill_headers = head.headers();
        let validator = conditional::if_range_validator(&fill_headers);
        let read = plan::read(start, written, validator.is_some());
        let (Some(len), Some(validator), plan::Read::Ahead) = (head.len, validator, read) else {
            return fill.body(start, Some(end));
        };
        let mut headers = self.headers.clone();
        for name in FILL_DROPS {
            headers.remove(name);
        }
        if let Ok(v) = HeaderValue::from_str(&plan::range_field(start, end - 1)) {
            headers.insert(header::RANGE, v);
        }
        headers.insert(header::IF_RANGE, validator.clone());
        let job = Job {
            fetcher: self.fetcher.clone(),
            key: self.key.to_owned(),
            uri: self.uri.clone(),
            headers,
            version: self.version,
            fill: fill.clone(),
            fill_headers,
            validator,
            len,
            start,
            end,
        };
        let (tx, body) = body::channel(Some(end - start));
        tokio::spawn(job.run(tx));
        body
    }
}

/// Why no ranged answer was used.
#[derive(Debug)]
enum Missed {
    Refused(plan::Refused),
    Failed(Error),
}

impl std::fmt::Display for Missed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missed::Refused(r) => write!(f, "the answer is refused ({})", r.as_str()),
            Missed::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// A ranged answer being streamed: its body, the longest silence allowed, where it is from.
struct Ranged {
    body: Body,
    read_timeout: Duration,
    from: Source,
}

/// Where streaming a ranged answer ended.
enum Streamed {
    /// Every byte of the range went to the client.
    Done,
    /// The client went away.
    Gone,
    /// The rest, from this byte on, is the fill's to send.
    At(u64),
}

/// One range fetched ahead of a fill, owned by its task: everything ends when the task does
/// (the ranged connection is dropped with it, and the fill reader with its cursor).
struct Job {
    fetcher: Fetcher,
    key: String,
    uri: Uri,
    /// The ranged request's fields: the client's, without preconditions, with Range and If-Range.
    headers: HeaderMap,
    version: http::Version,
    fill: Arc<Fill>,
    fill_headers: HeaderMap,
    validator: HeaderValue,
    len: u64,
    start: u64,
    end: u64,
}

impl Job {
    fn asked(&self) -> plan::Asked<'_> {
        plan::Asked {
            start: self.start,
            last: self.end - 1,
            len: self.len,
            validator: &self.validator,
            fill: &self.fill_headers,
        }
    }

    async fn run(self, tx: body::Sender) {
        let metrics = self.fetcher.metrics.clone();
        let mut pos = self.start;
        let source = tokio::select! {
            source = self.source() => source,
            () = tx.closed() => return, // the client left before the source answered
        };
        match source {
            Ok(ranged) => {
                Metrics::inc(&metrics.ranges_ahead);
                match self.stream(ranged, &tx).await {
                    Streamed::Done | Streamed::Gone => return,
                    Streamed::At(at) => pos = at,
                }
            }
            Err(why) => {
                Metrics::inc(&metrics.ranges_refused);
                tracing::info!(
                    key = self.key,
                    start = self.start,
                    "range read from the fill: {why}"
                );
            }
        }
        let mut rest = self.fill.body(pos, Some(self.end));
        loop {
            let frame = tokio::select! {
                frame = rest.frame() => frame,
                () = tx.closed() => return,
            };
            let Some(frame) = frame else {
                return;
            };
            let sent = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => tx.send(Ok(data)).await,
                    Err(_) => Ok(()),
                },
                Err(e) => tx.send(Err(e)).await,
            };
            if sent.is_err() {
                return;
            }
        }
    }

    /// A peer's complete copy of the same representation, else the origin.
    async fn source(&self) -> Result<Ranged, Missed> {
        if let Some(peers) = &self.fetcher.peers {
            if let Some(ranged) = self.peer_range(peers).await {
                return Ok(ranged);
            }
        }
        self.origin_range().await
    }

    /// `Range` and `If-Range` to the origin; its answer is judged by [`plan::check`].
    async fn origin_range(&self) -> Result<Ranged, Missed> {
        let req = self
            .fetcher
            .upstream_request(
                Method::GET,
                &self.uri,
                &self.headers,
                self.version,
                body::empty(),
            )
            .map_err(Missed::Failed)?;
        Metrics::inc(&self.fetcher.metrics.origin_requests);
        let resp = self
            .fetcher
            .origin
            .send(req)
            .await
            .map_err(Missed::Failed)?;
        plan::check(&self.asked(), resp.status(), resp.headers()).map_err(Missed::Refused)?;
        Ok(Ranged {
            body: resp.into_body().map_err(Into::into).boxed(),
            read_timeout: self.fetcher.origin.read_timeout(),
            from: Source::Origin,
        })
    }

    /// The verified pieces of the range from a member holding a complete copy of the fill's
    /// representation (its stored head carries the fill's validator and coding, its length is
    /// the fill's): up to [`PEER_TRIES`] of them, best first. A holder that fails is charged as
    /// on any transfer; one whose copy is another representation is skipped.
    async fn peer_range(&self, peers: &Arc<Peers>) -> Option<Ranged> {
        let body = from_holders(peers, &self.key, |copy| async move {
            let same = plan::same_representation(&self.asked(), &copy.head.headers());
            if copy.len != self.len || same.is_err() {
                return Ok(None);
            }
            let body = pieces::fetch(peers, &copy.src, copy.hash, copy.len, self.start).await?;
            pieces::checked_start(body, PEER_STALL).await.map(Some)
        })
        .await?;
        Some(Ranged {
            body,
            read_timeout: PEER_STALL,
            from: Source::Peer,
        })
    }

    /// Sends the ranged answer's bytes until the range is complete, the client leaves, the
    /// source fails or stalls, or the fill catches up with the client (whichever comes first:
    /// a fill that overtakes a slow ranged answer takes over at once).
    async fn stream(&self, mut ranged: Ranged, tx: &body::Sender) -> Streamed {
        let mut fill = self.fill.subscribe();
        let metrics = &self.fetcher.metrics;
        let mut pos = self.start;
        loop {
            let next = tokio::time::timeout(ranged.read_timeout, ranged.body.frame());
            let frame = tokio::select! {
                biased;
                _ = fill.wait_for(|s| plan::caught_up(s, pos)) => return Streamed::At(pos),
                frame = next => frame,
            };
            let frame = match frame {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e))) => {
                    tracing::info!(key = self.key, pos, "ranged answer failed: {e}");
                    return Streamed::At(pos);
                }
                Ok(None) => {
                    tracing::info!(key = self.key, pos, "ranged answer ended early");
                    return Streamed::At(pos);
                }
                Err(_) => {
                    tracing::info!(key = self.key, pos, "ranged answer stalled");
                    return Streamed::At(pos);
                }
            };
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            // Never past the range, whatever the source sends.
            data.truncate(usize::try_from(self.end - pos).unwrap_or(usize::MAX));
            pos += data.len() as u64;
            metrics.bytes_from(ranged.from, data.len() as u64);
            if tx.send(Ok(data)).await.is_err() {
                return Streamed::Gone;
            }
            if pos >= self.end {
                return Streamed::Done;
            }
        }
    }
}

/// A range answered from a member's stored copy: its head, the whole length, the bytes
/// `start..=end` (verified against the copy's blake3 as they come), and the member.
pub struct PeerSpan {
    pub head: Head,
    pub len: u64,
    pub start: u64,
    pub end: u64,
    pub body: Body,
    pub node: NodeId,
}

impl Fetcher {
    /// The client's range from the best member whose stored copy may answer it as if this cache
    /// held it (fresh enough for the request, its variant, its preconditions holding): up to
    /// [`PEER_TRIES`] holders, the first verified piece in hand before it is used.
    async fn peer_span(&self, miss: &Miss<'_>) -> Option<PeerSpan> {
        let peers = self.peers.as_ref()?;
        let req_cc = CacheControl::from_request(miss.headers);
        let req_cc = &req_cc;
        from_holders(peers, miss.key, |copy| async move {
            let Copy {
                src,
                hash,
                len,
                head,
            } = copy;
            let headers = head.headers();
            let variant = Variant::of_request(&miss.treat.vary(&headers), miss.headers);
            let (now, h) = (SystemTime::now(), miss.treat.heuristic);
            let reuse = policy::reuse(&head.stored(&headers), req_cc, now, h);
            let span = plan::span_of_copy(miss.headers, head.status, reuse, &headers, len);
            let (Some((start, end)), true) = (span, variant.as_ref() == Some(&head.variant)) else {
                return Ok(None);
            };
            let body = pieces::fetch(peers, &src, hash, len, start).await?;
            let body = pieces::checked_start(body, PEER_STALL).await?;
            let metrics = self.metrics.clone();
            let body = body::observed(body::window(body, 0, end + 1 - start), move |n, _| {
                metrics.bytes_from(Source::Peer, n)
            });
            let node = src.node;
            Ok(Some(PeerSpan {
                head,
                len,
                start,
                end,
                body,
                node,
            }))
        })
        .await
    }

    /// A range request for an object that is neither stored nor being fetched, whose range
    /// `cache.range_fill` lets start no fill: `None` when it may (or the request holds no single
    /// range, or it revalidates a stored entry). Otherwise a member's stored copy that may
    /// answer it ([`plan::span_of_copy`]) sends the range as verified pieces; else the request
    /// goes to the origin as it is — Range, If-Range and preconditions with it — and its answer
    /// is relayed unstored. Counted in `ranges_unfilled`.
    pub(super) async fn unfilled_range(&self, miss: &Miss<'_>) -> Option<Result<Got, Error>> {
        // A miss without a stale entry is a GET (HEAD goes upstream as HEAD, unstored).
        let first = conditional::first_byte(&Method::GET, miss.headers)?;
        if miss.stale.is_some()
            || plan::starts_fill(self.range_fill, first)
            || self.inflight.get(miss.key).is_some()
        {
            return None;
        }
        Metrics::inc(&self.metrics.ranges_unfilled);
        Some(match self.peer_span(miss).await {
            Some(span) => Ok(Got::Span(span)),
            None => self.passed(miss, "range-not-filled").await,
        })
    }
}

/// A member's complete copy of a key: who holds it, its blake3 and length, its stored head.
struct Copy {
    src: PeerSource,
    hash: blake3::Hash,
    len: u64,
    head: Head,
}

/// Hands the stored head of each member's complete copy of `key` (up to [`PEER_TRIES`]
/// holders, best first) to `use_copy` until it makes something of one. A holder whose transfer
/// fails is charged for it, as on any transfer; a copy `use_copy` declines costs nothing.
async fn from_holders<T, F, Fut>(peers: &Arc<Peers>, key: &str, mut use_copy: F) -> Option<T>
where
    F: FnMut(Copy) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Error>>,
{
    if !peers.has_members() {
        return None;
    }
    let kh = key_hash(key);
    let holders = peers
        .sources(&kh, None)
        .into_iter()
        .filter_map(|src| src.complete.map(|c| (src, c)));
    for (src, (_, len)) in holders.take(PEER_TRIES) {
        let node = src.node;
        let tried = async {
            let reply = peers.client.entries(src.node, src.addr, &kh).await?;
            // Only the body the index names for this holder (see `Source::names`).
            let copy = (reply.complete.iter())
                .find_map(|h| Some((h.hash.filter(|x| src.names(x, h.len))?, h.head.head(true)?)));
            let Some((hash, head)) = copy else {
                return Ok(None);
            };
            let hash = blake3::Hash::from_bytes(hash);
            use_copy(Copy {
                src,
                hash,
                len,
                head,
            })
            .await
        };
        match tried.await {
            Ok(Some(made)) => return Some(made),
            Ok(None) => {}
            Err(e) => {
                tracing::info!(%node, key, "peer copy not used for a range: {e}");
                peers.failed(node, &e);
            }
        }
    }
    None
}

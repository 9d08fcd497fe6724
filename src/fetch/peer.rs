//! Source choice on a miss when the group may hold the object: ask the best holder for its
//! stored head, honour its age (revalidating a stale copy with the origin), then stream the body
//! from that peer — a large complete one from up to `peers.parallel_holders` holders of it at
//! once — into our own fill, with the other holders and the origin as fallbacks. A cold
//! object is claimed first, so that one node of the group goes to the origin.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use http_body_util::BodyExt;

use crate::body::{self, Body};
use crate::cache::cache_control::CacheControl;
use crate::cache::head::{FillHead, Head};
use crate::cache::inflight::FillPermit;
use crate::cache::key::Variant;
use crate::cache::policy::{self, Reuse, Timing};
use crate::cache::rules::Treatment;
use crate::error::{Error, Kind, Side};
use crate::fetch::parallel;
use crate::fetch::writer::{self, Feed, Feeder, Report, Resume, ResumeFuture};
use crate::fetch::{Fetched, Fetcher, Start};
use crate::http::headers;
use crate::peer::client::fill_path;
use crate::peer::transfer::EntryHead;
use crate::peer::wire::KeyHash;
use crate::peer::{key_hash, pieces, Peers, Source};
use crate::peer::{schedule, select};

/// Longest silence from a peer sending a complete copy (it reads from its disk) before it counts
/// as stalled and the transfer moves on.
pub const PEER_STALL: Duration = Duration::from_secs(2);
/// At most this many holders are tried for one request.
const MAX_TRIES: usize = 3;
/// Longest silence of a copy from several holders as a whole: a holder silent for
/// [`PEER_STALL`] loses its piece to another, which then needs time to answer.
pub const HOLDERS_STALL: Duration = Duration::from_secs(6);

/// What the group did for a miss.
pub enum FromPeers {
    /// A peer copy from `node` is streaming into our fill (`revalidated`: the origin confirmed
    /// it first).
    Peer {
        head: Arc<FillHead>,
        revalidated: bool,
        node: crate::peer::wire::NodeId,
    },
    /// Asking the origin to revalidate a stale peer copy got a new response instead.
    Origin(Fetched),
    /// Nobody could help: lead from the origin with this permit.
    NotHere(FillPermit),
}

/// The request a miss is for.
pub struct Want<'a> {
    pub key: &'a str,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub version: http::Version,
}

impl Fetcher {
    /// Tries the peer group for `want` before the origin.
    pub async fn via_peers(
        &self,
        mut permit: FillPermit,
        want: &Want<'_>,
    ) -> Result<FromPeers, Error> {
        let Some(peers) = self.peers.clone() else {
            return Ok(FromPeers::NotHere(permit));
        };
        if !peers.has_members() {
            return Ok(FromPeers::NotHere(permit));
        }
        let kh = key_hash(want.key);
        // Cold, or held by other sites only: claimed first (see `fetch::claim`).
        let mut sources = self
            .claimed_sources(&peers, &mut permit, want.key, &kh)
            .await;
        if sources.is_empty() {
            return Ok(FromPeers::NotHere(permit));
        }
        let mut permit = Some(permit);
        // Holders that no longer have it: skipped for the rest of this request.
        let mut gone = Vec::new();
        for round in 0.. {
            let mut busy = false;
            for (i, src) in sources.iter().take(MAX_TRIES).enumerate() {
                match self
                    .try_peer(&peers, &mut permit, src, &sources[i + 1..], &kh, want)
                    .await
                {
                    Ok(found) => return Ok(found),
                    Err(e) => {
                        tracing::info!(node = %src.node, key = want.key, "peer copy not used: {e}");
                        match peers.failed(src.node, &e) {
                            Some(select::Fault::Busy) => busy = true,
                            Some(select::Fault::Gone) => gone.push(src.node),
                            Some(select::Fault::Bad) | None => {}
                        }
                    }
                }
                if permit.is_none() {
                    break;
                }
            }
            // Busy holders are asked again after a short wait (others first), before the origin.
            let Some(wait) = select::busy_retry(round).filter(|_| busy && permit.is_some()) else {
                break;
            };
            tokio::time::sleep(wait).await;
            sources = peers.sources(&kh, Some(peers.id));
            sources.retain(|s| !gone.contains(&s.node));
        }
        match permit {
            Some(p) => Ok(FromPeers::NotHere(p)),
            None => Err(Error::internal("peer attempt consumed the fill")),
        }
    }

    async fn try_peer(
        &self,
        peers: &Arc<Peers>,
        permit: &mut Option<FillPermit>,
        src: &Source,
        others: &[Source],
        kh: &KeyHash,
        want: &Want<'_>,
    ) -> Result<FromPeers, Error> {
        let asked = tokio::time::Instant::now();
        let reply = peers.client.entries(src.node, src.addr, kh).await?;
        peers.observe_rtt(src.node, asked.elapsed());
        // The same rules as for our own copies: a peer's copy is judged as if we held it.
        let treat = self.rules.treat(want.key);
        let matches = |h: &&EntryHead| head_matches(h, want.headers, &treat);
        // A complete copy only of the body the index names for this holder (else it is no
        // source for it, as if it had no entry).
        let named = |h: &&EntryHead| h.hash.is_some_and(|hash| src.names(&hash, h.len));
        let (copy, complete) = match reply.complete.iter().find(|h| named(h) && matches(h)) {
            Some(h) => (h.clone(), true),
            None => match reply.in_flight.as_ref().filter(matches) {
                Some(h) => (h.clone(), false),
                None => {
                    return Err(Error::new(
                        Kind::NotFound,
                        Side::Internal,
                        "no matching copy",
                    ))
                }
            },
        };
        let copied = decode(&copy)?;
        let (status, mut stored_headers, mut timing) =
            (copied.status, copied.headers(), copied.timing);
        let mut revalidated = false;
        if complete {
            let req_cc = CacheControl::from_request(want.headers);
            let stored = copied.stored(&stored_headers);
            match policy::reuse(&stored, &req_cc, SystemTime::now(), treat.heuristic) {
                Reuse::Fresh | Reuse::StaleAllowed => {}
                Reuse::StaleWhileRevalidate | Reuse::Revalidate => {
                    if policy::validators(&stored_headers).is_empty() {
                        return Err(Error::new(
                            Kind::NotFound,
                            Side::Internal,
                            "stale peer copy without validators",
                        ));
                    }
                    let (resp, request_time) = self
                        .ask_origin(want.uri, want.headers, want.version, Some(&stored_headers))
                        .await?;
                    if resp.status() != StatusCode::NOT_MODIFIED {
                        let permit = permit.take().ok_or_else(|| Error::internal("no permit"))?;
                        let fetched = self
                            .accept(permit, want.key, want.headers, resp, request_time, None)
                            .await?;
                        return Ok(FromPeers::Origin(fetched));
                    }
                    let mut nm = resp.headers().clone();
                    headers::strip_hop_by_hop(&mut nm);
                    policy::merge_not_modified(&mut stored_headers, &nm);
                    timing = Timing::new(request_time, SystemTime::now(), &nm);
                    revalidated = true;
                }
            }
        }
        let variant = Variant::of_request(&treat.vary(&stored_headers), want.headers)
            .ok_or_else(|| Error::new(Kind::NotFound, Side::Internal, "Vary: *"))?;
        // A complete copy comes in verified pieces (`peer::pieces`): no byte reaches a client
        // before its chunk group matched the blake3 tree. A fill in flight on the peer has no
        // hash yet: it is only checked for length, and its holder releases its last byte only
        // once it stored it.
        // A large one comes from several holders of the same body at once (`fetch::parallel`);
        // the holders left over are fallbacks.
        let expected = copy.hash.filter(|_| complete).map(blake3::Hash::from_bytes);
        let same: Vec<Source> = match (expected, copy.len) {
            (Some(hash), Some(len)) => others
                .iter()
                .filter(|o| o.holds(hash.as_bytes(), len))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let (stream, from, read_timeout, spare): (Body, _, _, &[Source]) =
            match (expected, copy.len) {
                (Some(hash), Some(len)) => {
                    let (piece, max) = (peers.piece_size, peers.parallel_holders);
                    let width = schedule::width(len, piece, max, 1 + same.len());
                    if width > 1 {
                        let (team, spare) = same.split_at(width - 1);
                        let body = several(peers, src, team, hash, len).await?;
                        (body, Feeder::Holders, HOLDERS_STALL, spare)
                    } else {
                        let verified = pieces::fetch(peers, src, hash, len, 0).await?;
                        let body = pieces::checked_start(verified, PEER_STALL).await?;
                        (body, Feeder::Peer(src.node), PEER_STALL, &same)
                    }
                }
                _ => {
                    let resp = peers
                        .client
                        .body(src.node, src.addr, &fill_path(kh), 0)
                        .await?;
                    let (node, counter) = (src.node, peers.clone());
                    let body = body::observed(
                        resp.into_body().map_err(Into::into).boxed(),
                        move |n, _| counter.count_download(node, n),
                    );
                    (
                        body,
                        Feeder::Peer(src.node),
                        self.origin.read_timeout(),
                        &same,
                    )
                }
            };
        let temp = self
            .temp_file()
            .await
            .ok_or_else(|| Error::storage("no temporary file"))?;
        let mut fallbacks: Vec<Box<dyn Resume>> = Vec::new();
        if let (Some(hash), Some(len)) = (expected, copy.len) {
            for o in spare {
                fallbacks.push(Box::new(PeerResume {
                    peers: peers.clone(),
                    src: o.clone(),
                    hash,
                    len,
                }));
            }
        }
        if let Some(r) = OriginResume::new(self, want, &stored_headers) {
            fallbacks.push(Box::new(r));
        }
        let mut permit = permit.take().ok_or_else(|| Error::internal("no permit"))?;
        permit.hold(peers.claim(want.key));
        let head = FillHead {
            head: Head::new(status, &stored_headers, timing, variant, true),
            len: copy.len,
        };
        let feed = Feed {
            body: stream,
            read_timeout,
            from,
        };
        let start = Start {
            key: want.key,
            head,
            expected,
            fallbacks,
            // RFC 9111 §5.2.1.5: a request's no-store covers a peer's copy too.
            keep: !CacheControl::from_request(want.headers).no_store,
        };
        let head = self.start_fill(permit, temp, start, feed);
        Ok(FromPeers::Peer {
            head,
            revalidated,
            node: src.node,
        })
    }
}

/// A complete body of `len` bytes from `first` and `more` at once, in pieces (see
/// `fetch::parallel`), once its first bytes arrived. If none do within [`HOLDERS_STALL`], the
/// error is no one holder's: each was charged for what it did.
async fn several(
    peers: &Arc<Peers>,
    first: &Source,
    more: &[Source],
    hash: blake3::Hash,
    len: u64,
) -> Result<Body, Error> {
    let mut team = vec![first.clone()];
    team.extend_from_slice(more);
    let width = team.len();
    let cut = parallel::Cut {
        piece: peers.piece_size,
        window: schedule::window(width, peers.piece_size),
        stall: PEER_STALL,
    };
    let team = Arc::new(parallel::Team {
        peers: peers.clone(),
        holders: team,
        hash,
        len,
    });
    let body = parallel::copy(team, width, len, cut);
    pieces::checked_start(body, HOLDERS_STALL)
        .await
        .map_err(|e| {
            Error::new(
                e.kind,
                Side::Internal,
                format!("copy from {width} holders: {e}"),
            )
        })
}

/// What fills find out about members: a bad copy leaves its holder out for a while, like a
/// stalled or failed one; a busy member is only tried later, one that no longer has the body
/// costs nothing; every resumption is a fail-over. `bad_hashes` counts each bad copy once, where
/// it is found: a bad piece by the verifying feed that decodes it (`peer::pieces`, which logs it
/// with its offset), a whole body that fails its blake3 here.
impl Report for Peers {
    fn fault(&self, from: Feeder, fault: writer::Fault) {
        use writer::Fault::*;
        let Feeder::Peer(node) = from else { return };
        let cost = match fault {
            Busy => select::Fault::Busy,
            Gone => select::Fault::Gone,
            Stalled | Failed => select::Fault::Bad,
            BadBytes { offset: Some(_) } => select::Fault::Bad,
            BadBytes { offset: None } => {
                self.stats.bad_hashes.fetch_add(1, Relaxed);
                select::Fault::Bad
            }
        };
        self.charge(node, cost);
    }

    fn resumed(&self, _to: Feeder, _offset: u64) {
        self.stats.failovers.fetch_add(1, Relaxed);
    }
}

/// Does a peer's head fit this request's `Vary`-named fields (and the rule's key fields)?
fn head_matches(h: &EntryHead, req: &HeaderMap, treat: &Treatment<'_>) -> bool {
    let Ok(head) = decode(h) else {
        return false;
    };
    Variant::of_request(&treat.vary(&head.headers()), req).as_ref() == Some(&head.variant)
}

/// The head a peer sent (a peer's copy is shared by definition).
fn decode(h: &EntryHead) -> Result<Head, Error> {
    h.head
        .head(true)
        .ok_or_else(|| Error::new(Kind::UpstreamProtocol, Side::Peer, "malformed entry head"))
}

/// The rest of a complete copy from another holder, in verified pieces.
pub(super) struct PeerResume {
    peers: Arc<Peers>,
    src: Source,
    hash: blake3::Hash,
    len: u64,
}

impl PeerResume {
    /// The rest of the body `hash` of `len` bytes from `src`.
    pub(super) fn new(peers: &Arc<Peers>, src: &Source, hash: blake3::Hash, len: u64) -> Self {
        PeerResume {
            peers: peers.clone(),
            src: src.clone(),
            hash,
            len,
        }
    }
}

impl Resume for PeerResume {
    fn feeder(&self) -> Feeder {
        Feeder::Peer(self.src.node)
    }

    fn resume(&self, offset: u64) -> ResumeFuture<'_> {
        Box::pin(async move {
            let body = pieces::fetch(&self.peers, &self.src, self.hash, self.len, offset).await?;
            Ok(Feed {
                body,
                read_timeout: PEER_STALL,
                from: self.feeder(),
            })
        })
    }
}

/// The rest of the body from the origin: `Range: bytes=N-` with `If-Range`, accepted only as a
/// 206 starting at N (RFC 9110 §14.2, §13.1.5).
pub(super) struct OriginResume {
    fetcher: Fetcher,
    uri: Uri,
    headers: HeaderMap,
    version: http::Version,
    /// The origin is a content server whose holder failed: the request goes back to it proved
    /// (`fetch::redirect`).
    to_server: bool,
}

impl OriginResume {
    pub(super) fn new(fetcher: &Fetcher, want: &Want<'_>, stored: &HeaderMap) -> Option<Self> {
        let strong_etag = stored
            .get(header::ETAG)
            .filter(|v| !v.as_bytes().starts_with(b"W/"));
        let validator = strong_etag.or_else(|| stored.get(header::LAST_MODIFIED))?;
        let mut headers = want.headers.clone();
        for name in super::FILL_DROPS {
            headers.remove(name);
        }
        headers.insert(header::IF_RANGE, validator.clone());
        Some(OriginResume {
            fetcher: fetcher.clone(),
            uri: want.uri.clone(),
            headers,
            version: want.version,
            to_server: false,
        })
    }

    /// The same, back to the content server that redirected us.
    pub(super) fn into_fallback(self) -> Self {
        OriginResume {
            to_server: true,
            ..self
        }
    }
}

impl Resume for OriginResume {
    fn feeder(&self) -> Feeder {
        Feeder::Origin
    }

    fn resume(&self, offset: u64) -> ResumeFuture<'_> {
        Box::pin(async move {
            let mut h = self.headers.clone();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes={offset}-")) {
                h.insert(header::RANGE, v);
            }
            let mut req = self.fetcher.upstream_request(
                Method::GET,
                &self.uri,
                &h,
                self.version,
                body::empty(),
            )?;
            if self.to_server {
                self.fetcher.back_to_server(&mut req).await;
            }
            crate::metrics::Metrics::inc(&self.fetcher.metrics.origin_requests);
            let resp = self.fetcher.origin.send(req).await?;
            let starts_at = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {offset}-")));
            let fits = match resp.status() {
                StatusCode::PARTIAL_CONTENT => starts_at,
                StatusCode::OK => offset == 0,
                _ => false,
            };
            if !fits {
                return Err(Error::upstream(
                    Kind::UpstreamProtocol,
                    format!("origin cannot resume at {offset}: {}", resp.status()),
                ));
            }
            Ok(Feed {
                body: resp.into_body().map_err(Into::into).boxed(),
                read_timeout: self.fetcher.origin.read_timeout(),
                from: Feeder::Origin,
            })
        })
    }
}

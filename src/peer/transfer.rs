//! The peer transfer API on the peer port (TCP): index catch-up, stored response heads, bodies by
//! content hash and in-flight fills by key, held to `peers.upload_rate` when capped.
//! Authenticated members only; it serves what this node already has or is downloading and never
//! fetches anything on a caller's behalf.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::cache::conditional::{self, RangeAnswer};
use crate::cache::head::{Entry, FillHead, HeadRecord};
use crate::cache::inflight::Fill;
use crate::peer::auth::{AuthError, Covered, AUTH_HEADER, TRANSFER_FIELDS};
use crate::peer::wire::{parse_hex32, IndexAsk, KeyHash, NodeId};
use crate::peer::{pieces, Peers};
use crate::sendfile::{self, SendfileIo, Slot};

/// Response header telling the caller how many uploads this node is serving.
pub const UPLOADS_HEADER: &str = "x-peercache-uploads";

/// A stored (or in-flight) response head as a peer sees it: the head's record (the same a
/// store row keeps), and what is known of its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryHead {
    pub head: HeadRecord,
    /// blake3 of the body: known for complete entries only.
    pub hash: Option<[u8; 32]>,
    pub len: Option<u64>,
}

/// Answer to `GET /peer/v1/entries/{key-hash}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntriesReply {
    pub complete: Vec<EntryHead>,
    pub in_flight: Option<EntryHead>,
}

impl EntryHead {
    pub fn of_entry(e: &Entry) -> Self {
        EntryHead {
            head: e.record(),
            hash: Some(*e.hash.as_bytes()),
            len: Some(e.len),
        }
    }

    pub fn of_fill(h: &FillHead) -> Self {
        EntryHead {
            head: h.record(),
            hash: None,
            len: h.len,
        }
    }
}

/// Serves the transfer API until `stop` turns true, then closes its connections (in-flight
/// uploads get a short grace period) so that nothing keeps the node alive after shutdown.
pub async fn serve(listener: TcpListener, peers: Arc<Peers>, stop: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = stopping.wait_for(|s| *s) => break,
        };
        let Ok((tcp, remote)) = accepted else {
            continue;
        };
        let Some(slot) = peers.conns.admit(remote.ip()) else {
            // At a limit: a short 503 (the caller tries another source) if the socket takes it
            // at once, then close.
            peers.stats.connections_refused.fetch_add(1, Relaxed);
            let _ = tcp.try_write(REFUSED);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let peers = peers.clone();
        let mut stop = stop.clone();
        conns.spawn(async move {
            let _slot = slot;
            // Bodies by hash go out with `sendfile` (see `crate::sendfile`).
            let slot = Slot::default();
            let io = SendfileIo::new(tcp, slot.clone());
            let svc = service_fn(move |req| {
                let (peers, slot) = (peers.clone(), slot.clone());
                async move { Ok::<_, Infallible>(handle(&peers, remote, &slot, req).await) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let conn = b.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        });
    }
    drop(listener);
    drop(peers);
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        conns.abort_all();
    }
}

/// The whole answer to a connection over the listener's limits.
const REFUSED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// How long uploads in progress may go on after the node is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

fn status(code: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(body::full(format!("{text}\n")));
    *r.status_mut() = code;
    r
}

async fn handle(
    peers: &Arc<Peers>,
    remote: SocketAddr,
    slot: &Slot,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = req.method().clone();
    let auth = req
        .headers()
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let now = crate::peer::now_ms();
    let covered = Covered {
        method: method.as_str(),
        target: &path,
        to: peers.id,
        headers: req.headers(),
        fields: &TRANSFER_FIELDS,
    };
    let caller = match peers.signer.verify(&covered, auth, now, &peers.replay) {
        Ok(node) => node,
        Err(e) => {
            peers.stats.rejected_requests.fetch_add(1, Relaxed);
            match e {
                AuthError::Replayed => peers.stats.replayed_requests.fetch_add(1, Relaxed),
                AuthError::Full => peers.stats.replay_cache_full.fetch_add(1, Relaxed),
                _ => 0,
            };
            tracing::info!(%remote, "peer request refused: {e}");
            return if e.is_transient() {
                status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
            } else {
                status(StatusCode::UNAUTHORIZED, "not a member of this group")
            };
        }
    };
    if method != Method::GET && method != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only");
    }
    let uri_path = req.uri().path();
    let mut parts = uri_path.trim_start_matches("/peer/v1/").splitn(2, '/');
    let (kind, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    tracing::debug!(%caller, %path, "peer request");
    match kind {
        "index" => index(peers, req.uri().query().unwrap_or("")),
        "entries" => match parse_hex32(arg) {
            Some(k) => with_uploads(peers, entries(peers, &k)),
            None => status(StatusCode::BAD_REQUEST, "bad key hash"),
        },
        "objects" => match parse_hex32(arg) {
            Some(h) => {
                let hash = blake3::Hash::from_bytes(h);
                object(peers, caller, &method, req.headers(), hash, slot).await
            }
            None => status(StatusCode::BAD_REQUEST, "bad content hash"),
        },
        "pieces" => match parse_hex32(arg) {
            Some(h) => {
                let hash = blake3::Hash::from_bytes(h);
                pieces(peers, caller, &method, req.uri().query(), hash).await
            }
            None => status(StatusCode::BAD_REQUEST, "bad content hash"),
        },
        "fills" => match parse_hex32(arg) {
            Some(k) => fill(peers, caller, &method, req.headers(), &k).await,
            None => status(StatusCode::BAD_REQUEST, "bad key hash"),
        },
        _ => status(StatusCode::NOT_FOUND, "no such peer API"),
    }
}

/// Answers at once with a 200 head and sends the body when `reply` is ready. A caller can then
/// tell a live node that is still working (a snapshot to read, a fill's origin head to wait
/// for) from a hung one (no head at all) with a short deadline. A reply that cannot be built
/// cuts the body, which the caller sees as an error.
fn later<F>(reply: F) -> Response<Body>
where
    F: std::future::Future<Output = Option<Vec<u8>>> + Send + 'static,
{
    let (tx, body) = body::channel(None);
    tokio::spawn(async move {
        let chunk = match reply.await {
            Some(bytes) => Ok(bytes::Bytes::from(bytes)),
            None => Err("cannot build the reply".into()),
        };
        let _ = tx.send(chunk).await;
    });
    Response::new(body)
}

/// `GET /peer/v1/index`: the journal's updates when it covers the asker, else a snapshot page
/// (at most `MAX_SNAPSHOT_READS` read at once; past that, 503 and the asker retries later).
fn index(peers: &Arc<Peers>, query: &str) -> Response<Body> {
    let ask = IndexAsk::parse(query);
    if let Some(updates) = peers.index_updates(&ask) {
        return later(async move { postcard::to_stdvec(&updates).ok() });
    }
    let Ok(permit) = peers.snapshot_reads.clone().try_acquire_owned() else {
        peers.stats.snapshots_refused.fetch_add(1, Relaxed);
        return status(StatusCode::SERVICE_UNAVAILABLE, "too many snapshots");
    };
    peers.stats.snapshot_pages.fetch_add(1, Relaxed);
    let p = peers.clone();
    later(async move {
        let reply = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            p.index_page(&ask)
        })
        .await;
        reply.ok().and_then(|r| postcard::to_stdvec(&r).ok())
    })
}

fn entries(peers: &Arc<Peers>, key_hash: &KeyHash) -> Response<Body> {
    let (peers, key_hash) = (peers.clone(), *key_hash);
    later(async move {
        let reply = entries_reply(&peers, &key_hash).await;
        postcard::to_stdvec(&reply).ok()
    })
}

async fn entries_reply(peers: &Arc<Peers>, key_hash: &KeyHash) -> EntriesReply {
    let mut reply = EntriesReply::default();
    if let Some(variants) = peers.store.lookup_hash(key_hash).await {
        reply.complete = variants
            .entries
            .iter()
            .filter(|e| e.shareable)
            .map(|e| EntryHead::of_entry(e))
            .collect();
    }
    if let Some(key) = peers.local_key(key_hash) {
        if let Some(fill) = peers.inflight.get(&key) {
            let wait = tokio::time::timeout(peers.head_wait, fill.head()).await;
            if let Ok(Ok(head)) = wait {
                if head.shareable {
                    reply.in_flight = Some(EntryHead::of_fill(&head));
                }
            }
        }
    }
    reply
}

/// Takes an upload slot; `None` means the caller gets 503 and tries another source.
fn upload_slot(peers: &Arc<Peers>) -> Option<tokio::sync::OwnedSemaphorePermit> {
    peers.uploads.clone().try_acquire_owned().ok()
}

fn busy(peers: &Peers) -> Response<Body> {
    peers.stats.uploads_refused.fetch_add(1, Relaxed);
    status(StatusCode::SERVICE_UNAVAILABLE, "too many uploads")
}

fn with_uploads(peers: &Arc<Peers>, mut r: Response<Body>) -> Response<Body> {
    let active = peers.max_uploads - peers.uploads.available_permits();
    r.headers_mut()
        .insert(UPLOADS_HEADER, HeaderValue::from(active as u64));
    r
}

/// Serves a body of `len` bytes, honouring a single `Range`; the upload slot is held until the
/// body is done.
fn ranged(
    method: &Method,
    req: &HeaderMap,
    len: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
    body_for: impl FnOnce(u64, u64) -> Body,
) -> Response<Body> {
    let mut h = HeaderMap::new();
    let (code, start, end) = match conditional::range(&Method::GET, req, &HeaderMap::new(), len) {
        RangeAnswer::Partial { start, end } => {
            if let Some(cr) = conditional::content_range(RangeAnswer::Partial { start, end }, len) {
                if let Ok(v) = HeaderValue::from_str(&cr) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
            (StatusCode::PARTIAL_CONTENT, start, end + 1)
        }
        RangeAnswer::Unsatisfiable => {
            return status(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
        }
        RangeAnswer::Full => (StatusCode::OK, 0, len),
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    let b = if method == Method::HEAD {
        body::empty()
    } else {
        body::observed(body_for(start, end), move |_, _| drop(permit))
    };
    let mut r = Response::new(b);
    *r.status_mut() = code;
    *r.headers_mut() = h;
    r
}

/// Opens a stored body that may be handed to other machines, with an upload slot for it: the
/// file, its length and the slot, or the answer (404, 503) that refuses it.
async fn open_shared(
    peers: &Arc<Peers>,
    hash: blake3::Hash,
) -> Result<(std::fs::File, u64, tokio::sync::OwnedSemaphorePermit), Response<Body>> {
    if !peers.store.is_shared_body(&hash) {
        return Err(status(StatusCode::NOT_FOUND, "no such object"));
    }
    let Some(permit) = upload_slot(peers) else {
        return Err(busy(peers));
    };
    let store = peers.store.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let f = store.open_blob_by_hash(&hash)?;
        let len = f.metadata().ok()?.len();
        Some((f, len))
    })
    .await
    .ok()
    .flatten();
    let Some((file, len)) = opened else {
        return Err(status(StatusCode::NOT_FOUND, "no such object"));
    };
    Ok((file, len, permit))
}

async fn object(
    peers: &Arc<Peers>,
    caller: NodeId,
    method: &Method,
    req: &HeaderMap,
    hash: blake3::Hash,
    slot: &Slot,
) -> Response<Body> {
    let (file, len, permit) = match open_shared(peers, hash).await {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    let file = Arc::new(file);
    let counter = peers.clone();
    // As read from disk: the receiver checks the hash. With `sendfile` only when this process
    // has read or written the blob whole (likely in the page cache: `sendfile` runs on the
    // runtime thread and would block it on disk reads), and uploads are not capped.
    let slot = (peers.sendfile && !peers.upload_capped() && peers.store.is_verified(&hash))
        .then(|| slot.clone());
    let r = ranged(method, req, len, permit, move |start, end| {
        counter.count_upload(caller, end - start);
        match slot {
            Some(slot) => {
                let sent: sendfile::Counter = Arc::new(move |n| {
                    counter.stats.sendfile_bytes.fetch_add(n, Relaxed);
                });
                sendfile::body(slot, file, start, end, Some(sent))
            }
            None => counter.paced(crate::cache::read::stream_span(file, start, end)),
        }
    });
    with_uploads(peers, r)
}

/// `GET /peer/v1/pieces/{blake3}?start=S&end=E`: the bytes `[S, E)` of a stored body, encoded
/// with its outboard so that the caller verifies each chunk group (see `peer::pieces`). The head
/// goes out at once; the encoding runs on the blocking pool, checking every group against the
/// outboard unless this process already hashed the blob whole (as the `sendfile` rule). A blob
/// found corrupt on the way cuts the response.
async fn pieces(
    peers: &Arc<Peers>,
    caller: NodeId,
    method: &Method,
    query: Option<&str>,
    hash: blake3::Hash,
) -> Response<Body> {
    let (file, len, permit) = match open_shared(peers, hash).await {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    let (start, end) = match pieces::span(query.unwrap_or(""), len) {
        Ok(span) => span,
        Err(pieces::SpanError::Malformed) => {
            return status(StatusCode::BAD_REQUEST, "bad start or end")
        }
        Err(pieces::SpanError::Unsatisfiable) => {
            return status(StatusCode::RANGE_NOT_SATISFIABLE, "span not satisfiable")
        }
    };
    if method == Method::HEAD {
        return with_uploads(peers, Response::new(body::empty()));
    }
    peers.count_upload(caller, end - start);
    let (tx, encoded) = body::channel(None);
    let store = peers.store.clone();
    let validate = !store.is_verified(&hash);
    tokio::task::spawn_blocking(move || {
        let failed = match store.outboard(&hash, len) {
            Ok(ob) => match pieces::encode(&file, &ob, start, end, validate, tx.clone()) {
                Ok(()) if validate && (start, end) == (0, len) => {
                    store.mark_verified(&hash);
                    None
                }
                Ok(()) => None,
                Err(e) => Some(e.to_string()),
            },
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed.filter(|_| !tx.is_closed()) {
            tracing::warn!(%hash, "cannot serve pieces of a stored body: {e}");
            let _ = tx.blocking_send(Err(e.into()));
        }
    });
    let b = body::observed(peers.paced(encoded), move |_, _| drop(permit));
    with_uploads(peers, Response::new(b))
}

async fn fill(
    peers: &Arc<Peers>,
    caller: NodeId,
    method: &Method,
    req: &HeaderMap,
    key_hash: &KeyHash,
) -> Response<Body> {
    let Some(fill) = peers
        .local_key(key_hash)
        .and_then(|key| peers.inflight.get(&key))
    else {
        return status(StatusCode::NOT_FOUND, "no fill in progress");
    };
    let Some(permit) = upload_slot(peers) else {
        return busy(peers);
    };
    let head = match tokio::time::timeout(peers.head_wait, fill.head()).await {
        Ok(Ok(h)) if h.shareable => h,
        _ => return status(StatusCode::NOT_FOUND, "no shareable fill"),
    };
    match head.len {
        Some(len) => {
            let f: Arc<Fill> = fill.clone();
            let counter = peers.clone();
            let r = ranged(method, req, len, permit, move |start, end| {
                counter.count_upload(caller, end - start);
                counter.paced(f.body(start, Some(end)))
            });
            with_uploads(peers, r)
        }
        None => {
            // Unknown length: the whole body, chunked, ending when the fill does.
            let b = body::observed(peers.paced(fill.body(0, None)), move |_, _| drop(permit));
            let r = Response::new(if method == Method::HEAD {
                body::empty()
            } else {
                b
            });
            with_uploads(peers, r)
        }
    }
}

//! Requests to other nodes' transfer API: signed with the cluster key, over pooled connections
//! with a short connect deadline so that a dead peer costs little.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;

use crate::body::{self, Body};
use crate::error::{Error, Kind, Side};
use crate::peer::auth::RequestSigner;
use crate::peer::auth::AUTH_HEADER;
use crate::peer::transfer::EntriesReply;
use crate::peer::wire::{IndexReply, KeyHash, NodeId};

/// Largest index or entries reply we read into memory.
const MAX_REPLY: usize = 64 * 1024 * 1024;

/// How long a live node may take to send a response head once connected: every endpoint
/// answers at once (index and entries send their body later), so a node that says nothing for
/// this long is hung, and the caller moves on to another holder or the origin.
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// A signed HTTP client for the peer API.
#[derive(Clone)]
pub struct PeerClient {
    client: Client<HttpConnector, Body>,
    signer: Arc<RequestSigner>,
    own: NodeId,
    /// Deadline for a response head (connect included).
    head_timeout: Duration,
    /// Deadline for a whole index or entries reply (which may wait for an origin's head).
    reply_timeout: Duration,
}

fn peer_error(kind: Kind, detail: String) -> Error {
    Error::new(kind, Side::Peer, detail)
}

impl PeerClient {
    pub fn new(
        signer: Arc<RequestSigner>,
        own: NodeId,
        connect_timeout: Duration,
        reply_timeout: Duration,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(http);
        PeerClient {
            client,
            signer,
            own,
            head_timeout: connect_timeout + ANSWER_WAIT,
            reply_timeout: connect_timeout + ANSWER_WAIT + reply_timeout,
        }
    }

    /// Sends a signed GET for `path` to the peer at `addr`, with an optional starting offset.
    pub async fn get(
        &self,
        addr: SocketAddr,
        path: &str,
        offset: u64,
    ) -> Result<Response<Incoming>, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let auth = self.signer.sign("GET", path, self.own, now);
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{addr}{path}"))
            .header(header::HOST, addr.to_string());
        if let Ok(v) = HeaderValue::from_str(&auth) {
            req = req.header(AUTH_HEADER, v);
        }
        if offset > 0 {
            req = req.header(header::RANGE, format!("bytes={offset}-"));
        }
        let req = req
            .body(body::empty())
            .map_err(|e| Error::internal(e.to_string()))?;
        match tokio::time::timeout(self.head_timeout, self.client.request(req)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(peer_error(Kind::ConnectFailed, format!("peer {addr}: {e}"))),
            Err(_) => Err(peer_error(
                Kind::ConnectTimeout,
                format!("peer {addr}: no answer within {:?}", self.head_timeout),
            )),
        }
    }

    async fn get_decoded<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
    ) -> Result<T, Error> {
        let resp = self.get(addr, path, 0).await?;
        if resp.status() != StatusCode::OK {
            return Err(peer_error(
                Kind::UpstreamProtocol,
                format!("peer {addr}{path}: {}", resp.status()),
            ));
        }
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_REPLY);
        let bytes = tokio::time::timeout(self.reply_timeout, limited.collect())
            .await
            .map_err(|_| {
                peer_error(
                    Kind::ResponseTimeout,
                    format!("peer {addr}{path}: slow reply"),
                )
            })?
            .map_err(|e| peer_error(Kind::UpstreamBodyCut, format!("peer {addr}{path}: {e}")))?
            .to_bytes();
        postcard::from_bytes(&bytes)
            .map_err(|e| peer_error(Kind::UpstreamProtocol, format!("peer {addr}{path}: {e}")))
    }

    /// `GET /peer/v1/index?since=N[&epoch=E]`.
    pub async fn index(
        &self,
        addr: SocketAddr,
        epoch: Option<u64>,
        since: u64,
    ) -> Result<IndexReply, Error> {
        let path = match epoch {
            Some(e) => format!("/peer/v1/index?since={since}&epoch={e}"),
            None => format!("/peer/v1/index?since={since}"),
        };
        self.get_decoded(addr, &path).await
    }

    /// `GET /peer/v1/entries/{key-hash}`.
    pub async fn entries(&self, addr: SocketAddr, key: &KeyHash) -> Result<EntriesReply, Error> {
        let path = format!(
            "/peer/v1/entries/{}",
            blake3::Hash::from_bytes(*key).to_hex()
        );
        self.get_decoded(addr, &path).await
    }

    /// A body: `GET /peer/v1/objects/{hash}` (complete copy) or `/peer/v1/fills/{key}` (in
    /// flight), from `offset` on. Only 200 (offset 0) or a 206 starting at `offset` is accepted.
    pub async fn body(
        &self,
        addr: SocketAddr,
        path: &str,
        offset: u64,
    ) -> Result<Response<Incoming>, Error> {
        let resp = self.get(addr, path, offset).await?;
        let ok = match resp.status() {
            StatusCode::OK => offset == 0,
            StatusCode::PARTIAL_CONTENT => resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {offset}-"))),
            _ => false,
        };
        if ok {
            Ok(resp)
        } else {
            Err(peer_error(
                Kind::UpstreamProtocol,
                format!("peer {addr}{path} from {offset}: {}", resp.status()),
            ))
        }
    }
}

/// Path of a complete object by content hash.
pub fn object_path(hash: &[u8; 32]) -> String {
    format!(
        "/peer/v1/objects/{}",
        blake3::Hash::from_bytes(*hash).to_hex()
    )
}

/// Path of an in-flight fill by key hash.
pub fn fill_path(key: &KeyHash) -> String {
    format!("/peer/v1/fills/{}", blake3::Hash::from_bytes(*key).to_hex())
}

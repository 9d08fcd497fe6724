//! Requests to other nodes' transfer API: signed with the cluster key, over pooled connections
//! with a short connect deadline so that a dead peer costs little.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;

use crate::body::{self, Body};
use crate::error::{Error, Kind, Side};
use crate::peer::auth::{Covered, RequestSigner, AUTH_HEADER, TRANSFER_FIELDS};
use crate::peer::lock;
use crate::peer::transfer::{EntriesReply, UPLOADS_HEADER};
use crate::peer::wire::{hex32, HeadsReply, IndexAsk, IndexReply, KeyHash, NodeId};

/// Largest index or entries reply we read into memory: a whole journal or a snapshot page is
/// far smaller (tested below); a larger snapshot comes in pages.
const MAX_REPLY: usize = 8 * 1024 * 1024;

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
    /// The active uploads each node reported in its last answer (`x-peercache-uploads`).
    uploads: Arc<Mutex<HashMap<NodeId, u32>>>,
}

fn peer_error(kind: Kind, detail: String) -> Error {
    Error::new(kind, Side::Peer, detail)
}

/// A refusal by a peer, by its status: 503 is `Busy` (at `max_uploads`, or not able to take the
/// request just now), 404 `NotFound` (it no longer has it), anything else a protocol fault.
fn refused(status: StatusCode, detail: String) -> Error {
    let kind = match status {
        StatusCode::SERVICE_UNAVAILABLE => Kind::Busy,
        StatusCode::NOT_FOUND => Kind::NotFound,
        _ => Kind::UpstreamProtocol,
    };
    peer_error(kind, format!("{detail}: {status}"))
}

impl PeerClient {
    /// A client whose connections leave from `local` when given (the peer port's address when
    /// it names one: members then count our connections against our address, not against
    /// whichever address the host would pick, which on a host with several addresses — or
    /// nodes on 127.0.0.2, .3… — is one shared by all).
    pub fn new(
        signer: Arc<RequestSigner>,
        own: NodeId,
        local: Option<IpAddr>,
        connect_timeout: Duration,
        reply_timeout: Duration,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_local_address(local);
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
            uploads: Arc::default(),
        }
    }

    /// How many uploads `node` said it was serving when it last answered us.
    pub fn reported_uploads(&self, node: NodeId) -> Option<u32> {
        lock(&self.uploads).get(&node).copied()
    }

    /// Forgets what `node` reported (it left the group).
    pub fn forget(&self, node: NodeId) {
        lock(&self.uploads).remove(&node);
    }

    /// Sends a GET for `path` to node `to` at `addr`, from `offset` on, with a proof of
    /// membership made for this one request (fresh nonce; covers the target, the receiver and
    /// the `Range` sent).
    pub async fn get(
        &self,
        to: NodeId,
        addr: SocketAddr,
        path: &str,
        offset: u64,
    ) -> Result<Response<Incoming>, Error> {
        let now = crate::peer::now_ms();
        let mut fields = HeaderMap::new();
        if offset > 0 {
            let range = HeaderValue::from_str(&format!("bytes={offset}-"))
                .map_err(|e| Error::internal(e.to_string()))?;
            fields.insert(header::RANGE, range);
        }
        let covered = Covered {
            method: Method::GET.as_str(),
            target: path,
            to,
            headers: &fields,
            fields: &TRANSFER_FIELDS,
        };
        let auth = self.signer.sign(&covered, self.own, now, rand::random());
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{addr}{path}"))
            .header(header::HOST, addr.to_string());
        if let Ok(v) = HeaderValue::from_str(&auth) {
            req = req.header(AUTH_HEADER, v);
        }
        let mut req = req
            .body(body::empty())
            .map_err(|e| Error::internal(e.to_string()))?;
        req.headers_mut().extend(fields);
        match tokio::time::timeout(self.head_timeout, self.client.request(req)).await {
            Ok(Ok(r)) => {
                let reported = r
                    .headers()
                    .get(UPLOADS_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                if let Some(n) = reported {
                    lock(&self.uploads).insert(to, n);
                }
                Ok(r)
            }
            Ok(Err(e)) => Err(peer_error(Kind::ConnectFailed, format!("peer {addr}: {e}"))),
            Err(_) => Err(peer_error(
                Kind::ConnectTimeout,
                format!("peer {addr}: no answer within {:?}", self.head_timeout),
            )),
        }
    }

    async fn get_decoded<T: DeserializeOwned>(
        &self,
        to: NodeId,
        addr: SocketAddr,
        path: &str,
    ) -> Result<T, Error> {
        let resp = self.get(to, addr, path, 0).await?;
        if resp.status() != StatusCode::OK {
            return Err(refused(resp.status(), format!("peer {addr}{path}")));
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

    /// `GET /peer/v1/index?…`: updates or one snapshot page (see [`IndexAsk`]).
    pub async fn index(
        &self,
        to: NodeId,
        addr: SocketAddr,
        ask: IndexAsk,
    ) -> Result<IndexReply, Error> {
        let path = format!("/peer/v1/index?{}", ask.to_query());
        self.get_decoded(to, addr, &path).await
    }

    /// `GET /peer/v1/heads`: where the streams the node has applied stand.
    pub async fn heads(&self, to: NodeId, addr: SocketAddr) -> Result<HeadsReply, Error> {
        self.get_decoded(to, addr, "/peer/v1/heads").await
    }

    /// `GET /peer/v1/entries/{key-hash}`.
    pub async fn entries(
        &self,
        to: NodeId,
        addr: SocketAddr,
        key: &KeyHash,
    ) -> Result<EntriesReply, Error> {
        let path = format!("/peer/v1/entries/{}", hex32(key));
        self.get_decoded(to, addr, &path).await
    }

    /// A body: `GET /peer/v1/objects/{hash}` (complete copy) or `/peer/v1/fills/{key}` (in
    /// flight), from `offset` on. Only 200 (offset 0) or a 206 starting at `offset` is accepted.
    pub async fn body(
        &self,
        to: NodeId,
        addr: SocketAddr,
        path: &str,
        offset: u64,
    ) -> Result<Response<Incoming>, Error> {
        let resp = self.get(to, addr, path, offset).await?;
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
            Err(refused(
                resp.status(),
                format!("peer {addr}{path} from {offset}"),
            ))
        }
    }
}

/// Path of a complete object by content hash.
pub fn object_path(hash: &[u8; 32]) -> String {
    format!("/peer/v1/objects/{}", hex32(hash))
}

/// Path of an in-flight fill by key hash.
pub fn fill_path(key: &KeyHash) -> String {
    format!("/peer/v1/fills/{}", hex32(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::journal::DEFAULT_JOURNAL_CAPACITY;
    use crate::peer::wire::{Tagged, Update};
    use crate::peer::DEFAULT_INDEX_PAGE;

    #[test]
    fn a_full_journal_and_a_full_snapshot_page_fit_in_one_reply() {
        let node = NodeId([0xff; 16]);
        let widest = Update::Have {
            key: [0xff; 32],
            hash: [0xff; 32],
            len: u64::MAX,
            fresh_until: u64::MAX,
        };
        let journal = IndexReply::Updates {
            node,
            epoch: u64::MAX,
            updates: vec![
                Tagged {
                    node,
                    epoch: u64::MAX,
                    seq: u64::MAX,
                    update: widest.clone(),
                };
                DEFAULT_JOURNAL_CAPACITY
            ],
        };
        let page = IndexReply::Snapshot {
            node,
            epoch: u64::MAX,
            seq: u64::MAX,
            entries: vec![widest; DEFAULT_INDEX_PAGE + 64],
            next: Some([0xff; 32]),
        };
        for reply in [journal, page] {
            let len = postcard::to_stdvec(&reply)
                .map(|b| b.len())
                .unwrap_or(usize::MAX);
            assert!(len * 4 < MAX_REPLY, "{len} bytes");
        }
    }
}

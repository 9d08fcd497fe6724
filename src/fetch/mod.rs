//! The upstream side. On a miss (`miss`, the one entry point) it chooses where a body comes
//! from — a fill already running here, a peer of the group, the origin (directly or through the
//! parent proxy), or a revalidation of a stale entry — and starts the fill that stores it
//! (`lead`); the origin client, the writer that drains sources into fills and resumes them,
//! and the peer source choice (a large copy from several holders at once: `parallel`) live
//! beside it; ranges of objects not stored yet are fetched ahead of their fill (`ranges`). Never
//! answers a client itself.

mod claim;
pub mod connect;
pub mod hosts;
mod lead;
pub mod miss;
pub mod origin;
pub mod parallel;
pub mod peer;
pub mod ranges;
mod redirect;
pub mod writer;

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use hyper::body::Incoming;

use crate::body::Body;
use crate::cache::inflight::Inflight;
use crate::cache::rules::Rules;
use crate::cache::store::Store;
use crate::error::{Error, Kind};
use crate::http::headers;
use crate::metrics::Metrics;

use self::origin::Origin;

pub use self::lead::{Fetched, Start};
pub use self::miss::{Got, Miss, PeerCopy};

/// Request header fields that make a response specific to the request, never sent on a fill.
const FILL_DROPS: [header::HeaderName; 6] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// Shared upstream machinery.
#[derive(Clone)]
pub struct Fetcher {
    pub origin: Origin,
    pub store: Store,
    /// The fills in progress (collapsed forwarding), bounded by `cache.max_fills`.
    pub inflight: Arc<Inflight>,
    pub metrics: Arc<Metrics>,
    pub max_object_size: u64,
    /// Whether a range request for an object not stored yet starts its whole fill
    /// (`cache.range_fill`).
    pub range_fill: crate::config::RangeFill,
    /// Our `Via` pseudonym.
    pub via: headers::Via,
    /// The peer group, when peering is on.
    pub peers: Option<Arc<crate::peer::Peers>>,
    /// What to assume where origins say nothing (the same rules on every path).
    pub rules: Arc<Rules>,
    /// Recent addresses of origin hosts (is a fill going to a member's address?).
    pub hosts: Arc<hosts::HostAddrs>,
}

impl Fetcher {
    /// Builds the upstream request for `uri` from the client's header fields: hop-by-hop fields
    /// removed, `Host` set from the target, our `Via` appended.
    pub fn upstream_request(
        &self,
        method: Method,
        uri: &Uri,
        client_headers: &HeaderMap,
        version: http::Version,
        body: Body,
    ) -> Result<Request<Body>, Error> {
        let mut h = client_headers.clone();
        headers::strip_hop_by_hop(&mut h);
        self.via.append(&mut h, version);
        let authority = uri
            .authority()
            .ok_or_else(|| Error::downstream(Kind::BadRequest, "target has no host"))?;
        // Host is the authority without userinfo (RFC 9110 §7.2), whatever the target held.
        let host = authority.as_str();
        let host = &host[host.rfind('@').map_or(0, |at| at + 1)..];
        let host = HeaderValue::from_str(host)
            .map_err(|_| Error::downstream(Kind::BadRequest, "invalid host"))?;
        h.insert(header::HOST, host);
        let mut req = Request::builder()
            .method(method)
            .uri(uri.clone())
            .body(body)
            .map_err(|e| Error::internal(e.to_string()))?;
        *req.headers_mut() = h;
        Ok(req)
    }

    /// Sends `method` for `uri` with the client's own fields and `body`, counted as an origin
    /// request; nothing is stored.
    pub async fn pass(
        &self,
        method: Method,
        uri: &Uri,
        client_headers: &HeaderMap,
        version: http::Version,
        body: Body,
    ) -> Result<Response<Incoming>, Error> {
        let req = self.upstream_request(method, uri, client_headers, version, body)?;
        Metrics::inc(&self.metrics.origin_requests);
        self.origin.send(req).await
    }

    /// A new temporary body file, or `None` (logged) when the cache directory refuses one.
    pub async fn temp_file(&self) -> Option<(std::path::PathBuf, std::fs::File)> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.temp_file()).await {
            Ok(Ok(t)) => Some(t),
            Ok(Err(e)) => {
                tracing::error!("cannot create a temporary file; not storing: {e}");
                None
            }
            Err(_) => None,
        }
    }
}

/// The body length a response announces, if it is a plain decimal.
pub fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

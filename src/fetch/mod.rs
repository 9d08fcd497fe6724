//! Upstream side: choose the source of a body and start its fill. Today the source is the origin
//! (directly or through the parent proxy); peers slot in here. Never answers a client itself.

pub mod connect;
pub mod origin;
pub mod peer;
pub mod writer;

use std::sync::Arc;
use std::time::SystemTime;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::cache::inflight::{FillPermit, Head, Outcome};
use crate::cache::key::Variant;
use crate::cache::policy::{self, Storability, Timing};
use crate::cache::rules::Rules;
use crate::cache::store::{Entry, Store};
use crate::error::{Error, Kind};
use crate::front::headers;
use crate::metrics::{Metrics, Source};

use self::origin::Origin;
use self::writer::{Feed, FillJob, OnCommit, Resume};

/// Request header fields that make a response specific to the request, never sent on a fill.
const FILL_DROPS: [header::HeaderName; 6] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// What a fill's leader got from upstream.
pub enum Fetched {
    /// A storable response: its body is being written to the fill; read it from there.
    Filling(Arc<Head>),
    /// A 304 answered our conditional request: the stored entry is fresh again.
    Freshened(Arc<Entry>),
    /// A response that is not stored, and why (a `NotStorable` reason, `too-big`,
    /// `vary-unusable` or `no-temp-file`): pass it through.
    Direct {
        resp: Response<Incoming>,
        why: &'static str,
    },
}

/// Shared upstream machinery.
#[derive(Clone)]
pub struct Fetcher {
    pub origin: Origin,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub max_object_size: u64,
    /// Our `Via` pseudonym.
    pub via: Arc<str>,
    /// The peer group, when peering is on.
    pub peers: Option<Arc<crate::peer::Peers>>,
    /// What to assume where origins say nothing (the same rules on every path).
    pub rules: Arc<Rules>,
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
        headers::append_via(&mut h, version, &self.via);
        let authority = uri
            .authority()
            .ok_or_else(|| Error::downstream(Kind::BadRequest, "target has no host"))?;
        let host = HeaderValue::from_str(authority.as_str())
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

    /// Leads the fill held by `permit`: asks upstream for `uri` (conditionally when `stale` is
    /// given), then either streams a storable body into the fill, freshens `stale` on a 304, or
    /// hands back a response that must not be shared.
    pub async fn lead(
        &self,
        permit: FillPermit,
        key: &str,
        uri: &Uri,
        client_headers: &HeaderMap,
        version: http::Version,
        stale: Option<&Arc<Entry>>,
    ) -> Result<Fetched, Error> {
        let stale_headers = stale.map(|e| e.headers());
        let (resp, request_time) = match self
            .ask_origin(uri, client_headers, version, stale_headers.as_ref())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                permit.finish(Outcome::Failed(e.clone()));
                return Err(e);
            }
        };
        self.accept(permit, key, client_headers, resp, request_time, stale)
            .await
    }

    /// The origin request of a fill: the client's end-to-end fields without Range and its
    /// preconditions, plus the validators of `validators_of` (a stored head) when given. With
    /// nothing stored to revalidate, the client's own `If-None-Match` and `If-Modified-Since`
    /// go along: the origin's 304 answers the client (and is not stored), its 200 is stored as
    /// usual.
    pub async fn ask_origin(
        &self,
        uri: &Uri,
        client_headers: &HeaderMap,
        version: http::Version,
        validators_of: Option<&HeaderMap>,
    ) -> Result<(Response<Incoming>, SystemTime), Error> {
        let mut h = client_headers.clone();
        let clients_validators = [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE];
        for name in FILL_DROPS {
            if validators_of.is_some() || !clients_validators.contains(&name) {
                h.remove(name);
            }
        }
        if let Some(stored) = validators_of {
            for (name, value) in policy::validators(stored).iter() {
                h.insert(name, value.clone());
            }
        }
        let req = self.upstream_request(Method::GET, uri, &h, version, body::empty())?;
        let request_time = SystemTime::now();
        crate::metrics::Metrics::inc(&self.metrics.origin_requests);
        let resp = self.origin.send(req).await?;
        Ok((resp, request_time))
    }

    /// Takes the origin's answer to a fill request: freshens `stale` on a 304, starts a fill for
    /// a storable response, or hands back one that must not be shared.
    pub async fn accept(
        &self,
        permit: FillPermit,
        key: &str,
        client_headers: &HeaderMap,
        resp: Response<Incoming>,
        request_time: SystemTime,
        stale: Option<&Arc<Entry>>,
    ) -> Result<Fetched, Error> {
        let response_time = SystemTime::now();
        let (mut parts, incoming) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        let timing = Timing::new(request_time, response_time, &parts.headers);

        if let (Some(entry), StatusCode::NOT_MODIFIED) = (stale, parts.status) {
            let mut merged = entry.headers();
            policy::merge_not_modified(&mut merged, &parts.headers);
            let store = self.store.clone();
            let old = entry.clone();
            let fresh = tokio::task::spawn_blocking(move || store.freshen(&old, merged, timing))
                .await
                .map_err(|e| Error::internal(e.to_string()))?;
            return match fresh {
                Ok(e) => {
                    permit.finish(Outcome::Freshened(e.clone()));
                    Ok(Fetched::Freshened(e))
                }
                Err(e) => {
                    permit.finish(Outcome::Failed(e.clone()));
                    Err(e)
                }
            };
        }

        let len = content_length(&parts.headers);
        let treat = self.rules.treat(key);
        let storability = policy::storability(
            &Method::GET,
            client_headers,
            parts.status,
            &parts.headers,
            treat.heuristic,
        );
        let not_stored = match storability {
            Storability::NotStorable(why) => Some(why.as_str()),
            Storability::Storable if len.is_some_and(|n| n > self.max_object_size) => {
                Some("too-big")
            }
            Storability::Storable => None,
        };
        if let Some(why) = not_stored {
            tracing::debug!(key, "not stored: {why}");
        }
        let variant = Variant::of_request(&treat.vary(&parts.headers), client_headers);
        // A Vary this cache cannot evaluate (a member that is no field name) selects nothing.
        let not_stored = not_stored.or(variant.is_none().then_some("vary-unusable"));
        let temp = match not_stored {
            None => self.temp_file().await,
            Some(_) => None,
        };
        let (Some(variant), Some(temp)) = (variant, temp) else {
            permit.finish(Outcome::NotShared);
            let why = not_stored.unwrap_or("no-temp-file");
            let resp = Response::from_parts(parts, incoming);
            return Ok(Fetched::Direct { resp, why });
        };
        let shareable = policy::shareable(client_headers, &parts.headers, treat.heuristic);
        let head = Head {
            status: parts.status,
            headers: parts.headers,
            len,
            timing,
            variant,
            shareable,
        };
        let feed = Feed {
            body: incoming.map_err(Into::into).boxed(),
            read_timeout: self.origin.read_timeout(),
            source: Source::Origin,
            name: "origin".into(),
        };
        let start = Start {
            key,
            head,
            expected: None,
            fallbacks: Vec::new(),
        };
        Ok(Fetched::Filling(self.start_fill(permit, temp, start, feed)))
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

    /// Publishes `start.head` on the permit's fill and spawns the writer that drains `feed` (and
    /// the fallbacks) into the temporary file `temp`.
    pub fn start_fill(
        &self,
        mut permit: FillPermit,
        temp: (std::path::PathBuf, std::fs::File),
        start: Start<'_>,
        feed: Feed,
    ) -> Arc<Head> {
        let (path, file) = temp;
        let file = Arc::new(file);
        permit.temp = Some(path);
        let head = Arc::new(start.head);
        permit.fill().start(head.clone(), file.clone());
        let on_commit: Option<OnCommit> = match &self.peers {
            Some(p) if head.shareable => {
                let p = p.clone();
                Some(Box::new(move |e: &Arc<Entry>| p.advertise_have(e)))
            }
            _ => None,
        };
        let job = FillJob {
            permit,
            file,
            head: head.clone(),
            key: start.key.to_owned(),
            shareable: head.shareable,
            store: self.store.clone(),
            max_object_size: self.max_object_size,
            metrics: self.metrics.clone(),
            expected: start.expected,
            fallbacks: start.fallbacks,
            on_commit,
        };
        tokio::spawn(async move {
            let end = writer::run(job, feed).await;
            tracing::debug!(?end, "fill ended");
        });
        head
    }
}

/// What a new fill starts from.
pub struct Start<'a> {
    pub key: &'a str,
    pub head: Head,
    pub expected: Option<blake3::Hash>,
    pub fallbacks: Vec<Box<dyn Resume>>,
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

//! A fill's leader at the origin: the (conditional) request, what its answer becomes — a fill
//! whose body the writer drains into the store, a freshened entry after a 304, or a response
//! that is passed through — and the start of a fill from any source.

use std::sync::Arc;
use std::time::SystemTime;

use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::cache::head::Entry;
use crate::cache::head::{FillHead, Head};
use crate::cache::inflight::{FillPermit, Outcome};
use crate::cache::key::Variant;
use crate::cache::policy::{self, Storability, Timing};
use crate::error::Error;
use crate::http::headers;
use crate::peer::redirect;
use crate::peer::wire::NodeId;

use super::peer::Want;
use super::writer::{self, Feed, Feeder, FillJob, LogOnly, OnCommit, Report, Resume};
use super::{content_length, Fetcher, FILL_DROPS};

/// What a fill's leader got from upstream.
pub enum Fetched {
    /// A storable response: its body is being written to the fill; read it from there.
    Filling(Arc<FillHead>),
    /// A 304 answered our conditional request: the stored entry is fresh again.
    Freshened(Arc<Entry>),
    /// A content server sent us to the member `node`, whose copy is streaming into the fill.
    Redirected { head: Arc<FillHead>, node: NodeId },
    /// A response that is not stored, and why (a `NotStorable` reason, `too-big`,
    /// `vary-unusable` or `no-temp-file`): pass it through.
    Direct {
        resp: Response<Incoming>,
        why: &'static str,
    },
}

/// What a new fill starts from.
pub struct Start<'a> {
    pub key: &'a str,
    pub head: FillHead,
    pub expected: Option<blake3::Hash>,
    pub fallbacks: Vec<Box<dyn Resume>>,
    /// Commit the body to the store once complete (not when the request said `no-store`).
    pub keep: bool,
}

impl Fetcher {
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
        let asked = async {
            let mut req =
                self.fill_request(uri, client_headers, version, stale_headers.as_ref())?;
            // A content server may send a member to the members that hold the object.
            let server = match redirect::redirectable(req.method(), req.headers()) {
                Ok(()) => self.prove(&mut req).await,
                Err(_) => None,
            };
            let (resp, request_time) = self.send_fill(req).await?;
            Ok::<_, Error>((resp, request_time, server))
        };
        let (resp, request_time, server) = match asked.await {
            Ok(r) => r,
            Err(e) => {
                permit.finish(Outcome::Failed(e.clone()));
                return Err(e);
            }
        };
        if let Some(server) = server.filter(|_| redirect::is_offer(resp.status(), resp.headers())) {
            let want = Want {
                key,
                uri,
                headers: client_headers,
                version,
            };
            return self.follow(permit, &want, resp, server).await;
        }
        self.accept(permit, key, client_headers, resp, request_time, stale)
            .await
    }

    /// The origin request of a fill, sent (see [`Fetcher::fill_request`]).
    pub async fn ask_origin(
        &self,
        uri: &Uri,
        client_headers: &HeaderMap,
        version: http::Version,
        validators_of: Option<&HeaderMap>,
    ) -> Result<(Response<Incoming>, SystemTime), Error> {
        let req = self.fill_request(uri, client_headers, version, validators_of)?;
        self.send_fill(req).await
    }

    /// Sends a fill request, counted as an origin request; the response head and when the
    /// request went.
    pub(super) async fn send_fill(
        &self,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, SystemTime), Error> {
        let request_time = SystemTime::now();
        crate::metrics::Metrics::inc(&self.metrics.origin_requests);
        let resp = self.origin.send(req).await?;
        Ok((resp, request_time))
    }

    /// The origin request of a fill: the client's end-to-end fields without Range and its
    /// preconditions, plus the validators of `validators_of` (a stored head) when given. With
    /// nothing stored to revalidate, the client's own `If-None-Match` and `If-Modified-Since`
    /// go along: the origin's 304 answers the client (and is not stored), its 200 is stored as
    /// usual.
    pub(super) fn fill_request(
        &self,
        uri: &Uri,
        client_headers: &HeaderMap,
        version: http::Version,
        validators_of: Option<&HeaderMap>,
    ) -> Result<Request<Body>, Error> {
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
        self.upstream_request(Method::GET, uri, &h, version, body::empty())
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
        let head = FillHead {
            head: Head::new(parts.status, &parts.headers, timing, variant, shareable),
            len,
        };
        let feed = Feed {
            body: incoming.map_err(Into::into).boxed(),
            read_timeout: self.origin.read_timeout(),
            from: Feeder::Origin,
        };
        let start = Start {
            key,
            head,
            expected: None,
            fallbacks: Vec::new(),
            keep: true, // a request's no-store made it not storable already
        };
        Ok(Fetched::Filling(self.start_fill(permit, temp, start, feed)))
    }

    /// Publishes `start.head` on the permit's fill and spawns the writer that drains `feed` (and
    /// the fallbacks) into the temporary file `temp`.
    pub fn start_fill(
        &self,
        mut permit: FillPermit,
        temp: (std::path::PathBuf, std::fs::File),
        start: Start<'_>,
        feed: Feed,
    ) -> Arc<FillHead> {
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
            store: self.store.clone(),
            max_object_size: self.max_object_size,
            metrics: self.metrics.clone(),
            expected: start.expected,
            fallbacks: start.fallbacks,
            keep: start.keep,
            on_commit,
            report: match &self.peers {
                Some(p) => p.clone() as Arc<dyn Report>,
                None => Arc::new(LogOnly),
            },
        };
        tokio::spawn(async move {
            let end = writer::run(job, feed).await;
            tracing::debug!(?end, "fill ended");
        });
        head
    }
}

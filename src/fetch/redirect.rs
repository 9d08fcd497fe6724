//! A member in front of a content server (a node with `[[mirror]] redirect_to_peers`): proves
//! its membership on the fill requests it sends straight to a live member's address, and
//! follows the content server's `302` to the holder it names — the body in verified pieces
//! from that holder, stored under our own key with the head the content server sent — going
//! back to the content server once, with a signed no-redirect marker, when the holder fails.
//! Never answers a client.

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::Body;
use crate::cache::cache_control::CacheControl;
use crate::cache::head::{FillHead, Head};
use crate::cache::inflight::{FillPermit, Outcome};
use crate::cache::key::Variant;
use crate::error::{Error, Kind, Side};
use crate::fetch::peer::{OriginResume, PeerResume, Want, PEER_STALL};
use crate::fetch::writer::{Feed, Feeder, Resume};
use crate::fetch::{Fetched, Fetcher, Start};
use crate::metrics::Metrics;
use crate::peer::auth::AUTH_HEADER;
use crate::peer::redirect::{self, MAX_OFFER, NO_REDIRECT};
use crate::peer::select::Fault;
use crate::peer::wire::NodeId;
use crate::peer::{pieces, Source};

/// Holders tried after the first one, mid-body, before the content server.
const MORE_HOLDERS: usize = 2;

/// Why following a redirect failed, and the holder to blame, if one failed badly.
type Failed = (Option<NodeId>, Error);

impl Fetcher {
    /// Puts proofs of membership on `req` when it goes straight (plain http, no parent proxy)
    /// to the address of a live member — a content server, maybe: one proof per member at that
    /// address (at most `MAX_PROOFS`), each good once and only at that member. Returns the first
    /// such member; `None`, with nothing added, otherwise.
    pub(super) async fn prove(&self, req: &mut Request<Body>) -> Option<NodeId> {
        let peers = self.peers.as_ref().filter(|p| p.has_members())?;
        if req.uri().scheme_str() != Some("http") || self.origin.through_parent() {
            return None;
        }
        let host = req.uri().host()?;
        let port = req.uri().port_u16().unwrap_or(80);
        let ips = self.hosts.of(host, port).await;
        let servers = peers.members_at(&ips);
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let now = crate::peer::now_ms();
        let proofs: Vec<String> = servers
            .iter()
            .map(|to| {
                let (method, fields) = (req.method(), req.headers());
                redirect::prove(
                    &peers.signer,
                    peers.id,
                    *to,
                    method,
                    target,
                    fields,
                    now,
                    rand::random(),
                )
            })
            .collect();
        for proof in proofs {
            if let Ok(v) = HeaderValue::from_str(&proof) {
                req.headers_mut().append(AUTH_HEADER, v);
            }
        }
        servers.first().copied()
    }

    /// A request back to the content server after the holder it named failed: counted, and
    /// proved, so that its no-redirect marker counts.
    pub(super) async fn back_to_server(&self, req: &mut Request<Body>) {
        Metrics::inc(&self.metrics.redirect_fallbacks);
        self.prove(req).await;
    }

    /// Follows `server`'s redirect `resp` for the fill of `permit`: the first holder named (a
    /// live member we have not penalised) sends the body in verified pieces, with the other
    /// holders and then the content server (`Range`, `If-Range`) as fall-backs mid-body. When
    /// the copy cannot start — a redirect we cannot read, no holder we may ask, a holder that
    /// fails or sends a bad first piece (penalised) — the content server is asked once more,
    /// with the no-redirect marker.
    pub(super) async fn follow(
        &self,
        permit: FillPermit,
        want: &Want<'_>,
        resp: Response<Incoming>,
        server: NodeId,
    ) -> Result<Fetched, Error> {
        let mut permit = Some(permit);
        match self.copy_from_holder(&mut permit, want, resp).await {
            Ok((head, node)) => {
                Metrics::inc(&self.metrics.redirects_followed);
                tracing::info!(key = want.key, %server, holder = %node, "redirected to a holder");
                Ok(Fetched::Redirected { head, node })
            }
            Err((failed, e)) => {
                tracing::info!(key = want.key, %server, "redirect not followed, back to the content server: {e}");
                let permit = permit
                    .take()
                    .ok_or_else(|| Error::internal("the redirect consumed the fill"))?;
                self.fill_from_server(permit, want, failed).await
            }
        }
    }

    /// Starts the fill from the first holder `resp` names; the fill's head, and the holder.
    async fn copy_from_holder(
        &self,
        permit: &mut Option<FillPermit>,
        want: &Want<'_>,
        resp: Response<Incoming>,
    ) -> Result<(Arc<FillHead>, NodeId), Failed> {
        let peers = self
            .peers
            .clone()
            .ok_or((None, Error::internal("a redirect without a peer group")))?;
        let bad = |detail: String| {
            let e = Error::new(Kind::UpstreamProtocol, Side::Upstream, detail);
            (None, e)
        };
        let (parts, incoming) = resp.into_parts();
        let read = Limited::new(incoming, MAX_OFFER).collect();
        let bytes = match tokio::time::timeout(self.origin.read_timeout(), read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => return Err(bad(format!("the redirect's body: {e}"))),
            Err(_) => return Err(bad("the redirect's body did not come".into())),
        };
        let offer = redirect::parse(&parts.headers, &bytes)
            .map_err(|why| bad(format!("the redirect: {why}")))?;
        let copied = (offer.head.head)
            .head(true)
            .ok_or_else(|| bad("the redirect: a malformed head".into()))?;
        let stored = copied.headers();
        let treat = self.rules.treat(want.key);
        let variant = Variant::of_request(&treat.vary(&stored), want.headers)
            .filter(|v| *v == copied.variant)
            .ok_or_else(|| bad("the redirect: a head for another variant".into()))?;
        let hash = blake3::Hash::from_bytes(offer.hash);
        let sources: Vec<Source> = (offer.holders.iter())
            .filter_map(|addr| peers.source_at(*addr, &hash, offer.len))
            .collect();
        let Some(first) = sources.first() else {
            let e = Error::new(
                Kind::NotFound,
                Side::Peer,
                "no holder named that we may ask",
            );
            return Err((None, e));
        };
        let started = match pieces::fetch(&peers, first, hash, offer.len, 0).await {
            Ok(verified) => pieces::checked_start(verified, PEER_STALL).await,
            Err(e) => Err(e),
        };
        let body = started.map_err(|e| {
            let blamed = (peers.failed(first.node, &e) == Some(Fault::Bad)).then_some(first.node);
            (blamed, e)
        })?;
        let temp = self
            .temp_file()
            .await
            .ok_or_else(|| (None, Error::storage("no temporary file")))?;
        let mut fallbacks: Vec<Box<dyn Resume>> = Vec::new();
        for src in sources.iter().skip(1).take(MORE_HOLDERS) {
            let resume = PeerResume::new(&peers, src, hash, offer.len);
            fallbacks.push(Box::new(resume));
        }
        let mut marked = want.headers.clone();
        marked.insert(NO_REDIRECT, redirect::marker(Some(first.node)));
        let back = Want {
            headers: &marked,
            ..*want
        };
        if let Some(resume) = OriginResume::new(self, &back, &stored) {
            fallbacks.push(Box::new(resume.into_fallback()));
        }
        let Some(permit) = permit.take() else {
            return Err((None, Error::internal("no permit")));
        };
        let head = FillHead {
            head: Head::new(copied.status, &stored, copied.timing, variant, true),
            len: Some(offer.len),
        };
        let feed = Feed {
            body,
            read_timeout: PEER_STALL,
            from: Feeder::Peer(first.node),
        };
        let start = Start {
            key: want.key,
            head,
            expected: Some(hash),
            fallbacks,
            // RFC 9111 §5.2.1.5: a request's no-store covers a holder's copy too.
            keep: !CacheControl::from_request(want.headers).no_store,
        };
        Ok((self.start_fill(permit, temp, start, feed), first.node))
    }

    /// The fill of `permit` from the content server itself, with the no-redirect marker naming
    /// `failed`: its answer is taken like any origin's. A redirect again is its fault (502).
    async fn fill_from_server(
        &self,
        permit: FillPermit,
        want: &Want<'_>,
        failed: Option<NodeId>,
    ) -> Result<Fetched, Error> {
        let mut marked = want.headers.clone();
        marked.insert(NO_REDIRECT, redirect::marker(failed));
        let sent = async {
            let mut req = self.fill_request(want.uri, &marked, want.version, None)?;
            self.back_to_server(&mut req).await;
            let (resp, request_time) = self.send_fill(req).await?;
            if redirect::is_offer(resp.status(), resp.headers()) {
                return Err(Error::upstream(
                    Kind::UpstreamProtocol,
                    "the content server redirected a request that asked it not to",
                ));
            }
            Ok((resp, request_time))
        };
        match sent.await {
            Ok((resp, request_time)) => {
                (self.accept(permit, want.key, want.headers, resp, request_time, None)).await
            }
            Err(e) => {
                permit.finish(Outcome::Failed(e.clone()));
                Err(e)
            }
        }
    }
}

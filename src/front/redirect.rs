//! The content-server side of `[[mirror]] redirect_to_peers`: takes a member's proof (and its
//! no-redirect marker) off a request — neither ever goes upstream — and answers a member's
//! request for a fresh object that other members hold with a `302` to them instead of the
//! body. The rules and the form are `peer::redirect`'s; it never fetches anything.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Request, Response, StatusCode};

use crate::body;
use crate::cache::head::Entry;
use crate::front::cache_status::CacheStatusField;
use crate::front::forward::{Answer, Ask};
use crate::front::Proxy;
use crate::metrics::Metrics;
use crate::peer::auth::AUTH_NAME;
use crate::peer::redirect::{self, Facts, Proof, Serve, NO_REDIRECT};
use crate::peer::select::Fault;
use crate::peer::transfer::EntryHead;
use crate::peer::wire::NodeId;

/// A member that proved itself on a request to a redirecting mirror (kept in the request's
/// extensions for the cache flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asker {
    pub node: NodeId,
    /// It came back after the holder it was sent to failed: never redirected again.
    pub fallback: bool,
}

/// Takes the proofs and the no-redirect marker off `req`. On a redirecting route (`redirects`)
/// with peering on, a proof made for this node by a live member, seen for the first time and
/// within its window, makes the request a member's ([`Asker`] in its extensions); a holder its
/// marker names as failed is left out of our choices for a while. Any other proof is refused
/// (counted, logged) and the request is served as a non-member's.
pub fn take<B>(app: &Proxy, req: &mut Request<B>, redirects: bool) {
    let peers = app.peers.as_ref().filter(|_| redirects);
    let proved = req.headers().contains_key(&AUTH_NAME);
    if let Some(peers) = peers.filter(|_| proved) {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let proof = redirect::check(
            &peers.signer,
            &peers.replay,
            peers.id,
            req.method(),
            target,
            req.headers(),
            crate::peer::now_ms(),
        );
        let marker = req.headers().get(NO_REDIRECT);
        match proof {
            Proof::Member(node) if peers.is_member(node) => {
                let fallback = marker.is_some();
                if let Some(failed) = marker.and_then(redirect::failed_holder) {
                    tracing::info!(member = %node, holder = %failed, "a holder we named failed a member; left out for a while");
                    peers.charge(failed, Fault::Bad);
                }
                req.extensions_mut().insert(Asker { node, fallback });
            }
            Proof::Member(node) => refused(app, req.uri(), &format!("{node} is not a live member")),
            Proof::Refused(e) => refused(app, req.uri(), &e.to_string()),
            Proof::Absent => {}
        }
    }
    // Neither field goes upstream.
    let h = req.headers_mut();
    if proved {
        h.remove(&AUTH_NAME);
    }
    h.remove(&NO_REDIRECT);
}

fn refused(app: &Proxy, uri: &http::Uri, why: &str) {
    Metrics::inc(&app.metrics.redirect_proofs_refused);
    tracing::info!(%uri, "membership proof refused, served as a non-member: {why}");
}

/// The `302` for a member's request that found `entry` fresh (`stored` its fields): when
/// [`redirect::eligible`] and some other live member holds the same body (by blake3, under
/// any key), the member is sent to them and the body is not sent from here. `None`: serve it.
pub fn offer(
    app: &Arc<Proxy>,
    ask: &Ask<'_>,
    entry: &Entry,
    stored: &HeaderMap,
    trace: &mut CacheStatusField,
) -> Option<Answer> {
    let asker = ask.asker?;
    let peers = app.peers.as_ref()?;
    let rewritten = ask
        .relink
        .is_some_and(|r| r.judged(entry.status, stored, Some(entry.len)).is_some());
    let facts = Facts {
        member: true,
        fallback: asker.fallback,
        method: ask.method,
        headers: ask.headers,
        shareable: entry.shareable,
        rewritten,
    };
    let holders = match redirect::eligible(&facts) {
        Ok(()) => peers.body_sources(&entry.hash, entry.len, asker.node),
        Err(why) => return served(entry, asker, why),
    };
    let Some(first) = holders.first() else {
        return served(entry, asker, Serve::NoHolder);
    };
    let addrs: Vec<SocketAddr> = holders.iter().map(|s| s.addr).collect();
    let (headers, bytes) = redirect::offer(&EntryHead::of_entry(entry), &addrs)?;
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = StatusCode::FOUND;
    *resp.headers_mut() = headers;
    Metrics::inc(&app.metrics.redirects_sent);
    tracing::info!(key = %entry.key, member = %asker.node, holder = %first.node, "redirected to a holder");
    trace.hit = true;
    trace.detail = Some("redirected");
    Some((resp, None))
}

/// A member's request served here after all (logged at debug level, with why).
fn served(entry: &Entry, asker: &Asker, why: Serve) -> Option<Answer> {
    let why = why.as_str();
    tracing::debug!(key = %entry.key, member = %asker.node, why, "served, not redirected");
    None
}

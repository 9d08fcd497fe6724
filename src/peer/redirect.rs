//! The content-server redirect as both ends speak it: the proof of membership a member puts on
//! a request to a content server (the fields it covers, the signed no-redirect marker), which
//! requests may be redirected at all, and the form of the `302` — `Location` and
//! `Link: <…>; rel=duplicate` (Metalink/HTTP, RFC 6249) on the holders' transfer API, the blake3
//! in `Repr-Digest`, the head the content server would have sent as its body. Pure: no I/O, no
//! clock (`now_ms` comes in); never chooses holders or touches the store.

use std::net::SocketAddr;

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::peer::auth::{AuthError, Covered, ReplayCache, RequestSigner, AUTH_HEADER};
use crate::peer::client::object_path;
use crate::peer::transfer::EntryHead;
use crate::peer::wire::NodeId;

/// Request field of a member that comes back to the content server because the holder it was
/// sent to failed it: the failed holder's node id (or `-`). The content server never redirects
/// such a request. Covered by the proof, so nobody on the path adds or strips it.
pub const NO_REDIRECT: HeaderName = HeaderName::from_static("x-peercache-no-redirect");

/// The request fields a member's proof to a content server covers, present or absent: those
/// that change whether and how it answers (a `Range` is served, never redirected).
pub const REDIRECT_FIELDS: [HeaderName; 3] = [header::RANGE, header::IF_RANGE, NO_REDIRECT];

/// `Content-Type` of a redirect's body: the stored head the content server would have sent
/// (an [`EntryHead`] in postcard, the form `GET /peer/v1/entries/…` answers with).
pub const OFFER_TYPE: &str = "application/vnd.peercache.entry-head";

/// Holders named in one redirect (the `Link` fields), best first.
pub const MAX_HOLDERS: usize = 8;

/// Largest redirect body a member reads (a stored head is a few hundred bytes; origins' heads
/// are refused past 64 KiB).
pub const MAX_OFFER: usize = 64 * 1024;

/// Proofs read from one request (a member sends one per group member at the address it
/// connects to; only the one made for the receiver verifies).
pub const MAX_PROOFS: usize = 4;

/// Why a member's request is answered by the content server itself rather than redirected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// No valid proof of membership: a non-member, or a replayed, stale or foreign proof.
    NotMember,
    /// The member came back after the holder it was sent to failed (the no-redirect marker).
    Fallback,
    /// Not a GET (a HEAD costs no upload).
    Method,
    /// A `Range` or `If-Range`: a part is answered here.
    Range,
    /// A precondition (`If-None-Match`, `If-Modified-Since`, …): answered here, mostly a 304.
    Conditional,
    /// `Authorization` or `Cookie`: a credentialed request is never handed to another machine.
    Credentials,
    /// The stored response may not go to other machines.
    NotShareable,
    /// The answer goes out rewritten (a mirror's index page): its bytes are not the holders'.
    Rewritten,
    /// No other live member holds the body.
    NoHolder,
}

impl Serve {
    pub fn as_str(self) -> &'static str {
        match self {
            Serve::NotMember => "not-member",
            Serve::Fallback => "fallback",
            Serve::Method => "method",
            Serve::Range => "range",
            Serve::Conditional => "conditional",
            Serve::Credentials => "credentials",
            Serve::NotShareable => "not-shareable",
            Serve::Rewritten => "rewritten",
            Serve::NoHolder => "no-holder",
        }
    }
}

/// Whether a request, by its method and fields alone, could be redirected: a GET without
/// `Range`, preconditions or credentials. A member puts a proof only on such a request (and on
/// its fall-backs); the content server asks it again.
pub fn redirectable(method: &Method, headers: &HeaderMap) -> Result<(), Serve> {
    if method != Method::GET {
        return Err(Serve::Method);
    }
    if headers.contains_key(header::RANGE) || headers.contains_key(header::IF_RANGE) {
        return Err(Serve::Range);
    }
    let preconditions = [
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
    ];
    if preconditions.iter().any(|p| headers.contains_key(p)) {
        return Err(Serve::Conditional);
    }
    if headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE) {
        return Err(Serve::Credentials);
    }
    Ok(())
}

/// What the content server knows when a request finds a fresh stored response.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The request proved membership (a live member, proof accepted once).
    pub member: bool,
    /// It carries the no-redirect marker.
    pub fallback: bool,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The stored response may go to other machines.
    pub shareable: bool,
    /// It would go out rewritten (a mirror's index page).
    pub rewritten: bool,
}

/// May this request be redirected to the members holding the body, if any does? In order:
/// only a member's (else it could not fetch from the holder), never one that came back
/// ([`Serve::Fallback`]: no loops), only a plain GET ([`redirectable`]), only a shareable
/// response, and only one sent as stored.
pub fn eligible(f: &Facts<'_>) -> Result<(), Serve> {
    if !f.member {
        return Err(Serve::NotMember);
    }
    if f.fallback {
        return Err(Serve::Fallback);
    }
    redirectable(f.method, f.headers)?;
    if !f.shareable {
        return Err(Serve::NotShareable);
    }
    if f.rewritten {
        return Err(Serve::Rewritten);
    }
    Ok(())
}

/// The proof that member `from` puts on `method target` (origin form, as sent on the wire) for
/// the content server `to`: a [`RequestSigner`] proof covering [`REDIRECT_FIELDS`] of
/// `headers`. `nonce` must be fresh for every request.
#[allow(clippy::too_many_arguments)]
pub fn prove(
    signer: &RequestSigner,
    from: NodeId,
    to: NodeId,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    now_ms: u64,
    nonce: [u8; 16],
) -> String {
    let covered = Covered {
        method: method.as_str(),
        target,
        to,
        headers,
        fields: &REDIRECT_FIELDS,
    };
    signer.sign(&covered, from, now_ms, nonce)
}

/// What a request to a content server proves about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// It carries no proof.
    Absent,
    /// None of its proofs verifies; the reason the last one gave.
    Refused(AuthError),
    /// A proof made for `own` by this member verified (and is now used up).
    Member(NodeId),
}

/// Checks the proofs of `method target` (at most [`MAX_PROOFS`] `x-peercache-auth` values of
/// `headers`) against node `own` at `now_ms`: the first that verifies names the member, and is
/// remembered by `replay` so that it is accepted once. A proof made for another node fails its
/// MAC and is not remembered.
pub fn check(
    signer: &RequestSigner,
    replay: &ReplayCache,
    own: NodeId,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    now_ms: u64,
) -> Proof {
    let covered = Covered {
        method: method.as_str(),
        target,
        to: own,
        headers,
        fields: &REDIRECT_FIELDS,
    };
    let mut last = None;
    for value in headers.get_all(AUTH_HEADER).iter().take(MAX_PROOFS) {
        let text = value.to_str().unwrap_or("");
        match signer.verify(&covered, text, now_ms, replay) {
            Ok(node) => return Proof::Member(node),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Proof::Refused(e),
        None => Proof::Absent,
    }
}

/// The no-redirect marker's value naming the holder that failed (`-` when none is known).
pub fn marker(failed: Option<NodeId>) -> HeaderValue {
    match failed.map(|n| HeaderValue::from_str(&n.to_string())) {
        Some(Ok(v)) => v,
        _ => HeaderValue::from_static("-"),
    }
}

/// The holder a no-redirect marker names, if it names one.
pub fn failed_holder(value: &HeaderValue) -> Option<NodeId> {
    value.to_str().ok()?.trim().parse().ok()
}

/// The URL of the body `hash` on a holder's transfer API.
pub fn holder_url(addr: SocketAddr, hash: &[u8; 32]) -> String {
    format!("http://{addr}{}", object_path(hash))
}

/// `Repr-Digest` (RFC 9530) of a body with blake3 `hash`: `blake3=:<base64>:`.
pub fn repr_digest(hash: &[u8; 32]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(hash);
    format!("blake3=:{b64}:")
}

/// The `302` that sends a member to `holders` (best first) for the stored response `head`:
/// `Location` on the first holder's transfer API for the body's blake3, a
/// `Link: <…>; rel=duplicate` per holder (at most [`MAX_HOLDERS`]), `Repr-Digest`,
/// `Cache-Control: no-store` (it is for this requester, now), and the head as the body. `None`
/// without a holder or a complete head.
pub fn offer(head: &EntryHead, holders: &[SocketAddr]) -> Option<(HeaderMap, Bytes)> {
    let (hash, _) = (head.hash?, head.len?);
    let first = holders.first()?;
    let body = postcard::to_stdvec(head).ok()?;
    let mut h = HeaderMap::new();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&holder_url(*first, &hash)).ok()?,
    );
    for addr in holders.iter().take(MAX_HOLDERS) {
        let link = format!("<{}>; rel=duplicate", holder_url(*addr, &hash));
        h.append(header::LINK, HeaderValue::from_str(&link).ok()?);
    }
    h.insert(
        "repr-digest",
        HeaderValue::from_str(&repr_digest(&hash)).ok()?,
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(OFFER_TYPE));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Some((h, Bytes::from(body)))
}

/// Is this answer a content server's redirect (as opposed to an origin's own `302`)?
pub fn is_offer(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::FOUND
        && headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes() == OFFER_TYPE.as_bytes())
}

/// A redirect as a member reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The stored head the content server would have sent.
    pub head: EntryHead,
    /// The body's blake3 and length.
    pub hash: [u8; 32],
    pub len: u64,
    /// The holders' transfer addresses, `Location`'s first, then the other `Link`s in order,
    /// each once, at most [`MAX_HOLDERS`].
    pub holders: Vec<SocketAddr>,
}

/// Reads a redirect's fields and body (see [`offer`]); the reason when it is not one: a head
/// without a blake3 or length, a `Repr-Digest` that does not name that blake3, or a
/// `Location` that is not the transfer URL of that body.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Offer, &'static str> {
    let head: EntryHead = postcard::from_bytes(body).map_err(|_| "undecodable head")?;
    let (Some(hash), Some(len)) = (head.hash, head.len) else {
        return Err("a head without a blake3 or length");
    };
    let digest = repr_digest(&hash);
    let digested = headers
        .get_all("repr-digest")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|member| member.trim() == digest);
    if !digested {
        return Err("Repr-Digest does not name the head's blake3");
    }
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|url| holder_of(url, &hash))
        .ok_or("Location is not a holder's URL for the body")?;
    let mut holders = vec![location];
    let links = headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for link in links {
        let mut params = link.split(';').map(str::trim);
        let target = params
            .next()
            .and_then(|t| t.strip_prefix('<')?.strip_suffix('>'));
        let duplicate = params.any(|p| p.eq_ignore_ascii_case("rel=duplicate"));
        if let (Some(addr), true) = (target.and_then(|t| holder_of(t, &hash)), duplicate) {
            if !holders.contains(&addr) && holders.len() < MAX_HOLDERS {
                holders.push(addr);
            }
        }
    }
    Ok(Offer {
        head,
        hash,
        len,
        holders,
    })
}

/// The transfer address in `url` when it is `http://{addr}/peer/v1/objects/{hash}`.
fn holder_of(url: &str, hash: &[u8; 32]) -> Option<SocketAddr> {
    let rest = url.strip_prefix("http://")?;
    let slash = rest.find('/')?;
    let (authority, path) = rest.split_at(slash);
    (path == object_path(hash)).then_some(())?;
    authority.parse().ok()
}

#[cfg(test)]
mod tests;

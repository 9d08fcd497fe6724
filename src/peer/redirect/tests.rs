//! The content-server redirect's protocol: which requests are redirected, proofs that count
//! once for one request and receiver, and the 302's form read back (or refused).

use super::*;
use crate::cache::head::{HeadRecord, TimingRecord};
use crate::peer::auth::ClusterKey;

const NOW: u64 = 1_700_000_000_000;
const MEMBER: NodeId = NodeId([0x5a; 16]);
const SERVER: NodeId = NodeId([0x3c; 16]);

fn fields(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

/// (request fields) → may a GET with them be redirected?
#[test]
fn which_requests_may_be_redirected_by_their_fields() {
    type Case<'a> = (&'a [(&'a str, &'a str)], Result<(), Serve>);
    let cases: &[Case<'_>] = &[
        (&[], Ok(())),
        (
            &[("accept", "*/*"), ("user-agent", "apt"), ("via", "1.1 x")],
            Ok(()),
        ),
        (&[("range", "bytes=0-9")], Err(Serve::Range)),
        (&[("if-range", "\"v\"")], Err(Serve::Range)),
        (&[("if-none-match", "\"v\"")], Err(Serve::Conditional)),
        (
            &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
            Err(Serve::Conditional),
        ),
        (&[("if-match", "*")], Err(Serve::Conditional)),
        (
            &[("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
            Err(Serve::Conditional),
        ),
        (&[("authorization", "Basic eDp5")], Err(Serve::Credentials)),
        (&[("cookie", "a=b")], Err(Serve::Credentials)),
    ];
    for (pairs, want) in cases {
        assert_eq!(
            redirectable(&Method::GET, &fields(pairs)),
            *want,
            "{pairs:?}"
        );
    }
    for method in [Method::HEAD, Method::POST, Method::OPTIONS] {
        assert_eq!(redirectable(&method, &HeaderMap::new()), Err(Serve::Method));
    }
}

/// (member, marker, shareable, rewritten, a range) → the content server's decision, the
/// reasons in the order they are checked.
#[test]
fn which_member_requests_the_content_server_redirects() {
    let (get, plain, ranged) = (
        Method::GET,
        HeaderMap::new(),
        fields(&[("range", "bytes=0-")]),
    );
    type Case = (bool, bool, bool, bool, bool, Result<(), Serve>);
    let cases: &[Case] = &[
        (true, false, true, false, false, Ok(())),
        (false, false, true, false, false, Err(Serve::NotMember)),
        (false, true, false, true, true, Err(Serve::NotMember)),
        (true, true, true, false, false, Err(Serve::Fallback)),
        (true, true, false, true, true, Err(Serve::Fallback)),
        (true, false, true, false, true, Err(Serve::Range)),
        (true, false, false, true, true, Err(Serve::Range)),
        (true, false, false, false, false, Err(Serve::NotShareable)),
        (true, false, false, true, false, Err(Serve::NotShareable)),
        (true, false, true, true, false, Err(Serve::Rewritten)),
    ];
    for &(member, fallback, shareable, rewritten, range, want) in cases {
        let facts = Facts {
            member,
            fallback,
            method: &get,
            headers: if range { &ranged } else { &plain },
            shareable,
            rewritten,
        };
        assert_eq!(eligible(&facts), want, "{facts:?}");
    }
}

fn signed(h: &mut HeaderMap, signer: &RequestSigner, to: NodeId, at: u64, nonce: u8) {
    let proof = prove(
        signer,
        MEMBER,
        to,
        &Method::GET,
        "/d/pool/a.deb",
        h,
        at,
        [nonce; 16],
    );
    h.append(AUTH_HEADER, HeaderValue::from_str(&proof).expect("value"));
}

#[test]
fn a_member_proof_counts_once_for_its_request_and_receiver() {
    let signer = RequestSigner::new(&ClusterKey::from_bytes([1; 32]));
    let replay = ReplayCache::new(64, NOW - 1000);
    let check_at = |h: &HeaderMap, target: &str, now: u64| {
        check(&signer, &replay, SERVER, &Method::GET, target, h, now)
    };
    let none = HeaderMap::new();
    assert_eq!(check_at(&none, "/d/pool/a.deb", NOW), Proof::Absent);

    let mut h = HeaderMap::new();
    signed(&mut h, &signer, SERVER, NOW, 1);
    assert_eq!(check_at(&h, "/d/pool/a.deb", NOW), Proof::Member(MEMBER));
    // The same proof again, from wherever it comes: replayed.
    assert_eq!(
        check_at(&h, "/d/pool/a.deb", NOW),
        Proof::Refused(AuthError::Replayed)
    );

    // Another target, or the marker added or taken away, breaks the MAC.
    let mut h = HeaderMap::new();
    signed(&mut h, &signer, SERVER, NOW, 2);
    assert_eq!(
        check_at(&h, "/d/pool/b.deb", NOW),
        Proof::Refused(AuthError::BadMac)
    );
    h.insert(NO_REDIRECT, marker(None));
    assert_eq!(
        check_at(&h, "/d/pool/a.deb", NOW),
        Proof::Refused(AuthError::BadMac)
    );
    let mut marked = fields(&[("x-peercache-no-redirect", "-")]);
    signed(&mut marked, &signer, SERVER, NOW, 3);
    marked.remove(NO_REDIRECT);
    assert_eq!(
        check_at(&marked, "/d/pool/a.deb", NOW),
        Proof::Refused(AuthError::BadMac)
    );

    // Outside its window.
    let mut old = HeaderMap::new();
    signed(&mut old, &signer, SERVER, NOW - 301_000, 4);
    assert!(matches!(
        check_at(&old, "/d/pool/a.deb", NOW),
        Proof::Refused(AuthError::Skew { .. })
    ));

    // One proof per member at the address: the one made for this server counts, the others
    // fail their MAC and are not remembered.
    let mut several = HeaderMap::new();
    signed(&mut several, &signer, NodeId([0x77; 16]), NOW, 5);
    signed(&mut several, &signer, SERVER, NOW, 6);
    let before = replay.len();
    assert_eq!(
        check_at(&several, "/d/pool/a.deb", NOW),
        Proof::Member(MEMBER)
    );
    assert_eq!(replay.len(), before + 1);

    // Another cluster key.
    let stranger = RequestSigner::new(&ClusterKey::from_bytes([2; 32]));
    let mut foreign = HeaderMap::new();
    signed(&mut foreign, &stranger, SERVER, NOW, 7);
    assert_eq!(
        check_at(&foreign, "/d/pool/a.deb", NOW),
        Proof::Refused(AuthError::BadMac)
    );
}

#[test]
fn the_marker_names_the_failed_holder() {
    assert_eq!(failed_holder(&marker(Some(MEMBER))), Some(MEMBER));
    assert_eq!(failed_holder(&marker(None)), None);
    assert_eq!(failed_holder(&HeaderValue::from_static("garbage")), None);
}

fn entry_head(hash: Option<[u8; 32]>, len: Option<u64>) -> EntryHead {
    EntryHead {
        head: HeadRecord {
            variant: String::new(),
            status: 200,
            headers: vec![("etag".into(), b"\"v1\"".to_vec())],
            timing: TimingRecord {
                request_time_ms: NOW,
                response_time_ms: NOW,
                corrected_initial_age_ms: 0,
            },
        },
        hash,
        len,
    }
}

#[test]
fn an_offer_names_its_holders_and_the_blake3_and_reads_back() {
    let hash = [0xab; 32];
    let head = entry_head(Some(hash), Some(1234));
    let a: SocketAddr = "127.0.0.3:4000".parse().expect("addr");
    let b: SocketAddr = "[::1]:4001".parse().expect("addr");
    let (h, body) = offer(&head, &[a, b]).expect("an offer");
    let hex = "ab".repeat(32);
    assert_eq!(
        h[header::LOCATION],
        format!("http://127.0.0.3:4000/peer/v1/objects/{hex}")
    );
    let links: Vec<&str> = h
        .get_all(header::LINK)
        .iter()
        .map(|v| v.to_str().expect("text"))
        .collect();
    assert_eq!(
        links,
        [
            format!("<http://127.0.0.3:4000/peer/v1/objects/{hex}>; rel=duplicate"),
            format!("<http://[::1]:4001/peer/v1/objects/{hex}>; rel=duplicate"),
        ]
    );
    assert_eq!(
        h["repr-digest"],
        "blake3=:q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=:"
    );
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    assert_eq!(h[header::CONTENT_LENGTH], body.len().to_string().as_str());
    assert!(is_offer(StatusCode::FOUND, &h));
    assert!(!is_offer(StatusCode::OK, &h));
    assert!(!is_offer(
        StatusCode::FOUND,
        &fields(&[("content-type", "text/html")])
    ));
    let read = parse(&h, &body).expect("parses");
    assert_eq!(
        read,
        Offer {
            head: head.clone(),
            hash,
            len: 1234,
            holders: vec![a, b]
        }
    );

    // Nothing to offer without a holder or a complete head.
    assert!(offer(&head, &[]).is_none());
    assert!(offer(&entry_head(None, Some(1)), &[a]).is_none());
    assert!(offer(&entry_head(Some(hash), None), &[a]).is_none());
    // At most MAX_HOLDERS links.
    let many: Vec<SocketAddr> = (0..20)
        .map(|p| SocketAddr::from(([127, 0, 0, 3], 5000 + p)))
        .collect();
    let (h, body) = offer(&head, &many).expect("an offer");
    assert_eq!(h.get_all(header::LINK).iter().count(), MAX_HOLDERS);
    assert_eq!(
        parse(&h, &body).expect("parses").holders,
        many[..MAX_HOLDERS]
    );
}

#[test]
fn a_bad_offer_is_refused_with_a_reason() {
    let hash = [0xab; 32];
    let a: SocketAddr = "127.0.0.3:4000".parse().expect("addr");
    let (good, body) = offer(&entry_head(Some(hash), Some(9)), &[a]).expect("offer");
    let edited = |name: &str, value: &str| {
        let mut h = good.clone();
        h.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
        h
    };
    let other = "cd".repeat(32);
    let cases: Vec<(HeaderMap, Vec<u8>)> = vec![
        (good.clone(), b"not postcard".to_vec()),
        (
            good.clone(),
            postcard::to_stdvec(&entry_head(None, Some(9))).expect("encode"),
        ),
        (edited("repr-digest", "sha-256=:AAAA:"), body.to_vec()),
        (
            edited(
                "location",
                &format!("http://127.0.0.3:4000/peer/v1/objects/{other}"),
            ),
            body.to_vec(),
        ),
        (
            edited("location", "http://127.0.0.3:4000/elsewhere"),
            body.to_vec(),
        ),
        (
            edited("location", "https://127.0.0.3:4000/x"),
            body.to_vec(),
        ),
        (
            edited("location", "http://name.example/peer/v1/objects/x"),
            body.to_vec(),
        ),
    ];
    for (h, b) in cases {
        assert!(parse(&h, &b).is_err(), "{h:?}");
    }
    // Links to other bodies or of other relations are left out; duplicates listed once.
    let mut h = good.clone();
    h.append(
        header::LINK,
        HeaderValue::from_str(&format!(
            "<http://127.0.0.4:1/peer/v1/objects/{other}>; rel=duplicate"
        ))
        .expect("v"),
    );
    h.append(
        header::LINK,
        HeaderValue::from_str(&format!(
            "<{}>; rel=describedby",
            holder_url("127.0.0.5:1".parse().expect("a"), &hash)
        ))
        .expect("v"),
    );
    h.append(
        header::LINK,
        HeaderValue::from_str(&format!("<{}>; rel=duplicate", holder_url(a, &hash))).expect("v"),
    );
    assert_eq!(parse(&h, &body).expect("parses").holders, [a]);
}

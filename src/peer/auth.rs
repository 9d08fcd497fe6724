//! The cluster key, the gossip AEAD envelope, proofs of membership on peer requests and the
//! replay cache that makes each proof single-use; pure except the key-file functions `load` and
//! `write_new`.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use http::header::{self, HeaderMap, HeaderName};
use rand::{RngCore, TryRngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

use crate::peer::wire::NodeId;

/// blake3 `derive_key` context of the gossip (UDP) encryption key.
pub const GOSSIP_CONTEXT: &str = "peercache gossip v1";
/// blake3 `derive_key` context of the peer-transfer request MAC key.
pub const TRANSFER_CONTEXT: &str = "peercache transfer v1";
/// Name of the HTTP header carrying a signed peer request.
pub const AUTH_HEADER: &str = "x-peercache-auth";
/// [`AUTH_HEADER`] as a header name: lookups with it skip parsing the name.
pub const AUTH_NAME: http::HeaderName = http::HeaderName::from_static(AUTH_HEADER);
/// Largest accepted distance between a request's timestamp and the verifier's clock, in ms.
pub const MAX_SKEW_MS: u64 = 300_000;

const FINGERPRINT_CONTEXT: &str = "peercache key fingerprint v1";
const TAG_LEN: usize = 16;
const MAC_LEN: usize = 16;

/// The 32-byte cluster key shared by all members (file: exactly 32 raw bytes, or 64 hex chars +
/// optional newline). Its `Debug` shows a short fingerprint, never the key.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// A new key from the OS random generator.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        if rand::rngs::OsRng.try_fill_bytes(&mut b).is_err() {
            // The OS generator failed (practically never on Linux); the thread RNG is a CSPRNG
            // seeded from the OS, which is the next best source.
            rand::rng().fill_bytes(&mut b);
        }
        ClusterKey(b)
    }

    /// Reads a key file: exactly 32 raw bytes, or 64 hex digits optionally followed by a newline.
    /// The error names the file and says what was wrong.
    /// A missing or unreadable file says how to fix it (`peercache keygen FILE`, or whose file
    /// it must be).
    pub fn load(path: &Path) -> Result<Self, String> {
        let p = path.display();
        let data = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "cluster key file {p} does not exist: create it with `peercache keygen {p}` on \
                 one member and copy that file to every other member"
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "cluster key file {p} cannot be read by this user ({e}): make it readable by \
                 the user peercache runs as (and by nobody else: chmod 600)"
            ),
            _ => format!("cluster key file {p}: {e}"),
        })?;
        Self::parse(&data).map_err(|why| format!("cluster key file {p}: {why}"))
    }

    /// Warnings about a key file that loads: readable by every user of the machine (anyone who
    /// reads it can join the group and read its gossip). Unix only; I/O.
    pub fn file_warnings(path: &Path) -> Vec<String> {
        let mut warnings = Vec::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o004 != 0 {
                    let p = path.display();
                    warnings.push(format!(
                        "cluster key file {p} is readable by every user of this machine (mode \
                         {mode:03o}): anyone who reads it can join the group; run chmod 600 {p}"
                    ));
                }
            }
        }
        warnings
    }

    /// `peercache keygen FILE`: generates a key and writes it as 64 hex digits and a newline, with
    /// mode 0600. Refuses to overwrite an existing file.
    pub fn write_new(path: &Path) -> Result<Self, String> {
        let key = Self::generate();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!(
                    "cluster key file {}: already exists; refusing to overwrite it",
                    path.display()
                )
            } else {
                format!("cluster key file {}: {e}", path.display())
            }
        })?;
        let mut text = hex(&key.0);
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cluster key file {}: {e}", path.display()))?;
        Ok(key)
    }

    /// A key from raw bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        ClusterKey(b)
    }

    /// Key for one purpose, derived with `blake3::derive_key(context, key)`: [`GOSSIP_CONTEXT`],
    /// [`TRANSFER_CONTEXT`].
    pub fn derive(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.0)
    }

    /// 8 hex digits identifying the key (a derived hash, not key material), for logs and status
    /// pages: two nodes with different fingerprints cannot talk to each other.
    pub fn fingerprint(&self) -> String {
        let d = self.derive(FINGERPRINT_CONTEXT);
        hex(&d[..4])
    }

    /// Parses key-file contents (see [`ClusterKey::load`]).
    fn parse(data: &[u8]) -> Result<Self, String> {
        if let Ok(raw) = <[u8; 32]>::try_from(data) {
            return Ok(ClusterKey(raw));
        }
        let text = data
            .strip_suffix(b"\n")
            .map(|t| t.strip_suffix(b"\r").unwrap_or(t))
            .unwrap_or(data);
        if text.len() != 64 {
            return Err(format!(
                "expected 32 raw bytes or 64 hex digits (plus an optional newline), found {} bytes \
                 (create one with `peercache keygen FILE`)",
                data.len()
            ));
        }
        let mut key = [0u8; 32];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            match (hex_val(pair[0]), hex_val(pair[1])) {
                (Some(hi), Some(lo)) => key[i] = (hi << 4) | lo,
                _ => return Err(format!("invalid hex digit near offset {}", i * 2)),
            }
        }
        Ok(ClusterKey(key))
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(fingerprint {})", self.fingerprint())
    }
}

/// AEAD envelope for gossip packets: ChaCha20-Poly1305 with the derived gossip key and a random
/// 96-bit nonce per packet; wire = nonce || ciphertext || tag. `open` fails (None) on any
/// tampering, wrong key, or short packet — never panics. No replay protection: foca's updates are
/// idempotent and incarnation-ordered, so a replayed packet only repeats old news.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// Bytes added to every packet by [`Sealer::seal`].
    pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

    /// A sealer keyed with `key.derive(GOSSIP_CONTEXT)`.
    #[allow(clippy::expect_used)]
    pub fn new(key: &ClusterKey) -> Self {
        let derived = key.derive(GOSSIP_CONTEXT);
        // ring only refuses keys of the wrong length; ours is a constant 32 bytes.
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, &derived).expect("32-byte ChaCha20-Poly1305 key");
        Sealer {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Encrypts and authenticates `plain`: nonce || ciphertext || tag.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(Self::OVERHEAD + plain.len());
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        match self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut body,
        ) {
            Ok(()) => out.extend_from_slice(&body),
            // ring refuses only inputs of hundreds of GiB; an unauthenticated stub is dropped
            // by every receiver.
            Err(_) => out.clear(),
        }
        out
    }

    /// Decrypts a packet made by [`Sealer::seal`] with the same cluster key; None otherwise.
    pub fn open(&self, packet: &[u8]) -> Option<Vec<u8>> {
        if packet.len() < Self::OVERHEAD {
            return None;
        }
        let (nonce, sealed) = packet.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .ok()?
            .len();
        buf.truncate(plain_len);
        Some(buf)
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// Why a peer request's `x-peercache-auth` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The header is not `<node-hex>.<unix-ms>.<nonce-hex>.<mac-hex>`.
    #[error("malformed {AUTH_HEADER} header: {0}")]
    Malformed(&'static str),
    /// The timestamp is more than [`MAX_SKEW_MS`] away from our clock.
    #[error(
        "{AUTH_HEADER} timestamp is {skew_ms} ms away from our clock (limit {MAX_SKEW_MS} ms)"
    )]
    Skew {
        /// Absolute distance between the header's time and ours, in ms.
        skew_ms: u64,
    },
    /// The MAC does not match: another cluster key, another receiving node, or a changed
    /// method, target, covered field or header field.
    #[error("{AUTH_HEADER} signature does not match (different cluster key?)")]
    BadMac,
    /// This exact proof was accepted before: a replayed request.
    #[error("{AUTH_HEADER} was already used (a replayed request)")]
    Replayed,
    /// The proof is stamped no later than the millisecond the replay cache started (this process's
    /// start): it may be a replay of a request the previous process accepted. Try again.
    #[error("{AUTH_HEADER} is stamped before this node started; try again")]
    TooEarly,
    /// The replay cache holds as many unexpired proofs as it may: refused rather than forgetting
    /// one (which would let its request be replayed). Try again later or elsewhere.
    #[error("too many recent peer requests to remember; try again")]
    Full,
}

impl AuthError {
    /// Whether the caller may simply try again later (503) rather than being refused (401).
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::TooEarly | AuthError::Full)
    }
}

/// Header fields the transfer API reads: a transfer proof covers them, present or absent.
pub const TRANSFER_FIELDS: [HeaderName; 2] = [header::RANGE, header::IF_RANGE];

/// What a proof of membership covers, besides who sends it, when, and its nonce.
#[derive(Debug, Clone, Copy)]
pub struct Covered<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request target exactly as sent: path and query on the transfer API, the absolute
    /// URI on a proxy port.
    pub target: &'a str,
    /// The node the request is for: a proof made for one member is worthless at another.
    pub to: NodeId,
    /// The request's header fields; only those named in `fields` are covered.
    pub headers: &'a HeaderMap,
    /// The fields that change the answer, covered whether present or absent (adding one to a
    /// captured request breaks its MAC). Signer and verifier use the same list, a constant of
    /// the protocol (e.g. [`TRANSFER_FIELDS`]).
    pub fields: &'a [HeaderName],
}

/// Proofs of membership on peer requests (the transfer API; reusable on any port where a member
/// must prove itself). Header `x-peercache-auth: <from-hex>.<unix-ms>.<nonce-hex>.<mac-hex>`,
/// mac = the first 16 bytes of `blake3::keyed_hash(transfer key, m)`, where `m` is every field
/// below, each preceded by its length (u64, little endian): `"peercache request v2"`, method,
/// target, from-hex, the receiving node's 16 bytes, unix-ms, nonce-hex, then per covered field
/// its lowercase name, its number of values (u64) and each value.
///
/// A proof is accepted once ([`ReplayCache`]), within [`MAX_SKEW_MS`] of the verifier's clock,
/// at the node it names, for exactly the request it was made for. It is not bound to the TCP
/// connection or the source address: members behind NAT (groups spanning sites) must work.
pub struct RequestSigner {
    key: [u8; 32],
}

impl RequestSigner {
    /// A signer keyed with `key.derive(TRANSFER_CONTEXT)`.
    pub fn new(key: &ClusterKey) -> Self {
        RequestSigner {
            key: key.derive(TRANSFER_CONTEXT),
        }
    }

    /// The header value for request `c` from node `from` at `now_ms` (unix); `nonce` must be fresh
    /// random bytes for every request (a repeated one is refused as a replay).
    pub fn sign(&self, c: &Covered<'_>, from: NodeId, now_ms: u64, nonce: [u8; 16]) -> String {
        let from_hex = hex(&from.0);
        let ts = now_ms.to_string();
        let nonce_hex = hex(&nonce);
        let mac = self.mac(c, &from_hex, &ts, &nonce_hex);
        format!("{from_hex}.{ts}.{nonce_hex}.{}", hex(&mac))
    }

    /// Ok(sender) when the MAC matches `c` (constant-time compare), the time is within
    /// [`MAX_SKEW_MS`] of `now_ms` (unix), and `replay` has not seen the proof (it then remembers
    /// it). Only a proof with a valid MAC is remembered, so non-members cannot fill the cache.
    pub fn verify(
        &self,
        c: &Covered<'_>,
        header: &str,
        now_ms: u64,
        replay: &ReplayCache,
    ) -> Result<NodeId, AuthError> {
        let mut parts = header.trim().split('.');
        let (Some(from_hex), Some(ts), Some(nonce_hex), Some(mac_hex), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AuthError::Malformed("expected four dot-separated fields"));
        };
        let from = NodeId(
            unhex::<16>(from_hex).ok_or(AuthError::Malformed("node id is not 32 hex digits"))?,
        );
        let nonce =
            unhex::<16>(nonce_hex).ok_or(AuthError::Malformed("nonce is not 32 hex digits"))?;
        let given =
            unhex::<MAC_LEN>(mac_hex).ok_or(AuthError::Malformed("mac is not 32 hex digits"))?;
        if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthError::Malformed(
                "timestamp is not decimal unix milliseconds",
            ));
        }
        let when: u64 = ts
            .parse()
            .map_err(|_| AuthError::Malformed("timestamp out of range"))?;
        // The MAC covers the exact text received, so a re-encoded field cannot match.
        let expected = self.mac(c, from_hex, ts, nonce_hex);
        if !constant_time_eq(&expected, &given) {
            return Err(AuthError::BadMac);
        }
        let skew_ms = now_ms.abs_diff(when);
        if skew_ms > MAX_SKEW_MS {
            return Err(AuthError::Skew { skew_ms });
        }
        replay.admit(nonce, when, now_ms)?;
        Ok(from)
    }

    fn mac(&self, c: &Covered<'_>, from_hex: &str, ts: &str, nonce_hex: &str) -> [u8; MAC_LEN] {
        fn put(h: &mut blake3::Hasher, bytes: &[u8]) {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for part in [
            &b"peercache request v2"[..],
            c.method.as_bytes(),
            c.target.as_bytes(),
            from_hex.as_bytes(),
            &c.to.0,
            ts.as_bytes(),
            nonce_hex.as_bytes(),
        ] {
            put(&mut h, part);
        }
        for name in c.fields {
            put(&mut h, name.as_str().as_bytes());
            let values = c.headers.get_all(name);
            h.update(&(values.iter().count() as u64).to_le_bytes());
            for v in values {
                put(&mut h, v.as_bytes());
            }
        }
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&h.finalize().as_bytes()[..MAC_LEN]);
        mac
    }
}

impl fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestSigner(..)")
    }
}

/// Default bound of a [`ReplayCache`]: at about 45 bytes per nonce (a 16-byte key in a hash set
/// and a 24-byte expiry entry, estimated), some 6 MiB when full. A proof is remembered until its
/// stamp leaves the window, normally [`MAX_SKEW_MS`] after it arrives, so this admits a
/// sustained ~430 peer requests per second; past it, requests are refused with 503.
pub const REPLAY_CAPACITY: usize = 131_072;

/// The nonces of accepted proofs, each kept until its timestamp leaves the ±[`MAX_SKEW_MS`]
/// window (after that the timestamp alone refuses it), so that every proof is accepted once.
///
/// Invariant: holds at most `capacity` nonces; when full of unexpired ones, new proofs are
/// refused ([`AuthError::Full`]) rather than an old nonce forgotten, which would let its request
/// be replayed. Pure: the clock is passed in.
pub struct ReplayCache {
    capacity: usize,
    since: u64,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    nonces: HashSet<[u8; 16]>,
    by_expiry: BinaryHeap<Reverse<(u64, [u8; 16])>>,
}

impl ReplayCache {
    /// An empty cache for at most `capacity` nonces, started at `now_ms` (unix): proofs stamped
    /// at or before that millisecond are refused ([`AuthError::TooEarly`]), since they may be replays of
    /// requests that the previous process accepted and this cache never saw.
    pub fn new(capacity: usize, now_ms: u64) -> Self {
        ReplayCache {
            capacity,
            since: now_ms,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Remembers `nonce` of a proof stamped `when`; refuses it if already seen, stamped before
    /// the cache started, or if the cache is full.
    pub fn admit(&self, nonce: [u8; 16], when: u64, now_ms: u64) -> Result<(), AuthError> {
        if when <= self.since {
            return Err(AuthError::TooEarly);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let seen = &mut *seen;
        while let Some(Reverse((expiry, old))) = seen.by_expiry.peek().copied() {
            if expiry >= now_ms {
                break;
            }
            seen.by_expiry.pop();
            seen.nonces.remove(&old);
        }
        if seen.nonces.contains(&nonce) {
            return Err(AuthError::Replayed);
        }
        if seen.nonces.len() >= self.capacity {
            return Err(AuthError::Full);
        }
        seen.nonces.insert(nonce);
        seen.by_expiry
            .push(Reverse((when.saturating_add(MAX_SKEW_MS), nonce)));
        Ok(())
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .nonces
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

/// Compares without an early exit, so timing does not reveal the matching prefix length.
fn constant_time_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Exactly `2 * N` lowercase hex digits (the form `sign` emits) → bytes.
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N || s.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    /// The window, in ms.
    const W: u64 = MAX_SKEW_MS;

    fn key(b: u8) -> ClusterKey {
        ClusterKey::from_bytes([b; 32])
    }

    #[test]
    fn seal_open_round_trip() {
        let s = Sealer::new(&key(1));
        for plain in [&b""[..], b"x", &[7u8; 1400][..]] {
            let packet = s.seal(plain);
            assert_eq!(packet.len(), plain.len() + Sealer::OVERHEAD);
            assert_eq!(s.open(&packet).as_deref(), Some(plain));
        }
        // A fresh nonce per packet: the same plaintext never yields the same bytes.
        assert_ne!(s.seal(b"same"), s.seal(b"same"));
    }

    #[test]
    fn open_rejects_tampering_wrong_key_and_short_packets() {
        let s = Sealer::new(&key(1));
        let packet = s.seal(b"hello gossip");
        for i in 0..packet.len() {
            let mut bad = packet.clone();
            bad[i] ^= 0x01;
            assert_eq!(s.open(&bad), None, "flipped byte {i}");
        }
        assert_eq!(s.open(&packet[..packet.len() - 1]), None);
        let mut longer = packet.clone();
        longer.push(0);
        assert_eq!(s.open(&longer), None);
        for n in 0..Sealer::OVERHEAD {
            assert_eq!(s.open(&packet[..n]), None);
        }
        assert_eq!(Sealer::new(&key(2)).open(&packet), None);
    }

    #[test]
    fn derived_keys_differ_by_purpose() {
        let k = key(3);
        assert_ne!(k.derive(GOSSIP_CONTEXT), k.derive(TRANSFER_CONTEXT));
        assert_ne!(k.derive(GOSSIP_CONTEXT), [3u8; 32]);
        assert_eq!(
            k.derive(GOSSIP_CONTEXT),
            blake3::derive_key(GOSSIP_CONTEXT, &[3u8; 32])
        );
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let k = ClusterKey::from_bytes([0xab; 32]);
        let shown = format!("{k:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains(&k.fingerprint()));
    }

    const FROM: NodeId = NodeId([0x5a; 16]);
    const TO: NodeId = NodeId([0x3c; 16]);
    const NONCE: [u8; 16] = [0x11; 16];

    fn covered<'a>(method: &'a str, target: &'a str, headers: &'a HeaderMap) -> Covered<'a> {
        Covered {
            method,
            target,
            to: TO,
            headers,
            fields: &TRANSFER_FIELDS,
        }
    }

    fn fresh_cache() -> ReplayCache {
        ReplayCache::new(1024, NOW - 1_000)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn a_proof_verifies_once_for_the_request_it_was_made_for() {
        let s = RequestSigner::new(&key(1));
        let none = HeaderMap::new();
        let c = covered("GET", "/peer/v1/index?since=7", &none);
        let h = s.sign(&c, FROM, NOW, NONCE);
        assert!(
            h.starts_with(&format!("{FROM}.{NOW}.{}.", hex(&NONCE))),
            "{h}"
        );
        for now in [NOW, NOW + W, NOW - W] {
            let cache = fresh_cache();
            assert_eq!(s.verify(&c, &h, now, &cache), Ok(FROM), "at {now}");
            assert_eq!(cache.len(), 1);
            assert_eq!(s.verify(&c, &h, now, &cache), Err(AuthError::Replayed));
        }
        // Another nonce is another request.
        let cache = fresh_cache();
        assert_eq!(s.verify(&c, &h, NOW, &cache), Ok(FROM));
        let other = s.sign(&c, FROM, NOW, [0x12; 16]);
        assert_eq!(s.verify(&c, &other, NOW, &cache), Ok(FROM));
    }

    #[test]
    fn a_proof_covers_the_request_the_receiver_and_the_fields_that_change_the_answer() {
        let s = RequestSigner::new(&key(1));
        let plain = HeaderMap::new();
        let ranged = headers(&[("range", "bytes=0-9")]);
        let h = s.sign(
            &covered("GET", "/peer/v1/objects/aa", &plain),
            FROM,
            NOW,
            NONCE,
        );
        let hr = s.sign(
            &covered("GET", "/peer/v1/objects/aa", &ranged),
            FROM,
            NOW,
            NONCE,
        );
        let bad = |c: &Covered<'_>, header: &str| s.verify(c, header, NOW, &fresh_cache());
        let other_fields = headers(&[("accept", "x"), ("host", "elsewhere:1")]);
        // Fields outside the list may change freely (a relay may rewrite Host).
        assert_eq!(
            bad(&covered("GET", "/peer/v1/objects/aa", &other_fields), &h),
            Ok(FROM)
        );
        assert_eq!(
            bad(&covered("GET", "/peer/v1/objects/aa", &ranged), &hr),
            Ok(FROM)
        );
        let cases: Vec<(&str, HeaderMap, &str, &str, NodeId, &String)> = vec![
            (
                "another target",
                HeaderMap::new(),
                "GET",
                "/peer/v1/objects/bb",
                TO,
                &h,
            ),
            (
                "another method",
                HeaderMap::new(),
                "HEAD",
                "/peer/v1/objects/aa",
                TO,
                &h,
            ),
            (
                "another receiver",
                HeaderMap::new(),
                "GET",
                "/peer/v1/objects/aa",
                FROM,
                &h,
            ),
            (
                "a range added",
                ranged.clone(),
                "GET",
                "/peer/v1/objects/aa",
                TO,
                &h,
            ),
            (
                "the range removed",
                HeaderMap::new(),
                "GET",
                "/peer/v1/objects/aa",
                TO,
                &hr,
            ),
            (
                "the range changed",
                headers(&[("range", "bytes=0-99")]),
                "GET",
                "/peer/v1/objects/aa",
                TO,
                &hr,
            ),
            (
                "a second range",
                headers(&[("range", "bytes=0-9"), ("range", "bytes=5-")]),
                "GET",
                "/peer/v1/objects/aa",
                TO,
                &hr,
            ),
            (
                "an if-range added",
                headers(&[("if-range", "\"v1\"")]),
                "GET",
                "/peer/v1/objects/aa",
                TO,
                &h,
            ),
        ];
        for (what, fields, method, target, to, header) in cases {
            let c = Covered {
                method,
                target,
                to,
                headers: &fields,
                fields: &TRANSFER_FIELDS,
            };
            assert_eq!(bad(&c, header), Err(AuthError::BadMac), "{what}");
        }
        // Claiming another node, time or nonce breaks the MAC.
        let c = covered("GET", "/peer/v1/objects/aa", &plain);
        let fields: Vec<&str> = h.split('.').collect();
        let tamper = |i: usize, v: String| {
            let mut f: Vec<String> = fields.iter().map(|s| (*s).to_owned()).collect();
            f[i] = v;
            f.join(".")
        };
        for forged in [
            tamper(0, hex(&[0x5b; 16])),
            tamper(1, (NOW + 1).to_string()),
            tamper(1, format!("0{NOW}")),
            tamper(2, hex(&[0x22; 16])),
        ] {
            assert_eq!(bad(&c, &forged), Err(AuthError::BadMac), "{forged}");
        }
    }

    #[test]
    fn a_proof_from_another_key_or_out_of_its_window_is_refused() {
        let none = HeaderMap::new();
        let c = covered("GET", "/x", &none);
        let h = RequestSigner::new(&key(1)).sign(&c, FROM, NOW, NONCE);
        let s2 = RequestSigner::new(&key(2));
        assert_eq!(
            s2.verify(&c, &h, NOW, &fresh_cache()),
            Err(AuthError::BadMac)
        );
        let s = RequestSigner::new(&key(1));
        assert_eq!(
            s.verify(&c, &h, NOW + W + 1, &fresh_cache()),
            Err(AuthError::Skew { skew_ms: W + 1 })
        );
        assert_eq!(
            s.verify(&c, &h, NOW - 3 * W, &fresh_cache()),
            Err(AuthError::Skew { skew_ms: 3 * W })
        );
        // Nothing is remembered for a refused proof.
        let cache = fresh_cache();
        let _ = s2.verify(&c, &h, NOW, &cache);
        let _ = s.verify(&c, &h, NOW + W + 1, &cache);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_replay_cache_refuses_when_full_forgets_only_expired_proofs_and_what_predates_it() {
        let cache = ReplayCache::new(2, NOW);
        let at = |n: u8, when: u64, now: u64| cache.admit([n; 16], when, now);
        assert_eq!(
            at(1, NOW, NOW),
            Err(AuthError::TooEarly),
            "the start itself"
        );
        assert_eq!(at(1, NOW - 5, NOW + 1), Err(AuthError::TooEarly));
        assert_eq!(at(1, NOW + 1, NOW + 1), Ok(()));
        assert_eq!(at(2, NOW + 50, NOW + 2), Ok(()));
        assert_eq!(at(3, NOW + 2, NOW + 2), Err(AuthError::Full));
        assert_eq!(at(1, NOW + 1, NOW + 3), Err(AuthError::Replayed));
        assert_eq!(cache.len(), 2);
        // Nonce 1 is kept while its stamp is in the window (until NOW + 1 + W)…
        assert_eq!(at(3, NOW + W + 1, NOW + W + 1), Err(AuthError::Full));
        // …and forgotten after it, which makes room.
        assert_eq!(at(3, NOW + W + 2, NOW + W + 2), Ok(()));
        assert_eq!(cache.len(), 2);
        assert_eq!(at(2, NOW + 50, NOW + W + 2), Err(AuthError::Replayed));
        assert!(AuthError::Full.is_transient() && AuthError::TooEarly.is_transient());
        assert!(!AuthError::Replayed.is_transient() && !AuthError::BadMac.is_transient());
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let s = RequestSigner::new(&key(1));
        let none = HeaderMap::new();
        let c = covered("GET", "/", &none);
        let node = "00".repeat(16);
        let nonce = "00".repeat(16);
        let mac = "00".repeat(16);
        for h in [
            String::new(),
            "....".into(),
            "a.b.c.d".into(),
            format!("{node}.{NOW}.{mac}"),
            format!("{node}.{NOW}.{nonce}.{mac}.x"),
            format!("{node}.-1.{nonce}.{mac}"),
            format!("{node}.+1.{nonce}.{mac}"),
            format!("{node}.99999999999999999999999.{nonce}.{mac}"),
            format!("{node}.{NOW}.{nonce}.{}", "00".repeat(15)),
            format!("{node}.{NOW}.{}.{mac}", "0".repeat(31)),
            format!("{}.{NOW}.{nonce}.{mac}", "0".repeat(31)),
            format!("{}.{NOW}.{nonce}.{mac}", "ZZ".repeat(16)),
            format!("{}.{NOW}.{nonce}.{mac}", "é".repeat(16)),
        ] {
            assert!(
                matches!(
                    s.verify(&c, &h, NOW, &fresh_cache()),
                    Err(AuthError::Malformed(_))
                ),
                "{h:?}"
            );
        }
    }

    #[test]
    fn key_file_loads_raw_and_hex() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap_or(0) * 7);
        let want = ClusterKey::from_bytes(raw).derive(GOSSIP_CONTEXT);

        let p = dir.path().join("raw.key");
        std::fs::write(&p, raw).expect("write");
        assert_eq!(
            ClusterKey::load(&p).expect("raw").derive(GOSSIP_CONTEXT),
            want
        );

        for (name, text) in [
            ("hex.key", hex(&raw)),
            ("hexnl.key", format!("{}\n", hex(&raw))),
            ("hexcrlf.key", format!("{}\r\n", hex(&raw))),
            ("upper.key", hex(&raw).to_uppercase()),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            assert_eq!(
                ClusterKey::load(&p).expect(name).derive(GOSSIP_CONTEXT),
                want
            );
        }
    }

    #[test]
    fn bad_key_files_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.key");
        let e = ClusterKey::load(&missing).expect_err("missing");
        let fix = format!("create it with `peercache keygen {}`", missing.display());
        assert!(e.contains(&fix), "{e}");

        for (name, content) in [
            ("short.key", b"abc".to_vec()),
            ("nothex.key", vec![b'g'; 64]),
            ("twonl.key", format!("{}\n\n", "ab".repeat(32)).into_bytes()),
            ("empty.key", Vec::new()),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, content).expect("write");
            let e = ClusterKey::load(&p).expect_err(name);
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn keygen_writes_hex_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("cluster.key");
        let k = ClusterKey::write_new(&p).expect("keygen");
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let loaded = ClusterKey::load(&p).expect("load");
        assert_eq!(loaded.derive(GOSSIP_CONTEXT), k.derive(GOSSIP_CONTEXT));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let e = ClusterKey::write_new(&p).expect_err("must refuse");
        assert!(e.contains("cluster.key") && e.contains("refusing"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            text,
            "file untouched"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_readable_by_everyone_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("cluster.key");
        ClusterKey::write_new(&p).expect("keygen");
        assert_eq!(ClusterKey::file_warnings(&p), Vec::<String>::new());
        for (mode, warned) in [(0o640, false), (0o644, true), (0o604, true)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let w = ClusterKey::file_warnings(&p);
            assert_eq!(w.len(), usize::from(warned), "{mode:o}: {w:?}");
            if warned {
                assert!(
                    w[0].contains(&format!("chmod 600 {}", p.display())),
                    "{w:?}"
                );
            }
        }
    }

    #[test]
    fn generated_keys_differ() {
        let a = ClusterKey::generate();
        let b = ClusterKey::generate();
        assert_ne!(a.derive(GOSSIP_CONTEXT), b.derive(GOSSIP_CONTEXT));
    }
}

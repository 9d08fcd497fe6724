//! The cluster key, the gossip AEAD envelope and peer-request signatures; pure except the key-file functions `load` and `write_new`.
use std::fmt;
use std::io::Write;
use std::path::Path;

use rand::{RngCore, TryRngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

use crate::peer::wire::NodeId;

/// blake3 `derive_key` context of the gossip (UDP) encryption key.
pub const GOSSIP_CONTEXT: &str = "peercache gossip v1";
/// blake3 `derive_key` context of the peer-transfer request MAC key.
pub const TRANSFER_CONTEXT: &str = "peercache transfer v1";
/// Name of the HTTP header carrying a signed peer request.
pub const AUTH_HEADER: &str = "x-peercache-auth";
/// Largest accepted distance between a request's timestamp and the verifier's clock.
pub const MAX_SKEW_SECS: u64 = 300;

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
    /// The header is not `<node-hex>.<unix-secs>.<mac-hex>`.
    #[error("malformed {AUTH_HEADER} header: {0}")]
    Malformed(&'static str),
    /// The timestamp is more than [`MAX_SKEW_SECS`] away from our clock.
    #[error(
        "{AUTH_HEADER} timestamp is {skew_secs} s away from our clock (limit {MAX_SKEW_SECS} s)"
    )]
    Skew {
        /// Absolute distance between the header's time and ours.
        skew_secs: u64,
    },
    /// The MAC does not match: another cluster key, or a changed method, path or field.
    #[error("{AUTH_HEADER} signature does not match (different cluster key?)")]
    BadMac,
}

/// Authentication of peer-transfer HTTP requests: header
/// `x-peercache-auth: <node-hex>.<unix-secs>.<mac-hex>` with mac = first 16 bytes of
/// `blake3::keyed_hash(transfer key, "<METHOD> <path-and-query> <node-hex> <unix-secs>")`.
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

    /// The header value for a request from `node` at `now_unix`.
    pub fn sign(&self, method: &str, path_and_query: &str, node: NodeId, now_unix: u64) -> String {
        let node_hex = hex(&node.0);
        let ts = now_unix.to_string();
        let mac = self.mac(method, path_and_query, &node_hex, &ts);
        format!("{node_hex}.{ts}.{}", hex(&mac))
    }

    /// Ok(node) when the MAC matches (constant-time compare) and |now - ts| <= 300 s.
    pub fn verify(
        &self,
        method: &str,
        path_and_query: &str,
        header: &str,
        now_unix: u64,
    ) -> Result<NodeId, AuthError> {
        let mut parts = header.trim().split('.');
        let (Some(node_hex), Some(ts), Some(mac_hex), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected three dot-separated fields"));
        };
        let node = NodeId(
            unhex::<16>(node_hex).ok_or(AuthError::Malformed("node id is not 32 hex digits"))?,
        );
        let given =
            unhex::<MAC_LEN>(mac_hex).ok_or(AuthError::Malformed("mac is not 32 hex digits"))?;
        if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthError::Malformed(
                "timestamp is not decimal unix seconds",
            ));
        }
        let when: u64 = ts
            .parse()
            .map_err(|_| AuthError::Malformed("timestamp out of range"))?;
        // The MAC covers the exact text received, so a re-encoded field cannot match.
        let expected = self.mac(method, path_and_query, node_hex, ts);
        if !constant_time_eq(&expected, &given) {
            return Err(AuthError::BadMac);
        }
        let skew_secs = now_unix.abs_diff(when);
        if skew_secs > MAX_SKEW_SECS {
            return Err(AuthError::Skew { skew_secs });
        }
        Ok(node)
    }

    fn mac(&self, method: &str, path_and_query: &str, node_hex: &str, ts: &str) -> [u8; MAC_LEN] {
        let msg = format!("{method} {path_and_query} {node_hex} {ts}");
        let full = blake3::keyed_hash(&self.key, msg.as_bytes());
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&full.as_bytes()[..MAC_LEN]);
        mac
    }
}

impl fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestSigner(..)")
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

    const NOW: u64 = 1_700_000_000;

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

    #[test]
    fn mac_verifies_for_the_signed_request() {
        let s = RequestSigner::new(&key(1));
        let node = NodeId([0x5a; 16]);
        let h = s.sign("GET", "/peer/v1/index?since=7", node, NOW);
        assert!(h.starts_with(&format!("{node}.{NOW}.")), "{h}");
        assert_eq!(s.verify("GET", "/peer/v1/index?since=7", &h, NOW), Ok(node));
        assert_eq!(
            s.verify("GET", "/peer/v1/index?since=7", &h, NOW + 300),
            Ok(node)
        );
        assert_eq!(
            s.verify("GET", "/peer/v1/index?since=7", &h, NOW - 300),
            Ok(node)
        );
    }

    #[test]
    fn mac_rejects_wrong_key() {
        let node = NodeId([1; 16]);
        let h = RequestSigner::new(&key(1)).sign("GET", "/peer/v1/objects/ab", node, NOW);
        let other = RequestSigner::new(&key(2));
        assert_eq!(
            other.verify("GET", "/peer/v1/objects/ab", &h, NOW),
            Err(AuthError::BadMac)
        );
    }

    #[test]
    fn mac_rejects_clock_skew() {
        let s = RequestSigner::new(&key(1));
        let h = s.sign("GET", "/x", NodeId([1; 16]), NOW);
        assert_eq!(
            s.verify("GET", "/x", &h, NOW + 301),
            Err(AuthError::Skew { skew_secs: 301 })
        );
        assert_eq!(
            s.verify("GET", "/x", &h, NOW - 1000),
            Err(AuthError::Skew { skew_secs: 1000 })
        );
    }

    #[test]
    fn mac_rejects_tampered_request_or_header() {
        let s = RequestSigner::new(&key(1));
        let node = NodeId([9; 16]);
        let h = s.sign("GET", "/peer/v1/objects/aa", node, NOW);
        assert_eq!(
            s.verify("GET", "/peer/v1/objects/bb", &h, NOW),
            Err(AuthError::BadMac)
        );
        assert_eq!(
            s.verify("HEAD", "/peer/v1/objects/aa", &h, NOW),
            Err(AuthError::BadMac)
        );
        // Claiming another node or another time breaks the MAC.
        let other_node = h.replacen("09", "0a", 1);
        assert_eq!(
            s.verify("GET", "/peer/v1/objects/aa", &other_node, NOW),
            Err(AuthError::BadMac)
        );
        let (head, mac) = h.rsplit_once('.').expect("three fields");
        let (node_hex, _) = head.split_once('.').expect("three fields");
        let later = format!("{node_hex}.{}.{mac}", NOW + 1);
        assert_eq!(
            s.verify("GET", "/peer/v1/objects/aa", &later, NOW),
            Err(AuthError::BadMac)
        );
        let padded = format!("{node_hex}.0{NOW}.{mac}");
        assert_eq!(
            s.verify("GET", "/peer/v1/objects/aa", &padded, NOW),
            Err(AuthError::BadMac)
        );
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let s = RequestSigner::new(&key(1));
        let node = "00".repeat(16);
        let mac = "00".repeat(16);
        for h in [
            String::new(),
            "...".into(),
            "a.b.c".into(),
            format!("{node}.{NOW}"),
            format!("{node}.{NOW}.{mac}.x"),
            format!("{node}.-1.{mac}"),
            format!("{node}.+1.{mac}"),
            format!("{node}.99999999999999999999999.{mac}"),
            format!("{node}.{NOW}.{}", "00".repeat(15)),
            format!("{}.{NOW}.{mac}", "0".repeat(31)),
            format!("{}.{NOW}.{mac}", "ZZ".repeat(16)),
            format!("{}.{NOW}.{mac}", "é".repeat(16)),
        ] {
            assert!(
                matches!(s.verify("GET", "/", &h, NOW), Err(AuthError::Malformed(_))),
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

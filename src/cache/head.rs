//! The one response head the cache keeps — for a stored entry, a fill in progress and a peer's
//! copy alike — with its serialised form (store rows and the peer transfer API carry the same
//! record) and the view policy judges it through. Pure; no I/O.

use std::ops::Deref;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::cache::key::Variant;
use crate::cache::outboard;
use crate::cache::policy::{Stored, Timing};

/// A response head as cached: status, end-to-end header fields (packed), age bookkeeping, the
/// variant of the request it answered, and whether other machines may have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: StatusCode,
    /// Header fields as stored (hop-by-hop fields already removed), packed.
    pub headers: PackedHeaders,
    pub timing: Timing,
    /// Secondary key: the request's values of the fields named by `Vary`.
    pub variant: Variant,
    /// May be handed to other machines (RFC 9111 shared-cacheable and not credentialed).
    pub shareable: bool,
}

impl Head {
    /// A head of `headers` (hop-by-hop fields removed).
    pub fn new(
        status: StatusCode,
        headers: &HeaderMap,
        timing: Timing,
        variant: Variant,
        shareable: bool,
    ) -> Head {
        Head {
            status,
            headers: PackedHeaders::pack(headers),
            timing,
            variant,
            shareable,
        }
    }

    /// The header fields, unpacked.
    pub fn headers(&self) -> HeaderMap {
        self.headers.unpack()
    }

    /// What policy judges (RFC 9111), over `headers`: this head's fields, unpacked once by the
    /// caller.
    pub fn stored<'a>(&self, headers: &'a HeaderMap) -> Stored<'a> {
        Stored {
            status: self.status,
            headers,
            timing: self.timing,
        }
    }

    /// The record rows and peers carry.
    pub fn record(&self) -> HeadRecord {
        HeadRecord {
            variant: self.variant.as_str().to_owned(),
            status: self.status.as_u16(),
            headers: self.headers.pairs(),
            timing: TimingRecord::from(&self.timing),
        }
    }
}

/// A head in its serialised form (postcard), as store rows and the peer transfer API carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRecord {
    pub variant: String,
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timing: TimingRecord,
}

impl HeadRecord {
    /// The head it records; `None` if a status, name or value is invalid.
    pub fn head(&self, shareable: bool) -> Option<Head> {
        Some(Head {
            status: StatusCode::from_u16(self.status).ok()?,
            headers: PackedHeaders::pack(&headers_from_pairs(&self.headers)?),
            timing: self.timing.timing(),
            variant: Variant::from_stored(self.variant.clone()),
            shareable,
        })
    }
}

/// One stored response: the URL it answers, its head, and the blob holding its body.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Primary cache key (normalised URL).
    pub key: String,
    pub head: Head,
    /// blake3 of the body; names the blob file.
    pub hash: blake3::Hash,
    /// Body length in bytes.
    pub len: u64,
}

impl Deref for Entry {
    type Target = Head;

    fn deref(&self) -> &Head {
        &self.head
    }
}

impl Entry {
    /// Bytes the entry costs in the size budget: body, its outboard, and an estimate of its head.
    pub fn weight_bytes(&self) -> u64 {
        let head = self.headers.len();
        self.len
            + outboard::size(self.len)
            + (head + self.key.len() + self.variant.as_str().len() + 64) as u64
    }
}

/// A stored entry as a row keeps it (the key is the row's).
#[derive(Serialize, Deserialize)]
pub struct EntryRecord {
    head: HeadRecord,
    hash: [u8; 32],
    len: u64,
    shareable: bool,
}

impl EntryRecord {
    pub fn of(e: &Entry) -> Self {
        EntryRecord {
            head: e.record(),
            hash: *e.hash.as_bytes(),
            len: e.len,
            shareable: e.shareable,
        }
    }

    pub fn into_entry(self, key: &str) -> Option<Entry> {
        Some(Entry {
            key: key.to_owned(),
            head: self.head.head(self.shareable)?,
            hash: blake3::Hash::from_bytes(self.hash),
            len: self.len,
        })
    }
}

/// The head of a fill in progress, and the body length its source announced, if it did.
#[derive(Debug)]
pub struct FillHead {
    pub head: Head,
    pub len: Option<u64>,
}

impl Deref for FillHead {
    type Target = Head;

    fn deref(&self) -> &Head {
        &self.head
    }
}

/// Header fields packed into one allocation as `name:value\n` lines (a name never contains
/// `:`, a value never contains `\n`), as rows, fills and peers carry a head; unpacked into a
/// `HeaderMap` on first use and kept so (its values slices of the packed bytes), so that a hit
/// on a head in the heads cache clones a map instead of parsing one. [`PackedHeaders::memory`]
/// counts the unpacked map, used or not, for the bounded cache that holds heads.
#[derive(Debug, Clone, Default)]
pub struct PackedHeaders {
    packed: Bytes,
    unpacked: OnceLock<HeaderMap>,
}

/// Equal when the packed fields are (whether unpacked yet or not).
impl PartialEq for PackedHeaders {
    fn eq(&self, other: &Self) -> bool {
        self.packed == other.packed
    }
}

impl Eq for PackedHeaders {}

/// Heap bytes of one field in an unpacked `HeaderMap`, at most (http 1.5, measured: 1 312
/// bytes for 8 fields, 2 624 for 16), and of the shared header the packed bytes get when the
/// map's values first slice them.
const UNPACKED_PER_FIELD: usize = 170;
const SHARED_BYTES: usize = 32;

impl PackedHeaders {
    pub fn pack(headers: &HeaderMap) -> Self {
        let mut out = Vec::with_capacity(
            headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 2)
                .sum(),
        );
        for (name, value) in headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        PackedHeaders {
            packed: Bytes::from(out),
            unpacked: OnceLock::new(),
        }
    }

    /// The fields as a map (a clone of the one kept).
    pub fn unpack(&self) -> HeaderMap {
        self.unpacked.get_or_init(|| self.parse()).clone()
    }

    fn parse(&self) -> HeaderMap {
        let packed = &self.packed;
        let mut h = HeaderMap::with_capacity(memchr::memchr_iter(b'\n', packed).count());
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', packed) {
            let line = &packed[start..end];
            if let Some(colon) = memchr::memchr(b':', line) {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(&line[..colon]),
                    HeaderValue::from_maybe_shared(packed.slice(start + colon + 1..end)),
                ) {
                    h.append(n, v);
                }
            }
            start = end + 1;
        }
        h
    }

    /// Each field as (name, value bytes), in order.
    pub fn pairs(&self) -> Vec<(String, Vec<u8>)> {
        header_pairs(&self.unpack())
    }

    /// Bytes of the packed fields.
    pub fn len(&self) -> usize {
        self.packed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// Memory held once unpacked: the packed bytes and the map.
    pub fn memory(&self) -> usize {
        let fields = memchr::memchr_iter(b'\n', &self.packed).count();
        self.packed.len()
            + std::mem::size_of::<HeaderMap>()
            + SHARED_BYTES
            + UNPACKED_PER_FIELD * fields
    }
}

/// A response's age bookkeeping in milliseconds since the epoch, as rows and peers carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingRecord {
    pub request_time_ms: u64,
    pub response_time_ms: u64,
    pub corrected_initial_age_ms: u64,
}

impl From<&Timing> for TimingRecord {
    fn from(t: &Timing) -> Self {
        let millis = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        };
        TimingRecord {
            request_time_ms: millis(t.request_time),
            response_time_ms: millis(t.response_time),
            corrected_initial_age_ms: t.corrected_initial_age.as_millis() as u64,
        }
    }
}

impl TimingRecord {
    pub fn timing(&self) -> Timing {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        Timing {
            request_time: at(self.request_time_ms),
            response_time: at(self.response_time_ms),
            corrected_initial_age: Duration::from_millis(self.corrected_initial_age_ms),
        }
    }
}

/// Header fields as (name, value bytes) pairs, in order.
pub fn header_pairs(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// The header map of such pairs; `None` if a name or value is invalid.
pub fn headers_from_pairs(pairs: &[(String, Vec<u8>)]) -> Option<HeaderMap> {
    let mut h = HeaderMap::with_capacity(pairs.len());
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).ok()?,
            HeaderValue::from_bytes(v).ok()?,
        );
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_fields_unpack_in_order_with_repeats_and_odd_values() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("cache-control", "public, max-age=60"),
            ("x-custom-field", "a:b:c"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("etag", ""),
            ("x-bytes", "caf\u{e9}"),
        ] {
            h.append(
                HeaderName::from_static(n),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        let packed = PackedHeaders::pack(&h);
        assert_eq!(packed.unpack(), h);
        let order: Vec<_> = packed.unpack().iter().map(|(_, v)| v.clone()).collect();
        let want: Vec<_> = h.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(order, want);
        assert_eq!(
            PackedHeaders::pack(&HeaderMap::new()).unpack(),
            HeaderMap::new()
        );
    }

    #[test]
    fn a_head_survives_its_record_and_rows_keep_their_old_layout() {
        let mut h = HeaderMap::new();
        h.append("etag", HeaderValue::from_static("\"v1\""));
        h.append("vary", HeaderValue::from_static("accept"));
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let timing = Timing {
            request_time: now,
            response_time: now,
            corrected_initial_age: Duration::from_secs(3),
        };
        let head = Head::new(
            StatusCode::OK,
            &h,
            timing,
            Variant::from_stored("accept=x".into()),
            true,
        );
        assert_eq!(head.record().head(true), Some(head.clone()));
        let entry = Entry {
            key: "http://a/x".into(),
            head,
            hash: blake3::hash(b"x"),
            len: 1,
        };
        // The row of one entry is the flat sequence it was before heads had a type of their
        // own: variant, status, fields, timing, hash, length, shareable.
        #[derive(Serialize)]
        struct Flat<'a> {
            variant: &'a str,
            status: u16,
            headers: Vec<(String, Vec<u8>)>,
            timing: TimingRecord,
            hash: [u8; 32],
            len: u64,
            shareable: bool,
        }
        let flat = Flat {
            variant: "accept=x",
            status: 200,
            headers: header_pairs(&h),
            timing: TimingRecord::from(&timing),
            hash: *blake3::hash(b"x").as_bytes(),
            len: 1,
            shareable: true,
        };
        assert_eq!(
            postcard::to_stdvec(&EntryRecord::of(&entry)).unwrap(),
            postcard::to_stdvec(&flat).unwrap()
        );
        assert_eq!(entry.headers(), h);
    }
}

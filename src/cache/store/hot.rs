//! The store's two bounded memory caches: decoded variants of recently used URLs (checked
//! against the index's generation before use) and small verified bodies by content hash (like
//! Squid's `cache_mem`). Each is weighed by what it really holds, moka's own cost included.

use std::sync::Arc;

use bytes::Bytes;

use super::Variants;
use crate::cache::index::Fp;

/// Memory for small bodies (the hot-object cache).
pub const HOT_BYTES: u64 = 16 * 1024 * 1024;
/// Memory for the decoded heads of recently used URLs (a hit clones a kept `HeaderMap`, ~1.3 KiB
/// with 8 fields, counted whether made yet or not: about 3 500 such heads).
pub const HEADS_BYTES: u64 = 8 * 1024 * 1024;

/// Rough memory of an `Entry` beyond its strings, and of one moka cache node beyond its key and
/// value (measured: 100 000 entries in a moka 0.12 sync cache cost ~350 bytes each more than in
/// a `HashMap`), for the weighers that bound the two memory caches by what they really hold.
const ENTRY_OVERHEAD: usize = 200;
const CACHE_NODE_OVERHEAD: usize = 384;

/// Decoded variants of recently used URLs.
pub(super) type Heads = moka::sync::Cache<Fp, Arc<Variants>>;

/// Verified small bodies by content hash (content-addressed, so never stale).
pub(super) type Bodies = moka::sync::Cache<blake3::Hash, Bytes>;

pub(super) fn heads() -> Heads {
    moka::sync::Cache::builder()
        .max_capacity(HEADS_BYTES)
        .weigher(|_k: &Fp, v: &Arc<Variants>| memory(v))
        .build()
}

pub(super) fn bodies() -> Bodies {
    moka::sync::Cache::builder()
        .max_capacity(HOT_BYTES)
        .weigher(|_k: &blake3::Hash, v: &Bytes| {
            u32::try_from(v.len() + CACHE_NODE_OVERHEAD).unwrap_or(u32::MAX)
        })
        .build()
}

/// Estimated memory `v` holds in the heads cache.
fn memory(v: &Variants) -> u32 {
    let bytes: usize = v
        .entries
        .iter()
        .map(|e| e.key.len() + e.headers.memory() + e.variant.as_str().len() + ENTRY_OVERHEAD)
        .sum();
    u32::try_from(bytes + CACHE_NODE_OVERHEAD).unwrap_or(u32::MAX)
}

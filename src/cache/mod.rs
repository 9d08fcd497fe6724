//! The cache: RFC 9111 policy, freshness rules, keys and variants (all pure), the store and in-flight fills.

pub mod cache_control;
pub mod conditional;
pub mod head;
pub mod index;
pub mod inflight;
pub mod key;
pub mod lookup;
pub mod outboard;
pub mod policy;
pub mod read;
pub mod rules;
pub mod spill;
pub mod store;

//! HTTP helpers below every other module: hop-by-hop fields and `Via` (`headers`), the client
//! allow-list (`acl`). Pure; no I/O, and nothing here names a module above it.

pub mod acl;
pub mod headers;

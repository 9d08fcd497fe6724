//! peercache: a caching HTTP forward proxy whose nodes share their caches.

pub mod accesslog;
pub mod app;
pub mod body;
pub mod cache;
pub mod config;
pub mod error;
pub mod fetch;
pub mod front;
pub mod grammar;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod port_owner;
pub mod sendfile;

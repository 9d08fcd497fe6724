//! What every request handler can reach: the config, the store and its fills, the upstream
//! side, counters and logs, the peer group, interception and link rewriting. Built by `app`,
//! read by everything in `front`; owns no behaviour of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::accesslog::AccessLog;
use crate::cache::inflight::Inflight;
use crate::cache::rules::Rules;
use crate::cache::store::Store;
use crate::config::Config;
use crate::fetch::Fetcher;
use crate::front::intercept::Interceptor;
use crate::front::relink::Relinker;
use crate::metrics::Metrics;
use crate::peer::Peers;

/// How long in-flight responses may take to finish after a shutdown request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything a request handler can reach.
pub struct Proxy {
    pub config: Config,
    /// The address actually bound (the config may say port 0).
    pub listen: SocketAddr,
    pub store: Store,
    pub inflight: Arc<Inflight>,
    pub fetcher: Fetcher,
    pub metrics: Arc<Metrics>,
    /// Freshness rules and presets, compiled; the same `Arc` as the fetcher's and the peers'.
    pub rules: Arc<Rules>,
    pub access: AccessLog,
    pub started: tokio::time::Instant,
    /// The peer side, when `peers.enabled`.
    pub peers: Option<Arc<Peers>>,
    /// HTTPS interception, when `intercept.hosts` lists any host.
    pub intercept: Option<Interceptor>,
    /// Link rewriting for the mirrors' index pages.
    pub relinker: Relinker,
}

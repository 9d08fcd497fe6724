//! Process-wide counters: requests by cache result, bytes by source. Lock-free; no I/O.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How a request was answered; `as_str()` is the `X-Cache` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the local store without contacting anyone.
    Hit,
    /// Fetched from the origin (or parent proxy).
    Miss,
    /// Served by a peer.
    Peer,
    /// Validated with the origin (304) and served from the store.
    Revalidated,
    /// Joined another request's in-flight fill.
    Collapsed,
}

impl CacheStatus {
    pub const ALL: [CacheStatus; 5] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Peer,
        CacheStatus::Revalidated,
        CacheStatus::Collapsed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Peer => "PEER",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Collapsed => "COLLAPSED",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Where body bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Peer,
    Origin,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Cache, Source::Peer, Source::Origin];
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Peer => "peer",
            Source::Origin => "origin",
        }
    }
}

/// All counters; one instance per process, shared by reference.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; 5],
    /// Requests answered with an error or passed through (CONNECT, admin, uncacheable methods).
    pub requests_other: AtomicU64,
    pub errors: AtomicU64,
    pub denied: AtomicU64,
    pub origin_requests: AtomicU64,
    bytes: [AtomicU64; 3],
    pub bytes_to_clients: AtomicU64,
    /// `CONNECT` tunnels opened (answered 200), intercepted or not.
    pub tunnels: AtomicU64,
    /// Tunnels decrypted: the client completed the TLS handshake with our leaf.
    pub intercepted: AtomicU64,
    /// Intercepted tunnels whose TLS handshake failed (the client refused our certificate,
    /// sent no TLS, or named a server that is not listed); each costs only its own connection.
    pub intercept_handshake_failures: AtomicU64,
    /// Leaf certificates issued (a name issued again after leaving the cache counts again).
    pub intercept_leaves_issued: AtomicU64,
    /// Tunnel bytes from clients towards upstream, and from upstream to clients (TLS records
    /// for intercepted tunnels), counted as they pass.
    pub tunnel_bytes_up: AtomicU64,
    pub tunnel_bytes_down: AtomicU64,
    /// Tunnels closed because no byte passed for `proxy.tunnel_idle_timeout`.
    pub tunnels_idle_closed: AtomicU64,
    pub corrupt_blobs: AtomicU64,
    /// Body bytes sent from blob files with `sendfile` (zero-copy hits).
    pub sendfile_bytes: AtomicU64,
    /// Mirror index pages sent with their links rewritten.
    pub links_rewritten: AtomicU64,
    /// Mirror index pages sent as the origin sent them: over the size bound, in a coding that
    /// cannot be read (or a corrupt one), or with the rewrite memory budget spent.
    pub links_too_large: AtomicU64,
    pub links_coding: AtomicU64,
    pub links_busy: AtomicU64,
}

impl Metrics {
    pub fn request(&self, status: CacheStatus) {
        self.requests[status.index()].fetch_add(1, Relaxed);
    }
    pub fn requests(&self, status: CacheStatus) -> u64 {
        self.requests[status.index()].load(Relaxed)
    }
    pub fn bytes_from(&self, source: Source, n: u64) {
        self.bytes[source as usize].fetch_add(n, Relaxed);
    }
    pub fn bytes(&self, source: Source) -> u64 {
        self.bytes[source as usize].load(Relaxed)
    }
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// Counters as a JSON object (the `counters` member of the status page).
    pub fn to_json(&self) -> serde_json::Value {
        let mut by_result = serde_json::Map::new();
        for s in CacheStatus::ALL {
            by_result.insert(s.as_str().to_owned(), self.requests(s).into());
        }
        let mut by_source = serde_json::Map::new();
        for s in Source::ALL {
            by_source.insert(s.as_str().to_owned(), self.bytes(s).into());
        }
        serde_json::json!({
            "requests_by_result": by_result,
            "requests_other": Self::get(&self.requests_other),
            "errors": Self::get(&self.errors),
            "denied": Self::get(&self.denied),
            "origin_requests": Self::get(&self.origin_requests),
            "bytes_by_source": by_source,
            "bytes_to_clients": Self::get(&self.bytes_to_clients),
            "tunnels": Self::get(&self.tunnels),
            "intercepted": Self::get(&self.intercepted),
            "intercept_handshake_failures": Self::get(&self.intercept_handshake_failures),
            "intercept_leaves_issued": Self::get(&self.intercept_leaves_issued),
            "tunnel_bytes_up": Self::get(&self.tunnel_bytes_up),
            "tunnel_bytes_down": Self::get(&self.tunnel_bytes_down),
            "tunnels_idle_closed": Self::get(&self.tunnels_idle_closed),
            "corrupt_blobs": Self::get(&self.corrupt_blobs),
            "sendfile_bytes": Self::get(&self.sendfile_bytes),
            "links": {
                "rewritten": Self::get(&self.links_rewritten),
                "skipped_too_large": Self::get(&self.links_too_large),
                "skipped_coding": Self::get(&self.links_coding),
                "skipped_busy": Self::get(&self.links_busy),
            },
        })
    }

    /// Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        out.push_str("# TYPE peercache_requests_total counter\n");
        for s in CacheStatus::ALL {
            let _ = writeln!(
                out,
                "peercache_requests_total{{result=\"{}\"}} {}",
                s.as_str(),
                self.requests(s)
            );
        }
        let _ = writeln!(
            out,
            "peercache_requests_total{{result=\"OTHER\"}} {}",
            Self::get(&self.requests_other)
        );
        out.push_str("# TYPE peercache_bytes_total counter\n");
        for s in Source::ALL {
            let _ = writeln!(
                out,
                "peercache_bytes_total{{source=\"{}\"}} {}",
                s.as_str(),
                self.bytes(s)
            );
        }
        for (name, c) in [
            ("peercache_errors_total", &self.errors),
            ("peercache_denied_total", &self.denied),
            ("peercache_origin_requests_total", &self.origin_requests),
            ("peercache_client_bytes_total", &self.bytes_to_clients),
            ("peercache_tunnels_total", &self.tunnels),
            ("peercache_intercepted_total", &self.intercepted),
            (
                "peercache_intercept_handshake_failures_total",
                &self.intercept_handshake_failures,
            ),
            (
                "peercache_intercept_leaves_issued_total",
                &self.intercept_leaves_issued,
            ),
            ("peercache_tunnel_bytes_up_total", &self.tunnel_bytes_up),
            ("peercache_tunnel_bytes_down_total", &self.tunnel_bytes_down),
            (
                "peercache_tunnels_idle_closed_total",
                &self.tunnels_idle_closed,
            ),
            ("peercache_corrupt_blobs_total", &self.corrupt_blobs),
            ("peercache_sendfile_bytes_total", &self.sendfile_bytes),
            ("peercache_links_rewritten_total", &self.links_rewritten),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", Self::get(c));
        }
        out.push_str("# TYPE peercache_links_skipped_total counter\n");
        for (reason, c) in [
            ("too-large", &self.links_too_large),
            ("coding", &self.links_coding),
            ("busy", &self.links_busy),
        ] {
            let _ = writeln!(
                out,
                "peercache_links_skipped_total{{reason=\"{reason}\"}} {}",
                Self::get(c)
            );
        }
        out
    }
}

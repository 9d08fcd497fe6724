//! Process-wide counters (requests by cache result, bytes by source), their recent history and
//! the last errors. Counters are lock-free; the history and the error ring are small bounded
//! buffers behind a mutex. No I/O: times come in as parameters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How many recent errors the status page lists (older ones are forgotten, and counted).
pub const RECENT_ERRORS: usize = 50;
/// Longest URL or detail kept in an error record, in bytes.
const RECORD_TEXT_MAX: usize = 256;
/// The history's resolution: one step of counts per this long.
pub const HISTORY_STEP: Duration = Duration::from_secs(5);
/// Steps of history kept: 10 minutes at [`HISTORY_STEP`].
pub const HISTORY_STEPS: usize = 120;

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
    /// The last [`RECENT_ERRORS`] errors, oldest first.
    recent_errors: Mutex<VecDeque<ErrorRecord>>,
    /// Errors pushed out of `recent_errors` by newer ones.
    pub errors_forgotten: AtomicU64,
    history: Mutex<History>,
    /// Wakes the history's timer when the step changes.
    history_changed: tokio::sync::Notify,
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
    /// Interim (1xx) responses from origins relayed to clients, and dropped (an HTTP/1.0
    /// client's are never asked for; these are the ones over the per-connection bound, or late).
    pub interim_relayed: AtomicU64,
    pub interim_dropped: AtomicU64,
    /// Client connections open now on the proxy port (a gauge, bounded by
    /// `proxy.max_connections`), and those refused with a 503 at the bound.
    pub connections_open: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Misses fetched for their client alone and not stored, because `cache.max_fills` fills
    /// were running.
    pub fills_passed_unstored: AtomicU64,
    /// Fills whose body outgrew `cache.max_object_size` while streaming: the rest went to their
    /// readers, nothing was stored.
    pub fills_over_size: AtomicU64,
    /// Ranges of fills in progress answered from a ranged request of their own (a peer's copy
    /// or the origin) ahead of the fill; ranged answers not used (refused: another
    /// representation, a 200, other bytes; or the source failed), the fill serving instead;
    /// range requests that started no fill (`cache.range_fill`), passed upstream as asked.
    pub ranges_ahead: AtomicU64,
    pub ranges_refused: AtomicU64,
    pub ranges_unfilled: AtomicU64,
    /// Access log lines dropped because the writer fell behind by its whole queue.
    pub access_log_dropped: AtomicU64,
    /// Content-server redirects (`[[mirror]] redirect_to_peers`), on the content server: 302s
    /// that sent a member to holders, and proofs of membership refused (replayed, stale, made
    /// with another key or for another node; the request was served as a non-member's).
    pub redirects_sent: AtomicU64,
    pub redirect_proofs_refused: AtomicU64,
    /// On a member: redirects followed to a holder, and requests sent back to the content
    /// server because the holder failed (at the start of the copy or in the middle).
    pub redirects_followed: AtomicU64,
    pub redirect_fallbacks: AtomicU64,
    /// On a member: the remembered addresses of origin hosts forgotten at once because the
    /// memory was full (each name is then looked up again).
    pub redirect_hosts_forgotten: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One failed request, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorRecord {
    /// When it was answered, in seconds since the Unix epoch.
    pub unix_secs: u64,
    pub client: String,
    pub method: String,
    /// At most 256 bytes (longer URLs are cut, marked with `…`).
    pub url: String,
    pub status: u16,
    /// The stable error name (`X-Peercache-Error`).
    pub kind: &'static str,
    /// The reason, at most 256 bytes.
    pub detail: String,
}

impl ErrorRecord {
    /// A record with its texts cut to the bound.
    pub fn new(
        unix_secs: u64,
        client: String,
        method: String,
        url: &str,
        status: u16,
        kind: &'static str,
        detail: &str,
    ) -> Self {
        ErrorRecord {
            unix_secs,
            client,
            method,
            url: clip(url, RECORD_TEXT_MAX),
            status,
            kind,
            detail: clip(detail, RECORD_TEXT_MAX),
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Index of `TUNNEL` in [`Totals::requests`], after the five cache results.
const TUNNEL: usize = 5;

/// A snapshot of the cumulative counters the history follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// By [`CacheStatus`] in `ALL` order, then `TUNNEL`.
    pub requests: [u64; 6],
    /// By [`Source`] in `ALL` order.
    pub bytes: [u64; 3],
}

impl Totals {
    /// What happened between `earlier` and `self` (a counter never goes back; if it seems to,
    /// the step counts 0).
    fn since(&self, earlier: &Totals) -> Totals {
        let mut d = Totals::default();
        for (i, v) in self.requests.iter().enumerate() {
            d.requests[i] = v.saturating_sub(earlier.requests[i]);
        }
        for (i, v) in self.bytes.iter().enumerate() {
            d.bytes[i] = v.saturating_sub(earlier.bytes[i]);
        }
        d
    }
}

/// Counts per step over the last `cap` steps, for the dashboard's chart; pure (the caller ends
/// each step).
#[derive(Debug)]
pub struct History {
    last: Option<Totals>,
    /// Oldest first; at most `cap`.
    steps: VecDeque<Totals>,
    cap: usize,
    step: Duration,
}

impl Default for History {
    fn default() -> Self {
        History::new(HISTORY_STEPS, HISTORY_STEP)
    }
}

impl History {
    pub fn new(cap: usize, step: Duration) -> Self {
        History {
            last: None,
            steps: VecDeque::with_capacity(cap),
            cap,
            step,
        }
    }

    /// How long one step lasts.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// Records the counters at the end of a step; the first call only sets the baseline.
    pub fn record(&mut self, now: Totals) {
        if let Some(prev) = self.last {
            if self.steps.len() == self.cap {
                self.steps.pop_front();
            }
            self.steps.push_back(now.since(&prev));
        }
        self.last = Some(now);
    }

    /// The steps, oldest first.
    pub fn steps(&self) -> impl Iterator<Item = &Totals> {
        self.steps.iter()
    }

    /// `{"step_ms", "requests": {"HIT": [...], …, "TUNNEL": [...]}, "bytes": {"cache": [...], …}}`,
    /// each series oldest first.
    pub fn to_json(&self) -> serde_json::Value {
        let series = |pick: &dyn Fn(&Totals) -> u64| -> serde_json::Value {
            self.steps.iter().map(pick).collect::<Vec<u64>>().into()
        };
        let mut requests = serde_json::Map::new();
        for (i, s) in CacheStatus::ALL.iter().enumerate() {
            requests.insert(s.as_str().to_owned(), series(&|t| t.requests[i]));
        }
        requests.insert("TUNNEL".to_owned(), series(&|t| t.requests[TUNNEL]));
        let mut bytes = serde_json::Map::new();
        for (i, s) in Source::ALL.iter().enumerate() {
            bytes.insert(s.as_str().to_owned(), series(&|t| t.bytes[i]));
        }
        serde_json::json!({
            "step_ms": u64::try_from(self.step.as_millis()).unwrap_or(u64::MAX),
            "requests": requests,
            "bytes": bytes,
        })
    }
}

/// The two figures people ask first, derived from the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Share of cache results (HIT, MISS, PEER, REVALIDATED, COLLAPSED) that did not download
    /// the body from an origin: all but MISS. `None` before the first such request.
    pub hit_ratio: Option<f64>,
    /// Body bytes that did not cross the WAN: served from the store plus fetched from peers.
    pub bytes_saved: u64,
}

impl Summary {
    /// From request counts in [`CacheStatus::ALL`] order and byte counts in [`Source::ALL`] order.
    pub fn of(requests: [u64; 5], bytes: [u64; 3]) -> Summary {
        let total: u64 = requests.iter().sum();
        let misses = requests[CacheStatus::Miss.index()];
        let hit_ratio = (total > 0).then(|| (total - misses) as f64 / total as f64);
        Summary {
            hit_ratio,
            bytes_saved: bytes[Source::Cache as usize].saturating_add(bytes[Source::Peer as usize]),
        }
    }
}

impl Metrics {
    /// Remembers a failed request for the status page, forgetting the oldest beyond
    /// [`RECENT_ERRORS`] (counted in `errors_forgotten`).
    pub fn record_error(&self, record: ErrorRecord) {
        let mut ring = lock(&self.recent_errors);
        if ring.len() == RECENT_ERRORS {
            ring.pop_front();
            Self::inc(&self.errors_forgotten);
        }
        ring.push_back(record);
    }

    /// The remembered errors, newest first.
    pub fn recent_errors(&self) -> Vec<ErrorRecord> {
        lock(&self.recent_errors).iter().rev().cloned().collect()
    }

    /// The cumulative counters the history follows.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for (i, s) in CacheStatus::ALL.iter().enumerate() {
            t.requests[i] = self.requests(*s);
        }
        t.requests[TUNNEL] = Self::get(&self.tunnels);
        for (i, s) in Source::ALL.iter().enumerate() {
            t.bytes[i] = self.bytes(*s);
        }
        t
    }

    /// Ends a history step (called every [`Metrics::history_step`] by the app's timer).
    pub fn sample(&self) {
        let now = self.totals();
        lock(&self.history).record(now);
    }

    /// How long a history step lasts ([`HISTORY_STEP`] unless changed).
    pub fn history_step(&self) -> Duration {
        lock(&self.history).step()
    }

    /// Starts the history afresh with steps of `step` (tests shorten them).
    pub fn set_history_step(&self, step: Duration) {
        *lock(&self.history) = History::new(HISTORY_STEPS, step);
        self.history_changed.notify_one();
    }

    /// Resolves when [`Metrics::set_history_step`] is called (or was, since the last call).
    pub async fn history_step_changed(&self) {
        self.history_changed.notified().await;
    }

    /// The history as JSON (see [`History::to_json`]).
    pub fn history_json(&self) -> serde_json::Value {
        lock(&self.history).to_json()
    }

    pub fn summary(&self) -> Summary {
        let t = self.totals();
        let mut requests = [0; 5];
        requests.copy_from_slice(&t.requests[..5]);
        Summary::of(requests, t.bytes)
    }

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
            "errors_forgotten": Self::get(&self.errors_forgotten),
            "limits": {
                "connections_open": Self::get(&self.connections_open),
                "connections_refused": Self::get(&self.connections_refused),
                "fills_passed_unstored": Self::get(&self.fills_passed_unstored),
                "fills_over_size": Self::get(&self.fills_over_size),
                "access_log_dropped": Self::get(&self.access_log_dropped),
            },
            "links": {
                "rewritten": Self::get(&self.links_rewritten),
                "skipped_too_large": Self::get(&self.links_too_large),
                "skipped_coding": Self::get(&self.links_coding),
                "skipped_busy": Self::get(&self.links_busy),
            },
            "interim": {
                "relayed": Self::get(&self.interim_relayed),
                "dropped": Self::get(&self.interim_dropped),
            },
            "redirects": {
                "sent": Self::get(&self.redirects_sent),
                "proofs_refused": Self::get(&self.redirect_proofs_refused),
                "followed": Self::get(&self.redirects_followed),
                "fallbacks": Self::get(&self.redirect_fallbacks),
                "hosts_forgotten": Self::get(&self.redirect_hosts_forgotten),
            },
            "ranges": {
                "ahead": Self::get(&self.ranges_ahead),
                "refused": Self::get(&self.ranges_refused),
                "unfilled": Self::get(&self.ranges_unfilled),
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
            (
                "peercache_connections_refused_total",
                &self.connections_refused,
            ),
            (
                "peercache_fills_passed_unstored_total",
                &self.fills_passed_unstored,
            ),
            (
                "peercache_access_log_dropped_total",
                &self.access_log_dropped,
            ),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", Self::get(c));
        }
        let _ = writeln!(
            out,
            "# TYPE peercache_connections_open gauge\npeercache_connections_open {}",
            Self::get(&self.connections_open)
        );
        family(
            &mut out,
            "peercache_links_skipped_total",
            "reason",
            &[
                ("too-large", &self.links_too_large),
                ("coding", &self.links_coding),
                ("busy", &self.links_busy),
            ],
        );
        family(
            &mut out,
            "peercache_interim_total",
            "outcome",
            &[
                ("relayed", &self.interim_relayed),
                ("dropped", &self.interim_dropped),
            ],
        );
        family(
            &mut out,
            "peercache_redirects_total",
            "event",
            &[
                ("sent", &self.redirects_sent),
                ("proof-refused", &self.redirect_proofs_refused),
                ("followed", &self.redirects_followed),
                ("fallback", &self.redirect_fallbacks),
                ("host-forgotten", &self.redirect_hosts_forgotten),
            ],
        );
        family(
            &mut out,
            "peercache_ranges_total",
            "outcome",
            &[
                ("ahead", &self.ranges_ahead),
                ("refused", &self.ranges_refused),
                ("unfilled", &self.ranges_unfilled),
            ],
        );
        out
    }
}

/// One labelled counter family in Prometheus text: its TYPE line, then a sample per label value.
fn family(out: &mut String, name: &str, label: &str, samples: &[(&str, &AtomicU64)]) {
    use std::fmt::Write;
    let _ = writeln!(out, "# TYPE {name} counter");
    for (value, c) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {}", Metrics::get(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(hits: u64, origin_bytes: u64) -> Totals {
        Totals {
            requests: [hits, 0, 0, 0, 0, 1],
            bytes: [0, 0, origin_bytes],
        }
    }

    #[test]
    fn history_keeps_the_last_steps_as_differences() {
        let mut h = History::new(3, Duration::from_secs(5));
        h.record(totals(10, 100));
        assert_eq!(h.steps().count(), 0, "the first sample is only a baseline");
        for (hits, bytes) in [(12, 150), (12, 150), (20, 400), (21, 401)] {
            h.record(totals(hits, bytes));
        }
        let steps: Vec<(u64, u64)> = h.steps().map(|t| (t.requests[0], t.bytes[2])).collect();
        assert_eq!(
            steps,
            [(0, 0), (8, 250), (1, 1)],
            "bounded to 3, oldest first"
        );
        let json = h.to_json();
        assert_eq!(json["step_ms"], 5000);
        assert_eq!(json["requests"]["HIT"], serde_json::json!([0, 8, 1]));
        assert_eq!(json["requests"]["TUNNEL"], serde_json::json!([0, 0, 0]));
        assert_eq!(json["bytes"]["origin"], serde_json::json!([0, 250, 1]));
        // A counter that seems to go back (it never does) counts as no traffic.
        h.record(totals(5, 0));
        assert_eq!(h.steps().last().map(|t| t.requests[0]), Some(0));
    }

    #[test]
    fn summary_table() {
        // requests: HIT, MISS, PEER, REVALIDATED, COLLAPSED; bytes: cache, peer, origin.
        type Case = ([u64; 5], [u64; 3], Option<f64>, u64);
        let cases: &[Case] = &[
            ([0; 5], [0; 3], None, 0),
            ([0, 4, 0, 0, 0], [0, 0, 400], Some(0.0), 0),
            ([3, 1, 0, 0, 0], [300, 0, 100], Some(0.75), 300),
            ([1, 1, 1, 1, 0], [10, 20, 30], Some(0.75), 30),
            ([0, 0, 0, 0, 2], [u64::MAX, 5, 0], Some(1.0), u64::MAX),
        ];
        for (requests, bytes, ratio, saved) in cases {
            let s = Summary::of(*requests, *bytes);
            assert_eq!(
                (s.hit_ratio, s.bytes_saved),
                (*ratio, *saved),
                "{requests:?} {bytes:?}"
            );
        }
    }

    #[test]
    fn the_error_ring_is_bounded_and_counts_what_it_forgets() {
        let m = Metrics::default();
        for i in 0..RECENT_ERRORS + 3 {
            let rec = ErrorRecord::new(
                i as u64,
                "127.0.0.1".into(),
                "GET".into(),
                "/",
                502,
                "connect-failed",
                "refused",
            );
            m.record_error(rec);
        }
        let recent = m.recent_errors();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!(
            recent[0].unix_secs,
            (RECENT_ERRORS + 2) as u64,
            "newest first"
        );
        assert_eq!(Metrics::get(&m.errors_forgotten), 3);
    }

    #[test]
    fn long_texts_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(300);
        let rec = ErrorRecord::new(
            0,
            String::new(),
            String::new(),
            &long,
            400,
            "bad-request",
            "x",
        );
        assert!(rec.url.len() <= RECORD_TEXT_MAX, "{}", rec.url.len());
        assert!(rec.url.ends_with('…'));
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdefghij", 10), "abcdefghij");
        assert_eq!(clip("abcdefghijk", 10), "abcdefg…");
    }
}

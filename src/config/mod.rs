//! Config: `peercache.toml` text → validated [`Config`], every error with line and key; pure except [`Config::load`]; never binds or resolves.

mod addr;
mod direct;
mod hosts;
mod mirror;
mod reader;
mod resolve;
mod rule;
mod schema;
mod units;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Uri};

use crate::http::acl::Acl;

use reader::{line_at, Problem, Reader};
use resolve::resolve;
use schema::Raw;

pub use hosts::{HostPattern, HostPatterns};
pub use units::{parse_duration, parse_size};

/// Longest `peers.site` label, in bytes: it rides in every gossip packet header.
pub const MAX_SITE_LEN: usize = 64;
/// Most holders one copy is fetched from at once (`peers.parallel_holders`).
pub const MAX_PARALLEL_HOLDERS: usize = 64;
/// Bounds of `peers.piece_size`: whole verified chunk groups (16 KiB), at most 64 MiB (a copy
/// holds up to two pieces per holder in memory).
pub const PIECE_SIZE_MIN: u64 = 64 * 1024;
pub const PIECE_SIZE_MAX: u64 = 64 * 1024 * 1024;
pub const PIECE_ALIGN: u64 = 16 * 1024;
/// Least non-zero `peers.upload_rate`, bytes per second: 16 uploads of 64 KiB frames each
/// still move within a second, well inside the stall limit of the requesters.
pub const UPLOAD_RATE_MIN: u64 = 1024 * 1024;

/// The documented defaults. Every key a user's file leaves out takes its value from here.
pub const DEFAULT_TOML: &str = include_str!("../../config/peercache.toml");

/// How errors in [`DEFAULT_TOML`] itself would be attributed (a test proves there are none).
const DEFAULT_ORIGIN: &str = "config/peercache.toml (built in)";

/// A complete, validated configuration.
///
/// Invariants (checked by [`Config::parse`]): every port is in 1..=65535,
/// `cache.max_object_size <= cache.max_size`, every timeout is > 0, mirror prefixes are unique,
/// at most one mirror has `npm_tarballs`, and when peering is enabled on a wildcard
/// `peers.listen`, `peers.advertise` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub proxy: Proxy,
    pub cache: Cache,
    pub upstream: Upstream,
    /// `[[mirror]]` routes in file order; empty by default.
    pub mirrors: Vec<Mirror>,
    pub peers: Peers,
    pub intercept: Intercept,
    /// `[rules]` and the `[[rule]]` list: what to assume where origins say nothing.
    pub rules: Rules,
    pub log: Log,
}

/// `[proxy]`: the client-facing listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Listen address; an IP literal, never a host name, port != 0.
    pub listen: SocketAddr,
    /// Clients allowed to use the proxy; empty allows nobody.
    pub allow: Acl,
    /// Ports `CONNECT` may reach, each in 1..=65535, in file order; empty disables `CONNECT`.
    pub connect_ports: Vec<u16>,
    /// A `CONNECT` tunnel (intercepted or not) with no byte in either direction for this long
    /// is closed; > 0.
    pub tunnel_idle_timeout: Duration,
    /// Destinations the PAC file (`/proxy.pac`, `/wpad.dat`) sends `DIRECT`, in file order.
    pub pac_direct: Vec<PacDirect>,
    /// Client connections open at once on the proxy port (tunnels included); the next one is
    /// answered 503 and closed, and counted. >= 1.
    pub max_connections: usize,
}

/// One `proxy.pac_direct` entry: where a browser using the PAC file goes without the proxy.
///
/// Invariants: names are lower case, made of letters, digits, `-`, `_` and `.`, without empty
/// labels, so they can be written into the PAC file's JavaScript as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacDirect {
    /// `"intranet.example.org"`: exactly this host.
    Host(String),
    /// `"*.local"`: any host under this domain (the stored value is `local`), not the domain
    /// itself.
    Domain(String),
    /// `"10.0.0.0/8"`: hosts whose address (an IP literal, or the name resolved by the browser)
    /// is in this network.
    Net(ipnet::IpNet),
}

/// `[cache]`: where and how much to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// Cache directory, as written (relative paths are relative to the working directory);
    /// never empty.
    pub dir: PathBuf,
    /// Total bytes of stored bodies. 0 means nothing is stored.
    pub max_size: u64,
    /// Largest body stored, in bytes; `<= max_size`.
    pub max_object_size: u64,
    /// Send large stored bodies to clients and peers with `sendfile(2)` (Linux).
    pub sendfile: bool,
    /// The RFC 9213 target list: response fields whose directives this cache obeys instead of
    /// `Cache-Control` (first present and valid wins), and never forwards. Distinct valid field
    /// names, never `Cache-Control` or `Expires` (which it replaces); empty turns targeted cache
    /// control off.
    pub targeted: Vec<HeaderName>,
    /// Downloads into the cache at once (each holds a temporary file and an upstream
    /// connection); a miss beyond them is passed through unstored, and counted. >= 1.
    pub max_fills: usize,
    /// How far into an object a range request may begin and still start the download of the
    /// whole object in the background, when it is neither stored nor being fetched.
    pub range_fill: RangeFill,
}

/// `cache.range_fill`: whether a range request on an object that is neither stored nor being
/// fetched starts the download of the whole object in the background (its own bytes are
/// fetched as asked either way). The offset rule of Squid's `range_offset_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFill {
    /// Every such range starts the whole fill (`"whole"`, the default).
    Whole,
    /// None does: the range is fetched as asked and nothing is stored (`"none"`).
    None,
    /// A range whose first byte is at most this offset does; one beyond it, or a suffix range
    /// (`bytes=-N`, which begins near the end), is fetched as asked and nothing is stored.
    UpTo(u64),
}

/// `[upstream]`: how origins are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Parent proxy; `None` means direct connections.
    pub proxy: Option<ParentProxy>,
    /// Connect timeout; > 0.
    pub connect_timeout: Duration,
    /// Longest wait for the next response bytes; > 0.
    pub read_timeout: Duration,
    /// PEM file of extra CA certificates trusted for `https` upstreams, on top of the system
    /// bundle and the webpki roots; `None` (written `""`) means none. As written (relative to
    /// the working directory), never empty and never ending in `/`, `.` or `..`; not read here.
    pub ca_file: Option<PathBuf>,
}

/// A parent proxy from `upstream.proxy = "http://host:port"` (only `http://` parents).
///
/// Invariants: `host` is not empty and carries no brackets (an IPv6 literal is `::1`, so
/// `(host.as_str(), port)` can be handed to a resolver as is); `port` is in 1..=65535
/// (3128 when the URL names none); the URL had no credentials, path, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentProxy {
    pub host: String,
    pub port: u16,
}

impl ParentProxy {
    /// `host:port` as written in an authority (`Host` header, `CONNECT` target): IPv6 literals
    /// get their brackets back. RFC 9110 §7.2, RFC 3986 §3.2.2.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One `[[mirror]]` route: origin-form requests under `prefix` are fetched from `upstream`.
///
/// Invariants: `prefix` starts and ends with `/`, is a valid URI path without query or
/// fragment, is not under `/_peercache/`, and is unique among mirrors (exact comparison);
/// `upstream` is an absolute `http`/`https` URI without credentials, query or fragment whose
/// path ends with `/`, so `upstream + rest-of-path` is a well-formed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub prefix: String,
    pub upstream: Uri,
    /// Answer a group member's request for an object other live members hold with a 302 to
    /// them (a content server's route; default false; needs `peers.enabled`).
    pub redirect_to_peers: bool,
    /// Also route npm tarball paths that arrive without any mirror prefix
    /// (`/{name}/-/{file}.tgz`, `/@{scope}/{name}/-/{file}.tgz`: npm's `replace-registry-host`
    /// moves lockfile URLs onto the registry's host and drops its path) to this mirror.
    /// Invariant: true for at most one mirror.
    pub npm_tarballs: bool,
}

/// `[peers]`: the cache-sharing group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    pub enabled: bool,
    /// TCP (transfer API) and UDP (gossip) address; port != 0.
    pub listen: SocketAddr,
    /// Address the others use to reach this node; `None` means `listen`. Never a wildcard
    /// address or port 0; always `Some` when `enabled` and `listen` is a wildcard.
    pub advertise: Option<SocketAddr>,
    /// `host:port` strings as written, each checked for syntax (host name, IPv4 or `[IPv6]`,
    /// port 1..=65535), never resolved here.
    pub seeds: Vec<String>,
    /// Location label; never empty, at most [`MAX_SITE_LEN`] bytes.
    pub site: String,
    /// Cluster key file, as written (relative to the working directory); never empty.
    pub key_file: PathBuf,
    /// Simultaneous uploads to peers; >= 1.
    pub max_uploads: usize,
    /// Connect timeout towards a peer; > 0.
    pub connect_timeout: Duration,
    /// How members are found besides `seeds`.
    pub discover: Discover,
    /// `peers.profile`: which of foca's timing presets the gossip uses.
    pub profile: GossipProfile,
    /// Most holders a large body is copied from at once; 1..=[`MAX_PARALLEL_HOLDERS`] (1: one
    /// holder at a time).
    pub parallel_holders: usize,
    /// Piece of a copy from several holders, bytes: a multiple of [`PIECE_ALIGN`] within
    /// [`PIECE_SIZE_MIN`]..=[`PIECE_SIZE_MAX`]. A body shorter than two pieces comes from
    /// one holder.
    pub piece_size: u64,
    /// Cap on this node's uploads to peers, bytes per second, all uploads together; 0: none,
    /// else at least [`UPLOAD_RATE_MIN`].
    pub upload_rate: u64,
}

/// `peers.profile`: the gossip timing preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GossipProfile {
    /// LAN until an active member with another `peers.site` label shows up, WAN from then on.
    Auto,
    /// foca's LAN preset: probe every 1 s (500 ms to answer), Down after ~6 s of suspicion.
    Lan,
    /// foca's WAN preset: probe every 5 s (3 s to answer), Down after ~45 s of suspicion.
    Wan,
}

/// `peers.discover`: zero-config discovery of group members on the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discover {
    /// Seeds only.
    None,
    /// Announce and browse `_peercache._udp.local.` with multicast DNS (DNS-SD); what is found
    /// is only a candidate: it joins only if it holds the cluster key.
    Mdns,
}

/// `[intercept]`: the hosts whose `CONNECT` tunnels are decrypted and cached, and the CA that
/// signs the certificates shown to clients for them.
///
/// Invariants: `ca_cert` and `ca_key` are different paths, neither empty nor naming a
/// directory; as written (relative to the working directory), not read here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intercept {
    /// Host patterns to intercept; empty means interception is off (every tunnel is opaque).
    pub hosts: HostPatterns,
    /// The CA certificate (PEM): as written, or `<cache.dir>/ca/ca.pem` when written `""`.
    pub ca_cert: PathBuf,
    /// The CA private key (PEM, PKCS#8): as written, or `ca_cert` with the extension `.key`
    /// when written `""`.
    pub ca_key: PathBuf,
}

/// `[rules]` and `[[rule]]`: freshness rules for responses whose origin leaves it unsaid.
///
/// Precedence: the first rule whose pattern matches a key URL decides, and `user` rules come
/// before the presets (in `presets` order), so a user rule can override any preset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `rules.presets`: built-in rule sets, in file order; each at most once.
    pub presets: Vec<Preset>,
    /// `[[rule]]` entries in file order; empty by default.
    pub user: Vec<Rule>,
}

/// A built-in rule set for one kind of package repository (`rules.presets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Debian,
    Pypi,
    Npm,
    Cargo,
}

impl Preset {
    /// Every preset, in documentation order.
    pub const ALL: [Preset; 4] = [Preset::Debian, Preset::Pypi, Preset::Npm, Preset::Cargo];

    /// The name used in `rules.presets`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Debian => "debian",
            Preset::Pypi => "pypi",
            Preset::Npm => "npm",
            Preset::Cargo => "cargo",
        }
    }

    /// The preset called `name` (exact, lower case).
    pub fn from_name(name: &str) -> Option<Preset> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One `[[rule]]`: what to assume about responses whose cache key URL matches `pattern`.
///
/// Invariants: `fresh` and `immutable` are not both set, and at least one of `fresh`,
/// `immutable` and `key_fields` is; `fresh` is at most 2^31 seconds (the largest delta-seconds,
/// RFC 9111 §1.2.2); `key_fields` are distinct field names (lower case, as `HeaderName` keeps
/// them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub pattern: Pattern,
    /// Freshness lifetime for a response that carries no explicit freshness.
    pub fresh: Option<Duration>,
    /// The URL names bytes that never change: a 200 without explicit freshness is always fresh.
    pub immutable: bool,
    /// Request fields added to the cache key, as if the response had listed them in `Vary`.
    pub key_fields: Vec<HeaderName>,
}

/// A regular expression (the `regex` crate's syntax), compared by its source text.
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    /// Compiles `s`; the error (one line) says what is wrong.
    pub fn new(s: &str) -> Result<Pattern, String> {
        regex::Regex::new(s).map(Pattern).map_err(|e| {
            // A syntax error is several lines (the pattern, a caret, "error: …"): keep the last.
            let text = e.to_string();
            let last = text.lines().rev().map(str::trim).find(|l| !l.is_empty());
            let detail = last.unwrap_or_default();
            let detail = detail.strip_prefix("error: ").unwrap_or(detail);
            format!("invalid regular expression {s:?}: {detail}")
        })
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

/// `[log]`: diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// One of `error`, `warn`, `info`, `debug`, `trace`, always lower case.
    pub level: String,
    /// One access-log line per request on stdout.
    pub access: bool,
}

impl Config {
    /// The embedded defaults ([`DEFAULT_TOML`]).
    ///
    /// Cannot fail: `tests::defaults_parse_to_documented_values` proves the embedded text parses,
    /// so the panic below is unreachable in any build whose tests pass.
    pub fn default_config() -> Config {
        match Self::parse("", DEFAULT_ORIGIN) {
            Ok(config) => config,
            Err(errors) => panic!("the embedded config/peercache.toml is invalid:\n{errors}"),
        }
    }

    /// Parses a config file's text. Keys absent from `text` take the embedded default; a
    /// `[[mirror]]` list in `text` replaces the default (empty) list. `origin` names the file in
    /// messages. On failure returns every problem found (syntax errors stop at the first one,
    /// since nothing after it can be read reliably), ordered by line.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        let mut problems = Vec::new();
        let mut raw = Raw::default();
        Reader::new(DEFAULT_ORIGIN, DEFAULT_TOML, false, &mut problems).read(&mut raw);
        Reader::new(origin, text, true, &mut problems).read(&mut raw);
        let config = resolve(raw, &mut problems);
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigErrors::from_problems(problems)),
        }
    }

    /// Reads the file at `path` (the only I/O in this module), then [`Config::parse`]s it with
    /// the path as origin. An unreadable or non-UTF-8 file is one error.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        let one = |line: Option<usize>, message: String| {
            ConfigErrors(vec![ConfigError {
                origin: origin.clone(),
                line,
                key: String::new(),
                message,
            }])
        };
        let bytes = std::fs::read(path).map_err(|e| one(None, format!("cannot read: {e}")))?;
        match String::from_utf8(bytes) {
            Ok(text) => Self::parse(&text, &origin),
            Err(e) => {
                let bad_at = e.utf8_error().valid_up_to();
                let line = line_at(e.as_bytes(), bad_at);
                Err(one(
                    Some(line),
                    "not valid UTF-8 (TOML files are UTF-8)".into(),
                ))
            }
        }
    }
}

/// Every problem found in a configuration, not just the first, ordered by line.
///
/// Display: one line per error, `origin:line: key: message`, e.g.
/// `peercache.toml:12: cache.max_size: invalid size "10XB" (use bytes or e.g. "512MiB", "10GiB")`.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One configuration problem.
///
/// `origin` names the file; `line` is 1-based (`None` only for file-level problems such as an
/// unreadable file); `key` is the dotted path (`proxy.listen`, `mirror[0].prefix`, array
/// elements as `proxy.allow[2]`, 0-based), empty only for TOML syntax and file errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn from_problems(mut problems: Vec<Problem<'_>>) -> Self {
        // Built-in defaults first (never expected), then the user's file; by line within each.
        problems.sort_by_key(|p| (p.loc.user, p.loc.line.unwrap_or(0)));
        ConfigErrors(
            problems
                .into_iter()
                .map(|p| ConfigError {
                    origin: p.loc.origin.to_string(),
                    line: p.loc.line,
                    key: p.key,
                    message: p.message,
                })
                .collect(),
        )
    }
}

//! Config: `peercache.toml` text → validated [`Config`], every error with line and key; pure except [`Config::load`]; never binds or resolves.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use toml_edit::{ImDocument, Item, TableLike, Value};

use crate::front::acl::{self, Acl};

/// The documented defaults. Every key a user's file leaves out takes its value from here.
pub const DEFAULT_TOML: &str = include_str!("../config/peercache.toml");

/// How errors in [`DEFAULT_TOML`] itself would be attributed (a test proves there are none).
const DEFAULT_ORIGIN: &str = "config/peercache.toml (built in)";

/// Top-level tables, in documentation order (used in "unknown key" messages).
const TABLES: &[&str] = &["proxy", "cache", "upstream", "mirror", "peers", "log"];
const PROXY_KEYS: &[&str] = &["listen", "allow", "connect_ports"];
const CACHE_KEYS: &[&str] = &["dir", "max_size", "max_object_size"];
const UPSTREAM_KEYS: &[&str] = &["proxy", "connect_timeout", "read_timeout"];
const MIRROR_KEYS: &[&str] = &["prefix", "upstream", "redirect_to_peers"];
const PEERS_KEYS: &[&str] = &[
    "enabled",
    "listen",
    "advertise",
    "seeds",
    "site",
    "key_file",
    "max_uploads",
    "connect_timeout",
];
const LOG_KEYS: &[&str] = &["level", "access"];
const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// Path prefix reserved for the admin pages; no mirror may claim it.
const ADMIN_PREFIX: &str = "/_peercache/";

/// Port of a parent proxy URL that names none (the Squid convention).
const DEFAULT_PARENT_PORT: u16 = 3128;

/// A complete, validated configuration.
///
/// Invariants (checked by [`Config::parse`]): every port is in 1..=65535,
/// `cache.max_object_size <= cache.max_size`, every timeout is > 0, mirror prefixes are unique,
/// and when peering is enabled on a wildcard `peers.listen`, `peers.advertise` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub proxy: Proxy,
    pub cache: Cache,
    pub upstream: Upstream,
    /// `[[mirror]]` routes in file order; empty by default.
    pub mirrors: Vec<Mirror>,
    pub peers: Peers,
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
    /// Answer group members with a 302 to a member holding the object (default false).
    pub redirect_to_peers: bool,
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
    /// Location label; never empty.
    pub site: String,
    /// Cluster key file, as written (relative to the working directory); never empty.
    pub key_file: PathBuf,
    /// Simultaneous uploads to peers; >= 1.
    pub max_uploads: usize,
    /// Connect timeout towards a peer; > 0.
    pub connect_timeout: Duration,
}

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

/// Parses a size: an integer number of bytes (`"512"`), or a number with a unit, optionally
/// separated by one space: `B`, `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024) or `KB`/`MB`/`GB`/`TB`
/// (powers of 1000), case-insensitive. Whole numbers only. Rejects negative, empty, unit-only
/// and anything above `u64::MAX` bytes, with a message naming the input. Never panics.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size {s:?} (use bytes or e.g. \"512MiB\", \"10GiB\")");
    let q = Quantity::split(s).ok_or_else(invalid)?;
    let multiplier: u64 = match q.unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    if q.negative {
        return Err(format!("invalid size {s:?}: must not be negative"));
    }
    q.value
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("invalid size {s:?}: too large (at most {} bytes)", u64::MAX))
}

/// Parses a duration: `"250ms"`, `"5s"`, `"2m"`, `"1h"` (unit case-insensitive, optionally
/// preceded by one space) or a bare integer number of seconds (`"30"`). Whole numbers only.
/// `"0"` is accepted here (callers that need > 0 check it). Rejects negative, empty, unit-only
/// and overflowing input with a message naming it. Never panics.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {s:?} \
             (use e.g. \"250ms\", \"5s\", \"2m\", \"1h\" or a number of seconds)"
        )
    };
    let q = Quantity::split(s).ok_or_else(invalid)?;
    // Seconds per unit; `None` for milliseconds.
    let seconds_per_unit: Option<u64> = match q.unit.to_ascii_lowercase().as_str() {
        "ms" => None,
        "" | "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        _ => return Err(invalid()),
    };
    if q.negative {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    let too_large = || format!("invalid duration {s:?}: too large");
    let n = q.value.ok_or_else(too_large)?;
    match seconds_per_unit {
        None => Ok(Duration::from_millis(n)),
        Some(k) => n
            .checked_mul(k)
            .map(Duration::from_secs)
            .ok_or_else(too_large),
    }
}

/// A whole number followed by an optional unit, as in `"10GiB"`, `"250 ms"`, `"-5s"`.
struct Quantity<'s> {
    negative: bool,
    /// `None` when the digits overflow `u64`.
    value: Option<u64>,
    /// ASCII letters after the number (and one optional space); possibly empty.
    unit: &'s str,
}

impl<'s> Quantity<'s> {
    /// Splits `"[-]<digits>[ ]<letters>"`, ignoring surrounding whitespace; `None` when there
    /// are no digits or anything else is present.
    fn split(s: &'s str) -> Option<Self> {
        let s = s.trim();
        let (negative, unsigned) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let digits_end = unsigned
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(unsigned.len());
        let (digits, rest) = unsigned.split_at(digits_end);
        let unit = rest.strip_prefix(' ').unwrap_or(rest);
        if digits.is_empty() || !unit.chars().all(|c| c.is_ascii_alphabetic()) {
            return None;
        }
        Some(Quantity {
            negative,
            // Only overflow can fail: `digits` is a non-empty run of ASCII digits.
            value: digits.parse().ok(),
            unit,
        })
    }
}

/// Where a value came from: the built-in defaults or the user's file, and its line.
#[derive(Debug, Clone, Copy)]
struct Loc<'a> {
    origin: &'a str,
    line: Option<usize>,
    user: bool,
}

impl Loc<'_> {
    /// Of two locations involved in one problem, the one to blame: the first unless only the
    /// second was written by the user.
    fn blame<'a>(first: Loc<'a>, second: Loc<'a>) -> Loc<'a> {
        if first.user || !second.user {
            first
        } else {
            second
        }
    }
}

/// One problem before it becomes a [`ConfigError`].
struct Problem<'a> {
    loc: Loc<'a>,
    key: String,
    message: String,
}

/// The state of one key after reading the defaults and the user's file.
#[derive(Default)]
enum Slot<'a, T> {
    /// No layer set it.
    #[default]
    Missing,
    /// A layer set it to a bad value (already reported): skip cross-key checks on it.
    Invalid,
    Set(T, Loc<'a>),
}

impl<'a, T> Slot<'a, T> {
    fn put(&mut self, value: Option<T>, loc: Loc<'a>) {
        *self = match value {
            Some(value) => Slot::Set(value, loc),
            None => Slot::Invalid,
        };
    }

    fn get(&self) -> Option<(&T, Loc<'a>)> {
        match self {
            Slot::Set(value, loc) => Some((value, *loc)),
            Slot::Missing | Slot::Invalid => None,
        }
    }

    /// The value, reporting a key that no layer set (only possible if the defaults lack it).
    fn take(self, key: &str, problems: &mut Vec<Problem<'a>>) -> Option<T> {
        match self {
            Slot::Set(value, _) => Some(value),
            Slot::Invalid => None,
            Slot::Missing => {
                problems.push(Problem {
                    loc: Loc {
                        origin: DEFAULT_ORIGIN,
                        line: None,
                        user: false,
                    },
                    key: key.to_string(),
                    message: "missing, and the built-in defaults have no value for it".into(),
                });
                None
            }
        }
    }
}

/// Every key, as read so far (defaults first, then the user's file on top).
#[derive(Default)]
struct Raw<'a> {
    proxy_listen: Slot<'a, SocketAddr>,
    proxy_allow: Slot<'a, Acl>,
    proxy_connect_ports: Slot<'a, Vec<u16>>,
    cache_dir: Slot<'a, PathBuf>,
    cache_max_size: Slot<'a, u64>,
    cache_max_object_size: Slot<'a, u64>,
    upstream_proxy: Slot<'a, Option<ParentProxy>>,
    upstream_connect_timeout: Slot<'a, Duration>,
    upstream_read_timeout: Slot<'a, Duration>,
    mirrors: Slot<'a, Vec<Mirror>>,
    peers_enabled: Slot<'a, bool>,
    peers_listen: Slot<'a, SocketAddr>,
    peers_advertise: Slot<'a, Option<SocketAddr>>,
    peers_seeds: Slot<'a, Vec<String>>,
    peers_site: Slot<'a, String>,
    peers_key_file: Slot<'a, PathBuf>,
    peers_max_uploads: Slot<'a, usize>,
    peers_connect_timeout: Slot<'a, Duration>,
    log_level: Slot<'a, String>,
    log_access: Slot<'a, bool>,
}

/// Turns the layered keys into a [`Config`], checking the rules that span several keys.
/// Returns `None` when a key is missing or invalid (already reported).
fn resolve<'a>(raw: Raw<'a>, problems: &mut Vec<Problem<'a>>) -> Option<Config> {
    check_sizes(&raw, problems);
    check_peers(&raw, problems);
    let p = problems;
    let proxy = (
        raw.proxy_listen.take("proxy.listen", p),
        raw.proxy_allow.take("proxy.allow", p),
        raw.proxy_connect_ports.take("proxy.connect_ports", p),
    );
    let cache = (
        raw.cache_dir.take("cache.dir", p),
        raw.cache_max_size.take("cache.max_size", p),
        raw.cache_max_object_size.take("cache.max_object_size", p),
    );
    let upstream = (
        raw.upstream_proxy.take("upstream.proxy", p),
        raw.upstream_connect_timeout
            .take("upstream.connect_timeout", p),
        raw.upstream_read_timeout.take("upstream.read_timeout", p),
    );
    let mirrors = match raw.mirrors {
        Slot::Missing => Some(Vec::new()),
        other => other.take("mirror", p),
    };
    let peers = (
        raw.peers_enabled.take("peers.enabled", p),
        raw.peers_listen.take("peers.listen", p),
        raw.peers_advertise.take("peers.advertise", p),
        raw.peers_seeds.take("peers.seeds", p),
        raw.peers_site.take("peers.site", p),
        raw.peers_key_file.take("peers.key_file", p),
        raw.peers_max_uploads.take("peers.max_uploads", p),
        raw.peers_connect_timeout.take("peers.connect_timeout", p),
    );
    let log = (
        raw.log_level.take("log.level", p),
        raw.log_access.take("log.access", p),
    );
    Some(Config {
        proxy: Proxy {
            listen: proxy.0?,
            allow: proxy.1?,
            connect_ports: proxy.2?,
        },
        cache: Cache {
            dir: cache.0?,
            max_size: cache.1?,
            max_object_size: cache.2?,
        },
        upstream: Upstream {
            proxy: upstream.0?,
            connect_timeout: upstream.1?,
            read_timeout: upstream.2?,
        },
        mirrors: mirrors?,
        peers: Peers {
            enabled: peers.0?,
            listen: peers.1?,
            advertise: peers.2?,
            seeds: peers.3?,
            site: peers.4?,
            key_file: peers.5?,
            max_uploads: peers.6?,
            connect_timeout: peers.7?,
        },
        log: Log {
            level: log.0?,
            access: log.1?,
        },
    })
}

/// `cache.max_object_size <= cache.max_size`, blamed on whichever the user wrote.
fn check_sizes<'a>(raw: &Raw<'a>, problems: &mut Vec<Problem<'a>>) {
    let (Some((&max, max_loc)), Some((&object, object_loc))) =
        (raw.cache_max_size.get(), raw.cache_max_object_size.get())
    else {
        return;
    };
    if object <= max {
        return;
    }
    let blame_object = object_loc.user || !max_loc.user;
    let loc = if blame_object { object_loc } else { max_loc };
    let (key, message) = if blame_object {
        (
            "cache.max_object_size",
            format!(
                "{} exceeds cache.max_size ({})",
                show_size(object),
                show_size(max)
            ),
        )
    } else {
        (
            "cache.max_size",
            format!(
                "{} is less than cache.max_object_size ({})",
                show_size(max),
                show_size(object)
            ),
        )
    };
    problems.push(Problem {
        loc,
        key: key.into(),
        message,
    });
}

/// With peering on: a wildcard `peers.listen` needs `peers.advertise`, and the peer listener
/// must not collide with the proxy listener.
fn check_peers<'a>(raw: &Raw<'a>, problems: &mut Vec<Problem<'a>>) {
    let (Some((&true, enabled_loc)), Some((&listen, listen_loc))) =
        (raw.peers_enabled.get(), raw.peers_listen.get())
    else {
        return;
    };
    if let Some((None, advertise_loc)) = raw.peers_advertise.get() {
        if listen.ip().is_unspecified() {
            let loc = Loc::blame(advertise_loc, Loc::blame(enabled_loc, listen_loc));
            problems.push(Problem {
                loc,
                key: "peers.advertise".into(),
                message: format!(
                    "required when peers.enabled = true and peers.listen ({listen}) is a \
                     wildcard address: set the address other nodes use to reach this one, \
                     e.g. \"192.168.1.10:{}\"",
                    listen.port()
                ),
            });
        }
    }
    if let Some((&proxy, proxy_loc)) = raw.proxy_listen.get() {
        let (a, b) = (proxy.ip(), listen.ip());
        let dual_stack_any = |ip: IpAddr| matches!(ip, IpAddr::V6(v6) if v6.is_unspecified());
        let overlap = a == b
            || (a.is_ipv4() == b.is_ipv4() && (a.is_unspecified() || b.is_unspecified()))
            || dual_stack_any(a)
            || dual_stack_any(b);
        if proxy.port() == listen.port() && overlap {
            problems.push(Problem {
                loc: Loc::blame(listen_loc, proxy_loc),
                key: "peers.listen".into(),
                message: format!("{listen} collides with proxy.listen ({proxy}): use another port"),
            });
        }
    }
}

/// A size for messages: `4GiB`, `10GB` when exact, else `N bytes`.
fn show_size(n: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "KB"),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| n >= *unit && n.is_multiple_of(*unit))
        .map(|(unit, name)| format!("{}{name}", n / unit))
        .unwrap_or_else(|| format!("{n} bytes"))
}

/// A TOML item or an array element: what a key's value can be.
#[derive(Clone, Copy)]
enum Node<'d> {
    Item(&'d Item),
    Value(&'d Value),
}

impl<'d> Node<'d> {
    fn value(self) -> Option<&'d Value> {
        match self {
            Node::Item(item) => item.as_value(),
            Node::Value(value) => Some(value),
        }
    }

    fn table_like(self) -> Option<&'d dyn TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Value(value) => value.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            Node::Item(item) => item.type_name(),
            Node::Value(value) => value.type_name(),
        }
    }
}

/// One key (or array element) being read: its dotted path, its value and where both are.
struct Field<'a, 'd> {
    path: String,
    node: Node<'d>,
    /// The key's line (unknown-key errors point here).
    key_loc: Loc<'a>,
    /// The value's line, falling back to the key's (value errors point here).
    value_loc: Loc<'a>,
}

/// Reads one TOML text (one layer) into [`Raw`], reporting problems as it goes.
struct Reader<'a, 'p> {
    origin: &'a str,
    text: &'a str,
    user: bool,
    problems: &'p mut Vec<Problem<'a>>,
}

impl<'a, 'p> Reader<'a, 'p> {
    fn new(origin: &'a str, text: &'a str, user: bool, problems: &'p mut Vec<Problem<'a>>) -> Self {
        Reader {
            origin,
            text,
            user,
            problems,
        }
    }

    fn loc(&self, span: Option<Range<usize>>) -> Loc<'a> {
        Loc {
            origin: self.origin,
            line: span.map(|s| line_at(self.text.as_bytes(), s.start)),
            user: self.user,
        }
    }

    fn report(&mut self, loc: Loc<'a>, key: &str, message: String) {
        self.problems.push(Problem {
            loc,
            key: key.to_string(),
            message,
        });
    }

    /// Reads the whole text; a syntax error is reported alone.
    fn read(mut self, raw: &mut Raw<'a>) {
        let doc = match ImDocument::parse(self.text) {
            Ok(doc) => doc,
            Err(e) => {
                let loc = self.loc(e.span());
                let message = e.message().trim().replace('\n', "; ");
                self.report(loc, "", format!("TOML syntax error: {message}"));
                return;
            }
        };
        let root: &dyn TableLike = doc.as_table();
        for (name, item) in root.iter() {
            let f = self.field(root, "", name, item);
            match name {
                "proxy" => self.read_table(&f, PROXY_KEYS, raw, Self::proxy_key),
                "cache" => self.read_table(&f, CACHE_KEYS, raw, Self::cache_key),
                "upstream" => self.read_table(&f, UPSTREAM_KEYS, raw, Self::upstream_key),
                "mirror" => raw.mirrors.put(self.mirrors(&f), f.value_loc),
                "peers" => self.read_table(&f, PEERS_KEYS, raw, Self::peers_key),
                "log" => self.read_table(&f, LOG_KEYS, raw, Self::log_key),
                _ => self.unknown(&f, TABLES),
            }
        }
    }

    /// The field for `name` in `table`, whose own path is `parent` ("" for the root).
    fn field<'d>(
        &self,
        table: &'d dyn TableLike,
        parent: &str,
        name: &str,
        item: &'d Item,
    ) -> Field<'a, 'd> {
        let key_loc = self.loc(table.get_key_value(name).and_then(|(k, _)| k.span()));
        let value_loc = match item.span() {
            Some(span) => self.loc(Some(span)),
            None => key_loc,
        };
        let shown = show_key(name);
        Field {
            path: if parent.is_empty() {
                shown
            } else {
                format!("{parent}.{shown}")
            },
            node: Node::Item(item),
            key_loc,
            value_loc,
        }
    }

    /// Reads a table of known keys, dispatching each key to `read_key`; `read_key` returns
    /// false for a key it does not know.
    fn read_table(
        &mut self,
        f: &Field<'a, '_>,
        keys: &[&str],
        raw: &mut Raw<'a>,
        read_key: fn(&mut Self, &str, &Field<'a, '_>, &mut Raw<'a>) -> bool,
    ) {
        let Some(table) = self.table(f) else {
            return;
        };
        for (name, item) in table.iter() {
            let key = self.field(table, &f.path, name, item);
            if !read_key(self, name, &key, raw) {
                self.unknown(&key, keys);
            }
        }
    }

    fn proxy_key(&mut self, name: &str, f: &Field<'a, '_>, raw: &mut Raw<'a>) -> bool {
        let loc = f.value_loc;
        match name {
            "listen" => raw.proxy_listen.put(self.socket_addr(f), loc),
            "allow" => raw.proxy_allow.put(self.acl(f), loc),
            "connect_ports" => raw.proxy_connect_ports.put(self.ports(f), loc),
            _ => return false,
        }
        true
    }

    fn cache_key(&mut self, name: &str, f: &Field<'a, '_>, raw: &mut Raw<'a>) -> bool {
        let loc = f.value_loc;
        match name {
            "dir" => raw.cache_dir.put(self.path(f), loc),
            "max_size" => raw.cache_max_size.put(self.size(f), loc),
            "max_object_size" => raw.cache_max_object_size.put(self.size(f), loc),
            _ => return false,
        }
        true
    }

    fn upstream_key(&mut self, name: &str, f: &Field<'a, '_>, raw: &mut Raw<'a>) -> bool {
        let loc = f.value_loc;
        match name {
            "proxy" => {
                let parent = self
                    .string(f)
                    .and_then(|s| self.check(f, parse_parent_proxy(s)));
                raw.upstream_proxy.put(parent, loc);
            }
            "connect_timeout" => raw.upstream_connect_timeout.put(self.timeout(f), loc),
            "read_timeout" => raw.upstream_read_timeout.put(self.timeout(f), loc),
            _ => return false,
        }
        true
    }

    fn peers_key(&mut self, name: &str, f: &Field<'a, '_>, raw: &mut Raw<'a>) -> bool {
        let loc = f.value_loc;
        match name {
            "enabled" => raw.peers_enabled.put(self.boolean(f), loc),
            "listen" => raw.peers_listen.put(self.socket_addr(f), loc),
            "advertise" => {
                let advertise = self
                    .string(f)
                    .and_then(|s| self.check(f, parse_advertise(s)));
                raw.peers_advertise.put(advertise, loc);
            }
            "seeds" => raw.peers_seeds.put(self.seeds(f), loc),
            "site" => {
                let site = self.string(f).and_then(|s| {
                    let site = non_empty(s).map(str::to_string);
                    self.check(f, site)
                });
                raw.peers_site.put(site, loc);
            }
            "key_file" => raw.peers_key_file.put(self.path(f), loc),
            "max_uploads" => {
                let n = self.integer(f).and_then(|n| {
                    let n = match usize::try_from(n) {
                        Ok(n) if n >= 1 => Ok(n),
                        _ => Err(format!("must be at least 1, got {n}")),
                    };
                    self.check(f, n)
                });
                raw.peers_max_uploads.put(n, loc);
            }
            "connect_timeout" => raw.peers_connect_timeout.put(self.timeout(f), loc),
            _ => return false,
        }
        true
    }

    fn log_key(&mut self, name: &str, f: &Field<'a, '_>, raw: &mut Raw<'a>) -> bool {
        let loc = f.value_loc;
        match name {
            "level" => {
                let level = self.string(f).and_then(|s| {
                    let lower = s.to_ascii_lowercase();
                    let level = if LOG_LEVELS.contains(&lower.as_str()) {
                        Ok(lower)
                    } else {
                        Err(format!(
                            "invalid level {s:?} (expected one of: {})",
                            LOG_LEVELS.join(", ")
                        ))
                    };
                    self.check(f, level)
                });
                raw.log_level.put(level, loc);
            }
            "access" => raw.log_access.put(self.boolean(f), loc),
            _ => return false,
        }
        true
    }

    /// `[[mirror]]` tables (or `mirror = [{ ... }]`): each entry validated, prefixes unique.
    fn mirrors(&mut self, f: &Field<'a, '_>) -> Option<Vec<Mirror>> {
        // (index in the array, entry, where it starts)
        let mut entries: Vec<(usize, &dyn TableLike, Loc<'a>)> = Vec::new();
        let mut ok = true;
        match f.node {
            Node::Item(Item::ArrayOfTables(tables)) => {
                for (i, table) in tables.iter().enumerate() {
                    entries.push((i, table as &dyn TableLike, self.loc(table.span())));
                }
            }
            Node::Item(Item::Value(Value::Array(array))) => {
                for (i, value) in array.iter().enumerate() {
                    let loc = self.loc(value.span());
                    match value.as_inline_table() {
                        Some(table) => entries.push((i, table as &dyn TableLike, loc)),
                        None => {
                            let message = format!("expected a table, found {}", value.type_name());
                            self.report(loc, &format!("mirror[{i}]"), message);
                            ok = false;
                        }
                    }
                }
            }
            other => {
                let message = format!(
                    "expected [[mirror]] tables (an array of tables), found {}",
                    other.type_name()
                );
                self.report(f.value_loc, &f.path, message);
                return None;
            }
        }
        let mut seen = Vec::new();
        let mut mirrors = Vec::new();
        for (i, table, loc) in entries {
            match self.mirror(i, table, loc, &mut seen) {
                Some(mirror) => mirrors.push(mirror),
                None => ok = false,
            }
        }
        ok.then_some(mirrors)
    }

    /// One mirror entry, index `i`, starting at `loc`. `seen` holds the valid prefixes of the
    /// entries before it (prefix, index, line), so a duplicate is reported even when the entry
    /// has other problems.
    fn mirror(
        &mut self,
        i: usize,
        table: &dyn TableLike,
        loc: Loc<'a>,
        seen: &mut Vec<(String, usize, Option<usize>)>,
    ) -> Option<Mirror> {
        let path = format!("mirror[{i}]");
        let mut prefix = Slot::Missing;
        let mut upstream = Slot::Missing;
        let mut redirect_to_peers = Slot::Set(false, loc);
        for (name, item) in table.iter() {
            let f = self.field(table, &path, name, item);
            match name {
                "prefix" => {
                    let p = self
                        .string(&f)
                        .and_then(|s| self.check(&f, parse_prefix(s)))
                        .and_then(|p| self.unique_prefix(&f, p, i, seen));
                    prefix.put(p, f.value_loc);
                }
                "upstream" => {
                    let u = self
                        .string(&f)
                        .and_then(|s| self.check(&f, parse_upstream(s)));
                    upstream.put(u, f.value_loc);
                }
                "redirect_to_peers" => redirect_to_peers.put(self.boolean(&f), f.value_loc),
                _ => self.unknown(&f, MIRROR_KEYS),
            }
        }
        for (missing, key) in [
            (matches!(prefix, Slot::Missing), "prefix"),
            (matches!(upstream, Slot::Missing), "upstream"),
        ] {
            if missing {
                let message = "missing (every [[mirror]] needs prefix and upstream)".into();
                self.report(loc, &format!("{path}.{key}"), message);
            }
        }
        match (prefix, upstream, redirect_to_peers) {
            (Slot::Set(prefix, _), Slot::Set(upstream, _), Slot::Set(redirect, _)) => {
                Some(Mirror {
                    prefix,
                    upstream,
                    redirect_to_peers: redirect,
                })
            }
            _ => None,
        }
    }

    /// Passes `prefix` through if no earlier mirror in `seen` uses it, recording it; else
    /// reports the duplicate, naming the first user.
    fn unique_prefix(
        &mut self,
        f: &Field<'a, '_>,
        prefix: String,
        i: usize,
        seen: &mut Vec<(String, usize, Option<usize>)>,
    ) -> Option<String> {
        let Some((_, j, line)) = seen.iter().find(|(p, _, _)| *p == prefix) else {
            seen.push((prefix.clone(), i, f.value_loc.line));
            return Some(prefix);
        };
        let line = line.map(|l| format!(" on line {l}")).unwrap_or_default();
        let message = format!("duplicate prefix {prefix:?} (also used by mirror[{j}]{line})");
        self.report(f.value_loc, &f.path, message);
        None
    }

    /// Reports an unknown key or table, listing the known ones.
    fn unknown(&mut self, f: &Field<'a, '_>, expected: &[&str]) {
        let what = if f.node.table_like().is_some()
            || matches!(f.node, Node::Item(Item::ArrayOfTables(_)))
        {
            "unknown table"
        } else {
            "unknown key"
        };
        let message = format!("{what} (expected one of: {})", expected.join(", "));
        self.report(f.key_loc, &f.path, message);
    }

    /// Reports `Err` at the field's value; passes `Ok` through.
    fn check<T>(&mut self, f: &Field<'a, '_>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.report(f.value_loc, &f.path, message);
                None
            }
        }
    }

    fn wrong_type<T>(&mut self, f: &Field<'a, '_>, expected: &str) -> Option<T> {
        let message = format!("expected {expected}, found {}", f.node.type_name());
        self.report(f.value_loc, &f.path, message);
        None
    }

    fn table<'d>(&mut self, f: &Field<'a, 'd>) -> Option<&'d dyn TableLike> {
        match f.node.table_like() {
            Some(table) => Some(table),
            None => self.wrong_type(f, "a table"),
        }
    }

    fn string<'d>(&mut self, f: &Field<'a, 'd>) -> Option<&'d str> {
        match f.node.value().and_then(Value::as_str) {
            Some(s) => Some(s),
            None => self.wrong_type(f, "a string"),
        }
    }

    fn boolean(&mut self, f: &Field<'a, '_>) -> Option<bool> {
        match f.node.value().and_then(Value::as_bool) {
            Some(b) => Some(b),
            None => self.wrong_type(f, "a boolean (true or false)"),
        }
    }

    fn integer(&mut self, f: &Field<'a, '_>) -> Option<i64> {
        match f.node.value().and_then(Value::as_integer) {
            Some(n) => Some(n),
            None => self.wrong_type(f, "an integer"),
        }
    }

    /// The elements of an array value, each as a field named `path[i]`.
    fn array<'d>(&mut self, f: &Field<'a, 'd>, expected: &str) -> Option<Vec<Field<'a, 'd>>> {
        let Some(array) = f.node.value().and_then(Value::as_array) else {
            return self.wrong_type(f, expected);
        };
        let elements = array
            .iter()
            .enumerate()
            .map(|(i, value)| Field {
                path: format!("{}[{i}]", f.path),
                node: Node::Value(value),
                key_loc: f.key_loc,
                value_loc: match value.span() {
                    Some(span) => self.loc(Some(span)),
                    None => f.value_loc,
                },
            })
            .collect();
        Some(elements)
    }

    /// Reads every element with `read`; `None` if any failed (each failure reported).
    fn each<'d, T>(
        &mut self,
        f: &Field<'a, 'd>,
        expected: &str,
        mut read: impl FnMut(&mut Self, &Field<'a, 'd>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let elements = self.array(f, expected)?;
        let read: Vec<Option<T>> = elements.iter().map(|e| read(self, e)).collect();
        read.into_iter().collect()
    }

    fn socket_addr(&mut self, f: &Field<'a, '_>) -> Option<SocketAddr> {
        let s = self.string(f)?;
        self.check(f, parse_socket_addr(s))
    }

    fn path(&mut self, f: &Field<'a, '_>) -> Option<PathBuf> {
        let s = self.string(f)?;
        self.check(f, non_empty(s).map(PathBuf::from))
    }

    fn port(&mut self, f: &Field<'a, '_>) -> Option<u16> {
        let n = self.integer(f)?;
        self.check(f, check_port(n))
    }

    fn ports(&mut self, f: &Field<'a, '_>) -> Option<Vec<u16>> {
        self.each(f, "an array of port numbers", Self::port)
    }

    fn acl(&mut self, f: &Field<'a, '_>) -> Option<Acl> {
        let nets = self.each(f, "an array of CIDR strings", |r, e| {
            let s = r.string(e)?;
            r.check(e, acl::parse_net(s))
        })?;
        Some(Acl::new(nets))
    }

    fn seeds(&mut self, f: &Field<'a, '_>) -> Option<Vec<String>> {
        self.each(f, "an array of \"host:port\" strings", |r, e| {
            let s = r.string(e)?;
            r.check(e, parse_seed(s))
        })
    }

    /// A size: a non-negative integer (bytes) or a string for [`parse_size`].
    fn size(&mut self, f: &Field<'a, '_>) -> Option<u64> {
        let result = match f.node.value() {
            Some(Value::Integer(n)) => {
                let n = *n.value();
                u64::try_from(n).map_err(|_| format!("invalid size {n}: must not be negative"))
            }
            Some(Value::String(s)) => parse_size(s.value()),
            _ => return self.wrong_type(f, "a size (integer bytes or a string like \"10GiB\")"),
        };
        self.check(f, result)
    }

    /// A timeout: a duration (integer seconds or a string for [`parse_duration`]) that is > 0.
    fn timeout(&mut self, f: &Field<'a, '_>) -> Option<Duration> {
        let result = match f.node.value() {
            Some(Value::Integer(n)) => {
                let n = *n.value();
                u64::try_from(n)
                    .map(Duration::from_secs)
                    .map_err(|_| format!("invalid duration {n}: must not be negative"))
            }
            Some(Value::String(s)) => parse_duration(s.value()),
            _ => {
                let expected = "a duration (a string like \"5s\" or an integer number of seconds)";
                return self.wrong_type(f, expected);
            }
        };
        let result = result.and_then(|d| {
            if d.is_zero() {
                Err("must be greater than 0".to_string())
            } else {
                Ok(d)
            }
        });
        self.check(f, result)
    }
}

/// A key as shown in a dotted path: bare when TOML would allow it bare, else quoted.
fn show_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// 1-based line of byte `offset` in `text` (clamped to the text).
fn line_at(text: &[u8], offset: usize) -> usize {
    let end = offset.min(text.len());
    text[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

fn non_empty(s: &str) -> Result<&str, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s)
    }
}

fn check_port(n: i64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!("invalid port {n} (must be 1..=65535)")),
    }
}

/// A listen address: `ip:port` or `[ipv6]:port`, port != 0; no host names (no lookups here).
fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|_| {
        format!(
            "invalid address {s:?} (expected \"ip:port\", e.g. \"127.0.0.1:3128\" or \
             \"[::1]:3128\"; host names are not allowed)"
        )
    })?;
    if addr.port() == 0 {
        return Err(format!("invalid address {s:?}: port must be 1..=65535"));
    }
    Ok(addr)
}

/// `peers.advertise`: empty means none; else a socket address that others can dial.
fn parse_advertise(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let addr = parse_socket_addr(s)?;
    if addr.ip().is_unspecified() {
        return Err(format!(
            "{s:?} is a wildcard address; advertise one the other nodes can reach"
        ));
    }
    Ok(Some(addr))
}

/// Splits `host:port` / `[v6]:port` (port optional) into a bracket-free host and the port text.
/// Checks the host's syntax (host name, IPv4 or bracketed IPv6), not the port.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let name_ok = |h: &str| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    if !s.starts_with('[') && !name_ok(host) {
        return None;
    }
    Some((host, port))
}

fn parse_port_text(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|&p| p != 0)
}

/// A seed: `host:port` with a host name, IPv4 or `[IPv6]` and a port in 1..=65535.
fn parse_seed(s: &str) -> Result<String, String> {
    let valid = match split_host_port(s) {
        Some((_, Some(port))) => parse_port_text(port).is_some(),
        _ => false,
    };
    if valid {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid seed {s:?} (expected \"host:port\", e.g. \"10.0.0.2:3129\" or \
             \"[fd00::2]:3129\")"
        ))
    }
}

/// `upstream.proxy`: empty means direct; else `http://host[:port][/]`.
fn parse_parent_proxy(s: &str) -> Result<Option<ParentProxy>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let expected = format!("invalid parent proxy {s:?} (expected \"http://host:port\")");
    let uri: Uri = s.parse().map_err(|_| expected.clone())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "invalid parent proxy {s:?}: only http:// parent proxies are supported"
            ))
        }
        _ => return Err(expected),
    }
    let Some(authority) = uri.authority() else {
        return Err(expected);
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "invalid parent proxy {s:?}: credentials in the URL are not supported"
        ));
    }
    if uri.path() != "/" || uri.query().is_some() || s.contains('#') {
        return Err(format!(
            "invalid parent proxy {s:?}: no path, query or fragment allowed"
        ));
    }
    let (host, port) = split_host_port(authority.as_str()).ok_or_else(|| expected.clone())?;
    let port = match port {
        None => DEFAULT_PARENT_PORT,
        Some(port) => parse_port_text(port)
            .ok_or_else(|| format!("invalid parent proxy {s:?}: port must be 1..=65535"))?,
    };
    Ok(Some(ParentProxy {
        host: host.to_string(),
        port,
    }))
}

/// A mirror prefix: `/…/`, a valid URI path, no query or fragment, not the admin prefix.
fn parse_prefix(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || !s.ends_with('/') {
        return Err(format!(
            "invalid prefix {s:?}: must start and end with \"/\""
        ));
    }
    let path_ok = s.parse::<http::uri::PathAndQuery>().is_ok() && !s.contains(['?', '#']);
    if !path_ok {
        return Err(format!(
            "invalid prefix {s:?}: not a valid URL path (no spaces, \"?\" or \"#\")"
        ));
    }
    if s.starts_with(ADMIN_PREFIX) {
        return Err(format!(
            "invalid prefix {s:?}: {ADMIN_PREFIX} is reserved for the admin pages"
        ));
    }
    Ok(s.to_string())
}

/// A mirror upstream: absolute `http`/`https` URL ending with `/`, no credentials, query or
/// fragment.
fn parse_upstream(s: &str) -> Result<Uri, String> {
    let expected = || {
        format!(
            "invalid upstream {s:?} (expected an http:// or https:// URL ending with \"/\", \
             e.g. \"http://deb.debian.org/debian/\")"
        )
    };
    let uri: Uri = s.parse().map_err(|_| expected())?;
    // `http` lower-cases the standard schemes, so "HTTPS://" arrives as "https".
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let Some(authority) = uri.authority().filter(|_| scheme_ok) else {
        return Err(expected());
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "invalid upstream {s:?}: credentials in the URL are not supported"
        ));
    }
    let authority_ok = match split_host_port(authority.as_str()) {
        Some((_, None)) => true,
        Some((_, Some(port))) => parse_port_text(port).is_some(),
        None => false,
    };
    if !authority_ok {
        return Err(expected());
    }
    if uri.query().is_some() || s.contains('#') {
        return Err(format!(
            "invalid upstream {s:?}: no query or fragment allowed"
        ));
    }
    if !s.ends_with('/') {
        return Err(format!("invalid upstream {s:?}: must end with \"/\""));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const GIB: u64 = 1 << 30;

    fn ok(text: &str) -> Config {
        match Config::parse(text, "peercache.toml") {
            Ok(config) => config,
            Err(errors) => panic!("{text:?} should parse, got:\n{errors}"),
        }
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match Config::parse(text, "peercache.toml") {
            Ok(config) => panic!("{text:?} should fail, got {config:?}"),
            Err(errors) => errors.0,
        }
    }

    fn lines(text: &str) -> Vec<String> {
        errors(text).iter().map(ToString::to_string).collect()
    }

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().expect("test net")
    }

    fn documented() -> Config {
        Config {
            proxy: Proxy {
                listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 3128)),
                allow: Acl::new(vec![net("127.0.0.0/8"), net("::1/128")]),
                connect_ports: vec![443],
            },
            cache: Cache {
                dir: PathBuf::from("peercache-data"),
                max_size: 10 * GIB,
                max_object_size: 4 * GIB,
            },
            upstream: Upstream {
                proxy: None,
                connect_timeout: Duration::from_secs(5),
                read_timeout: Duration::from_secs(30),
            },
            mirrors: vec![],
            peers: Peers {
                enabled: false,
                listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3129)),
                advertise: None,
                seeds: vec![],
                site: "default".into(),
                key_file: PathBuf::from("cluster.key"),
                max_uploads: 16,
                connect_timeout: Duration::from_millis(250),
            },
            log: Log {
                level: "info".into(),
                access: true,
            },
        }
    }

    #[test]
    fn defaults_parse_to_documented_values() {
        assert_eq!(Config::default_config(), documented());
        assert_eq!(ok(DEFAULT_TOML), documented());
        assert_eq!(ok(""), documented());
        assert_eq!(ok("# nothing but a comment\n\n"), documented());
    }

    #[test]
    fn every_key_is_documented_with_a_comment() {
        let sections: &[(&str, &[&str])] = &[
            ("[proxy]", PROXY_KEYS),
            ("[cache]", CACHE_KEYS),
            ("[upstream]", UPSTREAM_KEYS),
            ("# [[mirror]]", MIRROR_KEYS),
            ("[peers]", PEERS_KEYS),
            ("[log]", LOG_KEYS),
        ];
        let all: Vec<&str> = DEFAULT_TOML.lines().collect();
        for (header, keys) in sections {
            let start = all
                .iter()
                .position(|l| l.trim() == *header)
                .unwrap_or_else(|| panic!("{header} missing from DEFAULT_TOML"));
            for key in *keys {
                let assignment = format!("{key} = ");
                let at = all[start..]
                    .iter()
                    .position(|l| l.trim_start_matches("# ").starts_with(&assignment))
                    .map(|i| start + i)
                    .unwrap_or_else(|| panic!("{header} {key} missing from DEFAULT_TOML"));
                assert!(
                    all[at - 1].trim_start().starts_with('#'),
                    "{header} {key} has no comment above it"
                );
            }
        }
    }

    #[test]
    fn commented_mirror_example_parses_when_uncommented() {
        let mut inside = false;
        let text: String = DEFAULT_TOML
            .lines()
            .map(|line| {
                inside |= line == "# [[mirror]]";
                inside &= line.starts_with('#');
                let keep_comment = line.starts_with("# #") || !inside;
                let line = if keep_comment {
                    line
                } else {
                    line.trim_start_matches('#').trim_start()
                };
                format!("{line}\n")
            })
            .collect();
        let config = ok(&text);
        assert_eq!(
            config.mirrors,
            vec![Mirror {
                prefix: "/debian/".into(),
                upstream: Uri::from_static("http://deb.debian.org/debian/"),
                redirect_to_peers: false,
            }]
        );
    }

    #[test]
    fn valid_values() {
        type Check = fn(&Config) -> bool;
        let cases: &[(&str, Check)] = &[
            ("[proxy]\nlisten = \"[::1]:8080\"", |c| {
                c.proxy.listen == "[::1]:8080".parse().expect("addr")
            }),
            ("[proxy]\nallow = []", |c| c.proxy.allow.nets().is_empty()),
            ("[proxy]\nallow = [\"10.1.2.3\", \"fd00::/8\"]", |c| {
                c.proxy.allow.nets() == [net("10.1.2.3/32"), net("fd00::/8")]
            }),
            ("[proxy]\nconnect_ports = []", |c| {
                c.proxy.connect_ports.is_empty()
            }),
            ("[proxy]\nconnect_ports = [443, 8443, 65535, 1]", |c| {
                c.proxy.connect_ports == [443, 8443, 65535, 1]
            }),
            ("cache.max_size = 1024\ncache.max_object_size = 0", |c| {
                c.cache.max_size == 1024 && c.cache.max_object_size == 0
            }),
            (
                "[cache]\nmax_size = \"1 TiB\"\nmax_object_size = \"10gb\"",
                |c| c.cache.max_size == 1 << 40 && c.cache.max_object_size == 10_000_000_000,
            ),
            ("[cache]\nmax_size = 0\nmax_object_size = 0", |c| {
                c.cache.max_size == 0
            }),
            ("[cache]\ndir = \"/var/cache/peercache\"", |c| {
                c.cache.dir == Path::new("/var/cache/peercache")
            }),
            ("[upstream]\nproxy = \"http://parent.example:8080\"", |c| {
                c.upstream.proxy
                    == Some(ParentProxy {
                        host: "parent.example".into(),
                        port: 8080,
                    })
            }),
            ("[upstream]\nproxy = \"HTTP://Parent.Example/\"", |c| {
                c.upstream.proxy
                    == Some(ParentProxy {
                        host: "Parent.Example".into(),
                        port: 3128,
                    })
            }),
            ("[upstream]\nproxy = \"http://[fd00::1]:3128\"", |c| {
                c.upstream.proxy
                    == Some(ParentProxy {
                        host: "fd00::1".into(),
                        port: 3128,
                    })
            }),
            (
                "[upstream]\nconnect_timeout = 2\nread_timeout = \"1h\"",
                |c| {
                    c.upstream.connect_timeout == Duration::from_secs(2)
                        && c.upstream.read_timeout == Duration::from_secs(3600)
                },
            ),
            // Peering on a specific address needs no advertise address.
            (
                "[peers]\nenabled = true\nlisten = \"192.168.1.10:3129\"",
                |c| c.peers.enabled && c.peers.advertise.is_none(),
            ),
            (
                "[peers]\nenabled = true\nadvertise = \"192.168.1.10:3129\"\n\
                 seeds = [\"node-2.lan:3129\", \"10.0.0.3:3129\", \"[fd00::4]:3129\"]\n\
                 site = \"office\"\nkey_file = \"/etc/peercache/cluster.key\"\n\
                 max_uploads = 1\nconnect_timeout = \"1s\"",
                |c| {
                    c.peers.advertise == Some("192.168.1.10:3129".parse().expect("addr"))
                        && c.peers.seeds.len() == 3
                        && c.peers.site == "office"
                        && c.peers.max_uploads == 1
                        && c.peers.connect_timeout == Duration::from_secs(1)
                },
            ),
            // Disabled peering is not checked for an advertise address.
            ("[peers]\nenabled = false\nadvertise = \"\"", |c| {
                !c.peers.enabled
            }),
            ("[log]\nlevel = \"DEBUG\"\naccess = false", |c| {
                c.log.level == "debug" && !c.log.access
            }),
            // Inline and dotted tables are tables too.
            ("proxy = { listen = \"127.0.0.1:9000\" }", |c| {
                c.proxy.listen.port() == 9000
            }),
            ("log.level = \"warn\"", |c| c.log.level == "warn"),
            (
                "[[mirror]]\nprefix = \"/debian/\"\nupstream = \"http://deb.debian.org/debian/\"\n\
                 [[mirror]]\nprefix = \"/pypi/\"\nupstream = \"https://files.pythonhosted.org/\"\n\
                 redirect_to_peers = true",
                |c| {
                    c.mirrors.len() == 2
                        && c.mirrors[1].prefix == "/pypi/"
                        && c.mirrors[1].upstream.scheme_str() == Some("https")
                        && c.mirrors[1].redirect_to_peers
                        && !c.mirrors[0].redirect_to_peers
                },
            ),
            (
                "mirror = [{ prefix = \"/a/\", upstream = \"http://a.example:8080/x/\" }]",
                |c| c.mirrors.len() == 1 && c.mirrors[0].prefix == "/a/",
            ),
            // Nested prefixes are distinct; "/" alone is a catch-all route.
            (
                "[[mirror]]\nprefix = \"/\"\nupstream = \"http://a/\"\n\
                 [[mirror]]\nprefix = \"/debian/\"\nupstream = \"http://b/\"\n\
                 [[mirror]]\nprefix = \"/debian/security/\"\nupstream = \"http://c/\"",
                |c| c.mirrors.len() == 3,
            ),
            ("mirror = []", |c| c.mirrors.is_empty()),
        ];
        for (text, check) in cases {
            let config = ok(text);
            assert!(check(&config), "{text:?} gave {config:?}");
        }
    }

    /// One bad value: (file text, line, key, fragment of the message).
    #[test]
    fn each_bad_value_names_its_line_and_key() {
        let cases: &[(&str, usize, &str, &str)] = &[
            // [proxy]
            ("[proxy]\nlisten = \"nope\"", 2, "proxy.listen", "invalid address \"nope\""),
            ("[proxy]\nlisten = \"localhost:3128\"", 2, "proxy.listen", "host names are not allowed"),
            ("[proxy]\nlisten = 3128", 2, "proxy.listen", "expected a string, found integer"),
            ("[proxy]\nlisten = \"127.0.0.1:0\"", 2, "proxy.listen", "port must be 1..=65535"),
            ("[proxy]\nlisten = \"127.0.0.1:65536\"", 2, "proxy.listen", "invalid address"),
            ("[proxy]\nallow = [\n  \"10.0.0.0/8\",\n  \"bogus\",\n]", 4, "proxy.allow[1]", "invalid CIDR \"bogus\""),
            ("[proxy]\nallow = \"10.0.0.0/8\"", 2, "proxy.allow", "expected an array of CIDR strings, found string"),
            ("[proxy]\nallow = [10]", 2, "proxy.allow[0]", "expected a string, found integer"),
            ("[proxy]\nconnect_ports = [443, 0]", 2, "proxy.connect_ports[1]", "invalid port 0 (must be 1..=65535)"),
            ("[proxy]\nconnect_ports = [70000]", 2, "proxy.connect_ports[0]", "invalid port 70000"),
            ("[proxy]\nconnect_ports = [-1]", 2, "proxy.connect_ports[0]", "invalid port -1"),
            ("[proxy]\nconnect_ports = [\"443\"]", 2, "proxy.connect_ports[0]", "expected an integer, found string"),
            ("[proxy]\nconnect_ports = 443", 2, "proxy.connect_ports", "expected an array of port numbers, found integer"),
            // [cache]
            ("[cache]\ndir = \"\"", 2, "cache.dir", "must not be empty"),
            ("[cache]\ndir = 5", 2, "cache.dir", "expected a string, found integer"),
            ("\n[cache]\nmax_size = \"10XB\"", 3, "cache.max_size", "invalid size \"10XB\" (use bytes or e.g. \"512MiB\", \"10GiB\")"),
            ("[cache]\nmax_size = -1", 2, "cache.max_size", "invalid size -1: must not be negative"),
            ("[cache]\nmax_size = \"-1GiB\"", 2, "cache.max_size", "must not be negative"),
            ("[cache]\nmax_size = 1.5", 2, "cache.max_size", "expected a size (integer bytes or a string like \"10GiB\"), found float"),
            ("[cache]\nmax_size = \"99999999TiB\"", 2, "cache.max_size", "too large"),
            ("[cache]\nmax_object_size = \"20GiB\"", 2, "cache.max_object_size", "20GiB exceeds cache.max_size (10GiB)"),
            ("[cache]\nmax_size = \"1GiB\"", 2, "cache.max_size", "1GiB is less than cache.max_object_size (4GiB)"),
            ("[cache]\nmax_size = \"1GiB\"\nmax_object_size = \"2GiB\"", 3, "cache.max_object_size", "exceeds cache.max_size (1GiB)"),
            ("[cache]\nmax_size = 1000\nmax_object_size = 1001", 3, "cache.max_object_size", "1001 bytes exceeds cache.max_size (1KB)"),
            // [upstream]
            ("[upstream]\nproxy = \"https://p.example:3128\"", 2, "upstream.proxy", "only http:// parent proxies"),
            ("[upstream]\nproxy = \"http://user:pw@p.example:3128\"", 2, "upstream.proxy", "credentials"),
            ("[upstream]\nproxy = \"http://p.example:0\"", 2, "upstream.proxy", "port must be 1..=65535"),
            ("[upstream]\nproxy = \"http://p.example:99999\"", 2, "upstream.proxy", "port must be 1..=65535"),
            ("[upstream]\nproxy = \"http://p.example:\"", 2, "upstream.proxy", "port must be 1..=65535"),
            ("[upstream]\nproxy = \"http://p.example/path\"", 2, "upstream.proxy", "no path, query or fragment"),
            ("[upstream]\nproxy = \"http://p.example/#x\"", 2, "upstream.proxy", "no path, query or fragment"),
            ("[upstream]\nproxy = \"p.example:3128\"", 2, "upstream.proxy", "expected \"http://host:port\""),
            ("[upstream]\nproxy = \"http://:3128\"", 2, "upstream.proxy", "expected \"http://host:port\""),
            ("[upstream]\nproxy = false", 2, "upstream.proxy", "expected a string, found boolean"),
            ("[upstream]\nconnect_timeout = \"0s\"", 2, "upstream.connect_timeout", "must be greater than 0"),
            ("[upstream]\nconnect_timeout = 0", 2, "upstream.connect_timeout", "must be greater than 0"),
            ("[upstream]\nread_timeout = \"-5s\"", 2, "upstream.read_timeout", "must not be negative"),
            ("[upstream]\nread_timeout = -5", 2, "upstream.read_timeout", "must not be negative"),
            ("[upstream]\nread_timeout = \"5 fortnights\"", 2, "upstream.read_timeout", "invalid duration \"5 fortnights\""),
            ("[upstream]\nread_timeout = true", 2, "upstream.read_timeout", "expected a duration"),
            // [peers]
            ("[peers]\nenabled = \"yes\"", 2, "peers.enabled", "expected a boolean (true or false), found string"),
            ("[peers]\nlisten = \"peer.lan:3129\"", 2, "peers.listen", "host names are not allowed"),
            ("[peers]\nadvertise = \"0.0.0.0:3129\"", 2, "peers.advertise", "wildcard address"),
            ("[peers]\nadvertise = \"10.0.0.1:0\"", 2, "peers.advertise", "port must be 1..=65535"),
            ("[peers]\nseeds = [\"10.0.0.2\"]", 2, "peers.seeds[0]", "invalid seed \"10.0.0.2\""),
            ("[peers]\nseeds = [\"a:1\", \"fd00::1:3129\"]", 2, "peers.seeds[1]", "invalid seed"),
            ("[peers]\nseeds = [\"a b:1\"]", 2, "peers.seeds[0]", "invalid seed"),
            ("[peers]\nseeds = [\"[fd00::1]\"]", 2, "peers.seeds[0]", "invalid seed"),
            ("[peers]\nseeds = [\"node:0\"]", 2, "peers.seeds[0]", "invalid seed"),
            ("[peers]\nsite = \"\"", 2, "peers.site", "must not be empty"),
            ("[peers]\nkey_file = \"\"", 2, "peers.key_file", "must not be empty"),
            ("[peers]\nmax_uploads = 0", 2, "peers.max_uploads", "must be at least 1, got 0"),
            ("[peers]\nmax_uploads = -3", 2, "peers.max_uploads", "must be at least 1, got -3"),
            ("[peers]\nmax_uploads = \"16\"", 2, "peers.max_uploads", "expected an integer, found string"),
            ("[peers]\nconnect_timeout = \"0ms\"", 2, "peers.connect_timeout", "must be greater than 0"),
            // Peering on the default wildcard listen address without advertise: blamed on
            // the line the user wrote.
            ("[peers]\nenabled = true", 2, "peers.advertise", "required when peers.enabled = true and peers.listen (0.0.0.0:3129) is a wildcard address"),
            ("[peers]\nenabled = true\nlisten = \"[::]:4000\"", 2, "peers.advertise", "wildcard address"),
            ("[peers]\nenabled = true\nadvertise = \"\"", 3, "peers.advertise", "required when"),
            ("[peers]\nenabled = true\nlisten = \"127.0.0.1:3128\"", 3, "peers.listen", "collides with proxy.listen (127.0.0.1:3128)"),
            ("[peers]\nenabled = true\nlisten = \"0.0.0.0:3128\"\nadvertise = \"10.0.0.1:3128\"", 3, "peers.listen", "collides"),
            ("[proxy]\nlisten = \"[::]:3129\"\n[peers]\nenabled = true\nlisten = \"10.0.0.1:3129\"", 5, "peers.listen", "collides"),
            // [log]
            ("[log]\nlevel = \"verbose\"", 2, "log.level", "invalid level \"verbose\" (expected one of: error, warn, info, debug, trace)"),
            ("[log]\naccess = \"yes\"", 2, "log.access", "expected a boolean"),
            // Tables of the wrong shape.
            ("proxy = 1", 1, "proxy", "expected a table, found integer"),
            ("[[cache]]\ndir = \"x\"", 1, "cache", "expected a table, found array of tables"),
            ("[proxy]\nlisten.ip = \"127.0.0.1\"", 2, "proxy.listen", "expected a string, found table"),
        ];
        for (text, line, key, fragment) in cases {
            let found = errors(text);
            assert_eq!(found.len(), 1, "{text:?} gave {found:#?}");
            let e = &found[0];
            assert_eq!(
                (e.origin.as_str(), e.line, e.key.as_str()),
                ("peercache.toml", Some(*line), *key),
                "{text:?} gave {e}"
            );
            assert!(e.message.contains(fragment), "{text:?} gave {e}");
        }
    }

    #[test]
    fn disabled_peering_does_not_check_listen_against_proxy() {
        let config = ok("[peers]\nlisten = \"127.0.0.1:3128\"");
        assert!(!config.peers.enabled);
    }

    #[test]
    fn several_errors_are_reported_at_once_in_line_order() {
        let text = "\
[log]
level = \"loud\"

[proxy]
lisen = \"127.0.0.1:3128\"
connect_ports = [443, 0]

[cache]
max_size = \"10XB\"
";
        assert_eq!(
            lines(text),
            [
                "peercache.toml:2: log.level: invalid level \"loud\" (expected one of: error, warn, info, debug, trace)",
                "peercache.toml:5: proxy.lisen: unknown key (expected one of: listen, allow, connect_ports)",
                "peercache.toml:6: proxy.connect_ports[1]: invalid port 0 (must be 1..=65535)",
                "peercache.toml:9: cache.max_size: invalid size \"10XB\" (use bytes or e.g. \"512MiB\", \"10GiB\")",
            ]
        );
        let display = match Config::parse(text, "peercache.toml") {
            Ok(_) => panic!("should fail"),
            Err(e) => e.to_string(),
        };
        assert_eq!(display.lines().count(), 4);
        assert!(display.starts_with("peercache.toml:2: log.level: "));
    }

    #[test]
    fn unknown_keys_and_tables_are_all_reported() {
        let text = "\
typo_at_root = 1
[proxy]
lisen = \"127.0.0.1:3128\"
[cache]
max_sise = 1
[upstream]
parent = \"\"
[peers]
enable = true
[log]
levle = \"info\"
[logging]
level = \"info\"
[[mirrors]]
prefix = \"/a/\"
[proxy.tls]
cert = \"x\"
[[mirror]]
prefix = \"/a/\"
upstream = \"http://a/\"
redirect = true
";
        let all = "proxy, cache, upstream, mirror, peers, log";
        assert_eq!(
            lines(text),
            [
                format!("peercache.toml:1: typo_at_root: unknown key (expected one of: {all})"),
                "peercache.toml:3: proxy.lisen: unknown key (expected one of: listen, allow, connect_ports)".into(),
                "peercache.toml:5: cache.max_sise: unknown key (expected one of: dir, max_size, max_object_size)".into(),
                "peercache.toml:7: upstream.parent: unknown key (expected one of: proxy, connect_timeout, read_timeout)".into(),
                "peercache.toml:9: peers.enable: unknown key (expected one of: enabled, listen, advertise, seeds, site, key_file, max_uploads, connect_timeout)".into(),
                "peercache.toml:11: log.levle: unknown key (expected one of: level, access)".into(),
                format!("peercache.toml:12: logging: unknown table (expected one of: {all})"),
                format!("peercache.toml:14: mirrors: unknown table (expected one of: {all})"),
                "peercache.toml:16: proxy.tls: unknown table (expected one of: listen, allow, connect_ports)".into(),
                "peercache.toml:21: mirror[0].redirect: unknown key (expected one of: prefix, upstream, redirect_to_peers)".into(),
            ]
        );
    }

    #[test]
    fn odd_key_names_are_quoted() {
        assert_eq!(
            lines("[proxy]\n\"lis ten\" = 1\n\"\" = 2"),
            [
                "peercache.toml:2: proxy.\"lis ten\": unknown key (expected one of: listen, allow, connect_ports)",
                "peercache.toml:3: proxy.\"\": unknown key (expected one of: listen, allow, connect_ports)",
            ]
        );
    }

    /// Mirror entries: (file text, expected error lines).
    #[test]
    fn mirror_validation() {
        let m = |prefix: &str, upstream: &str| {
            format!("[[mirror]]\nprefix = {prefix:?}\nupstream = {upstream:?}\n")
        };
        let up = "http://deb.example.org/debian/";
        let cases: Vec<(String, Vec<String>)> = vec![
            (m("debian/", up), vec!["2: mirror[0].prefix: invalid prefix \"debian/\": must start and end with \"/\"".into()]),
            (m("/debian", up), vec!["2: mirror[0].prefix: invalid prefix \"/debian\": must start and end with \"/\"".into()]),
            (m("", up), vec!["2: mirror[0].prefix: invalid prefix \"\": must start and end with \"/\"".into()]),
            (m("/de bian/", up), vec!["2: mirror[0].prefix: invalid prefix \"/de bian/\": not a valid URL path (no spaces, \"?\" or \"#\")".into()]),
            (m("/a?b/", up), vec!["2: mirror[0].prefix: invalid prefix \"/a?b/\": not a valid URL path (no spaces, \"?\" or \"#\")".into()]),
            (m("/_peercache/", up), vec!["2: mirror[0].prefix: invalid prefix \"/_peercache/\": /_peercache/ is reserved for the admin pages".into()]),
            (m("/_peercache/x/", up), vec!["2: mirror[0].prefix: invalid prefix \"/_peercache/x/\": /_peercache/ is reserved for the admin pages".into()]),
            (m("/d/", "ftp://deb.example.org/"), vec![format!("3: mirror[0].upstream: invalid upstream \"ftp://deb.example.org/\" (expected an http:// or https:// URL ending with \"/\", e.g. \"http://deb.debian.org/debian/\")")]),
            (m("/d/", "/debian/"), vec!["3: mirror[0].upstream: invalid upstream \"/debian/\" (expected an http:// or https:// URL ending with \"/\", e.g. \"http://deb.debian.org/debian/\")".into()]),
            (m("/d/", "http://deb.example.org/debian"), vec!["3: mirror[0].upstream: invalid upstream \"http://deb.example.org/debian\": must end with \"/\"".into()]),
            (m("/d/", "http://deb.example.org"), vec!["3: mirror[0].upstream: invalid upstream \"http://deb.example.org\": must end with \"/\"".into()]),
            (m("/d/", "http://u:p@deb.example.org/"), vec!["3: mirror[0].upstream: invalid upstream \"http://u:p@deb.example.org/\": credentials in the URL are not supported".into()]),
            (m("/d/", "http://deb.example.org/?x=/"), vec!["3: mirror[0].upstream: invalid upstream \"http://deb.example.org/?x=/\": no query or fragment allowed".into()]),
            (m("/d/", "http://deb.example.org/#/"), vec!["3: mirror[0].upstream: invalid upstream \"http://deb.example.org/#/\": no query or fragment allowed".into()]),
            (m("/d/", "http://deb.example.org:0/"), vec!["3: mirror[0].upstream: invalid upstream \"http://deb.example.org:0/\" (expected an http:// or https:// URL ending with \"/\", e.g. \"http://deb.debian.org/debian/\")".into()]),
            (m("/d/", "http://deb example/"), vec!["3: mirror[0].upstream: invalid upstream \"http://deb example/\" (expected an http:// or https:// URL ending with \"/\", e.g. \"http://deb.debian.org/debian/\")".into()]),
            // Duplicates: reported on the second one, naming the first.
            (format!("{}{}", m("/d/", up), m("/d/", up)), vec!["5: mirror[1].prefix: duplicate prefix \"/d/\" (also used by mirror[0] on line 2)".into()]),
            (format!("{}{}", m("/d/", up), m("/d/", "http://x")), vec![
                "5: mirror[1].prefix: duplicate prefix \"/d/\" (also used by mirror[0] on line 2)".into(),
                "6: mirror[1].upstream: invalid upstream \"http://x\": must end with \"/\"".into(),
            ]),
            (format!("{}{}{}", m("/a/", up), m("/b/", up), m("/a/", up)), vec![
                "8: mirror[2].prefix: duplicate prefix \"/a/\" (also used by mirror[0] on line 2)".into(),
            ]),
            // Missing keys: reported at the [[mirror]] header.
            ("\n[[mirror]]\nredirect_to_peers = true\n".into(), vec![
                "2: mirror[0].prefix: missing (every [[mirror]] needs prefix and upstream)".into(),
                "2: mirror[0].upstream: missing (every [[mirror]] needs prefix and upstream)".into(),
            ]),
            (format!("{}redirect_to_peers = \"yes\"\n", m("/d/", up)), vec!["4: mirror[0].redirect_to_peers: expected a boolean (true or false), found string".into()]),
            (format!("{}[[mirror]]\nprefix = 7\nupstream = {up:?}\n", m("/d/", up)), vec!["5: mirror[1].prefix: expected a string, found integer".into()]),
            ("[mirror]\nprefix = \"/d/\"\n".into(), vec!["1: mirror: expected [[mirror]] tables (an array of tables), found table".into()]),
            ("mirror = [1]\n".into(), vec!["1: mirror[0]: expected a table, found integer".into()]),
            (
                "mirror = [\n  1,\n  { prefix = \"/d/\" },\n]\n".into(),
                vec![
                    "2: mirror[0]: expected a table, found integer".into(),
                    "3: mirror[1].upstream: missing (every [[mirror]] needs prefix and upstream)".into(),
                ],
            ),
            ("mirror = [{ prefix = \"/d/\" }]\n".into(), vec!["1: mirror[0].upstream: missing (every [[mirror]] needs prefix and upstream)".into()]),
        ];
        for (text, want) in cases {
            let want: Vec<String> = want.iter().map(|w| format!("peercache.toml:{w}")).collect();
            assert_eq!(lines(&text), want, "{text:?}");
        }
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "[proxy]\nlisten = \"127.0.0.1:3128\n",
                2,
                "invalid basic string",
            ),
            ("[proxy\n", 1, "invalid table header"),
            (
                "\n\n[cache]\nmax_size = 1\nmax_size = 2\n",
                5,
                "duplicate key",
            ),
            ("[cache]\n[cache]\n", 2, "duplicate key"),
            (
                "[cache]\nmax_size = 99999999999999999999\n",
                2,
                "number too large",
            ),
        ];
        for (text, line, fragment) in cases {
            let found = errors(text);
            assert_eq!(found.len(), 1, "{text:?} gave {found:#?}");
            let e = &found[0];
            assert_eq!((e.line, e.key.as_str()), (Some(*line), ""), "{e}");
            assert!(e.message.starts_with("TOML syntax error: "), "{e}");
            assert!(e.message.contains(fragment), "{e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn parse_size_table() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("0", Ok(0)),
            ("512", Ok(512)),
            ("512B", Ok(512)),
            ("64KiB", Ok(64 << 10)),
            ("10MiB", Ok(10 << 20)),
            ("10GiB", Ok(10 << 30)),
            ("1TiB", Ok(1 << 40)),
            ("10KB", Ok(10_000)),
            ("10MB", Ok(10_000_000)),
            ("10GB", Ok(10_000_000_000)),
            ("2TB", Ok(2_000_000_000_000)),
            ("10gib", Ok(10 << 30)),
            ("10GIB", Ok(10 << 30)),
            ("10 GiB", Ok(10 << 30)),
            (" 10GiB ", Ok(10 << 30)),
            ("0GiB", Ok(0)),
            ("18446744073709551615", Ok(u64::MAX)),
            ("16777215TiB", Ok(16_777_215 << 40)),
            ("18446744073709551616", Err("too large")),
            ("16777216TiB", Err("too large")),
            ("99999999999999999999999GiB", Err("too large")),
            ("-1", Err("must not be negative")),
            ("-0", Err("must not be negative")),
            ("", Err("invalid size \"\" (use bytes")),
            ("GiB", Err("invalid size \"GiB\" (use bytes")),
            ("-GiB", Err("use bytes")),
            (
                "10XB",
                Err("invalid size \"10XB\" (use bytes or e.g. \"512MiB\", \"10GiB\")"),
            ),
            ("10K", Err("use bytes")),
            ("1.5GiB", Err("use bytes")),
            ("10  GiB", Err("use bytes")),
            ("+10", Err("use bytes")),
            ("10GiB5", Err("use bytes")),
            ("１０GiB", Err("use bytes")),
            ("10\u{0}", Err("use bytes")),
        ];
        for (input, want) in cases {
            match (parse_size(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{input:?}"),
                (Err(got), Err(fragment)) => assert!(got.contains(fragment), "{input:?}: {got}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn parse_duration_table() {
        let cases: &[(&str, Result<Duration, &str>)] = &[
            ("0", Ok(Duration::ZERO)),
            ("0s", Ok(Duration::ZERO)),
            ("250ms", Ok(Duration::from_millis(250))),
            ("5s", Ok(Duration::from_secs(5))),
            ("2m", Ok(Duration::from_secs(120))),
            ("1h", Ok(Duration::from_secs(3600))),
            ("30", Ok(Duration::from_secs(30))),
            ("5 s", Ok(Duration::from_secs(5))),
            ("5S", Ok(Duration::from_secs(5))),
            ("250MS", Ok(Duration::from_millis(250))),
            ("18446744073709551615", Ok(Duration::from_secs(u64::MAX))),
            (
                "18446744073709551615ms",
                Ok(Duration::from_millis(u64::MAX)),
            ),
            ("18446744073709551616", Err("too large")),
            ("307445734561825861m", Err("too large")),
            ("5124095576030432h", Err("too large")),
            ("-5s", Err("must not be negative")),
            ("", Err("invalid duration \"\"")),
            ("s", Err("invalid duration \"s\"")),
            ("ms", Err("invalid duration")),
            ("1.5s", Err("invalid duration")),
            ("5d", Err("invalid duration")),
            ("5sec", Err("invalid duration")),
            ("5 fortnights", Err("invalid duration")),
            ("s5", Err("invalid duration")),
        ];
        for (input, want) in cases {
            match (parse_duration(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{input:?}"),
                (Err(got), Err(fragment)) => assert!(got.contains(fragment), "{input:?}: {got}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
        // The largest minute and hour counts that fit are accepted.
        assert!(parse_duration("307445734561825860m").is_ok());
        assert!(parse_duration("5124095576030431h").is_ok());
    }

    #[test]
    fn error_display_formats() {
        let cases = [
            (
                Some(12),
                "cache.max_size",
                "peercache.toml:12: cache.max_size: bad",
            ),
            (
                None,
                "cache.max_size",
                "peercache.toml: cache.max_size: bad",
            ),
            (Some(3), "", "peercache.toml:3: bad"),
            (None, "", "peercache.toml: bad"),
        ];
        for (line, key, want) in cases {
            let e = ConfigError {
                origin: "peercache.toml".into(),
                line,
                key: key.into(),
                message: "bad".into(),
            };
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn parent_proxy_authority() {
        let cases = [
            ("parent.lan", 3128, "parent.lan:3128"),
            ("fd00::1", 8080, "[fd00::1]:8080"),
        ];
        for (host, port, want) in cases {
            let parent = ParentProxy {
                host: host.into(),
                port,
            };
            assert_eq!(parent.authority(), want);
        }
    }

    #[test]
    fn load_reads_the_file_and_reports_io_and_encoding_errors() {
        let dir =
            std::env::temp_dir().join(format!("peercache-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");

        let good = dir.join("good.toml");
        std::fs::write(&good, "[log]\nlevel = \"trace\"\n").expect("write");
        let config = Config::load(&good).expect("good file loads");
        assert_eq!(config.log.level, "trace");

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[log]\nlevel = \"loud\"\n").expect("write");
        let e = Config::load(&bad).expect_err("bad value");
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].origin, bad.display().to_string());
        assert_eq!(e.0[0].line, Some(2));

        let latin1 = dir.join("latin1.toml");
        std::fs::write(&latin1, b"[log]\n# caf\xe9\nlevel = \"info\"\n").expect("write");
        let e = Config::load(&latin1).expect_err("not UTF-8");
        assert_eq!((e.0.len(), e.0[0].line), (1, Some(2)));
        assert!(e.0[0].message.contains("UTF-8"), "{}", e.0[0]);

        let missing = dir.join("missing.toml");
        let e = Config::load(&missing).expect_err("missing file");
        assert_eq!((e.0.len(), e.0[0].line), (1, None));
        assert!(e
            .to_string()
            .starts_with(&format!("{}: cannot read: ", missing.display())));

        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn hostile_input_never_panics() {
        let long_number = "9".repeat(10_000);
        let texts = [
            format!("[cache]\nmax_size = \"{long_number}\""),
            format!("[upstream]\nread_timeout = \"{long_number}h\""),
            "[proxy]\nlisten = \"\u{202e}127.0.0.1:3128\"".to_string(),
            "[proxy]\nallow = [[], {}, 1.0, true, 1979-05-27T07:32:00Z]".to_string(),
            "[peers]\nseeds = [\"[\", \"]\", \":\", \"[]:1\", \"[::1]:\", \"[::1]x\"]".to_string(),
            "[upstream]\nproxy = \"http://[::1\"".to_string(),
            "[[mirror]]\nprefix = \"/\u{0}/\"\nupstream = \"http://\u{7f}/\"".to_string(),
            "[log]\nlevel = 1979-05-27".to_string(),
        ];
        for text in &texts {
            let _ = Config::parse(text, "peercache.toml");
        }
        let found = errors(&texts[3]);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found[4].message.ends_with("found datetime"), "{}", found[4]);
        assert_eq!(errors(&texts[4]).len(), 6);
    }
}

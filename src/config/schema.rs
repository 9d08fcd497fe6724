//! The schema: every table and key, each read into [`Raw`] with its own check; the one list of key names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use toml_edit::{TableLike, Value};

use super::addr::{check_port, parse_advertise, parse_parent_proxy, parse_seed, parse_socket_addr};
use super::direct::parse_pac_direct;
use super::reader::{Field, Loc, Reader, Slot};
use super::units::{parse_duration, parse_size, show_size};
use super::{
    Discover, GossipProfile, HostPattern, HostPatterns, Mirror, PacDirect, ParentProxy, Preset,
    RangeFill, Rule, MAX_PARALLEL_HOLDERS, MAX_SITE_LEN, PIECE_ALIGN, PIECE_SIZE_MAX,
    PIECE_SIZE_MIN, UPLOAD_RATE_MIN,
};
use crate::http::acl::{self, Acl};

/// Top-level tables, in documentation order (used in "unknown key" messages).
const TABLES: &[&str] = &[
    "proxy",
    "cache",
    "upstream",
    "mirror",
    "peers",
    "intercept",
    "rules",
    "rule",
    "log",
];
pub(super) const PROXY_KEYS: &[&str] = &[
    "listen",
    "allow",
    "connect_ports",
    "tunnel_idle_timeout",
    "pac_direct",
    "max_connections",
];
pub(super) const CACHE_KEYS: &[&str] = &[
    "dir",
    "max_size",
    "max_object_size",
    "sendfile",
    "targeted",
    "max_fills",
    "range_fill",
];
pub(super) const UPSTREAM_KEYS: &[&str] = &["proxy", "connect_timeout", "read_timeout", "ca_file"];
pub(super) const MIRROR_KEYS: &[&str] =
    &["prefix", "upstream", "redirect_to_peers", "npm_tarballs"];
pub(super) const PEERS_KEYS: &[&str] = &[
    "enabled",
    "listen",
    "advertise",
    "seeds",
    "site",
    "key_file",
    "max_uploads",
    "connect_timeout",
    "discover",
    "profile",
    "parallel_holders",
    "piece_size",
    "upload_rate",
];
pub(super) const INTERCEPT_KEYS: &[&str] = &["hosts", "ca_cert", "ca_key"];
pub(super) const RULES_KEYS: &[&str] = &["presets"];
pub(super) const RULE_KEYS: &[&str] = &["pattern", "fresh", "immutable", "key_fields"];
pub(super) const LOG_KEYS: &[&str] = &["level", "access"];
const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
const DISCOVER: &[(&str, Discover)] = &[("none", Discover::None), ("mdns", Discover::Mdns)];
const PROFILES: &[(&str, GossipProfile)] = &[
    ("auto", GossipProfile::Auto),
    ("lan", GossipProfile::Lan),
    ("wan", GossipProfile::Wan),
];

/// Every key, as read so far (defaults first, then the user's file on top).
#[derive(Default)]
pub(super) struct Raw<'a> {
    pub(super) proxy_listen: Slot<'a, SocketAddr>,
    pub(super) proxy_allow: Slot<'a, Acl>,
    pub(super) proxy_connect_ports: Slot<'a, Vec<u16>>,
    pub(super) proxy_tunnel_idle_timeout: Slot<'a, Duration>,
    pub(super) proxy_pac_direct: Slot<'a, Vec<PacDirect>>,
    pub(super) proxy_max_connections: Slot<'a, usize>,
    pub(super) cache_dir: Slot<'a, PathBuf>,
    pub(super) cache_max_size: Slot<'a, u64>,
    pub(super) cache_max_object_size: Slot<'a, u64>,
    pub(super) cache_sendfile: Slot<'a, bool>,
    pub(super) cache_targeted: Slot<'a, Vec<HeaderName>>,
    pub(super) cache_max_fills: Slot<'a, usize>,
    pub(super) cache_range_fill: Slot<'a, RangeFill>,
    pub(super) upstream_proxy: Slot<'a, Option<ParentProxy>>,
    pub(super) upstream_connect_timeout: Slot<'a, Duration>,
    pub(super) upstream_read_timeout: Slot<'a, Duration>,
    pub(super) upstream_ca_file: Slot<'a, Option<PathBuf>>,
    pub(super) mirrors: Slot<'a, Vec<Mirror>>,
    /// Where each valid mirror of the last `mirror` read says `redirect_to_peers = true`
    /// (index, location): that needs peering, checked once every key is read.
    pub(super) mirror_redirects: Vec<(usize, Loc<'a>)>,
    pub(super) peers_enabled: Slot<'a, bool>,
    pub(super) peers_listen: Slot<'a, SocketAddr>,
    pub(super) peers_advertise: Slot<'a, Option<SocketAddr>>,
    pub(super) peers_seeds: Slot<'a, Vec<String>>,
    pub(super) peers_site: Slot<'a, String>,
    pub(super) peers_key_file: Slot<'a, PathBuf>,
    pub(super) peers_max_uploads: Slot<'a, usize>,
    pub(super) peers_connect_timeout: Slot<'a, Duration>,
    pub(super) intercept_hosts: Slot<'a, HostPatterns>,
    pub(super) intercept_ca_cert: Slot<'a, Option<PathBuf>>,
    pub(super) intercept_ca_key: Slot<'a, Option<PathBuf>>,
    pub(super) peers_discover: Slot<'a, Discover>,
    pub(super) peers_profile: Slot<'a, GossipProfile>,
    pub(super) peers_parallel_holders: Slot<'a, usize>,
    pub(super) peers_piece_size: Slot<'a, u64>,
    pub(super) peers_upload_rate: Slot<'a, u64>,
    pub(super) rules_presets: Slot<'a, Vec<Preset>>,
    pub(super) rules: Slot<'a, Vec<Rule>>,
    pub(super) log_level: Slot<'a, String>,
    pub(super) log_access: Slot<'a, bool>,
}

impl<'a, 'p> Reader<'a, 'p> {
    /// Reads the whole text into `raw`; after a syntax error, nothing.
    pub(super) fn read(mut self, raw: &mut Raw<'a>) {
        let Some(doc) = self.document() else {
            return;
        };
        let root: &dyn TableLike = doc.as_table();
        for (name, item) in root.iter() {
            let f = self.field(root, "", name, item);
            match name {
                "proxy" => self.read_table(&f, PROXY_KEYS, raw, Self::proxy_key),
                "cache" => self.read_table(&f, CACHE_KEYS, raw, Self::cache_key),
                "upstream" => self.read_table(&f, UPSTREAM_KEYS, raw, Self::upstream_key),
                "mirror" => {
                    let mut redirects = Vec::new();
                    raw.mirrors
                        .put(self.mirrors(&f, &mut redirects), f.value_loc);
                    raw.mirror_redirects = redirects;
                }
                "peers" => self.read_table(&f, PEERS_KEYS, raw, Self::peers_key),
                "intercept" => self.read_table(&f, INTERCEPT_KEYS, raw, Self::intercept_key),
                "rules" => self.read_table(&f, RULES_KEYS, raw, Self::rules_key),
                "rule" => raw.rules.put(self.rules(&f), f.value_loc),
                "log" => self.read_table(&f, LOG_KEYS, raw, Self::log_key),
                _ => self.unknown(&f, TABLES),
            }
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

    /// A count of at least 1 (a bound on something that grows).
    fn at_least_one(&mut self, f: &Field<'a, '_>) -> Option<usize> {
        self.integer(f).and_then(|n| {
            let n = match usize::try_from(n) {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(format!("must be at least 1, got {n}")),
            };
            self.check(f, n)
        })
    }

    fn proxy_key(&mut self, name: &str, f: &Field<'a, '_>, raw: &mut Raw<'a>) -> bool {
        let loc = f.value_loc;
        match name {
            "listen" => raw.proxy_listen.put(self.socket_addr(f), loc),
            "allow" => raw.proxy_allow.put(self.acl(f), loc),
            "connect_ports" => raw.proxy_connect_ports.put(self.ports(f), loc),
            "tunnel_idle_timeout" => raw.proxy_tunnel_idle_timeout.put(self.timeout(f), loc),
            "pac_direct" => {
                let direct = self.each(f, "an array of host patterns or CIDR strings", |r, e| {
                    let s = r.string(e)?;
                    r.check(e, parse_pac_direct(s))
                });
                raw.proxy_pac_direct.put(direct, loc);
            }
            "max_connections" => raw.proxy_max_connections.put(self.at_least_one(f), loc),
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
            "sendfile" => raw.cache_sendfile.put(self.boolean(f), loc),
            "targeted" => {
                let names = self.field_names(f, &["cache-control", "expires"]);
                raw.cache_targeted.put(names, loc);
            }
            "max_fills" => raw.cache_max_fills.put(self.at_least_one(f), loc),
            "range_fill" => raw.cache_range_fill.put(self.range_fill(f), loc),
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
            "ca_file" => raw.upstream_ca_file.put(self.file(f), loc),
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
                    let site = non_empty(s).and_then(|s| {
                        if s.len() > MAX_SITE_LEN {
                            Err(format!(
                                "too long: {} bytes, the limit is {MAX_SITE_LEN} (it rides in \
                                 every gossip packet); use a shorter label",
                                s.len()
                            ))
                        } else {
                            Ok(s.to_string())
                        }
                    });
                    self.check(f, site)
                });
                raw.peers_site.put(site, loc);
            }
            "key_file" => raw.peers_key_file.put(self.path(f), loc),
            "max_uploads" => raw.peers_max_uploads.put(self.at_least_one(f), loc),
            "connect_timeout" => raw.peers_connect_timeout.put(self.timeout(f), loc),
            "discover" => raw.peers_discover.put(self.choice(f, DISCOVER), loc),
            "profile" => raw.peers_profile.put(self.choice(f, PROFILES), loc),
            "parallel_holders" => {
                let n = self.integer(f).and_then(|n| {
                    let n = match usize::try_from(n) {
                        Ok(n) if (1..=MAX_PARALLEL_HOLDERS).contains(&n) => Ok(n),
                        _ => Err(format!("must be 1..={MAX_PARALLEL_HOLDERS}, got {n}")),
                    };
                    self.check(f, n)
                });
                raw.peers_parallel_holders.put(n, loc);
            }
            "piece_size" => {
                let size = self.size(f).and_then(|n| {
                    let size = if !(PIECE_SIZE_MIN..=PIECE_SIZE_MAX).contains(&n) {
                        Err(format!(
                            "{} is out of range: use {}..={}",
                            show_size(n),
                            show_size(PIECE_SIZE_MIN),
                            show_size(PIECE_SIZE_MAX)
                        ))
                    } else if n % PIECE_ALIGN != 0 {
                        Err(format!(
                            "{} is not a multiple of {} (the verified chunk group)",
                            show_size(n),
                            show_size(PIECE_ALIGN)
                        ))
                    } else {
                        Ok(n)
                    };
                    self.check(f, size)
                });
                raw.peers_piece_size.put(size, loc);
            }
            "upload_rate" => {
                let rate = self.size(f).and_then(|n| {
                    let rate = if n == 0 || n >= UPLOAD_RATE_MIN {
                        Ok(n)
                    } else {
                        Err(format!(
                            "{} per second is too slow: 0 (no cap) or at least {}",
                            show_size(n),
                            show_size(UPLOAD_RATE_MIN)
                        ))
                    };
                    self.check(f, rate)
                });
                raw.peers_upload_rate.put(rate, loc);
            }
            _ => return false,
        }
        true
    }

    fn intercept_key(&mut self, name: &str, f: &Field<'a, '_>, raw: &mut Raw<'a>) -> bool {
        let loc = f.value_loc;
        match name {
            "hosts" => {
                let hosts = self.each(f, "an array of host patterns", |r, e| {
                    let s = r.string(e)?;
                    r.check(e, HostPattern::parse(s))
                });
                raw.intercept_hosts.put(hosts.map(HostPatterns::new), loc);
            }
            "ca_cert" => raw.intercept_ca_cert.put(self.file(f), loc),
            "ca_key" => raw.intercept_ca_key.put(self.file(f), loc),
            _ => return false,
        }
        true
    }

    fn rules_key(&mut self, name: &str, f: &Field<'a, '_>, raw: &mut Raw<'a>) -> bool {
        match name {
            "presets" => raw.rules_presets.put(self.presets(f), f.value_loc),
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

    /// One of the names in `choices` (a string), as its value.
    fn choice<T: Copy>(&mut self, f: &Field<'a, '_>, choices: &[(&str, T)]) -> Option<T> {
        let s = self.string(f)?;
        let found = choices.iter().find(|(name, _)| *name == s);
        let value = found.map(|(_, v)| *v).ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            format!(
                "invalid value {s:?} (expected one of: {})",
                names.join(", ")
            )
        });
        self.check(f, value)
    }

    /// An optional file path: `""` means none (a default applies).
    fn file(&mut self, f: &Field<'a, '_>) -> Option<Option<PathBuf>> {
        let s = self.string(f)?;
        self.check(f, parse_file(s))
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

    /// `cache.range_fill`: `"whole"`, `"none"`, or a size (the farthest first byte of a range
    /// that still starts the whole fill).
    fn range_fill(&mut self, f: &Field<'a, '_>) -> Option<RangeFill> {
        let result = match f.node.value() {
            Some(Value::String(s)) => parse_range_fill(s.value()),
            Some(Value::Integer(n)) => {
                let n = *n.value();
                u64::try_from(n)
                    .map(RangeFill::UpTo)
                    .map_err(|_| format!("invalid size {n}: must not be negative"))
            }
            _ => {
                let expected =
                    "\"whole\", \"none\" or a size (integer bytes or a string like \"64MiB\")";
                return self.wrong_type(f, expected);
            }
        };
        self.check(f, result)
    }

    /// A duration: an integer number of seconds or a string for [`parse_duration`].
    pub(super) fn duration(&mut self, f: &Field<'a, '_>) -> Option<Duration> {
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
        self.check(f, result)
    }

    /// A timeout: a [`duration`](Self::duration) that is > 0.
    fn timeout(&mut self, f: &Field<'a, '_>) -> Option<Duration> {
        let d = self.duration(f)?;
        let result = if d.is_zero() {
            Err("must be greater than 0".to_string())
        } else {
            Ok(d)
        };
        self.check(f, result)
    }
}

/// `"whole"`, `"none"`, or a size for [`parse_size`].
fn parse_range_fill(s: &str) -> Result<RangeFill, String> {
    match s {
        "whole" => Ok(RangeFill::Whole),
        "none" => Ok(RangeFill::None),
        _ => parse_size(s).map(RangeFill::UpTo).map_err(|_| {
            format!("invalid value {s:?} (expected \"whole\", \"none\" or a size like \"64MiB\")")
        }),
    }
}

fn non_empty(s: &str) -> Result<&str, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s)
    }
}

/// `upstream.ca_file`, `intercept.ca_cert`, `intercept.ca_key`: empty means none; else a path
/// that can name a file (not ending in `/`, `.` or `..`). Syntax only: the file is read when
/// the app starts, not here.
fn parse_file(s: &str) -> Result<Option<PathBuf>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let last = s
        .rsplit(['/', std::path::MAIN_SEPARATOR])
        .next()
        .unwrap_or(s);
    if matches!(last, "" | "." | "..") {
        return Err(format!(
            "invalid CA file {s:?}: names a directory, not a file"
        ));
    }
    Ok(Some(PathBuf::from(s)))
}

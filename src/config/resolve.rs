//! Layered keys → [`Config`]: the rules that span several keys (cache sizes, peering); pure.

use std::net::IpAddr;
use std::path::PathBuf;

use super::reader::{Loc, Problem, Slot};
use super::schema::Raw;
use super::units::show_size;
use super::{Cache, Config, Intercept, Log, Peers, Proxy, Rules, Upstream};

/// Turns the layered keys into a [`Config`], checking the rules that span several keys.
/// Returns `None` when a key is missing or invalid (already reported).
pub(super) fn resolve<'a>(raw: Raw<'a>, problems: &mut Vec<Problem<'a>>) -> Option<Config> {
    check_sizes(&raw, problems);
    check_peers(&raw, problems);
    check_redirects(&raw, problems);
    check_ca_paths(&raw, problems);
    let p = problems;
    let proxy = (
        raw.proxy_listen.take("proxy.listen", p),
        raw.proxy_allow.take("proxy.allow", p),
        raw.proxy_connect_ports.take("proxy.connect_ports", p),
        raw.proxy_tunnel_idle_timeout
            .take("proxy.tunnel_idle_timeout", p),
        raw.proxy_pac_direct.take("proxy.pac_direct", p),
        raw.proxy_max_connections.take("proxy.max_connections", p),
    );
    let cache = (
        raw.cache_dir.take("cache.dir", p),
        raw.cache_max_size.take("cache.max_size", p),
        raw.cache_max_object_size.take("cache.max_object_size", p),
        raw.cache_sendfile.take("cache.sendfile", p),
        raw.cache_targeted.take("cache.targeted", p),
        raw.cache_max_fills.take("cache.max_fills", p),
        raw.cache_range_fill.take("cache.range_fill", p),
    );
    let upstream = (
        raw.upstream_proxy.take("upstream.proxy", p),
        raw.upstream_connect_timeout
            .take("upstream.connect_timeout", p),
        raw.upstream_read_timeout.take("upstream.read_timeout", p),
        raw.upstream_ca_file.take("upstream.ca_file", p),
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
        raw.peers_discover.take("peers.discover", p),
        raw.peers_profile.take("peers.profile", p),
        raw.peers_parallel_holders.take("peers.parallel_holders", p),
        raw.peers_piece_size.take("peers.piece_size", p),
        raw.peers_upload_rate.take("peers.upload_rate", p),
    );
    let intercept = (
        raw.intercept_hosts.take("intercept.hosts", p),
        raw.intercept_ca_cert.take("intercept.ca_cert", p),
        raw.intercept_ca_key.take("intercept.ca_key", p),
    );
    let rules = (
        raw.rules_presets.take("rules.presets", p),
        match raw.rules {
            Slot::Missing => Some(Vec::new()),
            other => other.take("rule", p),
        },
    );
    let log = (
        raw.log_level.take("log.level", p),
        raw.log_access.take("log.access", p),
    );
    let (ca_cert, ca_key) = ca_paths(cache.0.as_deref()?, intercept.1?, intercept.2?);
    Some(Config {
        proxy: Proxy {
            listen: proxy.0?,
            allow: proxy.1?,
            connect_ports: proxy.2?,
            tunnel_idle_timeout: proxy.3?,
            pac_direct: proxy.4?,
            max_connections: proxy.5?,
        },
        cache: Cache {
            dir: cache.0?,
            max_size: cache.1?,
            max_object_size: cache.2?,
            sendfile: cache.3?,
            targeted: cache.4?,
            max_fills: cache.5?,
            range_fill: cache.6?,
        },
        upstream: Upstream {
            proxy: upstream.0?,
            connect_timeout: upstream.1?,
            read_timeout: upstream.2?,
            ca_file: upstream.3?,
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
            discover: peers.8?,
            profile: peers.9?,
            parallel_holders: peers.10?,
            piece_size: peers.11?,
            upload_rate: peers.12?,
        },
        intercept: Intercept {
            hosts: intercept.0?,
            ca_cert,
            ca_key,
        },
        rules: Rules {
            presets: rules.0?,
            user: rules.1?,
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

/// `redirect_to_peers = true` sends members of the peer group elsewhere: with peering off there
/// is no group, and the key would claim what the node cannot do.
fn check_redirects<'a>(raw: &Raw<'a>, problems: &mut Vec<Problem<'a>>) {
    if !matches!(raw.peers_enabled.get(), Some((false, _))) {
        return;
    }
    for (i, loc) in &raw.mirror_redirects {
        problems.push(Problem {
            loc: *loc,
            key: format!("mirror[{i}].redirect_to_peers"),
            message: "needs peers.enabled = true: a content server sends the members of its \
                      peer group to the members that hold an object, and without a group it \
                      serves every request itself (enable peering, or remove this key)"
                .into(),
        });
    }
}

/// Where the CA lives: `ca_cert` defaults to `<cache dir>/ca/ca.pem`, `ca_key` to `ca_cert` with
/// the extension `.key`.
fn ca_paths(
    cache_dir: &std::path::Path,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> (PathBuf, PathBuf) {
    let cert = cert.unwrap_or_else(|| cache_dir.join("ca").join("ca.pem"));
    let key = key.unwrap_or_else(|| cert.with_extension("key"));
    (cert, key)
}

/// The CA key must not be the certificate's own file (the key would overwrite it or be served
/// as the certificate).
fn check_ca_paths<'a>(raw: &Raw<'a>, problems: &mut Vec<Problem<'a>>) {
    let (Some((cert, cert_loc)), Some((key, key_loc)), Some((dir, _))) = (
        raw.intercept_ca_cert.get(),
        raw.intercept_ca_key.get(),
        raw.cache_dir.get(),
    ) else {
        return;
    };
    let (cert_path, key_path) = ca_paths(dir, cert.clone(), key.clone());
    if cert_path == key_path {
        let blame_key = key.is_some();
        problems.push(Problem {
            loc: if blame_key { key_loc } else { cert_loc },
            key: if blame_key {
                "intercept.ca_key"
            } else {
                "intercept.ca_cert"
            }
            .into(),
            message: format!(
                "the CA key would be the certificate's own file ({}): set intercept.ca_key to \
                 another file",
                key_path.display()
            ),
        });
    }
}

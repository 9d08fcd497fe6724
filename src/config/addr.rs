//! Addresses and URLs in the config: listen addresses, seeds, the parent proxy, mirror prefixes and upstreams, ports; syntax only, pure, never resolves a name.

use std::net::{Ipv6Addr, SocketAddr};

use http::Uri;

use super::ParentProxy;

/// Path prefix reserved for the admin pages; no mirror may claim it.
const ADMIN_PREFIX: &str = "/_peercache/";

/// Port of a parent proxy URL that names none (the Squid convention).
const DEFAULT_PARENT_PORT: u16 = 3128;

pub(super) fn check_port(n: i64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!("invalid port {n} (must be 1..=65535)")),
    }
}

/// A listen address: `ip:port` or `[ipv6]:port`, port != 0; no host names (no lookups here).
pub(super) fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
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
pub(super) fn parse_advertise(s: &str) -> Result<Option<SocketAddr>, String> {
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
    if !s.starts_with('[') && !host_chars_ok(host) {
        return None;
    }
    Some((host, port))
}

/// A host name or IPv4 literal as far as its characters go: not empty, ASCII letters, digits,
/// `-`, `.` and `_` only.
pub(super) fn host_chars_ok(h: &str) -> bool {
    !h.is_empty()
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

fn parse_port_text(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|&p| p != 0)
}

/// A seed: `host:port` with a host name, IPv4 or `[IPv6]` and a port in 1..=65535.
pub(super) fn parse_seed(s: &str) -> Result<String, String> {
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
pub(super) fn parse_parent_proxy(s: &str) -> Result<Option<ParentProxy>, String> {
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
pub(super) fn parse_prefix(s: &str) -> Result<String, String> {
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
pub(super) fn parse_upstream(s: &str) -> Result<Uri, String> {
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

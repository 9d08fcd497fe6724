//! `proxy.pac_direct` entries: host names, `*.domain` patterns and CIDRs the PAC file sends `DIRECT`; syntax only, pure.

use super::addr::host_chars_ok;
use super::PacDirect;
use crate::http::acl::parse_net;

/// `"host.example"`, `"*.example"` or a CIDR / bare address (`"10.0.0.0/8"`, `"fd00::/8"`).
/// Names are lower-cased; they may not have empty labels.
pub(super) fn parse_pac_direct(s: &str) -> Result<PacDirect, String> {
    let invalid = || {
        format!(
            "invalid PAC exception {s:?} (expected a host name like \"intranet.example.org\", \
             a domain pattern like \"*.local\", or a CIDR like \"10.0.0.0/8\")"
        )
    };
    let looks_like_net =
        s.contains('/') || s.contains(':') || s.parse::<std::net::IpAddr>().is_ok();
    if looks_like_net {
        return parse_net(s).map(PacDirect::Net).map_err(|_| invalid());
    }
    let (name, domain) = match s.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let labels_ok = name.split('.').all(|label| !label.is_empty());
    if !host_chars_ok(name) || !labels_ok {
        return Err(invalid());
    }
    let name = name.to_ascii_lowercase();
    Ok(if domain {
        PacDirect::Domain(name)
    } else {
        PacDirect::Host(name)
    })
}

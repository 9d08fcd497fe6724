//! Client access control for the proxy listener (`proxy.allow`): pure CIDR matching; never does I/O.

use std::net::IpAddr;

use ipnet::IpNet;

/// Which client addresses may use the proxy: a CIDR list.
///
/// Invariants: an IPv4-mapped IPv6 client (`::ffff:a.b.c.d`, what a dual-stack socket reports
/// for an IPv4 peer) is checked as the IPv4 address `a.b.c.d` (and also as itself, so a rule
/// written as `::ffff:10.0.0.0/104` still matches); an empty list allows nobody, so the proxy is
/// never open by omission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl(Vec<IpNet>);

impl Acl {
    /// An ACL allowing exactly the addresses inside `nets` (host bits in a net are ignored).
    pub fn new(nets: Vec<IpNet>) -> Self {
        Acl(nets)
    }

    /// Whether a client at `ip` may use the proxy.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let canonical = canonical(ip);
        self.0
            .iter()
            .any(|net| net.contains(&canonical) || net.contains(&ip))
    }

    /// The nets, in configuration order.
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

/// Parses one `proxy.allow` entry: a CIDR (`"10.0.0.0/8"`, `"fd00::/8"`) or a bare address,
/// which means a single host (`/32` or `/128`). Host bits are cleared (`"10.1.2.3/8"` becomes
/// `10.0.0.0/8`: the set of matched clients is the same). Never panics.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "invalid CIDR {s:?} (expected e.g. \"192.168.0.0/16\", \"fd00::/8\" or a bare address)"
    ))
}

/// The address as the client really is: IPv4-mapped IPv6 becomes IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(nets: &[&str]) -> Acl {
        Acl::new(
            nets.iter()
                .map(|s| parse_net(s).expect("test net parses"))
                .collect(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address parses")
    }

    #[test]
    fn allows_table() {
        let loopback = ["127.0.0.0/8", "::1/128"];
        let cases: &[(&[&str], &str, bool)] = &[
            (&loopback, "127.0.0.1", true),
            (&loopback, "127.255.255.254", true),
            (&loopback, "128.0.0.1", false),
            (&loopback, "::1", true),
            (&loopback, "::2", false),
            // IPv4-mapped IPv6 is checked as IPv4.
            (&loopback, "::ffff:127.0.0.1", true),
            (&loopback, "::ffff:10.0.0.1", false),
            // IPv4-compatible (deprecated) addresses are not mapped ones.
            (&loopback, "::127.0.0.1", false),
            (&["10.0.0.0/8"], "10.200.3.4", true),
            (&["10.0.0.0/8"], "::ffff:10.200.3.4", true),
            (&["10.0.0.0/8"], "11.0.0.0", false),
            // A rule written in mapped form still matches both forms.
            (&["::ffff:10.0.0.0/104"], "::ffff:10.1.1.1", true),
            (&["::ffff:10.0.0.0/104"], "10.1.1.1", false),
            // Bare addresses are single hosts.
            (&["192.168.1.5"], "192.168.1.5", true),
            (&["192.168.1.5"], "192.168.1.6", false),
            (&["fd00::1"], "fd00::1", true),
            (&["fd00::1"], "fd00::2", false),
            (&["fd00::/8"], "fd12:3456::1", true),
            (&["fd00::/8"], "fe80::1", false),
            // Everything / nothing.
            (&["0.0.0.0/0"], "203.0.113.9", true),
            (&["0.0.0.0/0"], "::ffff:203.0.113.9", true),
            (&["0.0.0.0/0"], "2001:db8::1", false),
            (&["::/0"], "2001:db8::1", true),
            (&[], "127.0.0.1", false),
            (&[], "::1", false),
        ];
        for (nets, client, want) in cases {
            assert_eq!(
                acl(nets).allows(ip(client)),
                *want,
                "nets {nets:?} client {client}"
            );
        }
    }

    #[test]
    fn parse_net_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.0/8", Some("127.0.0.0/8")),
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            ("192.168.1.5", Some("192.168.1.5/32")),
            ("::1", Some("::1/128")),
            ("::1/128", Some("::1/128")),
            ("fd00::1/8", Some("fd00::/8")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("", None),
            ("localhost", None),
            ("10.0.0.0/33", None),
            ("::/129", None),
            ("10.0.0.0/", None),
            ("10.0.0/8", None),
            (" 10.0.0.0/8", None),
            ("10.0.0.0/-1", None),
            ("10.0.0.0/99999999999999999999", None),
        ];
        for (input, want) in cases {
            let got = parse_net(input).ok().map(|n| n.to_string());
            assert_eq!(got.as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn nets_keeps_order() {
        let a = acl(&["::1", "10.0.0.0/8"]);
        let shown: Vec<String> = a.nets().iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["::1/128", "10.0.0.0/8"]);
    }
}

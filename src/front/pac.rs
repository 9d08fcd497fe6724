//! The proxy auto-configuration file served at `/proxy.pac` and `/wpad.dat`: JavaScript that
//! sends plain `http:` and the intercepted hosts through this proxy and everything else `DIRECT`.
//! Pure; no I/O.

use std::fmt::Write;
use std::net::SocketAddr;

use http::uri::Authority;

use crate::config::PacDirect;

/// The media type browsers expect for a PAC file.
pub const CONTENT_TYPE: &str = "application/x-ns-proxy-autoconfig";

/// The `host:port` to write after `PROXY`: the authority the client used to reach us (the
/// request's `Host`), with `listen`'s port when it names none (a WPAD lookup of
/// `http://wpad.example/wpad.dat` sends no port, yet reached us on ours). Falls back to `listen`
/// when the client sent no usable authority; never returns text that could break out of a
/// JavaScript string (only letters, digits, `.`, `-`, `_`, `:`, `[` and `]`).
pub fn proxy_authority(host: Option<&str>, listen: SocketAddr) -> String {
    let parsed = host
        .filter(|h| h.bytes().all(authority_byte_ok))
        .and_then(|h| h.parse::<Authority>().ok())
        .filter(|a| !a.host().is_empty())
        .filter(|a| {
            // `Authority` drops a port that does not fit in 16 bits; such a Host is refused.
            let after_host = a.as_str().rsplit_once(']').map_or(a.as_str(), |(_, r)| r);
            !after_host.contains(':') || a.port_u16().is_some_and(|p| p != 0)
        });
    match parsed {
        Some(a) => format!("{}:{}", a.host(), a.port_u16().unwrap_or(listen.port())),
        None => listen.to_string(),
    }
}

fn authority_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
}

/// A host pattern from the interception list: `host.example` or `*.example` (hosts under it).
/// Anything else (it cannot come from a valid config) is left out of the file.
fn host_test(pattern: &str) -> Option<String> {
    let (name, under) = match pattern.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (pattern, false),
    };
    let ok = !name.is_empty()
        && name.split('.').all(|l| !l.is_empty())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return None;
    }
    let name = name.to_ascii_lowercase();
    Some(if under {
        format!("dnsDomainIs(host, \".{name}\")")
    } else {
        format!("host == \"{name}\"")
    })
}

/// The dotted netmask of an IPv4 prefix length, as `isInNet` wants it.
fn v4_mask(prefix: u8) -> std::net::Ipv4Addr {
    let bits = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    std::net::Ipv4Addr::from(bits)
}

/// The PAC file. In order:
/// 1. `localhost`, `*.localhost`, loopback addresses and the proxy's own host (its pages, e.g.
///    the dashboard, are reached directly, not proxied to itself): `DIRECT`;
/// 2. `proxy.pac_direct`: hosts, `*.domain` patterns, then networks (an IP literal as is, a host
///    name resolved by the browser; IPv6 networks only where the browser has `isInNetEx`);
/// 3. `http:` URLs: `PROXY <proxy>; DIRECT` (direct if the proxy cannot be reached);
/// 4. `https:` URLs of an `intercepted` host pattern (`host.example`, `*.example`): the same;
/// 5. everything else: `DIRECT`.
pub fn generate(proxy: &str, intercepted: &[String], direct: &[PacDirect]) -> String {
    let mut js = String::new();
    js.push_str(
        "// Proxy auto-configuration from peercache: plain http: and the intercepted https hosts\n\
         // go through the proxy (DIRECT if it is down); everything else goes DIRECT.\n\
         function FindProxyForURL(url, host) {\n",
    );
    let _ = writeln!(js, "  var proxy = \"PROXY {proxy}; DIRECT\";");
    js.push_str(
        "  host = host.toLowerCase();\n  \
         if (host == \"localhost\" || dnsDomainIs(host, \".localhost\") || \
         shExpMatch(host, \"127.*\") || host == \"::1\" || host == \"[::1]\") return \"DIRECT\";\n",
    );
    let own = match proxy.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => proxy,
    };
    let own = own
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let _ = writeln!(
        js,
        "  if (host == \"{own}\" || host == \"[{own}]\") return \"DIRECT\";"
    );
    let mut nets = Vec::new();
    for d in direct {
        match d {
            PacDirect::Host(h) => {
                let _ = writeln!(js, "  if (host == \"{h}\") return \"DIRECT\";");
            }
            PacDirect::Domain(d) => {
                let _ = writeln!(js, "  if (dnsDomainIs(host, \".{d}\")) return \"DIRECT\";");
            }
            PacDirect::Net(n) => nets.push(*n),
        }
    }
    if !nets.is_empty() {
        js.push_str(
            "  var ip = host;\n  \
             if (!/^[0-9.]+$/.test(host) && host.indexOf(\":\") < 0) ip = dnsResolve(host);\n  \
             if (ip) ip = ip.replace(/^\\[|\\]$/g, \"\");\n",
        );
        for n in nets {
            let _ = match n {
                ipnet::IpNet::V4(v4) => writeln!(
                    js,
                    "  if (ip && isInNet(ip, \"{}\", \"{}\")) return \"DIRECT\";",
                    v4.network(),
                    v4_mask(v4.prefix_len())
                ),
                ipnet::IpNet::V6(v6) => writeln!(
                    js,
                    "  if (ip && typeof isInNetEx == \"function\" && isInNetEx(ip, \"{v6}\")) \
                     return \"DIRECT\";"
                ),
            };
        }
    }
    js.push_str("  if (url.substring(0, 5) == \"http:\") return proxy;\n");
    let tests: Vec<String> = intercepted.iter().filter_map(|p| host_test(p)).collect();
    if !tests.is_empty() {
        let _ = writeln!(
            js,
            "  if (url.substring(0, 6) == \"https:\" && ({})) return proxy;",
            tests.join(" || ")
        );
    }
    js.push_str("  return \"DIRECT\";\n}\n");
    js
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> SocketAddr {
        "0.0.0.0:3128".parse().unwrap()
    }

    #[test]
    fn the_proxy_address_is_the_one_the_client_used() {
        let cases: &[(Option<&str>, &str)] = &[
            (Some("10.0.0.11:3128"), "10.0.0.11:3128"),
            (Some("proxy.lan:8080"), "proxy.lan:8080"),
            (Some("wpad.example.org"), "wpad.example.org:3128"),
            (Some("[fd00::1]:3128"), "[fd00::1]:3128"),
            (Some("[fd00::1]"), "[fd00::1]:3128"),
            (None, "0.0.0.0:3128"),
            (Some(""), "0.0.0.0:3128"),
            (Some("x\";alert(1);\""), "0.0.0.0:3128"),
            (Some("user@host:1"), "0.0.0.0:3128"),
            (Some("a b"), "0.0.0.0:3128"),
            (Some("host:99999"), "0.0.0.0:3128"),
            (Some("host:0"), "0.0.0.0:3128"),
        ];
        for (host, want) in cases {
            assert_eq!(proxy_authority(*host, listen()), *want, "{host:?}");
        }
    }

    #[test]
    fn the_file_names_each_rule_in_order() {
        let direct = [
            PacDirect::Host("intranet.example.org".into()),
            PacDirect::Domain("local".into()),
            PacDirect::Net("10.0.0.0/8".parse().unwrap()),
            PacDirect::Net("192.168.1.0/24".parse().unwrap()),
            PacDirect::Net("fd00::/8".parse().unwrap()),
        ];
        let intercepted = ["files.example.org".to_owned(), "*.Example.NET".to_owned()];
        let pac = generate("10.0.0.11:3128", &intercepted, &direct);
        let want_in_order = [
            "function FindProxyForURL(url, host) {",
            "var proxy = \"PROXY 10.0.0.11:3128; DIRECT\";",
            "if (host == \"localhost\"",
            "if (host == \"10.0.0.11\" || host == \"[10.0.0.11]\") return \"DIRECT\";",
            "if (host == \"intranet.example.org\") return \"DIRECT\";",
            "if (dnsDomainIs(host, \".local\")) return \"DIRECT\";",
            "ip = dnsResolve(host);",
            "if (ip && isInNet(ip, \"10.0.0.0\", \"255.0.0.0\")) return \"DIRECT\";",
            "if (ip && isInNet(ip, \"192.168.1.0\", \"255.255.255.0\")) return \"DIRECT\";",
            "isInNetEx(ip, \"fd00::/8\")) return \"DIRECT\";",
            "if (url.substring(0, 5) == \"http:\") return proxy;",
            "(host == \"files.example.org\" || dnsDomainIs(host, \".example.net\"))) return proxy;",
            "return \"DIRECT\";\n}",
        ];
        let mut at = 0;
        for want in want_in_order {
            match pac[at..].find(want) {
                Some(i) => at += i + want.len(),
                None => panic!("{want:?} missing or out of order in:\n{pac}"),
            }
        }
    }

    #[test]
    fn without_exceptions_or_interception_only_http_is_proxied() {
        let pac = generate("127.0.0.1:3128", &[], &[]);
        assert!(
            !pac.contains("dnsResolve"),
            "no lookups without networks:\n{pac}"
        );
        assert!(!pac.contains("https:"), "{pac}");
        assert!(pac.contains("if (url.substring(0, 5) == \"http:\") return proxy;"));
    }

    #[test]
    fn malformed_interception_patterns_are_left_out() {
        let bad = ["\"); evil(\"".to_owned(), "*".to_owned(), "a..b".to_owned()];
        let pac = generate("127.0.0.1:3128", &bad, &[]);
        assert!(!pac.contains("evil") && !pac.contains("https:"), "{pac}");
    }

    #[test]
    fn the_proxys_own_host_is_direct() {
        for (proxy, own) in [
            ("Proxy.LAN:3128", "proxy.lan"),
            ("[fd00::1]:3128", "fd00::1"),
            ("10.0.0.11:8080", "10.0.0.11"),
        ] {
            let pac = generate(proxy, &[], &[]);
            let want = format!("if (host == \"{own}\" || host == \"[{own}]\") return \"DIRECT\";");
            assert!(pac.contains(&want), "{proxy}: {pac}");
        }
    }

    #[test]
    fn netmasks() {
        assert_eq!(v4_mask(0).to_string(), "0.0.0.0");
        assert_eq!(v4_mask(8).to_string(), "255.0.0.0");
        assert_eq!(v4_mask(20).to_string(), "255.255.240.0");
        assert_eq!(v4_mask(32).to_string(), "255.255.255.255");
    }
}

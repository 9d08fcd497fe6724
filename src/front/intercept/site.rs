//! Which name an intercepted tunnel serves (CONNECT host and TLS server name against the listed hosts), and the absolute https form of the requests inside it; pure, no I/O.

use std::net::IpAddr;

use http::{header, Method, Request, Uri};

use crate::config::HostPatterns;
use crate::error::{Error, Kind};

/// The name to present a certificate for, given the CONNECT host and the TLS server name
/// (SNI) the client sent: the CONNECT host when there is no SNI (clients send none for an IP
/// address), else the SNI when it is the CONNECT host or itself listed. Anything else is
/// refused: a listed CONNECT must not get a certificate for an unlisted name. Lower-case.
pub fn served_name(
    connect_host: &str,
    sni: Option<&str>,
    hosts: &HostPatterns,
) -> Result<String, String> {
    let name = match sni {
        None => connect_host,
        Some(sni) if sni.eq_ignore_ascii_case(connect_host) || hosts.matches(sni) => sni,
        Some(sni) => {
            return Err(format!(
                "server name {sni:?} is neither the CONNECT host {connect_host:?} nor a listed host"
            ))
        }
    };
    Ok(name.to_ascii_lowercase())
}

/// The site an intercepted connection serves: the name in its certificate and the CONNECT port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    name: String,
    port: u16,
    /// `name` (`[v6]` for an IPv6 address) plus `:port` unless it is 443.
    authority: String,
}

impl Site {
    /// `name` is lower-case, an IP literal without brackets.
    pub fn new(name: String, port: u16) -> Site {
        let host = if name.contains(':') {
            format!("[{name}]")
        } else {
            name.clone()
        };
        let authority = if port == 443 {
            host
        } else {
            format!("{host}:{port}")
        };
        Site {
            name,
            port,
            authority,
        }
    }

    /// Turns a request read inside the tunnel into the absolute-form request it stands for,
    /// `https://name[:port]/path?query`, so it is keyed, shared and logged like any https URL.
    /// The request must name this site (absolute-form authority, else `Host`; a missing port
    /// means the tunnel's): another host is 421 Misdirected Request (RFC 9110 §15.5.20), as it
    /// needs its own CONNECT; CONNECT inside, `http://` targets, `*` and an HTTP/1.1 request
    /// without `Host` are 400.
    pub fn absolute<B>(&self, req: Request<B>) -> Result<Request<B>, Error> {
        let bad = |why: &str| Error::downstream(Kind::BadRequest, why);
        let (mut parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            return Err(bad("CONNECT inside an intercepted tunnel"));
        }
        let named = match parts.uri.authority() {
            Some(authority) => {
                if parts.uri.scheme_str() != Some("https") {
                    return Err(bad("only https:// targets inside an intercepted tunnel"));
                }
                Some(authority.as_str())
            }
            None => match parts.headers.get(header::HOST) {
                Some(h) => match h.to_str() {
                    Ok(h) => Some(h),
                    Err(_) => return Err(bad("invalid Host")),
                },
                None if parts.version == http::Version::HTTP_10 => None,
                None => return Err(bad("HTTP/1.1 request without Host")),
            },
        };
        if let Some(named) = named.filter(|n| !self.is(n)) {
            return Err(Error::downstream(
                Kind::Misdirected,
                format!(
                    "this connection serves {}; {named} needs its own CONNECT",
                    self.authority
                ),
            ));
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if !path.starts_with('/') {
            return Err(bad("request target must be a path"));
        }
        parts.uri = format!("https://{}{path}", self.authority)
            .parse::<Uri>()
            .map_err(|_| bad("invalid request target"))?;
        Ok(Request::from_parts(parts, body))
    }

    /// Whether an authority (`host[:port]`) names this site.
    fn is(&self, authority: &str) -> bool {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (h, Some(p)),
            _ => (authority, None),
        };
        let port_ok = port.is_none_or(|p| p.parse::<u16>() == Ok(self.port));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host_ok = match (host.parse::<IpAddr>(), self.name.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => host.trim_end_matches('.').eq_ignore_ascii_case(&self.name),
        };
        port_ok && host_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_name_is_the_sni_when_it_is_the_host_or_listed() {
        let hosts = HostPatterns::parse(["files.example.org", "*.example.net", "127.0.0.1"])
            .expect("patterns");
        let table: &[(&str, Option<&str>, Result<&str, &str>)] = &[
            ("files.example.org", None, Ok("files.example.org")),
            (
                "Files.Example.org",
                Some("files.EXAMPLE.org"),
                Ok("files.example.org"),
            ),
            ("127.0.0.1", None, Ok("127.0.0.1")),
            ("127.0.0.1", Some("a.example.net"), Ok("a.example.net")),
            ("a.example.net", Some("b.example.net"), Ok("b.example.net")),
            (
                "files.example.org",
                Some("bank.example.com"),
                Err("neither"),
            ),
            ("127.0.0.1", Some("example.net"), Err("neither")),
        ];
        for (host, sni, want) in table {
            let got = served_name(host, *sni, &hosts);
            match want {
                Ok(name) => assert_eq!(got.as_deref(), Ok(*name), "{host} {sni:?}"),
                Err(part) => assert!(got.is_err_and(|e| e.contains(part)), "{host} {sni:?}"),
            }
        }
    }

    fn rewrite(site: &Site, target: &str, host: Option<&str>) -> Result<String, Error> {
        let mut req = Request::get(target);
        if let Some(h) = host {
            req = req.header("host", h);
        }
        site.absolute(req.body(()).expect("request"))
            .map(|r| r.uri().to_string())
    }

    #[test]
    fn requests_inside_become_absolute_https_for_the_site_only() {
        let site = Site::new("files.example.org".into(), 443);
        let ok = |t: &str, h: Option<&str>| rewrite(&site, t, h).expect("rewritten");
        assert_eq!(
            ok("/a/b?c=1", Some("files.example.org")),
            "https://files.example.org/a/b?c=1"
        );
        assert_eq!(
            ok("/", Some("FILES.example.org:443")),
            "https://files.example.org/"
        );
        assert_eq!(
            ok("https://files.example.org/x", Some("ignored.example")),
            "https://files.example.org/x"
        );
        let kind = |t: &str, h: Option<&str>| rewrite(&site, t, h).expect_err("refused").kind;
        assert_eq!(kind("/", Some("other.example.org")), Kind::Misdirected);
        assert_eq!(kind("/", Some("files.example.org:8443")), Kind::Misdirected);
        assert_eq!(kind("https://other.example.org/", None), Kind::Misdirected);
        assert_eq!(kind("http://files.example.org/", None), Kind::BadRequest);
        assert_eq!(kind("/", None), Kind::BadRequest);
        assert_eq!(kind("*", Some("files.example.org")), Kind::BadRequest);

        let connect = Request::connect("files.example.org:443")
            .body(())
            .expect("request");
        assert_eq!(
            site.absolute(connect).expect_err("refused").kind,
            Kind::BadRequest
        );
    }

    #[test]
    fn other_ports_and_addresses_keep_their_authority() {
        let (v4, v6) = (
            Site::new("127.0.0.1".into(), 8443),
            Site::new("::1".into(), 443),
        );
        type Row<'a> = (&'a Site, &'a str, Option<&'a str>, Result<&'a str, Kind>);
        let table: &[Row<'_>] = &[
            (
                &v4,
                "/x",
                Some("127.0.0.1:8443"),
                Ok("https://127.0.0.1:8443/x"),
            ),
            // A Host without a port means the tunnel's.
            (&v4, "/x", Some("127.0.0.1"), Ok("https://127.0.0.1:8443/x")),
            (&v6, "/", Some("[::1]"), Ok("https://[::1]/")),
            (&v6, "/", Some("[0:0::1]:443"), Ok("https://[::1]/")),
            (&v6, "/", Some("[::2]"), Err(Kind::Misdirected)),
        ];
        for (site, target, host, want) in table {
            let got = rewrite(site, target, *host).map_err(|e| e.kind);
            assert_eq!(
                got.as_deref(),
                want.as_deref(),
                "{site:?} {target} {host:?}"
            );
        }
        let http10 = Request::get("/old")
            .version(http::Version::HTTP_10)
            .body(())
            .expect("request");
        assert_eq!(
            v4.absolute(http10).expect("HTTP/1.0 needs no Host").uri(),
            "https://127.0.0.1:8443/old"
        );
    }
}

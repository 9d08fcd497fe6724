//! Routes a request by its method and target: CONNECT tunnel, forward proxy, mirror route or admin
//! page. Pure; no I/O.

use std::net::SocketAddr;

use http::{header, HeaderMap, Method, Uri};

use crate::config::Mirror;
use crate::error::{Error, Kind};

/// The path prefix of the admin pages.
pub const ADMIN_PREFIX: &str = "/_peercache/";
/// The admin page of the proxy auto-configuration file, also at `/proxy.pac` and `/wpad.dat`.
pub const PAC_PAGE: &str = "proxy.pac";
/// The admin page of the icon, also at `/favicon.ico` unless a mirror claims that path.
pub const FAVICON_PAGE: &str = "favicon.ico";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `CONNECT host:port` to an allowed port.
    Connect { host: String, port: u16 },
    /// An absolute-form request for an http or https origin.
    Forward { target: Uri },
    /// An origin-form request under a mirror prefix (or an npm tarball path without one, for the
    /// mirror with `npm_tarballs`), rewritten to the mirror's upstream.
    Mirror { target: Uri, mirror: usize },
    /// A page under `/_peercache/` (the path after the prefix).
    Admin { page: String },
    /// Malformed, forbidden or unroutable.
    Reject(Error),
}

/// What routing needs to know about this proxy.
pub struct Routing<'a> {
    pub listen: SocketAddr,
    pub mirrors: &'a [Mirror],
    pub connect_ports: &'a [u16],
}

/// RFC 9112 §3.2: absolute-form for proxied requests, authority-form for CONNECT, origin-form for
/// our own pages and the mirrors.
pub fn classify(method: &Method, uri: &Uri, r: &Routing<'_>) -> Route {
    if method == Method::CONNECT {
        return connect(uri, r);
    }
    match uri.scheme_str() {
        None => local(uri, r),
        Some("http" | "https") => {
            let (host, port) = match check_authority(uri) {
                Ok(parts) => parts,
                Err(why) => return reject(why),
            };
            if is_self(host, port, uri.scheme_str(), r.listen) {
                return local(uri, r);
            }
            Route::Forward {
                target: uri.clone(),
            }
        }
        Some(other) => reject(&format!("unsupported scheme {other:?}")),
    }
}

/// RFC 9112 §3.2: a request carries exactly one `Host` field (an absolute-form target then
/// replaces it); two are a bad request, whatever they say.
pub fn check_host_fields(headers: &HeaderMap) -> Result<(), Error> {
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(Error::downstream(
            Kind::BadRequest,
            "more than one Host field",
        ));
    }
    Ok(())
}

/// The authority of an absolute-form target names a host and, if any, a port in 1..=65535,
/// and no userinfo: credentials in a URL are refused (RFC 9110 §4.2.4 treats them as an error),
/// so they reach neither the origin's `Host` nor the cache key nor the log. Returns the host
/// (an IPv6 literal without its brackets) and the port, if one is given.
fn check_authority(uri: &Uri) -> Result<(&str, Option<u16>), &'static str> {
    let Some(authority) = uri.authority().map(|a| a.as_str()) else {
        return Err("absolute URI without a host");
    };
    if authority.contains('@') {
        return Err("userinfo in the target: send credentials in Authorization, not in the URL");
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let Some((addr, rest)) = v6.split_once(']') else {
                return Err("unclosed IPv6 literal in the target");
            };
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("invalid IPv6 literal in the target");
            }
            (addr, rest)
        }
        None => match authority.rfind(':') {
            Some(colon) => authority.split_at(colon),
            None => (authority, ""),
        },
    };
    if host.is_empty() {
        return Err("absolute URI without a host");
    }
    match port.strip_prefix(':') {
        None if port.is_empty() => Ok((host, None)),
        None => Err("invalid authority in the target"),
        Some("") => Ok((host, None)), // RFC 3986 §3.2.3: an empty port is the scheme's default
        Some(digits) => match digits.parse::<u16>() {
            Ok(p) if p > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok((host, Some(p))),
            _ => Err("the target's port is not in 1..=65535"),
        },
    }
}

/// The target as logs show it: without userinfo, which is refused and never written down.
/// Otherwise as `Uri` displays it, built without `core::fmt` (it runs for every request).
pub fn loggable(uri: &Uri) -> String {
    let authority = uri.authority().map_or("", |a| {
        let a = a.as_str();
        &a[a.rfind('@').map_or(0, |at| at + 1)..]
    });
    let scheme = uri.scheme_str();
    let (path, query) = (uri.path(), uri.query());
    let mut out = String::with_capacity(
        scheme.map_or(0, |s| s.len() + 3)
            + authority.len()
            + path.len()
            + query.map_or(0, |q| q.len() + 1),
    );
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    out.push_str(authority);
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn reject(why: &str) -> Route {
    Route::Reject(Error::downstream(Kind::BadRequest, why))
}

fn connect(uri: &Uri, r: &Routing<'_>) -> Route {
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
        return reject("CONNECT needs host:port");
    };
    if uri.scheme().is_some() || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return reject("CONNECT target must be host:port");
    }
    if !r.connect_ports.contains(&port) {
        return Route::Reject(Error::downstream(
            Kind::PortNotAllowed,
            format!("CONNECT to port {port} is not allowed"),
        ));
    }
    Route::Connect {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    }
}

/// Does an absolute URI name this proxy itself (a request for our own pages, not a loop)?
fn is_self(host: &str, port: Option<u16>, scheme: Option<&str>, listen: SocketAddr) -> bool {
    let port = port.unwrap_or(if scheme == Some("https") { 443 } else { 80 });
    if port != listen.port() {
        return false;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == listen.ip() || (listen.ip().is_unspecified() && ip.is_loopback()),
        Err(_) => bare.eq_ignore_ascii_case("localhost") && listen.ip().is_loopback(),
    }
}

/// An origin-form request (or one addressed to us): admin pages and mirrors.
fn local(uri: &Uri, r: &Routing<'_>) -> Route {
    let path = uri.path();
    if !path.starts_with('/') {
        return reject("request target must be an absolute URI (this is a proxy)");
    }
    if let Some(page) = path.strip_prefix(ADMIN_PREFIX) {
        return Route::Admin {
            page: page.to_owned(),
        };
    }
    if path == ADMIN_PREFIX.trim_end_matches('/') {
        return Route::Admin {
            page: String::new(),
        };
    }
    if path == "/proxy.pac" || path == "/wpad.dat" {
        return Route::Admin {
            page: PAC_PAGE.to_owned(),
        };
    }
    let best = r
        .mirrors
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.prefix))
        .max_by_key(|(_, m)| m.prefix.len())
        .map(|(i, m)| (i, m, &path[m.prefix.len()..]));
    // npm's replace-registry-host: a tarball path without the registry mirror's prefix.
    let npm = || {
        let (i, m) = r.mirrors.iter().enumerate().find(|(_, m)| m.npm_tarballs)?;
        is_npm_tarball_path(path).then(|| (i, m, &path[1..]))
    };
    let Some((i, m, rest)) = best.or_else(npm) else {
        if path == "/favicon.ico" {
            return Route::Admin {
                page: FAVICON_PAGE.to_owned(),
            };
        }
        return reject("not a proxy request: use this address as an HTTP proxy, or configure a [[mirror]] for this path");
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let base = m.upstream.to_string();
    let base = base.trim_end_matches('/');
    match format!("{base}/{rest}{query}").parse::<Uri>() {
        Ok(target) => Route::Mirror { target, mirror: i },
        Err(_) => reject("invalid path for the mirror"),
    }
}

/// npm's tarball paths: `/{name}/-/{file}.tgz` and `/@{scope}/{name}/-/{file}.tgz`, each segment
/// non-empty and not starting with `.` (npm names never do; no `..` can reach the upstream).
fn is_npm_tarball_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let plain = |s: &str| !s.is_empty() && !s.starts_with('.');
    match segments.as_slice() {
        [scope, name, "-", file] => {
            scope.len() > 1
                && scope.starts_with('@')
                && plain(&scope[1..])
                && plain(name)
                && is_tgz(file)
        }
        [name, "-", file] => plain(name) && !name.starts_with('@') && is_tgz(file),
        _ => false,
    }
}

fn is_tgz(file: &str) -> bool {
    file.len() > ".tgz".len() && file.ends_with(".tgz") && !file.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrors() -> Vec<Mirror> {
        vec![
            Mirror {
                prefix: "/debian/".into(),
                upstream: "http://deb.example.org/debian/".parse().unwrap(),
                redirect_to_peers: false,
                npm_tarballs: false,
            },
            Mirror {
                prefix: "/debian/security/".into(),
                upstream: "https://sec.example.org/".parse().unwrap(),
                redirect_to_peers: false,
                npm_tarballs: false,
            },
            Mirror {
                prefix: "/npm/".into(),
                upstream: "https://registry.example.org/npm-all/".parse().unwrap(),
                redirect_to_peers: false,
                npm_tarballs: true,
            },
        ]
    }

    fn route(method: &str, target: &str) -> Route {
        let m = mirrors();
        let r = Routing {
            listen: "127.0.0.1:3128".parse().unwrap(),
            mirrors: &m,
            connect_ports: &[443, 8443],
        };
        classify(&method.parse().unwrap(), &target.parse().unwrap(), &r)
    }

    fn rejected(r: Route) -> Kind {
        match r {
            Route::Reject(e) => e.kind,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn absolute_form_is_forwarded() {
        for t in [
            "http://example.com/a?b",
            "https://example.com:8443/",
            "http://[::1]:8080/x",
        ] {
            assert_eq!(
                route("GET", t),
                Route::Forward {
                    target: t.parse().unwrap()
                },
                "{t}"
            );
        }
    }

    #[test]
    fn connect_checks_the_port() {
        assert_eq!(
            route("CONNECT", "example.com:443"),
            Route::Connect {
                host: "example.com".into(),
                port: 443
            }
        );
        assert_eq!(
            route("CONNECT", "[::1]:8443"),
            Route::Connect {
                host: "::1".into(),
                port: 8443
            }
        );
        assert_eq!(
            rejected(route("CONNECT", "example.com:25")),
            Kind::PortNotAllowed
        );
        assert_eq!(rejected(route("CONNECT", "example.com")), Kind::BadRequest);
        assert_eq!(
            rejected(route("CONNECT", "http://example.com:443/")),
            Kind::BadRequest
        );
    }

    #[test]
    fn a_catch_all_mirror_takes_the_icon_but_not_the_pac_file() {
        let m = vec![Mirror {
            prefix: "/".into(),
            upstream: "http://content.example.org/".parse().unwrap(),
            redirect_to_peers: false,
            npm_tarballs: false,
        }];
        let r = Routing {
            listen: "127.0.0.1:3128".parse().unwrap(),
            mirrors: &m,
            connect_ports: &[443],
        };
        let get = |t: &str| classify(&Method::GET, &t.parse().unwrap(), &r);
        assert!(matches!(get("/favicon.ico"), Route::Mirror { .. }));
        assert_eq!(
            get("/proxy.pac"),
            Route::Admin {
                page: PAC_PAGE.into()
            }
        );
    }

    #[test]
    fn mirrors_use_the_longest_prefix_and_keep_the_query() {
        assert_eq!(
            route("GET", "/debian/dists/stable/Release?x=1"),
            Route::Mirror {
                target: "http://deb.example.org/debian/dists/stable/Release?x=1"
                    .parse()
                    .unwrap(),
                mirror: 0
            }
        );
        assert_eq!(
            route("GET", "/debian/security/pool/a.deb"),
            Route::Mirror {
                target: "https://sec.example.org/pool/a.deb".parse().unwrap(),
                mirror: 1
            }
        );
    }

    #[test]
    fn npm_tarballs_without_the_prefix_reach_the_npm_mirror() {
        let npm = |target: &str| Route::Mirror {
            target: target.parse().unwrap(),
            mirror: 2,
        };
        let up = "https://registry.example.org/npm-all";
        let cases: &[(&str, Option<Route>)] = &[
            // The same upstream URL (and cache key) as through the prefix.
            (
                "/left-pad/-/left-pad-1.3.0.tgz",
                Some(npm(&format!("{up}/left-pad/-/left-pad-1.3.0.tgz"))),
            ),
            (
                "/npm/left-pad/-/left-pad-1.3.0.tgz",
                Some(npm(&format!("{up}/left-pad/-/left-pad-1.3.0.tgz"))),
            ),
            (
                "/@scope/pkg/-/pkg-1.0.0.tgz?x=1",
                Some(npm(&format!("{up}/@scope/pkg/-/pkg-1.0.0.tgz?x=1"))),
            ),
            // A configured prefix wins over the tarball shape.
            (
                "/debian/-/x.tgz",
                Some(Route::Mirror {
                    target: "http://deb.example.org/debian/-/x.tgz".parse().unwrap(),
                    mirror: 0,
                }),
            ),
            // Anything else without a prefix is still no proxy request.
            ("/left-pad", None),
            ("/left-pad/-/left-pad-1.3.0.tar.gz", None),
            ("/left-pad/-/.tgz", None),
            ("/left-pad/-/", None),
            ("/../-/x.tgz", None),
            ("/@/pkg/-/pkg.tgz", None),
            ("/@scope/-/pkg.tgz", None),
            ("/a/b/-/c.tgz", None),
            ("/a/-/b/c.tgz", None),
            ("//-/c.tgz", None),
        ];
        for (path, want) in cases {
            match want {
                Some(want) => assert_eq!(&route("GET", path), want, "{path}"),
                None => assert_eq!(rejected(route("GET", path)), Kind::BadRequest, "{path}"),
            }
        }
        // Without a mirror that asks for them, the prefix-less paths are refused.
        let m = &mirrors()[..2];
        let r = Routing {
            listen: "127.0.0.1:3128".parse().unwrap(),
            mirrors: m,
            connect_ports: &[],
        };
        let got = classify(
            &Method::GET,
            &"/left-pad/-/left-pad-1.3.0.tgz".parse().unwrap(),
            &r,
        );
        assert_eq!(rejected(got), Kind::BadRequest);
    }

    #[test]
    fn admin_pages_and_requests_for_ourselves() {
        assert_eq!(
            route("GET", "/_peercache/status"),
            Route::Admin {
                page: "status".into()
            }
        );
        assert_eq!(
            route("GET", "http://127.0.0.1:3128/_peercache/status"),
            Route::Admin {
                page: "status".into()
            }
        );
        assert_eq!(
            route("GET", "http://localhost:3128/debian/x"),
            Route::Mirror {
                target: "http://deb.example.org/debian/x".parse().unwrap(),
                mirror: 0
            }
        );
        for path in ["/proxy.pac", "/wpad.dat", "http://127.0.0.1:3128/proxy.pac"] {
            assert_eq!(
                route("GET", path),
                Route::Admin {
                    page: PAC_PAGE.into()
                },
                "{path}"
            );
        }
        assert_eq!(
            route("GET", "/favicon.ico"),
            Route::Admin {
                page: FAVICON_PAGE.into()
            }
        );
        // Same host, other port: a real origin.
        assert!(matches!(
            route("GET", "http://127.0.0.1:3129/_peercache/status"),
            Route::Forward { .. }
        ));
    }

    #[test]
    fn authorities_without_a_usable_host_and_port_or_with_userinfo_are_bad_requests() {
        for t in [
            "http://user:pass@example.com/x",
            "http://user@example.com/x",
            "http://example.com:0/x",
            "http://example.com:99999/x",
            "http://example.com:+80/x",
            "http://:8080/x",
            "http://[::zz]/x",
            "http://[::1/x",
        ] {
            // A target the URI parser refuses gets hyper's own 400 before it reaches us.
            let Ok(uri) = t.parse::<Uri>() else { continue };
            let r = classify(
                &Method::GET,
                &uri,
                &Routing {
                    listen: "127.0.0.1:3128".parse().unwrap(),
                    mirrors: &[],
                    connect_ports: &[],
                },
            );
            assert_eq!(rejected(r), Kind::BadRequest, "{t}");
        }
        for t in [
            "http://example.com:/x",
            "http://[::1]:8080/x",
            "http://a.b:65535/",
        ] {
            assert!(matches!(route("GET", t), Route::Forward { .. }), "{t}");
        }
    }

    #[test]
    fn logs_never_show_userinfo() {
        let uri: Uri = "http://user:secret@example.com:8080/a?b".parse().unwrap();
        assert_eq!(loggable(&uri), "http://example.com:8080/a?b");
        // Without userinfo, as the target displays.
        for t in [
            "http://example.com/a",
            "http://example.com",
            "https://[::1]:8443/a/b?c=d&e",
            "example.com:443",
            "/_peercache/status?x",
            "*",
        ] {
            let uri: Uri = t.parse().unwrap();
            assert_eq!(loggable(&uri), uri.to_string(), "{t}");
        }
        assert_eq!(
            loggable(&"http://example.com".parse().unwrap()),
            "http://example.com/"
        );
    }

    #[test]
    fn two_host_fields_are_a_bad_request() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, "a.example".parse().unwrap());
        assert!(check_host_fields(&h).is_ok());
        h.append(header::HOST, "a.example".parse().unwrap());
        assert_eq!(check_host_fields(&h).unwrap_err().kind, Kind::BadRequest);
    }

    #[test]
    fn unroutable_targets_are_bad_requests() {
        assert_eq!(rejected(route("GET", "/index.html")), Kind::BadRequest);
        assert_eq!(
            rejected(route("GET", "ftp://example.com/x")),
            Kind::BadRequest
        );
        assert_eq!(rejected(route("OPTIONS", "*")), Kind::BadRequest);
    }
}

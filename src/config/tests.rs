//! Unit tests for the config module: defaults, every key's good and bad values, messages.

use super::schema::{
    CACHE_KEYS, INTERCEPT_KEYS, LOG_KEYS, MIRROR_KEYS, PEERS_KEYS, PROXY_KEYS, RULES_KEYS,
    RULE_KEYS, UPSTREAM_KEYS,
};
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
            tunnel_idle_timeout: Duration::from_secs(600),
            pac_direct: vec![],
            max_connections: 512,
        },
        cache: Cache {
            dir: PathBuf::from("peercache-data"),
            max_size: 10 * GIB,
            max_object_size: 4 * GIB,
            sendfile: true,
            targeted: vec![HeaderName::from_static("cdn-cache-control")],
            max_fills: 128,
            range_fill: RangeFill::Whole,
        },
        upstream: Upstream {
            proxy: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            ca_file: None,
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
            discover: Discover::None,
            profile: GossipProfile::Auto,
            parallel_holders: 4,
            piece_size: 1024 * 1024,
            upload_rate: 0,
        },
        intercept: Intercept {
            hosts: HostPatterns::default(),
            ca_cert: PathBuf::from("peercache-data/ca/ca.pem"),
            ca_key: PathBuf::from("peercache-data/ca/ca.key"),
        },
        rules: Rules {
            presets: Preset::ALL.to_vec(),
            user: vec![],
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
        ("[intercept]", INTERCEPT_KEYS),
        ("[rules]", RULES_KEYS),
        ("# [[rule]]", RULE_KEYS),
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

/// The defaults with the commented-out example block that starts at `header` uncommented.
fn uncommented(header: &str) -> Config {
    let mut inside = false;
    let text: String = DEFAULT_TOML
        .lines()
        .map(|line| {
            inside |= line == header;
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
    ok(&text)
}

#[test]
fn commented_mirror_example_parses_when_uncommented() {
    assert_eq!(
        uncommented("# [[mirror]]").mirrors,
        vec![Mirror {
            prefix: "/debian/".into(),
            upstream: Uri::from_static("http://deb.debian.org/debian/"),
            redirect_to_peers: false,
            npm_tarballs: false,
        }]
    );
}

#[test]
fn commented_rule_example_parses_when_uncommented() {
    let rules = uncommented("# [[rule]]").rules.user;
    assert_eq!(rules.len(), 1);
    let r = &rules[0];
    assert_eq!(
        r.pattern.as_str(),
        r"^https://downloads\.example\.org/releases/.+\.tar\.gz$"
    );
    assert_eq!(
        (r.fresh, r.immutable, r.key_fields.is_empty()),
        (Some(Duration::from_secs(30 * 86_400)), false, true)
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
        (
            "[proxy]\npac_direct = [\"*.Local\", \"Intranet.example.org\", \"10.0.0.0/8\", \"192.168.1.7\", \"fd00::/8\"]",
            |c| {
                c.proxy.pac_direct
                    == [
                        PacDirect::Domain("local".into()),
                        PacDirect::Host("intranet.example.org".into()),
                        PacDirect::Net(net("10.0.0.0/8")),
                        PacDirect::Net(net("192.168.1.7/32")),
                        PacDirect::Net(net("fd00::/8")),
                    ]
            },
        ),
        ("[peers]\ndiscover = \"mdns\"", |c| {
            c.peers.discover == Discover::Mdns
        }),
        ("[peers]\nprofile = \"lan\"", |c| c.peers.profile == GossipProfile::Lan),
        ("[peers]\nprofile = \"wan\"", |c| c.peers.profile == GossipProfile::Wan),
        ("[peers]\nsite = \"ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss\"", |c| {
            c.peers.site.len() == MAX_SITE_LEN
        }),
        ("cache.max_size = 1024\ncache.max_object_size = 0", |c| {
            c.cache.max_size == 1024 && c.cache.max_object_size == 0
        }),
        (
            "[cache]\nmax_size = \"1 TiB\"\nmax_object_size = \"10gb\"",
            |c| c.cache.max_size == 1 << 40 && c.cache.max_object_size == 10_000_000_000,
        ),
        ("[cache]\nsendfile = false", |c| !c.cache.sendfile),
        ("[cache]\ntargeted = []", |c| c.cache.targeted.is_empty()),
        (
            "[cache]\ntargeted = [\"Peercache-Cache-Control\", \"CDN-Cache-Control\"]",
            |c| c.cache.targeted == ["peercache-cache-control", "cdn-cache-control"],
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
        (
            "[upstream]\nca_file = \"/etc/peercache/corp-ca.pem\"",
            |c| c.upstream.ca_file == Some(PathBuf::from("/etc/peercache/corp-ca.pem")),
        ),
        ("[upstream]\nca_file = \"certs/test ca.pem\"", |c| {
            c.upstream.ca_file.as_deref() == Some(Path::new("certs/test ca.pem"))
        }),
        ("[upstream]\nca_file = \"\"", |c| {
            c.upstream.ca_file.is_none()
        }),
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
        (
            "[peers]\nparallel_holders = 1\npiece_size = \"64KiB\"\nupload_rate = \"12MiB\"",
            |c| {
                c.peers.parallel_holders == 1
                    && c.peers.piece_size == 64 * 1024
                    && c.peers.upload_rate == 12 * 1024 * 1024
            },
        ),
        (
            "[peers]\nparallel_holders = 64\npiece_size = 67108864\nupload_rate = 0",
            |c| {
                c.peers.parallel_holders == 64
                    && c.peers.piece_size == 64 * 1024 * 1024
                    && c.peers.upload_rate == 0
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
            "[peers]\nenabled = true\nlisten = \"192.168.1.10:3129\"\n\
             [[mirror]]\nprefix = \"/debian/\"\nupstream = \"http://deb.debian.org/debian/\"\n\
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
        ("[proxy]\ntunnel_idle_timeout = \"90s\"", |c| {
            c.proxy.tunnel_idle_timeout == Duration::from_secs(90)
        }),
        ("[cache]\nrange_fill = \"none\"", |c| c.cache.range_fill == RangeFill::None),
        ("[cache]\nrange_fill = \"whole\"", |c| c.cache.range_fill == RangeFill::Whole),
        ("[cache]\nrange_fill = \"64MiB\"", |c| {
            c.cache.range_fill == RangeFill::UpTo(64 << 20)
        }),
        ("[cache]\nrange_fill = 0", |c| c.cache.range_fill == RangeFill::UpTo(0)),
        ("[proxy]\nmax_connections = 3\n[cache]\nmax_fills = 1", |c| {
            c.proxy.max_connections == 3 && c.cache.max_fills == 1
        }),
        (
            "[intercept]\nhosts = [\"Files.Example.org\", \"*.example.net\", \"[::1]\"]",
            |c| {
                let shown: Vec<String> = c
                    .intercept
                    .hosts
                    .patterns()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                shown == ["files.example.org", "*.example.net", "::1"]
                    && c.intercept.hosts.matches("a.example.net")
            },
        ),
        // The CA follows the cache directory unless placed explicitly; the key sits beside it.
        ("[cache]\ndir = \"/var/cache/pc\"", |c| {
            c.intercept.ca_cert == Path::new("/var/cache/pc/ca/ca.pem")
                && c.intercept.ca_key == Path::new("/var/cache/pc/ca/ca.key")
        }),
        ("[intercept]\nca_cert = \"/etc/peercache/corp.pem\"", |c| {
            c.intercept.ca_cert == Path::new("/etc/peercache/corp.pem")
                && c.intercept.ca_key == Path::new("/etc/peercache/corp.key")
        }),
        (
            "[intercept]\nca_cert = \"/etc/pc/ca.crt\"\nca_key = \"/etc/pc/private/ca.pem\"",
            |c| c.intercept.ca_key == Path::new("/etc/pc/private/ca.pem"),
        ),
        (
            "[[mirror]]\nprefix = \"/pypi/\"\nupstream = \"https://pypi.org/\"\n\
             npm_tarballs = false\n\
             [[mirror]]\nprefix = \"/npm/\"\nupstream = \"https://registry.npmjs.org/\"\n\
             npm_tarballs = true",
            |c| !c.mirrors[0].npm_tarballs && c.mirrors[1].npm_tarballs,
        ),
        ("[rules]\npresets = []", |c| c.rules.presets.is_empty()),
        ("[rules]\npresets = [\"cargo\", \"debian\"]", |c| {
            c.rules.presets == [Preset::Cargo, Preset::Debian]
        }),
        (
            "[[rule]]\npattern = '^https://a\\.example/'\nfresh = \"30d\"\n\
             [[rule]]\npattern = 'x'\nimmutable = true\nkey_fields = [\"Accept\", \"X-Flavour\"]\n\
             [[rule]]\npattern = 'y'\nfresh = 0\n\
             [[rule]]\npattern = 'z'\nkey_fields = [\"accept\"]\nimmutable = false",
            |c| {
                let r = &c.rules.user;
                r.len() == 4
                    && r[0].pattern.as_str() == r"^https://a\.example/"
                    && r[0].fresh == Some(Duration::from_secs(30 * 86_400))
                    && !r[0].immutable
                    && r[1].immutable
                    && r[1].fresh.is_none()
                    && r[1].key_fields == ["accept", "x-flavour"]
                    && r[2].fresh == Some(Duration::ZERO)
                    && r[3].key_fields == ["accept"]
                    && c.rules.presets == Preset::ALL
            },
        ),
        ("rule = [{ pattern = \"a\", fresh = \"24855d\" }]", |c| {
            c.rules.user[0].fresh == Some(Duration::from_secs(24_855 * 86_400))
        }),
        ("rule = []", |c| c.rules.user.is_empty()),
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
        ("[proxy]\npac_direct = [\"*.local\", \"a b\"]", 2, "proxy.pac_direct[1]", "invalid PAC exception \"a b\" (expected a host name like"),
        ("[proxy]\npac_direct = [\"10.0.0.0/33\"]", 2, "proxy.pac_direct[0]", "invalid PAC exception"),
        ("[proxy]\npac_direct = [\"*.\"]", 2, "proxy.pac_direct[0]", "invalid PAC exception"),
        ("[proxy]\npac_direct = [\"a..b\"]", 2, "proxy.pac_direct[0]", "invalid PAC exception"),
        ("[proxy]\npac_direct = [\"*\"]", 2, "proxy.pac_direct[0]", "invalid PAC exception"),
        ("[proxy]\npac_direct = [\"x\\\"+alert(1)+\\\"\"]", 2, "proxy.pac_direct[0]", "invalid PAC exception"),
        ("[proxy]\npac_direct = \"*.local\"", 2, "proxy.pac_direct", "expected an array of host patterns or CIDR strings, found string"),
        // [cache]
        ("[cache]\ndir = \"\"", 2, "cache.dir", "must not be empty"),
        ("[cache]\ndir = 5", 2, "cache.dir", "expected a string, found integer"),
        ("\n[cache]\nmax_size = \"10XB\"", 3, "cache.max_size", "invalid size \"10XB\" (use bytes or e.g. \"512MiB\", \"10GiB\")"),
        ("[cache]\nmax_size = -1", 2, "cache.max_size", "invalid size -1: must not be negative"),
        ("[cache]\nmax_size = \"-1GiB\"", 2, "cache.max_size", "must not be negative"),
        ("[cache]\nmax_size = 1.5", 2, "cache.max_size", "expected a size (integer bytes or a string like \"10GiB\"), found float"),
        ("[cache]\nmax_size = \"99999999TiB\"", 2, "cache.max_size", "too large"),
        ("[cache]\nsendfile = \"on\"", 2, "cache.sendfile", "expected a boolean"),
        ("[cache]\ntargeted = \"CDN-Cache-Control\"", 2, "cache.targeted", "expected an array of header field names, found string"),
        ("[cache]\ntargeted = [\n\"CDN-Cache-Control\",\n\"bad name\"]", 4, "cache.targeted[1]", "invalid header field name \"bad name\""),
        ("[cache]\ntargeted = [\"CDN-Cache-Control\", \"cdn-cache-control\"]", 2, "cache.targeted[1]", "field \"cdn-cache-control\" is listed twice"),
        ("[cache]\ntargeted = [\"Cache-Control\"]", 2, "cache.targeted[0]", "field \"Cache-Control\" cannot be listed here"),
        ("[cache]\ntargeted = [\"x-a\", \"EXPIRES\"]", 2, "cache.targeted[1]", "field \"EXPIRES\" cannot be listed here"),
        ("[cache]\ntargeted = [1]", 2, "cache.targeted[0]", "expected a string, found integer"),
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
        ("[upstream]\nca_file = \"/etc/ssl/certs/\"", 2, "upstream.ca_file", "invalid CA file \"/etc/ssl/certs/\": names a directory"),
        ("[upstream]\nca_file = \"/\"", 2, "upstream.ca_file", "names a directory"),
        ("[upstream]\nca_file = \".\"", 2, "upstream.ca_file", "names a directory"),
        ("[upstream]\nca_file = \"certs/..\"", 2, "upstream.ca_file", "names a directory"),
        ("[upstream]\nca_file = \"certs/.\"", 2, "upstream.ca_file", "names a directory"),
        ("[upstream]\nca_file = false", 2, "upstream.ca_file", "expected a string, found boolean"),
        ("[upstream]\nca_file = [\"a.pem\"]", 2, "upstream.ca_file", "expected a string, found array"),
        ("[proxy]\ntunnel_idle_timeout = \"0s\"", 2, "proxy.tunnel_idle_timeout", "must be greater than 0"),
        ("[proxy]\nmax_connections = 0", 2, "proxy.max_connections", "must be at least 1, got 0"),
        ("[cache]\nmax_fills = -1", 2, "cache.max_fills", "must be at least 1, got -1"),
        ("[cache]\nmax_fills = 1.5", 2, "cache.max_fills", "expected an integer, found float"),
        ("[cache]\nrange_fill = \"all\"", 2, "cache.range_fill", "invalid value \"all\" (expected \"whole\", \"none\" or a size like \"64MiB\")"),
        ("[cache]\nrange_fill = \"Whole\"", 2, "cache.range_fill", "invalid value \"Whole\""),
        ("\n[cache]\nrange_fill = -1", 3, "cache.range_fill", "invalid size -1: must not be negative"),
        ("[cache]\nrange_fill = true", 2, "cache.range_fill", "expected \"whole\", \"none\" or a size (integer bytes or a string like \"64MiB\"), found boolean"),
        // [intercept]
        ("[intercept]\nhosts = \"a.example\"", 2, "intercept.hosts", "expected an array of host patterns, found string"),
        ("[intercept]\nhosts = [\n  \"ok.example\",\n  \"*\",\n]", 4, "intercept.hosts[1]", "invalid host pattern \"*\""),
        ("[intercept]\nhosts = [\"a.example:443\"]", 2, "intercept.hosts[0]", "no port"),
        ("[intercept]\nhosts = [\"*.com\"]", 2, "intercept.hosts[0]", "too broad"),
        ("[intercept]\nhosts = [1]", 2, "intercept.hosts[0]", "expected a string, found integer"),
        ("[intercept]\nca_cert = \"/etc/pc/\"", 2, "intercept.ca_cert", "names a directory"),
        ("[intercept]\nca_key = 7", 2, "intercept.ca_key", "expected a string, found integer"),
        ("[intercept]\nca_cert = \"/etc/pc/ca.pem\"\nca_key = \"/etc/pc/ca.pem\"", 3, "intercept.ca_key", "the CA key would be the certificate's own file"),
        ("[intercept]\nca_cert = \"/etc/pc/ca.key\"", 2, "intercept.ca_cert", "set intercept.ca_key to another file"),
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
        ("[peers]\nsite = \"sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss\"", 2, "peers.site", "too long: 65 bytes, the limit is 64"),
        ("[peers]\ndiscover = \"avahi\"", 2, "peers.discover", "invalid value \"avahi\" (expected one of: none, mdns)"),
        ("[peers]\ndiscover = true", 2, "peers.discover", "expected a string, found boolean"),
        ("[peers]\nprofile = \"satellite\"", 2, "peers.profile", "invalid value \"satellite\" (expected one of: auto, lan, wan)"),
        ("[peers]\nprofile = 5", 2, "peers.profile", "expected a string, found integer"),
        ("[peers]\nkey_file = \"\"", 2, "peers.key_file", "must not be empty"),
        ("[peers]\nmax_uploads = 0", 2, "peers.max_uploads", "must be at least 1, got 0"),
        ("[peers]\nmax_uploads = -3", 2, "peers.max_uploads", "must be at least 1, got -3"),
        ("[peers]\nmax_uploads = \"16\"", 2, "peers.max_uploads", "expected an integer, found string"),
        ("[peers]\nconnect_timeout = \"0ms\"", 2, "peers.connect_timeout", "must be greater than 0"),
        ("[peers]\nparallel_holders = 0", 2, "peers.parallel_holders", "must be 1..=64, got 0"),
        ("[peers]\nparallel_holders = 65", 2, "peers.parallel_holders", "must be 1..=64, got 65"),
        ("[peers]\nparallel_holders = \"4\"", 2, "peers.parallel_holders", "expected an integer, found string"),
        ("[peers]\npiece_size = \"32KiB\"", 2, "peers.piece_size", "32KiB is out of range: use 64KiB..=64MiB"),
        ("[peers]\npiece_size = \"128MiB\"", 2, "peers.piece_size", "128MiB is out of range"),
        ("[peers]\npiece_size = \"1MB\"", 2, "peers.piece_size", "1MB is not a multiple of 16KiB (the verified chunk group)"),
        ("[peers]\npiece_size = true", 2, "peers.piece_size", "expected a size"),
        ("[peers]\nupload_rate = \"100KiB\"", 2, "peers.upload_rate", "100KiB per second is too slow: 0 (no cap) or at least 1MiB"),
        ("[peers]\nupload_rate = \"fast\"", 2, "peers.upload_rate", "invalid size \"fast\""),
        // Peering on the default wildcard listen address without advertise: blamed on
        // the line the user wrote.
        ("[peers]\nenabled = true", 2, "peers.advertise", "required when peers.enabled = true and peers.listen (0.0.0.0:3129) is a wildcard address"),
        ("[peers]\nenabled = true\nlisten = \"[::]:4000\"", 2, "peers.advertise", "wildcard address"),
        ("[peers]\nenabled = true\nadvertise = \"\"", 3, "peers.advertise", "required when"),
        ("[peers]\nenabled = true\nlisten = \"127.0.0.1:3128\"", 3, "peers.listen", "collides with proxy.listen (127.0.0.1:3128)"),
        ("[peers]\nenabled = true\nlisten = \"0.0.0.0:3128\"\nadvertise = \"10.0.0.1:3128\"", 3, "peers.listen", "collides"),
        ("[proxy]\nlisten = \"[::]:3129\"\n[peers]\nenabled = true\nlisten = \"10.0.0.1:3129\"", 5, "peers.listen", "collides"),
        // [rules] and [[rule]]
        ("[rules]\npresets = [\"debian\", \"rpm\"]", 2, "rules.presets[1]", "unknown preset \"rpm\" (expected one of: debian, pypi, npm, cargo)"),
        ("[rules]\npresets = [\"Debian\"]", 2, "rules.presets[0]", "unknown preset \"Debian\""),
        ("[rules]\npresets = [\n\"npm\",\n\"npm\"]", 4, "rules.presets[1]", "preset \"npm\" is listed twice"),
        ("[rules]\npresets = \"debian\"", 2, "rules.presets", "expected an array of preset names, found string"),
        ("[rules]\npreset = []", 2, "rules.preset", "unknown key (expected one of: presets)"),
        ("[[rule]]\npattern = '(unclosed'\nfresh = \"1h\"", 2, "rule[0].pattern", "invalid regular expression \"(unclosed\": unclosed group"),
        ("[[rule]]\npattern = '(?:a{1000}){1000}'\nfresh = 1", 2, "rule[0].pattern", "exceeds size limit"),
        ("[[rule]]\npattern = 5\nfresh = \"1h\"", 2, "rule[0].pattern", "expected a string, found integer"),
        ("\n[[rule]]\nfresh = \"1h\"", 2, "rule[0].pattern", "missing (every [[rule]] needs a pattern)"),
        ("[[rule]]\npattern = 'a'\nfresh = \"1 fortnight\"", 3, "rule[0].fresh", "invalid duration \"1 fortnight\""),
        ("[[rule]]\npattern = 'a'\nfresh = -1", 3, "rule[0].fresh", "must not be negative"),
        ("[[rule]]\npattern = 'a'\nfresh = \"24856d\"", 3, "rule[0].fresh", "lifetime too long: at most 2147483648 seconds"),
        ("[[rule]]\npattern = 'a'\nfresh = \"1h\"\nimmutable = true", 4, "rule[0].immutable", "cannot be combined with fresh"),
        ("[[rule]]\npattern = 'a'\nimmutable = \"yes\"", 3, "rule[0].immutable", "expected a boolean"),
        ("[[rule]]\npattern = 'a'", 1, "rule[0]", "does nothing: give it fresh, immutable = true or key_fields"),
        ("[[rule]]\npattern = 'a'\nimmutable = false\nkey_fields = []", 1, "rule[0]", "does nothing"),
        ("[[rule]]\npattern = 'a'\nkey_fields = [\"Accept\", \"bad name\"]", 3, "rule[0].key_fields[1]", "invalid header field name \"bad name\""),
        ("[[rule]]\npattern = 'a'\nkey_fields = [\"Accept\", \"accept\"]", 3, "rule[0].key_fields[1]", "field \"accept\" is listed twice"),
        ("[[rule]]\npattern = 'a'\nkey_fields = \"Accept\"", 3, "rule[0].key_fields", "expected an array of header field names, found string"),
        ("[[rule]]\npattern = 'a'\nfresh = \"1h\"\nmatch = 'b'", 4, "rule[0].match", "unknown key (expected one of: pattern, fresh, immutable, key_fields)"),
        ("[rule]\npattern = 'a'", 1, "rule", "expected [[rule]] tables (an array of tables), found table"),
        ("rule = [1]", 1, "rule[0]", "expected a table, found integer"),
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
            "peercache.toml:5: proxy.lisen: unknown key (expected one of: listen, allow, connect_ports, tunnel_idle_timeout, pac_direct, max_connections)",
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
    let all = "proxy, cache, upstream, mirror, peers, intercept, rules, rule, log";
    assert_eq!(
        lines(text),
        [
            format!("peercache.toml:1: typo_at_root: unknown key (expected one of: {all})"),
            "peercache.toml:3: proxy.lisen: unknown key (expected one of: listen, allow, connect_ports, tunnel_idle_timeout, pac_direct, max_connections)".into(),
            "peercache.toml:5: cache.max_sise: unknown key (expected one of: dir, max_size, max_object_size, sendfile, targeted, max_fills, range_fill)".into(),
            "peercache.toml:7: upstream.parent: unknown key (expected one of: proxy, connect_timeout, read_timeout, ca_file)".into(),
            "peercache.toml:9: peers.enable: unknown key (expected one of: enabled, listen, advertise, seeds, site, key_file, max_uploads, connect_timeout, discover, profile, parallel_holders, piece_size, upload_rate)".into(),
            "peercache.toml:11: log.levle: unknown key (expected one of: level, access)".into(),
            format!("peercache.toml:12: logging: unknown table (expected one of: {all})"),
            format!("peercache.toml:14: mirrors: unknown table (expected one of: {all})"),
            "peercache.toml:16: proxy.tls: unknown table (expected one of: listen, allow, connect_ports, tunnel_idle_timeout, pac_direct, max_connections)".into(),
            "peercache.toml:21: mirror[0].redirect: unknown key (expected one of: prefix, upstream, redirect_to_peers, npm_tarballs)".into(),
        ]
    );
}

#[test]
fn odd_key_names_are_quoted() {
    assert_eq!(
        lines("[proxy]\n\"lis ten\" = 1\n\"\" = 2"),
        [
            "peercache.toml:2: proxy.\"lis ten\": unknown key (expected one of: listen, allow, connect_ports, tunnel_idle_timeout, pac_direct, max_connections)",
            "peercache.toml:3: proxy.\"\": unknown key (expected one of: listen, allow, connect_ports, tunnel_idle_timeout, pac_direct, max_connections)",
        ]
    );
}

const REDIRECT_WITHOUT_PEERS: &str = "needs peers.enabled = true: a content server sends the \
    members of its peer group to the members that hold an object, and without a group it serves \
    every request itself (enable peering, or remove this key)";

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
        // A content server needs a group to send members to: named at the key's line.
        (format!("{}redirect_to_peers = false\n{}redirect_to_peers = true\n", m("/a/", up), m("/b/", up)), vec![
            format!("8: mirror[1].redirect_to_peers: {REDIRECT_WITHOUT_PEERS}"),
        ]),
        (format!("[peers]\nenabled = false\n{}redirect_to_peers = true\n", m("/a/", up)), vec![
            format!("6: mirror[0].redirect_to_peers: {REDIRECT_WITHOUT_PEERS}"),
        ]),
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
        // A prefix-less npm path leads to one mirror: the second claim is reported, naming the first.
        (format!("{}npm_tarballs = true\n{}npm_tarballs = false\n{}npm_tarballs = true\n", m("/a/", up), m("/b/", up), m("/c/", up)), vec![
            "12: mirror[2].npm_tarballs: only one mirror may serve npm tarballs without its prefix (already mirror[0] on line 4)".into(),
        ]),
        (format!("{}npm_tarballs = 1\n", m("/d/", up)), vec!["4: mirror[0].npm_tarballs: expected a boolean (true or false), found integer".into()]),
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
        ("5d", Ok(Duration::from_secs(5 * 86_400))),
        ("213503982334602d", Err("too large")),
        ("5w", Err("invalid duration")),
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
    let dir = std::env::temp_dir().join(format!("peercache-config-test-{}", std::process::id()));
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

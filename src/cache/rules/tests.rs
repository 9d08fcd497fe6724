//! Unit tables for the rules: which URL gets which treatment, and which rule wins.

use std::time::Duration;

use http::HeaderName;

use super::*;
use crate::config::{Pattern, Rule};

fn all_presets() -> Rules {
    Rules::new(&[], &Preset::ALL, Heuristic::default()).expect("presets compile")
}

const IMM: Lifetime = Lifetime::Immutable;
const REV: Lifetime = Lifetime::For(Duration::ZERO);
const MIN5: Lifetime = Lifetime::For(Duration::from_secs(300));
const MIN10: Lifetime = Lifetime::For(Duration::from_secs(600));

/// (cache key URL, the preset that decides with its lifetime and key fields, or none).
type Row = (
    &'static str,
    Option<(Preset, Lifetime, &'static [&'static str])>,
);

#[test]
fn preset_table() {
    use Preset::*;
    let accept: &[&str] = &["accept"];
    #[rustfmt::skip]
    let cases: Vec<Row> = vec![
        // Debian and Ubuntu: pool files and by-hash immutable, indexes revalidated.
        ("http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3_amd64.deb", Some((Debian, IMM, &[]))),
        ("http://archive.ubuntu.com/ubuntu/pool/main/c/coreutils/coreutils_9.4-2ubuntu2_amd64.deb", Some((Debian, IMM, &[]))),
        ("http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3.dsc", Some((Debian, IMM, &[]))),
        ("http://deb.debian.org/debian/pool/main/h/hello/hello_2.10.orig.tar.gz", Some((Debian, IMM, &[]))),
        ("http://deb.debian.org/debian/pool/main/h/hello/hello_2.10.orig.tar.gz.asc", Some((Debian, IMM, &[]))),
        ("http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3.debian.tar.xz", Some((Debian, IMM, &[]))),
        ("http://deb.debian.org/debian/pool/main/h/hello/hello_2.8-2.diff.gz", Some((Debian, IMM, &[]))),
        ("http://deb.debian.org/debian/pool/main/d/debian-installer/foo-udeb_1.0_amd64.udeb", Some((Debian, IMM, &[]))),
        ("http://mirror.local:8080/pool/main/h/hello/hello_2.10-3_amd64.deb", Some((Debian, IMM, &[]))),
        ("https://packages.example.com/apt/pool/stable/tool_1.2.3_arm64.deb", Some((Debian, IMM, &[]))),
        ("http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0", Some((Debian, IMM, &[]))),
        ("http://deb.debian.org/debian/dists/bookworm/InRelease", Some((Debian, REV, &[]))),
        ("http://deb.debian.org/debian/dists/bookworm/Release", Some((Debian, REV, &[]))),
        ("http://deb.debian.org/debian/dists/bookworm/Release.gpg", Some((Debian, REV, &[]))),
        ("http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz", Some((Debian, REV, &[]))),
        ("http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages", Some((Debian, REV, &[]))),
        ("http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.diff/Index", Some((Debian, REV, &[]))),
        ("http://deb.debian.org/debian/dists/bookworm/main/source/Sources.gz", Some((Debian, REV, &[]))),
        ("http://deb.debian.org/debian/dists/bookworm/main/Contents-amd64.gz", Some((Debian, REV, &[]))),
        ("http://deb.debian.org/debian/dists/bookworm/main/i18n/Translation-en.bz2", Some((Debian, REV, &[]))),
        ("http://security.debian.org/debian-security/dists/bookworm-security/InRelease", Some((Debian, REV, &[]))),
        // PyPI: hashed file paths immutable; simple pages and the JSON API short, simple by Accept.
        ("https://files.pythonhosted.org/packages/4c/6b/0e8e7ff1f6e6c7d1f8b7a0e4a5b5b0c2d2f3e4a5b6c7d8e9f0a1b2c3d4e5/requests-2.32.3-py3-none-any.whl", Some((Pypi, IMM, &[]))),
        ("http://pypi-mirror.lan/pypi/packages/4c/6b/0e8e7ff1f6e6c7d1f8b7a0e4a5b5b0c2d2f3e4a5b6c7d8e9f0a1b2c3d4e5/requests-2.32.3.tar.gz", Some((Pypi, IMM, &[]))),
        ("https://pypi.org/simple/", Some((Pypi, MIN10, accept))),
        ("https://pypi.org/simple/requests/", Some((Pypi, MIN10, accept))),
        ("https://pypi.org/simple/requests", Some((Pypi, MIN10, accept))),
        ("http://devpi.lan:3141/root/pypi/+simple/requests/", Some((Pypi, MIN10, accept))),
        ("https://nexus.lan/repository/pypi-proxy/simple/numpy/", Some((Pypi, MIN10, accept))),
        ("https://pypi.org/pypi/requests/json", Some((Pypi, MIN10, &[]))),
        ("https://pypi.org/pypi/requests/2.32.3/json", Some((Pypi, MIN10, &[]))),
        // npm: tarballs immutable; package documents short and keyed by Accept.
        ("https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz", Some((Npm, IMM, &[]))),
        ("https://registry.npmjs.org/@babel/core/-/core-7.24.0.tgz", Some((Npm, IMM, &[]))),
        ("http://verdaccio.lan:4873/@corp/util/-/util-0.1.0-beta.1.tgz", Some((Npm, IMM, &[]))),
        ("https://registry.npmjs.org/left-pad", Some((Npm, MIN5, accept))),
        ("https://registry.npmjs.org/@babel/core", Some((Npm, MIN5, accept))),
        ("https://registry.npmjs.org/@babel%2fcore", Some((Npm, MIN5, accept))),
        ("https://registry.yarnpkg.com/react", Some((Npm, MIN5, accept))),
        ("https://nexus.lan/repository/npm-proxy/left-pad", Some((Npm, MIN5, accept))),
        ("https://artifactory.lan/api/npm/npm-remote/@types%2Fnode", Some((Npm, MIN5, accept))),
        ("http://cache.lan/npm/JSONStream", Some((Npm, MIN5, accept))),
        // cargo: .crate downloads immutable; the sparse index short.
        ("https://static.crates.io/crates/serde/serde-1.0.203.crate", Some((Cargo, IMM, &[]))),
        ("https://static.crates.io/crates/serde/1.0.203/download", Some((Cargo, IMM, &[]))),
        ("https://crates.io/api/v1/crates/serde/1.0.203/download", Some((Cargo, IMM, &[]))),
        ("http://mirror.lan/cargo/crates/se/rd/serde/serde-1.0.203.crate", Some((Cargo, IMM, &[]))),
        ("https://index.crates.io/config.json", Some((Cargo, MIN5, &[]))),
        ("https://index.crates.io/se/rd/serde", Some((Cargo, MIN5, &[]))),
        ("https://index.crates.io/1/a", Some((Cargo, MIN5, &[]))),
        ("https://index.crates.io/2/cc", Some((Cargo, MIN5, &[]))),
        ("https://index.crates.io/3/s/syn", Some((Cargo, MIN5, &[]))),
        ("http://mirror.lan/crates-index/to/ki/tokio", Some((Cargo, MIN5, &[]))),
        // Unrelated URLs stay with the origin's word and the default heuristic.
        ("http://example.com/", None),
        ("http://example.com/index.html", None),
        ("http://example.com/about", None),
        ("http://example.com/left-pad", None),
        ("http://example.com/pool/party.tar.gz", None),
        ("http://example.com/pool/summer-2024.deb", None),
        ("http://example.com/dists/", None),
        ("http://example.com/releases/Release", None),
        ("http://example.com/packages/ab/cd/not-a-hash/x.whl", None),
        ("http://example.com/files/foo-1.0.tgz", None),
        ("https://github.com/org/repo/releases/download/v1.0/tool-1.0.tar.gz", None),
        ("http://example.com/en/us/page", None),
        ("http://example.com/config.json", None),
        ("http://example.com/crates/", None),
        ("http://example.com/npm", None),
        ("https://registry.npmjs.org/-/v1/search?text=left-pad", None),
        ("https://registry.npmjs.org/-/ping", None),
        ("https://registry.npmjs.org/left-pad?write=true", None),
        ("http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3_amd64.deb?nocache=1", None),
        ("https://pypi.org/simple/requests/?format=json", None),
        ("http://example.com/apool/main/h/hello/hello_1_all.deb", None),
        ("http://example.com/simplex/", None),
    ];
    let rules = all_presets();
    for (url, want) in cases {
        let got = rules
            .lookup(url)
            .map(|h| (h.source, h.lifetime, h.key_fields.clone()));
        let want = want.map(|(p, l, f)| {
            let fields = f.iter().map(|n| HeaderName::from_static(n)).collect();
            (Source::Preset(p), Some(l), fields)
        });
        assert_eq!(got, want, "{url}");
    }
}

fn rule(pattern: &str, fresh: Option<u64>, immutable: bool, key_fields: &[&'static str]) -> Rule {
    Rule {
        pattern: Pattern::new(pattern).expect("test pattern"),
        fresh: fresh.map(Duration::from_secs),
        immutable,
        key_fields: key_fields
            .iter()
            .map(|n| HeaderName::from_static(n))
            .collect(),
    }
}

/// (URL, the deciding rule, the lifetime and key fields it gives).
type Decided = (
    &'static str,
    Option<Source>,
    Option<Lifetime>,
    Vec<&'static str>,
);

#[test]
fn first_match_wins_user_rules_before_presets() {
    let user = [
        rule(
            r"^http://deb\.debian\.org/debian/pool/main/h/",
            Some(60),
            false,
            &[],
        ),
        rule(r"/left-pad$", None, false, &["x-flavour"]),
        rule(r"\.deb$", None, true, &[]),
    ];
    let rules =
        Rules::new(&user, &[Preset::Npm, Preset::Debian], Heuristic::default()).expect("compiles");
    let cases: Vec<Decided> = vec![
        (
            "http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3_amd64.deb",
            Some(Source::User(0)),
            Some(Lifetime::For(Duration::from_secs(60))),
            vec![],
        ),
        // A user rule with only key fields decides alone: the preset's lifetime does not apply.
        (
            "https://registry.npmjs.org/left-pad",
            Some(Source::User(1)),
            None,
            vec!["x-flavour"],
        ),
        (
            "http://example.com/tool.deb",
            Some(Source::User(2)),
            Some(Lifetime::Immutable),
            vec![],
        ),
        (
            "https://registry.npmjs.org/react",
            Some(Source::Preset(Preset::Npm)),
            Some(MIN5),
            vec!["accept"],
        ),
        (
            "http://deb.debian.org/debian/dists/bookworm/InRelease",
            Some(Source::Preset(Preset::Debian)),
            Some(REV),
            vec![],
        ),
        // Presets not listed do nothing.
        (
            "https://static.crates.io/crates/serde/serde-1.0.203.crate",
            None,
            None,
            vec![],
        ),
    ];
    for (url, source, lifetime, fields) in cases {
        let hint = rules.lookup(url);
        assert_eq!(hint.map(|h| h.source), source, "{url}");
        let t = rules.treat(url);
        assert_eq!(t.heuristic.rule, lifetime, "{url}");
        assert_eq!(t.heuristic.percent, Heuristic::default().percent, "{url}");
        assert_eq!(t.key_fields, fields.as_slice(), "{url}");
    }
}

#[test]
fn no_rules_and_no_presets_change_nothing() {
    for rules in [
        Rules::none(),
        Rules::new(&[], &[], Heuristic::default()).expect("compiles"),
    ] {
        let t = rules.treat("https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz");
        assert_eq!(t.heuristic, Heuristic::default());
        assert!(t.key_fields.is_empty());
    }
}

#[test]
fn the_treatment_adds_key_fields_to_the_vary() {
    let rules = all_presets();
    let resp = HeaderMap::from_iter([(
        http::header::VARY,
        http::HeaderValue::from_static("Accept-Encoding"),
    )]);
    let names = |v: Vary| -> Vec<String> {
        match v {
            Vary::Fields(n) => n.iter().map(|n| n.as_str().to_owned()).collect(),
            other => panic!("{other:?}"),
        }
    };
    let meta = rules.treat("https://registry.npmjs.org/left-pad");
    assert_eq!(names(meta.vary(&resp)), ["accept", "accept-encoding"]);
    let tarball = rules.treat("https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz");
    assert_eq!(names(tarball.vary(&resp)), ["accept-encoding"]);
    assert_eq!(tarball.vary(&HeaderMap::new()), Vary::None);
}

#[test]
fn every_preset_compiles_and_is_tried_in_order() {
    for p in Preset::ALL {
        let rules = Rules::new(&[], &[p], Heuristic::default()).expect("compiles");
        assert_eq!(rules.hints.len(), preset_rules(p).len(), "{p:?}");
        assert!(rules.hints.iter().all(|h| h.source == Source::Preset(p)));
    }
}

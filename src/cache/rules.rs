//! Freshness rules for what origins leave unsaid: the `[[rule]]` list and the built-in presets, compiled into one matcher over cache key URLs; pure, no I/O.
//!
//! A rule never decides anything the origin said: its lifetime is used only where a response
//! states none (RFC 9111 §4.2.2 leaves that to the cache), and `cache::policy` still refuses
//! `no-store`, `private`, `Authorization`, `Set-Cookie` and `Vary: *` first. Every node applies
//! the same rules to every copy (its own, a peer's, one it advertises), through [`Rules::treat`].

use std::time::Duration;

use http::{HeaderMap, HeaderName};
use regex::{RegexSet, RegexSetBuilder};

use crate::cache::key::Vary;
use crate::cache::policy::{Heuristic, Lifetime};
use crate::config::{self, Preset};

/// What one rule says about the URLs it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// The lifetime of responses that state none; `None` leaves the Last-Modified heuristic.
    pub lifetime: Option<Lifetime>,
    /// Request fields added to the secondary key (as if the response had named them in `Vary`).
    pub key_fields: Vec<HeaderName>,
    /// Where the rule comes from.
    pub source: Source,
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The user's `[[rule]]` with this index.
    User(usize),
    /// A built-in preset.
    Preset(Preset),
}

/// The compiled rules: the user's first, then each preset's in `rules.presets` order.
///
/// Invariant: `set` holds one pattern per entry of `hints`, in the same order, so the lowest
/// matching index is the first matching rule.
#[derive(Debug, Clone)]
pub struct Rules {
    set: RegexSet,
    hints: Vec<Hint>,
    base: Heuristic<'static>,
    /// `cache.targeted`: the RFC 9213 target list every key's heuristic carries.
    targets: Vec<HeaderName>,
}

/// How the rules treat one cache key: the heuristic to judge its responses with (carrying the
/// matching rule's lifetime) and the request fields its secondary key adds.
#[derive(Debug, Clone, Copy)]
pub struct Treatment<'a> {
    pub heuristic: Heuristic<'a>,
    pub key_fields: &'a [HeaderName],
}

impl Treatment<'_> {
    /// The `Vary` that selects among a key's stored responses: the response's own plus the
    /// rule's key fields.
    pub fn vary(&self, resp: &HeaderMap) -> Vary {
        Vary::from_headers(resp).with_fields(self.key_fields)
    }
}

impl Rules {
    /// Compiles `user` rules then `presets` over the `base` heuristic. Each user pattern alone
    /// compiled within the regex crate's default size limit when the config was read; the set
    /// gets that limit once per pattern, so it fails only if combining them costs more than the
    /// sum of their parts.
    pub fn new(
        user: &[config::Rule],
        presets: &[Preset],
        base: Heuristic<'static>,
    ) -> Result<Rules, regex::Error> {
        let mut patterns: Vec<&str> = Vec::new();
        let mut hints = Vec::new();
        for (i, r) in user.iter().enumerate() {
            patterns.push(r.pattern.as_str());
            let lifetime = match (r.immutable, r.fresh) {
                (true, _) => Some(Lifetime::Immutable),
                (false, fresh) => fresh.map(Lifetime::For),
            };
            hints.push(Hint {
                lifetime,
                key_fields: r.key_fields.clone(),
                source: Source::User(i),
            });
        }
        for &preset in presets {
            for r in preset_rules(preset) {
                patterns.push(r.pattern);
                hints.push(Hint {
                    lifetime: Some(r.lifetime),
                    key_fields: r
                        .key_fields
                        .iter()
                        .map(|f| HeaderName::from_static(f))
                        .collect(),
                    source: Source::Preset(preset),
                });
            }
        }
        let size_limit = PATTERN_SIZE_LIMIT.saturating_mul(patterns.len() + 1);
        let set = RegexSetBuilder::new(patterns)
            .size_limit(size_limit)
            .build()?;
        Ok(Rules {
            set,
            hints,
            base,
            targets: Vec::new(),
        })
    }

    /// These rules with `targets` as the RFC 9213 target list (`cache.targeted`): the response
    /// fields whose directives this cache obeys in place of `Cache-Control`, first present wins.
    pub fn with_targets(mut self, targets: Vec<HeaderName>) -> Rules {
        self.targets = targets;
        self
    }

    /// The target list (`cache.targeted`): fields this cache reads and never forwards.
    pub fn targets(&self) -> &[HeaderName] {
        &self.targets
    }

    /// The rules of a configuration, over the default heuristic.
    pub fn from_config(c: &config::Rules) -> Result<Rules, regex::Error> {
        Rules::new(&c.user, &c.presets, Heuristic::default())
    }

    /// No rules at all: the default heuristic for every key.
    pub fn none() -> Rules {
        Rules {
            set: RegexSet::empty(),
            hints: Vec::new(),
            base: Heuristic::default(),
            targets: Vec::new(),
        }
    }

    /// The first rule whose pattern matches the cache key URL `key`.
    pub fn lookup(&self, key: &str) -> Option<&Hint> {
        // Most keys match no rule: `is_match` says so without collecting every match.
        if !self.set.is_match(key) {
            return None;
        }
        let first = self.set.matches(key).iter().next()?;
        self.hints.get(first)
    }

    /// How the responses of `key` are judged and selected.
    pub fn treat(&self, key: &str) -> Treatment<'_> {
        let hint = self.lookup(key);
        Treatment {
            heuristic: Heuristic {
                rule: hint.and_then(|h| h.lifetime),
                targets: &self.targets,
                ..self.base
            },
            key_fields: hint.map_or(&[], |h| h.key_fields.as_slice()),
        }
    }
}

/// The regex crate's default size limit for one compiled pattern (`RegexBuilder::size_limit`).
const PATTERN_SIZE_LIMIT: usize = 10 * (1 << 20);

/// One built-in rule.
struct PresetRule {
    pattern: &'static str,
    lifetime: Lifetime,
    /// Lower-case field names.
    key_fields: &'static [&'static str],
}

const IMMUTABLE: Lifetime = Lifetime::Immutable;
const REVALIDATE: Lifetime = Lifetime::For(Duration::ZERO);
const FIVE_MINUTES: Lifetime = Lifetime::For(Duration::from_secs(5 * 60));
const TEN_MINUTES: Lifetime = Lifetime::For(Duration::from_secs(10 * 60));

// Every pattern starts with `^https?://[^/?]+` (any host: mirrors run elsewhere) and, where a
// repository may sit under a path prefix, `(?:/[^?]*)?` before a literal `/segment/`, so a
// segment name only ever matches whole. `$` after a path with no `?`: a URL with a query is
// never matched (a query may make the answer dynamic).

/// Debian and Ubuntu archives (`apt`), after apt-cacher-ng's file classes.
const DEBIAN: &[PresetRule] = &[
    // Pool files are named by package and version and never change once published.
    PresetRule {
        pattern: r"^https?://[^/?]+(?:/[^?]*)?/pool/(?:[^/?]+/)+[^/?_]+_[^/?]+\.(?:deb|udeb|ddeb|dsc|diff\.gz|tar\.(?:gz|xz|bz2|lzma|zst)(?:\.asc)?)$",
        lifetime: IMMUTABLE,
        key_fields: &[],
    },
    // Index files fetched by their hash (Acquire-By-Hash).
    PresetRule {
        pattern: r"^https?://[^/?]+(?:/[^?]*)?/dists/[^?]+/by-hash/(?:MD5Sum|SHA1|SHA256|SHA512)/[0-9a-f]{32,128}$",
        lifetime: IMMUTABLE,
        key_fields: &[],
    },
    // The indexes change in place and must agree with each other: revalidate on every use.
    PresetRule {
        pattern: r"^https?://[^/?]+(?:/[^?]*)?/dists/(?:[^/?]+/)+(?:InRelease|Release|Release\.gpg|(?:Packages|Sources|Contents|Translation)[^/?]*(?:/Index)?)$",
        lifetime: REVALIDATE,
        key_fields: &[],
    },
];

/// The Python Package Index (`pip`) and mirrors of it (bandersnatch, devpi, Nexus, Artifactory).
const PYPI: &[PresetRule] = &[
    // Files live under the blake2b-256 of their content: /packages/xx/yy/<60 hex>/name.
    PresetRule {
        pattern: r"^https?://[^/?]+(?:/[^?]*)?/packages/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{60}/[^/?]+$",
        lifetime: IMMUTABLE,
        key_fields: &[],
    },
    // Simple index pages, HTML or JSON (PEP 691) by Accept.
    PresetRule {
        pattern: r"^https?://[^/?]+(?:/[^?]*)?/\+?simple(?:/[^/?]+)?/?$",
        lifetime: TEN_MINUTES,
        key_fields: &["accept"],
    },
    // The JSON API: /pypi/<project>/json, /pypi/<project>/<version>/json.
    PresetRule {
        pattern: r"^https?://[^/?]+(?:/[^?]*)?/pypi/[^/?]+(?:/[^/?]+)?/json$",
        lifetime: TEN_MINUTES,
        key_fields: &[],
    },
];

/// npm registries (`npm`, `yarn`, `pnpm`).
const NPM: &[PresetRule] = &[
    // Tarballs: /<name>/-/<name>-<version>.tgz, scoped /@scope/<name>/-/<name>-<version>.tgz.
    PresetRule {
        pattern: r"^https?://[^/?]+(?:/[^?]*)?/[^/?]+/-/[^/?]+-[0-9][^/?]*\.tgz$",
        lifetime: IMMUTABLE,
        key_fields: &[],
    },
    // Package documents (/<name>, /@scope/<name>, /@scope%2f<name>): abbreviated or full by
    // Accept, often without a Vary saying so. One path segment names nothing in particular, so
    // only on the public registries' hosts or under a path segment that says "npm"
    // (/npm/, /repository/npm-proxy/, /api/npm/npm-remote/).
    PresetRule {
        pattern: r"^https?://(?:registry\.npmjs\.org|registry\.yarnpkg\.com|registry\.npmmirror\.com|[^/?]+(?:/[^?]*)?/[^/?]*npm[^/?]*)/(?:@[^/?]+(?:/|%2[fF]))?[A-Za-z0-9~][^/?]*$",
        lifetime: FIVE_MINUTES,
        key_fields: &["accept"],
    },
];

/// Cargo registries: crates.io and its mirrors.
const CARGO: &[PresetRule] = &[
    // .crate files: /crates/<name>/<name>-<version>.crate (static.crates.io and mirrors).
    PresetRule {
        pattern: r"^https?://[^/?]+(?:/[^?]*)?/crates/(?:[^?]*/)?[^/?]+-[0-9][^/?]*\.crate$",
        lifetime: IMMUTABLE,
        key_fields: &[],
    },
    // The download endpoint: /api/v1/crates/<name>/<version>/download, or a mirror's /crates/….
    PresetRule {
        pattern: r"^https?://[^/?]+(?:/[^?]*)?/crates/[^/?]+/[0-9][^/?]*/download$",
        lifetime: IMMUTABLE,
        key_fields: &[],
    },
    // The sparse index (config.json, 1/a, 2/ab, 3/a/abc, ab/cd/abcd…): on index.crates.io, or
    // under a path segment that says "index".
    PresetRule {
        pattern: r"^https?://(?:index\.crates\.io|[^/?]+(?:/[^?]*)?/[^/?]*index[^/?]*)/(?:config\.json|1/[a-z0-9_-]|2/[a-z0-9_-]{2}|3/[a-z0-9_-]/[a-z0-9_-]{3}|[a-z0-9_-]{2}/[a-z0-9_-]{2}/[a-z0-9_-]{4,})$",
        lifetime: FIVE_MINUTES,
        key_fields: &[],
    },
];

/// The rules of a preset, in the order they are tried.
fn preset_rules(p: Preset) -> &'static [PresetRule] {
    match p {
        Preset::Debian => DEBIAN,
        Preset::Pypi => PYPI,
        Preset::Npm => NPM,
        Preset::Cargo => CARGO,
    }
}

#[cfg(test)]
mod tests;

//! `rules.presets` and `[[rule]]` entries: preset names, each rule's pattern, lifetime and key fields validated; pure.

use std::time::Duration;

use http::HeaderName;
use toml_edit::TableLike;

use super::reader::{Field, Loc, Reader, Slot};
use super::schema::RULE_KEYS;
use super::{Pattern, Preset, Rule};
use crate::grammar::DELTA_SECONDS_MAX;

impl<'a, 'p> Reader<'a, 'p> {
    /// `rules.presets`: known preset names, each at most once.
    pub(super) fn presets(&mut self, f: &Field<'a, '_>) -> Option<Vec<Preset>> {
        let mut seen: Vec<Preset> = Vec::new();
        self.each(f, "an array of preset names", |r, e| {
            let name = r.string(e)?;
            let preset = match Preset::from_name(name) {
                Some(p) if seen.contains(&p) => Err(format!("preset {name:?} is listed twice")),
                Some(p) => {
                    seen.push(p);
                    Ok(p)
                }
                None => {
                    let known: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
                    Err(format!(
                        "unknown preset {name:?} (expected one of: {})",
                        known.join(", ")
                    ))
                }
            };
            r.check(e, preset)
        })
    }

    /// `[[rule]]` tables (or `rule = [{ ... }]`), each validated.
    pub(super) fn rules(&mut self, f: &Field<'a, '_>) -> Option<Vec<Rule>> {
        let (entries, mut ok) = self.tables(f, "rule")?;
        let mut rules = Vec::new();
        for (i, table, loc) in entries {
            match self.rule(i, table, loc) {
                Some(rule) => rules.push(rule),
                None => ok = false,
            }
        }
        ok.then_some(rules)
    }

    /// One rule entry, index `i`, starting at `loc`.
    fn rule(&mut self, i: usize, table: &dyn TableLike, loc: Loc<'a>) -> Option<Rule> {
        let path = format!("rule[{i}]");
        let mut pattern = Slot::Missing;
        let mut fresh = Slot::Set(None, loc);
        let mut immutable = Slot::Set(false, loc);
        let mut key_fields = Slot::Set(Vec::new(), loc);
        for (name, item) in table.iter() {
            let f = self.field(table, &path, name, item);
            match name {
                "pattern" => {
                    let p = self
                        .string(&f)
                        .and_then(|s| self.check(&f, Pattern::new(s)));
                    pattern.put(p, f.value_loc);
                }
                "fresh" => {
                    let d = self.duration(&f).and_then(|d| self.check(&f, lifetime(d)));
                    fresh.put(d.map(Some), f.value_loc);
                }
                "immutable" => immutable.put(self.boolean(&f), f.value_loc),
                "key_fields" => key_fields.put(self.field_names(&f, &[]), f.value_loc),
                _ => self.unknown(&f, RULE_KEYS),
            }
        }
        if matches!(pattern, Slot::Missing) {
            let message = "missing (every [[rule]] needs a pattern)".into();
            self.report(loc, &format!("{path}.pattern"), message);
        }
        let (
            Slot::Set(pattern, _),
            Slot::Set(fresh, _),
            Slot::Set(immutable, at),
            Slot::Set(key_fields, _),
        ) = (pattern, fresh, immutable, key_fields)
        else {
            return None;
        };
        if immutable && fresh.is_some() {
            let message = "cannot be combined with fresh (immutable bytes are always fresh)";
            self.report(at, &format!("{path}.immutable"), message.into());
            return None;
        }
        if !immutable && fresh.is_none() && key_fields.is_empty() {
            let message = "does nothing: give it fresh, immutable = true or key_fields".into();
            self.report(loc, &path, message);
            return None;
        }
        Some(Rule {
            pattern,
            fresh,
            immutable,
            key_fields,
        })
    }

    /// An array of distinct header field names (`key_fields`, `cache.targeted`), none of them
    /// in `refused` (lower case).
    pub(super) fn field_names(
        &mut self,
        f: &Field<'a, '_>,
        refused: &[&str],
    ) -> Option<Vec<HeaderName>> {
        let mut seen: Vec<HeaderName> = Vec::new();
        self.each(f, "an array of header field names", |r, e| {
            let s = r.string(e)?;
            let name = match HeaderName::from_bytes(s.as_bytes()) {
                Ok(n) if refused.contains(&n.as_str()) => {
                    Err(format!("field {s:?} cannot be listed here"))
                }
                Ok(n) if seen.contains(&n) => Err(format!("field {s:?} is listed twice")),
                Ok(n) => {
                    seen.push(n.clone());
                    Ok(n)
                }
                Err(_) => Err(format!("invalid header field name {s:?}")),
            };
            r.check(e, name)
        })
    }
}

/// A rule's `fresh`: at most 2^31 seconds, the largest lifetime HTTP can state (RFC 9111 §1.2.2).
fn lifetime(d: Duration) -> Result<Duration, String> {
    if d > Duration::from_secs(DELTA_SECONDS_MAX) {
        return Err(format!(
            "lifetime too long: at most {DELTA_SECONDS_MAX} seconds (about 68 years)"
        ));
    }
    Ok(d)
}

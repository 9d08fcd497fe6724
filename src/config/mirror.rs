//! `[[mirror]]` entries: each read and validated, prefixes unique among them, at most one serving
//! npm tarballs without its prefix.

use toml_edit::TableLike;

use super::addr::{parse_prefix, parse_upstream};
use super::reader::{Field, Loc, Reader, Slot};
use super::schema::MIRROR_KEYS;
use super::Mirror;

impl<'a, 'p> Reader<'a, 'p> {
    /// `[[mirror]]` tables (or `mirror = [{ ... }]`): each entry validated, prefixes unique.
    /// `redirects` gets the index and location of each valid entry's `redirect_to_peers = true`.
    pub(super) fn mirrors(
        &mut self,
        f: &Field<'a, '_>,
        redirects: &mut Vec<(usize, Loc<'a>)>,
    ) -> Option<Vec<Mirror>> {
        let (entries, mut ok) = self.tables(f, "mirror")?;
        let mut seen = Vec::new();
        let mut npm = None;
        let mut mirrors = Vec::new();
        for (i, table, loc) in entries {
            match self.mirror(i, table, loc, &mut seen, &mut npm) {
                Some((mirror, redirect_loc)) => {
                    if mirror.redirect_to_peers {
                        redirects.push((i, redirect_loc));
                    }
                    mirrors.push(mirror)
                }
                None => ok = false,
            }
        }
        ok.then_some(mirrors)
    }

    /// One mirror entry, index `i`, starting at `loc`, and where its `redirect_to_peers` is
    /// (`loc` when it takes the default). `seen` holds the valid prefixes of the entries before
    /// it (prefix, index, line), so a duplicate is reported even when the entry has other
    /// problems. `npm` is the first entry with `npm_tarballs = true` (index, line).
    pub(super) fn mirror(
        &mut self,
        i: usize,
        table: &dyn TableLike,
        loc: Loc<'a>,
        seen: &mut Vec<(String, usize, Option<usize>)>,
        npm: &mut Option<(usize, Option<usize>)>,
    ) -> Option<(Mirror, Loc<'a>)> {
        let path = format!("mirror[{i}]");
        let mut prefix = Slot::Missing;
        let mut upstream = Slot::Missing;
        let mut redirect_to_peers = Slot::Set(false, loc);
        let mut npm_tarballs = Slot::Set(false, loc);
        for (name, item) in table.iter() {
            let f = self.field(table, &path, name, item);
            match name {
                "prefix" => {
                    let p = self
                        .string(&f)
                        .and_then(|s| self.check(&f, parse_prefix(s)))
                        .and_then(|p| self.unique_prefix(&f, p, i, seen));
                    prefix.put(p, f.value_loc);
                }
                "upstream" => {
                    let u = self
                        .string(&f)
                        .and_then(|s| self.check(&f, parse_upstream(s)));
                    upstream.put(u, f.value_loc);
                }
                "redirect_to_peers" => redirect_to_peers.put(self.boolean(&f), f.value_loc),
                "npm_tarballs" => {
                    let on = self
                        .boolean(&f)
                        .and_then(|on| self.only_npm_mirror(&f, on, i, npm));
                    npm_tarballs.put(on, f.value_loc);
                }
                _ => self.unknown(&f, MIRROR_KEYS),
            }
        }
        for (missing, key) in [
            (matches!(prefix, Slot::Missing), "prefix"),
            (matches!(upstream, Slot::Missing), "upstream"),
        ] {
            if missing {
                let message = "missing (every [[mirror]] needs prefix and upstream)".into();
                self.report(loc, &format!("{path}.{key}"), message);
            }
        }
        match (prefix, upstream, redirect_to_peers, npm_tarballs) {
            (
                Slot::Set(prefix, _),
                Slot::Set(upstream, _),
                Slot::Set(redirect, redirect_loc),
                Slot::Set(npm_tarballs, _),
            ) => Some((
                Mirror {
                    prefix,
                    upstream,
                    redirect_to_peers: redirect,
                    npm_tarballs,
                },
                redirect_loc,
            )),
            _ => None,
        }
    }

    /// Passes `on` through unless an earlier mirror (`npm`: index, line) already serves npm
    /// tarballs without its prefix: a prefix-less path must lead to exactly one mirror.
    fn only_npm_mirror(
        &mut self,
        f: &Field<'a, '_>,
        on: bool,
        i: usize,
        npm: &mut Option<(usize, Option<usize>)>,
    ) -> Option<bool> {
        if !on {
            return Some(false);
        }
        let Some((j, line)) = *npm else {
            *npm = Some((i, f.value_loc.line));
            return Some(true);
        };
        let line = line.map(|l| format!(" on line {l}")).unwrap_or_default();
        let message = format!(
            "only one mirror may serve npm tarballs without its prefix (already mirror[{j}]{line})"
        );
        self.report(f.value_loc, &f.path, message);
        None
    }

    /// Passes `prefix` through if no earlier mirror in `seen` uses it, recording it; else
    /// reports the duplicate, naming the first user.
    pub(super) fn unique_prefix(
        &mut self,
        f: &Field<'a, '_>,
        prefix: String,
        i: usize,
        seen: &mut Vec<(String, usize, Option<usize>)>,
    ) -> Option<String> {
        let Some((_, j, line)) = seen.iter().find(|(p, _, _)| *p == prefix) else {
            seen.push((prefix.clone(), i, f.value_loc.line));
            return Some(prefix);
        };
        let line = line.map(|l| format!(" on line {l}")).unwrap_or_default();
        let message = format!("duplicate prefix {prefix:?} (also used by mirror[{j}]{line})");
        self.report(f.value_loc, &f.path, message);
        None
    }
}

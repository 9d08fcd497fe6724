//! What this node itself holds, as the group sees it: complete shareable entries (read from the
//! store, which already keeps every key) and the keys it is fetching right now (its claims, kept
//! here with their key strings for the transfer API). Answers the journal's snapshots.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::head::Entry;
use crate::cache::key::key_hash;
use crate::cache::policy;
use crate::cache::rules::Rules;
use crate::cache::store::Store;

use super::journal::OwnState;
use super::wire::{KeyHash, Update};

pub struct StoreState {
    store: Store,
    rules: Arc<Rules>,
    /// Open claims: key string and the token of the claim that owns it.
    claims: HashMap<KeyHash, (String, u64)>,
    next_token: u64,
}

impl StoreState {
    pub fn new(store: Store, rules: Arc<Rules>) -> Self {
        StoreState {
            store,
            rules,
            claims: HashMap::new(),
            next_token: 0,
        }
    }

    /// Remembers the key string of a claim about to be recorded; returns its hash and a token
    /// naming this claim (a later claim of the same key replaces it).
    pub fn claim(&mut self, key: &str) -> (KeyHash, u64) {
        let h = key_hash(key);
        self.next_token += 1;
        self.claims.insert(h, (key.to_owned(), self.next_token));
        (h, self.next_token)
    }

    /// The key string of one of our claims.
    pub fn claimed(&self, h: &KeyHash) -> Option<&str> {
        self.claims.get(h).map(|(key, _)| key.as_str())
    }

    /// Whether the claim named `token` is still open: no `Have` or `Dropped` of its key was
    /// recorded since, and no later claim replaced it.
    pub fn is_open(&self, h: &KeyHash, token: u64) -> bool {
        self.claims.get(h).is_some_and(|(_, t)| *t == token)
    }

    /// How many claims are open.
    pub fn claims(&self) -> usize {
        self.claims.len()
    }

    /// What a snapshot needs, to be read without the journal's lock: the store and the open
    /// claims as of now.
    pub fn detach(&self) -> Detached {
        Detached {
            store: self.store.clone(),
            rules: self.rules.clone(),
            claims: self
                .claims
                .iter()
                .map(|(h, (key, _))| (*h, key.clone()))
                .collect(),
        }
    }
}

/// See [`StoreState::detach`].
pub struct Detached {
    store: Store,
    rules: Arc<Rules>,
    claims: Vec<(KeyHash, String)>,
}

impl Detached {
    /// One page of the snapshot: the first shareable variant of each stored key after `after`
    /// (from the first key when `None`), reading at most `rows` rows of the store, and on the
    /// first page the claims on keys not stored shareable. Returns the updates and the key to
    /// continue after when more rows may follow. Blocking: reads from disk.
    pub fn page(&self, after: Option<&KeyHash>, rows: usize) -> (Vec<Update>, Option<KeyHash>) {
        let now = SystemTime::now();
        let mut out = Vec::new();
        if after.is_none() {
            out.extend(
                self.claims
                    .iter()
                    .filter(|(_, key)| !self.store.holds_shareable(key))
                    .map(|(h, _)| Update::InFlight { key: *h }),
            );
        }
        let next = self
            .store
            .for_each_row_after(after, rows.max(1), |_, entries| {
                if let Some(e) = entries.iter().find(|e| e.shareable) {
                    out.push(have(e, &self.rules, now));
                }
            });
        (out, next)
    }

    /// The whole snapshot, page after page (see [`Detached::page`]). Blocking.
    pub fn snapshot(&self) -> Vec<Update> {
        let (mut all, mut next) = self.page(None, SNAPSHOT_ROWS);
        while let Some(after) = next {
            let (more, n) = self.page(Some(&after), SNAPSHOT_ROWS);
            all.extend(more);
            next = n;
        }
        all
    }
}

/// Rows read per step by [`Detached::snapshot`].
const SNAPSHOT_ROWS: usize = 4096;

/// The `Have` update for a stored entry: its body and how long it stays fresh as of `now`, by
/// the same rules every node judges the entry with.
pub fn have(entry: &Entry, rules: &Rules, now: SystemTime) -> Update {
    let lifetime = policy::freshness_lifetime(
        entry.status,
        &entry.headers(),
        entry.timing.response_time,
        rules.treat(&entry.key).heuristic,
    );
    let left = lifetime.saturating_sub(entry.timing.current_age(now));
    let fresh_until = (now + left)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Update::Have {
        key: key_hash(&entry.key),
        hash: *entry.hash.as_bytes(),
        len: entry.len,
        fresh_until,
    }
}

impl OwnState for StoreState {
    fn record(&mut self, update: &Update) {
        match update {
            Update::InFlight { .. } => {} // `claim` came first
            Update::Have { key, .. } | Update::Dropped { key } => {
                self.claims.remove(key);
            }
        }
    }

    /// See [`Detached::snapshot`].
    fn snapshot(&self) -> Vec<Update> {
        self.detach().snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::tests::testing::commit_body as store_entry;

    #[test]
    fn pages_cover_every_stored_key_once_in_key_order_with_the_claims_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let keys: Vec<String> = (0..5).map(|i| format!("http://a/{i}")).collect();
        for k in &keys {
            store_entry(&store, k, "", k.as_bytes(), true);
        }
        store_entry(&store, "http://a/private", "", b"mine", false);
        let mut state = StoreState::new(store, Arc::new(Rules::none()));
        let (claimed, _) = state.claim("http://a/coming");
        let source = state.detach();
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let (updates, next) = source.page(after.as_ref(), 2);
            pages.push(updates);
            match next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        // 6 rows read two at a time (the private one gives no update), then an empty last page.
        assert_eq!(pages.len(), 4, "{pages:?}");
        assert_eq!(pages[0][0], Update::InFlight { key: claimed });
        assert!(pages[1..]
            .iter()
            .flatten()
            .all(|u| matches!(u, Update::Have { .. })));
        let stored: Vec<KeyHash> = pages.iter().flatten().skip(1).map(|u| *u.key()).collect();
        let mut want: Vec<KeyHash> = keys.iter().map(|k| key_hash(k)).collect();
        want.sort();
        assert_eq!(stored, want, "each stored key once, in key-hash order");
        assert_eq!(
            source.snapshot().len(),
            6,
            "the whole snapshot reads every page"
        );
    }

    #[test]
    fn a_snapshot_has_one_update_per_shareable_key_and_the_open_claims() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store_entry(&store, "http://a/one", "gzip", b"one-gz", true);
        store_entry(&store, "http://a/one", "br", b"one-br", true);
        store_entry(&store, "http://a/two", "", b"two", true);
        store_entry(&store, "http://a/private", "", b"mine", false);
        let mut state = StoreState::new(store, Arc::new(Rules::none()));
        let (claimed, first) = state.claim("http://a/coming");
        let (refreshing, _) = state.claim("http://a/two");
        assert_eq!(state.claimed(&claimed), Some("http://a/coming"));
        assert_eq!(state.claims(), 2);
        assert!(state.is_open(&claimed, first));
        // Claiming the key again replaces the claim: the first one is no longer the owner.
        let (_, second) = state.claim("http://a/coming");
        assert!(!state.is_open(&claimed, first) && state.is_open(&claimed, second));

        let mut snap = state.snapshot();
        snap.sort_by_key(|u| *u.key());
        let mut want_keys = vec![key_hash("http://a/one"), key_hash("http://a/two"), claimed];
        want_keys.sort();
        assert_eq!(
            snap.iter().map(|u| *u.key()).collect::<Vec<_>>(),
            want_keys,
            "one per key; the private entry is absent; a stored key is Have even while claimed"
        );
        for u in &snap {
            match u {
                Update::InFlight { key } => assert_eq!(*key, claimed),
                Update::Have {
                    key,
                    len,
                    fresh_until,
                    ..
                } => {
                    assert_ne!(*key, claimed);
                    assert!(*len > 0 && *fresh_until > 0);
                }
                Update::Dropped { .. } => panic!("a snapshot holds no Dropped"),
            }
        }
        // Recording a Have or a Dropped closes the claim.
        state.record(&Update::Dropped { key: claimed });
        state.record(&Update::Have {
            key: refreshing,
            hash: [0; 32],
            len: 3,
            fresh_until: 1,
        });
        assert_eq!(state.claims(), 0);
        assert_eq!(state.claimed(&claimed), None);
        assert!(!state.is_open(&claimed, second));
    }

    #[test]
    fn the_advertised_lifetime_follows_the_rules() {
        use crate::cache::head::Head;
        use crate::cache::policy::{Timing, IMMUTABLE};
        use crate::config::Preset;
        use std::time::Duration;

        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let timing = Timing {
            request_time: now,
            response_time: now,
            corrected_initial_age: Duration::from_secs(100),
        };
        let entry = |key: &str| Entry {
            key: key.to_owned(),
            head: Head::new(
                http::StatusCode::OK,
                &http::HeaderMap::new(),
                timing,
                Default::default(),
                true,
            ),
            hash: blake3::hash(b"deb"),
            len: 3,
        };
        let presets = Rules::new(&[], &Preset::ALL, Default::default()).unwrap();
        let fresh_until = |e: &Entry, rules: &Rules| match have(e, rules, now) {
            Update::Have { fresh_until, .. } => fresh_until,
            other => panic!("{other:?}"),
        };
        let pool = entry("http://deb.example/debian/pool/main/h/hello/hello_1.0_all.deb");
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(
            fresh_until(&pool, &presets),
            secs + IMMUTABLE.as_secs() - 100,
            "immutable by the debian preset, as every node judges it"
        );
        assert_eq!(
            fresh_until(&pool, &Rules::none()),
            secs,
            "no rule: stale now"
        );
        let page = entry("http://deb.example/about");
        assert_eq!(fresh_until(&page, &presets), secs);
    }
}

//! Which stored response a request may use (RFC 9111 §4.1): the variant whose `Vary`-named
//! fields (and the URL rule's key fields) match the request's. Reads the store; decides nothing
//! about freshness.

use std::sync::Arc;

use http::HeaderMap;

use crate::cache::head::Entry;
use crate::cache::key::Variant;
use crate::cache::rules::Treatment;
use crate::cache::store::Store;

/// What the store holds for a request.
pub enum Lookup {
    /// Nothing for the URI.
    Missing,
    /// Responses for the URI, none selected by this request.
    OtherVariants,
    Found(Arc<Entry>),
}

/// Picks the stored variant of `key` matching the request fields `req`.
pub async fn lookup(store: &Store, key: &str, treat: &Treatment<'_>, req: &HeaderMap) -> Lookup {
    let Some(variants) = store.lookup(key).await else {
        return Lookup::Missing;
    };
    let found = variants.entries.iter().find(|e| {
        // Nothing to select by (no Vary, no key fields): it matches every request.
        (e.variant.as_str().is_empty() && treat.key_fields.is_empty())
            || Variant::of_request(&treat.vary(&e.headers()), req).as_ref() == Some(&e.variant)
    });
    match found {
        Some(e) => Lookup::Found(e.clone()),
        None if variants.entries.is_empty() => Lookup::Missing,
        None => Lookup::OtherVariants,
    }
}

//! HTTP helpers below every other module: hop-by-hop fields and `Via` (`headers`), the client
//! allow-list (`acl`). Pure; no I/O, and nothing here names a module above it.

pub mod acl;
pub mod headers;

/// Header maps for the table tests of the modules built on these helpers.
#[cfg(test)]
pub(crate) mod testing {
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// The fields `pairs`, in order (repeated names appended).
    pub(crate) fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).expect("test name"),
                HeaderValue::from_str(v).expect("test value"),
            );
        }
        m
    }
}

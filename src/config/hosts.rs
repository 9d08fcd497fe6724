//! Host patterns (`[intercept] hosts`): their syntax and which host names they match; pure, no I/O, never resolves a name.

use std::fmt;
use std::net::IpAddr;

/// Longest host name (RFC 1035 §2.3.4, without the trailing dot).
const MAX_NAME: usize = 253;
/// Longest label of a host name (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// One host pattern.
///
/// Invariants: names are lower-case ASCII without a trailing dot, each label 1..=63 characters
/// of `a-z 0-9 - _` not starting or ending with `-`, 253 characters at most; a `Below` suffix
/// has at least two labels (`*.net` is refused as too broad).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `files.example.org`: that name only.
    Name(String),
    /// `127.0.0.1`, `::1` or `[::1]`: that address only (a CONNECT to the literal address).
    Ip(IpAddr),
    /// `*.example.net`: every name below `example.net`, at any depth, never `example.net`
    /// itself (as a PAC file's `shExpMatch(host, "*.example.net")` does).
    Below(String),
}

impl HostPattern {
    /// Parses one pattern as written in the config; the error says what is wrong.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "invalid host pattern {s:?}: write the host name only, e.g. \"files.example.org\""
            ));
        }
        let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if let Ok(ip) = bare.unwrap_or(s).parse::<IpAddr>() {
            return Ok(HostPattern::Ip(ip));
        }
        if bare.is_some() || s.contains(':') {
            return Err(format!(
                "invalid host pattern {s:?}: no port (CONNECT ports are proxy.connect_ports)"
            ));
        }
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        if let Some(suffix) = lower.strip_prefix("*.") {
            check_name(s, suffix)?;
            if !suffix.contains('.') {
                return Err(format!(
                    "invalid host pattern {s:?}: too broad; name a domain, e.g. \"*.example.net\""
                ));
            }
            return Ok(HostPattern::Below(suffix.to_owned()));
        }
        if lower.contains('*') {
            return Err(format!(
                "invalid host pattern {s:?}: \"*\" is only allowed as the whole first label, \
                 e.g. \"*.example.net\""
            ));
        }
        check_name(s, &lower)?;
        Ok(HostPattern::Name(lower))
    }

    /// Whether `host` (a CONNECT host or TLS server name: a name, an IP literal, with or
    /// without brackets or a trailing dot, any case) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match self {
            HostPattern::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
            HostPattern::Name(name) => host.trim_end_matches('.').eq_ignore_ascii_case(name),
            HostPattern::Below(suffix) => {
                let host = host.trim_end_matches('.');
                let (n, s) = (host.len(), suffix.len());
                n > s + 1
                    && host.as_bytes()[n - s - 1] == b'.'
                    && host[n - s..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// Checks a host name's syntax; `written` is the pattern as the user wrote it (for messages).
fn check_name(written: &str, name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid host pattern {written:?}: {why}"));
    if name.is_empty() {
        return bad("empty");
    }
    if !name.is_ascii() {
        return bad("not ASCII; write an internationalised name in its xn-- form");
    }
    if name.len() > MAX_NAME {
        return bad("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            return bad("every label (between dots) must be 1 to 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label may not start or end with \"-\"");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("a host name has only letters, digits, \"-\", \"_\" and dots");
        }
    }
    Ok(())
}

impl fmt::Display for HostPattern {
    /// The normalised pattern: `files.example.org`, `*.example.net`, `127.0.0.1`, `::1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Name(name) => f.write_str(name),
            HostPattern::Ip(ip) => write!(f, "{ip}"),
            HostPattern::Below(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// The `[intercept] hosts` list: the hosts whose `CONNECT` tunnels are decrypted and cached.
/// Empty means interception is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPatterns(Vec<HostPattern>);

impl HostPatterns {
    pub fn new(patterns: Vec<HostPattern>) -> Self {
        HostPatterns(patterns)
    }

    /// Parses each pattern (for tests and callers outside the config reader).
    pub fn parse<'s>(patterns: impl IntoIterator<Item = &'s str>) -> Result<Self, String> {
        patterns
            .into_iter()
            .map(HostPattern::parse)
            .collect::<Result<_, _>>()
            .map(HostPatterns)
    }

    /// The patterns in file order (a PAC file lists them).
    pub fn patterns(&self) -> &[HostPattern] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any pattern matches `host` (see [`HostPattern::matches`]).
    pub fn matches(&self, host: &str) -> bool {
        self.0.iter().any(|p| p.matches(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_hosts_each_pattern_matches() {
        let table: &[(&str, &[&str], &[&str])] = &[
            (
                "files.example.org",
                &[
                    "files.example.org",
                    "FILES.Example.ORG",
                    "files.example.org.",
                ],
                &[
                    "example.org",
                    "a.files.example.org",
                    "files.example.org.evil",
                ],
            ),
            (
                "*.example.net",
                &["a.example.net", "a.b.example.net", "A.EXAMPLE.NET."],
                &[
                    "example.net",
                    "aexample.net",
                    "example.net.evil",
                    ".example.net",
                ],
            ),
            (
                "127.0.0.1",
                &["127.0.0.1"],
                &["127.0.0.2", "localhost", "127.0.0.1.example"],
            ),
            (
                "[::1]",
                &["::1", "[::1]", "0:0:0:0:0:0:0:1"],
                &["::2", "127.0.0.1"],
            ),
            ("LocalHost.", &["localhost"], &["localhost.localdomain"]),
        ];
        for (pattern, yes, no) in table {
            let p = HostPattern::parse(pattern).unwrap();
            for h in *yes {
                assert!(p.matches(h), "{pattern} should match {h}");
            }
            for h in *no {
                assert!(!p.matches(h), "{pattern} should not match {h}");
            }
        }
    }

    #[test]
    fn patterns_print_normalised() {
        for (written, shown) in [
            ("Files.Example.org", "files.example.org"),
            ("*.Example.NET.", "*.example.net"),
            ("[::1]", "::1"),
            ("10.0.0.1", "10.0.0.1"),
        ] {
            assert_eq!(HostPattern::parse(written).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        for (written, why) in [
            ("", "empty"),
            ("*", "\"*\" is only allowed"),
            ("*.net", "too broad"),
            ("a.*.example.org", "\"*\" is only allowed"),
            ("*example.org", "\"*\" is only allowed"),
            ("files.example.org:443", "no port"),
            ("[::1]:443", "no port"),
            ("https://files.example.org/", "host name only"),
            ("files..example.org", "1 to 63"),
            ("-a.example.org", "start or end"),
            ("a b.example.org", "letters, digits"),
            ("bücher.example", "xn--"),
        ] {
            let e = HostPattern::parse(written).unwrap_err();
            assert!(e.contains(why), "{written:?}: {e}");
        }
        let long = format!("{}.example.org", "a".repeat(64));
        assert!(HostPattern::parse(&long).unwrap_err().contains("1 to 63"));
    }

    #[test]
    fn a_list_matches_when_any_pattern_does() {
        let hosts = HostPatterns::parse(["files.example.org", "*.example.net"]).unwrap();
        assert!(hosts.matches("files.example.org") && hosts.matches("x.example.net"));
        assert!(!hosts.matches("example.net") && !hosts.matches("example.com"));
        assert!(!HostPatterns::default().matches("files.example.org"));
        assert_eq!(hosts.patterns().len(), 2);
    }
}

//! Tiny pieces of HTTP grammar shared by the header parsers (RFC 9110 §5.6). Pure; no I/O.

/// delta-seconds saturate here (RFC 9111 §1.2.2).
pub const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// Optional whitespace: SP or HTAB (RFC 9110 §5.6.3).
pub fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading and trailing OWS.
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// `1*DIGIT` as seconds, saturating at [`DELTA_SECONDS_MAX`]; `None` for anything else.
pub fn delta_seconds(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(d - b'0'))
            .min(DELTA_SECONDS_MAX)
    }))
}

/// The decimal digits of `n` (1*DIGIT, ASCII), written into `buf`: without `core::fmt`, for the
/// numbers every request writes (a port in a cache key, the access log's fields).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends the decimal digits of `n` to `out`.
pub fn push_decimal(out: &mut String, n: u64) {
    out.extend(decimal(n, &mut [0; 20]).iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_spaces_and_tabs() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b"\r\nx"), b"\r\nx");
    }

    #[test]
    fn decimal_digits_as_display_writes_them() {
        for n in [0, 7, 10, 80, 65_535, 1_700_000_000, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
            let mut s = String::from("x");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn delta_seconds_accepts_digits_and_saturates() {
        assert_eq!(delta_seconds(b"0"), Some(0));
        assert_eq!(delta_seconds(b"60"), Some(60));
        assert_eq!(
            delta_seconds(b"99999999999999999999999"),
            Some(DELTA_SECONDS_MAX)
        );
        for bad in [&b""[..], b"-1", b"1.5", b" 1", b"abc"] {
            assert_eq!(delta_seconds(bad), None);
        }
    }
}

//! Sizes and durations: parsing `"10GiB"` / `"250ms"` and showing sizes in messages; pure.

use std::time::Duration;

/// Parses a size: an integer number of bytes (`"512"`), or a number with a unit, optionally
/// separated by one space: `B`, `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024) or `KB`/`MB`/`GB`/`TB`
/// (powers of 1000), case-insensitive. Whole numbers only. Rejects negative, empty, unit-only
/// and anything above `u64::MAX` bytes, with a message naming the input. Never panics.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size {s:?} (use bytes or e.g. \"512MiB\", \"10GiB\")");
    let q = Quantity::split(s).ok_or_else(invalid)?;
    let multiplier: u64 = match q.unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    if q.negative {
        return Err(format!("invalid size {s:?}: must not be negative"));
    }
    q.value
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("invalid size {s:?}: too large (at most {} bytes)", u64::MAX))
}

/// Parses a duration: `"250ms"`, `"5s"`, `"2m"`, `"1h"`, `"30d"` (unit case-insensitive,
/// optionally preceded by one space) or a bare integer number of seconds (`"30"`). Whole numbers
/// only.
/// `"0"` is accepted here (callers that need > 0 check it). Rejects negative, empty, unit-only
/// and overflowing input with a message naming it. Never panics.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {s:?} \
             (use e.g. \"250ms\", \"5s\", \"2m\", \"1h\", \"30d\" or a number of seconds)"
        )
    };
    let q = Quantity::split(s).ok_or_else(invalid)?;
    // Seconds per unit; `None` for milliseconds.
    let seconds_per_unit: Option<u64> = match q.unit.to_ascii_lowercase().as_str() {
        "ms" => None,
        "" | "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        "d" => Some(86_400),
        _ => return Err(invalid()),
    };
    if q.negative {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    let too_large = || format!("invalid duration {s:?}: too large");
    let n = q.value.ok_or_else(too_large)?;
    match seconds_per_unit {
        None => Ok(Duration::from_millis(n)),
        Some(k) => n
            .checked_mul(k)
            .map(Duration::from_secs)
            .ok_or_else(too_large),
    }
}

/// A whole number followed by an optional unit, as in `"10GiB"`, `"250 ms"`, `"-5s"`.
struct Quantity<'s> {
    negative: bool,
    /// `None` when the digits overflow `u64`.
    value: Option<u64>,
    /// ASCII letters after the number (and one optional space); possibly empty.
    unit: &'s str,
}

impl<'s> Quantity<'s> {
    /// Splits `"[-]<digits>[ ]<letters>"`, ignoring surrounding whitespace; `None` when there
    /// are no digits or anything else is present.
    fn split(s: &'s str) -> Option<Self> {
        let s = s.trim();
        let (negative, unsigned) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let digits_end = unsigned
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(unsigned.len());
        let (digits, rest) = unsigned.split_at(digits_end);
        let unit = rest.strip_prefix(' ').unwrap_or(rest);
        if digits.is_empty() || !unit.chars().all(|c| c.is_ascii_alphabetic()) {
            return None;
        }
        Some(Quantity {
            negative,
            // Only overflow can fail: `digits` is a non-empty run of ASCII digits.
            value: digits.parse().ok(),
            unit,
        })
    }
}

/// A size for messages: `4GiB`, `10GB` when exact, else `N bytes`.
pub(super) fn show_size(n: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "KB"),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| n >= *unit && n.is_multiple_of(*unit))
        .map(|(unit, name)| format!("{}{name}", n / unit))
        .unwrap_or_else(|| format!("{n} bytes"))
}

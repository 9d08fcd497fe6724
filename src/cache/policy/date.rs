//! HTTP-date parsing for a cache recipient (RFC 9110 §5.6.7, RFC 9111 §4.2): the three formats,
//! leniently; pure, no clock (a two-digit year is resolved against a time the caller gives).
//!
//! The `httpdate` crate is strict (exact case, the weekday must agree with the date); RFC 9111
//! §4.2 asks a cache to match dates case-insensitively, RFC 9110 §5.6.7 to accept all three
//! formats and resolve RFC 850's two-digit years by the 50-year rule. What this parser accepts
//! beyond the grammar, and nothing more:
//! - day names, month names and `GMT` in any case;
//! - a weekday that does not agree with the date (it carries no information), short or long in
//!   any format;
//! - the separators of any format in any other (`06-Nov-1994`, `Sun Nov 6`), runs of spaces,
//!   one- or two-digit days, hours, minutes and seconds;
//! - a two-digit year (RFC 850) is read in the reference time's century, or the one before when
//!   that would put it more than 50 years ahead.
//!
//! Everything else is invalid, in particular a zone other than `GMT` (§4.2: "SHOULD consider a
//! date with a zone abbreviation other than GMT to be invalid"), a day the month does not have,
//! an hour over 23, a minute over 59, a second over 60 (a leap second), trailing text, and a year
//! outside 1..=9999. The caller decides what an invalid date means (an invalid `Expires` is
//! "already expired", RFC 9111 §5.3).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A date as written: its year may still need a reference time (two digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpDate {
    year: Year,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Year {
    Full(u16),
    TwoDigits(u8),
}

/// Month names, in order (RFC 9110 §5.6.7 `month`).
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
/// Short and long day names (`day-name`, `day-name-l`).
const DAY_NAMES: [&str; 14] = [
    "mon",
    "tue",
    "wed",
    "thu",
    "fri",
    "sat",
    "sun",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl HttpDate {
    /// Parses one field value in any of the three formats (see the module comment).
    pub fn parse(value: &[u8]) -> Option<HttpDate> {
        let text = std::str::from_utf8(value).ok()?;
        let tokens: Vec<&str> = text
            .split([' ', '\t', ',', '-'])
            .filter(|t| !t.is_empty())
            .collect();
        let (day_name, rest) = tokens.split_first()?;
        if !DAY_NAMES.iter().any(|d| d.eq_ignore_ascii_case(day_name)) {
            return None;
        }
        let (day, month, year, time) = match rest {
            // IMF-fixdate and RFC 850: day month year time GMT.
            [day, month, year, time, zone] if zone.eq_ignore_ascii_case("gmt") => {
                (*day, *month, year_of(year)?, *time)
            }
            // asctime: month day time year (no zone).
            [month, day, time, year] => (*day, *month, Year::Full(four_digits(year)?), *time),
            _ => return None,
        };
        let month = MONTHS
            .iter()
            .position(|m| m.eq_ignore_ascii_case(month))
            .and_then(|i| u8::try_from(i + 1).ok())?;
        let day = small(day, 31)?;
        let mut hms = time.split(':');
        let (hour, minute, second) = (
            small(hms.next()?, 23)?,
            small(hms.next()?, 59)?,
            small(hms.next()?, 60)?,
        );
        if hms.next().is_some() || day == 0 {
            return None;
        }
        if let Year::Full(y) = year {
            if y == 0 || day > days_in_month(i64::from(y), month) {
                return None;
            }
        }
        Some(HttpDate {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// The instant this date names. A two-digit year is read in the century of `reference`'s
    /// year, and a century earlier when that is more than 50 years after it (RFC 9110 §5.6.7,
    /// counted in whole years). `None` when the day does not exist in that year (29 Feb).
    pub fn at(&self, reference: SystemTime) -> Option<SystemTime> {
        let year = match self.year {
            Year::Full(y) => i64::from(y),
            Year::TwoDigits(yy) => {
                let now = civil_year(reference);
                let century = now - now.rem_euclid(100);
                let mut y = century + i64::from(yy);
                if y > now + 50 {
                    y -= 100;
                }
                y
            }
        };
        if self.day > days_in_month(year, self.month) {
            return None;
        }
        let days = days_from_civil(year, self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        Some(match u64::try_from(secs) {
            Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
            Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
        })
    }
}

/// A year token: four digits, or two (RFC 850).
fn year_of(token: &str) -> Option<Year> {
    match token.len() {
        2 => small(token, 99).map(Year::TwoDigits),
        _ => four_digits(token).map(Year::Full),
    }
}

fn four_digits(token: &str) -> Option<u16> {
    if token.len() != 4 || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// One or two digits, at most `max`.
fn small(token: &str, max: u8) -> Option<u8> {
    if token.is_empty() || token.len() > 2 || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok().filter(|n| *n <= max)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The Gregorian year of an instant (UTC).
fn civil_year(t: SystemTime) -> i64 {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX / 2),
    };
    // Inverse of `days_from_civil` for the year only (Hinnant's `civil_from_days`).
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let year = yoe + era * 400;
    if mp >= 10 {
        year + 1
    } else {
        year
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06T08:49:37Z, RFC 9110 §5.6.7's example.
    const EXAMPLE: u64 = 784_111_777;

    fn at(value: &str, reference_year_secs: u64) -> Option<u64> {
        let reference = UNIX_EPOCH + Duration::from_secs(reference_year_secs);
        HttpDate::parse(value.as_bytes())?
            .at(reference)?
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }

    /// 2026-01-01T00:00:00Z.
    const Y2026: u64 = 1_767_225_600;

    /// RFC 9110 §5.6.7: all three formats; RFC 9111 §4.2: case-insensitive; the weekday is not
    /// checked; two-digit years by the 50-year rule.
    #[test]
    fn rfc9110_5_6_7_accepted_table() {
        #[rustfmt::skip]
        let cases: [(&str, &str, u64); 19] = [
            ("IMF-fixdate", "Sun, 06 Nov 1994 08:49:37 GMT", EXAMPLE),
            ("RFC 850", "Sunday, 06-Nov-94 08:49:37 GMT", EXAMPLE),
            ("asctime", "Sun Nov  6 08:49:37 1994", EXAMPLE),
            ("asctime, one space", "Sun Nov 6 08:49:37 1994", EXAMPLE),
            ("asctime, zero-padded day", "Sun Nov 06 08:49:37 1994", EXAMPLE),
            ("lower case", "sun, 06 nov 1994 08:49:37 gmt", EXAMPLE),
            ("upper case", "SUN, 06 NOV 1994 08:49:37 GMT", EXAMPLE),
            ("wrong weekday, IMF", "Mon, 06 Nov 1994 08:49:37 GMT", EXAMPLE),
            ("wrong weekday, asctime", "Fri Nov  6 08:49:37 1994", EXAMPLE),
            ("long weekday in IMF", "Sunday, 06 Nov 1994 08:49:37 GMT", EXAMPLE),
            ("RFC 850 with four digits", "Sunday, 06-Nov-1994 08:49:37 GMT", EXAMPLE),
            ("surrounding OWS", " \tSun, 06 Nov 1994 08:49:37 GMT ", EXAMPLE),
            ("one-digit time parts", "Sun, 6 Nov 1994 8:49:37 GMT", EXAMPLE),
            ("leap second", "Sun, 06 Nov 1994 08:49:60 GMT", EXAMPLE + 23),
            ("29 Feb of a leap year", "Thu, 29 Feb 2024 00:00:00 GMT", 1_709_164_800),
            ("the epoch", "Thu, 01 Jan 1970 00:00:00 GMT", 0),
            ("RFC 850 '77 in 2026 is 1977 (2077 is 51 years ahead)", "Saturday, 01-Jan-77 00:00:00 GMT", 220_924_800),
            ("RFC 850 '76 in 2026 is 2076 (50 years ahead is not more)", "Wednesday, 01-Jan-76 00:00:00 GMT", 3_345_062_400),
            ("RFC 850 '30 in 2026 is 2030", "Tuesday, 01-Jan-30 00:00:00 GMT", 1_893_456_000),
        ];
        for (what, value, want) in cases {
            assert_eq!(at(value, Y2026), Some(want), "{what}: {value}");
        }
    }

    #[test]
    fn rfc9110_5_6_7_rejected_table() {
        let cases = [
            ("empty", ""),
            ("zero", "0"),
            ("a number", "1700000000"),
            ("no weekday", "06 Nov 1994 08:49:37 GMT"),
            ("not a weekday", "Xyz, 06 Nov 1994 08:49:37 GMT"),
            ("other zone", "Sun, 06 Nov 1994 08:49:37 UTC"),
            ("numeric zone", "Sun, 06 Nov 1994 08:49:37 +0000"),
            ("no zone", "Sun, 06 Nov 1994 08:49:37"),
            ("asctime with a zone", "Sun Nov  6 08:49:37 1994 GMT"),
            ("bad month", "Sun, 06 Foo 1994 08:49:37 GMT"),
            ("day 0", "Sun, 00 Nov 1994 08:49:37 GMT"),
            ("31 Nov", "Sun, 31 Nov 1994 08:49:37 GMT"),
            ("29 Feb of a common year", "Sun, 29 Feb 1994 08:49:37 GMT"),
            ("hour 24", "Sun, 06 Nov 1994 24:00:00 GMT"),
            ("minute 60", "Sun, 06 Nov 1994 08:60:00 GMT"),
            ("second 61", "Sun, 06 Nov 1994 08:49:61 GMT"),
            ("no seconds", "Sun, 06 Nov 1994 08:49 GMT"),
            ("three-digit day", "Sun, 006 Nov 1994 08:49:37 GMT"),
            ("three-digit year", "Sun, 06 Nov 994 08:49:37 GMT"),
            ("year 0", "Sun, 06 Nov 0000 08:49:37 GMT"),
            ("trailing text", "Sun, 06 Nov 1994 08:49:37 GMT x"),
            ("signs", "Sun, +6 Nov 1994 08:49:37 GMT"),
            ("non-ASCII digits", "Sun, ٠٦ Nov 1994 08:49:37 GMT"),
        ];
        for (what, value) in cases {
            assert_eq!(HttpDate::parse(value.as_bytes()), None, "{what}: {value}");
        }
        assert_eq!(HttpDate::parse(b"Sun, 06 Nov 1994 08:49:37 GMT\xff"), None);
    }

    /// A two-digit 29 Feb exists only in some centuries: resolved, then checked.
    #[test]
    fn two_digit_leap_day_depends_on_the_resolved_year() {
        let d = HttpDate::parse(b"Thursday, 29-Feb-00 00:00:00 GMT").expect("parses");
        assert!(
            d.at(UNIX_EPOCH + Duration::from_secs(Y2026)).is_some(),
            "2000"
        );
        // In 2151, "00" is 2100, which has no 29 Feb.
        let y2151 = UNIX_EPOCH + Duration::from_secs(5_711_817_600);
        assert_eq!(d.at(y2151), None);
    }

    #[test]
    fn years_before_the_epoch_and_far_ahead() {
        let old = HttpDate::parse(b"Mon, 01 Jan 1900 00:00:00 GMT").expect("parses");
        let t = old.at(UNIX_EPOCH).expect("exists");
        assert_eq!(
            UNIX_EPOCH.duration_since(t).expect("before").as_secs(),
            2_208_988_800
        );
        let far = HttpDate::parse(b"Fri, 31 Dec 9999 23:59:59 GMT").expect("parses");
        assert_eq!(
            far.at(UNIX_EPOCH)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            Some(253_402_300_799)
        );
    }

    #[test]
    fn civil_year_round_trips() {
        for (secs, year) in [
            (0, 1970),
            (EXAMPLE, 1994),
            (Y2026 - 1, 2025),
            (Y2026, 2026),
            (951_782_400, 2000), // 2000-02-29
        ] {
            assert_eq!(civil_year(UNIX_EPOCH + Duration::from_secs(secs)), year);
        }
        assert_eq!(civil_year(UNIX_EPOCH - Duration::from_secs(1)), 1969);
    }
}

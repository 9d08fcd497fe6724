//! Age bookkeeping of a stored response (RFC 9111 §4.2.3); pure, no clock: `now` is a parameter.

use std::time::{Duration, SystemTime};

use http::header::{AGE, DATE};
use http::HeaderMap;

use super::http_date;
use crate::grammar::trim_ows as trim;

/// RFC 9111 §4.2.3 age bookkeeping kept with a stored response.
///
/// Invariant: `request_time` is when the request was sent, `response_time` when the response
/// head arrived (both on this node's clock); `corrected_initial_age` is the response's age at
/// `response_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When the request that produced the response was sent.
    pub request_time: SystemTime,
    /// When the response head was received.
    pub response_time: SystemTime,
    /// The response's age at `response_time`.
    pub corrected_initial_age: Duration,
}

impl Timing {
    /// From the moment the request was sent, the moment the response head arrived, and the
    /// response's headers (RFC 9111 §4.2.3):
    /// `apparent_age = max(0, response_time - Date)`,
    /// `corrected_age_value = Age + (response_time - request_time)`,
    /// `corrected_initial_age = max(apparent_age, corrected_age_value)`.
    /// A missing or invalid Date gives `apparent_age = 0`; Age is read by [`age_value`]; a
    /// response that "arrived before it was sent" (clock step) has no response delay.
    pub fn new(request_time: SystemTime, response_time: SystemTime, resp: &HeaderMap) -> Self {
        let apparent_age = http_date(resp, &DATE, response_time)
            .and_then(|date| response_time.duration_since(date).ok())
            .unwrap_or(Duration::ZERO);
        let age_value = age_value(resp).map_or(Duration::ZERO, Duration::from_secs);
        let response_delay = response_time
            .duration_since(request_time)
            .unwrap_or(Duration::ZERO);
        let corrected_age_value = age_value.saturating_add(response_delay);
        Timing {
            request_time,
            response_time,
            corrected_initial_age: apparent_age.max(corrected_age_value),
        }
    }

    /// `current_age = corrected_initial_age + (now - response_time)`, never negative: a `now`
    /// before `response_time` adds nothing (RFC 9111 §4.2.3).
    pub fn current_age(&self, now: SystemTime) -> Duration {
        let resident = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        self.corrected_initial_age.saturating_add(resident)
    }
}

/// The `Age` of a response (RFC 9111 §5.1): the first member of the field value (of its first
/// line), since a cache "SHOULD use the first member" of a list-based value, as delta-seconds
/// saturating at 2^31; `None` when absent or when that member is not a non-negative integer
/// (the field is then ignored).
fn age_value(resp: &HeaderMap) -> Option<u64> {
    let line = resp.get(AGE)?.as_bytes();
    let first = line.split(|&b| b == b',').next().unwrap_or_default();
    crate::grammar::delta_seconds(trim(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::testing::*;
    use crate::grammar::DELTA_SECONDS_MAX;

    #[test]
    fn timing_table() {
        #[rustfmt::skip]
        let cases: Vec<(&str, u64, u64, Owned, Duration)> = vec![
            ("no Date, no Age: response delay", T0, T0 + 2, vec![], secs(2)),
            ("Date = response time", T0, T0 + 2, vec![("date", date(T0 + 2))], secs(2)),
            ("Date in the past beats delay", T0, T0 + 2, vec![("date", date(T0 - 98))], secs(100)),
            ("Date in the future: no apparent age", T0, T0 + 2, vec![("date", date(T0 + 500))], secs(2)),
            ("Age plus delay", T0, T0 + 2, vec![("age", "30".into())], secs(32)),
            ("Age with OWS", T0, T0 + 2, vec![("age", " 30 ".into())], secs(32)),
            ("Age vs older Date: max", T0, T0 + 2, vec![("age", "30".into()), ("date", date(T0 - 98))], secs(100)),
            ("Age beats Date", T0, T0 + 2, vec![("age", "300".into()), ("date", date(T0 - 98))], secs(302)),
            ("Age invalid ignored", T0, T0 + 2, vec![("age", "abc".into())], secs(2)),
            ("Age negative ignored", T0, T0 + 2, vec![("age", "-5".into())], secs(2)),
            // RFC 9111 §5.1: a list-based Age uses its first member.
            ("Age list: first member", T0, T0 + 2, vec![("age", "7200, 0".into())], secs(7202)),
            ("Age list without spaces", T0, T0 + 2, vec![("age", "5,6".into())], secs(7)),
            ("Age list, invalid first member ignored", T0, T0 + 2, vec![("age", "x, 6".into())], secs(2)),
            ("Age list, empty first member ignored", T0, T0 + 2, vec![("age", ", 6".into())], secs(2)),
            ("Age huge saturates", T0, T0 + 2, vec![("age", "99999999999999999999".into())], secs(DELTA_SECONDS_MAX + 2)),
            ("first Age line", T0, T0, vec![("age", "7".into()), ("age", "9".into())], secs(7)),
            ("Date invalid ignored", T0, T0 + 2, vec![("date", "yesterday".into())], secs(2)),
            ("clock stepped back: no delay", T0 + 5, T0, vec![], secs(0)),
        ];
        for (what, req_t, resp_t, headers, want) in cases {
            let h: Fields<'_> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let timing = Timing::new(t(req_t), t(resp_t), &hm(&h));
            assert_eq!(timing.corrected_initial_age, want, "{what}");
            assert_eq!(timing.request_time, t(req_t), "{what}");
            assert_eq!(timing.response_time, t(resp_t), "{what}");
        }
    }

    #[test]
    fn current_age_table() {
        let timing = Timing {
            request_time: t(T0 - 1),
            response_time: t(T0),
            corrected_initial_age: secs(30),
        };
        let cases = [
            ("at arrival", t(T0), secs(30)),
            ("10 s later", t(T0 + 10), secs(40)),
            (
                "sub-second",
                t(T0) + Duration::from_millis(1500),
                Duration::from_millis(31_500),
            ),
            (
                "clock before arrival: never negative",
                t(T0 - 100),
                secs(30),
            ),
        ];
        for (what, now, want) in cases {
            assert_eq!(timing.current_age(now), want, "{what}");
        }
        let huge = Timing {
            corrected_initial_age: Duration::MAX,
            ..timing
        };
        assert_eq!(huge.current_age(t(T0 + 1)), Duration::MAX, "saturates");
    }
}

//! Instants as whole UTC seconds since the epoch, shown to clients as RFC 3339.
//!
//! Whole seconds are all the paywall needs (expiries are days apart), they compare and
//! store as plain numbers in DynamoDB, and formatting reuses the AWS SDK's own date type
//! instead of pulling in a date crate.

use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use serde::{Serialize, Serializer};
use std::sync::{Arc, Mutex};

pub const SECONDS_PER_DAY: i64 = 86_400;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_seconds(seconds: i64) -> Self {
        Self(seconds)
    }

    pub const fn unix_seconds(self) -> i64 {
        self.0
    }

    pub const fn plus_days(self, days: u32) -> Self {
        Self(self.0 + days as i64 * SECONDS_PER_DAY)
    }

    pub const fn plus_seconds(self, seconds: i64) -> Self {
        Self(self.0 + seconds)
    }

    /// `2026-11-26T20:11:31Z`
    pub fn to_rfc3339(self) -> String {
        DateTime::from_secs(self.0)
            .fmt(DateTimeFormat::DateTime)
            .unwrap_or_else(|_| self.0.to_string())
    }

    /// Accepts RFC 3339 with or without fractional seconds (Dodo sends both).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::from_str(text, DateTimeFormat::DateTime)
            .ok()
            .map(|dt| Self(dt.secs()))
    }
}

/// `seconds` plus `months` calendar months, the day clamped to the month's length (Jan 31
/// + 1 month = Feb 28/29), the time of day kept.
pub fn add_months(seconds: i64, months: i64) -> i64 {
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let time_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let index = year * 12 + (month as i64 - 1) + months;
    let (year, month) = (index.div_euclid(12), index.rem_euclid(12) as u32 + 1);
    let day = day.min(days_in_month(year, month));
    days_from_civil(year, month, day) * SECONDS_PER_DAY + time_of_day
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms (proleptic Gregorian calendar, days since 1970-01-01).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The first instant of the calendar month (UTC) after the one `seconds` falls in.
pub fn start_of_next_month(seconds: i64) -> i64 {
    let (year, month, _) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
    let index = year * 12 + i64::from(month);
    days_from_civil(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1) * SECONDS_PER_DAY
}

/// Milliseconds since the epoch of an RFC 3339 time (for ordering events that may fall
/// in the same second).
pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    DateTime::from_str(text, DateTimeFormat::DateTime)
        .ok()
        .map(|dt| dt.secs() * 1000 + i64::from(dt.subsec_nanos() / 1_000_000))
}

/// The system's time, in milliseconds since the epoch. Only [`Clock`] reads it.
fn system_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Where "now" comes from. Every handler reads the time through the clock it was built
/// with, never the system's directly, so that the same code runs on the wall clock in AWS
/// and on a test clock locally (`make dev`'s `/dev/clock`, the `simulate` command).
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<TestClock>>);

/// A virtual time that only moves forward: set by [`Clock::advance_to`], and, when
/// `running`, also flowing at the wall clock's pace in between (as `make dev` does, so
/// that a person clicking around sees seconds pass); when frozen, only moved on purpose
/// (as `simulate` does, so that a seed replays to the second).
struct TestClock {
    running: bool,
    /// The virtual time at `anchor`.
    at: Mutex<(i64, std::time::Instant)>,
}

/// Moving a test clock backwards is refused: stored state never travels back in time.
#[derive(Debug, PartialEq, Eq)]
pub struct ClockWouldGoBack {
    pub now_millis: i64,
}

impl Clock {
    /// The wall clock (what every Lambda function uses).
    pub fn system() -> Self {
        Self(None)
    }

    /// A test clock starting at `start_millis`; `running` lets it flow with the wall clock.
    pub fn test(start_millis: i64, running: bool) -> Self {
        Self(Some(Arc::new(TestClock {
            running,
            at: Mutex::new((start_millis, std::time::Instant::now())),
        })))
    }

    pub fn is_test(&self) -> bool {
        self.0.is_some()
    }

    pub fn now_millis(&self) -> i64 {
        match &self.0 {
            None => system_millis(),
            Some(test) => {
                let (at, anchor) = *lock(&test.at);
                if test.running {
                    at + anchor.elapsed().as_millis() as i64
                } else {
                    at
                }
            }
        }
    }

    pub fn now(&self) -> Timestamp {
        Timestamp(self.now_millis().div_euclid(1000))
    }

    /// Moves a test clock to `to_millis` (a no-op on the wall clock). Never backwards.
    pub fn advance_to(&self, to_millis: i64) -> Result<(), ClockWouldGoBack> {
        let Some(test) = &self.0 else {
            return Ok(());
        };
        let mut at = lock(&test.at);
        let now = if test.running {
            at.0 + at.1.elapsed().as_millis() as i64
        } else {
            at.0
        };
        if to_millis < now {
            return Err(ClockWouldGoBack { now_millis: now });
        }
        *at = (to_millis, std::time::Instant::now());
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Parses `30d`, `12h`, `15m`, `45s` into seconds.
pub fn parse_duration_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let amount: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    if amount < 0 {
        return None;
    }
    let scale = match unit {
        'd' => SECONDS_PER_DAY,
        'h' => 3600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    amount.checked_mul(scale)
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        let t = Timestamp::from_unix_seconds(1_614_265_330);
        assert_eq!(t.to_rfc3339(), "2021-02-25T15:02:10Z");
        assert_eq!(Timestamp::parse_rfc3339("2021-02-25T15:02:10Z"), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2021-02-25T15:02:10.123456Z"),
            Some(t)
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn orders_events_within_a_second() {
        let a = parse_rfc3339_millis("2026-01-01T00:00:00.100Z").expect("time");
        let b = parse_rfc3339_millis("2026-01-01T00:00:00.250000Z").expect("time");
        assert_eq!(b - a, 150);
    }

    #[test]
    fn a_frozen_test_clock_moves_only_forward_and_only_when_told() {
        let clock = Clock::test(1_000_000, false);
        assert_eq!(clock.now_millis(), 1_000_000);
        clock.advance_to(1_000_000 + 86_400_000).expect("forward");
        assert_eq!(clock.now().unix_seconds(), 1_000 + 86_400);
        assert_eq!(
            clock.advance_to(5),
            Err(ClockWouldGoBack {
                now_millis: 1_000_000 + 86_400_000
            })
        );
        assert!(!Clock::system().is_test());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration_seconds("30d"), Some(30 * 86_400));
        assert_eq!(parse_duration_seconds("2h"), Some(7_200));
        assert_eq!(parse_duration_seconds("15m"), Some(900));
        assert_eq!(parse_duration_seconds("9s"), Some(9));
        for bad in ["", "d", "-1d", "1w", "1.5d", "x1d"] {
            assert_eq!(parse_duration_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn adds_whole_days() {
        let t = Timestamp::from_unix_seconds(0).plus_days(30);
        assert_eq!(t.to_rfc3339(), "1970-01-31T00:00:00Z");
    }
}

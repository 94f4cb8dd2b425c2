//! Instants as whole UTC seconds since the epoch, shown to clients as RFC 3339.
//!
//! Whole seconds are all the paywall needs (expiries are days apart), they compare and
//! store as plain numbers in DynamoDB, and formatting reuses the AWS SDK's own date type
//! instead of pulling in a date crate.

use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use serde::{Serialize, Serializer};

pub const SECONDS_PER_DAY: i64 = 86_400;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_seconds(seconds: i64) -> Self {
        Self(seconds)
    }

    pub fn now() -> Self {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
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

/// Milliseconds since the epoch of an RFC 3339 time (for ordering events that may fall
/// in the same second).
pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    DateTime::from_str(text, DateTimeFormat::DateTime)
        .ok()
        .map(|dt| dt.secs() * 1000 + i64::from(dt.subsec_nanos() / 1_000_000))
}

/// Now, in milliseconds since the epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
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
    fn adds_whole_days() {
        let t = Timestamp::from_unix_seconds(0).plus_days(30);
        assert_eq!(t.to_rfc3339(), "1970-01-31T00:00:00Z");
    }
}

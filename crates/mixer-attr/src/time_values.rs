//! TIMESTAMP and DURATION values: RFC 3339 instants and signed nanosecond durations.

use std::fmt;

/// A timestamp or duration that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeParseError {
    #[error("invalid RFC 3339 timestamp `{0}`")]
    Timestamp(String),
    #[error("invalid duration `{0}` (expected e.g. `1.5s`, `300ms`, `1h2m`)")]
    Duration(String),
    #[error("timestamp `{0}` is out of range")]
    TimestampRange(String),
}

/// An instant: seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };

    /// Builds a timestamp; `nanos` above 999,999,999 carry into seconds.
    pub fn new(secs: i64, nanos: u32) -> Timestamp {
        Timestamp {
            secs: secs.saturating_add(i64::from(nanos / 1_000_000_000)),
            nanos: nanos % 1_000_000_000,
        }
    }

    /// From nanoseconds since the epoch.
    pub fn from_unix_nanos(nanos: i128) -> Timestamp {
        let secs = nanos.div_euclid(1_000_000_000);
        let secs = i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX });
        Timestamp {
            secs,
            nanos: nanos.rem_euclid(1_000_000_000) as u32,
        }
    }

    /// Seconds since the epoch.
    pub fn secs(self) -> i64 {
        self.secs
    }

    /// Nanoseconds within the second.
    pub fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// Nanoseconds since the epoch.
    pub fn unix_nanos(self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }

    /// Parses RFC 3339 (`2017-01-02T15:04:05Z`, `2017-01-02T15:04:05.123-07:00`).
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, TimeParseError> {
        let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| TimeParseError::Timestamp(s.to_string()))?;
        Ok(Timestamp::from_unix_nanos(dt.unix_timestamp_nanos()))
    }

    /// This instant plus a duration (saturating).
    pub fn checked_add(self, d: Duration) -> Option<Timestamp> {
        let n = self.unix_nanos().checked_add(i128::from(d.as_nanos()))?;
        Some(Timestamp::from_unix_nanos(n))
    }

    /// `self - earlier` as a duration, if it fits.
    pub fn duration_since(self, earlier: Timestamp) -> Option<Duration> {
        let n = self.unix_nanos() - earlier.unix_nanos();
        i64::try_from(n).ok().map(Duration::from_nanos)
    }
}

/// RFC 3339 in UTC with as many fraction digits as needed (`2017-01-02T15:04:05.5Z`).
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match time::OffsetDateTime::from_unix_timestamp_nanos(self.unix_nanos()) {
            Ok(dt) => {
                write!(
                    f,
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                    dt.year(),
                    u8::from(dt.month()),
                    dt.day(),
                    dt.hour(),
                    dt.minute(),
                    dt.second()
                )?;
                write_fraction(f, self.nanos)?;
                f.write_str("Z")
            }
            Err(_) => write!(f, "@{}.{:09}", self.secs, self.nanos),
        }
    }
}

fn write_fraction(f: &mut fmt::Formatter<'_>, nanos: u32) -> fmt::Result {
    if nanos == 0 {
        return Ok(());
    }
    let digits = format!("{nanos:09}");
    write!(f, ".{}", digits.trim_end_matches('0'))
}

/// A signed duration in nanoseconds (Go's `time.Duration` range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    nanos: i64,
}

impl Duration {
    /// Zero.
    pub const ZERO: Duration = Duration { nanos: 0 };

    /// From nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Duration {
        Duration { nanos }
    }

    /// From milliseconds (saturating).
    pub const fn from_millis(ms: i64) -> Duration {
        Duration {
            nanos: ms.saturating_mul(1_000_000),
        }
    }

    /// From seconds (saturating).
    pub const fn from_secs(s: i64) -> Duration {
        Duration {
            nanos: s.saturating_mul(1_000_000_000),
        }
    }

    /// Nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.nanos
    }

    /// As a `std::time::Duration`, or `None` when negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.nanos)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    /// From a `std::time::Duration` (saturating).
    pub fn from_std(d: std::time::Duration) -> Duration {
        Duration {
            nanos: i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    /// Parses a protobuf-JSON duration (`1.5s`, `-0.001s`) or a Go duration (`1h2m3.5s`, `300ms`,
    /// `10us`, `0`).
    pub fn parse(s: &str) -> Result<Duration, TimeParseError> {
        parse_duration(s).ok_or_else(|| TimeParseError::Duration(s.to_string()))
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body == "0" {
        return Some(Duration::ZERO);
    }
    if body.is_empty() {
        return None;
    }
    let mut rest = body;
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = after
            .bytes()
            .take_while(|b| !b.is_ascii_digit() && *b != b'.')
            .count();
        let (unit, after) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        total = total.checked_add(whole.checked_mul(scale)?)?;
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: i128 = digits.parse().ok()?;
            total += frac * scale / 10i128.pow(digits.len() as u32);
        }
        if total > i128::from(i64::MAX) {
            return None;
        }
        rest = after;
    }
    let total = if neg { -total } else { total };
    i64::try_from(total).ok().map(Duration::from_nanos)
}

/// Protobuf-JSON style: seconds with up to 9 fraction digits (`1.5s`, `0.000000001s`, `-2s`).
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let abs = self.nanos.unsigned_abs();
        if self.nanos < 0 {
            f.write_str("-")?;
        }
        write!(f, "{}", abs / 1_000_000_000)?;
        write_fraction(f, (abs % 1_000_000_000) as u32)?;
        f.write_str("s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_and_print() {
        let t = Timestamp::parse_rfc3339("2017-01-02T15:04:05.5-01:00").unwrap();
        assert_eq!(t.to_string(), "2017-01-02T16:04:05.5Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00Z");
        assert!(Timestamp::parse_rfc3339("2017-13-02T15:04:05Z").is_err());
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        let before = Timestamp::from_unix_nanos(-1);
        assert_eq!((before.secs(), before.subsec_nanos()), (-1, 999_999_999));
    }

    #[test]
    fn durations_parse_go_and_proto_forms() {
        let cases = [
            ("1.5s", 1_500_000_000),
            ("-0.001s", -1_000_000),
            ("19ms", 19_000_000),
            ("1h2m3.5s", 3_723_500_000_000),
            ("10us", 10_000),
            ("0", 0),
            ("2.5h", 9_000_000_000_000),
        ];
        for (s, n) in cases {
            assert_eq!(Duration::parse(s).unwrap().as_nanos(), n, "{s}");
        }
        for bad in ["", "s", "1", "1x", "1.s.s", "-", "9999999999h"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_print_proto_style() {
        assert_eq!(Duration::from_millis(1500).to_string(), "1.5s");
        assert_eq!(Duration::from_nanos(-1).to_string(), "-0.000000001s");
        assert_eq!(Duration::ZERO.to_string(), "0s");
        let d = Duration::from_nanos(123_456_789_012);
        assert_eq!(Duration::parse(&d.to_string()).unwrap(), d);
    }
}

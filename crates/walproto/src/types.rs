//! The scalar types of the replication protocol: LSNs, transaction ids, OIDs and timestamps.

use core::fmt;
use core::str::FromStr;

/// A position in the write-ahead log (PostgreSQL's `pg_lsn`, `XLogRecPtr`).
///
/// Displayed and parsed in PostgreSQL's `X/X` form: two upper-case hexadecimal numbers without
/// leading zeros, the high and low 32 bits (`0/16B3748`). `Lsn::ZERO` (`0/0`) is what PostgreSQL
/// calls `InvalidXLogRecPtr`; the server sends it for positions it does not fill in.
///
/// ```
/// use walproto::Lsn;
/// let lsn: Lsn = "16/B374D848".parse().unwrap();
/// assert_eq!(u64::from(lsn), 0x16_B374_D848);
/// assert_eq!(lsn.to_string(), "16/B374D848");
/// assert_eq!(lsn.checked_add(8), Some(Lsn::new(0x16_B374_D850)));
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(u64);

impl Lsn {
    /// The invalid position `0/0`.
    pub const ZERO: Lsn = Lsn(0);
    /// The largest position, `FFFFFFFF/FFFFFFFF`.
    pub const MAX: Lsn = Lsn(u64::MAX);

    /// Wraps a raw 64-bit WAL position.
    pub const fn new(raw: u64) -> Self {
        Lsn(raw)
    }

    /// The raw 64-bit WAL position.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Whether this is `0/0`, PostgreSQL's invalid position.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Moves forward by `bytes`, or `None` on overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<Lsn> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(Lsn(v)),
            None => None,
        }
    }

    /// Moves back by `bytes`, or `None` below `0/0`.
    pub const fn checked_sub(self, bytes: u64) -> Option<Lsn> {
        match self.0.checked_sub(bytes) {
            Some(v) => Some(Lsn(v)),
            None => None,
        }
    }

    /// The number of WAL bytes from `earlier` to `self`, or `None` if `earlier` is later.
    pub const fn checked_distance(self, earlier: Lsn) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }
}

impl From<u64> for Lsn {
    fn from(raw: u64) -> Self {
        Lsn(raw)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> Self {
        lsn.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

/// The error returned when a string is not an LSN in `X/X` form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseLsnError;

impl fmt::Display for ParseLsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid LSN: expected two hexadecimal numbers of 1 to 8 digits as X/X")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseLsnError {}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    /// Parses `X/X` as PostgreSQL's `pg_lsn` input does: each half has 1 to 8 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s.split_once('/').ok_or(ParseLsnError)?;
        let half = |p: &str| -> Result<u64, ParseLsnError> {
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseLsnError);
            }
            u64::from_str_radix(p, 16).map_err(|_| ParseLsnError)
        };
        Ok(Lsn((half(hi)? << 32) | half(lo)?))
    }
}

/// A transaction id (`TransactionId`, 32 bits on the wire).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xid(pub u32);

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// An object identifier: relation ids and type ids.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Oid(pub u32);

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A PostgreSQL timestamp: microseconds since 2000-01-01 00:00:00 UTC, as `timestamptz` is sent
/// on the wire (`TimestampTz`).
///
/// `i64::MAX` and `i64::MIN` are PostgreSQL's `infinity` and `-infinity`. `Display` writes
/// RFC 3339 in UTC with exactly six fractional digits, or `infinity`/`-infinity`.
///
/// ```
/// use walproto::Timestamp;
/// let t = Timestamp::from_unix_micros(1_795_521_600_123_456).unwrap();
/// assert_eq!(t.to_string(), "2026-11-24T12:00:00.123456Z");
/// assert_eq!(Timestamp::new(0).to_string(), "2000-01-01T00:00:00.000000Z");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

/// Microseconds from the Unix epoch (1970-01-01) to the PostgreSQL epoch (2000-01-01).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Timestamp {
    /// The PostgreSQL epoch, 2000-01-01 00:00:00 UTC.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// PostgreSQL's `infinity`.
    pub const INFINITY: Timestamp = Timestamp(i64::MAX);
    /// PostgreSQL's `-infinity`.
    pub const NEG_INFINITY: Timestamp = Timestamp(i64::MIN);

    /// Wraps microseconds since 2000-01-01 00:00:00 UTC.
    pub const fn new(micros_since_2000: i64) -> Self {
        Timestamp(micros_since_2000)
    }

    /// Microseconds since 2000-01-01 00:00:00 UTC.
    pub const fn micros_since_2000(self) -> i64 {
        self.0
    }

    /// Whether this is neither `infinity` nor `-infinity`.
    pub const fn is_finite(self) -> bool {
        self.0 != i64::MAX && self.0 != i64::MIN
    }

    /// Converts microseconds since the Unix epoch, or `None` if out of range.
    pub const fn from_unix_micros(micros: i64) -> Option<Self> {
        match micros.checked_sub(PG_EPOCH_UNIX_MICROS) {
            Some(v) => Some(Timestamp(v)),
            None => None,
        }
    }

    /// Microseconds since the Unix epoch, or `None` if out of range or infinite.
    pub const fn unix_micros(self) -> Option<i64> {
        if !self.is_finite() {
            return None;
        }
        self.0.checked_add(PG_EPOCH_UNIX_MICROS)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            i64::MAX => return f.write_str("infinity"),
            i64::MIN => return f.write_str("-infinity"),
            _ => {}
        }
        // Work in days since 2000-01-01 (a Saturday, but only the calendar matters here).
        let days = self.0.div_euclid(MICROS_PER_DAY);
        let in_day = self.0.rem_euclid(MICROS_PER_DAY);
        // 10957 days from 1970-01-01 to 2000-01-01.
        let (year, month, day) = civil_from_days(days + 10_957);
        let secs = in_day / 1_000_000;
        let micros = in_day % 1_000_000;
        if (0..=9999).contains(&year) {
            write!(f, "{year:04}")?;
        } else {
            write!(f, "{year:+05}")?;
        }
        write!(
            f,
            "-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days`; exact for every `i64` day count a timestamp can produce.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(feature = "std")]
impl TryFrom<Timestamp> for std::time::SystemTime {
    type Error = Timestamp;

    /// Converts to a `SystemTime`; fails (returning the timestamp) for infinities and values the
    /// platform cannot represent.
    fn try_from(t: Timestamp) -> Result<Self, Timestamp> {
        use std::time::{Duration, UNIX_EPOCH};
        let micros = t.unix_micros().ok_or(t)?;
        let d = Duration::from_micros(micros.unsigned_abs());
        if micros >= 0 {
            UNIX_EPOCH.checked_add(d).ok_or(t)
        } else {
            UNIX_EPOCH.checked_sub(d).ok_or(t)
        }
    }
}

#[cfg(feature = "std")]
impl From<std::time::SystemTime> for Timestamp {
    /// Converts to microseconds since 2000-01-01, saturating to the infinities out of range.
    fn from(t: std::time::SystemTime) -> Self {
        use std::time::UNIX_EPOCH;
        let micros = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
        };
        Timestamp::from_unix_micros(micros).unwrap_or(Timestamp::NEG_INFINITY)
    }
}

/// The error of parsing a [`Timestamp`] from text that is not RFC 3339 in UTC
/// (`2026-11-24T12:00:00.123456Z`), `infinity` or `-infinity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseTimestampError;

impl fmt::Display for ParseTimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "invalid timestamp: expected RFC 3339 in UTC (2026-11-24T12:00:00.123456Z), \
             infinity or -infinity",
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseTimestampError {}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    /// Parses what `Display` writes: `YYYY-MM-DDTHH:MM:SS` with up to six fractional digits
    /// (more are an error, not rounded), then `Z` or `+00:00`; or `infinity`/`-infinity`.
    fn from_str(s: &str) -> Result<Self, ParseTimestampError> {
        match s {
            "infinity" => return Ok(Timestamp::INFINITY),
            "-infinity" => return Ok(Timestamp::NEG_INFINITY),
            _ => {}
        }
        let s = s
            .strip_suffix('Z')
            .or_else(|| s.strip_suffix("+00:00"))
            .ok_or(ParseTimestampError)?;
        let (date, time) = s.split_once('T').ok_or(ParseTimestampError)?;
        // A year may carry a sign and more than four digits (`Display` writes `+10000`).
        let (neg, date) = match date.as_bytes().first() {
            Some(b'-') => (true, &date[1..]),
            Some(b'+') => (false, &date[1..]),
            _ => (false, date),
        };
        let mut d = date.splitn(3, '-');
        let year = digits(d.next(), 4, 6)? as i64;
        let year = if neg { -year } else { year };
        let month = digits(d.next(), 2, 2)?;
        let day = digits(d.next(), 2, 2)?;
        let (hms, frac) = match time.split_once('.') {
            Some((hms, frac)) => (hms, Some(frac)),
            None => (time, None),
        };
        let mut t = hms.splitn(3, ':');
        let (h, m, sec) = (
            digits(t.next(), 2, 2)?,
            digits(t.next(), 2, 2)?,
            digits(t.next(), 2, 2)?,
        );
        let micros = match frac {
            None => 0,
            Some(f) => digits(Some(f), 1, 6)? * 10u64.pow(6 - f.len() as u32),
        };
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(ParseTimestampError);
        }
        if h > 23 || m > 59 || sec > 59 {
            return Err(ParseTimestampError);
        }
        // 10957 days from 1970-01-01 to 2000-01-01.
        let days = days_from_civil(year, month as u32, day as u32) - 10_957;
        let in_day = ((h * 60 + m) * 60 + sec) * 1_000_000 + micros; // < 86_400_000_000
                                                                     // In i128: the day's start alone may lie below `i64::MIN` for the earliest times.
        let micros = i128::from(days) * i128::from(MICROS_PER_DAY) + i128::from(in_day);
        i64::try_from(micros)
            .ok()
            .filter(|v| *v != i64::MAX && *v != i64::MIN)
            .map(Timestamp)
            .ok_or(ParseTimestampError)
    }
}

/// `field` as an unsigned decimal of `min..=max` ASCII digits.
fn digits(field: Option<&str>, min: usize, max: usize) -> Result<u64, ParseTimestampError> {
    let f = field.ok_or(ParseTimestampError)?;
    if f.len() < min || f.len() > max || !f.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseTimestampError);
    }
    f.parse().map_err(|_| ParseTimestampError)
}

fn days_in_month(year: i64, month: u64) -> u64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Converts a proleptic Gregorian date to days since 1970-01-01: the inverse of
/// [`civil_from_days`] (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = i64::from(if month > 2 { month - 3 } else { month + 9 }); // [0, 11]
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Serde (feature `serde`): the JSON shape of the CLI's JSON lines. An [`Lsn`] is a string in
/// PostgreSQL's form (`"0/16B3748"`), a [`Timestamp`] a string in RFC 3339 with six fractional
/// digits (`"2026-11-24T12:00:00.123456Z"`, or `"infinity"`), an [`Xid`] and an [`Oid`] numbers.
#[cfg(feature = "serde")]
mod serde_impls {
    use super::{Lsn, Oid, Timestamp, Xid};
    use core::fmt;
    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;
    use serde::{Deserialize, Serialize};

    /// Serializes a `Display` value as a string without allocating.
    fn as_string<S: Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// Reads a string with `FromStr`, naming what was expected.
    struct Parsed<T>(&'static str, core::marker::PhantomData<T>);

    impl<T: core::str::FromStr> Visitor<'_> for Parsed<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse()
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    impl Serialize for Lsn {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            as_string(self, s)
        }
    }

    impl<'de> Deserialize<'de> for Lsn {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(Parsed(
                "an LSN such as \"0/16B3748\"",
                core::marker::PhantomData,
            ))
        }
    }

    impl Serialize for Timestamp {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            as_string(self, s)
        }
    }

    impl<'de> Deserialize<'de> for Timestamp {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(Parsed(
                "an RFC 3339 UTC timestamp such as \"2026-11-24T12:00:00.123456Z\"",
                core::marker::PhantomData,
            ))
        }
    }

    impl Serialize for Xid {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u32(self.0)
        }
    }

    impl<'de> Deserialize<'de> for Xid {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            u32::deserialize(d).map(Xid)
        }
    }

    impl Serialize for Oid {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u32(self.0)
        }
    }

    impl<'de> Deserialize<'de> for Oid {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            u32::deserialize(d).map(Oid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn lsn_text_form() {
        assert_eq!(Lsn::ZERO.to_string(), "0/0");
        assert_eq!(Lsn::new(0x16B3748).to_string(), "0/16B3748");
        assert_eq!(Lsn::MAX.to_string(), "FFFFFFFF/FFFFFFFF");
        assert_eq!("0/16b3748".parse(), Ok(Lsn::new(0x16B3748)));
        assert_eq!("FFFFFFFF/FFFFFFFF".parse(), Ok(Lsn::MAX));
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0",
            "1/2/3",
            "123456789/0",
            "0/g",
            "+1/0",
            " 0/0",
        ] {
            assert_eq!(bad.parse::<Lsn>(), Err(ParseLsnError), "{bad:?}");
        }
    }

    #[test]
    fn lsn_arithmetic_and_order() {
        assert!(Lsn::new(1) < Lsn::new(2));
        assert_eq!(Lsn::MAX.checked_add(1), None);
        assert_eq!(Lsn::ZERO.checked_sub(1), None);
        assert_eq!(Lsn::new(10).checked_distance(Lsn::new(4)), Some(6));
        assert_eq!(Lsn::new(4).checked_distance(Lsn::new(10)), None);
    }

    #[test]
    fn timestamp_rfc3339() {
        assert_eq!(Timestamp::EPOCH.to_string(), "2000-01-01T00:00:00.000000Z");
        assert_eq!(
            Timestamp::new(-1).to_string(),
            "1999-12-31T23:59:59.999999Z"
        );
        // 2000-02-29, a leap day in a year divisible by 400.
        assert_eq!(
            Timestamp::new(59 * MICROS_PER_DAY + 1).to_string(),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(Timestamp::INFINITY.to_string(), "infinity");
        assert_eq!(Timestamp::NEG_INFINITY.to_string(), "-infinity");
        let t = Timestamp::from_unix_micros(0).unwrap();
        assert_eq!(t.to_string(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(t.unix_micros(), Some(0));
        assert_eq!(Timestamp::INFINITY.unix_micros(), None);
    }

    #[test]
    fn civil_matches_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_416), (2025, 11, 24));
    }

    #[cfg(feature = "std")]
    #[test]
    fn system_time_round_trip() {
        let now = std::time::SystemTime::now();
        let t = Timestamp::from(now);
        let back = std::time::SystemTime::try_from(t).unwrap();
        let diff = now.duration_since(back).unwrap_or_default();
        assert!(diff.as_micros() < 1);
        assert!(std::time::SystemTime::try_from(Timestamp::INFINITY).is_err());
    }

    #[test]
    fn timestamp_parses_what_it_displays() {
        for t in [
            Timestamp::EPOCH,
            Timestamp::new(-1),
            Timestamp::new(59 * MICROS_PER_DAY + 1),
            Timestamp::new(i64::MAX - 1),
            Timestamp::new(i64::MIN + 1),
            Timestamp::INFINITY,
            Timestamp::NEG_INFINITY,
            Timestamp::from_unix_micros(1_795_521_600_123_456).unwrap(),
        ] {
            assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t), "{t}");
        }
        assert_eq!(
            "2000-01-01T00:00:01.5+00:00".parse(),
            Ok(Timestamp::new(1_500_000))
        );
        assert_eq!(
            "2000-01-01T00:00:01Z".parse(),
            Ok(Timestamp::new(1_000_000))
        );
        for bad in [
            "",
            "2000-01-01",
            "2000-01-01T00:00:00",
            "2000-02-30T00:00:00Z",
            "2001-02-29T00:00:00Z",
            "2000-01-01T24:00:00Z",
            "2000-01-01T00:00:00.1234567Z",
            "2000-01-01T00:00:00+01:00",
            "2000-1-01T00:00:00Z",
            "+2000-01-01T00:00:0xZ",
        ] {
            assert_eq!(
                bad.parse::<Timestamp>(),
                Err(ParseTimestampError),
                "{bad:?}"
            );
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_json_shape() {
        let lsn = Lsn::new(0x16B3748);
        assert_eq!(serde_json::to_string(&lsn).unwrap(), "\"0/16B3748\"");
        assert_eq!(serde_json::from_str::<Lsn>("\"0/16B3748\"").unwrap(), lsn);
        assert!(serde_json::from_str::<Lsn>("\"0/x\"").is_err());
        let t = Timestamp::from_unix_micros(1_795_521_600_123_456).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-24T12:00:00.123456Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert_eq!(serde_json::to_string(&Xid(7)).unwrap(), "7");
        assert_eq!(serde_json::from_str::<Xid>("7").unwrap(), Xid(7));
        assert_eq!(serde_json::from_str::<Oid>("16384").unwrap(), Oid(16384));
    }
}

//! Text forms, as the types' output functions print them (`DateStyle = ISO`,
//! `IntervalStyle = postgres`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use uuid::Uuid;
use walproto::Oid;

use super::oid::{self, Type};
use super::{Infinitable, Interval, Raw, Value};

/// Microseconds in a second, a minute, an hour.
const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;

/// Decodes the text form `s` of a value of type `type_oid`; the error says what was wrong.
pub(super) fn decode(type_oid: Oid, s: &str) -> Result<Value, String> {
    match oid::element_type(type_oid) {
        Some(element) => parse_array(s, |e| scalar(element, e)).map(Value::Array),
        None => scalar(type_oid, s),
    }
}

fn scalar(type_oid: Oid, s: &str) -> Result<Value, String> {
    Ok(match oid::catalog_type(type_oid) {
        Some(Type::BOOL) => Value::Bool(match s {
            "t" => true,
            "f" => false,
            _ => return Err(format!("expected `t` or `f`, got {s:?}")),
        }),
        Some(Type::INT2) => Value::Int2(parse_int(s)?),
        Some(Type::INT4) => Value::Int4(parse_int(s)?),
        Some(Type::INT8) => Value::Int8(parse_int(s)?),
        Some(Type::OID) => Value::Oid(parse_int(s)?),
        Some(Type::FLOAT4) => Value::Float4(parse_float(s, f32::NAN, f32::INFINITY)?),
        Some(Type::FLOAT8) => Value::Float8(parse_float(s, f64::NAN, f64::INFINITY)?),
        Some(Type::NUMERIC) => Value::Numeric(parse_numeric(s)?),
        Some(Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME) => Value::Text(s.to_owned()),
        Some(Type::BYTEA) => Value::Bytea(parse_bytea(s)?.into()),
        Some(Type::UUID) => Value::Uuid(Uuid::parse_str(s).map_err(|e| format!("{s:?}: {e}"))?),
        Some(Type::DATE) => Value::Date(parse_date(s)?),
        Some(Type::TIME) => Value::Time(parse_time(s)?),
        Some(Type::TIMESTAMP) => Value::Timestamp(parse_timestamp(s)?),
        Some(Type::TIMESTAMPTZ) => Value::TimestampTz(parse_timestamptz(s)?),
        Some(Type::INTERVAL) => Value::Interval(parse_interval(s)?),
        Some(Type::JSON | Type::JSONB) => {
            Value::Json(serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))?)
        }
        _ => Value::Unknown {
            type_oid,
            raw: Raw::Text(s.to_owned()),
        },
    })
}

fn parse_int<T: FromStr<Err = std::num::ParseIntError>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

/// `NaN`, `Infinity`, `-Infinity`, or a decimal number with an optional exponent
/// (`float8out`'s shortest exact form, such as `1e+100` or `-0`).
fn parse_float<F>(s: &str, nan: F, infinity: F) -> Result<F, String>
where
    F: FromStr + std::ops::Neg<Output = F>,
{
    match s {
        "NaN" => Ok(nan),
        "Infinity" => Ok(infinity),
        "-Infinity" => Ok(-infinity),
        // Rust also reads `inf` and `nan` in any case; the server prints neither.
        _ if !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            s.parse().map_err(|_| format!("not a number: {s:?}"))
        }
        _ => Err(format!("not a number: {s:?}")),
    }
}

/// `NaN`, `Infinity`, `-Infinity` or `-?digits[.digits]` (`numeric_out` uses no exponent).
fn parse_numeric(s: &str) -> Result<String, String> {
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return Ok(s.to_owned());
    }
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if digits(int) && frac.is_none_or(digits) {
        Ok(s.to_owned())
    } else {
        Err(format!("not a decimal number: {s:?}"))
    }
}

/// `\x` and hex digits (`bytea_output = hex`), or the escape format: `\\` for a backslash,
/// `\ooo` (three octal digits) for any byte, every other byte as itself.
pub(super) fn parse_bytea(s: &str) -> Result<Vec<u8>, String> {
    if let Some(hex) = s.strip_prefix("\\x") {
        // byteain allows whitespace between digit pairs; byteaout never writes it.
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        let pairs = digits.chunks_exact(2);
        if !pairs.remainder().is_empty() {
            return Err("odd number of hex digits".to_owned());
        }
        return pairs
            .map(|pair| match pair {
                [hi, lo] => Ok(hex_digit(*hi)? << 4 | hex_digit(*lo)?),
                _ => Err("odd number of hex digits".to_owned()),
            })
            .collect();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match (bytes.get(i + 1), bytes.get(i + 2), bytes.get(i + 3)) {
            (Some(b'\\'), _, _) => {
                out.push(b'\\');
                i += 2;
            }
            (Some(&a @ b'0'..=b'3'), Some(&b @ b'0'..=b'7'), Some(&c @ b'0'..=b'7')) => {
                out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                i += 4;
            }
            _ => return Err(format!("invalid escape at byte {i}")),
        }
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Result<u8, String> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(format!("invalid hex digit {:?}", char::from(b))),
    }
}

/// `YYYY-MM-DD`, with ` BC` after the whole value for years before 1.
fn parse_date(s: &str) -> Result<Infinitable<NaiveDate>, String> {
    infinite_or(s, |s| {
        let (s, bc) = strip_bc(s);
        ymd(s, bc)
    })
}

/// `HH:MM:SS[.ffffff]`.
fn parse_time(s: &str) -> Result<NaiveTime, String> {
    hms(s)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][ BC]`.
fn parse_timestamp(s: &str) -> Result<Infinitable<NaiveDateTime>, String> {
    infinite_or(s, |s| {
        let (s, bc) = strip_bc(s);
        let (date, time) = s
            .split_once(' ')
            .ok_or_else(|| format!("expected `date time`, got {s:?}"))?;
        Ok(ymd(date, bc)?.and_time(hms(time)?))
    })
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM[:SS]][ BC]`: the server's `TimeZone` decides the
/// offset; the value is converted to UTC.
fn parse_timestamptz(s: &str) -> Result<Infinitable<DateTime<chrono::Utc>>, String> {
    infinite_or(s, |s| {
        let (s, bc) = strip_bc(s);
        let (date, time) = s
            .split_once(' ')
            .ok_or_else(|| format!("expected `date time+offset`, got {s:?}"))?;
        let at = time
            .find(['+', '-'])
            .ok_or_else(|| format!("no UTC offset in {s:?}"))?;
        let (time, offset) = time.split_at(at);
        let local = ymd(date, bc)?.and_time(hms(time)?);
        let utc = local
            .checked_sub_signed(TimeDelta::seconds(parse_offset(offset)?))
            .ok_or_else(|| format!("{s:?} is out of range for chrono"))?;
        Ok(utc.and_utc())
    })
}

fn infinite_or<T>(
    s: &str,
    finite: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Infinitable<T>, String> {
    match s {
        "infinity" => Ok(Infinitable::Infinity),
        "-infinity" => Ok(Infinitable::NegInfinity),
        _ => finite(s).map(Infinitable::Finite),
    }
}

fn strip_bc(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(s) => (s, true),
        None => (s, false),
    }
}

/// Exactly `n` ASCII digits (or at least `n` when `at_least`), as a number.
fn digits(s: &str, n: usize, at_least: bool, what: &str) -> Result<u32, String> {
    let ok = (s.len() == n || (at_least && s.len() > n)) && s.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(format!("invalid {what} {s:?}"));
    }
    s.parse().map_err(|_| format!("invalid {what} {s:?}"))
}

fn ymd(s: &str, bc: bool) -> Result<NaiveDate, String> {
    let mut parts = s.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("expected YYYY-MM-DD, got {s:?}"));
    };
    let year = i32::try_from(digits(y, 4, true, "year")?)
        .map_err(|_| format!("year {y} is out of range"))?;
    // 1 BC is year 0 of the proleptic Gregorian calendar chrono uses.
    let year = if bc { 1 - year } else { year };
    let (month, day) = (digits(m, 2, false, "month")?, digits(d, 2, false, "day")?);
    NaiveDate::from_ymd_opt(year, month, day)
        .ok_or_else(|| format!("{s:?} is not a date chrono can represent"))
}

fn hms(s: &str) -> Result<NaiveTime, String> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    let mut parts = whole.splitn(3, ':');
    let (Some(h), Some(m), Some(sec)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("expected HH:MM:SS, got {s:?}"));
    };
    let (h, m, sec) = (
        digits(h, 2, false, "hour")?,
        digits(m, 2, false, "minute")?,
        digits(sec, 2, false, "second")?,
    );
    let micros = match frac {
        Some(f) => fraction_micros(f)?,
        None => 0,
    };
    if h == 24 && m == 0 && sec == 0 && micros == 0 {
        return Err("24:00:00 does not fit chrono::NaiveTime".to_owned());
    }
    // `from_hms_micro_opt` would read a second of 60 as a leap second; PostgreSQL has none.
    if sec > 59 {
        return Err(format!("invalid second in {s:?}"));
    }
    NaiveTime::from_hms_micro_opt(h, m, sec, micros).ok_or_else(|| format!("invalid time {s:?}"))
}

/// One to six digits after the decimal point, as microseconds.
fn fraction_micros(f: &str) -> Result<u32, String> {
    if f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid fraction of a second {f:?}"));
    }
    let n: u32 = f.parse().map_err(|_| format!("invalid fraction {f:?}"))?;
    let scale = 10u32.pow(6 - u32::try_from(f.len()).unwrap_or(6));
    Ok(n * scale)
}

/// `±HH`, `±HH:MM` or `±HH:MM:SS` (local mean time offsets have seconds), in seconds east.
fn parse_offset(s: &str) -> Result<i64, String> {
    let (sign, rest) = match s.split_at_checked(1) {
        Some(("+", rest)) => (1, rest),
        Some(("-", rest)) => (-1, rest),
        _ => return Err(format!("invalid UTC offset {s:?}")),
    };
    let mut secs = 0i64;
    let mut n = 0;
    for (part, scale) in rest.split(':').zip([3600, 60, 1]) {
        secs += i64::from(digits(part, 2, false, "UTC offset")?) * scale;
        n += 1;
    }
    if n != rest.split(':').count() {
        return Err(format!("invalid UTC offset {s:?}"));
    }
    Ok(sign * secs)
}

/// The `postgres` interval style: `[N year[s]] [N mon[s]] [N day[s]] [±HH:MM:SS[.f]]`, each
/// part signed on its own (`-1 days +02:03:00`), or PostgreSQL 17's `infinity`/`-infinity`.
pub(super) fn parse_interval(s: &str) -> Result<Interval, String> {
    match s {
        "infinity" => return Ok(Interval::INFINITY),
        "-infinity" => return Ok(Interval::NEG_INFINITY),
        _ => {}
    }
    let overflow = || format!("{s:?} is out of range");
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i64);
    let mut tokens = s.split(' ');
    while let Some(token) = tokens.next() {
        if token.contains(':') {
            micros = interval_time(token).ok_or_else(|| format!("invalid time in {s:?}"))?;
            continue;
        }
        let n: i64 = token
            .parse()
            .map_err(|_| format!("invalid interval {s:?}"))?;
        let (field, scale) = match tokens.next() {
            Some("year" | "years") => (&mut months, 12),
            Some("mon" | "mons") => (&mut months, 1),
            Some("day" | "days") => (&mut days, 1),
            _ => return Err(format!("invalid interval {s:?}")),
        };
        *field = n
            .checked_mul(scale)
            .and_then(|v| field.checked_add(v))
            .ok_or_else(overflow)?;
    }
    Ok(Interval {
        months: i32::try_from(months).map_err(|_| overflow())?,
        days: i32::try_from(days).map_err(|_| overflow())?,
        microseconds: micros,
    })
}

/// `[+-]H+:MM:SS[.f]` as signed microseconds.
fn interval_time(t: &str) -> Option<i64> {
    let (negative, t) = match t.split_at_checked(1)? {
        ("-", rest) => (true, rest),
        ("+", rest) => (false, rest),
        _ => (false, t),
    };
    let (whole, frac) = match t.split_once('.') {
        Some((w, f)) => (w, fraction_micros(f).ok()?),
        None => (t, 0),
    };
    let mut parts = whole.splitn(3, ':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if h.is_empty() || !h.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i64 = h.parse().ok()?;
    let m = i64::from(digits(m, 2, false, "minute").ok()?);
    let s = i64::from(digits(s, 2, false, "second").ok()?);
    let total = h
        .checked_mul(HOUR)?
        .checked_add(m * MINUTE + s * SECOND + i64::from(frac))?;
    Some(if negative { -total } else { total })
}

/// `interval_out` in the `postgres` style (`EncodeInterval`, `INTSTYLE_POSTGRES`).
pub(super) fn write_interval(f: &mut fmt::Formatter<'_>, i: &Interval) -> fmt::Result {
    if *i == Interval::INFINITY {
        return f.write_str("infinity");
    }
    if *i == Interval::NEG_INFINITY {
        return f.write_str("-infinity");
    }
    let mut is_zero = true;
    let mut is_before = false;
    let parts = [
        (i64::from(i.months / 12), "year"),
        (i64::from(i.months % 12), "mon"),
        (i64::from(i.days), "day"),
    ];
    for (value, unit) in parts {
        if value == 0 {
            continue;
        }
        let space = if is_zero { "" } else { " " };
        let plus = if is_before && value > 0 { "+" } else { "" };
        let plural = if value != 1 { "s" } else { "" };
        write!(f, "{space}{plus}{value} {unit}{plural}")?;
        is_before = value < 0;
        is_zero = false;
    }
    let us = i.microseconds;
    let (hour, rest) = (us / HOUR, us % HOUR);
    let (min, rest) = (rest / MINUTE, rest % MINUTE);
    let (sec, fsec) = (rest / SECOND, rest % SECOND);
    if is_zero || us != 0 {
        let space = if is_zero { "" } else { " " };
        let sign = if us < 0 {
            "-"
        } else if is_before {
            "+"
        } else {
            ""
        };
        write!(
            f,
            "{space}{sign}{:02}:{:02}:{:02}",
            hour.unsigned_abs(),
            min.unsigned_abs(),
            sec.unsigned_abs()
        )?;
        if fsec != 0 {
            let frac = format!("{:06}", fsec.unsigned_abs());
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
    }
    Ok(())
}

/// A one-dimensional array: `{a,b,...}`, with `[lower:upper]=` before it when the lower
/// bound is not 1. Elements are unquoted, or double-quoted with `\` escaping the next
/// character; an unquoted `NULL` (any case) is NULL.
fn parse_array(
    s: &str,
    mut element: impl FnMut(&str) -> Result<Value, String>,
) -> Result<Vec<Value>, String> {
    let body = match s.strip_prefix('[') {
        Some(rest) => {
            let (dims, body) = rest
                .split_once('=')
                .ok_or_else(|| format!("invalid array dimensions in {s:?}"))?;
            if dims.contains('[') {
                return Err("multi-dimensional arrays are not supported".to_owned());
            }
            body
        }
        None => s,
    };
    let inner = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| format!("expected {{...}}, got {s:?}"))?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        let mut buf = String::new();
        match chars.peek() {
            Some('"') => {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => buf.push(chars.next().ok_or("unterminated escape")?),
                        Some(c) => buf.push(c),
                        None => return Err("unterminated quoted element".to_owned()),
                    }
                }
                let i = out.len();
                out.push(element(&buf).map_err(|e| format!("element {i}: {e}"))?);
                while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
            }
            Some('{') => return Err("multi-dimensional arrays are not supported".to_owned()),
            _ => {
                let mut escaped = false;
                // Trailing whitespace is not part of an unquoted element, unless escaped.
                let mut keep = 0;
                while let Some(c) = chars.next_if(|&c| c != ',') {
                    if c == '\\' {
                        buf.push(chars.next().ok_or("unterminated escape")?);
                        escaped = true;
                        keep = buf.len();
                    } else {
                        buf.push(c);
                        if !c.is_ascii_whitespace() {
                            keep = buf.len();
                        }
                    }
                }
                buf.truncate(keep);
                let i = out.len();
                if buf.is_empty() {
                    return Err(format!("element {i} is empty"));
                }
                out.push(if !escaped && buf.eq_ignore_ascii_case("NULL") {
                    Value::Null
                } else {
                    element(&buf).map_err(|e| format!("element {i}: {e}"))?
                });
            }
        }
        match chars.next() {
            Some(',') => {}
            None => return Ok(out),
            Some(c) => return Err(format!("expected `,` after an element, got {c:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone, Utc};

    use super::*;

    fn v(type_oid: Oid, s: &str) -> Value {
        decode(type_oid, s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(type_oid: Oid, s: &str) -> String {
        decode(type_oid, s).unwrap_err()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn scalars() {
        assert_eq!(v(oid::of(&Type::BOOL), "t"), Value::Bool(true));
        assert_eq!(v(oid::of(&Type::BOOL), "f"), Value::Bool(false));
        assert!(err(oid::of(&Type::BOOL), "true").contains("expected `t` or `f`"));
        assert_eq!(v(oid::of(&Type::INT2), "-32768"), Value::Int2(i16::MIN));
        assert!(err(oid::of(&Type::INT2), "32768").contains("32768"));
        assert_eq!(v(oid::of(&Type::INT4), "2147483647"), Value::Int4(i32::MAX));
        assert_eq!(
            v(oid::of(&Type::INT8), "-9223372036854775808"),
            Value::Int8(i64::MIN)
        );
        assert_eq!(v(oid::of(&Type::OID), "4294967295"), Value::Oid(u32::MAX));
        assert_eq!(v(oid::of(&Type::TEXT), ""), Value::Text(String::new()));
        assert_eq!(
            v(oid::of(&Type::BPCHAR), "ab  "),
            Value::Text("ab  ".into())
        );
        assert_eq!(
            v(oid::of(&Type::UUID), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Value::Uuid(Uuid::from_u128(0xa0eebc99_9c0b_4ef8_bb6d_6bb9bd380a11))
        );
        assert_eq!(
            v(oid::of(&Type::JSONB), r#"{"a": [1, null, "x"]}"#),
            Value::Json(serde_json::json!({"a": [1, null, "x"]}))
        );
        assert!(err(oid::of(&Type::JSON), "{").starts_with("not JSON"));
        assert_eq!(
            v(Oid(600), "(1,2)"),
            Value::Unknown {
                type_oid: Oid(600),
                raw: Raw::Text("(1,2)".into())
            }
        );
    }

    #[test]
    fn floats() {
        assert!(matches!(v(oid::of(&Type::FLOAT8), "NaN"), Value::Float8(x) if x.is_nan()));
        assert_eq!(
            v(oid::of(&Type::FLOAT8), "Infinity"),
            Value::Float8(f64::INFINITY)
        );
        assert_eq!(
            v(oid::of(&Type::FLOAT8), "-Infinity"),
            Value::Float8(f64::NEG_INFINITY)
        );
        assert_eq!(v(oid::of(&Type::FLOAT8), "1e+100"), Value::Float8(1e100));
        assert_eq!(v(oid::of(&Type::FLOAT8), "1.5e-07"), Value::Float8(1.5e-7));
        assert!(
            matches!(v(oid::of(&Type::FLOAT8), "-0"), Value::Float8(x) if x == 0.0 && x.is_sign_negative())
        );
        assert_eq!(
            v(oid::of(&Type::FLOAT4), "3.4028235e+38"),
            Value::Float4(f32::MAX)
        );
        assert_eq!(v(oid::of(&Type::FLOAT4), "0.1"), Value::Float4(0.1));
        assert!(matches!(v(oid::of(&Type::FLOAT4), "NaN"), Value::Float4(x) if x.is_nan()));
        for bad in ["inf", "nan", "", "1,5", "infinity"] {
            assert!(
                err(oid::of(&Type::FLOAT8), bad).contains("not a number"),
                "{bad}"
            );
        }
    }

    #[test]
    fn numerics() {
        for s in [
            "0",
            "-12.3400",
            "NaN",
            "Infinity",
            "-Infinity",
            "123456789012345678901234567890.000000000000000000001",
        ] {
            assert_eq!(v(oid::of(&Type::NUMERIC), s), Value::Numeric(s.into()));
        }
        for bad in ["1e5", "", "-", "1.", ".5", "nan", "1.2.3"] {
            assert!(
                err(oid::of(&Type::NUMERIC), bad).contains("not a decimal"),
                "{bad}"
            );
        }
    }

    #[test]
    fn bytea_hex_and_escape() {
        let bytes = |s: &str| parse_bytea(s).unwrap();
        assert_eq!(bytes("\\x"), b"");
        assert_eq!(bytes("\\x005c41ff"), b"\0\\A\xff");
        assert_eq!(bytes("\\x00 5C"), b"\0\\");
        assert_eq!(bytes(""), b"");
        // The escape format: printable bytes as themselves, `\\`, and `\ooo`.
        assert_eq!(bytes("a\\000\\\\b\\377\\047"), b"a\0\\b\xff'");
        assert!(parse_bytea("\\x0").unwrap_err().contains("odd"));
        assert!(parse_bytea("\\xzz").unwrap_err().contains("hex digit"));
        assert!(parse_bytea("\\400")
            .unwrap_err()
            .contains("invalid escape at byte 0"));
        assert!(parse_bytea("ab\\")
            .unwrap_err()
            .contains("invalid escape at byte 2"));
        assert_eq!(
            v(oid::of(&Type::BYTEA), "\\x00"),
            Value::Bytea(bytes::Bytes::from_static(b"\0"))
        );
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(
            v(oid::of(&Type::DATE), "2024-02-29"),
            Value::Date(Infinitable::Finite(date(2024, 2, 29)))
        );
        assert_eq!(
            v(oid::of(&Type::DATE), "infinity"),
            Value::Date(Infinitable::Infinity)
        );
        assert_eq!(
            v(oid::of(&Type::DATE), "-infinity"),
            Value::Date(Infinitable::NegInfinity)
        );
        // 44 BC is astronomical year -43.
        assert_eq!(
            v(oid::of(&Type::DATE), "0044-03-15 BC"),
            Value::Date(Infinitable::Finite(date(-43, 3, 15)))
        );
        assert_eq!(
            v(oid::of(&Type::DATE), "10000-01-01"),
            Value::Date(Infinitable::Finite(date(10000, 1, 1)))
        );
        assert!(err(oid::of(&Type::DATE), "5874897-12-31").contains("chrono"));
        assert!(err(oid::of(&Type::DATE), "2023-02-29").contains("not a date"));
        assert!(err(oid::of(&Type::DATE), "24-01-01").contains("year"));

        let t = |h, m, s, us| NaiveTime::from_hms_micro_opt(h, m, s, us).unwrap();
        assert_eq!(
            v(oid::of(&Type::TIME), "00:00:00"),
            Value::Time(t(0, 0, 0, 0))
        );
        assert_eq!(
            v(oid::of(&Type::TIME), "23:59:59.999999"),
            Value::Time(t(23, 59, 59, 999_999))
        );
        assert_eq!(
            v(oid::of(&Type::TIME), "01:02:03.5"),
            Value::Time(t(1, 2, 3, 500_000))
        );
        assert!(err(oid::of(&Type::TIME), "24:00:00").contains("24:00:00"));
        assert!(err(oid::of(&Type::TIME), "23:59:60").contains("second"));
        assert!(err(oid::of(&Type::TIME), "01:02:03.1234567").contains("fraction"));

        assert_eq!(
            v(oid::of(&Type::TIMESTAMP), "2024-01-02 03:04:05.06"),
            Value::Timestamp(Infinitable::Finite(
                date(2024, 1, 2).and_time(t(3, 4, 5, 60_000))
            ))
        );
        assert_eq!(
            v(oid::of(&Type::TIMESTAMP), "0001-01-01 00:00:00 BC"),
            Value::Timestamp(Infinitable::Finite(date(0, 1, 1).and_time(t(0, 0, 0, 0))))
        );
        assert_eq!(
            v(oid::of(&Type::TIMESTAMP), "-infinity"),
            Value::Timestamp(Infinitable::NegInfinity)
        );
    }

    #[test]
    fn timestamptz_offsets_to_utc() {
        let utc = |s: &str| match v(oid::of(&Type::TIMESTAMPTZ), s) {
            Value::TimestampTz(Infinitable::Finite(t)) => t,
            other => panic!("{other:?}"),
        };
        let expected = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(utc("2024-01-02 03:04:05+00"), expected);
        assert_eq!(utc("2024-01-02 08:34:05+05:30"), expected);
        assert_eq!(utc("2024-01-01 23:04:05-04"), expected);
        // Local mean time offsets have seconds (Europe/Amsterdam before 1937, +00:19:32).
        assert_eq!(
            utc("1900-01-01 00:19:32+00:19:32"),
            Utc.with_ymd_and_hms(1900, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            utc("2024-01-02 03:04:05.123456+00").timestamp_subsec_micros(),
            123_456
        );
        assert_eq!(
            utc("0001-12-31 23:00:00-01 BC"),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            v(oid::of(&Type::TIMESTAMPTZ), "infinity"),
            Value::TimestampTz(Infinitable::Infinity)
        );
        assert!(err(oid::of(&Type::TIMESTAMPTZ), "2024-01-02 03:04:05").contains("offset"));
        assert!(err(oid::of(&Type::TIMESTAMPTZ), "2024-01-02 03:04:05+5").contains("offset"));
    }

    #[test]
    fn intervals_round_trip_the_postgres_style() {
        let cases = [
            ("00:00:00", 0, 0, 0),
            ("1 year 2 mons 3 days 04:05:06.789", 14, 3, 14_706_789_000),
            ("-1 days +02:03:00", 0, -1, 7_380_000_000),
            ("1 day", 0, 1, 0),
            (
                "-1 years -2 mons +3 days -04:05:06",
                -14,
                3,
                -14_706_000_000,
            ),
            ("-00:00:00.000001", 0, 0, -1),
            ("2562047788:00:54.775807", 0, 0, i64::MAX),
            ("178956970 years 7 mons", i32::MAX, 0, 0),
            ("1 mon -1 days", 1, -1, 0),
            ("infinity", i32::MAX, i32::MAX, i64::MAX),
            ("-infinity", i32::MIN, i32::MIN, i64::MIN),
        ];
        for (s, months, days, microseconds) in cases {
            let i = Interval {
                months,
                days,
                microseconds,
            };
            assert_eq!(parse_interval(s), Ok(i), "{s}");
            assert_eq!(i.to_string(), s);
        }
        assert!(parse_interval("1 fortnight").is_err());
        assert!(parse_interval("3000000000 days")
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn arrays() {
        assert_eq!(v(oid::of(&Type::INT4_ARRAY), "{}"), Value::Array(vec![]));
        assert_eq!(
            v(oid::of(&Type::INT4_ARRAY), "{1,NULL,-3}"),
            Value::Array(vec![Value::Int4(1), Value::Null, Value::Int4(-3)])
        );
        assert_eq!(
            v(oid::of(&Type::INT4_ARRAY), "[0:1]={7,8}"),
            Value::Array(vec![Value::Int4(7), Value::Int4(8)])
        );
        let text = |s: &str| Value::Text(s.into());
        assert_eq!(
            v(
                oid::of(&Type::TEXT_ARRAY),
                r#"{plain,"a,b","say \"hi\"","back\\slash","",NULL,"NULL",null,"  x ",{braced}}"#
                    .replace("{braced}", "\"{}\"")
                    .as_str()
            ),
            Value::Array(vec![
                text("plain"),
                text("a,b"),
                text("say \"hi\""),
                text("back\\slash"),
                text(""),
                Value::Null,
                text("NULL"),
                Value::Null,
                text("  x "),
                text("{}"),
            ])
        );
        // Unquoted elements lose surrounding whitespace but keep escaped characters.
        assert_eq!(
            v(oid::of(&Type::TEXT_ARRAY), r"{ a b , c\ }"),
            Value::Array(vec![text("a b"), text("c ")])
        );
        assert_eq!(
            v(oid::of(&Type::BYTEA_ARRAY), r#"{"\\x00","\\x5c"}"#),
            Value::Array(vec![
                Value::Bytea(bytes::Bytes::from_static(b"\0")),
                Value::Bytea(bytes::Bytes::from_static(b"\\")),
            ])
        );
        let Value::Array(floats) = v(oid::of(&Type::FLOAT8_ARRAY), "{NaN,Infinity,-Infinity,1.5}")
        else {
            panic!("not an array")
        };
        assert!(matches!(floats[0], Value::Float8(x) if x.is_nan()));
        assert_eq!(
            floats[1..],
            [
                Value::Float8(f64::INFINITY),
                Value::Float8(f64::NEG_INFINITY),
                Value::Float8(1.5)
            ]
        );
        assert!(err(oid::of(&Type::INT4_ARRAY), "{{1,2},{3,4}}").contains("multi-dimensional"));
        assert!(
            err(oid::of(&Type::INT4_ARRAY), "[1:2][1:1]={{1},{2}}").contains("multi-dimensional")
        );
        assert!(err(oid::of(&Type::INT4_ARRAY), "{1,x}").contains("element 1"));
        assert!(err(oid::of(&Type::INT4_ARRAY), "{1,}").contains("element 1 is empty"));
        assert!(err(oid::of(&Type::INT4_ARRAY), "1,2").contains("expected {...}"));
        assert!(err(oid::of(&Type::TEXT_ARRAY), r#"{"a}"#).contains("unterminated"));
    }
}

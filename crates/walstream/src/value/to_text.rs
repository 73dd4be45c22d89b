//! A decoded value back to the text its type's output function prints: what the server would
//! have sent in text format (with the settings every connection pins: `DateStyle = ISO`,
//! `IntervalStyle = postgres`, `bytea_output = hex`), for values that arrived in binary form.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};

use super::{Infinitable, Raw, Value};

impl Value {
    /// The value's text form as the server prints it, for a value decoded from the binary
    /// form: `float8out`'s shortest exact digits (`1e+100`, `0.1`), `numeric`'s exact text,
    /// `bytea` in hex (`\x00ff`), dates and times in ISO style with ` BC` for years before 1,
    /// a `timestamptz` in UTC (`2024-01-02 03:04:05.5+00`, what a server whose `TimeZone` is
    /// UTC prints), intervals in the `postgres` style, arrays as `{a,"b c",NULL}`.
    ///
    /// `None` for NULL, an unchanged TOAST value, and a type not decoded here that came in
    /// binary form (its text is unknown).
    pub fn to_text(&self) -> Option<String> {
        let mut out = String::new();
        write_text(&mut out, self)?;
        Some(out)
    }
}

/// Appends `v`'s text form; `None` (with `out` partly written) when it has none.
fn write_text(out: &mut String, v: &Value) -> Option<()> {
    // Writing to a `String` cannot fail.
    match v {
        Value::Null | Value::UnchangedToast => return None,
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Int2(i) => _ = write!(out, "{i}"),
        Value::Int4(i) => _ = write!(out, "{i}"),
        Value::Int8(i) => _ = write!(out, "{i}"),
        Value::Oid(o) => _ = write!(out, "{o}"),
        Value::Float4(x) => float(out, f64::from(*x), &format!("{x:e}"), 6),
        Value::Float8(x) => float(out, *x, &format!("{x:e}"), 15),
        Value::Numeric(s) | Value::Text(s) => out.push_str(s),
        Value::Unknown { raw, .. } => match raw {
            Raw::Text(s) => out.push_str(s),
            Raw::Binary(_) => return None,
        },
        Value::Bytea(b) => {
            out.push_str("\\x");
            for byte in b.iter() {
                _ = write!(out, "{byte:02x}");
            }
        }
        Value::Uuid(u) => _ = write!(out, "{}", u.hyphenated()),
        Value::Date(d) => infinitable(out, d, |out, d| {
            date(out, *d);
            bc(out, *d);
        }),
        Value::Time(t) => time(out, *t),
        Value::Timestamp(t) => infinitable(out, t, |out, t| {
            date(out, t.date());
            out.push(' ');
            time(out, t.time());
            bc(out, t.date());
        }),
        Value::TimestampTz(t) => infinitable(out, t, |out, t| {
            let t = t.naive_utc();
            date(out, t.date());
            out.push(' ');
            time(out, t.time());
            out.push_str("+00");
            bc(out, t.date());
        }),
        Value::Interval(i) => _ = write!(out, "{i}"),
        Value::Json(j) => out.push_str(&j.to_string()),
        Value::Array(values) => {
            out.push('{');
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if v.is_null() {
                    out.push_str("NULL");
                    continue;
                }
                let mut element = String::new();
                write_text(&mut element, v)?;
                array_element(out, &element);
            }
            out.push('}');
        }
    }
    Some(())
}

fn infinitable<T>(out: &mut String, v: &Infinitable<T>, finite: impl FnOnce(&mut String, &T)) {
    match v {
        Infinitable::NegInfinity => out.push_str("-infinity"),
        Infinitable::Finite(t) => finite(out, t),
        Infinitable::Infinity => out.push_str("infinity"),
    }
}

/// `YYYY-MM-DD`, the year counted from 1 BC backwards for years before 1 (chrono's year 0 is
/// 1 BC).
fn date(out: &mut String, d: NaiveDate) {
    let year = if d.year() <= 0 {
        1 - d.year()
    } else {
        d.year()
    };
    _ = write!(out, "{year:04}-{:02}-{:02}", d.month(), d.day());
}

fn bc(out: &mut String, d: NaiveDate) {
    if d.year() <= 0 {
        out.push_str(" BC");
    }
}

/// `HH:MM:SS` and the microseconds without trailing zeros.
fn time(out: &mut String, t: NaiveTime) {
    _ = write!(out, "{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    let micros = t.nanosecond() / 1000;
    if micros != 0 {
        let frac = format!("{micros:06}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
}

/// `float4out`/`float8out` with `extra_float_digits` above zero: the shortest digits that read
/// back exactly (`shortest`, Rust's `{:e}` of the value, has them), in fixed notation for
/// decimal exponents from -4 up to `fixed_below` (6 for `float4`, 15 for `float8`), else as
/// `d.ddde+XX` with at least two exponent digits.
fn float(out: &mut String, x: f64, shortest: &str, fixed_below: i32) {
    if x.is_nan() {
        return out.push_str("NaN");
    }
    if x.is_infinite() {
        return out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
    }
    let (mantissa, exp) = shortest.split_once('e').unwrap_or((shortest, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    out.push_str(sign);
    if (-4..fixed_below).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', exp.unsigned_abs() as usize - 1));
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            } else {
                let (int, frac) = digits.split_at(int_len);
                _ = write!(out, "{int}.{frac}");
            }
        }
    } else {
        out.push_str(mantissa);
        let exp_sign = if exp < 0 { '-' } else { '+' };
        _ = write!(out, "e{exp_sign}{:02}", exp.unsigned_abs());
    }
}

/// An array element as `array_out` writes it: double-quoted, with `"` and `\` escaped, when it
/// is empty, is `NULL` in any case, or holds a delimiter, brace, quote, backslash or space.
fn array_element(out: &mut String, element: &str) {
    let quote = element.is_empty()
        || element.eq_ignore_ascii_case("NULL")
        || element.chars().any(|c| {
            matches!(
                c,
                '{' | '}' | ',' | '"' | '\\' | ' ' | '\t' | '\n' | '\r' | '\x0B' | '\x0C'
            )
        });
    if !quote {
        return out.push_str(element);
    }
    out.push('"');
    for c in element.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use chrono::{DateTime, NaiveDateTime, Utc};

    use super::*;
    use crate::value::Interval;

    fn text(v: Value) -> String {
        v.to_text().unwrap()
    }

    #[test]
    fn floats_as_float8out_prints_them() {
        for (x, want) in [
            (0.1, "0.1"),
            (1.5, "1.5"),
            (-0.0, "-0"),
            (0.0, "0"),
            (1e100, "1e+100"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.2345678901234567e20, "1.2345678901234567e+20"),
            (-2.5e-300, "-2.5e-300"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(text(Value::Float8(x)), want, "{x}");
        }
        assert_eq!(text(Value::Float4(1.1)), "1.1");
        assert_eq!(text(Value::Float4(1e6)), "1e+06");
        assert_eq!(text(Value::Float4(123456.0)), "123456");
        assert_eq!(text(Value::Float4(f32::INFINITY)), "Infinity");
    }

    #[test]
    fn dates_times_and_the_rest() {
        let d = NaiveDate::from_ymd_opt(-43, 3, 15).unwrap();
        assert_eq!(text(Value::Date(Infinitable::Finite(d))), "0044-03-15 BC");
        assert_eq!(text(Value::Date(Infinitable::Infinity)), "infinity");
        let t = NaiveTime::from_hms_micro_opt(3, 4, 5, 60_000).unwrap();
        assert_eq!(text(Value::Time(t)), "03:04:05.06");
        let ts: NaiveDateTime = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap().and_time(t);
        assert_eq!(
            text(Value::Timestamp(Infinitable::Finite(ts))),
            "2024-01-02 03:04:05.06"
        );
        let tz: DateTime<Utc> = ts.and_utc();
        assert_eq!(
            text(Value::TimestampTz(Infinitable::Finite(tz))),
            "2024-01-02 03:04:05.06+00"
        );
        assert_eq!(
            text(Value::TimestampTz(Infinitable::NegInfinity)),
            "-infinity"
        );
        assert_eq!(
            text(Value::Bytea(Bytes::from_static(b"\x00\xff"))),
            "\\x00ff"
        );
        assert_eq!(text(Value::Bool(false)), "f");
        assert_eq!(
            text(Value::Interval(Interval {
                months: 14,
                days: 3,
                microseconds: 1_500_000
            })),
            "1 year 2 mons 3 days 00:00:01.5"
        );
        assert_eq!(
            text(Value::Array(vec![
                Value::Text("a".into()),
                Value::Null,
                Value::Text("b c".into()),
                Value::Text("".into()),
                Value::Text("null".into()),
                Value::Text("q\"\\".into()),
            ])),
            r#"{a,NULL,"b c","","null","q\"\\"}"#
        );
        assert_eq!(text(Value::Array(vec![])), "{}");
        assert_eq!(Value::Null.to_text(), None);
        assert_eq!(
            Value::Unknown {
                type_oid: walproto::Oid(16_400),
                raw: Raw::Binary(Bytes::new())
            }
            .to_text(),
            None
        );
    }
}

//! Column values rendered by their types: `--typed` (CLI.md, "JSON lines") and wal2json's
//! value rules (`--format wal2json`).
//!
//! Values are decoded by walstream's one decoder ([`Value::decode_text`],
//! [`Value::decode_binary`]) and a binary value's text is [`Value::to_text`]; nothing here
//! parses a type's text form itself. A value that does not decode (a date beyond chrono's
//! range, a multi-dimensional array) falls back to what the untyped output prints: the server's
//! text, or `{"binary": ...}` for a binary value.

use bytes::Bytes;
use serde::de::IgnoredAny;
use walproto::json::NotUtf8;
use walproto::pgoutput::Column;
use walproto::Oid;
use walstream::value::oid::{self, Type};
use walstream::value::Value;

use crate::json::{base64, string};

/// Appends `column`, of type `type_oid`, as `--typed` renders it. `Err(NotUtf8)` when a text value
/// is not valid UTF-8 (the caller names the column).
pub(crate) fn typed(out: &mut String, type_oid: Oid, column: Column<'_>) -> Result<(), NotUtf8> {
    match column {
        Column::Null => out.push_str("null"),
        Column::UnchangedToast => out.push_str("{\"unchanged_toast\":true}"),
        Column::Text(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| NotUtf8)?;
            if is_json(type_oid) {
                json_text(out, text);
            } else if let Some(elements) = text_elements(type_oid, text) {
                value(out, &elements);
            } else if !decoded_when_typed(type_oid) {
                string(out, text);
            } else {
                match Value::decode_text(type_oid, text) {
                    Ok(v) => value(out, &v),
                    Err(_) => string(out, text),
                }
            }
        }
        Column::Binary(bytes) => match binary_json_text(type_oid, bytes) {
            Some(text) => json_text(out, text),
            None => match Value::decode_binary(type_oid, &Bytes::copy_from_slice(bytes)) {
                Ok(v) => value(out, &v),
                Err(_) => binary(out, bytes),
            },
        },
    }
    Ok(())
}

/// Appends `column` as wal2json's `pg_decode_write_value` writes it: the numeric types as bare
/// numbers (`NaN` and the infinities as `null`), booleans as `true`/`false`, `bytea` as its
/// hex digits without `\x`, everything else as the server's text in a string. `Err(NotUtf8)` when
/// a text value is not valid UTF-8. Unchanged TOAST values are left out by the caller, as
/// wal2json leaves them out.
pub(crate) fn wal2json(out: &mut String, type_oid: Oid, column: Column<'_>) -> Result<(), NotUtf8> {
    let owned;
    let text = match column {
        Column::Null | Column::UnchangedToast => {
            out.push_str("null");
            return Ok(());
        }
        Column::Text(bytes) => std::str::from_utf8(bytes).map_err(|_| NotUtf8)?,
        Column::Binary(bytes) => {
            let text = match binary_json_text(type_oid, bytes) {
                Some(text) => Some(text.to_owned()),
                None => Value::decode_binary(type_oid, &Bytes::copy_from_slice(bytes))
                    .ok()
                    .and_then(|v| v.to_text()),
            };
            match text {
                Some(t) => {
                    owned = t;
                    &owned
                }
                None => {
                    binary(out, bytes);
                    return Ok(());
                }
            }
        }
    };
    match oid::catalog_type(type_oid) {
        Some(
            Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::NUMERIC,
        ) => {
            if matches!(text, "NaN" | "Infinity" | "-Infinity") {
                out.push_str("null");
            } else if json_number(text) {
                out.push_str(text);
            } else {
                string(out, text);
            }
        }
        Some(Type::BOOL) => out.push_str(if text == "t" { "true" } else { "false" }),
        Some(Type::BYTEA) => string(out, text.strip_prefix("\\x").unwrap_or(text)),
        _ => string(out, text),
    }
    Ok(())
}

/// The types whose `--typed` form differs from a string of their text: numbers, booleans and
/// arrays of decoded element types (json is handled before).
fn decoded_when_typed(type_oid: Oid) -> bool {
    matches!(
        oid::catalog_type(type_oid),
        Some(
            Type::BOOL
                | Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::OID
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::NUMERIC
        )
    ) || oid::element_type(type_oid).is_some()
}

/// An array in text form whose elements are printed as the server's text (every array but
/// those of numbers, booleans and json): its elements as strings, read as a `text[]` (the
/// array syntax is the same for every type whose delimiter is a comma), so that a
/// `timestamptz[]` keeps the server's offsets and an `inet[]` (a type not decoded here)
/// becomes an array too. `None` for other types, and for an array that does not parse
/// (multi-dimensional).
fn text_elements(type_oid: Oid, text: &str) -> Option<Value> {
    let element = oid::element_type(type_oid).or_else(|| oid::catalog_element(type_oid))?;
    // `box[]`: the one built-in array type whose elements are separated by `;`.
    if type_oid == oid::of(&Type::BOX_ARRAY) || decoded_when_typed(element) || is_json(element) {
        return None;
    }
    Value::decode_text(oid::of(&Type::TEXT_ARRAY), text).ok()
}

fn is_json(type_oid: Oid) -> bool {
    matches!(oid::catalog_type(type_oid), Some(Type::JSON | Type::JSONB))
}

/// The JSON text of a binary `json` (its text) or `jsonb` (a version byte 1, then its text).
fn binary_json_text(type_oid: Oid, bytes: &[u8]) -> Option<&str> {
    let text = match oid::catalog_type(type_oid) {
        Some(Type::JSON) => bytes,
        Some(Type::JSONB) => bytes.strip_prefix(&[1])?,
        _ => return None,
    };
    std::str::from_utf8(text).ok()
}

/// A decoded value as `--typed` JSON.
fn value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::UnchangedToast => out.push_str("{\"unchanged_toast\":true}"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int2(_) | Value::Int4(_) | Value::Int8(_) | Value::Oid(_) => {
            out.push_str(&v.to_text().unwrap_or_default());
        }
        Value::Float4(x) => float(out, f64::from(*x), || serde_json::to_string(x)),
        Value::Float8(x) => float(out, *x, || serde_json::to_string(x)),
        Value::Numeric(s) => {
            if f64_round_trips(s) {
                out.push_str(s);
            } else {
                string(out, s);
            }
        }
        Value::Json(j) => out.push_str(&j.to_string()),
        Value::Array(values) => {
            out.push('[');
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                value(out, v);
            }
            out.push(']');
        }
        v => match v.to_text() {
            Some(text) => string(out, &text),
            // Only a type not decoded here, in binary form, has no text.
            None => match v {
                Value::Unknown {
                    raw: walstream::value::Raw::Binary(b),
                    ..
                } => binary(out, b),
                _ => out.push_str("null"),
            },
        },
    }
}

/// A finite float as a JSON number (serde_json's shortest exact form), else its name as a
/// string.
fn float(out: &mut String, x: f64, json: impl FnOnce() -> serde_json::Result<String>) {
    match json() {
        Ok(n) if x.is_finite() => out.push_str(&n),
        _ => string(
            out,
            if x.is_nan() {
                "NaN"
            } else if x > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            },
        ),
    }
}

/// `{"binary": "<base64>"}`, the untyped output's form of a binary value.
fn binary(out: &mut String, bytes: &[u8]) {
    out.push_str("{\"binary\":");
    base64(out, bytes);
    out.push('}');
}

/// Whether the decimal `s` (`numeric`'s text) round-trips exactly through an `f64`: the
/// nearest `f64`, written back with the fewest digits that identify it, is the same decimal
/// (`12.3400`, `0.1`, `1000000` yes; 17 significant digits, `1e400`'s digits, `NaN` no). A
/// reader parsing the JSON number into an `f64` then holds what the server printed.
pub(crate) fn f64_round_trips(s: &str) -> bool {
    let Ok(x) = s.parse::<f64>() else {
        return false;
    };
    // Rust's `Display` of an `f64` writes those shortest digits, never with an exponent.
    x.is_finite()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
        && normalize(s) == normalize(&x.to_string())
}

/// A decimal without its sign's `+`, leading zeros of the integer part and trailing zeros of
/// the fraction; `-0` is `0`.
fn normalize(s: &str) -> String {
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if int.is_empty() && frac.is_empty() {
        return "0".to_owned();
    }
    format!("{}{int}.{frac}", if negative { "-" } else { "" })
}

/// Whether `s` is a JSON number (RFC 8259 section 6): `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`.
fn json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && b.get(int_start) == Some(&b'0')) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// A `json`/`jsonb` text as nested JSON on one line: checked with serde_json, then written with
/// the whitespace between tokens removed, so key order and duplicate keys stay as the server
/// sent them. Text that is not JSON (it cannot come from the server) is written as a string.
fn json_text(out: &mut String, text: &str) {
    if serde_json::from_str::<IgnoredAny>(text).is_err() {
        return string(out, text);
    }
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed_text(type_oid: Oid, text: &str) -> String {
        let mut out = String::new();
        typed(&mut out, type_oid, Column::Text(text.as_bytes())).unwrap();
        out
    }

    fn typed_binary(type_oid: Oid, bytes: &[u8]) -> String {
        let mut out = String::new();
        typed(&mut out, type_oid, Column::Binary(bytes)).unwrap();
        out
    }

    fn w2j(type_oid: Oid, text: &str) -> String {
        let mut out = String::new();
        wal2json(&mut out, type_oid, Column::Text(text.as_bytes())).unwrap();
        out
    }

    #[test]
    fn numeric_is_a_number_only_when_an_f64_holds_it_exactly() {
        for yes in [
            "0",
            "12.3400",
            "-0.5",
            "1000000",
            "9007199254740992",
            "0.1",
            "-0",
        ] {
            assert!(f64_round_trips(yes), "{yes}");
        }
        for no in [
            "9007199254740993",
            "0.123456789012345678",
            "NaN",
            "Infinity",
            "1.00000000000000000001",
            "1e400",
        ] {
            assert!(!f64_round_trips(no), "{no}");
        }
        assert_eq!(typed_text(oid::of(&Type::NUMERIC), "12.3400"), "12.3400");
        assert_eq!(typed_text(oid::of(&Type::NUMERIC), "0.1"), "0.1");
        assert_eq!(
            typed_text(oid::of(&Type::NUMERIC), "1.00000000000000000001"),
            "\"1.00000000000000000001\""
        );
        assert_eq!(typed_text(oid::of(&Type::NUMERIC), "NaN"), "\"NaN\"");
        assert_eq!(
            typed_text(oid::of(&Type::NUMERIC), "-Infinity"),
            "\"-Infinity\""
        );
    }

    #[test]
    fn typed_values() {
        assert_eq!(
            typed_text(oid::of(&Type::INT8), "-9223372036854775808"),
            "-9223372036854775808"
        );
        assert_eq!(typed_text(oid::of(&Type::BOOL), "t"), "true");
        assert_eq!(typed_text(oid::of(&Type::FLOAT8), "1e+100"), "1e+100");
        assert_eq!(typed_text(oid::of(&Type::FLOAT8), "0.1"), "0.1");
        assert_eq!(typed_text(oid::of(&Type::FLOAT4), "NaN"), "\"NaN\"");
        assert_eq!(
            typed_text(oid::of(&Type::FLOAT8), "-Infinity"),
            "\"-Infinity\""
        );
        assert_eq!(
            typed_text(oid::of(&Type::JSONB), "{\"b\": [1, \"x y\"], \"a\": {}}"),
            "{\"b\":[1,\"x y\"],\"a\":{}}"
        );
        assert_eq!(
            typed_text(oid::of(&Type::JSON), "{\"a\":1,\n \"a\": \"\\\" \"}"),
            "{\"a\":1,\"a\":\"\\\" \"}",
            "json keeps duplicate keys and escaped quotes"
        );
        assert_eq!(
            typed_text(oid::of(&Type::INT4_ARRAY), "{1,NULL,3}"),
            "[1,null,3]"
        );
        assert_eq!(
            typed_text(oid::of(&Type::TEXT_ARRAY), "{a,\"b c\",NULL}"),
            "[\"a\",\"b c\",null]"
        );
        assert_eq!(
            typed_text(oid::of(&Type::NUMERIC_ARRAY), "{1.5,0.123456789012345678}"),
            "[1.5,\"0.123456789012345678\"]"
        );
        assert_eq!(
            typed_text(oid::of(&Type::TIMESTAMPTZ), "2024-01-02 03:04:05+05:30"),
            "\"2024-01-02 03:04:05+05:30\"",
            "the server's text, unchanged"
        );
        assert_eq!(typed_text(Oid(16_400), "happy"), "\"happy\"");
        assert_eq!(
            typed_text(
                oid::of(&Type::TIMESTAMPTZ_ARRAY),
                "{\"2024-01-02 03:04:05+05:30\",NULL}"
            ),
            "[\"2024-01-02 03:04:05+05:30\",null]",
            "array elements keep the server's text"
        );
        assert_eq!(
            typed_text(Oid(1041), "{10.0.0.1/8,::1}"),
            "[\"10.0.0.1/8\",\"::1\"]",
            "inet[], an array of a type not decoded here"
        );
        assert_eq!(
            typed_text(oid::of(&Type::BYTEA_ARRAY), "{\"\\\\x01\"}"),
            "[\"\\\\x01\"]"
        );
        assert_eq!(typed_text(Oid(1020), "{(1,1),(0,0)}"), "\"{(1,1),(0,0)}\"");
        assert_eq!(
            typed_text(oid::of(&Type::INT4_ARRAY), "{{1,2},{3,4}}"),
            "\"{{1,2},{3,4}}\"",
            "a multi-dimensional array falls back to the text"
        );
        assert_eq!(typed_binary(oid::of(&Type::INT4), &7i32.to_be_bytes()), "7");
        assert_eq!(
            typed_binary(oid::of(&Type::JSONB), b"\x01{\"a\": 1}"),
            "{\"a\":1}"
        );
        assert_eq!(
            typed_binary(oid::of(&Type::BYTEA), b"\x00\xff"),
            "\"\\\\x00ff\""
        );
        assert_eq!(typed_binary(Oid(16_400), b"\x01"), "{\"binary\":\"AQ==\"}");
        let mut out = String::new();
        typed(&mut out, oid::of(&Type::TEXT), Column::UnchangedToast).unwrap();
        assert_eq!(out, "{\"unchanged_toast\":true}");
        assert!(typed(&mut out, oid::of(&Type::TEXT), Column::Text(b"\xff")).is_err());
    }

    #[test]
    fn wal2json_values() {
        assert_eq!(w2j(oid::of(&Type::INT4), "42"), "42");
        assert_eq!(w2j(oid::of(&Type::NUMERIC), "2.34"), "2.34");
        assert_eq!(w2j(oid::of(&Type::FLOAT8), "1e+100"), "1e+100");
        assert_eq!(w2j(oid::of(&Type::FLOAT8), "NaN"), "null");
        assert_eq!(w2j(oid::of(&Type::NUMERIC), "-Infinity"), "null");
        assert_eq!(w2j(oid::of(&Type::BOOL), "f"), "false");
        assert_eq!(w2j(oid::of(&Type::BYTEA), "\\x00ff"), "\"00ff\"");
        assert_eq!(
            w2j(oid::of(&Type::JSONB), "{\"a\": 1}"),
            "\"{\\\"a\\\": 1}\""
        );
        assert_eq!(w2j(oid::of(&Type::INT4_ARRAY), "{1,2}"), "\"{1,2}\"");
        let mut out = String::new();
        wal2json(
            &mut out,
            oid::of(&Type::INT2),
            Column::Binary(&5i16.to_be_bytes()),
        )
        .unwrap();
        assert_eq!(out, "5");
    }

    #[test]
    fn json_numbers() {
        for yes in ["0", "-1", "1.5", "1e+100", "2.5E-3", "-0"] {
            assert!(json_number(yes), "{yes}");
        }
        for no in ["", "-", "01", "1.", ".5", "1e", "+1", "NaN", "1e+"] {
            assert!(!json_number(no), "{no}");
        }
    }
}

//! Binary forms, the types' send functions: through `postgres-types`' `FromSql` where it
//! has one, by hand for `numeric` and `interval`.

use std::fmt::Write as _;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use fallible_iterator::FallibleIterator;
use postgres_types::{FromSql, Type};
use walproto::Oid;

use super::{oid, Infinitable, Interval, Raw, Value};

/// Microseconds in a day: `time` is below it (and `24:00:00` is it).
const DAY_MICROS: i64 = 86_400_000_000;

/// Decodes the binary form `raw` of a value of type `type_oid`; the error says what was
/// wrong.
pub(super) fn decode(type_oid: Oid, raw: &Bytes) -> Result<Value, String> {
    match oid::element_type(type_oid) {
        Some(element) => array(element, raw),
        None => scalar(type_oid, raw),
    }
}

fn from_sql<'a, T: FromSql<'a>>(ty: &Type, raw: &'a [u8]) -> Result<T, String> {
    T::from_sql(ty, raw).map_err(|e| e.to_string())
}

fn scalar(type_oid: Oid, raw: &Bytes) -> Result<Value, String> {
    Ok(match oid::catalog_type(type_oid) {
        Some(Type::BOOL) => Value::Bool(from_sql(&Type::BOOL, raw)?),
        Some(Type::INT2) => Value::Int2(from_sql(&Type::INT2, raw)?),
        Some(Type::INT4) => Value::Int4(from_sql(&Type::INT4, raw)?),
        Some(Type::INT8) => Value::Int8(from_sql(&Type::INT8, raw)?),
        Some(Type::OID) => Value::Oid(from_sql(&Type::OID, raw)?),
        Some(Type::FLOAT4) => Value::Float4(from_sql(&Type::FLOAT4, raw)?),
        Some(Type::FLOAT8) => Value::Float8(from_sql(&Type::FLOAT8, raw)?),
        Some(Type::NUMERIC) => Value::Numeric(numeric(raw)?),
        Some(Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME) => {
            Value::Text(from_sql(&Type::TEXT, raw)?)
        }
        // The send form of bytea is the bytes: share the frame rather than copy.
        Some(Type::BYTEA) => Value::Bytea(raw.clone()),
        Some(Type::UUID) => Value::Uuid(from_sql(&Type::UUID, raw)?),
        Some(Type::DATE) => Value::Date(
            match from_sql::<postgres_types::Date<NaiveDate>>(&Type::DATE, raw)? {
                postgres_types::Date::NegInfinity => Infinitable::NegInfinity,
                postgres_types::Date::Value(d) => Infinitable::Finite(d),
                postgres_types::Date::PosInfinity => Infinitable::Infinity,
            },
        ),
        Some(Type::TIME) => Value::Time(time(raw)?),
        Some(Type::TIMESTAMP) => {
            Value::Timestamp(timestamp::<NaiveDateTime>(&Type::TIMESTAMP, raw)?)
        }
        Some(Type::TIMESTAMPTZ) => {
            Value::TimestampTz(timestamp::<DateTime<Utc>>(&Type::TIMESTAMPTZ, raw)?)
        }
        Some(Type::INTERVAL) => Value::Interval(interval(raw)?),
        Some(Type::JSON) => Value::Json(from_sql(&Type::JSON, raw)?),
        Some(Type::JSONB) => Value::Json(from_sql(&Type::JSONB, raw)?),
        _ => Value::Unknown {
            type_oid,
            raw: Raw::Binary(raw.clone()),
        },
    })
}

fn timestamp<T: for<'a> FromSql<'a>>(ty: &Type, raw: &[u8]) -> Result<Infinitable<T>, String> {
    Ok(match from_sql::<postgres_types::Timestamp<T>>(ty, raw)? {
        postgres_types::Timestamp::NegInfinity => Infinitable::NegInfinity,
        postgres_types::Timestamp::Value(t) => Infinitable::Finite(t),
        postgres_types::Timestamp::PosInfinity => Infinitable::Infinity,
    })
}

/// `NaiveTime`'s `FromSql` wraps around midnight: check the range first.
fn time(raw: &[u8]) -> Result<NaiveTime, String> {
    let micros = postgres_protocol::types::time_from_sql(raw).map_err(|e| e.to_string())?;
    match micros {
        0..DAY_MICROS => from_sql(&Type::TIME, raw),
        DAY_MICROS => Err("24:00:00 does not fit chrono::NaiveTime".to_owned()),
        _ => Err(format!("{micros} microseconds is not a time of day")),
    }
}

/// `interval_send`: microseconds (i64), days (i32), months (i32).
fn interval(raw: &[u8]) -> Result<Interval, String> {
    let fields: [u8; 16] = raw
        .try_into()
        .map_err(|_| format!("expected 16 bytes, got {}", raw.len()))?;
    let (micros, rest) = fields.split_at(8);
    let (days, months) = rest.split_at(4);
    let be = |b: &[u8]| -> Result<[u8; 4], String> {
        b.try_into().map_err(|_| "short interval".to_owned())
    };
    Ok(Interval {
        microseconds: i64::from_be_bytes(micros.try_into().map_err(|_| "short interval")?),
        days: i32::from_be_bytes(be(days)?),
        months: i32::from_be_bytes(be(months)?),
    })
}

/// `numeric_send`'s signs.
const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// `numeric_send`: `ndigits`, `weight`, `sign`, `dscale` (16 bits each), then `ndigits`
/// base-10000 digits; written out as `numeric_out` would (`get_str_from_var`): the integer
/// part without leading zeros and exactly `dscale` fractional digits.
pub(super) fn numeric(raw: &[u8]) -> Result<String, String> {
    let (header, body) = raw
        .split_at_checked(8)
        .ok_or_else(|| format!("expected an 8-byte header, got {} bytes", raw.len()))?;
    let mut fields = header.chunks_exact(2).map(|c| {
        u16::from_be_bytes([
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
        ])
    });
    let mut next = || fields.next().unwrap_or(0);
    let (ndigits, weight, sign, dscale) = (next(), next() as i16, next(), next());
    match sign {
        NUMERIC_NAN => return Ok("NaN".to_owned()),
        NUMERIC_PINF => return Ok("Infinity".to_owned()),
        NUMERIC_NINF => return Ok("-Infinity".to_owned()),
        NUMERIC_POS | NUMERIC_NEG => {}
        other => return Err(format!("invalid sign {other:#06x}")),
    }
    if body.len() != usize::from(ndigits) * 2 {
        return Err(format!(
            "{ndigits} digits need {} bytes, got {}",
            usize::from(ndigits) * 2,
            body.len()
        ));
    }
    let digits = body
        .chunks_exact(2)
        .map(|c| {
            let d = i16::from_be_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ]);
            if (0..10_000).contains(&d) {
                Ok(d)
            } else {
                Err(format!("invalid base-10000 digit {d}"))
            }
        })
        .collect::<Result<Vec<i16>, String>>()?;
    let digit = |d: i32| -> i16 {
        usize::try_from(d)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == NUMERIC_NEG {
        out.push('-');
    }
    let weight = i32::from(weight);
    if weight < 0 {
        out.push('0');
    } else {
        for d in 0..=weight {
            // The first group without leading zeros, the others with all four digits.
            let _ = if d == 0 {
                write!(out, "{}", digit(d))
            } else {
                write!(out, "{:04}", digit(d))
            };
        }
    }
    if dscale > 0 {
        out.push('.');
        let start = out.len();
        let mut d = weight + 1;
        while out.len() - start < usize::from(dscale) {
            let _ = write!(out, "{:04}", digit(d));
            d += 1;
        }
        out.truncate(start + usize::from(dscale));
    }
    Ok(out)
}

/// `array_send`: a one-dimensional array (or an empty one) of `element`, each element through
/// [`scalar`].
fn array(element: Oid, raw: &Bytes) -> Result<Value, String> {
    let array = postgres_protocol::types::array_from_sql(raw).map_err(|e| e.to_string())?;
    if array.element_type() != element.0 {
        return Err(format!(
            "the elements are of type {}, not {}",
            array.element_type(),
            oid::DisplayType(element)
        ));
    }
    let dims: Vec<_> = array.dimensions().collect().map_err(|e| e.to_string())?;
    if dims.len() > 1 {
        return Err("multi-dimensional arrays are not supported".to_owned());
    }
    let mut values = array.values();
    let mut out = Vec::new();
    while let Some(v) = values.next().map_err(|e| e.to_string())? {
        let i = out.len();
        out.push(match v {
            None => Value::Null,
            Some(b) => {
                let b =
                    walproto::owned::subslice(raw, b).unwrap_or_else(|| Bytes::copy_from_slice(b));
                scalar(element, &b).map_err(|e| format!("element {i}: {e}"))?
            }
        });
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `numeric_send` output for `value`, from `ndigits`, `weight`, `sign`, `dscale`, digits.
    fn send(weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as u16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_text_matches_numeric_out() {
        let cases: &[(&[u8], &str)] = &[
            (&send(0, NUMERIC_POS, 0, &[]), "0"),
            (&send(0, NUMERIC_POS, 2, &[]), "0.00"),
            (&send(0, NUMERIC_POS, 0, &[1]), "1"),
            (&send(0, NUMERIC_NEG, 4, &[12, 3400]), "-12.3400"),
            (&send(1, NUMERIC_POS, 0, &[1, 0]), "10000"),
            (&send(1, NUMERIC_POS, 0, &[1]), "10000"),
            (&send(-1, NUMERIC_POS, 5, &[1234, 5000]), "0.12345"),
            (&send(-2, NUMERIC_POS, 8, &[1]), "0.00000001"),
            (&send(0, NUMERIC_POS, 1, &[0, 5000]), "0.5"),
            (&send(2, NUMERIC_POS, 0, &[12, 3456, 7890]), "1234567890"),
            (&send(0, NUMERIC_NAN, 0, &[]), "NaN"),
            (&send(0, NUMERIC_PINF, 0, &[]), "Infinity"),
            (&send(0, NUMERIC_NINF, 0, &[]), "-Infinity"),
        ];
        for (raw, text) in cases {
            assert_eq!(numeric(raw).as_deref(), Ok(*text));
        }
        assert!(numeric(&[0; 7]).unwrap_err().contains("header"));
        assert!(numeric(&send(0, 0x1234, 0, &[]))
            .unwrap_err()
            .contains("sign"));
        assert!(numeric(&send(0, NUMERIC_POS, 0, &[10_000]))
            .unwrap_err()
            .contains("digit"));
        let mut short = send(0, NUMERIC_POS, 0, &[1]);
        short.pop();
        assert!(numeric(&short).unwrap_err().contains("need 2 bytes"));
    }

    #[test]
    fn scalars_through_from_sql() {
        let b = |v: &[u8]| Bytes::copy_from_slice(v);
        assert_eq!(
            decode(oid::of(&Type::INT4), &b(&[0, 0, 1, 0])),
            Ok(Value::Int4(256))
        );
        assert!(decode(oid::of(&Type::INT4), &b(&[0, 0, 1])).is_err());
        assert_eq!(
            decode(oid::of(&Type::TIMESTAMPTZ), &b(&i64::MAX.to_be_bytes())),
            Ok(Value::TimestampTz(Infinitable::Infinity))
        );
        assert_eq!(
            decode(oid::of(&Type::DATE), &b(&i32::MIN.to_be_bytes())),
            Ok(Value::Date(Infinitable::NegInfinity))
        );
        assert!(decode(oid::of(&Type::TIME), &b(&DAY_MICROS.to_be_bytes()))
            .unwrap_err()
            .contains("24:00:00"));
        assert_eq!(
            decode(oid::of(&Type::JSONB), &b(b"\x01{\"a\":1}")),
            Ok(Value::Json(serde_json::json!({"a": 1})))
        );
        let mut iv = Vec::new();
        iv.extend((-1i64).to_be_bytes());
        iv.extend(2i32.to_be_bytes());
        iv.extend((-3i32).to_be_bytes());
        assert_eq!(
            decode(oid::of(&Type::INTERVAL), &b(&iv)),
            Ok(Value::Interval(Interval {
                months: -3,
                days: 2,
                microseconds: -1
            }))
        );
    }

    #[test]
    fn arrays() {
        // int4[] {1,NULL}: 1 dimension, has nulls, element type 23, length 2, lower bound 1.
        let mut raw = Vec::new();
        for x in [1i32, 1, 23, 2, 1, 4, 1, -1] {
            raw.extend(x.to_be_bytes());
        }
        let raw = Bytes::from(raw);
        assert_eq!(
            decode(oid::of(&Type::INT4_ARRAY), &raw),
            Ok(Value::Array(vec![Value::Int4(1), Value::Null]))
        );
        assert!(decode(oid::of(&Type::INT8_ARRAY), &raw)
            .unwrap_err()
            .contains("not int8"));
        let empty: Vec<u8> = [0i32, 0, 23].iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(
            decode(oid::of(&Type::INT4_ARRAY), &Bytes::from(empty)),
            Ok(Value::Array(vec![]))
        );
    }
}

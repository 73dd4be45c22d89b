//! Typed column values: text and binary forms of the common PostgreSQL types, and rows
//! deserialized into user structs.
//!
//! A [`ColumnValue`] is what the server sent: NULL, an unchanged TOASTed value it did not
//! send, or the text or binary form of the value. [`Value::decode`] turns it into a typed
//! [`Value`] given the column's type OID ([`ColumnInfo::type_oid`](crate::ColumnInfo)),
//! keeping NULL and unchanged TOAST apart. [`Row::try_get`] reads one column as a Rust type
//! (`row.try_get::<i64>("id")`, `Option<T>` for NULL), with a [`GetError`] naming the column
//! and both types; [`from_row`] deserializes a whole [`Row`] into a struct by column name with
//! serde. [`Value::to_text`] gives a binary value's text as the server would print it.
//!
//! ```
//! use walstream::value::oid::{self, Type};
//! use walstream::value::Value;
//! use walstream::ColumnValue;
//!
//! let text = ColumnValue::Text("{1,NULL,3}".into());
//! let v = Value::decode(oid::of(&Type::INT4_ARRAY), &text).unwrap();
//! assert_eq!(v, Value::Array(vec![Value::Int4(1), Value::Null, Value::Int4(3)]));
//! assert_eq!(Value::decode(oid::of(&Type::TEXT), &ColumnValue::UnchangedToast).unwrap(),
//!            Value::UnchangedToast);
//! ```
//!
//! # Formats
//!
//! The text forms are those the server prints with the output settings every connection pins
//! at startup, whatever the role or database sets (`walconn::Connection::connect`):
//! `DateStyle = ISO`, `IntervalStyle = postgres`, `extra_float_digits` above zero (floats
//! exact); and `bytea_output` either `hex` or `escape`, and any `TimeZone` (a `timestamptz`
//! carries its offset and is converted to UTC). The
//! binary forms are the types' send functions (`binary(true)` in the stream config); they go
//! through `postgres-types`' `FromSql`, except `numeric` and `interval`, which it does not
//! cover: their binary formats are decoded here, and `numeric` is kept as the exact decimal
//! text the server would print for it.
//!
//! Dates and times are `chrono` types. PostgreSQL's ranges are wider than chrono's in two
//! places, and a value there is an error rather than a wrong value: years beyond chrono's
//! ±262143 (PostgreSQL dates go to 5874897) and `time` `24:00:00`.

mod binary;
mod de;
mod get;
pub mod oid;
mod text;
mod to_text;

use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use uuid::Uuid;
use walproto::Oid;

use crate::{ColumnInfo, ColumnValue, Row};

pub use de::{from_row, MaybeUnchanged, RowError};
pub use get::{
    ColumnError, ColumnIndex, ColumnRef, FromColumn, FromValue, GetError, GetErrorKind, Mismatch,
};

/// A decoded column value.
///
/// `PartialEq` compares floats as floats: `NaN` is not equal to itself.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An unchanged TOASTed value that the server did not send (in an update's new row): the
    /// column keeps its old value. Not NULL.
    UnchangedToast,
    /// `bool`.
    Bool(bool),
    /// `int2` (`smallint`).
    Int2(i16),
    /// `int4` (`integer`).
    Int4(i32),
    /// `int8` (`bigint`).
    Int8(i64),
    /// `float4` (`real`), with `NaN` and the infinities.
    Float4(f32),
    /// `float8` (`double precision`), with `NaN` and the infinities.
    Float8(f64),
    /// `numeric`: exact, as its canonical decimal text (`-12.3400`, `NaN`, `Infinity`,
    /// `-Infinity`), the same from the text and the binary form.
    Numeric(String),
    /// `text`, `varchar`, `bpchar` (with its padding) and `name`.
    Text(String),
    /// `bytea`.
    Bytea(Bytes),
    /// `uuid`.
    Uuid(Uuid),
    /// `date`.
    Date(Infinitable<NaiveDate>),
    /// `time` (without time zone).
    Time(NaiveTime),
    /// `timestamp` (without time zone).
    Timestamp(Infinitable<NaiveDateTime>),
    /// `timestamptz`, in UTC.
    TimestampTz(Infinitable<DateTime<Utc>>),
    /// `interval`.
    Interval(Interval),
    /// `json` and `jsonb`. (`json` keeps the text as written; parsed here, duplicate keys
    /// keep the last value and key order is not kept.)
    Json(serde_json::Value),
    /// `oid`.
    Oid(u32),
    /// A one-dimensional array of one of these types; its elements may be [`Value::Null`].
    Array(Vec<Value>),
    /// A type this module does not decode, as sent.
    Unknown {
        /// The column's type.
        type_oid: Oid,
        /// The value as sent.
        raw: Raw,
    },
}

/// A value of a type [`Value::decode`] does not know, as the server sent it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Raw {
    /// The text form.
    Text(String),
    /// The binary form (the type's send function).
    Binary(Bytes),
}

/// A date or timestamp, or PostgreSQL's `infinity` or `-infinity`.
///
/// Ordered as PostgreSQL orders them: `-infinity` before every value, `infinity` after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Infinitable<T> {
    /// `-infinity`.
    NegInfinity,
    /// A finite value.
    Finite(T),
    /// `infinity`.
    Infinity,
}

impl<T> Infinitable<T> {
    /// The finite value, `None` for the infinities.
    pub fn finite(self) -> Option<T> {
        match self {
            Infinitable::Finite(t) => Some(t),
            _ => None,
        }
    }
}

impl<T: fmt::Display> fmt::Display for Infinitable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Infinitable::NegInfinity => f.write_str("-infinity"),
            Infinitable::Finite(t) => t.fmt(f),
            Infinitable::Infinity => f.write_str("infinity"),
        }
    }
}

/// A PostgreSQL `interval`: months, days and microseconds, kept apart as PostgreSQL keeps
/// them (a month is not a fixed number of days, nor a day of hours across DST changes).
///
/// PostgreSQL 17's `infinity` and `-infinity` are every field at its maximum or minimum, as
/// on the wire. `Display` writes the `IntervalStyle = postgres` form, as the server does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Interval {
    /// Months (a year is 12).
    pub months: i32,
    /// Days.
    pub days: i32,
    /// Microseconds.
    pub microseconds: i64,
}

impl Interval {
    /// `infinity` (PostgreSQL 17+).
    pub const INFINITY: Interval = Interval {
        months: i32::MAX,
        days: i32::MAX,
        microseconds: i64::MAX,
    };
    /// `-infinity` (PostgreSQL 17+).
    pub const NEG_INFINITY: Interval = Interval {
        months: i32::MIN,
        days: i32::MIN,
        microseconds: i64::MIN,
    };
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        text::write_interval(f, self)
    }
}

/// Whether a value came in text or binary form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The type's output function.
    Text,
    /// The type's send function.
    Binary,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Text => "text",
            Format::Binary => "binary",
        })
    }
}

/// A value that is not a valid form of its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueError {
    type_oid: Oid,
    format: Format,
    message: String,
}

impl ValueError {
    fn new(type_oid: Oid, format: Format, message: impl Into<String>) -> Self {
        Self {
            type_oid,
            format,
            message: message.into(),
        }
    }

    /// The type the value was decoded as.
    pub fn type_oid(&self) -> Oid {
        self.type_oid
    }

    /// The form it came in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// What was wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} value ({} format): {}",
            oid::DisplayType(self.type_oid),
            self.format,
            self.message
        )
    }
}

impl std::error::Error for ValueError {}

impl Value {
    /// Decodes `value`, a column of type `type_oid`.
    ///
    /// NULL and unchanged TOAST become [`Value::Null`] and [`Value::UnchangedToast`]; a type
    /// not listed in [`oid`] becomes [`Value::Unknown`] (its text still checked to be UTF-8).
    pub fn decode(type_oid: Oid, value: &ColumnValue) -> Result<Value, ValueError> {
        match value {
            ColumnValue::Null => Ok(Value::Null),
            ColumnValue::UnchangedToast => Ok(Value::UnchangedToast),
            ColumnValue::Text(b) => {
                let s = std::str::from_utf8(b).map_err(|e| {
                    ValueError::new(type_oid, Format::Text, format!("not UTF-8: {e}"))
                })?;
                Value::decode_text(type_oid, s)
            }
            ColumnValue::Binary(b) => Value::decode_binary(type_oid, b),
        }
    }

    /// Decodes the text form `text` of a value of type `type_oid` (as `psql` prints it).
    pub fn decode_text(type_oid: Oid, text: &str) -> Result<Value, ValueError> {
        text::decode(type_oid, text).map_err(|m| ValueError::new(type_oid, Format::Text, m))
    }

    /// Decodes the binary form `data` of a value of type `type_oid`.
    pub fn decode_binary(type_oid: Oid, data: &Bytes) -> Result<Value, ValueError> {
        binary::decode(type_oid, data).map_err(|m| ValueError::new(type_oid, Format::Binary, m))
    }

    /// Whether this is SQL NULL (not unchanged TOAST).
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// Typed access to a [`Row`]'s columns.
///
/// (An extension trait because [`Row`] lives in another module; these could be inherent
/// methods.)
pub trait RowValues {
    /// The decoded value of the column named `name`; `None` if there is no such column.
    fn decoded(&self, name: &str) -> Option<Result<Value, ValueError>>;

    /// Every column with its decoded value, in order.
    fn decoded_columns(
        &self,
    ) -> impl Iterator<Item = (&ColumnInfo, Result<Value, ValueError>)> + '_;
}

impl RowValues for Row {
    fn decoded(&self, name: &str) -> Option<Result<Value, ValueError>> {
        let (_, column) = self.relation().column(name)?;
        let value = self.get(name)?;
        Some(Value::decode(column.type_oid, &value))
    }

    fn decoded_columns(
        &self,
    ) -> impl Iterator<Item = (&ColumnInfo, Result<Value, ValueError>)> + '_ {
        self.iter().map(|(c, v)| (c, Value::decode(c.type_oid, &v)))
    }
}

//! Typed getters: `row.try_get::<T>("column")`, as tokio-postgres' `Row::try_get`.
//!
//! A column is decoded with [`Value::decode`] (the one decoder of text and binary forms) and
//! the [`Value`] converted into `T` by [`FromValue`]; `&str` and `&[u8]` borrow from the
//! received frame instead ([`FromColumn`]). A NULL is `None` for an `Option<T>` and an error
//! for anything else; an unchanged TOAST value is always an error (it is not NULL: the server
//! did not send the value), unless `T` is [`Value`] itself.

use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use uuid::Uuid;
use walproto::pgoutput::Column;
use walproto::Oid;

use super::oid::{self, Type};
use super::{Infinitable, Interval, Raw, Value, ValueError};
use crate::{ColumnValue, Row};

/// A column of a [`Row`]: by name (`&str`) or by position (`usize`).
pub trait ColumnIndex: fmt::Display + sealed::Sealed {
    /// The column's position in `row`, if it has the column.
    fn index(&self, row: &Row) -> Option<usize>;
}

impl ColumnIndex for str {
    fn index(&self, row: &Row) -> Option<usize> {
        row.relation().column(self).map(|(i, _)| i)
    }
}

impl ColumnIndex for usize {
    fn index(&self, row: &Row) -> Option<usize> {
        (*self < row.relation().columns.len()).then_some(*self)
    }
}

impl<T: ColumnIndex + ?Sized> ColumnIndex for &T {
    fn index(&self, row: &Row) -> Option<usize> {
        (**self).index(row)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for str {}
    impl Sealed for usize {}
    impl<T: Sealed + ?Sized> Sealed for &T {}
}

/// Why [`Row::try_get`] could not give a value of the requested type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GetErrorKind {
    /// The row has no such column.
    UnknownColumn,
    /// The value is NULL and the requested type is not an `Option`.
    Null,
    /// The value is an unchanged TOASTed value the server did not send (an update's new row):
    /// it is not NULL, and its value is unknown here (see
    /// [`Update::completed_new`](crate::Update::completed_new)).
    UnchangedToast,
    /// The column's type does not convert into the requested Rust type.
    WrongType,
    /// The value is not a valid form of its type.
    Invalid(ValueError),
}

/// The error of [`Row::try_get`]: names the column, its type and the requested Rust type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetError {
    column: String,
    type_oid: Option<Oid>,
    rust_type: &'static str,
    kind: GetErrorKind,
}

impl GetError {
    /// What went wrong.
    pub fn kind(&self) -> &GetErrorKind {
        &self.kind
    }

    /// The column asked for: its name, or its position when asked by position and the row
    /// has no such column.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// The column's type (`None` when there is no such column).
    pub fn type_oid(&self) -> Option<Oid> {
        self.type_oid
    }

    /// The requested Rust type, as `std::any::type_name` names it.
    pub fn rust_type(&self) -> &'static str {
        self.rust_type
    }
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {:?}", self.column)?;
        if let Some(t) = self.type_oid {
            write!(f, " ({})", oid::DisplayType(t))?;
        }
        match &self.kind {
            GetErrorKind::UnknownColumn => f.write_str(": no such column"),
            GetErrorKind::Null => write!(f, ": NULL into {} (use Option)", self.rust_type),
            GetErrorKind::UnchangedToast => write!(
                f,
                ": an unchanged TOAST value (not sent by the server; not NULL) into {}",
                self.rust_type
            ),
            GetErrorKind::WrongType => write!(f, ": cannot be read as {}", self.rust_type),
            GetErrorKind::Invalid(e) => write!(f, ": {e}"),
        }
    }
}

/// The invalid value's [`ValueError`] is part of the message and not also a `source`, so that
/// error reporters (anyhow, eyre) print it once; [`GetError::kind`] holds it.
impl std::error::Error for GetError {}

/// Why a [`Value`] does not convert into a Rust type (the column and type are added by
/// [`Row::try_get`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mismatch {
    /// A NULL into a type that is not an `Option`.
    Null,
    /// An unchanged TOAST value.
    UnchangedToast,
    /// A value of another type (or an infinite date or timestamp into a finite type).
    WrongType,
}

impl Mismatch {
    /// The mismatch for `value`: NULL, unchanged TOAST, or else the wrong type.
    pub fn of(value: &Value) -> Mismatch {
        match value {
            Value::Null => Mismatch::Null,
            Value::UnchangedToast => Mismatch::UnchangedToast,
            _ => Mismatch::WrongType,
        }
    }
}

/// A Rust type a decoded [`Value`] converts into.
///
/// Integers widen without loss (`int2` into `i32` or `i64`, `oid` into `u32` or `i64`),
/// `float4` into `f64`; `numeric` goes into a `String` (its exact decimal text) and never into
/// a float implicitly ([`Value::as_f64`] does that on request). A `String` also takes the
/// text types and, in text format, the server's text of a type not decoded here (an enum, a
/// domain, `inet`, ...). Dates and timestamps go into chrono types (a `timestamptz` also into
/// `SystemTime`) when finite and into [`Infinitable`] for `infinity`; `json`/`jsonb` into
/// `serde_json::Value`; `bytea` into `Vec<u8>` or `Bytes`; arrays into `Vec<T>`
/// (`Vec<Option<T>>` when elements may be NULL); any column into [`Value`].
pub trait FromValue: Sized {
    /// Converts `value`.
    fn from_value(value: Value) -> Result<Self, Mismatch>;
}

/// A Rust type [`Row::try_get`] can give: every [`FromValue`] type, and `&str` and `&[u8]`
/// borrowed from the row.
pub trait FromColumn<'a>: Sized {
    /// Converts the value of `column`.
    fn from_column(column: ColumnRef<'a>) -> Result<Self, ColumnError>;
}

/// One column of a [`Row`], as [`FromColumn`] reads it: its type, and its value borrowed from
/// the frame or as an owned [`ColumnValue`] sharing the frame's buffer.
#[derive(Clone, Copy, Debug)]
pub struct ColumnRef<'a> {
    row: &'a Row,
    index: usize,
    type_oid: Oid,
    column: Column<'a>,
}

impl<'a> ColumnRef<'a> {
    /// The column's type.
    pub fn type_oid(&self) -> Oid {
        self.type_oid
    }

    /// The value, borrowed from the row.
    pub fn column(&self) -> Column<'a> {
        self.column
    }

    /// The value as a [`ColumnValue`]: a `Bytes` slice of the frame (no copy).
    pub fn value(&self) -> ColumnValue {
        // `index` was checked against the row when the reference was made.
        self.row.value(self.index).unwrap_or(ColumnValue::Null)
    }
}

/// Why a column does not convert: a mismatch or an invalid value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnError {
    /// The value does not fit the type.
    Mismatch(Mismatch),
    /// The value is not a valid form of its type.
    Invalid(ValueError),
}

impl<'a, T: FromValue> FromColumn<'a> for T {
    fn from_column(column: ColumnRef<'a>) -> Result<Self, ColumnError> {
        let value =
            Value::decode(column.type_oid, &column.value()).map_err(ColumnError::Invalid)?;
        T::from_value(value).map_err(ColumnError::Mismatch)
    }
}

/// Whether a value of `type_oid` is text a `&str` may borrow: the text types, and types
/// [`Value::decode`] keeps as the server's text (enums, domains and the like), in text form.
fn borrows_as_text(type_oid: Oid, binary: bool) -> bool {
    matches!(
        oid::catalog_type(type_oid),
        Some(Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME)
    ) || (!binary && !oid::is_decoded(type_oid))
}

impl<'a> FromColumn<'a> for &'a str {
    fn from_column(column: ColumnRef<'a>) -> Result<Self, ColumnError> {
        let type_oid = column.type_oid;
        let (bytes, binary) = match column.column {
            Column::Null => return Err(ColumnError::Mismatch(Mismatch::Null)),
            Column::UnchangedToast => return Err(ColumnError::Mismatch(Mismatch::UnchangedToast)),
            Column::Text(b) => (b, false),
            Column::Binary(b) => (b, true),
        };
        if !borrows_as_text(type_oid, binary) {
            return Err(ColumnError::Mismatch(Mismatch::WrongType));
        }
        let format = if binary {
            super::Format::Binary
        } else {
            super::Format::Text
        };
        std::str::from_utf8(bytes).map_err(|e| {
            ColumnError::Invalid(ValueError::new(type_oid, format, format!("not UTF-8: {e}")))
        })
    }
}

impl<'a> FromColumn<'a> for &'a [u8] {
    /// A `bytea` sent in binary form, borrowed; the text form must be decoded (use
    /// `Vec<u8>` or `Bytes`, which take either).
    fn from_column(column: ColumnRef<'a>) -> Result<Self, ColumnError> {
        match column.column {
            Column::Null => Err(ColumnError::Mismatch(Mismatch::Null)),
            Column::UnchangedToast => Err(ColumnError::Mismatch(Mismatch::UnchangedToast)),
            Column::Binary(b) if column.type_oid == oid::of(&Type::BYTEA) => Ok(b),
            _ => Err(ColumnError::Mismatch(Mismatch::WrongType)),
        }
    }
}

/// `Option<&str>` and `Option<&[u8]>`: `None` for NULL.
macro_rules! borrowed_option {
    ($t:ty) => {
        impl<'a> FromColumn<'a> for Option<$t> {
            fn from_column(column: ColumnRef<'a>) -> Result<Self, ColumnError> {
                match column.column {
                    Column::Null => Ok(None),
                    _ => <$t>::from_column(column).map(Some),
                }
            }
        }
    };
}

borrowed_option!(&'a str);
borrowed_option!(&'a [u8]);

impl Row {
    /// The value of column `index` (a name or a position) as a `T`.
    ///
    /// ```
    /// # fn demo(row: &walstream::Row) -> Result<(), walstream::value::GetError> {
    /// let id: i64 = row.try_get("id")?;
    /// let name: Option<&str> = row.try_get("name")?; // None for NULL
    /// let tags: Vec<Option<String>> = row.try_get(2)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The error names the column, its type and `T`: no such column, NULL into a type that is
    /// not an `Option`, an unchanged TOAST value, a type that does not convert into `T`, or an
    /// invalid value.
    pub fn try_get<'a, T: FromColumn<'a>>(
        &'a self,
        index: impl ColumnIndex,
    ) -> Result<T, GetError> {
        let error = |column: String, type_oid, kind| GetError {
            column,
            type_oid,
            rust_type: std::any::type_name::<T>(),
            kind,
        };
        let Some((i, info)) = index
            .index(self)
            .and_then(|i| Some((i, self.relation().columns.get(i)?)))
        else {
            return Err(error(index.to_string(), None, GetErrorKind::UnknownColumn));
        };
        let Some(column) = self.columns().nth(i) else {
            return Err(error(index.to_string(), None, GetErrorKind::UnknownColumn));
        };
        let column = ColumnRef {
            row: self,
            index: i,
            type_oid: info.type_oid,
            column,
        };
        T::from_column(column).map_err(|e| {
            let kind = match e {
                ColumnError::Mismatch(Mismatch::Null) => GetErrorKind::Null,
                ColumnError::Mismatch(Mismatch::UnchangedToast) => GetErrorKind::UnchangedToast,
                ColumnError::Mismatch(Mismatch::WrongType) => GetErrorKind::WrongType,
                ColumnError::Invalid(e) => GetErrorKind::Invalid(e),
            };
            error(info.name.clone(), Some(info.type_oid), kind)
        })
    }
}

impl FromValue for Value {
    fn from_value(value: Value) -> Result<Self, Mismatch> {
        Ok(value)
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Result<Self, Mismatch> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(value: Value) -> Result<Self, Mismatch> {
        match value {
            Value::Array(values) => values.into_iter().map(T::from_value).collect(),
            v => Err(Mismatch::of(&v)),
        }
    }
}

/// `impl FromValue for $t` from the listed variants, each through `$conv`.
macro_rules! from_value {
    ($t:ty: $($pat:pat => $conv:expr),+ $(,)?) => {
        impl FromValue for $t {
            fn from_value(value: Value) -> Result<Self, Mismatch> {
                match value {
                    $($pat => Ok($conv),)+
                    v => Err(Mismatch::of(&v)),
                }
            }
        }
    };
}

from_value!(bool: Value::Bool(b) => b);
from_value!(i16: Value::Int2(i) => i);
from_value!(i32: Value::Int2(i) => i32::from(i), Value::Int4(i) => i);
from_value!(i64:
    Value::Int2(i) => i64::from(i),
    Value::Int4(i) => i64::from(i),
    Value::Int8(i) => i,
    Value::Oid(o) => i64::from(o),
);
from_value!(u32: Value::Oid(o) => o);
from_value!(f32: Value::Float4(x) => x);
from_value!(f64: Value::Float4(x) => f64::from(x), Value::Float8(x) => x);
from_value!(String:
    Value::Text(s) => s,
    Value::Numeric(s) => s,
    Value::Unknown { raw: Raw::Text(s), .. } => s,
);
from_value!(Vec<u8>: Value::Bytea(b) => b.to_vec());
from_value!(Bytes: Value::Bytea(b) => b);
from_value!(Uuid: Value::Uuid(u) => u);
from_value!(NaiveTime: Value::Time(t) => t);
from_value!(Interval: Value::Interval(i) => i);
from_value!(serde_json::Value: Value::Json(j) => j);
from_value!(Infinitable<NaiveDate>: Value::Date(d) => d);
from_value!(Infinitable<NaiveDateTime>: Value::Timestamp(t) => t);
from_value!(Infinitable<DateTime<Utc>>: Value::TimestampTz(t) => t);

/// A finite date or timestamp; `infinity` and `-infinity` are [`Mismatch::WrongType`] (use
/// [`Infinitable`] to read them).
macro_rules! finite {
    ($t:ty, $variant:ident) => {
        impl FromValue for $t {
            fn from_value(value: Value) -> Result<Self, Mismatch> {
                match value {
                    Value::$variant(Infinitable::Finite(t)) => Ok(t),
                    v => Err(Mismatch::of(&v)),
                }
            }
        }
    };
}

finite!(NaiveDate, Date);
finite!(NaiveDateTime, Timestamp);
finite!(DateTime<Utc>, TimestampTz);
from_value!(std::time::SystemTime: Value::TimestampTz(Infinitable::Finite(t)) => t.into());

impl Value {
    /// A `bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// An integer: `int2`, `int4`, `int8` or `oid`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int2(i) => Some(i64::from(i)),
            Value::Int4(i) => Some(i64::from(i)),
            Value::Int8(i) => Some(i),
            Value::Oid(o) => Some(i64::from(o)),
            _ => None,
        }
    }

    /// A number as the nearest `f64`: the floats, the integers (an `int8` beyond 2^53 is
    /// rounded) and `numeric` (rounded to the nearest `f64`; `NaN` and the infinities as
    /// such).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float4(x) => Some(f64::from(*x)),
            Value::Float8(x) => Some(*x),
            #[allow(
                clippy::cast_precision_loss,
                reason = "documented: an int8 beyond 2^53 is rounded"
            )]
            Value::Int8(i) => Some(*i as f64),
            Value::Numeric(s) => s.parse().ok(),
            v => v.as_i64().map(|i| i as f64),
        }
    }

    /// Text: `text`, `varchar`, `bpchar`, `name`, `numeric`'s exact decimal text, and the
    /// server's text of a type not decoded here.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s)
            | Value::Numeric(s)
            | Value::Unknown {
                raw: Raw::Text(s), ..
            } => Some(s),
            _ => None,
        }
    }

    /// `bytea`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytea(b) => Some(b),
            _ => None,
        }
    }

    /// `uuid`.
    pub fn as_uuid(&self) -> Option<Uuid> {
        match *self {
            Value::Uuid(u) => Some(u),
            _ => None,
        }
    }

    /// `json` or `jsonb`.
    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Value::Json(j) => Some(j),
            _ => None,
        }
    }

    /// An array's elements.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A finite `date`.
    pub fn as_date(&self) -> Option<NaiveDate> {
        match *self {
            Value::Date(d) => d.finite(),
            _ => None,
        }
    }

    /// A finite `timestamp`.
    pub fn as_timestamp(&self) -> Option<NaiveDateTime> {
        match *self {
            Value::Timestamp(t) => t.finite(),
            _ => None,
        }
    }

    /// A finite `timestamptz`, in UTC.
    pub fn as_timestamptz(&self) -> Option<DateTime<Utc>> {
        match *self {
            Value::TimestampTz(t) => t.finite(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use walproto::owned::TupleBuf;
    use walproto::pgoutput::{encode_columns, TupleData};
    use walproto::{ColumnInfo, RelationInfo};

    use super::*;

    fn row(columns: &[(&str, Oid, Column<'_>)]) -> Row {
        let relation = RelationInfo {
            id: Oid(1),
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: walproto::pgoutput::ReplicaIdentity::Default,
            columns: columns
                .iter()
                .map(|(name, type_oid, _)| ColumnInfo {
                    name: (*name).into(),
                    type_oid: *type_oid,
                    type_modifier: -1,
                    key: false,
                })
                .collect(),
        };
        let mut bytes = Vec::new();
        encode_columns(columns.iter().map(|(_, _, c)| *c), &mut bytes);
        let bytes = Bytes::from(bytes);
        let view = TupleData::parse(&bytes).unwrap();
        Row::new(
            Arc::new(relation),
            TupleBuf::from_view(&bytes, &view).unwrap(),
        )
    }

    #[test]
    fn getters_convert_by_name_and_position() {
        let r = row(&[
            ("id", oid::of(&Type::INT8), Column::Text(b"42")),
            (
                "small",
                oid::of(&Type::INT2),
                Column::Binary(&7i16.to_be_bytes()),
            ),
            ("name", oid::of(&Type::VARCHAR), Column::Text(b"abc")),
            ("missing", oid::of(&Type::TEXT), Column::Null),
            (
                "tags",
                oid::of(&Type::TEXT_ARRAY),
                Column::Text(b"{a,NULL}"),
            ),
            ("n", oid::of(&Type::NUMERIC), Column::Text(b"12.3400")),
            ("d", oid::of(&Type::DATE), Column::Text(b"infinity")),
            ("big", oid::of(&Type::TEXT), Column::UnchangedToast),
            ("by", oid::of(&Type::BYTEA), Column::Binary(b"\x00\x01")),
            ("mood", Oid(16_500), Column::Text(b"happy")),
        ]);
        assert_eq!(r.try_get::<i64>("id"), Ok(42));
        assert_eq!(r.try_get::<i64>(0), Ok(42));
        assert_eq!(r.try_get::<i16>("small"), Ok(7));
        assert_eq!(r.try_get::<i32>("small"), Ok(7));
        assert_eq!(r.try_get::<&str>("name"), Ok("abc"));
        assert_eq!(r.try_get::<String>("name"), Ok("abc".to_owned()));
        assert_eq!(r.try_get::<Option<&str>>("missing"), Ok(None));
        assert_eq!(r.try_get::<Option<&str>>("name"), Ok(Some("abc")));
        assert_eq!(r.try_get::<Option<String>>("missing"), Ok(None));
        assert_eq!(
            r.try_get::<Vec<Option<String>>>("tags"),
            Ok(vec![Some("a".to_owned()), None])
        );
        assert_eq!(r.try_get::<String>("n"), Ok("12.3400".to_owned()));
        assert_eq!(
            r.try_get::<Infinitable<NaiveDate>>("d"),
            Ok(Infinitable::Infinity)
        );
        assert_eq!(r.try_get::<&[u8]>("by"), Ok(&b"\x00\x01"[..]));
        assert_eq!(r.try_get::<Vec<u8>>("by"), Ok(vec![0, 1]));
        assert_eq!(
            r.try_get::<Bytes>("by"),
            Ok(Bytes::from_static(b"\x00\x01"))
        );
        assert_eq!(r.try_get::<&str>("mood"), Ok("happy"));
        assert_eq!(
            r.try_get::<Value>("big"),
            Ok(Value::UnchangedToast),
            "Value itself keeps unchanged TOAST"
        );

        let kind = |e: GetError| e.kind().clone();
        assert_eq!(
            r.try_get::<i64>("nope").map_err(kind),
            Err(GetErrorKind::UnknownColumn)
        );
        assert_eq!(
            r.try_get::<i64>(99).map_err(kind),
            Err(GetErrorKind::UnknownColumn)
        );
        assert_eq!(
            r.try_get::<String>("missing").map_err(kind),
            Err(GetErrorKind::Null)
        );
        assert_eq!(
            r.try_get::<Option<String>>("big").map_err(kind),
            Err(GetErrorKind::UnchangedToast)
        );
        assert_eq!(
            r.try_get::<i16>("id").map_err(kind),
            Err(GetErrorKind::WrongType),
            "int8 does not narrow into i16"
        );
        assert_eq!(
            r.try_get::<f64>("n").map_err(kind),
            Err(GetErrorKind::WrongType),
            "numeric is not implicitly a float"
        );
        assert_eq!(
            r.try_get::<NaiveDate>("d").map_err(kind),
            Err(GetErrorKind::WrongType),
            "infinity is not a NaiveDate"
        );
        assert_eq!(
            r.try_get::<&str>("id").map_err(kind),
            Err(GetErrorKind::WrongType)
        );
    }

    #[test]
    fn timestamptz_into_system_time() {
        let r = row(&[(
            "at",
            oid::of(&Type::TIMESTAMPTZ),
            Column::Text(b"1970-01-01 00:00:01.5+00"),
        )]);
        assert_eq!(
            r.try_get::<std::time::SystemTime>("at"),
            Ok(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1500))
        );
    }

    #[test]
    fn errors_name_the_column_and_both_types() {
        let r = row(&[
            ("price", oid::of(&Type::NUMERIC), Column::Text(b"1.5")),
            ("when", oid::of(&Type::DATE), Column::Text(b"2024-13-01")),
            ("gone", oid::of(&Type::INT4), Column::Null),
        ]);
        let e = r.try_get::<i32>("price").unwrap_err();
        assert_eq!(e.column(), "price");
        assert_eq!(e.type_oid(), Some(oid::of(&Type::NUMERIC)));
        assert_eq!(e.rust_type(), "i32");
        assert_eq!(
            e.to_string(),
            "column \"price\" (numeric): cannot be read as i32"
        );
        let e = r.try_get::<NaiveDate>("when").unwrap_err();
        assert!(matches!(e.kind(), GetErrorKind::Invalid(_)), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("column \"when\" (date): invalid date value"));
        assert!(
            std::error::Error::source(&e).is_none(),
            "the cause is printed once"
        );
        assert_eq!(
            r.try_get::<i32>("gone").unwrap_err().to_string(),
            "column \"gone\" (int4): NULL into i32 (use Option)"
        );
        assert_eq!(
            r.try_get::<i32>("nope").unwrap_err().to_string(),
            "column \"nope\": no such column"
        );
        assert_eq!(
            r.try_get::<i32>(7).unwrap_err().to_string(),
            "column \"7\": no such column"
        );
    }

    #[test]
    fn value_accessors() {
        assert_eq!(Value::Int2(-3).as_i64(), Some(-3));
        assert_eq!(Value::Oid(7).as_i64(), Some(7));
        assert_eq!(Value::Text("1".into()).as_i64(), None);
        assert_eq!(Value::Int4(3).as_f64(), Some(3.0));
        assert_eq!(Value::Float4(1.5).as_f64(), Some(1.5));
        assert_eq!(Value::Numeric("-12.50".into()).as_f64(), Some(-12.5));
        assert!(Value::Numeric("NaN".into()).as_f64().unwrap().is_nan());
        assert_eq!(Value::Bool(true).as_bool(), Some(true));
        assert_eq!(Value::Null.as_bool(), None);
        assert_eq!(Value::Numeric("1.0".into()).as_str(), Some("1.0"));
        assert_eq!(
            Value::Bytea(Bytes::from_static(b"x")).as_bytes(),
            Some(&b"x"[..])
        );
        assert_eq!(
            Value::Array(vec![Value::Null]).as_array(),
            Some(&[Value::Null][..])
        );
        assert_eq!(
            Value::Json(serde_json::json!([1])).as_json(),
            Some(&serde_json::json!([1]))
        );
        assert_eq!(Value::Date(Infinitable::Infinity).as_date(), None);
        let d = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        assert_eq!(Value::Date(Infinitable::Finite(d)).as_date(), Some(d));
    }
}

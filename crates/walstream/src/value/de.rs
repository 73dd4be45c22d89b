//! Rows into user structs with serde, by column name.

use std::fmt;
use std::marker::PhantomData;

use chrono::SecondsFormat;
use serde::de::value::SeqDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor,
};
use walproto::Oid;

use super::{oid, Infinitable, Raw, Value};
use crate::{ColumnInfo, ColumnValue, Row};

/// Deserializes `row` into `T` by column name: each struct field takes the column of its name
/// (serde's `rename` and `default` apply; columns without a field are ignored).
///
/// - An `Option<T>` field is `None` for NULL. A NULL into a field that is not an `Option` is
///   an error.
/// - An unchanged TOAST value is an error unless the field is a [`MaybeUnchanged`], so a
///   value the server did not send is never mistaken for NULL.
/// - Numbers convert where serde's do (an `int4` into an `i64` or `f64`); `numeric` goes into
///   a `String` (exact) or an `f64`; `bytea` into a `Vec<u8>`; `json`/`jsonb` into any
///   deserializable type; arrays into a `Vec`; text into an enum by variant name. Dates and
///   times are given as the strings chrono's serde reads (`2024-01-02`, RFC 3339 in UTC for
///   `timestamptz`), so chrono types with its `serde` feature work, and so do `String`s;
///   `uuid` is its hyphenated string.
///
/// A mismatch names the column and its type: `column "price" (numeric): invalid type: ...`.
///
/// ```
/// # fn demo(row: &walstream::Row) -> Result<(), walstream::value::RowError> {
/// #[derive(serde::Deserialize)]
/// struct Account {
///     id: i64,
///     owner: Option<String>,
///     balance: String, // numeric, exact
/// }
/// let account: Account = walstream::value::from_row(row)?;
/// # Ok(())
/// # }
/// ```
pub fn from_row<T: DeserializeOwned>(row: &Row) -> Result<T, RowError> {
    T::deserialize(RowDeserializer { row })
}

/// A row that does not deserialize into the requested type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    column: Option<String>,
    type_oid: Option<Oid>,
    message: String,
}

impl RowError {
    /// The column whose value did not fit, when the error is about one.
    pub fn column(&self) -> Option<&str> {
        self.column.as_deref()
    }

    /// That column's type.
    pub fn type_oid(&self) -> Option<Oid> {
        self.type_oid
    }

    /// What was wrong, without the column.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn at(mut self, column: &ColumnInfo) -> Self {
        if self.column.is_none() {
            self.column = Some(column.name.clone());
            self.type_oid = Some(column.type_oid);
        }
        self
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.column, self.type_oid) {
            (Some(c), Some(t)) => write!(f, "column {c:?} ({}): ", oid::DisplayType(t))?,
            (Some(c), None) => write!(f, "column {c:?}: ")?,
            _ => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for RowError {}

impl de::Error for RowError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        RowError {
            column: None,
            type_oid: None,
            message: msg.to_string(),
        }
    }
}

/// A field that may be an unchanged TOAST value: in an update's new row, a large value that
/// did not change is not sent (unless the table has `REPLICA IDENTITY FULL`).
///
/// Use `MaybeUnchanged<Option<T>>` for a nullable column. With other deserializers (such as
/// `serde_json`) it is always `Value`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MaybeUnchanged<T> {
    /// The column was not sent: it keeps its old value.
    Unchanged,
    /// The column's value.
    Value(T),
}

/// The newtype-struct name by which [`MaybeUnchanged`] asks the row deserializer for the
/// unchanged marker, which no other serde data model value carries.
const MAYBE_UNCHANGED: &str = "walstream::value::MaybeUnchanged";

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for MaybeUnchanged<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MaybeVisitor<T>(PhantomData<T>);

        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for MaybeVisitor<T> {
            type Value = MaybeUnchanged<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column value or an unchanged TOAST value")
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeUnchanged::Unchanged)
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Self::Value, D::Error> {
                T::deserialize(deserializer).map(MaybeUnchanged::Value)
            }
        }

        deserializer.deserialize_newtype_struct(MAYBE_UNCHANGED, MaybeVisitor(PhantomData))
    }
}

struct RowDeserializer<'r> {
    row: &'r Row,
}

impl<'de> Deserializer<'de> for RowDeserializer<'_> {
    type Error = RowError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_map(RowMap {
            columns: self.row.iter(),
            current: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct RowMap<'r, I> {
    columns: I,
    current: Option<(&'r ColumnInfo, ColumnValue)>,
}

impl<'de, 'r, I> MapAccess<'de> for RowMap<'r, I>
where
    I: Iterator<Item = (&'r ColumnInfo, ColumnValue)>,
{
    type Error = RowError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, RowError> {
        let Some((column, value)) = self.columns.next() else {
            return Ok(None);
        };
        self.current = Some((column, value));
        seed.deserialize(column.name.as_str().into_deserializer())
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, RowError> {
        let (column, raw) = self
            .current
            .take()
            .ok_or_else(|| de::Error::custom("a value asked for before its column"))?;
        let value = Value::decode(column.type_oid, &raw)
            .map_err(|e| <RowError as de::Error>::custom(e.message()).at(column))?;
        seed.deserialize(ValueDeserializer(value))
            .map_err(|e| e.at(column))
    }
}

/// One [`Value`] as a serde deserializer.
struct ValueDeserializer(Value);

impl<'de> IntoDeserializer<'de, RowError> for ValueDeserializer {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

fn unchanged() -> RowError {
    de::Error::custom(
        "an unchanged TOAST value (not sent by the server; not NULL): use MaybeUnchanged<T>",
    )
}

fn infinitable<T>(v: Infinitable<T>, finite: impl FnOnce(T) -> String) -> String {
    match v {
        Infinitable::NegInfinity => "-infinity".to_owned(),
        Infinitable::Finite(t) => finite(t),
        Infinitable::Infinity => "infinity".to_owned(),
    }
}

impl<'de> Deserializer<'de> for ValueDeserializer {
    type Error = RowError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            Value::UnchangedToast => Err(unchanged()),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int2(i) => visitor.visit_i16(i),
            Value::Int4(i) => visitor.visit_i32(i),
            Value::Int8(i) => visitor.visit_i64(i),
            Value::Float4(x) => visitor.visit_f32(x),
            Value::Float8(x) => visitor.visit_f64(x),
            Value::Numeric(s) | Value::Text(s) => visitor.visit_string(s),
            Value::Bytea(b) => visitor.visit_bytes(&b),
            Value::Uuid(u) => visitor.visit_string(u.hyphenated().to_string()),
            Value::Date(d) => visitor.visit_string(infinitable(d, |d| d.to_string())),
            Value::Time(t) => visitor.visit_string(t.to_string()),
            // chrono's own serde forms: `Debug` for `NaiveDateTime`, RFC 3339 for UTC.
            Value::Timestamp(t) => visitor.visit_string(infinitable(t, |t| format!("{t:?}"))),
            Value::TimestampTz(t) => visitor.visit_string(infinitable(t, |t| {
                t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            })),
            Value::Interval(i) => visitor.visit_string(i.to_string()),
            Value::Json(j) => j.deserialize_any(visitor).map_err(de::Error::custom),
            Value::Oid(o) => visitor.visit_u32(o),
            Value::Array(values) => {
                let mut seq = SeqDeserializer::new(values.into_iter().map(ValueDeserializer));
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Value::Unknown { raw, .. } => match raw {
                Raw::Text(s) => visitor.visit_string(s),
                Raw::Binary(b) => visitor.visit_bytes(&b),
            },
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            Value::UnchangedToast => Err(unchanged()),
            Value::Json(serde_json::Value::Null) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        match (name, self.0) {
            (MAYBE_UNCHANGED, Value::UnchangedToast) => visitor.visit_unit(),
            (_, Value::Json(j)) => j
                .deserialize_newtype_struct(name, visitor)
                .map_err(de::Error::custom),
            (_, v) => visitor.visit_newtype_struct(ValueDeserializer(v)),
        }
    }

    /// `bytea` into a `Vec<u8>` (which asks for a sequence).
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.0 {
            Value::Bytea(b) => {
                let mut seq = SeqDeserializer::new(b.iter().copied());
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            v => ValueDeserializer(v).deserialize_any(visitor),
        }
    }

    /// `numeric` into a float (its exact text otherwise).
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.0 {
            Value::Numeric(s) => match s.parse::<f64>() {
                Ok(x) => visitor.visit_f64(x),
                Err(_) => visitor.visit_string(s),
            },
            v => ValueDeserializer(v).deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        self.deserialize_f64(visitor)
    }

    /// Text (and enum types' text) into a unit variant by name.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RowError> {
        match self.0 {
            Value::Text(s)
            | Value::Unknown {
                raw: Raw::Text(s), ..
            } => visitor.visit_enum(s.into_deserializer()),
            Value::Json(j) => j
                .deserialize_enum(name, variants, visitor)
                .map_err(de::Error::custom),
            v => ValueDeserializer(v).deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string bytes byte_buf
        unit unit_struct tuple tuple_struct map struct identifier ignored_any
    }
}

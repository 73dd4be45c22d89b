//! Owned forms that cross task boundaries: `Bytes` slices of the frame, no copy of data.

use bytes::Bytes;

use crate::pgoutput::{Column, TupleData};

/// A column value that owns a reference to its frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ColumnValue {
    /// SQL NULL.
    Null,
    /// An unchanged TOASTed value the server did not send. Not the same as NULL.
    UnchangedToast,
    /// A text-format value.
    Text(Bytes),
    /// A binary-format value.
    Binary(Bytes),
}

impl ColumnValue {
    /// The borrowed form.
    pub fn as_column(&self) -> Column<'_> {
        match self {
            ColumnValue::Null => Column::Null,
            ColumnValue::UnchangedToast => Column::UnchangedToast,
            ColumnValue::Text(b) => Column::Text(b),
            ColumnValue::Binary(b) => Column::Binary(b),
        }
    }

    /// The text-format value as a string: `None` for NULL, unchanged TOAST, a binary-format
    /// value, or text that is not valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            ColumnValue::Text(b) => core::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// An owned [`TupleData`]: a `Bytes` slice of the frame it came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TupleBuf {
    ncols: u16,
    data: Bytes,
}

impl TupleBuf {
    /// The owned form of `tuple`, which must borrow from `frame`; `None` if it does not.
    ///
    /// No column data is copied: the result shares `frame`'s buffer.
    pub fn from_view(frame: &Bytes, tuple: &TupleData<'_>) -> Option<Self> {
        Some(TupleBuf {
            ncols: tuple.len(),
            data: subslice(frame, tuple.as_bytes())?,
        })
    }

    /// The same tuple in a buffer of its own, exactly its size. A `TupleBuf` shares the
    /// buffer of the frame it came from, which shares the connection's read buffer: a small
    /// row kept for long (a transaction held until its commit) would keep that whole read
    /// buffer alive. A copy holds only its own bytes.
    pub fn detached(&self) -> TupleBuf {
        TupleBuf {
            ncols: self.ncols,
            data: Bytes::copy_from_slice(&self.data),
        }
    }

    /// The number of columns.
    pub fn len(&self) -> u16 {
        self.ncols
    }

    /// Whether there are no columns.
    pub fn is_empty(&self) -> bool {
        self.ncols == 0
    }

    /// The borrowed columns.
    pub fn columns(&self) -> crate::pgoutput::Columns<'_> {
        self.view().columns()
    }

    /// The columns as owned values, each a slice of the shared frame.
    pub fn values(&self) -> impl ExactSizeIterator<Item = ColumnValue> + '_ {
        self.columns().map(move |c| match c {
            Column::Null => ColumnValue::Null,
            Column::UnchangedToast => ColumnValue::UnchangedToast,
            Column::Text(b) => ColumnValue::Text(subslice(&self.data, b).unwrap_or_default()),
            Column::Binary(b) => ColumnValue::Binary(subslice(&self.data, b).unwrap_or_default()),
        })
    }

    fn view(&self) -> TupleData<'_> {
        // `data` was a validated tuple body; re-wrapping it cannot fail, and if it somehow did
        // the view is empty rather than a panic.
        TupleData::from_validated(self.ncols, &self.data)
    }
}

/// `part` as a `Bytes` sharing `whole`'s buffer, if `part` lies within `whole`.
///
/// This is `Bytes::slice_ref` without its panic: the pointer range is checked first.
pub fn subslice(whole: &Bytes, part: &[u8]) -> Option<Bytes> {
    let base = whole.as_ptr() as usize;
    let start = (part.as_ptr() as usize).checked_sub(base)?;
    let end = start.checked_add(part.len())?;
    if end > whole.len() {
        return None;
    }
    if part.is_empty() {
        return Some(Bytes::new());
    }
    Some(whole.slice(start..end))
}

/// Serde (feature `serde`), the shape of the CLI's JSON rows: NULL is `null`, a text value a
/// JSON string, a binary value `{"binary":"<base64>"}`, an unchanged TOASTed value
/// `{"unchanged_toast":true}`. Text that is not UTF-8 (a `SQL_ASCII` database) cannot be a
/// JSON string without changing it: serializing it is an error.
#[cfg(feature = "serde")]
mod serde_impls {
    use super::ColumnValue;
    use alloc::string::String;
    use base64::Engine as _;
    use bytes::Bytes;
    use core::fmt;
    use serde::de::{self, Deserializer, MapAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};
    use serde::{Deserialize, Serialize};

    const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    impl Serialize for ColumnValue {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                ColumnValue::Null => s.serialize_unit(),
                ColumnValue::Text(b) => match core::str::from_utf8(b) {
                    Ok(text) => s.serialize_str(text),
                    Err(_) => Err(serde::ser::Error::custom(
                        "text column value is not valid UTF-8",
                    )),
                },
                ColumnValue::Binary(b) => {
                    let mut m = s.serialize_map(Some(1))?;
                    m.serialize_entry("binary", &BASE64.encode(b))?;
                    m.end()
                }
                ColumnValue::UnchangedToast => {
                    let mut m = s.serialize_map(Some(1))?;
                    m.serialize_entry("unchanged_toast", &true)?;
                    m.end()
                }
            }
        }
    }

    struct ColumnValueVisitor;

    impl<'de> Visitor<'de> for ColumnValueVisitor {
        type Value = ColumnValue;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("null, a string, {\"binary\":\"<base64>\"} or {\"unchanged_toast\":true}")
        }

        fn visit_unit<E: de::Error>(self) -> Result<ColumnValue, E> {
            Ok(ColumnValue::Null)
        }

        fn visit_none<E: de::Error>(self) -> Result<ColumnValue, E> {
            Ok(ColumnValue::Null)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<ColumnValue, E> {
            Ok(ColumnValue::Text(Bytes::copy_from_slice(v.as_bytes())))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<ColumnValue, E> {
            Ok(ColumnValue::Text(Bytes::from(v)))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ColumnValue, A::Error> {
            let key: String = map
                .next_key()?
                .ok_or_else(|| de::Error::invalid_length(0, &self))?;
            let value = match key.as_str() {
                "binary" => {
                    let text: String = map.next_value()?;
                    let data = BASE64
                        .decode(text.as_bytes())
                        .map_err(|_| de::Error::custom("binary column value is not base64"))?;
                    ColumnValue::Binary(Bytes::from(data))
                }
                "unchanged_toast" => {
                    if !map.next_value::<bool>()? {
                        return Err(de::Error::custom("unchanged_toast must be true"));
                    }
                    ColumnValue::UnchangedToast
                }
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["binary", "unchanged_toast"],
                    ))
                }
            };
            if map.next_key::<de::IgnoredAny>()?.is_some() {
                return Err(de::Error::invalid_length(2, &self));
            }
            Ok(value)
        }
    }

    impl<'de> Deserialize<'de> for ColumnValue {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ColumnValueVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_text_is_only_valid_text() {
        assert_eq!(
            ColumnValue::Text(Bytes::from_static(b"h\xc3\xa9")).as_text(),
            Some("hé")
        );
        assert_eq!(
            ColumnValue::Text(Bytes::from_static(b"\xff")).as_text(),
            None
        );
        assert_eq!(
            ColumnValue::Binary(Bytes::from_static(b"a")).as_text(),
            None
        );
        assert_eq!(ColumnValue::Null.as_text(), None);
        assert_eq!(ColumnValue::UnchangedToast.as_text(), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_round_trips() {
        for (value, json) in [
            (ColumnValue::Null, "null"),
            (ColumnValue::UnchangedToast, r#"{"unchanged_toast":true}"#),
            (
                ColumnValue::Text(Bytes::from_static(b"h\xc3\xa9")),
                "\"h\u{e9}\"",
            ),
            (
                ColumnValue::Binary(Bytes::from_static(b"\x00\x01")),
                r#"{"binary":"AAE="}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&value).unwrap(), json);
            assert_eq!(serde_json::from_str::<ColumnValue>(json).unwrap(), value);
        }
        assert!(serde_json::to_string(&ColumnValue::Text(Bytes::from_static(b"\xff"))).is_err());
        for bad in [
            r#"{"binary":"!"}"#,
            r#"{"unchanged_toast":false}"#,
            r#"{"x":1}"#,
            "1",
            "{}",
        ] {
            assert!(serde_json::from_str::<ColumnValue>(bad).is_err(), "{bad}");
        }
    }
}

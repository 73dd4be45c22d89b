//! `TupleData`: the row images of Insert, Update and Delete, read lazily.

use bytes::BufMut;
use core::fmt;

use crate::error::{Error, ErrorKind};
use crate::reader::Reader;

/// One row image: a column count and the columns' bytes, validated when the message was
/// parsed and read lazily through [`TupleData::columns`]. Nothing is copied or allocated.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TupleData<'a> {
    ncols: u16,
    data: &'a [u8],
}

/// One column of a [`TupleData`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column<'a> {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged TOASTed value; the server did not send it. Not the same as NULL.
    UnchangedToast,
    /// `t`: a value in text format (the type's output function, in the client encoding).
    Text(&'a [u8]),
    /// `b`: a value in binary format (the type's send function), when `binary` is on.
    Binary(&'a [u8]),
}

/// The column kind bytes.
const NULL: u8 = b'n';
const UNCHANGED_TOAST: u8 = b'u';
const TEXT: u8 = b't';
const BINARY: u8 = b'b';

impl<'a> TupleData<'a> {
    /// Validates `bytes` as one whole `TupleData` (an `Int16` count, then the columns).
    ///
    /// This is how a caller builds a tuple for encoding: write the columns with
    /// [`encode_columns`], then view the bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let t = Self::read(&mut r)?;
        r.finish()?;
        Ok(t)
    }

    /// Reads one tuple from `r`, checking every column kind and length, so that iterating it
    /// later cannot fail.
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        let at = r.offset();
        let ncols = r.u16()?;
        // Every column takes at least its kind byte.
        r.check_count(u32::from(ncols), 1, at)?;
        let start = r.rest();
        let base = r.offset();
        // This loop runs once per column of every row, so it works on the slice directly
        // rather than through the reader's per-field calls (measured: two thirds of the parse
        // time went there). Errors are rare and carry the kinds and offsets the reader gives.
        let offset_of = |rest: &[u8]| base + (start.len() - rest.len());
        let mut rest = start;
        for _ in 0..ncols {
            let Some((&kind, after)) = rest.split_first() else {
                return Err(r.error_at(ErrorKind::UnexpectedEof, offset_of(rest)));
            };
            rest = match kind {
                NULL | UNCHANGED_TOAST => after,
                TEXT | BINARY => {
                    let len_at = offset_of(after);
                    let Some((len, value)) = after.split_first_chunk::<4>() else {
                        return Err(r.error_at(ErrorKind::UnexpectedEof, len_at));
                    };
                    let len = i32::from_be_bytes(*len);
                    let Ok(n) = u32::try_from(len) else {
                        return Err(r.error_at(ErrorKind::NegativeLength(len), len_at));
                    };
                    match value.get(n as usize..) {
                        Some(after_value) => after_value,
                        None => return Err(r.error_at(ErrorKind::LengthOutOfBounds(n), len_at)),
                    }
                }
                other => {
                    return Err(r.error_at(ErrorKind::UnknownColumnKind(other), offset_of(rest)));
                }
            };
        }
        let data = r.bytes(start.len() - rest.len())?;
        Ok(TupleData { ncols, data })
    }

    /// Re-wraps the body of a tuple that was validated earlier (by [`TupleData::read`]).
    pub(crate) const fn from_validated(ncols: u16, data: &'a [u8]) -> Self {
        TupleData { ncols, data }
    }

    /// The number of columns.
    pub const fn len(&self) -> u16 {
        self.ncols
    }

    /// Whether the tuple has no columns.
    pub const fn is_empty(&self) -> bool {
        self.ncols == 0
    }

    /// The columns, in order.
    pub fn columns(&self) -> Columns<'a> {
        Columns {
            rest: self.data,
            left: self.ncols,
        }
    }

    /// The columns' bytes as sent, after the count.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Appends the tuple (count and columns) to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u16(self.ncols);
        out.put_slice(self.data);
    }
}

impl fmt::Debug for TupleData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.columns()).finish()
    }
}

impl fmt::Debug for Column<'_> {
    /// Values are shown as byte strings (`Text(b"42")`), which is how they were sent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Column::Null => f.write_str("Null"),
            Column::UnchangedToast => f.write_str("UnchangedToast"),
            Column::Text(b) => write!(f, "Text(b\"{}\")", b.escape_ascii()),
            Column::Binary(b) => write!(f, "Binary(b\"{}\")", b.escape_ascii()),
        }
    }
}

impl<'a> IntoIterator for TupleData<'a> {
    type Item = Column<'a>;
    type IntoIter = Columns<'a>;

    fn into_iter(self) -> Columns<'a> {
        self.columns()
    }
}

/// Iterator over the columns of a [`TupleData`].
#[derive(Clone, Debug)]
pub struct Columns<'a> {
    rest: &'a [u8],
    left: u16,
}

impl<'a> Iterator for Columns<'a> {
    type Item = Column<'a>;

    #[inline]
    fn next(&mut self) -> Option<Column<'a>> {
        // The tuple was validated when parsed, so none of the `?` below can stop early; they
        // are here so that even a bug elsewhere could not turn into a panic.
        self.left = self.left.checked_sub(1)?;
        let (&kind, rest) = self.rest.split_first()?;
        let (column, rest) = match kind {
            NULL => (Column::Null, rest),
            UNCHANGED_TOAST => (Column::UnchangedToast, rest),
            _ => {
                let (len, rest) = rest.split_first_chunk::<4>()?;
                let (value, rest) = rest.split_at_checked(u32::from_be_bytes(*len) as usize)?;
                let column = if kind == BINARY {
                    Column::Binary(value)
                } else {
                    Column::Text(value)
                };
                (column, rest)
            }
        };
        self.rest = rest;
        Some(column)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

impl ExactSizeIterator for Columns<'_> {}

impl<'a> Column<'a> {
    /// Whether this is SQL NULL.
    pub const fn is_null(&self) -> bool {
        matches!(self, Column::Null)
    }

    /// The value's bytes, for text and binary columns.
    pub const fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            Column::Text(b) | Column::Binary(b) => Some(b),
            Column::Null | Column::UnchangedToast => None,
        }
    }

    /// A text-format value as a string, if it is one and is valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Column::Text(b) => core::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Appends the column (kind byte, and length and bytes for values) to `out`.
    ///
    /// A value longer than `i32::MAX` bytes cannot be expressed on the wire; PostgreSQL's own
    /// limit is 1 GB per value, so callers never have one.
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            Column::Null => out.put_u8(NULL),
            Column::UnchangedToast => out.put_u8(UNCHANGED_TOAST),
            Column::Text(b) | Column::Binary(b) => {
                out.put_u8(if matches!(self, Column::Binary(_)) {
                    BINARY
                } else {
                    TEXT
                });
                out.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
                out.put_slice(b);
            }
        }
    }
}

/// Appends a whole `TupleData` (count, then each column) to `out`.
///
/// Only the first `u16::MAX` columns are written, with a matching count.
pub fn encode_columns<'c>(columns: impl IntoIterator<Item = Column<'c>>, out: &mut impl BufMut) {
    let mut body = alloc::vec::Vec::new();
    let mut n: u16 = 0;
    for c in columns {
        if n == u16::MAX {
            break;
        }
        c.encode(&mut body);
        n += 1;
    }
    out.put_u16(n);
    out.put_slice(&body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn tuple_bytes(cols: &[Column<'_>]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_columns(cols.iter().copied(), &mut v);
        v
    }

    #[test]
    fn columns_of_every_kind() {
        let cols = [
            Column::Null,
            Column::UnchangedToast,
            Column::Text(b""),
            Column::Text(b"42"),
            Column::Binary(&[0, 0, 0, 42]),
        ];
        let bytes = tuple_bytes(&cols);
        assert_eq!(
            bytes,
            [
                0, 5, b'n', b'u', b't', 0, 0, 0, 0, b't', 0, 0, 0, 2, b'4', b'2', b'b', 0, 0, 0, 4,
                0, 0, 0, 42
            ]
        );
        let t = TupleData::parse(&bytes).unwrap();
        assert_eq!(t.len(), 5);
        assert_eq!(t.columns().collect::<Vec<_>>(), cols);
        // An empty string is a value, not NULL.
        assert!(!t.columns().nth(2).unwrap().is_null());
        assert_eq!(t.columns().nth(3).unwrap().as_str(), Some("42"));
    }

    #[test]
    fn zero_columns() {
        let t = TupleData::parse(&[0, 0]).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.columns().next(), None);
    }

    #[test]
    fn bad_tuples_are_typed_errors() {
        let e = TupleData::parse(&[0, 1, b'x']).unwrap_err();
        assert_eq!(
            (e.kind(), e.offset()),
            (ErrorKind::UnknownColumnKind(b'x'), 2)
        );
        // A huge column count in a tiny message is rejected before any loop over it.
        let e = TupleData::parse(&[0xFF, 0xFF, b'n']).unwrap_err();
        assert_eq!(
            (e.kind(), e.offset()),
            (ErrorKind::CountOutOfBounds(65535), 0)
        );
        // An inflated length names itself and its offset.
        let e = TupleData::parse(&[0, 1, b't', 0x7F, 0xFF, 0xFF, 0xFF, b'a']).unwrap_err();
        assert_eq!(
            (e.kind(), e.offset()),
            (ErrorKind::LengthOutOfBounds(0x7FFF_FFFF), 3)
        );
        let e = TupleData::parse(&[0, 1, b'b', 0xFF, 0xFF, 0xFF, 0xFF]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NegativeLength(-1));
        let e = TupleData::parse(&[0, 1, b'n', b'n']).unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::TrailingBytes, 3));
    }

    #[test]
    fn truncation_at_every_byte_is_an_error() {
        let bytes = tuple_bytes(&[
            Column::Text(b"hello"),
            Column::Null,
            Column::Binary(b"\x01"),
        ]);
        for cut in 0..bytes.len() {
            assert!(TupleData::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}

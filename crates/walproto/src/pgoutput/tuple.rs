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
    #[inline(always)]
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        let at = r.offset();
        let ncols = r.u16()?;
        // Every column takes at least its kind byte.
        r.check_count(u32::from(ncols), 1, at)?;
        let rest = r.rest();
        // A length with its top bit set is negative, never a value's; below 2 GiB of columns
        // such a length is also longer than what is left, which the walk checks anyway.
        let walked = if rest.len() <= i32::MAX as usize {
            walk_columns::<false>(rest, ncols)
        } else {
            walk_columns::<true>(rest, ncols)
        };
        match walked {
            Ok(len) => Ok(TupleData {
                ncols,
                data: r.bytes(len)?,
            }),
            Err(bad) => Err(column_error(r, rest, bad)),
        }
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

/// Walks `ncols` columns at the start of `data`: the length they take, or the offset in `data`
/// of the first bad one (for [`column_error`] to name).
///
/// This runs once per column of every row, so it works on the slice directly rather than
/// through the reader's per-field calls, and each column is one slice pattern: a value's kind
/// and length come with one bounds check, values first (the common case). `SIGNED` checks that
/// lengths are not negative, which only columns of 2 GiB or more need (see
/// [`TupleData::read`]).
#[inline(never)]
fn walk_columns<const SIGNED: bool>(data: &[u8], ncols: u16) -> Result<usize, usize> {
    let mut rest = data;
    for _ in 0..ncols {
        rest = match rest {
            [TEXT | BINARY, l0, l1, l2, l3, value @ ..] => {
                let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]);
                match value.get(len as usize..) {
                    Some(after) if !SIGNED || len <= i32::MAX as u32 => after,
                    _ => return Err(data.len() - rest.len()),
                }
            }
            [NULL | UNCHANGED_TOAST, after @ ..] => after,
            _ => return Err(data.len() - rest.len()),
        };
    }
    Ok(data.len() - rest.len())
}

/// The error for the column at offset `bad` of `columns` (what `r` had left after the count),
/// which [`walk_columns`] found bad: the same kinds and offsets as reading it field by field
/// would give.
#[cold]
#[inline(never)]
fn column_error(r: &Reader<'_>, columns: &[u8], bad: usize) -> Error {
    let at = r.offset() + bad;
    let rest = columns.get(bad..).unwrap_or_default();
    let Some((&kind, after)) = rest.split_first() else {
        return r.error_at(ErrorKind::UnexpectedEof, at);
    };
    if !matches!(kind, TEXT | BINARY) {
        return r.error_at(ErrorKind::UnknownColumnKind(kind), at);
    }
    let Some((len, _)) = after.split_first_chunk::<4>() else {
        return r.error_at(ErrorKind::UnexpectedEof, at + 1);
    };
    let len = i32::from_be_bytes(*len);
    match u32::try_from(len) {
        Err(_) => r.error_at(ErrorKind::NegativeLength(len), at + 1),
        // The walk only stops at a value whose length is negative or too long.
        Ok(n) => r.error_at(ErrorKind::LengthOutOfBounds(n), at + 1),
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
        // The tuple was validated when parsed: its bytes are exactly `left` columns, so the
        // columns end with the bytes, and neither `None` below can come early; they are here
        // so that even a bug elsewhere could not turn into a panic.
        let (column, rest) = match self.rest {
            // Values first: they are the common case.
            [kind @ (TEXT | BINARY), l0, l1, l2, l3, rest @ ..] => {
                let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]);
                let (value, rest) = rest.split_at_checked(len as usize)?;
                let column = if *kind == BINARY {
                    Column::Binary(value)
                } else {
                    Column::Text(value)
                };
                (column, rest)
            }
            [NULL, rest @ ..] => (Column::Null, rest),
            // Validation let nothing else through.
            [_, rest @ ..] => (Column::UnchangedToast, rest),
            [] => return None,
        };
        self.rest = rest;
        self.left = self.left.saturating_sub(1);
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
    fn columns_count_down_to_the_end() {
        let bytes = tuple_bytes(&[Column::Text(b"a"), Column::Null, Column::UnchangedToast]);
        let t = TupleData::parse(&bytes).unwrap();
        let mut columns = t.columns();
        for left in (0..3).rev() {
            assert!(columns.next().is_some());
            assert_eq!(columns.len(), left);
        }
        assert_eq!(columns.next(), None);
        assert_eq!(columns.len(), 0);
    }

    #[test]
    fn the_walk_with_and_without_sign_checks_agree() {
        // Below 2 GiB a negative length is also too long, so both walks refuse it at its
        // column; on good columns both give the length they take.
        let good = tuple_bytes(&[Column::Text(b"hi"), Column::Null, Column::Binary(b"")]);
        let body = &good[2..];
        assert_eq!(walk_columns::<false>(body, 3), Ok(body.len()));
        assert_eq!(walk_columns::<true>(body, 3), Ok(body.len()));
        let negative = [b'n', b't', 0xFF, 0xFF, 0xFF, 0xFE, b'x'];
        assert_eq!(walk_columns::<false>(&negative, 2), Err(1));
        assert_eq!(walk_columns::<true>(&negative, 2), Err(1));
        // Fewer than five bytes left: a NULL still fits, a value's length does not.
        assert_eq!(walk_columns::<false>(b"un", 2), Ok(2));
        assert_eq!(walk_columns::<false>(&[b'n', b't', 0, 0], 2), Err(1));
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

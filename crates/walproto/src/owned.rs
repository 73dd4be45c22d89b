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
}

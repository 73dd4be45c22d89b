//! PostgreSQL's binary `COPY` format turned into pgoutput tuples with binary values, the form
//! the stream's insert events carry.
//!
//! The hot path of the initial snapshot: every row of every table goes through
//! [`CopyParser::rows`]. A row whole in the chunk it came in (the server sends one CopyData
//! message per row) is read straight from the chunk and written once, into a buffer that many
//! rows share, so a row costs no allocation of its own; only a row split across chunks is
//! gathered in a buffer first.

use bytes::{Buf, BufMut, BytesMut};
use walproto::owned::TupleBuf;
use walproto::pgoutput::TupleData;

/// The signature that starts a binary `COPY` stream.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Tuples are written into buffers of this size, each shared by the rows written into it: one
/// allocation per buffer, not per row. A row kept alive keeps its buffer alive, as a streamed
/// row keeps the connection's read buffer (see `TupleBuf::detached`).
const OUT_CHUNK: usize = 64 * 1024;

/// A new buffer is started when the current one has less than this left, so that most rows
/// fit in what is left and few are copied while the buffer grows.
const MIN_SPARE: usize = 2 * 1024;

/// Parses PostgreSQL's binary `COPY` format into pgoutput tuples with binary values.
///
/// Call sequence: [`new`](Self::new) with the number of columns, then either
/// [`rows`](Self::rows) with each chunk of the stream, or [`feed`](Self::feed) with each chunk
/// and [`next_row`](Self::next_row) until it returns `None`; at the end
/// [`finished`](Self::finished) says whether the trailer was seen. Both ways give the same rows
/// and errors, however the stream is chunked.
pub(crate) struct CopyParser {
    /// Bytes fed but not yet parsed: a row (or the header) that began in an earlier chunk.
    pending: BytesMut,
    state: State,
}

/// Where the parser is, and where it writes.
struct State {
    /// The tuples' buffer: empty between rows (each row is split off once written).
    out: BytesMut,
    columns: usize,
    header_done: bool,
    trailer_seen: bool,
}

/// What one step consumed: its bytes, and the row when it was one.
type Step = (usize, Option<TupleBuf>);

impl CopyParser {
    pub(crate) fn new(columns: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            state: State {
                out: BytesMut::new(),
                columns,
                header_done: false,
                trailer_seen: false,
            },
        }
    }

    /// Adds `chunk` to what [`next_row`](Self::next_row) reads.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
    }

    /// Whether the trailer was seen: the stream is complete.
    pub(crate) fn finished(&self) -> bool {
        self.state.trailer_seen
    }

    /// The next whole row of what was fed, `None` when more bytes are needed (or after the
    /// trailer).
    pub(crate) fn next_row(&mut self) -> Result<Option<TupleBuf>, String> {
        while let Some((used, row)) = self.state.step(&self.pending)? {
            self.pending.advance(used);
            if row.is_some() {
                return Ok(row);
            }
        }
        Ok(None)
    }

    /// Parses `chunk`, the next part of the stream, handing each whole row to `row`. Rows whole
    /// in `chunk` are read from it directly; a row that continues in the next chunk is kept.
    pub(crate) fn rows(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(TupleBuf),
    ) -> Result<(), String> {
        if !self.pending.is_empty() {
            self.feed(chunk);
            while let Some(tuple) = self.next_row()? {
                row(tuple);
            }
            return Ok(());
        }
        let mut input = chunk;
        while let Some((used, tuple)) = self.state.step(input)? {
            input = input.get(used..).unwrap_or_default();
            if let Some(tuple) = tuple {
                row(tuple);
            }
        }
        if !self.state.trailer_seen {
            self.pending.extend_from_slice(input);
        }
        Ok(())
    }
}

impl State {
    /// Reads the header, one row or the trailer from the start of `input`: `None` when
    /// `input` does not hold the whole of it yet (or after the trailer).
    fn step(&mut self, input: &[u8]) -> Result<Option<Step>, String> {
        if self.trailer_seen {
            return Ok(None);
        }
        if !self.header_done {
            return self.header(input);
        }
        let Some(count) = input.first_chunk::<2>().map(|b| i16::from_be_bytes(*b)) else {
            return Ok(None);
        };
        if count == -1 {
            self.trailer_seen = true;
            return Ok(Some((2, None)));
        }
        if usize::try_from(count).ok() != Some(self.columns) {
            return Err(format!(
                "a row of {count} fields for {} columns",
                self.columns
            ));
        }
        match self.row(input, count.unsigned_abs()) {
            Some(at) => {
                let tuple = self.out.split().freeze();
                let view = TupleData::parse(&tuple).map_err(|e| e.to_string())?;
                let row = TupleBuf::from_view(&tuple, &view).ok_or("tuple")?;
                Ok(Some((at, Some(row))))
            }
            None => {
                self.out.clear();
                Ok(None)
            }
        }
    }

    /// The signature, flags and header extension.
    fn header(&mut self, input: &[u8]) -> Result<Option<Step>, String> {
        let fixed = COPY_SIGNATURE.len() + 8;
        let Some(head) = input.get(..fixed) else {
            return Ok(None);
        };
        if !head.starts_with(COPY_SIGNATURE) {
            return Err("not a binary COPY stream".into());
        }
        let ext = head
            .get(COPY_SIGNATURE.len() + 4..)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or("bad header")?;
        let total = usize::try_from(ext)
            .ok()
            .and_then(|e| e.checked_add(fixed))
            .ok_or("bad header")?;
        if input.len() < total {
            return Ok(None);
        }
        self.header_done = true;
        Ok(Some((total, None)))
    }

    /// Writes the row of `columns` fields at the start of `input` into `out` as a pgoutput
    /// tuple; returns the row's length in `input`, or `None` when `input` ends inside it (with
    /// `out` holding part of it). Nothing is written for bytes `input` does not have, so `out`
    /// grows by at most about the length of `input`.
    fn row(&mut self, input: &[u8], columns: u16) -> Option<usize> {
        if self.out.capacity() < MIN_SPARE {
            self.out = BytesMut::with_capacity(OUT_CHUNK);
        }
        self.out.put_u16(columns);
        let mut at = 2;
        for _ in 0..columns {
            let field = input.get(at..)?;
            let len = i32::from_be_bytes(*field.first_chunk::<4>()?);
            let Ok(len) = usize::try_from(len) else {
                // -1 (any negative length) is NULL.
                self.out.put_u8(b'n');
                at += 4;
                continue;
            };
            // The length as COPY sends it is the length pgoutput sends: the same four bytes.
            let field = field.get(..len.checked_add(4)?)?;
            self.out.put_u8(b'b');
            self.out.extend_from_slice(field);
            at += field.len();
        }
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use walproto::owned::ColumnValue;

    fn stream(rows: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut v = COPY_SIGNATURE.to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        for row in rows {
            v.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for f in *row {
                match f {
                    None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        v.extend_from_slice(b);
                    }
                }
            }
        }
        v.extend_from_slice(&(-1i16).to_be_bytes());
        v
    }

    fn expected() -> Vec<Vec<ColumnValue>> {
        vec![
            vec![
                ColumnValue::Binary(Bytes::from_static(b"\0\0\0\x01")),
                ColumnValue::Null,
            ],
            vec![
                ColumnValue::Binary(Bytes::from_static(b"\0\0\0\x02")),
                ColumnValue::Binary(Bytes::new()),
            ],
        ]
    }

    #[test]
    fn binary_copy_rows_in_any_chunking() {
        let data = stream(&[
            &[Some(b"\0\0\0\x01"), None],
            &[Some(b"\0\0\0\x02"), Some(b"")],
        ]);
        for chunk in [1, 3, 7, data.len()] {
            let mut p = CopyParser::new(2);
            let mut rows = Vec::new();
            for c in data.chunks(chunk) {
                p.feed(c);
                while let Some(t) = p.next_row().unwrap() {
                    rows.push(t.values().collect::<Vec<_>>());
                }
            }
            assert!(p.finished());
            assert_eq!(rows, expected());
            // The same through `rows`, which reads whole rows from the chunk itself.
            let mut p = CopyParser::new(2);
            let mut rows = Vec::new();
            for c in data.chunks(chunk) {
                p.rows(c, |t| rows.push(t.values().collect::<Vec<_>>()))
                    .unwrap();
            }
            assert!(p.finished(), "chunks of {chunk}");
            assert_eq!(rows, expected(), "chunks of {chunk}");
        }
    }

    #[test]
    fn rows_share_buffers_and_big_rows_fit() {
        let big = vec![7u8; 3 * OUT_CHUNK];
        let small: &[u8] = b"abc";
        let mut rows: Vec<&[Option<&[u8]>]> = Vec::new();
        let many = [Some(small)];
        let huge = [Some(big.as_slice())];
        for i in 0..5000 {
            rows.push(if i == 2500 { &huge } else { &many });
        }
        let data = stream(&rows);
        let mut p = CopyParser::new(1);
        let mut got = Vec::new();
        p.rows(&data, |t| got.push(t)).unwrap();
        assert!(p.finished());
        assert_eq!(got.len(), 5000);
        assert_eq!(
            got[2500].values().next(),
            Some(ColumnValue::Binary(big.into()))
        );
        assert_eq!(
            got[4999].values().next(),
            Some(ColumnValue::Binary(Bytes::from_static(b"abc")))
        );
    }

    #[test]
    fn a_wrong_field_count_or_signature_is_an_error() {
        let mut p = CopyParser::new(3);
        p.feed(&stream(&[&[None]]));
        assert!(p.next_row().is_err());
        let mut p = CopyParser::new(3);
        assert!(p.rows(&stream(&[&[None]]), |_| {}).is_err());
        let mut p = CopyParser::new(1);
        p.feed(b"PGCOPY\nXXXXXXXXXXXXXXXXXXXX");
        assert!(p.next_row().is_err());
    }
}

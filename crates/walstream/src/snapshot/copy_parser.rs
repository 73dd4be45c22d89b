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
/// [`rows`](Self::rows) with the stream's chunks as they come, or [`feed`](Self::feed) with
/// each chunk and [`next_row`](Self::next_row) until it returns `None`; at the end
/// [`finished`](Self::finished) says whether the trailer was seen. Both ways give the same rows
/// and errors, however the stream is chunked.
pub(crate) struct CopyParser {
    /// Bytes fed but not yet parsed: a row (or the header) that began in an earlier chunk.
    pending: BytesMut,
    state: State,
}

/// Where the parser is, and what it wrote.
struct State {
    /// Tuples written and not yet handed out, one after another.
    out: BytesMut,
    /// Where each of them lies in `out`.
    spans: Vec<(usize, usize)>,
    columns: usize,
    header_done: bool,
    trailer_seen: bool,
}

impl CopyParser {
    pub(crate) fn new(columns: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            state: State {
                out: BytesMut::new(),
                spans: Vec::new(),
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
        let mut got = None;
        while got.is_none() {
            self.state.make_room(&mut |t| got = Some(t))?;
            let Some(used) = self.state.step(&self.pending)? else {
                break;
            };
            self.pending.advance(used);
            self.state.flush(&mut |t| got = Some(t))?;
        }
        Ok(got)
    }

    /// Parses `chunks`, the next parts of the stream, handing each whole row to `row`. Rows
    /// whole in a chunk are read from it directly, and the rows of all of `chunks` are handed
    /// out as slices of one buffer; a row that continues past the last chunk is kept for the
    /// next call.
    pub(crate) fn rows<'a>(
        &mut self,
        chunks: impl IntoIterator<Item = &'a [u8]>,
        mut row: impl FnMut(TupleBuf),
    ) -> Result<(), String> {
        for chunk in chunks {
            if self.state.trailer_seen {
                break;
            }
            if self.pending.is_empty() {
                let mut input = chunk;
                loop {
                    self.state.make_room(&mut row)?;
                    let Some(used) = self.state.step(input)? else {
                        break;
                    };
                    input = input.get(used..).unwrap_or_default();
                }
                if !self.state.trailer_seen {
                    self.pending.extend_from_slice(input);
                }
            } else {
                self.pending.extend_from_slice(chunk);
                loop {
                    self.state.make_room(&mut row)?;
                    let Some(used) = self.state.step(&self.pending)? else {
                        break;
                    };
                    self.pending.advance(used);
                }
            }
        }
        self.state.flush(&mut row)
    }
}

impl State {
    /// Reads the header, one row or the trailer from the start of `input`, a row into `out`
    /// and `spans`; returns the bytes it took, `None` when `input` does not hold the whole of
    /// it yet (or after the trailer).
    fn step(&mut self, input: &[u8]) -> Result<Option<usize>, String> {
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
            return Ok(Some(2));
        }
        if usize::try_from(count).ok() != Some(self.columns) {
            return Err(format!(
                "a row of {count} fields for {} columns",
                self.columns
            ));
        }
        let start = self.out.len();
        match self.row(input, count.unsigned_abs()) {
            Some(at) => {
                self.spans.push((start, self.out.len()));
                Ok(Some(at))
            }
            None => {
                self.out.truncate(start);
                Ok(None)
            }
        }
    }

    /// Hands the rows written so far to `row`, as slices of one buffer.
    fn flush(&mut self, row: &mut impl FnMut(TupleBuf)) -> Result<(), String> {
        if self.spans.is_empty() {
            return Ok(());
        }
        let all = self.out.split().freeze();
        for (start, end) in self.spans.drain(..) {
            let tuple = all.get(start..end).ok_or("a tuple outside its buffer")?;
            let view = TupleData::parse(tuple).map_err(|e| e.to_string())?;
            row(TupleBuf::from_view(&all, &view).ok_or("a tuple outside its buffer")?);
        }
        Ok(())
    }

    /// Starts a new buffer when the current one is nearly full, handing out its rows first.
    fn make_room(&mut self, row: &mut impl FnMut(TupleBuf)) -> Result<(), String> {
        if self.out.capacity() - self.out.len() < MIN_SPARE {
            self.flush(row)?;
            self.out = BytesMut::with_capacity(OUT_CHUNK);
        }
        Ok(())
    }

    /// The signature, flags and header extension.
    fn header(&mut self, input: &[u8]) -> Result<Option<usize>, String> {
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
        Ok(Some(total))
    }

    /// Writes the row of `columns` fields at the start of `input` into `out` as a pgoutput
    /// tuple; returns the row's length in `input`, or `None` when `input` ends inside it (with
    /// `out` holding part of it). Nothing is written for bytes `input` does not have, so `out`
    /// grows by at most about the length of `input`.
    fn row(&mut self, input: &[u8], columns: u16) -> Option<usize> {
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
                p.rows([c], |t| rows.push(t.values().collect::<Vec<_>>()))
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
        p.rows(data.chunks(1000), |t| got.push(t)).unwrap();
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
        assert!(p.rows([stream(&[&[None]]).as_slice()], |_| {}).is_err());
        let mut p = CopyParser::new(1);
        p.feed(b"PGCOPY\nXXXXXXXXXXXXXXXXXXXX");
        assert!(p.next_row().is_err());
    }
}

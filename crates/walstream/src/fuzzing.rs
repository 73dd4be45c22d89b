//! Entry points for walstream's fuzz targets in `fuzz/` (as `walproto::fuzzing` holds
//! walproto's): each target is one line calling one of these, so the logic is built, linted
//! and tested with the crate. Each function must never panic, whatever the input; errors are
//! fine.

use bytes::Bytes;
use walproto::replication::{ServerMessage, XLogData};
use walproto::{Lsn, Oid, Timestamp};

use crate::logical::follow::Follower;
use crate::snapshot::CopyParser;
use crate::transaction::{TransactionAssembler, TransactionConfig};
use crate::value::{oid, Value};

/// The snapshot's binary `COPY` parser: the first byte is the column count (0-15) and the
/// chunk size (1-16), the rest the stream. Fed in chunks or whole, the rows, the error and
/// whether the trailer was seen are the same.
pub fn snapshot_copy(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let columns = usize::from(first & 0x0F);
    let chunk = usize::from(first >> 4) + 1;
    let whole = copy_rows(columns, stream, stream.len().max(1));
    let chunked = copy_rows(columns, stream, chunk);
    assert_eq!(whole, chunked, "{columns} columns in chunks of {chunk}");
}

/// The rows of a binary `COPY` stream fed `chunk` bytes at a time, the first error, and
/// whether the trailer was seen.
type CopyRows = (Vec<Vec<walproto::owned::ColumnValue>>, Option<String>, bool);

fn copy_rows(columns: usize, stream: &[u8], chunk: usize) -> CopyRows {
    let mut parser = CopyParser::new(columns);
    let mut rows = Vec::new();
    for c in stream.chunks(chunk) {
        parser.feed(c);
        loop {
            match parser.next_row() {
                Ok(Some(row)) => rows.push(row.values().collect()),
                Ok(None) => break,
                Err(e) => return (rows, Some(e), parser.finished()),
            }
        }
    }
    (rows, None, parser.finished())
}

/// The value decoders: the first byte picks a type the [`oid`] module knows (or, past them,
/// one it does not), the second the format (even: text, odd: binary); the rest is the value.
/// What decodes as text is also decoded through [`Value::decode`]'s text path.
pub fn value_decode(data: &[u8]) {
    let [which, format, value @ ..] = data else {
        return;
    };
    let type_oid = oid::NAMES
        .get(usize::from(*which))
        .map_or(Oid(u32::from(*which)), |&(o, _)| o);
    if format % 2 == 0 {
        if let Ok(text) = std::str::from_utf8(value) {
            let _ = Value::decode_text(type_oid, text);
        }
    } else {
        let _ = Value::decode_binary(type_oid, &Bytes::copy_from_slice(value));
    }
}

/// The [`Follower`] and a [`TransactionAssembler`] over a sequence of pgoutput messages: the
/// first byte picks the context (`walproto::fuzzing::context_from_byte`; bit 4 raw mode, bit
/// 7 a memory budget of 4 KiB so transactions spill), then each message is a big-endian
/// `u16` length and that many bytes, carried in an XLogData as the server sends it. Every
/// event the follower gives goes to the assembler, every finished transaction's changes are
/// read back; following stops at the first error, as the stream does.
pub fn follow_assemble(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let ctx = walproto::fuzzing::context_from_byte(first);
    let mut follower = Follower::new(ctx.version, ctx.streaming, first & 0x10 != 0);
    let mut config = TransactionConfig::default();
    if first & 0x80 != 0 {
        config = config.memory_budget(4096);
    }
    let mut assembler = TransactionAssembler::new(config);
    let mut lsn = 0x100;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        let mut frame = Vec::with_capacity(25 + msg.len());
        ServerMessage::XLogData(XLogData {
            wal_start: Lsn::new(lsn),
            wal_end: Lsn::new(lsn + 8),
            send_time: Timestamp::new(0),
            data: msg,
        })
        .encode(&mut frame);
        lsn += 8;
        let frame = Bytes::from(frame);
        let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(&frame) else {
            unreachable!("an encoded XLogData parses");
        };
        let Ok(followed) = follower.follow(&frame, &x) else {
            return;
        };
        let _ = follower.between_transactions();
        if assembler.push(followed.event).is_err() {
            return;
        }
        while let Some(transaction) = assembler.pop() {
            for change in transaction.changes() {
                let _ = change;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inputs of `testdata/malformed/` for walstream's targets
    /// (`pgtest::testdata::fuzz_regressions` says which must exist).
    #[test]
    fn fuzz_regressions() {
        pgtest::testdata::fuzz_regressions("walstream", |target| {
            Some(match target {
                "snapshot_copy" => snapshot_copy,
                "value_decode" => value_decode,
                "follow_assemble" => follow_assemble,
                _ => return None,
            })
        });
    }

    /// Every known type, in both formats, on a few values.
    #[test]
    fn every_type_both_formats() {
        for which in 0..=u8::try_from(oid::NAMES.len()).unwrap() {
            for format in 0..2 {
                for value in [
                    &b""[..],
                    b"1",
                    b"\0\0\0\x01\0\0\0\0\0\0\0\x17\0\0\0\x01\0\0\0\x01",
                ] {
                    let mut data = vec![which, format];
                    data.extend_from_slice(value);
                    value_decode(&data);
                }
            }
        }
    }
}

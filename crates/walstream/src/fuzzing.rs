//! Entry points for walstream's fuzz targets in `fuzz/` (as `walproto::fuzzing` holds
//! walproto's): each target is one line calling one of these, so the logic is built, linted
//! and tested with the crate. Each function must never panic, whatever the input; errors are
//! fine.

use bytes::Bytes;
use walproto::replication::{ServerMessage, XLogData};
use walproto::{Lsn, Timestamp};

use crate::backup::{Manifest, TarEntry, TarError, TarEvent, TarReader, BLOCK};
use crate::logical::follow::Follower;
use crate::snapshot::CopyParser;
use crate::transaction::{TransactionAssembler, TransactionConfig};
#[cfg(feature = "typed")]
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
#[cfg(feature = "typed")]
pub fn value_decode(data: &[u8]) {
    let [which, format, value @ ..] = data else {
        return;
    };
    let type_oid = oid::DECODED
        .get(usize::from(*which))
        .map_or(walproto::Oid(u32::from(*which)), oid::of);
    if format % 2 == 0 {
        if let Ok(text) = std::str::from_utf8(value) {
            let _ = Value::decode_text(type_oid, text);
        }
    } else {
        let _ = Value::decode_binary(type_oid, &Bytes::copy_from_slice(value));
    }
}

/// The `Follower` and a [`TransactionAssembler`] over a sequence of pgoutput messages: the
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

/// The base backup tar reader ([`TarReader`]): the first byte is the chunk size (bits 0-6,
/// 1-128) and, in bit 7, whether every non-zero 512-byte block at a block boundary gets its
/// correct header checksum first (so that the fuzzer gets past the checksum into the fields;
/// headers are always at block boundaries); the rest is the archive. Fed in chunks or whole,
/// the entries, each file's data, the error and the offset are the same; a file's data is
/// exactly its stated size when its end is reported, and no more data comes out than went in
/// (the reader allocates nothing by a size it reads).
pub fn tar_reader(data: &[u8]) {
    let Some((&first, archive)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first & 0x7f) + 1;
    let mut archive = archive.to_vec();
    if first & 0x80 != 0 {
        for block in archive.chunks_exact_mut(BLOCK) {
            if block.iter().any(|&b| b != 0) {
                set_tar_checksum(block);
            }
        }
    }
    let whole = tar_events(&archive, archive.len().max(1));
    let chunked = tar_events(&archive, chunk);
    assert_eq!(whole, chunked, "in chunks of {chunk}");
}

/// Writes a ustar header's checksum (the sum of its bytes with the field as spaces) into its
/// `chksum` field (bytes 148-155), as six octal digits, a NUL and a space.
fn set_tar_checksum(block: &mut [u8]) {
    if let Some(field) = block.get_mut(148..156) {
        field.fill(b' ');
    }
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    if let Some(field) = block.get_mut(148..156) {
        field.copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
}

/// What [`tar_reader`] compares: each entry with the length and a hash of its data, whether
/// the end marker was read, the first error (from `next_event` or `finish`), and the final
/// offset when there was none (after an error, how far the reader got depends on the chunks
/// it was given; the error's own offset does not).
type TarRead = (
    Vec<(TarEntry, u64, u64)>,
    bool,
    Option<TarError>,
    Option<u64>,
);

fn tar_events(archive: &[u8], chunk: usize) -> TarRead {
    use std::hash::Hasher;
    let mut reader = TarReader::new("fuzz.tar");
    let mut entries: Vec<(TarEntry, u64, u64)> = Vec::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let (mut open, mut ended, mut out) = (false, false, 0u64);
    let mut error = None;
    'chunks: for c in archive.chunks(chunk) {
        reader.push(Bytes::copy_from_slice(c));
        loop {
            match reader.next_event() {
                Ok(None) => break,
                Ok(Some(TarEvent::Entry(entry))) => {
                    assert!(!open, "an entry inside {:?}", entries.last());
                    assert!(entry.path.is_relative(), "{entry:?}");
                    open = true;
                    hasher = std::collections::hash_map::DefaultHasher::new();
                    entries.push((entry, 0, 0));
                }
                Ok(Some(TarEvent::Data(d))) => {
                    assert!(open, "data outside an entry");
                    out += d.len() as u64;
                    // Raw bytes: the hash of the data, however it was split.
                    hasher.write(&d);
                    if let Some(last) = entries.last_mut() {
                        last.1 += d.len() as u64;
                        last.2 = hasher.finish();
                    }
                }
                Ok(Some(TarEvent::EntryEnd)) => {
                    assert!(open, "an entry end outside an entry");
                    open = false;
                    if let Some((entry, len, _)) = entries.last() {
                        assert_eq!(entry.size, *len, "{entry:?}");
                    }
                }
                Ok(Some(TarEvent::End)) => ended = true,
                Err(e) => {
                    error = Some(e);
                    break 'chunks;
                }
            }
        }
    }
    if error.is_none() {
        error = reader.finish().err();
    }
    assert!(
        out <= archive.len() as u64,
        "{out} data bytes out of {}",
        archive.len()
    );
    assert!(reader.offset() <= archive.len() as u64);
    assert_eq!(ended, reader.is_done());
    let offset = error.is_none().then(|| reader.offset());
    (entries, ended, error, offset)
}

/// The backup manifest parser ([`Manifest::parse`]), on the input as it is and with a
/// correct `Manifest-Checksum` line appended (the SHA-256 of the input, up to a newline
/// added if it lacks one), so that the fuzzer reaches past the checksum into the fields.
pub fn backup_manifest(data: &[u8]) {
    use sha2::Digest;
    let _ = Manifest::parse(data);
    let mut text = data.to_vec();
    if text.last() != Some(&b'\n') {
        text.push(b'\n');
    }
    let sum: String = sha2::Sha256::digest(&text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    text.extend_from_slice(format!("\"Manifest-Checksum\": \"{sum}\"}}\n").as_bytes());
    if let Ok(manifest) = Manifest::parse(&text) {
        for file in &manifest.files {
            let _ = file.path.components().count();
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
                "tar_reader" => tar_reader,
                "backup_manifest" => backup_manifest,
                _ => return None,
            })
        });
    }

    /// The fuzz seeds of `testdata/backup/` are a real backup's: each archive reads to its
    /// end marker with its members whole, the manifest parses (and its text before the
    /// checksum line parses once the target appends one), and each hostile input of
    /// `testdata/malformed/tar_reader` fails as its name says.
    #[test]
    fn backup_seeds_are_real_and_whole() {
        let dir = pgtest::testdata::dir().join("backup");
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        for (archive, members) in [("base-excerpt.tar", 9), ("16384.tar", 1)] {
            let bytes = read(archive);
            let (entries, ended, error, offset) = tar_events(&bytes, 100);
            assert!(ended && error.is_none(), "{archive}: {error:?}");
            assert_eq!(entries.len(), members, "{archive}: {entries:?}");
            assert_eq!(offset, Some(bytes.len() as u64));
            for prefix in [0x00, 0x86] {
                tar_reader(&[&[prefix], &bytes[..]].concat());
            }
        }
        let text = read("backup_manifest");
        let manifest = Manifest::parse(&text).unwrap();
        assert_eq!(manifest.files.len(), 6);
        assert_eq!(manifest.wal_ranges.len(), 1);
        let marker = b"\"Manifest-Checksum\"";
        let at = text.windows(marker.len()).position(|w| w == marker);
        backup_manifest(&text[..at.unwrap()]);

        let malformed = pgtest::testdata::dir().join("malformed/tar_reader");
        for (name, kind) in [
            (
                "size-of-4-eib-in-base-256-then-cut",
                "Truncated { member: Some(\"base/1/16384\") }",
            ),
            ("member-path-with-dotdot", "UnsafePath"),
            ("symlink-without-target-checksums-fixed", "BadEntry"),
            ("non-zero-byte-after-the-end-marker", "TrailingData"),
        ] {
            let input = std::fs::read(malformed.join(name)).unwrap();
            let mut archive = input[1..].to_vec();
            if input[0] & 0x80 != 0 {
                set_tar_checksum(&mut archive[..BLOCK]);
            }
            let (_, _, error, _) = tar_events(&archive, archive.len());
            let error = format!("{:?}", error.unwrap().kind());
            assert!(error.starts_with(kind), "{name}: {error}");
        }
    }

    /// Every known type, in both formats, on a few values.
    #[cfg(feature = "typed")]
    #[test]
    fn every_type_both_formats() {
        for which in 0..=u8::try_from(oid::DECODED.len()).unwrap() {
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

//! Malformed inputs give typed errors with in-range offsets, never panics.

use proptest::prelude::*;
use walproto::pgoutput::{Message, ParseContext};
use walproto::replication::ServerMessage;
use walproto::ErrorKind;

use crate::generate::{config, pgoutput, regressions};

/// The message of `case` encoded, and its context.
fn encoded(case: &walproto::fuzzing::PgoutputCase) -> (ParseContext, Vec<u8>) {
    case.with_message(|ctx, msg| {
        let mut bytes = Vec::new();
        msg.encode(&mut bytes);
        (ctx, bytes)
    })
}

proptest! {
    #![proptest_config(config(1000, regressions!("malformed")))]

    /// Every valid message, cut at every byte, is an error whose offset is within the cut.
    #[test]
    fn truncation_at_every_byte(case in pgoutput()) {
        let (ctx, bytes) = encoded(&case);
        for cut in 0..bytes.len() {
            let err = Message::parse(&bytes[..cut], ctx).unwrap_err();
            prop_assert!(err.offset() <= cut);
            prop_assert!(matches!(
                err.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::Empty | ErrorKind::UnterminatedString
                    | ErrorKind::LengthOutOfBounds(_) | ErrorKind::CountOutOfBounds(_)
            ), "{:?} at cut {}", err, cut);
        }
    }

    /// Flipping any byte of a valid message never panics, and whatever still parses
    /// re-encodes to bytes that parse to the same message.
    #[test]
    fn corruption_never_panics(case in pgoutput(), pos in any::<usize>(), val in any::<u8>()) {
        let (ctx, mut bytes) = encoded(&case);
        let i = pos % bytes.len();
        bytes[i] = val;
        if let Ok(m) = Message::parse(&bytes, ctx) {
            let mut again = Vec::new();
            m.encode(&mut again);
            prop_assert_eq!(Message::parse(&again, ctx), Ok(m));
        }
    }

    /// Arbitrary bytes under an arbitrary context: never a panic, offsets in range.
    #[test]
    fn arbitrary_bytes(first in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let ctx = walproto::fuzzing::context_from_byte(first);
        if let Err(e) = Message::parse(&data, ctx) {
            prop_assert!(e.offset() <= data.len());
        }
        if let Err(e) = ServerMessage::parse(&data) {
            prop_assert!(e.offset() <= data.len());
        }
        walproto::fuzzing::pgoutput_message(&data);
        walproto::fuzzing::decoder_sequence(&data);
    }
}

/// Lengths and counts far beyond the frame, in every message that has one.
#[test]
fn inflated_lengths_and_counts() {
    use walproto::pgoutput::{ProtocolVersion, Streaming};
    let ctx = ParseContext::new(ProtocolVersion::V1, Streaming::Off);
    let cases: &[(&[u8], ErrorKind, usize)] = &[
        // Insert with a tuple of 65535 columns in a few bytes.
        (
            b"I\0\0\0\x01N\xFF\xFFn",
            ErrorKind::CountOutOfBounds(65535),
            6,
        ),
        // Insert with a text value claiming 2 GiB.
        (
            b"I\0\0\0\x01N\0\x01t\x7F\xFF\xFF\xFFab",
            ErrorKind::LengthOutOfBounds(0x7FFF_FFFF),
            9,
        ),
        // A negative length that is not -1.
        (
            b"I\0\0\0\x01N\0\x01t\xFF\xFF\xFF\xFE",
            ErrorKind::NegativeLength(-2),
            9,
        ),
        // Truncate of 16 million relations.
        (
            b"T\0\xFF\xFF\xFF\0\0\0\0\x01",
            ErrorKind::CountOutOfBounds(0x00FF_FFFF),
            1,
        ),
        // Relation with 65535 columns in a 20-byte message.
        (
            b"R\0\0\0\x01s\0t\0d\xFF\xFF\0\0\0\0\0\0\0\0\0",
            ErrorKind::CountOutOfBounds(65535),
            10,
        ),
    ];
    for (bytes, kind, offset) in cases {
        let e = Message::parse(bytes, ctx).unwrap_err();
        assert_eq!((e.kind(), e.offset()), (*kind, *offset), "{bytes:?}");
        assert_eq!(e.tag(), Some(bytes[0]));
        // The error says what and where.
        let text = e.to_string();
        assert!(text.contains(&format!("at byte offset {offset}")), "{text}");
    }
}

/// Every input a fuzzer crashed on, in `testdata/malformed/<target>/`, through the function
/// that target calls: each must now pass (no panic, round trips hold). The rules (a directory
/// with inputs for every wire-bytes target, nothing else there) are
/// `pgtest::testdata::fuzz_regressions`'; walconn and walstream replay their own targets.
#[test]
fn fuzz_regressions() {
    pgtest::testdata::fuzz_regressions("walproto", |target| {
        Some(match target {
            "pgoutput_message" => walproto::fuzzing::pgoutput_message,
            "replication_message" => walproto::fuzzing::replication_message,
            "backup_message" => walproto::fuzzing::backup_message,
            "timeline_history" => walproto::fuzzing::timeline_history,
            "decoder_sequence" => walproto::fuzzing::decoder_sequence,
            "capture_file" => walproto::fuzzing::capture_file,
            "capture_header" => walproto::fuzzing::capture_header,
            _ => return None,
        })
    });
}

/// Archive stream messages with fixed fields, cut at every byte: an error within the cut,
/// naming the tag once it was read.
#[test]
fn backup_messages_cut_at_every_byte() {
    use walproto::backup::BackupMessage;
    let messages: &[&[u8]] = &[
        b"nbase.tar\0\0",
        b"n16384.tar\0/srv/tblspc/fast\0",
        b"p\0\0\0\0\0\x01\0\0",
    ];
    for bytes in messages {
        for cut in 0..bytes.len() {
            let e = BackupMessage::parse(&bytes[..cut]).unwrap_err();
            assert!(e.offset() <= cut, "{e:?} at cut {cut}");
            assert_eq!(e.tag(), bytes[..cut].first().copied());
            assert!(matches!(
                e.kind(),
                ErrorKind::Empty | ErrorKind::UnexpectedEof | ErrorKind::UnterminatedString
            ));
        }
    }
}

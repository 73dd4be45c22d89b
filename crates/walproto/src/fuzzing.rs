//! Entry points for the fuzz targets in `fuzz/`: each target is one line calling one of these,
//! so the harness stays trivial and the logic is built and linted with the crate.
//!
//! Each function must never panic, whatever the input; the fuzzer checks exactly that, and the
//! round-trip ones also assert that what parses re-encodes to the same bytes.

use alloc::vec::Vec;

use crate::backup::BackupMessage;
use crate::pgoutput::{Message, ParseContext, ProtocolVersion, Streaming};
use crate::replication::{ClientMessage, ServerMessage, XLogData};
use crate::timeline::{write_history, TimelineHistory};
use crate::{Decoder, Lsn, Timestamp};

// The generator needs the `arbitrary` crate, which the library itself does not.
#[cfg(feature = "arbitrary")]
mod generator;

#[cfg(feature = "arbitrary")]
pub use generator::{Case, PgoutputCase};

/// Every parse context: the first input byte picks one, the rest is the message.
pub fn context_from_byte(b: u8) -> ParseContext {
    let version = match b & 3 {
        0 => ProtocolVersion::V1,
        1 => ProtocolVersion::V2,
        2 => ProtocolVersion::V3,
        _ => ProtocolVersion::V4,
    };
    let streaming = match (b >> 2) % 3 {
        0 => Streaming::Off,
        1 => Streaming::On,
        _ => Streaming::Parallel,
    };
    ParseContext::new(version, streaming).in_stream(b & 0x20 != 0)
}

/// Parses a pgoutput message under the context chosen by the first byte; whatever parses must
/// encode back to exactly the input.
pub fn pgoutput_message(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let ctx = context_from_byte(first);
    if let Ok(msg) = Message::parse(rest, ctx) {
        let mut out = Vec::with_capacity(rest.len());
        msg.encode(&mut out);
        // Flags bytes that the parse turns into bools (StreamStart's first segment,
        // keepalive's reply flag) are the only lossy fields; everything else is exact.
        if !matches!(msg, Message::StreamStart(_)) {
            assert_eq!(out, rest, "re-encoding changed the bytes of {msg:?}");
        }
        assert_eq!(Message::parse(&out, ctx), Ok(msg));
    }
}

/// Parses replication CopyData messages in both directions.
pub fn replication_message(data: &[u8]) {
    if let Ok(msg) = ServerMessage::parse(data) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(ServerMessage::parse(&out), Ok(msg));
    }
    if let Ok(msg) = ClientMessage::parse(data) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(ClientMessage::parse(&out), Ok(msg));
    }
}

/// Parses a CopyData payload of `BASE_BACKUP`'s archive stream: whatever parses must encode
/// back to exactly the input, in as many bytes as `encoded_len` says.
pub fn backup_message(data: &[u8]) {
    if let Ok(msg) = BackupMessage::parse(data) {
        let mut out = Vec::with_capacity(msg.encoded_len());
        msg.encode(&mut out);
        assert_eq!(out, data, "re-encoding changed the bytes of {msg:?}");
        assert_eq!(msg.encoded_len(), out.len());
    }
}

/// Parses a timeline history file: its switches can be read without end, and written back
/// they give a file that parses to the same switches.
pub fn timeline_history(data: &[u8]) {
    if let Ok(history) = TimelineHistory::parse(data) {
        assert_eq!(history.switches().count(), history.len());
        let mut out = Vec::new();
        write_history(history.switches(), &mut out);
        let again = TimelineHistory::parse(&out);
        assert!(
            again.is_ok_and(|again| again.switches().eq(history.switches())),
            "written history {out:?} does not parse back"
        );
    }
}

/// Feeds a sequence of messages to a [`Decoder`]: the first byte picks the options, then each
/// message is a big-endian `u16` length and that many bytes.
pub fn decoder_sequence(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let ctx = context_from_byte(first);
    let mut decoder = Decoder::new(ctx.version, ctx.streaming).with_max_relations(64);
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        let _ = decoder.decode(msg);
        rest = tail;
    }
}

/// Reads a capture file and decodes every frame it holds, as `walstream decode` does.
pub fn capture_file(data: &[u8]) {
    let Ok(capture) = crate::capture::Capture::parse(data) else {
        return;
    };
    let mut decoder = Decoder::new(ProtocolVersion::V4, Streaming::Parallel).with_max_relations(64);
    let mut frames = capture.frames();
    while let Some(frame) = frames.next() {
        let Ok(frame) = frame else {
            // A bad frame is reported once, and the iterator ends there.
            assert!(frames.next().is_none(), "frames after an error");
            return;
        };
        if let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(frame.payload) {
            let _ = decoder.decode(x.data);
        }
    }
}

/// Reads a capture header line (feature `serde`): never a panic, and a header that parses
/// writes back to a line that parses to the same header.
#[cfg(feature = "serde")]
pub fn capture_header(data: &[u8]) {
    use crate::capture::Header;
    let Ok(line) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(header) = Header::from_json(line) {
        let _ = header.inconsistencies().count();
        let _ = header.options();
        let again = header.to_json();
        assert_eq!(Header::from_json(&again).ok(), Some(header), "{again}");
    }
}

/// A value for [`encode_parse`]: built by the generator (`Case::with_sample`, feature
/// `arbitrary`) that the `encode_parse` fuzz target and the property tests share, so every one
/// is valid under its context.
#[derive(Clone, Copy, Debug)]
pub enum Sample<'a> {
    /// A pgoutput message and the context it is valid under.
    Pgoutput(ParseContext, Message<'a>),
    /// A replication message from the server.
    Server(ServerMessage<'a>),
    /// A replication message from the client.
    Client(ClientMessage),
}

/// Encodes a valid value with walproto's encoders and parses it back: the parse must give the
/// same value, and re-encoding it the same bytes. A pgoutput message is also carried in an
/// XLogData, as the server sends it.
pub fn encode_parse(sample: Sample<'_>) {
    match sample {
        Sample::Pgoutput(ctx, msg) => {
            let mut bytes = Vec::new();
            msg.encode(&mut bytes);
            let parsed = Message::parse(&bytes, ctx);
            assert_eq!(parsed, Ok(msg), "{ctx:?}, bytes {bytes:?}");
            let mut again = Vec::new();
            if let Ok(parsed) = parsed {
                parsed.encode(&mut again);
            }
            assert_eq!(again, bytes, "re-encoding changed the bytes of {msg:?}");
            let xlog = ServerMessage::XLogData(XLogData {
                wal_start: Lsn::new(1),
                wal_end: Lsn::new(2),
                send_time: Timestamp::new(3),
                data: &bytes,
            });
            let mut frame = Vec::new();
            xlog.encode(&mut frame);
            let data = match ServerMessage::parse(&frame) {
                Ok(ServerMessage::XLogData(x)) => Some(x.data),
                _ => None,
            };
            assert_eq!(data.map(|d| Message::parse(d, ctx)), Some(Ok(msg)));
        }
        Sample::Server(msg) => {
            let mut bytes = Vec::new();
            msg.encode(&mut bytes);
            assert_eq!(ServerMessage::parse(&bytes), Ok(msg));
        }
        Sample::Client(msg) => {
            let mut bytes = Vec::new();
            msg.encode(&mut bytes);
            assert_eq!(ClientMessage::parse(&bytes), Ok(msg));
        }
    }
}

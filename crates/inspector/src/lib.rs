//! A capture inspector for the browser: walproto compiled to `wasm32-unknown-unknown` decodes a
//! `WALCAP1` capture file into the JSON lines of `walstream decode`, and says where each line's
//! message lies in the file so that a page can show its raw bytes.
//!
//! [`inspect`] does the work and is what the native tests call. The wasm module exports it as
//! a handful of plain functions over the module's memory (`src/wasm.rs`); `web/walcap.js` is
//! their one caller, shared by the page (`web/index.html`, `web/app.js`) and the Node.js test
//! (`tests/node.mjs`). `cargo xtask wasm` builds the module into a static site and `cargo
//! xtask wasm --test` runs it under Node.js and in headless Chromium.
//!
//! The decode loop below calls walproto exactly as the CLI's `decode.rs` does: the capture
//! framing, [`ServerMessage::parse`], one [`Decoder`] made from the capture header, then the
//! contract's JSON writer, [`walproto::json`], which the CLI uses too (with the untyped
//! values: the CLI's `--typed` goes through walstream, which does not build for wasm). The
//! tests hold the lines to the CLI's output for every recorded capture in `testdata/`, and its
//! error messages to the CLI's wording.
//!
//! ```
//! let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/pg16-v1.walcap"))?;
//! let found = walcap_inspector::inspect(&file);
//! assert_eq!(found.error, None);
//! assert_eq!(found.jsonl.lines().count(), found.messages.len());
//! assert!(found.jsonl.starts_with(r#"{"type":"begin","#));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;

use walproto::capture::{Capture, Header, MAGIC};
use walproto::pgoutput::Message;
use walproto::replication::{ServerMessage, XLOG_DATA_HEADER_LEN};
use walproto::{json, Decoder, Lsn, Xid};

pub mod wasm;

/// What [`inspect`] found in a capture file: everything that decoded, and the first problem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// The header line as the file has it (a JSON object), when the file has one.
    pub header: String,
    /// The JSON lines of `walstream decode` for the file, each ending in a newline, up to the
    /// first problem.
    pub jsonl: String,
    /// One entry per line of [`jsonl`](Self::jsonl), in order.
    pub messages: Vec<MessageInfo>,
    /// Primary keepalives read; like `walstream decode` without `--keepalives`, they have no
    /// line.
    pub keepalives: u64,
    /// Why decoding stopped before the end of the file, as `walstream decode` words it
    /// (`byte offset N, context: detail`); `None` when the whole file decoded.
    pub error: Option<String>,
}

/// Where one decoded message lies in the file, and which transaction it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageInfo {
    /// The file offset of its frame (the frame's 4-byte length prefix).
    pub frame_offset: usize,
    /// The frame's length in bytes, length prefix included.
    pub frame_len: usize,
    /// The xid of the transaction the message is part of: its own (Begin, the stream and
    /// two-phase messages) or that of the transaction or streamed block it came in. `None`
    /// for a message outside every transaction (a non-transactional logical decoding
    /// message).
    pub xid: Option<Xid>,
}

/// Decodes a whole capture file held in memory, as `walstream decode FILE` does, stopping at
/// the first problem with everything before it kept. Never panics, whatever `file` holds.
pub fn inspect(file: &[u8]) -> Inspection {
    let mut found = Inspection::default();
    if let Err(e) = decode(file, &mut found) {
        found.error = Some(e.to_string());
    }
    found
}

/// Why decoding stopped: worded as the CLI's `DecodeError::Data`.
struct Failure {
    /// The file offset of the problem.
    offset: usize,
    /// What was being read there, when known.
    context: Option<String>,
    /// What is wrong.
    detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte offset {}", self.offset)?;
        if let Some(c) = &self.context {
            write!(f, ", {c}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

fn decode(file: &[u8], found: &mut Inspection) -> Result<(), Failure> {
    let capture = Capture::parse(file).map_err(|e| framing_failure(file, e))?;
    found.header = capture.header().to_owned();
    let header = Header::from_json(capture.header()).map_err(|e| Failure {
        offset: MAGIC.len(),
        context: Some("capture header".to_owned()),
        detail: e.to_string(),
    })?;
    let mut decoder = Decoder::new(header.proto_version, header.streaming);
    // The xid of the last Begin or Begin Prepare: the transaction of the messages after it,
    // as long as the decoder says a transaction is open.
    let mut begun: Option<Xid> = None;
    for frame in capture.frames() {
        let frame = frame.map_err(|e| framing_failure(file, e))?;
        let payload_at = frame.offset + 4;
        let server_message = ServerMessage::parse(frame.payload).map_err(|e| Failure {
            offset: payload_at + e.offset(),
            context: Some(match e.tag() {
                Some(b'w') => "XLogData".to_owned(),
                Some(b'k') => "primary keepalive".to_owned(),
                Some(tag) => format!("replication message {}", json::tag_display(tag)),
                None => "replication message".to_owned(),
            }),
            detail: e.kind().to_string(),
        })?;
        let x = match server_message {
            ServerMessage::XLogData(x) => x,
            ServerMessage::PrimaryKeepalive(_) => {
                found.keepalives += 1;
                continue;
            }
            // `ServerMessage` is non-exhaustive; walproto parses no other kind today.
            _ => {
                return Err(Failure {
                    offset: payload_at,
                    context: None,
                    detail: "replication message of a kind this version cannot print".to_owned(),
                })
            }
        };
        let message_at = payload_at + XLOG_DATA_HEADER_LEN;
        let open = decoder
            .stream_xid()
            .or(if decoder.is_idle() { None } else { begun });
        let message = match decoder.decode(x.data) {
            Ok(decoded) => decoded.message,
            Err(e) => {
                return Err(Failure {
                    offset: message_at + e.offset(),
                    context: Some(message_context(e.tag(), x.wal_start)),
                    detail: e.kind().to_string(),
                })
            }
        };
        let line_start = found.jsonl.len();
        if let Err(e) = json::message(
            &mut found.jsonl,
            x.wal_start,
            &message,
            &decoder,
            json::untyped_value,
        ) {
            // The writer may have left part of a line.
            found.jsonl.truncate(line_start);
            return Err(Failure {
                offset: message_at,
                context: Some(message_context(Some(message.tag()), x.wal_start)),
                detail: e.to_string(),
            });
        }
        let xid = transaction_of(&message, open);
        if matches!(message, Message::Begin(_) | Message::BeginPrepare(_)) {
            begun = xid;
        }
        found.messages.push(MessageInfo {
            frame_offset: frame.offset,
            frame_len: frame.payload.len() + 4,
            xid,
        });
    }
    Ok(())
}

/// The transaction `message` belongs to: the xid it carries, else `open`, the transaction or
/// streamed block the decoder was in when it came.
fn transaction_of(message: &Message<'_>, open: Option<Xid>) -> Option<Xid> {
    match message {
        Message::Begin(m) => Some(m.xid),
        Message::BeginPrepare(m) => Some(m.xid),
        Message::StreamStart(m) => Some(m.xid),
        Message::StreamCommit(m) => Some(m.xid),
        Message::StreamAbort(m) => Some(m.xid),
        Message::Prepare(m) | Message::StreamPrepare(m) => Some(m.xid),
        Message::CommitPrepared(m) => Some(m.xid),
        Message::RollbackPrepared(m) => Some(m.xid),
        Message::Commit(_)
        | Message::Origin(_)
        | Message::Relation(_)
        | Message::Type(_)
        | Message::Insert(_)
        | Message::Update(_)
        | Message::Delete(_)
        | Message::Truncate(_)
        | Message::Message(_)
        | Message::StreamStop => open,
    }
}

/// A framing error (magic, header line, frame) in the words of the CLI's capture reader, whose
/// messages for a file that ends early say how far it got.
fn framing_failure(file: &[u8], e: walproto::Error) -> Failure {
    let offset = e.offset();
    let detail = match e.kind() {
        // The header has no end: the error is at the end of the file.
        walproto::ErrorKind::UnexpectedEof if offset == file.len() => format!(
            "the file ends after {} bytes, before the header line's newline",
            file.len()
        ),
        walproto::ErrorKind::UnexpectedEof => {
            let rest = file.get(offset..).unwrap_or_default();
            match rest.first_chunk::<4>() {
                Some(prefix) => format!(
                    "truncated frame: its length prefix says {} bytes of payload but the file \
                     ends after {} of them",
                    u32::from_be_bytes(*prefix),
                    rest.len() - 4
                ),
                None => format!(
                    "truncated frame: the file ends after {} of the 4 bytes of its length prefix",
                    rest.len()
                ),
            }
        }
        kind => kind.to_string(),
    };
    Failure {
        offset,
        context: None,
        detail,
    }
}

/// `insert message 'I' at LSN 0/16B3748`, for errors (as the CLI's `decode.rs` words it).
fn message_context(tag: Option<u8>, lsn: Lsn) -> String {
    match tag {
        Some(tag) => match json::type_name(tag) {
            Some(name) => format!("{name} message {} at LSN {lsn}", json::tag_display(tag)),
            None => format!("message type {} at LSN {lsn}", json::tag_display(tag)),
        },
        None => format!("pgoutput message at LSN {lsn}"),
    }
}

//! `walstream decode FILE [--keepalives] [--typed] [--format json|wal2json]`: a capture file
//! to JSON lines.
//!
//! The file is read frame by frame ([`CaptureReader`]), each frame parsed as a replication
//! CopyData message, each XLogData's pgoutput message run through one [`Decoder`] (created with
//! the protocol version and streaming mode the header names) and written as one JSON line
//! ([`json`]). The first bad frame or message stops the run: every line before it has been
//! written and flushed, and the error names its file offset and message type.

use std::fmt;
use std::io::{self, BufWriter, Read, Write};

use walproto::capture::{Header, MAGIC};
use walproto::replication::{ServerMessage, XLOG_DATA_HEADER_LEN};
use walproto::{Decoder, Lsn};

use crate::capture::{CaptureReader, Frame, ReadError};
use crate::json;

/// Capacity of the output buffer: large enough that a write reaches the pipe only every few
/// hundred lines.
const OUTPUT_BUFFER: usize = 64 * 1024;

/// Why a decode stopped early.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// The capture is not valid at `offset`; every line before it was written.
    Data {
        /// The file offset of the problem.
        offset: u64,
        /// What was being read there (a message type, a frame), when known.
        context: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// The options cannot show this capture (`--format wal2json` of a capture with streamed or
    /// prepared transactions).
    Usage(String),
    /// The capture could not be read.
    Input(io::Error),
    /// The output could not be written.
    Output(io::Error),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Data {
                offset,
                context,
                detail,
            } => {
                write!(f, "byte offset {offset}")?;
                if let Some(c) = context {
                    write!(f, ", {c}")?;
                }
                write!(f, ": {detail}")
            }
            DecodeError::Usage(m) => f.write_str(m),
            DecodeError::Input(e) => write!(f, "reading the capture: {e}"),
            DecodeError::Output(e) => write!(f, "writing the output: {e}"),
        }
    }
}

impl From<ReadError> for DecodeError {
    fn from(e: ReadError) -> Self {
        let offset = e.offset().unwrap_or(0);
        match e {
            ReadError::Io(e) => DecodeError::Input(e),
            e => DecodeError::Data {
                offset,
                context: None,
                detail: e.to_string(),
            },
        }
    }
}

/// What a successful decode went through.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Frames read.
    pub(crate) frames: u64,
    /// JSON lines written.
    pub(crate) lines: u64,
}

/// Decodes the capture read from `input` to JSON lines on `output`, in the format and with the
/// value rendering `style` asks for (`--keepalives` prints nothing with `--format wal2json`,
/// which has no such line).
///
/// Output goes through a buffer that is flushed before returning, also when the capture turns
/// out to be bad, so that the caller can print the error after every good line.
pub(crate) fn decode(
    input: impl Read,
    output: impl Write,
    keepalives: bool,
    style: json::Output,
) -> Result<Summary, DecodeError> {
    let mut reader = CaptureReader::new(input);
    let header_line = reader.header()?;
    let header = Header::from_json(&header_line).map_err(|e| DecodeError::Data {
        offset: MAGIC.len() as u64,
        context: Some("capture header".to_owned()),
        detail: e.to_string(),
    })?;
    tracing::info!("capture header: {header}");
    for problem in header.inconsistencies() {
        tracing::warn!("capture header: {problem}; decoding as the protocol version defines it");
    }
    if style.format == json::Format::Wal2json {
        crate::wal2json::check_stream(header.streaming, header.two_phase.unwrap_or(false))
            .map_err(|e| {
                DecodeError::Usage(format!("the capture was recorded with these options: {e}"))
            })?;
    }
    let mut decoder = Decoder::new(header.proto_version, header.streaming);

    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER, output);
    let mut summary = Summary::default();
    let result = decode_frames(
        &mut reader,
        &mut decoder,
        &mut out,
        keepalives && style.format == json::Format::Json,
        style,
        &mut summary,
    );
    let flushed = out.flush().map_err(DecodeError::Output);
    result.and(flushed)?;
    tracing::info!(
        "{} frames, {} lines, ending at byte offset {}",
        summary.frames,
        summary.lines,
        reader.position()
    );
    Ok(summary)
}

fn decode_frames(
    reader: &mut CaptureReader<impl Read>,
    decoder: &mut Decoder,
    out: &mut impl Write,
    keepalives: bool,
    style: json::Output,
    summary: &mut Summary,
) -> Result<(), DecodeError> {
    let mut line = String::with_capacity(1024);
    while let Some(frame) = reader.next_frame()? {
        summary.frames += 1;
        line.clear();
        decode_frame(frame, decoder, &mut line, keepalives, style)?;
        out.write_all(line.as_bytes())
            .map_err(DecodeError::Output)?;
        // A wal2json truncate may write several lines, and other messages none.
        summary.lines += line.bytes().filter(|&b| b == b'\n').count() as u64;
    }
    Ok(())
}

/// Appends the frame's JSON lines to `line`: none for a keepalive without `--keepalives` (and
/// for some messages in wal2json's format).
fn decode_frame(
    frame: Frame<'_>,
    decoder: &mut Decoder,
    line: &mut String,
    keepalives: bool,
    style: json::Output,
) -> Result<(), DecodeError> {
    let payload_at = frame.offset + 4;
    let server_message = ServerMessage::parse(frame.payload).map_err(|e| DecodeError::Data {
        offset: payload_at + e.offset() as u64,
        context: Some(match e.tag() {
            Some(b'w') => "XLogData".to_owned(),
            Some(b'k') => "primary keepalive".to_owned(),
            Some(tag) => format!("replication message {}", json::tag_display(tag)),
            None => "replication message".to_owned(),
        }),
        detail: e.kind().to_string(),
    })?;
    match server_message {
        ServerMessage::XLogData(x) => {
            let message_at = payload_at + XLOG_DATA_HEADER_LEN as u64;
            let (message, stray_abort) = match decoder.decode(x.data) {
                Ok(decoded) => (decoded.message, decoded.stray_abort),
                Err(e) => {
                    return Err(DecodeError::Data {
                        offset: message_at + e.offset() as u64,
                        context: Some(message_context(e.tag(), x.wal_start)),
                        detail: e.kind().to_string(),
                    })
                }
            };
            if stray_abort {
                json::warn_stray_abort(x.wal_start, &message, decoder.context().streaming);
            }
            json::message(line, x.wal_start, &message, decoder, style).map_err(|e| {
                DecodeError::Data {
                    offset: message_at,
                    context: Some(message_context(Some(message.tag()), x.wal_start)),
                    detail: e.to_string(),
                }
            })?;
            Ok(())
        }
        ServerMessage::PrimaryKeepalive(k) => {
            if keepalives {
                json::keepalive(line, &k);
            }
            Ok(())
        }
        // `ServerMessage` is non-exhaustive; walproto parses no other kind today.
        _ => Err(DecodeError::Data {
            offset: payload_at,
            context: None,
            detail: "replication message of a kind this version cannot print".to_owned(),
        }),
    }
}

/// `insert message 'I' at LSN 0/16B3748`, for errors.
fn message_context(tag: Option<u8>, lsn: Lsn) -> String {
    match tag {
        Some(tag) => match json::type_name(tag) {
            Some(name) => format!("{name} message {} at LSN {lsn}", json::tag_display(tag)),
            None => format!("message type {} at LSN {lsn}", json::tag_display(tag)),
        },
        None => format!("pgoutput message at LSN {lsn}"),
    }
}

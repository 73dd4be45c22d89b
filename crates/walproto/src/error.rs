//! The parser's error: small, `Copy`, and precise about what was wrong and where.

use core::fmt;

use crate::types::Oid;

/// What went wrong while parsing or decoding one message.
///
/// The error names the message type (its tag byte, when one was read) and the byte offset at
/// which the problem was found, counted from the start of the buffer handed to the parse call.
/// It is `Copy` and allocation-free so that it can be returned from `no_std` code and stored
/// cheaply by callers that keep going after a bad message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Error {
    kind: ErrorKind,
    tag: Option<u8>,
    offset: usize,
}

/// The kinds of [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The message ended before a field it must contain.
    UnexpectedEof,
    /// The buffer held no message at all.
    Empty,
    /// The message type byte is not one this protocol defines.
    UnknownMessage,
    /// A tuple column kind byte was not one of `n`, `u`, `t`, `b`.
    UnknownColumnKind(u8),
    /// A tuple marker was not what the message allows here (`N`, `K` or `O`).
    UnexpectedTupleMarker(u8),
    /// A replica identity byte was not one of `d`, `n`, `f`, `i`.
    UnknownReplicaIdentity(u8),
    /// A string had no terminating NUL byte before the end of the message.
    UnterminatedString,
    /// A string was not valid UTF-8.
    InvalidUtf8,
    /// A length field was negative (other than where `-1` is defined).
    NegativeLength(i32),
    /// A length field claimed more bytes than the message has left.
    LengthOutOfBounds(u32),
    /// A count field claimed more items than the bytes left could possibly hold.
    CountOutOfBounds(u32),
    /// Bytes were left over after the last field of the message.
    TrailingBytes,
    /// The message does not exist in the protocol version (or streaming mode) in use; the
    /// field holds the lowest protocol version that has it.
    UnsupportedByProtocol(u8),
    /// A row message named a relation for which no Relation message was received.
    UnknownRelation(Oid),
    /// A tuple had a different number of columns than its relation describes.
    ColumnCountMismatch {
        /// The number of columns in the relation.
        expected: u16,
        /// The number of columns in the tuple.
        found: u16,
    },
    /// The message cannot come at this point of the stream (for example a StreamStop without a
    /// StreamStart, or a Commit without a Begin).
    OutOfOrder,
    /// The decoder's relation cache is full; see `Decoder::with_max_relations`.
    TooManyRelations,
    /// The decoder's type cache is full; see `Decoder::with_max_types`.
    TooManyTypes,
    /// A schema, table, column or type name is longer than any PostgreSQL server sends; see
    /// `pgoutput::MAX_NAME_LEN`. The error's offset is where the name starts.
    NameTooLong {
        /// The name's length in bytes, without its NUL.
        len: u32,
        /// The longest name allowed, in bytes.
        max: u32,
    },
    /// A capture file did not start with the `WALCAP1` magic.
    BadMagic,
    /// A length is above a fixed limit of the format (not of the bytes at hand).
    TooLong {
        /// The length found.
        len: u32,
        /// The largest length allowed there.
        max: u32,
    },
    /// A timeline history line does not start with a timeline ID (a decimal `u32`).
    BadTimelineId,
    /// A timeline history line has no switch position (`X/X`) after its timeline ID.
    BadSwitchLsn,
    /// A timeline history line's ID is not above the previous line's: PostgreSQL's history
    /// files list their timelines in increasing order.
    TimelineOutOfOrder {
        /// The previous line's timeline ID.
        previous: u32,
        /// This line's timeline ID.
        found: u32,
    },
}

impl Error {
    /// Creates an error. Parsers inside this crate use this; it is public so that layers above
    /// (a capture-file reader, a connection) can report their own framing problems the same way.
    pub const fn new(kind: ErrorKind, tag: Option<u8>, offset: usize) -> Self {
        Error { kind, tag, offset }
    }

    /// What went wrong.
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message type byte of the message being parsed, when it was read.
    pub const fn tag(&self) -> Option<u8> {
        self.tag
    }

    /// The byte offset at which the problem was found, from the start of the parsed buffer.
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// Returns the same error with its offset moved by `base` bytes: used when the parsed
    /// buffer was itself a part of a larger one (a pgoutput message inside an XLogData).
    pub const fn with_base(mut self, base: usize) -> Self {
        self.offset = self.offset.saturating_add(base);
        self
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ErrorKind::UnexpectedEof => f.write_str("message ends before a required field"),
            ErrorKind::Empty => f.write_str("empty message"),
            ErrorKind::UnknownMessage => f.write_str("unknown message type"),
            ErrorKind::UnknownColumnKind(b) => {
                write!(f, "unknown tuple column kind {}", Byte(b))
            }
            ErrorKind::UnexpectedTupleMarker(b) => {
                write!(f, "unexpected tuple marker {}", Byte(b))
            }
            ErrorKind::UnknownReplicaIdentity(b) => {
                write!(f, "unknown replica identity {}", Byte(b))
            }
            ErrorKind::UnterminatedString => f.write_str("string without terminating NUL"),
            ErrorKind::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            ErrorKind::NegativeLength(n) => write!(f, "negative length {n}"),
            ErrorKind::LengthOutOfBounds(n) => {
                write!(f, "length {n} exceeds the bytes left in the message")
            }
            ErrorKind::CountOutOfBounds(n) => {
                write!(
                    f,
                    "count {n} exceeds what the bytes left in the message can hold"
                )
            }
            ErrorKind::TrailingBytes => f.write_str("trailing bytes after the message"),
            ErrorKind::UnsupportedByProtocol(v) => {
                write!(
                    f,
                    "message needs protocol version {v} or a streaming mode not in use"
                )
            }
            ErrorKind::UnknownRelation(oid) => {
                write!(
                    f,
                    "row for relation {oid} that no Relation message described"
                )
            }
            ErrorKind::ColumnCountMismatch { expected, found } => write!(
                f,
                "tuple has {found} columns but its relation has {expected}"
            ),
            ErrorKind::OutOfOrder => f.write_str("message out of order for the stream state"),
            ErrorKind::TooManyRelations => f.write_str("relation cache limit reached"),
            ErrorKind::TooManyTypes => f.write_str("type cache limit reached"),
            ErrorKind::NameTooLong { len, max } => {
                write!(f, "name of {len} bytes exceeds the limit of {max} bytes")
            }
            ErrorKind::BadMagic => f.write_str("not a WALCAP1 capture file"),
            ErrorKind::TooLong { len, max } => {
                write!(f, "length {len} exceeds the limit of {max} bytes")
            }
            ErrorKind::BadTimelineId => {
                f.write_str("timeline history line without a numeric timeline ID")
            }
            ErrorKind::BadSwitchLsn => {
                f.write_str("timeline history line without a switch position X/X")
            }
            ErrorKind::TimelineOutOfOrder { previous, found } => write!(
                f,
                "timeline history lists timeline {found} after {previous}, not in increasing order"
            ),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(tag) = self.tag {
            write!(f, " in message {}", Byte(tag))?;
        }
        write!(f, " at byte offset {}", self.offset)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Shows a byte as a character when printable, else in hex.
struct Byte(u8);

impl fmt::Display for Byte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

//! The `pgoutput` logical replication protocol, versions 1 to 4.
//!
//! [`Message::parse`] reads one message, borrowing from the input; what the bytes mean depends
//! on a [`ParseContext`] that the caller passes in (the protocol version, the streaming mode,
//! and whether the message is inside a streamed block). [`Message::encode`] writes one back.
//! [`crate::Decoder`] keeps that context and the relation cache for a whole stream.
//!
//! ```
//! use walproto::pgoutput::{Column, Message, ParseContext, ProtocolVersion, Streaming};
//!
//! // An Insert into relation 16384 of one text column "hi", as protocol 1 sends it.
//! let bytes = b"I\x00\x00\x40\x00N\x00\x01t\x00\x00\x00\x02hi";
//! let ctx = ParseContext::new(ProtocolVersion::V1, Streaming::Off);
//! let Message::Insert(insert) = Message::parse(bytes, ctx)? else { unreachable!() };
//! assert_eq!(insert.relation_id.0, 16384);
//! assert_eq!(insert.new.columns().next(), Some(Column::Text(b"hi")));
//! # Ok::<(), walproto::Error>(())
//! ```

mod boundary;
mod messages;
mod options;
mod relation;
mod tuple;

use bytes::BufMut;

pub use boundary::{Boundaries, MAX_OPEN_STREAMS};
pub use messages::{
    AbortInfo, Begin, BeginPrepare, Commit, CommitPrepared, Delete, Insert, LogicalMessage,
    OldTuple, Origin, Prepare, RelationIds, RollbackPrepared, StreamAbort, StreamCommit,
    StreamStart, Truncate, Update,
};
pub use options::{
    major_of, Feature, Options, OriginFilter, Refusal, Request, Rule, Streaming, UnknownValue,
    PROTOCOL_RELEASES, RULES,
};
pub use relation::{
    Relation, RelationColumn, RelationColumnIter, RelationColumns, ReplicaIdentity, Type,
    MAX_NAME_LEN,
};
pub use tuple::{encode_columns, Column, Columns, TupleData};

use crate::error::{Error, ErrorKind};
use crate::reader::Reader;
use crate::types::Xid;

/// The pgoutput `proto_version` in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ProtocolVersion {
    /// Version 1 (PostgreSQL 10+).
    V1 = 1,
    /// Version 2 (PostgreSQL 14+): streaming of in-progress transactions.
    V2 = 2,
    /// Version 3 (PostgreSQL 15+): two-phase commit.
    V3 = 3,
    /// Version 4 (PostgreSQL 16+): parallel apply of streamed transactions.
    V4 = 4,
}

impl ProtocolVersion {
    /// The number sent as `proto_version`.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The version with this number, if it is one of 1 to 4.
    pub const fn from_number(n: u32) -> Option<Self> {
        match n {
            1 => Some(ProtocolVersion::V1),
            2 => Some(ProtocolVersion::V2),
            3 => Some(ProtocolVersion::V3),
            4 => Some(ProtocolVersion::V4),
            _ => None,
        }
    }
}

/// What a parse needs to know that the bytes do not say.
///
/// Inside a streamed block (between Stream Start and Stream Stop) pgoutput puts the
/// (sub)transaction's xid before Relation, Type, Insert, Update, Delete, Truncate and Message;
/// under protocol 4 with `streaming = parallel`, Stream Abort has two more fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParseContext {
    /// The protocol version the stream was started with.
    pub version: ProtocolVersion,
    /// The streaming mode the stream was started with.
    pub streaming: Streaming,
    /// Whether the message is between a Stream Start and its Stream Stop.
    pub in_stream: bool,
}

impl ParseContext {
    /// A context outside any streamed block.
    pub const fn new(version: ProtocolVersion, streaming: Streaming) -> Self {
        ParseContext {
            version,
            streaming,
            in_stream: false,
        }
    }

    /// The same context, inside (`true`) or outside a streamed block.
    pub const fn in_stream(mut self, in_stream: bool) -> Self {
        self.in_stream = in_stream;
        self
    }

    fn streaming_enabled(&self) -> bool {
        self.version as u8 >= 2 && !matches!(self.streaming, Streaming::Off)
    }

    fn has_xid(&self) -> bool {
        self.in_stream && self.streaming_enabled()
    }

    fn parallel_abort(&self) -> bool {
        self.version as u8 >= 4 && matches!(self.streaming, Streaming::Parallel)
    }
}

/// Message type bytes of pgoutput.
pub mod tag {
    /// Begin.
    pub const BEGIN: u8 = b'B';
    /// Commit.
    pub const COMMIT: u8 = b'C';
    /// Origin.
    pub const ORIGIN: u8 = b'O';
    /// Relation.
    pub const RELATION: u8 = b'R';
    /// Type.
    pub const TYPE: u8 = b'Y';
    /// Insert.
    pub const INSERT: u8 = b'I';
    /// Update.
    pub const UPDATE: u8 = b'U';
    /// Delete.
    pub const DELETE: u8 = b'D';
    /// Truncate.
    pub const TRUNCATE: u8 = b'T';
    /// Logical decoding message.
    pub const MESSAGE: u8 = b'M';
    /// Stream Start.
    pub const STREAM_START: u8 = b'S';
    /// Stream Stop.
    pub const STREAM_STOP: u8 = b'E';
    /// Stream Commit.
    pub const STREAM_COMMIT: u8 = b'c';
    /// Stream Abort.
    pub const STREAM_ABORT: u8 = b'A';
    /// Begin Prepare.
    pub const BEGIN_PREPARE: u8 = b'b';
    /// Prepare.
    pub const PREPARE: u8 = b'P';
    /// Commit Prepared.
    pub const COMMIT_PREPARED: u8 = b'K';
    /// Rollback Prepared.
    pub const ROLLBACK_PREPARED: u8 = b'r';
    /// Stream Prepare.
    pub const STREAM_PREPARE: u8 = b'p';
}

/// One pgoutput message, borrowing strings and tuples from the parsed bytes.
///
/// Deliberately not `#[non_exhaustive]`: a new pgoutput message comes with a new protocol
/// version, and every consumer must decide what it means for transaction boundaries and
/// events. Adding a variant is a breaking change, so that the compiler finds every `match`
/// that would otherwise drop it unnoticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// `B`
    Begin(Begin),
    /// `C`
    Commit(Commit),
    /// `O`
    Origin(Origin<'a>),
    /// `R`
    Relation(Relation<'a>),
    /// `Y`
    Type(Type<'a>),
    /// `I`
    Insert(Insert<'a>),
    /// `U`
    Update(Update<'a>),
    /// `D`
    Delete(Delete<'a>),
    /// `T`
    Truncate(Truncate<'a>),
    /// `M`
    Message(LogicalMessage<'a>),
    /// `S` (protocol 2+)
    StreamStart(StreamStart),
    /// `E` (protocol 2+)
    StreamStop,
    /// `c` (protocol 2+)
    StreamCommit(StreamCommit),
    /// `A` (protocol 2+, and stray ones under any protocol: see [`StreamAbort`])
    StreamAbort(StreamAbort),
    /// `b` (protocol 3+)
    BeginPrepare(BeginPrepare<'a>),
    /// `P` (protocol 3+)
    Prepare(Prepare<'a>),
    /// `K` (protocol 3+)
    CommitPrepared(CommitPrepared<'a>),
    /// `r` (protocol 3+)
    RollbackPrepared(RollbackPrepared<'a>),
    /// `p` (protocol 3+, with streaming)
    StreamPrepare(Prepare<'a>),
}

impl<'a> Message<'a> {
    /// Parses one whole pgoutput message (the payload of one XLogData).
    ///
    /// Every length and count is checked against the bytes left before it is used, and bytes
    /// left over after the message are an error. Nothing is allocated.
    pub fn parse(buf: &'a [u8], ctx: ParseContext) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        let tag = r.tag()?;
        let xid = |r: &mut Reader<'a>| -> Result<Option<Xid>, Error> {
            if ctx.has_xid() {
                r.xid().map(Some)
            } else {
                Ok(None)
            }
        };
        let needs = |ok: bool, version: u8| -> Result<(), Error> {
            if ok {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::UnsupportedByProtocol(version),
                    Some(tag),
                    0,
                ))
            }
        };
        let v3 = ctx.version as u8 >= 3;
        let msg = match tag {
            tag::BEGIN => Message::Begin(Begin::read(&mut r)?),
            tag::COMMIT => Message::Commit(Commit::read(&mut r)?),
            tag::ORIGIN => Message::Origin(Origin::read(&mut r)?),
            tag::RELATION => {
                let xid = xid(&mut r)?;
                Message::Relation(Relation::read(&mut r, xid)?)
            }
            tag::TYPE => {
                let xid = xid(&mut r)?;
                Message::Type(Type::read(&mut r, xid)?)
            }
            // The row messages, nearly all of a stream, end in their own arm: a tail shared by
            // every variant costs about 25 instructions per message to build (callgrind).
            tag::INSERT => {
                let xid = xid(&mut r)?;
                let m = Insert::read(&mut r, xid)?;
                r.finish()?;
                return Ok(Message::Insert(m));
            }
            tag::UPDATE => {
                let xid = xid(&mut r)?;
                let m = Update::read(&mut r, xid)?;
                r.finish()?;
                return Ok(Message::Update(m));
            }
            tag::DELETE => {
                let xid = xid(&mut r)?;
                let m = Delete::read(&mut r, xid)?;
                r.finish()?;
                return Ok(Message::Delete(m));
            }
            tag::TRUNCATE => {
                let xid = xid(&mut r)?;
                Message::Truncate(Truncate::read(&mut r, xid)?)
            }
            tag::MESSAGE => {
                let xid = xid(&mut r)?;
                Message::Message(LogicalMessage::read(&mut r, xid)?)
            }
            tag::STREAM_START => {
                needs(ctx.streaming_enabled(), 2)?;
                Message::StreamStart(StreamStart::read(&mut r)?)
            }
            tag::STREAM_STOP => {
                needs(ctx.streaming_enabled(), 2)?;
                Message::StreamStop
            }
            tag::STREAM_COMMIT => {
                needs(ctx.streaming_enabled(), 2)?;
                Message::StreamCommit(StreamCommit::read(&mut r)?)
            }
            // Accepted whatever the streaming mode: PostgreSQL 18 sends Stream Aborts to
            // protocol 1 clients that never asked for streaming (it marks an aborted
            // subtransaction as streamed by mistake). They are short: the abort LSN and time
            // come only under protocol 4 with `streaming = parallel`, which the server checks.
            tag::STREAM_ABORT => {
                Message::StreamAbort(StreamAbort::read(&mut r, ctx.parallel_abort())?)
            }
            tag::BEGIN_PREPARE => {
                needs(v3, 3)?;
                Message::BeginPrepare(BeginPrepare::read(&mut r)?)
            }
            tag::PREPARE => {
                needs(v3, 3)?;
                Message::Prepare(Prepare::read(&mut r)?)
            }
            tag::COMMIT_PREPARED => {
                needs(v3, 3)?;
                Message::CommitPrepared(CommitPrepared::read(&mut r)?)
            }
            tag::ROLLBACK_PREPARED => {
                needs(v3, 3)?;
                Message::RollbackPrepared(RollbackPrepared::read(&mut r)?)
            }
            tag::STREAM_PREPARE => {
                needs(v3 && ctx.streaming_enabled(), 3)?;
                Message::StreamPrepare(Prepare::read(&mut r)?)
            }
            _ => return Err(r.error_at(ErrorKind::UnknownMessage, 0)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// The message type byte.
    pub const fn tag(&self) -> u8 {
        match self {
            Message::Begin(_) => tag::BEGIN,
            Message::Commit(_) => tag::COMMIT,
            Message::Origin(_) => tag::ORIGIN,
            Message::Relation(_) => tag::RELATION,
            Message::Type(_) => tag::TYPE,
            Message::Insert(_) => tag::INSERT,
            Message::Update(_) => tag::UPDATE,
            Message::Delete(_) => tag::DELETE,
            Message::Truncate(_) => tag::TRUNCATE,
            Message::Message(_) => tag::MESSAGE,
            Message::StreamStart(_) => tag::STREAM_START,
            Message::StreamStop => tag::STREAM_STOP,
            Message::StreamCommit(_) => tag::STREAM_COMMIT,
            Message::StreamAbort(_) => tag::STREAM_ABORT,
            Message::BeginPrepare(_) => tag::BEGIN_PREPARE,
            Message::Prepare(_) => tag::PREPARE,
            Message::CommitPrepared(_) => tag::COMMIT_PREPARED,
            Message::RollbackPrepared(_) => tag::ROLLBACK_PREPARED,
            Message::StreamPrepare(_) => tag::STREAM_PREPARE,
        }
    }

    /// The xid written before the message inside a streamed block (the (sub)transaction that
    /// made the change), for the messages that carry one.
    pub const fn stream_xid(&self) -> Option<Xid> {
        match self {
            Message::Relation(m) => m.xid,
            Message::Type(m) => m.xid,
            Message::Insert(m) => m.xid,
            Message::Update(m) => m.xid,
            Message::Delete(m) => m.xid,
            Message::Truncate(m) => m.xid,
            Message::Message(m) => m.xid,
            _ => None,
        }
    }

    /// Appends the message's wire form to `out`.
    ///
    /// The encoding writes what the value holds: an xid when `stream_xid` is set, abort
    /// fields when [`StreamAbort::parallel`] is set. Parsing the bytes back gives the same value
    /// under the matching [`ParseContext`].
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(self.tag());
        match self {
            Message::Begin(m) => m.write(out),
            Message::Commit(m) => m.write(out),
            Message::Origin(m) => m.write(out),
            Message::Relation(m) => m.write(out),
            Message::Type(m) => m.write(out),
            Message::Insert(m) => m.write(out),
            Message::Update(m) => m.write(out),
            Message::Delete(m) => m.write(out),
            Message::Truncate(m) => m.write(out),
            Message::Message(m) => m.write(out),
            Message::StreamStart(m) => m.write(out),
            Message::StreamStop => {}
            Message::StreamCommit(m) => m.write(out),
            Message::StreamAbort(m) => m.write(out),
            Message::BeginPrepare(m) => m.write(out),
            Message::Prepare(m) | Message::StreamPrepare(m) => m.write(out),
            Message::CommitPrepared(m) => m.write(out),
            Message::RollbackPrepared(m) => m.write(out),
        }
    }
}

/// Writes a PostgreSQL `String`: the bytes up to any NUL (a NUL cannot be sent), then NUL.
pub(crate) fn put_cstr(out: &mut impl BufMut, s: &str) {
    let bytes = s.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    out.put_slice(bytes.get(..end).unwrap_or_default());
    out.put_u8(0);
}

/// Writes the streamed-block xid when there is one.
pub(crate) fn put_xid(out: &mut impl BufMut, xid: Option<Xid>) {
    if let Some(x) = xid {
        out.put_u32(x.0);
    }
}

#[cfg(test)]
mod tests;

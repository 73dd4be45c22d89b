//! The one generator of valid messages (feature `arbitrary`): the `encode_parse` fuzz target
//! draws [`Case`]s from libFuzzer's bytes, and walproto's property tests draw
//! [`PgoutputCase`]s from proptest's bytes ([`PgoutputCase::generate`]), so both explore one
//! description of the messages.
//!
//! A `Message<'a>` borrows its strings and tuples, so `arbitrary` builds an owned description,
//! and [`PgoutputCase::with_message`] encodes the parts a message borrows and builds a message
//! that is valid under its context: the xid of row messages is there exactly when the context
//! has one, Stream Abort carries its abort LSN and time exactly under protocol 4 with
//! `streaming = parallel`, and a message that needs streaming or protocol 3 raises the context
//! to the lowest one that has it. Strings lose their NULs (pgoutput sends C strings), and names
//! are cut to `MAX_NAME_LEN` bytes. So every failure of a check on these messages is a real
//! disagreement between encoder and parser.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use arbitrary::{Arbitrary, Unstructured};

use super::{context_from_byte, Sample};
use crate::pgoutput::{
    encode_columns, AbortInfo, Begin, BeginPrepare, Column, Commit, CommitPrepared, Delete, Insert,
    LogicalMessage, Message, OldTuple, Origin, ParseContext, Prepare, ProtocolVersion, Relation,
    RelationColumn, RelationColumns, RelationIds, ReplicaIdentity, RollbackPrepared, StreamAbort,
    StreamCommit, StreamStart, Streaming, Truncate, TupleData, Type, Update, MAX_NAME_LEN,
};
use crate::replication::{
    ClientMessage, HotStandbyFeedback, PrimaryKeepalive, ServerMessage, StandbyStatusUpdate,
    XLogData,
};
use crate::{Error, Lsn, Oid, Timestamp, Xid};

/// One input of the `encode_parse` fuzz target: any message walproto encodes.
#[derive(Debug, Arbitrary)]
pub enum Case {
    /// A pgoutput message under a context.
    Pgoutput(PgoutputCase),
    /// XLogData with arbitrary payload bytes.
    XLogData(u64, u64, i64, Bytes),
    /// A primary keepalive.
    Keepalive(u64, i64, bool),
    /// A standby status update.
    StatusUpdate(u64, u64, u64, i64, bool),
    /// Hot standby feedback.
    HotStandbyFeedback(i64, u32, u32, u32, u32),
}

/// A pgoutput message and a context it is valid under.
#[derive(Debug, Arbitrary)]
pub struct PgoutputCase {
    /// The context as [`context_from_byte`] reads it, raised if the message needs more.
    ctx: u8,
    spec: Spec,
}

/// A C string: arbitrary UTF-8 without NUL.
#[derive(Debug)]
struct Name(String);

impl Name {
    /// The string as a schema, table, column or type name: cut to at most [`MAX_NAME_LEN`]
    /// bytes (at a character boundary), as the parser allows no more there.
    fn ident(&self) -> &str {
        let mut end = self.0.len().min(MAX_NAME_LEN);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        self.0.get(..end).unwrap_or_default()
    }
}

/// Bytes whose length is taken from the end of the input, as libFuzzer's FuzzedDataProvider
/// takes lengths, so that it spreads over all the input allows. (`Vec<u8>`'s own `Arbitrary`
/// reads a continuation bit before each byte, which from uniform bytes, proptest's, gives a
/// byte or two.)
#[derive(Debug)]
pub struct Bytes(Vec<u8>);

/// A list whose length is taken from the end of the input, like [`Bytes`].
#[derive(Debug)]
struct List<T>(Vec<T>);

/// A tuple column.
#[derive(Debug, Arbitrary)]
enum Col {
    /// `n`.
    Null,
    /// `u`.
    Toast,
    /// `t`.
    Text(Bytes),
    /// `b`.
    Binary(Bytes),
}

/// A pgoutput message, owned. Row messages carry an xid used only when the context has one.
#[derive(Debug, Arbitrary)]
enum Spec {
    Begin(u64, i64, u32),
    Commit(u8, u64, u64, i64),
    Origin(u64, Name),
    Relation(u32, u32, Name, Name, u8, List<(u8, Name, u32, i32)>),
    Type(u32, u32, Name, Name),
    Insert(u32, u32, List<Col>),
    Update(u32, u32, Option<(bool, List<Col>)>, List<Col>),
    Delete(u32, u32, bool, List<Col>),
    Truncate(u32, u8, List<u32>),
    Message(u32, u8, u64, Name, Bytes),
    StreamStart(u32, bool),
    StreamStop,
    StreamCommit(u32, u8, u64, u64, i64),
    StreamAbort(u32, u32, u64, i64),
    BeginPrepare(u64, u64, i64, u32, Name),
    Prepare(u8, u64, u64, i64, u32, Name),
    CommitPrepared(u8, u64, u64, i64, u32, Name),
    RollbackPrepared(u8, u64, u64, i64, i64, u32, Name),
    StreamPrepare(u8, u64, u64, i64, u32, Name),
}

/// The most columns a tuple or relation can say it has (an `Int16` count).
const MAX_COLUMNS: usize = u16::MAX as usize;

impl Case {
    /// The case that `data` describes, as the fuzzer reads it; `None` when `arbitrary` refuses
    /// the bytes.
    pub fn generate(data: &[u8]) -> Option<Self> {
        Self::arbitrary_take_rest(Unstructured::new(data)).ok()
    }

    /// Builds the sample and calls `f` with it (the sample borrows bodies encoded here).
    pub fn with_sample<R>(&self, f: impl FnOnce(Sample<'_>) -> R) -> R {
        match self {
            Case::Pgoutput(case) => case.with_message(|ctx, msg| f(Sample::Pgoutput(ctx, msg))),
            Case::XLogData(start, end, time, data) => {
                f(Sample::Server(ServerMessage::XLogData(XLogData {
                    wal_start: Lsn::new(*start),
                    wal_end: Lsn::new(*end),
                    send_time: Timestamp::new(*time),
                    data: &data.0,
                })))
            }
            Case::Keepalive(end, time, reply) => f(Sample::Server(
                ServerMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end: Lsn::new(*end),
                    send_time: Timestamp::new(*time),
                    reply_requested: *reply,
                }),
            )),
            Case::StatusUpdate(write, flush, apply, time, reply) => f(Sample::Client(
                ClientMessage::StandbyStatusUpdate(StandbyStatusUpdate {
                    write: Lsn::new(*write),
                    flush: Lsn::new(*flush),
                    apply: Lsn::new(*apply),
                    client_time: Timestamp::new(*time),
                    reply_requested: *reply,
                }),
            )),
            Case::HotStandbyFeedback(time, xmin, xmin_epoch, catalog_xmin, catalog_epoch) => f(
                Sample::Client(ClientMessage::HotStandbyFeedback(HotStandbyFeedback {
                    client_time: Timestamp::new(*time),
                    xmin: *xmin,
                    xmin_epoch: *xmin_epoch,
                    catalog_xmin: *catalog_xmin,
                    catalog_xmin_epoch: *catalog_epoch,
                })),
            ),
        }
    }
}

impl PgoutputCase {
    /// The case that `data` describes, as the fuzzer reads a [`Case::Pgoutput`]; `None` when
    /// `arbitrary` refuses the bytes.
    pub fn generate(data: &[u8]) -> Option<Self> {
        Self::arbitrary_take_rest(Unstructured::new(data)).ok()
    }

    /// The context the message is valid under.
    pub fn context(&self) -> ParseContext {
        self.spec.raise(context_from_byte(self.ctx))
    }

    /// Builds the message and calls `f` with it and its context (the message borrows bodies
    /// encoded here).
    pub fn with_message<R>(&self, f: impl FnOnce(ParseContext, Message<'_>) -> R) -> R {
        let ctx = self.context();
        let bodies = self.spec.bodies();
        f(ctx, self.spec.message(ctx, &bodies))
    }

    /// The columns of the message's tuples as they were encoded (the new tuple before the
    /// old), to compare with what a parse of the message yields.
    pub fn tuples(&self) -> Vec<Vec<Column<'_>>> {
        match &self.spec {
            Spec::Insert(_, _, c) | Spec::Delete(_, _, _, c) => vec![columns(c).collect()],
            Spec::Update(_, _, old, new) => {
                let mut v = vec![columns(new).collect()];
                if let Some((_, o)) = old {
                    v.push(columns(o).collect());
                }
                v
            }
            _ => Vec::new(),
        }
    }
}

impl<'a> Arbitrary<'a> for Name {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Name(String::arbitrary(u)?.replace('\0', "")))
    }
}

impl<'a> Arbitrary<'a> for Bytes {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Bytes(<&[u8]>::arbitrary(u)?.to_vec()))
    }

    fn arbitrary_take_rest(u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Bytes(u.take_rest().to_vec()))
    }
}

impl<'a, T: Arbitrary<'a>> Arbitrary<'a> for List<T> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.arbitrary_len::<T>()?;
        (0..len)
            .map(|_| T::arbitrary(u))
            .collect::<Result<_, _>>()
            .map(List)
    }
}

impl Col {
    fn column(&self) -> Column<'_> {
        match self {
            Col::Null => Column::Null,
            Col::Toast => Column::UnchangedToast,
            Col::Text(b) => Column::Text(&b.0),
            Col::Binary(b) => Column::Binary(&b.0),
        }
    }
}

/// The columns a tuple encodes: at most [`MAX_COLUMNS`].
fn columns(cols: &List<Col>) -> impl Iterator<Item = Column<'_>> {
    cols.0.iter().take(MAX_COLUMNS).map(Col::column)
}

fn streaming_enabled(ctx: ParseContext) -> bool {
    ctx.version >= ProtocolVersion::V2 && ctx.streaming != Streaming::Off
}

/// The lowest context at or above `ctx` with streaming enabled.
fn with_streaming(mut ctx: ParseContext) -> ParseContext {
    if ctx.version < ProtocolVersion::V2 {
        ctx.version = ProtocolVersion::V2;
    }
    if ctx.streaming == Streaming::Off {
        ctx.streaming = Streaming::On;
    }
    ctx
}

fn with_v3(mut ctx: ParseContext) -> ParseContext {
    if ctx.version < ProtocolVersion::V3 {
        ctx.version = ProtocolVersion::V3;
    }
    ctx
}

/// The parts a message borrows, encoded.
#[derive(Default)]
struct Bodies {
    new: Vec<u8>,
    old: Vec<u8>,
    columns: Vec<u8>,
    ids: Vec<u8>,
}

fn tuple_bytes(cols: &List<Col>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_columns(columns(cols), &mut out);
    out
}

/// What this module encoded, parsed back. A failure is a disagreement between walproto's
/// encoder and its parser, which is what the fuzzer and the property tests look for: it fails
/// the run.
#[allow(
    clippy::panic,
    reason = "fuzzing support: an encoding walproto cannot parse back is the bug being sought"
)]
fn ours<T>(parsed: Result<T, Error>, what: &str) -> T {
    match parsed {
        Ok(v) => v,
        Err(e) => panic!("{what} encoded by walproto does not parse: {e}"),
    }
}

fn old(full: bool, t: TupleData<'_>) -> OldTuple<'_> {
    if full {
        OldTuple::Full(t)
    } else {
        OldTuple::Key(t)
    }
}

impl Spec {
    /// The context the message is valid under: `ctx`, raised if the message needs more.
    fn raise(&self, ctx: ParseContext) -> ParseContext {
        match self {
            // Stream Abort is valid without streaming too (PostgreSQL 18 sends stray ones).
            Spec::StreamStart(..) | Spec::StreamStop | Spec::StreamCommit(..) => {
                with_streaming(ctx)
            }
            Spec::StreamPrepare(..) => with_v3(with_streaming(ctx)),
            Spec::BeginPrepare(..)
            | Spec::Prepare(..)
            | Spec::CommitPrepared(..)
            | Spec::RollbackPrepared(..) => with_v3(ctx),
            _ => ctx,
        }
    }

    fn bodies(&self) -> Bodies {
        let mut b = Bodies::default();
        match self {
            Spec::Insert(_, _, c) | Spec::Delete(_, _, _, c) => b.new = tuple_bytes(c),
            Spec::Update(_, _, o, n) => {
                b.new = tuple_bytes(n);
                if let Some((_, o)) = o {
                    b.old = tuple_bytes(o);
                }
            }
            Spec::Relation(_, _, _, _, _, cols) => {
                let cols = cols
                    .0
                    .get(..cols.0.len().min(MAX_COLUMNS))
                    .unwrap_or_default();
                let count = u16::try_from(cols.len()).unwrap_or(u16::MAX);
                b.columns.extend_from_slice(&count.to_be_bytes());
                for (flags, name, oid, typmod) in cols {
                    RelationColumn {
                        flags: *flags,
                        name: name.ident(),
                        type_oid: Oid(*oid),
                        type_modifier: *typmod,
                    }
                    .encode(&mut b.columns);
                }
            }
            Spec::Truncate(_, _, ids) => {
                for id in &ids.0 {
                    b.ids.extend_from_slice(&id.to_be_bytes());
                }
            }
            _ => {}
        }
        b
    }

    fn message<'a>(&'a self, ctx: ParseContext, b: &'a Bodies) -> Message<'a> {
        let has_xid = ctx.in_stream && streaming_enabled(ctx);
        let xid = |x: &u32| has_xid.then_some(Xid(*x));
        let tuple = |bytes: &'a [u8]| ours(TupleData::parse(bytes), "a tuple");
        match self {
            Spec::Begin(a, t, x) => Message::Begin(Begin {
                final_lsn: Lsn::new(*a),
                commit_time: Timestamp::new(*t),
                xid: Xid(*x),
            }),
            Spec::Commit(f, a, e, t) => Message::Commit(Commit {
                flags: *f,
                commit_lsn: Lsn::new(*a),
                end_lsn: Lsn::new(*e),
                commit_time: Timestamp::new(*t),
            }),
            Spec::Origin(l, n) => Message::Origin(Origin {
                commit_lsn: Lsn::new(*l),
                name: &n.0,
            }),
            Spec::Relation(x, id, ns, n, ri, _) => Message::Relation(Relation {
                xid: xid(x),
                id: Oid(*id),
                namespace: ns.ident(),
                name: n.ident(),
                replica_identity: match ri % 4 {
                    0 => ReplicaIdentity::Default,
                    1 => ReplicaIdentity::Nothing,
                    2 => ReplicaIdentity::Full,
                    _ => ReplicaIdentity::Index,
                },
                columns: ours(RelationColumns::parse(&b.columns), "relation columns"),
            }),
            Spec::Type(x, id, ns, n) => Message::Type(Type {
                xid: xid(x),
                id: Oid(*id),
                namespace: ns.ident(),
                name: n.ident(),
            }),
            Spec::Insert(x, id, _) => Message::Insert(Insert {
                xid: xid(x),
                relation_id: Oid(*id),
                new: tuple(&b.new),
            }),
            Spec::Update(x, id, o, _) => Message::Update(Update {
                xid: xid(x),
                relation_id: Oid(*id),
                old: o.as_ref().map(|(full, _)| old(*full, tuple(&b.old))),
                new: tuple(&b.new),
            }),
            Spec::Delete(x, id, full, _) => Message::Delete(Delete {
                xid: xid(x),
                relation_id: Oid(*id),
                old: old(*full, tuple(&b.new)),
            }),
            Spec::Truncate(x, o, _) => Message::Truncate(Truncate {
                xid: xid(x),
                options: *o,
                relation_ids: ours(RelationIds::new(&b.ids), "relation ids"),
            }),
            Spec::Message(x, f, l, p, c) => Message::Message(LogicalMessage {
                xid: xid(x),
                flags: *f,
                lsn: Lsn::new(*l),
                prefix: &p.0,
                content: &c.0,
            }),
            Spec::StreamStart(x, first) => Message::StreamStart(StreamStart {
                xid: Xid(*x),
                first_segment: *first,
            }),
            Spec::StreamStop => Message::StreamStop,
            Spec::StreamCommit(x, f, a, e, t) => Message::StreamCommit(StreamCommit {
                xid: Xid(*x),
                flags: *f,
                commit_lsn: Lsn::new(*a),
                end_lsn: Lsn::new(*e),
                commit_time: Timestamp::new(*t),
            }),
            Spec::StreamAbort(x, s, l, t) => Message::StreamAbort(StreamAbort {
                xid: Xid(*x),
                subxid: Xid(*s),
                parallel: (ctx.version >= ProtocolVersion::V4
                    && ctx.streaming == Streaming::Parallel)
                    .then_some(AbortInfo {
                        abort_lsn: Lsn::new(*l),
                        abort_time: Timestamp::new(*t),
                    }),
            }),
            Spec::BeginPrepare(a, e, t, x, g) => Message::BeginPrepare(BeginPrepare {
                prepare_lsn: Lsn::new(*a),
                end_lsn: Lsn::new(*e),
                prepare_time: Timestamp::new(*t),
                xid: Xid(*x),
                gid: &g.0,
            }),
            Spec::Prepare(f, a, e, t, x, g) | Spec::StreamPrepare(f, a, e, t, x, g) => {
                let p = Prepare {
                    flags: *f,
                    prepare_lsn: Lsn::new(*a),
                    end_lsn: Lsn::new(*e),
                    prepare_time: Timestamp::new(*t),
                    xid: Xid(*x),
                    gid: &g.0,
                };
                if matches!(self, Spec::Prepare(..)) {
                    Message::Prepare(p)
                } else {
                    Message::StreamPrepare(p)
                }
            }
            Spec::CommitPrepared(f, a, e, t, x, g) => Message::CommitPrepared(CommitPrepared {
                flags: *f,
                commit_lsn: Lsn::new(*a),
                end_lsn: Lsn::new(*e),
                commit_time: Timestamp::new(*t),
                xid: Xid(*x),
                gid: &g.0,
            }),
            Spec::RollbackPrepared(f, a, e, t1, t2, x, g) => {
                Message::RollbackPrepared(RollbackPrepared {
                    flags: *f,
                    prepare_end_lsn: Lsn::new(*a),
                    rollback_end_lsn: Lsn::new(*e),
                    prepare_time: Timestamp::new(*t1),
                    rollback_time: Timestamp::new(*t2),
                    xid: Xid(*x),
                    gid: &g.0,
                })
            }
        }
    }
}

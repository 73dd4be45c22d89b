//! The fuzz-side description of walproto's messages for the `encode_parse` target.
//!
//! A `Message<'a>` borrows its strings and tuples, so `arbitrary` builds an owned [`Case`]
//! (strings, column vectors) and [`Case::with_sample`] encodes the bodies a message borrows and
//! builds a [`Sample`] that is valid under its context: the xid of row messages is there
//! exactly when the context has one, Stream Abort carries its abort LSN and time exactly under
//! protocol 4 with `streaming = parallel`, and a message that needs streaming or protocol 3
//! raises the context to the lowest one that has it. Strings lose their NULs (pgoutput sends C
//! strings). So everything the target checks is a real encode/parse disagreement.

use arbitrary::{Arbitrary, Unstructured};
use walproto::fuzzing::Sample;
use walproto::pgoutput::{
    encode_columns, AbortInfo, Begin, BeginPrepare, Column, Commit, CommitPrepared, Delete, Insert,
    LogicalMessage, Message, OldTuple, Origin, ParseContext, Prepare, ProtocolVersion, Relation,
    RelationColumn, RelationColumns, RelationIds, ReplicaIdentity, RollbackPrepared, StreamAbort,
    StreamCommit, StreamStart, Streaming, Truncate, TupleData, Type, Update,
};
use walproto::replication::{
    ClientMessage, HotStandbyFeedback, PrimaryKeepalive, ServerMessage, StandbyStatusUpdate,
    XLogData,
};
use walproto::{Lsn, Oid, Timestamp, Xid};

/// One input of the `encode_parse` target.
#[derive(Debug, Arbitrary)]
pub enum Case {
    /// A pgoutput message under a context (raised if the message needs more).
    Pgoutput(Ctx, Spec),
    /// XLogData with arbitrary payload bytes.
    XLogData(u64, u64, i64, Vec<u8>),
    /// A primary keepalive.
    Keepalive(u64, i64, bool),
    /// A standby status update.
    StatusUpdate(u64, u64, u64, i64, bool),
    /// Hot standby feedback.
    HotStandbyFeedback(i64, u32, u32, u32, u32),
}

/// A parse context: version 1 to 4, streaming off, on or parallel, inside a streamed block.
#[derive(Debug, Arbitrary)]
pub struct Ctx {
    version: u8,
    streaming: u8,
    in_stream: bool,
}

/// A C string: arbitrary UTF-8 without NUL.
#[derive(Debug)]
pub struct Name(String);

impl<'a> Arbitrary<'a> for Name {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Name(String::arbitrary(u)?.replace('\0', "")))
    }
}

/// A tuple column.
#[derive(Debug, Arbitrary)]
pub enum Col {
    /// `n`.
    Null,
    /// `u`.
    Toast,
    /// `t`.
    Text(Vec<u8>),
    /// `b`.
    Binary(Vec<u8>),
}

/// A pgoutput message, owned. Row messages carry an xid used only when the context has one.
#[derive(Debug, Arbitrary)]
pub enum Spec {
    Begin(u64, i64, u32),
    Commit(u8, u64, u64, i64),
    Origin(u64, Name),
    Relation(u32, u32, Name, Name, u8, Vec<(u8, Name, u32, i32)>),
    Type(u32, u32, Name, Name),
    Insert(u32, u32, Vec<Col>),
    Update(u32, u32, Option<(bool, Vec<Col>)>, Vec<Col>),
    Delete(u32, u32, bool, Vec<Col>),
    Truncate(u32, u8, Vec<u32>),
    Message(u32, u8, u64, Name, Vec<u8>),
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
    /// Builds the sample and calls `f` with it (the sample borrows bodies encoded here).
    pub fn with_sample<R>(&self, f: impl FnOnce(Sample<'_>) -> R) -> R {
        match self {
            Case::Pgoutput(ctx, spec) => {
                let ctx = spec.raise(ctx.get());
                let bodies = spec.bodies();
                f(Sample::Pgoutput(ctx, spec.message(ctx, &bodies)))
            }
            Case::XLogData(start, end, time, data) => {
                f(Sample::Server(ServerMessage::XLogData(XLogData {
                    wal_start: Lsn::new(*start),
                    wal_end: Lsn::new(*end),
                    send_time: Timestamp::new(*time),
                    data,
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

impl Ctx {
    fn get(&self) -> ParseContext {
        let version = match self.version % 4 {
            0 => ProtocolVersion::V1,
            1 => ProtocolVersion::V2,
            2 => ProtocolVersion::V3,
            _ => ProtocolVersion::V4,
        };
        let streaming = match self.streaming % 3 {
            0 => Streaming::Off,
            1 => Streaming::On,
            _ => Streaming::Parallel,
        };
        ParseContext::new(version, streaming).in_stream(self.in_stream)
    }
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

fn tuple_bytes(cols: &[Col]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_columns(
        cols.iter().take(MAX_COLUMNS).map(|c| match c {
            Col::Null => Column::Null,
            Col::Toast => Column::UnchangedToast,
            Col::Text(b) => Column::Text(b),
            Col::Binary(b) => Column::Binary(b),
        }),
        &mut out,
    );
    out
}

fn tuple(bytes: &[u8]) -> TupleData<'_> {
    TupleData::parse(bytes).expect("encode_columns wrote a valid tuple")
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
            Spec::StreamStart(..)
            | Spec::StreamStop
            | Spec::StreamCommit(..)
            | Spec::StreamAbort(..) => with_streaming(ctx),
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
                let cols = cols.get(..cols.len().min(MAX_COLUMNS)).unwrap_or_default();
                b.columns
                    .extend_from_slice(&(cols.len() as u16).to_be_bytes());
                for (flags, name, oid, typmod) in cols {
                    RelationColumn {
                        flags: *flags,
                        name: &name.0,
                        type_oid: Oid(*oid),
                        type_modifier: *typmod,
                    }
                    .encode(&mut b.columns);
                }
            }
            Spec::Truncate(_, _, ids) => {
                for id in ids {
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
                namespace: &ns.0,
                name: &n.0,
                replica_identity: match ri % 4 {
                    0 => ReplicaIdentity::Default,
                    1 => ReplicaIdentity::Nothing,
                    2 => ReplicaIdentity::Full,
                    _ => ReplicaIdentity::Index,
                },
                columns: RelationColumns::parse(&b.columns).expect("valid relation columns"),
            }),
            Spec::Type(x, id, ns, n) => Message::Type(Type {
                xid: xid(x),
                id: Oid(*id),
                namespace: &ns.0,
                name: &n.0,
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
                relation_ids: RelationIds::new(&b.ids).expect("whole relation ids"),
            }),
            Spec::Message(x, f, l, p, c) => Message::Message(LogicalMessage {
                xid: xid(x),
                flags: *f,
                lsn: Lsn::new(*l),
                prefix: &p.0,
                content: c,
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

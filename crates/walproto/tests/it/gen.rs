//! proptest strategies: owned message specs that build borrowed `Message`s.
//!
//! A `Message<'a>` borrows its strings and tuples, so the strategies generate an owned
//! [`Spec`] (strings, column vectors) and [`Spec::bytes`] encodes the tuple and column bodies,
//! from which [`Spec::message`] builds the borrowed message.

use proptest::prelude::*;
use walproto::pgoutput::*;
use walproto::{Lsn, Oid, Timestamp, Xid};

/// A parse context and a message that is valid under it.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) ctx: ParseContext,
    pub(crate) spec: Spec,
}

#[derive(Debug, Clone)]
pub(crate) enum Col {
    Null,
    Toast,
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

#[derive(Debug, Clone)]
pub(crate) enum Spec {
    Begin(u64, i64, u32),
    Commit(u8, u64, u64, i64),
    Origin(u64, String),
    Relation(
        Option<u32>,
        u32,
        String,
        String,
        u8,
        Vec<(u8, String, u32, i32)>,
    ),
    Type(Option<u32>, u32, String, String),
    Insert(Option<u32>, u32, Vec<Col>),
    Update(Option<u32>, u32, Option<(bool, Vec<Col>)>, Vec<Col>),
    Delete(Option<u32>, u32, bool, Vec<Col>),
    Truncate(Option<u32>, u8, Vec<u32>),
    Message(Option<u32>, u8, u64, String, Vec<u8>),
    StreamStart(u32, bool),
    StreamStop,
    StreamCommit(u32, u8, u64, u64, i64),
    StreamAbort(u32, u32, Option<(u64, i64)>),
    BeginPrepare(u64, u64, i64, u32, String),
    Prepare(u8, u64, u64, i64, u32, String),
    CommitPrepared(u8, u64, u64, i64, u32, String),
    RollbackPrepared(u8, u64, u64, i64, i64, u32, String),
    StreamPrepare(u8, u64, u64, i64, u32, String),
}

/// Encoded bodies that a `Message` borrows.
pub(crate) struct Bodies {
    tuples: Vec<Vec<u8>>,
    columns: Vec<u8>,
    ids: Vec<u8>,
}

fn name() -> impl Strategy<Value = String> + Clone {
    "[a-zA-Z0-9_ .éß€\"']{0,12}"
}

fn col() -> impl Strategy<Value = Col> {
    prop_oneof![
        Just(Col::Null),
        Just(Col::Toast),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Col::Text),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Col::Binary),
    ]
}

fn cols() -> impl Strategy<Value = Vec<Col>> {
    proptest::collection::vec(col(), 0..12)
}

fn ctx() -> impl Strategy<Value = ParseContext> {
    (1u32..=4, 0u8..3, any::<bool>()).prop_map(|(v, s, in_stream)| {
        let version = ProtocolVersion::from_number(v).unwrap_or(ProtocolVersion::V1);
        let streaming = match s {
            0 => Streaming::Off,
            1 => Streaming::On,
            _ => Streaming::Parallel,
        };
        ParseContext::new(version, streaming).in_stream(in_stream)
    })
}

fn streaming_on(ctx: &ParseContext) -> bool {
    ctx.version >= ProtocolVersion::V2 && ctx.streaming != Streaming::Off
}

/// A context and a message valid under it.
pub(crate) fn case() -> impl Strategy<Value = Case> {
    ctx().prop_flat_map(|ctx| {
        let xid = if ctx.in_stream && streaming_on(&ctx) {
            any::<u32>().prop_map(Some).boxed()
        } else {
            Just(None).boxed()
        };
        let mut options: Vec<BoxedStrategy<Spec>> = vec![
            (any::<u64>(), any::<i64>(), any::<u32>())
                .prop_map(|(a, b, c)| Spec::Begin(a, b, c))
                .boxed(),
            (any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>())
                .prop_map(|(a, b, c, d)| Spec::Commit(a, b, c, d))
                .boxed(),
            (any::<u64>(), name())
                .prop_map(|(a, b)| Spec::Origin(a, b))
                .boxed(),
            (
                xid.clone(),
                any::<u32>(),
                name(),
                name(),
                prop::sample::select(vec![b'd', b'n', b'f', b'i']),
                proptest::collection::vec((any::<u8>(), name(), any::<u32>(), any::<i32>()), 0..8),
            )
                .prop_map(|(x, id, ns, n, ri, c)| Spec::Relation(x, id, ns, n, ri, c))
                .boxed(),
            (xid.clone(), any::<u32>(), name(), name())
                .prop_map(|(x, id, ns, n)| Spec::Type(x, id, ns, n))
                .boxed(),
            (xid.clone(), any::<u32>(), cols())
                .prop_map(|(x, id, c)| Spec::Insert(x, id, c))
                .boxed(),
            (
                xid.clone(),
                any::<u32>(),
                proptest::option::of((any::<bool>(), cols())),
                cols(),
            )
                .prop_map(|(x, id, o, n)| Spec::Update(x, id, o, n))
                .boxed(),
            (xid.clone(), any::<u32>(), any::<bool>(), cols())
                .prop_map(|(x, id, k, c)| Spec::Delete(x, id, k, c))
                .boxed(),
            (
                xid.clone(),
                any::<u8>(),
                proptest::collection::vec(any::<u32>(), 0..6),
            )
                .prop_map(|(x, o, ids)| Spec::Truncate(x, o, ids))
                .boxed(),
            (
                xid,
                any::<u8>(),
                any::<u64>(),
                name(),
                proptest::collection::vec(any::<u8>(), 0..40),
            )
                .prop_map(|(x, f, l, p, c)| Spec::Message(x, f, l, p, c))
                .boxed(),
        ];
        if streaming_on(&ctx) {
            let parallel =
                ctx.version >= ProtocolVersion::V4 && ctx.streaming == Streaming::Parallel;
            let abort = if parallel {
                (any::<u64>(), any::<i64>()).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            options.extend([
                (any::<u32>(), any::<bool>())
                    .prop_map(|(x, f)| Spec::StreamStart(x, f))
                    .boxed(),
                Just(Spec::StreamStop).boxed(),
                (
                    any::<u32>(),
                    any::<u8>(),
                    any::<u64>(),
                    any::<u64>(),
                    any::<i64>(),
                )
                    .prop_map(|(a, b, c, d, e)| Spec::StreamCommit(a, b, c, d, e))
                    .boxed(),
                (any::<u32>(), any::<u32>(), abort)
                    .prop_map(|(a, b, c)| Spec::StreamAbort(a, b, c))
                    .boxed(),
            ]);
        }
        if ctx.version >= ProtocolVersion::V3 {
            let p = (
                any::<u8>(),
                any::<u64>(),
                any::<u64>(),
                any::<i64>(),
                any::<u32>(),
                name(),
            );
            options.extend([
                (
                    any::<u64>(),
                    any::<u64>(),
                    any::<i64>(),
                    any::<u32>(),
                    name(),
                )
                    .prop_map(|(a, b, c, d, e)| Spec::BeginPrepare(a, b, c, d, e))
                    .boxed(),
                p.clone()
                    .prop_map(|(a, b, c, d, e, f)| Spec::Prepare(a, b, c, d, e, f))
                    .boxed(),
                p.clone()
                    .prop_map(|(a, b, c, d, e, f)| Spec::CommitPrepared(a, b, c, d, e, f))
                    .boxed(),
                (
                    any::<u8>(),
                    any::<u64>(),
                    any::<u64>(),
                    any::<i64>(),
                    any::<i64>(),
                    any::<u32>(),
                    name(),
                )
                    .prop_map(|(a, b, c, d, e, f, g)| Spec::RollbackPrepared(a, b, c, d, e, f, g))
                    .boxed(),
            ]);
            if streaming_on(&ctx) {
                options.push(
                    p.prop_map(|(a, b, c, d, e, f)| Spec::StreamPrepare(a, b, c, d, e, f))
                        .boxed(),
                );
            }
        }
        prop::strategy::Union::new(options).prop_map(move |spec| Case { ctx, spec })
    })
}

fn tuple_bytes(cols: &[Col]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_columns(
        cols.iter().map(|c| match c {
            Col::Null => Column::Null,
            Col::Toast => Column::UnchangedToast,
            Col::Text(b) => Column::Text(b),
            Col::Binary(b) => Column::Binary(b),
        }),
        &mut out,
    );
    out
}

impl Spec {
    /// Encodes the parts a message borrows (tuples, relation columns, truncate ids).
    pub(crate) fn bodies(&self) -> Bodies {
        let mut b = Bodies {
            tuples: Vec::new(),
            columns: Vec::new(),
            ids: Vec::new(),
        };
        match self {
            Spec::Insert(_, _, c) | Spec::Delete(_, _, _, c) => b.tuples.push(tuple_bytes(c)),
            Spec::Update(_, _, old, new) => {
                b.tuples.push(tuple_bytes(new));
                if let Some((_, o)) = old {
                    b.tuples.push(tuple_bytes(o));
                }
            }
            Spec::Relation(_, _, _, _, _, cols) => {
                b.columns
                    .extend_from_slice(&(cols.len() as u16).to_be_bytes());
                for (flags, name, oid, typmod) in cols {
                    RelationColumn {
                        flags: *flags,
                        name,
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

    /// The borrowed message.
    pub(crate) fn message<'a>(&'a self, b: &'a Bodies) -> Message<'a> {
        let tuple = |i: usize| TupleData::parse(&b.tuples[i]).unwrap();
        let old = |full: bool, t: TupleData<'a>| {
            if full {
                OldTuple::Full(t)
            } else {
                OldTuple::Key(t)
            }
        };
        match self {
            Spec::Begin(a, t, x) => Message::Begin(Begin {
                final_lsn: Lsn::new(*a),
                commit_time: Timestamp::new(*t),
                xid: Xid(*x),
            }),
            Spec::Commit(f, a, b, t) => Message::Commit(Commit {
                flags: *f,
                commit_lsn: Lsn::new(*a),
                end_lsn: Lsn::new(*b),
                commit_time: Timestamp::new(*t),
            }),
            Spec::Origin(l, n) => Message::Origin(Origin {
                commit_lsn: Lsn::new(*l),
                name: n,
            }),
            Spec::Relation(x, id, ns, n, ri, _) => Message::Relation(Relation {
                xid: x.map(Xid),
                id: Oid(*id),
                namespace: ns,
                name: n,
                replica_identity: ReplicaIdentity::from_byte(*ri).unwrap(),
                columns: RelationColumns::parse(&b.columns).unwrap(),
            }),
            Spec::Type(x, id, ns, n) => Message::Type(Type {
                xid: x.map(Xid),
                id: Oid(*id),
                namespace: ns,
                name: n,
            }),
            Spec::Insert(x, id, _) => Message::Insert(Insert {
                xid: x.map(Xid),
                relation_id: Oid(*id),
                new: tuple(0),
            }),
            Spec::Update(x, id, o, _) => Message::Update(Update {
                xid: x.map(Xid),
                relation_id: Oid(*id),
                old: o.as_ref().map(|(full, _)| old(*full, tuple(1))),
                new: tuple(0),
            }),
            Spec::Delete(x, id, full, _) => Message::Delete(Delete {
                xid: x.map(Xid),
                relation_id: Oid(*id),
                old: old(*full, tuple(0)),
            }),
            Spec::Truncate(x, o, _) => Message::Truncate(Truncate {
                xid: x.map(Xid),
                options: *o,
                relation_ids: RelationIds::new(&b.ids).unwrap(),
            }),
            Spec::Message(x, f, l, p, c) => Message::Message(LogicalMessage {
                xid: x.map(Xid),
                flags: *f,
                lsn: Lsn::new(*l),
                prefix: p,
                content: c,
            }),
            Spec::StreamStart(x, f) => Message::StreamStart(StreamStart {
                xid: Xid(*x),
                first_segment: *f,
            }),
            Spec::StreamStop => Message::StreamStop,
            Spec::StreamCommit(x, f, a, b, t) => Message::StreamCommit(StreamCommit {
                xid: Xid(*x),
                flags: *f,
                commit_lsn: Lsn::new(*a),
                end_lsn: Lsn::new(*b),
                commit_time: Timestamp::new(*t),
            }),
            Spec::StreamAbort(x, s, p) => Message::StreamAbort(StreamAbort {
                xid: Xid(*x),
                subxid: Xid(*s),
                parallel: p.map(|(l, t)| AbortInfo {
                    abort_lsn: Lsn::new(l),
                    abort_time: Timestamp::new(t),
                }),
            }),
            Spec::BeginPrepare(a, b, t, x, g) => Message::BeginPrepare(BeginPrepare {
                prepare_lsn: Lsn::new(*a),
                end_lsn: Lsn::new(*b),
                prepare_time: Timestamp::new(*t),
                xid: Xid(*x),
                gid: g,
            }),
            Spec::Prepare(f, a, b, t, x, g) | Spec::StreamPrepare(f, a, b, t, x, g) => {
                let p = Prepare {
                    flags: *f,
                    prepare_lsn: Lsn::new(*a),
                    end_lsn: Lsn::new(*b),
                    prepare_time: Timestamp::new(*t),
                    xid: Xid(*x),
                    gid: g,
                };
                if matches!(self, Spec::Prepare(..)) {
                    Message::Prepare(p)
                } else {
                    Message::StreamPrepare(p)
                }
            }
            Spec::CommitPrepared(f, a, b, t, x, g) => Message::CommitPrepared(CommitPrepared {
                flags: *f,
                commit_lsn: Lsn::new(*a),
                end_lsn: Lsn::new(*b),
                commit_time: Timestamp::new(*t),
                xid: Xid(*x),
                gid: g,
            }),
            Spec::RollbackPrepared(f, a, b, t1, t2, x, g) => {
                Message::RollbackPrepared(RollbackPrepared {
                    flags: *f,
                    prepare_end_lsn: Lsn::new(*a),
                    rollback_end_lsn: Lsn::new(*b),
                    prepare_time: Timestamp::new(*t1),
                    rollback_time: Timestamp::new(*t2),
                    xid: Xid(*x),
                    gid: g,
                })
            }
        }
    }

    /// The columns of the tuples, for checking what a parse yields.
    pub(crate) fn tuples(&self) -> Vec<&Vec<Col>> {
        match self {
            Spec::Insert(_, _, c) | Spec::Delete(_, _, _, c) => vec![c],
            Spec::Update(_, _, old, new) => {
                let mut v = vec![new];
                if let Some((_, o)) = old {
                    v.push(o);
                }
                v
            }
            _ => vec![],
        }
    }
}

impl Col {
    pub(crate) fn matches(&self, c: &Column<'_>) -> bool {
        match (self, c) {
            (Col::Null, Column::Null) | (Col::Toast, Column::UnchangedToast) => true,
            (Col::Text(a), Column::Text(b)) | (Col::Binary(a), Column::Binary(b)) => a == b,
            _ => false,
        }
    }
}

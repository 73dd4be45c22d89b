//! Turns XLogData frames into owned events while following transaction boundaries.
//!
//! Which message ends a transaction and whether the stream is between transactions is
//! walproto's [`Boundaries`]: the decoder keeps one in decoded mode; raw mode keeps one alone
//! and parses only the control messages (row messages are known by their tag), so a raw
//! consumer that decodes the bytes itself does not pay for a second decode.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use walproto::owned::{subslice, TupleBuf};
use walproto::pgoutput::{
    Boundaries, Message, OldTuple, ProtocolVersion, ReplicaIdentity, Streaming, TupleData,
};
use walproto::replication::XLogData;
use walproto::{Decoder, ErrorKind, Lsn, Oid, RelationInfo, Timestamp, Xid};

use crate::logical::event::{
    ChangeEvent, CommitPrepared, Delete, EventKind, Insert, LogicalMessage, OldRow, PrepareInfo,
    RawXLogData, RollbackPrepared, Row, Truncate, Update,
};

/// The most tables warned about for unchanged TOAST values: a bound on the warning's memory.
const MAX_TOAST_WARNINGS: usize = 65_536;

/// What one XLogData gave.
pub(crate) struct Followed {
    /// The event.
    pub(crate) event: ChangeEvent,
    /// The end LSN of a transaction that ended with this message.
    pub(crate) transaction_end: Option<Lsn>,
}

/// How the stream is followed.
#[derive(Debug)]
enum Mode {
    /// Every message decoded into an owned event.
    Decoded(Decoder),
    /// Messages delivered as bytes; only the boundaries are followed.
    Raw(Boundaries),
}

/// Decodes a stream's pgoutput messages into events and knows, at every point, whether the
/// stream is between transactions.
#[derive(Debug)]
pub(crate) struct Follower {
    mode: Mode,
    /// False in raw mode after a message that could not be followed: data still flows, but
    /// the stream no longer claims to be between transactions.
    tracking: bool,
    /// The transaction the next events belong to, and its commit time when known.
    xid: Option<Xid>,
    commit_time: Option<Timestamp>,
    /// Relations already warned about for unchanged TOAST values.
    toast_warned: HashSet<Oid>,
}

/// Whether values of type `oid` can be TOASTed: every type except the fixed-length built-in
/// ones (and the small network types, which never reach the TOAST threshold).
fn toastable(oid: Oid) -> bool {
    !matches!(
        oid.0,
        16 | 18
            | 19
            | 20
            | 21
            | 23
            | 26
            | 27
            | 28
            | 29
            | 600
            | 650
            | 700
            | 701
            | 774
            | 790
            | 829
            | 869
            | 1082
            | 1083
            | 1114
            | 1184
            | 1186
            | 1266
            | 2950
            | 3220
    )
}

impl Follower {
    pub(crate) fn new(version: ProtocolVersion, streaming: Streaming, raw: bool) -> Self {
        let mode = if raw {
            Mode::Raw(Boundaries::new(version, streaming))
        } else {
            Mode::Decoded(Decoder::new(version, streaming))
        };
        Self {
            mode,
            tracking: true,
            xid: None,
            commit_time: None,
            toast_warned: HashSet::new(),
        }
    }

    /// Forgets everything, for a new session.
    pub(crate) fn reset(&mut self) {
        match &mut self.mode {
            Mode::Decoded(d) => d.reset(),
            Mode::Raw(b) => b.reset(),
        }
        self.tracking = true;
        self.xid = None;
        self.commit_time = None;
    }

    /// Whether the stream is outside every transaction and streamed transaction.
    pub(crate) fn between_transactions(&self) -> bool {
        let boundaries = match &self.mode {
            Mode::Decoded(d) => d.boundaries(),
            Mode::Raw(b) => b,
        };
        self.tracking && boundaries.between_transactions()
    }

    /// Follows one XLogData of `frame`. In decoded mode a message that cannot be decoded is
    /// an error; in raw mode it is delivered anyway and following stops.
    pub(crate) fn follow(
        &mut self,
        frame: &Bytes,
        x: &XLogData<'_>,
    ) -> Result<Followed, walproto::Error> {
        let Mode::Decoded(decoder) = &mut self.mode else {
            return Ok(self.follow_raw(frame, x));
        };
        let decoded = decoder.decode(x.data)?;
        let message = decoded.message;
        let relation = decoded.relation.cloned();
        // A Truncate names several relations: looked up while the decoder is at hand.
        let truncated = match &message {
            Message::Truncate(t) => t
                .relation_ids
                .iter()
                .map(|id| {
                    decoder.relation(id).cloned().ok_or(walproto::Error::new(
                        ErrorKind::UnknownRelation(id),
                        Some(message.tag()),
                        0,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        let kind = self.event_kind(frame, &message, relation, truncated)?;
        let transaction_end = message.transaction_end();
        let (xid, commit_time) = self.track(&message, transaction_end.is_some());
        Ok(Followed {
            event: ChangeEvent {
                lsn: x.wal_start,
                xid,
                commit_time,
                kind,
            },
            transaction_end,
        })
    }

    fn follow_raw(&mut self, frame: &Bytes, x: &XLogData<'_>) -> Followed {
        let mut transaction_end = None;
        let (mut xid, mut commit_time) = (self.xid, self.commit_time);
        if let (Mode::Raw(boundaries), true) = (&mut self.mode, self.tracking) {
            match boundaries.observe(x.data) {
                Ok(Some(message)) => {
                    transaction_end = message.transaction_end();
                    (xid, commit_time) = self.track(&message, transaction_end.is_some());
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(
                        lsn = %x.wal_start,
                        "cannot follow the stream ({e}); raw data still flows, but no \
                         keepalive position is acknowledged from now on"
                    );
                    self.tracking = false;
                }
            }
        }
        let data = subslice(frame, x.data).unwrap_or_else(|| Bytes::copy_from_slice(x.data));
        Followed {
            event: ChangeEvent {
                lsn: x.wal_start,
                xid,
                commit_time,
                kind: EventKind::XLogData(RawXLogData {
                    wal_start: x.wal_start,
                    wal_end: x.wal_end,
                    send_time: x.send_time,
                    data,
                }),
            },
            transaction_end,
        }
    }

    /// Follows the transaction `message` belongs to (`ended`: the message ended it); returns
    /// the xid and commit time of its event.
    fn track(&mut self, message: &Message<'_>, ended: bool) -> (Option<Xid>, Option<Timestamp>) {
        let seen = match message {
            Message::Begin(b) => {
                self.xid = Some(b.xid);
                self.commit_time = Some(b.commit_time);
                (self.xid, self.commit_time)
            }
            Message::StreamStart(s) => {
                self.xid = Some(s.xid);
                self.commit_time = None;
                (self.xid, None)
            }
            Message::BeginPrepare(b) => {
                self.xid = Some(b.xid);
                self.commit_time = None;
                (self.xid, None)
            }
            Message::StreamStop => (self.xid.take(), self.commit_time),
            Message::StreamCommit(c) => (Some(c.xid), Some(c.commit_time)),
            Message::StreamAbort(a) => (Some(a.xid), self.commit_time),
            Message::Prepare(p) | Message::StreamPrepare(p) => (Some(p.xid), self.commit_time),
            Message::CommitPrepared(c) => (Some(c.xid), Some(c.commit_time)),
            Message::RollbackPrepared(r) => (Some(r.xid), self.commit_time),
            Message::Commit(_)
            | Message::Origin(_)
            | Message::Relation(_)
            | Message::Type(_)
            | Message::Insert(_)
            | Message::Update(_)
            | Message::Delete(_)
            | Message::Truncate(_)
            | Message::Message(_) => (self.xid, self.commit_time),
        };
        if ended {
            self.xid = None;
            self.commit_time = None;
        }
        seen
    }

    /// The owned event of a decoded `message`; `relation` is the decoder's for a row message,
    /// `truncated` the relations of a Truncate.
    fn event_kind(
        &mut self,
        frame: &Bytes,
        message: &Message<'_>,
        relation: Option<Arc<RelationInfo>>,
        truncated: Vec<Arc<RelationInfo>>,
    ) -> Result<EventKind, walproto::Error> {
        let tag = message.tag();
        let rows = Rows { frame, tag };
        let unknown = |id| walproto::Error::new(ErrorKind::UnknownRelation(id), Some(tag), 0);
        Ok(match *message {
            Message::Begin(b) => EventKind::Begin(b),
            Message::Commit(c) => EventKind::Commit(c),
            Message::Origin(o) => EventKind::Origin {
                commit_lsn: o.commit_lsn,
                name: o.name.to_owned(),
            },
            Message::Relation(r) => {
                let rel = relation.ok_or(unknown(r.id))?;
                self.warn_if_toast_incomplete(&rel);
                EventKind::Relation(rel)
            }
            Message::Type(t) => EventKind::Type(walproto::TypeInfo {
                id: t.id,
                namespace: t.namespace.to_owned(),
                name: t.name.to_owned(),
            }),
            Message::Insert(m) => {
                let rel = relation.ok_or(unknown(m.relation_id))?;
                EventKind::Insert(Insert {
                    xid: m.xid,
                    new: rows.row(&m.new, &rel)?,
                    relation: rel,
                })
            }
            Message::Update(m) => {
                let rel = relation.ok_or(unknown(m.relation_id))?;
                EventKind::Update(Update {
                    xid: m.xid,
                    old: m.old.as_ref().map(|o| rows.old(o, &rel)).transpose()?,
                    new: rows.row(&m.new, &rel)?,
                    relation: rel,
                })
            }
            Message::Delete(m) => {
                let rel = relation.ok_or(unknown(m.relation_id))?;
                EventKind::Delete(Delete {
                    xid: m.xid,
                    old: rows.old(&m.old, &rel)?,
                    relation: rel,
                })
            }
            Message::Truncate(t) => EventKind::Truncate(Truncate {
                xid: t.xid,
                relations: truncated,
                cascade: t.cascade(),
                restart_identity: t.restart_identity(),
            }),
            Message::Message(m) => EventKind::Message(LogicalMessage {
                xid: m.xid,
                transactional: m.transactional(),
                lsn: m.lsn,
                prefix: m.prefix.to_owned(),
                content: subslice(frame, m.content)
                    .unwrap_or_else(|| Bytes::copy_from_slice(m.content)),
            }),
            Message::StreamStart(s) => EventKind::StreamStart(s),
            Message::StreamStop => EventKind::StreamStop,
            Message::StreamCommit(c) => EventKind::StreamCommit(c),
            Message::StreamAbort(a) => EventKind::StreamAbort(a),
            Message::BeginPrepare(b) => EventKind::BeginPrepare(PrepareInfo {
                prepare_lsn: b.prepare_lsn,
                end_lsn: b.end_lsn,
                prepare_time: b.prepare_time,
                xid: b.xid,
                gid: b.gid.to_owned(),
            }),
            Message::Prepare(p) => EventKind::Prepare(PrepareInfo::of(&p)),
            Message::StreamPrepare(p) => EventKind::StreamPrepare(PrepareInfo::of(&p)),
            Message::CommitPrepared(c) => EventKind::CommitPrepared(CommitPrepared {
                commit_lsn: c.commit_lsn,
                end_lsn: c.end_lsn,
                commit_time: c.commit_time,
                xid: c.xid,
                gid: c.gid.to_owned(),
            }),
            Message::RollbackPrepared(r) => EventKind::RollbackPrepared(RollbackPrepared {
                prepare_end_lsn: r.prepare_end_lsn,
                rollback_end_lsn: r.rollback_end_lsn,
                prepare_time: r.prepare_time,
                rollback_time: r.rollback_time,
                xid: r.xid,
                gid: r.gid.to_owned(),
            }),
        })
    }

    /// Warns once per table when updates may carry unchanged TOASTed values that no old row
    /// can complete: TOASTable columns outside the replica identity, without `FULL`.
    fn warn_if_toast_incomplete(&mut self, rel: &RelationInfo) {
        if rel.replica_identity == ReplicaIdentity::Full || self.toast_warned.contains(&rel.id) {
            return;
        }
        let columns: Vec<&str> = rel
            .columns
            .iter()
            .filter(|c| !c.key && toastable(c.type_oid))
            .map(|c| c.name.as_str())
            .collect();
        if !columns.is_empty() && self.toast_warned.len() < MAX_TOAST_WARNINGS {
            self.toast_warned.insert(rel.id);
            tracing::warn!(
                table = %format_args!("{}.{}", rel.namespace, rel.name),
                ?columns,
                replica_identity = ?rel.replica_identity,
                "updates that leave these TOASTable columns unchanged will not carry their \
                 values, and no old row can complete them (REPLICA IDENTITY FULL would)"
            );
        }
    }
}

/// Builds the owned rows of one message from slices of its frame.
struct Rows<'f> {
    frame: &'f Bytes,
    tag: u8,
}

impl Rows<'_> {
    fn row(&self, t: &TupleData<'_>, rel: &Arc<RelationInfo>) -> Result<Row, walproto::Error> {
        TupleBuf::from_view(self.frame, t)
            .map(|tuple| Row::new(rel.clone(), tuple))
            .ok_or(walproto::Error::new(
                ErrorKind::LengthOutOfBounds(u32::try_from(t.as_bytes().len()).unwrap_or(0)),
                Some(self.tag),
                0,
            ))
    }

    fn old(&self, o: &OldTuple<'_>, rel: &Arc<RelationInfo>) -> Result<OldRow, walproto::Error> {
        Ok(match o {
            OldTuple::Key(t) => OldRow::Key(self.row(t, rel)?),
            OldTuple::Full(t) => OldRow::Full(self.row(t, rel)?),
        })
    }
}

//! Turns XLogData frames into owned events while following transaction boundaries.

use std::sync::Arc;

use bytes::Bytes;
use walproto::owned::{subslice, TupleBuf};
use walproto::pgoutput::ReplicaIdentity;
use walproto::pgoutput::{Message, OldTuple, ProtocolVersion, Streaming, TupleData};
use walproto::replication::XLogData;
use walproto::{Decoder, ErrorKind, Lsn, Oid, RelationInfo, Timestamp, Xid};

use crate::logical::event::{
    ChangeEvent, CommitPrepared, Delete, EventKind, Insert, LogicalMessage, OldRow, PrepareInfo,
    RawXLogData, RollbackPrepared, Row, Truncate, Update,
};

/// The most streamed transactions followed at once. PostgreSQL streams one block at a time
/// and has a handful of large transactions open at most; a stream claiming more is not
/// followed (no keepalive position is reported from then on) rather than grown without bound.
const MAX_OPEN_STREAMS: usize = 65_536;

/// What one XLogData gave.
pub(crate) struct Followed {
    /// The event, unless the message was skipped.
    pub(crate) event: Option<ChangeEvent>,
    /// The end LSN of a transaction that ended with this message.
    pub(crate) transaction_end: Option<Lsn>,
}

/// Decodes a stream's pgoutput messages into events and knows, at every point, whether the
/// stream is between transactions.
#[derive(Debug)]
pub(crate) struct Follower {
    decoder: Decoder,
    raw: bool,
    /// False in raw mode after a message our decoder could not follow: data still flows, but
    /// the stream no longer claims to be between transactions.
    tracking: bool,
    xid: Option<Xid>,
    commit_time: Option<Timestamp>,
    open_streams: Vec<Xid>,
    /// Relations already warned about for unchanged TOAST values.
    toast_warned: std::collections::HashSet<Oid>,
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
        Self {
            decoder: Decoder::new(version, streaming),
            raw,
            tracking: true,
            xid: None,
            commit_time: None,
            open_streams: Vec::new(),
            toast_warned: std::collections::HashSet::new(),
        }
    }

    /// Forgets everything, for a new session.
    pub(crate) fn reset(&mut self) {
        self.decoder.reset();
        self.tracking = true;
        self.xid = None;
        self.commit_time = None;
        self.open_streams.clear();
    }

    /// Whether the stream is outside every transaction and streamed transaction.
    pub(crate) fn between_transactions(&self) -> bool {
        self.tracking && self.decoder.is_idle() && self.open_streams.is_empty()
    }

    /// Follows one XLogData of `frame`. In decoded mode a message that cannot be decoded is
    /// an error; in raw mode it is delivered anyway and following stops.
    pub(crate) fn follow(
        &mut self,
        frame: &Bytes,
        x: &XLogData<'_>,
    ) -> Result<Followed, walproto::Error> {
        if self.raw {
            let mut transaction_end = None;
            if self.tracking {
                match self.decode(frame, x) {
                    Ok(f) => transaction_end = f.transaction_end,
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
            let event = ChangeEvent {
                lsn: x.wal_start,
                xid: self.xid,
                commit_time: self.commit_time,
                kind: EventKind::XLogData(RawXLogData {
                    wal_start: x.wal_start,
                    wal_end: x.wal_end,
                    send_time: x.send_time,
                    data,
                }),
            };
            return Ok(Followed {
                event: Some(event),
                transaction_end,
            });
        }
        self.decode(frame, x)
    }

    fn decode(&mut self, frame: &Bytes, x: &XLogData<'_>) -> Result<Followed, walproto::Error> {
        let decoded = self.decoder.decode(x.data)?;
        let message = decoded.message;
        let relation = decoded.relation.cloned();
        let tag = message.tag();
        let row = |t: &TupleData<'_>, rel: &Arc<RelationInfo>| -> Result<Row, walproto::Error> {
            TupleBuf::from_view(frame, t)
                .map(|tuple| Row::new(rel.clone(), tuple))
                .ok_or(walproto::Error::new(
                    ErrorKind::LengthOutOfBounds(u32::try_from(t.as_bytes().len()).unwrap_or(0)),
                    Some(tag),
                    0,
                ))
        };
        let old = |o: &OldTuple<'_>, rel: &Arc<RelationInfo>| -> Result<OldRow, walproto::Error> {
            Ok(match o {
                OldTuple::Key(t) => OldRow::Key(row(t, rel)?),
                OldTuple::Full(t) => OldRow::Full(row(t, rel)?),
            })
        };
        let unknown = |id| walproto::Error::new(ErrorKind::UnknownRelation(id), Some(tag), 0);
        let mut transaction_end = None;
        let mut xid = self.xid;
        let mut commit_time = self.commit_time;
        let kind = match message {
            Message::Begin(b) => {
                self.xid = Some(b.xid);
                self.commit_time = Some(b.commit_time);
                xid = self.xid;
                commit_time = self.commit_time;
                EventKind::Begin(b)
            }
            Message::Commit(c) => {
                transaction_end = Some(c.end_lsn);
                EventKind::Commit(c)
            }
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
                    new: row(&m.new, &rel)?,
                    relation: rel,
                })
            }
            Message::Update(m) => {
                let rel = relation.ok_or(unknown(m.relation_id))?;
                EventKind::Update(Update {
                    xid: m.xid,
                    old: m.old.as_ref().map(|o| old(o, &rel)).transpose()?,
                    new: row(&m.new, &rel)?,
                    relation: rel,
                })
            }
            Message::Delete(m) => {
                let rel = relation.ok_or(unknown(m.relation_id))?;
                EventKind::Delete(Delete {
                    xid: m.xid,
                    old: old(&m.old, &rel)?,
                    relation: rel,
                })
            }
            Message::Truncate(t) => {
                let mut relations = Vec::with_capacity(t.relation_ids.iter().len());
                for id in t.relation_ids.iter() {
                    relations.push(self.decoder.relation(id).cloned().ok_or(unknown(id))?);
                }
                EventKind::Truncate(Truncate {
                    xid: t.xid,
                    relations,
                    cascade: t.cascade(),
                    restart_identity: t.restart_identity(),
                })
            }
            Message::Message(m) => EventKind::Message(LogicalMessage {
                xid: m.xid,
                transactional: m.transactional(),
                lsn: m.lsn,
                prefix: m.prefix.to_owned(),
                content: subslice(frame, m.content)
                    .unwrap_or_else(|| Bytes::copy_from_slice(m.content)),
            }),
            Message::StreamStart(s) => {
                if !self.open_streams.contains(&s.xid) {
                    if self.open_streams.len() >= MAX_OPEN_STREAMS {
                        self.tracking = false;
                    } else {
                        self.open_streams.push(s.xid);
                    }
                }
                self.xid = Some(s.xid);
                self.commit_time = None;
                xid = self.xid;
                commit_time = None;
                EventKind::StreamStart(s)
            }
            Message::StreamStop => {
                self.xid = None;
                EventKind::StreamStop
            }
            Message::StreamCommit(c) => {
                self.close_stream(c.xid);
                transaction_end = Some(c.end_lsn);
                xid = Some(c.xid);
                commit_time = Some(c.commit_time);
                EventKind::StreamCommit(c)
            }
            Message::StreamAbort(a) => {
                if a.xid == a.subxid {
                    self.close_stream(a.xid);
                }
                xid = Some(a.xid);
                EventKind::StreamAbort(a)
            }
            Message::BeginPrepare(b) => {
                self.xid = Some(b.xid);
                self.commit_time = None;
                xid = self.xid;
                commit_time = None;
                EventKind::BeginPrepare(PrepareInfo {
                    prepare_lsn: b.prepare_lsn,
                    end_lsn: b.end_lsn,
                    prepare_time: b.prepare_time,
                    xid: b.xid,
                    gid: b.gid.to_owned(),
                })
            }
            Message::Prepare(p) | Message::StreamPrepare(p) => {
                let streamed = tag == walproto::pgoutput::tag::STREAM_PREPARE;
                if streamed {
                    self.close_stream(p.xid);
                }
                transaction_end = Some(p.end_lsn);
                xid = Some(p.xid);
                let info = PrepareInfo {
                    prepare_lsn: p.prepare_lsn,
                    end_lsn: p.end_lsn,
                    prepare_time: p.prepare_time,
                    xid: p.xid,
                    gid: p.gid.to_owned(),
                };
                if streamed {
                    EventKind::StreamPrepare(info)
                } else {
                    EventKind::Prepare(info)
                }
            }
            Message::CommitPrepared(c) => {
                transaction_end = Some(c.end_lsn);
                xid = Some(c.xid);
                commit_time = Some(c.commit_time);
                EventKind::CommitPrepared(CommitPrepared {
                    commit_lsn: c.commit_lsn,
                    end_lsn: c.end_lsn,
                    commit_time: c.commit_time,
                    xid: c.xid,
                    gid: c.gid.to_owned(),
                })
            }
            Message::RollbackPrepared(r) => {
                transaction_end = Some(r.rollback_end_lsn);
                xid = Some(r.xid);
                EventKind::RollbackPrepared(RollbackPrepared {
                    prepare_end_lsn: r.prepare_end_lsn,
                    rollback_end_lsn: r.rollback_end_lsn,
                    prepare_time: r.prepare_time,
                    rollback_time: r.rollback_time,
                    xid: r.xid,
                    gid: r.gid.to_owned(),
                })
            }
            // `Message` is non-exhaustive: a message this version does not know is skipped.
            _ => {
                return Ok(Followed {
                    event: None,
                    transaction_end: None,
                })
            }
        };
        let event = ChangeEvent {
            lsn: x.wal_start,
            xid,
            commit_time,
            kind,
        };
        if transaction_end.is_some() {
            self.xid = None;
            self.commit_time = None;
        }
        Ok(Followed {
            event: Some(event),
            transaction_end,
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
        if !columns.is_empty() && self.toast_warned.len() < MAX_OPEN_STREAMS {
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

    fn close_stream(&mut self, xid: Xid) {
        self.open_streams.retain(|&x| x != xid);
    }
}

//! Owned change events: cheap to move between tasks, backed by the frames' `Bytes`.

use std::sync::Arc;

use bytes::Bytes;
use walproto::owned::{ColumnValue, TupleBuf};
use walproto::pgoutput::Column;
use walproto::pgoutput::{Begin, Commit, StreamAbort, StreamCommit, StreamStart};
use walproto::{ColumnInfo, Lsn, RelationInfo, Timestamp, TypeInfo, Xid};

/// One message of the replication stream, decoded and owned.
///
/// Events are `Send + Sync` and cheap to move: row values are slices of the received frame
/// (shared, not copied) and relations are shared `Arc`s. Holding an event keeps its frame's
/// buffer alive.
#[derive(Clone, Debug)]
pub struct ChangeEvent {
    /// The `wal_start` of the XLogData that carried the message (`0/0` for some messages,
    /// such as Relation and Type; see the protocol docs).
    pub lsn: Lsn,
    /// The top-level transaction the message belongs to: the xid of its Begin or Begin
    /// Prepare, or of the streamed transaction whose block it is in. Row messages made in a
    /// subtransaction of a streamed transaction carry that subtransaction's xid in their own
    /// `xid` field.
    pub xid: Option<Xid>,
    /// The commit time of the transaction, where known when the message arrives (for a
    /// transaction sent whole, from its Begin; for a streamed one, only at its Stream Commit).
    pub commit_time: Option<Timestamp>,
    /// What happened.
    pub kind: EventKind,
}

impl ChangeEvent {
    /// For an event that ends a transaction, the LSN to acknowledge once the transaction is
    /// durably applied ([`SharedLsnFeedback::ack`](crate::SharedLsnFeedback::ack)): the
    /// transaction's end LSN. `None` for every other event.
    pub fn ack_lsn(&self) -> Option<Lsn> {
        match &self.kind {
            EventKind::Commit(c) => Some(c.end_lsn),
            EventKind::StreamCommit(c) => Some(c.end_lsn),
            EventKind::Prepare(p) | EventKind::StreamPrepare(p) => Some(p.end_lsn),
            EventKind::CommitPrepared(c) => Some(c.end_lsn),
            EventKind::RollbackPrepared(r) => Some(r.rollback_end_lsn),
            _ => None,
        }
    }
}

/// What a [`ChangeEvent`] reports.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum EventKind {
    /// A transaction sent whole begins.
    Begin(Begin),
    /// It committed.
    Commit(Commit),
    /// The transaction came from another node (replication origin).
    Origin {
        /// The commit LSN on the origin server.
        commit_lsn: Lsn,
        /// The origin's name.
        name: String,
    },
    /// A relation was described (also sent before the first row of each relation).
    Relation(Arc<RelationInfo>),
    /// A data type was described.
    Type(TypeInfo),
    /// A row was inserted.
    Insert(Insert),
    /// A row was updated.
    Update(Update),
    /// A row was deleted.
    Delete(Delete),
    /// Tables were truncated.
    Truncate(Truncate),
    /// A `pg_logical_emit_message` message.
    Message(LogicalMessage),
    /// A block of a streamed (in-progress) transaction begins (protocol 2+).
    StreamStart(StreamStart),
    /// The block ends.
    StreamStop,
    /// A streamed transaction committed.
    StreamCommit(StreamCommit),
    /// A streamed transaction (`xid == subxid`) or one of its subtransactions aborted.
    StreamAbort(StreamAbort),
    /// A prepared transaction begins (two-phase, protocol 3+).
    BeginPrepare(PrepareInfo),
    /// It was prepared.
    Prepare(PrepareInfo),
    /// A streamed transaction was prepared.
    StreamPrepare(PrepareInfo),
    /// A prepared transaction committed.
    CommitPrepared(CommitPrepared),
    /// A prepared transaction rolled back.
    RollbackPrepared(RollbackPrepared),
    /// Raw mode: the undecoded XLogData.
    XLogData(RawXLogData),
    /// The initial snapshot begins: the rows that follow (each table's Relation, then its
    /// rows as [`EventKind::Insert`]s without an xid) are the published tables as of
    /// `consistent_point`, where streaming starts afterwards.
    SnapshotBegin {
        /// The slot's consistent point.
        consistent_point: Lsn,
    },
    /// A table of the initial snapshot was copied (progress).
    SnapshotTable {
        /// The table.
        relation: Arc<RelationInfo>,
        /// Rows copied.
        rows: u64,
        /// Bytes of `COPY` data read.
        bytes: u64,
    },
    /// The initial snapshot is complete; changes after `consistent_point` follow.
    SnapshotEnd {
        /// The slot's consistent point.
        consistent_point: Lsn,
    },
    /// The slot is in danger of being invalidated (read on a side connection, see
    /// [`ReplicationStreamConfigBuilder::slot_check_interval`](crate::ReplicationStreamConfigBuilder::slot_check_interval)):
    /// its `safe_wal_size` fell under the threshold, or it became `unreserved` (the next
    /// checkpoint removes WAL it needs). The consumer is too far behind: acknowledge faster,
    /// or raise `max_slot_wal_keep_size`. Sent each time the slot gets worse; `lsn` is the
    /// stream's received position then.
    SlotWarning {
        /// The slot's `wal_status`.
        wal_status: crate::WalStatus,
        /// Its `safe_wal_size` in bytes (negative once past `max_slot_wal_keep_size`).
        safe_wal_size: Option<i64>,
    },
    /// The slot was invalidated and the [`SlotRecovery`](crate::SlotRecovery) policy dropped
    /// and re-created it: a new initial snapshot follows
    /// ([`SnapshotBegin`](Self::SnapshotBegin) to [`SnapshotEnd`](Self::SnapshotEnd)), then the
    /// changes after the new slot's consistent point. The changes between the last
    /// acknowledged position and that point were lost with the old slot: reconcile with the
    /// snapshot (rows that are not in it were deleted meanwhile). Transactions not complete
    /// before this event never complete.
    Resnapshot {
        /// Why the old slot was invalidated.
        reason: crate::InvalidationReason,
    },
    /// The connection was lost and the stream resumed on a new one from `resume_lsn`: what
    /// follows may repeat transactions already delivered (at-least-once), and a transaction
    /// that was being delivered when the connection dropped starts again from its beginning.
    ///
    /// After a failover (the server reached is on another timeline, such as a promoted
    /// standby, or is another server of the conninfo's hosts) `old_timeline` and
    /// `new_timeline` say so. The stream resumes there only when that is safe: the slot there
    /// is a synchronized failover slot (or the same server's), not invalidated, and the new
    /// timeline branched off at or after `resume_lsn`; otherwise it ends with
    /// [`ErrorKind::Failover`](crate::ErrorKind::Failover) or
    /// [`ErrorKind::SlotInvalidated`](crate::ErrorKind::SlotInvalidated).
    Reconnected {
        /// Where the new session resumed (everything after it is sent again).
        resume_lsn: Lsn,
        /// How many attempts the reconnect took.
        attempts: u32,
        /// Why the previous session ended: the error that was retried (the last one, when
        /// several attempts failed).
        reason: String,
        /// The timeline the stream was on before, when the server it resumed on is on
        /// another one (a failover); `None` when the timeline did not change.
        old_timeline: Option<u32>,
        /// The server's timeline now, when it changed (with `old_timeline`).
        new_timeline: Option<u32>,
    },
}

/// A row: the values of one tuple, with the relation that names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    relation: Arc<RelationInfo>,
    tuple: TupleBuf,
}

impl Row {
    pub(crate) fn new(relation: Arc<RelationInfo>, tuple: TupleBuf) -> Self {
        Self { relation, tuple }
    }

    /// The same row holding only its own bytes (see [`TupleBuf::detached`]), for rows kept
    /// past the batch they came in.
    pub(crate) fn detached(&self) -> Self {
        Self {
            relation: self.relation.clone(),
            tuple: self.tuple.detached(),
        }
    }

    /// The relation the row belongs to.
    pub fn relation(&self) -> &Arc<RelationInfo> {
        &self.relation
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        usize::from(self.tuple.len())
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.tuple.is_empty()
    }

    /// The value of the column named `name`.
    pub fn get(&self, name: &str) -> Option<ColumnValue> {
        let (i, _) = self.relation.column(name)?;
        self.value(i)
    }

    /// The value of column `index`.
    pub fn value(&self, index: usize) -> Option<ColumnValue> {
        self.tuple.values().nth(index)
    }

    /// The columns with their values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&ColumnInfo, ColumnValue)> + '_ {
        self.relation.columns.iter().zip(self.tuple.values())
    }

    /// The values, in column order, each an owned `Bytes` slice of the frame (a reference
    /// count up and down per value); [`columns`](Self::columns) reads them borrowed, which is
    /// two to four times faster when the values are not kept.
    pub fn values(&self) -> impl ExactSizeIterator<Item = ColumnValue> + '_ {
        self.tuple.values()
    }

    /// The values, in column order, borrowed from the frame: the fastest way to read a row.
    pub fn columns(&self) -> walproto::pgoutput::Columns<'_> {
        self.tuple.columns()
    }

    /// The underlying tuple.
    pub fn tuple(&self) -> &TupleBuf {
        &self.tuple
    }

    /// The bytes the row's values take (as sent), for memory accounting.
    pub(crate) fn byte_size(&self) -> usize {
        self.tuple
            .columns()
            .map(|c| match c {
                Column::Text(b) | Column::Binary(b) => 5 + b.len(),
                Column::Null | Column::UnchangedToast => 1,
            })
            .sum::<usize>()
            + 2
    }
}

/// The old row of an update or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OldRow {
    /// Only the replica identity (key) columns are set; the others are NULL.
    Key(Row),
    /// The whole old row (`REPLICA IDENTITY FULL`).
    Full(Row),
}

impl OldRow {
    /// The same old row holding only its own bytes.
    pub(crate) fn detached(&self) -> Self {
        match self {
            OldRow::Key(r) => OldRow::Key(r.detached()),
            OldRow::Full(r) => OldRow::Full(r.detached()),
        }
    }
}

impl OldRow {
    /// The row, whichever kind it is.
    pub fn row(&self) -> &Row {
        match self {
            OldRow::Key(r) | OldRow::Full(r) => r,
        }
    }

    /// The columns this image really carries, in column order: every column of a full row,
    /// only the replica identity (key) columns of a key row (pgoutput sends the others as
    /// NULL, and those NULLs mean nothing). This is the `key` object of the CLI's JSON.
    ///
    /// ```
    /// # fn show(old: &walstream::OldRow) {
    /// for (column, value) in old.iter() {
    ///     println!("{} = {:?}", column.name, value.as_text());
    /// }
    /// # }
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&ColumnInfo, ColumnValue)> + '_ {
        let key_only = matches!(self, OldRow::Key(_));
        self.row().iter().filter(move |(c, _)| !key_only || c.key)
    }

    /// The old value of column `name` when this image carries it (see [`iter`](Self::iter)):
    /// `None` for a column that does not exist, and for a non-key column of a key row.
    pub fn get(&self, name: &str) -> Option<ColumnValue> {
        let (i, _) = self.row().relation.column(name)?;
        self.carried(i)
    }

    /// Whether this is the key-only image ([`OldRow::Key`]).
    pub fn is_key(&self) -> bool {
        matches!(self, OldRow::Key(_))
    }

    /// The value of column `index` if this image carries it (see [`iter`](Self::iter)).
    fn carried(&self, index: usize) -> Option<ColumnValue> {
        let row = self.row();
        if let OldRow::Key(_) = self {
            if !row.relation.columns.get(index).is_some_and(|c| c.key) {
                return None;
            }
        }
        row.value(index)
    }

    /// The old value of column `index`, when this image really carries it: every column of a
    /// full row, only the key columns of a key row (its other columns are sent as NULL and
    /// mean nothing).
    fn known_value(&self, index: usize) -> Option<ColumnValue> {
        self.carried(index)
            .filter(|v| !matches!(v, ColumnValue::UnchangedToast))
    }
}

impl Update {
    /// Whether the new row has values the server did not send (unchanged TOASTed values).
    pub fn has_unchanged_toast(&self) -> bool {
        self.new
            .values()
            .any(|v| matches!(v, ColumnValue::UnchangedToast))
    }

    /// The new row with every unchanged TOASTed value taken from the old row where the old
    /// row carries it (`REPLICA IDENTITY FULL`, or a key column of the old key). Values the
    /// old row cannot supply stay [`ColumnValue::UnchangedToast`]: never NULL, never a guess.
    ///
    /// Returns the row as it is (shared, not copied) when there is nothing to complete.
    pub fn completed_new(&self) -> Row {
        let Some(old) = self.old.as_ref().filter(|_| self.has_unchanged_toast()) else {
            return self.new.clone();
        };
        let values: Vec<ColumnValue> = self
            .new
            .values()
            .enumerate()
            .map(|(i, v)| match v {
                ColumnValue::UnchangedToast => {
                    old.known_value(i).unwrap_or(ColumnValue::UnchangedToast)
                }
                v => v,
            })
            .collect();
        let mut bytes = Vec::new();
        walproto::pgoutput::encode_columns(values.iter().map(ColumnValue::as_column), &mut bytes);
        let bytes = Bytes::from(bytes);
        match walproto::pgoutput::TupleData::parse(&bytes)
            .ok()
            .and_then(|view| TupleBuf::from_view(&bytes, &view))
        {
            Some(tuple) => Row::new(self.relation.clone(), tuple),
            // The columns were valid when received and re-encoding keeps them so; if that
            // ever failed, the row as sent is still right (only less complete).
            None => self.new.clone(),
        }
    }
}

/// An inserted row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insert {
    /// The xid pgoutput sent with the message inside a streamed block (protocol 2+): the
    /// (sub)transaction that made the change. `None` outside streamed blocks.
    pub xid: Option<Xid>,
    /// The relation.
    pub relation: Arc<RelationInfo>,
    /// The new row.
    pub new: Row,
}

/// An updated row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// As [`Insert::xid`].
    pub xid: Option<Xid>,
    /// The relation.
    pub relation: Arc<RelationInfo>,
    /// The old key or row, when the server sent it (the key changed, or replica identity
    /// full).
    pub old: Option<OldRow>,
    /// The new row. Unchanged TOASTed values are [`ColumnValue::UnchangedToast`], not NULL.
    pub new: Row,
}

/// A deleted row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// As [`Insert::xid`].
    pub xid: Option<Xid>,
    /// The relation.
    pub relation: Arc<RelationInfo>,
    /// The old key or row.
    pub old: OldRow,
}

/// Truncated tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncate {
    /// As [`Insert::xid`].
    pub xid: Option<Xid>,
    /// The relations, in the order sent.
    pub relations: Vec<Arc<RelationInfo>>,
    /// `TRUNCATE ... CASCADE`.
    pub cascade: bool,
    /// `TRUNCATE ... RESTART IDENTITY`.
    pub restart_identity: bool,
}

/// A logical decoding message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalMessage {
    /// As [`Insert::xid`].
    pub xid: Option<Xid>,
    /// Whether it was emitted as part of a transaction.
    pub transactional: bool,
    /// The LSN of the message.
    pub lsn: Lsn,
    /// The prefix.
    pub prefix: String,
    /// The content, a slice of the frame.
    pub content: Bytes,
}

/// Begin Prepare, Prepare and Stream Prepare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareInfo {
    /// The LSN of the prepare.
    pub prepare_lsn: Lsn,
    /// The end LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// The prepare time.
    pub prepare_time: Timestamp,
    /// The transaction's xid.
    pub xid: Xid,
    /// The global transaction identifier.
    pub gid: String,
}

impl PrepareInfo {
    /// The owned form of a Prepare or Stream Prepare.
    pub(crate) fn of(p: &walproto::pgoutput::Prepare<'_>) -> Self {
        PrepareInfo {
            prepare_lsn: p.prepare_lsn,
            end_lsn: p.end_lsn,
            prepare_time: p.prepare_time,
            xid: p.xid,
            gid: p.gid.to_owned(),
        }
    }
}

/// Commit Prepared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitPrepared {
    /// The LSN of the commit prepared.
    pub commit_lsn: Lsn,
    /// The end LSN of the commit prepared transaction.
    pub end_lsn: Lsn,
    /// The commit time.
    pub commit_time: Timestamp,
    /// The transaction's xid.
    pub xid: Xid,
    /// The global transaction identifier.
    pub gid: String,
}

/// Rollback Prepared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollbackPrepared {
    /// The end LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// The end LSN of the rollback prepared transaction.
    pub rollback_end_lsn: Lsn,
    /// The prepare time.
    pub prepare_time: Timestamp,
    /// The rollback time.
    pub rollback_time: Timestamp,
    /// The transaction's xid.
    pub xid: Xid,
    /// The global transaction identifier.
    pub gid: String,
}

/// An XLogData as received (raw mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawXLogData {
    /// The WAL position of the data.
    pub wal_start: Lsn,
    /// The server's WAL end when it sent this.
    pub wal_end: Lsn,
    /// When the server sent it.
    pub send_time: Timestamp,
    /// The pgoutput message, a slice of the frame.
    pub data: Bytes,
}

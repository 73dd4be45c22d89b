//! The JSON shape of the `serde` feature: [`ChangeEvent`], [`Change`], [`Transaction`] and
//! [`Value`] implement `Serialize` in the shape of the CLI's JSON lines (`walstream
//! tail`/`decode`), so that one reader reads both. This module has no items of its own.
//!
//! ```
//! use walstream::walproto::pgoutput::{Options, ProtocolVersion};
//! use walstream::{EventDecoder, Lsn, Timestamp};
//!
//! // An XLogData at 0/16B3748 carrying a Begin message.
//! let mut payload = vec![b'w'];
//! payload.extend_from_slice(&0x16B3748u64.to_be_bytes()); // wal_start
//! payload.extend_from_slice(&0x16B3748u64.to_be_bytes()); // wal_end
//! payload.extend_from_slice(&0i64.to_be_bytes()); // send_time
//! payload.push(b'B');
//! payload.extend_from_slice(&0x16B3800u64.to_be_bytes()); // final_lsn
//! payload.extend_from_slice(&1_000_000i64.to_be_bytes()); // commit_time
//! payload.extend_from_slice(&740u32.to_be_bytes()); // xid
//! let mut decoder = EventDecoder::new(&Options::new(ProtocolVersion::V1));
//! let event = decoder.decode(&payload.into())?.unwrap();
//! assert_eq!(
//!     serde_json::to_string(&event)?,
//!     r#"{"type":"begin","lsn":"0/16B3748","final_lsn":"0/16B3800","#.to_owned()
//!         + r#""commit_time":"2000-01-01T00:00:01.000000Z","xid":740}"#
//! );
//! // The scalar types read back.
//! let lsn: Lsn = serde_json::from_str(r#""0/16B3748""#)?;
//! let t: Timestamp = serde_json::from_str(r#""2000-01-01T00:00:01.000000Z""#)?;
//! assert_eq!((lsn, t), (Lsn::new(0x16B3748), Timestamp::new(1_000_000)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! An event in full:
//!
//! An event is one object, `type` and `lsn` first, then the fields of its message:
//!
//! ```json
//! {"type":"insert","lsn":"0/1944C20","relation_id":16399,"schema":"public","table":"t",
//!  "new":{"id":"1","name":"a","blob":{"binary":"AAE="},"big":{"unchanged_toast":true}}}
//! ```
//!
//! - LSNs are strings as PostgreSQL writes them (`"0/16B3748"`); timestamps are RFC 3339 in
//!   UTC with six fractional digits (`"2026-11-24T13:52:05.439422Z"`, or `"infinity"`); xids
//!   and OIDs are numbers.
//! - Rows are objects from column name to value, in column order: a text value is a string,
//!   NULL is `null`, a binary value `{"binary":"<base64>"}`, an unchanged TOASTed value
//!   `{"unchanged_toast":true}` ([`ColumnValue`](crate::ColumnValue)'s serde). An update or
//!   delete has `key` (only the replica identity columns, [`OldRow::iter`]) or `old` (the
//!   whole old row). A text value that is not UTF-8 (a `SQL_ASCII` database) is an error.
//! - A message's content is a string when it is UTF-8, else `{"base64":"..."}`.
//! - Inside a streamed block, row and message events carry the `xid` pgoutput sent.
//!
//! Every pgoutput message has the CLI's fields, except that `prepare`, `stream_prepare`,
//! `commit_prepared` and `rollback_prepared` have no `flags` (always 0 today; the events do
//! not keep them). The events the CLI has no line for are `xlogdata` (`wal_start`, `wal_end`,
//! `send_time`, `data` in base64), `snapshot_begin`/`snapshot_end` (`consistent_point`),
//! `snapshot_table` (`relation_id`, `schema`, `table`, `rows`, `bytes`), `slot_warning`
//! (`wal_status`, `safe_wal_size`) and `resnapshot` (`reason`); `reconnected` is the CLI's.
//!
//! A [`Change`] is the object of its event. A [`Transaction`] is
//! `{"xid","commit_lsn","end_lsn","commit_time","origin"?,"kind","changes":[...]}` with
//! `kind` one of `plain`, `streamed`, `prepared` (then `gid`, `prepare_lsn`, `prepare_time`,
//! `streamed`) or `snapshot`; its spilled changes are read back from disk while serializing,
//! and a read error is a serialization error. A [`Value`] is the CLI's `--typed` value: JSON
//! numbers and booleans where exact, `numeric` as a string, floats' `NaN`/`Infinity` as
//! strings, `json` as JSON, arrays as arrays, other types as their text.
//!
//! These types serialize only. They cannot be rebuilt from this JSON: a row needs its
//! relation's column types and the frame its values share, a transaction its spill file, and
//! a typed value its column type (`"1"` may be text, numeric or an unknown type). The scalar
//! types and [`ColumnValue`](crate::ColumnValue) deserialize too (walproto's `serde`
//! feature).

use base64::Engine as _;
use serde::ser::{Error as _, SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;
use walproto::pgoutput::ReplicaIdentity;
use walproto::{Lsn, RelationInfo};

use crate::logical::event::{ChangeEvent, EventKind, OldRow, PrepareInfo, Row};
use crate::transaction::{Change, ChangeKind, Transaction, TransactionKind};
#[cfg(feature = "typed")]
use crate::value::{Raw, Value};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Serialize for ChangeEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let lsn = self.lsn;
        match &self.kind {
            EventKind::Begin(b) => {
                head(&mut m, "begin", lsn)?;
                m.serialize_entry("final_lsn", &b.final_lsn)?;
                m.serialize_entry("commit_time", &b.commit_time)?;
                m.serialize_entry("xid", &b.xid)?;
            }
            EventKind::Commit(c) => {
                head(&mut m, "commit", lsn)?;
                m.serialize_entry("flags", &c.flags)?;
                m.serialize_entry("commit_lsn", &c.commit_lsn)?;
                m.serialize_entry("end_lsn", &c.end_lsn)?;
                m.serialize_entry("commit_time", &c.commit_time)?;
            }
            EventKind::Origin { commit_lsn, name } => {
                head(&mut m, "origin", lsn)?;
                m.serialize_entry("origin_lsn", commit_lsn)?;
                m.serialize_entry("name", name)?;
            }
            EventKind::Relation(r) => {
                head(&mut m, "relation", lsn)?;
                relation(&mut m, r)?;
                m.serialize_entry("replica_identity", replica_identity(r.replica_identity))?;
                m.serialize_entry("columns", &Columns(r))?;
            }
            EventKind::Type(t) => {
                head(&mut m, "type", lsn)?;
                m.serialize_entry("type_id", &t.id)?;
                m.serialize_entry("schema", &t.namespace)?;
                m.serialize_entry("name", &t.name)?;
            }
            EventKind::Insert(_)
            | EventKind::Update(_)
            | EventKind::Delete(_)
            | EventKind::Truncate(_)
            | EventKind::Message(_) => {
                // The row kinds are the changes of a transaction: one writer for both (the
                // clone copies `Arc`s and `Bytes` handles, not row data).
                let change = match self.kind.clone() {
                    EventKind::Insert(c) => ChangeKind::Insert(c),
                    EventKind::Update(c) => ChangeKind::Update(c),
                    EventKind::Delete(c) => ChangeKind::Delete(c),
                    EventKind::Truncate(c) => ChangeKind::Truncate(c),
                    EventKind::Message(c) => ChangeKind::Message(c),
                    _ => return Err(S::Error::custom("unreachable event kind")),
                };
                change_fields(&mut m, lsn, &change)?;
            }
            EventKind::StreamStart(st) => {
                head(&mut m, "stream_start", lsn)?;
                m.serialize_entry("xid", &st.xid)?;
                m.serialize_entry("first_segment", &st.first_segment)?;
            }
            EventKind::StreamStop => head(&mut m, "stream_stop", lsn)?,
            EventKind::StreamCommit(c) => {
                head(&mut m, "stream_commit", lsn)?;
                m.serialize_entry("xid", &c.xid)?;
                m.serialize_entry("flags", &c.flags)?;
                m.serialize_entry("commit_lsn", &c.commit_lsn)?;
                m.serialize_entry("end_lsn", &c.end_lsn)?;
                m.serialize_entry("commit_time", &c.commit_time)?;
            }
            EventKind::StreamAbort(a) => {
                head(&mut m, "stream_abort", lsn)?;
                m.serialize_entry("xid", &a.xid)?;
                m.serialize_entry("subxid", &a.subxid)?;
                if let Some(p) = &a.parallel {
                    m.serialize_entry("abort_lsn", &p.abort_lsn)?;
                    m.serialize_entry("abort_time", &p.abort_time)?;
                }
            }
            EventKind::BeginPrepare(p) => prepare(&mut m, "begin_prepare", lsn, p)?,
            EventKind::Prepare(p) => prepare(&mut m, "prepare", lsn, p)?,
            EventKind::StreamPrepare(p) => prepare(&mut m, "stream_prepare", lsn, p)?,
            EventKind::CommitPrepared(c) => {
                head(&mut m, "commit_prepared", lsn)?;
                m.serialize_entry("commit_lsn", &c.commit_lsn)?;
                m.serialize_entry("end_lsn", &c.end_lsn)?;
                m.serialize_entry("commit_time", &c.commit_time)?;
                m.serialize_entry("xid", &c.xid)?;
                m.serialize_entry("gid", &c.gid)?;
            }
            EventKind::RollbackPrepared(r) => {
                head(&mut m, "rollback_prepared", lsn)?;
                m.serialize_entry("prepare_end_lsn", &r.prepare_end_lsn)?;
                m.serialize_entry("rollback_end_lsn", &r.rollback_end_lsn)?;
                m.serialize_entry("prepare_time", &r.prepare_time)?;
                m.serialize_entry("rollback_time", &r.rollback_time)?;
                m.serialize_entry("xid", &r.xid)?;
                m.serialize_entry("gid", &r.gid)?;
            }
            EventKind::XLogData(x) => {
                head(&mut m, "xlogdata", lsn)?;
                m.serialize_entry("wal_start", &x.wal_start)?;
                m.serialize_entry("wal_end", &x.wal_end)?;
                m.serialize_entry("send_time", &x.send_time)?;
                m.serialize_entry("data", &BASE64.encode(&x.data))?;
            }
            EventKind::SnapshotBegin { consistent_point } => {
                head(&mut m, "snapshot_begin", lsn)?;
                m.serialize_entry("consistent_point", consistent_point)?;
            }
            EventKind::SnapshotTable {
                relation: r,
                rows,
                bytes,
            } => {
                head(&mut m, "snapshot_table", lsn)?;
                relation(&mut m, r)?;
                m.serialize_entry("rows", rows)?;
                m.serialize_entry("bytes", bytes)?;
            }
            EventKind::SnapshotEnd { consistent_point } => {
                head(&mut m, "snapshot_end", lsn)?;
                m.serialize_entry("consistent_point", consistent_point)?;
            }
            EventKind::SlotWarning {
                wal_status,
                safe_wal_size,
            } => {
                head(&mut m, "slot_warning", lsn)?;
                m.serialize_entry("wal_status", &format!("{wal_status:?}").to_lowercase())?;
                m.serialize_entry("safe_wal_size", safe_wal_size)?;
            }
            EventKind::Resnapshot { reason } => {
                head(&mut m, "resnapshot", lsn)?;
                m.serialize_entry("reason", &format!("{reason:?}").to_lowercase())?;
            }
            EventKind::Reconnected {
                resume_lsn,
                reason,
                old_timeline,
                new_timeline,
                ..
            } => {
                head(&mut m, "reconnected", lsn)?;
                m.serialize_entry("resume_lsn", resume_lsn)?;
                m.serialize_entry("reason", reason)?;
                if let (Some(old), Some(new)) = (old_timeline, new_timeline) {
                    m.serialize_entry("old_timeline", old)?;
                    m.serialize_entry("new_timeline", new)?;
                }
            }
        }
        m.end()
    }
}

impl Serialize for Change {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        change_fields(&mut m, self.lsn, &self.kind)?;
        m.end()
    }
}

impl Serialize for Transaction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("xid", &self.xid)?;
        m.serialize_entry("commit_lsn", &self.commit_lsn)?;
        m.serialize_entry("end_lsn", &self.end_lsn)?;
        m.serialize_entry("commit_time", &self.commit_time)?;
        if let Some(origin) = &self.origin {
            m.serialize_entry("origin", origin)?;
        }
        match &self.kind {
            TransactionKind::Plain => m.serialize_entry("kind", "plain")?,
            TransactionKind::Streamed => m.serialize_entry("kind", "streamed")?,
            TransactionKind::Prepared {
                gid,
                prepare_lsn,
                prepare_time,
                streamed,
            } => {
                m.serialize_entry("kind", "prepared")?;
                m.serialize_entry("gid", gid)?;
                m.serialize_entry("prepare_lsn", prepare_lsn)?;
                m.serialize_entry("prepare_time", prepare_time)?;
                m.serialize_entry("streamed", streamed)?;
            }
            TransactionKind::Snapshot { relation: r } => {
                m.serialize_entry("kind", "snapshot")?;
                relation(&mut m, r)?;
            }
        }
        m.serialize_entry("changes", &ChangesJson(self))?;
        m.end()
    }
}

#[cfg(feature = "typed")]
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::UnchangedToast => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("unchanged_toast", &true)?;
                m.end()
            }
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int2(v) => s.serialize_i16(*v),
            Value::Int4(v) => s.serialize_i32(*v),
            Value::Int8(v) => s.serialize_i64(*v),
            Value::Oid(v) => s.serialize_u32(*v),
            Value::Float4(x) => float(s, f64::from(*x)),
            Value::Float8(x) => float(s, *x),
            Value::Json(j) => j.serialize(s),
            Value::Array(values) => {
                let mut seq = s.serialize_seq(Some(values.len()))?;
                for v in values {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Unknown {
                raw: Raw::Binary(b),
                ..
            } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("binary", &BASE64.encode(b))?;
                m.end()
            }
            v => match v.to_text() {
                Some(text) => s.serialize_str(&text),
                None => s.serialize_unit(),
            },
        }
    }
}

/// A finite float as a number, else `"NaN"`, `"Infinity"` or `"-Infinity"` (JSON has no such
/// numbers).
#[cfg(feature = "typed")]
fn float<S: Serializer>(s: S, x: f64) -> Result<S::Ok, S::Error> {
    if x.is_finite() {
        s.serialize_f64(x)
    } else if x.is_nan() {
        s.serialize_str("NaN")
    } else if x > 0.0 {
        s.serialize_str("Infinity")
    } else {
        s.serialize_str("-Infinity")
    }
}

/// `type` and `lsn`, the first two fields of every event.
fn head<M: SerializeMap>(m: &mut M, kind: &str, lsn: Lsn) -> Result<(), M::Error> {
    m.serialize_entry("type", kind)?;
    m.serialize_entry("lsn", &lsn)
}

/// `relation_id`, `schema` and `table`.
fn relation<M: SerializeMap>(m: &mut M, r: &RelationInfo) -> Result<(), M::Error> {
    m.serialize_entry("relation_id", &r.id)?;
    m.serialize_entry("schema", &r.namespace)?;
    m.serialize_entry("table", &r.name)
}

fn replica_identity(ri: ReplicaIdentity) -> &'static str {
    match ri {
        ReplicaIdentity::Default => "default",
        ReplicaIdentity::Nothing => "nothing",
        ReplicaIdentity::Full => "full",
        ReplicaIdentity::Index => "index",
    }
}

fn prepare<M: SerializeMap>(
    m: &mut M,
    kind: &str,
    lsn: Lsn,
    p: &PrepareInfo,
) -> Result<(), M::Error> {
    head(m, kind, lsn)?;
    m.serialize_entry("prepare_lsn", &p.prepare_lsn)?;
    m.serialize_entry("end_lsn", &p.end_lsn)?;
    m.serialize_entry("prepare_time", &p.prepare_time)?;
    m.serialize_entry("xid", &p.xid)?;
    m.serialize_entry("gid", &p.gid)
}

/// The fields of a row change or message event, `type` and `lsn` included.
fn change_fields<M: SerializeMap>(m: &mut M, lsn: Lsn, kind: &ChangeKind) -> Result<(), M::Error> {
    let (name, xid) = match kind {
        ChangeKind::Insert(c) => ("insert", c.xid),
        ChangeKind::Update(c) => ("update", c.xid),
        ChangeKind::Delete(c) => ("delete", c.xid),
        ChangeKind::Truncate(c) => ("truncate", c.xid),
        ChangeKind::Message(c) => ("message", c.xid),
    };
    head(m, name, lsn)?;
    if let Some(xid) = xid {
        m.serialize_entry("xid", &xid)?;
    }
    match kind {
        ChangeKind::Insert(c) => {
            relation(m, &c.relation)?;
            m.serialize_entry("new", &RowJson(&c.new))?;
        }
        ChangeKind::Update(c) => {
            relation(m, &c.relation)?;
            if let Some(old) = &c.old {
                old_row(m, old)?;
            }
            m.serialize_entry("new", &RowJson(&c.new))?;
        }
        ChangeKind::Delete(c) => {
            relation(m, &c.relation)?;
            old_row(m, &c.old)?;
        }
        ChangeKind::Truncate(c) => {
            let ids: Vec<_> = c.relations.iter().map(|r| r.id).collect();
            m.serialize_entry("relation_ids", &ids)?;
            let tables: Vec<_> = c
                .relations
                .iter()
                .map(|r| format!("{}.{}", r.namespace, r.name))
                .collect();
            m.serialize_entry("tables", &tables)?;
            m.serialize_entry("cascade", &c.cascade)?;
            m.serialize_entry("restart_identity", &c.restart_identity)?;
        }
        ChangeKind::Message(c) => {
            m.serialize_entry("transactional", &c.transactional)?;
            m.serialize_entry("prefix", &c.prefix)?;
            match std::str::from_utf8(&c.content) {
                Ok(text) => m.serialize_entry("content", text)?,
                Err(_) => m.serialize_entry("content", &Base64Content(&c.content))?,
            }
        }
    }
    Ok(())
}

/// `key` (the replica identity columns) or `old` (the whole row).
fn old_row<M: SerializeMap>(m: &mut M, old: &OldRow) -> Result<(), M::Error> {
    match old {
        OldRow::Key(_) => m.serialize_entry("key", &OldJson(old)),
        OldRow::Full(r) => m.serialize_entry("old", &RowJson(r)),
    }
}

/// A row as an object from column name to value.
struct RowJson<'a>(&'a Row);

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (column, value) in self.0.iter() {
            m.serialize_entry(&column.name, &value)?;
        }
        m.end()
    }
}

/// The columns an old row image carries.
struct OldJson<'a>(&'a OldRow);

impl Serialize for OldJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (column, value) in self.0.iter() {
            m.serialize_entry(&column.name, &value)?;
        }
        m.end()
    }
}

/// `{"base64":"..."}`: a message content that is not UTF-8.
struct Base64Content<'a>(&'a [u8]);

impl Serialize for Base64Content<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("base64", &BASE64.encode(self.0))?;
        m.end()
    }
}

/// A relation's `columns`: name, type OID, type modifier and key flag each.
struct Columns<'a>(&'a RelationInfo);

impl Serialize for Columns<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.columns.len()))?;
        for c in &self.0.columns {
            seq.serialize_element(&ColumnJson(c))?;
        }
        seq.end()
    }
}

struct ColumnJson<'a>(&'a walproto::ColumnInfo);

impl Serialize for ColumnJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("name", &self.0.name)?;
        m.serialize_entry("type_oid", &self.0.type_oid)?;
        m.serialize_entry("type_modifier", &self.0.type_modifier)?;
        m.serialize_entry("key", &self.0.key)?;
        m.end()
    }
}

/// A transaction's changes, read back from its spill file where spilled.
struct ChangesJson<'a>(&'a Transaction);

impl Serialize for ChangesJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for change in self.0.changes() {
            let change = change.map_err(S::Error::custom)?;
            seq.serialize_element(&change)?;
        }
        seq.end()
    }
}

//! The JSON lines of the `walstream` CLI's contract (`CLI.md`, "JSON lines") for decoded
//! pgoutput messages, keepalives, relations and reconnects: the one writer that `walstream
//! decode`, `walstream tail` and the wasm capture inspector share, so that their lines are
//! the same byte for byte.
//!
//! Each function appends one JSON object and a newline to a `String` the caller reuses from
//! line to line. Lines are written straight from the borrowed message, with no intermediate
//! tree, in the contract's key order (`type`, `lsn`, then the fields of the message type).
//! Row values go through a [`ValueWriter`]: [`untyped_value`] writes the contract's untyped
//! form (text as a string, binary as `{"binary":"<base64>"}`, an unchanged TOASTed value as
//! `{"unchanged_toast":true}`); the CLI's `--typed` passes a writer of its own.
//!
//! ```
//! use walproto::pgoutput::{Message, ProtocolVersion, Streaming};
//! use walproto::{json, Decoder, Lsn};
//!
//! let mut decoder = Decoder::new(ProtocolVersion::V1, Streaming::Off);
//! let begin = b"B\0\0\0\0\x01\x6B\x37\x48\0\0\0\0\0\0\0\0\0\0\x02\xE4";
//! let decoded = decoder.decode(begin)?;
//! let mut line = String::new();
//! json::message(&mut line, Lsn::new(0x16B_3748), &decoded.message, &decoder, json::untyped_value)
//!     .expect("a Begin always has a JSON form");
//! assert_eq!(
//!     line,
//!     "{\"type\":\"begin\",\"lsn\":\"0/16B3748\",\"final_lsn\":\"0/16B3748\",\
//!      \"commit_time\":\"2000-01-01T00:00:00.000000Z\",\"xid\":740}\n"
//! );
//! # Ok::<(), walproto::Error>(())
//! ```
//!
//! Needs the `json` feature (with `alloc` only: it builds for `no_std` and wasm).

use alloc::format;
use alloc::string::String;
use core::fmt::{self, Display, Write as _};

use base64::Engine as _;

use crate::pgoutput::{Column, Message, OldTuple, ReplicaIdentity};
use crate::replication::PrimaryKeepalive;
use crate::{Decoder, Lsn, Oid, RelationInfo, Timestamp};

/// Why a message that decoded cannot be written as the contract's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// A row or truncate names a relation the decoder has no description of. The decoder
    /// already rejects these; the writer checks again rather than guess a name.
    UnknownRelation(Oid),
    /// A text-format column value is not valid UTF-8, so it cannot be a JSON string without
    /// changing it (a database whose encoding is not UTF-8, such as `SQL_ASCII`).
    InvalidUtf8 {
        /// `schema.table` of the row.
        relation: String,
        /// The column's name.
        column: String,
    },
    /// A message type the contract has no line for.
    Unsupported(u8),
}

impl Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::UnknownRelation(id) => {
                write!(
                    f,
                    "row for relation {id} that no Relation message described"
                )
            }
            RenderError::InvalidUtf8 { relation, column } => write!(
                f,
                "text value of column {column:?} of {relation} is not valid UTF-8"
            ),
            RenderError::Unsupported(tag) => {
                write!(f, "no JSON form for message type {}", tag_display(*tag))
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RenderError {}

/// A text value that is not valid UTF-8: what a [`ValueWriter`] returns when it cannot write
/// a value as JSON (the caller names the column, in [`RenderError::InvalidUtf8`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8;

/// Writes one row value, of type `type_oid`, as JSON: [`untyped_value`], or a writer that
/// renders values by their types.
pub type ValueWriter = fn(&mut String, Oid, Column<'_>) -> Result<(), NotUtf8>;

/// The contract's untyped form of a row value: `null`, `{"unchanged_toast":true}`, a text
/// value as a JSON string, a binary value as `{"binary":"<base64>"}`. The type is not used.
pub fn untyped_value(out: &mut String, _type_oid: Oid, value: Column<'_>) -> Result<(), NotUtf8> {
    match value {
        Column::Null => out.push_str("null"),
        Column::UnchangedToast => out.push_str("{\"unchanged_toast\":true}"),
        Column::Text(bytes) => string(out, core::str::from_utf8(bytes).map_err(|_| NotUtf8)?),
        Column::Binary(bytes) => {
            out.push_str("{\"binary\":");
            base64(out, bytes);
            out.push('}');
        }
    }
    Ok(())
}

/// The contract's `type` for a pgoutput message type byte, if it is one.
pub fn type_name(tag: u8) -> Option<&'static str> {
    use crate::pgoutput::tag;
    Some(match tag {
        tag::BEGIN => "begin",
        tag::COMMIT => "commit",
        tag::ORIGIN => "origin",
        tag::RELATION => "relation",
        tag::TYPE => "type",
        tag::INSERT => "insert",
        tag::UPDATE => "update",
        tag::DELETE => "delete",
        tag::TRUNCATE => "truncate",
        tag::MESSAGE => "message",
        tag::STREAM_START => "stream_start",
        tag::STREAM_STOP => "stream_stop",
        tag::STREAM_COMMIT => "stream_commit",
        tag::STREAM_ABORT => "stream_abort",
        tag::BEGIN_PREPARE => "begin_prepare",
        tag::PREPARE => "prepare",
        tag::COMMIT_PREPARED => "commit_prepared",
        tag::ROLLBACK_PREPARED => "rollback_prepared",
        tag::STREAM_PREPARE => "stream_prepare",
        _ => return None,
    })
}

/// A message type byte for humans: `'I'`, or `0x01` when not printable.
pub fn tag_display(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", char::from(tag))
    } else {
        format!("0x{tag:02x}")
    }
}

/// Appends one JSON line for `msg`, carried by the XLogData whose `wal_start` is `lsn`, with
/// row values written by `values`.
///
/// `decoder` must be the one that just decoded `msg`: row messages take `schema` and `table`
/// (and column names) from its relation cache. On error, `out` may hold part of a line; the
/// caller discards it.
pub fn message(
    out: &mut String,
    lsn: Lsn,
    msg: &Message<'_>,
    decoder: &Decoder,
    values: ValueWriter,
) -> Result<(), RenderError> {
    let name = type_name(msg.tag()).ok_or(RenderError::Unsupported(msg.tag()))?;
    let mut o = Object::start(out, name, lsn);
    // Only messages parsed inside a streamed block carry the xid pgoutput wrote before them.
    if let Some(xid) = msg.stream_xid() {
        o.num("xid", xid.0);
    }
    match msg {
        Message::Begin(m) => {
            o.lsn("final_lsn", m.final_lsn);
            o.time("commit_time", m.commit_time);
            o.num("xid", m.xid.0);
        }
        Message::Commit(m) => {
            o.num("flags", m.flags);
            o.lsn("commit_lsn", m.commit_lsn);
            o.lsn("end_lsn", m.end_lsn);
            o.time("commit_time", m.commit_time);
        }
        Message::Origin(m) => {
            o.lsn("origin_lsn", m.commit_lsn);
            o.str("name", m.name);
        }
        Message::Relation(m) => {
            o.num("relation_id", m.id.0);
            o.str("schema", m.namespace);
            o.str("table", m.name);
            o.raw("replica_identity", replica_identity(m.replica_identity));
            relation_columns(
                o.key("columns"),
                m.columns
                    .iter()
                    .map(|c| (c.name, c.type_oid.0, c.type_modifier, c.is_key())),
            );
        }
        Message::Type(m) => {
            o.num("type_id", m.id.0);
            o.str("schema", m.namespace);
            o.str("name", m.name);
        }
        Message::Insert(m) => {
            let rel = relation(decoder, m.relation_id)?;
            o.relation(rel);
            o.row("new", rel, m.new.columns(), false, values)?;
        }
        Message::Update(m) => {
            let rel = relation(decoder, m.relation_id)?;
            o.relation(rel);
            if let Some(old) = &m.old {
                o.old(rel, old, values)?;
            }
            o.row("new", rel, m.new.columns(), false, values)?;
        }
        Message::Delete(m) => {
            let rel = relation(decoder, m.relation_id)?;
            o.relation(rel);
            o.old(rel, &m.old, values)?;
        }
        Message::Truncate(m) => {
            let out = o.key("relation_ids");
            out.push('[');
            for (i, id) in m.relation_ids.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                display(out, id.0);
            }
            out.push(']');
            let out = o.key("tables");
            out.push('[');
            for (i, id) in m.relation_ids.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let rel = relation(decoder, id)?;
                out.push('"');
                escape(out, &rel.namespace);
                out.push('.');
                escape(out, &rel.name);
                out.push('"');
            }
            out.push(']');
            o.bool("cascade", m.cascade());
            o.bool("restart_identity", m.restart_identity());
        }
        Message::Message(m) => {
            o.bool("transactional", m.transactional());
            o.str("prefix", m.prefix);
            match core::str::from_utf8(m.content) {
                Ok(text) => o.str("content", text),
                Err(_) => {
                    let out = o.key("content");
                    out.push_str("{\"base64\":");
                    base64(out, m.content);
                    out.push('}');
                }
            }
        }
        Message::StreamStart(m) => {
            o.num("xid", m.xid.0);
            o.bool("first_segment", m.first_segment);
        }
        Message::StreamStop => {}
        Message::StreamCommit(m) => {
            o.num("xid", m.xid.0);
            o.num("flags", m.flags);
            o.lsn("commit_lsn", m.commit_lsn);
            o.lsn("end_lsn", m.end_lsn);
            o.time("commit_time", m.commit_time);
        }
        Message::StreamAbort(m) => {
            o.num("xid", m.xid.0);
            o.num("subxid", m.subxid.0);
            // Present exactly when the parse context was protocol 4+ with parallel streaming.
            if let Some(p) = &m.parallel {
                o.lsn("abort_lsn", p.abort_lsn);
                o.time("abort_time", p.abort_time);
            }
        }
        Message::BeginPrepare(m) => {
            o.lsn("prepare_lsn", m.prepare_lsn);
            o.lsn("end_lsn", m.end_lsn);
            o.time("prepare_time", m.prepare_time);
            o.num("xid", m.xid.0);
            o.str("gid", m.gid);
        }
        Message::Prepare(m) | Message::StreamPrepare(m) => {
            o.num("flags", m.flags);
            o.lsn("prepare_lsn", m.prepare_lsn);
            o.lsn("end_lsn", m.end_lsn);
            o.time("prepare_time", m.prepare_time);
            o.num("xid", m.xid.0);
            o.str("gid", m.gid);
        }
        Message::CommitPrepared(m) => {
            o.num("flags", m.flags);
            o.lsn("commit_lsn", m.commit_lsn);
            o.lsn("end_lsn", m.end_lsn);
            o.time("commit_time", m.commit_time);
            o.num("xid", m.xid.0);
            o.str("gid", m.gid);
        }
        Message::RollbackPrepared(m) => {
            o.num("flags", m.flags);
            o.lsn("prepare_end_lsn", m.prepare_end_lsn);
            o.lsn("rollback_end_lsn", m.rollback_end_lsn);
            o.time("prepare_time", m.prepare_time);
            o.time("rollback_time", m.rollback_time);
            o.num("xid", m.xid.0);
            o.str("gid", m.gid);
        }
    }
    o.end();
    Ok(())
}

/// Appends one JSON line for a primary keepalive; its `lsn` is its `wal_end`.
pub fn keepalive(out: &mut String, k: &PrimaryKeepalive) {
    let mut o = Object::start(out, "keepalive", k.wal_end);
    o.lsn("wal_end", k.wal_end);
    o.time("send_time", k.send_time);
    o.bool("reply_requested", k.reply_requested);
    o.end();
}

/// Appends the `relation` line of a relation described some other way than by a Relation
/// message (the CLI's initial snapshot reads it from the catalog), in that message's shape.
pub fn relation_info(out: &mut String, lsn: Lsn, rel: &RelationInfo) {
    let mut o = Object::start(out, "relation", lsn);
    o.num("relation_id", rel.id.0);
    o.str("schema", &rel.namespace);
    o.str("table", &rel.name);
    o.raw("replica_identity", replica_identity(rel.replica_identity));
    relation_columns(
        o.key("columns"),
        rel.columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_oid.0, c.type_modifier, c.key)),
    );
    o.end();
}

/// Appends the contract's `reconnected` line ("Reconnects"): printed before the first line of
/// a new connection, so that a reader knows to drop the transactions it has not seen end;
/// with the old and the new timeline after a failover.
pub fn reconnected(out: &mut String, resume_lsn: Lsn, reason: &str, timelines: Option<(u32, u32)>) {
    let mut o = Object::start(out, "reconnected", resume_lsn);
    o.lsn("resume_lsn", resume_lsn);
    o.str("reason", reason);
    if let Some((old, new)) = timelines {
        o.num("old_timeline", old);
        o.num("new_timeline", new);
    }
    o.end();
}

/// Appends an `insert` line of a row that came some other way than an Insert message (the
/// CLI's initial snapshot copies rows with `COPY`), with values written by `values`.
pub fn insert<'c>(
    out: &mut String,
    lsn: Lsn,
    rel: &RelationInfo,
    columns: impl Iterator<Item = Column<'c>>,
    values: ValueWriter,
) -> Result<(), RenderError> {
    let mut o = Object::start(out, "insert", lsn);
    o.relation(rel);
    o.row("new", rel, columns, false, values)?;
    o.end();
    Ok(())
}

/// One JSON object being written: every field after the first is preceded by a comma.
///
/// Keys are `'static` names from the contract, written without escaping.
struct Object<'o> {
    out: &'o mut String,
}

impl<'o> Object<'o> {
    fn start(out: &'o mut String, type_name: &str, lsn: Lsn) -> Self {
        out.push_str("{\"type\":\"");
        out.push_str(type_name);
        out.push_str("\",\"lsn\":\"");
        display(out, lsn);
        out.push('"');
        Object { out }
    }

    /// Writes `,"name":` and hands back the buffer for the value.
    fn key(&mut self, name: &str) -> &mut String {
        self.out.push_str(",\"");
        self.out.push_str(name);
        self.out.push_str("\":");
        self.out
    }

    fn raw(&mut self, name: &str, json: &str) {
        self.key(name).push_str(json);
    }

    fn str(&mut self, name: &str, value: &str) {
        string(self.key(name), value);
    }

    fn num(&mut self, name: &str, value: impl Into<i64>) {
        display(self.key(name), value.into());
    }

    fn bool(&mut self, name: &str, value: bool) {
        self.raw(name, bool_str(value));
    }

    fn lsn(&mut self, name: &str, value: Lsn) {
        let out = self.key(name);
        out.push('"');
        display(out, value);
        out.push('"');
    }

    fn time(&mut self, name: &str, value: Timestamp) {
        let out = self.key(name);
        out.push('"');
        display(out, value);
        out.push('"');
    }

    /// `relation_id`, `schema` and `table` of a row message.
    fn relation(&mut self, rel: &RelationInfo) {
        self.num("relation_id", rel.id.0);
        self.str("schema", &rel.namespace);
        self.str("table", &rel.name);
    }

    /// `key` (replica identity columns only) or `old` (every column).
    fn old(
        &mut self,
        rel: &RelationInfo,
        old: &OldTuple<'_>,
        values: ValueWriter,
    ) -> Result<(), RenderError> {
        match old {
            OldTuple::Key(t) => self.row("key", rel, t.columns(), true, values),
            OldTuple::Full(t) => self.row("old", rel, t.columns(), false, values),
        }
    }

    /// A row as an object from column name to value, in column order. With `key_only`, the
    /// columns without the relation's key flag are left out (pgoutput sends them as NULL).
    fn row<'c>(
        &mut self,
        name: &str,
        rel: &RelationInfo,
        columns: impl Iterator<Item = Column<'c>>,
        key_only: bool,
        values: ValueWriter,
    ) -> Result<(), RenderError> {
        let out = self.key(name);
        out.push('{');
        let mut first = true;
        // The decoder checked that the tuple has as many columns as the relation.
        for (value, col) in columns.zip(&rel.columns) {
            if key_only && !col.key {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            string(out, &col.name);
            out.push(':');
            values(out, col.type_oid, value).map_err(|NotUtf8| RenderError::InvalidUtf8 {
                relation: format!("{}.{}", rel.namespace, rel.name),
                column: col.name.clone(),
            })?;
        }
        out.push('}');
        Ok(())
    }

    fn end(self) {
        self.out.push_str("}\n");
    }
}

/// The `columns` array of a relation line: name, type OID, type modifier, key flag each.
fn relation_columns<'n>(
    out: &mut String,
    columns: impl Iterator<Item = (&'n str, u32, i32, bool)>,
) {
    out.push('[');
    for (i, (name, type_oid, type_modifier, key)) in columns.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        string(out, name);
        out.push_str(",\"type_oid\":");
        display(out, type_oid);
        out.push_str(",\"type_modifier\":");
        display(out, type_modifier);
        out.push_str(",\"key\":");
        out.push_str(bool_str(key));
        out.push('}');
    }
    out.push(']');
}

fn relation(decoder: &Decoder, id: Oid) -> Result<&RelationInfo, RenderError> {
    decoder
        .relation(id)
        .map(|r| &**r)
        .ok_or(RenderError::UnknownRelation(id))
}

fn replica_identity(ri: ReplicaIdentity) -> &'static str {
    match ri {
        ReplicaIdentity::Default => "\"default\"",
        ReplicaIdentity::Nothing => "\"nothing\"",
        ReplicaIdentity::Full => "\"full\"",
        ReplicaIdentity::Index => "\"index\"",
    }
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Appends a value's `Display` form (numbers, LSNs, timestamps: nothing that needs escaping).
fn display(out: &mut String, value: impl Display) {
    // Writing to a `String` cannot fail.
    let _ = write!(out, "{value}");
}

/// Appends `bytes` as a quoted RFC 4648 base64 string (standard alphabet, padded).
pub fn base64(out: &mut String, bytes: &[u8]) {
    out.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(bytes, out);
    out.push('"');
}

/// Appends `s` as a quoted JSON string.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    escape(out, s);
    out.push('"');
}

/// Appends `s` escaped for the inside of a JSON string (RFC 8259 section 7): `"`, `\` and the
/// control characters below U+0020, with the short forms where JSON has them and `\u00XX`
/// (lower-case hex, as serde_json writes it) otherwise. Everything else is copied as UTF-8.
pub fn escape(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0C => "\\f",
            0x00..=0x1F => "",
            _ => continue,
        };
        // Every byte escaped is ASCII, so `start` and `i` are always on character boundaries.
        out.push_str(s.get(start..i).unwrap_or_default());
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(
                HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
            ));
            out.push(char::from(
                HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0'),
            ));
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        string(&mut out, s);
        out
    }

    #[test]
    fn escaping_matches_serde_json() {
        let mut all_controls = String::new();
        for c in 0u8..0x20 {
            all_controls.push(char::from(c));
        }
        for s in [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "tab\tnewline\ncr\r",
            &all_controls,
            "ünïcode \u{7f} \u{2028} 🐘",
        ] {
            assert_eq!(escaped(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn base64_is_standard_and_padded() {
        // RFC 4648 section 10 test vectors, plus bytes that use `+` and `/`.
        for (input, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
            (b"\xfb\xff", "+/8="),
        ] {
            let mut out = String::new();
            base64(&mut out, input);
            assert_eq!(out, format!("\"{want}\""));
        }
    }
}

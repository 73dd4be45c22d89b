//! What goes into JetStream for a transaction: subjects, headers and JSON bodies. No I/O here,
//! so that the mapping is tested without a server.

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use walstream::{ChangeKind, ColumnValue, Lsn, OldRow, RelationInfo, Row, Transaction};

/// The header with the transaction's commit LSN (`0/16B3748`).
pub const COMMIT_LSN: &str = "Walstream-Commit-Lsn";
/// The header with the transaction's top-level xid.
pub const XID: &str = "Walstream-Xid";
/// The header with the commit time (RFC 3339, UTC, microseconds).
pub const COMMIT_TIME: &str = "Walstream-Commit-Time";
/// The header with the operation: `insert`, `update`, `delete`, `truncate`, `message`, or
/// `transaction` for a message that carries a whole transaction.
pub const OPERATION: &str = "Walstream-Op";
/// The header with the change's index in its transaction (from 0), per-change messages only.
pub const CHANGE_INDEX: &str = "Walstream-Change-Index";
/// The header with the number of changes in the transaction: a consumer that groups
/// per-change messages by commit LSN knows when it has them all.
pub const CHANGE_COUNT: &str = "Walstream-Change-Count";

/// How a transaction is cut into messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Granularity {
    /// One message per change, on `<prefix>.<schema>.<table>`.
    PerChange,
    /// One message per transaction, on `<prefix>.transactions`, its body holding every change
    /// (bounded by the server's `max_payload`, 1 MB by default).
    PerTransaction,
}

/// The last subject token of per-transaction messages.
pub const TRANSACTIONS_TOKEN: &str = "transactions";

/// One message to publish.
#[derive(Debug)]
pub struct Outgoing {
    /// The subject.
    pub subject: String,
    /// The headers, `Nats-Msg-Id` included.
    pub headers: HeaderMap,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// The `Nats-Msg-Id` of change `index` of the transaction committed at `commit_lsn` (`None`
/// for a per-transaction message), read from the slot `slot`. JetStream drops a message whose
/// id it has stored within the stream's duplicate window: a transaction sent again after a
/// reconnect or a restart has the same commit LSN, so its messages have the same ids. The
/// slot name keeps two slots (two databases, two clusters) that publish into one stream apart.
pub fn message_id(slot: &str, commit_lsn: Lsn, index: Option<usize>) -> String {
    match index {
        Some(i) => format!("{slot}:{commit_lsn}:{i}"),
        None => format!("{slot}:{commit_lsn}"),
    }
}

/// A NATS subject token for a schema or table name: the characters a token cannot hold
/// (`.`, `*`, `>`, whitespace) become `_`, and an empty name (pgoutput's for `pg_catalog`)
/// becomes `pg_catalog`. Two names may map to one token (`a.b` and `a_b`): the body carries
/// the exact names.
pub fn subject_token(name: &str) -> String {
    if name.is_empty() {
        return "pg_catalog".to_owned();
    }
    name.chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// The subject of a change to `relation`: `<prefix>.<schema>.<table>`.
pub fn change_subject(prefix: &str, relation: &RelationInfo) -> String {
    format!(
        "{prefix}.{}.{}",
        subject_token(schema(relation)),
        subject_token(&relation.name)
    )
}

/// The headers every message of `tx` carries, `Nats-Msg-Id` aside.
fn transaction_headers(tx: &Transaction, op: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(COMMIT_LSN, tx.commit_lsn.to_string().as_str());
    headers.insert(XID, tx.xid.to_string().as_str());
    headers.insert(COMMIT_TIME, tx.commit_time.to_string().as_str());
    headers.insert(OPERATION, op);
    headers.insert(CHANGE_COUNT, tx.len().to_string().as_str());
    headers
}

/// The message of change `index` of `tx`.
pub fn change_message(
    slot: &str,
    prefix: &str,
    tx: &Transaction,
    index: usize,
    change: &ChangeKind,
) -> Outgoing {
    let (op, body) = change_body(change);
    let subject = match change {
        ChangeKind::Insert(c) => change_subject(prefix, &c.relation),
        ChangeKind::Update(c) => change_subject(prefix, &c.relation),
        ChangeKind::Delete(c) => change_subject(prefix, &c.relation),
        // A truncate of several tables is one change: it goes to the first table's subject,
        // and its body names them all.
        ChangeKind::Truncate(c) => match c.relations.first() {
            Some(r) => change_subject(prefix, r),
            None => format!("{prefix}.{TRANSACTIONS_TOKEN}"),
        },
        ChangeKind::Message(m) => format!("{prefix}.message.{}", subject_token(&m.prefix)),
        _ => format!("{prefix}.{TRANSACTIONS_TOKEN}"),
    };
    let mut headers = transaction_headers(tx, op);
    headers.insert(CHANGE_INDEX, index.to_string().as_str());
    headers.insert(
        NATS_MESSAGE_ID,
        message_id(slot, tx.commit_lsn, Some(index)).as_str(),
    );
    Outgoing {
        subject,
        headers,
        body: body.to_string().into_bytes(),
    }
}

/// The body of a per-transaction message, built one change at a time so that its size is
/// known (and can be refused) before the whole transaction is in memory:
/// `{"xid", "commit_lsn", "commit_time", "changes": [...]}`.
#[derive(Debug)]
pub struct TransactionBody {
    /// The JSON so far: the object opened, the changes array open.
    json: Vec<u8>,
    changes: usize,
}

impl TransactionBody {
    /// An empty body for `tx`.
    pub fn new(tx: &Transaction) -> Self {
        let head = json!({
            "xid": tx.xid.to_string(),
            "commit_lsn": tx.commit_lsn.to_string(),
            "commit_time": tx.commit_time.to_string(),
        })
        .to_string();
        // `{...}` becomes `{...,"changes":[`, closed by `finish`.
        let mut json = head.into_bytes();
        json.pop();
        json.extend_from_slice(br#","changes":["#);
        Self { json, changes: 0 }
    }

    /// Appends a change.
    pub fn push(&mut self, change: &ChangeKind) {
        if self.changes > 0 {
            self.json.push(b',');
        }
        self.json
            .extend_from_slice(change_body(change).1.to_string().as_bytes());
        self.changes += 1;
    }

    /// The body's size so far, in bytes.
    pub fn len(&self) -> usize {
        self.json.len() + 2
    }

    /// Whether no change was pushed.
    pub fn is_empty(&self) -> bool {
        self.changes == 0
    }

    /// The message: on `<prefix>.transactions`, its `Nats-Msg-Id` without a change index.
    pub fn finish(mut self, slot: &str, prefix: &str, tx: &Transaction) -> Outgoing {
        self.json.extend_from_slice(b"]}");
        let mut headers = transaction_headers(tx, "transaction");
        headers.insert(
            NATS_MESSAGE_ID,
            message_id(slot, tx.commit_lsn, None).as_str(),
        );
        Outgoing {
            subject: format!("{prefix}.{TRANSACTIONS_TOKEN}"),
            headers,
            body: self.json,
        }
    }
}

/// The operation name and JSON body of a change.
pub fn change_body(change: &ChangeKind) -> (&'static str, Value) {
    match change {
        ChangeKind::Insert(c) => (
            "insert",
            json!({
                "op": "insert",
                "schema": schema(&c.relation),
                "table": c.relation.name,
                "new": row(&c.new),
            }),
        ),
        ChangeKind::Update(c) => (
            "update",
            json!({
                "op": "update",
                "schema": schema(&c.relation),
                "table": c.relation.name,
                "old": c.old.as_ref().map(old_row),
                "new": row(&c.completed_new()),
            }),
        ),
        ChangeKind::Delete(c) => (
            "delete",
            json!({
                "op": "delete",
                "schema": schema(&c.relation),
                "table": c.relation.name,
                "old": old_row(&c.old),
            }),
        ),
        ChangeKind::Truncate(c) => (
            "truncate",
            json!({
                "op": "truncate",
                "relations": c.relations.iter()
                    .map(|r| json!({"schema": schema(r), "table": r.name}))
                    .collect::<Vec<_>>(),
                "cascade": c.cascade,
                "restart_identity": c.restart_identity,
            }),
        ),
        ChangeKind::Message(m) => (
            "message",
            json!({
                "op": "message",
                "prefix": m.prefix,
                "content": base64(&m.content),
            }),
        ),
        // ChangeKind is non-exhaustive: a kind added later is named, not dropped silently.
        other => (
            "unknown",
            json!({"op": "unknown", "debug": format!("{other:?}")}),
        ),
    }
}

/// The schema name, with pgoutput's empty name for `pg_catalog` spelled out.
fn schema(relation: &RelationInfo) -> &str {
    if relation.namespace.is_empty() {
        "pg_catalog"
    } else {
        &relation.namespace
    }
}

/// A row as a JSON object of column name to value.
fn row(row: &Row) -> Value {
    Value::Object(
        row.iter()
            .map(|(column, value)| (column.name.clone(), column_value(value)))
            .collect::<Map<_, _>>(),
    )
}

/// An old row: `{"key": {...}}` for the replica identity only, `{"full": {...}}` for the whole
/// row (`REPLICA IDENTITY FULL`).
fn old_row(old: &OldRow) -> Value {
    match old {
        OldRow::Key(r) => json!({ "key": row(r) }),
        OldRow::Full(r) => json!({ "full": row(r) }),
    }
}

/// A column value: text as a string, NULL as null; bytes that are not UTF-8 and binary-format
/// values as `{"base64": ...}`, an unchanged TOASTed value as `{"unchanged_toast": true}`
/// (never null: the value exists, it was not sent).
fn column_value(value: ColumnValue) -> Value {
    match value {
        ColumnValue::Null => Value::Null,
        ColumnValue::UnchangedToast => json!({ "unchanged_toast": true }),
        ColumnValue::Text(b) => match std::str::from_utf8(&b) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => json!({ "base64": base64(&b) }),
        },
        ColumnValue::Binary(b) => json!({ "base64": base64(&b) }),
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_differ_by_slot_commit_and_index() {
        let lsn = Lsn::new(0x016B_3748);
        assert_eq!(message_id("s", lsn, Some(3)), "s:0/16B3748:3");
        assert_eq!(message_id("s", lsn, None), "s:0/16B3748");
        assert_ne!(
            message_id("s", lsn, Some(1)),
            message_id("s", Lsn::new(0x016B_3749), Some(1))
        );
    }

    #[test]
    fn subject_tokens_hold_no_separator_or_wildcard() {
        assert_eq!(subject_token("public"), "public");
        assert_eq!(subject_token("a.b *c>"), "a_b__c_");
        assert_eq!(subject_token(""), "pg_catalog");
    }

    #[test]
    fn column_values_keep_null_and_unsent_apart() {
        assert_eq!(column_value(ColumnValue::Null), Value::Null);
        assert_eq!(
            column_value(ColumnValue::UnchangedToast),
            json!({"unchanged_toast": true})
        );
        assert_eq!(
            column_value(ColumnValue::Text(b"x".as_slice().into())),
            json!("x")
        );
        assert_eq!(
            column_value(ColumnValue::Text(b"\xff".as_slice().into())),
            json!({"base64": "/w=="})
        );
    }
}

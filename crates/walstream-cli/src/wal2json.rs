//! `--format wal2json`: the JSON lines of wal2json's `format-version 2`, from pgoutput.
//!
//! One object per change, as wal2json's `pg_decode_*_v2` callbacks write them with their
//! default options plus `include-pk`:
//!
//! - `{"action":"B"}` at a Begin and `{"action":"C"}` at a Commit;
//! - `{"action":"I"|"U"|"D","schema":..,"table":..,"columns":[..],"identity":[..],"pk":[..]}`:
//!   `columns` the new row (insert, update), `identity` the old key or row (update, delete;
//!   for an update without one, the key columns of the new row, as wal2json takes them), each
//!   element `{"name","type","value"}`; `pk` the key's `{"name","type"}`;
//! - `{"action":"T","schema":..,"table":..}` for each truncated table;
//! - `{"action":"M","transactional":..,"prefix":..,"content":..}` for a logical message.
//!
//! Values follow wal2json's rules (`typed::wal2json`), or `--typed`'s with `--typed`. Unchanged
//! TOAST values are left out of `columns`, as wal2json leaves them out. Types are named as
//! PostgreSQL's `format_type` names them with the column's modifier (`integer`,
//! `character varying(30)`, `numeric(5,2)`, `timestamp without time zone`); see [`type_name`].
//!
//! What pgoutput knows and wal2json does not, and the other way round (documented in the
//! `--format` help):
//! - `pk` lists the replica identity columns the Relation message flags: the primary key under
//!   `REPLICA IDENTITY DEFAULT`, the index's columns under `USING INDEX`, every column under
//!   `FULL`, none under `NOTHING` (wal2json reads the primary key from the catalog).
//! - Relation, Type and Origin messages, keepalives and `reconnected` notices have no wal2json
//!   form and print nothing.
//! - wal2json sees only committed transactions, whole. Streamed (`--streaming on|parallel`)
//!   and prepared (`--two-phase`) transactions would arrive in pieces or before their
//!   outcome: [`check_stream`] refuses them.
//! - A message whose content is not UTF-8 has `"content":{"base64":..}` (wal2json would write
//!   the bytes as they are, which is not JSON).

use walproto::json::NotUtf8;
use walproto::pgoutput::{Column, Columns, Message, OldTuple, Streaming};
use walproto::{ColumnInfo, Decoder, Oid, RelationInfo};
use walstream::value::oid;

use crate::json::{base64, string, RenderError};
use crate::typed;

/// Refuses a stream that wal2json's format cannot represent: streamed or prepared
/// transactions.
pub(crate) fn check_stream(streaming: Streaming, two_phase: bool) -> Result<(), String> {
    if streaming != Streaming::Off {
        return Err(format!(
            "--format wal2json needs --streaming off (not {}): wal2json prints only committed \
             transactions, whole, and a streamed one arrives in pieces that may still abort",
            streaming.as_str()
        ));
    }
    if two_phase {
        return Err(
            "--format wal2json cannot show --two-phase: wal2json prints only committed \
                    transactions, and a prepared one arrives before its outcome"
                .to_owned(),
        );
    }
    Ok(())
}

/// Appends the wal2json lines of `msg` (none, one, or one per truncated table).
pub(crate) fn message(
    out: &mut String,
    msg: &Message<'_>,
    decoder: &Decoder,
    typed: bool,
) -> Result<(), RenderError> {
    match msg {
        Message::Begin(_) => out.push_str("{\"action\":\"B\"}\n"),
        Message::Commit(_) => out.push_str("{\"action\":\"C\"}\n"),
        Message::Insert(m) => {
            let rel = relation(decoder, m.relation_id)?;
            change(out, 'I', rel, decoder, typed, Some(m.new.columns()), None)?;
        }
        Message::Update(m) => {
            let rel = relation(decoder, m.relation_id)?;
            let old = m.old.as_ref().map(|o| match o {
                OldTuple::Key(t) | OldTuple::Full(t) => t.columns(),
            });
            // Without an old image the key did not change: wal2json takes it from the new row.
            let identity = old.or_else(|| Some(m.new.columns()));
            change(
                out,
                'U',
                rel,
                decoder,
                typed,
                Some(m.new.columns()),
                identity,
            )?;
        }
        Message::Delete(m) => {
            let rel = relation(decoder, m.relation_id)?;
            let (OldTuple::Key(t) | OldTuple::Full(t)) = &m.old;
            change(out, 'D', rel, decoder, typed, None, Some(t.columns()))?;
        }
        Message::Truncate(m) => {
            for id in m.relation_ids.iter() {
                let rel = relation(decoder, id)?;
                out.push_str("{\"action\":\"T\"");
                schema_table(out, rel);
                out.push_str("}\n");
            }
        }
        Message::Message(m) => {
            out.push_str("{\"action\":\"M\",\"transactional\":");
            out.push_str(if m.transactional() { "true" } else { "false" });
            out.push_str(",\"prefix\":");
            string(out, m.prefix);
            out.push_str(",\"content\":");
            match std::str::from_utf8(m.content) {
                Ok(text) => string(out, text),
                Err(_) => {
                    out.push_str("{\"base64\":");
                    base64(out, m.content);
                    out.push('}');
                }
            }
            out.push_str("}\n");
        }
        // No wal2json form (see the module docs); streamed and prepared transactions are
        // refused before the stream starts, by `check_stream`.
        Message::Origin(_)
        | Message::Relation(_)
        | Message::Type(_)
        | Message::StreamStart(_)
        | Message::StreamStop
        | Message::StreamCommit(_)
        | Message::StreamAbort(_)
        | Message::BeginPrepare(_)
        | Message::Prepare(_)
        | Message::StreamPrepare(_)
        | Message::CommitPrepared(_)
        | Message::RollbackPrepared(_) => {}
    }
    Ok(())
}

/// The `I` line of a row of the initial snapshot.
pub(crate) fn snapshot_insert<'c>(
    out: &mut String,
    rel: &RelationInfo,
    decoder: Option<&Decoder>,
    typed: bool,
    columns: impl Iterator<Item = Column<'c>>,
) -> Result<(), RenderError> {
    out.push_str("{\"action\":\"I\"");
    schema_table(out, rel);
    columns_array(out, "columns", rel, decoder, typed, columns, false)?;
    pk(out, rel, decoder);
    out.push_str("}\n");
    Ok(())
}

fn change<'c>(
    out: &mut String,
    action: char,
    rel: &RelationInfo,
    decoder: &Decoder,
    typed: bool,
    new: Option<Columns<'c>>,
    identity: Option<Columns<'c>>,
) -> Result<(), RenderError> {
    out.push_str("{\"action\":\"");
    out.push(action);
    out.push('"');
    schema_table(out, rel);
    if let Some(new) = new {
        columns_array(out, "columns", rel, Some(decoder), typed, new, false)?;
    }
    if let Some(old) = identity {
        // wal2json leaves `identity` out when the table has no key to take from the new row.
        if action != 'U' || rel.columns.iter().any(|c| c.key) {
            columns_array(out, "identity", rel, Some(decoder), typed, old, true)?;
        }
    }
    pk(out, rel, Some(decoder));
    out.push_str("}\n");
    Ok(())
}

fn schema_table(out: &mut String, rel: &RelationInfo) {
    out.push_str(",\"schema\":");
    string(out, &rel.namespace);
    out.push_str(",\"table\":");
    string(out, &rel.name);
}

/// `,"name":[{"name","type","value"},...]`; with `key_only` only the replica identity columns.
fn columns_array<'c>(
    out: &mut String,
    name: &str,
    rel: &RelationInfo,
    decoder: Option<&Decoder>,
    typed: bool,
    columns: impl Iterator<Item = Column<'c>>,
    key_only: bool,
) -> Result<(), RenderError> {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":[");
    let mut first = true;
    for (value, col) in columns.zip(&rel.columns) {
        if (key_only && !col.key) || matches!(value, Column::UnchangedToast) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        name_type(out, col, decoder);
        out.push_str(",\"value\":");
        let rendered = if typed {
            typed::typed(out, col.type_oid, value)
        } else {
            typed::wal2json(out, col.type_oid, value)
        };
        rendered.map_err(|NotUtf8| RenderError::InvalidUtf8 {
            relation: format!("{}.{}", rel.namespace, rel.name),
            column: col.name.clone(),
        })?;
        out.push('}');
    }
    out.push(']');
    Ok(())
}

/// `{"name":..,"type":..` (the object is left open).
fn name_type(out: &mut String, col: &ColumnInfo, decoder: Option<&Decoder>) {
    out.push_str("{\"name\":");
    string(out, &col.name);
    out.push_str(",\"type\":");
    string(out, &type_name(col.type_oid, col.type_modifier, decoder));
}

/// `,"pk":[{"name","type"},...]`: the replica identity columns.
fn pk(out: &mut String, rel: &RelationInfo, decoder: Option<&Decoder>) {
    out.push_str(",\"pk\":[");
    for (i, col) in rel.columns.iter().filter(|c| c.key).enumerate() {
        if i > 0 {
            out.push(',');
        }
        name_type(out, col, decoder);
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

/// `VARHDRSZ`: the type modifiers of `varchar`, `bpchar` and `numeric` count it in.
const VARHDRSZ: i32 = 4;

/// A type as PostgreSQL's `format_type_with_typemod` names it, which is what wal2json prints:
/// the SQL names of the built-in types with their modifiers (`integer`, `character
/// varying(30)`, `numeric(5,2)`, `timestamp(3) with time zone`, `bpchar` for a `char` without
/// length), an array as its element's name and `[]`, other built-in types by their catalog
/// name, and a type created in the database by the name its Type message gave, qualified by
/// its schema unless that is `public` or `pg_catalog` (wal2json qualifies a type not on the
/// search path; walstream cannot see the search path). A type known neither way (never
/// described: pgoutput describes every type it does not consider built-in) is
/// `unknown (OID n)`.
pub(crate) fn type_name(type_oid: Oid, typmod: i32, decoder: Option<&Decoder>) -> String {
    let element = oid::element_type(type_oid).or_else(|| oid::catalog_element(type_oid));
    if let Some(element) = element {
        return format!("{}[]", type_name(element, typmod, decoder));
    }
    let with = |name: &str, modifier: Option<String>| match modifier {
        Some(m) => format!("{name}{m}"),
        None => name.to_owned(),
    };
    let length = (typmod >= VARHDRSZ).then(|| format!("({})", typmod - VARHDRSZ));
    let precision = (typmod >= 0).then(|| format!("({typmod})"));
    match type_oid.0 {
        16 => "boolean".to_owned(),
        18 => "\"char\"".to_owned(),
        20 => "bigint".to_owned(),
        21 => "smallint".to_owned(),
        23 => "integer".to_owned(),
        700 => "real".to_owned(),
        701 => "double precision".to_owned(),
        1042 => match length {
            Some(l) => format!("character{l}"),
            None => "bpchar".to_owned(),
        },
        1043 => with("character varying", length),
        1083 => format!("{} without time zone", with("time", precision)),
        1266 => format!("{} with time zone", with("time", precision)),
        1114 => format!("{} without time zone", with("timestamp", precision)),
        1184 => format!("{} with time zone", with("timestamp", precision)),
        1186 => format!("interval{}", interval_modifier(typmod)),
        1560 => with("bit", precision),
        1562 => with("bit varying", precision),
        1700 => with("numeric", numeric_modifier(typmod)),
        _ => match decoder.and_then(|d| d.type_info(type_oid)) {
            Some(t) if t.namespace.is_empty() || t.namespace == "public" => t.name.clone(),
            Some(t) if t.namespace == "pg_catalog" => t.name.clone(),
            Some(t) => format!("{}.{}", t.namespace, t.name),
            None => oid::catalog_name(type_oid)
                .unwrap_or_else(|| format!("unknown (OID {})", type_oid.0)),
        },
    }
}

/// `numerictypmodout`: `(precision,scale)`, the scale possibly negative (PostgreSQL 15+).
fn numeric_modifier(typmod: i32) -> Option<String> {
    if typmod < VARHDRSZ {
        return None;
    }
    let t = typmod - VARHDRSZ;
    let precision = (t >> 16) & 0xffff;
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    Some(format!("({precision},{scale})"))
}

/// `intervaltypmodout`: the fields (` day to second`) and the precision (`(3)`).
fn interval_modifier(typmod: i32) -> String {
    if typmod < 0 {
        return String::new();
    }
    const YEAR: i32 = 1 << 2;
    const MONTH: i32 = 1 << 1;
    const DAY: i32 = 1 << 3;
    const HOUR: i32 = 1 << 10;
    const MINUTE: i32 = 1 << 11;
    const SECOND: i32 = 1 << 12;
    const FULL_RANGE: i32 = 0x7fff;
    const FULL_PRECISION: i32 = 0xffff;
    let range = (typmod >> 16) & 0x7fff;
    let precision = typmod & 0xffff;
    let fields = match range {
        YEAR => " year",
        MONTH => " month",
        DAY => " day",
        HOUR => " hour",
        MINUTE => " minute",
        SECOND => " second",
        r if r == YEAR | MONTH => " year to month",
        r if r == DAY | HOUR => " day to hour",
        r if r == DAY | HOUR | MINUTE => " day to minute",
        r if r == DAY | HOUR | MINUTE | SECOND => " day to second",
        r if r == HOUR | MINUTE => " hour to minute",
        r if r == HOUR | MINUTE | SECOND => " hour to second",
        r if r == MINUTE | SECOND => " minute to second",
        FULL_RANGE => "",
        _ => "",
    };
    if precision == FULL_PRECISION {
        fields.to_owned()
    } else {
        format!("{fields}({precision})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(type_oid: u32, typmod: i32) -> String {
        type_name(Oid(type_oid), typmod, None)
    }

    /// The names `format_type_with_typemod` gives (checked with psql's
    /// `SELECT format_type(oid, typmod)`).
    #[test]
    fn type_names_as_format_type() {
        assert_eq!(name(23, -1), "integer");
        assert_eq!(name(1043, 34), "character varying(30)");
        assert_eq!(name(1043, -1), "character varying");
        assert_eq!(name(1042, 9), "character(5)");
        assert_eq!(name(1042, -1), "bpchar");
        assert_eq!(name(1700, (5 << 16 | 2) + 4), "numeric(5,2)");
        assert_eq!(name(1700, -1), "numeric");
        assert_eq!(name(1114, -1), "timestamp without time zone");
        assert_eq!(name(1184, 3), "timestamp(3) with time zone");
        assert_eq!(name(1083, -1), "time without time zone");
        assert_eq!(name(1186, -1), "interval");
        assert_eq!(
            name(1186, (1 << 3 | 1 << 10 | 1 << 11 | 1 << 12) << 16 | 3),
            "interval day to second(3)"
        );
        assert_eq!(name(1186, (1 << 2) << 16 | 0xffff), "interval year");
        assert_eq!(name(1007, -1), "integer[]");
        assert_eq!(name(1015, 14), "character varying(10)[]");
        assert_eq!(name(25, -1), "text");
        assert_eq!(name(3802, -1), "jsonb");
        assert_eq!(name(869, -1), "inet");
        assert_eq!(name(1041, -1), "inet[]");
        assert_eq!(name(16, -1), "boolean");
        assert_eq!(name(701, -1), "double precision");
        assert_eq!(name(16_385, -1), "unknown (OID 16385)");
    }

    #[test]
    fn streamed_and_prepared_transactions_are_refused() {
        assert!(check_stream(Streaming::Off, false).is_ok());
        assert!(check_stream(Streaming::On, false)
            .unwrap_err()
            .contains("--streaming off"));
        assert!(check_stream(Streaming::Off, true)
            .unwrap_err()
            .contains("--two-phase"));
    }
}

//! Replication commands and plain SQL over the simple query protocol, with typed results.

use bytes::Bytes;
use fallible_iterator::FallibleIterator as _;
use postgres_protocol::message::backend::{DataRowBody, Message, RowDescriptionBody};
use postgres_protocol::message::frontend;
use walproto::timeline::TimelineHistory;
use walproto::Lsn;

use crate::conn::{bad_message, server_error, unexpected, Connection};
use crate::error::{Error, Result};

/// The rows and command tag of one statement of a simple query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Column names (empty for a statement that returns no rows).
    pub columns: Vec<String>,
    /// Rows of text values; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// The command tag, such as `SELECT 1` or `CREATE_REPLICATION_SLOT`.
    pub tag: String,
}

impl QueryResult {
    /// The value of `column` in row `row`, if both exist and the value is not NULL.
    pub fn get(&self, row: usize, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.rows.get(row)?.get(i)?.as_deref()
    }
}

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's unique system identifier.
    pub system_id: String,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database connected to (`None` on a physical replication connection).
    pub dbname: Option<String>,
}

/// What `CREATE_REPLICATION_SLOT` does with the snapshot of the slot's consistent point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotAction {
    /// Export it for other sessions (`SET TRANSACTION SNAPSHOT`) until the next command.
    Export,
    /// Use it in the current transaction (which must be open, `REPEATABLE READ`).
    Use,
    /// No snapshot.
    Nothing,
}

/// Options of [`Connection::create_replication_slot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateSlotOptions {
    /// `Some(plugin)` for a logical slot (usually `pgoutput`), `None` for a physical one.
    pub plugin: Option<String>,
    /// Drop the slot when the connection ends.
    pub temporary: bool,
    /// The snapshot of a logical slot (the server's default, `export`, when `None`).
    pub snapshot: Option<SnapshotAction>,
    /// Decode prepared transactions at PREPARE time (logical slots).
    pub two_phase: bool,
    /// Synchronize the slot to standbys (PostgreSQL 17+, logical slots).
    pub failover: bool,
    /// Reserve WAL at once (physical slots).
    pub reserve_wal: bool,
}

impl Default for CreateSlotOptions {
    fn default() -> Self {
        Self::logical("pgoutput")
    }
}

impl CreateSlotOptions {
    /// A permanent logical slot with `plugin` and the server's default snapshot action.
    pub fn logical(plugin: &str) -> Self {
        Self {
            plugin: Some(plugin.to_owned()),
            temporary: false,
            snapshot: None,
            two_phase: false,
            failover: false,
            reserve_wal: false,
        }
    }

    /// A permanent physical slot.
    pub fn physical() -> Self {
        Self {
            plugin: None,
            ..Self::logical("")
        }
    }
}

/// The answer to `CREATE_REPLICATION_SLOT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedSlot {
    /// The slot's name.
    pub slot_name: String,
    /// The LSN from which the slot's changes start.
    pub consistent_point: Lsn,
    /// The exported snapshot (with [`SnapshotAction::Export`]).
    pub snapshot_name: Option<String>,
    /// The output plugin (logical slots).
    pub output_plugin: Option<String>,
}

/// The answer to `READ_REPLICATION_SLOT` for an existing slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// `physical` or `logical`.
    pub slot_type: String,
    /// The slot's `restart_lsn`, if it has one.
    pub restart_lsn: Option<Lsn>,
    /// The timeline of `restart_lsn`.
    pub restart_tli: Option<u32>,
}

/// The answer to `TIMELINE_HISTORY`: a history file's name and its bytes as the server
/// keeps them (not forced through UTF-8: a restore point's name in a reason is in the
/// server's encoding, unchecked). [`history`](Self::history) parses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineHistoryFile {
    filename: String,
    content: Bytes,
}

impl TimelineHistoryFile {
    /// The file's name, such as `00000002.history`.
    pub fn filename(&self) -> &str {
        &self.filename
    }

    /// The file's bytes.
    pub fn content(&self) -> &Bytes {
        &self.content
    }

    /// The file parsed by walproto: every line checked, the switches then read without
    /// errors. A bad line is an [`ErrorKind::Protocol`](crate::ErrorKind::Protocol) error
    /// naming the file and the line's byte offset, whose
    /// [`source`](std::error::Error::source) is walproto's error (with the offset).
    pub fn history(&self) -> Result<TimelineHistory<'_>> {
        TimelineHistory::parse(&self.content).map_err(|e| {
            Error::protocol(format!(
                "timeline history file {} is malformed at byte {}",
                self.filename,
                e.offset()
            ))
            .with_source(e)
        })
    }
}

impl Connection {
    /// Runs `sql` (one or more statements) with the simple query protocol and returns one
    /// result per statement. On a `replication=database` connection the server runs plain SQL
    /// as well as replication commands.
    ///
    /// The server's error is returned after the connection is back in step (`ReadyForQuery`),
    /// so the connection stays usable.
    ///
    /// Not cancel-safe: a future dropped before it completes poisons the connection (see
    /// [`ErrorKind::Poisoned`](crate::ErrorKind::Poisoned)), after which every call fails
    /// without touching the socket and the connection must be discarded.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<QueryResult>> {
        self.begin_operation()?;
        let result = self.query_inner(sql, text_values).await;
        self.end_operation();
        result.map(|results| {
            results
                .into_iter()
                .map(|s| QueryResult {
                    columns: s.columns,
                    rows: s.rows,
                    tag: s.tag,
                })
                .collect()
        })
    }

    /// The simple query protocol, each row's values read by `values` (text or raw bytes):
    /// per statement its columns, rows and command tag.
    async fn query_inner<V>(
        &mut self,
        sql: &str,
        values: fn(&DataRowBody) -> Result<Vec<Option<V>>>,
    ) -> Result<Vec<Statement<V>>> {
        frontend::query(sql, self.write_buf())
            .map_err(|e| Error::config("query text contains a NUL byte").with_source(e))?;
        self.flush().await?;
        let mut results = Vec::new();
        let mut current = Statement::default();
        let mut error = None;
        loop {
            match self.read_raw().await? {
                Message::RowDescription(desc) => current.columns = column_names(&desc)?,
                Message::DataRow(row) => current.rows.push(values(&row)?),
                Message::CommandComplete(c) => {
                    current.tag = c.tag().map_err(bad_message)?.to_owned();
                    results.push(std::mem::take(&mut current));
                }
                Message::EmptyQueryResponse => {}
                Message::ErrorResponse(body) => {
                    error = Some(server_error(&body)?);
                }
                Message::ReadyForQuery(_) => break,
                Message::ParameterStatus(_) => {}
                other => return Err(unexpected(&other, "a simple query")),
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(results),
        }
    }

    /// Runs one command and returns its only result.
    async fn one(&mut self, sql: &str) -> Result<QueryResult> {
        self.simple_query(sql)
            .await?
            .pop()
            .ok_or_else(|| Error::protocol(format!("no result for {sql}")))
    }

    /// `IDENTIFY_SYSTEM`: system identifier, timeline, WAL position and database.
    ///
    /// Not cancel-safe: a future dropped before it completes poisons the connection (see
    /// [`ErrorKind::Poisoned`](crate::ErrorKind::Poisoned)), after which every call fails
    /// without touching the socket and the connection must be discarded.
    pub async fn identify_system(&mut self) -> Result<SystemInfo> {
        let r = self.one("IDENTIFY_SYSTEM").await?;
        Ok(SystemInfo {
            system_id: field(&r, "systemid")?.to_owned(),
            timeline: parse_field(&r, "timeline")?,
            xlogpos: parse_field(&r, "xlogpos")?,
            dbname: r.get(0, "dbname").map(str::to_owned),
        })
    }

    /// `SHOW name`: the current value of a setting.
    ///
    /// Not cancel-safe: a future dropped before it completes poisons the connection (see
    /// [`ErrorKind::Poisoned`](crate::ErrorKind::Poisoned)), after which every call fails
    /// without touching the socket and the connection must be discarded.
    pub async fn show(&mut self, name: &str) -> Result<String> {
        let r = self.one(&format!("SHOW {}", quote_ident(name))).await?;
        r.rows
            .first()
            .and_then(|row| row.first().cloned().flatten())
            .ok_or_else(|| Error::protocol("SHOW returned no value"))
    }

    /// `CREATE_REPLICATION_SLOT`, with the option-list syntax of PostgreSQL 15+ (the keyword
    /// syntax for older servers). `failover` needs PostgreSQL 17; that is checked before
    /// anything is sent.
    ///
    /// Not cancel-safe: a future dropped before it completes poisons the connection (see
    /// [`ErrorKind::Poisoned`](crate::ErrorKind::Poisoned)), after which every call fails
    /// without touching the socket and the connection must be discarded.
    ///
    /// The slot may exist even so: a future dropped after the command was sent leaves the
    /// slot to the server (a temporary one goes with the connection; a permanent one stays).
    pub async fn create_replication_slot(
        &mut self,
        name: &str,
        options: &CreateSlotOptions,
    ) -> Result<CreatedSlot> {
        self.check_poisoned()?;
        if options.failover {
            self.require_version(17, "the failover slot option")?;
        }
        let sql = create_slot_sql(name, options, self.server_version_num());
        let r = self.one(&sql).await?;
        Ok(CreatedSlot {
            slot_name: field(&r, "slot_name")?.to_owned(),
            consistent_point: parse_field(&r, "consistent_point")?,
            snapshot_name: r.get(0, "snapshot_name").map(str::to_owned),
            output_plugin: r.get(0, "output_plugin").map(str::to_owned),
        })
    }

    /// `DROP_REPLICATION_SLOT name [WAIT]`: with `wait`, waits for an active slot to become
    /// inactive instead of failing with SQLSTATE 55006.
    ///
    /// Not cancel-safe: a future dropped before it completes poisons the connection (see
    /// [`ErrorKind::Poisoned`](crate::ErrorKind::Poisoned)), after which every call fails
    /// without touching the socket and the connection must be discarded.
    /// Whether the slot was dropped is then unknown.
    pub async fn drop_replication_slot(&mut self, name: &str, wait: bool) -> Result<()> {
        let wait = if wait { " WAIT" } else { "" };
        self.simple_query(&format!(
            "DROP_REPLICATION_SLOT {}{wait}",
            quote_ident(name)
        ))
        .await
        .map(drop)
    }

    /// `READ_REPLICATION_SLOT name` (PostgreSQL 15+): `None` if the slot does not exist.
    ///
    /// Not cancel-safe: a future dropped before it completes poisons the connection (see
    /// [`ErrorKind::Poisoned`](crate::ErrorKind::Poisoned)), after which every call fails
    /// without touching the socket and the connection must be discarded.
    pub async fn read_replication_slot(&mut self, name: &str) -> Result<Option<SlotInfo>> {
        self.check_poisoned()?;
        self.require_version(15, "READ_REPLICATION_SLOT")?;
        let r = self
            .one(&format!("READ_REPLICATION_SLOT {}", quote_ident(name)))
            .await?;
        let Some(slot_type) = r.get(0, "slot_type") else {
            return Ok(None);
        };
        Ok(Some(SlotInfo {
            slot_type: slot_type.to_owned(),
            restart_lsn: r.get(0, "restart_lsn").map(parse).transpose()?,
            restart_tli: r.get(0, "restart_tli").map(parse).transpose()?,
        }))
    }

    /// `ALTER_REPLICATION_SLOT name (FAILOVER f, TWO_PHASE t)`: PostgreSQL 17+, and 18+ for
    /// `two_phase`. Options left `None` are not changed.
    ///
    /// Not cancel-safe: a future dropped before it completes poisons the connection (see
    /// [`ErrorKind::Poisoned`](crate::ErrorKind::Poisoned)), after which every call fails
    /// without touching the socket and the connection must be discarded.
    pub async fn alter_replication_slot(
        &mut self,
        name: &str,
        failover: Option<bool>,
        two_phase: Option<bool>,
    ) -> Result<()> {
        self.check_poisoned()?;
        self.require_version(17, "ALTER_REPLICATION_SLOT")?;
        if two_phase.is_some() {
            self.require_version(18, "ALTER_REPLICATION_SLOT with two_phase")?;
        }
        let mut opts = Vec::new();
        if let Some(f) = failover {
            opts.push(format!("FAILOVER {f}"));
        }
        if let Some(t) = two_phase {
            opts.push(format!("TWO_PHASE {t}"));
        }
        if opts.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "ALTER_REPLICATION_SLOT {} ({})",
            quote_ident(name),
            opts.join(", ")
        );
        self.simple_query(&sql).await.map(drop)
    }

    /// `TIMELINE_HISTORY tli`: the history file's name and bytes (parse them with
    /// [`TimelineHistoryFile::history`]). The server refuses timeline 1, which has no
    /// history file, with its error (SQLSTATE 58P01).
    ///
    /// Not cancel-safe: a future dropped before it completes poisons the connection (see
    /// [`ErrorKind::Poisoned`](crate::ErrorKind::Poisoned)), after which every call fails
    /// without touching the socket and the connection must be discarded.
    pub async fn timeline_history(&mut self, timeline: u32) -> Result<TimelineHistoryFile> {
        self.begin_operation()?;
        let result = self
            .query_inner(&format!("TIMELINE_HISTORY {timeline}"), raw_values)
            .await;
        self.end_operation();
        let Statement { columns, rows, .. } = result?
            .pop()
            .ok_or_else(|| Error::protocol("no result for TIMELINE_HISTORY"))?;
        let value = |name: &str| {
            let i = columns.iter().position(|c| c == name);
            i.and_then(|i| rows.first()?.get(i)?.clone())
                .ok_or_else(|| {
                    Error::protocol(format!("the answer to TIMELINE_HISTORY lacks {name}"))
                })
        };
        let filename = value("filename")?;
        let filename = std::str::from_utf8(&filename)
            .map_err(|e| Error::protocol("TIMELINE_HISTORY's filename").with_source(e))?
            .to_owned();
        Ok(TimelineHistoryFile {
            filename,
            content: value("content")?,
        })
    }
}

/// Builds `CREATE_REPLICATION_SLOT` for a server of `version_num`.
pub(crate) fn create_slot_sql(name: &str, o: &CreateSlotOptions, version_num: u32) -> String {
    let mut sql = format!("CREATE_REPLICATION_SLOT {}", quote_ident(name));
    if o.temporary {
        sql.push_str(" TEMPORARY");
    }
    let mut opts: Vec<String> = Vec::new();
    let modern = version_num >= 150000;
    match &o.plugin {
        Some(plugin) => {
            sql.push_str(" LOGICAL ");
            sql.push_str(&quote_ident(plugin));
            if let Some(s) = o.snapshot {
                opts.push(match (modern, s) {
                    (true, SnapshotAction::Export) => "SNAPSHOT 'export'".into(),
                    (true, SnapshotAction::Use) => "SNAPSHOT 'use'".into(),
                    (true, SnapshotAction::Nothing) => "SNAPSHOT 'nothing'".into(),
                    (false, SnapshotAction::Export) => "EXPORT_SNAPSHOT".into(),
                    (false, SnapshotAction::Use) => "USE_SNAPSHOT".into(),
                    (false, SnapshotAction::Nothing) => "NOEXPORT_SNAPSHOT".into(),
                });
            }
            if o.two_phase {
                opts.push(
                    if modern {
                        "TWO_PHASE true"
                    } else {
                        "TWO_PHASE"
                    }
                    .into(),
                );
            }
            if o.failover {
                opts.push("FAILOVER true".into());
            }
        }
        None => {
            sql.push_str(" PHYSICAL");
            if o.reserve_wal {
                opts.push(
                    if modern {
                        "RESERVE_WAL true"
                    } else {
                        "RESERVE_WAL"
                    }
                    .into(),
                );
            }
        }
    }
    if !opts.is_empty() {
        if modern {
            sql.push_str(&format!(" ({})", opts.join(", ")));
        } else {
            sql.push(' ');
            sql.push_str(&opts.join(" "));
        }
    }
    sql
}

/// `"name"` with `"` doubled: an identifier in SQL and in the replication grammar.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'value'` with `'` doubled: a string literal in SQL (with `standard_conforming_strings`,
/// the default) and in the replication grammar, which has no backslash escapes.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The column names of a `RowDescription`.
pub(crate) fn column_names(desc: &RowDescriptionBody) -> Result<Vec<String>> {
    let mut columns = Vec::new();
    let mut fields = desc.fields();
    while let Some(f) = fields.next().map_err(bad_message)? {
        columns.push(f.name().to_owned());
    }
    Ok(columns)
}

/// One statement's answer, its values text or bytes (see [`QueryResult`]).
struct Statement<V> {
    columns: Vec<String>,
    rows: Vec<Vec<Option<V>>>,
    tag: String,
}

impl<V> Default for Statement<V> {
    fn default() -> Self {
        Self {
            columns: Vec::new(),
            rows: Vec::new(),
            tag: String::new(),
        }
    }
}

/// The values of a `DataRow` as bytes sliced from the frame, not copied; `None` is SQL NULL.
/// A range outside the row is a protocol error.
pub(crate) fn raw_values(row: &DataRowBody) -> Result<Vec<Option<Bytes>>> {
    let buf = row.buffer_bytes();
    let mut values = Vec::new();
    let mut ranges = row.ranges();
    while let Some(range) = ranges.next().map_err(bad_message)? {
        values.push(match range {
            Some(r) if r.start <= r.end && r.end <= buf.len() => Some(buf.slice(r)),
            Some(_) => return Err(Error::protocol("a DataRow value runs past its message")),
            None => None,
        });
    }
    Ok(values)
}

/// The text values of a `DataRow`; `None` is SQL NULL.
pub(crate) fn text_values(row: &DataRowBody) -> Result<Vec<Option<String>>> {
    raw_values(row)?
        .into_iter()
        .map(|v| {
            v.map(|b| {
                std::str::from_utf8(&b)
                    .map(str::to_owned)
                    .map_err(|e| bad_message(std::io::Error::other(e)))
            })
            .transpose()
        })
        .collect()
}

pub(crate) fn field<'r>(r: &'r QueryResult, column: &str) -> Result<&'r str> {
    r.get(0, column)
        .ok_or_else(|| Error::protocol(format!("the server's answer lacks {column}")))
}

pub(crate) fn parse_field<T: std::str::FromStr>(r: &QueryResult, column: &str) -> Result<T> {
    parse(field(r, column)?)
}

pub(crate) fn parse<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| Error::protocol(format!("the server sent an invalid value \"{s}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"My "slot""#), r#""My ""slot""""#);
        assert_eq!(quote_literal(r"it's \n"), r"'it''s \n'");
    }

    #[test]
    fn create_slot_syntax_by_version() {
        let mut o = CreateSlotOptions::logical("pgoutput");
        o.temporary = true;
        o.snapshot = Some(SnapshotAction::Nothing);
        o.two_phase = true;
        assert_eq!(
            create_slot_sql("s", &o, 150000),
            r#"CREATE_REPLICATION_SLOT "s" TEMPORARY LOGICAL "pgoutput" (SNAPSHOT 'nothing', TWO_PHASE true)"#
        );
        assert_eq!(
            create_slot_sql("s", &o, 140000),
            r#"CREATE_REPLICATION_SLOT "s" TEMPORARY LOGICAL "pgoutput" NOEXPORT_SNAPSHOT TWO_PHASE"#
        );
        let mut p = CreateSlotOptions::physical();
        p.reserve_wal = true;
        assert_eq!(
            create_slot_sql("p", &p, 170000),
            r#"CREATE_REPLICATION_SLOT "p" PHYSICAL (RESERVE_WAL true)"#
        );
    }
}

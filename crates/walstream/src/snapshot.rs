//! The initial snapshot: the published tables' rows as of the slot's consistent point, copied
//! through a second, ordinary connection that imports the slot's exported snapshot, delivered
//! as insert events before streaming starts at that point: no gap, no duplicate.
//!
//! With [`SnapshotOptions::parallelism`] above 1, each table at least
//! [`SnapshotOptions::parallel_threshold`] large is split into ranges of pages (ctid ranges,
//! which PostgreSQL 14+ reads with TID range scans) copied at once on that many more
//! connections, each importing the same exported snapshot: still one consistent snapshot.
//! See [`parallel`].

mod copy_parser;
mod parallel;

use std::collections::BTreeMap;
use std::sync::Arc;

use walconn::{quote_ident, quote_literal, Connection, Replication};
use walproto::pgoutput::ReplicaIdentity;
use walproto::{ColumnInfo, Lsn, Oid, RelationInfo};

use crate::error::{Error, ErrorKind, Result};
use crate::logical::event::{ChangeEvent, EventKind, Insert, Row};

pub(crate) use copy_parser::CopyParser;

/// What the initial snapshot copies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotOptions {
    tables: Option<Vec<String>>,
    keep_slot_on_failure: bool,
    /// 0 stands for the default, 1.
    parallelism: usize,
    parallel_threshold: Option<u64>,
}

impl SnapshotOptions {
    /// The default of [`parallel_threshold`](Self::parallel_threshold): 64 MiB.
    pub const DEFAULT_PARALLEL_THRESHOLD: u64 = 64 << 20;

    /// Every table of the publications (the default).
    pub fn all_tables() -> Self {
        Self::default()
    }

    /// Only these published tables (`schema.table`, as `pg_publication_tables` names them).
    pub fn tables<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tables: I) -> Self {
        self.tables = Some(tables.into_iter().map(Into::into).collect());
        self
    }

    /// Keep the slot when the copy fails (by default a slot created for the snapshot is
    /// dropped, so a failed start leaves nothing behind).
    pub fn keep_slot_on_failure(mut self, keep: bool) -> Self {
        self.keep_slot_on_failure = keep;
        self
    }

    /// Copy each big table (see [`parallel_threshold`](Self::parallel_threshold)) on `n`
    /// connections at once, each importing the slot's exported snapshot and copying its own
    /// ranges of the table's pages (`WHERE ctid >= '(a,0)' AND ctid < '(b,0)'`). 1, the
    /// default, copies every table on the one connection, in order; 0 counts as 1.
    ///
    /// The snapshot stays one consistent snapshot, with no gap and no duplicate against the
    /// stream, and row filters and column lists apply as they do with one connection. What
    /// changes: a big table's rows arrive in no particular order (the ranges' rows
    /// interleave), and `n` more connections are open during its copy (they count against
    /// the server's `max_connections`). Tables stay one after another: a table's
    /// [`Relation`](crate::EventKind::Relation) event, its rows, then its
    /// [`SnapshotTable`](crate::EventKind::SnapshotTable) event. Memory stays bounded: each
    /// range is streamed, and at most a few batches per connection wait for the consumer.
    /// TID range scans need PostgreSQL 14 or later (older servers read the whole table for
    /// each range).
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n;
        self
    }

    /// Tables smaller than this many bytes (`pg_relation_size`, the main fork) are copied on
    /// the first connection even with [`parallelism`](Self::parallelism) above 1; the default
    /// is [`DEFAULT_PARALLEL_THRESHOLD`](Self::DEFAULT_PARALLEL_THRESHOLD).
    pub fn parallel_threshold(mut self, bytes: u64) -> Self {
        self.parallel_threshold = Some(bytes);
        self
    }

    pub(crate) fn keeps_slot(&self) -> bool {
        self.keep_slot_on_failure
    }

    fn connections(&self) -> usize {
        self.parallelism.max(1)
    }

    fn threshold(&self) -> u64 {
        self.parallel_threshold
            .unwrap_or(Self::DEFAULT_PARALLEL_THRESHOLD)
    }
}

/// One published table to copy.
#[derive(Clone)]
struct Table {
    relation: Arc<RelationInfo>,
    filter: Option<String>,
    /// Its size in bytes and in pages (`pg_relation_size` and `block_size`).
    size: u64,
    pages: u64,
}

impl Table {
    fn name(&self) -> String {
        format!("{}.{}", self.relation.namespace, self.relation.name)
    }

    /// The `COPY` of its published rows and columns, within `range` of pages when given
    /// (`None` bounds are open: the first range starts at the table's start, the last runs
    /// to its end, whatever the table has grown to since its size was read).
    fn copy_sql(&self, range: Option<(Option<u64>, Option<u64>)>) -> String {
        let rel = &self.relation;
        let columns: Vec<String> = rel.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let mut conditions = Vec::new();
        if let Some((from, to)) = range {
            if let Some(from) = from {
                conditions.push(format!("ctid >= '({from},0)'::tid"));
            }
            if let Some(to) = to {
                conditions.push(format!("ctid < '({to},0)'::tid"));
            }
        }
        if let Some(f) = &self.filter {
            conditions.push(format!("({f})"));
        }
        format!(
            "COPY (SELECT {} FROM {}.{}{}) TO STDOUT (FORMAT binary)",
            columns.join(", "),
            quote_ident(&rel.namespace),
            quote_ident(&rel.name),
            if conditions.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conditions.join(" AND "))
            }
        )
    }
}

/// Makes the snapshot's events: they all carry the consistent point.
fn event(consistent_point: Lsn, kind: EventKind) -> ChangeEvent {
    ChangeEvent {
        lsn: consistent_point,
        xid: None,
        commit_time: None,
        kind,
    }
}

/// Streams one `COPY` of `table`'s rows as insert events, appending them to `out` and
/// handing `out` to `sink` whenever it holds [`MAX_BATCH_BYTES`](crate::MAX_BATCH_BYTES);
/// returns the rows and bytes copied, with `out` holding the last events.
async fn copy_rows<F, Fut>(
    conn: &mut Connection,
    table: &Table,
    sql: &str,
    consistent_point: Lsn,
    out: &mut CopyOutBatch,
    mut sink: F,
) -> Result<(u64, u64)>
where
    F: FnMut(CopyOutBatch) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut parser = CopyParser::new(table.relation.columns.len());
    // Each batch's rows share a copy of the relation of their own: the consumer drops one
    // batch's events on its thread while this task makes the next batch's on another, and a
    // reference count both changed for every row would bounce between their cores.
    let mut rel = Arc::new(RelationInfo::clone(&table.relation));
    let (mut rows, mut bytes) = (0u64, 0u64);
    let mut copy = conn.copy_out(sql).await?;
    while let Some(chunk) = copy.next_chunk().await? {
        bytes += chunk.len() as u64;
        out.bytes += chunk.len();
        // Each message is usually one row: a batch is closed at MAX_BATCH_EVENTS rows even
        // in the middle of a chunk.
        let mut payloads = chunk.payloads().peekable();
        while payloads.peek().is_some() {
            let room = MAX_BATCH_EVENTS.saturating_sub(out.events.len()).max(1);
            parser
                .rows(payloads.by_ref().take(room), |tuple| {
                    rows += 1;
                    out.events.push(event(
                        consistent_point,
                        EventKind::Insert(Insert {
                            xid: None,
                            new: Row::new(rel.clone(), tuple),
                            relation: rel.clone(),
                        }),
                    ));
                })
                .map_err(|m| copy_error(&table.name(), &m))?;
            if out.events.len() >= MAX_BATCH_EVENTS || out.bytes >= crate::MAX_BATCH_BYTES {
                let full = std::mem::replace(
                    out,
                    CopyOutBatch {
                        events: Vec::with_capacity(MAX_BATCH_EVENTS),
                        bytes: 0,
                    },
                );
                sink(full).await?;
                rel = Arc::new(RelationInfo::clone(&table.relation));
            }
        }
    }
    if !parser.finished() {
        return Err(copy_error(
            &table.name(),
            "the binary COPY stream ended early",
        ));
    }
    Ok((rows, bytes))
}

/// Copies the snapshot `name` of the publications' tables on a new connection, handing each
/// batch of events to `deliver` (which waits while the consumer is behind).
pub(crate) async fn copy<F, Fut>(
    conn_config: &walconn::Config,
    snapshot: &str,
    publications: &[String],
    options: &SnapshotOptions,
    consistent_point: Lsn,
    mut deliver: F,
) -> Result<()>
where
    F: FnMut(Vec<ChangeEvent>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut config = conn_config.clone();
    config.set_replication(Replication::Off);
    let mut conn = Connection::connect(&config).await?;
    conn.simple_query(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
        quote_literal(snapshot)
    ))
    .await?;
    let tables = published_tables(&mut conn, publications, options).await?;
    let n = options.connections();
    let big = |t: &Table| n > 1 && t.size >= options.threshold() && t.pages > 1;
    // The other connections import the snapshot now, while the slot's connection that
    // exported it is still waiting for this copy: an exported snapshot can be imported only
    // while its exporter's transaction lasts.
    let mut pool = if tables.iter().any(big) {
        Some(parallel::Pool::start(&config, snapshot, n).await?)
    } else {
        None
    };
    let event = |kind| event(consistent_point, kind);
    deliver(
        vec![event(EventKind::SnapshotBegin { consistent_point })],
        0,
    )
    .await?;
    for table in tables {
        let rel = table.relation.clone();
        let name = table.name();
        let (rows, bytes, mut out) = match pool.as_mut().filter(|_| big(&table)) {
            Some(pool) => {
                tracing::info!(
                    table = name,
                    pages = table.pages,
                    connections = n,
                    "copying"
                );
                deliver(vec![event(EventKind::Relation(rel.clone()))], 0).await?;
                let (rows, bytes) = pool.copy(&table, consistent_point, &mut deliver).await?;
                (rows, bytes, CopyOutBatch::default())
            }
            None => {
                tracing::info!(table = name, "copying");
                let mut out = CopyOutBatch::default();
                out.events.push(event(EventKind::Relation(rel.clone())));
                let sql = table.copy_sql(None);
                let (rows, bytes) = copy_rows(
                    &mut conn,
                    &table,
                    &sql,
                    consistent_point,
                    &mut out,
                    |batch| deliver(batch.events, batch.bytes),
                )
                .await?;
                (rows, bytes, out)
            }
        };
        out.events.push(event(EventKind::SnapshotTable {
            relation: rel,
            rows,
            bytes,
        }));
        deliver(out.events, out.bytes).await?;
        tracing::info!(table = name, rows, bytes, "copied");
    }
    if let Some(pool) = pool {
        pool.finish().await?;
    }
    conn.simple_query("COMMIT").await?;
    conn.close().await?;
    deliver(vec![event(EventKind::SnapshotEnd { consistent_point })], 0).await
}

/// The most insert events in one batch of the snapshot: a batch's vector stays within 64 KiB,
/// which allocators serve from memory they reuse (glibc maps a block of 128 KiB or more anew
/// each time, and every page of it faults in again: a 10-million-row copy faulted in half a
/// gigabyte that way, a fifth of its CPU time).
const MAX_BATCH_EVENTS: usize = 64 * 1024 / std::mem::size_of::<ChangeEvent>();

/// Events ready for the consumer, with the `COPY` bytes they came from.
#[derive(Default)]
struct CopyOutBatch {
    events: Vec<ChangeEvent>,
    bytes: usize,
}

fn copy_error(table: &str, message: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("copying {table} for the initial snapshot: {message}"),
    )
}

/// The publications' tables with their published columns (as pgoutput describes them:
/// replica identity columns flagged as keys) and row filters.
async fn published_tables(
    conn: &mut Connection,
    publications: &[String],
    options: &SnapshotOptions,
) -> Result<Vec<Table>> {
    let pubs = publications
        .iter()
        .map(|p| quote_literal(p))
        .collect::<Vec<_>>()
        .join(", ");
    let v15 = conn.server_version_num() >= 150_000;
    let extra = if v15 {
        ", array_to_string(attnames, ',') AS attnames, rowfilter"
    } else {
        ", NULL AS attnames, NULL AS rowfilter"
    };
    let r = conn
        .simple_query(&format!(
            "SELECT schemaname, tablename{extra} FROM pg_catalog.pg_publication_tables \
             WHERE pubname IN ({pubs}) ORDER BY schemaname, tablename"
        ))
        .await?;
    let r = r.into_iter().next().unwrap_or_default();
    // Per table, over the publications that include it: the union of the column lists and
    // the OR of the row filters (a publication without a filter publishes every row).
    #[derive(Default)]
    struct Wanted {
        all_columns: bool,
        columns: Vec<String>,
        all_rows: bool,
        filters: Vec<String>,
    }
    let mut wanted: BTreeMap<(String, String), Wanted> = BTreeMap::new();
    for i in 0..r.rows.len() {
        let (Some(schema), Some(table)) = (r.get(i, "schemaname"), r.get(i, "tablename")) else {
            continue;
        };
        let qualified = format!("{schema}.{table}");
        if options
            .tables
            .as_ref()
            .is_some_and(|t| !t.contains(&qualified))
        {
            continue;
        }
        let w = wanted
            .entry((schema.to_owned(), table.to_owned()))
            .or_default();
        match r.get(i, "attnames") {
            Some(cols) => w.columns.extend(cols.split(',').map(str::to_owned)),
            None => w.all_columns = true,
        }
        match r.get(i, "rowfilter") {
            Some(f) => w.filters.push(format!("({f})")),
            None => w.all_rows = true,
        }
    }
    let mut tables = Vec::new();
    for ((schema, table), w) in wanted {
        let only = Some(w.columns.as_slice()).filter(|_| !w.all_columns);
        let relation = describe(conn, &schema, &table, only).await?;
        // Sizes only matter to split tables: one copy each needs no extra round trips.
        let (size, pages) = if options.connections() > 1 {
            relation_size(conn, relation.id).await?
        } else {
            (0, 0)
        };
        tables.push(Table {
            relation: Arc::new(relation),
            filter: Some(w.filters.join(" OR ")).filter(|_| !w.all_rows),
            size,
            pages,
        });
    }
    Ok(tables)
}

/// The table's main fork in bytes and in pages.
async fn relation_size(conn: &mut Connection, id: Oid) -> Result<(u64, u64)> {
    let r = conn
        .simple_query(&format!(
            "SELECT pg_catalog.pg_relation_size({}::oid) AS size, \
               current_setting('block_size')::bigint AS block",
            id.0
        ))
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let get = |c| r.get(0, c).and_then(|v| v.parse::<u64>().ok());
    match (get("size"), get("block")) {
        (Some(size), Some(block)) if block > 0 => Ok((size, size / block)),
        _ => Err(Error::new(
            ErrorKind::Protocol,
            format!("cannot read the size of relation {}", id.0),
        )),
    }
}

/// The relation as pgoutput's Relation message would describe it.
async fn describe(
    conn: &mut Connection,
    schema: &str,
    table: &str,
    only: Option<&[String]>,
) -> Result<RelationInfo> {
    let regclass = quote_literal(&format!("{}.{}", quote_ident(schema), quote_ident(table)));
    // With the server's list of published columns (PostgreSQL 15+), that list decides, generated
    // columns included: PostgreSQL 18 publishes stored generated columns under
    // `publish_generated_columns = stored` or a column list naming them, and the snapshot's
    // rows must have the columns the stream's rows have. Without it (PostgreSQL 14), every
    // column but the generated ones is published.
    let generated = if only.is_some() { "true" } else { "false" };
    let sql = format!(
        "SELECT c.oid, c.relreplident, a.attname, a.atttypid, a.atttypmod, \
           (c.relreplident = 'f' OR a.attnum = ANY(coalesce((SELECT i.indkey::int2[] \
              FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND \
              CASE c.relreplident WHEN 'i' THEN i.indisreplident \
                WHEN 'd' THEN i.indisprimary ELSE false END LIMIT 1), '{{}}'::int2[]))) AS key \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
         WHERE c.oid = {regclass}::regclass AND a.attnum > 0 AND NOT a.attisdropped \
           AND ({generated} OR a.attgenerated = '') \
         ORDER BY a.attnum"
    );
    let r = conn
        .simple_query(&sql)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let bad = || {
        Error::new(
            ErrorKind::Protocol,
            format!("cannot describe {schema}.{table}"),
        )
    };
    let id = r
        .get(0, "oid")
        .and_then(|v| v.parse().ok())
        .map(Oid)
        .ok_or_else(bad)?;
    let replica_identity = match r.get(0, "relreplident") {
        Some("d") => ReplicaIdentity::Default,
        Some("n") => ReplicaIdentity::Nothing,
        Some("f") => ReplicaIdentity::Full,
        Some("i") => ReplicaIdentity::Index,
        _ => return Err(bad()),
    };
    let mut columns = Vec::new();
    for i in 0..r.rows.len() {
        let name = r.get(i, "attname").ok_or_else(bad)?.to_owned();
        if only.is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        columns.push(ColumnInfo {
            name,
            type_oid: Oid(r
                .get(i, "atttypid")
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?),
            type_modifier: r
                .get(i, "atttypmod")
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?,
            key: r.get(i, "key") == Some("t"),
        });
    }
    Ok(RelationInfo {
        id,
        namespace: schema.to_owned(),
        name: table.to_owned(),
        replica_identity,
        columns,
    })
}

//! The initial snapshot on several connections (`SnapshotOptions::parallelism`): big tables
//! copied in ctid ranges by connections sharing the slot's exported snapshot, still one
//! consistent snapshot: every row once, and the writes during the copy through the stream
//! once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgtest::Database;
use walstream::{
    ColumnValue, CreateSlot, ErrorKind, EventKind, LogicalReplicationStream,
    ReplicationStreamConfig, SnapshotOptions,
};

use crate::block_on;

/// What one run saw.
struct Outcome {
    /// The snapshot's ids, in the order they arrived.
    snapshot: Vec<i64>,
    /// The published columns of the snapshot's rows.
    columns: Vec<String>,
    /// The rows its `SnapshotTable` event counted.
    counted: u64,
    /// The ids inserted through the stream after the snapshot (the marker left out).
    streamed: Vec<i64>,
    /// Connections whose last query was a ctid-range `COPY`, seen at the snapshot's first row.
    range_copies: usize,
}

const MARKER: i64 = -3;

fn id(v: Option<ColumnValue>) -> i64 {
    match v {
        // Binary COPY: int4 big-endian.
        Some(ColumnValue::Binary(b)) => i32::from_be_bytes(b[..].try_into().unwrap()).into(),
        Some(ColumnValue::Text(b)) => std::str::from_utf8(&b).unwrap().parse().unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Streams `publication` from a new slot with an initial snapshot under `options`, while a
/// writer inserts rows (ids from 1,000,000 on, single-row transactions) until the snapshot
/// has ended, then the marker row.
fn run(db: &Database<'_>, publication: &str, options: SnapshotOptions) -> Outcome {
    let slot = pgtest::unique_name("ws_snap_par");
    let config = ReplicationStreamConfig::builder(&slot, [publication])
        .create_slot_if_missing(CreateSlot::Temporary)
        .initial_snapshot(options)
        .status_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let conninfo = db.conninfo();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !done.load(Ordering::Relaxed) && i < 3000 {
                i += 1;
                db.psql(&format!(
                    "INSERT INTO t (id, v) VALUES ({}, 'new')",
                    1_000_000 + i
                ))
                .unwrap();
            }
            db.psql(&format!(
                "INSERT INTO t (id, v) VALUES ({MARKER}, 'marker')"
            ))
            .unwrap();
        });
        block_on(async {
            let mut events = LogicalReplicationStream::connect(&conninfo, config)
                .await
                .unwrap()
                .start();
            let mut out = Outcome {
                snapshot: Vec::new(),
                columns: Vec::new(),
                counted: 0,
                streamed: Vec::new(),
                range_copies: usize::MAX,
            };
            let mut in_snapshot = false;
            loop {
                let e = tokio::time::timeout(Duration::from_secs(120), events.next_event())
                    .await
                    .expect("timed out")
                    .unwrap()
                    .expect("ended");
                match e.kind {
                    EventKind::SnapshotBegin { .. } => in_snapshot = true,
                    EventKind::SnapshotEnd { .. } => {
                        in_snapshot = false;
                        done.store(true, Ordering::Relaxed);
                    }
                    EventKind::SnapshotTable { rows, .. } => out.counted = rows,
                    EventKind::Insert(i) if in_snapshot => {
                        if out.snapshot.is_empty() {
                            out.columns =
                                i.relation.columns.iter().map(|c| c.name.clone()).collect();
                            // The copying connections keep their last query, the COPY, until
                            // they commit at the snapshot's end.
                            out.range_copies = db
                                .query(
                                    "SELECT count(*) FROM pg_stat_activity \
                                     WHERE datname = current_database() \
                                       AND query LIKE 'COPY (SELECT %ctid%'",
                                )
                                .unwrap()[0][0]
                                .parse()
                                .unwrap();
                        }
                        out.snapshot.push(id(i.new.get("id")));
                    }
                    EventKind::Insert(i) => {
                        let id = id(i.new.get("id"));
                        if id == MARKER {
                            break;
                        }
                        out.streamed.push(id);
                    }
                    EventKind::Commit(c) => events.ack(c.end_lsn),
                    _ => {}
                }
            }
            events.shutdown().await.unwrap();
            out
        })
    })
}

/// Every id of the table (the marker left out) `where` selects arrived once, in the snapshot
/// or through the stream, and the stream had writes made during the copy.
fn assert_once(db: &Database<'_>, out: &Outcome, condition: &str) {
    let table: BTreeSet<i64> = db
        .query(&format!(
            "SELECT id FROM t WHERE id <> {MARKER} AND ({condition})"
        ))
        .unwrap()
        .into_iter()
        .map(|r| r[0].parse().unwrap())
        .collect();
    let mut seen = BTreeSet::new();
    for id in out.snapshot.iter().chain(&out.streamed) {
        assert!(seen.insert(*id), "{id} arrived twice");
    }
    let missing: Vec<_> = table.difference(&seen).take(5).collect();
    let extra: Vec<_> = seen.difference(&table).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(out.counted, out.snapshot.len() as u64);
    assert!(!out.streamed.is_empty(), "no write during the snapshot");
}

fn setup(db: &Database<'_>, rows: u32, publication: &str) {
    db.psql(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text, w text);
         INSERT INTO t SELECT g, 'v' || g, 'w' FROM generate_series(1, {rows}) g;
         {publication};
         ANALYZE t;"
    ))
    .unwrap();
}

#[test]
fn three_connections_copy_every_row_once_then_the_stream() {
    let mut majors = 0;
    pgtest::for_each_major(15, |cluster| {
        majors += 1;
        let db = cluster.create_database("ws_snap_par").unwrap();
        setup(&db, 200_000, "CREATE PUBLICATION par_pub FOR TABLE t");
        let out = run(
            &db,
            "par_pub",
            SnapshotOptions::all_tables()
                .parallelism(3)
                .parallel_threshold(1 << 20),
        );
        assert_eq!(out.range_copies, 3, "three connections copy ranges");
        assert!(out.snapshot.len() >= 200_000);
        // The ranges' rows interleave: ids (inserted in order, so in page order) do not
        // arrive sorted.
        assert!(out.snapshot.windows(2).any(|w| w[0] > w[1]));
        assert_once(&db, &out, "true");
    });
    assert!(majors > 0, "no PostgreSQL installed");
}

#[test]
fn row_filters_and_column_lists_apply_to_every_range() {
    let mut majors = 0;
    pgtest::for_each_major(15, |cluster| {
        majors += 1;
        let db = cluster.create_database("ws_snap_par_filter").unwrap();
        setup(
            &db,
            60_000,
            "CREATE PUBLICATION par_filter FOR TABLE t (id, v) WHERE (id % 3 = 0)",
        );
        let out = run(
            &db,
            "par_filter",
            SnapshotOptions::all_tables()
                .parallelism(2)
                .parallel_threshold(0),
        );
        assert_eq!(out.range_copies, 2);
        assert_eq!(out.columns, ["id", "v"]);
        assert!(out.snapshot.iter().all(|id| id % 3 == 0));
        assert!(out.snapshot.len() >= 20_000);
        assert_once(&db, &out, "id % 3 = 0");
    });
    assert!(majors > 0, "no PostgreSQL installed");
}

#[test]
fn parallelism_1_copies_in_order_on_one_connection() {
    let mut majors = 0;
    pgtest::for_each_major(15, |cluster| {
        majors += 1;
        let db = cluster.create_database("ws_snap_par_one").unwrap();
        setup(&db, 50_000, "CREATE PUBLICATION par_one FOR TABLE t");
        let out = run(
            &db,
            "par_one",
            SnapshotOptions::all_tables()
                .parallelism(1)
                .parallel_threshold(0),
        );
        assert_eq!(out.range_copies, 0);
        // One COPY reads the table in page order: the ids arrive sorted.
        assert!(out.snapshot.windows(2).all(|w| w[0] < w[1]));
        assert_once(&db, &out, "true");
    });
    assert!(majors > 0, "no PostgreSQL installed");
}

#[test]
fn a_range_that_fails_fails_the_snapshot() {
    let cluster = pgtest::cluster(16);
    let db = cluster.create_database("ws_snap_par_fail").unwrap();
    // The row filter divides by zero on row 70,000: one range's copy fails.
    setup(
        &db,
        100_000,
        "CREATE PUBLICATION par_fail FOR TABLE t WHERE (100 / (id - 70000) > -1000)",
    );
    block_on(async {
        let config =
            ReplicationStreamConfig::builder(pgtest::unique_name("ws_snap_par"), ["par_fail"])
                .create_slot_if_missing(CreateSlot::Temporary)
                .initial_snapshot(
                    SnapshotOptions::all_tables()
                        .parallelism(3)
                        .parallel_threshold(0),
                )
                .build()
                .unwrap();
        let mut events = LogicalReplicationStream::connect(&db.conninfo(), config)
            .await
            .unwrap()
            .start();
        let err = loop {
            match events.next_event().await {
                Ok(Some(e)) => assert!(!matches!(e.kind, EventKind::SnapshotEnd { .. })),
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
        assert_eq!(err.code(), Some("22012"), "{err}");
    });
}

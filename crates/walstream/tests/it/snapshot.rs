//! The initial snapshot: the tables as of the slot's consistent point, then the stream from
//! there, with concurrent writes during the copy: no row missing, none twice.

use std::collections::BTreeMap;
use std::time::Duration;

use walstream::{
    ColumnValue, CreateSlot, ErrorKind, EventKind, LogicalReplicationStream,
    ReplicationStreamConfig, SlotManager, SnapshotOptions,
};

use crate::block_on;

fn text(v: Option<ColumnValue>) -> String {
    match v {
        Some(ColumnValue::Text(b)) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn snapshot_then_stream_with_concurrent_writes() {
    pgtest::for_each_major(15, |cluster| {
        let db = cluster.create_database("ws_snapshot").unwrap();
        let slot = cluster.unique_name("ws_snapshot");
        db.psql(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             CREATE TABLE other (id int);
             CREATE PUBLICATION snap_pub FOR TABLE t;
             INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 30000) g;
             INSERT INTO other VALUES (1);",
        )
        .unwrap();
        let config = ReplicationStreamConfig::builder(&slot, ["snap_pub"])
            .create_slot_if_missing(CreateSlot::Permanent)
            .initial_snapshot(SnapshotOptions::all_tables())
            .status_interval(Duration::from_millis(200))
            .build()
            .unwrap();
        let conninfo = db.conninfo();
        let done = std::sync::atomic::AtomicBool::new(false);
        let model = std::thread::scope(|s| {
            // Writes before, during and after the copy.
            s.spawn(|| {
                let mut i = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) && i < 400 {
                    i += 1;
                    db.psql(&format!(
                        "INSERT INTO t VALUES ({}, 'new');
                         UPDATE t SET v = 'updated {i}' WHERE id = {};
                         DELETE FROM t WHERE id = {};",
                        100_000 + i,
                        i * 7,
                        i * 11 + 1
                    ))
                    .unwrap();
                }
                db.psql("INSERT INTO t VALUES (-1, 'marker')").unwrap();
            });
            block_on(async {
                let mut events = LogicalReplicationStream::connect(&conninfo, config)
                    .await
                    .unwrap()
                    .start();
                let mut model: BTreeMap<i64, String> = BTreeMap::new();
                let mut in_snapshot = false;
                let mut snapshot_rows = 0;
                loop {
                    let e = tokio::time::timeout(Duration::from_secs(60), events.next_event())
                        .await
                        .expect("timed out")
                        .unwrap()
                        .expect("ended");
                    match e.kind {
                        EventKind::SnapshotBegin { .. } => in_snapshot = true,
                        EventKind::SnapshotEnd { .. } => {
                            in_snapshot = false;
                            done.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        EventKind::SnapshotTable {
                            relation,
                            rows,
                            bytes,
                        } => {
                            assert_eq!(relation.name, "t");
                            assert_eq!(rows, snapshot_rows);
                            assert!(bytes > rows * 8);
                        }
                        EventKind::Insert(i) if in_snapshot => {
                            // Binary COPY values: int4 big-endian, text as UTF-8.
                            let Some(ColumnValue::Binary(id)) = i.new.get("id") else {
                                panic!()
                            };
                            let id = i32::from_be_bytes(id[..].try_into().unwrap());
                            let Some(ColumnValue::Binary(v)) = i.new.get("v") else {
                                panic!()
                            };
                            let v = String::from_utf8(v.to_vec()).unwrap();
                            assert!(model.insert(id.into(), v).is_none(), "{id} twice");
                            snapshot_rows += 1;
                        }
                        EventKind::Insert(i) => {
                            let id: i64 = text(i.new.get("id")).parse().unwrap();
                            let v = text(i.new.get("v"));
                            assert!(model.insert(id, v).is_none(), "{id} inserted twice");
                            if id == -1 {
                                break;
                            }
                        }
                        EventKind::Update(u) => {
                            let id: i64 = text(u.new.get("id")).parse().unwrap();
                            assert!(model.insert(id, text(u.new.get("v"))).is_some(), "{id}");
                        }
                        EventKind::Delete(d) => {
                            let id: i64 = text(d.old.row().get("id")).parse().unwrap();
                            assert!(model.remove(&id).is_some(), "{id} deleted but missing");
                        }
                        EventKind::Commit(c) => events.ack(c.end_lsn),
                        _ => {}
                    }
                }
                assert!(snapshot_rows >= 30000 - 400);
                events.shutdown().await.unwrap();
                model
            })
        });
        let table: BTreeMap<i64, String> = db
            .query("SELECT id, v FROM t")
            .unwrap()
            .into_iter()
            .map(|r| (r[0].parse().unwrap(), r[1].clone()))
            .collect();
        assert_eq!(model.len(), table.len());
        let diff: Vec<_> = table
            .iter()
            .filter(|(k, v)| model.get(k) != Some(v))
            .take(5)
            .collect();
        assert!(diff.is_empty(), "rows differ: {diff:?}");
    });
}

#[test]
fn a_failed_copy_leaves_no_slot_behind() {
    let cluster = pgtest::cluster(16);
    let db = cluster.create_database("ws_snapshot_fail").unwrap();
    let slot = cluster.unique_name("ws_snapshot_fail");
    // The row filter divides by zero on row 5: the copy fails.
    db.psql(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION fail_pub FOR TABLE t WHERE (100 / (id - 5) > -1000);
         INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10) g;",
    )
    .unwrap();
    block_on(async {
        let config = ReplicationStreamConfig::builder(&slot, ["fail_pub"])
            .create_slot_if_missing(CreateSlot::Permanent)
            .initial_snapshot(SnapshotOptions::all_tables())
            .build()
            .unwrap();
        let mut events = LogicalReplicationStream::connect(&db.conninfo(), config)
            .await
            .unwrap()
            .start();
        let err = loop {
            match events.next_event().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
        assert_eq!(err.code(), Some("22012"), "{err}");
        let mut slots = SlotManager::connect(&db.conninfo()).await.unwrap();
        assert!(
            slots.read(&slot).await.unwrap().is_none(),
            "the slot was left behind"
        );
    });
}

/// PostgreSQL 18 publishes stored generated columns when the publication says so: the
/// snapshot's rows then carry them as the streamed rows do, and leave them out otherwise.
#[test]
fn snapshot_rows_have_the_streamed_rows_columns_with_generated_columns() {
    pgtest::for_each_major(18, |cluster| {
        for (option, with_generated) in [("stored", true), ("none", false)] {
            let db = cluster
                .create_database(&format!("ws_snapshot_gen_{option}"))
                .unwrap();
            let slot = cluster.unique_name("ws_snapshot_gen");
            db.psql(&format!(
                "CREATE TABLE t (id int PRIMARY KEY, v text,
                                 g int GENERATED ALWAYS AS (id * 2) STORED);
                 CREATE PUBLICATION gen_pub FOR TABLE t
                     WITH (publish_generated_columns = {option});
                 INSERT INTO t (id, v) VALUES (1, 'before');"
            ))
            .unwrap();
            let config = ReplicationStreamConfig::builder(&slot, ["gen_pub"])
                .create_slot_if_missing(CreateSlot::Permanent)
                .initial_snapshot(SnapshotOptions::all_tables())
                .build()
                .unwrap();
            let conninfo = db.conninfo();
            let columns = block_on(async {
                let mut events = LogicalReplicationStream::connect(&conninfo, config)
                    .await
                    .unwrap()
                    .start();
                let mut columns: Vec<(bool, Vec<String>)> = Vec::new();
                let mut in_snapshot = false;
                loop {
                    let e = tokio::time::timeout(Duration::from_secs(60), events.next_event())
                        .await
                        .expect("timed out")
                        .unwrap()
                        .expect("ended");
                    match e.kind {
                        EventKind::SnapshotBegin { .. } => in_snapshot = true,
                        EventKind::SnapshotEnd { .. } => {
                            in_snapshot = false;
                            db.psql("INSERT INTO t (id, v) VALUES (2, 'after')")
                                .unwrap();
                        }
                        EventKind::Insert(i) => {
                            let names = i.relation.columns.iter().map(|c| c.name.clone()).collect();
                            columns.push((in_snapshot, names));
                            if !in_snapshot {
                                assert_eq!(i.new.get("g").is_some(), with_generated, "{option}");
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                events.shutdown().await.unwrap();
                columns
            });
            let expected: Vec<String> = if with_generated {
                vec!["id".into(), "v".into(), "g".into()]
            } else {
                vec!["id".into(), "v".into()]
            };
            assert_eq!(
                columns,
                [(true, expected.clone()), (false, expected)],
                "publish_generated_columns = {option}"
            );
        }
    });
}

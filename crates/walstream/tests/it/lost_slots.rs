//! Lost slots (issue 16): a slot invalidated by `max_slot_wal_keep_size` ends the stream at
//! once with `ErrorKind::SlotInvalidated` naming the slot and `wal_removed`, never retried; the
//! early warning as the slot heads for loss; the opt-in recovery policy's re-snapshot and its
//! hourly limit. Every test runs a cluster of its own with 1 MB WAL segments, so that a slot is
//! lost after a few segment switches and checkpoints.

use std::time::{Duration, Instant};

use pgtest::{Cluster, Database};
use walstream::{
    ChangeEvent, ColumnValue, ErrorKind, EventKind, EventStream, InvalidationReason,
    LogicalReplicationStream, ReplicationStreamConfig, RetryPolicy, SlotRecovery, WalStatus,
};

use crate::block_on;

/// A cluster whose slots are lost once they hold more than `keep` of WAL (1 MB segments).
fn cluster(major: u32, keep: &str) -> Cluster {
    pgtest::Config::new(major)
        .initdb_arg("--wal-segsize=1")
        .setting("max_slot_wal_keep_size", keep)
        .setting("min_wal_size", "4MB")
        .setting("max_wal_size", "64MB")
        .start()
        .unwrap()
}

/// A database with a published table `t`, an unpublished `u`, and a slot made before any row.
fn fixture<'c>(cluster: &'c Cluster, name: &str) -> (Database<'c>, String, String) {
    let db = cluster.create_database(name).unwrap();
    let slot = cluster.unique_name(name);
    let publication = format!("{name}_pub");
    db.psql(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE TABLE u (id int, pad text);
         CREATE PUBLICATION {publication} FOR TABLE t;
         SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');"
    ))
    .unwrap();
    (db, slot, publication)
}

fn wal_status(db: &Database<'_>, slot: &str) -> String {
    db.psql(&format!(
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ))
    .unwrap()
}

/// Writes unpublished WAL, switches segments and checkpoints until `slot` is lost.
fn lose(db: &Database<'_>, slot: &str) {
    for _ in 0..40 {
        db.psql(
            "INSERT INTO u SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g;
             SELECT pg_switch_wal();",
        )
        .unwrap();
        db.psql("CHECKPOINT").unwrap();
        if wal_status(db, slot) == "lost" {
            return;
        }
    }
    panic!(
        "slot {slot} is still {} after 40 checkpoints",
        wal_status(db, slot)
    );
}

/// Retries that would show: many attempts, each after at least 10 s.
fn slow_retries() -> RetryPolicy {
    RetryPolicy::default()
        .backoff(Duration::from_secs(10), Duration::from_secs(10))
        .max_attempts(Some(100))
}

fn config(slot: &str, publication: &str) -> walstream::ReplicationStreamConfigBuilder {
    ReplicationStreamConfig::builder(slot, [publication])
        .status_interval(Duration::from_millis(200))
        .retry(slow_retries())
}

fn assert_lost(e: &walstream::Error, slot: &str) {
    assert_eq!(e.kind(), ErrorKind::SlotInvalidated, "{e}");
    assert_eq!(
        e.invalidation_reason(),
        Some(&InvalidationReason::WalRemoved),
        "{e}"
    );
    assert!(!e.is_retryable());
    let text = e.to_string();
    assert!(
        text.contains(slot) && text.contains("wal_removed"),
        "{text}"
    );
}

/// Column `id` of `row` (text from the stream, binary from the snapshot's COPY).
fn id(row: &walstream::Row) -> i32 {
    match row.get("id").unwrap() {
        ColumnValue::Text(b) => std::str::from_utf8(&b).unwrap().parse().unwrap(),
        ColumnValue::Binary(b) => i32::from_be_bytes(b[..].try_into().unwrap()),
        other => panic!("id is {other:?}"),
    }
}

/// The next event, or the error that ended the stream (fails after `secs`).
async fn next(stream: &mut EventStream, secs: u64) -> walstream::Result<Option<ChangeEvent>> {
    tokio::time::timeout(Duration::from_secs(secs), stream.next_event())
        .await
        .expect("timed out waiting for the stream")
}

#[test]
fn a_lost_slot_ends_the_stream_at_once_naming_slot_and_reason() {
    pgtest::for_each_installed_major(15, |major| {
        let cluster = cluster(major, "1MB");
        let (db, slot, publication) = fixture(&cluster, "lost_at_start");
        lose(&db, &slot);
        block_on(async {
            // Found at connect, or at START_REPLICATION: either way at once, and typed.
            let started = Instant::now();
            let conninfo = db.conninfo();
            let error = match LogicalReplicationStream::connect(
                &conninfo,
                config(&slot, &publication).build().unwrap(),
            )
            .await
            {
                Err(e) => e,
                Ok(stream) => {
                    let mut events = stream.start();
                    let e = loop {
                        match next(&mut events, 30).await {
                            Ok(Some(_)) => {}
                            Ok(None) => panic!("the stream ended without an error"),
                            Err(e) => break e,
                        }
                    };
                    assert_eq!(events.stats().reconnects, 0);
                    e
                }
            };
            // A retry would have waited 10 s.
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "{:?}",
                started.elapsed()
            );
            assert_lost(&error, &slot);
        });

        // Lost while streaming: the walsender is terminated, the reconnect finds the slot
        // invalidated and the stream ends; the consumer never acknowledges, so the slot stays
        // behind.
        let (db, slot, publication) = fixture(&cluster, "lost_streaming");
        block_on(async {
            let stream = LogicalReplicationStream::connect(
                &db.conninfo(),
                config(&slot, &publication)
                    .retry(
                        RetryPolicy::default()
                            .backoff(Duration::from_millis(100), Duration::from_millis(100))
                            .max_attempts(Some(100)),
                    )
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
            let mut events = stream.start();
            db.psql("INSERT INTO t VALUES (1, 'one')").unwrap();
            lose(&db, &slot);
            let lost_at = Instant::now();
            let error = loop {
                match next(&mut events, 30).await {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("the stream ended without an error"),
                    Err(e) => break e,
                }
            };
            assert_lost(&error, &slot);
            // Not a retry loop: at most the one reconnect that found the slot invalidated.
            assert!(events.stats().reconnects <= 1, "{:?}", events.stats());
            assert!(
                lost_at.elapsed() < Duration::from_secs(10),
                "{:?}",
                lost_at.elapsed()
            );
            // The driver's result says the same.
            assert_lost(&events.shutdown().await.unwrap_err(), &slot);
        });
    });
}

#[test]
fn the_stream_warns_as_its_slot_heads_for_loss() {
    pgtest::for_each_installed_major(15, |major| {
        let cluster = cluster(major, "4MB");
        let (db, slot, publication) = fixture(&cluster, "slot_warning");
        block_on(async {
            // The slot is read as the stream starts: a threshold above any safe_wal_size warns
            // at once, without any WAL written; with the check off, nothing comes.
            for (check, warns) in [(Some(Duration::from_secs(3600)), true), (None, false)] {
                let stream = LogicalReplicationStream::connect(
                    &db.conninfo(),
                    config(&slot, &publication)
                        .slot_check_interval(check)
                        .slot_warning_threshold(u64::MAX)
                        .build()
                        .unwrap(),
                )
                .await
                .unwrap();
                let mut events = stream.start();
                let first = tokio::time::timeout(
                    Duration::from_secs(if warns { 5 } else { 1 }),
                    events.next_event(),
                )
                .await;
                match first {
                    Ok(Ok(Some(e))) => {
                        assert!(warns, "{e:?}");
                        let EventKind::SlotWarning {
                            wal_status,
                            safe_wal_size,
                        } = e.kind
                        else {
                            panic!("{:?}", e.kind)
                        };
                        assert_eq!(wal_status, WalStatus::Reserved);
                        assert!(safe_wal_size.is_some_and(|s| s > 0), "{safe_wal_size:?}");
                    }
                    Err(_) => assert!(!warns, "no warning at start"),
                    other => panic!("{other:?}"),
                }
                // The stats carry what the check read (the limit is 4 MB: always known).
                assert_eq!(events.stats().slot_safe_wal_size.is_some(), warns);
                events.shutdown().await.unwrap();
            }
            let stream = LogicalReplicationStream::connect(
                &db.conninfo(),
                config(&slot, &publication)
                    .slot_check_interval(Some(Duration::from_millis(100)))
                    .slot_warning_threshold(2 << 20)
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
            let mut events = stream.start();
            let mut warnings = Vec::new();
            // Unpublished WAL, never acknowledged, no checkpoint: safe_wal_size shrinks under
            // 2 MB, then below zero (unreserved).
            for _ in 0..60 {
                db.psql("INSERT INTO u SELECT g, repeat('x', 200) FROM generate_series(1, 1000) g")
                    .unwrap();
                while let Ok(Ok(Some(e))) =
                    tokio::time::timeout(Duration::from_millis(300), events.next_event()).await
                {
                    if let EventKind::SlotWarning {
                        wal_status,
                        safe_wal_size,
                    } = e.kind
                    {
                        warnings.push((wal_status, safe_wal_size));
                    }
                }
                if warnings.iter().any(|(w, _)| *w == WalStatus::Unreserved) {
                    break;
                }
            }
            assert!(warnings.len() >= 2, "{warnings:?}");
            // First the low safe_wal_size, still reserved (or extended), then unreserved.
            let (first, safe) = &warnings[0];
            assert!(
                matches!(first, WalStatus::Reserved | WalStatus::Extended),
                "{warnings:?}"
            );
            assert!(safe.is_some_and(|s| s < 2 << 20), "{warnings:?}");
            assert_eq!(
                warnings.last().unwrap().0,
                WalStatus::Unreserved,
                "{warnings:?}"
            );
            assert_eq!(wal_status(&db, &slot), "unreserved");
            let safe = events.stats().slot_safe_wal_size;
            assert!(safe.is_some_and(|s| s < 2 << 20), "{safe:?}");
            events.shutdown().await.unwrap();
        });
    });
}

#[test]
fn the_recovery_policy_resnapshots_then_stops_at_its_limit() {
    pgtest::for_each_installed_major(15, |major| {
        let cluster = cluster(major, "1MB");
        let (db, slot, publication) = fixture(&cluster, "resnapshot");
        db.psql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 5) g")
            .unwrap();
        block_on(async {
            let stream = LogicalReplicationStream::connect(
                &db.conninfo(),
                config(&slot, &publication)
                    .retry(
                        RetryPolicy::default()
                            .backoff(Duration::from_millis(100), Duration::from_millis(100))
                            .max_attempts(Some(100)),
                    )
                    .slot_recovery(SlotRecovery::resnapshot(1))
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
            let mut events = stream.start();
            // Rows written while the slot is being lost are lost with it; the snapshot has them.
            db.psql("INSERT INTO t SELECT g, 'meanwhile' FROM generate_series(6, 8) g")
                .unwrap();
            lose(&db, &slot);
            let mut kinds = Vec::new();
            let mut snapshot_rows = Vec::new();
            loop {
                let e = next(&mut events, 60)
                    .await
                    .unwrap()
                    .expect("the stream ended");
                match &e.kind {
                    EventKind::Resnapshot { reason } => {
                        assert_eq!(*reason, InvalidationReason::WalRemoved);
                        kinds.push("resnapshot");
                    }
                    EventKind::SnapshotBegin { .. } => kinds.push("begin"),
                    EventKind::Insert(i) if kinds.contains(&"begin") => {
                        snapshot_rows.push(id(&i.new));
                    }
                    EventKind::SnapshotEnd { .. } => {
                        kinds.push("end");
                        break;
                    }
                    _ => {}
                }
            }
            assert_eq!(kinds, ["resnapshot", "begin", "end"]);
            snapshot_rows.sort_unstable();
            assert_eq!(snapshot_rows, (1..=8).collect::<Vec<i32>>());
            assert_eq!(wal_status(&db, &slot), "reserved");

            // The stream goes on from the new slot.
            db.psql("INSERT INTO t VALUES (100, 'after')").unwrap();
            loop {
                let e = next(&mut events, 30)
                    .await
                    .unwrap()
                    .expect("the stream ended");
                if let EventKind::Insert(i) = &e.kind {
                    assert_eq!(id(&i.new), 100);
                    break;
                }
            }

            // A second loss within the hour is past the policy's limit of one.
            lose(&db, &slot);
            let error = loop {
                match next(&mut events, 60).await {
                    Ok(Some(e)) => assert!(!matches!(e.kind, EventKind::Resnapshot { .. })),
                    Ok(None) => panic!("the stream ended without an error"),
                    Err(e) => break e,
                }
            };
            assert_lost(&error, &slot);
            assert!(error.to_string().contains("limit of 1"), "{error}");
        });
    });
}

/// PostgreSQL 18's `idle_replication_slot_timeout` (at least a minute): a slot left inactive
/// past it is invalidated at the next checkpoint, and the stream ends naming `idle_timeout`.
/// The minute is waited out, so this test takes about 65 s.
#[test]
fn an_idle_slot_past_its_timeout_ends_the_stream_naming_idle_timeout() {
    pgtest::for_each_installed_major(18, |major| {
        let cluster = pgtest::Config::new(major)
            .setting("idle_replication_slot_timeout", "1min")
            .start()
            .unwrap();
        let (db, slot, publication) = fixture(&cluster, "idle_slot");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            std::thread::sleep(Duration::from_secs(5));
            db.psql("CHECKPOINT").unwrap();
            if wal_status(&db, &slot) == "lost" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the idle slot was not invalidated"
            );
        }
        let reason = db
            .psql(&format!(
                "SELECT invalidation_reason FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ))
            .unwrap();
        assert_eq!(reason, "idle_timeout");
        block_on(async {
            let result = LogicalReplicationStream::connect(
                &db.conninfo(),
                config(&slot, &publication).build().unwrap(),
            )
            .await;
            let error = match result {
                Err(e) => e,
                Ok(stream) => {
                    let mut events = stream.start();
                    loop {
                        match next(&mut events, 30).await {
                            Ok(Some(_)) => {}
                            Ok(None) => panic!("the stream ended without an error"),
                            Err(e) => break e,
                        }
                    }
                }
            };
            assert_eq!(error.kind(), ErrorKind::SlotInvalidated, "{error}");
            assert_eq!(
                error.invalidation_reason(),
                Some(&InvalidationReason::IdleTimeout),
                "{error}"
            );
            assert!(error.to_string().contains("idle_timeout"), "{error}");
        });
    });
}

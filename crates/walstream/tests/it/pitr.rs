//! Point-in-time recovery from what walstream produced: a base backup taken with the backup API
//! (no WAL in it) and the WAL received with the physical stream into a directory, restored by
//! PostgreSQL's archive recovery to a chosen position, has exactly the data the source had
//! there; restored to the end of the received WAL, it has what came after too.

use std::path::Path;
use std::time::{Duration, Instant};

use pgtest::{Cluster, Recovery};
use walstream::backup::{self, BaseBackupConfig, PlainWriter, WalMethod};
use walstream::physical::{PhysicalReplicationStream, PhysicalStreamConfig, WalStream, WalWriter};
use walstream::{Lsn, RetryPolicy};

use crate::block_on;

/// The physical slot that keeps the WAL from before the backup until it has been received.
const SLOT: &str = "pitr_wal";

/// The database of the test's tables.
const DB: &str = "pitr";

/// What the test compares: the marker rows (`id:phase`, in id order) and the write load's
/// table (its row count and the md5 of its rows in id order).
const CONTENTS: &str =
    "SELECT (SELECT coalesce(string_agg(id || ':' || phase, ',' ORDER BY id), '')
                                FROM marks),
                               (SELECT count(*) || ' ' || md5(coalesce(string_agg(id || payload, ','
                                                                      ORDER BY id), ''))
                                FROM load)";

fn lsn(cluster: &Cluster, sql: &str) -> Lsn {
    cluster.psql(DB, sql).unwrap().parse().unwrap()
}

/// Reads WAL into `writer`, acknowledging what is durable, until it has reached `end`;
/// fails after 60 s.
async fn receive_until(wal: &mut WalStream, writer: &mut WalWriter, end: Lsn) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while writer.position() < end {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, wal.next_event())
            .await
            .unwrap_or_else(|_| panic!("timed out at {} waiting for {end}", writer.position()))
            .unwrap()
            .expect("the WAL stream ended");
        // Blocking file I/O, off the runtime's worker.
        let durable = tokio::task::block_in_place(|| {
            writer.apply(&event)?;
            writer.flush()
        })
        .unwrap();
        wal.ack(durable);
    }
}

/// The complete segment files of `dir` (24 hexadecimal digits), sorted.
fn complete_segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    names.sort();
    names
}

#[test]
fn a_backup_and_received_wal_restore_to_a_chosen_position() {
    pgtest::for_each_installed_major(15, |major| {
        let primary = pgtest::Config::primary(major).start().unwrap();
        let db = primary.create_database(DB).unwrap();
        db.psql(&format!(
            "CREATE TABLE marks (id int PRIMARY KEY, phase text);
             SELECT pg_create_physical_replication_slot('{SLOT}', true);"
        ))
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (backup_dir, wal_dir) = (tmp.path().join("backup"), tmp.path().join("wal"));
        std::fs::create_dir(&wal_dir).unwrap();
        let load = pgtest::WriteLoad::start(&primary, DB, "load").unwrap();

        let (target, before, after) = block_on(async {
            // The WAL stream first, from the slot reserved before the backup starts: it covers
            // the backup's checkpoint.
            let stream = PhysicalReplicationStream::connect(
                &primary.conninfo("postgres"),
                PhysicalStreamConfig::builder()
                    .slot(SLOT)
                    .status_interval(Duration::from_millis(200))
                    .retry(
                        RetryPolicy::default()
                            .backoff(Duration::from_millis(50), Duration::from_millis(500))
                            .max_attempts(Some(200)),
                    )
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
            let mut writer = WalWriter::open(
                &wal_dir,
                stream.segment_size(),
                stream.timeline(),
                stream.start_lsn(),
            )
            .unwrap();
            let mut wal = stream.start();

            // The backup, while the load writes, without WAL: it comes from the directory.
            while load.committed() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let config = BaseBackupConfig {
                wal: WalMethod::None,
                ..BaseBackupConfig::default()
            };
            let summary = PlainWriter::new(&backup_dir)
                .write(backup::start(&db.conninfo(), config).await.unwrap())
                .await
                .unwrap();
            let committed = load.stop().unwrap();
            assert!(committed > 0, "the load wrote during the backup");

            // Rows committed one by one, then the target: the insert position after the last
            // commit. With no other writer, the first record at or past it belongs to the
            // first change after it, which recovery replays (the target is inclusive) but
            // whose commit it does not.
            db.psql(
                "INSERT INTO marks VALUES (1, 'before');
                 INSERT INTO marks VALUES (2, 'before');
                 UPDATE marks SET phase = 'before, updated' WHERE id = 2;
                 INSERT INTO marks VALUES (3, 'before');
                 INSERT INTO load (payload) VALUES ('before the target');",
            )
            .unwrap();
            let target = lsn(&primary, "SELECT pg_current_wal_insert_lsn()");
            let before = db.query(CONTENTS).unwrap();
            assert!(
                target > summary.end,
                "{target} before the backup's end {summary:?}"
            );

            // Changes after the target, in their own transactions: inserts, an update, a
            // delete; then a segment switch, so that the received complete segments hold them.
            db.psql(
                "INSERT INTO marks VALUES (4, 'after');
                 UPDATE marks SET phase = 'after' WHERE id = 1;
                 DELETE FROM marks WHERE id = 3;
                 INSERT INTO load (payload) VALUES ('after the target');
                 INSERT INTO marks VALUES (5, 'after');",
            )
            .unwrap();
            let after = db.query(CONTENTS).unwrap();
            db.psql("SELECT pg_switch_wal()").unwrap();
            let end = lsn(&primary, "SELECT pg_current_wal_flush_lsn()");
            receive_until(&mut wal, &mut writer, end).await;
            wal.shutdown().await.unwrap();
            writer.close().unwrap();
            (target, before, after)
        });
        println!(
            "  PostgreSQL {major}: target {target}, received {:?}",
            complete_segments(&wal_dir)
        );
        assert_ne!(
            before, after,
            "the changes after the target change the contents"
        );
        assert_eq!(before[0][0], "1:before,2:before, updated,3:before");

        // Restored to the target: exactly what was committed before it.
        let restored = Cluster::from_data_dir(
            major,
            &backup_dir,
            &Recovery::none()
                .archive(&wal_dir)
                .target_lsn(&target.to_string()),
        )
        .unwrap();
        restored.wait_out_of_recovery().unwrap();
        assert_eq!(restored.query(DB, CONTENTS).unwrap(), before, "at {target}");
        drop(restored);

        // Restored to the end of the received WAL: the changes after the target are there,
        // so the first restore stopped at the target, not at the end of what it was given.
        let restored =
            Cluster::from_data_dir(major, &backup_dir, &Recovery::none().archive(&wal_dir))
                .unwrap();
        restored.wait_out_of_recovery().unwrap();
        assert_eq!(restored.query(DB, CONTENTS).unwrap(), after, "at the end");
    });
}

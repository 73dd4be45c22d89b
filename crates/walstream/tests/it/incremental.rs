//! Live tests of incremental backups (PostgreSQL 17+): UPLOAD_MANIFEST, INCREMENTAL, combining.
//!
//! A full backup and two incremental backups of a cluster with `summarize_wal = on`, taken
//! with [`backup::start`] and [`PlainWriter`] while the data changes in between (updates,
//! deletes, inserts that extend a table, a table that `VACUUM` truncates, a dropped table and
//! a new one), are combined with [`combine`]; PostgreSQL must start on the result and hold the
//! source's data as it was at the last backup (no writes after it).

use std::path::{Path, PathBuf};

use pgtest::{Cluster, Recovery};
use walstream::backup::combine::combine;
use walstream::backup::{self, BaseBackupConfig, PlainWriter};
use walstream::ErrorKind;

use crate::block_on;

/// Takes a plain backup of `cluster` into `dir`, incremental from the manifest of the backup
/// in `from` when given.
fn take_backup(cluster: &Cluster, dir: &Path, from: Option<&Path>) {
    let config = BaseBackupConfig {
        label: Some(format!("incremental test {}", dir.display())),
        incremental_from: from
            .map(|from| std::fs::read(from.join("backup_manifest")).unwrap().into()),
        ..BaseBackupConfig::default()
    };
    block_on(async {
        let stream = backup::start(&cluster.conninfo("postgres"), config)
            .await
            .unwrap();
        PlainWriter::new(dir).write(stream).await.unwrap();
    });
}

/// Whether any file under `dir` is named `INCREMENTAL.*`.
fn has_incremental_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            has_incremental_files(&path)
        } else {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("INCREMENTAL.")
        }
    })
}

#[test]
fn a_full_and_two_incremental_backups_combine_into_a_directory_that_starts_with_the_data() {
    pgtest::for_each_installed_major(17, |major| {
        let source = pgtest::Config::new(major)
            .setting("summarize_wal", "on")
            .start()
            .unwrap();
        source
            .psql(
                "postgres",
                "CREATE TABLE t (id int PRIMARY KEY, v text);
                 INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
                 CREATE TABLE shrinks WITH (autovacuum_enabled = off) AS
                   SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 30000) g;
                 CREATE TABLE dropped AS SELECT g FROM generate_series(1, 1000) g;
                 CREATE TABLE untouched AS SELECT g FROM generate_series(1, 5000) g;",
            )
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        let dir = |name: &str| -> PathBuf { root.path().join(name) };
        let shrinks_blocks = |c: &Cluster| -> u64 {
            let sql = "SELECT pg_relation_size('shrinks') / current_setting('block_size')::int";
            c.psql("postgres", sql).unwrap().parse().unwrap()
        };
        let full_blocks = shrinks_blocks(&source);
        take_backup(&source, &dir("full"), None);

        source
            .psql(
                "postgres",
                "UPDATE t SET v = 'changed' WHERE id % 97 = 0;
                 DELETE FROM t WHERE id BETWEEN 5000 AND 5100;
                 INSERT INTO t SELECT g, 'new' FROM generate_series(20001, 40000) g;
                 DELETE FROM shrinks WHERE g > 2000;
                 VACUUM shrinks;
                 DROP TABLE dropped;",
            )
            .unwrap();
        assert!(
            shrinks_blocks(&source) < full_blocks,
            "VACUUM truncated the file: the incremental file's truncation length is shorter"
        );
        take_backup(&source, &dir("incr1"), Some(&dir("full")));
        assert!(
            has_incremental_files(&dir("incr1")),
            "the backup is incremental"
        );

        source
            .psql(
                "postgres",
                "UPDATE t SET v = 'again' WHERE id % 89 = 0;
                 INSERT INTO t SELECT g, 'newer' FROM generate_series(40001, 45000) g;
                 CREATE TABLE created AS SELECT g FROM generate_series(1, 3000) g;",
            )
            .unwrap();
        take_backup(&source, &dir("incr2"), Some(&dir("incr1")));
        // No writes after the last backup: the source now is what the combined directory holds
        // (autovacuum is off for `shrinks`, whose size is compared).

        // Skipping a backup of the chain is refused, and leaves nothing behind.
        let err = combine(&[dir("full"), dir("incr2")], &dir("broken")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BackupChain, "{err}");
        assert!(!dir("broken").exists());

        let chain = [dir("full"), dir("incr1"), dir("incr2")];
        let summary = combine(&chain, &dir("combined")).unwrap();
        println!("{summary:?}");
        assert!(summary.files_reconstructed > 0, "{summary:?}");
        assert!(summary.blocks_written > 0, "{summary:?}");
        assert!(!has_incremental_files(&dir("combined")));
        let label = std::fs::read_to_string(dir("combined").join("backup_label")).unwrap();
        assert!(!label.contains("INCREMENTAL"), "{label}");

        let restored = Cluster::from_data_dir(major, &dir("combined"), &Recovery::none()).unwrap();
        pgtest::compare_databases(&source, &restored, "postgres").unwrap();
        assert_eq!(shrinks_blocks(&restored), shrinks_blocks(&source));
        let count = |c: &Cluster, sql: &str| c.psql("postgres", sql).unwrap();
        for sql in [
            "SELECT count(*), sum(length(v)) FROM t",
            "SELECT count(*) FROM shrinks",
            "SELECT to_regclass('dropped') IS NULL",
        ] {
            assert_eq!(count(&restored, sql), count(&source, sql), "{sql}");
        }
        // The database is sound, not only its tables' text: indexes agree with their tables.
        assert_eq!(
            count(
                &restored,
                "SET enable_seqscan = off; SELECT count(*) FROM t WHERE id > 0"
            ),
            count(&source, "SELECT count(*) FROM t")
        );
    });
}

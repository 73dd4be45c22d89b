//! Live tests of the primary + standby harness, on every installed major.

use std::path::PathBuf;
use std::time::Duration;

use pgtest::{
    compare_databases, wait_caught_up, wait_caught_up_within, Cluster, Config, Recovery, WriteLoad,
};

use crate::eventually;

/// A fresh directory path under the pgtest root (not created), removed by the caller.
fn scratch_dir(name: &str) -> PathBuf {
    pgtest::root_dir().join(pgtest::unique_name(name))
}

#[test]
fn a_standby_catches_up_and_compares_equal_under_a_write_load() {
    pgtest::for_each_installed_major(15, |major| {
        let primary = Config::primary(major).start().unwrap();
        let db = primary.create_database("standby_load").unwrap();
        db.psql(
            "CREATE TABLE fixed (a int PRIMARY KEY, b text);\n\
             INSERT INTO fixed SELECT g, g::text FROM generate_series(1, 1000) g",
        )
        .unwrap();
        let load = WriteLoad::start(&primary, "standby_load", "load").unwrap();
        assert!(eventually(30, || load.committed() >= 50), "no rows written");
        let standby = primary
            .standby_with(&Recovery::none().setting("cluster_name", "load_standby"))
            .unwrap();
        assert!(standby.is_in_recovery().unwrap());
        assert_ne!(standby.port(), primary.port());
        assert_ne!(standby.socket_dir(), primary.socket_dir());
        let before = load.committed();
        assert!(
            eventually(30, || load.committed() >= before + 50),
            "the load stalled"
        );
        let rows = load.stop().unwrap();
        wait_caught_up(&primary, &standby).unwrap();
        compare_databases(&primary, &standby, "standby_load").unwrap();
        let on_standby = standby
            .psql("standby_load", "SELECT count(*) FROM load")
            .unwrap();
        assert_eq!(on_standby, rows.to_string());
        // It streams: the primary sees its WAL receiver, named after its cluster_name.
        let senders = primary
            .psql(
                "postgres",
                "SELECT string_agg(application_name, ',') FROM pg_stat_replication",
            )
            .unwrap();
        assert_eq!(senders, "load_standby");
    });
}

#[test]
fn wait_caught_up_reports_a_standby_that_lags() {
    pgtest::for_each_installed_major(15, |major| {
        let primary = Config::primary(major).start().unwrap();
        let db = primary.create_database("standby_lag").unwrap();
        let standby = primary.standby().unwrap();
        wait_caught_up(&primary, &standby).unwrap();
        standby
            .psql("postgres", "SELECT pg_wal_replay_pause()")
            .unwrap();
        db.psql("CREATE TABLE t AS SELECT 1 AS a").unwrap();
        let err = wait_caught_up_within(&primary, &standby, Duration::from_secs(2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has not caught up"), "{err}");
        assert!(err.contains("WAL receiver streaming"), "{err}");
        standby
            .psql("postgres", "SELECT pg_wal_replay_resume()")
            .unwrap();
        wait_caught_up(&primary, &standby).unwrap();
        compare_databases(&primary, &standby, "standby_lag").unwrap();
    });
}

#[test]
fn promotion_moves_the_standby_to_timeline_2_and_it_accepts_writes() {
    pgtest::for_each_installed_major(15, |major| {
        let primary = Config::primary(major).start().unwrap();
        let db = primary.create_database("standby_promote").unwrap();
        db.psql("CREATE TABLE t (a int)").unwrap();
        let standby = primary.standby_with_slot("promote_slot").unwrap();
        assert!(
            eventually(30, || primary
                .psql(
                    "postgres",
                    "SELECT active FROM pg_replication_slots WHERE slot_name = 'promote_slot'"
                )
                .unwrap()
                == "t"),
            "the standby does not use its slot"
        );
        db.psql("INSERT INTO t VALUES (1)").unwrap();
        wait_caught_up(&primary, &standby).unwrap();
        assert_eq!(standby.timeline().unwrap(), 1);
        assert!(standby
            .psql("standby_promote", "INSERT INTO t VALUES (2)")
            .is_err());
        standby.promote().unwrap();
        assert!(!standby.is_in_recovery().unwrap());
        assert_eq!(standby.timeline().unwrap(), 2);
        standby
            .psql("standby_promote", "INSERT INTO t VALUES (2)")
            .unwrap();
        assert_eq!(
            standby
                .psql(
                    "standby_promote",
                    "SELECT string_agg(a::text, ',' ORDER BY a) FROM t"
                )
                .unwrap(),
            "1,2"
        );
    });
}

#[test]
fn from_data_dir_starts_on_a_cold_copy() {
    pgtest::for_each_installed_major(15, |major| {
        let primary = Config::primary(major).start().unwrap();
        let db = primary.create_database("standby_cold").unwrap();
        db.psql("CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 100) g")
            .unwrap();
        let dir = scratch_dir("cold_copy");
        primary.cold_copy(&dir).unwrap();
        // The primary runs again, on its port.
        db.psql("INSERT INTO t VALUES (101)").unwrap();
        let copy = Cluster::from_data_dir(major, &dir, &Recovery::none());
        std::fs::remove_dir_all(&dir).unwrap();
        let copy = copy.unwrap();
        assert_ne!(copy.port(), primary.port());
        assert!(!copy.is_in_recovery().unwrap());
        assert_eq!(
            copy.psql("standby_cold", "SELECT count(*) FROM t").unwrap(),
            "100"
        );
    });
}

#[test]
fn from_data_dir_starts_alone_on_a_hot_copy_taken_under_a_write_load() {
    pgtest::for_each_installed_major(15, |major| {
        let primary = Config::primary(major).start().unwrap();
        let fixed = primary.create_database("hot_copy_fixed").unwrap();
        fixed
            .psql("CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 1000) g")
            .unwrap();
        primary.create_database("hot_copy_load").unwrap();
        let load = WriteLoad::start(&primary, "hot_copy_load", "load").unwrap();
        assert!(eventually(30, || load.committed() >= 50), "no rows written");
        let before = load.committed();
        let dir = scratch_dir("hot_copy");
        primary.hot_copy(&dir).unwrap();
        let after = load.committed();
        let rows = load.stop().unwrap();
        assert!(dir.join("backup_label").exists());
        let copy = Cluster::from_data_dir(major, &dir, &Recovery::none());
        std::fs::remove_dir_all(&dir).unwrap();
        let copy = copy.unwrap();
        assert!(!copy.is_in_recovery().unwrap());
        compare_databases(&primary, &copy, "hot_copy_fixed").unwrap();
        let copied: u64 = copy
            .psql("hot_copy_load", "SELECT count(*) FROM load")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (before..=after + 10).contains(&copied),
            "{copied} rows copied, {before} committed before the copy, {after} after, {rows} in all"
        );
    });
}

#[test]
fn from_data_dir_makes_a_standby_of_a_cold_copy() {
    pgtest::for_each_installed_major(15, |major| {
        let primary = Config::primary(major).start().unwrap();
        let db = primary.create_database("standby_of_copy").unwrap();
        db.psql("CREATE TABLE t (a int)").unwrap();
        primary
            .psql(
                "postgres",
                "SELECT pg_create_physical_replication_slot('copy_slot', true)",
            )
            .unwrap();
        let dir = scratch_dir("standby_copy");
        primary.cold_copy(&dir).unwrap();
        db.psql("INSERT INTO t VALUES (1)").unwrap();
        let standby = Cluster::from_data_dir(
            major,
            &dir,
            &Recovery::standby_of(&primary).slot("copy_slot"),
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let standby = standby.unwrap();
        assert!(standby.is_in_recovery().unwrap());
        wait_caught_up(&primary, &standby).unwrap();
        assert_eq!(
            standby
                .psql("standby_of_copy", "SELECT count(*) FROM t")
                .unwrap(),
            "1"
        );
        let conninfo = standby.psql("postgres", "SHOW primary_conninfo").unwrap();
        assert!(conninfo.contains("dbname=postgres"), "{conninfo}");
        compare_databases(&primary, &standby, "standby_of_copy").unwrap();
    });
}

#[test]
fn from_data_dir_recovers_to_a_target_lsn_from_archived_wal() {
    pgtest::for_each_installed_major(15, |major| {
        let primary = Config::primary(major).start().unwrap();
        let db = primary.create_database("standby_pitr").unwrap();
        db.psql("CREATE TABLE t (a int)").unwrap();
        let base = scratch_dir("pitr_base");
        primary.cold_copy(&base).unwrap();
        db.psql("INSERT INTO t VALUES (1)").unwrap();
        let target = db.psql("SELECT pg_current_wal_insert_lsn()").unwrap();
        db.psql("INSERT INTO t VALUES (2)").unwrap();
        primary.psql("postgres", "SELECT pg_switch_wal()").unwrap();
        // The archive: the primary's completed segments.
        let archive = scratch_dir("pitr_archive");
        std::fs::create_dir(&archive).unwrap();
        for entry in std::fs::read_dir(primary.data_dir().join("pg_wal")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), archive.join(entry.file_name())).unwrap();
            }
        }
        // Without its pg_wal the base needs the archive.
        for entry in std::fs::read_dir(base.join("pg_wal")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        let restored = Cluster::from_data_dir(
            major,
            &base,
            &Recovery::none().archive(&archive).target_lsn(&target),
        );
        std::fs::remove_dir_all(&base).unwrap();
        std::fs::remove_dir_all(&archive).unwrap();
        let restored = restored.unwrap();
        restored.wait_out_of_recovery().unwrap();
        assert_eq!(
            restored
                .psql("standby_pitr", "SELECT string_agg(a::text, ',') FROM t")
                .unwrap(),
            "1"
        );
    });
}

#[test]
fn compare_databases_names_the_table_that_differs() {
    pgtest::for_each_installed_major(15, |major| {
        let primary = Config::primary(major).start().unwrap();
        let db = primary.create_database("standby_compare").unwrap();
        db.psql(
            "CREATE TABLE alpha AS SELECT g AS a FROM generate_series(1, 10) g;\n\
             CREATE TABLE \"Beta\" AS SELECT g AS b, g::text AS c FROM generate_series(1, 10) g;\n\
             CREATE TABLE gamma AS SELECT g AS a FROM generate_series(1, 10) g;",
        )
        .unwrap();
        let standby = primary.standby().unwrap();
        wait_caught_up(&primary, &standby).unwrap();
        compare_databases(&primary, &standby, "standby_compare").unwrap();
        standby.promote().unwrap();
        standby
            .psql(
                "standby_compare",
                "UPDATE \"Beta\" SET c = 'changed' WHERE b = 5",
            )
            .unwrap();
        let err = compare_databases(&primary, &standby, "standby_compare")
            .unwrap_err()
            .to_string();
        assert!(err.contains("table public.\"Beta\" differs"), "{err}");
        // Same row count, different contents; and a missing table is named too.
        standby
            .psql(
                "standby_compare",
                "UPDATE \"Beta\" SET c = b::text; DROP TABLE gamma",
            )
            .unwrap();
        let err = compare_databases(&primary, &standby, "standby_compare")
            .unwrap_err()
            .to_string();
        assert!(err.contains("table public.gamma differs"), "{err}");
    });
}

//! `walstream basebackup` against real servers: the files `pg_basebackup` writes (compared with
//! PostgreSQL 15's own tool), `pg_verifybackup`, a standby started from the backup on every
//! major, tar output, slots, progress and exit codes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use pgtest::{compare_databases, wait_caught_up, Cluster, Recovery, WriteLoad};

use crate::record::bin;

/// Runs `walstream basebackup ARGS`; returns the exit code and stderr.
fn basebackup(args: &[&str]) -> (i32, String) {
    let out = bin().arg("basebackup").args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every path under `dir`, relative, with `/` for directories.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn primary(major: u32) -> Cluster {
    pgtest::Config::primary(major).start().unwrap()
}

/// On PostgreSQL 15: the same files as pg_basebackup's with the same options (the WAL
/// segments aside, which depend on when each backup ran), and pg_verifybackup accepts ours.
#[test]
fn basebackup_writes_what_pg_basebackup_writes() {
    let Some(bin_dir) = pgtest::bin_dir(15) else {
        panic!("PostgreSQL 15 (with pg_basebackup) is needed for this test");
    };
    let cluster = primary(15);
    cluster
        .psql(
            "postgres",
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g",
        )
        .unwrap();
    let conninfo = cluster.conninfo("postgres");
    let work = tempfile::tempdir().unwrap();
    for format in ["plain", "tar"] {
        let ours = work.path().join(format!("ours-{format}"));
        let theirs = work.path().join(format!("theirs-{format}"));
        let (code, stderr) = basebackup(&[
            &conninfo,
            "-D",
            ours.to_str().unwrap(),
            "-F",
            format,
            "-X",
            "stream",
            "-c",
            "fast",
        ]);
        assert_eq!(code, 0, "{format}: {stderr}");
        let out = Command::new(bin_dir.join("pg_basebackup"))
            .args(["-d", &conninfo, "-D"])
            .arg(&theirs)
            .args(["-F", format, "-X", "stream", "-c", "fast", "-w"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let without_wal = |dir: &Path| -> BTreeSet<String> {
            tree(dir)
                .into_iter()
                .filter(|p| !p.starts_with("pg_wal/") || p.ends_with("archive_status/"))
                .collect()
        };
        assert_eq!(
            without_wal(&ours),
            without_wal(&theirs),
            "{format}: the same files"
        );
        if format == "plain" {
            let out = Command::new(bin_dir.join("pg_verifybackup"))
                .arg(&ours)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "pg_verifybackup: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            // The server's archives, the streamed WAL in pg_wal.tar, the manifest.
            for name in ["base.tar", "pg_wal.tar", "backup_manifest"] {
                assert!(ours.join(name).is_file(), "{name}");
            }
            let members = Command::new("tar")
                .arg("-tf")
                .arg(ours.join("pg_wal.tar"))
                .output()
                .unwrap();
            let members = String::from_utf8(members.stdout).unwrap();
            assert!(members.lines().any(|l| l.len() == 24), "{members}");
        }
    }
}

/// On every major: a plain backup under a write load with `-R -S -C`, started as a standby of
/// the original through the slot it created, catches up and has the primary's tables; a tar
/// backup has the archives; `-P` reports progress; the exit codes.
#[test]
fn a_backup_starts_as_a_standby_on_every_major() {
    pgtest::for_each_installed_major(15, |major| {
        let cluster = primary(major);
        let load = WriteLoad::start(&cluster, "postgres", "load").unwrap();
        let conninfo = cluster.conninfo("postgres");
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("standby");
        let (code, stderr) = basebackup(&[
            &conninfo,
            "-D",
            dir.to_str().unwrap(),
            "-R",
            "-S",
            "standby1",
            "-C",
            "-P",
            "--manifest-checksums",
            "sha256",
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains(" kB ("), "progress on stderr: {stderr}");
        assert!(stderr.contains("base backup completed"), "{stderr}");
        let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
        assert!(auto.contains("primary_conninfo = '"), "{auto}");
        assert!(auto.contains("primary_slot_name = 'standby1'"), "{auto}");
        assert!(dir.join("standby.signal").is_file());
        let manifest = std::fs::read_to_string(dir.join("backup_manifest")).unwrap();
        assert!(manifest.contains("\"Checksum-Algorithm\": \"SHA256\""));
        // The slot outlives the backup and holds WAL for the standby.
        let slot = cluster
            .query(
                "postgres",
                "SELECT restart_lsn IS NOT NULL FROM pg_replication_slots WHERE slot_name = 'standby1'",
            )
            .unwrap();
        assert_eq!(slot, vec![vec!["t".to_owned()]]);

        // -R's settings point at the primary: the copy becomes its standby as it is.
        let standby = Cluster::from_data_dir(major, &dir, &Recovery::none()).unwrap();
        let committed = load.stop().unwrap();
        assert!(committed > 0);
        wait_caught_up(&cluster, &standby).unwrap();
        compare_databases(&cluster, &standby, "postgres").unwrap();
        let active = cluster
            .query(
                "postgres",
                "SELECT active FROM pg_replication_slots WHERE slot_name = 'standby1'",
            )
            .unwrap();
        assert_eq!(
            active,
            vec![vec!["t".to_owned()]],
            "the standby streams through the slot"
        );
        drop(standby);

        let tar = work.path().join("tar");
        let (code, stderr) =
            basebackup(&[&conninfo, "-D", tar.to_str().unwrap(), "-Ft", "-Xfetch"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(tar.join("base.tar").is_file() && tar.join("backup_manifest").is_file());
        assert!(
            !tar.join("pg_wal.tar").exists(),
            "-X fetch puts the WAL in base.tar"
        );

        // Exit codes: a missing slot 5, a non-empty directory 2, a bad rate 2.
        let missing = work.path().join("missing");
        let (code, stderr) = basebackup(&[
            &conninfo,
            "-D",
            missing.to_str().unwrap(),
            "-S",
            "no_such_slot",
        ]);
        assert_eq!(code, 5, "{stderr}");
        assert!(
            !missing.exists(),
            "a failed backup leaves no directory behind"
        );
        let (code, stderr) = basebackup(&[&conninfo, "-D", tar.to_str().unwrap()]);
        assert_eq!(code, 2, "{stderr}");
        let (code, stderr) = basebackup(&[&conninfo, "-D", "/tmp/x", "-r", "10"]);
        assert_eq!(code, 2, "{stderr}");
        let (code, stderr) = basebackup(&[&conninfo, "-D", "/tmp/x", "-S", "s", "-X", "fetch"]);
        assert_eq!(code, 2, "{stderr}");
        if major < 17 {
            let manifest = dir.join("backup_manifest");
            let (code, stderr) = basebackup(&[
                &conninfo,
                "-D",
                missing.to_str().unwrap(),
                "-i",
                manifest.to_str().unwrap(),
            ]);
            assert_eq!(code, 2, "incremental before 17: {stderr}");
        }
    });
}

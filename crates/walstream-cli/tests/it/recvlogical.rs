//! pg_recvlogical's options on `tail` and `record` against real servers: `-f FILE` with
//! `-F SECS` (the slot never passes what the file holds), `--no-loop`, `--create-slot` with and
//! without `--if-not-exists`, and comma-separated publication lists.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::record::{bin, confirmed_flush, lsn, setup};

/// The end LSN of the last commit line in `path` (0 when there is none yet).
fn last_commit_end(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        // A line being written may be cut short: only whole lines count.
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "commit")
        .map(|v| lsn(v["end_lsn"].as_str().unwrap()))
        .max()
        .unwrap_or(0)
}

fn interrupt(child: std::process::Child) -> std::process::Output {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}

#[test]
fn tail_file_acknowledges_only_what_was_fsynced() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot) = setup(cluster, "tail_file");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        let child = bin()
            .args([
                "tail",
                &db.conninfo(),
                "--slot",
                &slot,
                "--publication",
                "p",
            ])
            .args(["--status-interval", "1", "-F", "2", "-f"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last_insert_end = 0;
        // Where each insert's commit ended, at most (the WAL position right after it).
        let mut insert_ends = Vec::new();
        let mut acked_later = false;
        for i in 0..40 {
            if i < 20 {
                db.psql(&format!("INSERT INTO t VALUES ({i}, 'v')"))
                    .unwrap();
                last_insert_end = lsn(&db.query("SELECT pg_current_wal_lsn()").unwrap()[0][0]);
                insert_ends.push(last_insert_end);
            }
            // The slot first, then the file: the file only grows, so every transaction the
            // slot has passed must be in what the file holds afterwards. (The slot may pass
            // the file's last commit: idle and with everything acknowledged, the stream
            // reports a keepalive's position, which other databases' WAL moves on.)
            let acked = lsn(&confirmed_flush(&db, &slot));
            let in_file = last_commit_end(&file);
            let passed = insert_ends.iter().filter(|&&end| end <= acked).count();
            let written = inserts_in(&file);
            assert!(
                written >= passed,
                "the slot is at {acked:X}, past {passed} inserts, but the file holds {written} \
                 (its last commit ends at {in_file:X})"
            );
            if i >= 20 && in_file >= last_insert_end && acked >= in_file {
                acked_later = true;
                break;
            }
            assert!(Instant::now() < deadline, "no acknowledgement in time");
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(acked_later, "the fsynced file was never acknowledged");
        let out = interrupt(child);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "lines went to stdout with -f");
        assert_eq!(inserts_in(&file), 20);
        // Everything in the file is acknowledged in the end.
        assert!(lsn(&confirmed_flush(&db, &slot)) >= last_commit_end(&file));
    });
}

/// How many insert lines `file` holds.
fn inserts_in(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"type\":\"insert\""))
        .count()
}

#[test]
fn create_slot_fails_on_an_existing_slot_unless_if_not_exists() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot) = setup(cluster, "if_not_exists");
        db.psql("INSERT INTO t VALUES (1, 'one')").unwrap();
        let end = db.query("SELECT pg_current_wal_lsn()").unwrap()[0][0].clone();
        let dir = tempfile::tempdir().unwrap();
        for command in ["tail", "record"] {
            let mut args = vec![command, "--create-slot", "--end", end.as_str()];
            let capture = dir.path().join(format!("{command}.walcap"));
            let capture = capture.to_str().unwrap();
            if command == "record" {
                args.extend(["--out", capture]);
            }
            let run = bin()
                .args(&args)
                .args([&db.conninfo(), "--slot", &slot, "--publication", "p"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert_eq!(run.status.code(), Some(4), "{command}: {stderr}");
            assert!(stderr.contains("already exists"), "{command}: {stderr}");
            assert_eq!(
                stderr
                    .lines()
                    .filter(|l| l.contains("already exists"))
                    .count(),
                1,
                "{command}: the error said more than once: {stderr}"
            );
            args.push("--if-not-exists");
            let run = bin()
                .args(&args)
                .args([&db.conninfo(), "--slot", &slot, "--publication", "p"])
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "{command} --if-not-exists: {}",
                String::from_utf8_lossy(&run.stderr)
            );
        }
    });
}

#[test]
fn no_loop_exits_4_on_the_first_connection_loss() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot) = setup(cluster, "no_loop");
        let child = bin()
            .args([
                "tail",
                &db.conninfo(),
                "--slot",
                &slot,
                "--publication",
                "p",
            ])
            .arg("--no-loop")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let killed = db
                .query(&format!(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                     WHERE slot_name = '{slot}' AND active_pid IS NOT NULL"
                ))
                .unwrap();
            if killed.first().is_some_and(|r| r[0] == "t") {
                break;
            }
            assert!(Instant::now() < deadline, "tail never started streaming");
            std::thread::sleep(Duration::from_millis(100));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
        let out = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("tail --no-loop went on after the connection was lost");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{stderr}");
        assert!(!stderr.contains("reconnect"), "{stderr}");
    });
}

#[test]
fn comma_separated_publications() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot) = setup(cluster, "pub_list");
        db.psql(
            "CREATE TABLE u (id int PRIMARY KEY);
             CREATE PUBLICATION q FOR TABLE u;
             INSERT INTO t VALUES (1, 'one');
             INSERT INTO u VALUES (2);",
        )
        .unwrap();
        let end = db.query("SELECT pg_current_wal_lsn()").unwrap()[0][0].clone();
        let run = bin()
            .args([
                "tail",
                &db.conninfo(),
                "--slot",
                &slot,
                "--publication",
                "p,q",
            ])
            .args(["--end", &end])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let tables: Vec<String> = String::from_utf8(run.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["type"] == "relation")
            .map(|v| v["table"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(tables, ["t", "u"]);
    });
}

#[test]
fn tail_file_holds_the_acknowledgement_until_the_fsync() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot) = setup(cluster, "tail_file_held");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        // An fsync interval longer than the test: only the last one, at SIGINT, acknowledges.
        let child = bin()
            .args([
                "tail",
                &db.conninfo(),
                "--slot",
                &slot,
                "--publication",
                "p",
            ])
            .args([
                "--status-interval",
                "1",
                "--fsync-interval",
                "3600",
                "--file",
            ])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        db.psql("INSERT INTO t VALUES (1, 'one')").unwrap();
        let end = lsn(&db.query("SELECT pg_current_wal_lsn()").unwrap()[0][0]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while last_commit_end(&file) < end {
            assert!(
                Instant::now() < deadline,
                "the commit never reached the file"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Several status intervals (and flushes of the file) later, nothing is acknowledged.
        std::thread::sleep(Duration::from_secs(3));
        // (The slot may have moved to a keepalive's position before the insert: idle with
        // nothing to acknowledge, the stream reports it. Never past the insert's commit.)
        let held = lsn(&confirmed_flush(&db, &slot));
        assert!(
            held < last_commit_end(&file),
            "the slot is at {held:X}, past the unsynced commit"
        );
        let out = interrupt(child);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(lsn(&confirmed_flush(&db, &slot)) >= last_commit_end(&file));
    });
}

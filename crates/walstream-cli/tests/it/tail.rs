//! `walstream tail` against real servers: the lines of what was committed, acknowledged once
//! printed, resumed after on restart, stopped cleanly by SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::record::{bin, confirmed_flush, lsn, setup};

/// Runs `walstream tail` on `slot` (publication `p`) until `end`; returns the JSON lines.
fn tail_to(db: &pgtest::Database<'_>, slot: &str, end: &str) -> Vec<serde_json::Value> {
    let run = bin()
        .args(["tail", &db.conninfo(), "--slot", slot, "--publication", "p"])
        .args(["--end", end])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Sends SIGINT to `child` and checks that it exits cleanly.
fn interrupt(child: std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn current_lsn(db: &pgtest::Database<'_>) -> String {
    db.query("SELECT pg_current_wal_lsn()").unwrap()[0][0].clone()
}

#[test]
fn tail_prints_acknowledges_and_resumes() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot) = setup(cluster, "tail_resume");
        db.psql("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
            .unwrap();
        db.psql("UPDATE t SET v = 'uno' WHERE id = 1").unwrap();
        let lines = tail_to(&db, &slot, &current_lsn(&db));
        let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            ["begin", "relation", "insert", "insert", "commit", "begin", "update", "commit"]
        );
        assert_eq!(lines[3]["new"], serde_json::json!({"id": "2", "v": "two"}));
        assert_eq!(lines[6]["schema"], "public");
        // Acknowledged at least to the end of the last transaction printed.
        let printed_end = lsn(lines[7]["end_lsn"].as_str().unwrap());
        assert!(lsn(&confirmed_flush(&db, &slot)) >= printed_end);

        // The second run starts after what the first printed.
        db.psql("INSERT INTO t VALUES (3, 'three')").unwrap();
        let lines = tail_to(&db, &slot, &current_lsn(&db));
        let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["begin", "relation", "insert", "commit"]);
        assert_eq!(lines[2]["new"]["id"], "3");
    });
}

#[test]
fn sigint_stops_tail_with_the_printed_transactions_acknowledged() {
    let cluster = pgtest::cluster(18);
    let (db, slot) = setup(cluster, "tail_sigint");
    let mut child = bin()
        .args([
            "tail",
            &db.conninfo(),
            "--slot",
            &slot,
            "--publication",
            "p",
        ])
        .args(["--status-interval", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    db.psql("INSERT INTO t VALUES (1, 'one')").unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut end = None;
    let mut line = String::new();
    while end.is_none() {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "tail ended early");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["type"] == "commit" {
            end = Some(lsn(v["end_lsn"].as_str().unwrap()));
        }
    }
    interrupt(child);
    // The last status update acknowledged the printed transaction (or an idle keepalive
    // after it), and the slot is free again.
    assert!(lsn(&confirmed_flush(&db, &slot)) >= end.unwrap());
    let active = db
        .query(&format!(
            "SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
        .unwrap();
    assert_eq!(active[0][0], "f");
}

#[test]
fn tail_snapshot_prints_the_table_then_the_changes_after_it() {
    let cluster = pgtest::cluster(17);
    let db = cluster.create_database("tail_snapshot").unwrap();
    let slot = cluster.unique_name("tail_snap");
    db.psql(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION p FOR TABLE t;
         INSERT INTO t VALUES (1, 'one'), (2, NULL);",
    )
    .unwrap();
    let mut child = bin()
        .args([
            "tail",
            &db.conninfo(),
            "--slot",
            &slot,
            "--publication",
            "p",
        ])
        .args(["--create-slot", "--snapshot", "--status-interval", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut read = |n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|_| {
                let mut line = String::new();
                assert!(stdout.read_line(&mut line).unwrap() > 0, "tail ended early");
                serde_json::from_str(&line).unwrap()
            })
            .collect()
    };
    // The snapshot: the relation, then both rows, in binary format (int4 1 is AAAAAQ==).
    let snap = read(3);
    assert_eq!(snap[0]["type"], "relation");
    assert_eq!(snap[0]["table"], "t");
    assert_eq!(snap[0]["columns"][0]["key"], true);
    let consistent_point = snap[0]["lsn"].clone();
    assert_eq!(snap[1]["type"], "insert");
    assert_eq!(snap[1]["lsn"], consistent_point);
    assert_eq!(
        snap[1]["new"]["id"],
        serde_json::json!({"binary": "AAAAAQ=="})
    );
    assert_eq!(snap[1]["new"]["v"], serde_json::json!({"binary": "b25l"}));
    assert_eq!(snap[2]["new"]["v"], serde_json::Value::Null);
    // Then a change made after the slot: streamed, in text format, after the snapshot.
    db.psql("INSERT INTO t VALUES (3, 'three')").unwrap();
    let changes = read(4);
    let types: Vec<&str> = changes
        .iter()
        .map(|l| l["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["begin", "relation", "insert", "commit"]);
    assert_eq!(changes[2]["new"]["id"], "3");
    interrupt(child);
}

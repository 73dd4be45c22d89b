//! `walstream tail` against real servers: the lines of what was committed, acknowledged once
//! printed and never before (with a stdout that blocks or is closed), resumed after on restart,
//! stopped cleanly by SIGINT.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// `tail` blocked on a full stdout, then stopped by the pipe closing: the slot never passes a
/// transaction whose lines were not all written. Nobody reads the pipe while transactions
/// commit (it fills, and `tail` blocks in a write with more to print); then `tail` is frozen
/// (SIGSTOP), everything it wrote is drained, the pipe's last reader closes it, and `tail` goes
/// on into a closed stdout, which ends it with 0 (CLI.md). A second run prints every row the
/// first did not.
///
/// The bound is the commit of the first transaction not written whole (a restart skips a
/// transaction whose commit is before the slot): the slot may legitimately stand past the end
/// of the last one written, at an idle keepalive's position reported between the two.
#[test]
fn a_blocked_then_closed_stdout_never_lets_the_slot_pass_what_was_written() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot) = setup(cluster, "tail_blocked");
        let (reader, writer) = std::io::pipe().unwrap();
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
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until_active(&db, &slot);
        // Apart, so that tail flushes and acknowledges each until a flush blocks.
        let (count, rows) = (30, 20);
        let end = wide_transactions(&db, count, rows, 0.05);
        // Blocked: several status intervals with nobody reading.
        let mut samples = Vec::new();
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(500));
            assert!(
                child.try_wait().unwrap().is_none(),
                "tail exited while its stdout was full"
            );
            samples.push(lsn(&confirmed_flush(&db, &slot)));
        }
        // Frozen, so that what is drained is all it ever wrote; then the pipe closes.
        signal(&child, "STOP");
        let written = drain(reader);
        signal(&child, "CONT");
        let out = wait_for_exit(child);
        assert!(
            out.status.success(),
            "a closed stdout ends tail with 0: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        samples.push(lsn(&confirmed_flush(&db, &slot)));

        let first = whole_transactions(&complete_lines(&written));
        assert!(
            first.len() < count as usize,
            "the pipe never filled: all {} transactions were written",
            first.len()
        );
        let second = whole_transactions(&tail_to(&db, &slot, &end));
        assert_every_row_printed(&first, &second, count * rows, &format!("{samples:X?}"));
        let next = first_not_written(&first, &second);
        println!(
            "tail wrote {} of {count} transactions whole; the next commits at {:X}; the slot \
             was at {samples:X?}",
            first.len(),
            next.commit_lsn
        );
        for (i, flushed) in samples.iter().enumerate() {
            assert!(
                *flushed <= next.commit_lsn,
                "sample {i}: the slot is at {flushed:#X}, past the commit at {:#X} of a \
                 transaction tail did not write whole (it wrote {} of {count})",
                next.commit_lsn,
                first.len()
            );
        }
    });
}

/// `tail` with a stdout that is closed from the start: nothing can be written, so the slot
/// stays where it was (and `tail` ends with 0, CLI.md); a second run prints everything.
#[test]
fn a_closed_stdout_leaves_the_slot_where_it_was() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot) = setup(cluster, "tail_closed");
        let start = lsn(&confirmed_flush(&db, &slot));
        // Committed before tail starts: its stream is these transactions without a gap, so no
        // idle keepalive can move the slot either.
        let (count, rows) = (5, 20);
        let end = wide_transactions(&db, count, rows, 0.0);
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = bin()
            .args([
                "tail",
                &db.conninfo(),
                "--slot",
                &slot,
                "--publication",
                "p",
            ])
            .args(["--status-interval", "1"])
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_for_exit(child);
        assert!(
            out.status.success(),
            "a closed stdout ends tail with 0: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let flushed = lsn(&confirmed_flush(&db, &slot));
        assert!(
            flushed <= start,
            "the slot moved from {start:#X} to {flushed:#X} though tail wrote nothing"
        );
        let second = whole_transactions(&tail_to(&db, &slot, &end));
        assert_every_row_printed(&[], &second, count * rows, &format!("{flushed:X}"));
    });
}

/// `count` transactions of `rows` rows of 1 kB each (ids from 1), committed one after the
/// other with `pause` seconds between them: a few of them fill a pipe. Returns the WAL
/// position after them.
fn wide_transactions(db: &pgtest::Database<'_>, count: u32, rows: u32, pause: f64) -> String {
    let sql: String = (0..count)
        .map(|i| {
            format!(
                "INSERT INTO t SELECT g, repeat('x', 1000) FROM generate_series({}, {}) g;\n\
                 SELECT pg_sleep({pause});\n",
                i * rows + 1,
                (i + 1) * rows
            )
        })
        .collect();
    db.psql(&sql).unwrap();
    current_lsn(db)
}

/// The JSON lines of `output` that were written whole (each ends in a newline).
fn complete_lines(output: &[u8]) -> Vec<serde_json::Value> {
    let whole = output
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&output[..0], |i| &output[..=i]);
    std::str::from_utf8(whole)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A transaction printed whole, `begin` to `commit`.
struct Printed {
    /// The LSN of its commit record: a slot past it skips the transaction on restart.
    commit_lsn: u64,
    /// The ids it inserted.
    ids: Vec<u32>,
}

/// The transactions whose lines are all in `lines`, in order. A transaction cut short is not
/// one of them.
fn whole_transactions(lines: &[serde_json::Value]) -> Vec<Printed> {
    let mut whole = Vec::new();
    let mut open: Option<Vec<u32>> = None;
    for line in lines {
        match line["type"].as_str().unwrap() {
            "begin" => open = Some(Vec::new()),
            "insert" => open
                .as_mut()
                .expect("an insert outside a transaction")
                .push(line["new"]["id"].as_str().unwrap().parse().unwrap()),
            "commit" => whole.push(Printed {
                commit_lsn: lsn(line["commit_lsn"].as_str().unwrap()),
                ids: open.take().expect("a commit without its begin"),
            }),
            _ => {}
        }
    }
    whole
}

/// Every row `1..=total` is in a transaction one of the runs printed whole: the slot skipped
/// nothing that the first run did not print. `slot` says where the slot was, for the message.
fn assert_every_row_printed(first: &[Printed], second: &[Printed], total: u32, slot: &str) {
    let printed: BTreeSet<u32> = first
        .iter()
        .chain(second)
        .flat_map(|t| t.ids.iter().copied())
        .collect();
    let lost: Vec<u32> = (1..=total).filter(|id| !printed.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "the slot (at {slot}) skipped transactions that were never written whole; their \
         rows: {lost:?}"
    );
}

/// The first transaction of the second run that the first did not print whole.
fn first_not_written<'a>(first: &[Printed], second: &'a [Printed]) -> &'a Printed {
    let written: BTreeSet<u32> = first.iter().flat_map(|t| t.ids.iter().copied()).collect();
    second
        .iter()
        .find(|t| t.ids.iter().any(|id| !written.contains(id)))
        .expect("the second run printed nothing new")
}

/// Waits until a walsender holds `slot`.
fn wait_until_active(db: &pgtest::Database<'_>, slot: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql = format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'");
    while db.query(&sql).unwrap()[0][0] != "t" {
        assert!(Instant::now() < deadline, "tail never started streaming");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `SIG<name>` to `child`.
fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Everything in the pipe of `reader`, whose writer is frozen, read by a `cat` that is killed
/// once it has drained it: the pipe's last reader, so the writer's next write fails.
fn drain(reader: std::io::PipeReader) -> Vec<u8> {
    let mut cat = Command::new("cat")
        .stdin(reader)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = cat.stdout.take().unwrap();
    let read = Arc::new(AtomicUsize::new(0));
    let collector = {
        let read = Arc::clone(&read);
        std::thread::spawn(move || {
            let (mut bytes, mut buf) = (Vec::new(), [0; 64 * 1024]);
            loop {
                let n = out.read(&mut buf).unwrap();
                if n == 0 {
                    return bytes;
                }
                bytes.extend_from_slice(&buf[..n]);
                read.store(bytes.len(), Ordering::SeqCst);
            }
        })
    };
    // Drained once nothing more arrives for a while: cat then waits for bytes that never come.
    let mut last = usize::MAX;
    while read.load(Ordering::SeqCst) != last {
        last = read.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(500));
    }
    cat.kill().unwrap();
    cat.wait().unwrap();
    collector.join().unwrap()
}

/// Waits up to a minute for `child` to exit, killing it and failing after that.
fn wait_for_exit(mut child: std::process::Child) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "tail did not exit: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

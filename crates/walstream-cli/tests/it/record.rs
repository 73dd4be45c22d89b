//! `walstream record` against real servers: the capture holds what was committed, decodes to
//! it, and the slot's position is exactly what the recorder acknowledged.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walstream"))
}

pub(crate) fn setup<'c>(
    cluster: &'c pgtest::Cluster,
    name: &str,
) -> (pgtest::Database<'c>, String) {
    let db = cluster.create_database(name).unwrap();
    let slot = cluster.unique_name("rec");
    db.psql(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION p FOR TABLE t;
         SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');"
    ))
    .unwrap();
    (db, slot)
}

/// Runs `walstream record` on slot `slot` (publication `p`) until `end`, into `out`.
fn record_to(db: &pgtest::Database<'_>, slot: &str, end: &str, out: &std::path::Path) {
    let run = bin()
        .args([
            "record",
            &db.conninfo(),
            "--slot",
            slot,
            "--publication",
            "p",
        ])
        .args(["--end", end, "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

pub(crate) fn confirmed_flush(db: &pgtest::Database<'_>, slot: &str) -> String {
    db.query(&format!(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ))
    .unwrap()[0][0]
        .clone()
}

fn decode(path: &std::path::Path) -> Vec<serde_json::Value> {
    let out = bin().arg("decode").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn record_until_end_lsn_then_decode() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot) = setup(cluster, "record_end");
        db.psql("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
            .unwrap();
        db.psql("UPDATE t SET v = 'uno' WHERE id = 1").unwrap();
        let end = db.query("SELECT pg_current_wal_lsn()").unwrap()[0][0].clone();
        let dir = tempdir();
        let out = dir.join("rec.walcap");
        record_to(&db, &slot, &end, &out);

        let lines = decode(&out);
        let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            ["begin", "relation", "insert", "insert", "commit", "begin", "update", "commit"],
            "PostgreSQL {}",
            cluster.major()
        );
        assert_eq!(lines[3]["new"], serde_json::json!({"id": "2", "v": "two"}));
        assert_eq!(lines[6]["new"]["v"], "uno");
        // The slot was acknowledged exactly to the end of the last transaction recorded, or,
        // when other tests' WAL put `--end` past it, to the idle keepalive that reached
        // `--end` (the last frame of the file then).
        let (_, want) = decode_with_final_boundary(&out);
        assert!(want >= lsn(lines[7]["end_lsn"].as_str().unwrap()));
        assert_eq!(lsn(&confirmed_flush(&db, &slot)), want);

        // The header says where the stream came from.
        let file = std::fs::read(&out).unwrap();
        let header_line = file[8..].split(|&b| b == b'\n').next().unwrap();
        let header: serde_json::Value = serde_json::from_slice(header_line).unwrap();
        let want_proto = if cluster.major() >= 16 { 4 } else { 3 };
        assert_eq!(header["proto_version"], want_proto);
        assert_eq!(header["slot"], slot.as_str());
        assert_eq!(header["publications"], serde_json::json!(["p"]));
        assert!(header["system_id"].as_str().unwrap().parse::<u64>().is_ok());
        assert_eq!(header["timeline"], 1);

        // A second run resumes after what the first acknowledged: only the new row.
        db.psql("INSERT INTO t VALUES (3, 'three')").unwrap();
        let end = db.query("SELECT pg_current_wal_lsn()").unwrap()[0][0].clone();
        let out2 = dir.join("rec2.walcap");
        record_to(&db, &slot, &end, &out2);
        let inserts: Vec<_> = decode(&out2)
            .into_iter()
            .filter(|l| l["type"] == "insert")
            .map(|l| l["new"]["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(inserts, ["3"]);
    });
}

#[test]
fn sigint_stops_cleanly_with_everything_acknowledged_in_the_file() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot) = setup(cluster, "record_sigint");
        let dir = tempdir();
        let out = dir.join("rec.walcap");
        let child = bin()
            .args([
                "record",
                &db.conninfo(),
                "--slot",
                &slot,
                "--publication",
                "p",
            ])
            .args(["--streaming", "on", "--status-interval", "1", "--out"])
            .arg(&out)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        db.psql("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 50) g")
            .unwrap();
        // Wait until the transaction is in the file (status updates flush it every second).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let done = bin().arg("decode").arg(&out).output().unwrap();
            if String::from_utf8_lossy(&done.stdout).contains("\"type\":\"commit\"") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the commit never reached the file"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let run = child.wait_with_output().unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );

        let (lines, want) = decode_with_final_boundary(&out);
        assert_eq!(lines.iter().filter(|l| l["type"] == "insert").count(), 50);
        assert_eq!(
            lsn(&confirmed_flush(&db, &slot)),
            want,
            "PostgreSQL {}",
            cluster.major()
        );
    });
}

/// Decodes `path` with keepalives, and returns its lines and the furthest point it holds
/// between transactions: the last commit's end, or a later keepalive's wal_end (the stream is
/// idle after the commit). The recorder must acknowledge exactly this, never more, never less.
fn decode_with_final_boundary(path: &std::path::Path) -> (Vec<serde_json::Value>, u64) {
    let out = bin()
        .args(["decode", "--keepalives"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last_commit = lines.iter().rposition(|l| l["type"] == "commit").unwrap();
    let mut boundary = lsn(lines[last_commit]["end_lsn"].as_str().unwrap());
    for l in &lines[last_commit..] {
        if l["type"] == "keepalive" {
            boundary = boundary.max(lsn(l["wal_end"].as_str().unwrap()));
        }
    }
    (lines, boundary)
}

pub(crate) fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

#[test]
fn unreachable_server_exits_4_and_names_it() {
    let dir = tempdir();
    let out = dir.join("never.walcap");
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let run = bin()
        .args([
            "record",
            "host=127.0.0.1 port=1 user=x dbname=x connect_timeout=2",
        ])
        .args(["--slot", "s", "--publication", "p", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    assert!(
        !out.exists(),
        "no capture is created before the server answers"
    );
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "walstream-record-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

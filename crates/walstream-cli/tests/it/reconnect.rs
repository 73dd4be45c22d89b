//! `walstream tail` across a lost connection: the `reconnected` line of CLI.md ("Reconnects")
//! comes before the first line of the new connection, and a streamed transaction cut in the
//! middle is printed again whole after it.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::record::{bin, setup};

/// Rows of the large transaction: far more than `logical_decoding_work_mem` (64kB here), so the
/// server streams it in many blocks, and far more than a pipe and the socket buffers between
/// the server and `tail` hold (about 13 MB of stream; Linux grows a socket's buffers to a few
/// MB), so the cut lands in the middle however far ahead the server got.
const ROWS: usize = 60_000;

#[test]
fn a_cut_streamed_transaction_is_printed_again_after_a_reconnected_line() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot) = setup(cluster, "tail_reconnect");
        db.psql(&format!(
            "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, {ROWS}) g"
        ))
        .unwrap();
        let end = db.query("SELECT pg_current_wal_lsn()").unwrap()[0][0].clone();
        let conninfo = format!(
            "{} options='-c logical_decoding_work_mem=64kB'",
            db.conninfo()
        );
        let mut child = bin()
            .args(["tail", &conninfo, "--slot", &slot, "--publication", "p"])
            .args(["--streaming", "on", "--end", &end])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = || -> serde_json::Value {
            let line = lines.next().expect("tail ended early").unwrap();
            serde_json::from_str(&line).unwrap()
        };

        // Read into the streamed transaction, then stop reading: tail blocks on the full pipe
        // in the middle of the transaction while its walsender is terminated.
        let first = next();
        assert_eq!(first["type"], "stream_start", "{first}");
        assert_eq!(first["first_segment"], true);
        let xid = first["xid"].clone();
        let mut before = 0;
        while before < 10 {
            if next()["type"] == "insert" {
                before += 1;
            }
        }
        let killed = db
            .query(&format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = '{slot}'"
            ))
            .unwrap();
        assert_eq!(killed, [["t"]], "no walsender to terminate");

        // Everything printed before the marker is part of the cut transaction.
        let marker = loop {
            let line = next();
            match line["type"].as_str() {
                Some("reconnected") => break line,
                Some("stream_commit") => panic!("the transaction ended before the cut: {line}"),
                _ => {}
            }
        };
        assert_eq!(marker["lsn"], marker["resume_lsn"]);
        assert!(!marker["reason"].as_str().unwrap().is_empty(), "{marker}");

        // After it, the transaction again from its start, whole.
        let again = next();
        assert_eq!(again["type"], "stream_start", "{again}");
        assert_eq!(again["first_segment"], true);
        assert_eq!(again["xid"], xid);
        let mut inserts = 0;
        loop {
            let line = next();
            match line["type"].as_str() {
                Some("insert") => inserts += 1,
                Some("stream_commit") => {
                    assert_eq!(line["xid"], xid);
                    break;
                }
                Some("reconnected") => panic!("a second reconnect: {line}"),
                _ => {}
            }
        }
        assert_eq!(inserts, ROWS);
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "{stderr}");
        assert!(stderr.contains("reconnect"), "{stderr}");
    });
}

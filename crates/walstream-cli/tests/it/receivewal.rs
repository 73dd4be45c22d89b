//! `walstream receivewal` against real servers: the files `pg_receivewal` writes (compared with
//! PostgreSQL 15's own tool, and on every major with the server's `pg_wal`), `.partial`, the
//! slot, a restart that resumes, the exit codes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use walproto::Lsn;

use crate::record::bin;

/// The segment size of the test clusters (initdb's default).
const SEGMENT: u64 = 16 << 20;

/// Runs `walstream receivewal ARGS`; returns the exit code and stderr.
fn receivewal(args: &[&str]) -> (i32, String) {
    let out = bin().arg("receivewal").args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The segment files of `dir` (name to contents).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Writes some WAL and switches segments `switches` times; returns the position after it.
fn make_wal(cluster: &pgtest::Cluster, table: &str, switches: usize) -> Lsn {
    cluster
        .psql(
            "postgres",
            &format!("CREATE TABLE IF NOT EXISTS {table} (id serial, v text)"),
        )
        .unwrap();
    for _ in 0..switches {
        cluster
            .psql(
                "postgres",
                &format!(
                    "INSERT INTO {table} (v) SELECT md5(g::text) FROM generate_series(1, 2000) g; \
                     SELECT pg_switch_wal();"
                ),
            )
            .unwrap();
    }
    // An end inside a segment, so that the segment in progress has WAL in it (at a segment's
    // very start, pg_receivewal may write the next message into a `.partial` where walstream
    // stops at the end exactly).
    loop {
        cluster
            .psql(
                "postgres",
                &format!("INSERT INTO {table} (v) VALUES ('tail')"),
            )
            .unwrap();
        let end = current_lsn(cluster);
        if !end.get().is_multiple_of(SEGMENT) {
            return end;
        }
    }
}

fn current_lsn(cluster: &pgtest::Cluster) -> Lsn {
    cluster
        .query("postgres", "SELECT pg_current_wal_flush_lsn()")
        .unwrap()[0][0]
        .parse()
        .unwrap()
}

fn restart_lsn(cluster: &pgtest::Cluster, slot: &str) -> Lsn {
    cluster
        .query(
            "postgres",
            &format!("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )
        .unwrap()[0][0]
        .parse()
        .unwrap()
}

/// The name of the segment holding `lsn` on timeline 1.
fn segment_name(lsn: Lsn) -> String {
    let segno = lsn.get() / SEGMENT;
    let per = 0x1_0000_0000 / SEGMENT;
    format!("{:08X}{:08X}{:08X}", 1, segno / per, segno % per)
}

/// Every file of `ours` matches `reference` where both have it; a `.partial` only up to `end`.
/// Returns how many complete segments were compared.
fn compare(
    ours: &BTreeMap<String, Vec<u8>>,
    reference: &BTreeMap<String, Vec<u8>>,
    end: Lsn,
) -> usize {
    let mut complete = 0;
    for (name, bytes) in ours {
        let Some(theirs) = reference.get(name) else {
            continue;
        };
        assert_eq!(bytes.len() as u64, SEGMENT, "{name}");
        if name.ends_with(".partial") {
            let upto = (end.get() % SEGMENT) as usize;
            assert!(
                bytes[..upto] == theirs[..upto],
                "{name} differs before {end}"
            );
        } else {
            assert!(bytes == theirs, "{name} differs");
            complete += 1;
        }
    }
    complete
}

/// The completed segments are byte-identical to PostgreSQL 15's `pg_receivewal`'s for the same
/// range, the segment in progress is `.partial` in both, the slot advances to what was flushed,
/// and a second run resumes from the `.partial` with no gap.
#[test]
fn receivewal_matches_pg_receivewal() {
    let Some(bin_dir) = pgtest::bin_dir(15) else {
        panic!("PostgreSQL 15 (with pg_receivewal) is needed for this test");
    };
    let cluster = pgtest::cluster(15);
    let conninfo = cluster.conninfo("postgres");
    let ours_slot = cluster.unique_name("rw_ours");
    let theirs_slot = cluster.unique_name("rw_theirs");
    for slot in [&ours_slot, &theirs_slot] {
        cluster
            .psql(
                "postgres",
                &format!("SELECT pg_create_physical_replication_slot('{slot}', true)"),
            )
            .unwrap();
    }
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let table = cluster.unique_name("rw_t");
    let pg_receivewal = |end: Lsn| {
        let out = Command::new(bin_dir.join("pg_receivewal"))
            .args(["-d", &conninfo, "-D"])
            .arg(theirs.path())
            .args(["-S", &theirs_slot, "-E", &end.to_string(), "-n", "-w"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ours_dir = ours.path().to_str().unwrap().to_owned();

    let mut last_complete = 0;
    for round in 0..2 {
        let end = make_wal(cluster, &table, 3);
        let (code, stderr) = receivewal(&[
            &conninfo,
            "-D",
            &ours_dir,
            "-S",
            &ours_slot,
            "-E",
            &end.to_string(),
            "-n",
        ]);
        assert_eq!(code, 0, "round {round}: {stderr}");
        pg_receivewal(end);
        let (o, t) = (files(ours.path()), files(theirs.path()));
        assert_eq!(
            o.keys().collect::<Vec<_>>(),
            t.keys().collect::<Vec<_>>(),
            "round {round}: the same files"
        );
        let partial = format!("{}.partial", segment_name(end));
        assert!(
            o.contains_key(&partial),
            "round {round}: {partial} in {:?}",
            o.keys()
        );
        let complete = compare(&o, &t, end);
        assert!(
            complete >= last_complete + 3,
            "round {round}: {complete} segments compared"
        );
        last_complete = complete;
        // The slot moved to what is durable: past every completed segment, not past the end.
        let restart = restart_lsn(cluster, &ours_slot);
        let partial_start = Lsn::new(end.get() / SEGMENT * SEGMENT);
        assert!(
            restart >= partial_start && restart <= end,
            "round {round}: restart_lsn {restart}, end {end}"
        );
    }
    for slot in [&ours_slot, &theirs_slot] {
        cluster
            .psql(
                "postgres",
                &format!("SELECT pg_drop_replication_slot('{slot}')"),
            )
            .unwrap();
    }
}

/// On every major: completed segments equal the server's own `pg_wal` files, the segment in
/// progress is `.partial`; `--create-slot` creates and exits; a missing slot is exit 5.
#[test]
fn receivewal_on_every_major() {
    pgtest::for_each_major(15, |cluster| {
        let conninfo = cluster.conninfo("postgres");
        let slot = cluster.unique_name("rw_every");
        let (code, stderr) = receivewal(&[&conninfo, "-D", "/tmp", "-S", &slot, "--create-slot"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(restart_lsn(cluster, &slot).get() > 0);
        // Created again: the server refuses, the connection failed as a command.
        let (code, stderr) = receivewal(&[&conninfo, "-D", "/tmp", "-S", &slot, "--create-slot"]);
        assert_eq!(code, 4, "{stderr}");
        assert!(stderr.contains("already exists"), "{stderr}");

        let dir = tempfile::tempdir().unwrap();
        let dir_s = dir.path().to_str().unwrap().to_owned();
        let table = cluster.unique_name("rw_every_t");
        let end = make_wal(cluster, &table, 2);
        let (code, stderr) = receivewal(&[
            &conninfo,
            "-D",
            &dir_s,
            "-S",
            &slot,
            "-E",
            &end.to_string(),
            "-n",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let ours = files(dir.path());
        assert!(
            ours.contains_key(&format!("{}.partial", segment_name(end))),
            "{:?}",
            ours.keys()
        );
        let server: BTreeMap<String, Vec<u8>> = ours
            .keys()
            .filter(|n| !n.ends_with(".partial"))
            .filter_map(|n| {
                let path = cluster.data_dir().join("pg_wal").join(n);
                std::fs::read(path).ok().map(|b| (n.clone(), b))
            })
            .collect();
        assert!(
            !server.is_empty(),
            "no segment left on the server to compare with"
        );
        assert_eq!(compare(&ours, &server, end), server.len());

        let missing = cluster.unique_name("rw_missing");
        let (code, stderr) = receivewal(&[&conninfo, "-D", &dir_s, "-S", &missing, "-n"]);
        assert_eq!(code, 5, "{stderr}");
        let (code, stderr) = receivewal(&[&conninfo, "-D", "/nonexistent/dir", "-n"]);
        assert_eq!(code, 3, "{stderr}");
        cluster
            .psql(
                "postgres",
                &format!("SELECT pg_drop_replication_slot('{slot}')"),
            )
            .unwrap();
    });
}

/// `--synchronous` reports each flush at once: with an hour between status updates, the
/// server still sees the WAL just written as flushed within seconds; without it, it does not.
#[test]
fn synchronous_reports_each_flush_at_once() {
    pgtest::for_each_major(15, |cluster| {
        for synchronous in [true, false] {
            let name = cluster.unique_name("rw_sync");
            let conninfo = format!("{} application_name={name}", cluster.conninfo("postgres"));
            let dir = tempfile::tempdir().unwrap();
            let mut args = vec![
                "receivewal".to_owned(),
                conninfo,
                "-D".into(),
                dir.path().to_str().unwrap().into(),
                "-s".into(),
                "3600".into(),
            ];
            if synchronous {
                args.push("--synchronous".into());
            }
            let mut child = bin().args(&args).spawn().unwrap();
            let flushed = |cluster: &pgtest::Cluster| -> Option<Lsn> {
                let rows = cluster
                    .query(
                        "postgres",
                        &format!(
                            "SELECT flush_lsn FROM pg_stat_replication WHERE application_name = '{name}'"
                        ),
                    )
                    .unwrap();
                rows.first()
                    .and_then(|r| r.first())
                    .and_then(|v| v.parse().ok())
            };
            // Connected and streaming, then some WAL to flush.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while flushed(cluster).is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let table = cluster.unique_name("rw_sync_t");
            cluster
                .psql(
                    "postgres",
                    &format!("CREATE TABLE {table} AS SELECT 1 AS x"),
                )
                .unwrap();
            let target = current_lsn(cluster);
            // Generous for a loaded machine (every message is synced); without --synchronous
            // nothing is reported for an hour, or until the server asks (after half of
            // wal_sender_timeout, 30 s).
            let window = if synchronous { 25 } else { 8 };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(window);
            let mut reached = false;
            while std::time::Instant::now() < deadline {
                if flushed(cluster).is_some_and(|f| f >= target) {
                    reached = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert_eq!(
                reached,
                synchronous,
                "synchronous {synchronous}: the server saw {:?} flushed, the WAL was at {target}",
                flushed(cluster)
            );
        }
    });
}

//! `walstream receivewal` connected to a standby that is promoted: it follows the standby onto
//! its new timeline as `pg_receivewal` does (the walsender ends timeline 1 at the switch point,
//! the stream continues on timeline 2), writing the timeline history file, the new timeline's
//! segments, and leaving the old timeline's last segment `.partial`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use walproto::Lsn;
use walstream::physical::WalSegmentSize;

use crate::record::bin;

/// The segment size of the test clusters (initdb's default).
const SEGMENT: u64 = 16 << 20;

/// How long the files receivewal writes may take to appear (servers share two cores).
const WAIT: Duration = Duration::from_secs(90);

/// Rows into `table` on `cluster`, then a segment switch.
fn write_and_switch(cluster: &pgtest::Cluster, table: &str) {
    cluster
        .psql(
            "postgres",
            &format!(
                "INSERT INTO {table} (v) SELECT md5(g::text) FROM generate_series(1, 2000) g;
                 SELECT pg_switch_wal();"
            ),
        )
        .unwrap();
}

/// The files of `dir` (name to contents).
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

/// Whether `name` is a complete segment file's name (24 hexadecimal digits) on `timeline`.
fn is_segment_of(name: &str, timeline: u32) -> bool {
    name.len() == 24
        && name.bytes().all(|b| b.is_ascii_hexdigit())
        && name.starts_with(&format!("{timeline:08X}"))
}

/// Waits until `done` holds for the names in `dir`; fails naming them (and what the child said,
/// if it exited) after [`WAIT`].
fn wait_for_files(dir: &Path, child: &mut Child, what: &str, done: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        // Names only: a `.partial` may be renamed while the directory is read.
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if done(&names) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("receivewal exited ({status}) before {what}; files: {names:?}");
        }
        assert!(
            Instant::now() < deadline,
            "no {what} after {WAIT:?}: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops `child` with SIGTERM and returns its stderr; it must exit 0.
fn terminate(child: Child) -> String {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "receivewal: {}\n{stderr}", out.status);
    stderr
}

/// The switch point of timeline 1 in a timeline 2 history file (`1\t<lsn>\t<reason>`).
fn switch_point(history: &[u8]) -> Lsn {
    let text = String::from_utf8_lossy(history);
    let line = text
        .lines()
        .find(|l| l.starts_with("1\t"))
        .unwrap_or_else(|| panic!("no timeline 1 in {text:?}"));
    line.split('\t').nth(1).unwrap().parse().unwrap()
}

#[test]
fn receivewal_on_a_standby_follows_its_promotion_to_timeline_2() {
    pgtest::for_each_installed_major(15, |major| {
        let primary = pgtest::Config::primary(major).start().unwrap();
        primary
            .psql("postgres", "CREATE TABLE t (id serial, v text)")
            .unwrap();
        let standby = primary.standby().unwrap();
        let slot = "rw_failover";
        standby
            .psql(
                "postgres",
                &format!("SELECT pg_create_physical_replication_slot('{slot}', true)"),
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut child = bin()
            .arg("receivewal")
            .arg(standby.conninfo("postgres"))
            .arg("-D")
            .arg(dir.path())
            .args(["-S", slot, "-s", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();

        // Timeline 1, written on the primary and received through the standby.
        for _ in 0..2 {
            write_and_switch(&primary, "t");
        }
        // More without a switch: timeline 1 ends inside a segment, which stays partial.
        primary
            .psql(
                "postgres",
                "INSERT INTO t (v) VALUES ('the last of timeline 1')",
            )
            .unwrap();
        pgtest::wait_caught_up(&primary, &standby).unwrap();
        wait_for_files(
            dir.path(),
            &mut child,
            "a complete timeline 1 segment",
            |names| names.iter().any(|n| is_segment_of(n, 1)),
        );

        // The standby promoted, then written on: timeline 2.
        standby.promote().unwrap();
        assert_eq!(standby.timeline().unwrap(), 2);
        for _ in 0..2 {
            write_and_switch(&standby, "t");
        }
        wait_for_files(
            dir.path(),
            &mut child,
            "a complete timeline 2 segment",
            |names| names.iter().filter(|n| is_segment_of(n, 2)).count() >= 2,
        );
        let stderr = terminate(child);

        let ours = files(dir.path());
        let pg_wal = standby.data_dir().join("pg_wal");
        let theirs = std::fs::read(pg_wal.join("00000002.history")).unwrap();
        assert_eq!(
            ours.get("00000002.history"),
            Some(&theirs),
            "the history file: {:?}\n{stderr}",
            ours.keys()
        );
        let at = switch_point(&theirs);
        let size = WalSegmentSize::new(SEGMENT).unwrap();
        // The old timeline's last segment stays partial.
        assert_ne!(
            size.offset_of(at),
            0,
            "the switch at {at}, a segment's start"
        );
        let last_of_1 = size.segment_name(1, at);
        let partial = format!("{last_of_1}.partial");
        let bytes = ours
            .get(&partial)
            .unwrap_or_else(|| panic!("{partial} missing: {:?}\n{stderr}", ours.keys()));
        assert_eq!(bytes.len() as u64, SEGMENT);
        assert!(!ours.contains_key(&last_of_1), "{last_of_1} completed");
        // Up to the switch it is the server's WAL: the standby's copy of the segment, which
        // it keeps under its name (or, archiving, renames `.partial`) until it is recycled.
        let upto = size.offset_of(at) as usize;
        let server = [&last_of_1, &partial]
            .into_iter()
            .find_map(|n| std::fs::read(pg_wal.join(n)).ok());
        if let Some(server) = &server {
            assert!(
                bytes[..upto] == server[..upto],
                "{partial} differs before {at}"
            );
        }
        // The new timeline's first segment holds only what was streamed on it (zeros before
        // the switch, as pg_receivewal writes it), so it is not compared with the server's.
        let first_of_2 = size.segment_name(2, at);
        let mut compared = [0, 0];
        for (name, bytes) in &ours {
            let timeline = if is_segment_of(name, 1) {
                1
            } else if is_segment_of(name, 2) {
                2
            } else {
                continue;
            };
            assert_eq!(bytes.len() as u64, SEGMENT, "{name}");
            if *name == first_of_2 {
                continue;
            }
            match std::fs::read(pg_wal.join(name)) {
                Ok(server) => {
                    assert!(
                        *bytes == server,
                        "{name} differs from the server's (first difference at byte {:?})",
                        bytes.iter().zip(&server).position(|(a, b)| a != b)
                    );
                    compared[timeline - 1] += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("reading the server's {name}: {e}"),
            }
        }
        println!(
            "  PostgreSQL {major}: switch at {at} ({partial} compared: {}), {} timeline 1 and {} timeline 2 segments \
             compared: {:?}",
            server.is_some(),
            compared[0],
            compared[1],
            ours.keys()
        );
        assert!(
            compared[1] >= 1,
            "no timeline 2 segment compared: {:?}",
            ours.keys()
        );
        assert!(
            ours.keys().any(|n| is_segment_of(n, 1)),
            "no complete timeline 1 segment"
        );
    });
}

//! `walstream tail --create-slot --failover` across a failover (issue 16, PostgreSQL 17+): a
//! primary and a standby synchronizing the failover slot (`sync_replication_slots`,
//! `hot_standby_feedback`, `primary_slot_name`; `synchronized_standby_slots` on the primary), a
//! writer committing small transactions. The primary is stopped with `-m immediate`, the
//! standby promoted and written on. `tail`, given both hosts with
//! `target_session_attrs=read-write`, goes on by itself: its `reconnected` line names timelines
//! 1 and 2, and after deduplication by commit LSN its lines hold every row of the new
//! primary's table exactly once.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgtest::{Cluster, Topology, WriteLoad};
use serde_json::Value;

use crate::record::bin;

const DB: &str = "failover";
const TABLE: &str = "rows";
const STANDBY_SLOT: &str = "standby_1";
const WAIT: Duration = Duration::from_secs(90);

/// Polls `ok` every 100 ms until it holds, failing after [`WAIT`].
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn table_ids(cluster: &Cluster) -> BTreeSet<i64> {
    cluster
        .psql(DB, &format!("SELECT id FROM {TABLE}"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// What `tail` printed, deduplicated by commit LSN.
#[derive(Debug, Default)]
struct Printed {
    /// Ids of committed rows, once per distinct commit LSN.
    ids: Vec<i64>,
    repeats: usize,
    reconnected: Vec<Value>,
}

impl Printed {
    fn of(lines: &[Value]) -> Self {
        let mut out = Printed::default();
        let mut open = Vec::new();
        let mut commits = HashSet::new();
        for line in lines {
            match line["type"].as_str() {
                Some("begin") => open.clear(),
                Some("insert") => open.push(line["new"]["id"].as_str().unwrap().parse().unwrap()),
                Some("reconnected") => {
                    open.clear();
                    out.reconnected.push(line.clone());
                }
                Some("commit") => {
                    if commits.insert(line["commit_lsn"].as_str().unwrap().to_owned()) {
                        out.ids.append(&mut open);
                    } else {
                        out.repeats += 1;
                        open.clear();
                    }
                }
                _ => {}
            }
        }
        out
    }
}

#[test]
fn tail_follows_a_failover_slot_to_the_promoted_standby() {
    pgtest::for_each_installed_major(17, |major| {
        let t = Topology::failover(major, STANDBY_SLOT).unwrap();
        t.wait_for_standby(STANDBY_SLOT).unwrap();
        t.table(DB, TABLE, "p").unwrap();
        let (primary, standby) = (&t.primary, &t.standby);
        let conninfo = t.conninfo(DB);
        let mut child = bin()
            .args(["tail", &conninfo, "--slot", "fo_tail", "--publication", "p"])
            .args(["--create-slot", "--failover"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<Value>::new()));
        let reader = {
            let lines = lines.clone();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let line = line.unwrap();
                    lines
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(&line).unwrap());
                }
            })
        };
        let printed = || Printed::of(&lines.lock().unwrap());
        wait_for("the failover slot", || {
            primary
                .psql(
                    "postgres",
                    "SELECT failover FROM pg_replication_slots WHERE slot_name = 'fo_tail'",
                )
                .unwrap()
                == "t"
        });

        let load = WriteLoad::start(primary, DB, TABLE).unwrap();
        wait_for("rows through tail", || printed().ids.len() >= 50);
        wait_for("the slot synchronized to the standby", || {
            standby
                .psql(
                    "postgres",
                    "SELECT synced AND NOT temporary AND confirmed_flush_lsn IS NOT NULL \
                     FROM pg_replication_slots WHERE slot_name = 'fo_tail'",
                )
                .unwrap()
                == "t"
        });
        let seen = printed().ids.len();
        wait_for("more rows", || printed().ids.len() >= seen + 50);

        primary.crash().unwrap();
        let _ = load.stop();
        standby.promote().unwrap();
        let load = WriteLoad::start(standby, DB, TABLE).unwrap();
        let at_promotion = table_ids(standby).len();
        wait_for("rows on the new primary", || {
            table_ids(standby).len() >= at_promotion + 100
        });
        load.stop().unwrap();
        let expected = table_ids(standby);
        wait_for("every row of the new primary through tail", || {
            printed().ids.iter().collect::<BTreeSet<_>>().len() >= expected.len()
        });

        let term = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let status = child.wait().unwrap();
        reader.join().unwrap();
        assert!(status.success(), "tail exited with {status}");

        let out = printed();
        let got: BTreeSet<i64> = out.ids.iter().copied().collect();
        assert_eq!(got.len(), out.ids.len(), "a row printed twice");
        assert_eq!(got, expected, "tail's rows are not the new primary's table");
        let failover = out
            .reconnected
            .iter()
            .find(|l| l["old_timeline"] == 1 && l["new_timeline"] == 2)
            .unwrap_or_else(|| panic!("no reconnected line from timeline 1 to 2: {out:?}"));
        assert_eq!(failover["lsn"], failover["resume_lsn"]);
        println!(
            "PostgreSQL {major}: {} rows, {} transactions printed again, {failover}",
            got.len(),
            out.repeats
        );
    });
}

//! `walstream slot list|create|drop|health` against real servers, and the exit status of a
//! lost slot (issue 16): `slot health`, `slot list`'s health columns and `tail`.

use std::time::{Duration, Instant};

use crate::record::bin;

/// Runs `walstream slot ARGS`; returns the exit code, stdout and stderr.
fn slot(args: &[&str]) -> (i32, String, String) {
    let out = bin().arg("slot").args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The slots `slot list` prints, each line checked to be one JSON object.
fn list(conninfo: &str) -> Vec<serde_json::Value> {
    let (code, stdout, stderr) = slot(&["list", conninfo]);
    assert_eq!(code, 0, "{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn find<'a>(slots: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    slots.iter().find(|s| s["name"] == name)
}

#[test]
fn create_list_drop() {
    pgtest::for_each_major(15, |cluster| {
        let db = cluster.create_database("slot_cli").unwrap();
        let conninfo = db.conninfo();
        let name = cluster.unique_name("cli_slot");
        let two_phase = cluster.unique_name("cli_slot_2pc");

        let (code, stdout, stderr) = slot(&["create", &conninfo, "--slot", &name]);
        assert_eq!(code, 0, "{stderr}");
        let created: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(created["name"], name.as_str());
        let consistent: String = created["consistent_point"].as_str().unwrap().to_owned();
        assert!(consistent.contains('/'), "{created}");
        let (code, _, stderr) = slot(&["create", &conninfo, "--slot", &two_phase, "--two-phase"]);
        assert_eq!(code, 0, "{stderr}");

        let (code, raw, stderr) = slot(&["list", &conninfo]);
        assert_eq!(code, 0, "{stderr}");
        let line = raw
            .lines()
            .find(|l| l.contains(&format!("\"name\":\"{name}\"")))
            .unwrap_or_else(|| panic!("{name} not in {raw}"));
        // The fields, in this order and no others.
        let fields = [
            "name",
            "type",
            "plugin",
            "database",
            "temporary",
            "active_pid",
            "restart_lsn",
            "confirmed_flush_lsn",
            "two_phase",
            "wal_status",
            "safe_wal_size",
            "invalidation_reason",
            "inactive_since",
            "conflicting",
            "synced",
            "lag_bytes",
        ];
        let at: Vec<usize> = fields
            .iter()
            .map(|f| line.find(&format!("\"{f}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
        let slots = list(&conninfo);
        let s = find(&slots, &name).unwrap();
        assert_eq!(s.as_object().unwrap().len(), fields.len(), "{line}");
        assert_eq!(s["type"], "logical");
        assert_eq!(s["plugin"], "pgoutput");
        assert_eq!(s["database"], "slot_cli");
        assert_eq!(s["temporary"], false);
        assert_eq!(s["active_pid"], serde_json::Value::Null);
        assert_eq!(s["confirmed_flush_lsn"], consistent.as_str());
        assert_eq!(s["two_phase"], false);
        assert_eq!(s["wal_status"], "reserved");
        assert_eq!(s["invalidation_reason"], serde_json::Value::Null);
        // The shared cluster keeps WAL without limit: no safe_wal_size.
        assert_eq!(s["safe_wal_size"], serde_json::Value::Null);
        assert!(s["lag_bytes"].is_u64(), "{line}");
        let (since, synced) = (&s["inactive_since"], &s["synced"]);
        if cluster.major() >= 17 {
            assert!(since.is_string() && synced == false, "{line}");
        } else {
            assert!(since.is_null() && synced.is_null(), "{line}");
        }
        assert_eq!(s["conflicting"].is_null(), cluster.major() < 16, "{line}");
        assert_eq!(find(&slots, &two_phase).unwrap()["two_phase"], true);

        // A name taken, and a slot that does not exist: the server's error, exit 4.
        let (code, stdout, stderr) = slot(&["create", &conninfo, "--slot", &name]);
        assert_eq!(code, 4, "{stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.contains("already exists"), "{stderr}");

        for s in [&name, &two_phase] {
            let (code, stdout, stderr) = slot(&["drop", &conninfo, "--slot", s, "--wait"]);
            assert_eq!(code, 0, "{stderr}");
            assert!(stdout.is_empty());
        }
        let slots = list(&conninfo);
        assert!(find(&slots, &name).is_none(), "{slots:#?}");
        // A missing slot: 5, as for every subcommand.
        let (code, _, stderr) = slot(&["drop", &conninfo, "--slot", &name]);
        assert_eq!(code, 5, "{stderr}");
        assert!(stderr.contains("does not exist"), "{stderr}");

        // A temporary slot lives as long as the command's connection.
        let temp = cluster.unique_name("cli_slot_temp");
        let (code, stdout, stderr) = slot(&["create", &conninfo, "--slot", &temp, "--temporary"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(&temp), "{stdout}");
    });
}

#[test]
fn slot_help_and_usage() {
    for sub in ["list", "create", "drop", "health"] {
        let out = bin().args(["slot", sub, "--help"]).output().unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains(&format!("walstream slot {sub}")), "{help}");
    }
    let out = bin().args(["slot", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for want in [
        "list",
        "create",
        "drop",
        "health",
        "Examples:",
        "Exit status:",
    ] {
        assert!(help.contains(want), "{want}: {help}");
    }
    // No --slot: a usage error.
    let (code, _, stderr) = slot(&["create", "host=x"]);
    assert_eq!(code, 2, "{stderr}");
    // Nothing listens there: a connection failure (a user named, so that the conninfo is
    // complete without USER: one without a user is a usage error).
    let (code, _, stderr) = slot(&["list", "host=127.0.0.1 port=1 connect_timeout=5 user=x"]);
    assert_eq!(code, 4, "{stderr}");
}

/// Runs `slot health`; returns the exit code and the one JSON object it printed.
fn health(conninfo: &str, name: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["health", conninfo, "--slot", name];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = slot(&args);
    let mut lines = stdout.lines();
    let line: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert!(lines.next().is_none(), "{stdout}");
    assert_eq!(line["name"], name, "{stderr}");
    (code, line)
}

#[test]
fn slot_health_and_a_lost_slot() {
    pgtest::for_each_installed_major(15, |major| {
        // 1 MB segments and a 1 MB allowance: a slot left behind is lost in a few checkpoints.
        let cluster = pgtest::Config::new(major)
            .initdb_arg("--wal-segsize=1")
            .setting("max_slot_wal_keep_size", "1MB")
            .setting("min_wal_size", "4MB")
            .start()
            .unwrap();
        let db = cluster.create_database("slot_health").unwrap();
        let conninfo = db.conninfo();
        let (lost, healthy) = ("lost_slot", "healthy_slot");
        db.psql(&format!(
            "CREATE TABLE u (id int, pad text);
             CREATE PUBLICATION p FOR TABLE u;
             SELECT pg_create_logical_replication_slot('{lost}', 'pgoutput');"
        ))
        .unwrap();

        let (code, line) = health(&conninfo, lost, &[]);
        assert_eq!((code, &line["status"]), (0, &"healthy".into()), "{line}");
        assert!(line["safe_wal_size"].as_i64().unwrap() > 0, "{line}");
        // A little WAL later the slot lags: a warning over --max-lag-bytes, not under.
        db.psql("INSERT INTO u SELECT g, 'x' FROM generate_series(1, 100) g")
            .unwrap();
        let (code, line) = health(&conninfo, lost, &["--max-lag-bytes", "0"]);
        assert_eq!((code, &line["status"]), (1, &"warning".into()), "{line}");
        assert!(
            line["reasons"][0].as_str().unwrap().contains("lag"),
            "{line}"
        );
        let (code, _) = health(&conninfo, lost, &["--max-lag-bytes", "1000000000"]);
        assert_eq!(code, 0);

        // Lost: WAL written and removed past it.
        for round in 0.. {
            db.psql(
                "INSERT INTO u SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g;
                 SELECT pg_switch_wal();",
            )
            .unwrap();
            db.psql("CHECKPOINT").unwrap();
            let status = db
                .psql(&format!(
                    "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{lost}'"
                ))
                .unwrap();
            if status == "lost" {
                break;
            }
            assert!(round < 40, "the slot is still {status}");
        }
        db.psql(&format!(
            "SELECT pg_create_logical_replication_slot('{healthy}', 'pgoutput')"
        ))
        .unwrap();
        let (code, line) = health(&conninfo, lost, &[]);
        assert_eq!((code, &line["status"]), (5, &"lost".into()), "{line}");
        assert_eq!(line["invalidation_reason"], "wal_removed", "{line}");
        let (code, line) = health(&conninfo, healthy, &["--max-lag-bytes", "1000000"]);
        assert_eq!((code, &line["status"]), (0, &"healthy".into()), "{line}");
        let (code, line) = health(&conninfo, "no_such_slot", &[]);
        assert_eq!((code, &line["status"]), (5, &"missing".into()), "{line}");

        let slots = list(&conninfo);
        let s = find(&slots, lost).unwrap();
        assert_eq!(s["wal_status"], "lost", "{s}");
        assert_eq!(s["invalidation_reason"], "wal_removed", "{s}");
        assert_eq!(
            find(&slots, healthy).unwrap()["invalidation_reason"],
            serde_json::Value::Null
        );
        let (code, only, stderr) = slot(&["list", &conninfo, "--slot", healthy]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(only.lines().count(), 1, "{only}");
        assert!(only.contains(healthy), "{only}");

        // tail on the lost slot: exit 5 at once, the reason on stderr.
        let started = Instant::now();
        let out = bin()
            .args(["tail", &conninfo, "--slot", lost, "--publication", "p"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{stderr}");
        assert!(
            stderr.contains(lost) && stderr.contains("wal_removed"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );

        // record, on walconn directly: 5 as well.
        let dir = tempfile::tempdir().unwrap();
        let run = bin()
            .args([
                "record",
                &conninfo,
                "--slot",
                lost,
                "--publication",
                "p",
                "--out",
            ])
            .arg(dir.path().join("lost.walcap"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(5), "{stderr}");
        assert!(stderr.contains(lost), "{stderr}");
    });
}

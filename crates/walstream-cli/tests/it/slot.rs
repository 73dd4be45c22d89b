//! `walstream slot list|create|drop` against real servers.

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
        let (code, _, stderr) = slot(&["drop", &conninfo, "--slot", &name]);
        assert_eq!(code, 4, "{stderr}");
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
    for sub in ["list", "create", "drop"] {
        let out = bin().args(["slot", sub, "--help"]).output().unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains(&format!("walstream slot {sub}")), "{help}");
    }
    let out = bin().args(["slot", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for want in ["list", "create", "drop", "Examples:", "Exit status:"] {
        assert!(help.contains(want), "{want}: {help}");
    }
    // No --slot: a usage error.
    let (code, _, stderr) = slot(&["create", "host=x"]);
    assert_eq!(code, 2, "{stderr}");
    // Nothing listens there: a connection failure.
    let (code, _, stderr) = slot(&["list", "host=127.0.0.1 port=1 connect_timeout=5"]);
    assert_eq!(code, 4, "{stderr}");
}

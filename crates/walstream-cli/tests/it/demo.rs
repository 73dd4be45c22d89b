//! `walstream demo`: a throwaway server found on this machine, changes of every kind printed,
//! and nothing left behind (no server process, no directory), after `--seconds` and after
//! SIGINT.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::record::bin;

/// What the demo reported on stderr about its cluster.
#[derive(Debug)]
struct Reported {
    major: u32,
    dir: PathBuf,
    postmaster_pid: u32,
}

fn reported(stderr: &str) -> Reported {
    let field = |name: &str| -> String {
        let start = stderr
            .find(&format!(" {name}="))
            .unwrap_or_else(|| panic!("no {name}= in stderr:\n{stderr}"))
            + name.len()
            + 2;
        stderr[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let major = stderr
        .split("using PostgreSQL ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no major version in stderr:\n{stderr}"))
        .parse()
        .unwrap();
    Reported {
        major,
        dir: PathBuf::from(field("dir")),
        postmaster_pid: field("postmaster_pid").parse().unwrap(),
    }
}

/// The demo's server and directory are gone: no process has the directory on its command line
/// and the postmaster's pid is not a live postgres.
fn assert_cleaned_up(r: &Reported) {
    assert!(r.dir.is_absolute(), "{r:?}");
    assert!(!r.dir.exists(), "{} is left behind", r.dir.display());
    let dir = r.dir.to_str().unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(dir),
            "process {:?} is left: {cmdline}",
            entry.file_name()
        );
    }
    // The demo waits for its postmaster to exit; exited but not yet reaped (state Z, its
    // parent is init) counts as gone.
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", r.postmaster_pid)) {
        let state = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        assert!(
            !stat.contains("(postgres)") || state == "Z",
            "postmaster {} is still running: {stat}",
            r.postmaster_pid
        );
    }
}

fn types(stdout: &[u8]) -> BTreeSet<String> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            v["type"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The kinds every demo run of a few seconds shows: a large transaction is streamed from
/// PostgreSQL 14 on.
fn expected_types(major: u32) -> Vec<&'static str> {
    let mut want = vec!["begin", "relation", "insert", "update", "delete", "commit"];
    if major >= 14 {
        want.extend(["stream_start", "stream_stop", "stream_commit"]);
    }
    want
}

fn check_output(out: &Output) -> Reported {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let r = reported(&stderr);
    let got = types(&out.stdout);
    for want in expected_types(r.major) {
        assert!(got.contains(want), "no {want} line; got {got:?}\n{stderr}");
    }
    // The demo table has REPLICA IDENTITY FULL: updates and deletes carry the old row.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let update = stdout
        .lines()
        .find(|l| l.starts_with(r#"{"type":"update""#))
        .unwrap();
    assert!(update.contains(r#""old":{"id":"#), "{update}");
    // Nothing but the demo's own lines of progress on stderr: no warning, no error.
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "{stderr}"
    );
    r
}

#[test]
fn demo_for_five_seconds_prints_every_kind_of_change_and_cleans_up() {
    let out = bin()
        .args(["demo", "--seconds", "5"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let r = check_output(&out);
    // The newest server installed here (16-18 come from `cargo xtask pg install`).
    let newest = pgtest::installed_majors().into_iter().max().unwrap();
    assert!(r.major >= newest, "{r:?}, newest installed {newest}");
    assert_cleaned_up(&r);
}

#[test]
fn sigint_stops_the_demo_and_cleans_up() {
    let mut child = bin()
        .arg("demo")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read until a streamed transaction has committed (PostgreSQL 14+; with an older server,
    // until plenty of lines have passed), then interrupt.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "demo ended early");
        seen.push(line.clone());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["type"] == "stream_commit" || seen.len() > 20_000 {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest = {
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut rest).unwrap();
        rest
    };
    let mut out = child.wait_with_output().unwrap();
    out.stdout = seen.concat().into_bytes();
    out.stdout.extend(rest);
    let r = check_output(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SIGINT"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_cleaned_up(&r);
}

#[test]
fn demo_help_names_what_it_does() {
    let out = bin().args(["demo", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for want in [
        "--seconds",
        "Examples:",
        "cargo xtask pg install",
        "Exit status:",
    ] {
        assert!(help.contains(want), "{want}: {help}");
    }
}

/// The oldest installed major through `--bin-dir` (PostgreSQL 15 on Debian: `streaming = on`,
/// protocol 3, and `psql` beside it, which the demo does not need).
#[test]
fn demo_with_the_oldest_installed_server() {
    let oldest = pgtest::installed_majors().into_iter().min().unwrap();
    let dir = pgtest::bin_dir(oldest).unwrap();
    let out = bin()
        .args(["demo", "--seconds", "5", "--bin-dir"])
        .arg(&dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let r = check_output(&out);
    assert_eq!(r.major, oldest);
    assert_cleaned_up(&r);
}

#[test]
fn no_server_binaries_says_what_to_install_and_exits_4() {
    let out = bin()
        .args(["demo", "--bin-dir", "/nonexistent/bin"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(out.stdout.is_empty());
    for want in [
        "/nonexistent/bin does not hold postgres, initdb and pg_ctl",
        "apt-get install postgresql-15",
        "cargo xtask pg install",
    ] {
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
}

#[test]
fn a_server_that_goes_away_ends_the_demo_with_exit_4_and_nothing_left() {
    let mut child = bin()
        .arg("demo")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut head = String::new();
    let r = loop {
        let line = stderr.next().expect("the demo ended early").unwrap();
        head.push_str(&line);
        head.push('\n');
        if line.contains("postmaster_pid=") {
            break reported(&head);
        }
    };
    // Drain stdout on a thread (the demo must never block on it), telling us when the first
    // transaction has been printed.
    let stdout = child.stdout.take().unwrap();
    let (printed, first_commit) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.starts_with(r#"{"type":"commit""#) {
                let _ = printed.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    first_commit
        .recv()
        .expect("the demo ended before printing a transaction");
    // A fast shutdown of the server, behind the demo's back.
    let status = Command::new("kill")
        .args(["-INT", &r.postmaster_pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: String = stderr.map(|l| l.unwrap() + "\n").collect();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(status.code(), Some(4), "{head}{rest}");
    assert!(rest.contains("error: walstream demo: "), "{head}{rest}");
    assert_cleaned_up(&r);
}

//! Owned clusters: configuration, and removal on drop, on panic and when the process dies.

use std::process::{Command, Stdio};

use crate::{eventually, postmaster_pid, process_exists, some_major};

#[test]
fn extra_settings_and_hba_lines_apply() {
    let cluster = pgtest::Config::new(some_major())
        .setting("logical_decoding_work_mem", "64kB")
        .setting("application_name", "it's configured")
        .hba_line("host all nobody 127.0.0.1/32 reject")
        .file("extra.txt", "hello")
        .start()
        .unwrap();
    assert_eq!(
        cluster
            .psql("postgres", "SHOW logical_decoding_work_mem")
            .unwrap(),
        "64kB"
    );
    assert_eq!(
        cluster
            .psql("postgres", "SHOW max_prepared_transactions")
            .unwrap(),
        "20"
    );
    let hba = std::fs::read_to_string(cluster.data_dir().join("pg_hba.conf")).unwrap();
    assert!(
        hba.starts_with("# Written by pgtest.\nhost all nobody"),
        "{hba}"
    );
    assert_eq!(
        std::fs::read_to_string(cluster.data_dir().join("extra.txt")).unwrap(),
        "hello"
    );
}

#[test]
fn drop_stops_the_server_and_removes_the_directory() {
    let cluster = pgtest::Config::new(some_major()).start().unwrap();
    let dir = cluster.data_dir().parent().unwrap().to_path_buf();
    let pid = postmaster_pid(&cluster.data_dir());
    assert!(dir.starts_with(pgtest::root_dir()));
    assert!(process_exists(pid));
    drop(cluster);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        eventually(10, || !process_exists(pid)),
        "postmaster {pid} still runs"
    );
}

#[test]
fn a_panicking_test_still_removes_its_cluster() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let cluster = pgtest::Config::new(some_major()).start().unwrap();
        tx.send((cluster.data_dir(), postmaster_pid(&cluster.data_dir())))
            .unwrap();
        panic!("the test failed");
    });
    assert!(result.is_err());
    let (data, pid) = rx.recv().unwrap();
    assert!(!data.exists(), "{} still exists", data.display());
    assert!(
        eventually(10, || !process_exists(pid)),
        "postmaster {pid} still runs"
    );
}

/// Run by `a_killed_test_process_is_cleaned_up_by_the_watchdog` in a child process.
#[test]
fn helper_start_and_wait_to_be_killed() {
    if std::env::var_os("PGTEST_HELPER").is_none() {
        return;
    }
    let cluster = pgtest::Config::new(some_major()).start().unwrap();
    println!("DATA={}", cluster.data_dir().display());
    println!("PID={}", postmaster_pid(&cluster.data_dir()));
    std::thread::sleep(std::time::Duration::from_secs(120));
}

#[test]
fn a_killed_test_process_is_cleaned_up_by_the_watchdog() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lifecycle::helper_start_and_wait_to_be_killed",
            "--nocapture",
        ])
        .env("PGTEST_HELPER", "1")
        .env_remove("NEXTEST_RUN_ID")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut data = None;
    let mut pid = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(d) = line.strip_prefix("DATA=") {
            data = Some(std::path::PathBuf::from(d));
        }
        if let Some(p) = line.strip_prefix("PID=") {
            pid = Some(p.parse::<u32>().unwrap());
            break;
        }
    }
    let (data, pid) = (
        data.expect("helper printed DATA="),
        pid.expect("helper printed PID="),
    );
    assert!(data.exists());
    child.kill().unwrap(); // SIGKILL: no destructor runs.
    child.wait().unwrap();
    assert!(
        eventually(30, || !data.exists()),
        "{} still exists",
        data.display()
    );
    assert!(
        eventually(10, || !process_exists(pid)),
        "postmaster {pid} still runs"
    );
}

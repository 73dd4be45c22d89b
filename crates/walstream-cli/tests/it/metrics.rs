//! `tail --metrics-addr` and `record --metrics-addr` scraped during a live run (CLI.md's
//! names and types, values that move), and `--stats-interval`'s line on stderr.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::record::{bin, setup};

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on the local `port`: the status line and the body.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(socket, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    Some((head.lines().next().unwrap().to_owned(), body.to_owned()))
}

/// Waits (30 s at most) for the endpoint on `port` to answer `/metrics`.
fn first_scrape(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((status, body)) = get(port, "/metrics") {
            assert_eq!(status, "HTTP/1.1 200 OK");
            return body;
        }
        assert!(Instant::now() < deadline, "no /metrics endpoint");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the sample `name{labels}` (labels exactly as printed).
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        .parse()
        .unwrap()
}

/// Sends SIGINT and returns what the child wrote.
fn interrupt(child: Child) -> std::process::Output {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}

#[test]
fn tail_serves_prometheus_metrics_that_move_during_the_run() {
    let cluster = pgtest::cluster(15);
    let (db, slot) = setup(cluster, "tail_metrics");
    let port = free_port();
    let mut child = bin()
        .args([
            "tail",
            &db.conninfo(),
            "--slot",
            &slot,
            "--publication",
            "p",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--status-interval", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The endpoint comes up once the stream has started.
    let before = first_scrape(port);
    let s = |name: &str| format!("{name}{{slot=\"{slot}\"}}");
    let insert = format!("walstream_events_total{{slot=\"{slot}\",kind=\"insert\"}}");
    assert_eq!(sample(&before, &insert), 0.0);
    assert_eq!(sample(&before, &s("walstream_transactions_total")), 0.0);
    for (name, kind) in [
        ("walstream_received_lsn", "gauge"),
        ("walstream_flushed_lsn", "gauge"),
        ("walstream_server_wal_end_lsn", "gauge"),
        ("walstream_lag_bytes", "gauge"),
        ("walstream_lag_seconds", "gauge"),
        ("walstream_events_total", "counter"),
        ("walstream_transactions_total", "counter"),
        ("walstream_received_bytes_total", "counter"),
        ("walstream_reconnects_total", "counter"),
        ("walstream_status_updates_total", "counter"),
        ("walstream_spilled_bytes_total", "counter"),
    ] {
        assert!(
            before.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind}:\n{before}"
        );
    }
    db.psql("INSERT INTO t VALUES (1, 'one'), (2, 'two'); INSERT INTO t VALUES (3, 'three');")
        .unwrap();
    // Two transactions printed.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut commits = 0;
    let mut line = String::new();
    while commits < 2 {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "tail ended early");
        commits += usize::from(line.contains("\"type\":\"commit\""));
    }
    // Counted, acknowledged (tail acknowledges within a second), and reported.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let (_, body) = get(port, "/metrics").unwrap();
        if sample(&body, &s("walstream_flushed_lsn")) > sample(&before, &s("walstream_flushed_lsn"))
            && sample(&body, &s("walstream_lag_bytes")) == 0.0
            && body.contains("walstream_slot_wal_status{")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "never caught up:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(sample(&after, &insert), 3.0);
    assert_eq!(sample(&after, &s("walstream_transactions_total")), 2.0);
    assert_eq!(sample(&after, &s("walstream_lag_seconds")), 0.0);
    // The slot check read the slot at the start: its wal_status, one sample per status.
    let status =
        |name: &str| format!("walstream_slot_wal_status{{slot=\"{slot}\",status=\"{name}\"}}");
    assert_eq!(sample(&after, &status("reserved")), 1.0, "{after}");
    assert_eq!(sample(&after, &status("lost")), 0.0, "{after}");
    assert!(after.contains("# TYPE walstream_slot_wal_status gauge\n"));
    assert!(
        sample(&after, &s("walstream_received_bytes_total"))
            > sample(&before, &s("walstream_received_bytes_total"))
    );
    assert!(
        sample(&after, &s("walstream_received_lsn"))
            > sample(&before, &s("walstream_received_lsn"))
    );
    assert!(sample(&after, &s("walstream_status_updates_total")) > 0.0);
    // tail prints events as they come: it holds no transaction, so it never spills.
    assert_eq!(sample(&after, &s("walstream_spilled_bytes_total")), 0.0);
    assert_eq!(get(port, "/other").unwrap().0, "HTTP/1.1 404 Not Found");
    let out = interrupt(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The endpoint went with the stream.
    assert!(get(port, "/metrics").is_none());
}

#[test]
fn tail_stats_interval_prints_a_progress_and_lag_line_on_stderr() {
    let cluster = pgtest::cluster(15);
    let (db, slot) = setup(cluster, "tail_stats_line");
    let child = bin()
        .args([
            "tail",
            &db.conninfo(),
            "--slot",
            &slot,
            "--publication",
            "p",
        ])
        .args(["--stats-interval", "1", "--status-interval", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let before: walproto::Lsn = db.query("SELECT pg_current_wal_insert_lsn()").unwrap()[0][0]
        .parse()
        .unwrap();
    db.psql("INSERT INTO t VALUES (1, 'one')").unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let out = interrupt(child);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("walstream: received "))
        .collect();
    assert!(lines.len() >= 2, "{stderr}");
    let last = lines.last().unwrap();
    assert!(last.contains("1 transactions"), "{last}");
    // Caught up: the insert is acknowledged, so no lag in time. The lag in bytes is the
    // server's wal_end less what was acknowledged or reported: other tests share this
    // cluster and write WAL this slot passes over, so it need not be 0 at this instant.
    assert!(last.contains(" bytes 0.0 s;"), "{last}");
    let field = |name: &str| -> &str {
        let rest = &last[last
            .find(name)
            .unwrap_or_else(|| panic!("{name} in {last}"))
            + name.len()..];
        rest.split([',', ' ']).next().unwrap()
    };
    let lsn = |name: &str| -> walproto::Lsn { field(name).parse().unwrap() };
    let acknowledged = lsn("acknowledged ");
    let wal_end = lsn("server wal_end ");
    let lag: u64 = field(", lag ").parse().unwrap();
    assert!(acknowledged > before, "{last}");
    assert!(lag <= wal_end.get() - acknowledged.get(), "{last}");
    // Without the option, no such line.
    let quiet = bin()
        .args([
            "tail",
            &db.conninfo(),
            "--slot",
            &slot,
            "--publication",
            "p",
        ])
        .args(["--end", "0/1"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("walstream: received "));
}

#[test]
fn record_serves_prometheus_metrics_of_what_it_records() {
    let cluster = pgtest::cluster(15);
    let (db, slot) = setup(cluster, "record_metrics");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = bin()
        .args([
            "record",
            &db.conninfo(),
            "--slot",
            &slot,
            "--publication",
            "p",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--status-interval", "1"])
        .arg("--out")
        .arg(dir.path().join("cap.walcap"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let before = first_scrape(port);
    let s = |name: &str| format!("{name}{{slot=\"{slot}\"}}");
    let insert = format!("walstream_events_total{{slot=\"{slot}\",kind=\"insert\"}}");
    assert_eq!(sample(&before, &insert), 0.0);
    for name in ["walstream_received_lsn", "walstream_lag_bytes"] {
        assert!(before.contains(&format!("# TYPE {name} gauge\n")), "{name}");
    }
    db.psql("INSERT INTO t VALUES (1, 'one'), (2, 'two'); INSERT INTO t VALUES (3, 'three');")
        .unwrap();
    // Recorded, synced and acknowledged at a status update (every second).
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let (_, body) = get(port, "/metrics").unwrap();
        if sample(&body, &s("walstream_transactions_total")) == 2.0
            && sample(&body, &s("walstream_lag_seconds")) == 0.0
            && sample(&body, &s("walstream_flushed_lsn"))
                > sample(&before, &s("walstream_flushed_lsn"))
        {
            break body;
        }
        assert!(Instant::now() < deadline, "never caught up:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Raw frames counted as the pgoutput messages they hold.
    assert_eq!(sample(&after, &insert), 3.0);
    let commits = format!("walstream_events_total{{slot=\"{slot}\",kind=\"commit\"}}");
    assert_eq!(sample(&after, &commits), 2.0);
    assert!(sample(&after, &s("walstream_received_bytes_total")) > 0.0);
    assert!(sample(&after, &s("walstream_status_updates_total")) > 0.0);
    assert!(
        sample(&after, &s("walstream_server_wal_end_lsn"))
            >= sample(&after, &s("walstream_flushed_lsn"))
    );
    let out = interrupt(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(get(port, "/metrics").is_none());
}

#[test]
fn record_stats_interval_reports_frames_and_bytes() {
    let cluster = pgtest::cluster(15);
    let (db, slot) = setup(cluster, "record_stats_line");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap.walcap");
    let record = |extra: &[&str]| {
        let mut c = bin();
        c.args([
            "record",
            &db.conninfo(),
            "--slot",
            &slot,
            "--publication",
            "p",
        ])
        .args(extra)
        .arg("--out")
        .arg(&out);
        c
    };
    let child = record(&["--stats-interval", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    db.psql("INSERT INTO t VALUES (1, 'one')").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let stderr = String::from_utf8(interrupt(child).stderr).unwrap();
    let last = stderr
        .lines()
        .rfind(|l| l.starts_with("walstream record: "))
        .unwrap_or_else(|| panic!("no progress line:\n{stderr}"));
    let frames: u64 = last["walstream record: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(frames >= 4, "{last}");
    assert!(!last.contains(" 0 bytes written"), "{last}");
}

#[test]
fn tail_snapshot_prints_each_table_copied_on_stderr() {
    let cluster = pgtest::cluster(15);
    let db = cluster.create_database("tail_snap_progress").unwrap();
    let slot = cluster.unique_name("snap_progress");
    db.psql(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION p FOR TABLE t;
         INSERT INTO t SELECT g, 'x' FROM generate_series(1, 50) g;",
    )
    .unwrap();
    let child = bin()
        .args([
            "tail",
            &db.conninfo(),
            "--slot",
            &slot,
            "--publication",
            "p",
        ])
        .args(["--create-slot", "--snapshot", "--temporary"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let out = interrupt(child);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let line = stderr
        .lines()
        .find(|l| l.starts_with("walstream: snapshot: public.t copied"))
        .unwrap_or_else(|| panic!("no snapshot progress:\n{stderr}"));
    assert!(line.contains(", 50 rows, "), "{line}");
}

//! The latency bench: how long a commit takes to reach each consumer.
//!
//! On PostgreSQL 15 (the one major with `test_decoding` installed here), for each rate (20,
//! 200, 2,000 and 20,000 a second by default; `--latency-rates`), a writer commits single-row
//! transactions at that rate for `--latency-seconds` (a PL/pgSQL loop that sleeps until each
//! commit's due time, so commits come in bursts of a millisecond's worth when the rate is over
//! 1,000 a second: `pg_sleep` sleeps whole milliseconds). Every consumer follows its own slot,
//! created just before, side by side in the same run:
//!
//! - `walstream`: an `EventStream` (`drain-walstream walstream-latency`, default options but
//!   pgoutput protocol 1), printing each Commit's commit time as it arrives;
//! - `walstream tail`: the CLI's JSON lines (the `commit` lines' `commit_time`);
//! - `pg_walstream`: `drain-pg-walstream pg_walstream-latency`, the same as walstream's;
//! - `pg_recvlogical`: PostgreSQL 15's, with `test_decoding` (its own slot) and
//!   `include-timestamp`, which prints `COMMIT xid (at TIMESTAMP)` (`PGTZ=UTC`).
//!
//! The bench reads each consumer's stdout on a thread of its own and stamps every line with
//! the wall clock as it reads it; a commit's latency is that arrival minus the server's commit
//! time (the same host, so the same clock). The report gives p50, p99 and max per consumer and
//! rate, and how many of the commits each consumer saw.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use walproto::Timestamp;

use super::options::Options;
use super::BASE_MAJOR;
use crate::Result;

/// The consumers, in the report's order.
pub(super) const LATENCY_CONSUMERS: [&str; 4] = [
    "walstream",
    "walstream tail",
    "pg_walstream",
    "pg_recvlogical",
];

/// The default rates, commits a second.
pub(super) const LATENCY_RATES: [u64; 4] = [20, 200, 2_000, 20_000];

/// How long the consumers may take to connect, and to catch up after the writer is done.
const SETTLE: Duration = Duration::from_secs(30);

/// The latency bench's results.
pub(super) struct Latency {
    /// The server's version string.
    version: String,
    /// Seconds of writing per rate.
    seconds: u64,
    /// One per rate.
    rates: Vec<RateRun>,
}

/// One rate's run.
struct RateRun {
    /// Commits a second asked for.
    rate: u64,
    /// Commits a second the writer reached.
    achieved: f64,
    /// Commits written.
    commits: u64,
    /// One per consumer of [`LATENCY_CONSUMERS`], in its order.
    consumers: Vec<Percentiles>,
}

/// One consumer's latencies at one rate, milliseconds.
#[derive(Default)]
struct Percentiles {
    seen: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

/// What the programs are.
pub(super) struct Programs<'a> {
    /// The directory of `drain-walstream` and `drain-pg-walstream`.
    pub(super) drain_bins: &'a Path,
    /// The `walstream` binary.
    pub(super) walstream: &'a Path,
    /// PostgreSQL 15's `pg_recvlogical`.
    pub(super) recvlogical: &'a Path,
}

/// Runs the bench at every rate of `opts`.
pub(super) fn run_bench(opts: &Options, programs: &Programs<'_>) -> Result<Latency> {
    eprintln!("==> latency: starting PostgreSQL {BASE_MAJOR}");
    let cluster = pgtest::Config::new(BASE_MAJOR)
        .start()
        .map_err(|e| format!("starting PostgreSQL {BASE_MAJOR}: {e}"))?;
    let version = cluster
        .server_version()
        .map_err(|e| format!("server version: {e}"))?;
    let db = cluster
        .create_database("latency")
        .map_err(|e| format!("create database: {e}"))?;
    db.psql(
        "CREATE TABLE lat (id int8 PRIMARY KEY, v text NOT NULL);\n\
         CREATE PUBLICATION lat_pub FOR TABLE lat;",
    )
    .map_err(|e| format!("schema: {e}"))?;
    let conninfo = db.conninfo();
    let mut rates = Vec::new();
    let mut first_id = 0;
    for &rate in &opts.latency_rates {
        let run = run_rate(
            &db,
            &conninfo,
            programs,
            rate,
            opts.latency_seconds,
            first_id,
        )?;
        first_id += run.commits;
        rates.push(run);
    }
    drop(cluster);
    Ok(Latency {
        version,
        seconds: opts.latency_seconds,
        rates,
    })
}

/// One consumer as a running child and what its reader thread collected: `(arrival, commit)`
/// Unix microseconds per commit line.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<(i64, i64)>>>,
    reader: std::thread::JoinHandle<()>,
}

fn run_rate(
    db: &pgtest::Database<'_>,
    conninfo: &str,
    programs: &Programs<'_>,
    rate: u64,
    seconds: u64,
    first_id: u64,
) -> Result<RateRun> {
    let commits = rate * seconds;
    eprintln!("==> latency: {commits} commits at {rate}/s");
    let slot = |i: usize| format!("lat_{rate}_{i}");
    let mut create = String::new();
    for (i, consumer) in LATENCY_CONSUMERS.iter().enumerate() {
        let plugin = if *consumer == "pg_recvlogical" {
            "test_decoding"
        } else {
            "pgoutput"
        };
        create.push_str(&format!(
            "SELECT 1 FROM pg_create_logical_replication_slot('{}', '{plugin}');\n",
            slot(i)
        ));
    }
    db.psql(&create)
        .map_err(|e| format!("creating slots: {e}"))?;

    let mut running = Vec::new();
    for (i, consumer) in LATENCY_CONSUMERS.iter().enumerate() {
        let mut cmd = command(programs, consumer, conninfo, &slot(i));
        running.push(spawn(&mut cmd, consumer)?);
    }
    let result = measure_rate(db, rate, seconds, first_id, &slot, &mut running);
    let mut consumers = Vec::new();
    for r in running {
        let mut r = r;
        // Ours, by handle: the consumers follow their slots until stopped.
        let _ = r.child.kill();
        let _ = r.child.wait();
        let _ = r.reader.join();
        let lines = r.lines.lock().map(|l| l.clone()).unwrap_or_default();
        consumers.push(percentiles(&lines));
    }
    let achieved = result?;
    Ok(RateRun {
        rate,
        achieved,
        commits,
        consumers,
    })
}

/// Waits for every consumer to be streaming, writes, waits for every consumer to have seen
/// every commit (or [`SETTLE`]); the rate the writer reached.
fn measure_rate(
    db: &pgtest::Database<'_>,
    rate: u64,
    seconds: u64,
    first_id: u64,
    slot: &dyn Fn(usize) -> String,
    running: &mut [Running],
) -> Result<f64> {
    let commits = rate * seconds;
    let names: Vec<String> = (0..LATENCY_CONSUMERS.len()).map(slot).collect();
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(",");
    let deadline = Instant::now() + SETTLE;
    loop {
        let active = db
            .psql(&format!(
                "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name IN ({list})"
            ))
            .map_err(|e| format!("slot activity: {e}"))?;
        if active.trim() == LATENCY_CONSUMERS.len().to_string() {
            break;
        }
        for (r, name) in running.iter_mut().zip(LATENCY_CONSUMERS) {
            if let Ok(Some(status)) = r.child.try_wait() {
                return Err(format!("latency: {name} exited before streaming: {status}"));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "latency: only {} of the consumers streaming after {SETTLE:?}",
                active.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let interval_us = 1_000_000 / rate.max(1);
    let started = Instant::now();
    db.psql(&format!(
        "DO $$\n\
         DECLARE\n\
           t0 timestamptz := clock_timestamp();\n\
           ahead float8;\n\
         BEGIN\n\
           FOR i IN 1..{commits} LOOP\n\
             ahead := extract(epoch FROM t0 + i * interval '{interval_us} microseconds' \
                      - clock_timestamp());\n\
             IF ahead > 0 THEN PERFORM pg_sleep(ahead); END IF;\n\
             INSERT INTO lat (id, v) VALUES ({first_id} + i, 'row ' || i);\n\
             COMMIT;\n\
           END LOOP;\n\
         END $$;"
    ))
    .map_err(|e| format!("latency writer: {e}"))?;
    let achieved = commits as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        let done = running
            .iter()
            .all(|r| r.lines.lock().is_ok_and(|l| l.len() as u64 >= commits));
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(achieved)
}

/// The command line of `consumer` following `slot`.
fn command(programs: &Programs<'_>, consumer: &str, conninfo: &str, slot: &str) -> Command {
    match consumer {
        "walstream tail" => {
            let mut cmd = Command::new(programs.walstream);
            cmd.args(["tail", "--slot", slot, "--publication", "lat_pub"])
                .args(["--proto-version", "1", conninfo]);
            cmd
        }
        "pg_recvlogical" => {
            let mut cmd = Command::new(programs.recvlogical);
            cmd.args(["-d", conninfo, "--slot", slot, "--start"])
                .args(["-o", "include-timestamp=1", "-o", "skip-empty-xacts=1"])
                .args(["-f", "-"])
                .env("PGTZ", "UTC");
            cmd
        }
        _ => {
            let (bin, mode) = if consumer == "pg_walstream" {
                ("drain-pg-walstream", "pg_walstream-latency")
            } else {
                ("drain-walstream", "walstream-latency")
            };
            let mut cmd = Command::new(programs.drain_bins.join(bin));
            cmd.args([mode, conninfo, slot, "lat_pub", "0/0"]);
            cmd
        }
    }
}

/// Starts `cmd` with its stdout read by a thread that stamps each commit line.
fn spawn(cmd: &mut Command, name: &str) -> Result<Running> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| format!("{name}: no stdout"))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            let arrival = unix_micros_now();
            if let Some(commit) = commit_micros(&line) {
                if let Ok(mut list) = collected.lock() {
                    list.push((arrival, commit));
                }
            }
            line.clear();
        }
    });
    Ok(Running {
        child,
        lines,
        reader,
    })
}

fn unix_micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The commit time (Unix microseconds) a consumer's line reports, if it is a commit line:
/// `commit MICROS` (the drain consumers), a JSON `commit` line with `"commit_time":"RFC 3339"`
/// (`walstream tail`), or `COMMIT xid (at 2026-12-03 18:00:00.123456+00)` (test_decoding).
fn commit_micros(line: &str) -> Option<i64> {
    let line = line.trim_end();
    if let Some(micros) = line.strip_prefix("commit ") {
        return micros.parse().ok();
    }
    let text = if line.starts_with("{\"type\":\"commit\"") {
        let (_, rest) = line.split_once("\"commit_time\":\"")?;
        rest.split_once('"')?.0.to_owned()
    } else if line.starts_with("COMMIT") {
        let (_, rest) = line.split_once("(at ")?;
        let at = rest.strip_suffix(')')?;
        // PostgreSQL's `2026-12-03 18:00:00.123456+00` as RFC 3339.
        format!("{}:00", at.replacen(' ', "T", 1))
    } else {
        return None;
    };
    Timestamp::from_str(&text).ok()?.unix_micros()
}

/// p50, p99 and max of arrival minus commit, milliseconds.
fn percentiles(lines: &[(i64, i64)]) -> Percentiles {
    let mut lat: Vec<i64> = lines.iter().map(|(a, c)| a - c).collect();
    if lat.is_empty() {
        return Percentiles::default();
    }
    lat.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
        lat.get(rank - 1).copied().unwrap_or(0) as f64 / 1000.0
    };
    Percentiles {
        seen: lat.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// The report's Markdown section.
pub(super) fn report_md(l: &Latency) -> String {
    let mut md = format!(
        "\n## Latency (PostgreSQL {}, {} s per rate)\n\n\
         Single-row transactions committed at a fixed rate; each consumer follows its own slot, \
         all at once. Arrival (when the bench read the consumer's line) minus the server's \
         commit time, milliseconds: p50 / p99 / max (commits seen of those written).\n\n\
         | rate/s (reached) |",
        l.version, l.seconds
    );
    for c in LATENCY_CONSUMERS {
        md.push_str(&format!(" {c} |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(LATENCY_CONSUMERS.len()));
    md.push('\n');
    for r in &l.rates {
        md.push_str(&format!("| {} ({:.0}) |", r.rate, r.achieved));
        for p in &r.consumers {
            md.push_str(&format!(
                " {:.2} / {:.2} / {:.2} ({}/{}) |",
                p.p50, p.p99, p.max, p.seen, r.commits
            ));
        }
        md.push('\n');
    }
    md
}

/// Adds `"latency": {...}` to the report's JSON object.
pub(super) fn add_json(json: &mut String, l: &Latency) {
    let mut rates = Vec::new();
    for r in &l.rates {
        let consumers: Vec<String> = LATENCY_CONSUMERS
            .iter()
            .zip(&r.consumers)
            .map(|(name, p)| {
                format!(
                    "{{\"consumer\": \"{name}\", \"seen\": {}, \"p50_ms\": {:.3}, \
                     \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
                    p.seen, p.p50, p.p99, p.max
                )
            })
            .collect();
        rates.push(format!(
            "{{\"rate\": {}, \"reached\": {:.1}, \"commits\": {}, \"consumers\": [{}]}}",
            r.rate,
            r.achieved,
            r.commits,
            consumers.join(", ")
        ));
    }
    let section = format!(
        ",\n  \"latency\": {{\"server_version\": \"{}\", \"seconds\": {}, \"rates\": [\n    {}\n  ]}}\n}}",
        l.version.replace('"', "'"),
        l.seconds,
        rates.join(",\n    ")
    );
    if let Some(end) = json.rfind('}') {
        json.truncate(end);
        let trimmed = json.trim_end().len();
        json.truncate(trimmed);
        json.push_str(&section);
        json.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_lines_of_every_consumer_are_read() {
        let micros = Timestamp::from_str("2026-12-03T18:00:00.123456Z")
            .ok()
            .and_then(Timestamp::unix_micros);
        assert!(micros.is_some());
        assert_eq!(commit_micros("commit 42\n"), Some(42));
        assert_eq!(
            commit_micros(
                "{\"type\":\"commit\",\"lsn\":\"0/1\",\"commit_time\":\"2026-12-03T18:00:00.123456Z\"}"
            ),
            micros
        );
        assert_eq!(
            commit_micros("COMMIT 745 (at 2026-12-03 18:00:00.123456+00)\n"),
            micros
        );
        assert_eq!(commit_micros("BEGIN 745"), None);
        assert_eq!(
            commit_micros("{\"type\":\"begin\",\"commit_time\":\"x\"}"),
            None
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let lines: Vec<(i64, i64)> = (1..=100).map(|i| (i * 1000, 0)).collect();
        let p = percentiles(&lines);
        assert_eq!((p.seen, p.p50, p.p99, p.max), (100, 50.0, 99.0, 100.0));
        assert_eq!(percentiles(&[]).seen, 0);
    }

    #[test]
    fn the_json_section_goes_inside_the_object() {
        let mut json = "{\n  \"quick\": false\n}\n".to_owned();
        let l = Latency {
            version: "15.10".to_owned(),
            seconds: 1,
            rates: vec![],
        };
        add_json(&mut json, &l);
        assert!(json.starts_with("{\n  \"quick\": false,\n  \"latency\": {"));
        assert!(json.ends_with("]}\n}\n"));
    }
}

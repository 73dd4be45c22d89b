//! The many-streams bench: one process following many slots on one tokio runtime.
//!
//! On a throwaway PostgreSQL 15 with `wal_sender_timeout = 10s` (so a status update later than
//! that disconnects the stream), `--many-streams N` slots (default 100) spread over up to five
//! databases (20 each at the default) are followed by one `many-streams` process
//! (`benches/drain/src/bin/many-streams.rs`), which opens an `EventStream` per slot with the
//! default options and acknowledges every transaction. The same workload, on one database
//! through one stream, is the baseline, measured in the same run by the same binary:
//!
//! 1. the process starts (`empty`: its runtime, no stream), connects every stream
//!    (`connected`) and stays idle for [`IDLE_SECONDS`] (`idle`: longer than
//!    `wal_sender_timeout`, so a stream whose status updates stop is disconnected);
//! 2. every database gets a steady trickle of single-row commits, all databases at once
//!    (`trickle`: every stream has counted every row);
//! 3. every database gets one burst, a transaction of many rows (`burst`);
//! 4. a few idle seconds more (`after`), then `malloc_trim(0)` (`trimmed`: what glibc kept
//!    but nothing uses is given back), then the process quits.
//!
//! The consumer reports its own `VmRSS`/`VmHWM` (the kernel's figures, not the library's)
//! and `getrusage` CPU time at each phase, and the sum of its streams' reconnects. Beside it
//! the bench samples `pg_stat_replication.reply_time` of every stream's walsender twice a
//! second: the longest interval between two status updates a walsender received, and whether
//! a stream's walsender changed (it was disconnected).
//!
//! The figures: RSS per idle stream, `(idle - empty) / N`, against the 150 KB; CPU
//! time per row over the trickle and the burst, N streams over one; the longest status-update
//! interval against `wal_sender_timeout`. Each runtime flavour of `--many-runtime` (default
//! both: `current`, a current-thread runtime, and `multi`, a worker per core) is one run of
//! the whole.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::options::Options;
use super::stats::Ratio;
use super::BASE_MAJOR;
use crate::Result;

/// The runtime flavours `many-streams` knows, in the report's order.
pub(super) const MANY_RUNTIMES: [&str; 2] = ["current", "multi"];

/// The most databases the streams are spread over.
const MAX_DATABASES: usize = 5;

/// The server's `wal_sender_timeout`, seconds: a stream whose status updates are later than
/// this is disconnected.
const SENDER_TIMEOUT_S: u64 = 10;

/// How long the streams stay idle after connecting (quick: [`QUICK_IDLE_SECONDS`]): longer
/// than `wal_sender_timeout`.
const IDLE_SECONDS: u64 = 25;
/// [`IDLE_SECONDS`] with `--quick`.
const QUICK_IDLE_SECONDS: u64 = 12;

/// Commits a second of the trickle, in each database.
const TRICKLE_RATE: u64 = 20;

/// The targets: RSS per idle stream, KB; CPU per row against one stream.
const TARGET_RSS_PER_STREAM_KB: f64 = 150.0;
/// The most CPU time per row N streams may take per CPU time per row of one.
const TARGET_CPU_RATIO: f64 = 1.2;

/// How often `pg_stat_replication` is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// The sizes of one run of the bench.
#[derive(Clone, Copy)]
struct Workload {
    /// Databases.
    databases: usize,
    /// Slots (streams) per database.
    per_db: usize,
    /// Seconds idle after connecting.
    idle_s: u64,
    /// Seconds of trickle.
    trickle_s: u64,
    /// Rows of each database's burst.
    burst_rows: u64,
}

impl Workload {
    fn new(opts: &Options) -> Workload {
        let n = opts.many_streams.max(1);
        let databases = (1..=MAX_DATABASES.min(n))
            .rev()
            .find(|d| n.is_multiple_of(*d))
            .unwrap_or(1);
        Workload {
            databases,
            per_db: n / databases,
            idle_s: if opts.quick {
                QUICK_IDLE_SECONDS
            } else {
                IDLE_SECONDS
            },
            trickle_s: if opts.quick { 5 } else { 20 },
            burst_rows: if opts.quick { 5_000 } else { 50_000 },
        }
    }

    fn streams(&self) -> usize {
        self.databases * self.per_db
    }

    fn trickle_rows(&self) -> u64 {
        TRICKLE_RATE * self.trickle_s
    }
}

/// What the consumer reported at one phase (see `many-streams`' docs).
#[derive(Clone, Debug, Default, PartialEq)]
struct Phase {
    name: String,
    rows: u64,
    min_rows: u64,
    rss_kib: u64,
    hwm_kib: u64,
    cpu_us: u64,
    reconnects: u64,
    failed: u64,
}

impl Phase {
    /// A `phase NAME key=value...` line.
    fn parse(line: &str) -> Option<Phase> {
        let mut words = line.split_whitespace();
        if words.next()? != "phase" {
            return None;
        }
        let mut p = Phase {
            name: words.next()?.to_owned(),
            ..Phase::default()
        };
        let mut user_sys = 0;
        for w in words {
            let (k, v) = w.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "rows" => p.rows = v,
                "min_rows" => p.min_rows = v,
                "rss_kib" => p.rss_kib = v,
                "hwm_kib" => p.hwm_kib = v,
                "user_us" | "sys_us" => user_sys += v,
                "reconnects" => p.reconnects = v,
                "failed" => p.failed = v,
                _ => {}
            }
        }
        p.cpu_us = user_sys;
        Some(p)
    }
}

/// One consumer process's run: its phases and what the server saw.
#[derive(Default)]
struct Run {
    streams: usize,
    phases: Vec<Phase>,
    /// The longest interval between two status updates of one walsender, seconds.
    max_reply_gap_s: f64,
    /// Streams whose walsender changed or went away while sampled.
    walsenders_replaced: usize,
}

impl Run {
    fn phase(&self, name: &str) -> Phase {
        self.phases
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .unwrap_or_default()
    }

    /// (RSS at `idle` - RSS at `empty`) / streams, KB.
    fn rss_per_stream_kb(&self) -> f64 {
        let (idle, empty) = (self.phase("idle").rss_kib, self.phase("empty").rss_kib);
        (idle as f64 - empty as f64) * 1.024 / self.streams.max(1) as f64
    }

    /// CPU microseconds per row from `idle` to `burst`.
    fn cpu_per_row_us(&self) -> f64 {
        let (a, b) = (self.phase("idle"), self.phase("burst"));
        (b.cpu_us.saturating_sub(a.cpu_us)) as f64 / (b.rows.saturating_sub(a.rows)).max(1) as f64
    }

    /// CPU milliseconds per stream per second while idle.
    fn idle_cpu_ms(&self, idle_s: u64) -> f64 {
        let (a, b) = (self.phase("connected"), self.phase("idle"));
        b.cpu_us.saturating_sub(a.cpu_us) as f64
            / 1000.0
            / idle_s.max(1) as f64
            / self.streams.max(1) as f64
    }
}

/// One flavour's baseline and many-streams runs.
struct FlavourRun {
    flavour: String,
    single: Run,
    many: Run,
}

/// The bench's results.
pub(super) struct Many {
    version: String,
    work: Workload,
    runs: Vec<FlavourRun>,
}

/// Runs the bench with `many-streams` of `drain_bins`, for every flavour of `opts`.
pub(super) fn run_bench(opts: &Options, drain_bins: &Path) -> Result<Many> {
    let work = Workload::new(opts);
    let n = work.streams();
    let flavours = &opts.many_runtimes;
    let slots = (flavours.len() * (n + 1) + 10).to_string();
    let senders = (n + 10).to_string();
    // Each stream has its walsender and, with the default slot check, a side connection.
    let connections = (2 * n + 20).to_string();
    eprintln!("==> many: starting PostgreSQL {BASE_MAJOR} for {n} streams");
    let cluster = pgtest::Config::new(BASE_MAJOR)
        .setting("max_wal_senders", &senders)
        .setting("max_replication_slots", &slots)
        .setting("max_connections", &connections)
        .setting("wal_sender_timeout", &format!("{SENDER_TIMEOUT_S}s"))
        .start()
        .map_err(|e| format!("starting PostgreSQL {BASE_MAJOR}: {e}"))?;
    let version = cluster
        .server_version()
        .map_err(|e| format!("server version: {e}"))?;
    let mut dbs = Vec::new();
    for d in 0..work.databases {
        let name = format!("many{d}");
        let db = cluster
            .create_database(&name)
            .map_err(|e| format!("create database {name}: {e}"))?;
        db.psql(
            "CREATE TABLE many (id bigserial PRIMARY KEY, v text NOT NULL);\n\
             CREATE PUBLICATION many_pub FOR TABLE many;",
        )
        .map_err(|e| format!("schema of {name}: {e}"))?;
        dbs.push(name);
    }
    let bin = drain_bins.join("many-streams");
    let mut runs = Vec::new();
    for flavour in flavours {
        eprintln!("==> many: {flavour} runtime, 1 stream (baseline)");
        let one = Workload {
            databases: 1,
            per_db: 1,
            ..work
        };
        let single = run_consumer(
            &cluster,
            &bin,
            flavour,
            &format!("one_{flavour}"),
            &dbs,
            one,
        )?;
        eprintln!("==> many: {flavour} runtime, {n} streams");
        let many = run_consumer(
            &cluster,
            &bin,
            flavour,
            &format!("many_{flavour}"),
            &dbs,
            work,
        )?;
        runs.push(FlavourRun {
            flavour: flavour.clone(),
            single,
            many,
        });
    }
    Ok(Many {
        version,
        work,
        runs,
    })
}

/// The consumer process, driven over its stdin and stdout.
struct Consumer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Consumer {
    /// Sends `command` (none: just reads) and reads the phase line it answers with.
    fn phase(&mut self, command: Option<&str>) -> Result<Phase> {
        if let Some(c) = command {
            writeln!(self.stdin, "{c}").map_err(|e| format!("many-streams: writing {c}: {e}"))?;
        }
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("many-streams: reading: {e}"))?;
        if n == 0 {
            let status = self.child.wait().map_err(|e| e.to_string())?;
            return Err(format!("many-streams exited ({status}) after {command:?}"));
        }
        let p = Phase::parse(&line).ok_or_else(|| format!("many-streams: {line:?}"))?;
        eprintln!(
            "    {:<9} rows {:>9}, RSS {:.1} MB (peak {:.1}), CPU {:.2} s, reconnects {}, failed {}",
            p.name,
            p.rows,
            p.rss_kib as f64 / 1024.0,
            p.hwm_kib as f64 / 1024.0,
            p.cpu_us as f64 / 1e6,
            p.reconnects,
            p.failed
        );
        Ok(p)
    }
}

/// One consumer process through the phases, with `work`'s streams named `PREFIX_d_i` on the
/// first `work.databases` of `dbs`.
fn run_consumer(
    cluster: &pgtest::Cluster,
    bin: &Path,
    flavour: &str,
    prefix: &str,
    dbs: &[String],
    work: Workload,
) -> Result<Run> {
    let dbs = dbs.get(..work.databases).ok_or("many: too few databases")?;
    for (d, db) in dbs.iter().enumerate() {
        let mut sql = String::new();
        for i in 0..work.per_db {
            let _ = writeln!(
                sql,
                "SELECT 1 FROM pg_create_logical_replication_slot('{prefix}_{d}_{i}', 'pgoutput');"
            );
        }
        cluster
            .psql(db, &sql)
            .map_err(|e| format!("creating slots in {db}: {e}"))?;
    }
    let mut cmd = Command::new(bin);
    cmd.args([flavour, "many_pub", prefix, &work.per_db.to_string()]);
    cmd.args(dbs.iter().map(|db| cluster.conninfo(db)));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("many-streams: no stdin or stdout".to_owned());
    };
    let mut consumer = Consumer {
        child,
        stdin,
        stdout: BufReader::new(stdout),
    };
    let result = phases(cluster, &mut consumer, prefix, dbs, work);
    // Ours, by handle: `quit` ends it; a failed run may have left it waiting.
    let _ = writeln!(consumer.stdin, "quit");
    drop(consumer.stdin);
    let _ = consumer.child.wait();
    result
}

fn phases(
    cluster: &pgtest::Cluster,
    consumer: &mut Consumer,
    prefix: &str,
    dbs: &[String],
    work: Workload,
) -> Result<Run> {
    let streams = work.streams() as u64;
    let mut run = Run {
        streams: work.streams(),
        ..Run::default()
    };
    run.phases.push(consumer.phase(None)?);
    run.phases.push(consumer.phase(Some("connect"))?);
    let stop = AtomicBool::new(false);
    let (sampled, result) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_replies(cluster, prefix, work.streams(), &stop));
        let result = (|| -> Result<()> {
            std::thread::sleep(Duration::from_secs(work.idle_s));
            run.phases.push(consumer.phase(Some("report idle"))?);
            let trickle = format!(
                "DO $$ BEGIN FOR i IN 1..{} LOOP \
                 INSERT INTO many (v) VALUES ('trickle ' || i); COMMIT; \
                 PERFORM pg_sleep({}); END LOOP; END $$;",
                work.trickle_rows(),
                1.0 / TRICKLE_RATE as f64
            );
            in_every_db(cluster, dbs, &trickle)?;
            let expect = streams * work.trickle_rows();
            run.phases
                .push(consumer.phase(Some(&format!("wait trickle {expect}")))?);
            let burst = format!(
                "INSERT INTO many (v) SELECT 'burst ' || g FROM generate_series(1, {}) g;",
                work.burst_rows
            );
            in_every_db(cluster, dbs, &burst)?;
            let expect = streams * (work.trickle_rows() + work.burst_rows);
            run.phases
                .push(consumer.phase(Some(&format!("wait burst {expect}")))?);
            std::thread::sleep(Duration::from_secs(5));
            run.phases.push(consumer.phase(Some("report after"))?);
            run.phases.push(consumer.phase(Some("trim trimmed"))?);
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        (sampler.join(), result)
    });
    result?;
    let (gap, replaced) = sampled.map_err(|_| "many: the sampler panicked".to_owned())??;
    run.max_reply_gap_s = gap;
    run.walsenders_replaced = replaced;
    let end = run.phase("after");
    if end.min_rows < work.trickle_rows() + work.burst_rows || end.failed > 0 {
        return Err(format!(
            "many: a stream fell short ({} rows at least, {} expected; {} failed)",
            end.min_rows,
            work.trickle_rows() + work.burst_rows,
            end.failed
        ));
    }
    Ok(run)
}

/// Runs `sql` in every database at once.
fn in_every_db(cluster: &pgtest::Cluster, dbs: &[String], sql: &str) -> Result<()> {
    std::thread::scope(|s| {
        let writers: Vec<_> = dbs
            .iter()
            .map(|db| s.spawn(move || cluster.psql(db, sql).map_err(|e| format!("{db}: {e}"))))
            .collect();
        for w in writers {
            w.join()
                .map_err(|_| "many: a writer panicked".to_owned())??;
        }
        Ok(())
    })
}

/// Samples the walsenders of `prefix`'s slots until `stop`: the longest interval between two
/// status updates of one walsender (`reply_time`, the server's clock; the interval still
/// open at the end counts too), and how many streams lost their walsender.
fn sample_replies(
    cluster: &pgtest::Cluster,
    prefix: &str,
    streams: usize,
    stop: &AtomicBool,
) -> Result<(f64, usize)> {
    // slot -> (walsender pid, last reply_time), Unix seconds.
    let mut seen: std::collections::BTreeMap<String, (String, f64)> = Default::default();
    let (mut max_gap, mut replaced, mut now) = (0.0f64, 0usize, 0.0f64);
    let sql = format!(
        "SELECT s.slot_name, coalesce(r.pid::text, ''), \
         coalesce(extract(epoch FROM r.reply_time)::float8, 0), \
         extract(epoch FROM clock_timestamp())::float8 \
         FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
         WHERE s.slot_name LIKE '{prefix}\\_%'"
    );
    while !stop.load(Ordering::Relaxed) {
        let rows = cluster
            .query("postgres", &sql)
            .map_err(|e| format!("sampling pg_stat_replication: {e}"))?;
        for row in rows {
            let [slot, pid, reply, at] = row.as_slice() else {
                continue;
            };
            let (reply, at) = (
                reply.parse::<f64>().unwrap_or(0.0),
                at.parse::<f64>().unwrap_or(0.0),
            );
            now = now.max(at);
            match seen.get_mut(slot) {
                Some((old_pid, last)) => {
                    if old_pid != pid {
                        replaced += 1;
                        *old_pid = pid.clone();
                    } else if reply > *last && *last > 0.0 {
                        max_gap = max_gap.max(reply - *last);
                    }
                    *last = reply;
                }
                None => {
                    seen.insert(slot.clone(), (pid.clone(), reply));
                }
            }
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    for (_, last) in seen.values() {
        if *last > 0.0 {
            max_gap = max_gap.max(now - last);
        }
    }
    if seen.len() != streams {
        return Err(format!(
            "many: sampled {} walsenders of {streams} streams",
            seen.len()
        ));
    }
    Ok((max_gap, replaced))
}

/// The headline ratios: CPU per row of N streams over one, RSS per idle stream over the
/// target, per flavour.
pub(super) fn headline(m: &Many) -> Vec<Ratio> {
    let n = m.work.streams();
    let mut out = Vec::new();
    for r in &m.runs {
        out.push(Ratio {
            key: format!("many.{}.cpu_per_row", r.flavour),
            label: format!(
                "CPU per row, {n} streams / 1 stream ({} runtime)",
                r.flavour
            ),
            value: r.many.cpu_per_row_us() / r.single.cpu_per_row_us(),
        });
        out.push(Ratio {
            key: format!("many.{}.rss_per_stream", r.flavour),
            label: format!(
                "RSS per idle stream / {TARGET_RSS_PER_STREAM_KB} KB ({} runtime)",
                r.flavour
            ),
            value: r.many.rss_per_stream_kb() / TARGET_RSS_PER_STREAM_KB,
        });
    }
    out.retain(|r| r.value.is_finite());
    out
}

/// The figures `--compare` looks at (the headline's are added by the caller).
pub(super) fn figures(m: &Many) -> Vec<(String, f64)> {
    let n = m.work.streams();
    let mut out = Vec::new();
    for r in &m.runs {
        let k = format!("many.n{n}.{}", r.flavour);
        out.push((format!("{k}.rss_per_stream_kb"), r.many.rss_per_stream_kb()));
        out.push((format!("{k}.cpu_per_row_us"), r.many.cpu_per_row_us()));
        out.push((format!("{k}.max_reply_gap_s"), r.many.max_reply_gap_s));
    }
    out
}

/// The report's Markdown section.
pub(super) fn report_md(m: &Many) -> String {
    let w = &m.work;
    let n = w.streams();
    let mut md = format!(
        "\n## Many streams (PostgreSQL {}, {n} streams in one process)\n\n\
         {} database(s) with {} slot(s) each, followed by one `many-streams` process (an \
         `EventStream` per slot, default options, pgoutput protocol 1); `wal_sender_timeout = \
         {SENDER_TIMEOUT_S}s`. Idle {} s after connecting, then {} single-row commits a second \
         for {} s in every database at once, then one transaction of {} rows in each. The \
         baseline: the same workload on one database through one stream, same binary, same \
         runtime. RSS is the process's `VmRSS` (the kernel's), CPU `getrusage`; the status \
         interval is the longest between two `pg_stat_replication.reply_time`s of one \
         walsender, sampled every {} ms. After the burst and 5 s idle: `RSS after`, and again after \
         `malloc_trim(0)` (memory glibc kept but nothing uses given back).\n\n\
         | runtime | streams | RSS empty MB | RSS idle MB | RSS per idle stream KB | idle CPU ms/s per stream | CPU per row µs | CPU per row vs 1 stream | peak RSS MB | RSS after MB | after malloc_trim MB | longest status interval s | reconnects | walsenders replaced |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        m.version,
        w.databases,
        w.per_db,
        w.idle_s,
        TRICKLE_RATE,
        w.trickle_s,
        w.burst_rows,
        SAMPLE_EVERY.as_millis()
    );
    let mb = |kib: u64| kib as f64 / 1024.0;
    for r in &m.runs {
        for (run, base) in [(&r.single, None), (&r.many, Some(&r.single))] {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.1} | {:.0} | {:.3} | {:.2} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
                r.flavour,
                run.streams,
                mb(run.phase("empty").rss_kib),
                mb(run.phase("idle").rss_kib),
                run.rss_per_stream_kb(),
                run.idle_cpu_ms(w.idle_s),
                run.cpu_per_row_us(),
                base.map_or("(baseline)".to_owned(), |b| format!(
                    "{:.2}",
                    run.cpu_per_row_us() / b.cpu_per_row_us()
                )),
                mb(run.phase("after").hwm_kib),
                mb(run.phase("after").rss_kib),
                mb(run.phase("trimmed").rss_kib),
                run.max_reply_gap_s,
                run.phase("after").reconnects,
                run.walsenders_replaced,
            );
        }
    }
    for r in &m.runs {
        let rss = r.many.rss_per_stream_kb();
        let cpu = r.many.cpu_per_row_us() / r.single.cpu_per_row_us();
        let gap = r.many.max_reply_gap_s;
        let ok = |b: bool| if b { "met" } else { "NOT met" };
        let _ = writeln!(
            md,
            "\nTargets, {} runtime: RSS per idle stream at most {TARGET_RSS_PER_STREAM_KB} KB: \
             {rss:.0} KB ({}); CPU per row at most {TARGET_CPU_RATIO} x one stream's: {cpu:.2} \
             ({}); no stream disconnected (status interval under {SENDER_TIMEOUT_S} s, no \
             reconnect): {gap:.1} s, {} reconnect(s) ({}).",
            r.flavour,
            ok(rss <= TARGET_RSS_PER_STREAM_KB),
            ok(cpu <= TARGET_CPU_RATIO),
            r.many.phase("after").reconnects,
            ok(gap < SENDER_TIMEOUT_S as f64
                && r.many.phase("after").reconnects == 0
                && r.many.walsenders_replaced == 0),
        );
    }
    md
}

/// Adds `"many": {...}` to the report's JSON object.
pub(super) fn add_json(json: &mut String, m: &Many) {
    let runs: Vec<String> = m
        .runs
        .iter()
        .map(|r| {
            let one = |run: &Run| {
                format!(
                    "{{\"streams\": {}, \"rss_per_idle_stream_kb\": {:.1}, \"cpu_per_row_us\": \
                     {:.3}, \"max_reply_gap_s\": {:.2}, \"reconnects\": {}, \
                     \"walsenders_replaced\": {}, \"peak_rss_kib\": {}}}",
                    run.streams,
                    run.rss_per_stream_kb(),
                    run.cpu_per_row_us(),
                    run.max_reply_gap_s,
                    run.phase("after").reconnects,
                    run.walsenders_replaced,
                    run.phase("after").hwm_kib
                )
            };
            format!(
                "{{\"runtime\": \"{}\", \"single\": {}, \"many\": {}}}",
                r.flavour,
                one(&r.single),
                one(&r.many)
            )
        })
        .collect();
    let section = format!(
        ",\n  \"many\": {{\"server_version\": \"{}\", \"runs\": [\n    {}\n  ]}}\n}}",
        m.version.replace('"', "'"),
        runs.join(",\n    ")
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
    fn phase_lines_are_read() {
        let p = Phase::parse(
            "phase idle streams=100 rows=5 min_rows=0 rss_kib=9000 hwm_kib=9100 user_us=300 \
             sys_us=200 reconnects=1 status_updates=40 failed=0\n",
        );
        assert_eq!(
            p,
            Some(Phase {
                name: "idle".to_owned(),
                rows: 5,
                min_rows: 0,
                rss_kib: 9000,
                hwm_kib: 9100,
                cpu_us: 500,
                reconnects: 1,
                failed: 0,
            })
        );
        assert_eq!(Phase::parse("rows=5"), None);
        assert_eq!(Phase::parse("phase idle rows=x"), None);
    }

    #[test]
    fn streams_are_spread_over_at_most_five_databases() {
        let mut opts =
            super::super::options::parse_options(&[]).unwrap_or_else(|e| unreachable!("{e}"));
        let w = Workload::new(&opts);
        assert_eq!((w.databases, w.per_db), (5, 20));
        opts.many_streams = 7;
        let w = Workload::new(&opts);
        assert_eq!((w.databases, w.per_db), (1, 7));
        opts.many_streams = 12;
        assert_eq!(Workload::new(&opts).streams(), 12);
    }

    #[test]
    fn rss_and_cpu_come_from_the_phases() {
        let phase = |name: &str, rows, rss_kib, cpu_us| Phase {
            name: name.to_owned(),
            rows,
            rss_kib,
            cpu_us,
            ..Phase::default()
        };
        let run = Run {
            streams: 10,
            phases: vec![
                phase("empty", 0, 1000, 0),
                phase("connected", 0, 2000, 100),
                phase("idle", 0, 2000, 1100),
                phase("burst", 1000, 5000, 3100),
            ],
            ..Run::default()
        };
        assert!((run.rss_per_stream_kb() - 102.4).abs() < 1e-9);
        assert!((run.cpu_per_row_us() - 2.0).abs() < 1e-9);
        assert!((run.idle_cpu_ms(1) - 0.1).abs() < 1e-9);
    }
}

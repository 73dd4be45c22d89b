//! `cargo xtask bench [--quick] [--rows N] [--rounds N] [--no-parse] [--wrap CMD]
//! [--drain-bins DIR]`: the drain benchmark (and, unless `--quick` or `--no-parse`, the
//! criterion parse benches).
//!
//! A throwaway PostgreSQL 15 cluster (pgtest) gets table `bench (id int4 primary key, v text)`
//! and a publication; one logical slot per consumer and round is created *before* the backlog,
//! so every consumer drains the same WAL. The backlog is `rows` single-row inserts, committed
//! every 1000 rows (a PL/pgSQL loop with `COMMIT`); its end is `pg_current_wal_lsn()` after it.
//! Each consumer then drains its own slot to that LSN as a child process, and `wait4` gives
//! its user and system CPU time and peak RSS. Consumers:
//!
//! - `walstream`, `walstream-mt`, `walstream-raw` (modes of `drain-walstream`) and
//!   `pg_walstream` (`drain-pg-walstream`), from `benches/drain`, a crate outside the workspace
//!   because pg_walstream's backend links the system libpq; each decodes every row it is sent;
//! - `pg_recvlogical` (PostgreSQL 15's), which writes the stream to `/dev/null` and decodes
//!   nothing: the floor for a consumer on this machine.
//!
//! The median of the rounds is reported in `target/bench/report.md` and `report.json`, with
//! CPU time as ratios against pg_walstream and pg_recvlogical measured in the same run.

use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{cargo, run, workspace_root, Result};

/// The PostgreSQL major the benchmark runs against.
const MAJOR: u32 = 15;

/// Rows per transaction of the backlog.
const ROWS_PER_TX: u64 = 1000;

/// The consumers, in the order of the first round (later rounds rotate it).
const CONSUMERS: [&str; 5] = [
    "walstream",
    "walstream-mt",
    "walstream-raw",
    "pg_walstream",
    "pg_recvlogical",
];

/// The targets of the issue: CPU time against each baseline, and peak RSS.
const TARGET_VS_PG_WALSTREAM: f64 = 0.5;
const TARGET_VS_PG_RECVLOGICAL: f64 = 1.0;
const TARGET_RSS_MB: f64 = 8.0;

struct Options {
    rows: u64,
    rounds: usize,
    parse: bool,
    /// `--wrap CMD`: a command line each consumer runs under (`{consumer}` is replaced by its
    /// name), for example `strace -c -f -o target/bench/strace-{consumer}.txt`.
    wrap: Option<String>,
    /// `--drain-bins DIR`: use the consumers already built in DIR instead of building
    /// `benches/drain` (to compare a build of another checkout against this one's baselines).
    drain_bins: Option<String>,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        rows: 1_000_000,
        rounds: 3,
        parse: true,
        wrap: None,
        drain_bins: None,
    };
    let mut rows = None;
    let mut rounds = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => {
                opts.rows = 100_000;
                opts.rounds = 1;
                opts.parse = false;
            }
            "--no-parse" => opts.parse = false,
            "--drain-bins" => {
                let dir = iter.next().ok_or("bench: --drain-bins needs a directory")?;
                opts.drain_bins = Some(dir.clone());
            }
            "--wrap" => {
                let cmd = iter.next().filter(|c| !c.trim().is_empty());
                opts.wrap = Some(cmd.ok_or("bench: --wrap needs a command")?.clone());
            }
            "--rows" => rows = Some(number(iter.next(), "--rows")?),
            "--rounds" => rounds = Some(number(iter.next(), "--rounds")?),
            other => return Err(format!("bench: unknown argument {other:?}")),
        }
    }
    if let Some(rows) = rows {
        opts.rows = rows;
    }
    if let Some(rounds) = rounds {
        opts.rounds = usize::try_from(rounds).map_err(|e| e.to_string())?;
    }
    if opts.rows == 0 || opts.rounds == 0 {
        return Err("bench: --rows and --rounds must be at least 1".to_owned());
    }
    Ok(opts)
}

fn number(value: Option<&String>, flag: &str) -> Result<u64> {
    value
        .and_then(|v| v.replace('_', "").parse().ok())
        .ok_or_else(|| format!("bench: {flag} needs a positive number"))
}

/// One child process's measurements.
#[derive(Clone, Debug, Default)]
struct Sample {
    wall_s: f64,
    user_s: f64,
    sys_s: f64,
    max_rss_kib: u64,
    /// Voluntary context switches: how often the consumer blocked waiting for the socket.
    nvcsw: u64,
    /// Row events the consumer reported decoding (`None` for pg_recvlogical).
    rows: Option<u64>,
}

impl Sample {
    fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

pub(crate) fn main(args: &[String]) -> Result<()> {
    let opts = parse_options(args)?;
    let root = workspace_root();
    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;

    ensure_libpq_dev()?;
    let drain_bins = match &opts.drain_bins {
        Some(dir) => PathBuf::from(dir),
        None => {
            eprintln!("==> building benches/drain (release)");
            let drain_target = root.join("target/drain");
            run(Command::new(cargo())
                .args(["build", "--release", "--manifest-path"])
                .arg(root.join("benches/drain/Cargo.toml"))
                .arg("--target-dir")
                .arg(&drain_target))?;
            drain_target.join("release")
        }
    };
    let drain_bin = |consumer: &str| {
        let name = if consumer == "pg_walstream" {
            "drain-pg-walstream"
        } else {
            "drain-walstream"
        };
        drain_bins.join(name)
    };
    let recvlogical = pg_recvlogical()?;

    eprintln!("==> starting PostgreSQL {MAJOR}");
    let cluster = pgtest::Config::new(MAJOR)
        .start()
        .map_err(|e| format!("starting PostgreSQL {MAJOR}: {e}"))?;
    let version = cluster
        .server_version()
        .map_err(|e| format!("server version: {e}"))?;
    let db = cluster
        .create_database("bench")
        .map_err(|e| format!("create database: {e}"))?;
    db.psql(
        "CREATE TABLE bench (id int4 PRIMARY KEY, v text NOT NULL);\n\
         CREATE PUBLICATION bench_pub FOR TABLE bench;",
    )
    .map_err(|e| format!("schema: {e}"))?;

    // Every slot before the backlog: each drains exactly the same WAL.
    let mut slots = String::new();
    for round in 0..opts.rounds {
        for consumer in CONSUMERS {
            let _ = writeln!(
                slots,
                "SELECT 1 FROM pg_create_logical_replication_slot('{}', 'pgoutput');",
                slot_name(round, consumer)
            );
        }
    }
    db.psql(&slots)
        .map_err(|e| format!("creating slots: {e}"))?;

    eprintln!(
        "==> writing the backlog: {} single-row inserts, {ROWS_PER_TX} per transaction",
        opts.rows
    );
    let started = Instant::now();
    db.psql(&format!(
        "DO $$\n\
         BEGIN\n\
           FOR i IN 1..{rows} LOOP\n\
             INSERT INTO bench (id, v) VALUES (i, 'row ' || i);\n\
             IF i % {ROWS_PER_TX} = 0 THEN COMMIT; END IF;\n\
           END LOOP;\n\
         END $$;",
        rows = opts.rows
    ))
    .map_err(|e| format!("writing the backlog: {e}"))?;
    let end_lsn = db
        .psql("SELECT pg_current_wal_lsn()")
        .map_err(|e| format!("end LSN: {e}"))?;
    let wal_bytes = db
        .psql(&format!(
            "SELECT pg_wal_lsn_diff('{end_lsn}', min(restart_lsn))::int8 FROM pg_replication_slots"
        ))
        .map_err(|e| format!("WAL size: {e}"))?;
    eprintln!(
        "    {:.1} s, end LSN {end_lsn}, {wal_bytes} bytes of WAL",
        started.elapsed().as_secs_f64()
    );

    let conninfo = db.conninfo();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CONSUMERS.len()];
    for round in 0..opts.rounds {
        for k in 0..CONSUMERS.len() {
            // Rotate the order each round, so no consumer always runs first or last.
            let index = (k + round) % CONSUMERS.len();
            let Some(consumer) = CONSUMERS.get(index).copied() else {
                continue;
            };
            let slot = slot_name(round, consumer);
            let mut argv: Vec<String> = if consumer == "pg_recvlogical" {
                let mut argv = vec![recvlogical.display().to_string()];
                argv.extend(
                    [
                        "-d",
                        &conninfo,
                        "--slot",
                        &slot,
                        "--start",
                        "-o",
                        "proto_version=1",
                        "-o",
                        "publication_names=bench_pub",
                        "--endpos",
                        &end_lsn,
                        "--no-loop",
                        "-f",
                        "/dev/null",
                    ]
                    .map(str::to_owned),
                );
                argv
            } else {
                let mut argv = vec![drain_bin(consumer).display().to_string()];
                argv.extend([consumer, &conninfo, &slot, "bench_pub", &end_lsn].map(str::to_owned));
                argv
            };
            if let Some(wrap) = &opts.wrap {
                let prefix = wrap
                    .split_whitespace()
                    .map(|w| w.replace("{consumer}", consumer));
                argv = prefix.chain(argv).collect();
            }
            let (program, rest) = argv.split_first().ok_or("empty command")?;
            let sample = measure(Command::new(program).args(rest))?;
            if let Some(rows) = sample.rows {
                let decoding = consumer != "walstream-raw";
                if decoding && rows != opts.rows {
                    return Err(format!(
                        "{consumer} decoded {rows} rows, expected {}",
                        opts.rows
                    ));
                }
            }
            eprintln!(
                "    round {}: {consumer:<15} wall {:.2} s, user {:.2} s, sys {:.2} s, peak RSS {:.1} MB, {} waits{}",
                round + 1,
                sample.wall_s,
                sample.user_s,
                sample.sys_s,
                kib_to_mb(sample.max_rss_kib),
                sample.nvcsw,
                sample.rows.map(|r| format!(", {r} rows")).unwrap_or_default()
            );
            if let Some(list) = samples.get_mut(index) {
                list.push(sample);
            }
        }
    }
    drop(cluster);

    let medians: Vec<Sample> = samples.iter().map(|s| median(s)).collect();
    let run = RunInfo {
        rows: opts.rows,
        rounds: opts.rounds,
        version,
        wal_bytes,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        wrap: opts.wrap.clone(),
        drain_bins: opts.drain_bins.clone(),
        parse_ran: opts.parse,
    };

    if opts.parse {
        eprintln!("==> criterion parse benches");
        run_parse_benches(&root)?;
    }
    let parse_summary = fs::read_to_string(out_dir.join("parse-summary.md")).ok();

    let md = report_md(&run, &medians, &samples, parse_summary.as_deref());
    let json = report_json(&run, &medians);
    write(&out_dir.join("report.md"), &md)?;
    write(&out_dir.join("report.json"), &json)?;
    println!("{md}");
    eprintln!(
        "==> wrote {} and report.json",
        out_dir.join("report.md").display()
    );
    Ok(())
}

fn slot_name(round: usize, consumer: &str) -> String {
    format!("drain_r{round}_{}", consumer.replace('-', "_"))
}

/// Debian's libpq-dev, which pg_walstream's `libpq` backend links (installed when missing, as
/// `.ci/run` does for its packages).
fn ensure_libpq_dev() -> Result<()> {
    let installed = Command::new("dpkg")
        .args(["-s", "libpq-dev"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed || Path::new("/usr/include/postgresql/libpq-fe.h").is_file() {
        return Ok(());
    }
    eprintln!("==> installing libpq-dev (apt)");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "libpq-dev",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn pg_recvlogical() -> Result<PathBuf> {
    pgtest::bin_dir(MAJOR)
        .map(|dir| dir.join("pg_recvlogical"))
        .into_iter()
        .chain([PathBuf::from(format!(
            "/usr/lib/postgresql/{MAJOR}/bin/pg_recvlogical"
        ))])
        .find(|p| p.is_file())
        .ok_or_else(|| format!("pg_recvlogical of PostgreSQL {MAJOR} not found"))
}

/// Runs `cmd` to its end and measures it: wall time, and from `wait4` its CPU time and peak RSS.
/// `rows=N` on its standard output is the row count it reports.
fn measure(cmd: &mut Command) -> Result<Sample> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout)
            .map_err(|e| format!("reading the output of {cmd:?}: {e}"))?;
    }
    let (status, usage) = wait4(child.id())?;
    let wall_s = started.elapsed().as_secs_f64();
    if !status.success {
        return Err(format!("{cmd:?} failed: {}", status.describe()));
    }
    let rows = stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rows="))
        .and_then(|n| n.parse().ok());
    Ok(Sample {
        wall_s,
        user_s: usage.user_s,
        sys_s: usage.sys_s,
        max_rss_kib: usage.max_rss_kib,
        nvcsw: usage.nvcsw,
        rows,
    })
}

struct ChildStatus {
    success: bool,
    raw: i32,
}

impl ChildStatus {
    fn describe(&self) -> String {
        if libc::WIFEXITED(self.raw) {
            format!("exit status {}", libc::WEXITSTATUS(self.raw))
        } else if libc::WIFSIGNALED(self.raw) {
            format!("killed by signal {}", libc::WTERMSIG(self.raw))
        } else {
            format!("wait status {:#x}", self.raw)
        }
    }
}

struct Usage {
    user_s: f64,
    sys_s: f64,
    max_rss_kib: u64,
    nvcsw: u64,
}

/// Reaps child `pid` with `wait4`, which returns the child's own resource usage (std's
/// `Child::wait` does not; `getrusage(RUSAGE_CHILDREN)` would merge every child so far and keep
/// the largest RSS of all of them).
#[allow(unsafe_code)]
fn wait4(pid: u32) -> Result<(ChildStatus, Usage)> {
    let pid = libc::pid_t::try_from(pid).map_err(|e| format!("pid {pid}: {e}"))?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers, for which all zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types for the whole call, and
        // `pid` is a child of this process that nothing else waits for (its `Child` handle is
        // never waited on).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4({pid}): {err}"));
        }
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((
        ChildStatus {
            success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            raw: status,
        },
        Usage {
            user_s: seconds(usage.ru_utime),
            sys_s: seconds(usage.ru_stime),
            // Linux reports ru_maxrss in KiB.
            max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            nvcsw: u64::try_from(usage.ru_nvcsw).unwrap_or(0),
        },
    ))
}

/// The median of each figure on its own (the middle value; the mean of the two middle ones
/// for an even count).
fn median(samples: &[Sample]) -> Sample {
    fn mid(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => 0.0,
            _ if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(0.0),
            _ => {
                (v.get(n / 2 - 1).copied().unwrap_or(0.0) + v.get(n / 2).copied().unwrap_or(0.0))
                    / 2.0
            }
        }
    }
    Sample {
        wall_s: mid(samples.iter().map(|s| s.wall_s).collect()),
        user_s: mid(samples.iter().map(|s| s.user_s).collect()),
        sys_s: mid(samples.iter().map(|s| s.sys_s).collect()),
        max_rss_kib: mid(samples.iter().map(|s| s.max_rss_kib as f64).collect()) as u64,
        nvcsw: mid(samples.iter().map(|s| s.nvcsw as f64).collect()) as u64,
        rows: samples.first().and_then(|s| s.rows),
    }
}

fn run_parse_benches(root: &Path) -> Result<()> {
    run(Command::new(cargo())
        .current_dir(root)
        .args(["bench", "-p", "benches", "--bench", "parse", "--"])
        .args(["--measurement-time", "5"]))
}

struct RunInfo {
    rows: u64,
    rounds: usize,
    version: String,
    wal_bytes: String,
    cores: usize,
    wrap: Option<String>,
    drain_bins: Option<String>,
    parse_ran: bool,
}

fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn baseline<'a>(medians: &'a [Sample], name: &str) -> Option<&'a Sample> {
    CONSUMERS
        .iter()
        .position(|c| *c == name)
        .and_then(|i| medians.get(i))
}

fn report_md(
    run: &RunInfo,
    medians: &[Sample],
    samples: &[Vec<Sample>],
    parse: Option<&str>,
) -> String {
    let pgw = baseline(medians, "pg_walstream").map_or(0.0, Sample::cpu_s);
    let recv = baseline(medians, "pg_recvlogical").map_or(0.0, Sample::cpu_s);
    let mut md = String::new();
    let _ = writeln!(md, "# cargo xtask bench\n");
    let _ = writeln!(
        md,
        "Drain of {} single-row inserts ({ROWS_PER_TX} per transaction, {} bytes of WAL) from \
         PostgreSQL {}, pgoutput protocol 1, streaming off; {} cores; median of {} round(s) \
         (each figure on its own).\n",
        run.rows, run.wal_bytes, run.version, run.cores, run.rounds
    );
    if let Some(dir) = &run.drain_bins {
        let _ = writeln!(
            md,
            "**The drain consumers are the binaries of `{dir}`, not this checkout's.**\n"
        );
    }
    if let Some(wrap) = &run.wrap {
        let _ = writeln!(
            md,
            "**Every consumer ran under `{wrap}`: the figures include the wrapper.**\n"
        );
    }
    let _ = writeln!(
        md,
        "| consumer | wall s | rows/s | user s | sys s | CPU s | peak RSS MB | waits | CPU vs pg_walstream | CPU vs pg_recvlogical |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, s) in CONSUMERS.iter().zip(medians) {
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {:.2} |",
            s.wall_s,
            run.rows as f64 / s.wall_s,
            s.user_s,
            s.sys_s,
            s.cpu_s(),
            kib_to_mb(s.max_rss_kib),
            s.nvcsw,
            ratio(s.cpu_s(), pgw),
            ratio(s.cpu_s(), recv),
        );
    }
    let _ = writeln!(
        md,
        "\nwaits: voluntary context switches (`ru_nvcsw`), the times the consumer blocked, \
         mostly waiting for the server."
    );
    if let Some(ws) = baseline(medians, "walstream") {
        let a = ratio(ws.cpu_s(), pgw);
        let b = ratio(ws.cpu_s(), recv);
        let rss = kib_to_mb(ws.max_rss_kib);
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let _ = writeln!(
            md,
            "\nTargets for `walstream`: CPU at most {TARGET_VS_PG_WALSTREAM} x pg_walstream: {a:.2} \
             ({}); at most {TARGET_VS_PG_RECVLOGICAL} x pg_recvlogical: {b:.2} ({}); peak RSS at \
             most {TARGET_RSS_MB} MB: {rss:.1} MB ({}).",
            verdict(a <= TARGET_VS_PG_WALSTREAM),
            verdict(b <= TARGET_VS_PG_RECVLOGICAL),
            verdict(rss <= TARGET_RSS_MB),
        );
    }
    if run.rounds > 1 {
        let _ = writeln!(md, "\nEvery round (CPU s / peak RSS MB):\n");
        for (name, list) in CONSUMERS.iter().zip(samples) {
            let rounds: Vec<String> = list
                .iter()
                .map(|s| format!("{:.2} / {:.1}", s.cpu_s(), kib_to_mb(s.max_rss_kib)))
                .collect();
            let _ = writeln!(md, "- {name}: {}", rounds.join(", "));
        }
    }
    if let Some(parse) = parse {
        let _ = writeln!(
            md,
            "\n## Parse (criterion, `target/bench/parse-summary.md`{})\n\n{}",
            if run.parse_ran {
                ", this run"
            } else {
                ", from an earlier run: not re-run with --quick or --no-parse"
            },
            parse.trim_end()
        );
    }
    md
}

fn report_json(run: &RunInfo, medians: &[Sample]) -> String {
    let pgw = baseline(medians, "pg_walstream").map_or(0.0, Sample::cpu_s);
    let recv = baseline(medians, "pg_recvlogical").map_or(0.0, Sample::cpu_s);
    let num = |x: f64| {
        if x.is_finite() {
            format!("{x:.4}")
        } else {
            "null".to_owned()
        }
    };
    let mut json = String::new();
    let _ = write!(
        json,
        "{{\n  \"rows\": {},\n  \"rows_per_transaction\": {ROWS_PER_TX},\n  \"rounds\": {},\n  \
         \"server_version\": \"{}\",\n  \"wal_bytes\": {},\n  \"cores\": {},\n  \"consumers\": [",
        run.rows,
        run.rounds,
        run.version.replace(['"', '\\'], ""),
        run.wal_bytes.parse::<u64>().unwrap_or(0),
        run.cores
    );
    for (i, (name, s)) in CONSUMERS.iter().zip(medians).enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            json,
            "{sep}\n    {{\"name\": \"{name}\", \"wall_s\": {}, \"rows_per_s\": {}, \"user_s\": {}, \
             \"sys_s\": {}, \"cpu_s\": {}, \"peak_rss_mb\": {}, \"waits\": {}, \"rows_decoded\": {}, \
             \"cpu_vs_pg_walstream\": {}, \"cpu_vs_pg_recvlogical\": {}}}",
            num(s.wall_s),
            num(run.rows as f64 / s.wall_s),
            num(s.user_s),
            num(s.sys_s),
            num(s.cpu_s()),
            num(kib_to_mb(s.max_rss_kib)),
            s.nvcsw,
            s.rows.map_or("null".to_owned(), |r| r.to_string()),
            num(ratio(s.cpu_s(), pgw)),
            num(ratio(s.cpu_s(), recv)),
        );
    }
    json.push_str("\n  ]\n}\n");
    json
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_then_rows_overrides_the_row_count() {
        let args: Vec<String> = ["--quick", "--rows", "5_000"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let opts = parse_options(&args).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((opts.rows, opts.rounds, opts.parse), (5000, 1, false));
        assert!(parse_options(&["--rows".to_owned()]).is_err());
    }

    #[test]
    fn median_takes_each_figure_on_its_own() {
        let s = |cpu: f64, rss: u64| Sample {
            user_s: cpu,
            max_rss_kib: rss,
            ..Sample::default()
        };
        let m = median(&[s(3.0, 10), s(1.0, 30), s(2.0, 20)]);
        assert_eq!((m.user_s, m.max_rss_kib), (2.0, 20));
    }
}

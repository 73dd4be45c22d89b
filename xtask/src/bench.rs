//! `cargo xtask bench [--quick] [--rows N] [--rounds N] [--majors LIST] [--no-parse]
//! [--parse-time S] [--big-mb N] [--budget-mib N] [--no-big] [--compare OLD.json] [--wrap CMD]
//! [--drain-bins DIR]`: the drain benchmark on PostgreSQL 15 and the newest installed major,
//! the big-transaction bench, and the criterion parse benches; one report of all of them.
//!
//! **Drain.** For each major, a throwaway cluster (pgtest) gets table
//! `bench (id int4 primary key, v text)` and a publication; one logical slot per consumer and
//! round is created *before* the backlog, so every consumer drains the same WAL. The backlog is
//! `rows` single-row inserts, committed every 1000 rows (a PL/pgSQL loop with `COMMIT`); its
//! end is `pg_current_wal_lsn()` after it. Each consumer then drains its own slot to that LSN
//! as a child process, and `wait4` gives its user and system CPU time and peak RSS. Consumers:
//!
//! - `walstream`, `walstream-nocoalesce` (`read_coalescing(Duration::ZERO)`), `walstream-mt`,
//!   `walstream-raw` (modes of `drain-walstream`) and `pg_walstream` (`drain-pg-walstream`),
//!   from `benches/drain`, a crate outside the workspace because pg_walstream's backend links
//!   the system libpq; each decodes every row it is sent;
//! - `pg_recvlogical` (PostgreSQL 15's, also against newer servers), which writes the stream
//!   to `/dev/null` and decodes nothing: the floor for a consumer on this machine.
//!
//! **Big transaction.** On the newest major, one transaction inserting `big_mb` MiB of row
//! values (1000-byte text values), streamed by the server while in progress (protocol 4,
//! `streaming = on`), drained by `drain-walstream walstream-tx` through a `TransactionStream`
//! with a memory budget (64 MiB by default): wall time, CPU time and peak RSS against the
//! budget; `pg_recvlogical` on the same stream for reference.
//!
//! **Parse.** `cargo bench -p benches --bench parse` (three recorded corpora); its summary
//! (`target/bench/parse-summary.json`) goes into the report.
//!
//! The medians of the rounds go to `target/bench/report.md`, `report.json` and
//! `report-ratios.svg`, with ratios against the baselines measured in the same run.
//! `--compare OLD.json` flags every figure more than 10% worse than in OLD (a `report.json` of
//! an earlier run) and then fails.

use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{cargo, run, workspace_root, Result};

/// The PostgreSQL major every run includes (installed on every machine of the project), and
/// whose `pg_recvlogical` is the baseline on every major.
const BASE_MAJOR: u32 = 15;

/// Rows per transaction of the backlog.
const ROWS_PER_TX: u64 = 1000;

/// The consumers, in the order of the first round (later rounds rotate it).
const CONSUMERS: [&str; 6] = [
    "walstream",
    "walstream-nocoalesce",
    "walstream-mt",
    "walstream-raw",
    "pg_walstream",
    "pg_recvlogical",
];

/// The consumers of the big-transaction bench.
const BIG_CONSUMERS: [&str; 2] = ["walstream-tx", "pg_recvlogical"];

/// Bytes of each row value of the big transaction.
const BIG_VALUE_BYTES: u64 = 1000;

/// The targets of the issue: CPU time against each baseline, and peak RSS.
const TARGET_VS_PG_WALSTREAM: f64 = 0.5;
const TARGET_VS_PG_RECVLOGICAL: f64 = 1.0;
const TARGET_RSS_MB: f64 = 8.0;

/// `--compare`: a figure worse than the saved one by more than this fraction is flagged.
const COMPARE_TOLERANCE: f64 = 0.10;

struct Options {
    rows: u64,
    rounds: usize,
    /// The majors to drain from (default: 15 and the newest installed).
    majors: Option<Vec<u32>>,
    parse: bool,
    /// Criterion measurement time per parse bench, seconds.
    parse_time: f64,
    /// MiB of row values in the big transaction; 0 skips it.
    big_mb: u64,
    budget_mib: u64,
    compare: Option<PathBuf>,
    /// `--wrap CMD`: a command line each consumer runs under (`{consumer}` is replaced by its
    /// name), for example `strace -c -f -o target/bench/strace-{consumer}.txt`.
    wrap: Option<String>,
    /// `--drain-bins DIR`: use the consumers already built in DIR instead of building
    /// `benches/drain` (to compare a build of another checkout against this one's baselines).
    drain_bins: Option<String>,
    quick: bool,
    /// `--out DIR`: where the report goes (default `target/bench`; the parse summary is always
    /// read from `target/bench`, where the parse bench writes it).
    out: Option<PathBuf>,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        rows: 1_000_000,
        rounds: 3,
        majors: None,
        parse: true,
        parse_time: 5.0,
        big_mb: 1024,
        budget_mib: 64,
        compare: None,
        wrap: None,
        drain_bins: None,
        quick: false,
        out: None,
    };
    let mut rows = None;
    let mut big_mb = None;
    let mut parse_time = None;
    let mut no_big = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => {
                opts.quick = true;
                opts.rows = 100_000;
                opts.big_mb = 100;
                opts.parse_time = 1.0;
            }
            "--no-parse" => opts.parse = false,
            "--no-big" => no_big = true,
            "--drain-bins" => {
                let dir = iter.next().ok_or("bench: --drain-bins needs a directory")?;
                opts.drain_bins = Some(dir.clone());
            }
            "--wrap" => {
                let cmd = iter.next().filter(|c| !c.trim().is_empty());
                opts.wrap = Some(cmd.ok_or("bench: --wrap needs a command")?.clone());
            }
            "--out" => {
                let dir = iter.next().ok_or("bench: --out needs a directory")?;
                opts.out = Some(PathBuf::from(dir));
            }
            "--compare" => {
                let file = iter.next().ok_or("bench: --compare needs a report.json")?;
                opts.compare = Some(PathBuf::from(file));
            }
            "--majors" => {
                let list = iter
                    .next()
                    .ok_or("bench: --majors needs a list, e.g. 15,18")?;
                let majors: Option<Vec<u32>> =
                    list.split(',').map(|m| m.trim().parse().ok()).collect();
                opts.majors = Some(
                    majors
                        .filter(|m| !m.is_empty())
                        .ok_or("bench: --majors needs a list, e.g. 15,18")?,
                );
            }
            "--rows" => rows = Some(number(iter.next(), "--rows")?),
            "--rounds" => {
                let n = number(iter.next(), "--rounds")?;
                opts.rounds = usize::try_from(n).map_err(|e| e.to_string())?;
            }
            "--big-mb" => big_mb = Some(number(iter.next(), "--big-mb")?),
            "--budget-mib" => opts.budget_mib = number(iter.next(), "--budget-mib")?,
            "--parse-time" => parse_time = Some(number(iter.next(), "--parse-time")?),
            other => return Err(format!("bench: unknown argument {other:?}")),
        }
    }
    if let Some(rows) = rows {
        opts.rows = rows;
    }
    if let Some(mb) = big_mb {
        opts.big_mb = mb;
    }
    if let Some(t) = parse_time {
        opts.parse_time = t as f64;
    }
    if no_big {
        opts.big_mb = 0;
    }
    if opts.rows == 0 || opts.rounds == 0 || opts.budget_mib == 0 {
        return Err("bench: --rows, --rounds and --budget-mib must be at least 1".to_owned());
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

/// The drain of one major: the medians per consumer (in [`CONSUMERS`] order) and every round.
struct Drain {
    major: u32,
    version: String,
    wal_bytes: u64,
    medians: Vec<Sample>,
    samples: Vec<Vec<Sample>>,
}

impl Drain {
    fn get(&self, name: &str) -> Option<&Sample> {
        CONSUMERS
            .iter()
            .position(|c| *c == name)
            .and_then(|i| self.medians.get(i))
    }

    fn cpu(&self, name: &str) -> f64 {
        self.get(name).map_or(f64::NAN, Sample::cpu_s)
    }

    fn rss(&self, name: &str) -> f64 {
        self.get(name)
            .map_or(f64::NAN, |s| kib_to_mb(s.max_rss_kib))
    }
}

/// The big-transaction bench.
struct Big {
    major: u32,
    version: String,
    mb: u64,
    rows: u64,
    wal_bytes: u64,
    budget_mib: u64,
    /// In [`BIG_CONSUMERS`] order.
    samples: Vec<Sample>,
}

struct Paths {
    drain_bins: PathBuf,
    recvlogical: PathBuf,
}

impl Paths {
    fn drain_bin(&self, consumer: &str) -> PathBuf {
        let name = if consumer == "pg_walstream" {
            "drain-pg-walstream"
        } else {
            "drain-walstream"
        };
        self.drain_bins.join(name)
    }
}

pub(crate) fn main(args: &[String]) -> Result<()> {
    let opts = parse_options(args)?;
    let started = Instant::now();
    let root = workspace_root();
    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    // Read first: a typo in the path should fail before the run, not after it.
    let old = match &opts.compare {
        Some(path) => {
            Some(fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?)
        }
        None => None,
    };

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
    let paths = Paths {
        drain_bins,
        recvlogical: pg_recvlogical()?,
    };
    let newest = pgtest::installed_majors()
        .into_iter()
        .max()
        .unwrap_or(BASE_MAJOR);
    let majors = opts.majors.clone().unwrap_or_else(|| {
        let mut m = vec![BASE_MAJOR];
        if newest != BASE_MAJOR {
            m.push(newest);
        }
        m
    });

    let mut drains = Vec::new();
    for &major in &majors {
        drains.push(drain(&opts, &paths, major)?);
    }
    let big = if opts.big_mb > 0 {
        Some(big_transaction(&opts, &paths, newest)?)
    } else {
        None
    };

    if opts.parse {
        eprintln!("==> criterion parse benches");
        run_parse_benches(&root, opts.parse_time)?;
    }
    let parse_json = fs::read_to_string(out_dir.join("parse-summary.json")).ok();
    let parse_md = fs::read_to_string(out_dir.join("parse-summary.md")).ok();
    let out_dir = opts.out.clone().unwrap_or(out_dir);
    fs::create_dir_all(&out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let parse = parse_json.as_deref().map(parse_summary).unwrap_or_default();

    let run = RunInfo {
        rows: opts.rows,
        rounds: opts.rounds,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load: fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default(),
        cpu: cpu_model(),
        wrap: opts.wrap.clone(),
        drain_bins: opts.drain_bins.clone(),
        parse_ran: opts.parse,
        quick: opts.quick,
        seconds: started.elapsed().as_secs_f64(),
    };
    let headline = headline(&drains, big.as_ref(), &parse);
    let figures = figures(&drains, big.as_ref(), &parse);
    let mut md = report_md(&run, &headline, &drains, big.as_ref(), parse_md.as_deref());
    let json = report_json(
        &run,
        &headline,
        &drains,
        big.as_ref(),
        parse_json.as_deref(),
        &figures,
    );
    let svg = ratios_svg(&headline);

    let mut worse = Vec::new();
    if let (Some(old), Some(path)) = (&old, &opts.compare) {
        worse = compare(old, &figures);
        let _ = writeln!(
            md,
            "\n## Compared with `{}` (flagged: more than {:.0}% worse)\n",
            path.display(),
            COMPARE_TOLERANCE * 100.0
        );
        if worse.is_empty() {
            let _ = writeln!(md, "Nothing is more than 10% worse.");
        } else {
            let _ = writeln!(md, "| figure | old | new | change |\n|---|---:|---:|---:|");
            for w in &worse {
                let _ = writeln!(
                    md,
                    "| {} | {:.4} | {:.4} | {:+.1}% |",
                    w.key,
                    w.old,
                    w.new,
                    (w.new / w.old - 1.0) * 100.0
                );
            }
        }
    }
    write(&out_dir.join("report.md"), &md)?;
    write(&out_dir.join("report.json"), &json)?;
    write(&out_dir.join("report-ratios.svg"), &svg)?;
    println!("{md}");
    eprintln!(
        "==> wrote {}, report.json and report-ratios.svg ({:.0} s)",
        out_dir.join("report.md").display(),
        run.seconds
    );
    if !worse.is_empty() {
        return Err(format!(
            "{} figure(s) more than 10% worse than {} (see the report)",
            worse.len(),
            opts.compare
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        ));
    }
    Ok(())
}

/// A throwaway cluster of `major` with the bench database.
fn start_cluster(major: u32) -> Result<(pgtest::Cluster, String)> {
    eprintln!("==> starting PostgreSQL {major}");
    let cluster = pgtest::Config::new(major)
        .start()
        .map_err(|e| format!("starting PostgreSQL {major}: {e}"))?;
    let version = cluster
        .server_version()
        .map_err(|e| format!("server version: {e}"))?;
    Ok((cluster, version))
}

/// What every consumer of one bench drains: the database, the end, and `pg_recvlogical`'s
/// plugin options.
struct Endpoint<'a> {
    conninfo: &'a str,
    end_lsn: &'a str,
    recv_options: &'a [&'a str],
}

/// The argv of `consumer` draining `slot` to `at`'s end (`extra`: arguments after the end).
fn consumer_argv(
    opts: &Options,
    paths: &Paths,
    consumer: &str,
    slot: &str,
    at: &Endpoint<'_>,
    extra: &[String],
) -> Vec<String> {
    let mut argv: Vec<String> = if consumer == "pg_recvlogical" {
        let mut argv = vec![paths.recvlogical.display().to_string()];
        argv.extend(["-d", at.conninfo, "--slot", slot, "--start"].map(str::to_owned));
        for o in at.recv_options {
            argv.extend(["-o".to_owned(), (*o).to_owned()]);
        }
        argv.extend(["--endpos", at.end_lsn, "--no-loop", "-f", "/dev/null"].map(str::to_owned));
        argv
    } else {
        let mut argv = vec![paths.drain_bin(consumer).display().to_string()];
        argv.extend([consumer, at.conninfo, slot, "bench_pub", at.end_lsn].map(str::to_owned));
        argv.extend(extra.iter().cloned());
        argv
    };
    if let Some(wrap) = &opts.wrap {
        let prefix = wrap
            .split_whitespace()
            .map(|w| w.replace("{consumer}", consumer));
        argv = prefix.chain(argv).collect();
    }
    argv
}

fn print_sample(label: &str, consumer: &str, sample: &Sample) {
    eprintln!(
        "    {label}: {consumer:<20} wall {:.2} s, user {:.2} s, sys {:.2} s, peak RSS {:.1} MB, {} waits{}",
        sample.wall_s,
        sample.user_s,
        sample.sys_s,
        kib_to_mb(sample.max_rss_kib),
        sample.nvcsw,
        sample.rows.map(|r| format!(", {r} rows")).unwrap_or_default()
    );
}

/// The drain benchmark on one major.
fn drain(opts: &Options, paths: &Paths, major: u32) -> Result<Drain> {
    let (cluster, version) = start_cluster(major)?;
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
    let (end_lsn, wal_bytes) = end_and_wal(&db)?;
    eprintln!(
        "    {:.1} s, end LSN {end_lsn}, {wal_bytes} bytes of WAL",
        started.elapsed().as_secs_f64()
    );

    let conninfo = db.conninfo();
    let at = Endpoint {
        conninfo: &conninfo,
        end_lsn: &end_lsn,
        recv_options: &["proto_version=1", "publication_names=bench_pub"],
    };
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CONSUMERS.len()];
    for round in 0..opts.rounds {
        for k in 0..CONSUMERS.len() {
            // Rotate the order each round, so no consumer always runs first or last.
            let index = (k + round) % CONSUMERS.len();
            let Some(consumer) = CONSUMERS.get(index).copied() else {
                continue;
            };
            let slot = slot_name(round, consumer);
            let argv = consumer_argv(opts, paths, consumer, &slot, &at, &[]);
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
            print_sample(
                &format!("PG {major} round {}", round + 1),
                consumer,
                &sample,
            );
            if let Some(list) = samples.get_mut(index) {
                list.push(sample);
            }
        }
    }
    drop(cluster);
    Ok(Drain {
        major,
        version,
        wal_bytes,
        medians: samples.iter().map(|s| median(s)).collect(),
        samples,
    })
}

/// `pg_current_wal_lsn()` and the WAL bytes from the oldest slot's restart LSN to it.
fn end_and_wal(db: &pgtest::Database<'_>) -> Result<(String, u64)> {
    let end_lsn = db
        .psql("SELECT pg_current_wal_lsn()")
        .map_err(|e| format!("end LSN: {e}"))?;
    let wal_bytes = db
        .psql(&format!(
            "SELECT pg_wal_lsn_diff('{end_lsn}', min(restart_lsn))::int8 FROM pg_replication_slots"
        ))
        .map_err(|e| format!("WAL size: {e}"))?;
    Ok((end_lsn, wal_bytes.trim().parse().unwrap_or(0)))
}

/// The big-transaction bench on `major` (see the module docs).
fn big_transaction(opts: &Options, paths: &Paths, major: u32) -> Result<Big> {
    let (cluster, version) = start_cluster(major)?;
    let db = cluster
        .create_database("bench_big")
        .map_err(|e| format!("create database: {e}"))?;
    db.psql(
        "CREATE TABLE big (id int8 PRIMARY KEY, v text NOT NULL);\n\
         CREATE PUBLICATION bench_pub FOR TABLE big;",
    )
    .map_err(|e| format!("schema: {e}"))?;
    let mut slots = String::new();
    for consumer in BIG_CONSUMERS {
        let _ = writeln!(
            slots,
            "SELECT 1 FROM pg_create_logical_replication_slot('{}', 'pgoutput');",
            slot_name(0, &format!("big_{consumer}"))
        );
    }
    db.psql(&slots)
        .map_err(|e| format!("creating slots: {e}"))?;
    let rows = opts.big_mb * 1024 * 1024 / BIG_VALUE_BYTES;
    eprintln!(
        "==> writing one transaction of {rows} rows ({} MiB of {BIG_VALUE_BYTES}-byte values)",
        opts.big_mb
    );
    let started = Instant::now();
    // 31 x 32 hex digits + 8: 1000 bytes, different per row, too small to be compressed.
    db.psql(&format!(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 31) || left(md5('x' || g), 8)\n\
         FROM generate_series(1, {rows}) AS g;"
    ))
    .map_err(|e| format!("writing the big transaction: {e}"))?;
    let (end_lsn, wal_bytes) = end_and_wal(&db)?;
    eprintln!(
        "    {:.1} s, end LSN {end_lsn}, {wal_bytes} bytes of WAL",
        started.elapsed().as_secs_f64()
    );
    let conninfo = db.conninfo();
    let budget = opts.budget_mib * 1024 * 1024;
    let at = Endpoint {
        conninfo: &conninfo,
        end_lsn: &end_lsn,
        recv_options: &[
            "proto_version=4",
            "streaming=on",
            "publication_names=bench_pub",
        ],
    };
    let mut samples = Vec::new();
    for consumer in BIG_CONSUMERS {
        let slot = slot_name(0, &format!("big_{consumer}"));
        let argv = consumer_argv(opts, paths, consumer, &slot, &at, &[budget.to_string()]);
        let (program, rest) = argv.split_first().ok_or("empty command")?;
        let sample = measure(Command::new(program).args(rest))?;
        if let Some(n) = sample.rows {
            if n != rows {
                return Err(format!("{consumer} decoded {n} rows, expected {rows}"));
            }
        }
        print_sample("big transaction", consumer, &sample);
        samples.push(sample);
    }
    drop(cluster);
    Ok(Big {
        major,
        version,
        mb: opts.big_mb,
        rows,
        wal_bytes,
        budget_mib: opts.budget_mib,
        samples,
    })
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

/// PostgreSQL 15's `pg_recvlogical` (it works against every newer server too).
fn pg_recvlogical() -> Result<PathBuf> {
    pgtest::bin_dir(BASE_MAJOR)
        .map(|dir| dir.join("pg_recvlogical"))
        .into_iter()
        .chain([PathBuf::from(format!(
            "/usr/lib/postgresql/{BASE_MAJOR}/bin/pg_recvlogical"
        ))])
        .find(|p| p.is_file())
        .ok_or_else(|| format!("pg_recvlogical of PostgreSQL {BASE_MAJOR} not found"))
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

fn run_parse_benches(root: &Path, seconds: f64) -> Result<()> {
    let warm_up = (seconds / 2.0).clamp(0.5, 2.0);
    run(Command::new(cargo())
        .current_dir(root)
        .args(["bench", "-p", "benches", "--bench", "parse", "--"])
        .args(["--measurement-time", &format!("{seconds}")])
        .args(["--warm-up-time", &format!("{warm_up}")]))
}

struct RunInfo {
    rows: u64,
    rounds: usize,
    cores: usize,
    /// The 1-minute load average at the end of the run.
    load: String,
    cpu: String,
    wrap: Option<String>,
    drain_bins: Option<String>,
    parse_ran: bool,
    quick: bool,
    seconds: f64,
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_default()
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

/// One bench of one corpus from `parse-summary.json`.
#[derive(Clone, Debug, Default)]
struct ParseRow {
    corpus: String,
    bench: String,
    ns: f64,
    allocs: f64,
}

/// The numeric field `key` of a one-line JSON object.
fn field(line: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\": ");
    let rest = &line[line.find(&pat)? + pat.len()..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest.get(..end)?.trim().parse().ok()
}

/// The string field `key` of a one-line JSON object.
fn str_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\": \"");
    let rest = &line[line.find(&pat)? + pat.len()..];
    rest.get(..rest.find('"')?)
}

/// The rows of `parse-summary.json` as the parse bench writes it (one object per line).
fn parse_summary(json: &str) -> Vec<ParseRow> {
    let mut corpus = String::new();
    let mut rows = Vec::new();
    for line in json.lines() {
        if line.contains("\"frame_bytes\"") {
            corpus = str_field(line, "name").unwrap_or_default().to_owned();
        } else if let (Some(bench), Some(ns)) =
            (str_field(line, "name"), field(line, "ns_per_message"))
        {
            rows.push(ParseRow {
                corpus: corpus.clone(),
                bench: bench.to_owned(),
                ns,
                allocs: field(line, "allocs_per_message").unwrap_or(f64::NAN),
            });
        }
    }
    rows
}

fn parse_ns(parse: &[ParseRow], corpus: &str, bench: &str) -> f64 {
    parse
        .iter()
        .find(|r| r.corpus == corpus && r.bench == bench)
        .map_or(f64::NAN, |r| r.ns)
}

/// A ratio of the headline: ours over a baseline's, lower is better, 1 is parity.
struct Ratio {
    key: String,
    label: String,
    value: f64,
}

fn headline(drains: &[Drain], big: Option<&Big>, parse: &[ParseRow]) -> Vec<Ratio> {
    let mut out = Vec::new();
    let mut push = |key: String, label: String, value: f64| {
        if value.is_finite() {
            out.push(Ratio { key, label, value });
        }
    };
    let mut corpora: Vec<&str> = Vec::new();
    for r in parse {
        if !corpora.contains(&r.corpus.as_str()) {
            corpora.push(&r.corpus);
        }
    }
    for c in corpora {
        let pgw_parse = parse_ns(parse, c, "pg_walstream/parse");
        let pgw_decoder = parse_ns(parse, c, "pg_walstream/decoder");
        push(
            format!("parse.{c}.borrowed_vs_pg_walstream_parse"),
            format!("parse {c}: walproto borrowed parse time / pg_walstream parser"),
            ratio(parse_ns(parse, c, "walproto/borrowed"), pgw_parse),
        );
        push(
            format!("parse.{c}.decoder_vs_pg_walstream_parse"),
            format!("parse {c}: walproto Decoder time / pg_walstream parser"),
            ratio(parse_ns(parse, c, "walproto/decoder"), pgw_parse),
        );
        push(
            format!("parse.{c}.owned_vs_pg_walstream_decoder"),
            format!("parse {c}: owned events time / pg_walstream decoder"),
            ratio(parse_ns(parse, c, "walstream/owned"), pgw_decoder),
        );
        push(
            format!("parse.{c}.owned_view_vs_pg_walstream_decoder"),
            format!("parse {c}: owned events, values read borrowed, time / pg_walstream decoder"),
            ratio(parse_ns(parse, c, "walstream/owned-view"), pgw_decoder),
        );
    }
    for d in drains {
        let m = d.major;
        let pgw = d.cpu("pg_walstream");
        push(
            format!("drain.pg{m}.walstream_cpu_vs_pg_walstream"),
            format!("drain PG {m}: walstream CPU / pg_walstream"),
            ratio(d.cpu("walstream"), pgw),
        );
        push(
            format!("drain.pg{m}.walstream_cpu_vs_pg_recvlogical"),
            format!("drain PG {m}: walstream CPU / pg_recvlogical"),
            ratio(d.cpu("walstream"), d.cpu("pg_recvlogical")),
        );
        push(
            format!("drain.pg{m}.nocoalesce_cpu_vs_pg_walstream"),
            format!("drain PG {m}: walstream, coalescing off, CPU / pg_walstream"),
            ratio(d.cpu("walstream-nocoalesce"), pgw),
        );
        push(
            format!("drain.pg{m}.walstream_wall_vs_pg_walstream"),
            format!("drain PG {m}: walstream wall time / pg_walstream"),
            ratio(
                d.get("walstream").map_or(f64::NAN, |s| s.wall_s),
                d.get("pg_walstream").map_or(f64::NAN, |s| s.wall_s),
            ),
        );
        push(
            format!("drain.pg{m}.walstream_rss_vs_pg_walstream"),
            format!("drain PG {m}: walstream peak RSS / pg_walstream"),
            ratio(d.rss("walstream"), d.rss("pg_walstream")),
        );
    }
    if let Some(b) = big {
        if let (Some(tx), Some(recv)) = (b.samples.first(), b.samples.get(1)) {
            push(
                "big.walstream_tx_rss_vs_budget".to_owned(),
                format!(
                    "big transaction ({} MiB): walstream-tx peak RSS / budget ({} MiB)",
                    b.mb, b.budget_mib
                ),
                ratio(kib_to_mb(tx.max_rss_kib), b.budget_mib as f64),
            );
            push(
                "big.walstream_tx_cpu_vs_pg_recvlogical".to_owned(),
                format!(
                    "big transaction ({} MiB): walstream-tx CPU / pg_recvlogical",
                    b.mb
                ),
                ratio(tx.cpu_s(), recv.cpu_s()),
            );
            push(
                "big.walstream_tx_wall_vs_pg_recvlogical".to_owned(),
                format!(
                    "big transaction ({} MiB): walstream-tx wall time / pg_recvlogical",
                    b.mb
                ),
                ratio(tx.wall_s, recv.wall_s),
            );
        }
    }
    out
}

/// Every figure `--compare` looks at, lower is better. Absolute figures carry the size of the
/// workload in their key, so that only runs of the same size are compared.
fn figures(drains: &[Drain], big: Option<&Big>, parse: &[ParseRow]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = headline(drains, big, parse)
        .into_iter()
        .map(|r| (format!("ratio.{}", r.key), r.value))
        .collect();
    for d in drains {
        let rows = d.medians.first().and_then(|s| s.rows).unwrap_or(0);
        for (name, s) in CONSUMERS.iter().zip(&d.medians) {
            let k = format!("drain.pg{}.rows{rows}.{name}", d.major);
            out.push((format!("{k}.wall_s"), s.wall_s));
            out.push((format!("{k}.cpu_s"), s.cpu_s()));
            out.push((format!("{k}.peak_rss_mb"), kib_to_mb(s.max_rss_kib)));
        }
    }
    if let Some(b) = big {
        for (name, s) in BIG_CONSUMERS.iter().zip(&b.samples) {
            let k = format!("big.{}mib.budget{}mib.{name}", b.mb, b.budget_mib);
            out.push((format!("{k}.wall_s"), s.wall_s));
            out.push((format!("{k}.cpu_s"), s.cpu_s()));
            out.push((format!("{k}.peak_rss_mb"), kib_to_mb(s.max_rss_kib)));
        }
    }
    for r in parse {
        let k = format!("parse.{}.{}", r.corpus, r.bench);
        out.push((format!("{k}.ns_per_message"), r.ns));
        out.push((format!("{k}.allocs_per_message"), r.allocs));
    }
    out.retain(|(_, v)| v.is_finite());
    out
}

/// A figure worse than in the saved run.
struct Worse {
    key: String,
    old: f64,
    new: f64,
}

/// The figures more than [`COMPARE_TOLERANCE`] worse than in `old` (a `report.json`); keys in
/// only one of the two are skipped.
fn compare(old: &str, new: &[(String, f64)]) -> Vec<Worse> {
    let old: Vec<(String, f64)> = old
        .lines()
        .filter_map(|l| Some((str_field(l, "key")?.to_owned(), field(l, "value")?)))
        .collect();
    new.iter()
        .filter_map(|(key, new)| {
            let (_, old) = old.iter().find(|(k, _)| k == key)?;
            // A small absolute slack, so that 0 -> 0.00001 allocations is not a regression.
            let worse = *new > old * (1.0 + COMPARE_TOLERANCE) && *new - *old > 1e-3;
            worse.then(|| Worse {
                key: key.clone(),
                old: *old,
                new: *new,
            })
        })
        .collect()
}

fn report_md(
    run: &RunInfo,
    headline: &[Ratio],
    drains: &[Drain],
    big: Option<&Big>,
    parse: Option<&str>,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# cargo xtask bench{}\n",
        if run.quick { " --quick" } else { "" }
    );
    let _ = writeln!(
        md,
        "Machine: {} cores ({}), load average {} at the end of the run; {:.0} s in all. \
         Figures are noisy on a shared machine: the ratios within one run are what counts.\n",
        run.cores, run.cpu, run.load, run.seconds
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
        "## Headline: ours / baseline (below 1: walstream ahead)\n\n\
         Chart: `report-ratios.svg`.\n\n| ratio | value |\n|---|---:|"
    );
    for r in headline {
        let _ = writeln!(md, "| {} | **{:.2}** |", r.label, r.value);
    }
    for d in drains {
        let _ = writeln!(
            md,
            "\n## Drain, PostgreSQL {}\n\n{} single-row inserts ({ROWS_PER_TX} per transaction, \
             {} bytes of WAL), pgoutput protocol 1, streaming off; median of {} round(s) (each \
             figure on its own); `pg_recvlogical` is PostgreSQL {BASE_MAJOR}'s.\n",
            d.version, run.rows, d.wal_bytes, run.rounds
        );
        let pgw = d.cpu("pg_walstream");
        let recv = d.cpu("pg_recvlogical");
        let _ = writeln!(
            md,
            "| consumer | wall s | rows/s | user s | sys s | CPU s | peak RSS MB | waits | CPU vs pg_walstream | CPU vs pg_recvlogical |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (name, s) in CONSUMERS.iter().zip(&d.medians) {
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
        let a = ratio(d.cpu("walstream"), pgw);
        let b = ratio(d.cpu("walstream"), recv);
        let rss = d.rss("walstream");
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let _ = writeln!(
            md,
            "\nTargets for `walstream`: CPU at most {TARGET_VS_PG_WALSTREAM} x pg_walstream: {a:.2} \
             ({}); at most {TARGET_VS_PG_RECVLOGICAL} x pg_recvlogical: {b:.2} ({}); peak RSS at \
             most {TARGET_RSS_MB} MB: {rss:.1} MB ({}). waits: voluntary context switches \
             (`ru_nvcsw`).",
            verdict(a <= TARGET_VS_PG_WALSTREAM),
            verdict(b <= TARGET_VS_PG_RECVLOGICAL),
            verdict(rss <= TARGET_RSS_MB),
        );
        if run.rounds > 1 {
            let _ = writeln!(md, "\nEvery round (CPU s / peak RSS MB):\n");
            for (name, list) in CONSUMERS.iter().zip(&d.samples) {
                let rounds: Vec<String> = list
                    .iter()
                    .map(|s| format!("{:.2} / {:.1}", s.cpu_s(), kib_to_mb(s.max_rss_kib)))
                    .collect();
                let _ = writeln!(md, "- {name}: {}", rounds.join(", "));
            }
        }
    }
    if let Some(b) = big {
        let _ = writeln!(
            md,
            "\n## Big transaction, PostgreSQL {}\n\nOne transaction of {} rows ({} MiB of \
             {BIG_VALUE_BYTES}-byte text values, {} bytes of WAL), streamed while in progress \
             (protocol 4, `streaming = on`). `walstream-tx`: a `TransactionStream` with \
             `memory_budget({} MiB)`, every change read (`tx.changes()`, spilled ones back \
             from their file); `pg_recvlogical` for reference (writes the stream to /dev/null). \
             One round.\n",
            b.version, b.rows, b.mb, b.wal_bytes, b.budget_mib
        );
        let _ = writeln!(
            md,
            "| consumer | wall s | MB/s | user s | sys s | CPU s | peak RSS MB | peak RSS / budget |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (name, s) in BIG_CONSUMERS.iter().zip(&b.samples) {
            let _ = writeln!(
                md,
                "| {name} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} |",
                s.wall_s,
                b.mb as f64 / s.wall_s,
                s.user_s,
                s.sys_s,
                s.cpu_s(),
                kib_to_mb(s.max_rss_kib),
                kib_to_mb(s.max_rss_kib) / b.budget_mib as f64,
            );
        }
        let _ = b.major;
    }
    if let Some(parse) = parse {
        let _ = writeln!(
            md,
            "\n## Parse (criterion, `target/bench/parse-summary.md`{})\n\n\
             Per corpus; `walstream/owned` is walstream's owned events built through walproto's \
             public API (`Decoder` + `TupleBuf::from_view` + the relation's `Arc`), as the \
             driver's `Follower` (crate-private) makes them, each value read as an owned \
             `ColumnValue` (`values()`); `walstream/owned-view` the same events with the values \
             read borrowed (`tuple().columns()`).\n\n{}",
            if run.parse_ran {
                ", this run"
            } else {
                ", from an earlier run: not re-run with --no-parse"
            },
            parse.trim_end()
        );
    }
    md
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "null".to_owned()
    }
}

fn json_str(s: &str) -> String {
    s.replace(['"', '\\'], "")
}

fn sample_json(name: &str, s: &Sample, extra: &str) -> String {
    format!(
        "{{\"name\": \"{name}\", \"wall_s\": {}, \"user_s\": {}, \"sys_s\": {}, \"cpu_s\": {}, \
         \"peak_rss_mb\": {}, \"waits\": {}, \"rows_decoded\": {}{extra}}}",
        json_num(s.wall_s),
        json_num(s.user_s),
        json_num(s.sys_s),
        json_num(s.cpu_s()),
        json_num(kib_to_mb(s.max_rss_kib)),
        s.nvcsw,
        s.rows.map_or("null".to_owned(), |r| r.to_string()),
    )
}

fn report_json(
    run: &RunInfo,
    headline: &[Ratio],
    drains: &[Drain],
    big: Option<&Big>,
    parse: Option<&str>,
    figures: &[(String, f64)],
) -> String {
    let mut json = String::new();
    let _ = write!(
        json,
        "{{\n  \"quick\": {},\n  \"cores\": {},\n  \"cpu\": \"{}\",\n  \"load_average\": \"{}\",\n  \
         \"seconds\": {:.0},\n  \"rows\": {},\n  \"rows_per_transaction\": {ROWS_PER_TX},\n  \
         \"rounds\": {},\n  \"headline\": [",
        run.quick,
        run.cores,
        json_str(&run.cpu),
        json_str(&run.load),
        run.seconds,
        run.rows,
        run.rounds
    );
    for (i, r) in headline.iter().enumerate() {
        let _ = write!(
            json,
            "{}\n    {{\"key\": \"{}\", \"label\": \"{}\", \"ratio\": {}}}",
            if i == 0 { "" } else { "," },
            r.key,
            json_str(&r.label),
            json_num(r.value)
        );
    }
    json.push_str("\n  ],\n  \"drain\": [");
    for (i, d) in drains.iter().enumerate() {
        let pgw = d.cpu("pg_walstream");
        let recv = d.cpu("pg_recvlogical");
        let _ = write!(
            json,
            "{}\n    {{\"major\": {}, \"server_version\": \"{}\", \"wal_bytes\": {}, \"consumers\": [",
            if i == 0 { "" } else { "," },
            d.major,
            json_str(&d.version),
            d.wal_bytes
        );
        for (j, (name, s)) in CONSUMERS.iter().zip(&d.medians).enumerate() {
            let extra = format!(
                ", \"cpu_vs_pg_walstream\": {}, \"cpu_vs_pg_recvlogical\": {}",
                json_num(ratio(s.cpu_s(), pgw)),
                json_num(ratio(s.cpu_s(), recv))
            );
            let _ = write!(
                json,
                "{}\n      {}",
                if j == 0 { "" } else { "," },
                sample_json(name, s, &extra)
            );
        }
        json.push_str("\n    ]}");
    }
    json.push_str("\n  ],\n  \"big_transaction\": ");
    match big {
        Some(b) => {
            let _ = write!(
                json,
                "{{\"major\": {}, \"server_version\": \"{}\", \"mib\": {}, \"rows\": {}, \
                 \"wal_bytes\": {}, \"budget_mib\": {}, \"consumers\": [",
                b.major,
                json_str(&b.version),
                b.mb,
                b.rows,
                b.wal_bytes,
                b.budget_mib
            );
            for (j, (name, s)) in BIG_CONSUMERS.iter().zip(&b.samples).enumerate() {
                let _ = write!(
                    json,
                    "{}\n      {}",
                    if j == 0 { "" } else { "," },
                    sample_json(name, s, "")
                );
            }
            json.push_str("\n    ]}");
        }
        None => json.push_str("null"),
    }
    json.push_str(",\n  \"parse\": ");
    match parse {
        Some(p) => json.push_str(p.trim().replace('\n', "\n  ").as_str()),
        None => json.push_str("null"),
    }
    json.push_str(",\n  \"figures\": [");
    for (i, (key, value)) in figures.iter().enumerate() {
        let _ = write!(
            json,
            "{}\n    {{\"key\": \"{key}\", \"value\": {}}}",
            if i == 0 { "" } else { "," },
            json_num(*value)
        );
    }
    json.push_str("\n  ]\n}\n");
    json
}

/// A horizontal bar chart of the headline ratios, written by hand (no plotting dependency):
/// one bar per ratio on a linear axis from 0, a line at 1 (parity), green at or below it.
fn ratios_svg(headline: &[Ratio]) -> String {
    const LABEL_W: f64 = 470.0;
    const BAR_W: f64 = 420.0;
    const ROW_H: f64 = 22.0;
    const TOP: f64 = 50.0;
    let max = headline
        .iter()
        .map(|r| r.value)
        .fold(1.5f64, f64::max)
        .min(5.0)
        .ceil();
    let x = |v: f64| LABEL_W + BAR_W * (v.min(max) / max);
    let height = TOP + ROW_H * headline.len() as f64 + 40.0;
    let width = LABEL_W + BAR_W + 70.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">walstream / baseline \
         (lower is better; below 1: walstream ahead)</text>\n"
    );
    // Grid: every 0.5.
    let mut tick = 0.0;
    while tick <= max + 1e-9 {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"{3}\" \
             stroke-width=\"{4}\"/>\n<text x=\"{0:.1}\" y=\"{5}\" text-anchor=\"middle\" \
             fill=\"#555\">{tick:.1}</text>",
            x(tick),
            TOP - 8.0,
            TOP + ROW_H * headline.len() as f64,
            if (tick - 1.0).abs() < 1e-9 {
                "#333"
            } else {
                "#ddd"
            },
            if (tick - 1.0).abs() < 1e-9 { 1.5 } else { 1.0 },
            TOP - 12.0
        );
        tick += 0.5;
    }
    for (i, r) in headline.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let color = if r.value <= 1.0 { "#2e7d32" } else { "#c62828" };
        let label = r
            .label
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>\n\
             <rect x=\"{LABEL_W}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{:.2}{}</text>",
            LABEL_W - 8.0,
            y + 15.0,
            y + 4.0,
            (x(r.value) - LABEL_W).max(1.0),
            ROW_H - 8.0,
            x(r.value) + 4.0,
            y + 15.0,
            r.value,
            if r.value > max { " (off scale)" } else { "" }
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn quick_then_rows_overrides_the_row_count() {
        let opts = parse_options(&args(&["--quick", "--rows", "5_000"]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((opts.rows, opts.rounds, opts.parse), (5000, 3, true));
        assert_eq!(opts.big_mb, 100);
        assert!(parse_options(&["--rows".to_owned()]).is_err());
        let opts = parse_options(&args(&["--no-big", "--majors", "15,18"]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((opts.big_mb, opts.majors), (0, Some(vec![15, 18])));
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

    #[test]
    fn compare_flags_only_what_got_more_than_ten_percent_worse() {
        let old = "  \"figures\": [\n    {\"key\": \"a\", \"value\": 1.0000},\n    \
                   {\"key\": \"b\", \"value\": 2.0000},\n    {\"key\": \"c\", \"value\": 0.0000}\n  ]";
        let new = vec![
            ("a".to_owned(), 1.05),
            ("b".to_owned(), 2.5),
            ("c".to_owned(), 0.0),
            ("d".to_owned(), 9.0),
        ];
        let worse = compare(old, &new);
        assert_eq!(worse.len(), 1);
        assert_eq!(worse.first().map(|w| w.key.as_str()), Some("b"));
    }

    #[test]
    fn parse_summary_reads_the_bench_rows() {
        let json = "{\n  \"corpora\": [\n    {\"name\": \"mixed\", \"messages\": 10, \"frame_bytes\": 100, \"benches\": [\n      \
                    {\"name\": \"floor\", \"ns_per_message\": 10.500, \"mb_per_s\": 1.0, \"allocs_per_message\": 0.00000}\n    ]}\n  ]\n}\n";
        let rows = parse_summary(json);
        assert_eq!(rows.len(), 1);
        let r = rows.first().cloned().unwrap_or_default();
        assert_eq!(
            (r.corpus.as_str(), r.bench.as_str(), r.ns),
            ("mixed", "floor", 10.5)
        );
    }
}

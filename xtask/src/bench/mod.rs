//! `cargo xtask bench [--quick] [--rows N] [--rounds N] [--majors LIST] [--no-parse]
//! [--parse-time S] [--big-mb N] [--budget-mib N] [--no-big] [--compare OLD.json] [--wrap CMD]
//! [--drain-bins DIR] [--no-drain] [--backup-size-mb N] [--no-backup] [--walstream-bin PATH]
//! [--no-instructions] [--no-latency] [--latency-rates LIST] [--latency-seconds N]
//! [--no-many] [--many-streams N] [--many-runtime current|multi|both]
//! [--snapshot-rows N] [--no-snapshot] [--only LIST]`: the drain benchmark on PostgreSQL 15
//! and the newest installed major, the big-transaction bench, the criterion parse benches, the
//! backup bench and the snapshot bench; one report of all of them.
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
//! **Backup.** A PostgreSQL 15 cluster of about `--backup-size-mb` MiB (2 GiB by default)
//! backed up by `walstream basebackup` and by `pg_basebackup`, and the WAL of its fill received
//! by `walstream receivewal` and by `pg_receivewal`: wall time, CPU time and peak RSS against
//! PostgreSQL's tools (`backup`). `--only backup` runs it alone.
//!
//! **Latency.** Single-row commits at fixed rates (`--latency-rates`, default 20, 200, 2,000
//! and 20,000 a second, `--latency-seconds` each) followed by walstream's `EventStream`,
//! `walstream tail`, pg_walstream and pg_recvlogical side by side: p50, p99 and max of arrival
//! minus commit time (`latency`).
//!
//! **Snapshot.** The initial snapshot of a `--snapshot-rows` table (10,000,000 rows by
//! default) on PostgreSQL 15, by psql's binary `COPY` and by walstream with one and two
//! connections: rows a second and the ratios (`snapshot`). `--only snapshot` runs it alone.
//!
//! **Many streams.** `--many-streams` slots (100 by default) over five databases followed by
//! one process on one tokio runtime, each database with a steady trickle and one burst,
//! against the same workload through one stream: RSS per idle stream, CPU per row, the
//! longest interval between status updates (`many`). `--only many` runs it alone.
//!
//! **Instructions.** Instructions per message of walproto's and pg_walstream's parsers and
//! decoders on the parse corpora, counted by callgrind (`instructions`): they do not depend on
//! the machine's load.
//!
//! The medians of the rounds go to `target/bench/report.md`, `report.json` and
//! `report-ratios.svg`, with ratios against the baselines measured in the same run.
//! `--compare OLD.json` flags every figure more than 10% worse (instruction counts: 2%) than
//! in OLD (a `report.json` of an earlier run) and then fails.

//!
//! The code is in five parts: `options` (the command line), `runs` (clusters, backlogs and
//! the consumers as measured child processes), `stats` (what was measured, medians, the
//! headline ratios and the figures `--compare` looks at) and `report` (the Markdown, JSON and
//! SVG writers and the comparison with an earlier run); `backup` is the backup bench whole
//! (its runs, its ratios and its report section, on top of the others' helpers). This module
//! runs them in order.

mod backup;
mod instructions;
mod latency;
mod many;
mod options;
mod report;
mod runs;
mod snapshot;
mod stats;

use std::fs;
use std::time::Instant;

use crate::{workspace_root, Result};

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

/// `cargo xtask bench ARGS`: every bench the options ask for, then the report, then the
/// comparison with `--compare`'s file (which fails the command when a figure got worse).
pub(crate) fn main(args: &[String]) -> Result<()> {
    let opts = options::parse_options(args)?;
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

    // The drain consumers (and libpq, for pg_walstream's) only when a drain bench runs.
    let paths = if opts.drain || opts.big_mb > 0 || opts.latency || opts.many {
        runs::ensure_libpq_dev()?;
        Some(runs::Paths::new(&root, opts.drain_bins.as_deref())?)
    } else {
        None
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
    let mut big = None;
    if let Some(paths) = &paths {
        if opts.drain {
            for &major in &majors {
                drains.push(runs::drain(&opts, paths, major)?);
            }
        }
        if opts.big_mb > 0 {
            big = Some(runs::big_transaction(&opts, paths, newest)?);
        }
    }
    let backup = if opts.backup_mb > 0 {
        Some(backup::run_bench(&opts, &root)?)
    } else {
        None
    };

    let snapshot = if opts.snapshot_rows > 0 {
        Some(snapshot::run_bench(&opts, &root)?)
    } else {
        None
    };

    let latency = match (&paths, opts.latency) {
        (Some(paths), true) => {
            let walstream = match &opts.walstream_bin {
                Some(path) => path.clone(),
                None => backup::build_walstream(&root)?,
            };
            let programs = latency::Programs {
                drain_bins: &paths.drain_bins,
                walstream: &walstream,
                recvlogical: &paths.recvlogical,
            };
            Some(latency::run_bench(&opts, &programs)?)
        }
        _ => None,
    };

    let many = match (&paths, opts.many) {
        (Some(paths), true) => Some(many::run_bench(&opts, &paths.drain_bins)?),
        _ => None,
    };
    let instructions = if opts.instructions {
        instructions::run_bench(&root)?
    } else {
        None
    };
    if opts.parse {
        eprintln!("==> criterion parse benches");
        runs::run_parse_benches(&root, opts.parse_time)?;
    }
    // An earlier run's summary is reported too, unless `--only` left the parse benches out.
    let summary = |name: &str| {
        opts.earlier_parse
            .then(|| fs::read_to_string(out_dir.join(name)).ok())
            .flatten()
    };
    let parse_json = summary("parse-summary.json");
    let parse_md = summary("parse-summary.md");
    let out_dir = opts.out.clone().unwrap_or(out_dir);
    fs::create_dir_all(&out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let parse = parse_json
        .as_deref()
        .map(stats::parse_summary)
        .unwrap_or_default();

    let run = report::RunInfo {
        rows: opts.rows,
        rounds: opts.rounds,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load: fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default(),
        cpu: report::cpu_model(),
        wrap: opts.wrap.clone(),
        drain_bins: opts.drain_bins.clone(),
        parse_ran: opts.parse,
        quick: opts.quick,
        seconds: started.elapsed().as_secs_f64(),
    };
    let mut headline = stats::headline(&drains, big.as_ref(), &parse);
    let mut figures = stats::figures(&drains, big.as_ref(), &parse);
    if let Some(b) = &backup {
        headline.extend(backup::headline(b));
        figures.extend(backup::figures(b));
    }
    if let Some(s) = &snapshot {
        headline.extend(snapshot::headline(s));
        figures.extend(snapshot::figures(s));
    }
    if let Some(counts) = &instructions {
        figures.extend(counts.figures());
    }
    if let Some(m) = &many {
        let ratios = many::headline(m);
        figures.extend(ratios.iter().map(|r| (format!("ratio.{}", r.key), r.value)));
        figures.extend(many::figures(m));
        headline.extend(ratios);
    }
    let backup_md = backup.as_ref().map(backup::report_md);
    let backup_json = backup.as_ref().map(backup::report_json);
    let mut md = report::report_md(
        &run,
        &headline,
        &drains,
        big.as_ref(),
        backup_md.as_deref(),
        parse_md.as_deref(),
    );
    let mut json = report::report_json(
        &run,
        &headline,
        &drains,
        big.as_ref(),
        backup_json.as_deref(),
        parse_json.as_deref(),
        &figures,
    );
    if let Some(l) = &latency {
        latency::add_json(&mut json, l);
    }
    if let Some(m) = &many {
        many::add_json(&mut json, m);
    }
    if let Some(s) = &snapshot {
        snapshot::add_json(&mut json, s);
    }
    let svg = report::ratios_svg(&headline);

    if let Some(counts) = &instructions {
        md.push_str(&counts.report_md());
    }
    if let Some(l) = &latency {
        md.push_str(&latency::report_md(l));
    }
    if let Some(m) = &many {
        md.push_str(&many::report_md(m));
    }
    if let Some(s) = &snapshot {
        md.push_str(&snapshot::report_md(s));
    }
    let mut worse = Vec::new();
    if let (Some(old), Some(path)) = (&old, &opts.compare) {
        worse = report::compare(old, &figures);
        report::compare_md(&mut md, path, &worse);
    }
    report::write(&out_dir.join("report.md"), &md)?;
    report::write(&out_dir.join("report.json"), &json)?;
    report::write(&out_dir.join("report-ratios.svg"), &svg)?;
    println!("{md}");
    eprintln!(
        "==> wrote {}, report.json and report-ratios.svg ({:.0} s)",
        out_dir.join("report.md").display(),
        run.seconds
    );
    if !worse.is_empty() {
        return Err(format!(
            "{} figure(s) worse than {} by more than allowed (see the report)",
            worse.len(),
            opts.compare
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        ));
    }
    Ok(())
}

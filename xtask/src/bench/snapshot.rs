//! The snapshot bench: the initial snapshot of one big table against PostgreSQL's own binary
//! `COPY`, in the same run.
//!
//! A PostgreSQL 15 cluster gets table `snap (id int8 primary key, name text, created
//! timestamptz, amount numeric(12,2), qty int4)` with `--snapshot-rows` rows (10,000,000 by
//! default, 1,000,000 with `--quick`), vacuumed (so no copy sets hint bits the others then
//! find set), and a publication of it. Then, `rounds` times, in an order rotated each round:
//!
//! - `psql COPY`: PostgreSQL 15's psql running `COPY snap TO STDOUT (FORMAT binary)` with its
//!   output to `/dev/null` (`-o`): the server's one copy and a client that only writes bytes,
//!   the baseline;
//! - `walstream p1`, `walstream p2`: `snapshot-walstream` (`benches/drain`), a user's program
//!   taking the initial snapshot through `LogicalReplicationStream` with
//!   `SnapshotOptions::parallelism(1)` and `(2)` (every table split: threshold 0), reading
//!   every value of every row, up to `SnapshotEnd`. Its time includes connecting and creating
//!   the temporary slot that exports the snapshot.
//!
//! Each is a child process measured with `wait4` (wall time, CPU time, peak RSS); the report
//! gives the medians' rows a second and the ratios against psql (the targets: at least
//! 0.9 x psql with one connection, at least 1.3 x with two).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::options::Options;
use super::report::{json_num, json_str, sample_json};
use super::runs::{measure, print_sample};
use super::stats::{kib_to_mb, median, ratio, Ratio, Sample};
use super::BASE_MAJOR;
use crate::{cargo, run, Result};

/// The tools, in the order of the first round (the order rotates each round).
pub(super) const SNAPSHOT_TOOLS: [&str; 3] = ["psql COPY", "walstream p1", "walstream p2"];

/// The parallelism of each walstream tool of [`SNAPSHOT_TOOLS`] (psql's entry unused).
const PARALLELISM: [usize; 3] = [0, 1, 2];

/// The targets: rows a second at least this times psql's, with one connection...
const TARGET_P1: f64 = 0.9;
/// ... and with two.
const TARGET_P2: f64 = 1.3;

/// The table and publication every tool copies.
const TABLE_SQL: &str = "CREATE TABLE snap (id int8 PRIMARY KEY, name text NOT NULL, \
     created timestamptz NOT NULL, amount numeric(12,2), qty int4);\n\
     CREATE PUBLICATION snap_pub FOR TABLE snap;";

/// What the snapshot bench measured.
pub(super) struct Snapshot {
    /// The server's `server_version`.
    version: String,
    /// Rows of the table.
    rows: u64,
    /// The table's size (`pg_table_size`).
    table_bytes: u64,
    /// Rounds per tool.
    rounds: usize,
    /// Every round of each tool of [`SNAPSHOT_TOOLS`], in round order.
    samples: Vec<Vec<Sample>>,
}

impl Snapshot {
    /// The median of each figure of tool `index`.
    fn median(&self, index: usize) -> Sample {
        self.samples
            .get(index)
            .map(|s| median(s))
            .unwrap_or_default()
    }

    /// Rows a second of tool `index` (from its median wall time).
    fn rate(&self, index: usize) -> f64 {
        ratio(self.rows as f64, self.median(index).wall_s)
    }
}

/// The snapshot bench (see the module docs).
pub(super) fn run_bench(opts: &Options, root: &Path) -> Result<Snapshot> {
    let consumer = build_consumer(root)?;
    let psql = pgtest::bin_dir(BASE_MAJOR)
        .map(|d| d.join("psql"))
        .ok_or_else(|| format!("PostgreSQL {BASE_MAJOR}'s programs not found"))?;
    eprintln!("==> starting PostgreSQL {BASE_MAJOR} for the snapshot bench");
    let cluster = pgtest::Config::new(BASE_MAJOR)
        .setting("shared_buffers", "512MB")
        .setting("max_wal_size", "8GB")
        .start()
        .map_err(|e| format!("starting PostgreSQL {BASE_MAJOR}: {e}"))?;
    let version = cluster
        .server_version()
        .map_err(|e| format!("server version: {e}"))?;
    let db = cluster
        .create_database("bench_snapshot")
        .map_err(|e| format!("create database: {e}"))?;
    let rows = opts.snapshot_rows;
    eprintln!("==> filling table snap: {rows} rows");
    let started = Instant::now();
    db.psql(&format!(
        "{TABLE_SQL}\n\
         INSERT INTO snap SELECT g, 'customer ' || g, \
           timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', \
           (g % 100000) / 100.0, (g % 1000)::int4 \
         FROM generate_series(1, {rows}) AS g;\n\
         VACUUM (FREEZE, ANALYZE) snap;"
    ))
    .map_err(|e| format!("filling the table: {e}"))?;
    let table_bytes = db
        .psql("SELECT pg_table_size('snap')")
        .map_err(|e| format!("table size: {e}"))?
        .trim()
        .parse()
        .unwrap_or(0);
    eprintln!(
        "    {:.1} s, {:.0} MB",
        started.elapsed().as_secs_f64(),
        table_bytes as f64 / 1e6
    );

    let conninfo = db.conninfo();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); SNAPSHOT_TOOLS.len()];
    for round in 0..opts.rounds {
        for k in 0..SNAPSHOT_TOOLS.len() {
            let index = (k + round) % SNAPSHOT_TOOLS.len();
            let (Some(tool), Some(&n)) = (SNAPSHOT_TOOLS.get(index), PARALLELISM.get(index)) else {
                continue;
            };
            let mut cmd = if n == 0 {
                let mut cmd = Command::new(&psql);
                cmd.args(["-X", "-q", "-o", "/dev/null", "-d", &conninfo])
                    .args(["-c", "COPY snap TO STDOUT (FORMAT binary)"]);
                cmd
            } else {
                let mut cmd = Command::new(&consumer);
                cmd.args([conninfo.as_str(), "snap_pub", &n.to_string()]);
                cmd
            };
            let sample = measure(&mut cmd)?;
            if let Some(got) = sample.rows.filter(|&got| got != rows) {
                return Err(format!("{tool} read {got} rows, expected {rows}"));
            }
            print_sample(&format!("snapshot round {}", round + 1), tool, &sample);
            if let Some(list) = samples.get_mut(index) {
                list.push(sample);
            }
        }
    }
    drop(cluster);
    Ok(Snapshot {
        version,
        rows,
        table_bytes,
        rounds: opts.rounds,
        samples,
    })
}

/// Builds `snapshot-walstream` of `benches/drain` in release mode (the drain crate's target
/// directory, as the drain bench builds it) and returns its path.
fn build_consumer(root: &Path) -> Result<PathBuf> {
    eprintln!("==> building benches/drain's snapshot-walstream (release)");
    let target = root.join("target/drain");
    run(Command::new(cargo())
        .args(["build", "--release", "--bin", "snapshot-walstream"])
        .arg("--manifest-path")
        .arg(root.join("benches/drain/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target))?;
    Ok(target.join("release/snapshot-walstream"))
}

/// The headline ratios: walstream's wall time over psql's, one per parallelism (below 1:
/// walstream ahead; the targets are at most 1 / 0.9 and 1 / 1.3).
pub(super) fn headline(s: &Snapshot) -> Vec<Ratio> {
    let psql = s.median(0).wall_s;
    (1..SNAPSHOT_TOOLS.len())
        .filter_map(|i| {
            let n = PARALLELISM.get(i)?;
            let value = ratio(s.median(i).wall_s, psql);
            value.is_finite().then(|| Ratio {
                key: format!("snapshot.p{n}_wall_vs_psql"),
                label: format!(
                    "snapshot ({} rows, PG {BASE_MAJOR}), {n} connection(s): wall time / psql COPY",
                    s.rows
                ),
                value,
            })
        })
        .collect()
}

/// The figures `--compare` looks at: the headline ratios, and each tool's wall time, CPU time
/// and peak RSS.
pub(super) fn figures(s: &Snapshot) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = headline(s)
        .into_iter()
        .map(|r| (format!("ratio.{}", r.key), r.value))
        .collect();
    for (i, name) in SNAPSHOT_TOOLS.iter().enumerate() {
        let m = s.median(i);
        let k = format!("snapshot.{}rows.{}", s.rows, name.replace(' ', "_"));
        out.push((format!("{k}.wall_s"), m.wall_s));
        out.push((format!("{k}.cpu_s"), m.cpu_s()));
        out.push((format!("{k}.peak_rss_mb"), kib_to_mb(m.max_rss_kib)));
    }
    out
}

/// The report's section.
pub(super) fn report_md(s: &Snapshot) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Initial snapshot, PostgreSQL {}\n\n\
         Table `snap` (int8 key, text, timestamptz, numeric, int4) of {} rows ({:.0} MB). \
         `psql COPY`: `COPY snap TO STDOUT (FORMAT binary)` to /dev/null; `walstream pN`: \
         `snapshot-walstream`, the initial snapshot through `LogicalReplicationStream` with \
         `parallelism(N)`, every value read (its time includes the temporary slot's creation). \
         Median of {} round(s).\n\n\
         | tool | wall s | rows/s | x psql | user s | sys s | CPU s | peak RSS MB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|",
        s.version,
        s.rows,
        s.table_bytes as f64 / 1e6,
        s.rounds
    );
    let psql = s.rate(0);
    for (i, name) in SNAPSHOT_TOOLS.iter().enumerate() {
        let m = s.median(i);
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
            m.wall_s,
            s.rate(i),
            ratio(s.rate(i), psql),
            m.user_s,
            m.sys_s,
            m.cpu_s(),
            kib_to_mb(m.max_rss_kib)
        );
    }
    let (p1, p2) = (ratio(s.rate(1), psql), ratio(s.rate(2), psql));
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let _ = writeln!(
        md,
        "\nTargets: one connection at least {TARGET_P1} x psql's rows/s: {p1:.2} ({}); two \
         connections at least {TARGET_P2} x: {p2:.2} ({}). Two connections over one: {:.2}.",
        verdict(p1 >= TARGET_P1),
        verdict(p2 >= TARGET_P2),
        ratio(s.rate(2), s.rate(1))
    );
    if s.rounds > 1 {
        let _ = writeln!(md, "\nEvery round (wall s):\n");
        for (name, list) in SNAPSHOT_TOOLS.iter().zip(&s.samples) {
            let rounds: Vec<String> = list.iter().map(|x| format!("{:.2}", x.wall_s)).collect();
            let _ = writeln!(md, "- {name}: {}", rounds.join(", "));
        }
    }
    md
}

/// Adds the `"snapshot"` object to the JSON report (before its closing brace).
pub(super) fn add_json(json: &mut String, s: &Snapshot) {
    let psql = s.rate(0);
    let tools: Vec<String> = SNAPSHOT_TOOLS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let extra = format!(
                ", \"rows_per_s\": {}, \"vs_psql\": {}",
                json_num(s.rate(i)),
                json_num(ratio(s.rate(i), psql))
            );
            sample_json(name, &s.median(i), &extra)
        })
        .collect();
    let section = format!(
        ",\n  \"snapshot\": {{\"server_version\": \"{}\", \"rows\": {}, \"table_bytes\": {}, \
         \"rounds\": {}, \"tools\": [\n    {}\n  ]}}\n}}\n",
        json_str(&s.version),
        s.rows,
        s.table_bytes,
        s.rounds,
        tools.join(",\n    ")
    );
    if let Some(end) = json.rfind('}') {
        json.truncate(end);
        let trimmed = json.trim_end().len();
        json.truncate(trimmed);
        json.push_str(&section);
    }
}

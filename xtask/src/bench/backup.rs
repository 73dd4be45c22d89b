//! The backup bench: a PostgreSQL 15 cluster of about `--backup-size-mb` MiB (pgbench's
//! tables), backed up by `walstream basebackup` and by PostgreSQL 15's `pg_basebackup` with the
//! same options, and the WAL that filling it wrote received by `walstream receivewal` and by
//! `pg_receivewal`. Every tool runs as a child process measured with `wait4` (wall time, user
//! and system CPU time, peak RSS), `rounds` times, alternating which one goes first; the
//! report gives the medians, the spread, and the ratios against PostgreSQL's tools.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::options::Options;
use super::report::{json_num, json_str, sample_json};
use super::runs::{measure, print_sample};
use super::stats::{kib_to_mb, median, ratio, Ratio, Sample};
use super::BASE_MAJOR;
use crate::{cargo, run, Result};

/// The backup tools, in the order of the first round (the order alternates each round).
pub(super) const BACKUP_TOOLS: [&str; 2] = ["walstream basebackup", "pg_basebackup"];

/// The WAL receivers, in the order of the first round.
pub(super) const RECEIVE_TOOLS: [&str; 2] = ["walstream receivewal", "pg_receivewal"];

/// The options both backup tools get (after the directory), `pg_basebackup`'s spelling.
const BACKUP_OPTIONS: [&str; 6] = ["-F", "plain", "-X", "stream", "-c", "fast"];

/// The targets of the issue for `walstream basebackup`: wall time at most this times
/// `pg_basebackup`'s.
const TARGET_WALL: f64 = 1.0;
/// CPU time at most this times `pg_basebackup`'s.
const TARGET_CPU: f64 = 0.5;
/// Peak RSS at most this many MB.
const TARGET_RSS_MB: f64 = 16.0;

/// About how many MiB one pgbench scale unit takes on PostgreSQL 15 (`pgbench_accounts`'
/// 100,000 rows, 12.8 MiB, and its primary key, 2.1 MiB).
const MIB_PER_SCALE: u64 = 15;

/// Bytes in a GB, for CPU seconds per GB of WAL.
const GB: f64 = 1e9;

/// One tool's runs.
pub(super) struct Tool {
    /// The median of each figure.
    pub(super) median: Sample,
    /// Every round, in round order.
    pub(super) samples: Vec<Sample>,
    /// Bytes it wrote in its last round (for the backups: outside `pg_wal`).
    pub(super) bytes: u64,
}

/// What the backup bench measured.
pub(super) struct Backup {
    /// The server's `server_version`.
    pub(super) version: String,
    /// `--backup-size-mb`: the size asked for.
    pub(super) size_mb: u64,
    /// The pgbench scale used for it.
    pub(super) scale: u64,
    /// The databases' size after the fill (`pg_database_size`, summed).
    pub(super) cluster_bytes: u64,
    /// WAL bytes each receiver received (from its slot's restart LSN to the end LSN).
    pub(super) wal_bytes: u64,
    /// Rounds per tool.
    pub(super) rounds: usize,
    /// In [`BACKUP_TOOLS`] order.
    pub(super) backups: Vec<Tool>,
    /// In [`RECEIVE_TOOLS`] order.
    pub(super) receivers: Vec<Tool>,
}

impl Backup {
    /// The medians of `tools`' entry `index`.
    fn median(tools: &[Tool], index: usize) -> Option<&Sample> {
        tools.get(index).map(|t| &t.median)
    }
}

/// The programs the bench runs.
struct Programs {
    /// The `walstream` binary (release).
    walstream: PathBuf,
    /// PostgreSQL 15's client programs.
    pg_bin: PathBuf,
}

impl Programs {
    /// The command line of backup tool `index` of [`BACKUP_TOOLS`] writing to `dir`.
    fn backup(&self, index: usize, conninfo: &str, dir: &Path) -> Command {
        let mut cmd = if index == 0 {
            let mut cmd = Command::new(&self.walstream);
            cmd.args(["basebackup", conninfo]);
            cmd
        } else {
            let mut cmd = Command::new(self.pg_bin.join("pg_basebackup"));
            cmd.args(["-d", conninfo]);
            cmd
        };
        cmd.arg("-D").arg(dir).args(BACKUP_OPTIONS);
        cmd
    }

    /// The command line of receiver `index` of [`RECEIVE_TOOLS`] streaming `slot` into `dir`
    /// up to `end`.
    fn receive(&self, index: usize, conninfo: &str, dir: &Path, slot: &str, end: &str) -> Command {
        let mut cmd = if index == 0 {
            let mut cmd = Command::new(&self.walstream);
            cmd.args(["receivewal", conninfo]);
            cmd
        } else {
            let mut cmd = Command::new(self.pg_bin.join("pg_receivewal"));
            cmd.args(["-d", conninfo]);
            cmd
        };
        cmd.arg("-D").arg(dir).args(["-S", slot, "-E", end, "-n"]);
        cmd
    }
}

/// The backup bench (see the module docs). Its scratch directories are under
/// `target/bench/backup-work`, removed at the end.
pub(super) fn run_bench(opts: &Options, root: &Path) -> Result<Backup> {
    let programs = Programs {
        walstream: match &opts.walstream_bin {
            Some(path) => path.clone(),
            None => build_walstream(root)?,
        },
        pg_bin: pgtest::bin_dir(BASE_MAJOR)
            .ok_or_else(|| format!("PostgreSQL {BASE_MAJOR}'s programs not found"))?,
    };
    let work = root.join("target/bench/backup-work");
    remove(&work)?;
    fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;

    eprintln!("==> starting PostgreSQL {BASE_MAJOR} for the backup bench");
    // Checkpoints by time or size would land in some runs and not others.
    let cluster = pgtest::Config::new(BASE_MAJOR)
        .setting("max_wal_size", "16GB")
        .setting("checkpoint_timeout", "1d")
        .start()
        .map_err(|e| format!("starting PostgreSQL {BASE_MAJOR}: {e}"))?;
    let sql = |q: &str| cluster.psql("postgres", q).map_err(|e| format!("{q}: {e}"));
    let version = sql("SHOW server_version")?;

    // The receivers' slots first: the fill below is the WAL they receive.
    let mut slots = String::new();
    for round in 0..opts.rounds {
        for tool in RECEIVE_TOOLS {
            let _ = writeln!(
                slots,
                "SELECT 1 FROM pg_create_physical_replication_slot('{}', true);",
                slot_name(round, tool)
            );
        }
    }
    sql(&slots)?;

    let scale = (opts.backup_mb / MIB_PER_SCALE).max(1);
    eprintln!(
        "==> filling the cluster: pgbench -i -s {scale} (about {} MiB)",
        opts.backup_mb
    );
    let started = Instant::now();
    run(Command::new(programs.pg_bin.join("pgbench"))
        .args(["-i", "-q", "-I", "dtGvp", "-s", &scale.to_string()])
        .args(["-h", cluster.host(), "-p", &cluster.port().to_string()])
        .args(["-U", cluster.user(), "postgres"]))?;
    let end = sql("SELECT pg_current_wal_flush_lsn()")?;
    // pg_receivewal stops only past its end position (`endpos < xlogpos`): a commit record
    // after the end, or it would wait for the server's next WAL (up to 15 s of idle time).
    sql("SELECT txid_current()")?;
    let number = |q: &str| -> Result<u64> {
        let out = sql(q)?;
        out.trim().parse().map_err(|e| format!("{q}: {out:?}: {e}"))
    };
    let cluster_bytes = number("SELECT sum(pg_database_size(oid))::int8 FROM pg_database")?;
    let wal_bytes = number(&format!(
        "SELECT pg_wal_lsn_diff('{end}', min(restart_lsn))::int8 FROM pg_replication_slots"
    ))?;
    eprintln!(
        "    {:.1} s: {:.0} MB of databases, {:.0} MB of WAL to {end}",
        started.elapsed().as_secs_f64(),
        cluster_bytes as f64 / 1e6,
        wal_bytes as f64 / 1e6
    );

    let conninfo = cluster.conninfo("postgres");
    let mut receivers = new_tools(&RECEIVE_TOOLS);
    for round in 0..opts.rounds {
        let mut names: Vec<Vec<String>> = Vec::new();
        for (index, tool) in in_round_order(&RECEIVE_TOOLS, round) {
            let dir = work.join(format!("receive-{index}"));
            remove(&dir)?;
            fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            settle();
            let slot = slot_name(round, tool);
            let sample = measure(&mut programs.receive(index, &conninfo, &dir, &slot, &end))?;
            print_sample(&format!("receive round {}", round + 1), tool, &sample);
            let (bytes, files) = dir_contents(&dir, None)?;
            names.push(files);
            remove(&dir)?;
            push(&mut receivers, index, sample, bytes);
        }
        // Both wrote the same segment files, or the figures compare different work.
        if let [a, b] = names.as_slice() {
            if a != b {
                return Err(format!(
                    "receive round {}: the receivers wrote different files: {a:?} and {b:?}",
                    round + 1
                ));
            }
        }
    }

    // The slots are done with: the backups should not carry the fill's WAL.
    sql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots; CHECKPOINT;")?;
    let mut backups = new_tools(&BACKUP_TOOLS);
    for round in 0..opts.rounds {
        let mut sizes = Vec::new();
        for (index, tool) in in_round_order(&BACKUP_TOOLS, round) {
            let dir = work.join(format!("backup-{index}"));
            remove(&dir)?;
            settle();
            let sample = measure(&mut programs.backup(index, &conninfo, &dir))?;
            print_sample(&format!("backup round {}", round + 1), tool, &sample);
            for needed in [
                "PG_VERSION",
                "backup_label",
                "backup_manifest",
                "global/pg_control",
            ] {
                if !dir.join(needed).is_file() {
                    return Err(format!("{tool} wrote no {needed} in {}", dir.display()));
                }
            }
            let (bytes, _) = dir_contents(&dir, Some("pg_wal"))?;
            remove(&dir)?;
            sizes.push((tool, bytes));
            push(&mut backups, index, sample, bytes);
        }
        // The same cluster, so the same files: allow for backup_label, the manifest and the
        // like.
        if let [(ta, a), (tb, b)] = sizes.as_slice() {
            if a.abs_diff(*b) > b / 100 + (1 << 20) {
                return Err(format!(
                    "backup round {}: {ta} wrote {a} bytes outside pg_wal, {tb} {b}",
                    round + 1
                ));
            }
        }
    }
    drop(cluster);
    remove(&work)?;
    Ok(Backup {
        version,
        size_mb: opts.backup_mb,
        scale,
        cluster_bytes,
        wal_bytes,
        rounds: opts.rounds,
        backups,
        receivers,
    })
}

/// One empty [`Tool`] per name.
fn new_tools(names: &[&str]) -> Vec<Tool> {
    names
        .iter()
        .map(|_| Tool {
            median: Sample::default(),
            samples: Vec::new(),
            bytes: 0,
        })
        .collect()
}

/// Adds a round's sample to tool `index` and updates its median.
fn push(tools: &mut [Tool], index: usize, sample: Sample, bytes: u64) {
    if let Some(tool) = tools.get_mut(index) {
        tool.samples.push(sample);
        tool.median = median(&tool.samples);
        tool.bytes = bytes;
    }
}

/// `tools` with their index, rotated by `round` so that no tool always goes first.
fn in_round_order<'a>(tools: &[&'a str], round: usize) -> Vec<(usize, &'a str)> {
    let n = tools.len();
    (0..n)
        .filter_map(|k| {
            let i = (k + round) % n;
            tools.get(i).map(|t| (i, *t))
        })
        .collect()
}

/// The slot of receiver `tool` in `round`.
fn slot_name(round: usize, tool: &str) -> String {
    format!("bench_r{round}_{}", tool.replace([' ', '_'], ""))
}

/// Before each run: `sync`, so that the previous run's written pages are not flushed during
/// this one (the page cache keeps the cluster's files either way: see the report).
fn settle() {
    let _ = Command::new("sync").status();
}

/// Removes `dir` and everything in it, if it exists.
fn remove(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", dir.display())),
    }
}

/// The bytes of the regular files under `dir` (symbolic links not followed), leaving out the
/// top-level directory `skip`, and the names of its top-level entries, sorted.
fn dir_contents(dir: &Path, skip: Option<&str>) -> Result<(u64, Vec<String>)> {
    let mut names = Vec::new();
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|e| format!("reading {}: {e}", d.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("reading {}: {e}", d.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if d == dir {
                if skip == Some(name.as_str()) {
                    continue;
                }
                names.push(name);
            }
            let meta = entry
                .metadata()
                .map_err(|e| format!("reading {}: {e}", entry.path().display()))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                bytes += meta.len();
            }
        }
    }
    names.sort();
    Ok((bytes, names))
}

/// Builds walstream-cli in release mode and returns its `walstream` binary (wherever the
/// target directory is), from cargo's JSON messages.
pub(super) fn build_walstream(root: &Path) -> Result<PathBuf> {
    eprintln!("==> building walstream-cli (release)");
    let out = Command::new(cargo())
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "walstream-cli",
            "--bin",
            "walstream",
        ])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --release -p walstream-cli failed: {}",
            out.status
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .find_map(crate::capture::executable)
        .ok_or_else(|| "cargo build -p walstream-cli built no walstream binary".to_owned())
}

/// CPU seconds per GB of WAL.
fn cpu_per_gb(s: &Sample, wal_bytes: u64) -> f64 {
    ratio(s.cpu_s(), wal_bytes as f64 / GB)
}

/// The headline ratios of the backup bench (left out when a figure is missing).
pub(super) fn headline(b: &Backup) -> Vec<Ratio> {
    let mut out = Vec::new();
    let mb = b.size_mb;
    let (ours, theirs) = (Backup::median(&b.backups, 0), Backup::median(&b.backups, 1));
    if let (Some(o), Some(t)) = (ours, theirs) {
        let mut push = |key: &str, label: &str, value: f64| {
            if value.is_finite() {
                out.push(Ratio {
                    key: format!("backup.{key}"),
                    label: format!("backup ({mb} MiB, PG {BASE_MAJOR}): {label}"),
                    value,
                });
            }
        };
        push(
            "walstream_wall_vs_pg_basebackup",
            "walstream wall time / pg_basebackup",
            ratio(o.wall_s, t.wall_s),
        );
        push(
            "walstream_cpu_vs_pg_basebackup",
            "walstream CPU / pg_basebackup",
            ratio(o.cpu_s(), t.cpu_s()),
        );
        push(
            "walstream_rss_vs_pg_basebackup",
            "walstream peak RSS / pg_basebackup",
            ratio(kib_to_mb(o.max_rss_kib), kib_to_mb(t.max_rss_kib)),
        );
        push(
            "walstream_rss_vs_target",
            "walstream peak RSS / 16 MB",
            ratio(kib_to_mb(o.max_rss_kib), TARGET_RSS_MB),
        );
    }
    let (ours, theirs) = (
        Backup::median(&b.receivers, 0),
        Backup::median(&b.receivers, 1),
    );
    if let (Some(o), Some(t)) = (ours, theirs) {
        let value = ratio(cpu_per_gb(o, b.wal_bytes), cpu_per_gb(t, b.wal_bytes));
        if value.is_finite() {
            out.push(Ratio {
                key: "receivewal.walstream_cpu_per_gb_vs_pg_receivewal".to_owned(),
                label: format!(
                    "receivewal (PG {BASE_MAJOR}): walstream CPU per GB of WAL / pg_receivewal"
                ),
                value,
            });
        }
    }
    out
}

/// The figures `--compare` looks at: the ratios, and the absolute figures keyed by the size.
pub(super) fn figures(b: &Backup) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = headline(b)
        .into_iter()
        .map(|r| (format!("ratio.{}", r.key), r.value))
        .collect();
    let key = |tool: &str| tool.replace(' ', "_");
    for (name, t) in BACKUP_TOOLS.iter().zip(&b.backups) {
        let k = format!("backup.{}mib.{}", b.size_mb, key(name));
        out.push((format!("{k}.wall_s"), t.median.wall_s));
        out.push((format!("{k}.cpu_s"), t.median.cpu_s()));
        out.push((format!("{k}.peak_rss_mb"), kib_to_mb(t.median.max_rss_kib)));
    }
    for (name, t) in RECEIVE_TOOLS.iter().zip(&b.receivers) {
        let k = format!("receivewal.{}mib.{}", b.size_mb, key(name));
        out.push((
            format!("{k}.cpu_s_per_gb"),
            cpu_per_gb(&t.median, b.wal_bytes),
        ));
        out.push((format!("{k}.peak_rss_mb"), kib_to_mb(t.median.max_rss_kib)));
    }
    out.retain(|(_, v)| v.is_finite());
    out
}

/// `min-max` of `f` over the rounds, for the spread columns.
fn spread(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> String {
    let (lo, hi) = samples
        .iter()
        .map(f)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo.is_finite() {
        format!("{lo:.2}-{hi:.2}")
    } else {
        "-".to_owned()
    }
}

/// The Markdown section of the backup bench.
pub(super) fn report_md(b: &Backup) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Backup, PostgreSQL {}\n\n`pgbench -i -I dtGvp -s {}` (asked: about {} MiB): {:.0} MB \
         of databases. Each tool is a child process; `wait4` gives its user + system CPU time \
         and peak RSS (`ru_maxrss`; for `pg_basebackup`, whose `-X stream` forks a WAL \
         process, the CPU of both processes and the larger RSS of the two); waits are its \
         voluntary context switches (`ru_nvcsw`). Median of {} \
         round(s), the order alternating; min-max over the rounds beside. The server's reads \
         come from the page cache after the fill (no cache is dropped), every output directory \
         is removed after its run, and `sync` runs before each run. Both tools: `-D DIR {}`, \
         their default manifest (CRC32C) and their default sync of the output.\n",
        b.version,
        b.scale,
        b.size_mb,
        b.cluster_bytes as f64 / 1e6,
        b.rounds,
        BACKUP_OPTIONS.join(" ")
    );
    let _ = writeln!(
        md,
        "| tool | wall s | wall min-max | user s | sys s | CPU s | CPU min-max | peak RSS MB | \
         waits | MB/s | written MB (outside pg_wal) | wall / pg_basebackup | CPU / pg_basebackup |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let base = Backup::median(&b.backups, 1).cloned().unwrap_or_default();
    for (name, t) in BACKUP_TOOLS.iter().zip(&b.backups) {
        let s = &t.median;
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {} | {:.0} | {:.0} | {:.2} | {:.2} |",
            s.wall_s,
            spread(&t.samples, |s| s.wall_s),
            s.user_s,
            s.sys_s,
            s.cpu_s(),
            spread(&t.samples, Sample::cpu_s),
            kib_to_mb(s.max_rss_kib),
            s.nvcsw,
            t.bytes as f64 / 1e6 / s.wall_s,
            t.bytes as f64 / 1e6,
            ratio(s.wall_s, base.wall_s),
            ratio(s.cpu_s(), base.cpu_s()),
        );
    }
    if let Some(o) = Backup::median(&b.backups, 0) {
        let wall = ratio(o.wall_s, base.wall_s);
        let cpu = ratio(o.cpu_s(), base.cpu_s());
        let rss = kib_to_mb(o.max_rss_kib);
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let _ = writeln!(
            md,
            "\nTargets for `walstream basebackup`: wall time at most {TARGET_WALL} x \
             pg_basebackup: {wall:.2} ({}); CPU at most {TARGET_CPU} x: {cpu:.2} ({}); peak RSS \
             at most {TARGET_RSS_MB} MB: {rss:.1} MB ({}).",
            verdict(wall <= TARGET_WALL),
            verdict(cpu <= TARGET_CPU),
            verdict(rss <= TARGET_RSS_MB),
        );
    }
    let _ = writeln!(
        md,
        "\n### receivewal, PostgreSQL {}\n\nThe WAL of the fill, {:.0} MB, from a physical \
         slot created before it, to `pg_current_wal_flush_lsn()` after it: `-D DIR -S SLOT -E \
         LSN -n`, an empty directory per run; both wrote the same segment files. Median of {} \
         round(s).\n\n\
         | tool | wall s | CPU s | CPU min-max | CPU s per GB of WAL | peak RSS MB | waits | CPU / pg_receivewal |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|",
        b.version,
        b.wal_bytes as f64 / 1e6,
        b.rounds
    );
    let base = Backup::median(&b.receivers, 1).cloned().unwrap_or_default();
    for (name, t) in RECEIVE_TOOLS.iter().zip(&b.receivers) {
        let s = &t.median;
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {:.2} | {} | {:.2} | {:.1} | {} | {:.2} |",
            s.wall_s,
            s.cpu_s(),
            spread(&t.samples, Sample::cpu_s),
            cpu_per_gb(s, b.wal_bytes),
            kib_to_mb(s.max_rss_kib),
            s.nvcsw,
            ratio(s.cpu_s(), base.cpu_s()),
        );
    }
    md
}

/// The JSON object of the backup bench (the value of `report.json`'s `"backup"`).
pub(super) fn report_json(b: &Backup) -> String {
    let tools = |names: &[&str], tools: &[Tool], extra: &dyn Fn(&Sample) -> String| {
        names
            .iter()
            .zip(tools)
            .map(|(name, t)| {
                format!(
                    "\n      {}",
                    sample_json(name, &t.median, &extra(&t.median))
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{{\"major\": {BASE_MAJOR}, \"server_version\": \"{}\", \"size_mib\": {}, \
         \"pgbench_scale\": {}, \"cluster_bytes\": {}, \"wal_bytes\": {}, \"rounds\": {}, \
         \"backup\": [{}\n    ], \"receivewal\": [{}\n    ]}}",
        json_str(&b.version),
        b.size_mb,
        b.scale,
        b.cluster_bytes,
        b.wal_bytes,
        b.rounds,
        tools(&BACKUP_TOOLS, &b.backups, &|_| String::new()),
        tools(&RECEIVE_TOOLS, &b.receivers, &|s| format!(
            ", \"cpu_s_per_gb\": {}",
            json_num(cpu_per_gb(s, b.wal_bytes))
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(wall: f64, cpu: f64, rss_kib: u64) -> Sample {
        Sample {
            wall_s: wall,
            user_s: cpu,
            max_rss_kib: rss_kib,
            ..Sample::default()
        }
    }

    #[test]
    fn headline_is_ours_over_postgresqls_tools() {
        let mut backups = new_tools(&BACKUP_TOOLS);
        push(&mut backups, 0, sample(9.0, 1.0, 8 * 1024), 100);
        push(&mut backups, 1, sample(10.0, 4.0, 4 * 1024), 100);
        let mut receivers = new_tools(&RECEIVE_TOOLS);
        push(&mut receivers, 0, sample(1.0, 0.3, 1024), 0);
        push(&mut receivers, 1, sample(1.0, 0.6, 1024), 0);
        let b = Backup {
            version: "15".to_owned(),
            size_mb: 200,
            scale: 13,
            cluster_bytes: 0,
            wal_bytes: 2_000_000_000,
            rounds: 1,
            backups,
            receivers,
        };
        let h: Vec<(String, f64)> = headline(&b).into_iter().map(|r| (r.key, r.value)).collect();
        let get = |k: &str| h.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
        assert_eq!(get("backup.walstream_wall_vs_pg_basebackup"), Some(0.9));
        assert_eq!(get("backup.walstream_cpu_vs_pg_basebackup"), Some(0.25));
        assert_eq!(get("backup.walstream_rss_vs_target"), Some(0.5));
        assert_eq!(
            get("receivewal.walstream_cpu_per_gb_vs_pg_receivewal"),
            Some(0.5)
        );
        let f = figures(&b);
        assert!(f
            .iter()
            .any(|(k, v)| k == "receivewal.200mib.pg_receivewal.cpu_s_per_gb" && *v == 0.3));
        assert!(report_md(&b).contains("| walstream basebackup | 9.00 |"));
    }

    #[test]
    fn rounds_alternate_the_order() {
        assert_eq!(
            in_round_order(&BACKUP_TOOLS, 1),
            vec![(1, "pg_basebackup"), (0, "walstream basebackup")]
        );
        assert_ne!(
            slot_name(0, RECEIVE_TOOLS[0]),
            slot_name(0, RECEIVE_TOOLS[1])
        );
    }
}

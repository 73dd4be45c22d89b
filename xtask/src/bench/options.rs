//! The command line of `cargo xtask bench`: every flag, its default, and what `--quick` changes.

use std::path::PathBuf;

use crate::Result;

/// What one run of the bench does, from the command line.
pub(super) struct Options {
    /// Single-row inserts in the drain backlog.
    pub(super) rows: u64,
    /// Rounds per consumer; the report gives the median of each figure.
    pub(super) rounds: usize,
    /// The majors to drain from (default: 15 and the newest installed).
    pub(super) majors: Option<Vec<u32>>,
    /// Whether the criterion parse benches run (`--no-parse` reuses an earlier summary).
    pub(super) parse: bool,
    /// Whether the report includes the parse summary of an earlier run when the parse benches
    /// do not run (not with `--only` without `parse`).
    pub(super) earlier_parse: bool,
    /// Criterion measurement time per parse bench, seconds.
    pub(super) parse_time: f64,
    /// MiB of row values in the big transaction; 0 skips it.
    pub(super) big_mb: u64,
    /// The memory budget of the big transaction's `TransactionStream`, MiB.
    pub(super) budget_mib: u64,
    /// `--compare OLD.json`: the report of an earlier run to compare every figure with.
    pub(super) compare: Option<PathBuf>,
    /// `--wrap CMD`: a command line each consumer runs under (`{consumer}` is replaced by its
    /// name), for example `strace -c -f -o target/bench/strace-{consumer}.txt`.
    pub(super) wrap: Option<String>,
    /// `--drain-bins DIR`: use the consumers already built in DIR instead of building
    /// `benches/drain` (to compare a build of another checkout against this one's baselines).
    pub(super) drain_bins: Option<String>,
    /// `--quick`: the smaller workload, marked as such in the report.
    pub(super) quick: bool,
    /// `--out DIR`: where the report goes (default `target/bench`; the parse summary is always
    /// read from `target/bench`, where the parse bench writes it).
    pub(super) out: Option<PathBuf>,
    /// Whether the drain bench runs (`--no-drain`, `--only`).
    pub(super) drain: bool,
    /// MiB of data in the backup bench's cluster (about; `--backup-size-mb`); 0 skips it.
    pub(super) backup_mb: u64,
    /// `--walstream-bin PATH`: the `walstream` binary of the backup bench, instead of
    /// building walstream-cli in release mode here.
    pub(super) walstream_bin: Option<PathBuf>,
    /// Whether the instruction counts (callgrind) are taken (`--no-instructions`, `--only`).
    pub(super) instructions: bool,
    /// Whether the latency bench runs (`--no-latency`, `--only`).
    pub(super) latency: bool,
    /// `--latency-rates LIST`: the latency bench's commits a second.
    pub(super) latency_rates: Vec<u64>,
    /// `--latency-seconds N`: how long the latency bench writes at each rate.
    pub(super) latency_seconds: u64,
    /// Whether the many-streams bench runs (`--no-many`, `--only`).
    pub(super) many: bool,
    /// `--many-streams N`: the streams of the many-streams bench.
    pub(super) many_streams: usize,
    /// `--many-runtime current|multi|both`: the runtime flavours it measures.
    pub(super) many_runtimes: Vec<String>,
    /// Rows of the snapshot bench's table (`--snapshot-rows`); 0 skips it.
    pub(super) snapshot_rows: u64,
}

/// Parses the arguments after `bench`. Explicit sizes win over `--quick` whatever their order,
/// and `--no-big` over `--big-mb`.
pub(super) fn parse_options(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        rows: 1_000_000,
        rounds: 3,
        majors: None,
        parse: true,
        earlier_parse: true,
        parse_time: 5.0,
        big_mb: 1024,
        budget_mib: 64,
        compare: None,
        wrap: None,
        drain_bins: None,
        quick: false,
        out: None,
        drain: true,
        backup_mb: 2048,
        walstream_bin: None,
        instructions: true,
        latency: true,
        latency_rates: super::latency::LATENCY_RATES.to_vec(),
        latency_seconds: 10,
        many: true,
        many_streams: 100,
        many_runtimes: super::many::MANY_RUNTIMES.map(str::to_owned).to_vec(),
        snapshot_rows: 10_000_000,
    };
    let mut snapshot_rows = None;
    let mut no_snapshot = false;
    let mut latency_seconds = None;
    let mut backup_mb = None;
    let mut no_backup = false;
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
                opts.backup_mb = 256;
                opts.latency_seconds = 3;
                opts.snapshot_rows = 1_000_000;
            }
            "--no-snapshot" => no_snapshot = true,
            "--snapshot-rows" => snapshot_rows = Some(number(iter.next(), "--snapshot-rows")?),
            "--no-latency" => opts.latency = false,
            "--no-many" => opts.many = false,
            "--many-streams" => {
                let n = number(iter.next(), "--many-streams")?;
                opts.many_streams = usize::try_from(n).map_err(|e| e.to_string())?;
            }
            "--many-runtime" => {
                let flavour = iter.next().map(String::as_str);
                opts.many_runtimes = match flavour {
                    Some("both") => super::many::MANY_RUNTIMES.map(str::to_owned).to_vec(),
                    Some(f) if super::many::MANY_RUNTIMES.contains(&f) => vec![f.to_owned()],
                    _ => return Err("bench: --many-runtime needs current, multi or both".into()),
                };
            }
            "--latency-seconds" => {
                latency_seconds = Some(number(iter.next(), "--latency-seconds")?)
            }
            "--latency-rates" => {
                let list = iter
                    .next()
                    .ok_or("bench: --latency-rates needs a list, e.g. 20,2000")?;
                let rates: Option<Vec<u64>> = list
                    .split(',')
                    .map(|r| r.trim().replace('_', "").parse().ok().filter(|&r| r > 0))
                    .collect();
                opts.latency_rates = rates
                    .filter(|r| !r.is_empty())
                    .ok_or("bench: --latency-rates needs a list, e.g. 20,2000")?;
            }
            "--no-drain" => opts.drain = false,
            "--no-backup" => no_backup = true,
            "--no-instructions" => opts.instructions = false,
            "--only" => {
                let list = iter.next().ok_or(
                    "bench: --only needs a list of drain,big,parse,backup,instructions,latency,snapshot,many",
                )?;
                let only: Vec<&str> = list.split(',').map(str::trim).collect();
                if let Some(bad) = only.iter().find(|b| {
                    ![
                        "drain",
                        "big",
                        "parse",
                        "backup",
                        "instructions",
                        "latency",
                        "snapshot",
                        "many",
                    ]
                    .contains(b)
                }) {
                    return Err(format!(
                        "bench: --only: unknown bench {bad:?} (drain, big, parse, backup, \
                         instructions, latency, snapshot, many)"
                    ));
                }
                opts.latency = only.contains(&"latency");
                opts.many = only.contains(&"many");
                opts.instructions = only.contains(&"instructions");
                opts.drain = only.contains(&"drain");
                opts.parse = only.contains(&"parse");
                opts.earlier_parse = opts.parse;
                no_big |= !only.contains(&"big");
                no_backup |= !only.contains(&"backup");
                no_snapshot |= !only.contains(&"snapshot");
            }
            "--backup-size-mb" => backup_mb = Some(number(iter.next(), "--backup-size-mb")?),
            "--walstream-bin" => {
                let file = iter.next().ok_or("bench: --walstream-bin needs a path")?;
                opts.walstream_bin = Some(PathBuf::from(file));
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
    if let Some(s) = latency_seconds {
        opts.latency_seconds = s;
    }
    if let Some(mb) = backup_mb {
        opts.backup_mb = mb;
    }
    if no_backup {
        opts.backup_mb = 0;
    }
    if let Some(rows) = snapshot_rows {
        opts.snapshot_rows = rows;
    }
    if no_snapshot {
        opts.snapshot_rows = 0;
    }
    if opts.rows == 0
        || opts.rounds == 0
        || opts.budget_mib == 0
        || opts.latency_seconds == 0
        || opts.many_streams == 0
    {
        return Err(
            "bench: --rows, --rounds, --budget-mib, --latency-seconds and \
                    --many-streams must be at least 1"
                .to_owned(),
        );
    }
    Ok(opts)
}

/// The number after `flag`; underscores are allowed as digit separators (`1_000_000`).
fn number(value: Option<&String>, flag: &str) -> Result<u64> {
    value
        .and_then(|v| v.replace('_', "").parse().ok())
        .ok_or_else(|| format!("bench: {flag} needs a positive number"))
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
    fn only_backup_turns_the_other_benches_off() {
        let opts = parse_options(&args(&["--only", "backup", "--backup-size-mb", "200"]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            (opts.drain, opts.big_mb, opts.parse, opts.earlier_parse),
            (false, 0, false, false)
        );
        assert_eq!(opts.backup_mb, 200);
        let opts = parse_options(&args(&["--backup-size-mb", "300", "--quick", "--no-drain"]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((opts.drain, opts.big_mb, opts.backup_mb), (false, 100, 300));
        assert!(parse_options(&args(&["--only", "drain,backups"])).is_err());
        let opts = parse_options(&args(&["--no-backup"])).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(opts.backup_mb, 0);
    }

    #[test]
    fn only_many_takes_its_stream_count_and_runtime() {
        let opts = parse_options(&args(&[
            "--quick",
            "--only",
            "many",
            "--many-streams",
            "40",
        ]))
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            (
                opts.many,
                opts.drain,
                opts.latency,
                opts.big_mb,
                opts.backup_mb
            ),
            (true, false, false, 0, 0)
        );
        assert_eq!((opts.many_streams, opts.many_runtimes.len()), (40, 2));
        let opts = parse_options(&args(&["--many-runtime", "multi"]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((opts.many, opts.many_streams), (true, 100));
        assert_eq!(opts.many_runtimes, vec!["multi".to_owned()]);
        assert!(parse_options(&args(&["--many-runtime", "threads"])).is_err());
        assert!(parse_options(&args(&["--many-streams", "0"])).is_err());
        assert!(
            !parse_options(&args(&["--only", "latency"]))
                .unwrap_or_else(|e| unreachable!("{e}"))
                .many
        );
        assert!(
            !parse_options(&args(&["--no-many"]))
                .unwrap_or_else(|e| unreachable!("{e}"))
                .many
        );
    }

    #[test]
    fn only_snapshot_runs_the_snapshot_bench_alone() {
        let opts =
            parse_options(&args(&["--only", "snapshot"])).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(opts.snapshot_rows, 10_000_000);
        assert_eq!(
            (
                opts.drain,
                opts.big_mb,
                opts.parse,
                opts.backup_mb,
                opts.latency
            ),
            (false, 0, false, 0, false)
        );
        assert!(!opts.instructions);
        let opts = parse_options(&args(&["--snapshot-rows", "2_000", "--quick"]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(opts.snapshot_rows, 2000);
        let opts = parse_options(&args(&["--quick", "--only", "snapshot,backup"]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((opts.snapshot_rows, opts.backup_mb), (1_000_000, 256));
        let opts =
            parse_options(&args(&["--only", "backup"])).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(opts.snapshot_rows, 0);
        let opts = parse_options(&args(&["--no-snapshot"])).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(opts.snapshot_rows, 0);
        assert!(parse_options(&args(&["--snapshot-rows"])).is_err());
    }
}

//! The drain runs: a throwaway cluster per bench, the backlog, and every consumer as a child
//! process measured with `wait4` (see the module docs of `bench` for what each bench does).

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::options::Options;
use super::stats::{kib_to_mb, median, Big, Drain, Sample};
use super::{BASE_MAJOR, BIG_CONSUMERS, BIG_VALUE_BYTES, CONSUMERS, ROWS_PER_TX};
use crate::{cargo, run, Result};

/// Where the consumers' programs are.
pub(super) struct Paths {
    /// The directory of `drain-walstream` and `drain-pg-walstream`.
    pub(super) drain_bins: PathBuf,
    /// PostgreSQL 15's `pg_recvlogical`.
    pub(super) recvlogical: PathBuf,
}

impl Paths {
    /// The consumers of `drain_bins` (`--drain-bins`), else those of `benches/drain` built now
    /// in release mode, and PostgreSQL 15's `pg_recvlogical`.
    pub(super) fn new(root: &Path, drain_bins: Option<&str>) -> Result<Paths> {
        let drain_bins = match drain_bins {
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
        Ok(Paths {
            drain_bins,
            recvlogical: pg_recvlogical()?,
        })
    }

    /// The program that runs `consumer` (one of [`CONSUMERS`] other than `pg_recvlogical`).
    fn drain_bin(&self, consumer: &str) -> PathBuf {
        let name = if consumer == "pg_walstream" {
            "drain-pg-walstream"
        } else {
            "drain-walstream"
        };
        self.drain_bins.join(name)
    }
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
    /// The bench database's key=value conninfo.
    conninfo: &'a str,
    /// The LSN each consumer stops at (`pg_current_wal_lsn()` after the workload).
    end_lsn: &'a str,
    /// `pg_recvlogical -o` options: the same pgoutput options the drain consumers ask for.
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

/// Prints one measurement as it is taken, so a long run shows its progress.
pub(super) fn print_sample(label: &str, consumer: &str, sample: &Sample) {
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
pub(super) fn drain(opts: &Options, paths: &Paths, major: u32) -> Result<Drain> {
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
pub(super) fn big_transaction(opts: &Options, paths: &Paths, major: u32) -> Result<Big> {
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
    // The protocol walstream negotiates on this server (4 on 16+, 3 on 15): pg_recvlogical
    // must ask for no more than the server has.
    let proto = format!("proto_version={}", big_protocol(major).number());
    let at = Endpoint {
        conninfo: &conninfo,
        end_lsn: &end_lsn,
        recv_options: &[&proto, "streaming=on", "publication_names=bench_pub"],
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

/// The pgoutput protocol of the big transaction on `major`: the highest the server speaks,
/// which is what walstream's consumer negotiates.
pub(super) fn big_protocol(major: u32) -> walproto::pgoutput::ProtocolVersion {
    walproto::pgoutput::ProtocolVersion::max_for_server(major * 10_000)
}

/// The slot of `consumer` in `round` (slot names allow no `-`).
fn slot_name(round: usize, consumer: &str) -> String {
    format!("drain_r{round}_{}", consumer.replace('-', "_"))
}

/// Debian's libpq-dev, which pg_walstream's `libpq` backend links (installed when missing, as
/// `.ci/run` does for its packages).
pub(super) fn ensure_libpq_dev() -> Result<()> {
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

/// `cargo bench -p benches --bench parse` for `seconds` of measurement per bench, which also
/// writes `target/bench/parse-summary.{json,md}`.
pub(super) fn run_parse_benches(root: &Path, seconds: f64) -> Result<()> {
    let warm_up = (seconds / 2.0).clamp(0.5, 2.0);
    run(Command::new(cargo())
        .current_dir(root)
        .args(["bench", "-p", "benches", "--bench", "parse", "--"])
        .args(["--measurement-time", &format!("{seconds}")])
        .args(["--warm-up-time", &format!("{warm_up}")]))
}

/// Runs `cmd` to its end and measures it: wall time, and from `wait4` its CPU time and peak RSS.
/// `rows=N` on its standard output is the row count it reports.
pub(super) fn measure(cmd: &mut Command) -> Result<Sample> {
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

/// How a reaped child ended.
struct ChildStatus {
    /// It exited with status 0.
    success: bool,
    /// The raw wait status, for [`ChildStatus::describe`].
    raw: i32,
}

impl ChildStatus {
    /// The exit status or the signal, for an error message.
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

/// A reaped child's own resource usage, from `wait4`.
struct Usage {
    /// User CPU time, seconds.
    user_s: f64,
    /// System CPU time, seconds.
    sys_s: f64,
    /// Peak resident set size, KiB.
    max_rss_kib: u64,
    /// Voluntary context switches.
    nvcsw: u64,
}

/// Reaps child `pid` with `wait4`, which returns the child's own resource usage (std's
/// `Child::wait` does not; `getrusage(RUSAGE_CHILDREN)` would merge every child so far and keep
/// the largest RSS of all of them).
#[allow(
    unsafe_code,
    reason = "libc::wait4 has no safe wrapper in std, and only it gives one child's own CPU \
              time and peak RSS; the two unsafe calls are argued sound below"
)]
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

#[cfg(test)]
mod tests {
    use super::big_protocol;

    #[test]
    fn the_big_transaction_asks_no_server_for_more_than_it_has() {
        // PostgreSQL 15 refuses proto_version=4 ("we only support protocol 3 or lower").
        let numbers: Vec<u8> = [15, 16, 17, 18].map(|m| big_protocol(m).number()).to_vec();
        assert_eq!(numbers, [3, 4, 4, 4]);
    }
}

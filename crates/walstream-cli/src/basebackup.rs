//! `walstream basebackup`: a base backup with `pg_basebackup`'s options and on-disk result,
//! through walstream's `backup` module (`BASE_BACKUP`, the writers, WAL streamed beside).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use walstream::backup::{
    self, BackupProgress, BackupSummary, BaseBackupConfig, Checkpoint, ChecksumAlgorithm,
    PlainWriter, TarWriter, WalMethod,
};
use walstream::walconn::{self, Host};

/// `walstream basebackup`'s options: `pg_basebackup`'s, long and short forms.
#[derive(Debug, Args)]
pub(crate) struct BasebackupArgs {
    /// A libpq connection string: a URL or key=value pairs; PG* variables are the defaults.
    #[arg(value_name = "CONNINFO")]
    conninfo: String,
    /// The directory to write to: created, or empty.
    #[arg(short = 'D', long = "pgdata", value_name = "DIR")]
    pgdata: PathBuf,
    /// plain (p): a data directory; tar (t): base.tar, one tar per tablespace and pg_wal.tar.
    #[arg(short = 'F', long, value_name = "plain|tar", default_value = "plain",
          value_parser = PossibleValuesParser::new(["plain", "p", "tar", "t"]).map(|s| if s.starts_with('t') { Format::Tar } else { Format::Plain }))]
    format: Format,
    /// How the WAL the backup needs is included: none (n), fetch (f: in the main archive at
    /// the end) or stream (s: on a second connection while the backup runs).
    #[arg(short = 'X', long, value_name = "none|fetch|stream", default_value = "stream",
          value_parser = PossibleValuesParser::new(["none", "n", "fetch", "f", "stream", "s"]).map(wal_method))]
    wal_method: WalMethod,
    /// fast: checkpoint at once; spread: as the server's checkpoints are spread.
    #[arg(short = 'c', long, value_name = "fast|spread", default_value = "spread",
          value_parser = PossibleValuesParser::new(["fast", "spread"]).map(|s| if s == "fast" { Checkpoint::Fast } else { Checkpoint::Spread }))]
    checkpoint: Checkpoint,
    /// The physical replication slot that keeps the streamed WAL (-X stream); it must exist
    /// unless --create-slot. Default: a slot of the backup's own, dropped at the end.
    #[arg(short = 'S', long, value_name = "S")]
    slot: Option<String>,
    /// Create the slot named by --slot first (it is kept after the backup).
    #[arg(short = 'C', long, requires = "slot")]
    create_slot: bool,
    /// The backup's label (in backup_label).
    #[arg(
        short = 'l',
        long,
        value_name = "L",
        default_value = "walstream base backup"
    )]
    label: String,
    /// The manifest's file checksums: NONE, CRC32C (the default), SHA224, SHA256, SHA384 or
    /// SHA512.
    #[arg(long, value_name = "ALG", value_parser = checksums)]
    manifest_checksums: Option<Checksums>,
    /// Write no backup_manifest.
    #[arg(long, conflicts_with = "manifest_checksums")]
    no_manifest: bool,
    /// An incremental backup relative to the backup OLD_MANIFEST (its backup_manifest)
    /// describes (PostgreSQL 17+, with summarize_wal on).
    #[arg(short = 'i', long, value_name = "OLD_MANIFEST")]
    incremental: Option<PathBuf>,
    /// Show progress on stderr.
    #[arg(short = 'P', long)]
    progress: bool,
    /// Make the backup a standby of this server: standby.signal, and primary_conninfo in
    /// postgresql.auto.conf.
    #[arg(short = 'R', long)]
    write_recovery_conf: bool,
    /// The largest transfer rate, in kB/s (with a suffix k or M, kB/s or MB/s), 32 kB/s to
    /// 1024 MB/s.
    #[arg(short = 'r', long, value_name = "RATE", value_parser = max_rate)]
    max_rate: Option<u32>,
}

pub(crate) const BASEBACKUP_EXAMPLES: &str = "\
Examples:
  walstream basebackup 'host=db user=repl' -D /backups/today -P
  walstream basebackup postgresql://repl@db -D /backups/today -F tar -X stream -c fast
  walstream basebackup postgresql://repl@db -D /srv/standby -R -S standby1 -C
  walstream basebackup postgresql://repl@db -D /backups/monday-incr \\
      -i /backups/sunday/backup_manifest

The result is what pg_basebackup writes with the same options: a data directory (or base.tar,
one tar per tablespace and pg_wal.tar) with backup_manifest, written last, after every file is
synced. A backup that fails leaves no directory that looks complete: one it created is removed,
an existing one gets a file saying it is incomplete. PostgreSQL 15 or later.

Exit status:
  0  the backup is complete
  2  usage error (or an option this server does not support)
  3  the directory or a file cannot be written (or the old manifest read)
  4  the server or the connection failed, or its archives were malformed
  5  the replication slot named by --slot does not exist";

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Plain,
    Tar,
}

/// A `--manifest-checksums` value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checksums(Option<ChecksumAlgorithm>);

fn checksums(s: &str) -> Result<Checksums, String> {
    let upper = s.to_ascii_uppercase();
    if upper == "NONE" {
        return Ok(Checksums(None));
    }
    ChecksumAlgorithm::from_name(&upper)
        .map(|a| Checksums(Some(a)))
        .ok_or_else(|| format!("{s:?}: not one of NONE, CRC32C, SHA224, SHA256, SHA384, SHA512"))
}

fn wal_method(s: String) -> WalMethod {
    match s.as_str() {
        "none" | "n" => WalMethod::None,
        "fetch" | "f" => WalMethod::Fetch,
        _ => WalMethod::Stream,
    }
}

/// `--max-rate` as pg_basebackup reads it: kB/s, or with a suffix k (kB/s) or M (MB/s).
fn max_rate(s: &str) -> Result<u32, String> {
    let (digits, factor) = match s.strip_suffix('M') {
        Some(d) => (d, 1024),
        None => (s.strip_suffix('k').unwrap_or(s), 1),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: not a transfer rate (a number of kB/s, or with k or M)"))?;
    let rate = n.saturating_mul(factor);
    // pg_basebackup's MAX_RATE_LOWER and MAX_RATE_UPPER, which the server checks too.
    if !(32..=1024 * 1024).contains(&rate) {
        return Err(format!(
            "{s:?}: the rate must be between 32 kB/s and 1024 MB/s"
        ));
    }
    u32::try_from(rate).map_err(|_| format!("{s:?}: too large"))
}

/// Why the backup failed.
#[derive(Debug)]
pub(crate) enum BasebackupError {
    /// The options are wrong together.
    Usage(String),
    /// The old manifest of `--incremental` cannot be read.
    Read(PathBuf, std::io::Error),
    /// The backup failed.
    Backup(backup::Error),
}

impl std::fmt::Display for BasebackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BasebackupError::Usage(m) => f.write_str(m),
            BasebackupError::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            BasebackupError::Backup(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<backup::Error> for BasebackupError {
    fn from(e: backup::Error) -> Self {
        BasebackupError::Backup(e)
    }
}

/// Takes the backup.
pub(crate) async fn basebackup(args: &BasebackupArgs) -> Result<BackupSummary, BasebackupError> {
    if args.slot.is_some() && args.wal_method != WalMethod::Stream {
        return Err(BasebackupError::Usage(
            "--slot is only used with -X stream (the WAL streamed beside the backup)".into(),
        ));
    }
    let incremental_from = match &args.incremental {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| BasebackupError::Read(path.clone(), e))?
                .into(),
        ),
        None => None,
    };
    let config = BaseBackupConfig {
        label: Some(args.label.clone()),
        checkpoint: args.checkpoint,
        manifest: if args.no_manifest {
            None
        } else {
            Some(
                args.manifest_checksums
                    .map_or(Some(ChecksumAlgorithm::Crc32c), |c| c.0),
            )
        },
        max_rate: args.max_rate,
        progress: args.progress,
        wal: args.wal_method,
        incremental_from,
        wal_slot: args.slot.clone(),
        create_wal_slot: args.create_slot,
    };
    let recovery = if args.write_recovery_conf {
        let config = walconn::Config::parse(&args.conninfo)
            .map_err(|e| BasebackupError::Backup(e.into()))?;
        Some(primary_conninfo(&config))
    } else {
        None
    };
    let stream = backup::start(&args.conninfo, config).await?;
    let progress = stream.progress();
    let reporter = args
        .progress
        .then(|| tokio::spawn(report_progress(progress.clone())));
    let result = if args.format == Format::Tar {
        let mut writer = TarWriter::new(&args.pgdata);
        if let Some(conninfo) = recovery {
            writer = writer.write_recovery_conf(conninfo);
            if let Some(slot) = &args.slot {
                writer = writer.primary_slot_name(slot);
            }
        }
        writer.write(stream).await
    } else {
        let mut writer = PlainWriter::new(&args.pgdata);
        if let Some(conninfo) = recovery {
            writer = writer.write_recovery_conf(conninfo);
            if let Some(slot) = &args.slot {
                writer = writer.primary_slot_name(slot);
            }
        }
        writer.write(stream).await
    };
    if let Some(reporter) = reporter {
        reporter.abort();
        if result.is_ok() {
            print_progress(&progress, true);
            eprintln!("walstream basebackup: base backup completed");
        }
    }
    Ok(result?)
}

/// Prints the progress line every second, as `pg_basebackup -P` does: rewritten in place on a
/// terminal, one line per update otherwise.
async fn report_progress(progress: BackupProgress) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        print_progress(&progress, false);
    }
}

/// One progress line on stderr; `last` prints the final one, with the total reached.
fn print_progress(progress: &BackupProgress, last: bool) {
    let done = progress.done() / 1024;
    let line = match progress.total() {
        Some(total) => {
            let total = (total / 1024).max(done);
            let done = if last { total } else { done };
            let percent = (done * 100).checked_div(total).unwrap_or(100);
            format!(
                "{done:>9}/{total} kB ({percent}%), {} archives",
                progress.archives_started()
            )
        }
        None => format!("{done:>9} kB, {} archives", progress.archives_started()),
    };
    let mut err = std::io::stderr().lock();
    let _ = match (std::io::stderr().is_terminal(), last) {
        (true, false) => write!(err, "\r{line}"),
        (true, true) => writeln!(err, "\r{line}"),
        (false, _) => writeln!(err, "{line}"),
    };
    let _ = err.flush();
}

/// The `primary_conninfo` that `-R` writes: the connection's settings as libpq would connect
/// with them (the PG* variables of this process resolved, since the server does not share
/// them), minus what the standby decides itself (`replication`), with values quoted for a
/// conninfo. The password is not written: give the standby a password file (`passfile`).
fn primary_conninfo(config: &walconn::Config) -> String {
    let join = |items: Vec<String>| items.join(",");
    let hosts = join(
        config
            .hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(dir) => dir.display().to_string(),
            })
            .collect(),
    );
    let ports = join(config.ports().iter().map(u16::to_string).collect());
    let mut pairs = vec![
        ("user", config.user().to_owned()),
        ("host", hosts),
        ("port", ports),
        ("sslmode", config.sslmode().as_str().to_owned()),
    ];
    if let Some(walconn::SslRootCert::File(path)) = config.sslrootcert() {
        pairs.push(("sslrootcert", path.display().to_string()));
    }
    if let Some(path) = config.sslcert() {
        pairs.push(("sslcert", path.display().to_string()));
    }
    if let Some(path) = config.sslkey() {
        pairs.push(("sslkey", path.display().to_string()));
    }
    if let Some(name) = config.application_name() {
        pairs.push(("application_name", name.to_owned()));
    }
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={}", quote(&v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A conninfo value: bare when it can be, else single-quoted with `\` and `'` escaped.
fn quote(value: &str) -> String {
    if !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return value.to_owned();
    }
    let mut out = String::from("'");
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

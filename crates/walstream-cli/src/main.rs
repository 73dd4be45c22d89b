//! The `walstream` command-line tool. Its contract is `CLI.md` in this crate (a copy of the
//! project's `shared/CLI.md`, kept identical by `cargo xtask tidy`).
//!
//! `decode`, `record`, `tail`, `demo` and `slot`.

mod basebackup;
mod capture;
mod decode;
mod demo;
mod json;
mod metrics;
mod receivewal;
mod record;
mod slot;
mod tail;
mod typed;
mod wal2json;

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use walproto::pgoutput::{OriginFilter, ProtocolVersion, Streaming};
use walproto::Lsn;

use decode::DecodeError;

/// Exit codes; `--help` lists them too.
mod exit {
    /// The capture is invalid, or a message in it could not be decoded. Every line before the
    /// problem was written.
    pub(crate) const DATA: u8 = 1;
    /// The command line is wrong, or an option is not implemented yet. clap's own usage
    /// errors exit with 2 as well.
    pub(crate) const USAGE: u8 = 2;
    /// A file could not be opened or read, or the output could not be written.
    pub(crate) const IO: u8 = 3;
    /// The server or the connection failed; for `demo`, no server could be found or started.
    pub(crate) const SERVER: u8 = 4;
    /// The replication slot is missing or was invalidated.
    pub(crate) const SLOT: u8 = 5;
}

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  the capture is invalid or a message in it cannot be decoded
     (every line before the problem is written first)
  2  usage error, or an option that is not implemented yet
  3  a file cannot be read, or the output cannot be written
  4  the server or the connection failed (record, tail, slot), or demo found or started
     no server
  5  the replication slot is lost (invalidated: the reason is on stderr) or missing, or after
     a failover not safe to resume from on the new primary (stderr says why); re-create it and
     take a new snapshot";

/// Decode, tail and record PostgreSQL logical replication (pgoutput) streams as JSON lines.
#[derive(Debug, Parser)]
#[command(name = "walstream", version, after_help = EXIT_CODES)]
struct Cli {
    /// More diagnostics on stderr: -v info, -vv debug, -vvv trace. RUST_LOG takes tracing's
    /// filter syntax (`RUST_LOG=walconn=debug,info`); its bare level replaces these.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream decoded changes as JSON lines on stdout, acknowledging what was written.
    #[command(after_help = TAIL_EXAMPLES)]
    Tail(TailArgs),
    /// Write the raw replication stream to a capture file.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(RecordArgs),
    /// Decode a capture file to JSON lines on stdout (the same schema as `tail`).
    #[command(after_help = DECODE_EXAMPLES)]
    Decode(DecodeArgs),
    /// Start a throwaway local PostgreSQL, write changes to a demo table and tail them.
    #[command(after_help = DEMO_EXAMPLES)]
    Demo(DemoArgs),
    /// List, create, drop or check replication slots.
    #[command(after_help = SLOT_EXAMPLES)]
    Slot(SlotArgs),
    /// Take a base backup as pg_basebackup does.
    #[command(after_help = basebackup::BASEBACKUP_EXAMPLES)]
    Basebackup(basebackup::BasebackupArgs),
    /// Stream WAL into segment files as pg_receivewal does.
    #[command(after_help = receivewal::RECEIVEWAL_EXAMPLES)]
    Receivewal(receivewal::ReceivewalArgs),
    /// Print a shell completion script on stdout.
    #[command(after_help = COMPLETIONS_HELP)]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const COMPLETIONS_HELP: &str = "\
Examples:
  walstream completions bash > ~/.local/share/bash-completion/completions/walstream
  walstream completions zsh > ~/.zfunc/_walstream
  walstream completions fish > ~/.config/fish/completions/walstream.fish

Exit status:
  0  the script was written
  2  usage error
  3  the output cannot be written";

const DEMO_EXAMPLES: &str = "\
Examples:
  walstream demo
  walstream demo --seconds 10 | jq -c 'select(.type == \"update\")'
  walstream demo --bin-dir /usr/lib/postgresql/15/bin

Finds PostgreSQL server binaries (the newest major in $WALSTREAM_PG<N>_BIN, $WALSTREAM_PG_BIN,
the `cargo xtask pg install` cache target/pg/<major>/bin and $WALSTREAM_PG_CACHE/<major>/bin,
PATH, `pg_config --bindir`, or /usr/lib/postgresql/*/bin), starts a throwaway cluster in a temporary directory (as the
postgres user when run as root), creates table public.orders, a publication and a slot named
walstream_demo, writes inserts, updates, deletes and now and then a large transaction (streamed
before it commits, PostgreSQL 14+), and prints them as `walstream tail` does. The server is
stopped and its directory removed on Ctrl-C, SIGTERM, after --seconds, and on errors.

Exit status:
  0  stopped by a signal, after --seconds, or because stdout was closed
  1  a message from the server cannot be decoded
  3  the output cannot be written
  4  no PostgreSQL server binaries were found (the message says what to install), or the
     server could not be set up";

const SLOT_EXAMPLES: &str = "\
Examples:
  walstream slot list 'host=db user=repl dbname=app'
  walstream slot create postgresql://repl@db/app --slot app_slot --two-phase
  walstream slot drop postgresql://repl@db/app --slot app_slot --wait
  walstream slot health postgresql://repl@db/app --slot app_slot --max-lag-bytes 1073741824

list prints one JSON object per slot: name, type, plugin, database, temporary, active_pid,
restart_lsn, confirmed_flush_lsn, two_phase, wal_status, safe_wal_size, invalidation_reason,
inactive_since, conflicting, synced (null where the server lacks the column) and lag_bytes (the
server's WAL position, on a standby its replay position, minus the slot's). create makes a
logical pgoutput slot and prints {\"name\": ..., \"consistent_point\": ...}. drop prints
nothing. health prints one object (status healthy, warning, critical, lost or missing, with
its reasons) and exits with the grade.

Exit status:
  0  success (health: healthy)
  1  health: warning (wal_status extended, lag over --max-lag-bytes, or safe_wal_size under
     --min-safe-wal-size)
  2  usage error; health: critical (wal_status unreserved: the next checkpoint removes WAL the
     slot needs, or safe_wal_size at or below zero)
  3  the output cannot be written
  4  the server or the connection failed (for example: the name is taken)
  5  the slot is lost (invalidated) or missing";

#[derive(Debug, Args)]
struct DemoArgs {
    /// Stop after this many seconds of tailing (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    seconds: Option<u64>,
    /// Use the server binaries in this directory instead of searching for the newest.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SlotArgs {
    #[command(subcommand)]
    command: SlotCommand,
}

#[derive(Debug, Subcommand)]
enum SlotCommand {
    /// Print every replication slot of the cluster, one JSON object per line.
    #[command(after_help = SLOT_LIST_HELP)]
    List {
        /// A libpq connection string: a URL or key=value pairs; PG* variables are the defaults.
        #[arg(value_name = "CONNINFO")]
        conninfo: String,
        /// Only this slot (nothing printed if it does not exist).
        #[arg(long, value_name = "S")]
        slot: Option<String>,
    },
    /// Check one slot's health for monitoring: print one JSON object, exit 0 healthy,
    /// 1 warning, 2 critical, 5 lost or missing.
    #[command(after_help = SLOT_HEALTH_HELP)]
    Health {
        /// A libpq connection string: a URL or key=value pairs; PG* variables are the defaults.
        #[arg(value_name = "CONNINFO")]
        conninfo: String,
        /// The slot's name.
        #[arg(long, value_name = "S")]
        slot: String,
        /// A warning when the slot lags the server's WAL position by more bytes than this.
        #[arg(long, value_name = "N")]
        max_lag_bytes: Option<u64>,
        /// A warning when safe_wal_size is under this many bytes (default: a fifth of the
        /// server's max_slot_wal_keep_size; none when that is unlimited).
        #[arg(long, value_name = "N")]
        min_safe_wal_size: Option<u64>,
    },
    /// Create a logical replication slot (plugin pgoutput) and print its consistent point.
    #[command(after_help = SLOT_CREATE_HELP)]
    Create {
        /// A libpq connection string: a URL or key=value pairs; PG* variables are the defaults.
        #[arg(value_name = "CONNINFO")]
        conninfo: String,
        /// The slot's name.
        #[arg(long, value_name = "S")]
        slot: String,
        /// A temporary slot: dropped when this command's connection ends, so it only shows
        /// that the slot can be created.
        #[arg(long)]
        temporary: bool,
        /// Decode prepared transactions at PREPARE (PostgreSQL 15+ for this command).
        #[arg(long)]
        two_phase: bool,
    },
    /// Drop a replication slot.
    #[command(after_help = SLOT_DROP_HELP)]
    Drop {
        /// A libpq connection string: a URL or key=value pairs; PG* variables are the defaults.
        #[arg(value_name = "CONNINFO")]
        conninfo: String,
        /// The slot's name.
        #[arg(long, value_name = "S")]
        slot: String,
        /// If the slot is in use, wait until it is released instead of failing.
        #[arg(long)]
        wait: bool,
    },
}

/// The exit codes of `slot list`, `create` and `drop`.
macro_rules! slot_exit_codes {
    () => {
        "

Exit status:
  0  success
  2  usage error (also a malformed conninfo)
  3  the output cannot be written
  4  the server or the connection failed (create: the name is taken; drop: the slot is
     in use, without --wait)
  5  drop: the slot does not exist"
    };
}

const SLOT_LIST_HELP: &str = concat!(
    "Example:\n  walstream slot list 'host=db user=repl dbname=app'",
    slot_exit_codes!()
);

const SLOT_CREATE_HELP: &str = concat!(
    "Example:\n  walstream slot create postgresql://repl@db/app --slot app_slot --two-phase",
    slot_exit_codes!()
);

const SLOT_DROP_HELP: &str = concat!(
    "Example:\n  walstream slot drop postgresql://repl@db/app --slot app_slot --wait",
    slot_exit_codes!()
);

const SLOT_HEALTH_HELP: &str = "\
Example:
  walstream slot health postgresql://repl@db/app --slot app_slot --max-lag-bytes 1073741824

Prints {\"name\", \"status\", \"reasons\", \"active\", \"wal_status\", \"safe_wal_size\",
\"min_safe_wal_size\", \"lag_bytes\", \"max_lag_bytes\", \"invalidation_reason\"}.

Exit status:
  0  healthy
  1  warning: wal_status extended (more WAL held than max_wal_size), lag over --max-lag-bytes,
     or safe_wal_size under --min-safe-wal-size
  2  critical: wal_status unreserved (the next checkpoint removes WAL the slot needs unless its
     consumer catches up first), or safe_wal_size at or below zero; also a usage error
  4  the server or the connection failed
  5  lost (invalidated, the reason in invalidation_reason) or missing";

const TAIL_EXAMPLES: &str = "\
Examples:
  walstream tail 'host=db user=repl dbname=app' --slot s --publication p
  walstream tail postgresql://repl@db/app --slot s --publication p --create-slot \\
      --streaming parallel --end 0/3000000 | jq -c 'select(.type == \"insert\")'

Lines have the schema of `walstream decode`. A transaction is acknowledged to the server only
after its lines are flushed to stdout (with -f FILE: fsynced to FILE, every --fsync-interval
seconds), so a restart resumes after the last transaction printed whole (one cut short by a
crash is printed again). Lost connections are retried with backoff (not with --no-loop).
--create-slot fails if the slot exists, unless --if-not-exists is given. SIGINT/SIGTERM stop
cleanly with a last status update.

Exit status:
  0  stopped at --end, by a signal, or because stdout was closed
  1  a message from the server cannot be decoded
  2  usage error (or an option this server does not support)
  3  the output cannot be written
  4  the server or the connection failed (at once with --no-loop), or --create-slot found
     the slot already there (without --if-not-exists)
  5  the replication slot is lost (invalidated: the reason is on stderr) or missing";

const RECORD_EXAMPLES: &str = "\
Examples:
  walstream record 'host=db user=repl dbname=app' --slot s --publication p --out app.walcap
  walstream record postgresql://repl@db/app --slot s --publication p --create-slot \\
      --streaming parallel --messages --end 0/3000000 --out app.walcap

The slot is acknowledged only up to a transaction end (or an idle keepalive) already synced
to the file (fsynced at the first status update after each --fsync-interval), so a restart
resumes where the file stops. record never reconnects (--no-loop is its only way).
--create-slot fails if the slot exists, unless --if-not-exists is given. SIGINT/SIGTERM stop
cleanly.

Exit status:
  0  stopped at --end, by a signal, or by the server ending the stream
  2  usage error
  3  the capture cannot be written
  4  the server or the connection failed, or --create-slot found the slot already there
     (without --if-not-exists)
  5  the replication slot is missing or was invalidated";

const DECODE_EXAMPLES: &str = "\
Examples:
  walstream decode testdata/pg17-v1.walcap
  walstream decode --keepalives capture.walcap | jq -c 'select(.type == \"insert\")'
  walstream decode - < capture.walcap
  walstream decode --typed --format wal2json capture.walcap

Each line is one JSON object with \"type\" and \"lsn\" first, for example:
  {\"type\":\"begin\",\"lsn\":\"0/16B3748\",\"final_lsn\":\"0/16B3880\",\"commit_time\":\"2026-11-24T12:00:00.123456Z\",\"xid\":740}

Exit status:
  0  success
  1  the capture is invalid or a message in it cannot be decoded; every line before the
     problem is written first, then the error (with its byte offset) on stderr
  2  usage error (also --format wal2json of a capture recorded with --streaming on or
     parallel, or --two-phase)
  3  the file cannot be read, or the output cannot be written";

#[derive(Debug, Args)]
struct DecodeArgs {
    /// The capture file (WALCAP1), or `-` for standard input.
    file: PathBuf,
    /// Also print a line for each primary keepalive (not with --format wal2json).
    #[arg(long)]
    keepalives: bool,
    #[command(flatten)]
    output: OutputArgs,
}

/// How `tail` and `decode` write their lines.
#[derive(Debug, Args)]
struct OutputArgs {
    /// Render values as natural JSON by their column types: integers and floats as numbers,
    /// numeric as a number when it round-trips exactly through an f64 (else a string),
    /// NaN/Infinity as strings, booleans, json/jsonb nested, arrays as arrays (NULL elements
    /// null), everything else as the server's text.
    #[arg(long)]
    typed: bool,
    /// The line format: `json` (one object per pgoutput message) or `wal2json` (wal2json's
    /// format-version 2: one object per change, action B/C/I/U/D/T/M, columns as
    /// {name, type, value}, identity for old keys, pk as the replica identity columns; needs
    /// --streaming off and no --two-phase; relation, origin and keepalive messages print
    /// nothing).
    #[arg(long, value_enum, default_value_t = json::Format::Json)]
    format: json::Format,
}

impl OutputArgs {
    fn output(&self) -> json::Output {
        json::Output {
            format: self.format,
            typed: self.typed,
        }
    }
}

#[derive(Debug, Args)]
struct TailArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// Write the lines to this file (appended to) instead of stdout; `-` is stdout. Only what
    /// was fsynced to it (every --fsync-interval seconds) is acknowledged.
    #[arg(short = 'f', long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Read the tables' existing rows first, from the slot's exported snapshot.
    #[arg(long)]
    snapshot: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct RecordArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// The capture file to write.
    #[arg(short = 'f', long, visible_alias = "file", value_name = "FILE")]
    out: PathBuf,
}

/// The options that start a stream, shared by `tail` and `record`.
#[derive(Debug, Args)]
struct StreamArgs {
    /// A libpq connection string: a URL or key=value pairs; PG* variables are the defaults.
    #[arg(value_name = "CONNINFO")]
    conninfo: String,
    /// The replication slot.
    #[arg(long, value_name = "S")]
    slot: String,
    /// A publication to stream (repeat, or separate by commas, for several: `--publication a,b`).
    #[arg(long, value_name = "P", required = true, value_delimiter = ',')]
    publication: Vec<String>,
    /// Create the slot; an error if it exists, unless --if-not-exists is given too.
    #[arg(long)]
    create_slot: bool,
    /// With --create-slot, make it a temporary slot.
    #[arg(long)]
    temporary: bool,
    /// With --create-slot, make it a failover slot (PostgreSQL 17+): a standby with
    /// `sync_replication_slots = on` keeps a synchronized copy, from which the stream resumes
    /// after that standby's promotion (list both hosts, with target_session_attrs=read-write).
    #[arg(long, requires = "create_slot", conflicts_with = "temporary")]
    failover: bool,
    /// The pgoutput protocol version (1 to 4); the highest the server supports by default.
    #[arg(long, value_name = "N", value_parser = protocol_parser())]
    proto_version: Option<ProtocolVersion>,
    /// Stream large in-progress transactions (protocol 2+; parallel needs 4+).
    #[arg(long, default_value = "off", value_parser = value_parser(Streaming::ALL, Streaming::as_str))]
    streaming: Streaming,
    /// Ask for binary-format column values.
    #[arg(long)]
    binary: bool,
    /// Include logical decoding messages (pg_logical_emit_message).
    #[arg(long)]
    messages: bool,
    /// Decode prepared transactions at PREPARE (protocol 3+).
    #[arg(long)]
    two_phase: bool,
    /// Which changes by replication origin to send.
    #[arg(long, default_value = "any", value_parser = value_parser(OriginFilter::ALL, OriginFilter::as_str))]
    origin: OriginFilter,
    /// Start at this LSN (X/X) instead of the slot's confirmed position.
    #[arg(long, value_name = "LSN")]
    start: Option<Lsn>,
    /// Stop cleanly once this LSN (X/X) is reached.
    #[arg(long, value_name = "LSN")]
    end: Option<Lsn>,
    #[command(flatten)]
    recvlogical: RecvlogicalArgs,
    #[command(flatten)]
    report: metrics::ReportArgs,
    /// Seconds between status updates to the server (at most a third of the server's
    /// `wal_sender_timeout` is used by tail), like
    /// `pg_recvlogical --status-interval`; keep it well under the server's
    /// `wal_sender_timeout`.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    status_interval: u64,
}

/// The options of `pg_recvlogical` that `tail` and `record` take too.
#[derive(Debug, Args)]
struct RecvlogicalArgs {
    /// With --create-slot, use the slot if it exists instead of failing (as pg_recvlogical).
    #[arg(long, requires = "create_slot")]
    if_not_exists: bool,
    /// Do not reconnect after the connection is lost: exit 4 at once (record never
    /// reconnects).
    #[arg(long)]
    no_loop: bool,
    /// Seconds between fsyncs of the output file (tail's `-f FILE`, record's capture), as
    /// `pg_recvlogical --fsync-interval`: only what was fsynced is acknowledged. 0 never
    /// fsyncs and acknowledges what was written.
    #[arg(short = 'F', long, value_name = "SECS", default_value_t = DEFAULT_FSYNC_INTERVAL, value_parser = clap::value_parser!(u64).range(0..=3600))]
    fsync_interval: u64,
}

/// `--fsync-interval`'s default, pg_recvlogical's.
const DEFAULT_FSYNC_INTERVAL: u64 = 10;

impl Default for RecvlogicalArgs {
    /// The defaults of the command line: reconnects, fsyncs a file every 10 seconds.
    fn default() -> Self {
        Self {
            if_not_exists: false,
            no_loop: false,
            fsync_interval: DEFAULT_FSYNC_INTERVAL,
        }
    }
}

/// `--proto-version`: 1 to 4, as walproto's [`ProtocolVersion`].
fn protocol_parser() -> impl TypedValueParser<Value = ProtocolVersion> {
    clap::value_parser!(u32)
        .range(1..=4)
        .try_map(|n| ProtocolVersion::from_number(n).ok_or("not a pgoutput protocol version"))
}

/// An option whose values are walproto's names (`Streaming`, `OriginFilter`): clap lists them
/// in `--help` and parses them with the type's `FromStr`.
fn value_parser<T, const N: usize>(
    all: [T; N],
    name: fn(T) -> &'static str,
) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    PossibleValuesParser::new(all.map(name)).try_map(|s| s.parse::<T>())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells a newcomer what it is doing; the other commands speak up only on problems.
    let quiet = match cli.command {
        Command::Demo(_) => LevelFilter::INFO,
        _ => LevelFilter::WARN,
    };
    init_tracing(cli.verbose, quiet);
    match cli.command {
        Command::Decode(args) => run_decode(&args),
        Command::Tail(args) => run_tail(&args),
        Command::Record(args) => run_record(&args),
        Command::Demo(args) => run_demo(&args),
        Command::Slot(args) => run_slot(&args),
        Command::Receivewal(args) => run_receivewal(&args),
        Command::Basebackup(args) => run_basebackup(&args),
        Command::Completions { shell } => run_completions(shell),
    }
}

/// Writes the completion script for `shell`, generated from the command's clap definitions.
fn run_completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "walstream", &mut script);
    let mut out = io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: walstream completions: writing the output: {e}");
            ExitCode::from(exit::IO)
        }
    }
}

fn run_basebackup(args: &basebackup::BasebackupArgs) -> ExitCode {
    // The connection's task and the parsing share one thread; the writer threads write:
    // one hand-off per batch of archive messages, not two per message.
    let runtime = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(basebackup::basebackup(args)) {
        Ok(summary) => {
            tracing::info!(start = %summary.start, end = %summary.end, "base backup complete");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: walstream basebackup: {e}");
            ExitCode::from(basebackup_exit(&e))
        }
    }
}

/// The exit status of a failed backup, by what failed.
fn basebackup_exit(e: &basebackup::BasebackupError) -> u8 {
    use walstream::backup::Error as B;
    match e {
        basebackup::BasebackupError::Usage(_) => exit::USAGE,
        basebackup::BasebackupError::Read(..) => exit::IO,
        basebackup::BasebackupError::Backup(e) => match e {
            B::Config(_) | B::Unsupported(_) => exit::USAGE,
            B::Io { .. } => exit::IO,
            B::Wal(e) => stream_exit(e),
            B::Connection(e) if e.is_slot_missing() => exit::SLOT,
            B::Connection(e)
                if matches!(
                    e.kind(),
                    walstream::walconn::ErrorKind::Unsupported
                        | walstream::walconn::ErrorKind::Config
                ) =>
            {
                exit::USAGE
            }
            _ => exit::SERVER,
        },
    }
}

fn run_receivewal(args: &receivewal::ReceivewalArgs) -> ExitCode {
    // The stream's driver and the loop feeding the writer share one thread (the loop only
    // moves batches; the writer thread does the file I/O): fewer hand-offs between threads.
    let runtime = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(receivewal::receivewal(args)) {
        Ok(summary) => {
            tracing::info!(flushed = %summary.flushed, "receivewal done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: walstream receivewal: {e}");
            ExitCode::from(match &e {
                receivewal::ReceiveError::Io(_) => exit::IO,
                receivewal::ReceiveError::Stream(e) => stream_exit(e),
            })
        }
    }
}

/// The exit status for a stream's error, by its kind; a conninfo that cannot be parsed (or
/// lacks what a connection needs) is a usage error.
fn stream_exit(e: &walstream::Error) -> u8 {
    use walstream::ErrorKind as K;
    if e.connection()
        .is_some_and(|c| c.kind() == walstream::walconn::ErrorKind::Config)
    {
        return exit::USAGE;
    }
    match e.kind() {
        K::Config | K::Unsupported => exit::USAGE,
        K::Decode => exit::DATA,
        K::Slot | K::SlotInvalidated | K::Failover => exit::SLOT,
        K::Io | K::WalFile | K::Spill | K::SpillBudget => exit::IO,
        _ => exit::SERVER,
    }
}

fn run_demo(args: &DemoArgs) -> ExitCode {
    // As for tail: the stream's driver and the demo's writer run on a worker thread.
    let runtime = match multi_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(demo::demo(args.seconds, args.bin_dir.as_deref())) {
        Ok(summary) => {
            tracing::info!(lines = summary.lines, "demo done");
            ExitCode::SUCCESS
        }
        Err(demo::DemoError::Tail(e)) => tail_failed("demo", e),
        Err(e) => {
            eprintln!("error: walstream demo: {e}");
            ExitCode::from(exit::SERVER)
        }
    }
}

fn run_slot(args: &SlotArgs) -> ExitCode {
    let runtime = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(slot::slot(args)) {
        Ok(code) => ExitCode::from(code),
        Err(slot::SlotError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: walstream slot: {e}");
            ExitCode::from(match e {
                slot::SlotError::Server(e) => stream_exit(&e),
                slot::SlotError::Output(_) => exit::IO,
            })
        }
    }
}

fn multi_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    build_runtime(tokio::runtime::Builder::new_multi_thread().worker_threads(1))
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    build_runtime(&mut tokio::runtime::Builder::new_current_thread())
}

/// Builds the runtime, or says why not and gives the exit code.
fn build_runtime(
    builder: &mut tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::from(exit::IO)
    })
}

fn run_decode(args: &DecodeArgs) -> ExitCode {
    let stdin = args.file.as_os_str() == "-";
    let name = if stdin {
        "<stdin>".to_owned()
    } else {
        args.file.display().to_string()
    };
    let stdout = io::stdout().lock();
    let result = if stdin {
        decode::decode(
            io::stdin().lock(),
            stdout,
            args.keepalives,
            args.output.output(),
        )
    } else {
        match File::open(&args.file) {
            Ok(file) => decode::decode(file, stdout, args.keepalives, args.output.output()),
            Err(e) => {
                eprintln!("error: cannot open {name}: {e}");
                return ExitCode::from(exit::IO);
            }
        }
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        // A reader that went away (`walstream decode f | head`) is not an error of ours.
        Err(DecodeError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e @ DecodeError::Data { .. }) => {
            eprintln!("error: {name}: {e}");
            ExitCode::from(exit::DATA)
        }
        Err(e @ DecodeError::Usage(_)) => {
            eprintln!("error: {name}: {e}");
            ExitCode::from(exit::USAGE)
        }
        Err(e) => {
            eprintln!("error: {name}: {e}");
            ExitCode::from(exit::IO)
        }
    }
}

fn run_record(args: &RecordArgs) -> ExitCode {
    let runtime = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(record::record(args)) {
        Ok(summary) => {
            tracing::info!(
                frames = summary.frames,
                acknowledged = %summary.acknowledged,
                "recorded {}",
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: walstream record: {e}");
            ExitCode::from(match e {
                record::RecordError::Usage(_) => exit::USAGE,
                record::RecordError::Server(e) => stream_exit(&e.into()),
                record::RecordError::Io(_) => exit::IO,
            })
        }
    }
}

fn run_tail(args: &TailArgs) -> ExitCode {
    // The stream's driver runs on a worker thread, so that status updates go out even while
    // the main thread waits on a slow stdout.
    let runtime = match multi_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(tail::tail(
        &args.stream,
        args.snapshot,
        args.output.output(),
        args.file.as_deref(),
    )) {
        Ok(summary) => {
            tracing::info!(
                lines = summary.lines,
                acknowledged = %summary.acknowledged,
                "tail done"
            );
            ExitCode::SUCCESS
        }
        Err(e) => tail_failed("tail", e),
    }
}

/// The exit of `tail` or `demo` after the stream failed.
fn tail_failed(command: &str, e: tail::TailError) -> ExitCode {
    if let tail::TailError::Output(e) = &e {
        // A reader that went away (`walstream tail ... | head`) is not an error of ours.
        if e.kind() == io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
    }
    eprintln!("error: walstream {command}: {e}");
    ExitCode::from(match e {
        tail::TailError::Usage(_) => exit::USAGE,
        tail::TailError::Data(_) => exit::DATA,
        tail::TailError::Stream(e) => stream_exit(&e),
        tail::TailError::Output(_) => exit::IO,
        tail::TailError::SlotExists(_) => exit::SERVER,
    })
}

/// Diagnostics go to stderr, never stdout (which carries the JSON lines), each line with its
/// time. `RUST_LOG`, when set, is a filter in tracing's syntax (`walconn=debug,info`); the
/// level of `-v` or `quiet` (the command's default) applies where it names none. A malformed
/// one is said once on stderr and ignored.
fn init_tracing(verbose: u8, quiet: LevelFilter) {
    let from_flag = match verbose {
        0 => quiet,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let mut bad_env = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::builder()
            .with_default_directive(from_flag.into())
            .parse(v.trim())
            .unwrap_or_else(|e| {
                bad_env = Some(format!("ignoring RUST_LOG={v:?}: {e}"));
                EnvFilter::new(from_flag.to_string())
            }),
        _ => EnvFilter::new(from_flag.to_string()),
    };
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .init();
    if let Some(m) = bad_env {
        tracing::warn!("{m}");
    }
}

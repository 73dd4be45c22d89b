//! `many-streams`: many `EventStream`s in one process on one tokio runtime, for
//! `cargo xtask bench --only many` (see `xtask/src/bench/many.rs`).
//!
//! Usage: `many-streams current|multi PUBLICATION SLOT_PREFIX SLOTS_PER_DB CONNINFO...`. For
//! each database (one conninfo each, in order `d` = 0, 1, ...) it follows the slots
//! `SLOT_PREFIX_d_i` for `i` in `0..SLOTS_PER_DB`, with walstream's default options (pgoutput
//! protocol 1, streaming off, as the drain consumers), on a current-thread runtime (`current`)
//! or a multi-thread one with a worker per core (`multi`). Every transaction is acknowledged as
//! it ends; each stream counts its Insert events.
//!
//! The bench drives it on stdin, one command a line, and reads one line per command on stdout:
//!
//! - at start, before any command, `phase empty ...`: the process with its runtime, no stream;
//! - `connect`: connects every stream at once, waits until all are started,
//!   `phase connected ...`;
//! - `wait NAME ROWS`: waits until the streams have counted `ROWS` inserts in all (at most
//!   [`WAIT_LIMIT`]), `phase NAME ...`;
//! - `report NAME`: `phase NAME ...` at once;
//! - `trim NAME`: `malloc_trim(0)` (glibc gives back the free memory it keeps), then
//!   `phase NAME ...`: what is left is memory in use;
//! - `quit`: shuts every stream down and exits.
//!
//! A phase line: `phase NAME streams=N rows=R min_rows=M rss_kib=K hwm_kib=H user_us=U
//! sys_us=S reconnects=C status_updates=T failed=F`. The memory figures are the kernel's
//! (`VmRSS`, `VmHWM` of `/proc/self/status`) and the CPU time `getrusage`'s: nothing the library
//! counts itself. `reconnects`, `status_updates` are the sums of the streams' `StreamStats`;
//! `failed` is the number of streams that ended with an error (each printed on stderr).

use std::io::BufRead as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drain_bench::BoxError;
use walstream::{
    EventKind, EventStream, LogicalReplicationStream, ReplicationStreamConfig, StatsHandle,
    Streaming,
};

/// The longest `connect` and `wait` wait before reporting what they have.
const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// How often `connect` and `wait` look at the counters.
const POLL: Duration = Duration::from_millis(20);

/// What every stream shares with the command loop.
#[derive(Default)]
struct Shared {
    /// Insert events per stream, in the order of the slots.
    rows: Vec<AtomicU64>,
    /// The streams' stats, as each one starts.
    stats: Mutex<Vec<StatsHandle>>,
    /// Streams started.
    started: AtomicUsize,
    /// Streams ended with an error.
    failed: AtomicUsize,
}

fn main() -> ExitCode {
    let usage =
        "usage: many-streams current|multi PUBLICATION SLOT_PREFIX SLOTS_PER_DB CONNINFO...";
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let [flavour, publication, prefix, per_db, conninfos @ ..] = argv.as_slice() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let Ok(per_db) = per_db.parse::<usize>() else {
        eprintln!("SLOTS_PER_DB: not a number\n{usage}");
        return ExitCode::from(2);
    };
    let runtime = match flavour.as_str() {
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        _ => {
            eprintln!("unknown runtime flavour {flavour:?}\n{usage}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut streams = Vec::new();
    for (d, conninfo) in conninfos.iter().enumerate() {
        for i in 0..per_db {
            streams.push((conninfo.clone(), format!("{prefix}_{d}_{i}")));
        }
    }
    match runtime.block_on(commands(streams, publication.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("many-streams: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reports `phase empty`, then runs the commands of stdin (read by a thread of its own, so
/// the runtime is never blocked on it).
async fn commands(streams: Vec<(String, String)>, publication: String) -> Result<(), BoxError> {
    let shared = Arc::new(Shared {
        rows: streams.iter().map(|_| AtomicU64::new(0)).collect(),
        ..Shared::default()
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    report("empty", &shared, 0)?;
    let mut connected = 0;
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["connect"] => {
                for (n, (conninfo, slot)) in streams.iter().enumerate() {
                    let shared = Arc::clone(&shared);
                    let (conninfo, slot, publication) =
                        (conninfo.clone(), slot.clone(), publication.clone());
                    tokio::spawn(async move {
                        if let Err(e) = follow(&conninfo, &slot, &publication, n, &shared).await {
                            shared.failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("many-streams: {slot}: {e}");
                        }
                    });
                }
                connected = streams.len();
                wait_until(&shared, |s| {
                    s.started.load(Ordering::Relaxed) + s.failed.load(Ordering::Relaxed)
                        >= connected
                })
                .await;
                report("connected", &shared, connected)?;
            }
            ["wait", name, rows] => {
                let rows: u64 = rows.parse().map_err(|e| format!("wait {name}: {e}"))?;
                wait_until(&shared, |s| total_rows(s) >= rows).await;
                report(name, &shared, connected)?;
            }
            ["report", name] => report(name, &shared, connected)?,
            ["trim", name] => {
                // SAFETY: `malloc_trim` only returns free heap memory to the system.
                unsafe { libc::malloc_trim(0) };
                report(name, &shared, connected)?;
            }
            ["quit"] => break,
            _ => return Err(format!("unknown command {line:?}").into()),
        }
    }
    Ok(())
}

/// Follows one slot until the process ends, counting inserts into `shared.rows[n]`.
async fn follow(
    conninfo: &str,
    slot: &str,
    publication: &str,
    n: usize,
    shared: &Shared,
) -> Result<(), BoxError> {
    let config = ReplicationStreamConfig::builder(slot, [publication])
        .proto_version(walstream::ProtocolVersion::V1)
        .streaming(Streaming::Off)
        .build()?;
    let mut events: EventStream = LogicalReplicationStream::connect(conninfo, config)
        .await?
        .start();
    shared
        .stats
        .lock()
        .map_err(|_| "stats lock poisoned")?
        .push(events.stats_handle());
    shared.started.fetch_add(1, Ordering::Relaxed);
    let rows = shared.rows.get(n).ok_or("stream index out of range")?;
    while let Some(event) = events.next_event().await? {
        if let EventKind::Insert(_) = &event.kind {
            rows.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(lsn) = event.ack_lsn() {
            events.ack(lsn);
        }
    }
    Ok(())
}

async fn wait_until(shared: &Shared, done: impl Fn(&Shared) -> bool) {
    let deadline = Instant::now() + WAIT_LIMIT;
    while !done(shared) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

fn total_rows(shared: &Shared) -> u64 {
    shared.rows.iter().map(|r| r.load(Ordering::Relaxed)).sum()
}

/// Prints the phase line (see the module docs).
fn report(name: &str, shared: &Shared, streams: usize) -> Result<(), BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let (user_us, sys_us) = cpu_micros();
    let (mut reconnects, mut status_updates) = (0, 0);
    for s in shared
        .stats
        .lock()
        .map_err(|_| "stats lock poisoned")?
        .iter()
    {
        let s = s.stats();
        reconnects += s.reconnects;
        status_updates += s.status_updates;
    }
    let min_rows = shared
        .rows
        .iter()
        .take(streams)
        .map(|r| r.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    println!(
        "phase {name} streams={streams} rows={} min_rows={min_rows} rss_kib={} hwm_kib={} \
         user_us={user_us} sys_us={sys_us} reconnects={reconnects} \
         status_updates={status_updates} failed={}",
        total_rows(shared),
        kib("VmRSS:"),
        kib("VmHWM:"),
        shared.failed.load(Ordering::Relaxed),
    );
    Ok(())
}

/// User and system CPU time of the whole process so far, microseconds (`getrusage`).
fn cpu_micros() -> (i64, i64) {
    // SAFETY: `getrusage` writes the struct it is given and nothing else; an all-zero
    // `rusage` is a valid value of it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return (0, 0);
        }
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    (micros(usage.ru_utime), micros(usage.ru_stime))
}

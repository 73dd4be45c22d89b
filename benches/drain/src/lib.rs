//! Shared parts of the drain consumers of `cargo xtask bench` (see `benches/README.md`).
//!
//! Each binary drains one logical slot from the position it was created at until `END_LSN`,
//! decoding every row, acknowledging each transaction as it ends, then exits printing
//! `rows=N bytes=M` (row events decoded, and the sum of their column value lengths plus one per
//! column, so that every column of every row is read). Usage:
//! `BINARY MODE CONNINFO SLOT PUBLICATION END_LSN [BUDGET]`.
//!
//! - `drain-walstream` (modes `walstream`, `walstream-mt`, `walstream-raw`,
//!   `walstream-nocoalesce`, `walstream-tx`): walstream on a current-thread runtime, on a
//!   two-worker multi-thread runtime, in raw mode (undecoded XLogData: its counts are messages
//!   and pgoutput bytes), with read coalescing off (`read_coalescing(Duration::ZERO)`), and
//!   through a `TransactionStream` with a memory budget of `BUDGET` bytes (protocol 4 or the
//!   highest the server has, `streaming = on`: the big-transaction bench).
//! - `drain-pg-walstream` (mode `pg_walstream`): pg_walstream 0.10 over libpq.
//!
//! Two binaries, so that the walstream consumer does not load libpq and the libraries libpq
//! pulls in (OpenSSL, Kerberos, LDAP, GnuTLS): they would count in its peak RSS.
//!
//! All but `walstream-tx` use pgoutput protocol 1 with streaming off, as `pg_recvlogical` does
//! in the bench.

use std::future::Future;
use std::process::ExitCode;

/// Any error, for the consumers' `main`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The command line.
pub struct Args {
    /// The consumer mode.
    pub mode: String,
    /// libpq-style conninfo of the database (not a replication conninfo).
    pub conninfo: String,
    /// The slot to drain.
    pub slot: String,
    /// The publication.
    pub publication: String,
    /// The end LSN, `X/Y`.
    pub end: String,
    /// The memory budget in bytes (`walstream-tx`), when given.
    pub budget: Option<usize>,
}

/// What a consumer decoded.
#[derive(Default)]
pub struct Counts {
    /// Row events (raw mode: XLogData messages).
    pub rows: u64,
    /// Column value lengths plus one per column (raw mode: pgoutput bytes).
    pub bytes: u64,
}

/// Parses the command line, runs `drain` on the runtime the mode asks for, prints the counts.
pub fn run<F, Fut>(modes: &[&str], drain: F) -> ExitCode
where
    F: FnOnce(Args) -> Fut,
    Fut: Future<Output = Result<Counts, BoxError>>,
{
    let usage = format!(
        "usage: {} CONNINFO SLOT PUBLICATION END_LSN [BUDGET]",
        modes.join("|")
    );
    let mut argv = std::env::args().skip(1);
    let (Some(mode), Some(conninfo), Some(slot), Some(publication), Some(end), budget, None) = (
        argv.next(),
        argv.next(),
        argv.next(),
        argv.next(),
        argv.next(),
        argv.next(),
        argv.next(),
    ) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let budget = match budget.map(|b| b.parse::<usize>()) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            eprintln!("BUDGET: {e}\n{usage}");
            return ExitCode::from(2);
        }
    };
    if !modes.contains(&mode.as_str()) {
        eprintln!("unknown mode {mode:?}\n{usage}");
        return ExitCode::from(2);
    }
    let runtime = if mode.ends_with("-mt") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{mode}: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args = Args {
        mode: mode.clone(),
        conninfo,
        slot,
        publication,
        end,
        budget,
    };
    match runtime.block_on(drain(args)) {
        Ok(c) => {
            println!("rows={} bytes={}", c.rows, c.bytes);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{mode}: {e}");
            ExitCode::FAILURE
        }
    }
}

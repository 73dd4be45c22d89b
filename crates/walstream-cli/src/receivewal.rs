//! `walstream receivewal`: WAL from a server into segment files, as `pg_receivewal` writes
//! them, through walstream's physical stream and `WalWriter`.
//!
//! Where to start is `pg_receivewal`'s choice: the directory's newest segment (a `.partial`
//! one is streamed again from its start, after a complete one the next segment), else the
//! slot's `restart_lsn`, else the server's current position, each rounded down to its
//! segment's start. The writer runs on a thread of its own (it does blocking file I/O) and
//! acknowledges to the stream what it has made durable: with `--synchronous` everything it
//! has written, after an fsync per message; otherwise each segment once it is complete and
//! synced, as `pg_receivewal` does.

use std::path::PathBuf;
use std::thread::JoinHandle;

use clap::Args;
use tokio::sync::mpsc;
use walproto::Lsn;
use walstream::physical::{
    PhysicalReplicationStream, PhysicalStreamConfig, PhysicalStreamConfigBuilder, StatusRequester,
    WalEvent, WalWriter,
};
use walstream::walconn::{self, Connection, CreateSlotOptions, Replication};
use walstream::{CancellationToken, ErrorKind, RetryPolicy, SharedLsnFeedback};

use crate::tail::{ready_now, stop_on_signals};

/// `walstream receivewal`'s options: `pg_receivewal`'s, long and short forms.
#[derive(Debug, Args)]
pub(crate) struct ReceivewalArgs {
    /// A libpq connection string: a URL or key=value pairs; PG* variables are the defaults.
    #[arg(value_name = "CONNINFO")]
    conninfo: String,
    /// The directory to write segment files to (it must exist).
    #[arg(short = 'D', long, value_name = "DIR")]
    directory: PathBuf,
    /// The physical replication slot to stream from (its restart_lsn follows what is flushed).
    #[arg(short = 'S', long, value_name = "S")]
    slot: Option<String>,
    /// Create the physical slot named by --slot (reserving WAL), then exit, as
    /// pg_receivewal --create-slot does.
    #[arg(long, requires = "slot")]
    create_slot: bool,
    /// Flush each message to disk as it arrives and acknowledge it at once (for a
    /// synchronous standby), instead of at each completed segment.
    #[arg(long)]
    synchronous: bool,
    /// Stop once WAL up to this LSN (X/X) has been received and flushed.
    #[arg(short = 'E', long, value_name = "LSN")]
    endpos: Option<Lsn>,
    /// Do not retry a lost connection: exit with status 4 instead.
    #[arg(short = 'n', long)]
    no_loop: bool,
    /// Seconds between status updates to the server.
    #[arg(short = 's', long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    status_interval: u64,
}

pub(crate) const RECEIVEWAL_EXAMPLES: &str = "\
Examples:
  walstream receivewal 'host=db user=repl' -D /var/lib/wal-archive --slot archiver
  walstream receivewal postgresql://repl@db -D wal --slot archiver --create-slot
  walstream receivewal postgresql://repl@db -D wal -E 0/5000000 --no-loop

Segment files are named as the server names them; the one in progress is NAME.partial and is
renamed when complete. A restart resumes from the directory's newest segment. The slot (and
the server's view of this standby) advances only over WAL already synced to disk.
SIGINT/SIGTERM stop cleanly: the segment in progress is synced and stays .partial.

Exit status:
  0  stopped at --endpos or by a signal, or --create-slot created the slot
  2  usage error (or an option this server does not support)
  3  the directory cannot be read or written
  4  the server or the connection failed (after the retries; at once with --no-loop)
  5  the replication slot is missing or was invalidated";

/// Why `receivewal` stopped early.
#[derive(Debug)]
pub(crate) enum ReceiveError {
    /// The stream, the server, the slot or the WAL directory failed (the kind says which).
    Stream(walstream::Error),
    /// The directory is missing, or the writer thread could not run.
    Io(String),
}

impl std::fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReceiveError::Stream(e) => write!(f, "{e:#}"),
            ReceiveError::Io(m) => f.write_str(m),
        }
    }
}

impl From<walstream::Error> for ReceiveError {
    fn from(e: walstream::Error) -> Self {
        ReceiveError::Stream(e)
    }
}

impl From<walconn::Error> for ReceiveError {
    fn from(e: walconn::Error) -> Self {
        ReceiveError::Stream(e.into())
    }
}

/// Events handed to the writer thread at once, at most: with the channel's two batches, at
/// most 32 messages of WAL (4 MB) wait for the writer.
const MAX_BATCH: usize = 16;

/// What a finished run did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// The position up to which WAL is durable in the directory.
    pub(crate) flushed: Lsn,
}

/// Runs `receivewal` until `--endpos`, a signal or a failure.
pub(crate) async fn receivewal(args: &ReceivewalArgs) -> Result<Summary, ReceiveError> {
    let dir = &args.directory;
    if !dir.is_dir() {
        return Err(ReceiveError::Io(format!(
            "{}: not a directory (create it first)",
            dir.display()
        )));
    }
    if args.create_slot {
        create_slot(args).await?;
        return Ok(Summary::default());
    }
    let stop = CancellationToken::new();
    stop_on_signals(&stop).map_err(|e| ReceiveError::Io(format!("cannot handle signals: {e}")))?;
    let config = builder(args, &stop).build()?;
    let mut stream = PhysicalReplicationStream::connect(&args.conninfo, config).await?;
    // The directory's newest segment comes first, as in pg_receivewal; its place depends on
    // the segment size, known once connected.
    let size = stream.segment_size();
    let scan_dir = dir.clone();
    let resume = tokio::task::spawn_blocking(move || WalWriter::resume_position(&scan_dir, size))
        .await
        .map_err(|e| ReceiveError::Io(format!("the directory scan failed: {e}")))??;
    if let Some(resume) = resume {
        stream.resume_at(resume.timeline, resume.lsn).await?;
    }
    let writer = WalWriter::open(dir, size, stream.timeline(), stream.start_lsn())?;
    tracing::info!(
        start = %stream.start_lsn(),
        timeline = stream.timeline(),
        "streaming into {}",
        dir.display()
    );
    let mut wal = stream.start();
    let (tx, rx) = mpsc::channel(2);
    let status = args.synchronous.then(|| wal.status_requester());
    let thread = spawn_writer(writer, rx, wal.feedback().clone(), status)?;
    let mut failure = None;
    let mut ended = false;
    while !ended {
        // Wait for one event, then take what else is ready: the writer thread is woken once
        // per batch, not once per message.
        let mut batch = Vec::new();
        let mut next = Some(wal.next_event().await);
        while let Some(result) = next.take() {
            match result {
                Ok(Some(event)) => {
                    if let WalEvent::Reconnected { resume, reason, .. } = &event {
                        tracing::warn!(%resume, %reason, "reconnected");
                    }
                    batch.push(event);
                    if batch.len() < MAX_BATCH {
                        next = ready_now(wal.next_event());
                    }
                }
                Ok(None) => ended = true,
                Err(e) => {
                    failure = Some(e);
                    ended = true;
                }
            }
        }
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            // The writer stopped: its error is what to report.
            break;
        }
    }
    drop(tx);
    let written = thread
        .join()
        .map_err(|_| ReceiveError::Io("the WAL writer thread panicked".into()))?;
    // What is durable now is acknowledged before the last status update goes out.
    if let Ok(flushed) = &written {
        wal.feedback().set_written(*flushed);
        wal.feedback().set_flushed(*flushed);
    }
    let shutdown = wal.shutdown().await;
    let flushed = written?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    // A stream that ended with an error had returned it above; one cancelled by a signal or
    // ended at --endpos shuts down cleanly.
    if let Err(e) = shutdown {
        if e.kind() != ErrorKind::Closed {
            return Err(e.into());
        }
    }
    Ok(Summary { flushed })
}

/// The stream's configuration from the options.
fn builder(args: &ReceivewalArgs, stop: &CancellationToken) -> PhysicalStreamConfigBuilder {
    let mut config = PhysicalStreamConfig::builder()
        .status_interval(std::time::Duration::from_secs(args.status_interval))
        .cancellation_token(stop.clone());
    if let Some(slot) = &args.slot {
        config = config.slot(slot.clone());
    }
    if let Some(end) = args.endpos {
        config = config.end_lsn(end);
    }
    // pg_receivewal retries a lost connection for ever, unless told not to.
    config.retry(if args.no_loop {
        RetryPolicy::never()
    } else {
        RetryPolicy::forever()
    })
}

/// `--create-slot`: a physical slot that reserves WAL at once, as `pg_receivewal` creates it.
async fn create_slot(args: &ReceivewalArgs) -> Result<(), ReceiveError> {
    let mut config = walconn::Config::parse(&args.conninfo)?;
    config.set_replication(Replication::Physical);
    let mut conn = Connection::connect(&config).await?;
    let mut options = CreateSlotOptions::physical();
    options.reserve_wal = true;
    let slot = args.slot.as_deref().unwrap_or_default();
    conn.create_replication_slot(slot, &options).await?;
    conn.close().await?;
    tracing::info!(slot, "created the replication slot");
    Ok(())
}

/// The writer thread: applies each event, and acknowledges what is durable through
/// `feedback`; with `synchronous` (a status requester) it syncs every message and asks for a
/// status update at once. Returns the durable position at the end (the segment in progress
/// synced and left `.partial`).
fn spawn_writer(
    mut writer: WalWriter,
    mut rx: mpsc::Receiver<Vec<WalEvent>>,
    feedback: SharedLsnFeedback,
    synchronous: Option<StatusRequester>,
) -> Result<JoinHandle<walstream::Result<Lsn>>, ReceiveError> {
    std::thread::Builder::new()
        .name("walstream-receivewal-writer".into())
        .spawn(move || {
            while let Some(batch) = rx.blocking_recv() {
                for event in &batch {
                    writer.apply(event)?;
                }
                let durable = if synchronous.is_some() {
                    writer.flush()?
                } else {
                    writer.flushed()
                };
                feedback.set_written(writer.position());
                feedback.set_flushed(durable);
                if let Some(status) = &synchronous {
                    status.request();
                }
            }
            writer.close()
        })
        .map_err(|e| ReceiveError::Io(format!("cannot start the writer thread: {e}")))
}

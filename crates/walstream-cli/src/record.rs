//! `walstream record`: the raw replication stream of a slot into a `WALCAP1` capture file.
//!
//! Every CopyData payload the server sends during `START_REPLICATION` is written exactly as
//! sent. The recorder acknowledges (flushes, in the standby status update) only the end of a
//! transaction whose frames are already written and synced to the file, or, between
//! transactions, a keepalive's `wal_end`; so after a crash or a signal, the slot resumes at a
//! transaction boundary that is in the file, and no transaction is ever missing from a
//! sequence of captures (one may appear twice).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::time::{Duration, Instant, SystemTime};

use walproto::capture::{self, Header};
use walproto::pgoutput::{Boundaries, Request};
use walproto::replication::{ServerMessage, StandbyStatusUpdate};
use walproto::Lsn;
use walstream::walconn::{
    self, Config, Connection, CopyBoth, CreateSlotOptions, LogicalReplicationOptions,
    SnapshotAction,
};
use walstream::{FeedbackTracker, StreamCounters};

use crate::RecordArgs;

/// Why recording stopped early.
#[derive(Debug)]
pub(crate) enum RecordError {
    /// Bad arguments for this server (a protocol it lacks, say).
    Usage(String),
    /// The connection or the server failed.
    Server(walconn::Error),
    /// The capture file could not be written.
    Io(io::Error),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Usage(m) => f.write_str(m),
            RecordError::Server(e) => write!(f, "{e:#}"),
            RecordError::Io(e) => write!(f, "writing the capture: {e}"),
        }
    }
}

impl From<walconn::Error> for RecordError {
    fn from(e: walconn::Error) -> Self {
        RecordError::Server(e)
    }
}

impl From<io::Error> for RecordError {
    fn from(e: io::Error) -> Self {
        RecordError::Io(e)
    }
}

/// What a finished recording did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) frames: u64,
    pub(crate) acknowledged: Lsn,
}

/// Records until `--end`, a signal, or the end of the stream.
pub(crate) async fn record(args: &RecordArgs) -> Result<Summary, RecordError> {
    let a = &args.stream;
    let config = Config::parse(&a.conninfo)?;
    let mut conn = Connection::connect(&config).await?;
    let system = conn.identify_system().await?;
    let version_num = conn.server_version_num();
    let server_version = conn.parameter("server_version").unwrap_or("").to_owned();
    // walproto's rule table decides the defaults and refuses what this server cannot do
    // (exit 2, as for any option the server does not support).
    let request = Request {
        proto_version: a.proto_version,
        streaming: Some(a.streaming),
        binary: a.binary,
        messages: a.messages,
        two_phase: a.two_phase,
        origin: Some(a.origin),
    };
    let pgoutput = request.negotiate(version_num).map_err(|r| {
        RecordError::Usage(format!("{r}; the server is PostgreSQL {server_version}"))
    })?;
    tracing::info!(
        server_version,
        proto_version = pgoutput.proto_version.number(),
        "connected"
    );

    if a.create_slot {
        let mut opts = CreateSlotOptions::logical("pgoutput");
        opts.temporary = a.temporary;
        opts.failover = a.failover;
        opts.two_phase = a.two_phase;
        opts.snapshot = Some(SnapshotAction::Nothing);
        match conn.create_replication_slot(&a.slot, &opts).await {
            Ok(created) => {
                tracing::info!(slot = a.slot, at = %created.consistent_point, "created slot")
            }
            // 42710 duplicate_object: the slot exists, which --if-not-exists wants (without
            // it, an error as in pg_recvlogical).
            Err(e) if e.code() == Some("42710") && a.recvlogical.if_not_exists => {
                tracing::info!(slot = a.slot, "slot exists; recording from it")
            }
            Err(e) => return Err(e.into()),
        }
    }

    let options = LogicalReplicationOptions {
        publication_names: a.publication.clone(),
        pgoutput,
    };

    let file = File::create(&args.out)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let header = Header {
        server_version: Some(server_version.clone()),
        server_version_num: Some(version_num),
        slot: Some(a.slot.clone()),
        publications: Some(a.publication.clone()),
        system_id: Some(system.system_id.clone()),
        timeline: Some(system.timeline),
        // The origin said as asked, also where the server has no such option (`any` is what
        // it does).
        origin: Some(a.origin),
        ..Header::new(pgoutput)
    }
    .to_json();
    let mut head = Vec::new();
    capture::write_header(&mut head, &header);
    out.write_all(&head)?;

    let start = a.start.unwrap_or(Lsn::ZERO);
    let stream = conn
        .start_logical_replication(&a.slot, start, &options)
        .await?;
    // `--metrics-addr`: tail's endpoint, on counters of this recording (its own progress line
    // is `--stats-interval`'s).
    let counters = a
        .report
        .metrics_addr
        .is_some()
        .then(|| StreamCounters::new(&pgoutput));
    let _reporting = match &counters {
        Some(counters) => {
            let endpoint = crate::metrics::ReportArgs {
                metrics_addr: a.report.metrics_addr.clone(),
                stats_interval: None,
            };
            let started = crate::metrics::start(&a.slot, counters.handle(), &endpoint).await;
            Some(started.map_err(|e| RecordError::Usage(e.to_string()))?)
        }
        None => None,
    };
    let mut rec = Recorder {
        stream,
        counters,
        out,
        boundaries: Boundaries::new(pgoutput.proto_version, pgoutput.streaming),
        end: a.end,
        feedback: FeedbackTracker::new(start, Duration::from_secs(a.status_interval)),
        written_end: start,
        synced_end: start,
        fsync_interval: Duration::from_secs(a.recvlogical.fsync_interval),
        last_sync: Instant::now(),
        acknowledged: start,
        frames: 0,
        tracking: true,
    };
    rec.run(a.report.stats_interval.map(Duration::from_secs))
        .await?;
    let Recorder {
        stream,
        frames,
        acknowledged,
        ..
    } = rec;
    let conn = stream.finish().await?;
    conn.close().await?;
    Ok(Summary {
        frames,
        acknowledged,
    })
}

struct Recorder {
    stream: CopyBoth,
    /// The stream's stats for `--metrics-addr` (none without it).
    counters: Option<StreamCounters>,
    out: BufWriter<File>,
    /// Where the stream is between transactions (walproto's one rule).
    boundaries: Boundaries,
    end: Option<Lsn>,
    /// What each status update says and when: walstream's feedback state machine, told that
    /// the file holds everything up to `written_end` once it is synced.
    feedback: FeedbackTracker,
    /// The end of the last whole transaction written to the file.
    written_end: Lsn,
    /// The end of the last whole transaction fsynced to the file: what may be acknowledged.
    synced_end: Lsn,
    /// `--fsync-interval`; zero never fsyncs, and acknowledges what is written.
    fsync_interval: Duration,
    last_sync: Instant,
    /// What the server was last told is flushed.
    acknowledged: Lsn,
    frames: u64,
    /// False after a message that could not be followed: frames are still recorded, but
    /// nothing more is acknowledged, since transaction ends can no longer be trusted.
    tracking: bool,
}

impl Recorder {
    /// Records until the end, a signal or a failure; prints the progress line on stderr every
    /// `stats_every` (`--stats-interval`).
    async fn run(&mut self, stats_every: Option<Duration>) -> Result<(), RecordError> {
        let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut progress = crate::metrics::Ticker::new(stats_every);
        loop {
            let due = self.feedback.next_status_at().unwrap_or_else(Instant::now);
            tokio::select! {
                frame = self.stream.recv() => {
                    let Some(frame) = frame? else {
                        tracing::info!("the server ended the stream");
                        break;
                    };
                    if self.on_frame(&frame).await? {
                        break;
                    }
                }
                () = tokio::time::sleep_until(due.into()) => self.send_status(false).await?,
                () = progress.tick() => {
                    let buffered = self.out.buffer().len() as u64;
                    let bytes = self.out.get_ref().metadata()?.len() + buffered;
                    let line = crate::metrics::record_line(
                        self.frames,
                        bytes,
                        self.written_end,
                        self.acknowledged,
                    );
                    eprintln!("{line}");
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: stopping");
                    break;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping");
                    break;
                }
            }
        }
        // The last word to the server: everything in the file, synced and acknowledged.
        self.send_status(true).await
    }

    /// Writes one frame; returns whether `--end` has been reached.
    async fn on_frame(&mut self, frame: &bytes::Bytes) -> Result<bool, RecordError> {
        if let Some(counters) = &mut self.counters {
            counters.received(frame);
        }
        // The frame as `capture::write_frame` lays it out, straight into the buffered file.
        self.out
            .write_all(&u32::try_from(frame.len()).unwrap_or(u32::MAX).to_be_bytes())?;
        self.out.write_all(frame)?;
        self.frames += 1;
        match ServerMessage::parse(frame) {
            Ok(ServerMessage::XLogData(x)) => {
                self.feedback.on_wal_end(x.wal_end);
                if let Some(end_of_txn) = self.follow(x.data) {
                    self.feedback.on_transaction_end(end_of_txn);
                    self.written_end = self.written_end.max(end_of_txn);
                    if self.end.is_some_and(|end| end_of_txn >= end) {
                        return Ok(true);
                    }
                }
            }
            Ok(ServerMessage::PrimaryKeepalive(k)) => {
                let between = self.tracking && self.boundaries.between_transactions();
                self.feedback
                    .on_keepalive(k.wal_end, k.reply_requested, between);
                if between && self.end.is_some_and(|end| k.wal_end >= end) {
                    return Ok(true);
                }
                if k.reply_requested {
                    self.send_status(false).await?;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("frame {}: {e}", self.frames),
        }
        Ok(false)
    }

    /// Follows the transaction boundaries; returns the end LSN of a transaction that just
    /// ended.
    fn follow(&mut self, data: &[u8]) -> Option<Lsn> {
        if !self.tracking {
            return None;
        }
        match self.boundaries.observe(data) {
            Ok(message) => message.and_then(|m| m.transaction_end()),
            Err(e) => {
                tracing::warn!(
                    "cannot follow the stream ({e}); recording goes on, acknowledging stops"
                );
                self.tracking = false;
                None
            }
        }
    }

    /// Flushes the file (to disk when `--fsync-interval` has passed since the last fsync, or
    /// `last`), then tells the server what is on disk.
    async fn send_status(&mut self, last: bool) -> Result<(), RecordError> {
        self.out.flush()?;
        if self.fsync_interval.is_zero() {
            self.synced_end = self.written_end;
        } else if last || self.last_sync.elapsed() >= self.fsync_interval {
            self.out.get_ref().sync_data()?;
            self.last_sync = Instant::now();
            self.synced_end = self.written_end;
        }
        // The file holds every transaction up to `synced_end` on disk, and the tracker adds an
        // idle keepalive's position when that is safe (only once what precedes it is synced).
        let status = self
            .feedback
            .status(Instant::now(), self.synced_end, self.synced_end);
        let update = StandbyStatusUpdate {
            write: status.write,
            flush: status.flush,
            apply: status.apply,
            client_time: SystemTime::now().into(),
            reply_requested: false,
        };
        self.stream.send_status_update(&update).await?;
        if let Some(counters) = &self.counters {
            counters.status_sent(&self.feedback, self.synced_end, status.flush);
        }
        self.acknowledged = status.flush;
        tracing::debug!(flush = %status.flush, "status update");
        Ok(())
    }
}

fn signal(kind: tokio::signal::unix::SignalKind) -> io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind)
}

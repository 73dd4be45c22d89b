//! `walstream tail`: a slot's changes as JSON lines on stdout, acknowledged once written.
//!
//! The stream comes from `walstream` in raw mode (feedback, keepalives, reconnects and the end
//! LSN handled there); each XLogData goes through a `walproto::Decoder` and the JSON writer
//! that `decode` uses, so a live stream and its capture print the same lines. A transaction's
//! end is acknowledged only after its lines are flushed to stdout: a restart resumes after the
//! last transaction printed whole.
//!
//! [`follow`] is the one code path for a live stream: `tail` calls it with the command line's
//! options, `demo` with the options of the stream it sets up. Both stop when a
//! [`CancellationToken`] is cancelled (SIGINT/SIGTERM, `demo --seconds`).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use walproto::pgoutput::Options;
use walproto::{Decoder, Lsn};
use walstream::{
    CancellationToken, CreateSlot, EventKind, EventStream, LogicalReplicationStream,
    ReplicationStreamConfig, ReplicationStreamConfigBuilder, RetryPolicy, SlotManager,
};

use crate::{json, StreamArgs};

/// The longest time written lines wait before they are flushed and acknowledged while the
/// stream keeps delivering.
const ACK_EVERY: Duration = Duration::from_secs(1);

/// The SQLSTATEs of a server that cannot convert text to the client's encoding:
/// `character_not_in_repertoire` (invalid bytes) and `untranslatable_character`.
const UNCONVERTIBLE_SQLSTATES: [&str; 2] = ["22021", "22P05"];

/// Why `tail` stopped with an error.
#[derive(Debug)]
pub(crate) enum TailError {
    /// The options cannot work (with this server).
    Usage(String),
    /// The stream failed.
    Stream(walstream::Error),
    /// A message could not be printed.
    Data(String),
    /// `--create-slot` without `--if-not-exists` found the slot already there.
    SlotExists(String),
    /// Standard output (or the `-f` file) failed.
    Output(io::Error),
}

impl std::fmt::Display for TailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TailError::Usage(m) | TailError::Data(m) | TailError::SlotExists(m) => f.write_str(m),
            TailError::Stream(e) => write!(f, "{e:#}"),
            TailError::Output(e) => write!(f, "writing the output: {e}"),
        }
    }
}

impl From<walstream::Error> for TailError {
    fn from(e: walstream::Error) -> Self {
        match e.kind() {
            walstream::ErrorKind::Config | walstream::ErrorKind::Unsupported => {
                TailError::Usage(e.to_string())
            }
            // The walsender could not convert a value to UTF-8, the only client encoding the
            // stream speaks: the data cannot be decoded (exit 1), and retrying would meet the
            // same bytes again.
            _ if e
                .code()
                .is_some_and(|c| UNCONVERTIBLE_SQLSTATES.contains(&c)) =>
            {
                TailError::Data(format!(
                    "{e}; the database holds text that is not valid in UTF-8 (an SQL_ASCII \
                     database with other bytes?), and the stream is read as UTF-8"
                ))
            }
            _ => TailError::Stream(e),
        }
    }
}

/// The stream configuration the command line asks for.
pub(crate) fn stream_config(a: &StreamArgs) -> Result<ReplicationStreamConfig, walstream::Error> {
    stream_config_with(a, |b| b)
}

/// The stream configuration the command line asks for, with `extra` applied last.
fn stream_config_with(
    a: &StreamArgs,
    extra: impl FnOnce(ReplicationStreamConfigBuilder) -> ReplicationStreamConfigBuilder,
) -> Result<ReplicationStreamConfig, walstream::Error> {
    let mut b = ReplicationStreamConfig::builder(&a.slot, &a.publication)
        .streaming(a.streaming)
        .binary(a.binary)
        .messages(a.messages)
        .two_phase(a.two_phase)
        .origin(a.origin)
        .status_interval(Duration::from_secs(a.status_interval))
        .retry(if a.recvlogical.no_loop {
            RetryPolicy::never()
        } else {
            RetryPolicy::default()
        })
        .raw(true);
    if let Some(v) = a.proto_version {
        b = b.proto_version(v);
    }
    if let Some(lsn) = a.start {
        b = b.start_lsn(lsn);
    }
    if let Some(lsn) = a.end {
        b = b.end_lsn(lsn);
    }
    if a.create_slot {
        b = b
            .create_slot_if_missing(if a.temporary {
                CreateSlot::Temporary
            } else {
                CreateSlot::Permanent
            })
            .failover(a.failover);
    }
    extra(b).build()
}

/// The configuration of `args` with the initial snapshot of every published table.
fn rebuild_with_snapshot(args: &StreamArgs) -> Result<ReplicationStreamConfig, TailError> {
    if !args.create_slot {
        return Err(TailError::Usage(
            "--snapshot needs --create-slot: the snapshot is exported by the new slot, at its \
             consistent point"
                .to_owned(),
        ));
    }
    Ok(stream_config_with(args, |b| {
        b.initial_snapshot(walstream::SnapshotOptions::all_tables())
    })?)
}

/// What a finished `tail` did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) lines: u64,
    pub(crate) acknowledged: Lsn,
}

/// Tails until `--end`, a signal, or a failure.
///
/// With `snapshot`, the published tables' rows come first (a `relation` line per table, then
/// an `insert` line per row with binary values, at the slot's consistent point), then the
/// stream from that point; the slot must be new (`--create-slot`).
///
/// With `file` (`-f`, not `-`), the lines are appended to it instead of stdout, and only what
/// was fsynced to it (every `--fsync-interval` seconds, and at the end) is acknowledged.
pub(crate) async fn tail(
    args: &StreamArgs,
    snapshot: bool,
    output: json::Output,
    file: Option<&Path>,
) -> Result<Summary, TailError> {
    if output.format == json::Format::Wal2json {
        crate::wal2json::check_stream(args.streaming, args.two_phase).map_err(TailError::Usage)?;
    }
    let sink = match file {
        Some(path) if path.as_os_str() != "-" => {
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| {
                    TailError::Output(io::Error::new(
                        e.kind(),
                        format!("cannot open {}: {e}", path.display()),
                    ))
                })?;
            Sink::File {
                file,
                fsync: (args.recvlogical.fsync_interval > 0)
                    .then(|| Duration::from_secs(args.recvlogical.fsync_interval)),
            }
        }
        _ => Sink::Stdout(io::stdout().lock()),
    };
    if args.create_slot && !args.recvlogical.if_not_exists {
        refuse_existing_slot(args).await?;
    }
    let stop = CancellationToken::new();
    stop_on_signals(&stop).map_err(TailError::Output)?;
    follow_from(args, snapshot, output, sink, &stop).await
}

/// `--create-slot` as pg_recvlogical has it: an error if the slot exists (`--if-not-exists`
/// uses it instead). A slot created by someone else between this check and the stream's own
/// creation is used.
async fn refuse_existing_slot(args: &StreamArgs) -> Result<(), TailError> {
    let mut slots = SlotManager::connect(&args.conninfo).await?;
    let existing = slots.read(&args.slot).await?;
    if let Err(e) = slots.close().await {
        tracing::debug!("closing the connection: {e}");
    }
    match existing {
        Some(_) => Err(TailError::SlotExists(format!(
            "replication slot \"{}\" already exists (add --if-not-exists to stream from it)",
            args.slot
        ))),
        None => Ok(()),
    }
}

/// Where the lines go: stdout, or a file fsynced every `fsync` (never when `None`).
enum Sink {
    Stdout(io::StdoutLock<'static>),
    File { file: File, fsync: Option<Duration> },
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(o) => o.write(buf),
            Sink::File { file, .. } => file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(o) => o.flush(),
            Sink::File { file, .. } => file.flush(),
        }
    }
}

/// Cancels `stop` on the first SIGINT or SIGTERM. From then on these signals no longer end the
/// process: whoever watches `stop` ends it, after cleaning up.
pub(crate) fn stop_on_signals(stop: &CancellationToken) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            () = stop.cancelled() => return,
        }
        stop.cancel();
    });
    Ok(())
}

/// Connects with `args` and prints the stream as JSON lines on stdout until `--end`, `stop`,
/// the end of the stream, or a failure; then acknowledges what was flushed in a last status
/// update.
pub(crate) async fn follow(
    args: &StreamArgs,
    stop: &CancellationToken,
) -> Result<Summary, TailError> {
    let sink = Sink::Stdout(io::stdout().lock());
    follow_from(args, false, json::Output::default(), sink, stop).await
}

/// As [`follow`], with the initial snapshot first when `snapshot` is set.
async fn follow_from(
    args: &StreamArgs,
    snapshot: bool,
    output: json::Output,
    sink: Sink,
    stop: &CancellationToken,
) -> Result<Summary, TailError> {
    let config = if snapshot {
        rebuild_with_snapshot(args)?
    } else {
        stream_config(args)?
    };
    let stream = tokio::select! {
        stream = LogicalReplicationStream::connect(&args.conninfo, config) => stream?,
        () = stop.cancelled() => return Ok(Summary::default()),
    };
    let options = stream.negotiated().pgoutput;
    tracing::info!(
        proto_version = options.proto_version.number(),
        streaming = options.streaming.as_str(),
        start = %stream.start_lsn(),
        "tailing"
    );
    let mut tail = Tail {
        out: BufWriter::with_capacity(64 * 1024, sink),
        decoder: Decoder::new(options.proto_version, options.streaming),
        options,
        output,
        line: String::with_capacity(1024),
        written_end: None,
        unsynced_end: None,
        summary: Summary::default(),
        last_ack: Instant::now(),
        last_sync: Instant::now(),
    };
    let mut events = stream.start();
    let reporting = crate::metrics::start(&args.slot, events.stats_handle(), &args.report).await;
    let _reporting = reporting.map_err(|e| TailError::Usage(e.to_string()))?;
    let result = tail.run(&mut events, stop).await;
    // Whatever happened, what is flushed (and synced) is acknowledged in the last status
    // update.
    let flushed = tail.flush_and_ack(&events, true);
    let closed = events.shutdown().await;
    result?;
    flushed?;
    match closed {
        Ok(lsn) => tail.summary.acknowledged = lsn,
        Err(e) => tracing::warn!("closing the stream: {e}"),
    }
    Ok(tail.summary)
}

struct Tail {
    out: BufWriter<Sink>,
    decoder: Decoder,
    /// The options the stream runs with, for a new decoder after a reconnect.
    options: Options,
    /// `--format` and `--typed`.
    output: json::Output,
    line: String,
    /// The end of the last transaction whose lines are written but not yet flushed.
    written_end: Option<Lsn>,
    /// The end of the last transaction flushed to the `-f` file but not yet fsynced.
    unsynced_end: Option<Lsn>,
    summary: Summary,
    last_ack: Instant,
    last_sync: Instant,
}

impl Tail {
    async fn run(
        &mut self,
        events: &mut EventStream,
        stop: &CancellationToken,
    ) -> Result<(), TailError> {
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            // Take what is ready; before waiting for more, flush and acknowledge.
            // (Polled once without a timer: a zero timeout would wait for the timer's next
            // millisecond tick whenever nothing is ready, a millisecond of latency per commit.)
            let next = match ready_now(events.next_event()) {
                Some(next) => next,
                None => {
                    self.flush_and_ack(events, false)?;
                    // An idle stream still fsyncs (and acknowledges) the `-f` file in time.
                    let sync_at = self.sync_due();
                    let waited = tokio::select! {
                        next = events.next_event() => Some(next),
                        () = tokio::time::sleep_until(sync_at.unwrap_or_else(Instant::now).into()), if sync_at.is_some() => None,
                        () = stop.cancelled() => return Ok(()),
                    };
                    let Some(next) = waited else {
                        self.flush_and_ack(events, false)?;
                        continue;
                    };
                    next
                }
            };
            let Some(event) = next? else {
                tracing::info!("the stream ended");
                return Ok(());
            };
            match event.kind {
                EventKind::XLogData(x) => self.print(x.wal_start, &x.data)?,
                // The initial snapshot's events (raw mode delivers these decoded).
                EventKind::Relation(rel) => {
                    self.line.clear();
                    json::relation_info(&mut self.line, event.lsn, &rel, self.output);
                    self.write_line()?;
                }
                EventKind::Insert(i) => {
                    self.line.clear();
                    json::snapshot_insert(
                        &mut self.line,
                        event.lsn,
                        &i.relation,
                        i.new.tuple().columns(),
                        self.output,
                    )
                    .map_err(|e| {
                        TailError::Data(format!("a snapshot row of {}: {e}", i.relation.name))
                    })?;
                    self.write_line()?;
                }
                EventKind::SnapshotTable {
                    relation,
                    rows,
                    bytes,
                } => {
                    // Progress on stderr, one line a table (the snapshot's part of the summary).
                    eprintln!(
                        "walstream: snapshot: {}.{} copied, {rows} rows, {bytes} bytes",
                        relation.namespace, relation.name
                    );
                }
                EventKind::SnapshotEnd { consistent_point } => {
                    tracing::info!(%consistent_point, "snapshot done; streaming from its consistent point");
                }
                EventKind::Reconnected {
                    resume_lsn,
                    reason,
                    old_timeline,
                    new_timeline,
                    ..
                } => {
                    tracing::warn!(%resume_lsn, ?old_timeline, ?new_timeline, "reconnected; transactions after it are printed again");
                    self.line.clear();
                    let timelines = old_timeline.zip(new_timeline);
                    json::reconnected(&mut self.line, resume_lsn, &reason, timelines, self.output);
                    self.write_line()?;
                    // The server describes every relation again on the new connection.
                    self.decoder = Decoder::new(self.options.proto_version, self.options.streaming);
                }
                _ => {}
            }
            if self.last_ack.elapsed() >= ACK_EVERY {
                self.flush_and_ack(events, false)?;
            }
        }
    }

    fn print(&mut self, lsn: Lsn, data: &[u8]) -> Result<(), TailError> {
        let (message, stray_abort) = self
            .decoder
            .decode(data)
            .map(|d| (d.message, d.stray_abort))
            .map_err(|e| TailError::Data(format!("the message at LSN {lsn}: {e}")))?;
        if stray_abort {
            json::warn_stray_abort(lsn, &message, self.options.streaming);
        }
        self.line.clear();
        json::message(&mut self.line, lsn, &message, &self.decoder, self.output)
            .map_err(|e| TailError::Data(format!("the message at LSN {lsn}: {e}")))?;
        self.write_line()?;
        if let Some(end) = message.transaction_end() {
            self.written_end = Some(end);
        }
        Ok(())
    }

    fn write_line(&mut self) -> Result<(), TailError> {
        self.out
            .write_all(self.line.as_bytes())
            .map_err(TailError::Output)?;
        self.summary.lines += 1;
        Ok(())
    }

    /// When the `-f` file's next fsync is due, if it holds lines not yet fsynced.
    fn sync_due(&self) -> Option<Instant> {
        match self.out.get_ref() {
            Sink::File {
                fsync: Some(interval),
                ..
            } if self.unsynced_end.is_some() => Some(self.last_sync + *interval),
            _ => None,
        }
    }

    /// Flushes the output, then acknowledges the last transaction written; to a `-f` file
    /// with an fsync interval, only once it is fsynced (when the interval is over, or
    /// `final_sync`).
    fn flush_and_ack(&mut self, events: &EventStream, final_sync: bool) -> Result<(), TailError> {
        self.out.flush().map_err(TailError::Output)?;
        let mut ready = self.written_end.take();
        if let Sink::File {
            file,
            fsync: Some(interval),
        } = self.out.get_ref()
        {
            ready = ready.max(self.unsynced_end.take());
            if ready.is_some() && (final_sync || self.last_sync.elapsed() >= *interval) {
                file.sync_data().map_err(TailError::Output)?;
                self.last_sync = Instant::now();
                tracing::debug!(end = ?ready, "fsynced");
            } else {
                self.unsynced_end = ready;
                ready = None;
            }
        }
        if let Some(end) = ready {
            events.ack(end);
            tracing::debug!(%end, "acknowledged");
        }
        self.last_ack = Instant::now();
        Ok(())
    }
}

/// What `future` gives if it is ready at once, without waiting; a pending future is dropped,
/// so use it only with cancel-safe calls (the streams' `next_event`).
pub(crate) fn ready_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    match future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}

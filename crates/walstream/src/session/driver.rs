//! The driver task: owns the connection, reads frames into batches of events, sends status
//! updates on its own schedule, and reconnects.
//!
//! It runs apart from the consumer so that a slow or busy application never delays a status
//! update: `wal_sender_timeout` cannot kill a healthy slow consumer. The consumer's pace
//! reaches the socket through the bounded channel: while it is full the driver stops reading,
//! and TCP tells the server to wait.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use walconn::{Connection, CopyBoth};
use walproto::replication::{ServerMessage, StandbyStatusUpdate};
use walproto::Lsn;

use crate::error::{Error, ErrorKind, Result};
use crate::logical::config::ReplicationStreamConfig;
use crate::logical::event::{ChangeEvent, EventKind};
use crate::logical::follow::Follower;
use crate::logical::stream::StreamStats;
use crate::session::feedback::{FeedbackTracker, Liveness, LivenessCheck, SharedLsnFeedback};
use crate::session::open::{reopen_session, Agreement, Session};
use crate::session::retry::{FailoverWindow, Jitter};
use crate::session::slot_watch::{self, RecoveryBudget};
use crate::snapshot::{self, SnapshotOptions};

/// A batch is closed once it holds this many bytes of frames; see
/// [`ReplicationStreamConfigBuilder::buffer_batches`](crate::ReplicationStreamConfigBuilder::buffer_batches)
/// for the memory bound it gives.
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// A batch is also closed once it holds this many events: each event is about three times the
/// bytes of a small row message, so a batch of 64 KiB of them held 300 KB of events, 1.25 MB
/// with the channel full (most of a drain consumer's heap).
const MAX_BATCH_EVENTS: usize = 512;

/// How long the last status update and the clean end of the copy may take before the
/// connection is simply dropped.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What crosses the channel: events decoded from one read of the socket, or the error that
/// ended the stream.
pub(crate) type Item = Result<Batch>;

/// Events and the bytes of stream they came from.
pub(crate) struct Batch {
    pub(crate) events: Vec<ChangeEvent>,
    pub(crate) bytes: usize,
}

/// What the driver and the consumer share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) feedback: SharedLsnFeedback,
    pub(crate) reconnects: AtomicU64,
    pub(crate) status_updates: AtomicU64,
    pub(crate) reported_flush: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) buffered_bytes: AtomicUsize,
    pub(crate) peak_buffered_bytes: AtomicUsize,
    /// The slot's `safe_wal_size` as last read by the slot check, if `slot_safe_wal_known`.
    pub(crate) slot_safe_wal_size: AtomicI64,
    pub(crate) slot_safe_wal_known: AtomicBool,
    /// The slot's `wal_status` as last read by the slot check.
    pub(crate) slot_wal_status: std::sync::Mutex<Option<crate::WalStatus>>,
    /// Events, transactions and bytes (`StreamStats`, the `metrics` feature).
    pub(crate) metrics: crate::session::metrics::Counters,
}

impl Shared {
    /// Counts a batch of `bytes` handed to the channel (before it is sent: the consumer may
    /// take it at once and subtract).
    pub(crate) fn count_sent(&self, bytes: usize) {
        let now = self.buffered_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.peak_buffered_bytes.fetch_max(now, Ordering::AcqRel);
    }

    /// The counters, for a stream's `stats()`.
    pub(crate) fn stats(&self) -> StreamStats {
        crate::session::metrics::stats(self)
    }
}

/// Why a session ended: an error, and whether the session delivered data before it (which
/// resets the count of consecutive failures).
struct Failure {
    error: Error,
    progressed: bool,
}

/// The driver task's state; made by [`Driver::new`], run by [`Driver::run`].
pub(crate) struct Driver {
    conn_config: walconn::Config,
    config: ReplicationStreamConfig,
    /// What the first session agreed; every reconnect must agree the same.
    agreement: Agreement,
    /// The slot was created by the stream as a temporary slot: a lost connection loses it.
    created_temporary: bool,
    tx: Option<mpsc::Sender<Item>>,
    stop: CancellationToken,
    shared: Arc<Shared>,
    tracker: FeedbackTracker,
    /// Silence that means a dead connection (`None`: never).
    receive_timeout: Option<Duration>,
    follower: Follower,
    pending: Option<Batch>,
    carry: Vec<ChangeEvent>,
    ended: bool,
    /// The end of the last transaction of this session (they only go forward).
    session_end: Lsn,
    /// The initial snapshot to copy before streaming: the exported snapshot's name, what to
    /// copy, and the consistent point.
    snapshot: Option<(String, SnapshotOptions, Lsn)>,
    /// The recoveries of an invalidated slot in the last hour.
    recoveries: RecoveryBudget,
}

impl Driver {
    /// A driver for the stream that `session` opened, starting at `start_lsn`, sending its
    /// batches to `tx` and stopping on `stop`; with what it shares with the consumer.
    pub(crate) fn new(
        conn_config: walconn::Config,
        config: ReplicationStreamConfig,
        session: &Session,
        start_lsn: Lsn,
        tx: mpsc::Sender<Item>,
        stop: CancellationToken,
    ) -> (Self, Arc<Shared>) {
        let shared = Arc::new(Shared::default());
        let options = session.agreement.negotiated.pgoutput;
        let snapshot = session
            .snapshot_name
            .clone()
            .zip(config.snapshot.clone())
            .map(|(name, snapshot)| (name, snapshot, start_lsn));
        let driver = Driver {
            follower: Follower::new(options.proto_version, options.streaming, config.raw),
            tracker: FeedbackTracker::new(start_lsn, session.status_interval),
            receive_timeout: session.receive_timeout,
            agreement: session.agreement.clone(),
            created_temporary: session.created_temporary,
            conn_config,
            config,
            tx: Some(tx),
            stop,
            shared: shared.clone(),
            pending: None,
            carry: Vec::new(),
            ended: false,
            session_end: Lsn::ZERO,
            snapshot,
            recoveries: RecoveryBudget::default(),
        };
        (driver, shared)
    }

    /// Streams until stopped, ended or failed; returns the last flush position reported.
    pub(crate) async fn run(mut self, first: Connection) -> Result<Lsn> {
        // The slot's early warning runs beside the stream until the driver ends.
        let _watch = self.start_watch();
        let mut conn = Some(first);
        let mut failures = 0u32;
        let mut jitter = Jitter::new();
        let mut window = FailoverWindow::new(self.config.failover_window);
        loop {
            if let Some(c) = conn.as_mut() {
                if let Err(e) = self.initial_snapshot(c).await {
                    return Err(self.fail(e).await);
                }
            }
            let result = match conn.take() {
                Some(c) => self.session(c).await,
                None => match self.reopen().await {
                    Ok(c) => self.session(c).await,
                    Err(error) => Err(Failure {
                        error,
                        progressed: false,
                    }),
                },
            };
            let Err(Failure { error, progressed }) = result else {
                return Ok(self.tracker.reported());
            };
            if progressed {
                failures = 0;
                window.close();
            }
            let error = slot_watch::diagnose(error, &self.conn_config, &self.config.slot).await;
            if error.kind() == ErrorKind::SlotInvalidated {
                match self.recover(error).await {
                    Ok(c) => {
                        conn = Some(c);
                        failures = 0;
                        continue;
                    }
                    Err(_) if self.stop.is_cancelled() => return Ok(self.tracker.reported()),
                    Err(e) => return Err(self.fail(e).await),
                }
            }
            failures += 1;
            let reason = error.to_string();
            let now = Instant::now();
            let error = if !error.is_retryable() {
                Some(error)
            } else if !window.allows(error.is_no_matching_server(), now) {
                let open = window.open_for(now).unwrap_or_default();
                let message = format!(
                    "no server matched target_session_attrs for {open:?}, the failover window: \
                     {error}"
                );
                Some(Error::retries_exhausted(error, failures).with_context(message))
            } else if self.created_temporary {
                Some(error.with_context(format!(
                    "the connection was lost, and with it the temporary slot \"{}\": the \
                     stream cannot resume",
                    self.config.slot
                )))
            } else if !self.config.retry.allows(failures) {
                Some(Error::retries_exhausted(error, failures))
            } else {
                let delay = self.config.retry.delay(failures, jitter.next());
                tracing::warn!(
                    attempt = failures,
                    ?delay,
                    error = %error,
                    "replication stream lost; reconnecting"
                );
                tokio::select! {
                    () = self.stop.cancelled() => return Ok(self.tracker.reported()),
                    () = tokio::time::sleep(delay) => {}
                }
                None
            };
            if let Some(error) = error {
                return Err(self.fail(error).await);
            }
            let resume = self.tracker.restart(self.shared.feedback.flushed());
            self.shared.metrics.observe(&self.tracker);
            self.follower.reset();
            // One notice per resumption: a notice of an attempt that failed before it was
            // delivered is replaced by the next one, which says the same and more (and keeps
            // the timeline change it announced: the agreement has moved on).
            let (old_timeline, new_timeline) = self.undelivered_timeline_change();
            self.carry
                .retain(|e| !matches!(e.kind, EventKind::Reconnected { .. }));
            self.carry.push(ChangeEvent {
                lsn: resume,
                xid: None,
                commit_time: None,
                kind: EventKind::Reconnected {
                    resume_lsn: resume,
                    attempts: failures,
                    reason,
                    old_timeline,
                    new_timeline,
                },
            });
        }
    }

    /// The timelines of a reconnect notice not yet delivered (`None` when it has none).
    fn undelivered_timeline_change(&self) -> (Option<u32>, Option<u32>) {
        self.carry
            .iter()
            .find_map(|e| match e.kind {
                EventKind::Reconnected {
                    old_timeline: Some(old),
                    new_timeline: Some(new),
                    ..
                } => Some((Some(old), Some(new))),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Copies the initial snapshot, if one is to be taken, before streaming on `conn` (whose
    /// slot exported it); a failed copy drops the slot unless the options keep it.
    async fn initial_snapshot(&mut self, conn: &mut Connection) -> Result<()> {
        let Some((name, options, point)) = self.snapshot.take() else {
            return Ok(());
        };
        let copied = self.copy_snapshot(&name, &options, point).await;
        if copied.is_err() && !options.keeps_slot() {
            match conn.drop_replication_slot(&self.config.slot, false).await {
                Ok(()) => tracing::info!(
                    slot = self.config.slot,
                    "dropped the slot of the failed snapshot"
                ),
                Err(d) => tracing::warn!(
                    slot = self.config.slot,
                    "dropping the slot of the failed snapshot: {d}"
                ),
            }
        }
        copied
    }

    /// Starts the slot's early warning (if configured); it stops when the guard is dropped.
    fn start_watch(&self) -> Option<tokio_util::sync::DropGuard> {
        let tx = self.tx.as_ref()?.downgrade();
        let stop = self.stop.child_token();
        slot_watch::spawn_watch(
            self.conn_config.clone(),
            self.config.slot.clone(),
            &self.config.slot_watch,
            tx,
            self.shared.clone(),
            stop.clone(),
        );
        Some(stop.drop_guard())
    }

    /// The recovery policy's answer to an invalidated slot (`error`): the slot dropped and
    /// created again, [`EventKind::Resnapshot`] delivered, and the new slot's connection, on
    /// which the new snapshot is copied before streaming; or the error when there is no policy,
    /// its hourly limit is reached, or the recovery fails.
    async fn recover(&mut self, error: Error) -> Result<Connection> {
        let Some(policy) = self.config.slot_watch.recovery.clone() else {
            return Err(error);
        };
        let slot = self.config.slot.clone();
        let reason = error
            .invalidation_reason()
            .cloned()
            .unwrap_or_else(|| slot_watch::InvalidationReason::Other("unknown".into()));
        if !self.recoveries.take(Instant::now(), policy.max_per_hour()) {
            let limit = policy.max_per_hour();
            return Err(error.with_context(format!(
                "replication slot \"{slot}\" was invalidated by the server ({reason}), and the \
                 recovery policy's limit of {limit} re-snapshots an hour is reached"
            )));
        }
        tracing::warn!(
            slot,
            %reason,
            "the replication slot was invalidated: dropping it, creating it again and taking a \
             new snapshot"
        );
        let session = slot_watch::recreate(&self.conn_config, &self.config, &policy).await?;
        if session.agreement.system.system_id != self.agreement.system.system_id {
            return Err(Error::new(
                ErrorKind::ClusterChanged,
                format!(
                    "recovering the slot reached system {}, not system {}",
                    session.agreement.system.system_id, self.agreement.system.system_id
                ),
            ));
        }
        let point = session.slot_position;
        let name = session.snapshot_name.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Slot,
                format!("the re-created slot \"{slot}\" exported no snapshot"),
            )
        })?;
        self.agreement = session.agreement.clone();
        self.created_temporary = session.created_temporary;
        self.tracker = FeedbackTracker::new(point, self.tracker.interval());
        self.follower.reset();
        self.ended = false;
        // Reconnect notices of the lost slot's attempts are superseded by the re-snapshot.
        self.carry.clear();
        let mut events = self.pending.take().map(|b| b.events).unwrap_or_default();
        events.push(ChangeEvent {
            lsn: point,
            xid: None,
            commit_time: None,
            kind: EventKind::Resnapshot { reason },
        });
        self.snapshot = Some((name, policy.snapshot_options().clone(), point));
        let closed = || Error::new(ErrorKind::Closed, "the stream stopped during a re-snapshot");
        let tx = self.tx.clone().ok_or_else(closed)?;
        tokio::select! {
            sent = tx.send(Ok(Batch { events, bytes: 0 })) => sent.map_err(|_| closed())?,
            () = self.stop.cancelled() => return Err(closed()),
        }
        Ok(session.conn)
    }

    /// Copies the initial snapshot, handing its batches to the consumer as the stream's own
    /// are (waiting while the channel is full).
    async fn copy_snapshot(
        &mut self,
        name: &str,
        options: &SnapshotOptions,
        point: Lsn,
    ) -> Result<()> {
        let tx = self.tx.clone();
        let shared = self.shared.clone();
        let stop = self.stop.clone();
        snapshot::copy(
            &self.conn_config,
            name,
            &self.config.publications,
            options,
            point,
            |events, bytes| {
                let (tx, shared, stop) = (tx.clone(), shared.clone(), stop.clone());
                async move {
                    let closed = || {
                        Error::new(
                            ErrorKind::Closed,
                            "the stream stopped during the initial snapshot",
                        )
                    };
                    let tx = tx.ok_or_else(closed)?;
                    shared.count_sent(bytes);
                    tokio::select! {
                        sent = tx.send(Ok(Batch { events, bytes })) => sent.map_err(|_| closed()),
                        () = stop.cancelled() => Err(closed()),
                    }
                }
            },
        )
        .await
    }

    /// Delivers what is pending, then the error; returns a copy of the error for the task's
    /// result.
    async fn fail(&mut self, error: Error) -> Error {
        tracing::debug!("replication stream ended: {error:#}");
        let summary = error.summary();
        if let Some(tx) = self.tx.take() {
            // Reconnect notices not yet delivered go first: they say where the stream was.
            let carried = std::mem::take(&mut self.carry);
            if !carried.is_empty() {
                let _ = tx
                    .send(Ok(Batch {
                        events: carried,
                        bytes: 0,
                    }))
                    .await;
            }
            if let Some(batch) = self.pending.take() {
                self.shared.count_sent(batch.bytes);
                let _ = tx.send(Ok(batch)).await;
            }
            let _ = tx.send(Err(error)).await;
        }
        summary
    }

    /// A new connection for a retry, checked against the last: the same cluster, the slot
    /// still there; on another timeline or server only if resuming there is safe, and then
    /// the reconnect notice names the timelines.
    async fn reopen(&mut self) -> Result<Connection> {
        let resume = self.tracker.reported();
        let session =
            reopen_session(&self.conn_config, &self.config, &self.agreement, resume).await?;
        if let Some((old, new)) = session.timeline_change {
            for e in &mut self.carry {
                if let EventKind::Reconnected {
                    old_timeline,
                    new_timeline,
                    ..
                } = &mut e.kind
                {
                    // After several changes before a delivery, from the first to the last.
                    *old_timeline = Some(old_timeline.unwrap_or(old));
                    *new_timeline = Some(new);
                }
            }
        }
        self.agreement = session.agreement;
        self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
        Ok(session.conn)
    }

    /// One replication session on `conn`, until stopped, ended or failed.
    async fn session(&mut self, conn: Connection) -> std::result::Result<(), Failure> {
        let start = self.tracker.reported();
        self.session_end = Lsn::ZERO;
        let options = self
            .agreement
            .negotiated
            .start_options(&self.config.publications);
        let mut copy = conn
            .start_logical_replication(&self.config.slot, start, &options)
            .await
            .map_err(|e| Failure {
                error: e.into(),
                progressed: false,
            })?;
        tracing::info!(slot = self.config.slot, %start, "replication started");
        let mut progressed = false;
        // The connection's span: its start position (the driver's span names slot and host).
        let span = tracing::info_span!("walstream_connection", %start);
        let pumped = tracing::Instrument::instrument(self.pump(&mut copy, &mut progressed), span);
        match pumped.await {
            Ok(()) => {
                self.close(copy).await;
                Ok(())
            }
            Err(error) => Err(Failure { error, progressed }),
        }
    }

    /// Reads, batches, delivers and reports until stopped or ended.
    async fn pump(&mut self, copy: &mut CopyBoth, progressed: &mut bool) -> Result<()> {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        // Reads are coalesced with the socket's low-water mark (see `Coalescing`).
        let flush = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(flush);
        let mut coalescing = Coalescing::new(self.config.read_coalescing);
        // The receive timeout: silence while reading means a dead connection. It shares the
        // status timer, armed at the earlier of the two deadlines. Its own deadline is taken
        // once and left alone while bytes arrive (it only moves later): a timer that fires
        // early finds the silence shorter than it thought and takes the new deadline then,
        // so no message costs a timer update or a clock read of its own.
        let mut liveness = Liveness::new(self.receive_timeout, Instant::now());
        let mut liveness_at: Option<Instant> = None;
        let mut heard = false;
        let stop = self.stop.clone();
        loop {
            let now = Instant::now();
            if std::mem::take(&mut heard) {
                liveness.heard(now);
            }
            let status_at = match self.tracker.next_status_at() {
                Some(at) if at > now => at,
                _ => {
                    self.send_status(copy).await?;
                    continue;
                }
            };
            let deliver = self.pending.is_some() && self.tx.is_some();
            let read = self.pending.is_none() && !self.ended;
            let tx = if deliver { self.tx.clone() } else { None };
            if !read {
                // Not listening (a full channel) is not silence.
                liveness.heard(now);
            }
            if liveness_at.is_none() {
                liveness_at = liveness.next_check_at();
            }
            let at = liveness_at.map_or(status_at, |l| l.min(status_at));
            if armed != Some(at) {
                timer.as_mut().reset(at.into());
                armed = Some(at);
            }
            let wake = tokio::select! {
                biased;
                () = stop.cancelled() => Wake::Stop,
                () = &mut timer => Wake::Timer,
                permit = reserve(tx), if deliver => Wake::Permit(permit.ok()),
                () = &mut flush, if coalescing.flush_armed => Wake::Flush,
                frame = copy.recv(), if read => Wake::Frame(frame),
            };
            match wake {
                Wake::Stop => return Ok(()),
                Wake::Flush => coalescing.flush(copy),
                Wake::Timer => {
                    armed = None;
                    let now = Instant::now();
                    if liveness_at.is_some_and(|l| l <= now) {
                        liveness_at = None;
                        match liveness.poll(now) {
                            LivenessCheck::Fine => {}
                            LivenessCheck::Ping => {
                                tracing::debug!("silence from the server: asking for a reply");
                                self.send_status_update(copy, true).await?;
                            }
                            LivenessCheck::Dead => {
                                let timeout = liveness.timeout().unwrap_or_default();
                                return Err(Error::receive_timeout(timeout));
                            }
                        }
                    }
                    // A status update that is due goes out at the top of the loop.
                }
                Wake::Permit(permit) => {
                    let (Some(permit), Some(batch)) = (permit, self.pending.take()) else {
                        // The consumer is gone: end as if stopped.
                        return Ok(());
                    };
                    self.shared.count_sent(batch.bytes);
                    permit.send(Ok(batch));
                    self.close_channel_if_ended();
                }
                Wake::Frame(frame) => {
                    let Some(frame) = frame? else {
                        return Err(Error::server_ended());
                    };
                    heard = true;
                    *progressed = true;
                    let bytes = self.read_batch(copy, frame).await?;
                    self.close_channel_if_ended();
                    if let Some(at) = coalescing.after_read(copy, bytes) {
                        flush.as_mut().reset(at.into());
                    }
                }
            }
        }
    }

    /// Follows `first` and every frame already buffered after it, up to a batch's size, and
    /// hands the batch to the consumer (or keeps it pending while the channel is full);
    /// returns the bytes of frames it read.
    async fn read_batch(&mut self, copy: &mut CopyBoth, first: Bytes) -> Result<usize> {
        let mut events = std::mem::take(&mut self.carry);
        let mut bytes = 0;
        let mut frame = first;
        let result = loop {
            bytes += frame.len();
            if let Err(e) = self.on_frame(copy, &frame, &mut events).await {
                break Err(e);
            }
            if self.ended
                || bytes >= MAX_BATCH_BYTES
                || events.len() >= MAX_BATCH_EVENTS
                || !copy.has_buffered_frame()
            {
                break Ok(());
            }
            match copy.recv().await {
                Ok(Some(f)) => frame = f,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        let read = bytes as u64;
        self.shared
            .metrics
            .received_bytes
            .fetch_add(read, Ordering::Relaxed);
        if !events.is_empty() {
            let batch = Batch { events, bytes };
            if let Some(tx) = &self.tx {
                // Counted before it is sent: the consumer may take it at once.
                let size = batch.bytes;
                self.shared.count_sent(size);
                match tx.try_send(Ok(batch)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(Ok(batch))) => {
                        self.shared.buffered_bytes.fetch_sub(size, Ordering::AcqRel);
                        self.pending = Some(batch);
                    }
                    // The consumer is gone; the stop token ends the driver.
                    Err(_) => {}
                }
            }
        }
        result.map(|()| bytes)
    }

    /// Follows one frame; events go to `events`.
    async fn on_frame(
        &mut self,
        copy: &mut CopyBoth,
        frame: &Bytes,
        events: &mut Vec<ChangeEvent>,
    ) -> Result<()> {
        match ServerMessage::parse(frame) {
            Ok(ServerMessage::XLogData(x)) => {
                self.tracker.on_wal_end(x.wal_end);
                let followed = self
                    .follower
                    .follow(frame, &x)
                    .map_err(|e| Error::decode_at(e, x.wal_start))?;
                if let Some(end) = followed.transaction_end {
                    // Transactions end in WAL order: an end at or before the previous one
                    // would make a consumer that deduplicates by commit LSN drop a
                    // transaction as a repeat.
                    if end <= self.session_end {
                        return Err(Error::new(
                            ErrorKind::Protocol,
                            format!(
                                "the server's transaction ends went backwards: {end} after {}",
                                self.session_end
                            ),
                        )
                        .at(x.wal_start));
                    }
                }
                events.push(followed.event);
                if let Some(end) = followed.transaction_end {
                    self.session_end = end;
                    self.tracker.on_transaction_end(end);
                    if self.config.end_lsn.is_some_and(|target| end >= target) {
                        tracing::info!(%end, "reached the end LSN");
                        self.ended = true;
                    }
                }
            }
            Ok(ServerMessage::PrimaryKeepalive(k)) => {
                let between = self.follower.between_transactions();
                self.tracker
                    .on_keepalive(k.wal_end, k.reply_requested, between);
                self.shared.metrics.observe(&self.tracker);
                if between
                    && self
                        .config
                        .end_lsn
                        .is_some_and(|target| k.wal_end >= target)
                {
                    tracing::info!(wal_end = %k.wal_end, "reached the end LSN");
                    self.ended = true;
                }
                if k.reply_requested {
                    self.send_status(copy).await?;
                }
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Error::decode_at(e, self.tracker.reported())
                    .with_context("undecodable CopyData message from the server"))
            }
        }
        self.shared
            .received
            .fetch_max(self.tracker.received().get(), Ordering::Relaxed);
        Ok(())
    }

    /// After the end LSN, once everything is handed over, the consumer's stream ends; the
    /// driver stays to report acknowledgements until shut down.
    fn close_channel_if_ended(&mut self) {
        if self.ended && self.pending.is_none() && self.tx.take().is_some() {
            tracing::debug!("all events up to the end LSN delivered");
        }
    }

    /// Sends a status update with what the application has acknowledged.
    async fn send_status(&mut self, copy: &mut CopyBoth) -> Result<()> {
        self.send_status_update(copy, false).await
    }

    /// A status update that may ask the server for an immediate reply (a ping).
    async fn send_status_update(
        &mut self,
        copy: &mut CopyBoth,
        reply_requested: bool,
    ) -> Result<()> {
        let fb = &self.shared.feedback;
        let s = self
            .tracker
            .status(Instant::now(), fb.flushed(), fb.applied());
        let update = StandbyStatusUpdate {
            write: s.write,
            flush: s.flush,
            apply: s.apply,
            client_time: SystemTime::now().into(),
            reply_requested,
        };
        copy.send_status_update(&update).await?;
        self.shared.status_updates.fetch_add(1, Ordering::Relaxed);
        self.shared
            .reported_flush
            .fetch_max(s.flush.get(), Ordering::AcqRel);
        tracing::trace!(write = %s.write, flush = %s.flush, "status update");
        Ok(())
    }

    /// The last status update, the end of the copy, and the end of the connection, each
    /// bounded in time: a server that does not answer is left.
    async fn close(&mut self, mut copy: CopyBoth) {
        // The end of the copy is a few small messages: read them as they come.
        if let Err(e) = copy.set_read_low_water(1) {
            tracing::debug!("resetting SO_RCVLOWAT: {e}");
        }
        let closing = async {
            self.send_status(&mut copy).await?;
            let conn = copy.finish().await?;
            conn.close().await?;
            Ok::<(), Error>(())
        };
        match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
            Ok(Ok(())) => {
                tracing::info!(flush = %self.tracker.reported(), "replication stream closed")
            }
            Ok(Err(e)) => tracing::warn!("closing the replication stream: {e:#}"),
            Err(_) => tracing::warn!("closing the replication stream timed out"),
        }
    }
}

/// The socket's receive low-water mark while streaming. A read that finds the stream busy
/// (see [`Pace`]) raises the mark to [`LOW_WATER`] bytes and arms a timer of
/// `read_coalescing`; the kernel wakes the reader when that much has arrived, or the timer
/// lowers the mark back to one byte (which wakes the reader at once if anything is there). A
/// busy stream is then read in large pieces, and no message waits more than
/// `read_coalescing`. A read that finds the stream quiet leaves the mark at one byte and arms
/// nothing: a lone commit is read the moment it arrives.
struct Coalescing {
    delay: Duration,
    enabled: bool,
    raised: bool,
    flush_armed: bool,
    pace: Pace,
}

/// The low-water mark while a busy stream is read: half a batch.
const LOW_WATER: usize = MAX_BATCH_BYTES / 2;

impl Coalescing {
    fn new(delay: Duration) -> Self {
        Self {
            delay,
            enabled: !delay.is_zero(),
            raised: false,
            flush_armed: false,
            pace: Pace::new(delay),
        }
    }

    /// After a read of `bytes`: raises the mark if the stream is busy (lowers it if not);
    /// returns when the flush timer should fire, if it should.
    fn after_read(&mut self, copy: &CopyBoth, bytes: usize) -> Option<Instant> {
        if !self.enabled {
            return None;
        }
        let now = Instant::now();
        if !self.pace.busy(now, bytes) {
            self.flush_armed = false;
            self.lower(copy);
            return None;
        }
        if !self.raised {
            match copy.set_read_low_water(LOW_WATER) {
                Ok(true) => self.raised = true,
                // A Unix socket: reads as they come.
                Ok(false) => self.enabled = false,
                Err(e) => {
                    tracing::debug!("read coalescing off: {e}");
                    self.enabled = false;
                }
            }
        }
        self.flush_armed = self.raised;
        self.raised.then(|| now + self.delay)
    }

    /// The timer fired: whatever is waiting is read now.
    fn flush(&mut self, copy: &CopyBoth) {
        self.flush_armed = false;
        self.lower(copy);
    }

    /// Back to one byte (before the end of the copy, whose last messages are small).
    fn lower(&mut self, copy: &CopyBoth) {
        if self.raised {
            self.raised = false;
            if let Err(e) = copy.set_read_low_water(1) {
                tracing::debug!("resetting SO_RCVLOWAT: {e}");
            }
        }
    }
}

/// Whether the stream is busy enough that waiting for more costs no message much: the
/// evidence that more is coming. The reads of the current window (one coalescing delay long,
/// started by the first read after the previous window ran out) must have brought at least
/// [`BUSY_BYTES`], that is, the stream runs at `BUSY_BYTES` per delay or faster (8 MB/s at
/// the default 2 ms), so the raised mark fills in about a delay or less; a read of that much
/// on its own (a full or nearly full buffer: a backlog) counts at once. A lone commit (a few
/// hundred bytes, in one to three reads) is never busy, nor is a steady trickle of them
/// (20,000 single-row transactions a second are about 4 MB/s), so neither waits. Sans-IO:
/// the time is passed in.
///
/// The server's `wal_end` is no evidence here: in a logical stream's XLogData it is the
/// record's own position (the walsender writes the same LSN as start and end), and a
/// keepalive comes when the walsender has caught up.
#[derive(Debug)]
struct Pace {
    window: Duration,
    since: Option<Instant>,
    bytes: usize,
}

/// The bytes a window of one coalescing delay must bring for the stream to count as busy.
const BUSY_BYTES: usize = LOW_WATER / 2;

impl Pace {
    fn new(window: Duration) -> Self {
        Self {
            window,
            since: None,
            bytes: 0,
        }
    }

    /// Counts a read of `bytes` at `now`; whether the stream is busy.
    fn busy(&mut self, now: Instant, bytes: usize) -> bool {
        let current = self
            .since
            .is_some_and(|since| now.saturating_duration_since(since) <= self.window);
        if !current {
            self.since = Some(now);
            self.bytes = 0;
        }
        self.bytes = self.bytes.saturating_add(bytes);
        self.bytes >= BUSY_BYTES
    }
}

/// What woke the driver.
enum Wake {
    Stop,
    Flush,
    Timer,
    Permit(Option<mpsc::OwnedPermit<Item>>),
    Frame(walconn::Result<Option<Bytes>>),
}

/// A permit on `tx`, or never when there is no channel.
pub(crate) async fn reserve<T>(
    tx: Option<mpsc::Sender<T>>,
) -> std::result::Result<mpsc::OwnedPermit<T>, mpsc::error::SendError<()>> {
    match tx {
        Some(tx) => tx.reserve_owned().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    /// A single-row transaction in pgoutput (Begin, Insert, Commit with their headers).
    const COMMIT: usize = 180;

    #[test]
    fn a_lone_commit_is_never_waited_for() {
        let t0 = Instant::now();
        let mut pace = Pace::new(2 * MS);
        // 20 a second, each in one read or in three (Begin, Insert, Commit apart).
        for i in 0..20 {
            let at = t0 + 50 * MS * i;
            assert!(!pace.busy(at, COMMIT));
            assert!(!pace.busy(at + MS / 100, 60));
            assert!(!pace.busy(at + MS / 50, 60));
        }
    }

    #[test]
    fn a_steady_trickle_is_not_busy() {
        // 20,000 single-row transactions a second, one read each.
        let t0 = Instant::now();
        let mut pace = Pace::new(2 * MS);
        assert!((0..20_000u32).all(|i| !pace.busy(t0 + i * 50 * MS / 1000, COMMIT)));
    }

    #[test]
    fn a_full_read_is_busy_at_once() {
        let mut pace = Pace::new(2 * MS);
        assert!(pace.busy(Instant::now(), MAX_BATCH_BYTES));
    }

    #[test]
    fn many_small_reads_in_a_window_are_busy_and_quiet_ends_it() {
        let t0 = Instant::now();
        let mut pace = Pace::new(2 * MS);
        // A backlog the server sends faster than the reader wakes: 4 KiB every 100 µs.
        let busy: Vec<bool> = (0..8u32)
            .map(|i| pace.busy(t0 + i * MS / 10, 4096))
            .collect();
        assert_eq!(busy, [false, false, false, true, true, true, true, true]);
        // Then silence longer than the window: the next small read is quiet again.
        assert!(!pace.busy(t0 + 10 * MS, COMMIT));
    }

    #[test]
    fn a_window_does_not_carry_over() {
        let t0 = Instant::now();
        let mut pace = Pace::new(2 * MS);
        assert!(!pace.busy(t0, BUSY_BYTES - 1));
        // One byte more, but after the window: a new window.
        assert!(!pace.busy(t0 + 3 * MS, 1));
        assert!(pace.busy(t0 + 4 * MS, BUSY_BYTES));
    }
}

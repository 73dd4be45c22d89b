//! The physical stream's driver task: opens sessions, reads WAL into batches, sends status
//! updates on its own schedule, follows timelines, and reconnects.
//!
//! It runs on the session machinery the logical stream uses: [`FeedbackTracker`] decides what
//! each status update says (never more than the application acknowledged), [`Liveness`] is
//! the receive timeout, [`RetryPolicy`](crate::RetryPolicy) and [`Jitter`] the reconnects,
//! [`Shared`] the counters; the channel and its batches bound the memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use walconn::{Connection, CopyBoth, CreateSlotOptions, NextTimeline, SystemInfo};
use walproto::replication::{HotStandbyFeedback, ServerMessage, StandbyStatusUpdate};
use walproto::Lsn;

use crate::error::{Error, ErrorKind, Result};
use crate::physical::config::PhysicalStreamConfig;
use crate::physical::event::{WalData, WalEvent};
use crate::physical::segment::WalSegmentSize;
use crate::session::driver::{reserve, Shared, CLOSE_TIMEOUT, MAX_BATCH_BYTES};
use crate::session::feedback::{FeedbackTracker, Liveness, LivenessCheck};
use crate::session::open::{parse_duration, receive_timeout, status_interval};
use crate::session::retry::Jitter;

/// `READ_REPLICATION_SLOT` needs PostgreSQL 15.
const READ_SLOT_VERSION: u32 = 150_000;

/// What crosses the channel: the events of one read of the socket, or the error that ended
/// the stream.
pub(crate) type Item = Result<Batch>;

/// Events and the bytes of WAL they carry.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) events: Vec<WalEvent>,
    pub(crate) bytes: usize,
}

/// What the driver and the consumer share: the logical stream's counters and
/// acknowledgements (read apart by a [`StatsHandle`](crate::StatsHandle) and the metrics
/// publisher), and the hot standby xmin.
#[derive(Debug, Default)]
pub(crate) struct PhysicalShared {
    pub(crate) base: Arc<Shared>,
    /// The full transaction id (epoch in the high half) to send as hot standby feedback;
    /// zero for none.
    pub(crate) standby_xmin: AtomicU64,
    /// Asks for a status update now ([`StatusRequester`](crate::physical::StatusRequester)).
    pub(crate) status_now: Arc<tokio::sync::Notify>,
}

/// An open, checked replication connection, not yet streaming.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) conn: Connection,
    pub(crate) system: SystemInfo,
    pub(crate) segment_size: WalSegmentSize,
    pub(crate) status_interval: Duration,
    pub(crate) receive_timeout: Option<Duration>,
    /// The slot's `restart_lsn` and its timeline, when the server says (15+).
    pub(crate) slot_position: Option<(Lsn, u32)>,
}

/// Connects and learns what a session needs. `first` allows creating the slot: on a
/// reconnect a missing slot is an error (a new one would not hold the WAL in between).
pub(crate) async fn open(
    conn_config: &walconn::Config,
    config: &PhysicalStreamConfig,
    first: bool,
) -> Result<Opened> {
    let mut conn = Connection::connect(conn_config).await?;
    let system = conn.identify_system().await?;
    let wal_sender_timeout = parse_duration(&conn.show("wal_sender_timeout").await?);
    let segment_size: WalSegmentSize = conn.show("wal_segment_size").await?.parse()?;
    let slot_position = match &config.slot {
        Some(slot) => slot_position(&mut conn, config, slot, &system, first).await?,
        None => None,
    };
    Ok(Opened {
        conn,
        status_interval: status_interval(config.status_interval, wal_sender_timeout),
        receive_timeout: receive_timeout(config.receive_timeout, wal_sender_timeout),
        system,
        segment_size,
        slot_position,
    })
}

/// The physical slot's `restart_lsn` and timeline (`None` before PostgreSQL 15, or for a
/// slot that has not reserved WAL), creating the slot if asked and missing.
async fn slot_position(
    conn: &mut Connection,
    config: &PhysicalStreamConfig,
    slot: &str,
    system: &SystemInfo,
    first: bool,
) -> Result<Option<(Lsn, u32)>> {
    let can_read = conn.server_version_num() >= READ_SLOT_VERSION;
    if can_read {
        let info = match conn.read_replication_slot(slot).await {
            // 0A000 feature_not_supported: the server reads physical slots only.
            Err(e) if e.code() == Some("0A000") => {
                return Err(Error::new(
                    ErrorKind::Slot,
                    format!("replication slot \"{slot}\" is not a physical one: {e}"),
                ))
            }
            other => other?,
        };
        if let Some(info) = info {
            if info.slot_type != "physical" {
                return Err(Error::new(
                    ErrorKind::Slot,
                    format!(
                        "replication slot \"{slot}\" is a {} slot, not a physical one",
                        info.slot_type
                    ),
                ));
            }
            let tli = info.restart_tli.unwrap_or(system.timeline);
            return Ok(info.restart_lsn.map(|lsn| (lsn, tli)));
        }
        if !may_create(config, first) {
            return Err(Error::new(
                ErrorKind::Slot,
                format!(
                    "replication slot \"{slot}\" does not exist{}",
                    if first {
                        " (create it, or ask for it to be created if missing)"
                    } else {
                        " any more: it was dropped while the stream was reconnecting"
                    }
                ),
            ));
        }
    } else if !may_create(config, first) {
        // START_REPLICATION says whether it exists.
        return Ok(None);
    }
    let mut options = CreateSlotOptions::physical();
    options.reserve_wal = true;
    options.temporary = config.temporary_slot;
    match conn.create_replication_slot(slot, &options).await {
        Ok(_) => tracing::info!(slot, "created the physical slot"),
        // 42710 duplicate_object: created meanwhile by someone else, or (before 15) there
        // already.
        Err(e) if e.code() == Some("42710") => {}
        Err(e) => return Err(e.into()),
    }
    // A physical slot's creation answers no position (its consistent point is null): the
    // slot says where it reserved WAL.
    if can_read {
        Box::pin(slot_position(conn, config, slot, system, false)).await
    } else {
        Ok(None)
    }
}

/// Whether a missing slot is created on this connection: a permanent one on the first, a
/// temporary one on every connection (it went with the last).
fn may_create(config: &PhysicalStreamConfig, first: bool) -> bool {
    config.temporary_slot || (config.create_slot && first)
}

/// Checks that streaming `timeline` from `start` is possible on a server whose timeline is
/// `system.timeline`: the same, or an ancestor that ended at or after `start`.
pub(crate) async fn check_timeline(
    conn: &mut Connection,
    system: &SystemInfo,
    timeline: u32,
    start: Lsn,
) -> Result<()> {
    if timeline == system.timeline {
        return Ok(());
    }
    if timeline > system.timeline {
        return Err(Error::new(
            ErrorKind::ClusterChanged,
            format!(
                "the stream is on timeline {timeline}, but the server (system {}) is on \
                 timeline {}, an older one",
                system.system_id, system.timeline
            ),
        )
        .at(start));
    }
    let file = conn.timeline_history(system.timeline).await?;
    let history = file.history()?;
    match history.end_of(timeline) {
        Some(end) if end >= start => Ok(()),
        Some(end) => Err(Error::new(
            ErrorKind::ClusterChanged,
            format!(
                "timeline {timeline} ended at {end} on this server (now on timeline {}), \
                 before the stream's position {start}: the WAL after {end} was of a branch the \
                 server abandoned",
                system.timeline
            ),
        )
        .at(start)),
        None => Err(Error::new(
            ErrorKind::ClusterChanged,
            format!(
                "timeline {timeline} is not in the history of the server's timeline {}: \
                 another branch",
                system.timeline
            ),
        )
        .at(start)),
    }
}

/// Why a session ended without an error.
enum Outcome {
    /// Stopped (cancelled, shut down, or the consumer is gone).
    Stopped,
    /// The server streamed a historic timeline to its end; the connection is ready for the
    /// next one.
    NextTimeline(Box<Connection>, NextTimeline),
}

/// Why a session failed, and whether it delivered data first (which resets the count of
/// consecutive failures).
struct Failure {
    error: Error,
    progressed: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            error,
            progressed: false,
        }
    }
}

/// The driver task's state; made by [`Driver::new`], run by [`Driver::run`].
pub(crate) struct Driver {
    conn_config: walconn::Config,
    config: PhysicalStreamConfig,
    system_id: String,
    tx: Option<mpsc::Sender<Item>>,
    stop: CancellationToken,
    shared: Arc<PhysicalShared>,
    tracker: FeedbackTracker,
    receive_timeout: Option<Duration>,
    /// The timeline streamed, and where the next session starts on it.
    timeline: u32,
    start: Lsn,
    /// The next WAL byte expected in this session.
    position: Lsn,
    /// The timelines followed to their end: (timeline, where it ended).
    ended_timelines: Vec<(u32, Lsn)>,
    pending: Option<Batch>,
    /// The end position was reached: nothing more is read.
    ended: bool,
}

impl Driver {
    /// A driver streaming `timeline` from `start` for the session `opened`, sending its
    /// batches to `tx` and stopping on `stop`; with what it shares with the consumer.
    pub(crate) fn new(
        conn_config: walconn::Config,
        config: PhysicalStreamConfig,
        opened: &Opened,
        (timeline, start): (u32, Lsn),
        tx: mpsc::Sender<Item>,
        stop: CancellationToken,
    ) -> (Self, Arc<PhysicalShared>) {
        let shared = Arc::new(PhysicalShared::default());
        let ended = config.end_lsn.is_some_and(|end| start >= end);
        let mut driver = Self {
            conn_config,
            system_id: opened.system.system_id.clone(),
            tx: Some(tx),
            stop,
            shared: shared.clone(),
            tracker: FeedbackTracker::new(start, opened.status_interval),
            receive_timeout: opened.receive_timeout,
            timeline,
            start,
            position: start,
            ended_timelines: Vec::new(),
            pending: None,
            ended,
            config,
        };
        if let Some(at) = driver.config.end_lsn.filter(|_| ended) {
            driver.queue(WalEvent::EndPosition { at });
        }
        (driver, shared)
    }

    /// Streams until stopped, ended or failed; returns the last flush position reported.
    pub(crate) async fn run(mut self, first: Connection) -> Result<Lsn> {
        let mut conn = Some(first);
        let mut failures = 0u32;
        let mut jitter = Jitter::new();
        loop {
            let result = match conn.take() {
                Some(c) => self.session(c).await,
                None => match self.reopen().await {
                    Ok(c) => self.session(c).await,
                    Err(error) => Err(error.into()),
                },
            };
            let Failure { error, progressed } = match result {
                Ok(Outcome::Stopped) => return Ok(self.tracker.reported()),
                Ok(Outcome::NextTimeline(c, next)) => match self.next_timeline(*c, next).await {
                    Ok(c) => {
                        conn = Some(c);
                        continue;
                    }
                    Err(error) => Failure {
                        error,
                        progressed: true,
                    },
                },
                Err(failure) => failure,
            };
            if progressed {
                failures = 0;
            }
            failures += 1;
            let reason = error.to_string();
            let error = if !error.is_retryable() {
                Some(error)
            } else if !self.config.retry.allows(failures) {
                Some(Error::retries_exhausted(error, failures))
            } else {
                let delay = self.config.retry.delay(failures, jitter.next());
                tracing::warn!(
                    attempt = failures,
                    ?delay,
                    "physical replication stream: {error}; reconnecting"
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
            let resume = self.tracker.restart(self.shared.base.feedback.flushed());
            self.shared.base.metrics.observe(&self.tracker);
            self.rewind(resume);
            // One notice per resumption: a notice of an attempt that failed before it was
            // delivered is replaced by the next one.
            if let Some(p) = &mut self.pending {
                p.events
                    .retain(|e| !matches!(e, WalEvent::Reconnected { .. }));
            }
            self.queue(WalEvent::Reconnected {
                resume,
                timeline: self.timeline,
                attempts: failures,
                reason,
            });
        }
    }

    /// Goes back to `resume` (at or before where the stream was): the timeline it is on is
    /// the first followed timeline that ended after it, or the current one.
    fn rewind(&mut self, resume: Lsn) {
        self.timeline = timeline_at(&mut self.ended_timelines, self.timeline, resume);
        self.start = resume;
    }

    /// A new connection for a retry: the same cluster, and a timeline that continues the
    /// stream's.
    async fn reopen(&mut self) -> Result<Connection> {
        let mut opened = open(&self.conn_config, &self.config, false).await?;
        if opened.system.system_id != self.system_id {
            return Err(Error::new(
                ErrorKind::ClusterChanged,
                format!(
                    "after reconnecting, the server is system {}, not system {}: refusing to \
                     resume there",
                    opened.system.system_id, self.system_id
                ),
            )
            .at(self.start));
        }
        check_timeline(&mut opened.conn, &opened.system, self.timeline, self.start).await?;
        self.shared.base.reconnects.fetch_add(1, Ordering::Relaxed);
        Ok(opened.conn)
    }

    /// The server ended the historic timeline: fetch the next one's history, tell the
    /// consumer, and go on there on the same connection.
    async fn next_timeline(
        &mut self,
        mut conn: Connection,
        next: NextTimeline,
    ) -> Result<Connection> {
        let previous = self.timeline;
        if next.timeline <= previous || next.start < self.position {
            return Err(Error::new(
                ErrorKind::ClusterChanged,
                format!(
                    "the server ended timeline {previous} at {} with timeline {} next, but the \
                     stream had WAL up to {}",
                    next.start, next.timeline, self.position
                ),
            )
            .at(next.start));
        }
        let file = conn.timeline_history(next.timeline).await?;
        file.history()?;
        tracing::info!(previous, timeline = next.timeline, at = %next.start, "following the next timeline");
        self.ended_timelines.push((previous, next.start));
        self.timeline = next.timeline;
        self.start = next.start;
        self.queue(WalEvent::TimelineSwitch {
            previous,
            timeline: next.timeline,
            at: next.start,
            history: file.content().clone(),
        });
        Ok(conn)
    }

    /// Adds an event to the batch waiting for the consumer (delivered before anything else
    /// is read).
    fn queue(&mut self, event: WalEvent) {
        match &mut self.pending {
            Some(batch) => batch.events.push(event),
            None => {
                self.pending = Some(Batch {
                    events: vec![event],
                    bytes: 0,
                })
            }
        }
    }

    /// Delivers what is pending, then the error; returns a copy of the error for the task's
    /// result.
    async fn fail(&mut self, error: Error) -> Error {
        tracing::debug!("physical replication stream ended: {error:#}");
        let summary = Error::new(error.kind(), error.to_string());
        if let Some(tx) = self.tx.take() {
            if let Some(batch) = self.pending.take() {
                self.shared.base.count_sent(batch.bytes);
                let _ = tx.send(Ok(batch)).await;
            }
            let _ = tx.send(Err(error)).await;
        }
        summary
    }

    /// One replication session on `conn`, until stopped, the timeline's end, or a failure.
    async fn session(&mut self, conn: Connection) -> std::result::Result<Outcome, Failure> {
        let (timeline, start) = (self.timeline, self.start);
        let mut copy = conn
            .start_physical_replication(self.config.slot.as_deref(), start, Some(timeline))
            .await
            .map_err(|e| Failure::from(Error::from(e).at(start)))?;
        tracing::info!(slot = ?self.config.slot, %start, timeline, "physical replication started");
        self.position = start;
        let mut progressed = false;
        match self.pump(&mut copy, &mut progressed).await {
            Ok(true) => {
                self.close(copy).await;
                Ok(Outcome::Stopped)
            }
            Ok(false) => {
                let failure = |error: Error| Failure { error, progressed };
                match copy
                    .end()
                    .await
                    .map_err(|e| failure(e.into()))?
                    .into_parts()
                {
                    (conn, Some(next)) => Ok(Outcome::NextTimeline(Box::new(conn), next)),
                    (_, None) => Err(failure(Error::server_ended())),
                }
            }
            Err(error) => Err(Failure { error, progressed }),
        }
    }

    /// Reads, batches, delivers and reports until stopped (`true`) or the server ends its
    /// side (`false`).
    async fn pump(&mut self, copy: &mut CopyBoth, progressed: &mut bool) -> Result<bool> {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut liveness = Liveness::new(self.receive_timeout, Instant::now());
        let mut liveness_at: Option<Instant> = None;
        let stop = self.stop.clone();
        let status_now = Arc::clone(&self.shared.status_now);
        loop {
            let now = Instant::now();
            let status_at = match self.tracker.next_status_at() {
                Some(at) if at > now => at,
                _ => {
                    self.send_status(copy, false).await?;
                    continue;
                }
            };
            let deliver = self.pending.is_some() && self.tx.is_some();
            let read = self.pending.is_none() && !self.ended;
            if !read {
                // Not listening (a full channel, or the end reached) is not silence.
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
            let tx = if deliver { self.tx.clone() } else { None };
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ok(true),
                () = status_now.notified() => self.send_status(copy, false).await?,
                () = &mut timer => {
                    armed = None;
                    let now = Instant::now();
                    if liveness_at.is_some_and(|l| l <= now) {
                        liveness_at = None;
                        match liveness.poll(now) {
                            LivenessCheck::Fine => {}
                            LivenessCheck::Ping => self.send_status(copy, true).await?,
                            LivenessCheck::Dead => {
                                let timeout = liveness.timeout().unwrap_or_default();
                                return Err(Error::receive_timeout(timeout));
                            }
                        }
                    }
                }
                permit = reserve(tx), if deliver => {
                    let (Ok(permit), Some(batch)) = (permit, self.pending.take()) else {
                        // The consumer is gone: end as if stopped.
                        return Ok(true);
                    };
                    self.shared.base.count_sent(batch.bytes);
                    permit.send(Ok(batch));
                    self.close_channel_if_ended();
                }
                frame = copy.recv(), if read => {
                    let Some(frame) = frame? else {
                        return Ok(false);
                    };
                    liveness.heard(Instant::now());
                    *progressed = true;
                    self.read_batch(copy, frame).await?;
                    self.close_channel_if_ended();
                }
            }
        }
    }

    /// Follows `first` and every frame already buffered after it, up to a batch's size, and
    /// hands the batch to the consumer (or keeps it pending while the channel is full).
    async fn read_batch(&mut self, copy: &mut CopyBoth, first: Bytes) -> Result<()> {
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut received = 0;
        let mut frame = first;
        let result = loop {
            received += frame.len() as u64;
            if let Err(e) = self.on_frame(copy, &frame, &mut events, &mut bytes).await {
                break Err(e);
            }
            if self.ended || bytes >= MAX_BATCH_BYTES || !copy.has_buffered_frame() {
                break Ok(());
            }
            match copy.recv().await {
                Ok(Some(f)) => frame = f,
                // The end of the copy: the next read sees it again.
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        self.shared
            .base
            .metrics
            .received_bytes
            .fetch_add(received, Ordering::Relaxed);
        if let (false, Some(tx)) = (events.is_empty(), &self.tx) {
            let batch = Batch { events, bytes };
            let size = batch.bytes;
            // Counted before it is sent: the consumer may take it at once.
            self.shared.base.count_sent(size);
            if let Err(mpsc::error::TrySendError::Full(Ok(batch))) = tx.try_send(Ok(batch)) {
                self.shared
                    .base
                    .buffered_bytes
                    .fetch_sub(size, Ordering::AcqRel);
                self.pending = Some(batch);
            }
        }
        result
    }

    /// Follows one frame; events go to `events`, their WAL bytes counted in `bytes`.
    async fn on_frame(
        &mut self,
        copy: &mut CopyBoth,
        frame: &Bytes,
        events: &mut Vec<WalEvent>,
        bytes: &mut usize,
    ) -> Result<()> {
        match ServerMessage::parse(frame) {
            Ok(ServerMessage::XLogData(x)) => {
                self.tracker.on_wal_end(x.wal_end);
                if x.wal_start != self.position {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "the server sent WAL from {}, but the stream is at {}: WAL comes \
                             in order, without gaps",
                            x.wal_start, self.position
                        ),
                    )
                    .at(x.wal_start));
                }
                let mut data = frame.slice_ref(x.data);
                if let Some(end) = self.config.end_lsn {
                    let room = end.checked_distance(x.wal_start).unwrap_or(0);
                    if room <= data.len() as u64 {
                        data.truncate(usize::try_from(room).unwrap_or(data.len()));
                        self.ended = true;
                    }
                }
                let data = WalData {
                    timeline: self.timeline,
                    start: x.wal_start,
                    wal_end: x.wal_end,
                    server_time: x.send_time,
                    bytes: data,
                };
                self.position = data.end();
                *bytes += data.bytes.len();
                if !data.bytes.is_empty() {
                    events.push(WalEvent::Data(data));
                }
                if let Some(at) = self.config.end_lsn.filter(|_| self.ended) {
                    tracing::info!(%at, "reached the end position");
                    events.push(WalEvent::EndPosition { at });
                }
            }
            Ok(ServerMessage::PrimaryKeepalive(k)) => {
                self.tracker
                    .on_keepalive(k.wal_end, k.reply_requested, false);
                self.shared.base.metrics.observe(&self.tracker);
                if k.reply_requested {
                    self.send_status(copy, false).await?;
                }
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Error::decode_at(e, self.position)
                    .with_context("undecodable CopyData message from the server"))
            }
        }
        self.shared
            .base
            .received
            .fetch_max(self.tracker.received().get(), Ordering::Relaxed);
        Ok(())
    }

    /// After the end position, once everything is handed over, the consumer's stream ends;
    /// the driver stays to report acknowledgements until shut down.
    fn close_channel_if_ended(&mut self) {
        if self.ended && self.pending.is_none() && self.tx.take().is_some() {
            tracing::debug!("all WAL up to the end position delivered");
        }
    }

    /// A status update with what the application acknowledged (and hot standby feedback, if
    /// asked for); `reply_requested` asks the server to answer at once (a ping).
    async fn send_status(&mut self, copy: &mut CopyBoth, reply_requested: bool) -> Result<()> {
        let fb = &self.shared.base.feedback;
        let s = self
            .tracker
            .status(Instant::now(), fb.flushed(), fb.applied());
        let update = StandbyStatusUpdate {
            // What the application wrote (not what the stream received): the server shows it
            // as the standby's write position.
            write: fb.written().max(s.flush),
            flush: s.flush,
            apply: s.apply,
            client_time: SystemTime::now().into(),
            reply_requested,
        };
        copy.send_status_update(&update).await?;
        if self.config.hot_standby_feedback {
            let xmin = self.shared.standby_xmin.load(Ordering::Acquire);
            let feedback = HotStandbyFeedback {
                client_time: SystemTime::now().into(),
                xmin: xmin as u32,
                xmin_epoch: (xmin >> 32) as u32,
                catalog_xmin: 0,
                catalog_xmin_epoch: 0,
            };
            copy.send_hot_standby_feedback(&feedback).await?;
        }
        let base = &self.shared.base;
        base.status_updates.fetch_add(1, Ordering::Relaxed);
        base.reported_flush
            .fetch_max(s.flush.get(), Ordering::AcqRel);
        tracing::trace!(write = %update.write, flush = %s.flush, "status update");
        Ok(())
    }

    /// The last status update, the end of the copy, and the end of the connection, each
    /// bounded in time: a server that does not answer is left.
    async fn close(&mut self, mut copy: CopyBoth) {
        let closing = async {
            self.send_status(&mut copy, false).await?;
            let conn = copy.finish().await?;
            conn.close().await?;
            Ok::<(), Error>(())
        };
        match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
            Ok(Ok(())) => {
                tracing::info!(flush = %self.tracker.reported(), "physical replication closed")
            }
            Ok(Err(e)) => tracing::warn!("closing the physical replication stream: {e:#}"),
            Err(_) => tracing::warn!("closing the physical replication stream timed out"),
        }
    }
}

/// The timeline that `lsn` is streamed on, for a stream now on `current` that followed the
/// timelines of `ended` (each with where it ended, oldest first) to their ends: the first one
/// that ended after `lsn` (a switch point itself belongs to the next timeline). The timelines
/// from there on are forgotten: they will be followed again.
fn timeline_at(ended: &mut Vec<(u32, Lsn)>, current: u32, lsn: Lsn) -> u32 {
    match ended.iter().position(|&(_, end)| lsn < end) {
        Some(i) => {
            let timeline = ended.get(i).map_or(current, |t| t.0);
            ended.truncate(i);
            timeline
        }
        None => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_goes_back_to_the_timeline_of_its_position() {
        let ended = vec![(1, Lsn::new(100)), (2, Lsn::new(200))];
        let cases = [
            (Lsn::new(50), 1, 0),
            (Lsn::new(100), 2, 1),
            (Lsn::new(199), 2, 1),
            (Lsn::new(200), 3, 2),
            (Lsn::new(500), 3, 2),
        ];
        for (lsn, timeline, left) in cases {
            let mut e = ended.clone();
            assert_eq!(timeline_at(&mut e, 3, lsn), timeline, "{lsn}");
            assert_eq!(e.len(), left, "{lsn}");
        }
    }
}

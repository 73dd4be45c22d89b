//! What a running stream counts (events by kind, transactions, bytes, spilled bytes, the
//! commit time of the newest transaction delivered), how [`StreamStats`] is made from it,
//! [`StreamCounters`] for a stream driven outside walstream, and, with the `metrics` feature,
//! how the same values reach the [`metrics`](https://docs.rs/metrics) facade (so a
//! Prometheus, StatsD or OpenTelemetry exporter installed by the application publishes them).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use walproto::pgoutput::Options;
use walproto::replication::ServerMessage;
use walproto::Lsn;

use crate::logical::event::{ChangeEvent, EventKind};
use crate::logical::follow::Follower;
use crate::logical::stream::{StatsHandle, StreamStats};
use crate::session::driver::Shared;
use crate::session::feedback::FeedbackTracker;

/// The `kind` label of each counted kind of event, in `kind_index` order.
pub const EVENT_KINDS: [&str; EVENT_KIND_COUNT] = [
    "begin",
    "commit",
    "origin",
    "relation",
    "type",
    "insert",
    "update",
    "delete",
    "truncate",
    "message",
    "stream_start",
    "stream_stop",
    "stream_commit",
    "stream_abort",
    "begin_prepare",
    "prepare",
    "stream_prepare",
    "commit_prepared",
    "rollback_prepared",
    "xlogdata",
    "snapshot",
    "slot_warning",
    "resnapshot",
    "reconnected",
    "other",
];

/// How many kinds of event are counted apart.
pub(crate) const EVENT_KIND_COUNT: usize = 25;

/// The index into [`EVENT_KINDS`] of an event's kind.
fn kind_index(kind: &EventKind) -> usize {
    match kind {
        EventKind::Begin(_) => 0,
        EventKind::Commit(_) => 1,
        EventKind::Origin { .. } => 2,
        EventKind::Relation(_) => 3,
        EventKind::Type(_) => 4,
        EventKind::Insert(_) => 5,
        EventKind::Update(_) => 6,
        EventKind::Delete(_) => 7,
        EventKind::Truncate(_) => 8,
        EventKind::Message(_) => 9,
        EventKind::StreamStart(_) => 10,
        EventKind::StreamStop => 11,
        EventKind::StreamCommit(_) => 12,
        EventKind::StreamAbort(_) => 13,
        EventKind::BeginPrepare(_) => 14,
        EventKind::Prepare(_) => 15,
        EventKind::StreamPrepare(_) => 16,
        EventKind::CommitPrepared(_) => 17,
        EventKind::RollbackPrepared(_) => 18,
        EventKind::XLogData(x) => x.data.first().map_or(19, |&t| raw_kind_index(t)),
        EventKind::SnapshotBegin { .. }
        | EventKind::SnapshotTable { .. }
        | EventKind::SnapshotEnd { .. } => 20,
        EventKind::SlotWarning { .. } => 21,
        EventKind::Resnapshot { .. } => 22,
        EventKind::Reconnected { .. } => 23,
        #[allow(unreachable_patterns)]
        _ => 24,
    }
}

/// The index of a raw XLogData event by its pgoutput message's tag (`"xlogdata"` for one
/// that is not a pgoutput message): a raw stream is counted as its decoded twin would be.
fn raw_kind_index(tag: u8) -> usize {
    use walproto::pgoutput::tag;
    match tag {
        tag::BEGIN => 0,
        tag::COMMIT => 1,
        tag::ORIGIN => 2,
        tag::RELATION => 3,
        tag::TYPE => 4,
        tag::INSERT => 5,
        tag::UPDATE => 6,
        tag::DELETE => 7,
        tag::TRUNCATE => 8,
        tag::MESSAGE => 9,
        tag::STREAM_START => 10,
        tag::STREAM_STOP => 11,
        tag::STREAM_COMMIT => 12,
        tag::STREAM_ABORT => 13,
        tag::BEGIN_PREPARE => 14,
        tag::PREPARE => 15,
        tag::STREAM_PREPARE => 16,
        tag::COMMIT_PREPARED => 17,
        tag::ROLLBACK_PREPARED => 18,
        _ => 19,
    }
}

/// The kinds (by [`kind_index`]) that end a transaction, as [`ChangeEvent::ack_lsn`] has them.
const TRANSACTION_ENDS: [usize; 6] = [1, 12, 15, 16, 17, 18];

/// Counts of delivered events by kind (the `kind` label of `walstream_events_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventCounts([u64; EVENT_KIND_COUNT]);

impl EventCounts {
    /// The count of one kind, by its label (`"insert"`, `"commit"`, ... as in
    /// [`iter`](Self::iter)); 0 for a label that is not one.
    pub fn get(&self, kind: &str) -> u64 {
        EVENT_KINDS
            .iter()
            .position(|k| *k == kind)
            .and_then(|i| self.0.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Every kind's label and count, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        EVENT_KINDS.iter().copied().zip(self.0.iter().copied())
    }

    /// All events counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// The counters a stream's driver and consumer add to (inside the driver's `Shared`).
#[derive(Debug)]
pub(crate) struct Counters {
    events: [AtomicU64; EVENT_KIND_COUNT],
    transactions: AtomicU64,
    /// Bytes of stream read from the server (the frames that made events).
    pub(crate) received_bytes: AtomicU64,
    /// The commit time (Unix microseconds) of the newest transaction delivered, `i64::MIN`
    /// before the first.
    newest_commit_unix_micros: AtomicI64,
    /// The end LSN of the newest transaction delivered.
    newest_end: AtomicU64,
    /// Bytes of changes written to spill files by the [`TransactionStream`](crate::TransactionStream)
    /// on this stream: its assembler adds to this counter.
    pub(crate) spilled_bytes: Arc<AtomicU64>,
    /// The driver's feedback tracker as of its last keepalive or reconnect: what it would report
    /// as flushed ([`FeedbackTracker::safe_flush`]) is what the lag is measured from.
    tracker: Mutex<Option<FeedbackTracker>>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            transactions: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            newest_commit_unix_micros: AtomicI64::new(i64::MIN),
            newest_end: AtomicU64::new(0),
            spilled_bytes: Arc::default(),
            tracker: Mutex::new(None),
        }
    }
}

impl Counters {
    /// Keeps a copy of the driver's `tracker`: called where what it would report as flushed
    /// can move without a status update (a keepalive, a reconnect).
    pub(crate) fn observe(&self, tracker: &FeedbackTracker) {
        *self.tracker.lock().unwrap_or_else(PoisonError::into_inner) = Some(tracker.clone());
    }

    /// What the next status update would report as flushed for an application that has
    /// acknowledged `acked`: the tracker's rule, on its last copy.
    fn safe_flush(&self, acked: Lsn) -> Lsn {
        self.tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(acked, |t| t.safe_flush(acked))
    }

    /// Counts a batch of events handed to the consumer.
    pub(crate) fn delivered(&self, events: &[ChangeEvent]) {
        let mut counts = [0u64; EVENT_KIND_COUNT];
        let mut transactions = 0;
        let mut newest: Option<(Lsn, Option<i64>)> = None;
        for event in events {
            let kind = kind_index(&event.kind);
            if let Some(count) = counts.get_mut(kind) {
                *count += 1;
            }
            // A raw transaction end has no ack_lsn; its position is where it starts (at or
            // before its end).
            let end = match (&event.kind, event.ack_lsn()) {
                (_, Some(end)) => Some(end),
                (EventKind::XLogData(_), None) => {
                    TRANSACTION_ENDS.contains(&kind).then_some(event.lsn)
                }
                _ => None,
            };
            if let Some(end) = end {
                transactions += 1;
                newest = Some((end, event.commit_time.and_then(|t| t.unix_micros())));
            }
        }
        for (total, count) in self.events.iter().zip(counts) {
            if count > 0 {
                total.fetch_add(count, Ordering::Relaxed);
            }
        }
        if let Some((end, time)) = newest {
            self.transactions.fetch_add(transactions, Ordering::Relaxed);
            if let Some(time) = time {
                self.newest_commit_unix_micros
                    .store(time, Ordering::Relaxed);
            }
            self.newest_end.fetch_max(end.get(), Ordering::Release);
        }
    }
}

/// Microseconds since the Unix epoch, now.
fn now_unix_micros() -> i64 {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// The stats of a stream from what its driver and consumer share.
pub(crate) fn stats(shared: &Shared) -> StreamStats {
    let c = &shared.metrics;
    let reported_flush = Lsn::new(shared.reported_flush.load(Ordering::Acquire));
    let acknowledged = shared.feedback.flushed();
    // Read before the tracker's copy, which the driver updates first: a keepalive arriving
    // meanwhile cannot make the lag look larger than it is.
    let received = Lsn::new(shared.received.load(Ordering::Acquire));
    // Idle with everything acknowledged, the keepalive's position is already safe: the lag
    // is measured from what the next status update will say, not from the last one.
    let safe_flush = c.safe_flush(acknowledged).max(reported_flush);
    let buffered_bytes = shared.buffered_bytes.load(Ordering::Acquire);
    let newest_end = Lsn::new(c.newest_end.load(Ordering::Acquire));
    let newest_commit = c.newest_commit_unix_micros.load(Ordering::Relaxed);
    // Idle and caught up: the newest transaction delivered is acknowledged and nothing waits
    // in the channel.
    let caught_up = safe_flush >= newest_end && buffered_bytes == 0;
    let lag_seconds = if caught_up || newest_commit == i64::MIN {
        0.0
    } else {
        (now_unix_micros().saturating_sub(newest_commit)).max(0) as f64 / 1e6
    };
    let server_wal_end = received;
    StreamStats {
        reconnects: shared.reconnects.load(Ordering::Relaxed),
        status_updates: shared.status_updates.load(Ordering::Relaxed),
        reported_flush,
        received,
        acknowledged,
        server_wal_end,
        safe_flush,
        lag_bytes: server_wal_end.get().saturating_sub(safe_flush.get()),
        lag_seconds,
        events: EventCounts(std::array::from_fn(|i| {
            c.events.get(i).map_or(0, |e| e.load(Ordering::Relaxed))
        })),
        transactions: c.transactions.load(Ordering::Relaxed),
        received_bytes: c.received_bytes.load(Ordering::Relaxed),
        spilled_bytes: c.spilled_bytes.load(Ordering::Relaxed),
        buffered_bytes,
        peak_buffered_bytes: shared.peak_buffered_bytes.load(Ordering::Acquire),
        slot_safe_wal_size: shared
            .slot_safe_wal_known
            .load(Ordering::Acquire)
            .then(|| shared.slot_safe_wal_size.load(Ordering::Acquire)),
        slot_wal_status: shared
            .slot_wal_status
            .lock()
            .ok()
            .and_then(|status| status.clone()),
    }
}

/// How often a running stream publishes to the `metrics` facade.
#[cfg(feature = "metrics")]
pub const PUBLISH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Sets the `metrics` facade's gauges and counters of the logical stream on `slot` to
/// `stats`: the names of the CLI's Prometheus endpoint, each with a `slot` label (and `kind`
/// for `walstream_events_total`). Counters are set to the stream's totals
/// ([`metrics::Counter::absolute`]).
#[cfg(feature = "metrics")]
pub fn publish(slot: &str, stats: &StreamStats) {
    publish_wal(slot, stats);
    let slot = slot.to_owned();
    metrics::gauge!("walstream_lag_seconds", "slot" => slot.clone()).set(stats.lag_seconds);
    for (kind, count) in stats.events.iter() {
        metrics::counter!("walstream_events_total", "slot" => slot.clone(), "kind" => kind)
            .absolute(count);
    }
    metrics::counter!("walstream_transactions_total", "slot" => slot.clone())
        .absolute(stats.transactions);
    metrics::counter!("walstream_spilled_bytes_total", "slot" => slot)
        .absolute(stats.spilled_bytes);
}

/// The part of [`publish`] that any replication stream has, logical or physical: positions,
/// the lag in bytes, bytes received, reconnects, status updates, the slot's `safe_wal_size`.
#[cfg(feature = "metrics")]
pub(crate) fn publish_wal(slot: &str, stats: &StreamStats) {
    let slot = slot.to_owned();
    let lsn = |l: Lsn| l.get() as f64;
    metrics::gauge!("walstream_received_lsn", "slot" => slot.clone()).set(lsn(stats.received));
    metrics::gauge!("walstream_flushed_lsn", "slot" => slot.clone()).set(lsn(stats.safe_flush));
    metrics::gauge!("walstream_server_wal_end_lsn", "slot" => slot.clone())
        .set(lsn(stats.server_wal_end));
    metrics::gauge!("walstream_lag_bytes", "slot" => slot.clone()).set(stats.lag_bytes as f64);
    metrics::counter!("walstream_received_bytes_total", "slot" => slot.clone())
        .absolute(stats.received_bytes);
    metrics::counter!("walstream_reconnects_total", "slot" => slot.clone())
        .absolute(stats.reconnects);
    metrics::counter!("walstream_status_updates_total", "slot" => slot.clone())
        .absolute(stats.status_updates);
    if let Some(status) = &stats.slot_wal_status {
        for (name, value) in status.gauge_samples() {
            metrics::gauge!("walstream_slot_wal_status", "slot" => slot.clone(), "status" => name)
                .set(value);
        }
    }
    if let Some(size) = stats.slot_safe_wal_size {
        metrics::gauge!("walstream_slot_safe_wal_size_bytes", "slot" => slot).set(size as f64);
    }
}

/// Publishes the stream's stats with `publish` every [`PUBLISH_INTERVAL`] until `stop` is
/// cancelled (and once more then).
#[cfg(feature = "metrics")]
pub(crate) fn spawn_publisher(
    slot: String,
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
    publish: fn(&str, &StreamStats),
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PUBLISH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => publish(&slot, &stats(&shared)),
            }
        }
        publish(&slot, &stats(&shared));
    });
}

impl StatsHandle {
    /// The stream's count of spilled bytes, for the assembler of a `TransactionStream` over it.
    pub(crate) fn spill_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.0.metrics.spilled_bytes)
    }
}

/// The counters of a logical stream that the application drives itself on a walconn
/// [`CopyBoth`](walconn::CopyBoth) (as the CLI's `record` does), read as [`StreamStats`]
/// through [`handle`](Self::handle) with the rules of an [`EventStream`](crate::EventStream)
/// in raw mode: events by the pgoutput message each XLogData holds, the lag in time from the
/// newest transaction's commit time, the lag in bytes from what the
/// [`FeedbackTracker`] would report.
///
/// Tell it every payload received ([`received`](Self::received)) and every status update
/// sent ([`status_sent`](Self::status_sent)).
#[derive(Debug)]
pub struct StreamCounters {
    shared: Arc<Shared>,
    follower: Follower,
}

impl StreamCounters {
    /// Counters for a stream started with `options` (its protocol version and streaming mode
    /// decide where transactions end).
    pub fn new(options: &Options) -> Self {
        Self {
            shared: Arc::default(),
            follower: Follower::new(options.proto_version, options.streaming, true),
        }
    }

    /// One CopyData payload received from the server, as it was sent (`w` XLogData, `k`
    /// keepalive): its bytes, the server's `wal_end`, and an XLogData's message counted as an
    /// event of its kind.
    pub fn received(&mut self, payload: &Bytes) {
        let wal_end = match ServerMessage::parse(payload) {
            Ok(ServerMessage::XLogData(x)) => {
                if let Ok(followed) = self.follower.follow(payload, &x) {
                    self.shared.metrics.delivered(&[followed.event]);
                }
                Some(x.wal_end)
            }
            Ok(ServerMessage::PrimaryKeepalive(k)) => Some(k.wal_end),
            _ => None,
        };
        if let Some(wal_end) = wal_end {
            self.shared
                .received
                .fetch_max(wal_end.get(), Ordering::Relaxed);
        }
        self.shared
            .metrics
            .received_bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
    }

    /// A status update was sent, as `tracker` decided it, reporting `flush` as flushed for an
    /// application that had acknowledged `acknowledged`.
    pub fn status_sent(&self, tracker: &FeedbackTracker, acknowledged: Lsn, flush: Lsn) {
        self.shared.feedback.set_flushed(acknowledged);
        self.shared.metrics.observe(tracker);
        self.shared.status_updates.fetch_add(1, Ordering::Relaxed);
        self.shared
            .reported_flush
            .fetch_max(flush.get(), Ordering::AcqRel);
    }

    /// A handle that reads the stats from elsewhere (a metrics endpoint, a progress line).
    pub fn handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.shared))
    }

    /// The stats now.
    pub fn stats(&self) -> StreamStats {
        stats(&self.shared)
    }
}

/// The first host of a connection configuration with its port (`db:5432`, or the socket
/// directory), for the driver's span.
pub(crate) fn host_of(config: &walconn::Config) -> String {
    match (config.hosts().first(), config.ports().first()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => String::new(),
    }
}

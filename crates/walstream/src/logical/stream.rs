//! `LogicalReplicationStream` (connect, negotiate, start) and `EventStream` (the consumer's
//! side: `futures::Stream`, `next_event`, acknowledgements, shutdown).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use walconn::SystemInfo;
use walproto::Lsn;

use crate::error::{Error, ErrorKind, Result};
use crate::logical::config::{Negotiated, ReplicationStreamConfig};
use crate::logical::event::ChangeEvent;
use crate::session::driver::{Driver, Item, Shared};
use crate::session::feedback::SharedLsnFeedback;
use crate::session::metrics::EventCounts;
use crate::session::open::{open_session, Session};

/// A connected, checked logical replication session, ready to [`start`](Self::start).
///
/// ```no_run
/// use walstream::{LogicalReplicationStream, ReplicationStreamConfig, EventKind};
///
/// # async fn run() -> walstream::Result<()> {
/// let config = ReplicationStreamConfig::builder("app_slot", ["app_pub"]).build()?;
/// let stream = LogicalReplicationStream::connect("postgresql://repl@db/app", config).await?;
/// let mut events = stream.start();
/// while let Some(event) = events.next_event().await? {
///     if let EventKind::Insert(insert) = &event.kind {
///         println!("{}: {:?}", insert.relation.name, insert.new.get("id"));
///     }
///     // Acknowledge each transaction once it is durably applied.
///     if let Some(lsn) = event.ack_lsn() {
///         events.ack(lsn);
///     }
/// }
/// events.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LogicalReplicationStream {
    conn_config: walconn::Config,
    config: ReplicationStreamConfig,
    session: Session,
    start_lsn: Lsn,
}

impl LogicalReplicationStream {
    /// Connects with a libpq conninfo (URL or key=value; `PG*` variables fill the gaps),
    /// negotiates the options with the server, and checks (or creates) the slot.
    ///
    /// Dropping the future closes its connection; a temporary slot goes with it, a permanent
    /// slot it was creating remains only if the creation had finished (and is then used by the
    /// next connect).
    pub async fn connect(conninfo: &str, config: ReplicationStreamConfig) -> Result<Self> {
        Self::connect_with(walconn::Config::parse(conninfo)?, config).await
    }

    /// As [`connect`](Self::connect), with a parsed connection configuration.
    pub async fn connect_with(
        conn_config: walconn::Config,
        config: ReplicationStreamConfig,
    ) -> Result<Self> {
        let session = open_session(&conn_config, &config, true).await?;
        let start_lsn = config
            .start_lsn
            .unwrap_or(Lsn::ZERO)
            .max(session.slot_position);
        Ok(Self {
            conn_config,
            config,
            session,
            start_lsn,
        })
    }

    /// The options agreed with the server.
    pub fn negotiated(&self) -> &Negotiated {
        &self.session.agreement.negotiated
    }

    /// The server's `IDENTIFY_SYSTEM` answer (a reconnect must find the same system and
    /// timeline).
    pub fn system(&self) -> &SystemInfo {
        &self.session.agreement.system
    }

    /// The interval between status updates, after `wal_sender_timeout`.
    pub fn status_interval(&self) -> Duration {
        self.session.status_interval
    }

    /// Where streaming starts: the slot's confirmed position, or the configured start if later.
    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// The configuration.
    pub fn config(&self) -> &ReplicationStreamConfig {
        &self.config
    }

    /// Starts streaming: spawns the driver task on the current tokio runtime and returns the
    /// consumer's end.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn start(self) -> EventStream {
        let (tx, rx) = mpsc::channel(self.config.buffer_batches);
        #[cfg(feature = "metrics")]
        let slot = self.config.slot.clone();
        // The driver task's span: what every event it logs is about.
        let span = tracing::info_span!(
            "walstream_driver",
            slot = %self.config.slot,
            host = %crate::session::metrics::host_of(&self.conn_config),
            start = %self.start_lsn,
        );
        let stop = self.config.cancel.child_token();
        let (driver, shared) = Driver::new(
            self.conn_config,
            self.config,
            &self.session,
            self.start_lsn,
            tx,
            stop.clone(),
        );
        #[cfg(feature = "metrics")]
        crate::session::metrics::spawn_publisher(
            slot,
            shared.clone(),
            stop.clone(),
            crate::session::metrics::publish,
        );
        let handle = tokio::spawn(driver.run(self.session.conn).instrument(span));
        EventStream {
            rx,
            current: Vec::new().into_iter(),
            shared,
            stop,
            driver: Some(handle),
        }
    }
}

/// The consumer's end of a started stream: a [`futures_core::Stream`] of
/// [`ChangeEvent`]s, also readable with [`next_event`](Self::next_event).
///
/// Reading is cancel-safe: dropping a `next_event` future (in `tokio::select!`, or under a
/// timeout) loses nothing, even while the driver reconnects. Status updates go out from the
/// driver task on their own schedule, however slowly the events are read.
///
/// Dropping the stream stops the driver in the background (with a last status update);
/// [`shutdown`](Self::shutdown) does the same and waits for it.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Item>,
    current: std::vec::IntoIter<ChangeEvent>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    driver: Option<JoinHandle<Result<Lsn>>>,
}

/// Counters, positions and lag of a running stream, read with [`EventStream::stats`] (pull).
///
/// With the `metrics` feature the same values also go to the
/// [`metrics`](https://docs.rs/metrics) facade every second, under the names of the CLI's
/// Prometheus endpoint (`walstream_lag_bytes`, `walstream_events_total{kind}`, ...), each with
/// a `slot` label (`publish_metrics`, with the feature).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Successful reconnects.
    pub reconnects: u64,
    /// Status updates sent.
    pub status_updates: u64,
    /// The highest flush position reported to the server.
    pub reported_flush: Lsn,
    /// The furthest server position received.
    pub received: Lsn,
    /// What the application has acknowledged as flushed
    /// ([`SharedLsnFeedback::flushed`]).
    pub acknowledged: Lsn,
    /// The server's `wal_end` as last sent (in a data message's header or a keepalive): the
    /// end of the WAL the server has decoded for this slot, so for a logical stream the same
    /// as [`received`](Self::received).
    pub server_wal_end: Lsn,
    /// The flush position the next status update reports: what is acknowledged or, while
    /// the stream is idle with every transaction acknowledged, the server's keepalive position
    /// ([`FeedbackTracker::safe_flush`](crate::FeedbackTracker::safe_flush)); at least
    /// [`reported_flush`](Self::reported_flush).
    pub safe_flush: Lsn,
    /// The lag in bytes: [`server_wal_end`](Self::server_wal_end) minus
    /// [`safe_flush`](Self::safe_flush) (0 while idle with everything acknowledged, without
    /// waiting for the next status update).
    pub lag_bytes: u64,
    /// The lag in time, in seconds: now minus the commit time of the newest transaction
    /// delivered; 0 while idle and caught up (that transaction acknowledged and nothing
    /// waiting in the channel), and before the first transaction.
    pub lag_seconds: f64,
    /// Events delivered to the consumer, by kind (a raw stream's XLogData by the pgoutput
    /// message it holds).
    pub events: EventCounts,
    /// Transactions delivered (events with an [`ack_lsn`](ChangeEvent::ack_lsn): commits,
    /// prepares, rollbacks of prepared transactions; in a raw stream, the XLogData holding
    /// them).
    pub transactions: u64,
    /// Bytes of stream read from the server (the frames events were decoded from).
    pub received_bytes: u64,
    /// Bytes of changes written to spill files by the [`TransactionStream`](crate::TransactionStream)
    /// over this stream (0 without one).
    pub spilled_bytes: u64,
    /// Bytes of stream in batches handed to the channel and not yet taken by the consumer.
    pub buffered_bytes: usize,
    /// The most bytes that were ever waiting so.
    pub peak_buffered_bytes: usize,
    /// The slot's `safe_wal_size` in bytes as the slot check last read it (`None` before the
    /// first read, with the check off, or when the server has no limit).
    pub slot_safe_wal_size: Option<i64>,
    /// The slot's `wal_status` as the slot check last read it (`None` before the first read
    /// or with the check off).
    pub slot_wal_status: Option<crate::WalStatus>,
}

/// Reads a stream's [`StreamStats`] apart from the stream: [`EventStream::stats_handle`].
#[derive(Clone, Debug)]
pub struct StatsHandle(pub(crate) Arc<Shared>);

impl StatsHandle {
    /// The stream's stats now.
    pub fn stats(&self) -> StreamStats {
        self.0.stats()
    }
}

impl EventStream {
    /// The next event; `Ok(None)` when the stream has ended (end LSN reached, cancelled, or
    /// after an error was returned).
    pub async fn next_event(&mut self) -> Result<Option<ChangeEvent>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .transpose()
    }

    /// The acknowledgement handle, to clone into the tasks that apply changes.
    pub fn feedback(&self) -> &SharedLsnFeedback {
        &self.shared.feedback
    }

    /// Acknowledges everything up to `lsn` as applied and flushed (see [`SharedLsnFeedback`]).
    pub fn ack(&self, lsn: Lsn) {
        self.shared.feedback.ack(lsn);
    }

    /// The stream's counters.
    pub fn stats(&self) -> StreamStats {
        self.shared.stats()
    }

    /// A handle that reads [`stats`](Self::stats) from elsewhere (a metrics endpoint, a
    /// progress line), valid as long as it is kept; after the stream has ended it keeps the
    /// last values.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.shared.clone())
    }

    /// A token that stops this stream when cancelled (a child of the configured one).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops the stream: sends a last status update with what has been acknowledged, ends the
    /// replication cleanly and closes the connection. Returns the flush position last reported,
    /// or the error that had already ended the stream.
    pub async fn shutdown(mut self) -> Result<Lsn> {
        self.stop.cancel();
        match self.driver.take() {
            Some(handle) => handle.await.map_err(|e| {
                Error::new(
                    ErrorKind::Closed,
                    format!("the stream's driver task failed: {e}"),
                )
            })?,
            None => Err(Error::new(
                ErrorKind::Closed,
                "the stream was already shut down",
            )),
        }
    }
}

impl Stream for EventStream {
    type Item = Result<ChangeEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            // Cancelled means stop now: events already received are not delivered (they are
            // not acknowledged either, so the next stream sends them again).
            if self.stop.is_cancelled() {
                return Poll::Ready(None);
            }
            if let Some(event) = self.current.next() {
                return Poll::Ready(Some(Ok(event)));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(batch))) => {
                    self.shared
                        .buffered_bytes
                        .fetch_sub(batch.bytes, Ordering::AcqRel);
                    self.shared.metrics.delivered(&batch.events);
                    self.current = batch.events.into_iter();
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

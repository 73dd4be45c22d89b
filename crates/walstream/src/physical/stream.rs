//! `PhysicalReplicationStream` (connect, start) and `WalStream` (the consumer's side:
//! `futures::Stream`, `next_event`, acknowledgements, shutdown).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use walconn::{Replication, SystemInfo};
use walproto::Lsn;

use crate::error::{Error, ErrorKind, Result};
use crate::logical::stream::{StatsHandle, StreamStats};
use crate::physical::config::PhysicalStreamConfig;
use crate::physical::driver::{check_timeline, open, Driver, Item, Opened, PhysicalShared};
use crate::physical::event::WalEvent;
use crate::physical::segment::WalSegmentSize;
use crate::session::feedback::SharedLsnFeedback;

/// A connected, checked physical replication session, ready to [`start`](Self::start).
///
/// The call sequence: [`connect`](Self::connect) (a `replication=true` connection: the
/// conninfo's `replication` setting is overridden), [`start`](Self::start), then read
/// [`WalEvent`]s from the [`WalStream`], write them (with a
/// [`WalWriter`](crate::physical::WalWriter), on a blocking thread), and acknowledge what is
/// durable. The slot never moves past an acknowledged position.
///
/// ```no_run
/// use walstream::physical::{PhysicalReplicationStream, PhysicalStreamConfig, WalWriter};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = "/var/lib/wal-archive";
/// let config = PhysicalStreamConfig::builder()
///     .slot("archiver")
///     .create_slot_if_missing(true)
///     .build()?;
/// let mut stream = PhysicalReplicationStream::connect("postgresql://repl@db", config).await?;
/// let size = stream.segment_size();
/// // Where an earlier run stopped (a blocking directory listing: fine before streaming).
/// if let Some(resume) = WalWriter::resume_position(dir, size)? {
///     stream.resume_at(resume.timeline, resume.lsn).await?;
/// }
/// let mut writer = WalWriter::open(dir, size, stream.timeline(), stream.start_lsn())?;
/// let mut wal = stream.start();
/// while let Some(event) = wal.next_event().await? {
///     // Blocking file I/O off the runtime's threads.
///     let (w, durable) = tokio::task::spawn_blocking(move || {
///         let result = writer.apply(&event).and_then(|()| writer.flush());
///         (writer, result)
///     })
///     .await?;
///     writer = w;
///     wal.ack(durable?);
/// }
/// wal.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PhysicalReplicationStream {
    conn_config: walconn::Config,
    config: PhysicalStreamConfig,
    opened: Opened,
    timeline: u32,
    start_lsn: Lsn,
}

impl PhysicalReplicationStream {
    /// Connects with a libpq conninfo (URL or key=value; `PG*` variables fill the gaps) as a
    /// physical replication connection, learns the segment size and `wal_sender_timeout`,
    /// checks (or creates) the slot, and decides where to start: the configured position,
    /// else the start of the segment of the slot's `restart_lsn`, else of the server's current
    /// position (as `pg_receivewal` starts); on the
    /// configured timeline, else the slot's, else the server's. A timeline older than the
    /// server's must have ended at or after the start position (else
    /// [`ErrorKind::ClusterChanged`]).
    pub async fn connect(conninfo: &str, config: PhysicalStreamConfig) -> Result<Self> {
        Self::connect_with(walconn::Config::parse(conninfo)?, config).await
    }

    /// As [`connect`](Self::connect), with a parsed connection configuration.
    pub async fn connect_with(
        mut conn_config: walconn::Config,
        config: PhysicalStreamConfig,
    ) -> Result<Self> {
        conn_config.set_replication(Replication::Physical);
        let mut opened = open(&conn_config, &config, true).await?;
        let system = &opened.system;
        // Streaming starts at a segment's start, as pg_receivewal starts: the first segment
        // written is then whole, like every other.
        let size = opened.segment_size;
        let start_lsn = config.start_lsn.unwrap_or_else(|| {
            size.round_down(opened.slot_position.map_or(system.xlogpos, |(lsn, _)| lsn))
        });
        let timeline = config
            .timeline
            .or(opened.slot_position.map(|(_, tli)| tli))
            .unwrap_or(system.timeline);
        let system = system.clone();
        check_timeline(&mut opened.conn, &system, timeline, start_lsn).await?;
        Ok(Self {
            conn_config,
            config,
            opened,
            timeline,
            start_lsn,
        })
    }

    /// Moves the start to `lsn` on `timeline`, checked as [`connect`](Self::connect) checks
    /// the configured start: for a start known only once connected, such as a WAL
    /// directory's [`resume_position`](crate::physical::WalWriter::resume_position), which
    /// needs the [`segment_size`](Self::segment_size). Not cancel-safe: a dropped call leaves
    /// the connection unusable (the stream then fails at its first session, and reconnects).
    pub async fn resume_at(&mut self, timeline: u32, lsn: Lsn) -> Result<()> {
        if let Some(end) = self.config.end_lsn.filter(|&end| end <= lsn) {
            return Err(Error::config(format!(
                "the end position {end} is not after the resume position {lsn}"
            )));
        }
        let system = self.opened.system.clone();
        check_timeline(&mut self.opened.conn, &system, timeline, lsn).await?;
        self.timeline = timeline;
        self.start_lsn = lsn;
        Ok(())
    }

    /// The server's `IDENTIFY_SYSTEM` answer (a reconnect must find the same system).
    pub fn system(&self) -> &SystemInfo {
        &self.opened.system
    }

    /// The cluster's WAL segment size (`SHOW wal_segment_size`).
    pub fn segment_size(&self) -> WalSegmentSize {
        self.opened.segment_size
    }

    /// Where streaming starts.
    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// The timeline streaming starts on.
    pub fn timeline(&self) -> u32 {
        self.timeline
    }

    /// The interval between status updates, after `wal_sender_timeout`.
    pub fn status_interval(&self) -> Duration {
        self.opened.status_interval
    }

    /// The configuration.
    pub fn config(&self) -> &PhysicalStreamConfig {
        &self.config
    }

    /// Starts streaming: spawns the driver task on the current tokio runtime and returns the
    /// consumer's end.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn start(self) -> WalStream {
        let (tx, rx) = mpsc::channel(self.config.channel_batches());
        let stop = self.config.cancel.child_token();
        // A stream without a slot is published with an empty `slot` label (Prometheus reads
        // it as no label at all).
        #[cfg(feature = "metrics")]
        let slot = self.config.slot.clone().unwrap_or_default();
        let (driver, shared) = Driver::new(
            self.conn_config,
            self.config,
            &self.opened,
            (self.timeline, self.start_lsn),
            tx,
            stop.clone(),
        );
        #[cfg(feature = "metrics")]
        crate::session::metrics::spawn_publisher(
            slot,
            Arc::clone(&shared.base),
            stop.clone(),
            crate::session::metrics::publish_wal,
        );
        let handle = tokio::spawn(driver.run(self.opened.conn));
        WalStream {
            rx,
            current: Vec::new().into_iter(),
            shared,
            stop,
            driver: Some(handle),
        }
    }
}

/// The consumer's end of a started physical stream: a [`futures_core::Stream`] of
/// [`WalEvent`]s, also readable with [`next_event`](Self::next_event).
///
/// Reading is cancel-safe: dropping a `next_event` future loses nothing. Status updates go
/// out from the driver task on their own schedule, however slowly the events are read; the
/// flush position they carry is what was acknowledged ([`ack`](Self::ack),
/// [`feedback`](Self::feedback)), never more. After a reconnect the stream resumes from that
/// position ([`WalEvent::Reconnected`]).
///
/// Dropping the stream stops the driver in the background (with a last status update);
/// [`shutdown`](Self::shutdown) does the same and waits for it.
#[derive(Debug)]
pub struct WalStream {
    rx: mpsc::Receiver<Item>,
    current: std::vec::IntoIter<WalEvent>,
    shared: Arc<PhysicalShared>,
    stop: CancellationToken,
    driver: Option<JoinHandle<Result<Lsn>>>,
}

impl WalStream {
    /// The next event; `Ok(None)` when the stream has ended (end position reached, cancelled,
    /// or after an error was returned).
    pub async fn next_event(&mut self) -> Result<Option<WalEvent>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .transpose()
    }

    /// The acknowledgement handle, to clone into the tasks that write WAL: mark what is
    /// written ([`SharedLsnFeedback::set_written`]), durable
    /// ([`SharedLsnFeedback::set_flushed`]: the slot may move there, and a reconnect resumes
    /// there) and applied.
    pub fn feedback(&self) -> &SharedLsnFeedback {
        &self.shared.base.feedback
    }

    /// Acknowledges everything up to `lsn` as written, durable and applied.
    pub fn ack(&self, lsn: Lsn) {
        self.shared.base.feedback.set_written(lsn);
        self.shared.base.feedback.ack(lsn);
    }

    /// The xmin sent as hot standby feedback (with
    /// [`hot_standby_feedback`](crate::physical::PhysicalStreamConfigBuilder::hot_standby_feedback)):
    /// the transaction id and its epoch, or `None` to hold nothing back.
    pub fn set_standby_xmin(&self, xmin: Option<(u32, u32)>) {
        let full = xmin.map_or(0, |(xid, epoch)| (u64::from(epoch) << 32) | u64::from(xid));
        self.shared.standby_xmin.store(full, Ordering::Release);
    }

    /// A handle that asks for a status update at once, from any thread: after a flush that
    /// a synchronous standby's primary waits for (`pg_receivewal --synchronous`), so that the
    /// server learns of it without waiting for the status interval.
    pub fn status_requester(&self) -> StatusRequester {
        StatusRequester(Arc::clone(&self.shared.status_now))
    }

    /// The stream's counters: positions, the lag in bytes, bytes received, reconnects and
    /// status updates (the logical stream's events, transactions and lag in time stay 0).
    ///
    /// With the `metrics` feature the same values also go to the
    /// [`metrics`](https://docs.rs/metrics) facade every second, with the slot's name as the
    /// `slot` label (empty without a slot), as a logical stream's do.
    pub fn stats(&self) -> StreamStats {
        self.shared.base.stats()
    }

    /// A handle that reads [`stats`](Self::stats) from elsewhere (a metrics endpoint, a
    /// progress line), valid as long as it is kept; after the stream has ended it keeps the
    /// last values.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.shared.base))
    }

    /// A token that stops this stream when cancelled (a child of the configured one).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops the stream: sends a last status update with what has been acknowledged, ends the
    /// replication cleanly and closes the connection. Returns the flush position last
    /// reported, or the error that had already ended the stream.
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

/// Asks a [`WalStream`]'s driver for a status update now (see
/// [`WalStream::status_requester`]). Requests made while one is pending are one request.
#[derive(Clone, Debug)]
pub struct StatusRequester(Arc<tokio::sync::Notify>);

impl StatusRequester {
    /// Sends the acknowledged positions to the server as soon as the driver can.
    pub fn request(&self) {
        self.0.notify_one();
    }
}

impl Stream for WalStream {
    type Item = Result<WalEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            // Cancelled means stop now: WAL received but not yet read is not acknowledged, so
            // the next stream sends it again.
            if self.stop.is_cancelled() {
                return Poll::Ready(None);
            }
            if let Some(event) = self.current.next() {
                return Poll::Ready(Some(Ok(event)));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(batch))) => {
                    self.shared
                        .base
                        .buffered_bytes
                        .fetch_sub(batch.bytes, Ordering::AcqRel);
                    self.current = batch.events.into_iter();
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for WalStream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

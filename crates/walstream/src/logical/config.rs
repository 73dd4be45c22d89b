//! The stream's configuration, its builder, and protocol negotiation against a server.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use walconn::LogicalReplicationOptions;
use walproto::pgoutput::{Options, OriginFilter, ProtocolVersion, Refusal, Request, Streaming};
use walproto::Lsn;

use crate::error::{Error, Result};
use crate::session::retry::RetryPolicy;
use crate::session::slot_watch::{SlotRecovery, SlotWatchOptions};
use crate::snapshot::SnapshotOptions;

/// How often a status update goes out when the server does not ask sooner (the
/// `pg_recvlogical` default). It is shortened to a third of the server's
/// `wal_sender_timeout` when that is smaller.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// The least default receive timeout (see
/// [`ReplicationStreamConfigBuilder::receive_timeout`]): a server with a short
/// `wal_sender_timeout` on a loaded machine should not be given up on within a second.
pub const MIN_DEFAULT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many batches of events the driver may hold for a consumer that is not reading; see
/// [`ReplicationStreamConfigBuilder::buffer_batches`] for the memory bound this gives.
pub const DEFAULT_BUFFER_BATCHES: usize = 4;

/// How long a busy stream's socket is left alone after a read; see
/// [`ReplicationStreamConfigBuilder::read_coalescing`].
pub const DEFAULT_READ_COALESCING: Duration = Duration::from_millis(2);

/// How long a stream keeps retrying while no server of the conninfo matches its
/// `target_session_attrs`; see [`ReplicationStreamConfigBuilder::failover_window`].
pub const DEFAULT_FAILOVER_WINDOW: Duration = Duration::from_secs(60);

/// Whether and how to create the slot when it does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateSlot {
    /// A permanent slot: it survives disconnects and keeps WAL until dropped.
    Permanent,
    /// A temporary slot, dropped by the server when the connection ends. A reconnect cannot
    /// resume from it, so losing the connection ends such a stream with
    /// [`ErrorKind::Slot`](crate::ErrorKind::Slot).
    Temporary,
}

/// The configuration of a [`LogicalReplicationStream`](crate::LogicalReplicationStream).
///
/// Made with [`ReplicationStreamConfig::builder`]:
///
/// ```
/// use std::time::Duration;
/// use walstream::{ReplicationStreamConfig, Streaming};
///
/// let config = ReplicationStreamConfig::builder("app_slot", ["app_pub"])
///     .streaming(Streaming::Off) // whole transactions only
///     .status_interval(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.slot(), "app_slot");
/// # Ok::<(), walstream::Error>(())
/// ```
///
/// How to connect is not part of it: that is the [`walconn::Config`] given to
/// [`LogicalReplicationStream::connect_with`](crate::LogicalReplicationStream::connect_with)
/// (parsed, or built in code with TLS material from memory), which every reconnect and side
/// connection uses again. A [`walconn::PasswordProvider`] set there is thus asked for a fresh
/// credential at each reconnect (see `docs/production.md`, "Rotating credentials").
#[derive(Clone, Debug)]
pub struct ReplicationStreamConfig {
    pub(crate) slot: String,
    pub(crate) publications: Vec<String>,
    /// The pgoutput options asked for, negotiated against each server at connect.
    pub(crate) request: Request,
    pub(crate) start_lsn: Option<Lsn>,
    pub(crate) end_lsn: Option<Lsn>,
    pub(crate) status_interval: Duration,
    /// `None`: derived from `wal_sender_timeout` at connect.
    pub(crate) receive_timeout: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    pub(crate) create_slot: Option<CreateSlot>,
    /// A slot created by the stream is a failover slot (PostgreSQL 17+).
    pub(crate) failover: bool,
    pub(crate) failover_window: Duration,
    pub(crate) require_existing_slot: bool,
    pub(crate) raw: bool,
    pub(crate) buffer_batches: usize,
    pub(crate) read_coalescing: Duration,
    pub(crate) cancel: CancellationToken,
    pub(crate) snapshot: Option<SnapshotOptions>,
    pub(crate) slot_watch: SlotWatchOptions,
}

impl ReplicationStreamConfig {
    /// A builder for a stream of `slot` over `publications`, with the defaults: the highest
    /// protocol version the server supports, streaming off (only committed transactions
    /// arrive; see [`streaming`](ReplicationStreamConfigBuilder::streaming)), text values, no logical
    /// messages, no two-phase decoding, every origin, start where the slot is, no end, status
    /// every 10 s (or a third of `wal_sender_timeout`), the default [`RetryPolicy`], and an
    /// existing slot required.
    pub fn builder<I, S>(slot: impl Into<String>, publications: I) -> ReplicationStreamConfigBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ReplicationStreamConfigBuilder {
            config: ReplicationStreamConfig {
                slot: slot.into(),
                publications: publications.into_iter().map(Into::into).collect(),
                // Streaming off unless asked for: a plain event loop must not see the changes
                // of transactions that may still abort (ARCHITECTURE.md, "Streaming").
                request: Request {
                    streaming: Some(Streaming::Off),
                    ..Request::default()
                },
                start_lsn: None,
                end_lsn: None,
                status_interval: DEFAULT_STATUS_INTERVAL,
                receive_timeout: None,
                retry: RetryPolicy::default(),
                create_slot: None,
                failover: false,
                failover_window: DEFAULT_FAILOVER_WINDOW,
                require_existing_slot: true,
                raw: false,
                buffer_batches: DEFAULT_BUFFER_BATCHES,
                read_coalescing: DEFAULT_READ_COALESCING,
                cancel: CancellationToken::new(),
                snapshot: None,
                slot_watch: SlotWatchOptions::default(),
            },
        }
    }

    /// The slot's name.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// The publications.
    pub fn publications(&self) -> &[String] {
        &self.publications
    }

    /// The cancellation token the stream obeys.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The target LSN of a bounded replay, if any.
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.end_lsn
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// How long reconnects go on while no server matches `target_session_attrs`.
    pub fn failover_window(&self) -> Duration {
        self.failover_window
    }
}

/// Builds a [`ReplicationStreamConfig`]; see [`ReplicationStreamConfig::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct ReplicationStreamConfigBuilder {
    config: ReplicationStreamConfig,
}

impl ReplicationStreamConfigBuilder {
    /// The pgoutput protocol version. By default the highest the server supports
    /// ([`ProtocolVersion::max_for_server`]: 4 on PostgreSQL 16+, 3 on 15, 2 on 14, 1 before).
    pub fn proto_version(mut self, version: ProtocolVersion) -> Self {
        self.config.request.proto_version = Some(version);
        self
    }

    /// Whether in-progress transactions are streamed (protocol 2+). By default
    /// [`Streaming::Off`]: only whole committed transactions arrive, so every event an
    /// [`EventStream`](crate::EventStream) delivers belongs to a transaction that committed.
    /// With `on` or `parallel`, a large transaction arrives in blocks while it runs and may
    /// still end with a Stream Abort: consume those through a
    /// [`TransactionStream`](crate::TransactionStream) (which delivers only what committed)
    /// or handle [`EventKind::StreamAbort`](crate::EventKind::StreamAbort) yourself.
    pub fn streaming(mut self, streaming: Streaming) -> Self {
        self.config.request.streaming = Some(streaming);
        self
    }

    /// Streams in-progress transactions in the most the negotiated protocol allows:
    /// `parallel` with protocol 4 (PostgreSQL 16+), `on` with 2 and 3 (14, 15), off with 1.
    /// What a [`TransactionStream`](crate::TransactionStream) wants: the server sends a large
    /// transaction as it runs instead of decoding it all at commit (less delay and less
    /// spilling on the server), and the stream still delivers only committed transactions.
    pub fn highest_streaming(mut self) -> Self {
        self.config.request.streaming = None;
        self
    }

    /// Column values in binary format (PostgreSQL 14+).
    pub fn binary(mut self, on: bool) -> Self {
        self.config.request.binary = on;
        self
    }

    /// Include `pg_logical_emit_message` messages (PostgreSQL 14+).
    pub fn messages(mut self, on: bool) -> Self {
        self.config.request.messages = on;
        self
    }

    /// Decode prepared transactions at PREPARE (protocol 3+, PostgreSQL 15+).
    pub fn two_phase(mut self, on: bool) -> Self {
        self.config.request.two_phase = on;
        self
    }

    /// Which changes to send by replication origin (PostgreSQL 16+). `OriginFilter::Any` on an
    /// older server is what it does anyway and is accepted.
    pub fn origin(mut self, origin: OriginFilter) -> Self {
        self.config.request.origin = Some(origin);
        self
    }

    /// Start at `lsn` instead of the slot's `confirmed_flush_lsn` (the server never goes back
    /// before the slot's position).
    pub fn start_lsn(mut self, lsn: Lsn) -> Self {
        self.config.start_lsn = Some(lsn);
        self
    }

    /// Bounded replay: end the stream after delivering the transaction whose end crosses
    /// `lsn`, or at a keepalive at or past `lsn` between transactions (like
    /// `pg_recvlogical --endpos`).
    pub fn end_lsn(mut self, lsn: Lsn) -> Self {
        self.config.end_lsn = Some(lsn);
        self
    }

    /// The most time between status updates. The server's `wal_sender_timeout` shortens it to
    /// a third of that timeout; a `reply_requested` keepalive is answered at once regardless.
    pub fn status_interval(mut self, interval: Duration) -> Self {
        self.config.status_interval = interval;
        self
    }

    /// The client side of PostgreSQL's `wal_receiver_timeout`: after this long without a byte
    /// from the server (while the stream is reading), the connection is taken for dead and the
    /// stream reconnects, as when it is closed. Half-way through the silence a status update
    /// asks the server for a reply, so an idle but healthy server answers in time. A network
    /// that drops packets without closing anything is found this way; the socket alone would
    /// wait for TCP's own timeouts (see also the conninfo's `keepalives*` and
    /// `tcp_user_timeout`).
    ///
    /// By default twice the server's `wal_sender_timeout`, at least
    /// [`MIN_DEFAULT_RECEIVE_TIMEOUT`] (and that when the server has no timeout). Zero turns it
    /// off.
    pub fn receive_timeout(mut self, timeout: Duration) -> Self {
        self.config.receive_timeout = Some(timeout);
        self
    }

    /// How connection failures are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }

    /// Create the slot (for `pgoutput`) when it does not exist.
    pub fn create_slot_if_missing(mut self, kind: CreateSlot) -> Self {
        self.config.create_slot = Some(kind);
        self.config.require_existing_slot = false;
        self
    }

    /// A slot the stream creates ([`create_slot_if_missing`](Self::create_slot_if_missing),
    /// permanent) is a failover slot (`FAILOVER`, PostgreSQL 17+; refused on an older server
    /// before anything is sent): with `sync_replication_slots = on` on a standby, the server
    /// keeps a synchronized copy of it there, and a stream that reconnects to that standby
    /// after its promotion resumes without losing a change (see
    /// [`failover_window`](Self::failover_window) and `docs/production.md`). An existing slot
    /// is used as it is (`ALTER_REPLICATION_SLOT` through
    /// [`SlotManager::alter`](crate::SlotManager::alter) changes it).
    pub fn failover(mut self, on: bool) -> Self {
        self.config.failover = on;
        self
    }

    /// How long a stream that lost its connection keeps trying while no server of a
    /// multi-host conninfo (`host=a,b target_session_attrs=read-write`, or `primary`) matches
    /// `target_session_attrs`: during a failover there is a moment when the old primary is
    /// gone and the standby is not yet promoted. Such failures are retried (with the
    /// [`RetryPolicy`]'s delays) for this long from the first of them, then the stream ends
    /// with [`ErrorKind::RetriesExhausted`](crate::ErrorKind::RetriesExhausted). Default
    /// [`DEFAULT_FAILOVER_WINDOW`] (60 s).
    pub fn failover_window(mut self, window: Duration) -> Self {
        self.config.failover_window = window;
        self
    }

    /// Fail at connect, before starting, when the slot does not exist (the default unless
    /// [`create_slot_if_missing`](Self::create_slot_if_missing) is set).
    pub fn require_existing_slot(mut self) -> Self {
        self.config.require_existing_slot = true;
        self.config.create_slot = None;
        self
    }

    /// Raw mode: deliver each XLogData undecoded ([`EventKind::XLogData`](crate::EventKind)),
    /// for a decoder of one's own. Feedback, keepalives, resume and the end LSN still work:
    /// the stream follows transaction boundaries itself.
    pub fn raw(mut self, on: bool) -> Self {
        self.config.raw = on;
        self
    }

    /// How many batches of events may wait for the consumer (at least 1). A batch holds the
    /// messages of at most [`MAX_BATCH_BYTES`](crate::MAX_BATCH_BYTES) of stream (plus the
    /// message that crosses it), so the events waiting for a consumer that does not read
    /// occupy at most about `(n + 2) * (MAX_BATCH_BYTES + largest message)`; past that the
    /// socket is not read and the server waits.
    pub fn buffer_batches(mut self, n: usize) -> Self {
        self.config.buffer_batches = n.max(1);
        self
    }

    /// Read coalescing: while the stream is busy (the reads of the last delay brought a
    /// quarter of a batch or more: a backlog, about 8 MB/s at the default), the TCP socket's
    /// receive low-water mark (`SO_RCVLOWAT`) is raised to half a batch between reads, so the
    /// reader wakes once that much has arrived rather than for every small message, and at the
    /// latest after this delay (default 2 ms; zero reads every message as it comes). A
    /// server-bound consumer spends most of its CPU time waking up, so this is where it saves.
    /// A quiet stream is not coalesced: a lone commit, or a trickle of them, is read the
    /// moment it arrives; a message waits at most this delay, and only on a busy stream.
    /// Status updates and cancellation are not delayed; Unix sockets read at once.
    pub fn read_coalescing(mut self, pause: Duration) -> Self {
        self.config.read_coalescing = pause;
        self
    }

    /// The token that cancels the stream: on cancellation it sends a last status update, ends
    /// the replication cleanly and ends the event stream.
    pub fn cancellation_token(mut self, token: CancellationToken) -> Self {
        self.config.cancel = token;
        self
    }

    /// Deliver the published tables' rows first (the initial snapshot), then stream from the
    /// slot's consistent point: no gap, no duplicate. The slot is created for it (with
    /// [`create_slot_if_missing`](Self::create_slot_if_missing), which this needs) and its
    /// exported snapshot is read on a second, ordinary connection; the rows arrive between
    /// [`EventKind::SnapshotBegin`](crate::EventKind::SnapshotBegin) and
    /// [`EventKind::SnapshotEnd`](crate::EventKind::SnapshotEnd). A failed copy drops the
    /// slot unless [`SnapshotOptions::keep_slot_on_failure`] says otherwise.
    pub fn initial_snapshot(mut self, options: SnapshotOptions) -> Self {
        self.config.snapshot = Some(options);
        self
    }

    /// How often the slot's health (`wal_status`, `safe_wal_size`) is read, on a side
    /// connection of its own, once the stream starts and then periodically (default
    /// [`DEFAULT_SLOT_CHECK_INTERVAL`](crate::DEFAULT_SLOT_CHECK_INTERVAL), 60 s; `None` or
    /// zero: never). When the slot gets worse (its `safe_wal_size` under
    /// [`slot_warning_threshold`](Self::slot_warning_threshold), then `unreserved`) the stream
    /// delivers an [`EventKind::SlotWarning`](crate::EventKind::SlotWarning) and logs a
    /// warning. The check never holds up the stream: it runs in a task of its own, and its
    /// failures are only logged (at debug level).
    pub fn slot_check_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.slot_watch.interval = interval.filter(|i| !i.is_zero());
        self
    }

    /// The `safe_wal_size` in bytes under which the slot counts as in danger (default: a fifth
    /// of the server's `max_slot_wal_keep_size`; with that unlimited, only `unreserved`
    /// warns).
    pub fn slot_warning_threshold(mut self, bytes: u64) -> Self {
        self.config.slot_watch.threshold = Some(bytes);
        self
    }

    /// What to do when the slot is found invalidated. By default nothing: the stream ends at
    /// once with [`ErrorKind::SlotInvalidated`](crate::ErrorKind::SlotInvalidated), naming
    /// the slot and the reason. With a [`SlotRecovery`] it drops the slot, creates it again
    /// and takes a new initial snapshot, announced by
    /// [`EventKind::Resnapshot`](crate::EventKind::Resnapshot), at most the policy's number
    /// of times an hour.
    pub fn slot_recovery(mut self, policy: SlotRecovery) -> Self {
        self.config.slot_watch.recovery = Some(policy);
        self
    }

    /// Checks what can be checked without a server and returns the configuration.
    pub fn build(self) -> Result<ReplicationStreamConfig> {
        let c = &self.config;
        if c.slot.is_empty() {
            return Err(Error::config("the slot name is empty"));
        }
        if c.publications.is_empty() || c.publications.iter().any(String::is_empty) {
            return Err(Error::config(
                "at least one (non-empty) publication is needed",
            ));
        }
        c.request
            .check()
            .map_err(|r| Error::config(r.to_string()))?;
        if c.snapshot.is_some() && c.create_slot.is_none() {
            return Err(Error::config(
                "an initial snapshot needs the slot created by the stream (create_slot_if_missing)",
            ));
        }
        if c.failover && c.create_slot != Some(CreateSlot::Permanent) {
            return Err(Error::config(
                "failover applies to a slot the stream creates, and that must be permanent: \
                 create_slot_if_missing(CreateSlot::Permanent)",
            ));
        }
        if c.status_interval.is_zero() {
            return Err(Error::config("the status interval must not be zero"));
        }
        Ok(self.config)
    }
}

/// What was agreed with the server: the options the stream runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The server's `server_version_num`, such as `170002`.
    pub server_version_num: u32,
    /// The pgoutput options, in the types a [`ReplicationStreamConfigBuilder`] takes.
    pub pgoutput: Options,
}

impl Negotiated {
    /// The options of `START_REPLICATION` for these settings and `publications`.
    pub fn start_options(&self, publications: &[String]) -> LogicalReplicationOptions {
        LogicalReplicationOptions {
            publication_names: publications.to_vec(),
            pgoutput: self.pgoutput,
        }
    }
}

/// Decides the options for a server of `version_num` (`server_version` for messages) with
/// walproto's rule table ([`Request::negotiate`]): the highest the server supports where the
/// configuration leaves the choice, and an [`ErrorKind::Unsupported`](crate::ErrorKind)
/// error naming the release needed for anything requested that it cannot do.
pub(crate) fn negotiate(
    config: &ReplicationStreamConfig,
    version_num: u32,
    server_version: &str,
) -> Result<Negotiated> {
    let pgoutput = config.request.negotiate(version_num).map_err(|r| match r {
        Refusal::NeedsRelease { what, release } => {
            Error::unsupported(what, &format!("PostgreSQL {release}"), server_version)
        }
        _ => Error::config(r.to_string()),
    })?;
    tracing::info!(
        server_version,
        proto_version = pgoutput.proto_version.number(),
        streaming = pgoutput.streaming.as_str(),
        chosen_by = if config.request.proto_version.is_none() {
            "the server's highest"
        } else {
            "the configuration"
        },
        "negotiated pgoutput options"
    );
    Ok(Negotiated {
        server_version_num: version_num,
        pgoutput,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn cfg() -> ReplicationStreamConfigBuilder {
        ReplicationStreamConfig::builder("s", ["p"])
    }

    #[test]
    fn defaults_take_the_highest_protocol_with_streaming_off() -> Result<()> {
        let c = cfg().build()?;
        for (num, proto) in [(180_001, 4), (150_010, 3), (140_000, 2), (130_000, 1)] {
            let n = negotiate(&c, num, "x")?;
            assert_eq!(n.pgoutput.proto_version.number(), proto, "{num}");
            assert_eq!(n.pgoutput.streaming, Streaming::Off, "{num}");
        }
        Ok(())
    }

    #[test]
    fn highest_streaming_takes_the_most_the_server_has() -> Result<()> {
        let c = cfg().highest_streaming().build()?;
        for (num, proto, streaming) in [
            (180_001, 4, Streaming::Parallel),
            (160_003, 4, Streaming::Parallel),
            (150_010, 3, Streaming::On),
            (140_000, 2, Streaming::On),
            (130_000, 1, Streaming::Off),
        ] {
            let n = negotiate(&c, num, "x")?;
            assert_eq!(n.pgoutput.proto_version.number(), proto, "{num}");
            assert_eq!(n.pgoutput.streaming, streaming, "{num}");
        }
        Ok(())
    }

    #[test]
    fn refusals_name_the_version_needed() -> Result<()> {
        let cases = [
            (
                cfg().proto_version(ProtocolVersion::V4).build()?,
                "PostgreSQL 16",
            ),
            (
                cfg().streaming(Streaming::Parallel).build()?,
                "PostgreSQL 16",
            ),
            (cfg().origin(OriginFilter::None).build()?, "PostgreSQL 16"),
        ];
        for (c, needs) in cases {
            let e = negotiate(&c, 150_004, "15.4").err();
            let e = e.ok_or_else(|| Error::config("accepted"))?;
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert!(e.to_string().contains(needs), "{e}");
            assert!(e.to_string().contains("15.4"), "{e}");
        }
        let e = negotiate(&cfg().two_phase(true).build()?, 140_000, "14.0").err();
        assert!(e.is_some_and(|e| e.to_string().contains("PostgreSQL 15")));
        // `any` is what an older server does anyway.
        let n = negotiate(&cfg().origin(OriginFilter::Any).build()?, 150_000, "15")?;
        assert_eq!(n.pgoutput.origin, None);
        Ok(())
    }

    #[test]
    fn builder_rejects_contradictions() {
        // A protocol 5 cannot be asked for: the type has 1 to 4 only.
        assert!(ProtocolVersion::from_number(5).is_none());
        assert!(cfg()
            .proto_version(ProtocolVersion::V3)
            .streaming(Streaming::Parallel)
            .build()
            .is_err());
        assert!(cfg()
            .proto_version(ProtocolVersion::V2)
            .two_phase(true)
            .build()
            .is_err());
        assert!(ReplicationStreamConfig::builder("", ["p"]).build().is_err());
        assert!(ReplicationStreamConfig::builder("s", Vec::<String>::new())
            .build()
            .is_err());
        // A failover slot is one the stream creates, permanent.
        assert!(cfg().failover(true).build().is_err());
        assert!(cfg()
            .create_slot_if_missing(CreateSlot::Temporary)
            .failover(true)
            .build()
            .is_err());
        assert!(cfg()
            .create_slot_if_missing(CreateSlot::Permanent)
            .failover(true)
            .build()
            .is_ok());
    }

    #[test]
    fn options_follow_the_negotiation() -> Result<()> {
        let c = cfg().streaming(Streaming::Off).build()?;
        let n = negotiate(&c, 170_000, "17")?;
        let o = n.start_options(&c.publications);
        assert_eq!(o.pgoutput.proto_version, ProtocolVersion::V4);
        assert_eq!(o.pgoutput.streaming, Streaming::Off);
        let n = negotiate(
            &cfg().proto_version(ProtocolVersion::V1).build()?,
            170_000,
            "17",
        )?;
        assert_eq!(
            n.start_options(&["p".into()]).pgoutput.streaming,
            Streaming::Off
        );
        Ok(())
    }
}

//! The stream's configuration, its builder, and protocol negotiation against a server.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use walconn::{LogicalReplicationOptions, Origin, Streaming};
use walproto::pgoutput::{ProtocolVersion, Streaming as PgStreaming};
use walproto::Lsn;

use crate::error::{Error, Result};
use crate::session::retry::RetryPolicy;
use crate::snapshot::SnapshotOptions;

/// How often a status update goes out when the server does not ask sooner (the
/// `pg_recvlogical` default). It is shortened to a third of the server's
/// `wal_sender_timeout` when that is smaller.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// How many batches of events the driver may hold for a consumer that is not reading; see
/// [`ReplicationStreamConfigBuilder::buffer_batches`] for the memory bound this gives.
pub const DEFAULT_BUFFER_BATCHES: usize = 4;

/// How long the socket is left alone after a small read; see
/// [`ReplicationStreamConfigBuilder::read_coalescing`].
pub const DEFAULT_READ_COALESCING: Duration = Duration::from_millis(2);

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
#[derive(Clone, Debug)]
pub struct ReplicationStreamConfig {
    pub(crate) slot: String,
    pub(crate) publications: Vec<String>,
    pub(crate) proto_version: Option<u32>,
    pub(crate) streaming: Option<Streaming>,
    pub(crate) binary: bool,
    pub(crate) messages: bool,
    pub(crate) two_phase: bool,
    pub(crate) origin: Option<Origin>,
    pub(crate) start_lsn: Option<Lsn>,
    pub(crate) end_lsn: Option<Lsn>,
    pub(crate) status_interval: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) create_slot: Option<CreateSlot>,
    pub(crate) require_existing_slot: bool,
    pub(crate) raw: bool,
    pub(crate) buffer_batches: usize,
    pub(crate) read_coalescing: Duration,
    pub(crate) cancel: CancellationToken,
    pub(crate) snapshot: Option<SnapshotOptions>,
}

impl ReplicationStreamConfig {
    /// A builder for a stream of `slot` over `publications`, with the defaults: the highest
    /// protocol version and streaming mode the server supports, text values, no logical
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
                proto_version: None,
                streaming: None,
                binary: false,
                messages: false,
                two_phase: false,
                origin: None,
                start_lsn: None,
                end_lsn: None,
                status_interval: DEFAULT_STATUS_INTERVAL,
                retry: RetryPolicy::default(),
                create_slot: None,
                require_existing_slot: true,
                raw: false,
                buffer_batches: DEFAULT_BUFFER_BATCHES,
                read_coalescing: DEFAULT_READ_COALESCING,
                cancel: CancellationToken::new(),
                snapshot: None,
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
}

/// Builds a [`ReplicationStreamConfig`]; see [`ReplicationStreamConfig::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct ReplicationStreamConfigBuilder {
    config: ReplicationStreamConfig,
}

impl ReplicationStreamConfigBuilder {
    /// The pgoutput protocol version (1-4). By default the highest the server supports: 4 on
    /// PostgreSQL 16+, 3 on 15, 2 on 14, 1 before.
    pub fn proto_version(mut self, version: u32) -> Self {
        self.config.proto_version = Some(version);
        self
    }

    /// Whether in-progress transactions are streamed (protocol 2+). By default the most the
    /// negotiated protocol allows: `parallel` with protocol 4, `on` with 2 and 3. With
    /// [`Streaming::Off`] only whole committed transactions arrive.
    pub fn streaming(mut self, streaming: Streaming) -> Self {
        self.config.streaming = Some(streaming);
        self
    }

    /// Column values in binary format (PostgreSQL 14+).
    pub fn binary(mut self, on: bool) -> Self {
        self.config.binary = on;
        self
    }

    /// Include `pg_logical_emit_message` messages (PostgreSQL 14+).
    pub fn messages(mut self, on: bool) -> Self {
        self.config.messages = on;
        self
    }

    /// Decode prepared transactions at PREPARE (protocol 3+, PostgreSQL 15+).
    pub fn two_phase(mut self, on: bool) -> Self {
        self.config.two_phase = on;
        self
    }

    /// Which changes to send by replication origin (PostgreSQL 16+). `Origin::Any` on an older
    /// server is what it does anyway and is accepted.
    pub fn origin(mut self, origin: Origin) -> Self {
        self.config.origin = Some(origin);
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

    /// Read coalescing: between reads, the TCP socket's receive low-water mark
    /// (`SO_RCVLOWAT`) is raised to half a batch, so the reader wakes once that much has
    /// arrived rather than for every small message, and at the latest after this delay
    /// (default 2 ms; zero reads every message as it comes). A server-bound consumer spends
    /// most of its CPU time waking up, so this is where it saves; a message waits at most this
    /// long. Status updates and cancellation are not delayed; Unix sockets read at once.
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
        if let Some(v) = c.proto_version {
            if ProtocolVersion::from_number(v).is_none() {
                return Err(Error::config(format!(
                    "pgoutput protocol version {v} does not exist (1-4)"
                )));
            }
            if v < 2 && matches!(c.streaming, Some(Streaming::On | Streaming::Parallel)) {
                return Err(Error::config(
                    "streaming needs pgoutput protocol 2 or later",
                ));
            }
            if v < 4 && c.streaming == Some(Streaming::Parallel) {
                return Err(Error::config(
                    "streaming = parallel needs pgoutput protocol 4",
                ));
            }
            if v < 3 && c.two_phase {
                return Err(Error::config(
                    "two_phase needs pgoutput protocol 3 or later",
                ));
            }
        }
        if c.snapshot.is_some() && c.create_slot.is_none() {
            return Err(Error::config(
                "an initial snapshot needs the slot created by the stream (create_slot_if_missing)",
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
    /// The pgoutput protocol version.
    pub proto_version: ProtocolVersion,
    /// The streaming mode.
    pub streaming: PgStreaming,
    /// Binary column values.
    pub binary: bool,
    /// Logical decoding messages.
    pub messages: bool,
    /// Two-phase decoding.
    pub two_phase: bool,
    /// The origin filter sent, if any.
    pub origin: Option<Origin>,
}

impl Negotiated {
    /// The options of `START_REPLICATION` for these settings and `publications`.
    pub fn options(&self, publications: &[String]) -> LogicalReplicationOptions {
        let mut o = LogicalReplicationOptions::new(u32::from(self.proto_version.number()), &[]);
        o.publication_names = publications.to_vec();
        o.streaming = match self.streaming {
            PgStreaming::Off if self.proto_version.number() < 2 => None,
            PgStreaming::Off => Some(Streaming::Off),
            PgStreaming::On => Some(Streaming::On),
            PgStreaming::Parallel => Some(Streaming::Parallel),
        };
        o.binary = self.binary;
        o.messages = self.messages;
        o.two_phase = self.two_phase;
        o.origin = self.origin;
        o
    }
}

/// The highest pgoutput protocol a server of `version_num` speaks.
pub fn max_protocol(version_num: u32) -> ProtocolVersion {
    match version_num {
        v if v >= 160_000 => ProtocolVersion::V4,
        v if v >= 150_000 => ProtocolVersion::V3,
        v if v >= 140_000 => ProtocolVersion::V2,
        _ => ProtocolVersion::V1,
    }
}

/// The PostgreSQL release that introduced protocol `version`.
fn protocol_release(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V1 => "PostgreSQL 10",
        ProtocolVersion::V2 => "PostgreSQL 14",
        ProtocolVersion::V3 => "PostgreSQL 15",
        _ => "PostgreSQL 16",
    }
}

/// Decides the options for a server of `version_num` (`server_version` for messages): the
/// highest it supports where the configuration leaves the choice, and an
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) error naming the needed version
/// for anything requested that it cannot do.
pub fn negotiate(
    config: &ReplicationStreamConfig,
    version_num: u32,
    server_version: &str,
) -> Result<Negotiated> {
    let max = max_protocol(version_num);
    let proto = match config.proto_version {
        None => max,
        Some(n) => {
            let v = ProtocolVersion::from_number(n)
                .ok_or_else(|| Error::config(format!("no pgoutput protocol {n}")))?;
            if v > max {
                return Err(Error::unsupported(
                    &format!("pgoutput protocol {n}"),
                    protocol_release(v),
                    server_version,
                ));
            }
            v
        }
    };
    let p = proto.number();
    let streaming = match config.streaming {
        None if p >= 4 => PgStreaming::Parallel,
        None if p >= 2 => PgStreaming::On,
        None | Some(Streaming::Off) => PgStreaming::Off,
        Some(Streaming::On) if p >= 2 => PgStreaming::On,
        Some(Streaming::Parallel) if p >= 4 => PgStreaming::Parallel,
        Some(Streaming::On) => {
            return Err(Error::unsupported(
                "streaming = on (pgoutput protocol 2)",
                "PostgreSQL 14",
                server_version,
            ))
        }
        Some(_) => {
            return Err(Error::unsupported(
                "streaming = parallel (pgoutput protocol 4)",
                "PostgreSQL 16",
                server_version,
            ))
        }
    };
    let needs = |on: bool, min: u32, what: &str, release: &str| -> Result<()> {
        if on && version_num < min {
            Err(Error::unsupported(what, release, server_version))
        } else {
            Ok(())
        }
    };
    needs(config.binary, 140_000, "binary", "PostgreSQL 14")?;
    needs(config.messages, 140_000, "messages", "PostgreSQL 14")?;
    needs(
        config.two_phase,
        150_000,
        "two_phase (pgoutput protocol 3)",
        "PostgreSQL 15",
    )?;
    if config.two_phase && p < 3 {
        return Err(Error::config(
            "two_phase needs pgoutput protocol 3 or later",
        ));
    }
    let origin = match config.origin {
        Some(Origin::Any) if version_num < 160_000 => None,
        Some(o) => {
            needs(true, 160_000, "the origin option", "PostgreSQL 16")?;
            Some(o)
        }
        None => None,
    };
    let negotiated = Negotiated {
        server_version_num: version_num,
        proto_version: proto,
        streaming,
        binary: config.binary,
        messages: config.messages,
        two_phase: config.two_phase,
        origin,
    };
    tracing::info!(
        server_version,
        proto_version = p,
        streaming = ?streaming,
        chosen_by = if config.proto_version.is_none() { "the server's highest" } else { "the configuration" },
        "negotiated pgoutput options"
    );
    Ok(negotiated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn cfg() -> ReplicationStreamConfigBuilder {
        ReplicationStreamConfig::builder("s", ["p"])
    }

    #[test]
    fn defaults_take_the_highest_the_server_has() -> Result<()> {
        let c = cfg().build()?;
        for (num, proto, streaming) in [
            (180_001, 4, PgStreaming::Parallel),
            (160_003, 4, PgStreaming::Parallel),
            (150_010, 3, PgStreaming::On),
            (140_000, 2, PgStreaming::On),
            (130_000, 1, PgStreaming::Off),
        ] {
            let n = negotiate(&c, num, "x")?;
            assert_eq!(n.proto_version.number(), proto, "{num}");
            assert_eq!(n.streaming, streaming, "{num}");
        }
        Ok(())
    }

    #[test]
    fn refusals_name_the_version_needed() -> Result<()> {
        let cases = [
            (cfg().proto_version(4).build()?, "PostgreSQL 16"),
            (
                cfg().streaming(Streaming::Parallel).build()?,
                "PostgreSQL 16",
            ),
            (cfg().origin(Origin::None).build()?, "PostgreSQL 16"),
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
        let n = negotiate(&cfg().origin(Origin::Any).build()?, 150_000, "15")?;
        assert_eq!(n.origin, None);
        Ok(())
    }

    #[test]
    fn builder_rejects_contradictions() {
        assert!(cfg().proto_version(5).build().is_err());
        assert!(cfg()
            .proto_version(3)
            .streaming(Streaming::Parallel)
            .build()
            .is_err());
        assert!(cfg().proto_version(2).two_phase(true).build().is_err());
        assert!(ReplicationStreamConfig::builder("", ["p"]).build().is_err());
        assert!(ReplicationStreamConfig::builder("s", Vec::<String>::new())
            .build()
            .is_err());
    }

    #[test]
    fn options_follow_the_negotiation() -> Result<()> {
        let c = cfg().streaming(Streaming::Off).build()?;
        let n = negotiate(&c, 170_000, "17")?;
        let o = n.options(&c.publications);
        assert_eq!(o.proto_version, 4);
        assert_eq!(o.streaming, Some(Streaming::Off));
        let n = negotiate(&cfg().proto_version(1).build()?, 170_000, "17")?;
        assert_eq!(n.options(&["p".into()]).streaming, None);
        Ok(())
    }
}

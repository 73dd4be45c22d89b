//! A high-level async PostgreSQL logical replication change stream: negotiation, LSN
//! feedback that never acknowledges more than the application did, reconnect and resume,
//! cancellation, backpressure, and owned events.
//!
//! The call sequence:
//!
//! 1. [`ReplicationStreamConfig::builder`]: the slot, the publications, and what to change
//!    from the defaults (the highest protocol the server has, streaming off).
//! 2. [`LogicalReplicationStream::connect`]: connects (pure Rust, no libpq), negotiates the
//!    options against `server_version_num` (refusing what the server cannot do, naming the
//!    version needed), and checks or creates the slot.
//! 3. [`LogicalReplicationStream::start`]: spawns the driver task and returns an
//!    [`EventStream`], a `futures::Stream` of [`ChangeEvent`]s (or use
//!    [`EventStream::next_event`]).
//! 4. Acknowledge each transaction once it is durably applied, with [`EventStream::ack`] or a
//!    clone of [`EventStream::feedback`] from any task. The slot never moves past it.
//! 5. [`EventStream::shutdown`]: a last status update, a clean end of the replication.
//!
//! ```no_run
//! use walstream::{EventKind, LogicalReplicationStream, ReplicationStreamConfig};
//!
//! # async fn run() -> walstream::Result<()> {
//! let config = ReplicationStreamConfig::builder("app_slot", ["app_pub"]).build()?;
//! let mut events = LogicalReplicationStream::connect("postgresql://repl@db/app", config)
//!     .await?
//!     .start();
//! while let Some(event) = events.next_event().await? {
//!     match &event.kind {
//!         EventKind::Insert(i) => println!("insert into {}: {:?}", i.relation.name, i.new),
//!         EventKind::Reconnected { resume_lsn, .. } => {
//!             println!("resumed at {resume_lsn}: drop any half-seen transaction");
//!         }
//!         _ => {}
//!     }
//!     if let Some(lsn) = event.ack_lsn() {
//!         events.ack(lsn);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - **Feedback never lies.** The flush position sent to the server is what the application
//!   acknowledged, or, between transactions with everything acknowledged, a keepalive's
//!   `wal_end` (so an idle publication does not pin WAL). Status updates go out every
//!   interval (at most a third of `wal_sender_timeout`) and at once when the server asks,
//!   from the driver task, however slowly the application reads (as long as it does not
//!   hold the runtime's thread: see **Runtime**).
//! - **Resume never loses.** Retryable failures reconnect with backoff and jitter
//!   ([`RetryPolicy`]) and resume from the acknowledged position; what follows an
//!   [`EventKind::Reconnected`] may repeat transactions (deduplicate by commit LSN), never
//!   skip one. Another cluster or timeline after a reconnect, a missing slot, or failed
//!   authentication end the stream with an error.
//! - **A lost slot is said, not retried.** A slot the server invalidated (its WAL past
//!   `max_slot_wal_keep_size`, a conflict on a standby, an idle timeout) ends the stream at
//!   once with [`ErrorKind::SlotInvalidated`] and the [`InvalidationReason`]; a side
//!   connection reads the slot's `safe_wal_size` and warns first
//!   ([`EventKind::SlotWarning`]); with a [`SlotRecovery`] the stream re-creates the slot and
//!   takes a new snapshot ([`EventKind::Resnapshot`]). See `docs/production.md`.
//! - **Runtime.** The driver is a tokio task; for one stream a current-thread runtime is the
//!   cheapest (the drain benchmark measured the multi-thread runtime at up to twice the CPU
//!   time, the driver and the consumer waking each other across threads). There the driver
//!   runs only while the consumer awaits, so **a consumer must not block the runtime's
//!   thread** for anywhere near `wal_sender_timeout` (60 s by default): no blocking I/O, no
//!   `std::thread::sleep`, no long computation between two awaits. The server would end the
//!   connection for want of status updates (the stream then reconnects and sends the
//!   unacknowledged transactions again). Do blocking work with
//!   `tokio::task::spawn_blocking(..).await` (or on a thread of your own, through a channel);
//!   a multi-thread runtime makes such a stall less likely but does not rule it out. The
//!   library does no file I/O on the runtime's thread: spill files are written by a spill
//!   thread, and [`Transaction::change_stream`] reads them back on a thread of its own and
//!   yields every few hundred changes ([`Transaction::changes`] is the blocking
//!   alternative, for code off the runtime).
//! - **Memory is bounded.** The driver stops reading the socket while
//!   [`buffer_batches`](ReplicationStreamConfigBuilder::buffer_batches) batches of at most
//!   [`MAX_BATCH_BYTES`] wait for the consumer. [`TransactionStream`] holds the changes of
//!   unfinished transactions within [`TransactionConfig::memory_budget`] and spills the rest
//!   to disk, within [`TransactionConfig::spill_disk_budget`], in files nobody else can read
//!   and nothing can leave behind ([`TransactionConfig::spill_dir`]).

// docs.rs (`--cfg docsrs`, nightly): label feature-gated items with the feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]

// The crate README's examples are compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct CrateReadmeDoctests;

/// Events, streams and handles move between tasks and threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<ChangeEvent>();
    send_sync::<Error>();
    send_sync::<SharedLsnFeedback>();
    send::<Transaction>();
    send::<EventStream>();
    send::<TransactionStream>();
    send::<LogicalReplicationStream>();
};

/// The workspace README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

pub mod backup;
mod decode;
mod error;
#[cfg(feature = "serde")]
pub mod json;
mod logical;
pub mod physical;
mod session;
mod slots;
mod snapshot;
mod transaction;
#[cfg(feature = "typed")]
pub mod value;

#[doc(hidden)]
pub mod fuzzing;

pub use decode::EventDecoder;
pub use error::{Error, ErrorKind, Result};
pub use logical::config::{
    CreateSlot, Negotiated, ReplicationStreamConfig, ReplicationStreamConfigBuilder,
    DEFAULT_BUFFER_BATCHES, DEFAULT_FAILOVER_WINDOW, DEFAULT_READ_COALESCING,
    DEFAULT_STATUS_INTERVAL, MIN_DEFAULT_RECEIVE_TIMEOUT,
};
pub use logical::event::{
    ChangeEvent, CommitPrepared, Delete, EventKind, Insert, LogicalMessage, OldRow, PrepareInfo,
    RawXLogData, RollbackPrepared, Row, Truncate, Update,
};
pub use logical::stream::{EventStream, LogicalReplicationStream, StatsHandle, StreamStats};
pub use session::driver::MAX_BATCH_BYTES;
pub use session::feedback::{FeedbackPositions, FeedbackTracker, SharedLsnFeedback};
#[cfg(feature = "metrics")]
pub use session::metrics::{publish as publish_metrics, PUBLISH_INTERVAL};
pub use session::metrics::{EventCounts, StreamCounters, EVENT_KINDS};
pub use session::open::FailoverRefusal;
pub use session::retry::RetryPolicy;
pub use session::slot_watch::{
    InvalidationReason, SlotHealth, SlotRecovery, SlotStatus, WalStatus,
    DEFAULT_SLOT_CHECK_INTERVAL,
};
pub use slots::{SlotInfo, SlotManager};
pub use snapshot::SnapshotOptions;
pub use transaction::{
    Change, ChangeKind, ChangeStream, Changes, Transaction, TransactionAssembler,
    TransactionConfig, TransactionItem, TransactionKind, TransactionStream, DEFAULT_MEMORY_BUDGET,
    DEFAULT_SPILL_DISK_BUDGET,
};

pub use tokio_util::sync::CancellationToken;
pub use walconn;
pub use walproto::pgoutput::{OriginFilter, ProtocolVersion, Streaming};
pub use walproto::{self, owned::ColumnValue, ColumnInfo, Lsn, RelationInfo, Timestamp, Xid};

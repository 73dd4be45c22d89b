//! A pure-Rust PostgreSQL replication connection: conninfo, TLS, authentication, replication
//! commands and the CopyBoth duplex of raw CopyData frames, on tokio, without libpq.
//!
//! The call sequence:
//!
//! 1. [`Config::parse`] a libpq conninfo (URL or key=value; `PG*` variables fill the gaps),
//!    or build one in code with [`Config::builder`]; a [`PasswordProvider`] supplies
//!    credentials that expire, asked at every connection.
//! 2. [`Connection::connect`]: hosts in order, TLS per `sslmode`, trust/password/MD5/SCRAM
//!    (with channel binding over TLS), a `replication=database` session by default.
//! 3. Replication commands with typed results ([`Connection::identify_system`],
//!    [`Connection::create_replication_slot`], ...) and plain SQL
//!    ([`Connection::simple_query`]).
//! 4. [`Connection::start_logical_replication`] turns the connection into a [`CopyBoth`]:
//!    [`CopyBoth::recv`] yields CopyData payloads as `Bytes` (parse them with
//!    [`walproto::replication::ServerMessage::parse`]), [`CopyBoth::send_status_update`]
//!    acknowledges, [`CopyBoth::finish`] ends the stream and gives the connection back.
//!
//! ```no_run
//! use walconn::{Config, Connection, CreateSlotOptions, LogicalReplicationOptions};
//! use walproto::pgoutput::ProtocolVersion;
//! use walproto::replication::{ServerMessage, StandbyStatusUpdate};
//!
//! # async fn run() -> Result<(), walconn::Error> {
//! let config = Config::parse("postgresql://repl@db.example/app?sslmode=verify-full")?;
//! let mut conn = Connection::connect(&config).await?;
//! let slot = conn
//!     .create_replication_slot("app_slot", &CreateSlotOptions::logical("pgoutput"))
//!     .await?;
//! let options = LogicalReplicationOptions::new(ProtocolVersion::V1, &["app_pub"]);
//! let mut stream = conn
//!     .start_logical_replication("app_slot", slot.consistent_point, &options)
//!     .await?;
//! while let Some(frame) = stream.recv().await? {
//!     if let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(&frame) {
//!         // ... apply x.data, then acknowledge it:
//!         let update = StandbyStatusUpdate {
//!             write: x.wal_end,
//!             flush: x.wal_end,
//!             apply: x.wal_end,
//!             client_time: std::time::SystemTime::now().into(),
//!             reply_requested: false,
//!         };
//!         stream.send_status_update(&update).await?;
//!         break;
//!     }
//! }
//! let conn = stream.finish().await?;
//! conn.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Cancel safety
//!
//! What happens when a future of this crate is dropped before it completes (a `timeout`
//! around it, the losing branch of a `select!`):
//!
//! - **Cancel-safe, use the object on:** [`CopyBoth::recv`], [`CopyOut::next`] and
//!   [`BaseBackup::next`]. Frames are taken from the read buffer only when whole, and a
//!   server error already read is kept, so a dropped call loses nothing and the next call
//!   returns what it would have. `recv` is meant to be a `select!` branch.
//! - **Poisoning:** every other `&mut self` method ([`Connection::simple_query`],
//!   [`identify_system`](Connection::identify_system), [`show`](Connection::show), the slot
//!   commands, [`timeline_history`](Connection::timeline_history),
//!   [`copy_out`](Connection::copy_out), [`base_backup`](Connection::base_backup),
//!   [`upload_manifest`](Connection::upload_manifest), [`CopyBoth::send`],
//!   [`CopyBoth::send_status_update`] and [`CopyBoth::send_hot_standby_feedback`]) may be
//!   dropped after writing part of a command or before reading all of its answer, which
//!   leaves the connection out of step with the server. Such a method marks the connection
//!   when it starts and clears the mark when it returns; a dropped future leaves it set, and
//!   every later call on the object (on the [`CopyBoth`], `recv`, `end` and `finish`
//!   included) then fails at once with [`ErrorKind::Poisoned`] ([`Error::is_poisoned`])
//!   without touching the socket: discard the connection and open a new one. A [`CopyOut`]
//!   or [`BaseBackup`] dropped before its end poisons the same way.
//!   [`Connection::is_poisoned`] tells beforehand. A dropped command may still have run on
//!   the server (a slot created or dropped); a temporary slot goes with the connection.
//! - **Consuming methods:** [`Connection::start_logical_replication`],
//!   [`start_physical_replication`](Connection::start_physical_replication),
//!   [`CopyBoth::end`], [`CopyBoth::finish`] and [`Connection::close`] take the object by
//!   value: dropping the future drops the connection and closes its socket (the server sees
//!   a lost client).
//! - **Own sockets:** [`Connection::connect`] and [`CancelToken::cancel`] open sockets of
//!   their own; dropping them closes those and affects nothing else.

// docs.rs (`--cfg docsrs`, nightly): label feature-gated items with the feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]

// The README's examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod base_backup;
mod commands;
mod config;
mod conn;
mod copy_both;
mod copy_in;
mod copy_out;
mod error;
mod lowat;
mod pgpass;
mod stream;
#[cfg(feature = "tls")]
mod tls;
// Without the `tls` feature: the same functions, plaintext only (`sslmode` disable, allow,
// prefer), and `ErrorKind::TlsUnavailable` for what needs TLS.
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
mod tls;

#[doc(hidden)]
pub mod fuzzing;

pub use base_backup::{
    BackupPosition, BackupTarget, BaseBackup, BaseBackupOptions, Checkpoint, Manifest, Tablespace,
};
pub use commands::{
    quote_ident, quote_literal, CreateSlotOptions, CreatedSlot, QueryResult, SlotInfo,
    SnapshotAction, SystemInfo, TimelineHistoryFile,
};
pub use config::{
    BoxError, ChannelBinding, ClientEncoding, Config, ConfigBuilder, Host, PasswordFuture,
    PasswordProvider, PasswordProviderError, PasswordRequest, Replication, SslMode, SslNegotiation,
    SslRootCert, TargetSessionAttrs, DEFAULT_PORT,
};
pub use conn::{Connection, Phase, MAX_MESSAGE_LEN, MAX_STARTUP_MESSAGE_LEN};
pub use copy_both::{CancelToken, CopyBoth, Ended, LogicalReplicationOptions, NextTimeline};
pub use copy_out::{CopyChunk, CopyOut};
pub use error::{DbError, Error, ErrorKind, MessageTooLong, Result};
pub use walproto;

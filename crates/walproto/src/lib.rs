//! Sans-IO, `no_std`, zero-copy parsing and encoding of PostgreSQL replication: logical streams,
//! and the physical side's base-backup stream and timeline histories.
//!
//! `walproto` turns bytes into values and back, and nothing else: no sockets, no clock, no
//! allocation per message. It covers:
//!
//! - the CopyData messages of `START_REPLICATION` ([`replication`]): XLogData and primary
//!   keepalives from the server, standby status updates and hot standby feedback from the
//!   client;
//! - every message of the `pgoutput` plugin, protocol versions 1 to 4 ([`pgoutput`]), parsed
//!   under an explicit [`pgoutput::ParseContext`];
//! - a [`Decoder`] that follows a whole stream: streamed blocks, transaction boundaries, the
//!   relation cache, and each row checked against its relation;
//! - the CopyData messages of `BASE_BACKUP`'s archive stream, PostgreSQL 15+ ([`backup`]):
//!   new archive, manifest, archive or manifest data, progress;
//! - timeline history files as `TIMELINE_HISTORY` returns them ([`timeline`]);
//! - the `WALCAP1` capture file framing ([`capture`]);
//! - the JSON lines of the `walstream` CLI's contract (`json`, feature `json`);
//! - owned forms backed by [`bytes::Bytes`] for values that cross tasks ([`owned`]).
//!
//! Every parse borrows from its input, checks each length and count against the bytes left
//! before using it, rejects trailing bytes, and reports failures as a small `Copy` [`Error`]
//! with the message tag and byte offset. No input makes it panic.
//!
//! ```
//! use walproto::replication::ServerMessage;
//! use walproto::{Decoder, pgoutput::{Message, ProtocolVersion, Streaming}};
//!
//! let mut decoder = Decoder::new(ProtocolVersion::V1, Streaming::Off);
//! // One CopyData payload as the server sends it: XLogData carrying a pgoutput Begin.
//! let copy_data = b"w\0\0\0\0\x01\x6B\x37\x48\0\0\0\0\x01\x6B\x37\x48\0\0\0\0\0\0\0\0\
//!                   B\0\0\0\0\x01\x6B\x37\x48\0\0\0\0\0\0\0\0\0\0\x02\xE4";
//! if let ServerMessage::XLogData(x) = ServerMessage::parse(copy_data)? {
//!     let decoded = decoder.decode(x.data)?;
//!     assert!(matches!(decoded.message, Message::Begin(b) if b.xid.0 == 740));
//!     assert_eq!(x.wal_start.to_string(), "0/16B3748");
//! }
//! # Ok::<(), walproto::Error>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod backup;
pub mod capture;
mod decoder;
mod error;
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub mod json;
pub mod owned;
pub mod pgoutput;
mod reader;
pub mod replication;
pub mod timeline;
mod types;

#[doc(hidden)]
pub mod fuzzing;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use decoder::{
    ColumnInfo, Decoded, Decoder, RelationInfo, TypeInfo, DEFAULT_MAX_RELATIONS, DEFAULT_MAX_TYPES,
};
pub use error::{Error, ErrorKind};
pub use types::{Lsn, Oid, ParseLsnError, ParseTimestampError, Timestamp, Xid};

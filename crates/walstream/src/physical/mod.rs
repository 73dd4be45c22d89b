//! Physical replication: a WAL stream from a physical slot or a position, with status updates,
//! resume and timeline following, and the WAL segment files `pg_receivewal` writes.
//!
//! - [`PhysicalStreamConfig::builder`], then [`PhysicalReplicationStream::connect`] and
//!   [`start`](PhysicalReplicationStream::start): a [`WalStream`] of [`WalEvent`]s (WAL,
//!   timeline switches, reconnects, the end position), with status updates that never report
//!   more than the application acknowledged, reconnects that resume from there (the same
//!   cluster, a timeline that continues the stream's), and historic timelines followed to the
//!   server's current one.
//! - [`WalWriter`] writes WAL into a directory as `pg_receivewal` does (segment files named
//!   as the server names them, the one in progress `.partial`, history files), and says where
//!   to resume ([`WalWriter::resume_position`]). It does blocking file I/O: run it on a
//!   blocking thread.
//! - [`WalSegmentSize`] is the cluster's segment size (`SHOW wal_segment_size`) and the file
//!   names it implies.
//!
//! See [`PhysicalReplicationStream`] for an archiver in a few lines.

mod config;
mod driver;
mod event;
mod segment;
mod stream;
mod writer;

pub use config::{
    PhysicalStreamConfig, PhysicalStreamConfigBuilder, DEFAULT_BUFFER_BYTES, MAX_WAL_MESSAGE,
};
pub use event::{WalData, WalEvent};
pub use segment::WalSegmentSize;
pub use stream::{PhysicalReplicationStream, StatusRequester, WalStream};
pub use writer::{ResumePosition, WalWriter};

/// Events, streams and writers move between tasks and threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<WalEvent>();
    send::<WalWriter>();
    send::<WalStream>();
    send::<PhysicalReplicationStream>();
};

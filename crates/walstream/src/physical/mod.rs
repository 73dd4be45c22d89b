//! Physical replication: a WAL stream from a physical slot or a position, with status updates,
//! resume and timeline following, and the WAL segment files `pg_receivewal` writes.
//!
//! - [`WalWriter`] writes WAL into a directory as `pg_receivewal` does (segment files named
//!   as the server names them, the one in progress `.partial`, history files), and says where
//!   to resume ([`WalWriter::resume_position`]).
//! - [`WalSegmentSize`] is the cluster's segment size (`SHOW wal_segment_size`) and the file
//!   names it implies.

mod segment;
mod writer;

pub use segment::WalSegmentSize;
pub use writer::{ResumePosition, WalWriter};

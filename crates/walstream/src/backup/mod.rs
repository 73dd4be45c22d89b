//! Base backups over the replication protocol: a stream of archive entries with progress,
//! writers for a plain data directory and for tar files, and the backup manifest.
//!
//! The call sequence:
//!
//! 1. [`start`] with a conninfo and a [`BaseBackupConfig`]: connects (`replication=true`),
//!    sends `BASE_BACKUP` (PostgreSQL 15+) and returns a [`BackupStream`].
//! 2. Either read its [`BackupEvent`]s yourself ([`BackupStream::next`]: archives, their
//!    entries and data as `Bytes` slices, progress, the manifest, the end position), or
//!    hand the stream to a writer: [`PlainWriter`] (a data directory, as `pg_basebackup -Fp`)
//!    or [`TarWriter`] (`base.tar` and `<oid>.tar` as the server sent them, `-Ft`).
//! 3. Check a backup with [`Manifest::parse`] and [`Manifest::verify`].
//!
//! ```no_run
//! use walstream::backup::{self, BaseBackupConfig, Manifest, PlainWriter};
//!
//! # async fn run() -> backup::Result<()> {
//! let stream = backup::start("host=db user=repl", BaseBackupConfig::default()).await?;
//! let dir = std::path::Path::new("/backups/today");
//! let summary = PlainWriter::new(dir)
//!     .tablespace_mapping("/srv/ts1", "/backups/today-ts1")?
//!     .write_recovery_conf("host=db user=repl")
//!     .write(stream)
//!     .await?;
//! println!("consistent once WAL up to {} is replayed", summary.end);
//! let text = std::fs::read(dir.join("backup_manifest")).unwrap();
//! Manifest::parse(&text)?.verify(dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! **File I/O** happens on a writer thread of each writer's own: the async side only moves
//! events into a bounded channel, so a slow disk never holds the runtime's thread.
//! [`Manifest::verify`] is blocking (call it in `spawn_blocking` from async code).

pub mod combine;
mod data_file;
mod error;
mod inject;
mod manifest;
mod stream;
mod tar;
mod wal;
mod writer;

pub use error::{Error, Result};
pub use manifest::{
    ChecksumAlgorithm, Manifest, ManifestFile, Mismatch, Problem, WalRange, VERIFY_IGNORED,
};
pub use stream::{
    start, start_with, BackupEvent, BackupProgress, BackupStream, BaseBackupConfig, Checkpoint,
    WalMethod,
};
pub use tar::{EntryKind, TarEntry, TarError, TarErrorKind, TarEvent, TarReader, BLOCK};
pub use writer::{BackupSummary, PlainWriter, TarWriter, INCOMPLETE_MARKER};

/// Streams, events, writers and errors move between tasks and threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<BackupEvent>();
    send_sync::<BackupProgress>();
    send_sync::<Error>();
    send_sync::<Manifest>();
    send::<BackupStream>();
    send::<TarReader>();
    send_sync::<PlainWriter>();
    send_sync::<TarWriter>();
};

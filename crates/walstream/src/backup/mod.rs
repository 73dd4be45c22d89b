//! Base backups over the replication protocol: a stream of archive entries with progress,
//! writers for a plain data directory and for tar files, and the backup manifest.

pub mod combine;

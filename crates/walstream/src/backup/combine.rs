//! Combining an incremental backup with the backups it depends on into a full data directory,
//! as `pg_combinebackup` does (PostgreSQL 17+).

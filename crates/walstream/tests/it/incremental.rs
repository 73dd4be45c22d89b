//! Live tests of incremental backups (PostgreSQL 17+): UPLOAD_MANIFEST, INCREMENTAL, combining.

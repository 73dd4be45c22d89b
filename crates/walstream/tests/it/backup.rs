//! Live tests of base backups: the entry stream, the writers, the manifest.

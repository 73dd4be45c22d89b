//! Live tests of the physical WAL stream and the WAL segment writer.

//! Live tests of the primary + standby harness.

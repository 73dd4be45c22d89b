//! The session machinery a replication stream runs on: opening a session (`open`), the driver
//! task that owns the connection (`driver`), what each status update says and when
//! (`feedback`), how failures are retried (`retry`), and the slot's health, its early warning
//! and a lost slot's error and recovery (`slot_watch`). The logical stream uses it today; the
//! physical stream belongs beside it.

pub(crate) mod driver;
pub(crate) mod feedback;
pub(crate) mod metrics;
pub(crate) mod open;
pub(crate) mod retry;
pub(crate) mod slot_watch;

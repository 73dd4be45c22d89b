//! The logical change stream: its configuration (`config`), the owned events it delivers
//! (`event`), XLogData followed into events (`follow`), and the consumer's side
//! (`stream`: `LogicalReplicationStream`, `EventStream`).

pub(crate) mod config;
pub(crate) mod event;
pub(crate) mod follow;
pub(crate) mod stream;

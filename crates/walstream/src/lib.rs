//! A high-level async PostgreSQL logical replication change stream: LSN feedback, retry and
//! resume, cancellation, transactions and typed rows.
//!
//! This crate is a shell for now; its own issue fills it. It re-exports the connection layer it
//! stands on so the layering is visible from the start.

pub use walconn;

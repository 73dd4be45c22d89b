//! A pure-Rust PostgreSQL replication connection: conninfo, TLS, authentication, replication
//! commands and the CopyBoth duplex of raw CopyData frames.
//!
//! This crate is a shell for now; its own issue fills it. It re-exports the protocol layer it
//! stands on so the layering is visible from the start.

pub use walproto;

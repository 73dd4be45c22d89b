//! Integration tests of the `walstream` binary.
//!
//! - `messages`: hand-built captures (walproto's encoders) covering every pgoutput message of
//!   protocols 1-4 and every column kind, with exact expected lines;
//! - `errors`: truncated and corrupt captures, and the exit codes;
//! - `cli`: the command line itself;
//! - `record`, `tail`, `reconnect`, `recvlogical`, `slot`: against real PostgreSQL 15-18 servers;
//! - `encoding`: LATIN1 and SQL_ASCII databases against real servers;
//! - `demo`: the throwaway server it finds and starts itself, and what it leaves behind;
//! - `testdata`: every recorded `testdata/*.walcap` against its committed `.jsonl`
//!   (`UPDATE_EXPECT=1` rewrites them).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed assertion (clippy.toml's allow-*-in-tests does not \
              reach helper functions outside #[test] items)"
)]

mod basebackup;
mod cli;
mod demo;
mod encoding;
mod errors;
mod failover;
mod messages;
mod metrics;
mod receivewal;
mod receivewal_failover;
mod reconnect;
mod record;
mod recvlogical;
mod slot;
mod support;
mod tail;
mod testdata;
mod typed;

//! Integration tests of the JetStream example against a real `nats-server -js` and real
//! PostgreSQL servers.
//!
//! - `nats`: the throwaway NATS server (test support);
//! - `example`: the example binary as a child process (test support);
//! - `exactly_once`: the example binary under faults, its stream compared with the table;
//! - `too_large`: a transaction over the server's `max_payload` in one message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed assertion (clippy.toml's allow-*-in-tests does not \
              reach helper functions outside #[test] items)"
)]

mod exactly_once;
mod example;
mod nats;
mod too_large;

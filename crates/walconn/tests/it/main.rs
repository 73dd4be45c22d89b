//! Live tests of walconn against PostgreSQL 15-18 (pgtest starts the servers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed assertion (clippy.toml's allow-*-in-tests does not \
              reach helper functions outside #[test] items)"
)]

mod auth;
mod auth_fake;
mod base_backup;
mod cancel;
mod commands;
mod credentials;
mod fake_server;
mod hostile;
mod more_commands;
mod physical;
mod replication;
mod tls;
mod tls_keys;

/// Memory is measured from outside the connection: this binary counts every allocation, per
/// thread (`pgtest::alloc::Window`), and a current-thread runtime ([`block_on`]) keeps a
/// test's client and fake server on the thread that measures.
#[global_allocator]
static ALLOC: pgtest::alloc::Counting = pgtest::alloc::Counting;

/// Runs `f` to completion on a fresh current-thread runtime (pgtest's helpers block, so each
/// major's part of a test gets its own runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A conninfo parsed with no environment at all, so the caller's `PG*` cannot interfere.
fn config(conninfo: &str) -> walconn::Config {
    walconn::Config::parse_with_env(conninfo, |_| None).unwrap()
}

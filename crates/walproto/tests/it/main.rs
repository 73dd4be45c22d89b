//! walproto's integration tests: one binary, modules by subject.

// Test helpers may panic: a panic in a test is a failed assertion, not a crash on input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod captures;
mod decoder;
mod generate;
mod malformed;
mod roundtrip;

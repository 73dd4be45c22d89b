//! Compile-time proof that `walproto` is `no_std` + `alloc`.
//!
//! This crate is `#![no_std]` and depends on `walproto` with default features off.
//! `cargo xtask nostd` (run by CI) builds it for `thumbv7em-none-eabi`, a target that has no
//! `std` at all, so any use of `std` in walproto or its dependencies fails the build.
#![no_std]

/// Parses a keepalive through `walproto` so that the dependency is really linked.
pub fn keepalive_wal_end(frame: &[u8]) -> Option<u64> {
    match walproto::replication::ServerMessage::parse(frame) {
        Ok(walproto::replication::ServerMessage::PrimaryKeepalive(k)) => Some(k.wal_end.get()),
        _ => None,
    }
}

/// Runs a whole pgoutput payload through the stateful decoder (which allocates its relation
/// cache through `alloc`).
pub fn decodes(payload: &[u8]) -> bool {
    let mut decoder = walproto::Decoder::new(
        walproto::pgoutput::ProtocolVersion::V1,
        walproto::pgoutput::Streaming::Off,
    );
    decoder.decode(payload).is_ok()
}

//! The wasm module's exports: four plain functions over the module's memory, so that the page
//! needs no generated bindings.
//!
//! Call sequence (`web/walcap.js` is the one caller):
//!
//! 1. [`walcap_input`]`(len)` makes room for the file and returns where to write it (0 when
//!    the file is too large);
//! 2. the caller copies the file's bytes there;
//! 3. [`walcap_inspect`]`()` decodes them with [`crate::inspect`] and returns the number of
//!    decoded messages;
//! 4. [`walcap_output`]`(part)` and [`walcap_output_len`]`(part)` give where each part of the
//!    result lies and its length in bytes: the header line, the JSON lines and the error
//!    message (UTF-8), and the index (four little-endian `u32`s per message: frame
//!    offset, frame length, 1 if it has an xid else 0, the xid).
//!
//! The state lives in the module between the calls; a new [`walcap_input`] starts over. The
//! memory may grow during [`walcap_inspect`], so a caller takes its view of it afterwards.

use std::cell::RefCell;

use crate::{inspect, Inspection};

/// The largest file accepted: the module's memory holds the file, the JSON lines (two to three
/// times the file) and the index, within wasm32's 4 GiB.
pub const MAX_INPUT_LEN: usize = 256 * 1024 * 1024;

/// [`walcap_output`] part: the header line (JSON).
pub const PART_HEADER: u32 = 0;
/// [`walcap_output`] part: the JSON lines of `walstream decode`.
pub const PART_JSONL: u32 = 1;
/// [`walcap_output`] part: why decoding stopped early (empty when it did not).
pub const PART_ERROR: u32 = 2;
/// [`walcap_output`] part: four `u32`s per message (frame offset, frame length, has xid, xid).
pub const PART_INDEX: u32 = 3;

/// What the module holds between calls.
#[derive(Default)]
struct State {
    input: Vec<u8>,
    found: Inspection,
    error: String,
    index: Vec<u32>,
}

thread_local! {
    // wasm32-unknown-unknown runs one thread: this is the module's one instance of its state.
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Makes room for a file of `len` bytes and returns where the caller writes it, or a null
/// pointer when `len` is over [`MAX_INPUT_LEN`] or the memory cannot grow to hold it.
#[allow(
    unsafe_code,
    reason = "no_mangle exports the function under its own name, which is what the page \
              calls; the function is safe code"
)]
#[no_mangle]
pub extern "C" fn walcap_input(len: usize) -> *mut u8 {
    STATE.with_borrow_mut(|state| {
        *state = State::default();
        if len > MAX_INPUT_LEN || state.input.try_reserve_exact(len).is_err() {
            return std::ptr::null_mut();
        }
        state.input.resize(len, 0);
        state.input.as_mut_ptr()
    })
}

/// Decodes the file written after [`walcap_input`] and returns the number of messages decoded
/// (the lines of [`PART_JSONL`]).
#[allow(
    unsafe_code,
    reason = "no_mangle exports the function under its own name, which is what the page \
              calls; the function is safe code"
)]
#[no_mangle]
pub extern "C" fn walcap_inspect() -> u32 {
    STATE.with_borrow_mut(|state| {
        state.found = inspect(&state.input);
        state.error = state.found.error.clone().unwrap_or_default();
        state.index = state
            .found
            .messages
            .iter()
            .flat_map(|m| {
                [
                    to_u32(m.frame_offset),
                    to_u32(m.frame_len),
                    u32::from(m.xid.is_some()),
                    m.xid.map_or(0, |x| x.0),
                ]
            })
            .collect();
        to_u32(state.found.messages.len())
    })
}

/// Where a part of the last result lies in the module's memory (see the `PART_*` constants);
/// null for an unknown part.
#[allow(
    unsafe_code,
    reason = "no_mangle exports the function under its own name, which is what the page \
              calls; the function is safe code"
)]
#[no_mangle]
pub extern "C" fn walcap_output(part: u32) -> *const u8 {
    STATE.with_borrow(|state| match part {
        PART_HEADER => state.found.header.as_ptr(),
        PART_JSONL => state.found.jsonl.as_ptr(),
        PART_ERROR => state.error.as_ptr(),
        PART_INDEX => state.index.as_ptr().cast(),
        _ => std::ptr::null(),
    })
}

/// The length in bytes of a part of the last result; 0 for an unknown part.
#[allow(
    unsafe_code,
    reason = "no_mangle exports the function under its own name, which is what the page \
              calls; the function is safe code"
)]
#[no_mangle]
pub extern "C" fn walcap_output_len(part: u32) -> usize {
    STATE.with_borrow(|state| match part {
        PART_HEADER => state.found.header.len(),
        PART_JSONL => state.found.jsonl.len(),
        PART_ERROR => state.error.len(),
        PART_INDEX => state.index.len() * 4,
        _ => 0,
    })
}

/// A size or offset within a file of at most [`MAX_INPUT_LEN`] bytes as a `u32`.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

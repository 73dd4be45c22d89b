//! A counting global allocator, so that a test measures memory from outside the code it tests
//! rather than reading that code's own counters (a bug in the accounting and a bug in the
//! bound would otherwise pass together).
//!
//! A test binary installs it once, in its `main.rs`:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: pgtest::alloc::Counting = pgtest::alloc::Counting;
//! ```
//!
//! and measures a stretch of work on one thread with a [`Window`]:
//!
//! ```no_run
//! let window = pgtest::alloc::Window::open();
//! let buffer: Vec<u8> = Vec::with_capacity(4096);
//! let usage = window.usage();
//! assert!(usage.largest >= 4096 && usage.peak >= 4096);
//! # drop(buffer);
//! ```
//!
//! The counts are per thread, so tests running in parallel threads of one process do not see
//! each other's allocations. A test whose work runs on a current-thread tokio runtime (client
//! and fake server alike) has all of it counted on the thread that opened the window.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting on each thread the bytes it holds, their peak and the
/// largest single block asked for (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counting;

/// What a thread allocated between [`Window::open`] and [`Window::usage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// The highest the thread's held bytes rose above where they stood at the opening: a
    /// block freed on another thread counts against the thread that frees it.
    pub peak: usize,
    /// The largest single block allocated (or reallocated to), in bytes.
    pub largest: usize,
}

/// A measurement on the current thread: [`open`](Self::open) it, do the work, read its
/// [`usage`](Self::usage). Windows on one thread do not nest: opening one restarts the peak
/// and the largest block of any other.
#[derive(Debug)]
pub struct Window {
    base: isize,
}

thread_local! {
    /// Bytes allocated on this thread minus bytes freed on it.
    static HELD: Cell<isize> = const { Cell::new(0) };
    /// The highest `HELD` has been since the last window opened.
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// The largest block asked for since the last window opened.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// A block of this size is allocated when a window opens, to check that [`Counting`] is the
/// global allocator: a test measuring with another allocator would see nothing and pass.
const PROBE: usize = 4096;

impl Window {
    /// Starts measuring on the current thread.
    ///
    /// # Panics
    ///
    /// When [`Counting`] is not the test binary's global allocator.
    #[allow(
        clippy::panic,
        reason = "test support: a measurement that cannot measure must fail the test"
    )]
    pub fn open() -> Window {
        LARGEST.with(|l| l.set(0));
        let probe = std::hint::black_box(Vec::<u8>::with_capacity(PROBE));
        drop(probe);
        if LARGEST.with(Cell::get) < PROBE {
            panic!(
                "pgtest::alloc::Counting is not the global allocator of this test binary: \
                 install it with #[global_allocator]"
            );
        }
        let base = HELD.with(Cell::get);
        PEAK.with(|p| p.set(base));
        LARGEST.with(|l| l.set(0));
        Window { base }
    }

    /// What the thread allocated since the window opened.
    pub fn usage(&self) -> Usage {
        let peak = PEAK.with(Cell::get).saturating_sub(self.base);
        Usage {
            peak: usize::try_from(peak).unwrap_or(0),
            largest: LARGEST.with(Cell::get),
        }
    }
}

/// Counts `size` more bytes held on this thread (`size` may be negative for a free). A thread
/// whose locals are gone (it is exiting) is not counted.
fn count(size: isize, block: usize) {
    let _ = HELD.try_with(|held| {
        let now = held.get().saturating_add(size);
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(block)));
}

/// A size in bytes as a signed count; no allocation is larger than `isize::MAX`.
fn signed(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

#[allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; this one forwards every call to System \
              unchanged and only counts, in thread-locals that never allocate"
)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// contract of each is the caller's with `System`; the counting touches only `Cell`s in
// thread-locals with constant initializers and no destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(signed(layout.size()), layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(signed(layout.size()), layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        count(-signed(layout.size()), 0);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(signed(new_size) - signed(layout.size()), new_size);
        }
        new
    }
}

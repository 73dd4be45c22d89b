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
//! and fake server alike) has all of it counted on the thread that opened the window. Work on
//! threads of its own is measured with a [`ProcessWindow`] instead, in a test that runs
//! [`alone`] in its process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

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

/// Bytes allocated minus bytes freed, on every thread of the process.
static PROCESS_HELD: AtomicIsize = AtomicIsize::new(0);
/// The highest `PROCESS_HELD` has been since the last [`ProcessWindow`] opened.
static PROCESS_PEAK: AtomicIsize = AtomicIsize::new(0);

/// The variable that marks the child process [`alone`] runs a test in.
pub const ALONE_VAR: &str = "PGTEST_ALONE";

/// A block of this size is allocated when a window opens, to check that [`Counting`] is the
/// global allocator: a test measuring with another allocator would see nothing and pass.
const PROBE: usize = 4096;

/// Checks that [`Counting`] counts: a window measuring with another allocator would see
/// nothing and pass.
#[allow(
    clippy::panic,
    reason = "test support: a measurement that cannot measure must fail the test"
)]
fn check_installed() {
    LARGEST.with(|l| l.set(0));
    let probe = std::hint::black_box(Vec::<u8>::with_capacity(PROBE));
    drop(probe);
    if LARGEST.with(Cell::get) < PROBE {
        panic!(
            "pgtest::alloc::Counting is not the global allocator of this test binary: \
             install it with #[global_allocator]"
        );
    }
}

/// A measurement of the whole process, every thread: for work that runs on threads of its
/// own (a spill thread, a reader thread) or frees on another thread what it allocated. Only
/// the measured test may run in the process: call [`alone`] first.
#[derive(Debug)]
pub struct ProcessWindow {
    base: isize,
}

impl ProcessWindow {
    /// Starts measuring the process.
    ///
    /// # Panics
    ///
    /// When [`Counting`] is not the test binary's global allocator.
    pub fn open() -> ProcessWindow {
        check_installed();
        let base = PROCESS_HELD.load(Ordering::SeqCst);
        PROCESS_PEAK.store(base, Ordering::SeqCst);
        ProcessWindow { base }
    }

    /// The highest the process's held bytes rose above where they stood at the opening.
    pub fn peak(&self) -> usize {
        usize::try_from(PROCESS_PEAK.load(Ordering::SeqCst) - self.base).unwrap_or(0)
    }
}

/// Makes sure the calling test runs alone in its process, so that a [`ProcessWindow`] sees
/// only it. Returns `true` when it does (cargo-nextest runs every test in a process of its
/// own; a child started here is marked with [`ALONE_VAR`]); otherwise runs the test named
/// `test` (its full path in the test binary, e.g. `runtime::my_test`) in a child process of
/// the same binary, fails if the child failed, and returns `false`: the caller then returns.
///
/// # Panics
///
/// When the child cannot be started or its test failed.
#[allow(
    clippy::panic,
    reason = "test support: a test that failed in its child process fails here"
)]
pub fn alone(test: &str) -> bool {
    let nextest = std::env::var("NEXTEST_EXECUTION_MODE").is_ok_and(|m| m == "process-per-test");
    if nextest || std::env::var_os(ALONE_VAR).is_some() {
        return true;
    }
    let status = std::env::current_exe()
        .and_then(|exe| {
            std::process::Command::new(exe)
                .args([test, "--exact", "--nocapture", "--test-threads", "1"])
                .env(ALONE_VAR, "1")
                .status()
        })
        .unwrap_or_else(|e| panic!("running {test} alone: {e}"));
    if !status.success() {
        panic!("{test}, run alone in a child process, failed: {status}");
    }
    false
}

impl Window {
    /// Starts measuring on the current thread.
    ///
    /// # Panics
    ///
    /// When [`Counting`] is not the test binary's global allocator.
    pub fn open() -> Window {
        check_installed();
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
    let now = PROCESS_HELD.fetch_add(size, Ordering::Relaxed) + size;
    PROCESS_PEAK.fetch_max(now, Ordering::Relaxed);
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

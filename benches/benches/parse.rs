//! Parse throughput over a recorded pgoutput stream: walproto against pg_walstream 0.10, in the
//! same run and over the same frames in memory.
//!
//! Every bench walks the frames of `target/bench/corpus/mixed.walcap` (recorded on first use,
//! see `benches::record_mixed`) and parses each CopyData payload, touching every column of
//! every row so that a lazy parser cannot skip work. One criterion iteration is one pass over
//! the whole corpus; throughput is reported in messages, and the summary printed at the end
//! (and written to `target/bench/parse-summary.md`) adds MB/s, allocations per message and the
//! ratio to pg_walstream.
//!
//! Before the timed benches, a counting global allocator measures allocations per message for
//! each parser in one untimed pass (printed, and written to `target/bench/parse-allocs.txt`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs,
    reason = "bench code is test-like: a corpus that does not parse should stop the run loudly"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use criterion::{Criterion, SamplingMode, Throughput};
use pg_walstream::{LogicalReplicationMessage, LogicalReplicationParser};
use walproto::pgoutput::{Message, OldTuple, ParseContext, ProtocolVersion, Streaming, TupleData};
use walproto::replication::ServerMessage;
use walproto::Decoder;

// ---------------------------------------------------------------------------------------------
// Allocation counting.

/// The system allocator, counting allocations (and reallocations) while [`COUNTING`] is on.
/// When it is off, as during the timed benches, the cost is one relaxed load per allocation.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

#[allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; this one only forwards to System"
)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` with counting on; returns its result and the allocations it made.
fn count_allocs<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let out = f();
    COUNTING.store(false, Ordering::SeqCst);
    (out, ALLOCATIONS.load(Ordering::SeqCst))
}

// ---------------------------------------------------------------------------------------------
// The frames.

/// Walks `u32` big-endian length + payload frames, calling `f` with each payload's range.
#[inline(always)]
fn for_each_frame(frames: &[u8], mut f: impl FnMut(usize, usize)) {
    let mut at = 0;
    while let Some(len) = frames.get(at..at + 4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = at + 4;
        at = start + len;
        f(start, at);
    }
}

// ---------------------------------------------------------------------------------------------
// The parsers, each over one whole pass of the corpus. Each returns a checksum built from what
// it touched (value lengths, column counts, xids), so that nothing can be optimized away and
// the parsers can be checked against each other.

/// The floor: read each length and the first byte of the payload.
fn floor(frames: &[u8]) -> u64 {
    let mut sum = 0u64;
    for_each_frame(frames, |start, _| {
        sum = sum.wrapping_add(u64::from(black_box(frames[start])));
    });
    sum
}

/// What every parser reports per row image: each value's length plus one per column, so that
/// NULLs count too.
#[inline(always)]
fn touch_walproto(t: &TupleData<'_>) -> u64 {
    t.columns()
        .map(|c| 1 + c.bytes().map_or(0, |b| b.len() as u64))
        .sum()
}

#[inline(always)]
fn touch_message(m: &Message<'_>) -> u64 {
    match m {
        Message::Insert(i) => touch_walproto(&i.new),
        Message::Update(u) => {
            u.old
                .as_ref()
                .map_or(0, |o| touch_walproto(OldTuple::tuple(o)))
                + touch_walproto(&u.new)
        }
        Message::Delete(d) => touch_walproto(d.old.tuple()),
        Message::Begin(b) => u64::from(b.xid.0),
        Message::Commit(c) => c.end_lsn.get() & 0xFF,
        Message::Relation(r) => r.columns.iter().map(|c| c.name.len() as u64).sum(),
        _ => 0,
    }
}

/// `ServerMessage::parse`, then `Message::parse` under the context the stream is in.
fn walproto_borrowed(frames: &[u8]) -> u64 {
    let base = ParseContext::new(ProtocolVersion::V1, Streaming::Off);
    let mut in_stream = false;
    let mut sum = 0u64;
    for_each_frame(frames, |start, end| {
        let payload = &frames[start..end];
        let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(payload) else {
            panic!("not an XLogData at {start}");
        };
        let m = Message::parse(x.data, base.in_stream(in_stream)).unwrap();
        match m {
            Message::StreamStart(_) => in_stream = true,
            Message::StreamStop => in_stream = false,
            _ => {}
        }
        sum = sum.wrapping_add(black_box(touch_message(&m)));
    });
    sum
}

/// The same through the stateful [`Decoder`] (relation resolved, columns checked against it).
fn walproto_decoder(frames: &[u8]) -> u64 {
    let mut decoder = Decoder::new(ProtocolVersion::V1, Streaming::Off);
    let mut sum = 0u64;
    for_each_frame(frames, |start, end| {
        let payload = &frames[start..end];
        let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(payload) else {
            panic!("not an XLogData at {start}");
        };
        let d = decoder.decode(x.data).unwrap();
        black_box(d.relation);
        sum = sum.wrapping_add(black_box(touch_message(&d.message)));
    });
    sum
}

#[inline(always)]
fn touch_pgw(t: &pg_walstream::TupleData) -> u64 {
    t.columns
        .iter()
        .map(|c| 1 + c.as_bytes().len() as u64)
        .sum()
}

/// pg_walstream: each frame as a `Bytes` split from the buffer (as its stream gets it), the
/// 25-byte XLogData header read as its stream reads it, then `parse_wal_message_bytes` on the
/// body (zero-copy `Bytes` slices of the frame).
fn pg_walstream_parse(all: &Bytes) -> u64 {
    let mut parser = LogicalReplicationParser::with_protocol_version(1);
    let mut sum = 0u64;
    for_each_frame(all, |start, end| {
        let frame = all.slice(start..end);
        assert!(
            frame.len() >= 25 && frame[0] == b'w',
            "not an XLogData at {start}"
        );
        let mut header = &frame[1..25];
        let wal_start = header.get_u64();
        let _wal_end = header.get_u64();
        let _send_time = header.get_i64();
        black_box(wal_start);
        let msg = parser.parse_wal_message_bytes(frame.slice(25..)).unwrap();
        sum = sum.wrapping_add(black_box(touch_pgw_message(&msg.message)));
    });
    sum
}

#[inline(always)]
fn touch_pgw_message(m: &LogicalReplicationMessage) -> u64 {
    match m {
        LogicalReplicationMessage::Insert { tuple, .. } => touch_pgw(tuple),
        LogicalReplicationMessage::Update {
            old_tuple,
            new_tuple,
            ..
        } => old_tuple.as_ref().map_or(0, touch_pgw) + touch_pgw(new_tuple),
        LogicalReplicationMessage::Delete { old_tuple, .. } => touch_pgw(old_tuple),
        LogicalReplicationMessage::Begin { xid, .. } => u64::from(*xid),
        LogicalReplicationMessage::Commit { end_lsn, .. } => end_lsn & 0xFF,
        LogicalReplicationMessage::Relation { columns, .. } => {
            columns.iter().map(|c| c.name.len() as u64).sum()
        }
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Allocations per message.

struct AllocReport {
    name: &'static str,
    total: u64,
    per_message: f64,
    rows: u64,
    row_allocs: u64,
}

/// Counts allocations message by message, split into row messages (I/U/D) and the rest.
fn alloc_pass(
    name: &'static str,
    frames: &[u8],
    mut parse_one: impl FnMut(usize, usize) -> u64,
) -> AllocReport {
    let mut total = 0u64;
    let mut rows = 0u64;
    let mut row_allocs = 0u64;
    let mut messages = 0u64;
    for_each_frame(frames, |start, end| {
        let tag = frames[start + 25];
        let (touched, n) = count_allocs(|| parse_one(start, end));
        black_box(touched);
        total += n;
        messages += 1;
        if matches!(tag, b'I' | b'U' | b'D') {
            rows += 1;
            row_allocs += n;
        }
    });
    AllocReport {
        name,
        total,
        per_message: total as f64 / messages.max(1) as f64,
        rows,
        row_allocs,
    }
}

fn alloc_reports(frames: &[u8], all: &Bytes) -> Vec<AllocReport> {
    let base = ParseContext::new(ProtocolVersion::V1, Streaming::Off);
    let mut decoder = Decoder::new(ProtocolVersion::V1, Streaming::Off);
    let mut parser = LogicalReplicationParser::with_protocol_version(1);
    vec![
        alloc_pass("floor", frames, |start, _| u64::from(frames[start])),
        alloc_pass("walproto/borrowed", frames, |start, end| {
            let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(&frames[start..end]) else {
                panic!("not an XLogData at {start}");
            };
            touch_message(&Message::parse(x.data, base).unwrap())
        }),
        alloc_pass("walproto/decoder", frames, |start, end| {
            let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(&frames[start..end]) else {
                panic!("not an XLogData at {start}");
            };
            touch_message(&decoder.decode(x.data).unwrap().message)
        }),
        alloc_pass("pg_walstream/parse", frames, |start, end| {
            let frame = all.slice(start..end);
            let msg = parser.parse_wal_message_bytes(frame.slice(25..)).unwrap();
            touch_pgw_message(&msg.message)
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The run.

const BENCHES: [&str; 4] = [
    "floor",
    "walproto/borrowed",
    "walproto/decoder",
    "pg_walstream/parse",
];

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();

    let corpus = match benches::load_or_record_mixed() {
        Ok(c) => c,
        Err(e) => panic!("parse bench corpus: {e}"),
    };
    println!(
        "corpus {}: {}",
        benches::mixed_corpus_path().display(),
        corpus.summary()
    );
    let frames = corpus.frames();
    // pg_walstream takes `Bytes`: the same frames, in a buffer of its own. The first slice of a
    // `Bytes` made from a `Vec` promotes it to a shared buffer once; do that before timing.
    let all = Bytes::copy_from_slice(frames);
    drop(black_box(all.slice(0..0)));

    // The parsers must agree on what they touched before their times are worth comparing.
    let expected = walproto_borrowed(frames);
    assert_eq!(walproto_decoder(frames), expected, "decoder checksum");
    assert_eq!(pg_walstream_parse(&all), expected, "pg_walstream checksum");

    let allocs = alloc_reports(frames, &all);
    let mut alloc_text = format!("allocations per message ({})\n", corpus.summary());
    for a in &allocs {
        let _ = writeln!(
            alloc_text,
            "{:<20} {:>9.5} per message ({} in {} messages); {:.5} per row message ({} in {} I/U/D)",
            a.name,
            a.per_message,
            a.total,
            corpus.messages,
            a.row_allocs as f64 / a.rows.max(1) as f64,
            a.row_allocs,
            a.rows
        );
    }
    print!("{alloc_text}");
    let _ = std::fs::create_dir_all(benches::bench_dir());
    let _ = std::fs::write(benches::bench_dir().join("parse-allocs.txt"), &alloc_text);

    let mut group = criterion.benchmark_group("parse");
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(corpus.messages));
    group.bench_function(BENCHES[0], |b| b.iter(|| floor(black_box(frames))));
    group.bench_function(BENCHES[1], |b| {
        b.iter(|| walproto_borrowed(black_box(frames)))
    });
    group.bench_function(BENCHES[2], |b| {
        b.iter(|| walproto_decoder(black_box(frames)))
    });
    group.bench_function(BENCHES[3], |b| {
        b.iter(|| pg_walstream_parse(black_box(&all)))
    });
    group.finish();
    criterion.final_summary();

    summary(&corpus, &allocs);
}

/// Prints (and writes to `target/bench/parse-summary.md`) a table of ns/message, MB/s, the
/// ratio to pg_walstream and allocations, from criterion's estimates of this run.
fn summary(corpus: &benches::Corpus, allocs: &[AllocReport]) {
    let dir = benches::target_dir().join("criterion").join("parse");
    let ns: Vec<Option<f64>> = BENCHES
        .iter()
        .map(|name| {
            let path = dir
                .join(name.replace('/', "_"))
                .join("new")
                .join("estimates.json");
            std::fs::read_to_string(path)
                .ok()
                .and_then(|json| median_point_estimate(&json))
                .map(|per_pass| per_pass / corpus.messages as f64)
        })
        .collect();
    let Some(Some(baseline)) = ns.last().copied() else {
        return; // Not every bench ran (a filter, or --test): nothing to compare.
    };
    let bytes_per_msg = corpus.frame_bytes as f64 / corpus.messages as f64;
    let mut out = String::from(
        "| bench | ns/message (median) | MB/s | time vs pg_walstream | allocs/message | allocs/row message |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for ((name, ns), a) in BENCHES.iter().zip(&ns).zip(allocs) {
        let Some(ns) = ns else { continue };
        let _ = writeln!(
            out,
            "| {name} | {ns:.1} | {:.0} | {:.2} | {:.5} ({} total) | {:.5} |",
            bytes_per_msg / ns * 1e3,
            ns / baseline,
            a.per_message,
            a.total,
            a.row_allocs as f64 / a.rows.max(1) as f64,
        );
    }
    println!("\n{out}");
    let _ = std::fs::write(benches::bench_dir().join("parse-summary.md"), &out);
}

/// The median's point estimate (nanoseconds per iteration) from criterion's
/// `estimates.json`, found by a plain search so that the bench needs no JSON parser.
fn median_point_estimate(json: &str) -> Option<f64> {
    let median = &json[json.find("\"median\"")?..];
    let value = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value.find([',', '}'])?;
    value[..end].trim().parse().ok()
}

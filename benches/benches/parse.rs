//! Parse throughput over recorded pgoutput streams: walproto and walstream's owned events
//! against pg_walstream 0.10, in the same run and over the same frames in memory.
//!
//! Every bench walks the frames of each corpus, `target/bench/corpus/{mixed,wide,streamed}.walcap`
//! (recorded on first use, see `benches::record`), and parses each CopyData payload, touching
//! every column of every row so that a lazy parser cannot skip work. One criterion iteration is
//! one pass over the whole corpus; throughput is reported in messages, and the summary printed
//! at the end (and written to `target/bench/parse-summary.md` and `parse-summary.json`) adds
//! MB/s, allocations per message and the ratios to pg_walstream's parser and decoder.
//!
//! `PARSE_CORPORA=mixed,wide` (environment) limits the run to some corpora.
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
use std::sync::Arc;

use benches::Workload;
use pg_walstream::{
    EventType, LogicalReplicationMessage, LogicalReplicationParser, PgOutputDecoder, RowData,
};
use walproto::owned::TupleBuf;
use walproto::pgoutput::{Message, OldTuple, ParseContext, ProtocolVersion, Streaming, TupleData};
use walproto::replication::ServerMessage;
use walproto::{Decoder, Lsn, RelationInfo, Xid};

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

/// The protocol and streaming mode of a corpus.
#[derive(Clone, Copy)]
struct Proto {
    version: ProtocolVersion,
    streaming: Streaming,
}

impl Proto {
    fn of(w: Workload) -> Self {
        let options = w.options();
        Proto {
            version: options.proto_version,
            streaming: options.streaming,
        }
    }

    fn number(self) -> u32 {
        self.version as u32
    }
}

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
fn touch_rows(m: &Message<'_>) -> u64 {
    match m {
        Message::Insert(i) => touch_walproto(&i.new),
        Message::Update(u) => {
            u.old
                .as_ref()
                .map_or(0, |o| touch_walproto(OldTuple::tuple(o)))
                + touch_walproto(&u.new)
        }
        Message::Delete(d) => touch_walproto(d.old.tuple()),
        _ => 0,
    }
}

#[inline(always)]
fn touch_message(m: &Message<'_>) -> u64 {
    match m {
        Message::Begin(b) => u64::from(b.xid.0),
        Message::Commit(c) => c.end_lsn.get() & 0xFF,
        Message::Relation(r) => r.columns.iter().map(|c| c.name.len() as u64).sum(),
        _ => touch_rows(m),
    }
}

/// `ServerMessage::parse`, then `Message::parse` under the context the stream is in. With
/// `rows_only`, the checksum counts row values only (to check the event paths against).
fn walproto_borrowed(frames: &[u8], proto: Proto, rows_only: bool) -> u64 {
    let base = ParseContext::new(proto.version, proto.streaming);
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
        let touched = if rows_only {
            touch_rows(&m)
        } else {
            touch_message(&m)
        };
        sum = sum.wrapping_add(black_box(touched));
    });
    sum
}

/// The same through the stateful [`Decoder`] (relation resolved, columns checked against it).
fn walproto_decoder(frames: &[u8], proto: Proto) -> u64 {
    let mut decoder = Decoder::new(proto.version, proto.streaming);
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

// ---------------------------------------------------------------------------------------------
// Owned events, as walstream's driver makes them.
//
// walstream turns an XLogData into a `walstream::ChangeEvent` in `Follower`, which is
// `pub(crate)`: there is no public way to do it without a server. This is the same work through
// walproto's public API, as `Follower::decode` does it: the `Decoder`, each row image as a
// `TupleBuf` (a `Bytes` slice of the frame, no copy) with the relation's `Arc`, the xid of the
// transaction or stream block kept per event. The consumer then reads every value as an owned
// `ColumnValue` (a `Bytes` slice), as the drain consumer does with `insert.new.values()`.

/// A row with its relation, as `walstream::Row`.
struct OwnedRow {
    relation: Arc<RelationInfo>,
    tuple: TupleBuf,
}

/// The parts of `walstream::EventKind` the corpora have.
enum OwnedKind {
    Begin,
    Commit(Lsn),
    Relation(Arc<RelationInfo>),
    Insert(OwnedRow),
    Update(Option<OwnedRow>, OwnedRow),
    Delete(OwnedRow),
    StreamStart,
    StreamStop,
    StreamCommit(Lsn),
    Other,
}

/// As `walstream::ChangeEvent`.
struct OwnedEvent {
    lsn: Lsn,
    xid: Option<Xid>,
    kind: OwnedKind,
}

struct OwnedDecoder {
    decoder: Decoder,
    xid: Option<Xid>,
}

impl OwnedDecoder {
    fn new(proto: Proto) -> Self {
        OwnedDecoder {
            decoder: Decoder::new(proto.version, proto.streaming),
            xid: None,
        }
    }

    /// One frame (the whole CopyData payload as a `Bytes`, as the connection hands it over).
    #[inline(always)]
    fn decode(&mut self, frame: &Bytes) -> OwnedEvent {
        let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(frame) else {
            panic!("not an XLogData");
        };
        let d = self.decoder.decode(x.data).unwrap();
        let relation = d.relation.cloned();
        let row = |t: &TupleData<'_>| OwnedRow {
            relation: relation.clone().unwrap(),
            tuple: TupleBuf::from_view(frame, t).unwrap(),
        };
        let kind = match &d.message {
            Message::Begin(b) => {
                self.xid = Some(b.xid);
                OwnedKind::Begin
            }
            Message::Commit(c) => OwnedKind::Commit(c.end_lsn),
            Message::Relation(_) => OwnedKind::Relation(relation.clone().unwrap()),
            Message::Insert(i) => OwnedKind::Insert(row(&i.new)),
            Message::Update(u) => {
                OwnedKind::Update(u.old.as_ref().map(|o| row(o.tuple())), row(&u.new))
            }
            Message::Delete(del) => OwnedKind::Delete(row(del.old.tuple())),
            Message::StreamStart(s) => {
                self.xid = Some(s.xid);
                OwnedKind::StreamStart
            }
            Message::StreamStop => OwnedKind::StreamStop,
            Message::StreamCommit(c) => OwnedKind::StreamCommit(c.end_lsn),
            _ => OwnedKind::Other,
        };
        OwnedEvent {
            lsn: x.wal_start,
            xid: self.xid,
            kind,
        }
    }
}

#[inline(always)]
fn touch_owned_row(r: &OwnedRow) -> u64 {
    black_box(&r.relation);
    r.tuple
        .values()
        .map(|v| {
            1 + match v {
                walproto::owned::ColumnValue::Text(b) | walproto::owned::ColumnValue::Binary(b) => {
                    b.len() as u64
                }
                _ => 0,
            }
        })
        .sum()
}

#[inline(always)]
fn touch_owned(e: &OwnedEvent) -> u64 {
    black_box((e.lsn, e.xid));
    match &e.kind {
        OwnedKind::Insert(r) | OwnedKind::Delete(r) => touch_owned_row(r),
        OwnedKind::Update(old, new) => {
            old.as_ref().map_or(0, touch_owned_row) + touch_owned_row(new)
        }
        OwnedKind::Relation(r) => {
            black_box(r);
            0
        }
        OwnedKind::Commit(l) | OwnedKind::StreamCommit(l) => {
            black_box(l);
            0
        }
        OwnedKind::Begin | OwnedKind::StreamStart | OwnedKind::StreamStop | OwnedKind::Other => 0,
    }
}

/// The values of `r` read borrowed (`TupleBuf::columns`, as `Row::tuple().columns()`): no
/// `Bytes` per value.
#[inline(always)]
fn touch_owned_row_view(r: &OwnedRow) -> u64 {
    black_box(&r.relation);
    r.tuple
        .columns()
        .map(|c| 1 + c.bytes().map_or(0, |b| b.len() as u64))
        .sum()
}

#[inline(always)]
fn touch_owned_view(e: &OwnedEvent) -> u64 {
    match &e.kind {
        OwnedKind::Insert(r) | OwnedKind::Delete(r) => touch_owned_row_view(r),
        OwnedKind::Update(old, new) => {
            old.as_ref().map_or(0, touch_owned_row_view) + touch_owned_row_view(new)
        }
        _ => touch_owned(e),
    }
}

/// walstream's owned events (see above): each frame a `Bytes` slice of one buffer. With
/// `view`, the values are read borrowed instead of as owned `ColumnValue`s.
fn walstream_owned(all: &Bytes, proto: Proto, view: bool) -> u64 {
    let mut decoder = OwnedDecoder::new(proto);
    let mut sum = 0u64;
    for_each_frame(all, |start, end| {
        let frame = all.slice(start..end);
        let event = black_box(decoder.decode(&frame));
        let touched = if view {
            touch_owned_view(&event)
        } else {
            touch_owned(&event)
        };
        sum = sum.wrapping_add(touched);
    });
    sum
}

// ---------------------------------------------------------------------------------------------
// pg_walstream.

#[inline(always)]
fn touch_pgw(t: &pg_walstream::TupleData) -> u64 {
    t.columns
        .iter()
        .map(|c| 1 + c.as_bytes().len() as u64)
        .sum()
}

/// Reads the 25-byte XLogData header of `frame` as pg_walstream's stream does; returns
/// `wal_start`.
#[inline(always)]
fn pgw_header(frame: &Bytes) -> u64 {
    assert!(frame.len() >= 25 && frame[0] == b'w', "not an XLogData");
    let mut header = &frame[1..25];
    let wal_start = header.get_u64();
    let _wal_end = header.get_u64();
    let _send_time = header.get_i64();
    wal_start
}

/// pg_walstream's parser: each frame as a `Bytes` split from the buffer (as its stream gets
/// it), the 25-byte XLogData header read as its stream reads it, then
/// `parse_wal_message_bytes` on the body (zero-copy `Bytes` slices of the frame).
fn pg_walstream_parse(all: &Bytes, proto: Proto) -> u64 {
    let mut parser = LogicalReplicationParser::with_protocol_version(proto.number());
    let mut sum = 0u64;
    for_each_frame(all, |start, end| {
        let frame = all.slice(start..end);
        black_box(pgw_header(&frame));
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

#[inline(always)]
fn touch_pgw_row(r: &RowData) -> u64 {
    r.iter().map(|(_, v)| 1 + v.as_bytes().len() as u64).sum()
}

#[inline(always)]
fn touch_pgw_event(e: &pg_walstream::ChangeEvent) -> u64 {
    match &e.event_type {
        EventType::Insert { data, .. } => touch_pgw_row(data),
        EventType::Update {
            old_data, new_data, ..
        } => old_data.as_ref().map_or(0, touch_pgw_row) + touch_pgw_row(new_data),
        EventType::Delete { old_data, .. } => touch_pgw_row(old_data),
        _ => 0,
    }
}

/// pg_walstream's decoder to its `ChangeEvent`s (`PgOutputDecoder::decode_message`: its parser
/// plus the relation cache and the conversion its stream makes), on the same frames.
fn pg_walstream_decoder(all: &Bytes, proto: Proto) -> u64 {
    let mut decoder = PgOutputDecoder::with_protocol_version(proto.number());
    let mut sum = 0u64;
    for_each_frame(all, |start, end| {
        let frame = all.slice(start..end);
        let lsn = pgw_header(&frame);
        let event = decoder
            .decode_message(frame.slice(25..), pg_walstream::Lsn::new(lsn))
            .unwrap();
        if let Some(event) = black_box(event) {
            sum = sum.wrapping_add(touch_pgw_event(&event));
        }
    });
    sum
}

// ---------------------------------------------------------------------------------------------
// Allocations per message.

struct AllocReport {
    total: u64,
    per_message: f64,
    rows: u64,
    row_allocs: u64,
}

/// Counts allocations message by message, split into row messages (I/U/D) and the rest.
fn alloc_pass(frames: &[u8], mut parse_one: impl FnMut(usize, usize) -> u64) -> AllocReport {
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
        total,
        per_message: total as f64 / messages.max(1) as f64,
        rows,
        row_allocs,
    }
}

fn alloc_reports(frames: &[u8], all: &Bytes, proto: Proto) -> Vec<AllocReport> {
    let base = ParseContext::new(proto.version, proto.streaming);
    let mut in_stream = false;
    let mut decoder = Decoder::new(proto.version, proto.streaming);
    let mut owned = OwnedDecoder::new(proto);
    let mut owned_view = OwnedDecoder::new(proto);
    let mut parser = LogicalReplicationParser::with_protocol_version(proto.number());
    let mut pgw_decoder = PgOutputDecoder::with_protocol_version(proto.number());
    vec![
        alloc_pass(frames, |start, _| u64::from(frames[start])),
        alloc_pass(frames, |start, end| {
            let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(&frames[start..end]) else {
                panic!("not an XLogData at {start}");
            };
            let m = Message::parse(x.data, base.in_stream(in_stream)).unwrap();
            match m {
                Message::StreamStart(_) => in_stream = true,
                Message::StreamStop => in_stream = false,
                _ => {}
            }
            touch_message(&m)
        }),
        alloc_pass(frames, |start, end| {
            let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(&frames[start..end]) else {
                panic!("not an XLogData at {start}");
            };
            touch_message(&decoder.decode(x.data).unwrap().message)
        }),
        alloc_pass(frames, |start, end| {
            let frame = all.slice(start..end);
            touch_owned(&owned.decode(&frame))
        }),
        alloc_pass(frames, |start, end| {
            let frame = all.slice(start..end);
            touch_owned_view(&owned_view.decode(&frame))
        }),
        alloc_pass(frames, |start, end| {
            let frame = all.slice(start..end);
            let msg = parser.parse_wal_message_bytes(frame.slice(25..)).unwrap();
            touch_pgw_message(&msg.message)
        }),
        alloc_pass(frames, |start, end| {
            let frame = all.slice(start..end);
            let lsn = pgw_header(&frame);
            let event = pgw_decoder
                .decode_message(frame.slice(25..), pg_walstream::Lsn::new(lsn))
                .unwrap();
            event.as_ref().map_or(0, touch_pgw_event)
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The run.

/// The benches, in report order. The last two are the baselines.
const BENCHES: [&str; 7] = [
    "floor",
    "walproto/borrowed",
    "walproto/decoder",
    "walstream/owned",
    "walstream/owned-view",
    "pg_walstream/parse",
    "pg_walstream/decoder",
];

/// The indexes in [`BENCHES`] of pg_walstream's parser and decoder.
const PGW_PARSE: usize = 5;
const PGW_DECODER: usize = 6;

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();

    let selected: Vec<Workload> = match std::env::var("PARSE_CORPORA") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|n| Workload::from_name(n.trim()).unwrap_or_else(|| panic!("unknown corpus {n}")))
            .collect(),
        _ => Workload::ALL.to_vec(),
    };

    let mut results = Vec::new();
    for workload in selected {
        results.push(bench_corpus(&mut criterion, workload));
    }
    criterion.final_summary();
    summary(&results);
}

/// What one corpus gave: its facts, allocation counts, and (after the timed run) ns/message.
struct CorpusResult {
    workload: Workload,
    messages: u64,
    frame_bytes: u64,
    summary: String,
    allocs: Vec<AllocReport>,
}

fn bench_corpus(criterion: &mut Criterion, workload: Workload) -> CorpusResult {
    let corpus = match benches::load_or_record(workload) {
        Ok(c) => c,
        Err(e) => panic!("parse bench corpus {}: {e}", workload.name()),
    };
    let proto = Proto::of(workload);
    println!(
        "corpus {}: {}",
        workload.corpus_path().display(),
        corpus.summary()
    );
    let frames = corpus.frames();
    // pg_walstream and the owned path take `Bytes`: the same frames, in a buffer of their own.
    // The first slice of a `Bytes` made from a `Vec` promotes it to a shared buffer once; do
    // that before timing.
    let all = Bytes::copy_from_slice(frames);
    drop(black_box(all.slice(0..0)));

    // The parsers must agree on what they touched before their times are worth comparing.
    let expected = walproto_borrowed(frames, proto, false);
    assert_eq!(
        walproto_decoder(frames, proto),
        expected,
        "decoder checksum"
    );
    assert_eq!(
        pg_walstream_parse(&all, proto),
        expected,
        "pg_walstream checksum"
    );
    let rows = walproto_borrowed(frames, proto, true);
    assert_eq!(
        walstream_owned(&all, proto, false),
        rows,
        "owned events checksum"
    );
    assert_eq!(
        walstream_owned(&all, proto, true),
        rows,
        "owned events (view) checksum"
    );
    assert_eq!(
        pg_walstream_decoder(&all, proto),
        rows,
        "pg_walstream decoder checksum"
    );

    let allocs = alloc_reports(frames, &all, proto);
    let mut alloc_text = format!(
        "allocations per message, {} ({})\n",
        workload.name(),
        corpus.summary()
    );
    for (name, a) in BENCHES.iter().zip(&allocs) {
        let _ = writeln!(
            alloc_text,
            "{name:<22} {:>9.5} per message ({} in {} messages); {:.5} per row message ({} in {} I/U/D)",
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
    let _ = std::fs::write(
        benches::bench_dir().join(format!("parse-allocs-{}.txt", workload.name())),
        &alloc_text,
    );

    let mut group = criterion.benchmark_group(format!("parse-{}", workload.name()));
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(corpus.messages));
    group.bench_function(BENCHES[0], |b| b.iter(|| floor(black_box(frames))));
    group.bench_function(BENCHES[1], |b| {
        b.iter(|| walproto_borrowed(black_box(frames), proto, false))
    });
    group.bench_function(BENCHES[2], |b| {
        b.iter(|| walproto_decoder(black_box(frames), proto))
    });
    group.bench_function(BENCHES[3], |b| {
        b.iter(|| walstream_owned(black_box(&all), proto, false))
    });
    group.bench_function(BENCHES[4], |b| {
        b.iter(|| walstream_owned(black_box(&all), proto, true))
    });
    group.bench_function(BENCHES[PGW_PARSE], |b| {
        b.iter(|| pg_walstream_parse(black_box(&all), proto))
    });
    group.bench_function(BENCHES[PGW_DECODER], |b| {
        b.iter(|| pg_walstream_decoder(black_box(&all), proto))
    });
    group.finish();

    CorpusResult {
        workload,
        messages: corpus.messages,
        frame_bytes: corpus.frame_bytes,
        summary: corpus.summary(),
        allocs,
    }
}

/// ns/message of each bench of `r` from criterion's estimates of this run.
fn ns_per_message(r: &CorpusResult) -> Vec<Option<f64>> {
    let dir = benches::target_dir()
        .join("criterion")
        .join(format!("parse-{}", r.workload.name()));
    BENCHES
        .iter()
        .map(|name| {
            let path = dir
                .join(name.replace('/', "_"))
                .join("new")
                .join("estimates.json");
            std::fs::read_to_string(path)
                .ok()
                .and_then(|json| median_point_estimate(&json))
                .map(|per_pass| per_pass / r.messages as f64)
        })
        .collect()
}

/// Prints (and writes to `target/bench/parse-summary.md` and `.json`) a table per corpus of
/// ns/message, MB/s, the ratios to pg_walstream's parser and decoder, and allocations, from
/// criterion's estimates of this run.
fn summary(results: &[CorpusResult]) {
    let mut md = String::new();
    let mut json = String::from("{\n  \"corpora\": [");
    for (k, r) in results.iter().enumerate() {
        let ns = ns_per_message(r);
        let (Some(Some(pgw_parse)), Some(Some(pgw_decoder))) =
            (ns.get(PGW_PARSE), ns.get(PGW_DECODER))
        else {
            continue; // Not every bench ran (a filter, or --test): nothing to compare.
        };
        let bytes_per_msg = r.frame_bytes as f64 / r.messages as f64;
        let _ = writeln!(
            md,
            "**{}** (protocol {}, streaming {}): {}\n\n\
             | bench | ns/message (median) | MB/s | time vs pg_walstream parse | time vs pg_walstream decoder | allocs/message | allocs/row message |\n\
             |---|---:|---:|---:|---:|---:|---:|",
            r.workload.name(),
            r.workload.options().proto_version.number(),
            r.workload.options().streaming,
            r.summary
        );
        let _ = write!(
            json,
            "{}\n    {{\"name\": \"{}\", \"messages\": {}, \"frame_bytes\": {}, \"benches\": [",
            if k == 0 { "" } else { "," },
            r.workload.name(),
            r.messages,
            r.frame_bytes
        );
        let mut first = true;
        for ((name, ns), a) in BENCHES.iter().zip(&ns).zip(&r.allocs) {
            let Some(ns) = ns else { continue };
            let row_allocs = a.row_allocs as f64 / a.rows.max(1) as f64;
            let _ = writeln!(
                md,
                "| {name} | {ns:.1} | {:.0} | {:.2} | {:.2} | {:.5} ({} total) | {row_allocs:.5} |",
                bytes_per_msg / ns * 1e3,
                ns / pgw_parse,
                ns / pgw_decoder,
                a.per_message,
                a.total,
            );
            let _ = write!(
                json,
                "{}\n      {{\"name\": \"{name}\", \"ns_per_message\": {ns:.3}, \"mb_per_s\": {:.1}, \
                 \"vs_pg_walstream_parse\": {:.4}, \"vs_pg_walstream_decoder\": {:.4}, \
                 \"allocs_per_message\": {:.5}, \"allocs_per_row_message\": {row_allocs:.5}}}",
                if first { "" } else { "," },
                bytes_per_msg / ns * 1e3,
                ns / pgw_parse,
                ns / pgw_decoder,
                a.per_message,
            );
            first = false;
        }
        json.push_str("\n    ]}");
        md.push('\n');
    }
    json.push_str("\n  ]\n}\n");
    println!("\n{md}");
    let _ = std::fs::write(benches::bench_dir().join("parse-summary.md"), &md);
    let _ = std::fs::write(benches::bench_dir().join("parse-summary.json"), &json);
}

/// The median's point estimate (nanoseconds per iteration) from criterion's
/// `estimates.json`, found by a plain search so that the bench needs no JSON parser.
fn median_point_estimate(json: &str) -> Option<f64> {
    let median = &json[json.find("\"median\"")?..];
    let value = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value.find([',', '}'])?;
    value[..end].trim().parse().ok()
}

//! One pass of one parser over one recorded corpus, for counting instructions under valgrind
//! (`cargo xtask bench --only instructions` runs it under `valgrind --tool=callgrind`).
//!
//! ```text
//! instructions MODE CORPUS     # MODE: load, walproto-parse, walproto-decode,
//!                              #       pg_walstream-parse, pg_walstream-decode
//! ```
//!
//! Every mode does the same set-up: load `target/bench/corpus/CORPUS.walcap` (it must exist:
//! `cargo run -p benches --release --bin gen-corpus`) and copy its frames into a `Bytes`, as
//! the parse bench does for pg_walstream. `load` stops there: it is the baseline the other
//! modes' counts are taken from, so that what is left is the pass itself (walking the frames,
//! parsing, touching every value of every row as the parse bench does). The output is one line,
//! `messages=N checksum=C`; the checksums of the modes of one kind (parse, decode) must agree.
//!
//! Without arguments (as `cargo bench -p benches` runs it) every mode runs once on each corpus
//! that exists and the checksums are checked; `--list` (a test runner asking) prints nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs,
    reason = "bench code is test-like: a corpus that does not parse should stop the run loudly"
)]

use std::hint::black_box;
use std::process::ExitCode;

use bytes::{Buf, Bytes};
use pg_walstream::{
    EventType, LogicalReplicationMessage, LogicalReplicationParser, PgOutputDecoder, RowData,
};
use walproto::pgoutput::{Message, OldTuple, ParseContext, ProtocolVersion, Streaming, TupleData};
use walproto::replication::ServerMessage;
use walproto::Decoder;

use benches::Workload;

/// The modes, baseline first.
const MODES: [&str; 5] = [
    "load",
    "walproto-parse",
    "walproto-decode",
    "pg_walstream-parse",
    "pg_walstream-decode",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, corpus] if !mode.starts_with('-') => {
            let Some(workload) = Workload::from_name(corpus) else {
                eprintln!("instructions: unknown corpus {corpus:?} (mixed, wide, streamed)");
                return ExitCode::FAILURE;
            };
            match run(mode, workload) {
                Ok((messages, sum)) => {
                    println!("messages={messages} checksum={sum}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("instructions: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        a if a.iter().any(|a| a == "--list") => ExitCode::SUCCESS,
        _ => self_check(),
    }
}

/// Every mode on every corpus that exists, once, natively: the checksums of the parsers must
/// agree with each other, and the decoders' with each other.
fn self_check() -> ExitCode {
    for workload in Workload::ALL {
        if !workload.corpus_path().exists() {
            println!("instructions: no {} corpus, skipped", workload.name());
            continue;
        }
        let sums: Vec<u64> = MODES
            .iter()
            .map(|m| run(m, workload).map(|(_, s)| s).unwrap())
            .collect();
        assert_eq!(sums[1], sums[3], "{}: parse checksums", workload.name());
        assert_eq!(sums[2], sums[4], "{}: decode checksums", workload.name());
        println!("instructions: {} checksums agree", workload.name());
    }
    ExitCode::SUCCESS
}

/// Loads the corpus, then runs `mode` over it once: the messages and the checksum.
fn run(mode: &str, workload: Workload) -> Result<(u64, u64), String> {
    let corpus = benches::Corpus::load(&workload.corpus_path())?;
    let frames = corpus.frames();
    let all = Bytes::copy_from_slice(frames);
    drop(black_box(all.slice(0..0)));
    let options = workload.options();
    let (version, streaming) = (options.proto_version, options.streaming);
    let sum = match mode {
        "load" => black_box(0),
        "walproto-parse" => walproto_parse(frames, version, streaming),
        "walproto-decode" => walproto_decode(frames, version, streaming),
        "pg_walstream-parse" => pg_walstream_parse(&all, version as u32),
        "pg_walstream-decode" => pg_walstream_decode(&all, version as u32),
        other => return Err(format!("unknown mode {other:?} ({})", MODES.join(", "))),
    };
    Ok((corpus.messages, sum))
}

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

// walproto. The checksum: per row image, each value's length plus one per column.

#[inline(always)]
fn touch_tuple(t: &TupleData<'_>) -> u64 {
    t.columns()
        .map(|c| 1 + c.bytes().map_or(0, |b| b.len() as u64))
        .sum()
}

#[inline(always)]
fn touch_rows(m: &Message<'_>) -> u64 {
    match m {
        Message::Insert(i) => touch_tuple(&i.new),
        Message::Update(u) => {
            u.old
                .as_ref()
                .map_or(0, |o| touch_tuple(OldTuple::tuple(o)))
                + touch_tuple(&u.new)
        }
        Message::Delete(d) => touch_tuple(d.old.tuple()),
        _ => 0,
    }
}

/// `ServerMessage::parse`, then `Message::parse` under the context the stream is in.
#[inline(never)]
fn walproto_parse(frames: &[u8], version: ProtocolVersion, streaming: Streaming) -> u64 {
    let base = ParseContext::new(version, streaming);
    let mut in_stream = false;
    let mut sum = 0u64;
    for_each_frame(frames, |start, end| {
        let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(&frames[start..end]) else {
            panic!("not an XLogData at {start}");
        };
        let m = Message::parse(x.data, base.in_stream(in_stream)).unwrap();
        match m {
            Message::StreamStart(_) => in_stream = true,
            Message::StreamStop => in_stream = false,
            _ => {}
        }
        sum = sum.wrapping_add(black_box(touch_rows(&m)));
    });
    sum
}

/// The same through the stateful [`Decoder`] (relation resolved, columns checked against it).
#[inline(never)]
fn walproto_decode(frames: &[u8], version: ProtocolVersion, streaming: Streaming) -> u64 {
    let mut decoder = Decoder::new(version, streaming);
    let mut sum = 0u64;
    for_each_frame(frames, |start, end| {
        let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(&frames[start..end]) else {
            panic!("not an XLogData at {start}");
        };
        let d = decoder.decode(x.data).unwrap();
        black_box(d.relation);
        sum = sum.wrapping_add(black_box(touch_rows(&d.message)));
    });
    sum
}

// pg_walstream.

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

#[inline(always)]
fn touch_pgw(t: &pg_walstream::TupleData) -> u64 {
    t.columns
        .iter()
        .map(|c| 1 + c.as_bytes().len() as u64)
        .sum()
}

/// pg_walstream's parser: each frame a `Bytes` slice of one buffer (as its stream gets it),
/// the header read as its stream reads it, then `parse_wal_message_bytes` on the body.
#[inline(never)]
fn pg_walstream_parse(all: &Bytes, version: u32) -> u64 {
    let mut parser = LogicalReplicationParser::with_protocol_version(version);
    let mut sum = 0u64;
    for_each_frame(all, |start, end| {
        let frame = all.slice(start..end);
        black_box(pgw_header(&frame));
        let msg = parser.parse_wal_message_bytes(frame.slice(25..)).unwrap();
        let touched = match &msg.message {
            LogicalReplicationMessage::Insert { tuple, .. } => touch_pgw(tuple),
            LogicalReplicationMessage::Update {
                old_tuple,
                new_tuple,
                ..
            } => old_tuple.as_ref().map_or(0, touch_pgw) + touch_pgw(new_tuple),
            LogicalReplicationMessage::Delete { old_tuple, .. } => touch_pgw(old_tuple),
            _ => 0,
        };
        sum = sum.wrapping_add(black_box(touched));
    });
    sum
}

#[inline(always)]
fn touch_pgw_row(r: &RowData) -> u64 {
    r.iter().map(|(_, v)| 1 + v.as_bytes().len() as u64).sum()
}

/// pg_walstream's decoder to its `ChangeEvent`s (`PgOutputDecoder::decode_message`: its
/// parser, relation cache and conversion, as its stream does), every value of every row read.
#[inline(never)]
fn pg_walstream_decode(all: &Bytes, version: u32) -> u64 {
    let mut decoder = PgOutputDecoder::with_protocol_version(version);
    let mut sum = 0u64;
    for_each_frame(all, |start, end| {
        let frame = all.slice(start..end);
        let lsn = pgw_header(&frame);
        let event = decoder
            .decode_message(frame.slice(25..), pg_walstream::Lsn::new(lsn))
            .unwrap();
        let touched = match black_box(event).as_ref().map(|e| &e.event_type) {
            Some(EventType::Insert { data, .. }) => touch_pgw_row(data),
            Some(EventType::Update {
                old_data, new_data, ..
            }) => old_data.as_ref().map_or(0, touch_pgw_row) + touch_pgw_row(new_data),
            Some(EventType::Delete { old_data, .. }) => touch_pgw_row(old_data),
            _ => 0,
        };
        sum = sum.wrapping_add(touched);
    });
    sum
}

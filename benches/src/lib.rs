//! Shared helpers for the criterion benchmarks: where the recorded corpora live, how they are
//! recorded from a real PostgreSQL server, and how a bench loads them.
//!
//! The corpora are too big to commit (tens of MB), so they are generated into
//! `target/bench/corpus/` on first use (`cargo run -p benches --release --bin gen-corpus`, or
//! implicitly by `cargo bench -p benches --bench parse`) and reused afterwards.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use walproto::capture::{self, Capture, Header};
use walproto::pgoutput::{Options, OriginFilter, ProtocolVersion, Streaming};
use walproto::replication::{ServerMessage, XLogData};
use walproto::{Lsn, Timestamp};

/// Why something failed, as a message for the person running the bench.
pub type Error = String;

/// The PostgreSQL major the corpus is recorded from unless told otherwise: 15 is installed on
/// every machine of the project (see DESIGN.md, "Test servers"), so the corpus can be rebuilt
/// anywhere. pgoutput protocol 1 writes the same bytes for this workload on 15 to 18.
pub const DEFAULT_MAJOR: u32 = 15;

/// Rows changed per transaction in the mixed workload.
pub const ROWS_PER_TRANSACTION: u32 = 100;

/// Transactions in the mixed workload: 2,000 x 100 = 200,000 row changes.
pub const TRANSACTIONS: u32 = 2_000;

/// The recorded workloads of the parse benches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Ten columns of common types; inserts, updates and deletes; protocol 1, no streaming.
    Mixed,
    /// Fifty columns (ints, text, numerics, timestamps, booleans, some NULLs); protocol 1.
    Wide,
    /// Large transactions streamed while in progress: protocol 4, `streaming = on`, the
    /// server's `logical_decoding_work_mem` at its 64 kB minimum (PostgreSQL 16+).
    Streamed,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 3] = [Workload::Mixed, Workload::Wide, Workload::Streamed];

    /// The short name (file name, criterion group, report rows).
    pub fn name(self) -> &'static str {
        match self {
            Workload::Mixed => "mixed",
            Workload::Wide => "wide",
            Workload::Streamed => "streamed",
        }
    }

    /// The workload named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The pgoutput options it is recorded with: protocol 4 with streaming for the streamed
    /// corpus, protocol 1 for the others.
    pub fn options(self) -> Options {
        match self {
            Workload::Streamed => Options {
                streaming: Streaming::On,
                ..Options::new(ProtocolVersion::V4)
            },
            _ => Options::new(ProtocolVersion::V1),
        }
    }

    /// `target/bench/corpus/NAME.walcap`.
    pub fn corpus_path(self) -> PathBuf {
        bench_dir()
            .join("corpus")
            .join(format!("{}.walcap", self.name()))
    }

    /// The PostgreSQL major it is recorded from by default: [`DEFAULT_MAJOR`], or for the
    /// streamed workload (protocol 4) the newest installed major (16+).
    pub fn default_major(self) -> Result<u32, Error> {
        match self {
            Workload::Streamed => pgtest::installed_majors()
                .into_iter()
                .filter(|m| *m >= 16)
                .max()
                .ok_or_else(|| {
                    "the streamed corpus needs PostgreSQL 16+ (cargo xtask pg install)".to_owned()
                }),
            _ => Ok(DEFAULT_MAJOR),
        }
    }

    /// The table, publication and workload SQL.
    fn sql(self) -> String {
        match self {
            Workload::Mixed => format!("{CREATE_TABLE}\n{}", workload_sql()),
            Workload::Wide => wide_sql(),
            Workload::Streamed => streamed_sql(),
        }
    }
}

/// The workspace's `target` directory (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        // This crate sits at `<workspace>/benches`.
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map_or_else(|| PathBuf::from("target"), |root| root.join("target")),
    }
}

/// Where bench outputs that are not criterion's own go: `target/bench`.
pub fn bench_dir() -> PathBuf {
    target_dir().join("bench")
}

/// The mixed-workload corpus: `target/bench/corpus/mixed.walcap`.
pub fn mixed_corpus_path() -> PathBuf {
    Workload::Mixed.corpus_path()
}

/// A capture file loaded in memory, with the facts a bench reports about it.
#[derive(Debug)]
pub struct Corpus {
    /// The whole file.
    pub file: Vec<u8>,
    /// The header line (JSON).
    pub header: String,
    /// The offset of the first frame in `file`.
    pub frames_offset: usize,
    /// The number of frames (one pgoutput message each).
    pub messages: u64,
    /// The bytes of all frames, length prefixes included: what a bench walks.
    pub frame_bytes: u64,
    /// Messages by pgoutput tag, in order of first appearance.
    pub tags: Vec<(u8, u64)>,
}

impl Corpus {
    /// Loads and checks a capture file: every frame must be an XLogData carrying a message.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let file = fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let cap = Capture::parse(&file).map_err(|e| format!("{}: {e}", path.display()))?;
        let header = cap.header().to_owned();
        let frames_offset = cap.frames_offset();
        let mut messages = 0u64;
        let mut tags: Vec<(u8, u64)> = Vec::new();
        for frame in cap.frames() {
            let frame = frame.map_err(|e| format!("{}: {e}", path.display()))?;
            let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(frame.payload) else {
                return Err(format!(
                    "{}: frame at offset {} is not an XLogData",
                    path.display(),
                    frame.offset
                ));
            };
            let tag = x.data.first().copied().unwrap_or(0);
            match tags.iter_mut().find(|(t, _)| *t == tag) {
                Some((_, n)) => *n += 1,
                None => tags.push((tag, 1)),
            }
            messages += 1;
        }
        let frame_bytes = (file.len() - frames_offset) as u64;
        Ok(Corpus {
            file,
            header,
            frames_offset,
            messages,
            frame_bytes,
            tags,
        })
    }

    /// The frames region of the file: `u32` big-endian length, payload, repeated.
    pub fn frames(&self) -> &[u8] {
        self.file.get(self.frames_offset..).unwrap_or_default()
    }

    /// One line describing the corpus: messages, bytes and messages per tag.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} messages, {} frame bytes ({:.1} bytes/message); tags:",
            self.messages,
            self.frame_bytes,
            self.frame_bytes as f64 / self.messages.max(1) as f64
        );
        for (tag, n) in &self.tags {
            let _ = write!(s, " {}={n}", char::from(*tag));
        }
        s
    }
}

/// Loads the mixed corpus, recording it first from PostgreSQL [`DEFAULT_MAJOR`] if the file
/// does not exist yet.
pub fn load_or_record_mixed() -> Result<Corpus, Error> {
    load_or_record(Workload::Mixed)
}

/// Loads the corpus of `workload`, recording it first (from its
/// [`default_major`](Workload::default_major)) if the file does not exist yet.
pub fn load_or_record(workload: Workload) -> Result<Corpus, Error> {
    let path = workload.corpus_path();
    if !path.exists() {
        record(workload, workload.default_major()?, &path)?;
    }
    Corpus::load(&path)
}

/// The table of the mixed workload: ten columns of common types.
const CREATE_TABLE: &str = "
CREATE TABLE bench_mixed (
    id          int4 PRIMARY KEY,
    counter     int8 NOT NULL,
    name        text,
    code        varchar(32),
    amount      numeric(12, 2),
    active      bool,
    created_at  timestamptz,
    score       float8,
    ref         uuid,
    payload     jsonb
);
CREATE PUBLICATION pub FOR TABLE bench_mixed;
";

/// The workload: `TRANSACTIONS` transactions of `ROWS_PER_TRANSACTION` row changes each, of
/// which 8 in 10 insert a new row, 1 updates a live row and 1 deletes the oldest live row (so
/// every UPDATE and DELETE hits exactly one row). Values are pseudo-random from a fixed seed,
/// with some NULLs, and text lengths that vary from row to row.
fn workload_sql() -> String {
    format!(
        "
SELECT setseed(0.42);
DO $$
DECLARE
    next_id int := 1;
    oldest int := 1;
    victim int;
BEGIN
    FOR tx IN 1..{TRANSACTIONS} LOOP
        FOR j IN 0..{rows_minus_one} LOOP
            IF j % 10 < 8 OR next_id - oldest < 10 THEN
                INSERT INTO bench_mixed VALUES (
                    next_id,
                    (random() * 9e15)::int8,
                    CASE WHEN next_id % 17 = 0 THEN NULL
                         ELSE left(repeat(md5(next_id::text), 4), 8 + (random() * 80)::int) END,
                    'C-' || lpad(((random() * 1e6)::int)::text, 7, '0'),
                    round((random() * 1e8)::numeric, 2),
                    CASE WHEN next_id % 13 = 0 THEN NULL ELSE random() < 0.5 END,
                    timestamptz '2024-01-01 00:00:00+00' + random() * interval '700 days',
                    random() * 1000,
                    md5('ref' || next_id)::uuid,
                    jsonb_build_object(
                        'n', next_id,
                        'tags', jsonb_build_array('a' || (next_id % 7), 'b' || (next_id % 11)),
                        'ok', random() < 0.9,
                        'note', left(md5(random()::text), 4 + (random() * 28)::int))
                );
                next_id := next_id + 1;
            ELSIF j % 10 = 8 THEN
                victim := oldest + (random() * (next_id - oldest - 1))::int;
                UPDATE bench_mixed
                   SET counter = counter + 1,
                       amount = round((random() * 1e8)::numeric, 2),
                       active = NOT coalesce(active, false),
                       score = random() * 1000
                 WHERE id = victim;
            ELSE
                DELETE FROM bench_mixed WHERE id = oldest;
                oldest := oldest + 1;
            END IF;
        END LOOP;
        COMMIT;
    END LOOP;
END
$$;
",
        rows_minus_one = ROWS_PER_TRANSACTION - 1
    )
}

/// Transactions of the wide workload (100 row changes each: 9 in 10 inserts, 1 update).
pub const WIDE_TRANSACTIONS: u32 = 1_000;

/// The wide workload: a 50-column table (`id` plus 49 columns cycling through int4, int8,
/// text, numeric, timestamptz, bool and float8; every 7th value of a row NULL by turns), 1,000
/// transactions of 100 changes: 100,000 row changes.
fn wide_sql() -> String {
    const KINDS: [(&str, &str); 7] = [
        ("int4", "(random() * 2e9)::int4"),
        ("int8", "(random() * 9e15)::int8"),
        (
            "text",
            "left(md5(random()::text), 4 + (random() * 28)::int)",
        ),
        ("numeric(14,3)", "round((random() * 1e9)::numeric, 3)"),
        (
            "timestamptz",
            "timestamptz '2024-01-01 00:00:00+00' + random() * interval '700 days'",
        ),
        ("bool", "random() < 0.5"),
        ("float8", "random() * 1000"),
    ];
    let mut columns = String::new();
    let mut values = String::new();
    for (c, (ty, expr)) in (1..50usize).zip(KINDS.iter().cycle().skip(1)) {
        let _ = write!(columns, ",\n    c{c:02} {ty}");
        let _ = write!(
            values,
            ",\n CASE WHEN (next_id + {c}) % 7 = 0 THEN NULL ELSE {expr} END"
        );
    }
    format!(
        "
CREATE TABLE bench_wide (
    id int4 PRIMARY KEY{columns}
);
CREATE PUBLICATION pub FOR TABLE bench_wide;
SELECT setseed(0.42);
DO $$
DECLARE
    next_id int := 1;
BEGIN
    FOR tx IN 1..{WIDE_TRANSACTIONS} LOOP
        FOR j IN 0..{rows_minus_one} LOOP
            IF j % 10 < 9 OR next_id < 10 THEN
                INSERT INTO bench_wide VALUES (next_id{values});
                next_id := next_id + 1;
            ELSE
                UPDATE bench_wide SET c01 = c01 + 1, c02 = 'updated', c05 = NOT coalesce(c05, false)
                 WHERE id = 1 + (random() * (next_id - 2))::int;
            END IF;
        END LOOP;
        COMMIT;
    END LOOP;
END
$$;
",
        rows_minus_one = ROWS_PER_TRANSACTION - 1
    )
}

/// Transactions of the streamed workload, and row changes in each.
pub const STREAMED_TRANSACTIONS: u32 = 20;
/// Row changes per streamed transaction (inserts, then an update of every tenth row).
pub const STREAMED_ROWS: u32 = 10_000;

/// The streamed workload: 20 transactions of 10,000 inserts plus 1,000 updates each into a
/// four-column table; at `logical_decoding_work_mem = 64kB` every one is streamed in blocks
/// (Stream Start, rows with their xid, Stream Stop; Stream Commit at the end).
fn streamed_sql() -> String {
    format!(
        "
CREATE TABLE bench_stream (id int8 PRIMARY KEY, n int4, v text, f float8);
CREATE PUBLICATION pub FOR TABLE bench_stream;
SELECT setseed(0.42);
DO $$
BEGIN
    FOR tx IN 0..{last_tx} LOOP
        INSERT INTO bench_stream
        SELECT tx * {STREAMED_ROWS} + i, (random() * 1e6)::int4,
               left(repeat(md5(i::text), 4), 8 + (random() * 60)::int), random() * 1000
          FROM generate_series(1, {STREAMED_ROWS}) AS i;
        UPDATE bench_stream SET n = n + 1 WHERE id > tx * {STREAMED_ROWS} AND id % 10 = 0;
        COMMIT;
    END LOOP;
END
$$;
",
        last_tx = STREAMED_TRANSACTIONS - 1
    )
}

/// Records the mixed workload from a throwaway cluster of PostgreSQL `major` into `path`.
///
/// The changes are read back through SQL with `pg_logical_slot_get_binary_changes` (protocol
/// 1, text format), one row per pgoutput message, and each message is wrapped as the walsender
/// would send it: an XLogData with `wal_start = wal_end =` the message's LSN and `send_time`
/// now. The file is written to a temporary name and renamed, so an interrupted run never
/// leaves a partial corpus behind.
pub fn record_mixed(major: u32, path: &Path) -> Result<(), Error> {
    record(Workload::Mixed, major, path)
}

/// Records `workload` from a throwaway cluster of PostgreSQL `major` into `path`, as
/// [`record_mixed`] does (protocol and streaming as the workload says).
pub fn record(workload: Workload, major: u32, path: &Path) -> Result<(), Error> {
    let name = workload.name();
    eprintln!(
        "recording the {name} corpus from PostgreSQL {major} into {} ...",
        path.display()
    );
    let options = workload.options();
    let proto = options.proto_version.number();
    let cluster = pgtest::Config::new(major)
        .setting("logical_decoding_work_mem", "64kB")
        .start()
        .map_err(|e| format!("starting PostgreSQL {major}: {e}"))?;
    let db = cluster
        .create_database("bench_corpus")
        .map_err(|e| e.to_string())?;
    let first = |sql: &str| -> Result<String, Error> {
        db.query(sql)
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next())
            .ok_or_else(|| format!("{sql}: no rows"))
    };
    let server_version = first("SHOW server_version")?;
    let server_version_num: u32 = first("SHOW server_version_num")?
        .parse()
        .map_err(|e| format!("server_version_num: {e}"))?;
    let system_id = first("SELECT system_identifier FROM pg_control_system()")?;
    let timeline: u32 = first("SELECT timeline_id FROM pg_control_checkpoint()")?
        .parse()
        .map_err(|e| format!("timeline_id: {e}"))?;

    let slot = "bench_corpus";
    let sql = workload.sql();
    let (create, work) = sql.split_at(sql.find("SELECT setseed").unwrap_or(0));
    db.psql(create).map_err(|e| e.to_string())?;
    db.psql(&format!(
        "SELECT 1 FROM pg_create_logical_replication_slot('{slot}', 'pgoutput')"
    ))
    .map_err(|e| e.to_string())?;
    db.psql(work).map_err(|e| e.to_string())?;
    let streaming_option = if options.streaming != Streaming::Off {
        ", 'streaming', 'on'"
    } else {
        ""
    };
    let rows = db
        .query(&format!(
            "SELECT lsn, encode(data, 'hex') FROM pg_logical_slot_get_binary_changes(
                 '{slot}', NULL, NULL, 'proto_version', '{proto}', 'publication_names', 'pub'\
                 {streaming_option})"
        ))
        .map_err(|e| e.to_string())?;
    let send_time = Timestamp::from(std::time::SystemTime::now());

    let header = Header {
        server_version: Some(server_version.clone()),
        server_version_num: Some(server_version_num),
        origin: Some(OriginFilter::Any),
        slot: Some(slot.to_owned()),
        publications: Some(vec!["pub".to_owned()]),
        system_id: Some(system_id),
        timeline: Some(timeline),
        ..Header::new(options)
    }
    .to_json();
    let mut out = Vec::with_capacity(rows.iter().map(|r| r.concat().len() / 2 + 40).sum());
    capture::write_header(&mut out, &header);
    let mut payload = Vec::new();
    let mut message = Vec::new();
    for row in &rows {
        let [lsn, hex] = row.as_slice() else {
            return Err(format!("unexpected row from the slot: {row:?}"));
        };
        let lsn: Lsn = lsn.parse().map_err(|_| format!("bad LSN {lsn:?}"))?;
        decode_hex(hex, &mut message)?;
        payload.clear();
        ServerMessage::XLogData(XLogData {
            wal_start: lsn,
            wal_end: lsn,
            send_time,
            data: &message,
        })
        .encode(&mut payload);
        capture::write_frame(&mut out, &payload);
    }
    db.psql(&format!("SELECT pg_drop_replication_slot('{slot}')"))
        .map_err(|e| e.to_string())?;

    let dir = path.parent().ok_or("corpus path has no parent")?;
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = path.with_extension("walcap.tmp");
    fs::write(&tmp, &out).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
    eprintln!(
        "recorded {} messages ({} bytes) from PostgreSQL {server_version}",
        rows.len(),
        out.len()
    );
    Ok(())
}

/// Decodes lowercase or uppercase hex (as `encode(data, 'hex')` prints it) into `out`.
fn decode_hex(hex: &str, out: &mut Vec<u8>) -> Result<(), Error> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    out.clear();
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(format!("odd-length hex ({} digits)", bytes.len()));
    }
    for pair in bytes.chunks_exact(2) {
        let [hi, lo] = pair else { continue };
        match (nibble(*hi), nibble(*lo)) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => {
                return Err(format!(
                    "bad hex digits {:?}",
                    String::from_utf8_lossy(pair)
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes_both_cases_and_rejects_junk() {
        let mut out = Vec::new();
        decode_hex("00ff7Fa0", &mut out).unwrap();
        assert_eq!(out, [0x00, 0xFF, 0x7F, 0xA0]);
        assert!(decode_hex("abc", &mut out).is_err());
        assert!(decode_hex("zz", &mut out).is_err());
    }
}

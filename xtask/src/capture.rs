//! `cargo xtask capture [--major N]...`: records pgoutput streams into `testdata/`.
//!
//! Until walconn exists there is no replication connection, so the recorder reads the slot
//! through SQL: `pg_logical_slot_get_binary_changes` returns one pgoutput message per row with
//! the LSN the walsender would put in both `wal_start` and `wal_end` of its XLogData (except
//! where the walsender sends 0/0: see [`walsender_lsn`]). Each row becomes one `'w'` frame of
//! the capture format (version 1, `/work/shared/CLI.md`), with the capture time as
//! `send_time`. `testdata/README.md` describes every file.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Result;

/// The capture file magic.
pub(crate) const MAGIC: &[u8] = b"WALCAP1\n";

/// The first byte of every pgoutput message type (protocol versions 1-4).
pub(crate) const PGOUTPUT_TAGS: &[u8] = b"BCORYIUDTMSEcAbPKrp";

/// Rows per large transaction: with `logical_decoding_work_mem = 64kB`, a few hundred narrow
/// rows make the server stream a transaction in two or three chunks, and keep files small.
const LARGE_TX_ROWS: u32 = 500;

/// Seconds from the Unix epoch to the PostgreSQL epoch (2000-01-01 UTC).
const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

/// One capture per major: its file suffix and pgoutput options.
struct Variant {
    /// `pgNN-<name>.walcap`.
    name: &'static str,
    proto_version: u32,
    /// "off", "on" or "parallel".
    streaming: &'static str,
    binary: bool,
    two_phase: bool,
    /// The oldest major that supports these options.
    min_major: u32,
}

const VARIANTS: [Variant; 5] = [
    Variant {
        name: "v1",
        proto_version: 1,
        streaming: "off",
        binary: false,
        two_phase: false,
        min_major: 15,
    },
    Variant {
        name: "v2-stream",
        proto_version: 2,
        streaming: "on",
        binary: false,
        two_phase: false,
        min_major: 15,
    },
    Variant {
        name: "v3-twophase",
        proto_version: 3,
        streaming: "on",
        binary: false,
        two_phase: true,
        min_major: 15,
    },
    Variant {
        name: "v4-parallel",
        proto_version: 4,
        streaming: "parallel",
        binary: false,
        two_phase: true,
        min_major: 16,
    },
    Variant {
        name: "binary",
        proto_version: 1,
        streaming: "off",
        binary: true,
        two_phase: false,
        min_major: 15,
    },
];

/// `cargo xtask capture [--major N]...`: every installed major unless majors are named.
pub(crate) fn main(args: &[String]) -> Result<()> {
    let mut majors = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--major", Some(n)) => majors.push(
                n.parse::<u32>()
                    .map_err(|_| format!("--major {n}: not a number"))?,
            ),
            _ => return Err("usage: cargo xtask capture [--major N]...".into()),
        }
    }
    if majors.is_empty() {
        majors = pgtest::installed_majors();
    }
    if majors.is_empty() {
        return Err(format!("no PostgreSQL installed; {}", pgtest::INSTALL_HINT));
    }
    let testdata = crate::workspace_root().join("testdata");
    fs::create_dir_all(&testdata).map_err(|e| format!("creating {}: {e}", testdata.display()))?;
    for major in majors {
        capture_major(major, &testdata)?;
    }
    Ok(())
}

fn capture_major(major: u32, testdata: &Path) -> Result<()> {
    let cluster = pgtest::Config::new(major)
        .setting("logical_decoding_work_mem", "64kB")
        .start()
        .map_err(|e| format!("starting PostgreSQL {major}: {e}"))?;
    let sql = |db: &str, q: &str| cluster.query(db, q).map_err(|e| e.to_string());
    let first = |db: &str, q: &str| -> Result<String> {
        sql(db, q)?
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next())
            .ok_or_else(|| format!("{q}: no rows"))
    };
    let server_version = first("postgres", "SHOW server_version")?;
    let server_version_num: u32 = first("postgres", "SHOW server_version_num")?
        .parse()
        .map_err(|e| format!("server_version_num: {e}"))?;
    let system_id = first(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    )?;
    let timeline: u32 = first(
        "postgres",
        "SELECT timeline_id FROM pg_control_checkpoint()",
    )?
    .parse()
    .map_err(|e| format!("timeline_id: {e}"))?;

    for variant in VARIANTS.iter().filter(|v| major >= v.min_major) {
        let label = variant.name.replace('-', "_");
        let db_name = format!("capture_{label}");
        let db = cluster
            .create_database(&db_name)
            .map_err(|e| e.to_string())?;
        let slot = format!("walcap_{label}");
        db.psql(&format!(
            "SELECT 1 FROM pg_create_logical_replication_slot('{slot}', 'pgoutput', false, {});",
            variant.two_phase
        ))
        .map_err(|e| e.to_string())?;
        db.psql(&workload(&label)).map_err(|e| e.to_string())?;

        // PostgreSQL 15's pgoutput has no `origin` option; it behaves as `any`.
        let origin = if major >= 16 { ", 'origin', 'any'" } else { "" };
        let rows = db
            .query(&format!(
                "SELECT lsn, encode(data, 'hex') FROM pg_logical_slot_get_binary_changes(
                     '{slot}', NULL, NULL,
                     'proto_version', '{}', 'publication_names', 'pub', 'messages', 'true',
                     'streaming', '{}', 'binary', '{}', 'two_phase', '{}'{origin})",
                variant.proto_version,
                variant.streaming,
                variant.binary,
                if variant.two_phase { "on" } else { "off" },
            ))
            .map_err(|e| e.to_string())?;
        let send_time = pg_now()?;

        let mut out = MAGIC.to_vec();
        let header = format!(
            "{{\"server_version\":{},\"server_version_num\":{server_version_num},\
             \"proto_version\":{},\"streaming\":\"{}\",\"binary\":{},\"messages\":true,\
             \"two_phase\":{},\"origin\":\"any\",\"slot\":{},\"publications\":[\"pub\"],\
             \"system_id\":{},\"timeline\":{timeline}}}\n",
            json_string(&server_version),
            variant.proto_version,
            variant.streaming,
            variant.binary,
            variant.two_phase,
            json_string(&slot),
            json_string(&system_id),
        );
        out.extend_from_slice(header.as_bytes());
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            let (Some(lsn), Some(hex)) = (row.first(), row.get(1)) else {
                return Err(format!("unexpected row from the slot: {row:?}"));
            };
            messages.push((parse_lsn(lsn)?, decode_hex(hex)?));
        }
        for (i, (lsn, message)) in messages.iter().enumerate() {
            let next_tag = messages.get(i + 1).and_then(|(_, m)| m.first()).copied();
            let lsn = walsender_lsn(*lsn, message.first().copied(), next_tag);
            let mut payload = Vec::with_capacity(25 + message.len());
            payload.push(b'w');
            payload.extend_from_slice(&lsn.to_be_bytes());
            payload.extend_from_slice(&lsn.to_be_bytes());
            payload.extend_from_slice(&send_time.to_be_bytes());
            payload.extend_from_slice(message);
            let len = u32::try_from(payload.len()).map_err(|_| "frame over 4 GiB".to_owned())?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&payload);
        }
        let summary = check(&out)?;
        let path: PathBuf = testdata.join(format!("pg{major}-{}.walcap", variant.name));
        fs::write(&path, &out).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("{}: {} bytes, {summary}", path.display(), out.len());
        db.psql(&format!("SELECT pg_drop_replication_slot('{slot}')"))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The `wal_start` (and `wal_end`) the walsender would send for a message that the SQL
/// interface reported at `lsn`. The walsender sends 0/0 for messages that pgoutput writes with
/// `last_write = false` ("can't have sync rep confused by sending the same LSN several times",
/// `WalSndPrepareWrite`): Relation and Type messages, and a Begin, Begin Prepare or Stream Start
/// that is followed by an Origin message. The SQL interface reports the real LSN for those.
fn walsender_lsn(lsn: u64, tag: Option<u8>, next_tag: Option<u8>) -> u64 {
    match (tag, next_tag) {
        (Some(b'R' | b'Y'), _) | (Some(b'B' | b'b' | b'S'), Some(b'O')) => 0,
        _ => lsn,
    }
}

/// Checks a capture file: magic, one header line, then whole frames, each an XLogData whose
/// pgoutput message starts with a known tag. Returns the count of each tag, in order of first
/// appearance (for example `B=3 R=2 ...`).
pub(crate) fn check(file: &[u8]) -> Result<String> {
    let rest = file.strip_prefix(MAGIC).ok_or("missing WALCAP1 magic")?;
    let newline = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let (header, mut frames) = rest.split_at(newline);
    let header = std::str::from_utf8(header).map_err(|e| format!("header: {e}"))?;
    for key in [
        "server_version",
        "server_version_num",
        "proto_version",
        "streaming",
        "binary",
        "messages",
        "two_phase",
        "origin",
        "slot",
        "publications",
        "system_id",
        "timeline",
    ] {
        if !header.contains(&format!("\"{key}\":")) {
            return Err(format!("header lacks {key}: {header}"));
        }
    }
    frames = frames.get(1..).unwrap_or_default();
    let mut counts: Vec<(u8, usize)> = Vec::new();
    let mut offset = MAGIC.len() + newline + 1;
    while !frames.is_empty() {
        let (len, rest) = frames
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("truncated frame length at byte {offset}"))?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|e| e.to_string())?;
        let payload = rest
            .get(..len)
            .ok_or_else(|| format!("truncated frame at byte {offset}"))?;
        if payload.first() != Some(&b'w') || payload.len() < 26 {
            return Err(format!(
                "frame at byte {offset} is not an XLogData with a message"
            ));
        }
        let tag = payload.get(25).copied().unwrap_or_default();
        if !PGOUTPUT_TAGS.contains(&tag) {
            return Err(format!(
                "frame at byte {offset}: unknown pgoutput tag {tag:#04x}"
            ));
        }
        match counts.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, n)) => *n += 1,
            None => counts.push((tag, 1)),
        }
        frames = rest.get(len..).unwrap_or_default();
        offset += 4 + len;
    }
    let mut summary = String::new();
    for (tag, n) in counts {
        let _ = write!(summary, "{}={n} ", char::from(tag));
    }
    Ok(summary.trim_end().to_owned())
}

/// The workload, identical for every capture (see `testdata/README.md`). `label` keeps names
/// of cluster-wide objects (replication origins, prepared transactions) apart.
fn workload(label: &str) -> String {
    let n = LARGE_TX_ROWS;
    format!(
        r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text);
CREATE TABLE kitchen (
    id int8 PRIMARY KEY, i2 int2, i4 int4, n numeric, t text, vc varchar(20), b bytea,
    flag bool, f4 float4, f8 float8, ts timestamptz, d date, u uuid, j jsonb, ia int[],
    ta text[], m mood, p posint, c pair, big text
);
-- Out of line and uncompressed: the value is TOASTed however compressible it is.
ALTER TABLE kitchen ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE rfull (id int, v text, big text);
ALTER TABLE rfull REPLICA IDENTITY FULL;
ALTER TABLE rfull ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE ridx (a int NOT NULL, b int NOT NULL, v text);
CREATE UNIQUE INDEX ridx_ab ON ridx (a, b);
ALTER TABLE ridx REPLICA IDENTITY USING INDEX ridx_ab;
CREATE TABLE parent (id serial PRIMARY KEY, v text);
CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent);
CREATE TABLE bulk (id int PRIMARY KEY, v text);
CREATE PUBLICATION pub FOR ALL TABLES;

-- Every column type, special floats, a TOASTed value (8 kB of md5 hex, incompressible enough).
INSERT INTO kitchen VALUES (
    1, 32767, -2147483648, 12345678901234567890.0123456789, 'text with ''quotes'' and ünïcode',
    'varchar', '\xdeadbeef00', true, 'NaN', 'Infinity', '2024-02-29 12:34:56.789012+00',
    '2024-02-29', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"a": [1, 2.5, {{"b": null}}], "c": "d"}}',
    '{{1,2,NULL}}', '{{"x","y z",NULL,""}}', 'happy', 42, ROW(7, 'seven'),
    (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 256) g)
);
INSERT INTO kitchen VALUES (
    2, -32768, 0, 'NaN', '', '', '\x', false, '-Infinity', '-Infinity', '-infinity', 'infinity',
    '00000000-0000-0000-0000-000000000000', '[]', '{{}}', '{{}}', 'sad', 1, ROW(NULL, ''), ''
);
INSERT INTO kitchen (id) VALUES (3);
-- Updates that leave the TOASTed column unchanged, a key change, deletes (replica identity
-- default: the key is sent).
UPDATE kitchen SET i4 = i4 + 1, f4 = 1.5 WHERE id = 1;
UPDATE kitchen SET id = 20 WHERE id = 2;
DELETE FROM kitchen WHERE id = 20;
DELETE FROM kitchen WHERE id = 3;

-- Replica identity full: whole old rows.
INSERT INTO rfull VALUES (1, 'one', (SELECT string_agg(md5((g + 1000)::text), '') FROM generate_series(1, 128) g));
INSERT INTO rfull VALUES (2, NULL, NULL);
UPDATE rfull SET v = 'uno' WHERE id = 1;
UPDATE rfull SET v = 'two' WHERE id = 2;
DELETE FROM rfull WHERE id = 2;

-- Replica identity using an index: a key change, a non-key change, a delete.
INSERT INTO ridx VALUES (1, 1, 'a'), (1, 2, 'b');
UPDATE ridx SET b = 3 WHERE a = 1 AND b = 1;
UPDATE ridx SET v = 'bb' WHERE a = 1 AND b = 2;
DELETE FROM ridx WHERE b = 3;

-- Truncates: plain, and with cascade and restart identity over two tables.
INSERT INTO parent (v) VALUES ('p1'), ('p2');
INSERT INTO child (parent_id) VALUES (1), (2);
TRUNCATE ridx;
TRUNCATE parent RESTART IDENTITY CASCADE;

-- Logical messages: non-transactional, transactional, and one whose content is not UTF-8.
SELECT 1 FROM pg_logical_emit_message(false, 'walcap.nontx', 'outside a transaction');
BEGIN;
INSERT INTO parent (v) VALUES ('with a message');
SELECT 1 FROM pg_logical_emit_message(true, 'walcap.tx', 'inside a transaction');
SELECT 1 FROM pg_logical_emit_message(true, 'walcap.bytes', '\x00ff80fe'::bytea);
COMMIT;

-- A transaction from a replication origin.
SELECT 1 FROM pg_replication_origin_create('walcap_origin_{label}');
SELECT 1 FROM pg_replication_origin_session_setup('walcap_origin_{label}');
BEGIN;
SELECT 1 FROM pg_replication_origin_xact_setup('0/ABCDEF0', '2024-01-01 00:00:00+00');
INSERT INTO parent (v) VALUES ('from an origin');
COMMIT;
SELECT 1 FROM pg_replication_origin_session_reset();
SELECT 1 FROM pg_replication_origin_drop('walcap_origin_{label}');

-- A schema change mid-stream: the next change carries a new Relation message.
ALTER TABLE parent ADD COLUMN added int DEFAULT 7;
INSERT INTO parent (v, added) VALUES ('after alter', 8);
UPDATE kitchen SET t = 'after alter' WHERE id = 1;

-- Large transactions, streamed under logical_decoding_work_mem = 64kB: committed, aborted,
-- and with a rolled-back savepoint (a subtransaction abort).
BEGIN;
INSERT INTO bulk SELECT g, 'c' || g FROM generate_series(1, {n}) g;
COMMIT;
BEGIN;
INSERT INTO bulk SELECT g, 'a' || g FROM generate_series({n} + 1, 2 * {n}) g;
ROLLBACK;
BEGIN;
INSERT INTO bulk SELECT g, 's' || g FROM generate_series(2 * {n} + 1, 2 * {n} + {n} / 2) g;
SAVEPOINT sp;
INSERT INTO bulk SELECT g, 'r' || g FROM generate_series(3 * {n} + 1, 4 * {n}) g;
ROLLBACK TO SAVEPOINT sp;
INSERT INTO bulk VALUES (-1, 'after the savepoint');
COMMIT;

-- Two-phase: commit prepared, rollback prepared, and a large (streamed) prepared transaction.
BEGIN;
INSERT INTO parent (v) VALUES ('prepared then committed');
PREPARE TRANSACTION 'walcap_{label}_commit';
COMMIT PREPARED 'walcap_{label}_commit';
BEGIN;
INSERT INTO parent (v) VALUES ('prepared then rolled back');
PREPARE TRANSACTION 'walcap_{label}_rollback';
ROLLBACK PREPARED 'walcap_{label}_rollback';
BEGIN;
INSERT INTO bulk SELECT g, 'p' || g FROM generate_series(5 * {n} + 1, 6 * {n}) g;
PREPARE TRANSACTION 'walcap_{label}_stream';
COMMIT PREPARED 'walcap_{label}_stream';
"#
    )
}

/// Microseconds since 2000-01-01 UTC, as in XLogData's `send_time`.
fn pg_now() -> Result<i64> {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("clock before 1970: {e}"))?;
    let since_pg = since_unix.saturating_sub(Duration::from_secs(PG_EPOCH_UNIX_SECS));
    i64::try_from(since_pg.as_micros()).map_err(|e| e.to_string())
}

/// `"16/B374D848"` to a 64-bit LSN.
fn parse_lsn(text: &str) -> Result<u64> {
    let (hi, lo) = text
        .split_once('/')
        .ok_or_else(|| format!("bad LSN {text:?}"))?;
    let hi = u64::from_str_radix(hi, 16).map_err(|e| format!("bad LSN {text:?}: {e}"))?;
    let lo = u64::from_str_radix(lo, 16).map_err(|e| format!("bad LSN {text:?}: {e}"))?;
    Ok(hi << 32 | lo)
}

fn decode_hex(hex: &str) -> Result<Vec<u8>> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "odd-length hex from psql ({} digits)",
            digits.len()
        ));
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("bad hex {:?} from psql", String::from_utf8_lossy(pair)))
        })
        .collect()
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed capture is well-formed (see [`check`]).
    #[test]
    fn committed_captures_are_well_formed() {
        let testdata = crate::workspace_root().join("testdata");
        let mut seen = 0;
        for entry in fs::read_dir(&testdata).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "walcap") {
                let bytes = fs::read(&path).unwrap();
                check(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0, "no captures in {}", testdata.display());
    }

    #[test]
    fn check_rejects_truncation_and_unknown_tags() {
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(b"{\"server_version\":\"17.2\",\"server_version_num\":170002,\"proto_version\":1,\"streaming\":\"off\",\"binary\":false,\"messages\":true,\"two_phase\":false,\"origin\":\"any\",\"slot\":\"s\",\"publications\":[\"pub\"],\"system_id\":\"1\",\"timeline\":1}\n");
        let mut frame = vec![b'w'];
        frame.extend_from_slice(&[0; 24]);
        frame.push(b'B');
        let mut good = file.clone();
        good.extend_from_slice(&26u32.to_be_bytes());
        good.extend_from_slice(&frame);
        assert_eq!(check(&good).unwrap(), "B=1");
        let truncated = good.get(..good.len() - 1).unwrap();
        assert!(check(truncated).unwrap_err().contains("truncated frame"));
        let mut unknown = good.clone();
        *unknown.last_mut().unwrap() = b'Z';
        assert!(check(&unknown)
            .unwrap_err()
            .contains("unknown pgoutput tag"));
    }

    #[test]
    fn walsender_sends_zero_lsn_where_pgoutput_writes_without_last_write() {
        assert_eq!(walsender_lsn(7, Some(b'R'), Some(b'I')), 0);
        assert_eq!(walsender_lsn(7, Some(b'Y'), Some(b'R')), 0);
        assert_eq!(walsender_lsn(7, Some(b'B'), Some(b'O')), 0);
        assert_eq!(walsender_lsn(7, Some(b'S'), Some(b'O')), 0);
        assert_eq!(walsender_lsn(7, Some(b'B'), Some(b'R')), 7);
        assert_eq!(walsender_lsn(7, Some(b'O'), Some(b'I')), 7);
        assert_eq!(walsender_lsn(7, Some(b'I'), None), 7);
    }

    #[test]
    fn lsn_and_hex() {
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(decode_hex("00ff7a").unwrap(), vec![0, 255, 0x7a]);
        assert!(decode_hex("0").is_err());
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}

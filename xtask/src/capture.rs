//! `cargo xtask capture [--major N]...`: records pgoutput streams into `testdata/`.
//!
//! For each capture the recorder is the `walstream record` command of walstream-cli (built
//! first, then run as a child process): it connects over the replication protocol (walconn),
//! runs `START_REPLICATION` on a fresh slot before the workload, and writes every CopyData
//! payload the server sends (XLogData and keepalives) as one frame of the capture format
//! (version 1, `/work/shared/CLI.md`). Once the slot has confirmed the WAL position after the
//! workload, the recorder gets SIGINT. `testdata/README.md` describes every file.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use walproto::capture::{Header, MAGIC};

use crate::Result;

/// The first byte of every pgoutput message type (protocol versions 1-4).
pub(crate) const PGOUTPUT_TAGS: &[u8] = b"BCORYIUDTMSEcAbPKrp";

/// A primary keepalive: `'k'`, u64 `wal_end`, i64 `send_time`, u8 reply requested.
const KEEPALIVE_LEN: usize = 18;

/// Rows per large transaction: with `logical_decoding_work_mem = 64kB`, a few hundred narrow
/// rows make the server stream a transaction in two or three chunks, and keep files small.
const LARGE_TX_ROWS: u32 = 500;

/// How long any one wait (the recorder starting, the slot catching up, the recorder
/// stopping) may take before the capture fails.
const TIMEOUT: Duration = Duration::from_secs(60);

/// How often those waits look again.
const POLL: Duration = Duration::from_millis(100);

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
    let walstream = build_walstream()?;
    let scratch = std::env::temp_dir().join(format!("walcap-{}", std::process::id()));
    fs::create_dir_all(&scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let result = majors
        .into_iter()
        .try_for_each(|major| capture_major(major, &walstream, &testdata, &scratch));
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn capture_major(major: u32, walstream: &Path, testdata: &Path, scratch: &Path) -> Result<()> {
    let cluster = pgtest::Config::new(major)
        .setting("logical_decoding_work_mem", "64kB")
        .start()
        .map_err(|e| format!("starting PostgreSQL {major}: {e}"))?;
    for variant in VARIANTS.iter().filter(|v| major >= v.min_major) {
        let label = variant.name.replace('-', "_");
        let db = cluster
            .create_database(&format!("capture_{label}"))
            .map_err(|e| e.to_string())?;
        let slot = format!("walcap_{label}");
        db.psql(&format!(
            "SELECT 1 FROM pg_create_logical_replication_slot('{slot}', 'pgoutput', false, {});",
            variant.two_phase
        ))
        .map_err(|e| e.to_string())?;
        let name = format!("pg{major}-{}", variant.name);
        let path = testdata.join(format!("{name}.walcap"));
        let partial = scratch.join(format!("{name}.walcap"));
        let log = scratch.join(format!("{name}.log"));
        let result = record(&db, &slot, variant, walstream, &partial, &log, &label);
        let out = result.and_then(|()| {
            fs::read(&partial).map_err(|e| format!("reading {}: {e}", partial.display()))
        });
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let stderr = fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "PostgreSQL {major} {}: {e}\nwalstream record said:\n{stderr}",
                    variant.name
                ));
            }
        };
        let summary = check(&out).map_err(|e| format!("{name}: {e}"))?;
        fs::write(&path, &out).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("{}: {} bytes, {summary}", path.display(), out.len());
        // The walsender lets go of the slot a moment after the recorder disconnects.
        wait_for(
            &db,
            &format!("NOT active FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )?;
        db.psql(&format!("SELECT pg_drop_replication_slot('{slot}')"))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Records one capture into `out`: `walstream record` runs in the background from before the
/// workload until the slot has confirmed everything the workload wrote, then stops on SIGINT.
fn record(
    db: &pgtest::Database<'_>,
    slot: &str,
    variant: &Variant,
    walstream: &Path,
    out: &Path,
    log: &Path,
    label: &str,
) -> Result<()> {
    let stderr = fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let mut cmd = Command::new(walstream);
    cmd.arg("record")
        .arg(db.conninfo())
        .args(["--slot", slot, "--publication", "pub", "--messages"])
        .args(["--proto-version", &variant.proto_version.to_string()])
        .args(["--streaming", variant.streaming])
        // PostgreSQL 15 has no `origin` option: walstream omits it for `any`, the behaviour 15
        // always has.
        .args(["--origin", "any", "--status-interval", "1", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    if variant.binary {
        cmd.arg("--binary");
    }
    if variant.two_phase {
        cmd.arg("--two-phase");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("running {}: {e}", walstream.display()))?;
    let result = drive(db, slot, label, &mut child);
    if result.is_err() {
        // Our own child, by its id: never left running.
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

/// With the recorder `child` running: waits until it streams from the slot, runs the workload,
/// waits until the slot confirms the WAL position after it, then stops the recorder.
fn drive(db: &pgtest::Database<'_>, slot: &str, label: &str, child: &mut Child) -> Result<()> {
    let alive = |child: &mut Child| -> Result<()> {
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("walstream record exited early: {status}")),
            Err(e) => Err(format!("waiting for walstream record: {e}")),
        }
    };
    // START_REPLICATION has happened once the walsender holds the slot.
    let deadline = Instant::now() + TIMEOUT;
    while !query_bool(
        db,
        &format!("active FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )? {
        alive(child)?;
        if Instant::now() > deadline {
            return Err(format!(
                "walstream record never started streaming from {slot}"
            ));
        }
        std::thread::sleep(POLL);
    }
    db.psql(&workload(label)).map_err(|e| e.to_string())?;
    let end = db
        .query("SELECT pg_current_wal_lsn()")
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .ok_or("pg_current_wal_lsn(): no rows")?;
    // The recorder acknowledges a transaction end once it is in the file, and, when the stream
    // is idle, a keepalive's position: so everything up to `end` is in the file.
    let deadline = Instant::now() + TIMEOUT;
    while !query_bool(
        db,
        &format!(
            "confirmed_flush_lsn >= '{end}' FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    )? {
        alive(child)?;
        if Instant::now() > deadline {
            return Err(format!("{slot} never confirmed {end}"));
        }
        std::thread::sleep(POLL);
    }
    crate::run(Command::new("kill").args(["-INT", &child.id().to_string()]))?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("walstream record exited with {status}")),
            Ok(None) if Instant::now() > deadline => {
                return Err("walstream record did not stop on SIGINT".into())
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(format!("waiting for walstream record: {e}")),
        }
    }
}

/// Whether `SELECT <expr>` returns `t`.
fn query_bool(db: &pgtest::Database<'_>, expr: &str) -> Result<bool> {
    let rows = db
        .query(&format!("SELECT {expr}"))
        .map_err(|e| e.to_string())?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .is_some_and(|v| v == "t"))
}

/// Waits until `SELECT <expr>` returns `t`.
fn wait_for(db: &pgtest::Database<'_>, expr: &str) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while !query_bool(db, expr)? {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for SELECT {expr}"));
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Builds the CLI and returns the path of its `walstream` binary (wherever the target
/// directory is), from cargo's JSON messages.
fn build_walstream() -> Result<PathBuf> {
    let out = Command::new(crate::cargo())
        .args(["build", "-p", "walstream-cli", "--bin", "walstream"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p walstream-cli failed: {}",
            out.status
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .find_map(executable)
        .ok_or_else(|| "cargo build -p walstream-cli built no walstream binary".to_owned())
}

/// The `"executable"` of a cargo artifact message, if it is the `walstream` binary.
pub(crate) fn executable(line: &str) -> Option<PathBuf> {
    let (_, rest) = line.split_once("\"executable\":\"")?;
    let mut path = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => path.push(chars.next()?),
            c => path.push(c),
        }
    }
    let path = PathBuf::from(path);
    (path.file_name()? == "walstream").then_some(path)
}

/// Checks a capture file: magic, one header line, then whole frames, each either an XLogData
/// whose pgoutput message starts with a known tag or a primary keepalive (`'k'`, 18 bytes).
/// Returns the count of each tag, in order of first appearance, then the keepalives (for
/// example `B=3 R=2 ... keepalives=4`).
pub(crate) fn check(file: &[u8]) -> Result<String> {
    let rest = file.strip_prefix(MAGIC).ok_or("missing WALCAP1 magic")?;
    let newline = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let (header, mut frames) = rest.split_at(newline);
    let header = std::str::from_utf8(header).map_err(|e| format!("header: {e}"))?;
    // The one reader of the header (walproto's); a recorded header says every field.
    let parsed = Header::from_json(header).map_err(|e| format!("header: {e}: {header}"))?;
    for (key, said) in [
        ("server_version", parsed.server_version.is_some()),
        ("server_version_num", parsed.server_version_num.is_some()),
        ("binary", parsed.binary.is_some()),
        ("messages", parsed.messages.is_some()),
        ("two_phase", parsed.two_phase.is_some()),
        ("origin", parsed.origin.is_some()),
        ("slot", parsed.slot.is_some()),
        ("publications", parsed.publications.is_some()),
        ("system_id", parsed.system_id.is_some()),
        ("timeline", parsed.timeline.is_some()),
    ] {
        if !said {
            return Err(format!("header lacks {key}: {header}"));
        }
    }
    frames = frames.get(1..).unwrap_or_default();
    let mut counts: Vec<(u8, usize)> = Vec::new();
    let mut keepalives = 0;
    let mut offset = MAGIC.len() + newline + 1;
    while !frames.is_empty() {
        let (len, rest) = frames
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("truncated frame length at byte {offset}"))?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|e| e.to_string())?;
        let payload = rest
            .get(..len)
            .ok_or_else(|| format!("truncated frame at byte {offset}"))?;
        if payload.first() == Some(&b'k') && payload.len() == KEEPALIVE_LEN {
            keepalives += 1;
            frames = rest.get(len..).unwrap_or_default();
            offset += 4 + len;
            continue;
        }
        if payload.first() != Some(&b'w') || payload.len() < 26 {
            return Err(format!(
                "frame at byte {offset} is neither an XLogData with a message nor a keepalive"
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
    let _ = write!(summary, "keepalives={keepalives}");
    Ok(summary)
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
-- PostgreSQL 18 does not stream a transaction already known to be aborted: flush its WAL
-- (a WAL switch flushes; the idle WAL writer may sleep for seconds) and give the walsender
-- time to stream it while it is still in progress.
SELECT 1 FROM pg_switch_wal();
SELECT pg_sleep(1);
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
        assert_eq!(check(&good).unwrap(), "B=1 keepalives=0");
        // A keepalive frame is valid too; any other kind of frame is not.
        let mut keepalive = vec![b'k'];
        keepalive.extend_from_slice(&[0; 17]);
        let mut with_keepalive = good.clone();
        with_keepalive.extend_from_slice(&18u32.to_be_bytes());
        with_keepalive.extend_from_slice(&keepalive);
        assert_eq!(check(&with_keepalive).unwrap(), "B=1 keepalives=1");
        let mut other = good.clone();
        other.extend_from_slice(&18u32.to_be_bytes());
        other.push(b'x');
        other.extend_from_slice(&[0; 17]);
        assert!(check(&other).unwrap_err().contains("neither"));
        let truncated = good.get(..good.len() - 1).unwrap();
        assert!(check(truncated).unwrap_err().contains("truncated frame"));
        let mut unknown = good.clone();
        *unknown.last_mut().unwrap() = b'Z';
        assert!(check(&unknown)
            .unwrap_err()
            .contains("unknown pgoutput tag"));
    }
}

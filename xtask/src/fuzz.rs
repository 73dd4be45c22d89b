//! `cargo xtask fuzz [--seconds N] [TARGET...]` and `cargo xtask fuzz seed`: the cargo-fuzz
//! targets of `fuzz/`, on the stable toolchain.
//!
//! cargo-fuzz passes nightly-only flags (`-Zsanitizer`, `-Cpasses=sancov-module`, ...), so
//! every `cargo fuzz` runs with `RUSTC_BOOTSTRAP=1`, which lets the stable compiler accept them.
//! The targets run without a sanitizer (`--sanitizer none`): walproto forbids `unsafe`, so
//! AddressSanitizer would only slow the search down; a panic or an overflow (the fuzz profile
//! keeps debug assertions) is what a target finds.
//!
//! `seed` splits the recorded captures in `testdata/` into per-message seeds for each target,
//! under `fuzz/corpus/<target>/` (git-ignored); the run seeds first when a corpus is missing.
//! A crash is minimised with `cargo fuzz tmin`, and the command fails naming the files.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use walproto::capture::{Header, MAGIC};
use walproto::pgoutput::{ProtocolVersion, Streaming};

use crate::{cargo, run, workspace_root, Result};

/// The targets in `fuzz/Cargo.toml`, in the order they run.
pub(crate) const TARGETS: [&str; 17] = [
    "pgoutput_message",
    "replication_message",
    "backup_message",
    "timeline_history",
    "decoder_sequence",
    "capture_file",
    "encode_parse",
    "capture_header",
    "conninfo",
    "pgpass",
    "snapshot_copy",
    "value_decode",
    "follow_assemble",
    "server_bytes",
    "cert_walk",
    "tar_reader",
    "backup_manifest",
];

/// Hand-written seeds for `conninfo`: key=value and URL forms, with the lists, quoting,
/// escapes and options libpq users write.
const CONNINFO_SEEDS: &[&str] = &[
    "host=localhost port=5432 dbname=postgres user=postgres",
    "host=a,b,/tmp port=5432,5433, dbname='my db' password='it\\'s' replication=database",
    "hostaddr=127.0.0.1,::1 host=a,b sslmode=verify-full sslrootcert=system \
     channel_binding=require sslnegotiation=direct",
    "application_name=x fallback_application_name=y options='-c search_path=s' \
     connect_timeout=1 keepalives=1 keepalives_idle=30 keepalives_interval=5 \
     keepalives_count=3 tcp_user_timeout=1000 target_session_attrs=read-write",
    "postgresql://",
    "postgresql://u:p%40ss@h1:5433,[::1]:5434/d%20b?sslmode=disable&application_name=x",
    "postgres://%2Ftmp/db?replication=true&passfile=/p&sslcert=c&sslkey=k",
];

/// Hand-written seeds for `pgpass`: the wanted connection's line, then the file.
const PGPASS_SEEDS: &[&str] = &[
    "localhost:5432:db:u:secret\n# comment\nlocalhost:5432:db:u:secret\n",
    "h:1:d:u:p\n*:*:*:*:any\nh\\:1:d:u:a\\\\b:c\r\n\n",
];

/// Hand-written seeds for `value_decode`: a type (its index in walstream's `oid::DECODED`), a
/// format (0 text, 1 binary), a value.
const VALUE_SEEDS: &[(u8, u8, &[u8])] = &[
    (0, 0, b"t"),
    (1, 0, b"\\x00ff"),
    (3, 0, b"-9223372036854775808"),
    (5, 1, b"\0\0\0\x2a"),
    (10, 0, b"-Infinity"),
    (13, 0, b"2024-02-29 BC"),
    (14, 0, b"23:59:59.999999"),
    (16, 0, b"2024-01-02 03:04:05.123456+05:30"),
    (17, 0, b"1 year 2 mons -3 days 04:05:06.7"),
    (17, 1, b"\0\0\0\0\0\0\0\x01\0\0\0\x02\0\0\0\x03"),
    (18, 0, b"-123.4500"),
    (18, 1, b"\0\x02\0\0\0\0\0\x02\0\x01\x13\x88"),
    (19, 0, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    (20, 0, b"{\"a\": [1, null]}"),
    (25, 0, b"{1,NULL,3}"),
    (26, 0, b"{\"a b\",\"c\\\"d\",NULL}"),
    (
        25,
        1,
        b"\0\0\0\x01\0\0\0\x01\0\0\0\x17\0\0\0\x02\0\0\0\x01\0\0\0\x04\0\0\0\x07\xff\xff\xff\xff",
    ),
];

/// Hand-written seeds for `cert_walk`: the skeleton of a DER certificate (a one-integer
/// `tbsCertificate`, the `signatureAlgorithm`, an empty signature), signed with ECDSA and
/// SHA-384 in short-form lengths, and with RSA and SHA-512 in a long-form outer length.
const CERT_SEEDS: &[&[u8]] = &[
    b"\x30\x15\x30\x03\x02\x01\x01\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x03\x03\x02\x00\x00",
    b"\x30\x81\x16\x30\x03\x02\x01\x01\x30\x0b\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0d\x03\x02\x00\x00",
];

/// Hand-written seeds for `backup_message`: each CopyData payload of a `BASE_BACKUP` archive
/// stream (PostgreSQL 15+) as the server sends it.
const BACKUP_SEEDS: &[&[u8]] = &[
    b"nbase.tar\0\0",
    b"n16384.tar.gz\0/srv/tblspc/fast\0",
    b"dglobal/pg_control\0\0\0\0\x000000600\0",
    b"p\0\0\0\0\0\x01\0\0",
    b"m",
    b"d{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n",
];

/// Hand-written seed for `timeline_history`: the history of a server promoted three times,
/// with the blank line and comment that `readTimeLineHistory` skips.
const TIMELINE_SEED: &[u8] = b"1\t0/3000158\tno recovery target specified\n\n\
    # promoted after the disk failure\n\
    2\t0/5000028\tat restore point \"before_upgrade\"\n\
    3\t1/A2000000\tbefore 2026-11-30 12:00:00.123456+00\n";

/// The directory of `testdata/` with excerpts of a real base backup (PostgreSQL 15's
/// `pg_basebackup -Ft`, see its README): the seeds of `tar_reader` (`*.tar`) and
/// `backup_manifest` (`backup_manifest`).
const BACKUP_SEEDS_DIR: &str = "testdata/backup";

/// The first bytes of each `tar_reader` seed: chunk sizes of 1, 7 and 128 bytes, the last two
/// with every header's checksum fixed up (bit 7; see `walstream::fuzzing::tar_reader`).
const TAR_SEED_PREFIXES: [u8; 3] = [0x00, 0x86, 0xff];

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 30;

/// The sanitizer flag for every `cargo fuzz` command (see the module docs).
const SANITIZER: &str = "none";

/// The largest seed made of several messages or frames. libFuzzer mutates inputs up to the
/// size of the largest seed (at least 4096 bytes); a few kilobytes keep each run fast.
const MAX_SEQUENCE_SEED: usize = 4000;

/// The length of an XLogData header: tag, `wal_start`, `wal_end`, `send_time`.
const XLOG_HEADER_LEN: usize = 25;

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [TARGET...] | cargo xtask fuzz seed";

/// `cargo xtask fuzz ...`.
pub(crate) fn main(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("seed") {
        if args.len() > 1 {
            return Err(USAGE.to_owned());
        }
        return seed();
    }
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = iter
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--seconds needs a positive number\n{USAGE}"))?;
            }
            t if TARGETS.contains(&t) => targets.push(t),
            other => {
                return Err(format!(
                    "unknown target or option {other:?} (targets: {})\n{USAGE}",
                    TARGETS.join(", ")
                ))
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    fuzz(&targets, seconds)
}

/// Installs cargo-fuzz if needed, seeds missing corpora, builds every target once, then runs
/// each for `seconds`; crashes are minimised and reported together at the end.
fn fuzz(targets: &[&str], seconds: u64) -> Result<()> {
    let started = Instant::now();
    install_cargo_fuzz()?;
    let root = workspace_root();
    let corpus = root.join("fuzz/corpus");
    if TARGETS.iter().any(|t| is_empty_dir(&corpus.join(t))) {
        seed()?;
    }
    let build = Instant::now();
    run(cargo_fuzz(&root).args(["build", "--sanitizer", SANITIZER]))?;
    eprintln!("xtask fuzz: built in {:.0?}", build.elapsed());
    let mut crashes = Vec::new();
    for target in targets {
        let t = Instant::now();
        let since = SystemTime::now();
        let status = cargo_fuzz(&root)
            .args(["run", "--sanitizer", SANITIZER, target])
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // A slow input is a bug too (nothing here should take a second), but allow for a
            // loaded 2-core machine.
            .arg("-timeout=20")
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1")
            .status()
            .map_err(|e| format!("running cargo fuzz: {e}"))?;
        eprintln!("xtask fuzz: {target}: {status} after {:.0?}", t.elapsed());
        if !status.success() {
            let artifacts = new_files(&root.join("fuzz/artifacts").join(target), since);
            if artifacts.is_empty() {
                return Err(format!(
                    "cargo fuzz run {target} failed without an artifact"
                ));
            }
            for artifact in artifacts {
                crashes.push(minimise(&root, target, &artifact));
            }
        }
    }
    eprintln!("xtask fuzz: done in {:.0?}", started.elapsed());
    if crashes.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the fuzzers found {} crash(es):\n{}\nReplay one with `RUSTC_BOOTSTRAP=1 cargo fuzz run \
         -s {SANITIZER} TARGET FILE`; commit it under testdata/malformed/TARGET/ (walproto's \
         `malformed` test replays that directory) and fix it.",
        crashes.len(),
        crashes.join("\n")
    ))
}

/// `cargo fuzz tmin` on a crash; returns a line naming the crash and its minimised form.
/// libFuzzer writes each smaller input it finds as `minimized-from-<hash>` beside the crash;
/// the smallest is the result.
fn minimise(root: &Path, target: &str, artifact: &Path) -> String {
    let since = SystemTime::now();
    let status = cargo_fuzz(root)
        .args(["tmin", "--sanitizer", SANITIZER, "--runs", "2000", target])
        .arg(artifact)
        .status();
    let minimised = new_files(&root.join("fuzz/artifacts").join(target), since)
        .into_iter()
        .filter(|p| file_name(p).starts_with("minimized-"))
        .min_by_key(|p| fs::metadata(p).map_or(u64::MAX, |m| m.len()));
    match minimised {
        Some(m) => format!(
            "  {target}: {} (minimised: {})",
            artifact.display(),
            m.display()
        ),
        None => format!("  {target}: {} (tmin: {status:?})", artifact.display()),
    }
}

/// `cargo fuzz` from the workspace root, with the stable compiler accepting nightly flags.
fn cargo_fuzz(root: &Path) -> Command {
    let mut cmd = Command::new(cargo());
    cmd.arg("fuzz")
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn install_cargo_fuzz() -> Result<()> {
    let installed = Command::new(cargo())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        return Ok(());
    }
    run(Command::new(cargo()).args(["install", "cargo-fuzz", "--locked"]))
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// The files in `dir` modified at or after `since`, oldest first.
fn new_files(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let mut files: Vec<(SystemTime, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let modified = e.metadata().ok()?.modified().ok()?;
            (modified >= since).then(|| (modified, e.path()))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `cargo xtask fuzz seed`: seeds for each target from every `testdata/*.walcap`, written as
/// `fuzz/corpus/<target>/seed-<hash>` (existing files are kept, so a corpus only grows).
fn seed() -> Result<()> {
    let root = workspace_root();
    let mut captures: Vec<PathBuf> = fs::read_dir(root.join("testdata"))
        .map_err(|e| format!("reading testdata: {e}"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "walcap"))
        .collect();
    captures.sort();
    let mut seeds = Seeds::default();
    seeds.add_hand_written();
    seeds.add_backup(&root.join(BACKUP_SEEDS_DIR))?;
    for path in &captures {
        let file = fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let capture = Capture::parse(&file).map_err(|e| format!("{}: {e}", path.display()))?;
        seeds.add_capture(&capture);
    }
    let corpus = root.join("fuzz/corpus");
    for target in TARGETS {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let list = seeds.for_target(target);
        for s in list {
            let path = dir.join(format!("seed-{:016x}", hash(s)));
            if !path.exists() {
                fs::write(&path, s).map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
        }
        eprintln!("xtask fuzz seed: {target}: {} seeds", list.len());
    }
    Ok(())
}

/// The seeds of every target, deduplicated by a key of their shape (the message kinds and
/// sizes, not the LSNs and xids that make every recorded message unique), so a corpus holds
/// a few hundred inputs rather than every row of every capture.
#[derive(Default)]
struct Seeds {
    pgoutput: Vec<Vec<u8>>,
    replication: Vec<Vec<u8>>,
    backup: Vec<Vec<u8>>,
    timeline: Vec<Vec<u8>>,
    decoder: Vec<Vec<u8>>,
    capture: Vec<Vec<u8>>,
    header: Vec<Vec<u8>>,
    conninfo: Vec<Vec<u8>>,
    pgpass: Vec<Vec<u8>>,
    copy: Vec<Vec<u8>>,
    value: Vec<Vec<u8>>,
    server: Vec<Vec<u8>>,
    cert: Vec<Vec<u8>>,
    tar: Vec<Vec<u8>>,
    manifest: Vec<Vec<u8>>,
    keys: HashSet<(&'static str, u64)>,
}

impl Seeds {
    fn for_target(&self, target: &str) -> &[Vec<u8>] {
        match target {
            "pgoutput_message" => &self.pgoutput,
            "replication_message" => &self.replication,
            "backup_message" => &self.backup,
            "timeline_history" => &self.timeline,
            "decoder_sequence" => &self.decoder,
            "capture_file" => &self.capture,
            "capture_header" => &self.header,
            "conninfo" => &self.conninfo,
            "pgpass" => &self.pgpass,
            "snapshot_copy" => &self.copy,
            "value_decode" => &self.value,
            "server_bytes" => &self.server,
            "cert_walk" => &self.cert,
            "tar_reader" => &self.tar,
            "backup_manifest" => &self.manifest,
            // The follower reads the decoder's input format.
            "follow_assemble" => &self.decoder,
            // encode_parse reads an `arbitrary` description, not wire bytes: it starts empty.
            _ => &[],
        }
    }

    fn push(&mut self, target: &'static str, key: impl Hash, seed: Vec<u8>) {
        if self.keys.insert((target, hash(key))) {
            match target {
                "pgoutput_message" => self.pgoutput.push(seed),
                "replication_message" => self.replication.push(seed),
                "decoder_sequence" => self.decoder.push(seed),
                "capture_header" => self.header.push(seed),
                _ => self.capture.push(seed),
            }
        }
    }

    /// The seeds that do not come from the captures.
    fn add_hand_written(&mut self) {
        self.conninfo = CONNINFO_SEEDS
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        self.backup = BACKUP_SEEDS.iter().map(|s| s.to_vec()).collect();
        self.timeline = vec![TIMELINE_SEED.to_vec()];
        self.pgpass = PGPASS_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
        self.value = VALUE_SEEDS
            .iter()
            .map(|&(which, format, value)| [&[which, format], value].concat())
            .collect();
        // A binary COPY stream as walstream's snapshot unit tests build it: two columns
        // (an int4 and a NULL, then an int4 and an empty value), the trailer; the first byte
        // is the column count and a chunk size of 4.
        let mut copy = vec![0x32];
        copy.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        copy.extend_from_slice(&[0; 8]);
        copy.extend_from_slice(b"\0\x02\0\0\0\x04\0\0\0\x01\xff\xff\xff\xff");
        copy.extend_from_slice(b"\0\x02\0\0\0\x04\0\0\0\x02\0\0\0\0");
        copy.extend_from_slice(b"\xff\xff");
        self.copy = vec![copy];
        self.server = server_sessions();
        self.cert = CERT_SEEDS.iter().map(|c| c.to_vec()).collect();
    }

    /// The seeds of the real base backup excerpts in `dir`: each archive behind each of
    /// [`TAR_SEED_PREFIXES`]; the manifest whole, and without its `Manifest-Checksum` line (the
    /// target appends a correct one, so the fields are reached).
    fn add_backup(&mut self, dir: &Path) -> Result<()> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for path in files {
            let read = || fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()));
            if path.extension().is_some_and(|x| x == "tar") {
                let archive = read()?;
                for prefix in TAR_SEED_PREFIXES {
                    self.tar.push([&[prefix], archive.as_slice()].concat());
                }
            } else if path.file_name().is_some_and(|n| n == "backup_manifest") {
                let text = read()?;
                let marker = b"\n\"Manifest-Checksum\"";
                let body = text
                    .windows(marker.len())
                    .position(|w| w == marker)
                    .and_then(|at| text.get(..=at))
                    .ok_or_else(|| format!("{}: no Manifest-Checksum line", path.display()))?;
                self.manifest.push(body.to_vec());
                self.manifest.push(text);
            }
        }
        if self.tar.is_empty() || self.manifest.is_empty() {
            return Err(format!("{}: no *.tar or no backup_manifest", dir.display()));
        }
        Ok(())
    }

    fn add_capture(&mut self, capture: &Capture<'_>) {
        let line = capture.head.get(MAGIC.len()..capture.head.len() - 1);
        self.push("capture_header", line, line.unwrap_or_default().to_vec());
        let mut in_stream = false;
        // The decoder and capture seeds are runs of consecutive XLogData frames up to
        // `MAX_SEQUENCE_SEED` bytes. A full run skips row messages (the long middle of a large
        // transaction) and ends at the next message of another kind, which starts the next
        // run, so what follows a large transaction (its commit, a Stream Abort) is kept too.
        let mut run: Vec<&[u8]> = Vec::new();
        for &frame in &capture.frames {
            self.push(
                "replication_message",
                (frame.first(), frame.len(), frame.get(XLOG_HEADER_LEN)),
                frame.to_vec(),
            );
            let Some(msg) = xlog_message(frame) else {
                continue;
            };
            let tag = msg.first().copied().unwrap_or(0);
            let ctx = capture.context_byte(in_stream);
            let mut seed = vec![ctx];
            seed.extend_from_slice(msg);
            self.push("pgoutput_message", (ctx, tag, msg.len()), seed);
            if capture.streaming_enabled() {
                match tag {
                    b'S' => in_stream = true,
                    b'E' => in_stream = false,
                    _ => {}
                }
            }
            let row = matches!(tag, b'I' | b'U' | b'D' | b'T');
            if run_len(&run) + 2 + frame.len() > MAX_SEQUENCE_SEED {
                if row {
                    continue;
                }
                self.add_run(capture, &run);
                run.clear();
            }
            run.push(frame);
        }
        self.add_run(capture, &run);
    }

    /// A decoder seed and a capture seed from consecutive XLogData frames.
    fn add_run(&mut self, capture: &Capture<'_>, run: &[&[u8]]) {
        let messages: Vec<&[u8]> = run.iter().filter_map(|f| xlog_message(f)).collect();
        if messages.is_empty() {
            return;
        }
        let shape: Vec<(u8, usize)> = messages
            .iter()
            .map(|m| (m.first().copied().unwrap_or(0), m.len()))
            .collect();
        let ctx = capture.context_byte(false);
        let mut seed = vec![ctx];
        for m in &messages {
            let Ok(len) = u16::try_from(m.len()) else {
                break;
            };
            seed.extend_from_slice(&len.to_be_bytes());
            seed.extend_from_slice(m);
        }
        self.push("decoder_sequence", (ctx, &shape), seed);
        let mut file = capture.head.to_vec();
        for f in run {
            file.extend_from_slice(&u32::try_from(f.len()).unwrap_or(0).to_be_bytes());
            file.extend_from_slice(f);
        }
        self.push("capture_file", &shape, file);
    }
}

/// Hand-written seeds for `server_bytes`: whole server sides of a session, each opening with
/// another authentication (trust, cleartext, MD5, then a SCRAM exchange, which stops at the
/// nonce check: the client's nonce is random), then the answers to `IDENTIFY_SYSTEM`, `SHOW`,
/// `CREATE_REPLICATION_SLOT`, `TIMELINE_HISTORY` and `START_REPLICATION` (a keepalive asking
/// for a reply, an XLogData, CopyDone) in the order `walconn::fuzzing::server_bytes` sends
/// them.
fn server_sessions() -> Vec<Vec<u8>> {
    fn msg(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
        out.push(tag);
        out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(body);
    }
    /// A one-row text result: RowDescription, DataRow, CommandComplete, ReadyForQuery.
    fn result(out: &mut Vec<u8>, columns: &[(&str, &str)], tag: &str) {
        let mut desc = u16::try_from(columns.len())
            .unwrap_or(0)
            .to_be_bytes()
            .to_vec();
        let mut row = desc.clone();
        for (name, value) in columns {
            desc.extend_from_slice(name.as_bytes());
            // NUL, table OID, column number, type OID (text), length, modifier, format.
            desc.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff]);
            desc.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
            row.extend_from_slice(&u32::try_from(value.len()).unwrap_or(0).to_be_bytes());
            row.extend_from_slice(value.as_bytes());
        }
        msg(out, b'T', &desc);
        msg(out, b'D', &row);
        msg(out, b'C', &[tag.as_bytes(), b"\0"].concat());
        msg(out, b'Z', b"I");
    }
    let auths: [&[(u32, &[u8])]; 4] = [
        &[(0, b"")],
        &[(3, b""), (0, b"")],
        &[(5, b"salt"), (0, b"")],
        &[
            (10, b"SCRAM-SHA-256\0\0"),
            (11, b"r=nonce,s=c2FsdA==,i=4096"),
        ],
    ];
    auths
        .iter()
        .map(|auth| {
            let mut out = Vec::new();
            for (code, body) in *auth {
                msg(&mut out, b'R', &[&code.to_be_bytes()[..], body].concat());
            }
            msg(&mut out, b'S', b"server_version\x0017.2\0");
            msg(&mut out, b'K', &[0, 0, 0, 1, 0, 0, 0, 2]);
            msg(&mut out, b'Z', b"I");
            result(
                &mut out,
                &[
                    ("systemid", "7000000000000000001"),
                    ("timeline", "1"),
                    ("xlogpos", "0/1000000"),
                    ("dbname", "d"),
                ],
                "IDENTIFY_SYSTEM",
            );
            result(&mut out, &[("wal_level", "logical")], "SHOW");
            result(
                &mut out,
                &[
                    ("slot_name", "s"),
                    ("consistent_point", "0/1000028"),
                    ("snapshot_name", "00000003-00000002-1"),
                    ("output_plugin", "pgoutput"),
                ],
                "CREATE_REPLICATION_SLOT",
            );
            result(
                &mut out,
                &[("filename", "00000001.history"), ("content", "")],
                "TIMELINE_HISTORY",
            );
            msg(&mut out, b'W', &[0, 0, 0]);
            let mut keepalive = vec![b'k'];
            keepalive.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0x28]);
            keepalive.extend_from_slice(&[0; 8]);
            keepalive.push(1);
            msg(&mut out, b'd', &keepalive);
            let mut xlog = vec![b'w'];
            xlog.extend_from_slice(&[0; 24]);
            xlog.extend_from_slice(b"B\0\0\0\0\x01\0\0\x28\0\0\0\0\0\0\0\0\0\0\x02\x10");
            msg(&mut out, b'd', &xlog);
            msg(&mut out, b'c', b"");
            msg(&mut out, b'C', b"START_REPLICATION\0");
            msg(&mut out, b'Z', b"I");
            out
        })
        .collect()
}

/// The bytes of a run of frames in the decoder's framing (a `u16` length before each).
fn run_len(run: &[&[u8]]) -> usize {
    run.iter().map(|f| 2 + f.len()).sum()
}

/// The pgoutput message of an XLogData frame.
fn xlog_message(frame: &[u8]) -> Option<&[u8]> {
    (frame.first() == Some(&b'w'))
        .then(|| frame.get(XLOG_HEADER_LEN..))
        .flatten()
        .filter(|m| !m.is_empty())
}

fn hash(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A capture file split into its frames.
struct Capture<'a> {
    /// The magic and header line, the start of every capture seed.
    head: &'a [u8],
    proto_version: ProtocolVersion,
    streaming: Streaming,
    frames: Vec<&'a [u8]>,
}

impl<'a> Capture<'a> {
    fn parse(file: &'a [u8]) -> Result<Self> {
        let rest = file.strip_prefix(MAGIC).ok_or("no WALCAP1 magic")?;
        let newline = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no header line")?;
        let head = file.get(..MAGIC.len() + newline + 1).unwrap_or_default();
        let header = String::from_utf8_lossy(rest.get(..newline).unwrap_or_default());
        let header = Header::from_json(&header).map_err(|e| format!("the header: {e}"))?;
        let (proto_version, streaming) = (header.proto_version, header.streaming);
        let mut frames = Vec::new();
        let mut rest = file.get(head.len()..).unwrap_or_default();
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_be_bytes(*len) as usize;
            let frame = tail.get(..len).ok_or("a truncated frame")?;
            frames.push(frame);
            rest = tail.get(len..).unwrap_or_default();
        }
        Ok(Capture {
            head,
            proto_version,
            streaming,
            frames,
        })
    }

    fn streaming_enabled(&self) -> bool {
        self.proto_version >= ProtocolVersion::V2 && self.streaming != Streaming::Off
    }

    /// The first byte of a `pgoutput_message` or `decoder_sequence` input: the inverse of
    /// `walproto::fuzzing::context_from_byte` (version in bits 0-1, streaming in bits 2-3,
    /// inside a streamed block in bit 5).
    fn context_byte(&self, in_stream: bool) -> u8 {
        let version = self.proto_version.number() - 1;
        let streaming = match self.streaming {
            Streaming::Off => 0,
            Streaming::On => 1,
            Streaming::Parallel => 2,
        };
        version | streaming << 2 | u8::from(in_stream) << 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `TARGETS` lists exactly the `[[bin]]`s of `fuzz/Cargo.toml`.
    #[test]
    fn targets_match_the_fuzz_manifest() {
        let manifest = fs::read_to_string(workspace_root().join("fuzz/Cargo.toml")).unwrap();
        let mut names: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|n| *n != "walproto-fuzz")
            .collect();
        let mut targets = TARGETS.to_vec();
        names.sort_unstable();
        targets.sort_unstable();
        assert_eq!(names, targets);
    }

    #[test]
    fn header_fields_and_context_bytes() {
        let header = r#"{"server_version_num":170010,"proto_version":4,"streaming":"parallel","binary":false}"#;
        let parsed = Header::from_json(header).unwrap();
        assert_eq!(parsed.proto_version, ProtocolVersion::V4);
        assert_eq!(parsed.streaming, Streaming::Parallel);
        assert_eq!(parsed.binary, Some(false));
        assert_eq!(parsed.slot, None);
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(b"\n\0\0\0\x01k");
        let capture = Capture::parse(&file).unwrap();
        assert_eq!(capture.frames, [b"k"]);
        // Version 4 is 3, parallel is 2 << 2, inside a block is 1 << 5.
        assert_eq!(capture.context_byte(true), 3 | 8 | 32);
        assert!(Capture::parse(&file[..file.len() - 1]).is_err());
    }
}

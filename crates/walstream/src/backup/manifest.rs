//! The backup manifest; see [`Manifest`].

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::Digest;
use walproto::Lsn;

use super::error::{Error, Result};

/// The files [`Manifest::verify`] skips, as `pg_verifybackup` does by default: they are
/// expected to change after the backup (`-R` appends to `postgresql.auto.conf`).
pub const VERIFY_IGNORED: &[&str] = &[
    "backup_manifest",
    "pg_wal",
    "postgresql.auto.conf",
    "recovery.signal",
    "standby.signal",
];

/// The read buffer of [`Manifest::verify`].
const READ_BUFFER: usize = 256 * 1024;

/// A parsed backup manifest (`backup_manifest`): what it lists, its own checksum, and checking a
/// backup's files against it, as `pg_verifybackup` does for file sizes and checksums.
///
/// ```no_run
/// use walstream::backup::Manifest;
///
/// # fn run() -> walstream::backup::Result<()> {
/// let dir = std::path::Path::new("/backups/today");
/// let text = std::fs::read(dir.join("backup_manifest")).unwrap();
/// let manifest = Manifest::parse(&text)?; // Also checks its Manifest-Checksum.
/// manifest.verify(dir)?; // Every file's size and checksum.
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `PostgreSQL-Backup-Manifest-Version`: 1, or 2 from PostgreSQL 17 (with the system
    /// identifier).
    pub version: u32,
    /// `System-Identifier` (version 2).
    pub system_identifier: Option<u64>,
    /// The files of the backup.
    pub files: Vec<ManifestFile>,
    /// The WAL the backup needs to be consistent.
    pub wal_ranges: Vec<WalRange>,
}

/// One file of a [`Manifest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    /// The path relative to the data directory (`Path`, or the hex-decoded `Encoded-Path`
    /// of a name that is not UTF-8).
    pub path: PathBuf,
    /// `Size` in bytes.
    pub size: u64,
    /// `Last-Modified`, as the server wrote it (`2024-01-02 03:04:05 GMT`).
    pub last_modified: String,
    /// `Checksum-Algorithm` and `Checksum`; `None` for a backup without checksums.
    pub checksum: Option<(ChecksumAlgorithm, Vec<u8>)>,
}

/// The checksum algorithm of a manifest's files (`MANIFEST_CHECKSUMS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChecksumAlgorithm {
    /// CRC-32C, the server's default; the manifest holds its four bytes in the server's
    /// byte order (little-endian on the platforms PostgreSQL mostly runs on, and here).
    Crc32c,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// One `WAL-Ranges` entry: the WAL from `start` to `end` on `timeline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalRange {
    /// The timeline.
    pub timeline: u32,
    /// `Start-LSN`.
    pub start: Lsn,
    /// `End-LSN`.
    pub end: Lsn,
}

/// A file that differs from the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The file, relative to the backup's directory.
    pub path: PathBuf,
    /// How it differs.
    pub problem: Problem,
}

/// How a file differs from the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The file is not in the backup.
    Missing,
    /// Its size differs.
    Size {
        /// The manifest's size.
        expected: u64,
        /// The file's.
        actual: u64,
    },
    /// Its checksum differs.
    Checksum {
        /// The manifest's, hex.
        expected: String,
        /// The file's, hex.
        actual: String,
    },
    /// It could not be read (the operating system's message).
    Unreadable(String),
    /// It is in the backup but not in the manifest.
    Unexpected,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.problem {
            Problem::Missing => write!(f, "{p} is missing"),
            Problem::Size { expected, actual } => {
                write!(f, "{p} has {actual} bytes, the manifest says {expected}")
            }
            Problem::Checksum { expected, actual } => {
                write!(f, "{p} has checksum {actual}, the manifest says {expected}")
            }
            Problem::Unreadable(e) => write!(f, "{p} could not be read: {e}"),
            Problem::Unexpected => write!(f, "{p} is not in the manifest"),
        }
    }
}

impl ChecksumAlgorithm {
    /// The algorithm of a `MANIFEST_CHECKSUMS` name (`CRC32C`, `SHA224`, ...; upper case, as
    /// the manifest writes it); `None` for any other name (`NONE` included).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "CRC32C" => Self::Crc32c,
            "SHA224" => Self::Sha224,
            "SHA256" => Self::Sha256,
            "SHA384" => Self::Sha384,
            "SHA512" => Self::Sha512,
            _ => return None,
        })
    }

    /// The name `MANIFEST_CHECKSUMS` and the manifest use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32c => "CRC32C",
            Self::Sha224 => "SHA224",
            Self::Sha256 => "SHA256",
            Self::Sha384 => "SHA384",
            Self::Sha512 => "SHA512",
        }
    }
}

/// One file as the manifest's JSON has it.
struct RawFile {
    path: Option<String>,
    encoded_path: Option<String>,
    size: u64,
    last_modified: String,
    checksum_algorithm: Option<String>,
    checksum: Option<String>,
}

/// The field `key` of `v`, which must be there.
fn get<'v>(v: &'v Value, key: &str, what: &str) -> Result<&'v Value> {
    v.get(key)
        .ok_or_else(|| Error::Manifest(format!("{what} has no {key:?}")))
}

fn string(v: &Value, key: &str, what: &str) -> Result<String> {
    get(v, key, what)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Manifest(format!("{what}: {key:?} is not a string")))
}

fn opt_string(v: &Value, key: &str, what: &str) -> Result<Option<String>> {
    v.get(key).map(|_| string(v, key, what)).transpose()
}

fn unsigned(v: &Value, key: &str, what: &str) -> Result<u64> {
    get(v, key, what)?
        .as_u64()
        .ok_or_else(|| Error::Manifest(format!("{what}: {key:?} is not an unsigned integer")))
}

fn array<'v>(v: &'v Value, key: &str) -> Result<&'v [Value]> {
    match v.get(key) {
        None => Ok(&[]),
        Some(a) => a
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| Error::Manifest(format!("{key:?} is not an array"))),
    }
}

impl Manifest {
    /// Parses a manifest and checks its `Manifest-Checksum`: the SHA-256 of its text up to
    /// and including the newline before the `"Manifest-Checksum"` line.
    pub fn parse(text: &[u8]) -> Result<Self> {
        let raw: Value =
            serde_json::from_slice(text).map_err(|e| Error::Manifest(e.to_string()))?;
        let stated = string(&raw, "Manifest-Checksum", "the manifest")?;
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        let covered = body
            .iter()
            .rposition(|&b| b == b'\n')
            .and_then(|nl| text.get(..=nl))
            .filter(|c| {
                text.get(c.len()..)
                    .is_some_and(|rest| rest.starts_with(b"\"Manifest-Checksum\""))
            })
            .ok_or_else(|| {
                Error::Manifest(
                    "the Manifest-Checksum is not on a line of its own at the end".into(),
                )
            })?;
        let computed = hex(&sha2::Sha256::digest(covered));
        if !computed.eq_ignore_ascii_case(&stated) {
            return Err(Error::ManifestChecksum { stated, computed });
        }
        let version = unsigned(&raw, "PostgreSQL-Backup-Manifest-Version", "the manifest")?;
        let files = array(&raw, "Files")?
            .iter()
            .map(|f| {
                RawFile {
                    path: opt_string(f, "Path", "a file")?,
                    encoded_path: opt_string(f, "Encoded-Path", "a file")?,
                    size: unsigned(f, "Size", "a file")?,
                    last_modified: string(f, "Last-Modified", "a file")?,
                    checksum_algorithm: opt_string(f, "Checksum-Algorithm", "a file")?,
                    checksum: opt_string(f, "Checksum", "a file")?,
                }
                .into_file()
            })
            .collect::<Result<Vec<_>>>()?;
        let wal_ranges = array(&raw, "WAL-Ranges")?
            .iter()
            .map(|r| {
                let lsn = |key: &str| {
                    let s = string(r, key, "a WAL range")?;
                    s.parse::<Lsn>()
                        .map_err(|_| Error::Manifest(format!("WAL-Ranges: bad {key} {s:?}")))
                };
                let timeline = unsigned(r, "Timeline", "a WAL range")?;
                Ok(WalRange {
                    timeline: u32::try_from(timeline).map_err(|_| {
                        Error::Manifest(format!("WAL-Ranges: timeline {timeline} too large"))
                    })?,
                    start: lsn("Start-LSN")?,
                    end: lsn("End-LSN")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Manifest {
            version: u32::try_from(version)
                .map_err(|_| Error::Manifest(format!("version {version} too large")))?,
            system_identifier: raw.get("System-Identifier").and_then(Value::as_u64),
            files,
            wal_ranges,
        })
    }

    /// Checks `dir` against the manifest as `pg_verifybackup` does (without its WAL check):
    /// every listed file present, of the listed size and with the listed checksum, and no
    /// file that the manifest does not list (tablespaces are followed through their
    /// `pg_tblspc` links). Paths under [`VERIFY_IGNORED`] are skipped. Every mismatch is
    /// collected into [`Error::Verify`].
    ///
    /// Blocking file I/O: from async code, call it in `tokio::task::spawn_blocking`.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        let mut mismatches = Vec::new();
        let mut buf = vec![0u8; READ_BUFFER];
        for file in &self.files {
            if VERIFY_IGNORED.iter().any(|i| file.path.starts_with(i)) {
                continue;
            }
            if let Some(problem) = check_file(&dir.join(&file.path), file, &mut buf) {
                mismatches.push(Mismatch {
                    path: file.path.clone(),
                    problem,
                });
            }
        }
        let listed: std::collections::HashSet<&Path> =
            self.files.iter().map(|f| f.path.as_path()).collect();
        let mut found = Vec::new();
        walk(dir, Path::new(""), &mut found, &mut mismatches);
        mismatches.extend(
            found
                .into_iter()
                .filter(|p| !listed.contains(p.as_path()))
                .map(|path| Mismatch {
                    path,
                    problem: Problem::Unexpected,
                }),
        );
        if mismatches.is_empty() {
            Ok(())
        } else {
            Err(Error::Verify(mismatches))
        }
    }
}

impl RawFile {
    fn into_file(self) -> Result<ManifestFile> {
        let path = match (self.path, self.encoded_path) {
            (Some(p), None) => PathBuf::from(p),
            (None, Some(hexed)) => {
                PathBuf::from(OsStr::from_bytes(&unhex(&hexed).ok_or_else(|| {
                    Error::Manifest(format!("Encoded-Path {hexed:?} is not hex"))
                })?))
            }
            _ => {
                return Err(Error::Manifest(
                    "a file has neither or both of Path and Encoded-Path".into(),
                ))
            }
        };
        // Paths are relative to the backup and stay inside it: `verify` joins them to the
        // backup's directory, so an untrusted manifest must not name files elsewhere.
        if path.as_os_str().is_empty()
            || !path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::Manifest(format!(
                "file path {:?} is not relative to the backup's directory (absolute, empty, \
                 or with . or ..)",
                path.display()
            )));
        }
        let checksum = match (self.checksum_algorithm.as_deref(), self.checksum) {
            (None | Some("NONE"), _) => None,
            (Some(name), Some(sum)) => {
                let algorithm = ChecksumAlgorithm::from_name(name).ok_or_else(|| {
                    Error::Manifest(format!(
                        "{}: unknown checksum algorithm {name}",
                        path.display()
                    ))
                })?;
                let bytes = unhex(&sum).ok_or_else(|| {
                    Error::Manifest(format!("{}: checksum {sum:?} is not hex", path.display()))
                })?;
                Some((algorithm, bytes))
            }
            (Some(_), None) => {
                return Err(Error::Manifest(format!(
                    "{}: a checksum algorithm without a checksum",
                    path.display()
                )))
            }
        };
        Ok(ManifestFile {
            path,
            size: self.size,
            last_modified: self.last_modified,
            checksum,
        })
    }
}

/// The files under `dir/rel` (following links, as tablespaces are links), relative to `dir`,
/// except those under [`VERIFY_IGNORED`]; a directory that cannot be read is a mismatch.
fn walk(dir: &Path, rel: &Path, found: &mut Vec<PathBuf>, mismatches: &mut Vec<Mismatch>) {
    let entries = match std::fs::read_dir(dir.join(rel)) {
        Ok(e) => e,
        Err(e) => {
            mismatches.push(Mismatch {
                path: rel.to_owned(),
                problem: Problem::Unreadable(e.to_string()),
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let path = rel.join(entry.file_name());
        if VERIFY_IGNORED.iter().any(|i| path.starts_with(i)) {
            continue;
        }
        match std::fs::metadata(entry.path()) {
            Ok(m) if m.is_dir() => walk(dir, &path, found, mismatches),
            Ok(_) => found.push(path),
            Err(e) => mismatches.push(Mismatch {
                path,
                problem: Problem::Unreadable(e.to_string()),
            }),
        }
    }
}

/// The problem with one file, if any.
fn check_file(path: &Path, file: &ManifestFile, buf: &mut [u8]) -> Option<Problem> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Problem::Missing),
        Err(e) => return Some(Problem::Unreadable(e.to_string())),
    };
    let actual = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Some(Problem::Unreadable(e.to_string())),
    };
    if actual != file.size {
        return Some(Problem::Size {
            expected: file.size,
            actual,
        });
    }
    let (algorithm, expected) = file.checksum.as_ref()?;
    let mut sum = Checksum::new(*algorithm);
    loop {
        match f.read(buf) {
            Ok(0) => break,
            Ok(n) => sum.update(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Problem::Unreadable(e.to_string())),
        }
    }
    let actual = sum.finish();
    (actual != *expected).then(|| Problem::Checksum {
        expected: hex(expected),
        actual: hex(&actual),
    })
}

/// A running checksum of one of the manifest's algorithms.
enum Checksum {
    Crc32c(u32),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Checksum {
    fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Crc32c => Self::Crc32c(0),
            ChecksumAlgorithm::Sha224 => Self::Sha224(sha2::Sha224::new()),
            ChecksumAlgorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Sha384 => Self::Sha384(sha2::Sha384::new()),
            ChecksumAlgorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Self::Sha224(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Crc32c(c) => c.to_le_bytes().to_vec(),
            Self::Sha224(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
            Self::Sha384(h) => h.finalize().to_vec(),
            Self::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// Lower-case hex, as the manifest writes checksums.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| char::from(c).to_digit(16);
            match pair {
                [h, l] => Some(u8::try_from(digit(*h)? * 16 + digit(*l)?).ok()?),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    fn with_checksum(body: &str) -> Vec<u8> {
        let sum = hex(&sha2::Sha256::digest(body.as_bytes()));
        format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n").into_bytes()
    }

    const BODY: &str = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n\
        { \"Path\": \"a\", \"Size\": 3, \"Last-Modified\": \"2024-01-02 03:04:05 GMT\", \
        \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"PLACEHOLDER\" },\n\
        { \"Encoded-Path\": \"62\", \"Size\": 0, \"Last-Modified\": \"2024-01-02 03:04:05 GMT\" }\n\
        ],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n";

    #[test]
    fn parses_checks_its_checksum_and_verifies_files() {
        let crc = hex(&crc32c::crc32c(b"abc").to_le_bytes());
        let text = with_checksum(&BODY.replace("PLACEHOLDER", &crc));
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files[1].path, Path::new("b"));
        assert_eq!(m.wal_ranges[0].end, "0/2000100".parse().unwrap());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"abc").unwrap();
        std::fs::write(dir.path().join("b"), b"").unwrap();
        m.verify(dir.path()).unwrap();
        std::fs::write(dir.path().join("a"), b"abd").unwrap();
        let Err(Error::Verify(v)) = m.verify(dir.path()) else {
            panic!()
        };
        assert_eq!(v[0].path, Path::new("a"));
        assert!(matches!(v[0].problem, Problem::Checksum { .. }), "{v:?}");
        std::fs::write(dir.path().join("a"), b"abc").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/extra"), b"").unwrap();
        let Err(Error::Verify(v)) = m.verify(dir.path()) else {
            panic!()
        };
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].path, Path::new("sub/extra"));
        assert_eq!(v[0].problem, Problem::Unexpected);
        std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), b"abd").unwrap();
        std::fs::remove_file(dir.path().join("b")).unwrap();
        let Err(Error::Verify(v)) = m.verify(dir.path()) else {
            panic!()
        };
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].problem, Problem::Missing);

        let mut tampered = text.clone();
        let at = text.windows(3).position(|w| w == b": 1").unwrap() + 2;
        tampered[at] = b'2';
        assert!(matches!(
            Manifest::parse(&tampered),
            Err(Error::ManifestChecksum { .. })
        ));
    }

    #[test]
    fn paths_outside_the_backup_are_refused() {
        let good = BODY.replace("PLACEHOLDER", "00000000");
        assert!(Manifest::parse(&with_checksum(&good)).is_ok());
        // "/etc/passwd", "../x", "a/../../x" and "" as Path; "/x" as Encoded-Path (2f78).
        for (from, to) in [
            ("\"Path\": \"a\"", "\"Path\": \"/etc/passwd\""),
            ("\"Path\": \"a\"", "\"Path\": \"../x\""),
            ("\"Path\": \"a\"", "\"Path\": \"a/../../x\""),
            ("\"Path\": \"a\"", "\"Path\": \"\""),
            ("\"Encoded-Path\": \"62\"", "\"Encoded-Path\": \"2f78\""),
        ] {
            let text = with_checksum(&good.replace(from, to));
            match Manifest::parse(&text) {
                Err(Error::Manifest(m)) => assert!(m.contains("not relative"), "{to}: {m}"),
                other => panic!("{to}: {other:?}"),
            }
        }
    }
}

//! Combining an incremental backup with the backups it depends on into a full data directory,
//! as `pg_combinebackup` does (PostgreSQL 17+).
//!
//! An incremental backup (`BASE_BACKUP` with `INCREMENTAL`, after `UPLOAD_MANIFEST` of the
//! previous backup's manifest) holds each relation file whose blocks changed since the backup
//! it is based on as an `INCREMENTAL.<name>` file: a header, then the changed blocks. Every other
//! file is whole. [`combine`] takes the chain, the full backup first, and writes a data
//! directory PostgreSQL starts from, as `pg_combinebackup` (`pg_combinebackup.c`,
//! `reconstruct.c`, `backup_label.c`) does:
//!
//! - every file of the newest backup that is not incremental is copied as it is;
//! - an `INCREMENTAL.<name>` (in `global`, in `base/<database>` and in the in-place tablespaces
//!   under `pg_tblspc`) becomes `<name>`: its length is the header's truncation length, or more
//!   if the file holds blocks beyond it; each block comes from the newest backup that has it,
//!   walking back to the newest one that has the whole file; a block no backup has is zeros
//!   (the server extended the file without writing it). When no block is needed from an
//!   incremental file and the whole file has exactly the right length, it is copied as is;
//! - files absent from the newest backup are absent from the result (they were dropped);
//! - `backup_label` is the newest backup's without its `INCREMENTAL FROM LSN` and
//!   `INCREMENTAL FROM TLI` lines; the newest backup's `backup_manifest` is not copied.
//!
//! Before writing anything, the chain is checked: the same system identifier (`pg_control`) in
//! every backup, the first backup full and the others incremental, and each incremental
//! backup's `INCREMENTAL FROM LSN`/`TLI` equal to the start (`START WAL LOCATION`,
//! `START TIMELINE`) of the backup before it.
//!
//! An `INCREMENTAL.` file, as the server's `sendFile` writes it in its byte order (the same in
//! PostgreSQL 17 and 18): `u32` magic `0xd3ae1f0d`, `u32` block count and `u32` truncation
//! block length (each at most `RELSEG_SIZE`, 131072 blocks: a 1 GB segment), the `u32` block
//! numbers (relative to the segment), zeros to the next multiple of `BLCKSZ` (8192) when the
//! count is not zero, then the blocks in the order of their numbers.
//!
//! Not done: a `backup_manifest` for the result (`pg_combinebackup` writes one; without it the
//! directory starts, but `pg_verifybackup` cannot check it), tablespaces outside the data
//! directory (`pg_tblspc/<oid>` as a symbolic link, which `pg_combinebackup` needs a mapping
//! for: refused), and the CRC of `pg_control` (its offset depends on the release; the system
//! identifier is at the start in every release).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use walproto::Lsn;

use crate::error::{Error, ErrorKind, Result};

/// PostgreSQL's block size, `BLCKSZ`, in a default build: the unit of relation files and of
/// the `INCREMENTAL.` file layout.
const BLCKSZ: u64 = 8192;

/// `RELSEG_SIZE`, the blocks of one relation segment file (1 GB) in a default build: the
/// bound on an incremental file's block count, truncation length and block numbers, checked
/// before anything is allocated from them.
const RELSEG_SIZE: u32 = 131_072;

/// `INCREMENTAL_MAGIC`, the first four bytes of an `INCREMENTAL.` file.
const INCREMENTAL_MAGIC: u32 = 0xd3ae_1f0d;

/// The name prefix of incremental files.
const INCREMENTAL_PREFIX: &str = "INCREMENTAL.";

/// The largest `backup_label` read: `pg_combinebackup`'s bound (10000 bytes and `MAXPGPATH`,
/// for the label the user chose).
const MAX_BACKUP_LABEL_LEN: u64 = 10_000 + walproto::backup::MAX_PATH_LEN as u64;

/// Returns an error of the kind with the formatted message.
macro_rules! bail {
    ($kind:ident, $($message:tt)+) => {
        return Err(Error::new(ErrorKind::$kind, format!($($message)+)))
    };
}

/// What [`combine`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CombineSummary {
    /// The cluster's system identifier, the same in every backup of the chain.
    pub system_identifier: u64,
    /// Where the newest backup (and so the result) starts: its `START WAL LOCATION`.
    pub start_lsn: Lsn,
    /// The timeline the newest backup starts on (`START TIMELINE`).
    pub timeline: u32,
    /// Files copied whole from the newest backup (`backup_label` not counted).
    pub files_copied: u64,
    /// Files written from the newest backup's `INCREMENTAL.` files, block by block or, when
    /// no block of theirs was needed, copied whole from an earlier backup.
    pub files_reconstructed: u64,
    /// Blocks of the reconstructed files taken from a backup.
    pub blocks_written: u64,
    /// Blocks of the reconstructed files that no backup has, written as zeros.
    pub blocks_zeroed: u64,
}

/// Combines `backups`, plain-format backup directories with the full backup first and each
/// incremental backup after the one it is based on, into the data directory `output`; see
/// the [module docs](self) for what is written and checked.
///
/// `output` must not exist (it is created, with its parents) or be an empty directory, and
/// must not lie inside a backup. On failure nothing is left behind: a created `output` is
/// removed, an existing one emptied. Files and directories get the newest backup directory's
/// group access (`0700`/`0600`, or `0750`/`0640`), and are synced to disk before this returns.
///
/// Blocking: it does file I/O on the calling thread; from async code, run it on
/// `tokio::task::spawn_blocking`.
///
/// # Errors
///
/// [`ErrorKind::Config`] for no backups, an `output` that is not empty or lies inside a
/// backup; [`ErrorKind::BackupChain`] when the backups do not follow each other (or an earlier
/// backup lacks a file an incremental one needs); [`ErrorKind::BackupInvalid`] for a malformed
/// `INCREMENTAL.` file, `backup_label` or `pg_control`; [`ErrorKind::Unsupported`] for a
/// tablespace outside the data directory; [`ErrorKind::Io`] when a file cannot be read or
/// written. Each message names the file.
pub fn combine(backups: &[impl AsRef<Path>], output: &Path) -> Result<CombineSummary> {
    let dirs: Vec<&Path> = backups.iter().map(AsRef::as_ref).collect();
    let Some(&newest) = dirs.last() else {
        bail!(
            Config,
            "combine needs a full backup, then its incremental backups: none given"
        );
    };
    let system_identifier = check_control_files(&dirs)?;
    let (label_text, label) = check_backup_labels(&dirs)?;
    let modes = Modes::of(newest)?;
    let mut guard = OutputGuard::create(output, modes)?;
    check_output_outside(&dirs, output)?;
    let mut combiner = Combiner {
        dirs: &dirs,
        newest,
        output,
        modes,
        summary: CombineSummary {
            system_identifier,
            start_lsn: label.start_lsn,
            timeline: label.start_tli,
            files_copied: 0,
            files_reconstructed: 0,
            blocks_written: 0,
            blocks_zeroed: 0,
        },
    };
    combiner.write_backup_label(&label_text)?;
    combiner.directory(Path::new(""))?;
    guard.keep = true;
    Ok(combiner.summary)
}

/// The walk over the newest backup, writing the output.
struct Combiner<'a> {
    /// The backups, oldest (full) first.
    dirs: &'a [&'a Path],
    newest: &'a Path,
    output: &'a Path,
    modes: Modes,
    summary: CombineSummary,
}

impl Combiner<'_> {
    /// Writes the newest `backup_label` without its `INCREMENTAL FROM` lines.
    fn write_backup_label(&self, text: &[u8]) -> Result<()> {
        let path = self.output.join("backup_label");
        let mut file = create_file(&path, self.modes)?;
        for line in text.split_inclusive(|&b| b == b'\n') {
            let from =
                |field: &str| line.starts_with(format!("INCREMENTAL FROM {field}: ").as_bytes());
            if !from("LSN") && !from("TLI") {
                file.write_all(line).at("write", &path)?;
            }
        }
        file.sync_all().at("sync", &path)
    }

    /// Copies or reconstructs the files of the newest backup's directory `rel` (relative to
    /// the data directory; empty for the top), recursively.
    fn directory(&mut self, rel: &Path) -> Result<()> {
        let input = self.newest.join(rel);
        let output = self.output.join(rel);
        let top = rel.as_os_str().is_empty();
        if !top {
            create_dir(&output, self.modes)?;
        }
        let incremental_dir = may_hold_incremental_files(rel);
        for entry in fs::read_dir(&input).at("read the directory", &input)? {
            let entry = entry.at("read the directory", &input)?;
            let (name, path) = (entry.file_name(), entry.path());
            let kind = entry.file_type().at("stat", &path)?;
            if kind.is_dir() {
                self.directory(&rel.join(&name))?;
            } else if kind.is_symlink() {
                if rel == Path::new("pg_tblspc") && name.to_str().is_some_and(is_oid) {
                    bail!(
                        Unsupported,
                        "{} is a tablespace outside the data directory (a symbolic link): \
                         combine handles in-place tablespaces only",
                        path.display()
                    );
                }
                tracing::warn!(path = %path.display(), "combine skips a symbolic link");
            } else if !kind.is_file() {
                tracing::warn!(path = %path.display(), "combine skips a special file");
            } else if top && (name == "backup_label" || name == "backup_manifest") {
                // The label is written apart; the manifest describes the newest backup only.
            } else if let Some(bare) = (name.to_str())
                .and_then(|n| n.strip_prefix(INCREMENTAL_PREFIX))
                .filter(|_| incremental_dir)
            {
                self.reconstruct(rel, bare)?;
                self.summary.files_reconstructed += 1;
            } else {
                copy_file(&path, &output.join(&name), self.modes)?;
                self.summary.files_copied += 1;
            }
        }
        sync_dir(&output)
    }

    /// Writes `rel/bare` from the newest backup's `rel/INCREMENTAL.bare` and the earlier
    /// backups, as `reconstruct_from_incremental_file` does.
    fn reconstruct(&mut self, rel: &Path, bare: &str) -> Result<()> {
        let incremental_name = format!("{INCREMENTAL_PREFIX}{bare}");
        let output = self.output.join(rel).join(bare);
        let latest = Source::incremental(self.newest.join(rel).join(&incremental_name))?;
        let truncation = latest.header.truncation_block_length;
        // At most RELSEG_SIZE entries: the header's numbers were bounded when it was read.
        let mut map = vec![None; latest.header.reconstructed_length() as usize];
        take_blocks(&mut map, 0, &latest.header, RELSEG_SIZE);
        let mut full_copy_possible = latest.header.blocks.is_empty();
        let mut sources = vec![latest];
        for (index, dir) in self.dirs.iter().enumerate().rev().skip(1) {
            let whole = dir.join(rel).join(bare);
            match File::open(&whole) {
                Ok(file) => {
                    let len = file.metadata().at("stat", &whole)?.len();
                    for (b, slot) in map.iter_mut().enumerate().take(truncation as usize) {
                        if slot.is_none() && (b as u64) < len / BLCKSZ {
                            *slot = Some((sources.len(), b as u64 * BLCKSZ));
                        }
                    }
                    if full_copy_possible && u64::from(truncation) * BLCKSZ == len {
                        return copy_file(&whole, &output, self.modes);
                    }
                    let header = IncrementalHeader::default();
                    sources.push(Source {
                        path: whole,
                        file,
                        header,
                    });
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let path = dir.join(rel).join(&incremental_name);
                    if !path.exists() {
                        bail!(
                            BackupChain,
                            "{} needs {} or {} from backup {index}, which has neither",
                            rel.join(&incremental_name).display(),
                            whole.display(),
                            path.display(),
                        );
                    }
                    let source = Source::incremental(path)?;
                    let took = take_blocks(&mut map, sources.len(), &source.header, truncation);
                    full_copy_possible &= !took;
                    sources.push(source);
                }
                Err(e) => return Err(io_error("open", &whole, e)),
            }
        }
        self.write_blocks(&output, &map, &mut sources)
    }

    /// Writes the blocks `map` names, zeros where it names none.
    fn write_blocks(
        &mut self,
        output: &Path,
        map: &BlockMap,
        sources: &mut [Source],
    ) -> Result<()> {
        let file = create_file(output, self.modes)?;
        let mut writer = BufWriter::with_capacity(16 * BLCKSZ as usize, file);
        let mut block = [0u8; BLCKSZ as usize];
        for entry in map {
            match entry.and_then(|(index, offset)| Some((sources.get_mut(index)?, offset))) {
                None => {
                    block.fill(0);
                    self.summary.blocks_zeroed += 1;
                }
                Some((source, offset)) => {
                    source.read_block(offset, &mut block)?;
                    self.summary.blocks_written += 1;
                }
            }
            writer.write_all(&block).at("write", output)?;
        }
        let file = writer
            .into_inner()
            .map_err(|e| io_error("write", output, e.into_error()))?;
        file.sync_all().at("sync", output)
    }
}

/// Where each block of a reconstructed file comes from: the index of its source and the byte
/// offset there; `None` for zeros.
type BlockMap = [Option<(usize, u64)>];

/// Maps the blocks below `limit` that `map` lacks to incremental source `source`; true if it
/// took any.
fn take_blocks(map: &mut BlockMap, source: usize, header: &IncrementalHeader, limit: u32) -> bool {
    let mut took = false;
    for (i, &b) in header.blocks.iter().enumerate() {
        if let Some(slot) = map.get_mut(b as usize).filter(|s| b < limit && s.is_none()) {
            *slot = Some((source, header.block_offset(i)));
            took = true;
        }
    }
    took
}

/// A file a reconstruction reads: an incremental file, or (with an empty header) a whole one.
struct Source {
    path: PathBuf,
    file: File,
    header: IncrementalHeader,
}

impl Source {
    /// Opens and checks an `INCREMENTAL.` file: its header, and a length that holds the blocks
    /// the header lists.
    fn incremental(path: PathBuf) -> Result<Self> {
        let mut file = File::open(&path).at("open", &path)?;
        let len = file.metadata().at("stat", &path)?.len();
        let header = IncrementalHeader::read(&mut file, &path)?;
        let (count, needed) = (
            header.blocks.len(),
            header.block_offset(header.blocks.len()),
        );
        if len < needed {
            let path = path.display();
            bail!(
                BackupInvalid,
                "{path} is {len} bytes, short of its header and {count} blocks"
            );
        }
        Ok(Self { path, file, header })
    }

    fn read_block(&mut self, offset: u64, block: &mut [u8]) -> Result<()> {
        let read = self
            .file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(block));
        read.or_invalid(&self.path, || {
            format!("ends before the block at byte {offset}")
        })
    }
}

/// The header of an `INCREMENTAL.` file (empty for a whole file).
#[derive(Default)]
struct IncrementalHeader {
    truncation_block_length: u32,
    /// The block numbers, relative to the segment, each below [`RELSEG_SIZE`].
    blocks: Vec<u32>,
    /// The header's length with its padding: where the first block starts.
    length: u64,
}

impl IncrementalHeader {
    /// Reads and checks the header, as `make_incremental_rfile` does; each bound is checked
    /// before what it sizes is allocated, and every block number is below `RELSEG_SIZE` (the
    /// numbers are relative to a segment), so a reconstruction's map stays within it.
    fn read(reader: &mut impl Read, path: &Path) -> Result<Self> {
        let mut read_u32 = |what: &str| -> Result<u32> {
            let mut word = [0u8; 4];
            let read = reader.read_exact(&mut word);
            read.or_invalid(path, || {
                format!("ends inside its header, before the {what}")
            })?;
            Ok(u32::from_ne_bytes(word))
        };
        let path_text = path.display();
        let magic = read_u32("magic number")?;
        if magic != INCREMENTAL_MAGIC {
            bail!(
                BackupInvalid,
                "{path_text} has magic number {magic:#x}, not {INCREMENTAL_MAGIC:#x}"
            );
        }
        let count = read_u32("block count")?;
        let truncation_block_length = read_u32("truncation block length")?;
        for (what, value) in [
            ("block count", count),
            ("truncation block length", truncation_block_length),
        ] {
            if value > RELSEG_SIZE {
                bail!(
                    BackupInvalid,
                    "{path_text} has {what} {value}, over a segment's {RELSEG_SIZE}"
                );
            }
        }
        let mut blocks = Vec::with_capacity(count as usize);
        for i in 0..count {
            let b = read_u32("block numbers")?;
            if b >= RELSEG_SIZE {
                bail!(
                    BackupInvalid,
                    "{path_text} has block number {b} (entry {i}), past a segment"
                );
            }
            blocks.push(b);
        }
        let mut length = 12 + 4 * u64::from(count);
        if count > 0 {
            // Padded so that the blocks are aligned, only when there are blocks.
            length = length.next_multiple_of(BLCKSZ);
        }
        Ok(Self {
            truncation_block_length,
            blocks,
            length,
        })
    }

    /// The reconstructed file's length in blocks: the truncation length, or more to hold the
    /// blocks beyond it (`find_reconstructed_block_length`); at most `RELSEG_SIZE`.
    fn reconstructed_length(&self) -> u32 {
        let beyond = self.blocks.iter().map(|&b| b + 1).max().unwrap_or(0);
        self.truncation_block_length.max(beyond)
    }

    /// Where the `i`th block listed starts in the file.
    fn block_offset(&self, i: usize) -> u64 {
        self.length + i as u64 * BLCKSZ
    }
}

/// What one `backup_label` says about the chain.
struct Label {
    start_lsn: Lsn,
    start_tli: u32,
    /// `INCREMENTAL FROM LSN` and `INCREMENTAL FROM TLI`: the start of the backup this one is
    /// based on; `None` for a full backup.
    incremental_from: Option<(Lsn, u32)>,
}

impl Label {
    /// Parses the lines `parse_backup_label` reads (others are ignored): `START WAL LOCATION`
    /// (an LSN then a space), `START TIMELINE`, and both or neither of `INCREMENTAL FROM LSN`
    /// and `INCREMENTAL FROM TLI` (each value then a newline); timelines are not zero.
    fn parse(text: &[u8], path: &Path) -> Result<Self> {
        let (mut start_lsn, mut start_tli, mut from_lsn, mut from_tli) = (None, None, None, None);
        for line in text.split_inclusive(|&b| b == b'\n') {
            let field = |name: &str, end| {
                let rest = line.strip_prefix(name.as_bytes())?.strip_prefix(b": ")?;
                let value = rest
                    .iter()
                    .position(|&b| b == end)
                    .and_then(|at| rest.get(..at));
                Some((
                    name.to_owned(),
                    value.and_then(|v| std::str::from_utf8(v).ok()),
                ))
            };
            if let Some(found) = field("START WAL LOCATION", b' ') {
                start_lsn = Some(label_value(found, path, |v| v.parse().ok())?);
            } else if let Some(found) = field("START TIMELINE", b'\n') {
                start_tli = Some(label_value(found, path, timeline)?);
            } else if let Some(found) = field("INCREMENTAL FROM LSN", b'\n') {
                from_lsn = Some(label_value(found, path, |v| v.parse().ok())?);
            } else if let Some(found) = field("INCREMENTAL FROM TLI", b'\n') {
                from_tli = Some(label_value(found, path, timeline)?);
            }
        }
        let path = path.display();
        let incremental_from = match (from_lsn, from_tli) {
            (Some(lsn), Some(tli)) => Some((lsn, tli)),
            (None, None) => None,
            _ => bail!(
                BackupInvalid,
                "{path} has one of INCREMENTAL FROM LSN and TLI, not both"
            ),
        };
        let (Some(start_lsn), Some(start_tli)) = (start_lsn, start_tli) else {
            bail!(
                BackupInvalid,
                "{path} lacks START WAL LOCATION or START TIMELINE"
            );
        };
        Ok(Self {
            start_lsn,
            start_tli,
            incremental_from,
        })
    }
}

/// A timeline of a `backup_label`: decimal, not zero.
fn timeline(value: &str) -> Option<u32> {
    value.parse().ok().filter(|&tli| tli != 0)
}

/// The value of a `backup_label` field (its name, and its text when the terminator followed).
fn label_value<T>(
    found: (String, Option<&str>),
    path: &Path,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T> {
    let (name, value) = found;
    match value.and_then(|v| Some((v, parse(v)?))) {
        Some((_, parsed)) => Ok(parsed),
        None => bail!(
            BackupInvalid,
            "{} has a malformed {name}: {value:?}",
            path.display()
        ),
    }
}

/// Checks the `backup_label` files as `check_backup_label_files` does, newest first; returns
/// the newest's text and contents.
fn check_backup_labels(dirs: &[&Path]) -> Result<(Vec<u8>, Label)> {
    let mut newest = None;
    // The start the next older backup must have: the previous one's INCREMENTAL FROM.
    let mut expected: Option<(Lsn, u32)> = None;
    for (i, dir) in dirs.iter().enumerate().rev() {
        let path = dir.join("backup_label");
        let text = read_bounded(&path, MAX_BACKUP_LABEL_LEN)?;
        let label = Label::parse(&text, &path)?;
        let dir = dir.display();
        match (i, label.incremental_from) {
            (0, Some(_)) => bail!(BackupChain, "{dir} is incremental: the first must be full"),
            (1.., None) => bail!(
                BackupChain,
                "{dir} (backup {i}) is full: only the first may be"
            ),
            _ => {}
        }
        let start = (label.start_lsn, label.start_tli);
        if let Some((lsn, tli)) = expected.filter(|&e| e != start) {
            bail!(
                BackupChain,
                "{dir} starts at {} on timeline {}, but the backup after it is incremental from \
                 {lsn} on timeline {tli}",
                start.0,
                start.1
            );
        }
        expected = label.incremental_from;
        newest.get_or_insert((text, label));
    }
    newest.ok_or_else(|| Error::new(ErrorKind::Config, "combine needs at least one backup"))
}

/// Checks that every backup's `pg_control` has the same system identifier and control file
/// version as the newest's, as `check_control_files` does (the CRC is not checked: see the
/// module docs); returns the system identifier.
fn check_control_files(dirs: &[&Path]) -> Result<u64> {
    let mut newest: Option<(u64, u32)> = None;
    for (i, dir) in dirs.iter().enumerate().rev() {
        let path = dir.join("global").join("pg_control");
        let mut file = File::open(&path).at("open", &path)?;
        let (mut sysid, mut version) = ([0u8; 8], [0u8; 4]);
        let read = file
            .read_exact(&mut sysid)
            .and_then(|()| file.read_exact(&mut version));
        read.or_invalid(&path, || "is too short for pg_control")?;
        let found = (u64::from_ne_bytes(sysid), u32::from_ne_bytes(version));
        let (sysid, version) = *newest.get_or_insert(found);
        let path = path.display();
        if found.0 != sysid {
            let other = found.0;
            bail!(
                BackupChain,
                "{path} (backup {i}) has system identifier {other}, not {sysid}"
            );
        }
        if found.1 != version {
            let other = found.1;
            bail!(
                BackupChain,
                "{path} (backup {i}) has control file version {other}, not {version}"
            );
        }
    }
    Ok(newest.map_or(0, |(sysid, _)| sysid))
}

/// Refuses an output inside a backup (it exists by now): the walk would read what it writes.
fn check_output_outside(dirs: &[&Path], output: &Path) -> Result<()> {
    let output = fs::canonicalize(output).at("resolve", output)?;
    for dir in dirs {
        let dir = fs::canonicalize(dir).at("resolve", dir)?;
        if output.starts_with(&dir) {
            bail!(
                Config,
                "the output {} is inside the backup {}",
                output.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Incremental files are reconstructed only where the server writes them: in relation
/// directories (`base/<db>`, `global`, the in-place tablespaces under `pg_tblspc/`).
/// Elsewhere a file named `INCREMENTAL.x` (a user's `INCREMENTAL.conf`, say) is copied as is,
/// as `pg_combinebackup` does.
fn may_hold_incremental_files(rel: &Path) -> bool {
    let mut parts = rel.components().map(Component::as_os_str);
    match (parts.next(), parts.next()) {
        (Some(first), None) => first == "global",
        (Some(first), Some(_)) => first == "base" || first == "pg_tblspc",
        (None, _) => false,
    }
}

/// A tablespace directory's name: an OID without leading zeros (`parse_oid`).
fn is_oid(name: &str) -> bool {
    !name.starts_with('0') && name.parse::<u32>().is_ok_and(|oid| oid > 0)
}

/// Reads a small file whole, refusing one longer than `max` without reading more.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let mut text = Vec::new();
    let file = File::open(path).at("open", path)?;
    file.take(max + 1).read_to_end(&mut text).at("read", path)?;
    if text.len() as u64 > max {
        bail!(
            BackupInvalid,
            "{} is longer than {max} bytes",
            path.display()
        );
    }
    Ok(text)
}

/// The modes of what is created (directories, files): the newest backup directory's group
/// access, as `pg_combinebackup` takes it (`SetDataDirectoryCreatePerm`). Unix only.
#[derive(Clone, Copy)]
struct Modes(u32, u32);

impl Modes {
    fn of(dir: &Path) -> Result<Self> {
        let meta = fs::metadata(dir).at("stat", dir)?;
        #[cfg(unix)]
        let group = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o040 != 0;
        #[cfg(not(unix))]
        let group = meta.permissions().readonly() && false;
        Ok(if group {
            Modes(0o750, 0o640)
        } else {
            Modes(0o700, 0o600)
        })
    }
}

#[cfg_attr(not(unix), allow(unused_variables, reason = "modes are Unix's"))]
fn create_dir(path: &Path, modes: Modes) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, modes.0);
    builder.create(path).at("create the directory", path)
}

#[cfg_attr(not(unix), allow(unused_variables, reason = "modes are Unix's"))]
fn create_file(path: &Path, modes: Modes) -> Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, modes.1);
    options.open(path).at("create", path)
}

/// Copies a whole file (the kernel's `copy_file_range` where std has it) and syncs it.
fn copy_file(from: &Path, to: &Path, modes: Modes) -> Result<()> {
    let mut source = File::open(from).at("open", from)?;
    let mut target = create_file(to, modes)?;
    io::copy(&mut source, &mut target).at("copy", from)?;
    target.sync_all().at("sync", to)
}

/// Syncs a directory, so that the entries created in it are durable (Unix; elsewhere a
/// directory cannot be opened as a file).
fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .at("sync the directory", path)?;
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The output directory while [`combine`] writes it: unless kept, it is removed on drop
/// (when `combine` created it) or emptied again (when it was an empty directory).
struct OutputGuard<'a> {
    path: &'a Path,
    created: bool,
    keep: bool,
}

impl<'a> OutputGuard<'a> {
    fn create(path: &'a Path, modes: Modes) -> Result<Self> {
        let created = match fs::read_dir(path).map(|mut entries| entries.next().is_none()) {
            Ok(false) => bail!(
                Config,
                "the output {} exists and is not empty",
                path.display()
            ),
            Ok(true) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent).at("create", parent)?;
                }
                create_dir(path, modes)?;
                true
            }
            Err(e) => return Err(io_error("open the output directory", path, e)),
        };
        let guard = Self {
            path,
            created,
            keep: false,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::Permissions::from_mode(modes.0);
            fs::set_permissions(path, mode).at("set the mode of", path)?;
        }
        Ok(guard)
    }
}

impl Drop for OutputGuard<'_> {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let removed = if self.created {
            fs::remove_dir_all(self.path)
        } else {
            fs::read_dir(self.path).and_then(|mut entries| {
                entries.try_for_each(|entry| {
                    let path = entry?.path();
                    match fs::symlink_metadata(&path)?.is_dir() {
                        true => fs::remove_dir_all(&path),
                        false => fs::remove_file(&path),
                    }
                })
            })
        };
        if let Err(e) = removed {
            let path = self.path.display();
            tracing::warn!(%path, error = %e, "combine failed and could not remove its output");
        }
    }
}

/// File I/O results into this crate's errors, naming the path.
trait IoContext<T> {
    /// An I/O error, as [`ErrorKind::Io`]: "could not `what` `path`".
    fn at(self, what: &str, path: &Path) -> Result<T>;
    /// A file that ends too soon is [`ErrorKind::BackupInvalid`] (`what` says what is
    /// missing); other errors are [`ErrorKind::Io`].
    fn or_invalid<M: std::fmt::Display>(self, path: &Path, what: impl FnOnce() -> M) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| io_error(what, path, e))
    }

    fn or_invalid<M: std::fmt::Display>(self, path: &Path, what: impl FnOnce() -> M) -> Result<T> {
        self.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::new(
                ErrorKind::BackupInvalid,
                format!("{} {}", path.display(), what()),
            ),
            _ => io_error("read", path, e),
        })
    }
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("could not {what} {}: {e}", path.display()),
    )
}

#[cfg(test)]
#[path = "combine_tests.rs"]
mod tests;

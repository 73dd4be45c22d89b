//! The ustar reader of `BASE_BACKUP`'s archives; see [`TarReader`].

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use bytes::{Buf, Bytes};

/// The size of a tar block: headers are one block, member data is padded to whole blocks.
pub const BLOCK: usize = 512;

/// The longest member name: ustar's 155-byte prefix, a slash and its 100-byte name.
const MAX_NAME: usize = 256;

/// What a member of the archive is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file (type `0`, or NUL in old archives).
    File,
    /// A directory (type `5`).
    Directory,
    /// A symbolic link (type `2`): PostgreSQL sends one for each tablespace, in `pg_tblspc`.
    Symlink,
}

/// The header of one archive member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    /// The member's path relative to the archive's root: never absolute, never with `..`,
    /// without the trailing slash tar puts on directories.
    pub path: PathBuf,
    /// File, directory or symbolic link.
    pub kind: EntryKind,
    /// The size of the file's data in bytes (0 for the other kinds).
    pub size: u64,
    /// The permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// The modification time in seconds since the Unix epoch.
    pub mtime: i64,
    /// The link target of a [`EntryKind::Symlink`].
    pub link: Option<PathBuf>,
}

/// What [`TarReader::next_event`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TarEvent {
    /// A member starts; for a file, its data follows as [`TarEvent::Data`].
    Entry(TarEntry),
    /// The next bytes of the current file, a slice of a pushed chunk.
    Data(Bytes),
    /// The current member is complete (every byte of a file's data has been handed out).
    EntryEnd,
    /// The end-of-archive marker: nothing follows.
    End,
}

/// A malformed or truncated archive: what, in which archive, and at which byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarError {
    archive: String,
    offset: u64,
    kind: TarErrorKind,
}

/// The kind of a [`TarError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TarErrorKind {
    /// The archive ended inside a header or a member's data or padding, or before its
    /// end-of-archive marker; `member` is the member cut short, if any.
    Truncated {
        /// The member whose header, data or padding is incomplete.
        member: Option<PathBuf>,
    },
    /// A header's checksum does not match its bytes.
    BadChecksum {
        /// The checksum the header states.
        stated: u64,
        /// The checksum of its bytes.
        computed: u64,
    },
    /// A numeric header field (`size`, `mode`, `mtime`, `chksum`) is not a number.
    BadNumber {
        /// The field's name.
        field: &'static str,
    },
    /// A member's path is absolute, contains `..`, or is empty: extracting it would write
    /// outside the directory.
    UnsafePath {
        /// The path as the archive states it.
        path: PathBuf,
    },
    /// A member type other than a file, directory or symbolic link (PostgreSQL sends no
    /// other).
    UnsupportedType {
        /// The header's type flag.
        typeflag: u8,
    },
    /// A directory or symbolic link with data, or a symbolic link without a target.
    BadEntry {
        /// The member.
        path: PathBuf,
    },
    /// Bytes after the end-of-archive marker that are not zero.
    TrailingData,
}

impl TarError {
    /// The archive's name (as the server named it, such as `base.tar`).
    pub fn archive(&self) -> &str {
        &self.archive
    }

    /// The byte offset within the archive where the problem is.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// What is wrong.
    pub fn kind(&self) -> &TarErrorKind {
        &self.kind
    }
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "archive {} at byte {}: ", self.archive, self.offset)?;
        match &self.kind {
            TarErrorKind::Truncated { member: Some(m) } => {
                write!(f, "truncated inside member {}", m.display())
            }
            TarErrorKind::Truncated { member: None } => {
                f.write_str("truncated before its end-of-archive marker")
            }
            TarErrorKind::BadChecksum { stated, computed } => write!(
                f,
                "header checksum {stated:o} does not match its bytes ({computed:o})"
            ),
            TarErrorKind::BadNumber { field } => write!(f, "header field {field} is not a number"),
            TarErrorKind::UnsafePath { path } => write!(
                f,
                "member path {} would leave the directory",
                path.display()
            ),
            TarErrorKind::UnsupportedType { typeflag } => {
                write!(f, "unsupported member type {:?}", char::from(*typeflag))
            }
            TarErrorKind::BadEntry { path } => write!(
                f,
                "member {} is a directory or link with data, or a link without a target",
                path.display()
            ),
            TarErrorKind::TrailingData => {
                f.write_str("non-zero bytes after the end of the archive")
            }
        }
    }
}

impl std::error::Error for TarError {}

/// Where the reader is in the archive.
#[derive(Debug)]
enum State {
    /// Expecting a header (or the first end-of-archive block).
    Header,
    /// Inside a file's data: `remaining` bytes of data, then `pad` bytes of padding.
    Data { remaining: u64, pad: usize },
    /// The data is out; `pad` bytes of padding remain before the next header.
    Padding { pad: usize },
    /// One zero block seen; expecting the second.
    SecondZero,
    /// The end-of-archive marker is complete; only zero bytes may follow.
    Done,
}

/// A sans-IO reader of the ustar archives `BASE_BACKUP` sends (PostgreSQL's `src/port/tar.c`
/// writes them): 512-byte headers with a verified checksum, sizes in octal or, past 8 GB,
/// base-256, regular files, directories and symbolic links, each member padded to a whole
/// block, and two zero blocks at the end.
///
/// [`TarReader::push`] hands in the next bytes of the archive; [`TarReader::next_event`]
/// returns what they complete, or `None` when it needs more. File data comes out as `Bytes`
/// slices of the pushed chunks (never copied); only a header split between two chunks is
/// copied, into a fixed 512-byte block. Nothing is allocated by a size read from the archive.
///
/// ```
/// use bytes::Bytes;
/// use walstream::backup::{TarEvent, TarReader};
///
/// # fn run(archive: Bytes) -> Result<(), walstream::backup::TarError> {
/// let mut tar = TarReader::new("base.tar");
/// tar.push(archive);
/// while let Some(event) = tar.next_event()? {
///     if let TarEvent::Entry(entry) = event {
///         println!("{} ({} bytes)", entry.path.display(), entry.size);
///     }
/// }
/// tar.finish()?; // The archive must have ended with its two zero blocks.
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TarReader {
    archive: String,
    /// Offset in the archive of the first byte of `input`.
    offset: u64,
    input: Bytes,
    /// A header being assembled across chunks, and how much of it is in.
    block: [u8; BLOCK],
    block_len: usize,
    state: State,
    /// The current member, for errors.
    member: Option<PathBuf>,
    /// The end of the current entry still has to be reported.
    entry_open: bool,
}

impl TarReader {
    /// A reader of the archive called `archive` (used in errors).
    pub fn new(archive: impl Into<String>) -> Self {
        Self {
            archive: archive.into(),
            offset: 0,
            input: Bytes::new(),
            block: [0; BLOCK],
            block_len: 0,
            state: State::Header,
            member: None,
            entry_open: false,
        }
    }

    /// Hands in the next bytes of the archive. Call [`next_event`](Self::next_event) until it
    /// returns `None` before pushing again; bytes still unread are kept (copied once into
    /// one buffer with the new ones).
    pub fn push(&mut self, chunk: Bytes) {
        if self.input.is_empty() {
            self.input = chunk;
        } else {
            let mut joined = Vec::with_capacity(self.input.len() + chunk.len());
            joined.extend_from_slice(&self.input);
            joined.extend_from_slice(&chunk);
            self.input = Bytes::from(joined);
        }
    }

    /// The archive's bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The raw bytes of the header of the last [`TarEvent::Entry`] returned (valid until the
    /// next call of [`next_event`](Self::next_event)).
    pub(crate) fn last_header(&self) -> &[u8; BLOCK] {
        &self.block
    }

    /// Whether the end-of-archive marker has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The next event the bytes pushed so far complete, or `None` when more are needed.
    pub fn next_event(&mut self) -> Result<Option<TarEvent>, TarError> {
        loop {
            match self.state {
                State::Data { remaining, pad } => {
                    if remaining == 0 {
                        self.state = State::Padding { pad };
                        if self.entry_open {
                            self.entry_open = false;
                            return Ok(Some(TarEvent::EntryEnd));
                        }
                        continue;
                    }
                    if self.input.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(self.input.len());
                    let data = self.input.split_to(take);
                    self.offset += take as u64;
                    self.state = State::Data {
                        remaining: remaining - take as u64,
                        pad,
                    };
                    return Ok(Some(TarEvent::Data(data)));
                }
                State::Padding { pad } => {
                    if pad == 0 {
                        self.state = State::Header;
                        self.member = None;
                        continue;
                    }
                    if self.input.is_empty() {
                        return Ok(None);
                    }
                    let take = pad.min(self.input.len());
                    self.input.advance(take);
                    self.offset += take as u64;
                    self.state = State::Padding { pad: pad - take };
                }
                State::Header | State::SecondZero => {
                    if !self.fill_block() {
                        return Ok(None);
                    }
                    let at = self.offset - BLOCK as u64;
                    self.block_len = 0;
                    if self.block.iter().all(|&b| b == 0) {
                        if matches!(self.state, State::SecondZero) {
                            self.state = State::Done;
                            return Ok(Some(TarEvent::End));
                        }
                        self.state = State::SecondZero;
                        continue;
                    }
                    if matches!(self.state, State::SecondZero) {
                        // A lone zero block inside an archive: tar skips it as padding.
                        self.state = State::Header;
                    }
                    let entry = self.header(at)?;
                    let pad = padding(entry.size);
                    self.member = Some(entry.path.clone());
                    self.entry_open = true;
                    self.state = State::Data {
                        remaining: entry.size,
                        pad,
                    };
                    return Ok(Some(TarEvent::Entry(entry)));
                }
                State::Done => {
                    if let Some(pos) = self.input.iter().position(|&b| b != 0) {
                        return Err(
                            self.error(self.offset + pos as u64, TarErrorKind::TrailingData)
                        );
                    }
                    self.offset += self.input.len() as u64;
                    self.input.clear();
                    return Ok(None);
                }
            }
        }
    }

    /// Checks that the archive is complete once its last bytes have been pushed and read:
    /// an archive cut anywhere before its end-of-archive marker is [`TarErrorKind::Truncated`].
    pub fn finish(&self) -> Result<(), TarError> {
        if self.is_done() {
            return Ok(());
        }
        let member = match self.state {
            State::Data { .. } | State::Padding { .. } => self.member.clone(),
            _ => None,
        };
        Err(self.error(self.offset, TarErrorKind::Truncated { member }))
    }

    /// Moves input into the header block; whether the block is whole.
    fn fill_block(&mut self) -> bool {
        let take = (BLOCK - self.block_len).min(self.input.len());
        if let (Some(dst), Some(src)) = (
            self.block.get_mut(self.block_len..self.block_len + take),
            self.input.get(..take),
        ) {
            dst.copy_from_slice(src);
        }
        self.input.advance(take);
        self.block_len += take;
        self.offset += take as u64;
        self.block_len == BLOCK
    }

    /// Decodes and checks the header in `block`, which starts at `at`.
    fn header(&self, at: u64) -> Result<TarEntry, TarError> {
        let h = &self.block;
        let stated = number(field(h, 148, 8))
            .ok_or_else(|| self.error(at + 148, TarErrorKind::BadNumber { field: "chksum" }))?;
        let computed = checksum(h);
        if stated != computed {
            return Err(self.error(at + 148, TarErrorKind::BadChecksum { stated, computed }));
        }
        let bad = |offset: u64, field: &'static str| {
            self.error(at + offset, TarErrorKind::BadNumber { field })
        };
        let mode = number(field(h, 100, 8)).ok_or_else(|| bad(100, "mode"))?;
        let size = number(field(h, 124, 12)).ok_or_else(|| bad(124, "size"))?;
        let mtime = number(field(h, 136, 12)).ok_or_else(|| bad(136, "mtime"))?;
        let name = cstr(field(h, 0, 100));
        let prefix = if field(h, 257, 5) == b"ustar" {
            cstr(field(h, 345, 155))
        } else {
            &[]
        };
        let mut full = Vec::with_capacity(MAX_NAME);
        if !prefix.is_empty() {
            full.extend_from_slice(prefix);
            full.push(b'/');
        }
        full.extend_from_slice(name);
        let path = PathBuf::from(OsStr::from_bytes(&full));
        let typeflag = h.get(156).copied().unwrap_or(0);
        let kind = match typeflag {
            b'0' | 0 => EntryKind::File,
            b'5' => EntryKind::Directory,
            b'2' => EntryKind::Symlink,
            other => {
                return Err(self.error(at + 156, TarErrorKind::UnsupportedType { typeflag: other }))
            }
        };
        let safe = safe_path(&path)
            .ok_or_else(|| self.error(at, TarErrorKind::UnsafePath { path: path.clone() }))?;
        let link = match kind {
            EntryKind::Symlink => {
                let target = cstr(field(h, 157, 100));
                if target.is_empty() {
                    return Err(self.error(at + 157, TarErrorKind::BadEntry { path: safe }));
                }
                Some(PathBuf::from(OsStr::from_bytes(target)))
            }
            _ => None,
        };
        if kind != EntryKind::File && size != 0 {
            return Err(self.error(at + 124, TarErrorKind::BadEntry { path: safe }));
        }
        Ok(TarEntry {
            path: safe,
            kind,
            size,
            mode: u32::try_from(mode & 0o7777).unwrap_or(0),
            // Base-256 mtimes past i64 are nonsense; saturate rather than fail.
            mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
            link,
        })
    }

    fn error(&self, offset: u64, kind: TarErrorKind) -> TarError {
        TarError {
            archive: self.archive.clone(),
            offset,
            kind,
        }
    }
}

/// The padding after `size` bytes of data, up to the next block.
fn padding(size: u64) -> usize {
    // The remainder of a division by 512 fits in any usize.
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 {
        0
    } else {
        BLOCK - rem
    }
}

/// `len` bytes of the header at `start` (empty if out of range, which a 512-byte block never
/// is for the fixed offsets used here).
fn field(h: &[u8; BLOCK], start: usize, len: usize) -> &[u8] {
    h.get(start..start + len).unwrap_or(&[])
}

/// The bytes of a NUL-terminated (or full-width) string field.
fn cstr(f: &[u8]) -> &[u8] {
    let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    f.get(..end).unwrap_or(f)
}

/// A numeric field as `read_tar_number` reads it: base-256 (big-endian, the first byte's high
/// bit set) or octal digits after optional spaces, ending at a NUL or space. `None` if there
/// is no digit, a stray character, or it overflows.
fn number(f: &[u8]) -> Option<u64> {
    let (&first, rest) = f.split_first()?;
    if first & 0x80 != 0 {
        let mut v = u64::from(first & 0x7f);
        for &b in rest {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let digits = f.iter().skip_while(|&&b| b == b' ');
    let mut v: u64 = 0;
    let mut any = false;
    for &b in digits {
        match b {
            b'0'..=b'7' => {
                v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
                any = true;
            }
            0 | b' ' => break,
            _ => return None,
        }
    }
    any.then_some(v)
}

/// The header checksum as `tarChecksum` computes it: the sum of all bytes, the checksum field
/// counted as spaces.
fn checksum(h: &[u8; BLOCK]) -> u64 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum()
}

/// `path` without a trailing slash if it is relative, non-empty, and has no `..` (`.`
/// components are dropped); `None` otherwise.
fn safe_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

impl TarEntry {
    /// This entry's ustar header as PostgreSQL's `tarCreateHeader` writes it, to build an
    /// archive; `None` if the path or the link target is longer than the 99 bytes that
    /// format holds.
    pub fn header(&self) -> Option<[u8; BLOCK]> {
        let path = self.path.as_os_str().as_bytes();
        let link = self
            .link
            .as_deref()
            .map_or(&[][..], |l| l.as_os_str().as_bytes());
        (path.len() < 100 && link.len() < 100)
            .then(|| header(path, self.kind, self.size, self.mode, self.mtime, link))
    }
}

/// Writes a ustar header for tests and for archives this crate builds (`pg_wal.tar`), as
/// `tarCreateHeader` does: a name of at most 99 bytes (a slash is added for directories and
/// links), octal fields, sizes past 8 GB in base-256.
fn header(
    path: &[u8],
    kind: EntryKind,
    size: u64,
    mode: u32,
    mtime: i64,
    link: &[u8],
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let mut name = path.to_vec();
    if kind != EntryKind::File {
        name.push(b'/');
    }
    put(&mut h, 0, 100, &name);
    octal(&mut h, 100, 8, u64::from(mode & 0o7777));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, mtime.max(0).unsigned_abs());
    h[156] = match kind {
        EntryKind::File => b'0',
        EntryKind::Directory => b'5',
        EntryKind::Symlink => b'2',
    };
    put(&mut h, 157, 100, link);
    put(&mut h, 257, 8, b"ustar\x0000");
    let sum = checksum(&h);
    octal(&mut h, 148, 8, sum);
    h
}

/// `h` with its size set to `size` and, if given, its name to `name`, and its checksum
/// recomputed; every other byte is kept.
pub(crate) fn patch_header(h: &[u8; BLOCK], name: Option<&[u8]>, size: u64) -> [u8; BLOCK] {
    let mut h = *h;
    if let Some(name) = name {
        put(&mut h, 0, 100, &[0u8; 100]);
        put(&mut h, 0, 100, name);
    }
    octal(&mut h, 124, 12, size);
    let sum = checksum(&h);
    octal(&mut h, 148, 8, sum);
    h
}

/// A numeric field as `print_tar_number` writes it: octal digits and a trailing space when
/// the value fits, else base-256 (the first byte's high bit set, big-endian).
fn octal(h: &mut [u8; BLOCK], start: usize, len: usize, val: u64) {
    let digits = len - 1;
    if val < 1u64 << (digits * 3).min(63) {
        put(h, start, len, format!("{val:0digits$o} ").as_bytes());
    } else {
        let mut f = vec![0u8; len];
        let be = val.to_be_bytes();
        for (dst, src) in f.iter_mut().rev().zip(be.iter().rev()) {
            *dst = *src;
        }
        if let Some(first) = f.first_mut() {
            *first |= 0x80;
        }
        put(h, start, len, &f);
    }
}

fn put(h: &mut [u8; BLOCK], start: usize, len: usize, value: &[u8]) {
    let n = value.len().min(len);
    if let (Some(dst), Some(src)) = (h.get_mut(start..start + n), value.get(..n)) {
        dst.copy_from_slice(src);
    }
}

#[cfg(test)]
#[path = "tar_tests.rs"]
mod tests;

//! `WalWriter`: WAL into a directory of segment files, as `pg_receivewal` writes them.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use walproto::Lsn;

use crate::error::{Error, ErrorKind, Result};
use crate::physical::event::WalEvent;
use crate::physical::segment::{history_file_name, WalSegmentSize, PARTIAL_SUFFIX};

/// Zeros are written in pieces of this size when a new segment file is padded to its size.
const PAD_CHUNK: usize = 1 << 20;

/// WAL written into a directory exactly as `pg_receivewal` writes it, so that the directory
/// can serve as a WAL archive (`restore_command`) or be resumed by `pg_receivewal` itself.
///
/// - Each segment goes to a file named as the server names it (`XLogFileName`:
///   `TTTTTTTTXXXXXXXXYYYYYYYY`, the timeline, then the segment number in two halves). The
///   segment in progress is `NAME.partial`, created at the segment size and reading as zeros:
///   its blocks allocated (`fallocate`), or zeros written where the file system cannot
///   allocate, so that a later write cannot fail for want of space, and the file never looks
///   complete by its size alone.
/// - Data is written at its position's offset in the segment: bytes sent again after a
///   reconnect (the stream resumes at the last acknowledged position, at or before what was
///   written) overwrite themselves with the same bytes.
/// - Once a segment is whole it is synced, renamed to its final name, and the directory is
///   synced: a file with a final name is always complete and durable.
/// - [`flush`](Self::flush) syncs the segment in progress and returns the position up to
///   which everything is durable: acknowledge that position to the stream
///   ([`SharedLsnFeedback::set_flushed`](crate::SharedLsnFeedback::set_flushed)), and the
///   slot never moves past what is on disk.
/// - On a new timeline the previous timeline's last segment stays `.partial` (as
///   `pg_receivewal` leaves it), and [`write_history`](Self::write_history) stores the new
///   timeline's history file.
///
/// Anything that would leave the directory inconsistent is an [`ErrorKind::WalFile`] error
/// before a byte is written: a gap after the written position, a write before the segment in
/// progress, a timeline going back, a segment file of the wrong size.
///
/// The writer does blocking `std::fs` I/O (writes, `fsync`, renames). From async code run it
/// off the runtime's threads: move it into `tokio::task::spawn_blocking` (or a thread of its
/// own, fed through a channel) rather than calling it between two awaits.
///
/// ```no_run
/// use walstream::physical::{WalSegmentSize, WalWriter};
/// use walstream::Lsn;
///
/// # fn run() -> walstream::Result<()> {
/// let dir = "/var/lib/wal-archive";
/// let size: WalSegmentSize = "16MB".parse()?;
/// // Where pg_receivewal would resume; a new archive starts where the server says.
/// let (timeline, start) = match WalWriter::resume_position(dir, size)? {
///     Some(resume) => (resume.timeline, resume.lsn),
///     None => (1, Lsn::new(0x300_0000)),
/// };
/// let mut writer = WalWriter::open(dir, size, timeline, start)?;
/// # let bytes = [0u8; 8];
/// writer.write(timeline, start, &bytes)?;
/// let durable = writer.flush()?;
/// assert_eq!(durable, start.checked_add(8).unwrap());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WalWriter {
    dir: PathBuf,
    size: WalSegmentSize,
    timeline: u32,
    /// Everything before this is written (contiguously, from where the writer started).
    position: Lsn,
    /// Everything before this is durable.
    flushed: Lsn,
    current: Option<Segment>,
}

/// Where to resume writing into a directory, as `pg_receivewal`'s `FindStreamingStart`
/// decides: the start of the newest segment still `.partial`, or the end of the newest
/// complete one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePosition {
    /// The timeline of that segment.
    pub timeline: u32,
    /// The position to start streaming from (always a segment's start).
    pub lsn: Lsn,
}

/// The open segment in progress.
#[derive(Debug)]
struct Segment {
    timeline: u32,
    segno: u64,
    file: File,
    /// Written since the last sync.
    dirty: bool,
}

impl WalWriter {
    /// A writer into the existing directory `dir`, for segments of `size`, whose next byte is
    /// `start` on `timeline`. Nothing is created until the first write.
    pub fn open(
        dir: impl Into<PathBuf>,
        size: WalSegmentSize,
        timeline: u32,
        start: Lsn,
    ) -> Result<Self> {
        let dir = dir.into();
        let meta =
            fs::metadata(&dir).map_err(|e| io_error("reading the WAL directory", &dir, e))?;
        if !meta.is_dir() {
            return Err(Error::new(
                ErrorKind::WalFile,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(Self {
            dir,
            size,
            timeline,
            position: start,
            flushed: start,
            current: None,
        })
    }

    /// Where to resume streaming into `dir`, as `pg_receivewal` decides it: of the segment
    /// files there (complete or `.partial`), the highest segment number wins, then the higher
    /// timeline, then a complete file over a partial one. A partial segment is streamed again
    /// from its start; after a complete one, streaming starts at the next segment. `None` when
    /// the directory has no segment file (start from the server's position). Compressed
    /// segments (`pg_receivewal --compress`) are not this writer's and are not considered.
    ///
    /// A segment file whose size is not `size` is an [`ErrorKind::WalFile`] error: the
    /// directory was written with another segment size, or by something else.
    pub fn resume_position(
        dir: impl AsRef<Path>,
        size: WalSegmentSize,
    ) -> Result<Option<ResumePosition>> {
        let dir = dir.as_ref();
        let entries = fs::read_dir(dir).map_err(|e| io_error("listing", dir, e))?;
        // (segment number, timeline, complete)
        let mut best: Option<(u64, u32, bool)> = None;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("listing", dir, e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let (base, complete) = match name.strip_suffix(PARTIAL_SUFFIX) {
                Some(base) => (base, false),
                None => (name, true),
            };
            let Some((timeline, segno)) = size.parse_file_name(base) else {
                continue;
            };
            let path = entry.path();
            let len = entry
                .metadata()
                .map_err(|e| io_error("reading the size of", &path, e))?
                .len();
            if len != size.bytes() {
                return Err(Error::new(
                    ErrorKind::WalFile,
                    format!(
                        "segment file {} has {len} bytes, not the segment size {}",
                        path.display(),
                        size.bytes()
                    ),
                ));
            }
            let candidate = (segno, timeline, complete);
            if best.is_none_or(|b| candidate > b) {
                best = Some(candidate);
            }
        }
        let Some((segno, timeline, complete)) = best else {
            return Ok(None);
        };
        let segno = if complete {
            segno.checked_add(1)
        } else {
            Some(segno)
        };
        let lsn = segno
            .and_then(|s| size.segment_start(s))
            .ok_or_else(|| Error::new(ErrorKind::WalFile, "the WAL directory ends the WAL"))?;
        Ok(Some(ResumePosition { timeline, lsn }))
    }

    /// Writes `bytes`, the WAL from `start` on `timeline`.
    ///
    /// `start` may be at or before the written position (bytes sent again are written again,
    /// at the same place), but not after it (a gap) and not before the segment in progress.
    /// A higher `timeline` must start exactly at the written position: the previous
    /// timeline's segment in progress is synced and left `.partial`, and writing goes on in
    /// the new timeline's files. Segments completed by the write are synced and renamed.
    pub fn write(&mut self, timeline: u32, start: Lsn, bytes: &[u8]) -> Result<()> {
        if timeline < self.timeline {
            return Err(self.state_error(
                start,
                format!(
                    "WAL of timeline {timeline} after timeline {}: timelines only go forward",
                    self.timeline
                ),
            ));
        }
        if timeline > self.timeline && start != self.position {
            return Err(self.state_error(
                start,
                format!(
                    "timeline {timeline} starts at {start}, but timeline {} was written up to \
                     {}: a new timeline must continue where the previous one ended",
                    self.timeline, self.position
                ),
            ));
        }
        if start > self.position {
            return Err(self.state_error(
                start,
                format!(
                    "WAL from {start}, but only up to {} is written: a gap",
                    self.position
                ),
            ));
        }
        let floor = match &self.current {
            Some(s) => self.segment_start(s.segno)?,
            None => self.size.round_down(self.position),
        };
        if start < floor {
            return Err(self.state_error(
                start,
                format!(
                    "WAL from {start}, before the segment in progress (which starts at \
                     {floor}): earlier segments are already complete"
                ),
            ));
        }
        let end = start
            .checked_add(bytes.len() as u64)
            .ok_or_else(|| self.state_error(start, "WAL past the end of the address space"))?;
        if timeline > self.timeline {
            self.close_segment()?;
            self.timeline = timeline;
        }
        let mut at = start;
        let mut rest = bytes;
        while !rest.is_empty() {
            let segno = self.size.segment_of(at);
            let offset = self.size.offset_of(at);
            let room = self.size.bytes() - offset;
            let n = usize::try_from(room).map_or(rest.len(), |room| room.min(rest.len()));
            let (piece, tail) = rest.split_at(n);
            let path = self.dir.join(self.size.file_name(timeline, segno));
            let segment = self.segment(segno)?;
            segment
                .file
                .write_all_at(piece, offset)
                .map_err(|e| io_error("writing", &path, e))?;
            segment.dirty = true;
            at = Lsn::new(at.get() + n as u64);
            self.position = self.position.max(at);
            rest = tail;
            if self.size.offset_of(self.position) == 0 && self.position == at {
                self.complete_segment()?;
            }
        }
        debug_assert!(self.position >= end);
        Ok(())
    }

    /// Writes what a stream's `event` carries: a piece of WAL ([`write`](Self::write)) or a
    /// new timeline's history file ([`write_history`](Self::write_history)); other events
    /// need nothing written.
    pub fn apply(&mut self, event: &WalEvent) -> Result<()> {
        match event {
            WalEvent::Data(data) => self.write(data.timeline, data.start, &data.bytes),
            WalEvent::TimelineSwitch {
                timeline, history, ..
            } => self.write_history(*timeline, history),
            _ => Ok(()),
        }
    }

    /// Writes `timeline`'s history file (`0000000N.history`, the bytes `TIMELINE_HISTORY`
    /// returned) into the directory: through a temporary file, synced, renamed, with the
    /// directory synced, so that it is there whole or not at all.
    pub fn write_history(&self, timeline: u32, content: &[u8]) -> Result<()> {
        let name = history_file_name(timeline);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut file = File::create(&tmp).map_err(|e| io_error("creating", &tmp, e))?;
        file.write_all(content)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("writing", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_error("renaming to", &path, e))?;
        sync_dir(&self.dir)
    }

    /// Syncs the segment in progress; returns the position up to which all WAL written is
    /// durable (what to acknowledge to the server).
    pub fn flush(&mut self) -> Result<Lsn> {
        if let Some(segment) = self.current.as_mut().filter(|s| s.dirty) {
            segment.file.sync_data().map_err(|e| {
                io_error(
                    "syncing",
                    &self
                        .dir
                        .join(self.size.file_name(segment.timeline, segment.segno)),
                    e,
                )
            })?;
            segment.dirty = false;
        }
        self.flushed = self.position;
        Ok(self.flushed)
    }

    /// Flushes and closes the segment in progress (which stays `.partial`); returns the durable
    /// position.
    pub fn close(mut self) -> Result<Lsn> {
        self.close_segment()?;
        self.flushed = self.position;
        Ok(self.flushed)
    }

    /// The position up to which WAL is written (not necessarily durable).
    pub fn position(&self) -> Lsn {
        self.position
    }

    /// The position up to which WAL is durable, as of the last [`flush`](Self::flush) or
    /// completed segment.
    pub fn flushed(&self) -> Lsn {
        self.flushed
    }

    /// The timeline being written.
    pub fn timeline(&self) -> u32 {
        self.timeline
    }

    /// The segment size.
    pub fn segment_size(&self) -> WalSegmentSize {
        self.size
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The open segment `segno` of the current timeline, opened (or created) if need be.
    fn segment(&mut self, segno: u64) -> Result<&mut Segment> {
        if self.current.as_ref().is_some_and(|s| s.segno != segno) {
            self.close_segment()?;
        }
        if self.current.is_none() {
            let file = self.open_partial(segno)?;
            self.current = Some(Segment {
                timeline: self.timeline,
                segno,
                file,
                dirty: false,
            });
        }
        self.current
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::WalFile, "no segment open"))
    }

    /// Opens segment `segno`'s `.partial` file: an existing one of the segment size, or a new
    /// one allocated (or padded with zeros) and synced, with the directory, before anything is
    /// written.
    fn open_partial(&self, segno: u64) -> Result<File> {
        let name = self.size.file_name(self.timeline, segno);
        let done = self.dir.join(&name);
        if done.exists() {
            return Err(Error::new(
                ErrorKind::WalFile,
                format!(
                    "segment {} is already complete: WAL for it cannot be written again",
                    done.display()
                ),
            )
            .at(self.segment_start(segno)?));
        }
        let path = self.dir.join(format!("{name}{PARTIAL_SUFFIX}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error("opening", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error("reading the size of", &path, e))?
            .len();
        if len == self.size.bytes() {
            return Ok(file);
        }
        if len != 0 {
            return Err(Error::new(
                ErrorKind::WalFile,
                format!(
                    "segment file {} has {len} bytes, neither 0 nor the segment size {}",
                    path.display(),
                    self.size.bytes()
                ),
            ));
        }
        if allocate(&file, self.size.bytes()) {
            file.sync_all().map_err(|e| io_error("syncing", &path, e))?;
            sync_dir(&self.dir)?;
            return Ok(file);
        }
        file.set_len(0)
            .map_err(|e| io_error("truncating", &path, e))?;
        let zeros = vec![0u8; PAD_CHUNK];
        let mut left = self.size.bytes();
        let mut writer = &file;
        while left > 0 {
            let n = usize::try_from(left).map_or(PAD_CHUNK, |l| l.min(PAD_CHUNK));
            writer
                .write_all(zeros.get(..n).unwrap_or(&zeros))
                .map_err(|e| io_error("padding", &path, e))?;
            left -= n as u64;
        }
        file.sync_all().map_err(|e| io_error("syncing", &path, e))?;
        sync_dir(&self.dir)?;
        Ok(file)
    }

    /// The segment in progress is whole: sync it, give it its final name, sync the directory.
    fn complete_segment(&mut self) -> Result<()> {
        let Some(segment) = self.current.take() else {
            return Ok(());
        };
        let name = self.size.file_name(segment.timeline, segment.segno);
        let partial = self.dir.join(format!("{name}{PARTIAL_SUFFIX}"));
        let done = self.dir.join(&name);
        segment
            .file
            .sync_all()
            .map_err(|e| io_error("syncing", &partial, e))?;
        drop(segment);
        fs::rename(&partial, &done).map_err(|e| io_error("renaming", &partial, e))?;
        sync_dir(&self.dir)?;
        self.flushed = self.flushed.max(self.position);
        tracing::debug!(segment = name, "WAL segment complete");
        Ok(())
    }

    /// Syncs and closes the segment in progress, which keeps its `.partial` name.
    fn close_segment(&mut self) -> Result<()> {
        if let Some(segment) = self.current.take() {
            if segment.dirty {
                segment.file.sync_all().map_err(|e| {
                    io_error(
                        "syncing",
                        &self
                            .dir
                            .join(self.size.file_name(segment.timeline, segment.segno)),
                        e,
                    )
                })?;
            }
        }
        Ok(())
    }

    fn segment_start(&self, segno: u64) -> Result<Lsn> {
        self.size
            .segment_start(segno)
            .ok_or_else(|| Error::new(ErrorKind::WalFile, "a segment past the end of WAL"))
    }

    fn state_error(&self, lsn: Lsn, message: impl Into<String>) -> Error {
        let message = message.into();
        Error::new(
            ErrorKind::WalFile,
            format!("{message} (WAL directory {})", self.dir.display()),
        )
        .at(lsn)
    }
}

/// Gives the empty `file` `len` bytes that read as zeros, with their blocks allocated but
/// not written (`fallocate`): a later write cannot fail for want of space, as with zeros
/// written, without writing and syncing a segment of zeros first (what `pg_receivewal` does:
/// half the bytes it writes are those zeros). `false` where the file system cannot (the
/// caller writes the zeros then).
fn allocate(file: &File, len: u64) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len).is_ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (file, len);
        false
    }
}

/// Syncs a directory, so that the names created or renamed in it are durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing the directory", dir, e))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::WalFile,
        format!("{what} {}: {e}", path.display()),
    )
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;

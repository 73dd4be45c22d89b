//! One file of a plain backup while its data arrives: [`DataFile`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::error::{Error, Result};

/// Data waiting to be written is written once it reaches this many bytes (one `writev`).
const WRITE_BYTES: usize = 256 << 10;

/// At most this many slices go into one `writev` (far below `IOV_MAX`, 1024 on Linux).
const WRITE_SLICES: usize = 64;

/// Writeback of what a file has received is started every this many bytes, and at its end
/// (see [`DataFile::finish`]).
const WRITEBACK_BYTES: u64 = 8 << 20;

/// A file of a plain backup: created with mode 0600, its data written from the server's
/// messages as they are (the `Bytes` slices are gathered and written with one `writev`, never
/// copied into a buffer of ours), then given its mode and modification time.
///
/// Writeback to the disk is started as the file grows and when it is complete (an advice to
/// the kernel, which does not wait), so that the `fsync` of every file at the end of the
/// backup finds little left to write: the disk works while the data is still arriving, where
/// `pg_basebackup` starts it only at the end (`sync_file_range` over the whole directory).
pub(super) struct DataFile {
    file: File,
    path: PathBuf,
    mode: u32,
    mtime: i64,
    pending: Vec<Bytes>,
    pending_len: usize,
    /// Bytes written so far.
    written: u64,
    /// Where writeback was last started.
    writeback_from: u64,
}

impl DataFile {
    /// Creates `path` (which must not exist; its directory is created if missing), to get
    /// `mode` and `mtime` (seconds since the Unix epoch) at the end.
    pub(super) fn create(path: PathBuf, mode: u32, mtime: i64) -> Result<Self> {
        let open = |p: &Path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
        };
        // The archive lists each directory before its files, so the parent is there but
        // for a member the server sent without its directory: only then is it created.
        let file = match open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(|e| Error::io(parent, "create", e))?;
                }
                open(&path)
            }
            other => other,
        }
        .map_err(|e| Error::io(&path, "create", e))?;
        Ok(Self {
            file,
            path,
            mode,
            mtime,
            pending: Vec::new(),
            pending_len: 0,
            written: 0,
            writeback_from: 0,
        })
    }

    /// The next bytes of the file.
    pub(super) fn push(&mut self, data: Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.pending_len += data.len();
        self.pending.push(data);
        if self.pending_len >= WRITE_BYTES || self.pending.len() >= WRITE_SLICES {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Writes what is pending; starts writeback every [`WRITEBACK_BYTES`].
    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        write_all(&mut self.file, &self.pending).map_err(|e| Error::io(&self.path, "write", e))?;
        self.written += self.pending_len as u64;
        self.pending.clear();
        self.pending_len = 0;
        if self.written - self.writeback_from >= WRITEBACK_BYTES {
            self.start_writeback();
        }
        Ok(())
    }

    /// Writes the rest, sets the mode and modification time, and starts writeback of what
    /// has not been started yet.
    pub(super) fn finish(mut self) -> Result<()> {
        self.write_pending()?;
        self.file
            .set_permissions(fs::Permissions::from_mode(self.mode))
            .map_err(|e| Error::io(&self.path, "set the mode of", e))?;
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(self.mtime.max(0).unsigned_abs());
        self.file
            .set_modified(mtime)
            .map_err(|e| Error::io(&self.path, "set the modification time of", e))?;
        if self.written > self.writeback_from {
            self.start_writeback();
        }
        Ok(())
    }

    /// Asks the kernel to start writing back the bytes written since the last time, without
    /// waiting (`POSIX_FADV_DONTNEED` starts writeback of the range's dirty pages and drops
    /// the clean ones: a backup is not read back). Only advice: durability comes from the
    /// `fsync` at the end, so a failure here is ignored.
    fn start_writeback(&mut self) {
        let from = self.writeback_from;
        let len = std::num::NonZeroU64::new(self.written - from);
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        let _ = rustix::fs::fadvise(&self.file, from, len, rustix::fs::Advice::DontNeed);
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
        let _ = len;
        self.writeback_from = self.written;
    }
}

/// Writes every byte of `chunks` in order, with as few `writev` calls as the kernel allows.
fn write_all(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = slices.as_mut_slice();
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the file system took no bytes",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_written_in_order_with_mode_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/file");
        let mut f = DataFile::create(path.clone(), 0o640, 1_000_000).unwrap();
        let mut expected = Vec::new();
        // Enough chunks of odd sizes to pass both thresholds several times.
        for i in 0..300u32 {
            let chunk: Vec<u8> = (0..(i * 37 % 5000)).map(|b| (b ^ i) as u8).collect();
            expected.extend_from_slice(&chunk);
            f.push(Bytes::from(chunk)).unwrap();
        }
        f.finish().unwrap();
        assert_eq!(fs::read(&path).unwrap(), expected);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(
            meta.modified().unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
        );
        // An existing file is never overwritten.
        assert!(DataFile::create(path, 0o600, 0).is_err());
    }
}

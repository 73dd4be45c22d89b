//! Spilling the changes of large in-progress transactions to temporary files, and reading
//! them back after commit.
//!
//! A file is created already unlinked in the configured directory ([`tempfile::tempfile_in`]:
//! `O_TMPFILE` where the file system has it, otherwise a random name created with mode 0600
//! and removed at once), and its mode is set to 0600: nothing ever shows in the directory,
//! no other user can open it, and its space returns when the process ends, however it ends.
//!
//! The assembler hands the changes themselves to a spill thread ([`SpillWriter`]), which
//! encodes them into one small reused buffer, writes it, and frees each change as it goes: a
//! slow disk never stalls the async runtime that runs the stream, and a spill never holds an
//! encoded copy beside the changes (encoding the whole transaction at once, before it was
//! written, raised a 64 MiB budget's peak RSS by up to 25 MB: the freed changes stay resident
//! in the allocator while the encoded copy is new memory). What each record will take is
//! known when it is handed over ([`record_len`]), so the disk budget and the file's offsets
//! are decided there. Readers use positioned reads, so any number of them share one open file;
//! each first waits for the spill thread to have written everything.
//!
//! A record is a `u32` length, then: the change kind, the change's LSN and xid, the index of
//! its relation in the file's relation table (kept in memory: relations are few and small),
//! then the row images as pgoutput encodes them (count, then columns). Reading a record back
//! validates it with walproto, exactly as a message from the server is validated.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use walproto::owned::TupleBuf;
use walproto::pgoutput::{encode_columns, TupleData};
use walproto::{Lsn, RelationInfo, Xid};

use super::change::{Change, ChangeKind};
use crate::error::{Error, ErrorKind, Result};
use crate::logical::event::{Delete, Insert, LogicalMessage, OldRow, Row, Truncate, Update};

/// The largest record read back: a change is at most one pgoutput message, which PostgreSQL
/// bounds at 1 GiB.
const MAX_RECORD: usize = 1 << 30;

/// The spill thread writes its encoded records in pieces of about this many bytes (its one
/// buffer, reused: more than this plus one record is never held encoded), and tells the
/// stream after each piece, so a stream waiting for room resumes as soon as this much is
/// written, not after the whole spill.
const WRITE_BUFFER: usize = 128 * 1024;

/// The spill buffers that count in the memory budget: the spill thread's, and one reader's.
pub(crate) const BUFFERS: usize = WRITE_BUFFER + READ_BUFFER;

/// The read buffer of a spill file's reader.
const READ_BUFFER: usize = 64 * 1024;

const INSERT: u8 = b'I';
const UPDATE: u8 = b'U';
const DELETE: u8 = b'D';
const TRUNCATE: u8 = b'T';
const MESSAGE: u8 = b'M';

/// Creates the spill files of one assembler and feeds its spill thread.
///
/// The thread starts with the first spill and ends when the writer is dropped and the jobs
/// already handed to it are written; dropping never waits for it (the caller may be on an
/// async runtime).
#[derive(Debug)]
pub(crate) struct SpillWriter {
    dir: PathBuf,
    disk_budget: u64,
    jobs: Option<mpsc::Sender<Job>>,
    shared: Arc<WriterShared>,
}

/// What the assembler, its spill files and the spill thread share.
#[derive(Debug, Default)]
pub(crate) struct WriterShared {
    /// Changes handed to the spill thread and not yet written, in the budget's measure
    /// ([`Change::size`]): still memory.
    in_flight: AtomicUsize,
    /// Bytes in spill files not yet dropped: what the disk budget bounds.
    on_disk: AtomicU64,
    /// The first write that failed.
    failed: Mutex<Option<String>>,
    /// Woken after every job, for a stream waiting for room or for a transaction's file.
    waker: Mutex<Option<Waker>>,
    /// Held by a test to stall the spill thread before its next job.
    #[cfg(test)]
    pub(crate) gate: Mutex<()>,
}

/// Changes for the spill thread to encode and write at `offset` of `file`: one job per spill,
/// the transaction's own vector of changes (moving them into smaller vectors would hold a
/// second copy of each change's slot while they wait).
struct Job {
    file: Arc<FileData>,
    offset: u64,
    /// What their records take ([`record_len`]): the thread checks that it wrote exactly this.
    bytes: u64,
    /// What they count in the budget ([`Change::size`]).
    held: usize,
    changes: Vec<Change>,
    /// The file's relation table when the job was sent: every relation of `changes` is in it.
    relations: Arc<HashMap<usize, u32>>,
}

impl SpillWriter {
    /// A writer of spill files in `dir`, at most `disk_budget` bytes of them at once.
    pub(crate) fn new(dir: PathBuf, disk_budget: u64) -> Self {
        Self {
            dir,
            disk_budget,
            jobs: None,
            shared: Arc::default(),
        }
    }

    /// What the spill thread shares (for tests that stall it).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> Arc<WriterShared> {
        Arc::clone(&self.shared)
    }

    /// A new, empty, unlinked spill file of mode 0600.
    pub(crate) fn create(&self) -> Result<SpillFile> {
        let file = tempfile::tempfile_in(&self.dir)
            .and_then(owner_only)
            .map_err(|e| self.io_error("creating", &e.to_string()))?;
        Ok(SpillFile {
            data: Arc::new(FileData {
                file,
                state: Mutex::new(Written::default()),
                changed: Condvar::new(),
            }),
            shared: Arc::clone(&self.shared),
            relations: Vec::new(),
            index: Arc::default(),
            count: 0,
            bytes: 0,
        })
    }

    /// Hands `changes` of transaction `xid` to the spill thread, to be written to `file`;
    /// fails with [`ErrorKind::SpillBudget`] before the spill files would pass the disk
    /// budget.
    pub(crate) fn write(
        &mut self,
        file: &mut SpillFile,
        xid: Xid,
        changes: Vec<Change>,
    ) -> Result<()> {
        self.check()?;
        let (mut bytes, mut held) = (0, 0);
        for change in &changes {
            let len = file.register(change)?;
            let needed = self.shared.on_disk.load(Ordering::Acquire) + bytes + len;
            if needed > self.disk_budget {
                return Err(Error::new(
                    ErrorKind::SpillBudget,
                    format!(
                        "spilling transaction {xid} needs more than the spill disk budget of \
                         {} bytes (TransactionConfig::spill_disk_budget; the spill files of \
                         transactions not yet dropped count too)",
                        self.disk_budget
                    ),
                )
                .at(change.lsn));
            }
            bytes += len;
            held += change.size();
        }
        if changes.is_empty() {
            return Ok(());
        }
        file.count += changes.len();
        let job = Job {
            file: Arc::clone(&file.data),
            offset: file.bytes,
            bytes,
            held,
            changes,
            // The table as it is now, with every relation of the job's changes.
            relations: Arc::clone(&file.index),
        };
        self.send(file, job)
    }

    /// Bytes handed to the spill thread and not yet written.
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// The first failed write, as the stream's error.
    pub(crate) fn check(&self) -> Result<()> {
        match &*lock(&self.shared.failed) {
            Some(e) => Err(self.io_error("writing", e)),
            None => Ok(()),
        }
    }

    /// `waker` is woken when the spill thread finishes its next job.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = lock(&self.shared.waker);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// The error of a spill file that could not be written or read.
    pub(crate) fn io_error(&self, what: &str, e: &str) -> Error {
        Error::new(
            ErrorKind::Spill,
            format!("{what} a spill file in {}: {e}", self.dir.display()),
        )
    }

    fn send(&mut self, file: &mut SpillFile, job: Job) -> Result<()> {
        let jobs = match &self.jobs {
            Some(jobs) => jobs,
            None => {
                let (tx, rx) = mpsc::channel();
                let shared = Arc::clone(&self.shared);
                std::thread::Builder::new()
                    .name("walstream-spill".into())
                    .spawn(move || run(&rx, &shared))
                    .map_err(|e| {
                        self.io_error("starting the thread that writes", &e.to_string())
                    })?;
                self.jobs.insert(tx)
            }
        };
        file.bytes += job.bytes;
        self.shared.in_flight.fetch_add(job.held, Ordering::AcqRel);
        self.shared.on_disk.fetch_add(job.bytes, Ordering::AcqRel);
        jobs.send(job)
            .map_err(|_| Error::new(ErrorKind::Spill, "the spill thread has ended"))
    }
}

/// The spill thread: encodes and writes each job, then tells the files' readers and the
/// stream.
fn run(jobs: &mpsc::Receiver<Job>, shared: &WriterShared) {
    let mut buf = BytesMut::new();
    while let Ok(job) = jobs.recv() {
        #[cfg(test)]
        drop(lock(&shared.gate));
        let Job {
            file,
            offset,
            bytes,
            held,
            changes,
            relations,
        } = job;
        let mut released = 0;
        // After a failed write the rest of that file is useless: skip it.
        let result = match lock(&file.state).error {
            Some(_) => Ok(()),
            None => {
                let mut out = Out {
                    file: &file.file,
                    offset,
                    end: offset + bytes,
                    buf: &mut buf,
                    shared,
                    held,
                    released: &mut released,
                };
                out.write_job(changes, &relations)
            }
        };
        {
            let mut state = lock(&file.state);
            match result {
                Ok(()) if state.error.is_none() => state.bytes += bytes,
                Ok(()) => {}
                Err(e) => {
                    lock(&shared.failed).get_or_insert_with(|| e.to_string());
                    state.error = Some((e.kind(), e.to_string()));
                }
            }
        }
        file.changed.notify_all();
        // What was not released piece by piece (all of it when the job was skipped or failed):
        // the changes are freed by now.
        release(shared, held - released);
    }
}

/// `bytes` of changes in flight are freed: less to wait for, and the stream is told.
fn release(shared: &WriterShared, bytes: usize) {
    shared.in_flight.fetch_sub(bytes, Ordering::AcqRel);
    if let Some(waker) = lock(&shared.waker).take() {
        waker.wake();
    }
}

/// Where the spill thread writes one job.
struct Out<'a> {
    file: &'a File,
    /// Where the next piece goes.
    offset: u64,
    /// Where the job's records end (the next job's start).
    end: u64,
    buf: &'a mut BytesMut,
    shared: &'a WriterShared,
    /// What the job's changes count in the budget.
    held: usize,
    /// How much of `held` was released so far.
    released: &'a mut usize,
}

impl Out<'_> {
    /// Encodes `changes` a piece at a time and writes them, freeing each change once encoded
    /// and releasing each piece's changes from the budget once written.
    fn write_job(
        &mut self,
        changes: Vec<Change>,
        relations: &HashMap<usize, u32>,
    ) -> io::Result<()> {
        self.buf.clear();
        let mut encoded = 0;
        for change in changes {
            encode(&change, relations, self.buf)?;
            encoded += change.size();
            drop(change);
            if self.buf.len() >= WRITE_BUFFER {
                self.write_out(std::mem::take(&mut encoded))?;
            }
        }
        self.write_out(encoded)?;
        if self.offset != self.end {
            return Err(bad("records shorter than counted"));
        }
        // One record far larger than the buffer is not kept for the rest of the stream.
        if self.buf.capacity() > 2 * WRITE_BUFFER {
            *self.buf = BytesMut::new();
        }
        Ok(())
    }

    /// Writes the buffer (never past the job's end) and empties it, then releases `freed`
    /// bytes of the budget: the changes it held are gone.
    fn write_out(&mut self, freed: usize) -> io::Result<()> {
        let after = self.offset + self.buf.len() as u64;
        if after > self.end {
            return Err(bad("records longer than counted"));
        }
        write_all_at(self.file, self.buf, self.offset)?;
        self.buf.clear();
        self.offset = after;
        let freed = freed.min(self.held - *self.released);
        *self.released += freed;
        release(self.shared, freed);
        Ok(())
    }
}

/// A temporary file of one transaction's changes; its space returns when it is dropped (and
/// the spill thread has no more of its jobs).
#[derive(Debug)]
pub(crate) struct SpillFile {
    data: Arc<FileData>,
    shared: Arc<WriterShared>,
    relations: Vec<Arc<RelationInfo>>,
    /// Each relation's place in `relations`, by address (each is kept alive there); shared
    /// with the jobs in flight, copied when a relation is added while they hold it.
    index: Arc<HashMap<usize, u32>>,
    count: usize,
    bytes: u64,
}

/// The open file and how much of it the spill thread has written.
#[derive(Debug)]
struct FileData {
    file: File,
    state: Mutex<Written>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Written {
    bytes: u64,
    /// The write that failed (`io::Error` is not `Clone`, and every reader reports it).
    error: Option<(io::ErrorKind, String)>,
}

impl SpillFile {
    /// The number of changes written.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Bytes written, or handed to the spill thread to write.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the spill thread has written all of the file (`Ok(false)`: not yet).
    pub(crate) fn written(&self) -> io::Result<bool> {
        let state = lock(&self.data.state);
        match &state.error {
            Some((kind, e)) => Err(io::Error::new(*kind, e.clone())),
            None => Ok(state.bytes >= self.bytes),
        }
    }

    /// A reader of the changes, in order, without those of the subtransactions in `aborted`.
    pub(crate) fn reader(self: &Arc<Self>, aborted: HashSet<Xid>) -> SpillReader {
        SpillReader {
            file: Arc::clone(self),
            input: BufReader::with_capacity(
                READ_BUFFER,
                At {
                    data: Arc::clone(&self.data),
                    pos: 0,
                },
            ),
            left: self.count,
            aborted,
            waited: false,
        }
    }

    /// Puts the relations of `change` in the file's table; what its record will take
    /// ([`record_len`]), checked against the largest record read back.
    fn register(&mut self, change: &Change) -> Result<u64> {
        match &change.kind {
            ChangeKind::Insert(Insert { relation, .. })
            | ChangeKind::Update(Update { relation, .. })
            | ChangeKind::Delete(Delete { relation, .. }) => self.relation(relation),
            ChangeKind::Truncate(t) => t.relations.iter().for_each(|r| self.relation(r)),
            ChangeKind::Message(_) => {}
        }
        let len = record_len(change);
        if len - 4 > MAX_RECORD {
            return Err(Error::new(ErrorKind::Spill, "a change too large to spill"));
        }
        Ok(len as u64)
    }

    fn relation(&mut self, rel: &Arc<RelationInfo>) {
        let key = Arc::as_ptr(rel) as usize;
        if self.index.contains_key(&key) {
            return;
        }
        let i = u32::try_from(self.relations.len()).unwrap_or(u32::MAX);
        self.relations.push(Arc::clone(rel));
        Arc::make_mut(&mut self.index).insert(key, i);
    }
}

/// The bytes [`encode`] appends for `change`: the length prefix, the fixed fields, and the
/// row images, each a length and then the tuple as pgoutput encodes it ([`Row::byte_size`]:
/// a count, then per column a kind byte and, for a value, a length and the bytes).
fn record_len(change: &Change) -> usize {
    const HEAD: usize = 4 + 1 + 8 + 1 + 4;
    let tuple = |row: &Row| 4 + row.byte_size();
    let old = |old: Option<&OldRow>| 1 + old.map_or(0, |o| tuple(o.row()));
    HEAD + match &change.kind {
        ChangeKind::Insert(i) => 4 + tuple(&i.new),
        ChangeKind::Update(u) => 4 + old(u.old.as_ref()) + tuple(&u.new),
        ChangeKind::Delete(d) => 4 + old(Some(&d.old)),
        ChangeKind::Truncate(t) => 4 + 4 * t.relations.len() + 1,
        ChangeKind::Message(m) => 1 + 8 + 4 + m.prefix.len() + 4 + m.content.len(),
    }
}

/// Appends `change`'s record (length, then body) to `out`; `relations` holds the place of
/// each of its relations in the file's table.
fn encode(change: &Change, relations: &HashMap<usize, u32>, out: &mut BytesMut) -> io::Result<()> {
    let start = out.len();
    let relation = |rel: &Arc<RelationInfo>| {
        relations
            .get(&(Arc::as_ptr(rel) as usize))
            .copied()
            .ok_or_else(|| bad("a relation missing from the table"))
    };
    out.put_u32(0);
    out.put_u8(kind_tag(&change.kind));
    out.put_u64(change.lsn.get());
    let xid = change.xid();
    out.put_u8(u8::from(xid.is_some()));
    out.put_u32(xid.map_or(0, |x| x.0));
    match &change.kind {
        ChangeKind::Insert(i) => {
            out.put_u32(relation(&i.relation)?);
            tuple(out, &i.new);
        }
        ChangeKind::Update(u) => {
            out.put_u32(relation(&u.relation)?);
            old_row(out, u.old.as_ref());
            tuple(out, &u.new);
        }
        ChangeKind::Delete(d) => {
            out.put_u32(relation(&d.relation)?);
            old_row(out, Some(&d.old));
        }
        ChangeKind::Truncate(t) => {
            out.put_u32(u32::try_from(t.relations.len()).unwrap_or(u32::MAX));
            for r in &t.relations {
                out.put_u32(relation(r)?);
            }
            out.put_u8(u8::from(t.cascade) | (u8::from(t.restart_identity) << 1));
        }
        ChangeKind::Message(m) => {
            out.put_u8(u8::from(m.transactional));
            out.put_u64(m.lsn.get());
            out.put_u32(u32::try_from(m.prefix.len()).unwrap_or(u32::MAX));
            out.put_slice(m.prefix.as_bytes());
            out.put_u32(u32::try_from(m.content.len()).unwrap_or(u32::MAX));
            out.put_slice(&m.content);
        }
    }
    // `register` bounded the record at MAX_RECORD, below u32::MAX.
    let len = u32::try_from(out.len() - start - 4).map_err(|_| bad("record length"))?;
    if let Some(prefix) = out.get_mut(start..start + 4) {
        prefix.copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        self.shared.on_disk.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Reads a finished spill file back.
#[derive(Debug)]
pub(crate) struct SpillReader {
    file: Arc<SpillFile>,
    input: BufReader<At>,
    left: usize,
    aborted: HashSet<Xid>,
    waited: bool,
}

impl SpillReader {
    /// The next change, `None` after the last. The first call waits (blocking) until the
    /// spill thread has written the whole file.
    pub(crate) fn next_change(&mut self) -> io::Result<Option<Change>> {
        if !self.waited {
            self.file.data.wait(self.file.bytes)?;
            self.waited = true;
        }
        while self.left > 0 {
            let mut len = [0u8; 4];
            self.input.read_exact(&mut len)?;
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_RECORD {
                return Err(bad("record length"));
            }
            let mut buf = vec![0u8; len];
            self.input.read_exact(&mut buf)?;
            self.left -= 1;
            let change = decode(&Bytes::from(buf), &self.file.relations)?;
            if !change.xid().is_some_and(|x| self.aborted.contains(&x)) {
                return Ok(Some(change));
            }
        }
        Ok(None)
    }
}

impl FileData {
    /// Waits until `bytes` of the file are written, or a write failed.
    fn wait(&self, bytes: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        loop {
            if let Some((kind, e)) = &state.error {
                return Err(io::Error::new(*kind, e.clone()));
            }
            if state.bytes >= bytes {
                return Ok(());
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A reading position in a shared spill file.
#[derive(Debug)]
struct At {
    data: Arc<FileData>,
    pos: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = read_at(&self.data.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Locks `m`; a thread that panicked while holding it left plain data behind, still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes `file` readable and writable by its owner alone. tempfile creates its fallback
/// names with mode 0600, but an `O_TMPFILE` file gets the default 0666 less the umask; it has
/// no name to open it by, yet `/proc/<pid>/fd` would show its mode, and 0600 needs no such
/// argument.
fn owner_only(file: File) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, buf, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = buf.get(n..).unwrap_or_default();
        offset += n as u64;
    }
    Ok(())
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

fn kind_tag(kind: &ChangeKind) -> u8 {
    match kind {
        ChangeKind::Insert(_) => INSERT,
        ChangeKind::Update(_) => UPDATE,
        ChangeKind::Delete(_) => DELETE,
        ChangeKind::Truncate(_) => TRUNCATE,
        ChangeKind::Message(_) => MESSAGE,
    }
}

fn tuple(out: &mut BytesMut, row: &Row) {
    let mut encoded = Vec::with_capacity(row.tuple().len().into());
    encode_columns(row.tuple().columns(), &mut encoded);
    out.put_u32(u32::try_from(encoded.len()).unwrap_or(u32::MAX));
    out.put_slice(&encoded);
}

fn old_row(out: &mut BytesMut, old: Option<&OldRow>) {
    match old {
        None => out.put_u8(0),
        Some(OldRow::Key(r)) => {
            out.put_u8(1);
            tuple(out, r);
        }
        Some(OldRow::Full(r)) => {
            out.put_u8(2);
            tuple(out, r);
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt spill file: {what}"),
    )
}

/// Reads fields off a record, every read checked.
struct Record {
    buf: Bytes,
}

impl Record {
    fn need(&self, n: usize, what: &str) -> io::Result<()> {
        if self.buf.remaining() < n {
            return Err(bad(what));
        }
        Ok(())
    }

    fn u8(&mut self) -> io::Result<u8> {
        self.need(1, "u8")?;
        Ok(self.buf.get_u8())
    }

    fn u32(&mut self) -> io::Result<u32> {
        self.need(4, "u32")?;
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self) -> io::Result<u64> {
        self.need(8, "u64")?;
        Ok(self.buf.get_u64())
    }

    fn bytes(&mut self) -> io::Result<Bytes> {
        let n = self.u32()? as usize;
        self.need(n, "length")?;
        Ok(self.buf.split_to(n))
    }

    fn relation(&mut self, relations: &[Arc<RelationInfo>]) -> io::Result<Arc<RelationInfo>> {
        let i = self.u32()? as usize;
        relations
            .get(i)
            .cloned()
            .ok_or_else(|| bad("relation index"))
    }

    fn row(&mut self, rel: &Arc<RelationInfo>) -> io::Result<Row> {
        let bytes = self.bytes()?;
        let view = TupleData::parse(&bytes).map_err(|e| bad(&e.to_string()))?;
        let tuple = TupleBuf::from_view(&bytes, &view).ok_or_else(|| bad("tuple"))?;
        Ok(Row::new(Arc::clone(rel), tuple))
    }

    fn old(&mut self, rel: &Arc<RelationInfo>) -> io::Result<Option<OldRow>> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(OldRow::Key(self.row(rel)?)),
            2 => Some(OldRow::Full(self.row(rel)?)),
            _ => return Err(bad("old row kind")),
        })
    }
}

fn decode(buf: &Bytes, relations: &[Arc<RelationInfo>]) -> io::Result<Change> {
    let mut r = Record { buf: buf.clone() };
    let tag = r.u8()?;
    let lsn = Lsn::new(r.u64()?);
    let has_xid = r.u8()? != 0;
    let xid = Some(Xid(r.u32()?)).filter(|_| has_xid);
    let kind = match tag {
        INSERT => {
            let relation = r.relation(relations)?;
            ChangeKind::Insert(Insert {
                xid,
                new: r.row(&relation)?,
                relation,
            })
        }
        UPDATE => {
            let relation = r.relation(relations)?;
            ChangeKind::Update(Update {
                xid,
                old: r.old(&relation)?,
                new: r.row(&relation)?,
                relation,
            })
        }
        DELETE => {
            let relation = r.relation(relations)?;
            ChangeKind::Delete(Delete {
                xid,
                old: r
                    .old(&relation)?
                    .ok_or_else(|| bad("delete without old row"))?,
                relation,
            })
        }
        TRUNCATE => {
            let n = r.u32()? as usize;
            r.need(n.saturating_mul(4), "relation count")?;
            let mut rels = Vec::with_capacity(n);
            for _ in 0..n {
                rels.push(r.relation(relations)?);
            }
            let options = r.u8()?;
            ChangeKind::Truncate(Truncate {
                xid,
                relations: rels,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            })
        }
        MESSAGE => {
            let transactional = r.u8()? != 0;
            let lsn = Lsn::new(r.u64()?);
            let prefix = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| bad("prefix"))?;
            ChangeKind::Message(LogicalMessage {
                xid,
                transactional,
                lsn,
                prefix,
                content: r.bytes()?,
            })
        }
        _ => return Err(bad("change kind")),
    };
    if r.buf.has_remaining() {
        return Err(bad("trailing bytes"));
    }
    Ok(Change { lsn, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use walproto::pgoutput::{Column, ReplicaIdentity};
    use walproto::Oid;

    fn rel(id: u32) -> Arc<RelationInfo> {
        Arc::new(RelationInfo {
            id: Oid(id),
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: vec![],
        })
    }

    fn row(relation: &Arc<RelationInfo>, columns: &[Column<'_>]) -> Row {
        let mut bytes = Vec::new();
        encode_columns(columns.iter().copied(), &mut bytes);
        let bytes = Bytes::from(bytes);
        let view = TupleData::parse(&bytes).unwrap();
        Row::new(
            Arc::clone(relation),
            TupleBuf::from_view(&bytes, &view).unwrap(),
        )
    }

    #[test]
    fn every_kind_takes_what_record_len_counts_and_reads_back_the_same() {
        let (a, b) = (rel(1), rel(2));
        let values = [
            Column::Text(b"one"),
            Column::Null,
            Column::Binary(&[0, 1, 2]),
            Column::UnchangedToast,
        ];
        let kinds = [
            ChangeKind::Insert(Insert {
                xid: Some(Xid(7)),
                relation: Arc::clone(&a),
                new: row(&a, &values),
            }),
            ChangeKind::Update(Update {
                xid: None,
                relation: Arc::clone(&b),
                old: None,
                new: row(&b, &values[..1]),
            }),
            ChangeKind::Update(Update {
                xid: None,
                relation: Arc::clone(&a),
                old: Some(OldRow::Key(row(&a, &values[..2]))),
                new: row(&a, &[]),
            }),
            ChangeKind::Delete(Delete {
                xid: None,
                relation: Arc::clone(&b),
                old: OldRow::Full(row(&b, &values)),
            }),
            ChangeKind::Truncate(Truncate {
                xid: None,
                relations: vec![Arc::clone(&a), Arc::clone(&b)],
                cascade: true,
                restart_identity: false,
            }),
            ChangeKind::Message(LogicalMessage {
                xid: Some(Xid(9)),
                transactional: true,
                lsn: Lsn::new(5),
                prefix: "p".into(),
                content: Bytes::from_static(b"content"),
            }),
        ];
        let writer = SpillWriter::new(std::env::temp_dir(), u64::MAX);
        let mut file = writer.create().unwrap();
        for kind in kinds {
            let change = Change {
                lsn: Lsn::new(42),
                kind,
            };
            let counted = file.register(&change).unwrap();
            let mut out = BytesMut::new();
            encode(&change, &file.index, &mut out).unwrap();
            assert_eq!(out.len() as u64, counted, "{change:?}");
            let back = decode(&out.split_off(4).freeze(), &file.relations).unwrap();
            assert_eq!(back, change);
        }
    }
}

//! [`TransactionAssembler`]: events in, committed transactions out, in commit order.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use walproto::{Lsn, Timestamp, Xid};

use super::spill::SpillWriter;
use super::{Buffer, Change, ChangeKind, Transaction, TransactionKind};
use crate::error::{Error, ErrorKind, Result};
use crate::logical::event::{ChangeEvent, EventKind, LogicalMessage};

/// The default memory budget for the changes of transactions not yet committed: 64 MiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 64 << 20;

/// What a [`TransactionStream`](crate::TransactionStream) holds besides the changes, counted in
/// the memory budget so that it bounds what is resident: the spill thread's write buffer, a
/// spill reader's buffer, and the event stream's batches of frames at the default
/// [`buffer_batches`](crate::ReplicationStreamConfigBuilder::buffer_batches) (those queued,
/// one pending and one being read). Never more than a quarter of a budget, so that a small
/// budget still holds changes.
const STREAM_BUFFERS: usize =
    super::spill::BUFFERS + (crate::DEFAULT_BUFFER_BATCHES + 2) * crate::MAX_BATCH_BYTES;

/// The default disk budget of the spill files: 16 GiB. A transaction that needs more is
/// rare (hundreds of millions of small rows), and one that needs much more is more likely
/// a runaway than data to apply; the bound keeps it from filling the disk the system needs.
pub const DEFAULT_SPILL_DISK_BUDGET: u64 = 16 << 30;

/// A transaction being received.
#[derive(Debug)]
struct Open {
    xid: Xid,
    origin: Option<String>,
    buffer: Buffer,
}

impl Open {
    fn new(xid: Xid) -> Self {
        Self {
            xid,
            origin: None,
            buffer: Buffer::default(),
        }
    }
}

/// A prepared transaction waiting for `COMMIT PREPARED` or `ROLLBACK PREPARED`.
#[derive(Debug)]
struct Prepared {
    open: Open,
    prepare_lsn: Lsn,
    prepare_time: Timestamp,
    streamed: bool,
}

/// The settings of a [`TransactionStream`](crate::TransactionStream).
#[derive(Clone, Debug)]
pub struct TransactionConfig {
    memory_budget: usize,
    spill_dir: PathBuf,
    spill_disk_budget: u64,
    messages: bool,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            memory_budget: DEFAULT_MEMORY_BUDGET,
            spill_dir: std::env::temp_dir(),
            spill_disk_budget: DEFAULT_SPILL_DISK_BUDGET,
            messages: false,
        }
    }
}

impl TransactionConfig {
    /// The most bytes of changes of uncommitted transactions held in memory, together with
    /// the stream's read batches and spill buffers (about 1 MiB at the defaults); beyond it
    /// the largest transaction's changes go to a temporary file (default 64 MiB). It bounds
    /// what the stream holds, not the process: add the program itself (the bench's consumer,
    /// about 4 MB; measured: a 256 MiB streamed transaction through a 64 MiB budget peaks at
    /// about 71 MB).
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Where spill files go (default: the system's temporary directory,
    /// [`std::env::temp_dir`]). Each is created there already unlinked and with mode 0600
    /// (`O_TMPFILE` where the file system has it, else created and removed at once): the
    /// directory never lists one, no other local user can read one, and their space returns
    /// when their transaction is dropped or the process ends, even by `SIGKILL`. Choose a
    /// directory on a file system with room for the [disk budget](Self::spill_disk_budget).
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = dir.into();
        self
    }

    /// The most bytes of spill files at once (default [`DEFAULT_SPILL_DISK_BUDGET`], 16 GiB):
    /// the files of transactions still arriving, of prepared ones waiting for their outcome,
    /// and of delivered ones not yet dropped. A spill that would pass it ends the stream with
    /// [`ErrorKind::SpillBudget`](crate::ErrorKind::SpillBudget) before that transaction is
    /// delivered, so it is not acknowledged and comes again to the next stream.
    pub fn spill_disk_budget(mut self, bytes: u64) -> Self {
        self.spill_disk_budget = bytes;
        self
    }

    /// Whether non-transactional logical decoding messages (`pg_logical_emit_message(false,
    /// ...)`, which belong to no transaction) are delivered (default: no, they are dropped).
    /// When on, take them with [`TransactionStream::next_item`](crate::TransactionStream::next_item)
    /// or [`TransactionAssembler::pop_item`]: each comes as a [`TransactionItem::Message`] at
    /// its place among the committed transactions. (`next_transaction` and `pop` skip them.)
    /// The stream must be started with `messages` on
    /// ([`ReplicationStreamConfigBuilder::messages`](crate::ReplicationStreamConfigBuilder::messages))
    /// for the server to send any.
    pub fn messages(mut self, deliver: bool) -> Self {
        self.messages = deliver;
        self
    }
}

/// What a [`TransactionStream`](crate::TransactionStream) delivers through
/// [`next_item`](crate::TransactionStream::next_item): committed transactions, and with
/// [`TransactionConfig::messages`] the non-transactional messages, in the order the server
/// sent them.
#[derive(Debug)]
#[non_exhaustive]
pub enum TransactionItem {
    /// A committed transaction.
    Transaction(Transaction),
    /// A non-transactional logical decoding message (`transactional` is false): it was
    /// emitted outside any transaction's outcome, and is delivered when it arrives.
    Message(LogicalMessage),
}

/// Assembles committed transactions from a stream of events: the core of
/// [`TransactionStream`](crate::TransactionStream). It does no I/O on the caller's thread
/// (a spill thread of its own writes the spill files).
///
/// Feed every event in order to [`push`](Self::push); take finished transactions with
/// [`pop`](Self::pop). It handles plain transactions, streamed ones (chunks of several
/// transactions interleaved, assembled per top-level xid; a Stream Abort of the transaction
/// drops it, of a subtransaction drops exactly that subtransaction's changes, and one that
/// matches no open streamed transaction, as PostgreSQL 18 sends even with streaming off, is
/// ignored), prepared ones
/// (kept until `COMMIT PREPARED`, dropped on `ROLLBACK PREPARED`), and reconnects (partial
/// transactions are dropped, as the server sends them again; prepared ones are kept).
///
/// Past the memory budget, [`push`](Self::push) hands the largest transaction's changes to
/// the spill thread and returns without waiting for the disk; until the thread has written
/// them they still count in [`memory`](Self::memory). A caller that drives the assembler
/// itself stops pushing while [`over_budget`](Self::over_budget) is true (as
/// [`TransactionStream`](crate::TransactionStream) does) to hold no more than the budget
/// plus one change. [`pop`](Self::pop) may return a transaction whose spill file is still
/// being written: its readers wait for the spill thread. After an error, drop the
/// assembler: its state no longer follows the stream.
#[derive(Debug)]
pub struct TransactionAssembler {
    config: TransactionConfig,
    writer: SpillWriter,
    current: Option<Open>,
    current_prepare: Option<(String, Lsn, Timestamp)>,
    streams: HashMap<Xid, Open>,
    in_stream: Option<Xid>,
    prepared: HashMap<String, Prepared>,
    ready: VecDeque<TransactionItem>,
    in_memory: usize,
    peak_in_memory: usize,
    /// Shared with the stream's stats when over an `EventStream` (`StreamStats::spilled_bytes`).
    spilled_bytes: Arc<AtomicU64>,
    /// Inside the initial snapshot, at this consistent point.
    snapshot: Option<Lsn>,
}

impl TransactionAssembler {
    /// An assembler with `config`'s budget.
    pub fn new(config: TransactionConfig) -> Self {
        Self {
            writer: SpillWriter::new(config.spill_dir.clone(), config.spill_disk_budget),
            config,
            current: None,
            current_prepare: None,
            streams: HashMap::new(),
            in_stream: None,
            prepared: HashMap::new(),
            ready: VecDeque::new(),
            in_memory: 0,
            peak_in_memory: 0,
            spilled_bytes: Arc::default(),
            snapshot: None,
        }
    }

    /// An assembler that counts the bytes it spills into `spilled` (a stream's stats).
    pub(crate) fn counting_spills(config: TransactionConfig, spilled: Arc<AtomicU64>) -> Self {
        Self {
            spilled_bytes: spilled,
            ..Self::new(config)
        }
    }

    /// The next committed transaction, if one is finished.
    pub fn pop(&mut self) -> Option<Transaction> {
        while let Some(item) = self.ready.pop_front() {
            if let TransactionItem::Transaction(tx) = item {
                return Some(tx);
            }
        }
        None
    }

    /// The next committed transaction or non-transactional message (with
    /// [`TransactionConfig::messages`]), if one is finished.
    pub fn pop_item(&mut self) -> Option<TransactionItem> {
        self.ready.pop_front()
    }

    /// Bytes of changes held in memory now (including those on their way to a spill file),
    /// and the most held at once.
    pub fn memory(&self) -> (usize, usize) {
        (self.held(), self.peak_in_memory)
    }

    /// Whether more than the memory budget is held because the spill thread has not yet
    /// written what it was given: stop pushing until it is false.
    pub fn over_budget(&self) -> bool {
        self.held() > self.limit()
    }

    /// Bytes written (or being written) to spill files so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes.load(Ordering::Relaxed)
    }

    /// Ready when [`over_budget`](Self::over_budget) is false (or a spill write failed);
    /// otherwise the spill thread wakes the task when it has written more.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.over_budget() {
            self.writer.register(cx.waker());
            // The thread may have finished between the check and the registration.
            if self.over_budget() {
                return Poll::Pending;
            }
        }
        Poll::Ready(self.writer.check())
    }

    /// The next committed transaction once its spill file, if any, is completely written:
    /// `Ready(None)` when none is finished, `Pending` while the spill thread still writes the
    /// next one's file, an error when it failed to.
    pub(crate) fn poll_pop(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<TransactionItem>>> {
        let file = match self.ready.front() {
            None => return Poll::Ready(None),
            Some(TransactionItem::Transaction(tx)) => tx.changes.file.clone(),
            Some(TransactionItem::Message(_)) => None,
        };
        if let Some(file) = file {
            let mut written = file.written();
            if matches!(written, Ok(false)) {
                self.writer.register(cx.waker());
                written = file.written();
            }
            match written {
                Ok(true) => {}
                Ok(false) => return Poll::Pending,
                Err(e) => {
                    return Poll::Ready(Some(Err(self.writer.io_error("writing", &e.to_string()))))
                }
            }
        }
        Poll::Ready(self.ready.pop_front().map(Ok))
    }

    /// The earliest prepare LSN of the prepared transactions still waiting for their outcome:
    /// acknowledging past it would tell the server not to send them again.
    pub fn pending_prepare(&self) -> Option<Lsn> {
        self.prepared.values().map(|p| p.prepare_lsn).min()
    }

    /// Takes the next event of the stream.
    pub fn push(&mut self, event: ChangeEvent) -> Result<()> {
        let lsn = event.lsn;
        let change = |kind| Change { lsn, kind };
        match event.kind {
            EventKind::Begin(b) => {
                self.drop_open_current();
                self.current = Some(Open::new(b.xid));
            }
            EventKind::BeginPrepare(p) => {
                self.drop_open_current();
                self.current = Some(Open::new(p.xid));
                self.current_prepare = Some((p.gid, p.prepare_lsn, p.prepare_time));
            }
            EventKind::Origin { name, .. } => {
                if let Some(o) = self.current.as_mut() {
                    o.origin = Some(name);
                }
            }
            EventKind::Insert(c) => self.add(change(ChangeKind::Insert(c)))?,
            EventKind::Update(c) => self.add(change(ChangeKind::Update(c)))?,
            EventKind::Delete(c) => self.add(change(ChangeKind::Delete(c)))?,
            EventKind::Truncate(c) => self.add(change(ChangeKind::Truncate(c)))?,
            EventKind::Message(m) if m.transactional => self.add(change(ChangeKind::Message(m)))?,
            // Non-transactional messages belong to no transaction: delivered on their own
            // when asked for, else dropped.
            EventKind::Message(m) if self.config.messages => {
                self.ready.push_back(TransactionItem::Message(m))
            }
            EventKind::Commit(c) => {
                let open = self.take_current("Commit")?;
                self.finish(
                    open,
                    c.commit_lsn,
                    c.end_lsn,
                    c.commit_time,
                    TransactionKind::Plain,
                )?;
            }
            EventKind::StreamStart(s) => {
                if s.first_segment {
                    if let Some(old) = self.streams.remove(&s.xid) {
                        self.release(&old.buffer);
                    }
                }
                self.streams
                    .entry(s.xid)
                    .or_insert_with(|| Open::new(s.xid));
                self.in_stream = Some(s.xid);
            }
            EventKind::StreamStop => self.in_stream = None,
            EventKind::StreamCommit(c) => {
                let open = self.take_stream(c.xid);
                self.finish(
                    open,
                    c.commit_lsn,
                    c.end_lsn,
                    c.commit_time,
                    TransactionKind::Streamed,
                )?;
            }
            // A stray abort (of no open streamed transaction) finds nothing and changes
            // nothing: PostgreSQL 18 sends such aborts even when nothing was streamed.
            EventKind::StreamAbort(a) => {
                if a.xid == a.subxid {
                    if let Some(open) = self.streams.remove(&a.xid) {
                        self.release(&open.buffer);
                    }
                } else if let Some(open) = self.streams.get_mut(&a.xid) {
                    let before = open.buffer.memory_bytes;
                    open.buffer.memory.retain(|c| c.xid() != Some(a.subxid));
                    open.buffer.memory_bytes = open.buffer.memory.iter().map(Change::size).sum();
                    let freed = before - open.buffer.memory_bytes;
                    if open.buffer.file.is_some() {
                        open.buffer.aborted.insert(a.subxid);
                    }
                    self.in_memory -= freed;
                }
            }
            EventKind::Prepare(p) => {
                let open = self.take_current("Prepare")?;
                let (gid, prepare_lsn, prepare_time) = self.current_prepare.take().unwrap_or((
                    p.gid.clone(),
                    p.prepare_lsn,
                    p.prepare_time,
                ));
                self.hold_prepared(gid, open, prepare_lsn, prepare_time, false);
            }
            EventKind::StreamPrepare(p) => {
                let open = self.take_stream(p.xid);
                self.hold_prepared(p.gid, open, p.prepare_lsn, p.prepare_time, true);
            }
            EventKind::CommitPrepared(c) => {
                let Some(p) = self.prepared.remove(&c.gid) else {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "COMMIT PREPARED '{}' at {} for a transaction whose PREPARE was not \
                             received",
                            c.gid, c.commit_lsn
                        ),
                    ));
                };
                let kind = TransactionKind::Prepared {
                    gid: c.gid,
                    prepare_lsn: p.prepare_lsn,
                    prepare_time: p.prepare_time,
                    streamed: p.streamed,
                };
                self.finish(p.open, c.commit_lsn, c.end_lsn, c.commit_time, kind)?;
            }
            EventKind::RollbackPrepared(r) => {
                if let Some(p) = self.prepared.remove(&r.gid) {
                    self.release(&p.open.buffer);
                }
            }
            EventKind::Reconnected { .. } | EventKind::Resnapshot { .. } => {
                // The server sends every unfinished transaction again from its start.
                self.drop_open_current();
                let streams: Vec<Open> = self.streams.drain().map(|(_, o)| o).collect();
                for open in &streams {
                    self.release(&open.buffer);
                }
                self.in_stream = None;
            }
            EventKind::SnapshotBegin { consistent_point } => {
                self.snapshot = Some(consistent_point);
            }
            EventKind::SnapshotTable { relation, .. } => {
                let point = self.snapshot.unwrap_or(lsn);
                let open = self.current.take().unwrap_or_else(|| Open::new(Xid(0)));
                let kind = TransactionKind::Snapshot { relation };
                self.finish(open, point, point, Timestamp::EPOCH, kind)?;
            }
            EventKind::SnapshotEnd { .. } => self.snapshot = None,
            EventKind::XLogData(_) => {
                return Err(Error::config(
                    "transactions need decoded events: start the stream without raw mode",
                ))
            }
            _ => {}
        }
        Ok(())
    }

    fn hold_prepared(
        &mut self,
        gid: String,
        open: Open,
        prepare_lsn: Lsn,
        prepare_time: Timestamp,
        streamed: bool,
    ) {
        // A prepare sent again (after a reconnect) replaces the one held.
        if let Some(old) = self.prepared.remove(&gid) {
            self.release(&old.open.buffer);
        }
        self.prepared.insert(
            gid,
            Prepared {
                open,
                prepare_lsn,
                prepare_time,
                streamed,
            },
        );
    }

    fn drop_open_current(&mut self) {
        if let Some(open) = self.current.take() {
            self.release(&open.buffer);
        }
        self.current_prepare = None;
    }

    fn take_current(&mut self, what: &str) -> Result<Open> {
        self.current
            .take()
            .ok_or_else(|| Error::new(ErrorKind::Protocol, format!("{what} without a transaction")))
    }

    /// The streamed transaction `xid` (empty if none of its changes was streamed).
    fn take_stream(&mut self, xid: Xid) -> Open {
        self.streams.remove(&xid).unwrap_or_else(|| Open::new(xid))
    }

    /// What the spill thread shares, with the lock that stalls it while a test holds it.
    #[cfg(test)]
    pub(super) fn spill_thread(&self) -> Arc<super::spill::WriterShared> {
        self.writer.shared()
    }

    /// The most bytes of changes held: the budget less the stream's buffers.
    fn limit(&self) -> usize {
        let budget = self.config.memory_budget;
        budget - STREAM_BUFFERS.min(budget / 4)
    }

    /// Changes in memory, and on their way to a spill file.
    fn held(&self) -> usize {
        self.in_memory + self.writer.in_flight()
    }

    /// Adds a change to the transaction it belongs to, then hands the largest transactions'
    /// changes to the spill thread until what stays in memory is within the budget.
    fn add(&mut self, change: Change) -> Result<()> {
        // Held until its transaction ends: kept in a buffer of its own, so that the budget
        // counts what is really held (a frame's slice would keep a whole read buffer alive).
        let change = change.detached();
        let size = change.size();
        let lsn = change.lsn;
        let open = match self.in_stream {
            Some(xid) => self.streams.entry(xid).or_insert_with(|| Open::new(xid)),
            None if self.snapshot.is_some() => {
                self.current.get_or_insert_with(|| Open::new(Xid(0)))
            }
            None => self.current.as_mut().ok_or_else(|| {
                Error::new(ErrorKind::Protocol, "a change outside any transaction")
            })?,
        };
        open.buffer.memory.push(change);
        open.buffer.memory_bytes += size;
        self.in_memory += size;
        self.peak_in_memory = self.peak_in_memory.max(self.held());
        // Only what stays in memory decides: bytes on their way to disk are already spilled,
        // and spilling more would not free them sooner.
        while self.in_memory > self.limit() {
            if !self.spill_largest().map_err(|e| at(e, lsn))? {
                break;
            }
        }
        Ok(())
    }

    /// Hands the in-memory changes of the transaction holding the most to the spill thread;
    /// false when nothing is left to spill.
    fn spill_largest(&mut self) -> Result<bool> {
        let largest = self
            .current
            .iter_mut()
            .chain(self.streams.values_mut())
            .chain(self.prepared.values_mut().map(|p| &mut p.open))
            .max_by_key(|o| o.buffer.memory_bytes);
        let Some(open) = largest.filter(|o| o.buffer.memory_bytes > 0) else {
            return Ok(false);
        };
        let file = match &mut open.buffer.file {
            Some(f) => f,
            None => open.buffer.file.insert(Arc::new(self.writer.create()?)),
        };
        let file = Arc::get_mut(file)
            .ok_or_else(|| Error::new(ErrorKind::Spill, "a spill file is shared while written"))?;
        let before = file.bytes();
        // The vector itself goes to the spill thread, which frees it once written: its slots
        // are not kept at their largest, nor copied, while the next changes arrive.
        self.writer
            .write(file, open.xid, std::mem::take(&mut open.buffer.memory))?;
        self.spilled_bytes
            .fetch_add(file.bytes() - before, Ordering::Relaxed);
        self.in_memory -= open.buffer.memory_bytes;
        open.buffer.memory_bytes = 0;
        tracing::debug!(xid = %open.xid, spilled = file.bytes(), "spilled a transaction's changes");
        Ok(true)
    }

    fn release(&mut self, buffer: &Buffer) {
        self.in_memory -= buffer.memory_bytes;
    }

    fn finish(
        &mut self,
        mut open: Open,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: Timestamp,
        kind: TransactionKind,
    ) -> Result<()> {
        self.in_memory -= open.buffer.memory_bytes;
        open.buffer.memory_bytes = 0;
        self.ready
            .push_back(TransactionItem::Transaction(Transaction {
                xid: open.xid,
                commit_lsn,
                end_lsn,
                commit_time,
                origin: open.origin,
                kind,
                changes: open.buffer,
            }));
        Ok(())
    }
}

/// `e` refers to the change at `lsn`, unless it already names a position.
fn at(e: Error, lsn: Lsn) -> Error {
    match e.lsn() {
        Some(_) => e,
        None => e.at(lsn),
    }
}

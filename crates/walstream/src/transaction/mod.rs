//! Whole committed transactions, in commit order: plain, streamed (protocol 2+), prepared
//! (protocol 3+) and parallel-streamed (protocol 4), with aborted subtransactions dropped (but
//! see [`TransactionStream`] for the logical messages pgoutput cannot attribute) and memory
//! bounded by spilling to disk.
//!
//! - this module: the delivered types ([`Transaction`], [`Change`]);
//! - `assembler`: [`TransactionAssembler`], the sans-IO part (events in, transactions out);
//! - `stream`: [`TransactionStream`], the assembler over an [`EventStream`](crate::EventStream);
//! - `spill`: the files that hold changes past the memory budget.

mod assembler;
mod change;
mod spill;
mod stream;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use walproto::{Lsn, Timestamp, Xid};

use crate::error::{Error, ErrorKind, Result};
use spill::{SpillFile, SpillReader};

pub use assembler::{
    TransactionAssembler, TransactionConfig, TransactionItem, DEFAULT_MEMORY_BUDGET,
    DEFAULT_SPILL_DISK_BUDGET,
};
pub use change::{Change, ChangeKind};
pub use stream::TransactionStream;

/// How a transaction reached the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionKind {
    /// Sent whole at commit (Begin .. Commit).
    Plain,
    /// Streamed while in progress (protocol 2+) and committed (Stream Commit).
    Streamed,
    /// Prepared for two-phase commit (protocol 3+), then committed with `COMMIT PREPARED`.
    Prepared {
        /// The global transaction identifier.
        gid: String,
        /// The LSN of the prepare.
        prepare_lsn: Lsn,
        /// When it was prepared.
        prepare_time: Timestamp,
        /// Whether the prepared transaction was streamed.
        streamed: bool,
    },
    /// The rows of one table in the initial snapshot (all inserts; commit and end LSN are the
    /// slot's consistent point, the commit time is unknown and set to the epoch).
    Snapshot {
        /// The table.
        relation: Arc<walproto::RelationInfo>,
    },
}

/// A committed transaction and its changes, in order.
#[derive(Debug)]
pub struct Transaction {
    /// The top-level transaction id.
    pub xid: Xid,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end of the commit record: acknowledge this once the transaction is applied
    /// ([`TransactionStream::ack`]).
    pub end_lsn: Lsn,
    /// The commit time.
    pub commit_time: Timestamp,
    /// The replication origin it came from, if any.
    pub origin: Option<String>,
    /// How it was sent.
    pub kind: TransactionKind,
    changes: Buffer,
}

impl Transaction {
    /// The number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether it has no changes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some of its changes were spilled to disk (reading them back does file I/O).
    pub fn is_spilled(&self) -> bool {
        self.changes.file.is_some()
    }

    /// The changes, in order, read with blocking I/O: spilled changes are read back from
    /// their file on the calling thread. On an async runtime use
    /// [`change_stream`](Self::change_stream) for a spilled transaction instead (a long
    /// blocking iteration stops the stream's status updates on a current-thread runtime). A
    /// file that cannot be read yields one error and ends.
    pub fn changes(&self) -> Changes<'_> {
        Changes {
            reader: self.spill_reader(),
            tail: self.changes.memory.iter(),
        }
    }

    /// The changes, in order, as an async stream: spilled changes are read back and decoded
    /// on a thread of their own (less than a MiB ahead), and the stream gives the runtime a
    /// turn every few hundred changes, so iterating a huge transaction never stalls it. A
    /// file that cannot be read yields one error and ends.
    ///
    /// ```no_run
    /// # async fn apply(tx: walstream::Transaction) -> walstream::Result<()> {
    /// let mut changes = tx.change_stream();
    /// while let Some(change) = changes.next_change().await {
    ///     println!("{:?}", change?.kind);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn change_stream(&self) -> ChangeStream<'_> {
        ChangeStream {
            spilled: self.spill_reader().map(Spilled::Unread),
            batch: Vec::new().into_iter(),
            tail: self.changes.memory.iter(),
            since_yield: 0,
        }
    }

    fn spill_reader(&self) -> Option<SpillReader> {
        let file = self.changes.file.as_ref()?;
        Some(file.reader(self.changes.aborted.clone()))
    }
}

/// The changes of a [`Transaction`], read with blocking I/O; see [`Transaction::changes`].
#[derive(Debug)]
pub struct Changes<'t> {
    reader: Option<SpillReader>,
    tail: std::slice::Iter<'t, Change>,
}

impl Iterator for Changes<'_> {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(reader) = &mut self.reader {
            match reader.next_change() {
                Ok(Some(c)) => return Some(Ok(c)),
                Ok(None) => self.reader = None,
                Err(e) => {
                    self.reader = None;
                    self.tail = [].iter();
                    return Some(Err(spill_error(e)));
                }
            }
        }
        self.tail.next().cloned().map(Ok)
    }
}

/// The changes of a [`Transaction`] as a [`futures_core::Stream`]; see
/// [`Transaction::change_stream`].
///
/// Dropping it stops its reading thread (after the read in progress).
#[derive(Debug)]
pub struct ChangeStream<'t> {
    spilled: Option<Spilled>,
    batch: std::vec::IntoIter<Change>,
    tail: std::slice::Iter<'t, Change>,
    /// Changes returned since the stream last gave the runtime a turn.
    since_yield: usize,
}

/// The spilled part of a [`ChangeStream`]: its reader, until the first poll starts the
/// reading thread.
#[derive(Debug)]
enum Spilled {
    Unread(SpillReader),
    Reading(tokio::sync::mpsc::Receiver<Result<Vec<Change>>>),
}

/// The reading thread hands over changes in batches of at most this many bytes (by
/// [`Change`]'s memory estimate) or [`YIELD_EVERY`] changes.
const BATCH_BYTES: usize = 256 * 1024;
/// A [`ChangeStream`] gives the runtime a turn after this many changes, even when the next
/// is ready: a consumer that does quick work per change would otherwise never yield, and
/// the stream's driver task (on a current-thread runtime) would send no status update.
const YIELD_EVERY: usize = 256;
/// Batches read ahead of the consumer.
const BATCHES_AHEAD: usize = 2;

impl ChangeStream<'_> {
    /// The next change; `None` after the last (or after an error).
    pub async fn next_change(&mut self) -> Option<Result<Change>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Change>>> {
        loop {
            if let Some(c) = self.batch.next() {
                return Poll::Ready(Some(Ok(c)));
            }
            match self.spilled.take() {
                None => return Poll::Ready(self.tail.next().cloned().map(Ok)),
                Some(Spilled::Unread(reader)) => match read_in_background(reader) {
                    Ok(rx) => self.spilled = Some(Spilled::Reading(rx)),
                    Err(e) => {
                        self.tail = [].iter();
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Some(Spilled::Reading(mut rx)) => match rx.poll_recv(cx) {
                    Poll::Ready(Some(Ok(batch))) => {
                        self.batch = batch.into_iter();
                        self.spilled = Some(Spilled::Reading(rx));
                    }
                    Poll::Ready(Some(Err(e))) => {
                        self.tail = [].iter();
                        return Poll::Ready(Some(Err(e)));
                    }
                    // The whole file was read.
                    Poll::Ready(None) => {}
                    Poll::Pending => {
                        self.spilled = Some(Spilled::Reading(rx));
                        return Poll::Pending;
                    }
                },
            }
        }
    }
}

impl Stream for ChangeStream<'_> {
    type Item = Result<Change>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.since_yield >= YIELD_EVERY {
            this.since_yield = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let item = this.poll_change(cx);
        if let Poll::Ready(Some(_)) = item {
            this.since_yield += 1;
        } else {
            this.since_yield = 0;
        }
        item
    }
}

/// Starts a thread that reads `reader` into batches; the receiver ends after the last batch
/// or an error. The thread stops when the receiver is dropped.
fn read_in_background(
    mut reader: SpillReader,
) -> Result<tokio::sync::mpsc::Receiver<Result<Vec<Change>>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(BATCHES_AHEAD);
    std::thread::Builder::new()
        .name("walstream-spill-read".into())
        .spawn(move || {
            let mut batch = Vec::new();
            let mut bytes = 0;
            loop {
                let (next, end) = match reader.next_change() {
                    Ok(Some(c)) => {
                        bytes += c.size();
                        batch.push(c);
                        (None, false)
                    }
                    Ok(None) => (None, true),
                    Err(e) => (Some(Err(spill_error(e))), true),
                };
                let full = bytes >= BATCH_BYTES || batch.len() >= YIELD_EVERY;
                if (full || end) && !batch.is_empty() {
                    bytes = 0;
                    if tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
                        return;
                    }
                }
                if let Some(e) = next {
                    let _ = tx.blocking_send(e);
                }
                if end {
                    return;
                }
            }
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::Spill,
                format!("starting a thread to read spilled changes: {e}"),
            )
        })?;
    Ok(rx)
}

fn spill_error(e: std::io::Error) -> Error {
    Error::new(ErrorKind::Spill, format!("reading spilled changes: {e}"))
}

/// The changes buffered for one transaction: the part spilled to a file, then the part in
/// memory, and the subtransactions aborted after their changes were spilled.
#[derive(Debug, Default)]
pub(super) struct Buffer {
    pub(super) file: Option<Arc<SpillFile>>,
    pub(super) memory: Vec<Change>,
    pub(super) memory_bytes: usize,
    pub(super) aborted: HashSet<Xid>,
}

impl Buffer {
    pub(super) fn len(&self) -> usize {
        self.file.as_ref().map_or(0, |f| f.len()) + self.memory.len()
    }
}

#[cfg(test)]
mod tests;

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

use std::sync::Arc;

use walproto::{Lsn, Timestamp, Xid};

use std::collections::HashSet;

use crate::error::{Error, ErrorKind, Result};
use spill::{SpillFile, SpillReader};

pub use assembler::{TransactionAssembler, TransactionConfig, DEFAULT_MEMORY_BUDGET};
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

    /// The changes, in order. Spilled changes are read back from their file, with blocking
    /// reads (run huge transactions' iteration in `spawn_blocking` if that matters); a file
    /// that cannot be read yields one error and ends.
    pub fn changes(&self) -> Changes<'_> {
        let (reader, error) = match &self.changes.file {
            Some(f) => match f.reader() {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e)),
            },
            None => (None, None),
        };
        Changes {
            reader,
            error,
            tail: self.changes.memory.iter(),
            aborted: &self.changes.aborted,
        }
    }
}

/// The changes of a [`Transaction`]; see [`Transaction::changes`].
#[derive(Debug)]
pub struct Changes<'t> {
    reader: Option<SpillReader>,
    error: Option<std::io::Error>,
    tail: std::slice::Iter<'t, Change>,
    aborted: &'t HashSet<Xid>,
}

impl Iterator for Changes<'_> {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            self.reader = None;
            self.tail = [].iter();
            return Some(Err(spill_error(e)));
        }
        while let Some(reader) = &mut self.reader {
            match reader.next_change() {
                Ok(Some(c)) if c.xid().is_some_and(|x| self.aborted.contains(&x)) => {}
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

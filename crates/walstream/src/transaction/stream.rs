//! [`TransactionStream`]: the assembler over an [`EventStream`].

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use walproto::Lsn;

use super::{Transaction, TransactionAssembler, TransactionConfig, TransactionItem};
use crate::error::{Error, Result};
use crate::logical::stream::EventStream;
use crate::session::feedback::SharedLsnFeedback;

/// Committed transactions in commit order, assembled from an [`EventStream`].
///
/// Transactions past the memory budget are spilled by a thread of the stream's own, and a
/// spilled transaction is delivered once its file is written; while that thread is behind,
/// the stream takes no more events (the driver keeps sending status updates). An error of
/// the transaction layer (a spill that fails or passes the disk budget, a server that breaks
/// the protocol's order) ends the stream: the driver stops with a last status update of what
/// was acknowledged, never past what was delivered.
///
/// The changes of a subtransaction that was rolled back are dropped, with one exception that
/// pgoutput gives no way to detect: a *transactional* logical decoding message
/// (`pg_logical_emit_message(true, ...)`) emitted inside a subtransaction that is later rolled
/// back still arrives when the transaction is streamed (protocol 2+, a transaction larger than
/// `logical_decoding_work_mem`). Inside a streamed block the server labels such a message with
/// the top-level xid, not the subtransaction's, so the Stream Abort of the subtransaction does
/// not match it. Transactions sent whole at commit do not have this problem: there the server
/// drops the rolled-back subtransaction's messages itself.
///
/// ```no_run
/// use walstream::{LogicalReplicationStream, ReplicationStreamConfig, TransactionConfig};
///
/// # async fn run() -> walstream::Result<()> {
/// // Large transactions streamed as they run: only committed ones are delivered anyway.
/// let config = ReplicationStreamConfig::builder("app_slot", ["app_pub"])
///     .highest_streaming()
///     .build()?;
/// let mut txs = LogicalReplicationStream::connect("postgresql://repl@db/app", config)
///     .await?
///     .start()
///     .into_transactions(TransactionConfig::default().memory_budget(16 << 20));
/// while let Some(tx) = txs.next_transaction().await? {
///     // Spilled changes are read on a thread of their own: the runtime keeps running.
///     let mut changes = tx.change_stream();
///     while let Some(change) = changes.next_change().await {
///         println!("{:?}", change?.kind);
///     }
///     txs.ack(&tx); // applied: the slot may move past it
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TransactionStream {
    events: EventStream,
    assembler: TransactionAssembler,
    /// An error of the assembler ended the stream.
    ended: bool,
}

impl EventStream {
    /// Turns the event stream into a stream of committed transactions.
    pub fn into_transactions(self, config: TransactionConfig) -> TransactionStream {
        let spilled = self.stats_handle().spill_counter();
        TransactionStream {
            events: self,
            assembler: TransactionAssembler::counting_spills(config, spilled),
            ended: false,
        }
    }
}

impl TransactionStream {
    /// The next committed transaction; `Ok(None)` when the stream has ended. Non-transactional
    /// messages are skipped (see [`next_item`](Self::next_item)).
    pub async fn next_transaction(&mut self) -> Result<Option<Transaction>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .transpose()
    }

    /// The next committed transaction or, with [`TransactionConfig::messages`] on, the next
    /// non-transactional logical decoding message, in the order the server sent them;
    /// `Ok(None)` when the stream has ended. A message needs no acknowledgement of its own:
    /// acknowledging a later transaction covers it.
    ///
    /// ```no_run
    /// use walstream::{LogicalReplicationStream, ReplicationStreamConfig, TransactionConfig,
    ///     TransactionItem};
    ///
    /// # async fn run() -> walstream::Result<()> {
    /// let config = ReplicationStreamConfig::builder("app_slot", ["app_pub"])
    ///     .messages(true)
    ///     .build()?;
    /// let mut items = LogicalReplicationStream::connect("postgresql://repl@db/app", config)
    ///     .await?
    ///     .start()
    ///     .into_transactions(TransactionConfig::default().messages(true));
    /// while let Some(item) = items.next_item().await? {
    ///     match item {
    ///         TransactionItem::Transaction(tx) => items.ack(&tx),
    ///         TransactionItem::Message(m) => println!("{}: {:?}", m.prefix, m.content),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn next_item(&mut self) -> Result<Option<TransactionItem>> {
        std::future::poll_fn(|cx| self.poll_item(cx))
            .await
            .transpose()
    }

    /// Acknowledges `tx` (and everything before it) as applied and durable. While a prepared
    /// transaction waits for its outcome, the acknowledgement stops at its prepare, so that
    /// after a restart the server sends it again rather than only its `COMMIT PREPARED`.
    pub fn ack(&self, tx: &Transaction) {
        let mut lsn = tx.end_lsn;
        if let Some(p) = self.assembler.pending_prepare() {
            lsn = lsn.min(p);
        }
        self.events.ack(lsn);
    }

    /// The acknowledgement handle.
    pub fn feedback(&self) -> &SharedLsnFeedback {
        self.events.feedback()
    }

    /// The assembler (memory use, pending prepares).
    pub fn assembler(&self) -> &TransactionAssembler {
        &self.assembler
    }

    /// The underlying event stream's counters.
    pub fn stats(&self) -> crate::StreamStats {
        self.events.stats()
    }

    /// Stops the stream cleanly (see [`EventStream::shutdown`]).
    pub async fn shutdown(self) -> Result<Lsn> {
        self.events.shutdown().await
    }
}

impl TransactionStream {
    /// Ends the stream after an error of the assembler: the driver stops with a last status
    /// update of what was acknowledged, never past what was delivered.
    fn end(&mut self, e: Error) -> Error {
        self.ended = true;
        self.events.cancellation_token().cancel();
        e
    }
}

impl TransactionStream {
    /// The next item: a finished transaction (once its spill file is written) or message,
    /// else events taken until one is.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<TransactionItem>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            // A spilled transaction waits for the spill thread to finish its file, and no
            // event is taken while the thread is behind the memory budget: the socket waits
            // (the driver still sends status updates).
            let ready = match self.assembler.poll_pop(cx) {
                Poll::Ready(None) => self.assembler.poll_room(cx).map(|r| r.err().map(Err)),
                other => other,
            };
            match ready {
                Poll::Ready(None) => {}
                Poll::Ready(Some(Ok(item))) => return Poll::Ready(Some(Ok(item))),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(self.end(e)))),
                Poll::Pending => return Poll::Pending,
            }
            match Pin::new(&mut self.events).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    if let Err(e) = self.assembler.push(event) {
                        return Poll::Ready(Some(Err(self.end(e))));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Committed transactions; non-transactional messages (with [`TransactionConfig::messages`])
/// are skipped: take them with [`TransactionStream::next_item`].
impl Stream for TransactionStream {
    type Item = Result<Transaction>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.poll_item(cx) {
                Poll::Ready(Some(Ok(TransactionItem::Transaction(tx)))) => {
                    return Poll::Ready(Some(Ok(tx)))
                }
                Poll::Ready(Some(Ok(TransactionItem::Message(_)))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

//! Where a pgoutput stream is between transaction boundaries: the one home of "which message
//! ends a transaction" and "is the stream between transactions".
//!
//! [`Boundaries`] follows the order of a stream's messages. [`Decoder`](crate::Decoder) keeps
//! one for its parse context and order checks; a client that only records or forwards the
//! bytes (raw mode, a capture recorder) uses [`Boundaries::observe`], which parses only the
//! small control messages and classifies row messages by their tag alone.

use alloc::collections::BTreeSet;

use super::{tag, Message, ParseContext, ProtocolVersion, StreamAbort, Streaming};
use crate::error::{Error, ErrorKind};
use crate::types::{Lsn, Xid};

/// The most streamed transactions followed at once. PostgreSQL streams one block at a time
/// and has a handful of large transactions open at most; a stream claiming more is no longer
/// considered to be ever between transactions (so no keepalive position is acknowledged from
/// then on) rather than followed with memory that grows without bound.
pub const MAX_OPEN_STREAMS: usize = 65_536;

/// Where the stream is between transaction boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Transaction,
    Prepare(Xid),
    Stream(Xid),
}

/// What a message does to the boundaries, whatever else it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Begin,
    BeginPrepare(Xid),
    Commit,
    Prepare(Xid),
    StreamStart(Xid),
    StreamStop,
    /// Stream Commit, Stream Prepare, or Stream Abort of a top-level transaction: the
    /// streamed transaction `xid` is over. A stray Stream Abort (of a transaction never
    /// streamed) ends nothing that is open, so it is allowed wherever a real one is.
    StreamEnd(Xid),
    /// Stream Abort of a subtransaction: the top-level one goes on.
    SubAbort,
    /// Commit Prepared and Rollback Prepared, which come outside any transaction.
    Outcome,
    /// A change, a Relation, Type or Origin: only inside a transaction or streamed block.
    Change,
    /// A non-transactional logical decoding message: anywhere.
    Anywhere,
}

impl Step {
    fn of(message: &Message<'_>) -> Step {
        match message {
            Message::Begin(_) => Step::Begin,
            Message::BeginPrepare(b) => Step::BeginPrepare(b.xid),
            Message::Commit(_) => Step::Commit,
            Message::Prepare(p) => Step::Prepare(p.xid),
            Message::StreamStart(s) => Step::StreamStart(s.xid),
            Message::StreamStop => Step::StreamStop,
            Message::StreamCommit(c) => Step::StreamEnd(c.xid),
            Message::StreamPrepare(p) => Step::StreamEnd(p.xid),
            Message::StreamAbort(a) if a.xid == a.subxid => Step::StreamEnd(a.xid),
            Message::StreamAbort(_) => Step::SubAbort,
            Message::CommitPrepared(_) | Message::RollbackPrepared(_) => Step::Outcome,
            Message::Message(m) if !m.transactional() => Step::Anywhere,
            Message::Origin(_)
            | Message::Relation(_)
            | Message::Type(_)
            | Message::Insert(_)
            | Message::Update(_)
            | Message::Delete(_)
            | Message::Truncate(_)
            | Message::Message(_) => Step::Change,
        }
    }
}

impl Message<'_> {
    /// The LSN to acknowledge once everything up to this message is applied, when this
    /// message ends a transaction: the end LSN of a Commit, Stream Commit, Prepare, Stream
    /// Prepare or Commit Prepared, and the rollback end of a Rollback Prepared. `None` for
    /// every other message (a Stream Abort ends a transaction nobody will see committed, and
    /// the next transaction end covers it).
    pub const fn transaction_end(&self) -> Option<Lsn> {
        match self {
            Message::Commit(c) => Some(c.end_lsn),
            Message::StreamCommit(c) => Some(c.end_lsn),
            Message::Prepare(p) | Message::StreamPrepare(p) => Some(p.end_lsn),
            Message::CommitPrepared(c) => Some(c.end_lsn),
            Message::RollbackPrepared(r) => Some(r.rollback_end_lsn),
            _ => None,
        }
    }
}

/// A message's step and the state it leads to, checked by [`Boundaries::checked`] and not
/// yet followed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked {
    step: Step,
    state: State,
}

/// The transaction boundaries of one replication session.
///
/// Call sequence: [`Boundaries::new`] with the options the stream was started with, then for
/// each pgoutput message in order either [`advance`](Self::advance) with the parsed message
/// or [`observe`](Self::observe) with its bytes; ask
/// [`between_transactions`](Self::between_transactions) when a keepalive arrives. After a
/// reconnect, [`reset`](Self::reset).
///
/// ```
/// use walproto::pgoutput::{Boundaries, ProtocolVersion, Streaming};
/// use walproto::Lsn;
///
/// let mut b = Boundaries::new(ProtocolVersion::V1, Streaming::Off);
/// let begin = b"B\0\0\0\0\x01\x6B\x37\x48\0\0\0\0\0\0\0\0\0\0\x02\xE4";
/// let commit = b"C\0\0\0\0\0\x01\x6B\x37\x48\0\0\0\0\x01\x6B\x37\x80\0\0\0\0\0\0\0\0";
/// b.observe(begin)?;
/// assert!(!b.between_transactions());
/// let end = b.observe(commit)?.and_then(|m| m.transaction_end());
/// assert_eq!(end, Some(Lsn::new(0x16B3780)));
/// assert!(b.between_transactions());
/// # Ok::<(), walproto::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Boundaries {
    version: ProtocolVersion,
    streaming: Streaming,
    state: State,
    /// The streamed transactions begun and not yet ended.
    open_streams: BTreeSet<Xid>,
    /// More than [`MAX_OPEN_STREAMS`] were open at once: no longer followed.
    overflowed: bool,
}

impl Boundaries {
    /// The boundaries of a stream started with this protocol version and streaming mode.
    pub const fn new(version: ProtocolVersion, streaming: Streaming) -> Self {
        Boundaries {
            version,
            streaming,
            state: State::Idle,
            open_streams: BTreeSet::new(),
            overflowed: false,
        }
    }

    /// Forgets everything, as for a new replication session.
    pub fn reset(&mut self) {
        *self = Boundaries::new(self.version, self.streaming);
    }

    /// The parse context for the next message.
    pub fn context(&self) -> ParseContext {
        ParseContext::new(self.version, self.streaming).in_stream(self.stream_xid().is_some())
    }

    /// The top-level xid of the streamed block the stream is in, if any.
    pub fn stream_xid(&self) -> Option<Xid> {
        match self.state {
            State::Stream(x) => Some(x),
            _ => None,
        }
    }

    /// Whether the stream is outside every transaction and streamed block. A streamed
    /// transaction may still be open between its blocks: see
    /// [`between_transactions`](Self::between_transactions).
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// Whether the stream is outside every transaction, streamed block and streamed
    /// transaction: a keepalive's position here may be acknowledged once everything before
    /// it is.
    pub fn between_transactions(&self) -> bool {
        self.is_idle() && self.open_streams.is_empty() && !self.overflowed
    }

    /// Whether `abort`, not yet followed, is stray: it names no streamed transaction that is
    /// open (begun with a Stream Start and not yet ended). PostgreSQL 18 sends such Stream
    /// Aborts for transactions it never streamed, even to protocol 1 clients with streaming
    /// off; following one changes nothing, and a consumer may ignore it. `false` when the
    /// open streamed transactions are no longer followed (more than [`MAX_OPEN_STREAMS`]), as
    /// the abort may then match one.
    pub fn is_stray_abort(&self, abort: &StreamAbort) -> bool {
        !self.overflowed && !self.open_streams.contains(&abort.xid)
    }

    /// Follows `message`: the LSN to acknowledge if it ended a transaction
    /// ([`Message::transaction_end`]), or [`ErrorKind::OutOfOrder`] if it cannot come now (the
    /// boundaries are then unchanged).
    pub fn advance(&mut self, message: &Message<'_>) -> Result<Option<Lsn>, Error> {
        self.step(Step::of(message), message.tag())?;
        Ok(message.transaction_end())
    }

    /// Follows the message `payload` as [`advance`](Self::advance) does, parsing only what
    /// decides the boundaries: control messages (Begin, Commit, the stream and two-phase
    /// messages, logical decoding messages) are parsed whole and returned (ask
    /// [`Message::transaction_end`] whether one ended a transaction); row, Relation, Type
    /// and Origin messages are known by their tag, not read further, and give `None`.
    pub fn observe<'a>(&mut self, payload: &'a [u8]) -> Result<Option<Message<'a>>, Error> {
        let Some(&first) = payload.first() else {
            return Err(Error::new(ErrorKind::Empty, None, 0));
        };
        if matches!(
            first,
            tag::INSERT
                | tag::UPDATE
                | tag::DELETE
                | tag::TRUNCATE
                | tag::RELATION
                | tag::TYPE
                | tag::ORIGIN
        ) {
            self.step(Step::Change, first)?;
            return Ok(None);
        }
        let message = Message::parse(payload, self.context())?;
        self.advance(&message)?;
        Ok(Some(message))
    }

    /// Whether `message` can come now, without following it.
    pub fn check(&self, message: &Message<'_>) -> Result<(), Error> {
        self.checked(message).map(drop)
    }

    /// What following `message` will do, checked and not yet done: for
    /// [`Decoder`](crate::Decoder), which follows a message only once nothing else about it can
    /// fail, and so works its step out once rather than in [`check`](Self::check) and again in
    /// [`advance`](Self::advance).
    #[inline]
    pub(crate) fn checked(&self, message: &Message<'_>) -> Result<Checked, Error> {
        let step = Step::of(message);
        Ok(Checked {
            step,
            state: self.next_state(step, message.tag())?,
        })
    }

    /// Follows a message [`checked`](Self::checked) against the boundaries as they still are.
    #[inline]
    pub(crate) fn apply(&mut self, checked: Checked) {
        let Checked { step, state } = checked;
        self.state = state;
        match step {
            Step::StreamStart(x) if !self.overflowed && !self.open_streams.contains(&x) => {
                if self.open_streams.len() >= MAX_OPEN_STREAMS {
                    self.overflowed = true;
                } else {
                    self.open_streams.insert(x);
                }
            }
            Step::StreamEnd(x) => {
                self.open_streams.remove(&x);
            }
            _ => {}
        }
    }

    fn step(&mut self, step: Step, tag: u8) -> Result<(), Error> {
        let state = self.next_state(step, tag)?;
        self.apply(Checked { step, state });
        Ok(())
    }

    /// The state after `step`, or [`ErrorKind::OutOfOrder`] if it cannot come now.
    #[inline]
    fn next_state(&self, step: Step, tag: u8) -> Result<State, Error> {
        let in_change_scope = !matches!(self.state, State::Idle);
        Ok(match (step, self.state) {
            (Step::Begin, State::Idle) => State::Transaction,
            (Step::BeginPrepare(x), State::Idle) => State::Prepare(x),
            (Step::Commit, State::Transaction) => State::Idle,
            (Step::Prepare(p), State::Prepare(x)) if p == x => State::Idle,
            (Step::StreamStart(x), State::Idle) => State::Stream(x),
            (Step::StreamStop, State::Stream(_)) => State::Idle,
            (Step::StreamEnd(_) | Step::SubAbort | Step::Outcome, State::Idle) => State::Idle,
            (Step::Anywhere, state) => state,
            (Step::Change, state) if in_change_scope => state,
            _ => return Err(Error::new(ErrorKind::OutOfOrder, Some(tag), 0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::{Begin, Commit, StreamAbort, StreamCommit, StreamStart};
    use crate::types::Timestamp;
    use alloc::vec::Vec;

    fn bytes(m: Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out);
        out
    }

    #[test]
    fn a_streamed_transaction_is_open_between_its_blocks() {
        let mut b = Boundaries::new(ProtocolVersion::V2, Streaming::On);
        let start = |first| {
            bytes(Message::StreamStart(StreamStart {
                xid: Xid(7),
                first_segment: first,
            }))
        };
        b.observe(&start(true)).unwrap();
        assert!(b.context().in_stream);
        b.observe(&bytes(Message::StreamStop)).unwrap();
        // Between two blocks: idle at the block level, but not between transactions.
        assert!(b.is_idle());
        assert!(!b.between_transactions());
        b.observe(&start(false)).unwrap();
        b.observe(&bytes(Message::StreamStop)).unwrap();
        // A subtransaction's abort leaves the transaction open.
        let abort = |subxid| {
            bytes(Message::StreamAbort(StreamAbort {
                xid: Xid(7),
                subxid: Xid(subxid),
                parallel: None,
            }))
        };
        let end = |m: Option<Message<'_>>| m.and_then(|m| m.transaction_end());
        assert_eq!(end(b.observe(&abort(8)).unwrap()), None);
        assert!(!b.between_transactions());
        let commit = bytes(Message::StreamCommit(StreamCommit {
            xid: Xid(7),
            flags: 0,
            commit_lsn: Lsn::new(10),
            end_lsn: Lsn::new(20),
            commit_time: Timestamp::EPOCH,
        }));
        assert_eq!(end(b.observe(&commit).unwrap()), Some(Lsn::new(20)));
        assert!(b.between_transactions());
    }

    fn abort(xid: u32, subxid: u32) -> StreamAbort {
        StreamAbort {
            xid: Xid(xid),
            subxid: Xid(subxid),
            parallel: None,
        }
    }

    #[test]
    fn a_stray_stream_abort_with_streaming_off_comes_between_transactions() {
        // PostgreSQL 18 sends these to protocol 1 clients: they are followed as no-ops.
        let mut b = Boundaries::new(ProtocolVersion::V1, Streaming::Off);
        for (xid, subxid) in [(5, 6), (5, 5)] {
            let a = abort(xid, subxid);
            assert!(b.is_stray_abort(&a));
            let wire = bytes(Message::StreamAbort(a));
            let m = b.observe(&wire).unwrap();
            assert_eq!(m, Some(Message::StreamAbort(a)));
            assert_eq!(m.and_then(|m| m.transaction_end()), None);
            assert!(b.between_transactions());
        }
        let begin = bytes(Message::Begin(Begin {
            final_lsn: Lsn::new(1),
            commit_time: Timestamp::EPOCH,
            xid: Xid(5),
        }));
        b.observe(&begin).unwrap();
        assert!(!b.between_transactions());
    }

    #[test]
    fn a_stray_stream_abort_leaves_open_streamed_transactions_open() {
        let mut b = Boundaries::new(ProtocolVersion::V2, Streaming::On);
        let start = bytes(Message::StreamStart(StreamStart {
            xid: Xid(7),
            first_segment: true,
        }));
        b.observe(&start).unwrap();
        b.observe(&bytes(Message::StreamStop)).unwrap();
        // Aborts of a transaction that was never streamed, whole or of a subtransaction.
        for (xid, subxid) in [(9, 9), (9, 10)] {
            assert!(b.is_stray_abort(&abort(xid, subxid)));
            b.observe(&bytes(Message::StreamAbort(abort(xid, subxid))))
                .unwrap();
            assert!(!b.between_transactions());
        }
        // An abort of the open one is not stray, and ends it.
        assert!(!b.is_stray_abort(&abort(7, 8)));
        assert!(!b.is_stray_abort(&abort(7, 7)));
        b.observe(&bytes(Message::StreamAbort(abort(7, 7))))
            .unwrap();
        assert!(b.between_transactions());
        assert!(b.is_stray_abort(&abort(7, 7)));
    }

    #[test]
    fn order_is_checked_and_a_refused_message_changes_nothing() {
        let mut b = Boundaries::new(ProtocolVersion::V1, Streaming::Off);
        let commit = bytes(Message::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn::new(1),
            end_lsn: Lsn::new(2),
            commit_time: Timestamp::EPOCH,
        }));
        assert_eq!(
            b.observe(&commit).unwrap_err().kind(),
            ErrorKind::OutOfOrder
        );
        assert_eq!(b.observe(b"I").unwrap_err().kind(), ErrorKind::OutOfOrder);
        assert!(b.between_transactions());
        let begin = bytes(Message::Begin(Begin {
            final_lsn: Lsn::new(1),
            commit_time: Timestamp::EPOCH,
            xid: Xid(3),
        }));
        b.observe(&begin).unwrap();
        // Row messages are classified by their tag alone.
        assert_eq!(b.observe(b"I").unwrap(), None);
        let end = b
            .observe(&commit)
            .unwrap()
            .and_then(|m| m.transaction_end());
        assert_eq!(end, Some(Lsn::new(2)));
        assert!(b.observe(&[]).is_err());
    }

    #[test]
    fn too_many_open_streams_stop_the_following() {
        let mut b = Boundaries::new(ProtocolVersion::V2, Streaming::On);
        for xid in 0..=MAX_OPEN_STREAMS as u32 {
            let start = bytes(Message::StreamStart(StreamStart {
                xid: Xid(xid),
                first_segment: true,
            }));
            b.observe(&start).unwrap();
            b.observe(&bytes(Message::StreamStop)).unwrap();
        }
        assert!(b.is_idle());
        assert!(!b.between_transactions());
    }
}

//! What the application has acknowledged, and the sans-IO state machine that decides what the
//! server is told and when.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walproto::Lsn;

/// The application's acknowledgements: a clonable, atomic handle to mark what has been
/// applied and durably flushed, from any task or thread.
///
/// The stream reports the flushed position to the server as the slot's
/// `confirmed_flush_lsn`: the server may then discard everything before it, and a restart
/// resumes after it. Mark a transaction only once its effects are durable downstream; mark
/// its end ([`ChangeEvent::ack_lsn`](crate::ChangeEvent::ack_lsn), the Commit's `end_lsn`).
/// Positions only move forward: marking an older LSN changes nothing.
///
/// ```
/// use walstream::SharedLsnFeedback;
/// use walproto::Lsn;
///
/// let feedback = SharedLsnFeedback::new();
/// let worker = feedback.clone();
/// std::thread::spawn(move || worker.ack(Lsn::new(0x16B3748))).join().unwrap();
/// assert_eq!(feedback.flushed(), Lsn::new(0x16B3748));
/// feedback.ack(Lsn::new(1)); // older: ignored
/// assert_eq!(feedback.flushed(), Lsn::new(0x16B3748));
/// ```
#[derive(Clone, Debug, Default)]
pub struct SharedLsnFeedback {
    inner: Arc<Marks>,
}

#[derive(Debug, Default)]
struct Marks {
    written: AtomicU64,
    flushed: AtomicU64,
    applied: AtomicU64,
}

impl SharedLsnFeedback {
    /// A handle with nothing acknowledged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks everything up to `lsn` as applied and flushed.
    pub fn ack(&self, lsn: Lsn) {
        self.set_applied(lsn);
        self.set_flushed(lsn);
    }

    /// Marks everything up to `lsn` as durably flushed: the slot may move there.
    pub fn set_flushed(&self, lsn: Lsn) {
        self.inner.flushed.fetch_max(lsn.get(), Ordering::AcqRel);
    }

    /// Marks everything up to `lsn` as applied (reported to the server as the apply position;
    /// only the flushed position moves the slot).
    pub fn set_applied(&self, lsn: Lsn) {
        self.inner.applied.fetch_max(lsn.get(), Ordering::AcqRel);
    }

    /// Marks everything up to `lsn` as written, not yet durable (reported to the server as the
    /// write position by the physical stream; it moves nothing).
    pub fn set_written(&self, lsn: Lsn) {
        self.inner.written.fetch_max(lsn.get(), Ordering::AcqRel);
    }

    /// The written mark.
    pub fn written(&self) -> Lsn {
        Lsn::new(self.inner.written.load(Ordering::Acquire))
    }

    /// The flushed mark.
    pub fn flushed(&self) -> Lsn {
        Lsn::new(self.inner.flushed.load(Ordering::Acquire))
    }

    /// The applied mark.
    pub fn applied(&self) -> Lsn {
        Lsn::new(self.inner.applied.load(Ordering::Acquire))
    }
}

/// The three positions of a standby status update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedbackPositions {
    /// Received: the furthest `wal_end` the server reported.
    pub write: Lsn,
    /// Flushed: what the slot may move to.
    pub flush: Lsn,
    /// Applied.
    pub apply: Lsn,
}

/// The feedback state machine of one replication stream: sans-IO, with time passed in.
///
/// It is told what the stream carried ([`on_wal_end`](Self::on_wal_end),
/// [`on_transaction_end`](Self::on_transaction_end), [`on_keepalive`](Self::on_keepalive))
/// and answers what to report and when ([`poll_status`](Self::poll_status),
/// [`next_status_at`](Self::next_status_at)). Its rules:
///
/// - The flush position reported is the application's flushed mark, never more, with one
///   exception: when a keepalive arrives between transactions and the application has
///   acknowledged the end of every transaction the stream carried before it, the keepalive's
///   `wal_end` may be reported, so a database whose published tables are idle does not pin
///   WAL forever.
/// - It never reports less than the position the slot already had (older servers let a
///   lower report move `confirmed_flush_lsn` back).
/// - A status update is due every `interval`, and at once when the server asks.
#[derive(Clone, Debug)]
pub struct FeedbackTracker {
    interval: Duration,
    floor: Lsn,
    received: Lsn,
    last_end: Lsn,
    /// A keepalive's `wal_end` seen between transactions, with the `last_end` of that moment.
    idle: Option<(Lsn, Lsn)>,
    reported: Lsn,
    last_sent: Option<Instant>,
    reply_requested: bool,
}

impl FeedbackTracker {
    /// A tracker for a stream whose slot stands at `floor`, reporting every `interval`.
    pub fn new(floor: Lsn, interval: Duration) -> Self {
        Self {
            interval,
            floor,
            received: floor,
            last_end: floor,
            idle: None,
            reported: floor,
            last_sent: None,
            reply_requested: false,
        }
    }

    /// The interval between status updates.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// An XLogData or keepalive told the server's position.
    pub fn on_wal_end(&mut self, wal_end: Lsn) {
        self.received = self.received.max(wal_end);
    }

    /// A transaction ended in the stream (a Commit, Stream Commit, Prepare, Commit Prepared
    /// or Rollback Prepared) at `end_lsn`: the application must acknowledge it before any
    /// later keepalive position can be reported.
    pub fn on_transaction_end(&mut self, end_lsn: Lsn) {
        self.last_end = self.last_end.max(end_lsn);
    }

    /// A primary keepalive. `between_transactions` says whether the stream was outside any
    /// transaction (and any streamed transaction) at that point.
    pub fn on_keepalive(
        &mut self,
        wal_end: Lsn,
        reply_requested: bool,
        between_transactions: bool,
    ) {
        self.on_wal_end(wal_end);
        if between_transactions {
            self.idle = Some((wal_end, self.last_end));
        }
        self.reply_requested |= reply_requested;
    }

    /// What may be reported as flushed when the application has flushed up to `acked`.
    pub fn safe_flush(&self, acked: Lsn) -> Lsn {
        let mut flush = acked.max(self.floor).max(self.reported);
        if let Some((position, needs)) = self.idle {
            if acked >= needs || self.floor >= needs {
                flush = flush.max(position);
            }
        }
        flush
    }

    /// When the next status update is due.
    pub fn next_status_at(&self) -> Option<Instant> {
        if self.reply_requested {
            return None;
        }
        self.last_sent.map(|t| t + self.interval)
    }

    /// Whether a status update is due at `now` (the server asked, or the interval passed).
    pub fn is_due(&self, now: Instant) -> bool {
        self.reply_requested || self.next_status_at().is_none_or(|at| now >= at)
    }

    /// The status update to send at `now` if one is due; it counts as sent.
    pub fn poll_status(
        &mut self,
        now: Instant,
        flushed: Lsn,
        applied: Lsn,
    ) -> Option<FeedbackPositions> {
        if !self.is_due(now) {
            return None;
        }
        Some(self.status(now, flushed, applied))
    }

    /// The status update to send now whether or not one is due (the last word before closing);
    /// it counts as sent.
    pub fn status(&mut self, now: Instant, flushed: Lsn, applied: Lsn) -> FeedbackPositions {
        let flush = self.safe_flush(flushed);
        // The apply position follows the same rule, and is never ahead of the flush one.
        let apply = self.safe_flush(applied.min(flushed)).min(flush);
        self.reported = flush;
        self.last_sent = Some(now);
        self.reply_requested = false;
        FeedbackPositions {
            write: self.received.max(flush),
            flush,
            apply,
        }
    }

    /// The furthest server position seen (the write position reported).
    pub fn received(&self) -> Lsn {
        self.received
    }

    /// The position last reported as flushed (at least the starting floor).
    pub fn reported(&self) -> Lsn {
        self.reported
    }

    /// Where a new session resumes after a reconnect, for an application that has flushed up
    /// to `acked`: everything after it may be sent again, nothing after it was confirmed.
    /// The tracker starts over from there, as for a new stream.
    pub fn restart(&mut self, acked: Lsn) -> Lsn {
        let resume = self.safe_flush(acked);
        *self = Self::new(resume, self.interval);
        resume
    }
}

/// What [`Liveness::poll`] says to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LivenessCheck {
    /// Nothing: the server was heard from recently enough.
    Fine,
    /// Half the timeout passed in silence: ask the server for a reply (a status update with
    /// `reply_requested`), as PostgreSQL's own walreceiver does, since an idle walsender whose
    /// client reports regularly sends nothing at all.
    Ping,
    /// The whole timeout passed in silence, the ping unanswered: the connection is dead even if
    /// the socket does not say so (a network that drops packets without closing anything).
    Dead,
}

/// The client side of `wal_receiver_timeout`: sans-IO, time passed in.
///
/// [`heard`](Self::heard) whenever bytes arrive, and also while the socket is deliberately
/// not read (a full channel): silence counts only while the client is listening.
/// [`poll`](Self::poll) at [`next_check_at`](Self::next_check_at).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Liveness {
    timeout: Option<Duration>,
    last_heard: Instant,
    pinged: bool,
}

impl Liveness {
    /// Silence for `timeout` (none: never) from `now` on means a dead connection.
    pub(crate) fn new(timeout: Option<Duration>, now: Instant) -> Self {
        Self {
            timeout: timeout.filter(|t| !t.is_zero()),
            last_heard: now,
            pinged: false,
        }
    }

    /// The server was heard from (or the client was not listening) at `now`.
    pub(crate) fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
        self.pinged = false;
    }

    /// When [`poll`](Self::poll) has something to say next, if ever.
    pub(crate) fn next_check_at(&self) -> Option<Instant> {
        let timeout = self.timeout?;
        Some(if self.pinged {
            self.last_heard + timeout
        } else {
            self.last_heard + timeout / 2
        })
    }

    /// What to do at `now`; a ping counts as sent.
    pub(crate) fn poll(&mut self, now: Instant) -> LivenessCheck {
        let Some(timeout) = self.timeout else {
            return LivenessCheck::Fine;
        };
        let silent = now.saturating_duration_since(self.last_heard);
        if silent >= timeout {
            LivenessCheck::Dead
        } else if silent >= timeout / 2 && !self.pinged {
            self.pinged = true;
            LivenessCheck::Ping
        } else {
            LivenessCheck::Fine
        }
    }

    /// The timeout, if any.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn lsn(n: u64) -> Lsn {
        Lsn::new(n)
    }

    #[test]
    fn flush_never_passes_the_acknowledgement() {
        let mut t = FeedbackTracker::new(lsn(100), 10 * SEC);
        let t0 = Instant::now();
        t.on_wal_end(lsn(300));
        t.on_transaction_end(lsn(200));
        t.on_transaction_end(lsn(300));
        // Not acknowledged: the floor.
        assert_eq!(t.status(t0, lsn(0), lsn(0)).flush, lsn(100));
        // Half acknowledged.
        assert_eq!(t.status(t0, lsn(200), lsn(200)).flush, lsn(200));
        // Keepalives after the transactions do not move it while 300 is not acknowledged.
        t.on_keepalive(lsn(900), false, true);
        let s = t.status(t0, lsn(200), lsn(200));
        assert_eq!((s.write, s.flush), (lsn(900), lsn(200)));
        // Once 300 is acknowledged the keepalive position may be reported.
        assert_eq!(t.status(t0, lsn(300), lsn(300)).flush, lsn(900));
    }

    #[test]
    fn keepalives_inside_a_transaction_never_count() {
        let mut t = FeedbackTracker::new(lsn(100), SEC);
        let t0 = Instant::now();
        t.on_keepalive(lsn(500), false, false);
        assert_eq!(t.status(t0, lsn(100), lsn(100)).flush, lsn(100));
        // Between transactions, with everything acknowledged (nothing ended yet): allowed.
        t.on_keepalive(lsn(600), false, true);
        assert_eq!(t.status(t0, lsn(0), lsn(0)).flush, lsn(600));
    }

    #[test]
    fn a_later_transaction_does_not_invalidate_an_earlier_idle_point() {
        let mut t = FeedbackTracker::new(lsn(0), SEC);
        let now = Instant::now();
        t.on_transaction_end(lsn(100));
        t.on_keepalive(lsn(150), false, true);
        // A transaction that began after the keepalive is still being read.
        t.on_wal_end(lsn(400));
        assert_eq!(t.status(now, lsn(100), lsn(100)).flush, lsn(150));
        t.on_transaction_end(lsn(400));
        assert_eq!(t.status(now, lsn(100), lsn(100)).flush, lsn(150));
        assert_eq!(t.status(now, lsn(400), lsn(400)).flush, lsn(400));
    }

    #[test]
    fn reports_never_go_back() {
        let mut t = FeedbackTracker::new(lsn(1000), SEC);
        let now = Instant::now();
        assert_eq!(t.status(now, lsn(5), lsn(5)).flush, lsn(1000));
        assert_eq!(t.status(now, lsn(2000), lsn(2000)).flush, lsn(2000));
        assert_eq!(t.status(now, lsn(1500), lsn(1500)).flush, lsn(2000));
    }

    #[test]
    fn schedule_with_simulated_time() {
        let mut t = FeedbackTracker::new(lsn(0), 10 * SEC);
        let t0 = Instant::now();
        // The first update is due at once (the server hears from us on start).
        assert!(t.poll_status(t0, lsn(0), lsn(0)).is_some());
        assert_eq!(t.next_status_at(), Some(t0 + 10 * SEC));
        assert!(t.poll_status(t0 + 9 * SEC, lsn(0), lsn(0)).is_none());
        assert!(t.poll_status(t0 + 10 * SEC, lsn(0), lsn(0)).is_some());
        // A slow application changes nothing: updates are due by the clock alone.
        for k in 2..10u32 {
            assert!(t.poll_status(t0 + (10 * k) * SEC, lsn(0), lsn(0)).is_some());
        }
        // The server asking makes one due at once, then the schedule restarts from it.
        let t1 = t0 + 95 * SEC;
        t.on_keepalive(lsn(10), true, true);
        assert_eq!(t.next_status_at(), None);
        assert!(t.is_due(t1));
        assert!(t.poll_status(t1, lsn(0), lsn(0)).is_some());
        assert!(!t.is_due(t1 + 5 * SEC));
        assert_eq!(t.next_status_at(), Some(t1 + 10 * SEC));
    }

    #[test]
    fn apply_is_never_ahead_of_flush() {
        let mut t = FeedbackTracker::new(lsn(0), SEC);
        t.on_transaction_end(lsn(500));
        let s = t.status(Instant::now(), lsn(300), lsn(500));
        assert_eq!((s.flush, s.apply), (lsn(300), lsn(300)));
    }

    #[test]
    fn restart_resumes_at_the_safe_position_and_forgets_the_rest() {
        let mut t = FeedbackTracker::new(lsn(100), SEC);
        t.on_transaction_end(lsn(200));
        t.on_keepalive(lsn(250), true, true);
        assert_eq!(t.restart(lsn(150)), lsn(150));
        assert_eq!(t.reported(), lsn(150));
        // The keepalive of the old session does not carry over.
        assert_eq!(t.safe_flush(lsn(200)), lsn(200));
        assert!(t.is_due(Instant::now()));
    }

    #[test]
    fn silence_pings_at_half_the_timeout_then_is_dead() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Some(4 * SEC), t0);
        assert_eq!(l.next_check_at(), Some(t0 + 2 * SEC));
        assert_eq!(l.poll(t0 + SEC), LivenessCheck::Fine);
        assert_eq!(l.poll(t0 + 2 * SEC), LivenessCheck::Ping);
        // One ping per silence; then the full timeout.
        assert_eq!(l.poll(t0 + 3 * SEC), LivenessCheck::Fine);
        assert_eq!(l.next_check_at(), Some(t0 + 4 * SEC));
        assert_eq!(l.poll(t0 + 4 * SEC), LivenessCheck::Dead);
    }

    #[test]
    fn hearing_anything_starts_the_silence_over() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Some(4 * SEC), t0);
        assert_eq!(l.poll(t0 + 2 * SEC), LivenessCheck::Ping);
        l.heard(t0 + 3 * SEC);
        assert_eq!(l.poll(t0 + 4 * SEC), LivenessCheck::Fine);
        assert_eq!(l.poll(t0 + 5 * SEC), LivenessCheck::Ping);
        assert_eq!(l.poll(t0 + 7 * SEC), LivenessCheck::Dead);
    }

    #[test]
    fn no_timeout_never_checks() {
        let t0 = Instant::now();
        for timeout in [None, Some(Duration::ZERO)] {
            let mut l = Liveness::new(timeout, t0);
            assert_eq!(l.next_check_at(), None);
            assert_eq!(l.poll(t0 + 1000 * SEC), LivenessCheck::Fine);
        }
    }
}

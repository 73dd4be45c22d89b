//! What the physical stream delivers.

use bytes::Bytes;
use walproto::{Lsn, Timestamp};

/// One event of a [`WalStream`](crate::physical::WalStream).
///
/// Hand every event to a [`WalWriter`](crate::physical::WalWriter) with
/// [`apply`](crate::physical::WalWriter::apply), or match the ones you need:
///
/// ```
/// use walstream::physical::WalEvent;
///
/// fn describe(event: &WalEvent) -> String {
///     match event {
///         WalEvent::Data(data) => format!("{} bytes at {}", data.bytes.len(), data.start),
///         WalEvent::TimelineSwitch { previous, timeline, at, .. } => {
///             format!("timeline {previous} ended at {at}; {timeline} follows")
///         }
///         WalEvent::Reconnected { resume, timeline, .. } => {
///             format!("reconnected: WAL from {resume} on timeline {timeline} again")
///         }
///         WalEvent::EndPosition { at } => format!("reached the end position {at}"),
///         _ => "something new".to_owned(),
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalEvent {
    /// A piece of WAL.
    Data(WalData),
    /// The server ended the historic timeline `previous` at `at` and the stream follows
    /// `timeline`, which starts there. `history` is the new timeline's history file as
    /// `TIMELINE_HISTORY` returned it (to store as `0000000N.history`, as
    /// [`WalWriter::apply`](crate::physical::WalWriter::apply) does).
    TimelineSwitch {
        /// The timeline that ended.
        previous: u32,
        /// The timeline streamed from now on.
        timeline: u32,
        /// Where `previous` ended and `timeline` begins.
        at: Lsn,
        /// `timeline`'s history file.
        history: Bytes,
    },
    /// The connection was lost and a new one resumes at `resume` on `timeline`: the last
    /// position acknowledged as flushed. WAL from there is sent again (a
    /// [`WalWriter`](crate::physical::WalWriter) writes it again in place).
    Reconnected {
        /// Where the new session starts.
        resume: Lsn,
        /// The timeline it starts on.
        timeline: u32,
        /// Consecutive failed attempts before this one succeeded.
        attempts: u32,
        /// The failure that caused the reconnect.
        reason: String,
    },
    /// WAL up to the configured end position has been delivered; the stream ends after this.
    EndPosition {
        /// The end position.
        at: Lsn,
    },
}

/// A piece of WAL: `bytes` are the server's WAL from `start` on `timeline`, a slice of the
/// message they came in (no copy).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalData {
    /// The timeline streamed.
    pub timeline: u32,
    /// The WAL position of the first byte.
    pub start: Lsn,
    /// The end of WAL on the server when it sent them.
    pub wal_end: Lsn,
    /// The server's clock when it sent them.
    pub server_time: Timestamp,
    /// The WAL.
    pub bytes: Bytes,
}

impl WalData {
    /// The position after the last byte.
    pub fn end(&self) -> Lsn {
        Lsn::new(self.start.get().saturating_add(self.bytes.len() as u64))
    }
}

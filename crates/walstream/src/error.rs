//! The stream layer's error: what went wrong, where in the stream, and whether a retry helps.

use std::fmt;

use walproto::Lsn;

#[cfg(feature = "typed")]
use crate::value::{GetError, RowError};

use crate::session::open::FailoverRefusal;
use crate::session::slot_watch::InvalidationReason;

/// The broad kind of an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is invalid (no slot name, no publication, contradictory options).
    Config,
    /// The server cannot do what was asked: the message names the option and the PostgreSQL
    /// version it needs.
    Unsupported,
    /// The connection or the server failed; [`Error::connection`] has the details.
    Connection,
    /// A message from the server could not be decoded; [`Error::decode`] has the message tag
    /// and byte offset, [`Error::lsn`] the position of the XLogData that carried it.
    Decode,
    /// The replication slot is missing, of the wrong kind, or a temporary slot was lost with
    /// its connection.
    Slot,
    /// The replication slot was invalidated by the server (its WAL removed past
    /// `max_slot_wal_keep_size`, a conflict on a standby, PostgreSQL 18's
    /// `idle_replication_slot_timeout`): the changes since its position are gone, and no retry
    /// can bring them back. [`Error::invalidation_reason`] says why; re-create the slot and take
    /// a new snapshot (or let [`SlotRecovery`](crate::SlotRecovery) do it).
    SlotInvalidated,
    /// After a reconnect the server is a different cluster (system identifier) or on another
    /// timeline: resuming there could skip or invent changes.
    ClusterChanged,
    /// After a failover (the server reached is on a later timeline of the same cluster, or is
    /// another host of the conninfo) resuming there would not be safe;
    /// [`Error::failover_refusal`] says why (the slot is missing there, is not a synchronized
    /// failover slot, or the new timeline branched off before the resume position).
    Failover,
    /// A retryable error repeated more often than the [`RetryPolicy`](crate::RetryPolicy)
    /// allows; [`Error::connection`] has the last one.
    RetriesExhausted,
    /// The stream has ended or its driver task is gone.
    Closed,
    /// The server's messages break the protocol's order in a way a single message cannot
    /// show: transaction ends going backwards, or (in the transaction layer) a
    /// `COMMIT PREPARED` for a transaction never prepared. (A message that cannot come where
    /// it is, such as a Commit without a Begin, is a [`Decode`](Self::Decode) error with
    /// walproto's `OutOfOrder`.)
    Protocol,
    /// A spill file of a large transaction could not be created, written or read.
    Spill,
    /// A WAL directory written by the physical stream's
    /// [`WalWriter`](crate::physical::WalWriter) is in a state it cannot continue from (a
    /// gap, a write before the segment in progress, a file of the wrong size), or its files
    /// could not be created, written, synced or renamed.
    WalFile,
    /// Spilling a transaction would take more disk than
    /// [`TransactionConfig::spill_disk_budget`](crate::TransactionConfig::spill_disk_budget)
    /// allows. The stream ends before any of that transaction is delivered, so nothing of it
    /// is acknowledged and the server sends it again to the next stream: give that one a
    /// larger budget (or free the disk that held transactions use). [`Error::lsn`] is the
    /// change that did not fit.
    SpillBudget,
    /// A file or directory could not be read, created or written: the message names the path
    /// and the operating system's error.
    Io,
    /// A backup on disk is not what PostgreSQL writes: a malformed `INCREMENTAL.` file header
    /// (magic number, block count, truncation length, block numbers), `backup_label` or
    /// `pg_control`, or a file shorter than its header says. The message names the file and
    /// what is wrong.
    BackupInvalid,
    /// The backups given to [`combine`](crate::backup::combine::combine) do not form a chain:
    /// the first is not a full backup or a later one is, a backup does not start where the
    /// next one's `INCREMENTAL FROM LSN`/`TLI` says, the system identifiers differ, or an
    /// earlier backup lacks a file an incremental one needs.
    BackupChain,
    /// A row or a column value does not convert into the requested Rust type: the error's
    /// [`source`](std::error::Error::source) is the [`RowError`] of
    /// [`value::from_row`](crate::value::from_row) or the [`GetError`] of
    /// [`Row::try_get`](crate::Row::try_get), which name the column and its type.
    Row,
}

/// An error of the change stream.
///
/// Server errors keep their SQLSTATE ([`Error::code`]); decode errors keep the byte offset and
/// message tag; every error says whether trying again later can help
/// ([`Error::is_retryable`]).
pub struct Error {
    inner: Box<Inner>,
}

/// The fields of an [`Error`], boxed so that results stay small.
struct Inner {
    kind: ErrorKind,
    message: String,
    lsn: Option<Lsn>,
    connection: Option<walconn::Error>,
    decode: Option<walproto::Error>,
    /// A connection failure without a connection-layer error (the server ended the copy).
    retryable: bool,
    /// Why the server invalidated the slot, for [`ErrorKind::SlotInvalidated`].
    invalidation: Option<InvalidationReason>,
    /// Why a failover did not resume, for [`ErrorKind::Failover`].
    failover: Option<FailoverRefusal>,
    /// The conversion error, for [`ErrorKind::Row`].
    row: Option<RowCause>,
}

/// The cause of an [`ErrorKind::Row`] error (none without the `typed` feature).
#[derive(Debug)]
enum RowCause {
    #[cfg(feature = "typed")]
    Row(RowError),
    #[cfg(feature = "typed")]
    Get(GetError),
}

impl RowCause {
    fn as_error(&self) -> &(dyn std::error::Error + 'static) {
        match *self {
            #[cfg(feature = "typed")]
            RowCause::Row(ref e) => e,
            #[cfg(feature = "typed")]
            RowCause::Get(ref e) => e,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::from_inner(Inner {
            kind,
            message: message.into(),
            lsn: None,
            connection: None,
            decode: None,
            retryable: false,
            invalidation: None,
            failover: None,
            row: None,
        })
    }

    fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Box::new(inner),
        }
    }

    fn base(kind: ErrorKind, message: impl Into<String>) -> Inner {
        *Self::new(kind, message).inner
    }

    /// The server ended the replication stream without being asked (a walsender told to
    /// stop): retryable.
    pub(crate) fn server_ended() -> Self {
        Self::from_inner(Inner {
            retryable: true,
            ..Self::base(
                ErrorKind::Connection,
                "the server ended the replication stream",
            )
        })
    }

    /// Nothing came from the server for `timeout` (while the stream was reading): the
    /// connection is taken for dead, and a reconnect may find a live one.
    pub(crate) fn receive_timeout(timeout: std::time::Duration) -> Self {
        Self::from_inner(Inner {
            retryable: true,
            ..Self::base(
                ErrorKind::Connection,
                format!(
                    "nothing received from the server for {timeout:?} (the receive timeout), \
                     not even an answer to a ping: the connection is taken for dead"
                ),
            )
        })
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn unsupported(what: &str, needs: &str, server_version: &str) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            format!("{what} needs {needs}; the server is PostgreSQL {server_version}"),
        )
    }

    pub(crate) fn decode_at(e: walproto::Error, lsn: Lsn) -> Self {
        Self::from_inner(Inner {
            lsn: Some(lsn),
            decode: Some(e),
            ..Self::base(
                ErrorKind::Decode,
                format!("undecodable message in the XLogData at {lsn}"),
            )
        })
    }

    /// The error refers to the stream at `lsn`.
    pub(crate) fn at(mut self, lsn: Lsn) -> Self {
        self.inner.lsn = Some(lsn);
        self
    }

    pub(crate) fn with_context(mut self, message: impl Into<String>) -> Self {
        self.inner.message = message.into();
        self
    }

    /// The server invalidated `slot` for `reason`; `server` is the server's error that showed
    /// it, if one did.
    pub(crate) fn slot_invalidated(
        slot: &str,
        reason: InvalidationReason,
        server: Option<walconn::Error>,
    ) -> Self {
        let message = format!(
            "replication slot \"{slot}\" was invalidated by the server ({reason}): the changes \
             since its position are gone; re-create the slot and take a new snapshot"
        );
        Self::from_inner(Inner {
            invalidation: Some(reason),
            connection: server,
            ..Self::base(ErrorKind::SlotInvalidated, message)
        })
    }

    /// A copy for the driver task's result, without the sources (which are not `Clone`): the
    /// kind, the whole text (the causes' included, as `{:#}` writes it), the position, and the invalidation reason or failover refusal.
    pub(crate) fn summary(&self) -> Self {
        Self::from_inner(Inner {
            lsn: self.inner.lsn,
            invalidation: self.inner.invalidation.clone(),
            failover: self.inner.failover.clone(),
            ..Self::base(self.inner.kind, format!("{self:#}"))
        })
    }

    /// The connection layer's error, taken out.
    pub(crate) fn into_connection(self) -> Option<walconn::Error> {
        self.inner.connection
    }

    /// After a failover to `server` (on `timeline`), the stream does not resume on `slot`
    /// there, for `refusal`.
    pub(crate) fn failover(
        slot: &str,
        server: &str,
        timeline: u32,
        refusal: FailoverRefusal,
    ) -> Self {
        let message = format!(
            "after a failover to {server} (timeline {timeline}), the stream does not resume on \
             replication slot \"{slot}\": {refusal}"
        );
        Self::from_inner(Inner {
            failover: Some(refusal),
            ..Self::base(ErrorKind::Failover, message)
        })
    }

    pub(crate) fn retries_exhausted(last: Error, attempts: u32) -> Self {
        // The last error's own message, not its text: its connection error stays the source
        // (which `Display` does not repeat).
        let last = *last.inner;
        let message = if last.message.is_empty() {
            format!("gave up after {attempts} failed attempts")
        } else {
            format!("gave up after {attempts} failed attempts: {}", last.message)
        };
        Self::from_inner(Inner {
            lsn: last.lsn,
            connection: last.connection,
            ..Self::base(ErrorKind::RetriesExhausted, message)
        })
    }

    /// The broad kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The connection layer's error, for [`ErrorKind::Connection`] and
    /// [`ErrorKind::RetriesExhausted`] (the last failure).
    pub fn connection(&self) -> Option<&walconn::Error> {
        self.inner.connection.as_ref()
    }

    /// The decode error (message tag and byte offset within the pgoutput message), for
    /// [`ErrorKind::Decode`].
    pub fn decode(&self) -> Option<&walproto::Error> {
        self.inner.decode.as_ref()
    }

    /// The stream position the error refers to, when there is one.
    pub fn lsn(&self) -> Option<Lsn> {
        self.inner.lsn
    }

    /// Why the server invalidated the slot, for [`ErrorKind::SlotInvalidated`].
    pub fn invalidation_reason(&self) -> Option<&InvalidationReason> {
        self.inner.invalidation.as_ref()
    }

    /// Why a failover did not resume, for [`ErrorKind::Failover`].
    pub fn failover_refusal(&self) -> Option<&FailoverRefusal> {
        self.inner.failover.as_ref()
    }

    /// No server of the conninfo matched its `target_session_attrs` (during a failover, the
    /// moment before the standby is promoted): retried within the stream's failover window.
    pub(crate) fn is_no_matching_server(&self) -> bool {
        self.inner
            .connection
            .as_ref()
            .is_some_and(|c| c.kind() == walconn::ErrorKind::SessionAttrs)
    }

    /// The SQLSTATE code, when the server reported the error.
    pub fn code(&self) -> Option<&str> {
        self.inner
            .connection
            .as_ref()
            .and_then(walconn::Error::code)
    }

    /// Trying again later, on a new connection, may succeed (the connection was lost, the
    /// server restarts, the slot is still held by a departing walsender). The stream's own
    /// retries have already tried this for errors it returns, except when its
    /// [`RetryPolicy`](crate::RetryPolicy) allows none. No server matching the conninfo's
    /// `target_session_attrs` is retryable too: during a failover no host is read-write
    /// until the standby is promoted (the stream retries it within its
    /// [failover window](crate::ReplicationStreamConfigBuilder::failover_window)).
    pub fn is_retryable(&self) -> bool {
        self.inner.kind == ErrorKind::Connection
            && (self.inner.retryable
                || self.is_no_matching_server()
                || self
                    .inner
                    .connection
                    .as_ref()
                    .is_some_and(walconn::Error::is_retryable))
    }
}

impl From<walconn::Error> for Error {
    fn from(e: walconn::Error) -> Self {
        let invalidation = crate::session::slot_watch::invalidation_in(&e);
        let kind = if e.is_slot_missing() {
            ErrorKind::Slot
        } else if invalidation.is_some() {
            ErrorKind::SlotInvalidated
        } else if e.kind() == walconn::ErrorKind::Unsupported {
            // Refused before sending: the message names the release needed.
            ErrorKind::Unsupported
        } else {
            ErrorKind::Connection
        };
        Self::from_inner(Inner {
            connection: Some(e),
            invalidation,
            ..Self::base(kind, "")
        })
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if !self.inner.message.is_empty() {
            d.field("message", &self.inner.message);
        }
        if let Some(lsn) = self.inner.lsn {
            d.field("lsn", &lsn);
        }
        if let Some(c) = &self.inner.connection {
            d.field("connection", c);
        }
        if let Some(p) = &self.inner.decode {
            d.field("decode", p);
        }
        if let Some(r) = &self.inner.invalidation {
            d.field("invalidation", r);
        }
        if let Some(r) = &self.inner.row {
            d.field("row", r);
        }
        d.finish()
    }
}

/// The message; the cause ([`source`](std::error::Error::source): the decode error, the
/// connection error or the row error) is not repeated, so that error reporters (`anyhow`,
/// `eyre`) print each cause once. The alternate form, `{:#}`, writes the whole chain,
/// `: `-separated, for a caller without a reporter.
///
/// An error that is only its cause (converted with `From`, no message of its own) is
/// transparent: its text is the cause's, and its `source()` is the cause's source.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.inner.message.is_empty() {
            f.write_str(&self.inner.message)?;
        } else if let Some(cause) = self.cause() {
            write!(f, "{cause}")?;
        } else {
            write!(f, "{:?} error", self.inner.kind)?;
        }
        if f.alternate() {
            write_chain(f, std::error::Error::source(self))?;
        }
        Ok(())
    }
}

/// Writes `: cause` for `first` and each error below it: the alternate (`{:#}`) form of an
/// error whose own text leaves its causes out.
pub(crate) fn write_chain(
    f: &mut fmt::Formatter<'_>,
    first: Option<&(dyn std::error::Error + 'static)>,
) -> fmt::Result {
    let mut next = first;
    while let Some(e) = next {
        write!(f, ": {e}")?;
        next = e.source();
    }
    Ok(())
}

impl Error {
    /// The error this one wraps: the decode error, the connection error or the row error.
    fn cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if let Some(p) = &self.inner.decode {
            return Some(p);
        }
        if let Some(r) = &self.inner.row {
            return Some(r.as_error());
        }
        self.inner
            .connection
            .as_ref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let cause = self.cause()?;
        if self.inner.message.is_empty() {
            cause.source()
        } else {
            Some(cause)
        }
    }
}

#[cfg(feature = "typed")]
impl From<RowError> for Error {
    fn from(e: RowError) -> Self {
        Self::from_inner(Inner {
            row: Some(RowCause::Row(e)),
            ..Self::base(ErrorKind::Row, "")
        })
    }
}

#[cfg(feature = "typed")]
impl From<GetError> for Error {
    fn from(e: GetError) -> Self {
        Self::from_inner(Inner {
            row: Some(RowCause::Get(e)),
            ..Self::base(ErrorKind::Row, "")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The text of each error in `e`'s chain, top first: what anyhow and eyre print.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut texts = Vec::new();
        let mut next = Some(e);
        while let Some(e) = next {
            texts.push(e.to_string());
            next = e.source();
        }
        texts
    }

    /// No level of the chain is empty or contains the text of a level below it, and `{:#}`
    /// is the levels joined once each.
    fn assert_each_cause_once<E: std::error::Error + 'static>(e: &E) -> Vec<String> {
        let texts = chain(e);
        for (i, t) in texts.iter().enumerate() {
            assert!(!t.is_empty(), "level {i} of {texts:?} is empty");
            for below in texts.iter().skip(i + 1) {
                assert!(!t.contains(below.as_str()), "{t:?} repeats {below:?}");
            }
        }
        assert_eq!(format!("{e:#}"), texts.join(": "));
        texts
    }

    /// A real walconn error with an I/O cause: a connection refused by the closed `port`.
    async fn refused(port: u16) -> walconn::Error {
        let config = walconn::Config::parse(&format!(
            "host=127.0.0.1 port={port} user=u dbname=d connect_timeout=5"
        ))
        .unwrap();
        walconn::Connection::connect(&config).await.err().unwrap()
    }

    #[tokio::test]
    async fn each_cause_is_printed_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let conn = refused(port).await;
        let conn_text = conn.to_string();
        assert!(std::error::Error::source(&conn).is_some(), "{conn:?}");

        // Converted without a message: transparent, the connection error's text once.
        let from = Error::from(conn);
        assert_eq!(assert_each_cause_once(&from)[0], conn_text);
        assert_each_cause_once(&Error::from(refused(port).await).with_context("reconnecting"));

        let gave_up = Error::retries_exhausted(Error::from(refused(port).await), 3);
        let texts = assert_each_cause_once(&gave_up);
        assert_eq!(texts[0], "gave up after 3 failed attempts");
        assert_eq!(texts[1], conn_text);
        let gave_up = Error::retries_exhausted(Error::receive_timeout(Duration::from_secs(1)), 3);
        assert!(gave_up.to_string().contains("the receive timeout"));
        assert_each_cause_once(&gave_up);

        let decode = Error::decode_at(
            walproto::Error::new(walproto::ErrorKind::UnexpectedEof, Some(b'I'), 7),
            Lsn::from(0x1000),
        );
        assert_eq!(assert_each_cause_once(&decode).len(), 2);

        let invalidated = Error::slot_invalidated(
            "s",
            InvalidationReason::WalRemoved,
            Some(refused(port).await),
        );
        assert_each_cause_once(&invalidated);

        // A base backup's error shows its wrapped error's text with a prefix, and goes on from
        // that error's source.
        let backup = crate::backup::Error::from(refused(port).await);
        let texts = assert_each_cause_once(&backup);
        assert_eq!(texts[0], format!("base backup: {conn_text}"));
        assert_eq!(texts.len(), 2, "{texts:?}");

        // The driver task's copy keeps the whole text, causes included, in its message.
        let summary = invalidated.summary();
        assert_eq!(summary.to_string(), format!("{invalidated:#}"));
        assert_each_cause_once(&summary);
    }

    #[cfg(feature = "typed")]
    #[test]
    fn row_errors_convert() {
        let row = <RowError as serde::de::Error>::custom("invalid digit found in string");
        let e = Error::from(row.clone());
        assert_eq!(e.kind(), ErrorKind::Row);
        assert_eq!(e.to_string(), row.to_string());
        assert_each_cause_once(&e);

        fn parse() -> Result<()> {
            Err(<RowError as serde::de::Error>::custom("missing field `id`"))?;
            Ok(())
        }
        assert_eq!(parse().unwrap_err().kind(), ErrorKind::Row);
    }
}

//! The crate's one error type.

use std::fmt;

use crate::conn::Phase;

/// The result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, broadly; see [`Error`] for the details and the predicates callers branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The conninfo string or a setting is invalid.
    Config,
    /// A socket operation failed (connect, read, write).
    Io,
    /// The TLS handshake or certificate checks failed, or TLS was required but refused.
    Tls,
    /// TLS was asked for (`sslmode` require, verify-ca or verify-full, `channel_binding=require`,
    /// or TLS material given to [`ConfigBuilder`](crate::ConfigBuilder) in memory), but walconn
    /// was built without its `tls` feature. Returned by [`Config::parse`](crate::Config::parse)
    /// and [`ConfigBuilder::build`](crate::ConfigBuilder::build), before any connection;
    /// never retryable.
    TlsUnavailable,
    /// Authentication failed or could not be carried out as configured.
    Auth,
    /// The server sent an `ErrorResponse`; [`Error::db`] has its fields.
    Db,
    /// The server sent something this client does not understand.
    Protocol,
    /// The server closed the connection.
    Closed,
    /// A time limit (`connect_timeout`) passed.
    Timeout,
    /// The operation was cancelled.
    Cancelled,
    /// The connected server is too old for what was asked.
    Unsupported,
    /// The server does not match `target_session_attrs`.
    SessionAttrs,
    /// A previous call on this object was cancelled mid-way (its future dropped before it
    /// finished, or a [`CopyOut`](crate::CopyOut) dropped before its end), so the connection is
    /// out of step with the server: it must be discarded. Returned without touching the
    /// socket; see [`Error::is_poisoned`] and the crate docs on cancel safety.
    Poisoned,
}

/// The fields of a server `ErrorResponse` (or `NoticeResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbError {
    /// `ERROR`, `FATAL`, `PANIC` (localized text is in `S`, this is `V` when present).
    pub severity: String,
    /// The SQLSTATE code, such as `28P01`.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// An optional detail message.
    pub detail: Option<String>,
    /// An optional hint.
    pub hint: Option<String>,
}

impl DbError {
    pub(crate) fn from_fields(
        fields: &mut postgres_protocol::message::backend::ErrorFields<'_>,
    ) -> std::io::Result<Self> {
        use fallible_iterator::FallibleIterator as _;
        let mut e = DbError::default();
        let mut localized_severity = String::new();
        while let Some(f) = fields.next()? {
            let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'S' => localized_severity = value,
                b'V' => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => {}
            }
        }
        if e.severity.is_empty() {
            e.severity = localized_severity;
        }
        Ok(e)
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(d) = &self.detail {
            write!(f, "; DETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; HINT: {h}")?;
        }
        Ok(())
    }
}

/// A backend message whose header declared a length over the limit of the connection's
/// [`Phase`]: the details of an [`ErrorKind::Protocol`] error, from
/// [`Error::message_too_long`]. Nothing was reserved for the message; the connection cannot
/// go on, since the rest of the stream can no longer be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageTooLong {
    /// The message type byte, `b'd'` for CopyData.
    pub tag: u8,
    /// The length the header declared, counting the length field itself as the protocol does.
    pub declared: usize,
    /// The largest length accepted in `phase` ([`Phase::max_message_len`]).
    pub limit: usize,
    /// Where the connection was.
    pub phase: Phase,
}

impl fmt::Display for MessageTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server sent a message of type {:?} declaring {} bytes during {}, more than \
             the {} allowed then",
            char::from(self.tag),
            self.declared,
            self.phase,
            self.limit
        )
    }
}

impl std::error::Error for MessageTooLong {}

/// An error of a replication connection: a kind, a message, the server's fields when the server
/// reported it, and the underlying cause.
///
/// Callers branch on the predicates: [`is_auth_failed`](Self::is_auth_failed),
/// [`is_slot_in_use`](Self::is_slot_in_use), [`is_slot_missing`](Self::is_slot_missing),
/// [`is_connection_lost`](Self::is_connection_lost), [`is_cancelled`](Self::is_cancelled) and,
/// most often, [`is_retryable`](Self::is_retryable). Passwords never appear in the message.
pub struct Error {
    kind: ErrorKind,
    message: String,
    db: Option<Box<DbError>>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            db: None,
            source: None,
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    pub(crate) fn poisoned() -> Self {
        Self::new(
            ErrorKind::Poisoned,
            "a previous call on this connection was cancelled mid-way; the connection must be \
             discarded",
        )
    }

    pub(crate) fn closed() -> Self {
        Self::new(ErrorKind::Closed, "the server closed the connection")
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Puts `context` in front of the message (which host failed, for example).
    pub(crate) fn context(mut self, context: impl Into<String>) -> Self {
        let context = context.into();
        self.message = if self.message.is_empty() {
            context
        } else {
            format!("{context}: {}", self.message)
        };
        self
    }

    /// A message longer than its phase allows: a protocol error whose source is `detail`.
    pub(crate) fn too_long(detail: MessageTooLong) -> Self {
        Self::new(ErrorKind::Protocol, String::new()).with_source(detail)
    }

    pub(crate) fn io(context: impl Into<String>, e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => ErrorKind::Closed,
            _ => ErrorKind::Io,
        };
        Self::new(kind, context).with_source(e)
    }

    pub(crate) fn server(db: DbError) -> Self {
        let kind = if matches!(db.code.as_str(), "28P01" | "28000") {
            ErrorKind::Auth
        } else {
            ErrorKind::Db
        };
        Self {
            kind,
            message: String::new(),
            db: Some(Box::new(db)),
            source: None,
        }
    }

    /// The broad kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The server's error fields, when the server reported the error.
    pub fn db(&self) -> Option<&DbError> {
        self.db.as_deref()
    }

    /// The message type, declared length, limit and phase, when the server sent a message
    /// longer than the connection's phase allows.
    pub fn message_too_long(&self) -> Option<&MessageTooLong> {
        self.source.as_deref()?.downcast_ref()
    }

    /// The SQLSTATE code, when the server reported the error.
    pub fn code(&self) -> Option<&str> {
        self.db.as_deref().map(|d| d.code.as_str())
    }

    /// Authentication failed: SQLSTATE `28P01` (invalid password) or `28000` (invalid
    /// authorization, such as no `pg_hba.conf` entry), or the client refused to authenticate as
    /// asked (for example `channel_binding=require` without TLS).
    pub fn is_auth_failed(&self) -> bool {
        self.kind == ErrorKind::Auth
    }

    /// The replication slot is active for another process: SQLSTATE `55006`.
    pub fn is_slot_in_use(&self) -> bool {
        self.code() == Some("55006")
    }

    /// The replication slot does not exist: SQLSTATE `42704`.
    pub fn is_slot_missing(&self) -> bool {
        self.code() == Some("42704")
    }

    /// The connection is gone: closed by the server, reset, or terminated by an administrator
    /// (SQLSTATE class `08`, `57P01`-`57P03`).
    pub fn is_connection_lost(&self) -> bool {
        self.kind == ErrorKind::Closed
            || self
                .code()
                .is_some_and(|c| c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03"))
    }

    /// The operation was cancelled (by the caller, or on the server: SQLSTATE `57014`).
    pub fn is_cancelled(&self) -> bool {
        self.kind == ErrorKind::Cancelled || self.code() == Some("57014")
    }

    /// A previous call on this connection was cancelled mid-way ([`ErrorKind::Poisoned`]):
    /// the connection is out of step with the server and must be discarded (a new one works).
    pub fn is_poisoned(&self) -> bool {
        self.kind == ErrorKind::Poisoned
    }

    /// Trying again later, on a new connection, may succeed: the connection was lost or timed
    /// out, the server is starting or shutting down or out of resources (class `53`), or the
    /// slot is still in use by a departing process, or the connection was poisoned by a
    /// cancelled call ([`is_poisoned`](Self::is_poisoned)). Configuration, TLS, authentication and
    /// protocol errors are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            ErrorKind::Io | ErrorKind::Closed | ErrorKind::Timeout | ErrorKind::Poisoned => true,
            ErrorKind::Db => {
                self.is_connection_lost()
                    || self.is_slot_in_use()
                    || self
                        .code()
                        .is_some_and(|c| c.starts_with("53") || c == "40001")
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if !self.message.is_empty() {
            d.field("message", &self.message);
        }
        if let Some(db) = &self.db {
            d.field("db", db);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

/// The message and the server's fields; the cause ([`source`](std::error::Error::source)) is
/// not repeated, so that error reporters (`anyhow`, `eyre`, `{:#}` of either) print each cause
/// once. The alternate form, `{:#}`, writes the whole chain, `: `-separated, for a caller
/// without a reporter (a log line, a command's last words).
///
/// An error that is only its cause (no message, no server fields) is transparent: its text is
/// the cause's, and its `source()` is the cause's source.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if !self.message.is_empty() {
            f.write_str(&self.message)?;
            sep = ": ";
        }
        if let Some(db) = &self.db {
            write!(f, "{sep}{db}")?;
        } else if self.is_transparent() {
            if let Some(s) = &self.source {
                write!(f, "{s}")?;
            }
        } else if self.message.is_empty() {
            write!(f, "{:?} error", self.kind)?;
        }
        if f.alternate() {
            write_chain(f, std::error::Error::source(self))?;
        }
        Ok(())
    }
}

impl Error {
    /// No message and no server fields: the error is its cause.
    fn is_transparent(&self) -> bool {
        self.message.is_empty() && self.db.is_none() && self.source.is_some()
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

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let source = self
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static));
        if self.is_transparent() {
            source?.source()
        } else {
            source
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of each error in `e`'s chain, top first.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut texts = Vec::new();
        let mut next = Some(e);
        while let Some(e) = next {
            texts.push(e.to_string());
            next = e.source();
        }
        texts
    }

    /// What anyhow and eyre print: every level of the chain. No level may be empty or contain
    /// the text of a level below it, and `{:#}` is the levels joined once each.
    fn assert_each_cause_once(e: &Error) {
        let texts = chain(e);
        for (i, t) in texts.iter().enumerate() {
            assert!(!t.is_empty(), "level {i} of {texts:?} is empty");
            for below in texts.iter().skip(i + 1) {
                assert!(!t.contains(below.as_str()), "{t:?} repeats {below:?}");
            }
        }
        assert_eq!(format!("{e:#}"), texts.join(": "));
    }

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = || Error::io("could not connect to db.example:5432", refused());
        assert_eq!(io().to_string(), "could not connect to db.example:5432");
        assert_eq!(chain(&io()).len(), 2);
        assert_each_cause_once(&io());
        assert_each_cause_once(&io().context("host db.example"));

        let db = Error::server(DbError {
            severity: "FATAL".into(),
            code: "28P01".into(),
            message: "password authentication failed for user \"repl\"".into(),
            detail: None,
            hint: None,
        });
        assert_each_cause_once(&db);
        assert_each_cause_once(&db.context("host db.example"));

        // Only its cause: transparent, the cause's text once.
        let long = Error::too_long(MessageTooLong {
            tag: b'd',
            declared: 1 << 30,
            limit: 1 << 20,
            phase: Phase::Startup,
        });
        assert!(long.to_string().contains("declaring 1073741824 bytes"));
        assert!(long.message_too_long().is_some());
        assert_each_cause_once(&long);

        let provider = crate::config::PasswordProviderError::for_test(io());
        let auth =
            Error::new(ErrorKind::Auth, "the password provider failed").with_source(provider);
        assert_eq!(
            chain(&auth),
            [
                "the password provider failed",
                "could not connect to db.example:5432",
                "connection refused"
            ]
        );
        assert_each_cause_once(&auth);
    }
}

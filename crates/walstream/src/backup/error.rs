//! The error of base backups: the connection, the archive stream, the files written, the
//! manifest.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::manifest::Mismatch;
use super::tar::TarError;

/// The result type of [`backup`](super).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a base backup, typed by where.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The connection or the server failed (a server error keeps its SQLSTATE:
    /// [`walconn::Error::code`]).
    Connection(walconn::Error),
    /// An archive message could not be parsed, or came where it cannot (data before any
    /// archive, a new archive while the last one is incomplete).
    Protocol(String),
    /// The WAL stream of [`WalMethod::Stream`](super::WalMethod::Stream) failed (its
    /// connection, its slot, or writing its segments).
    Wal(crate::Error),
    /// An archive is malformed or truncated: which archive, at which byte, and what.
    Tar(TarError),
    /// A file or directory could not be created, written, synced or read.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`create`, `write`, `fsync`, ...).
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The options or the target directory are not usable (a non-empty directory, a
    /// tablespace mapping that is not absolute).
    Config(String),
    /// The server cannot do what was asked: the message names what and the version needed.
    Unsupported(String),
    /// The manifest is not valid JSON of the manifest's shape, or a field is malformed.
    Manifest(String),
    /// The manifest's own `Manifest-Checksum` does not match its text.
    ManifestChecksum {
        /// The checksum the manifest states (hex).
        stated: String,
        /// The SHA-256 of its text (hex).
        computed: String,
    },
    /// Files of the backup differ from the manifest: every mismatch found.
    Verify(Vec<Mismatch>),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }

    /// The SQLSTATE code, when the server reported the error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Connection(e) => e.code(),
            Error::Wal(e) => e.code(),
            _ => None,
        }
    }
}

impl From<walconn::Error> for Error {
    fn from(e: walconn::Error) -> Self {
        Error::Connection(e)
    }
}

impl From<TarError> for Error {
    fn from(e: TarError) -> Self {
        Error::Tar(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connection(e) => write!(f, "base backup: {e}"),
            Error::Protocol(m) => write!(f, "base backup stream: {m}"),
            Error::Tar(e) => write!(f, "base backup: {e}"),
            Error::Wal(e) => write!(f, "base backup's WAL stream: {e}"),
            Error::Io {
                path,
                action,
                source,
            } => write!(
                f,
                "base backup: could not {action} {}: {source}",
                path.display()
            ),
            Error::Config(m) | Error::Unsupported(m) => write!(f, "base backup: {m}"),
            Error::Manifest(m) => write!(f, "backup manifest: {m}"),
            Error::ManifestChecksum { stated, computed } => write!(
                f,
                "backup manifest: its checksum {stated} does not match its text ({computed})"
            ),
            Error::Verify(mismatches) => {
                write!(f, "backup differs from its manifest:")?;
                for m in mismatches {
                    write!(f, " {m};")?;
                }
                Ok(())
            }
        }?;
        if f.alternate() {
            crate::error::write_chain(f, std::error::Error::source(self))?;
        }
        Ok(())
    }
}

/// The error a variant's text is made of (with a prefix): its text is in this error's, so
/// [`source`](std::error::Error::source) goes on from that error's own source and error
/// reporters print each cause once.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let shown: &(dyn std::error::Error + 'static) = match self {
            Error::Connection(e) => e,
            Error::Tar(e) => e,
            Error::Wal(e) => e,
            Error::Io { source, .. } => source,
            _ => return None,
        };
        shown.source()
    }
}

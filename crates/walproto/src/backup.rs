//! The CopyData messages of `BASE_BACKUP`'s archive stream (PostgreSQL 15+, `TARGET 'client'`).
//!
//! After its two result sets, `BASE_BACKUP` sends one CopyOut stream holding every archive and
//! the manifest. Each CopyData payload starts with a type byte: [`NewArchive`] (`n`) opens the
//! archive of the main data directory or of one tablespace, [`BackupMessage::Manifest`] (`m`)
//! says the manifest follows, [`BackupMessage::Data`] (`d`) carries bytes of whichever of the
//! two was opened last, and [`BackupMessage::Progress`] (`p`) reports the bytes of the current
//! tablespace done so far. Clients parse these; fake servers and tests encode them.
//!
//! ```
//! use walproto::backup::{BackupMessage, NewArchive};
//!
//! // The main data directory's archive: its name, then an empty tablespace location.
//! let payload = b"nbase.tar\0\0";
//! let msg = BackupMessage::parse(payload)?;
//! assert_eq!(
//!     msg,
//!     BackupMessage::NewArchive(NewArchive { name: "base.tar", tablespace_location: "" })
//! );
//! let mut again = Vec::new();
//! msg.encode(&mut again);
//! assert_eq!(again, payload);
//! # Ok::<(), walproto::Error>(())
//! ```

use bytes::BufMut;

use crate::error::{Error, ErrorKind};
use crate::reader::Reader;

/// Tag of [`BackupMessage::NewArchive`].
pub const NEW_ARCHIVE_TAG: u8 = b'n';
/// Tag of [`BackupMessage::Manifest`].
pub const MANIFEST_TAG: u8 = b'm';
/// Tag of [`BackupMessage::Data`].
pub const DATA_TAG: u8 = b'd';
/// Tag of [`BackupMessage::Progress`].
pub const PROGRESS_TAG: u8 = b'p';

/// The longest archive name or tablespace location accepted, in bytes. PostgreSQL builds both
/// in buffers of `MAXPGPATH` (1024 bytes with the NUL), so no server sends a longer one, and
/// a client that turns them into paths need not hold more.
pub const MAX_PATH_LEN: usize = 1024;

/// One CopyData payload of `BASE_BACKUP`'s archive stream.
///
/// `#[non_exhaustive]`: PostgreSQL chose a type byte per message precisely so that it can add
/// more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackupMessage<'a> {
    /// `n`: a new archive starts; the `d` messages that follow are its bytes.
    NewArchive(NewArchive<'a>),
    /// `m`: the backup manifest starts; the `d` messages that follow are its bytes.
    Manifest,
    /// `d`: the next bytes of the archive or manifest opened last, borrowed from the payload.
    Data(&'a [u8]),
    /// `p`: progress of the current tablespace.
    Progress(Progress),
}

/// `n`: the start of an archive (a tar file, possibly compressed by the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewArchive<'a> {
    /// The archive's file name, such as `base.tar` or `16384.tar.gz`.
    pub name: &'a str,
    /// Empty for the main data directory; for a tablespace, the full path of the directory
    /// the archive was made from.
    pub tablespace_location: &'a str,
}

/// `p`: how far the server has got with the current tablespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the current tablespace processed so far (an `Int64` on the wire; every bit
    /// pattern is kept, so a parse and an encode give the same bytes).
    pub bytes_done: u64,
}

impl<'a> BackupMessage<'a> {
    /// Parses one CopyData payload of the archive stream. Bytes after a message's last field
    /// are an error; the payload of `d` is all of the rest.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        let msg = match r.tag()? {
            NEW_ARCHIVE_TAG => BackupMessage::NewArchive(NewArchive {
                name: r.bounded_cstr(MAX_PATH_LEN)?,
                tablespace_location: r.bounded_cstr(MAX_PATH_LEN)?,
            }),
            MANIFEST_TAG => BackupMessage::Manifest,
            DATA_TAG => {
                let data = r.rest();
                r.bytes(data.len())?;
                BackupMessage::Data(data)
            }
            PROGRESS_TAG => BackupMessage::Progress(Progress {
                bytes_done: r.u64()?,
            }),
            _ => return Err(r.error_at(ErrorKind::UnknownMessage, 0)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends the message's CopyData payload to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            BackupMessage::NewArchive(n) => {
                out.put_u8(NEW_ARCHIVE_TAG);
                out.put_slice(n.name.as_bytes());
                out.put_u8(0);
                out.put_slice(n.tablespace_location.as_bytes());
                out.put_u8(0);
            }
            BackupMessage::Manifest => out.put_u8(MANIFEST_TAG),
            BackupMessage::Data(data) => {
                out.put_u8(DATA_TAG);
                out.put_slice(data);
            }
            BackupMessage::Progress(p) => {
                out.put_u8(PROGRESS_TAG);
                out.put_u64(p.bytes_done);
            }
        }
    }

    /// The length of [`encode`](Self::encode)'s output, to reserve or frame it.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            BackupMessage::NewArchive(n) => n.name.len() + 1 + n.tablespace_location.len() + 1,
            BackupMessage::Manifest => 0,
            BackupMessage::Data(data) => data.len(),
            BackupMessage::Progress(_) => 8,
        }
    }
}

impl NewArchive<'_> {
    /// Whether this is the main data directory's archive (its tablespace location is empty).
    pub fn is_main_data_directory(&self) -> bool {
        self.tablespace_location.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    fn round_trip(bytes: &[u8], want: BackupMessage<'_>) {
        assert_eq!(BackupMessage::parse(bytes), Ok(want));
        let mut out = Vec::new();
        want.encode(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(want.encoded_len(), bytes.len());
    }

    fn error(bytes: &[u8]) -> (ErrorKind, Option<u8>, usize) {
        let e = BackupMessage::parse(bytes).unwrap_err();
        (e.kind(), e.tag(), e.offset())
    }

    /// Each message as the protocol docs lay it out, byte by byte.
    #[test]
    fn messages_from_the_docs() {
        // Byte1('n'), String archive name, String tablespace location ("" for the main one).
        round_trip(
            b"nbase.tar\0\0",
            BackupMessage::NewArchive(NewArchive {
                name: "base.tar",
                tablespace_location: "",
            }),
        );
        round_trip(
            b"n16384.tar.gz\0/srv/tblspc/fast\0",
            BackupMessage::NewArchive(NewArchive {
                name: "16384.tar.gz",
                tablespace_location: "/srv/tblspc/fast",
            }),
        );
        // Byte1('m').
        round_trip(b"m", BackupMessage::Manifest);
        // Byte1('d'), Byten: the rest of the payload, empty or not.
        round_trip(b"dustar\x0000", BackupMessage::Data(b"ustar\x0000"));
        round_trip(b"d", BackupMessage::Data(b""));
        // Byte1('p'), Int64 bytes done.
        round_trip(
            b"p\0\0\0\0\0\x01\x00\x00",
            BackupMessage::Progress(Progress { bytes_done: 65536 }),
        );
        assert!(matches!(
            BackupMessage::parse(b"nbase.tar\0\0"),
            Ok(BackupMessage::NewArchive(n)) if n.is_main_data_directory()
        ));
    }

    #[test]
    fn malformed_messages_are_typed_errors_with_tag_and_offset() {
        assert_eq!(error(b""), (ErrorKind::Empty, None, 0));
        assert_eq!(error(b"x"), (ErrorKind::UnknownMessage, Some(b'x'), 0));
        // The old protocol's raw tar bytes are not a message.
        assert_eq!(error(b"base/"), (ErrorKind::UnknownMessage, Some(b'b'), 0));
        assert_eq!(
            error(b"nbase.tar"),
            (ErrorKind::UnterminatedString, Some(b'n'), 1)
        );
        assert_eq!(
            error(b"nbase.tar\0"),
            (ErrorKind::UnterminatedString, Some(b'n'), 10)
        );
        assert_eq!(
            error(b"nbase.tar\0\0x"),
            (ErrorKind::TrailingBytes, Some(b'n'), 11)
        );
        assert_eq!(
            error(b"nba\xffse\0\0"),
            (ErrorKind::InvalidUtf8, Some(b'n'), 3)
        );
        assert_eq!(error(b"m\0"), (ErrorKind::TrailingBytes, Some(b'm'), 1));
        assert_eq!(
            error(b"p\0\0\0\0"),
            (ErrorKind::UnexpectedEof, Some(b'p'), 1)
        );
        assert_eq!(
            error(b"p\0\0\0\0\0\0\0\0\0"),
            (ErrorKind::TrailingBytes, Some(b'p'), 9)
        );
    }

    #[test]
    fn paths_are_bounded() {
        let mut long = Vec::from(&b"nbase.tar\0"[..]);
        long.resize(long.len() + MAX_PATH_LEN, b'a');
        long.push(0);
        assert!(BackupMessage::parse(&long).is_ok());
        long.insert(10, b'a');
        let max = MAX_PATH_LEN as u32;
        assert_eq!(
            error(&long),
            (ErrorKind::TooLong { len: max + 1, max }, Some(b'n'), 10)
        );
    }
}

//! A cursor over one whole message: fixed-size fields with plain slice operations, strings with
//! nom's `complete` parsers.
//!
//! The parsers in this crate only ever see whole messages (a CopyData payload, or the pgoutput
//! message inside an XLogData), so running out of bytes is always an error here, never "need
//! more". The reader remembers where it started so every error carries a byte offset.

use nom::bytes::complete::take_till;
use nom::IResult;

use crate::error::{Error, ErrorKind};
use crate::pgoutput::MAX_NAME_LEN;
use crate::types::{Lsn, Oid, Timestamp, Xid};

/// nom's error type for the primitives: we only need to know that a primitive failed, and the
/// reader turns that into an [`Error`] with the offset, so nom's own types stay private.
type NomError<'a> = nom::error::Error<&'a [u8]>;

pub(crate) struct Reader<'a> {
    whole: &'a [u8],
    rest: &'a [u8],
    tag: Option<u8>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(whole: &'a [u8]) -> Self {
        Reader {
            whole,
            rest: whole,
            tag: None,
        }
    }

    /// The offset of the next unread byte from the start of the message.
    #[inline]
    pub(crate) fn offset(&self) -> usize {
        self.whole.len() - self.rest.len()
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    #[inline]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// An error of `kind` at the current position.
    pub(crate) fn error(&self, kind: ErrorKind) -> Error {
        Error::new(kind, self.tag, self.offset())
    }

    /// An error of `kind` at an earlier position `at`.
    pub(crate) fn error_at(&self, kind: ErrorKind, at: usize) -> Error {
        Error::new(kind, self.tag, at)
    }

    #[inline]
    fn run<O>(
        &mut self,
        parser: impl FnOnce(&'a [u8]) -> IResult<&'a [u8], O, NomError<'a>>,
    ) -> Result<O, Error> {
        match parser(self.rest) {
            Ok((rest, out)) => {
                self.rest = rest;
                Ok(out)
            }
            Err(_) => Err(self.error(ErrorKind::UnexpectedEof)),
        }
    }

    /// Takes the next `N` bytes: the fixed-size fields, read with plain slice operations (nom's
    /// number parsers cost about ten times as many instructions per field, out of line).
    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        match self.rest.split_first_chunk::<N>() {
            Some((head, rest)) => {
                self.rest = rest;
                Ok(*head)
            }
            None => Err(self.error(ErrorKind::UnexpectedEof)),
        }
    }

    /// Reads the message type byte and remembers it for error reports.
    pub(crate) fn tag(&mut self) -> Result<u8, Error> {
        if self.rest.is_empty() {
            return Err(self.error(ErrorKind::Empty));
        }
        let tag = self.u8()?;
        self.tag = Some(tag);
        Ok(tag)
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        self.array().map(u8::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        self.array().map(u16::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        self.array().map(u32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i32(&mut self) -> Result<i32, Error> {
        self.array().map(i32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        self.array().map(u64::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i64(&mut self) -> Result<i64, Error> {
        self.array().map(i64::from_be_bytes)
    }

    #[inline]
    pub(crate) fn lsn(&mut self) -> Result<Lsn, Error> {
        self.u64().map(Lsn::new)
    }

    #[inline]
    pub(crate) fn xid(&mut self) -> Result<Xid, Error> {
        self.u32().map(Xid)
    }

    #[inline]
    pub(crate) fn oid(&mut self) -> Result<Oid, Error> {
        self.u32().map(Oid)
    }

    #[inline]
    pub(crate) fn timestamp(&mut self) -> Result<Timestamp, Error> {
        self.i64().map(Timestamp::new)
    }

    /// Takes exactly `n` bytes.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        match self.rest.split_at_checked(n) {
            Some((taken, rest)) => {
                self.rest = rest;
                Ok(taken)
            }
            None => Err(self.error(ErrorKind::UnexpectedEof)),
        }
    }

    /// Reads an `Int32` length and the bytes it announces. The length is checked against the
    /// bytes left before anything is taken, so an inflated length is an error naming it.
    pub(crate) fn len_prefixed(&mut self) -> Result<&'a [u8], Error> {
        let at = self.offset();
        let len = self.i32()?;
        let len =
            u32::try_from(len).map_err(|_| self.error_at(ErrorKind::NegativeLength(len), at))?;
        if len as usize > self.remaining() {
            return Err(self.error_at(ErrorKind::LengthOutOfBounds(len), at));
        }
        self.bytes(len as usize)
    }

    /// Reads a NUL-terminated UTF-8 string (PostgreSQL's `String`) without its NUL.
    pub(crate) fn cstr(&mut self) -> Result<&'a str, Error> {
        let at = self.offset();
        let s = self.cstr_bytes()?;
        self.utf8(s, at)
    }

    /// Reads a schema, table, column or type name: a [`cstr`](Self::cstr) of at most
    /// [`MAX_NAME_LEN`] bytes, its length checked before anything else.
    pub(crate) fn name(&mut self) -> Result<&'a str, Error> {
        let at = self.offset();
        let s = self.cstr_bytes()?;
        if s.len() > MAX_NAME_LEN {
            let kind = ErrorKind::NameTooLong {
                len: u32::try_from(s.len()).unwrap_or(u32::MAX),
                max: MAX_NAME_LEN as u32,
            };
            return Err(self.error_at(kind, at));
        }
        self.utf8(s, at)
    }

    /// Reads a [`cstr`](Self::cstr) of at most `max` bytes (a path, an archive name), its
    /// length checked before anything else; too long is [`ErrorKind::TooLong`] at its start.
    pub(crate) fn bounded_cstr(&mut self, max: usize) -> Result<&'a str, Error> {
        let at = self.offset();
        let s = self.cstr_bytes()?;
        if s.len() > max {
            let kind = ErrorKind::TooLong {
                len: u32::try_from(s.len()).unwrap_or(u32::MAX),
                max: u32::try_from(max).unwrap_or(u32::MAX),
            };
            return Err(self.error_at(kind, at));
        }
        self.utf8(s, at)
    }

    /// The bytes up to the next NUL, which is consumed too.
    fn cstr_bytes(&mut self) -> Result<&'a [u8], Error> {
        let at = self.offset();
        let s: &'a [u8] = self.run(take_till(|b| b == 0))?;
        if self.rest.is_empty() {
            return Err(self.error_at(ErrorKind::UnterminatedString, at));
        }
        self.u8()?;
        Ok(s)
    }

    /// `s`, read from offset `at`, as UTF-8.
    fn utf8(&self, s: &'a [u8], at: usize) -> Result<&'a str, Error> {
        core::str::from_utf8(s)
            .map_err(|e| self.error_at(ErrorKind::InvalidUtf8, at + e.valid_up_to()))
    }

    /// Checks that a count of items of at least `min_size` bytes each can fit in what is left,
    /// so that a count can never drive a long loop or an allocation over bytes that are not
    /// there. `at` is the offset of the count field.
    pub(crate) fn check_count(&self, count: u32, min_size: usize, at: usize) -> Result<(), Error> {
        if (count as usize).saturating_mul(min_size) > self.remaining() {
            return Err(self.error_at(ErrorKind::CountOutOfBounds(count), at));
        }
        Ok(())
    }

    /// Ends the message: any byte left over is an error.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.error(ErrorKind::TrailingBytes))
        }
    }
}

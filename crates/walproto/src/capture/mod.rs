//! The capture file format (`WALCAP1`): a recorded replication stream, frame by frame.
//!
//! ```text
//! "WALCAP1\n"        8 bytes, magic
//! <header JSON>\n    one line, UTF-8 (the options and server the stream was recorded with)
//! frames, until end of file:
//!   u32 big-endian N  length of the payload
//!   N bytes           one CopyData payload exactly as the server sent it
//! ```
//!
//! This module frames bytes; it does not interpret the payloads (see
//! [`crate::replication::ServerMessage`]). With the `serde` feature, [`Header`] reads and
//! writes the header's JSON (with `serde_json`, which works without `std`). [`Capture::parse`] works on a whole file in memory;
//! [`split_frame`] is the incremental form for readers that stream a file in chunks.
//!
//! ```
//! use walproto::capture::{self, Capture};
//!
//! let mut file = Vec::new();
//! capture::write_header(&mut file, r#"{"proto_version":1}"#);
//! capture::write_frame(&mut file, b"k\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\0\0");
//! let cap = Capture::parse(&file)?;
//! assert_eq!(cap.header(), r#"{"proto_version":1}"#);
//! let frames: Vec<_> = cap.frames().collect::<Result<_, _>>()?;
//! assert_eq!(frames.len(), 1);
//! assert_eq!(frames[0].offset, 28);
//! # Ok::<(), walproto::Error>(())
//! ```

#[cfg(feature = "serde")]
mod header;

use bytes::BufMut;

use crate::error::{Error, ErrorKind};

#[cfg(feature = "serde")]
pub use header::{Header, HeaderError};

/// The first eight bytes of a capture file.
pub const MAGIC: &[u8; 8] = b"WALCAP1\n";

/// The largest frame accepted: PostgreSQL builds each CopyData message in one buffer that cannot
/// exceed `MaxAllocSize` (1 GiB - 1), so a longer length can only be corruption. Checked before
/// a reader allocates for a frame.
pub const MAX_FRAME_LEN: u32 = 0x3FFF_FFFF;

/// The longest header line accepted; real headers are a few hundred bytes.
pub const MAX_HEADER_LEN: usize = 64 * 1024;

/// A capture file held in memory.
#[derive(Clone, Copy, Debug)]
pub struct Capture<'a> {
    header: &'a str,
    frames: &'a [u8],
    frames_offset: usize,
}

/// One recorded CopyData payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The file offset of the frame's length prefix.
    pub offset: usize,
    /// The CopyData payload.
    pub payload: &'a [u8],
}

impl<'a> Capture<'a> {
    /// Checks the magic and reads the header line. Frames are read lazily by [`Self::frames`].
    pub fn parse(file: &'a [u8]) -> Result<Self, Error> {
        let (header, frames_offset) =
            parse_header(file)?.ok_or(Error::new(ErrorKind::UnexpectedEof, None, file.len()))?;
        let frames = file.get(frames_offset..).unwrap_or_default();
        Ok(Capture {
            header,
            frames,
            frames_offset,
        })
    }

    /// The header line, without its newline: a JSON object.
    pub fn header(&self) -> &'a str {
        self.header
    }

    /// The file offset of the first frame.
    pub fn frames_offset(&self) -> usize {
        self.frames_offset
    }

    /// The frames in order. A truncated or oversized frame yields one error naming its file
    /// offset, after every good frame before it, and then the iterator ends.
    pub fn frames(&self) -> Frames<'a> {
        Frames {
            rest: self.frames,
            offset: self.frames_offset,
        }
    }
}

/// Iterator over the frames of a [`Capture`].
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match split_frame(self.rest) {
            Ok(Some((payload, used))) => {
                let frame = Frame {
                    offset: self.offset,
                    payload,
                };
                self.rest = self.rest.get(used..).unwrap_or_default();
                self.offset += used;
                Some(Ok(frame))
            }
            Ok(None) => {
                let at = self.offset;
                self.rest = &[];
                Some(Err(Error::new(ErrorKind::UnexpectedEof, None, at)))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e.with_base(self.offset)))
            }
        }
    }
}

/// Reads the magic and header line from the start of a file.
///
/// Returns the header and the offset of the first frame, `Ok(None)` if more bytes are needed,
/// or an error for a wrong magic, a header that is not UTF-8, or one longer than
/// [`MAX_HEADER_LEN`].
pub fn parse_header(file: &[u8]) -> Result<Option<(&str, usize)>, Error> {
    let magic_len = MAGIC.len().min(file.len());
    if file.get(..magic_len) != MAGIC.get(..magic_len) {
        return Err(Error::new(ErrorKind::BadMagic, None, 0));
    }
    let Some(after) = file.get(MAGIC.len()..) else {
        return Ok(None);
    };
    let Some(nl) = after
        .iter()
        .take(MAX_HEADER_LEN + 1)
        .position(|&b| b == b'\n')
    else {
        if after.len() > MAX_HEADER_LEN {
            return Err(Error::new(
                ErrorKind::TooLong {
                    len: u32::try_from(after.len()).unwrap_or(u32::MAX),
                    max: MAX_HEADER_LEN as u32,
                },
                None,
                MAGIC.len(),
            ));
        }
        return Ok(None);
    };
    let line = after.get(..nl).unwrap_or_default();
    let header = core::str::from_utf8(line)
        .map_err(|e| Error::new(ErrorKind::InvalidUtf8, None, MAGIC.len() + e.valid_up_to()))?;
    Ok(Some((header, MAGIC.len() + nl + 1)))
}

/// Splits one frame off the front of `buf`: its payload and the bytes it took (4 + length).
///
/// Returns `Ok(None)` when `buf` holds less than a whole frame, and an error (at offset 0 of
/// `buf`) for a length above [`MAX_FRAME_LEN`], before anything is allocated for it.
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, Error> {
    let Some((len, rest)) = buf.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*len);
    if len > MAX_FRAME_LEN {
        return Err(Error::new(
            ErrorKind::TooLong {
                len,
                max: MAX_FRAME_LEN,
            },
            None,
            0,
        ));
    }
    Ok(rest.get(..len as usize).map(|p| (p, 4 + len as usize)))
}

/// Writes the magic and the header line. `header_json` must be one line of JSON.
pub fn write_header(out: &mut impl BufMut, header_json: &str) {
    out.put_slice(MAGIC);
    out.put_slice(header_json.as_bytes());
    out.put_u8(b'\n');
}

/// Writes one frame (length and payload). Payloads longer than [`MAX_FRAME_LEN`] cannot come
/// from PostgreSQL and are not expected here.
pub fn write_frame(out: &mut impl BufMut, payload: &[u8]) {
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn file(frames: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        write_header(&mut v, "{}");
        for f in frames {
            write_frame(&mut v, f);
        }
        v
    }

    #[test]
    fn frames_in_order_with_offsets() {
        let f = file(&[b"abc", b"", b"z"]);
        let cap = Capture::parse(&f).unwrap();
        assert_eq!(cap.header(), "{}");
        let frames: Vec<_> = cap.frames().map(Result::unwrap).collect();
        assert_eq!(
            frames,
            [
                Frame {
                    offset: 11,
                    payload: b"abc"
                },
                Frame {
                    offset: 18,
                    payload: b""
                },
                Frame {
                    offset: 22,
                    payload: b"z"
                },
            ]
        );
    }

    #[test]
    fn truncated_last_frame_keeps_the_good_ones() {
        let f = file(&[b"abc", b"defg"]);
        for cut in 19..f.len() {
            let cap = Capture::parse(&f[..cut]).unwrap();
            let got: Vec<_> = cap.frames().collect();
            assert_eq!(got.len(), 2, "cut {cut}");
            assert_eq!(
                got[0],
                Ok(Frame {
                    offset: 11,
                    payload: b"abc"
                })
            );
            let e = got[1].unwrap_err();
            assert_eq!((e.kind(), e.offset()), (ErrorKind::UnexpectedEof, 18));
        }
    }

    #[test]
    fn oversized_length_is_rejected_with_its_offset() {
        let mut f = file(&[b"ok"]);
        f.extend_from_slice(&u32::MAX.to_be_bytes());
        let got: Vec<_> = Capture::parse(&f).unwrap().frames().collect();
        let e = got[1].unwrap_err();
        assert_eq!(
            (e.kind(), e.offset()),
            (
                ErrorKind::TooLong {
                    len: u32::MAX,
                    max: MAX_FRAME_LEN
                },
                17
            )
        );
    }

    #[test]
    fn bad_magic_and_header() {
        assert_eq!(
            Capture::parse(b"WALCAP2\n{}\n").unwrap_err().kind(),
            ErrorKind::BadMagic
        );
        assert_eq!(
            Capture::parse(b"PK").unwrap_err().kind(),
            ErrorKind::BadMagic
        );
        assert_eq!(parse_header(b"WALC"), Ok(None));
        assert_eq!(parse_header(b"WALCAP1\n{\"a\""), Ok(None));
        assert_eq!(
            Capture::parse(b"WALCAP1\n{").unwrap_err().kind(),
            ErrorKind::UnexpectedEof
        );
        assert_eq!(
            Capture::parse(b"WALCAP1\n\xFF\n").unwrap_err().kind(),
            ErrorKind::InvalidUtf8
        );
        let mut long = MAGIC.to_vec();
        long.resize(MAX_HEADER_LEN + 20, b' ');
        assert!(matches!(
            parse_header(&long).unwrap_err().kind(),
            ErrorKind::TooLong { .. }
        ));
    }
}

//! Reading a `WALCAP1` capture file frame by frame from any `Read`, without holding the file.
//!
//! walproto's [`capture::parse_header`] and [`capture::split_frame`] do the framing on bytes;
//! this reader feeds them from a growing buffer. Memory stays at about the largest frame plus
//! one read chunk, whatever the file's size, and the buffer only grows as bytes actually
//! arrive: a corrupt length prefix cannot make it allocate what the file does not hold.

use std::fmt;
use std::io::{self, Read};

use walproto::capture;

/// Bytes asked of the underlying reader at a time (more when one frame is larger).
const READ_CHUNK: usize = 64 * 1024;

/// A capture file being read: first [`CaptureReader::header`], then
/// [`CaptureReader::next_frame`] until it returns `Ok(None)`.
pub(crate) struct CaptureReader<R> {
    inner: R,
    /// Bytes read and not yet consumed start at `buf[pos]`.
    buf: Vec<u8>,
    pos: usize,
    /// The file offset of `buf[0]`.
    base: u64,
    eof: bool,
}

/// One frame: its file offset (of the length prefix) and its CopyData payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub(crate) offset: u64,
    pub(crate) payload: &'a [u8],
}

/// Why the capture could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The underlying reader failed.
    Io(io::Error),
    /// walproto rejected the framing (bad magic, header not UTF-8 or too long, frame longer
    /// than any server sends); the error's offset is the file offset.
    Format(walproto::Error),
    /// The file ends inside the header.
    TruncatedHeader {
        /// The file's length.
        len: u64,
    },
    /// The file ends inside a frame.
    TruncatedFrame {
        /// The frame's file offset.
        offset: u64,
        /// The bytes of the frame that are present (length prefix included).
        have: usize,
        /// The payload length its prefix claims, when the prefix is whole.
        payload_len: Option<u32>,
    },
}

impl ReadError {
    /// The file offset the error is about, when it is about one.
    pub(crate) fn offset(&self) -> Option<u64> {
        match self {
            ReadError::Io(_) => None,
            ReadError::Format(e) => Some(e.offset() as u64),
            ReadError::TruncatedHeader { len } => Some(*len),
            ReadError::TruncatedFrame { offset, .. } => Some(*offset),
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Format(e) => write!(f, "{}", e.kind()),
            ReadError::TruncatedHeader { len } => write!(
                f,
                "the file ends after {len} bytes, before the header line's newline"
            ),
            ReadError::TruncatedFrame {
                have,
                payload_len: Some(n),
                ..
            } => write!(
                f,
                "truncated frame: its length prefix says {n} bytes of payload but the file \
                 ends after {} of them",
                have.saturating_sub(4)
            ),
            ReadError::TruncatedFrame {
                have,
                payload_len: None,
                ..
            } => write!(
                f,
                "truncated frame: the file ends after {have} of the 4 bytes of its length prefix"
            ),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl<R: Read> CaptureReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        CaptureReader {
            inner,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            base: 0,
            eof: false,
        }
    }

    /// Checks the magic and returns the header line (without its newline).
    pub(crate) fn header(&mut self) -> Result<String, ReadError> {
        loop {
            match capture::parse_header(&self.buf) {
                Ok(Some((header, frames_offset))) => {
                    let header = header.to_owned();
                    self.pos = frames_offset;
                    return Ok(header);
                }
                Ok(None) if self.eof => {
                    return Err(ReadError::TruncatedHeader {
                        len: self.buf.len() as u64,
                    })
                }
                Ok(None) => self.fill()?,
                Err(e) => return Err(ReadError::Format(e)),
            }
        }
    }

    /// The file offset of the next unread byte.
    pub(crate) fn position(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// The next frame, `Ok(None)` at a clean end of file, or an error for a truncated or
    /// oversized frame (after which the reader should not be used again).
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame<'_>>, ReadError> {
        let (start, end) = loop {
            let rest = self.buf.get(self.pos..).unwrap_or_default();
            match capture::split_frame(rest) {
                Ok(Some((payload, used))) => {
                    let start = self.pos + 4;
                    let end = start + payload.len();
                    self.pos += used;
                    break (start, end);
                }
                Ok(None) if self.eof => {
                    if rest.is_empty() {
                        return Ok(None);
                    }
                    let payload_len = rest.first_chunk::<4>().map(|b| u32::from_be_bytes(*b));
                    return Err(ReadError::TruncatedFrame {
                        offset: self.position(),
                        have: rest.len(),
                        payload_len,
                    });
                }
                Ok(None) => self.fill()?,
                Err(e) => {
                    let at = usize::try_from(self.position()).unwrap_or(usize::MAX);
                    return Err(ReadError::Format(e.with_base(at)));
                }
            }
        };
        Ok(Some(Frame {
            offset: self.base + (start - 4) as u64,
            payload: self.buf.get(start..end).unwrap_or_default(),
        }))
    }

    /// Drops consumed bytes and reads more: at least a chunk, and as much again as is buffered
    /// so that a frame larger than a chunk arrives in a logarithmic number of reads.
    fn fill(&mut self) -> Result<(), ReadError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
        let want = READ_CHUNK.max(self.buf.len()) as u64;
        let n = (&mut self.inner).take(want).read_to_end(&mut self.buf)?;
        if n == 0 {
            self.eof = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per call, to exercise refills.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            let (head, tail) = self.data.split_at(n);
            buf[..n].copy_from_slice(head);
            self.data = tail;
            Ok(n)
        }
    }

    fn file(frames: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        capture::write_header(&mut v, "{}");
        for f in frames {
            capture::write_frame(&mut v, f);
        }
        v
    }

    fn read_all(data: &[u8], step: usize) -> (Vec<(u64, Vec<u8>)>, Option<ReadError>) {
        let mut r = CaptureReader::new(Trickle { data, step });
        if let Err(e) = r.header() {
            return (Vec::new(), Some(e));
        }
        let mut frames = Vec::new();
        loop {
            match r.next_frame() {
                Ok(Some(f)) => frames.push((f.offset, f.payload.to_vec())),
                Ok(None) => return (frames, None),
                Err(e) => return (frames, Some(e)),
            }
        }
    }

    #[test]
    fn frames_match_the_in_memory_parser_at_any_read_size() {
        let big = vec![7u8; 3 * READ_CHUNK + 5];
        let data = file(&[b"abc", b"", &big, b"z"]);
        let want: Vec<_> = capture::Capture::parse(&data)
            .unwrap()
            .frames()
            .map(|f| {
                let f = f.unwrap();
                (f.offset as u64, f.payload.to_vec())
            })
            .collect();
        for step in [1, 3, 4096, usize::MAX] {
            let (got, err) = read_all(&data, step);
            assert!(err.is_none(), "step {step}: {err:?}");
            assert_eq!(got, want, "step {step}");
        }
    }

    #[test]
    fn truncation_is_reported_after_the_good_frames() {
        let data = file(&[b"abc", b"defg"]);
        // The second frame starts at 18 and is 8 bytes long.
        for cut in 19..data.len() {
            for step in [1, usize::MAX] {
                let (got, err) = read_all(&data[..cut], step);
                assert_eq!(got, [(11, b"abc".to_vec())], "cut {cut}");
                match err {
                    Some(ReadError::TruncatedFrame {
                        offset: 18,
                        have,
                        payload_len,
                    }) => {
                        assert_eq!(have, cut - 18);
                        assert_eq!(payload_len, (cut >= 22).then_some(4));
                    }
                    other => panic!("cut {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn bad_magic_and_short_header() {
        let (_, err) = read_all(b"WALCAP2\n{}\n", 1);
        assert!(matches!(err, Some(ReadError::Format(e)) if e.offset() == 0));
        let (_, err) = read_all(b"WALCAP1\n{", 2);
        assert!(matches!(err, Some(ReadError::TruncatedHeader { len: 9 })));
        let (_, err) = read_all(b"", 2);
        assert!(matches!(err, Some(ReadError::TruncatedHeader { len: 0 })));
    }

    #[test]
    fn oversized_length_names_its_offset() {
        let mut data = file(&[b"ok"]);
        data.extend_from_slice(&u32::MAX.to_be_bytes());
        let (got, err) = read_all(&data, 5);
        assert_eq!(got.len(), 1);
        assert!(matches!(err, Some(ReadError::Format(e)) if e.offset() == 17));
    }
}

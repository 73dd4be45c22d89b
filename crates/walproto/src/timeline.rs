//! Timeline history files, as `TIMELINE_HISTORY` returns them.
//!
//! A history file lists, one line each, the timelines that came before the file's own and where
//! each one ended: `<timeline>\t<switch position X/X>\t<reason>`. Blank lines and lines whose
//! first non-blank character is `#` are ignored, as PostgreSQL's `readTimeLineHistory` ignores
//! them, and the timelines must increase from line to line.
//!
//! [`TimelineHistory::parse`] checks every line once; [`TimelineHistory::switches`] then reads
//! them lazily, borrowing each reason, and cannot fail. [`write_history`] writes lines in the
//! server's own format, for fake servers and tests.
//!
//! ```
//! use walproto::timeline::TimelineHistory;
//! use walproto::Lsn;
//!
//! let file = b"1\t0/3000158\tno recovery target specified\n\n\
//!              2\t0/5000000\tat restore point \"before_upgrade\"\n";
//! let history = TimelineHistory::parse(file)?;
//! let switches: Vec<_> = history.switches().collect();
//! assert_eq!(switches.len(), 2);
//! assert_eq!((switches[1].timeline, switches[1].switch_lsn), (2, Lsn::new(0x500_0000)));
//! assert_eq!(history.end_of(1), Some(Lsn::new(0x300_0158)));
//! # Ok::<(), walproto::Error>(())
//! ```

use core::fmt::{self, Write as _};
use core::str::FromStr;

use bytes::BufMut;

use crate::error::{Error, ErrorKind};
use crate::types::Lsn;

/// A history file whose every line was checked: its switches can be read without errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineHistory<'a> {
    text: &'a [u8],
    len: usize,
}

/// One line of a history file: `timeline` ended at `switch_lsn` and its child began there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineSwitch<'a> {
    /// The timeline that ended (the parent of the next line's, or of the file's own).
    pub timeline: u32,
    /// The WAL position where `timeline` ended and its child began.
    pub switch_lsn: Lsn,
    /// Why the server switched, such as `no recovery target specified`: the rest of the line
    /// after the position, without its leading blanks. Bytes, because PostgreSQL writes a
    /// restore point's name in the server's encoding and never checks it.
    pub reason: &'a [u8],
}

/// The switches of a [`TimelineHistory`], in the file's order.
#[derive(Clone, Debug)]
pub struct Switches<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> TimelineHistory<'a> {
    /// Checks every line of a history file. A bad line is an error at the offset where the
    /// line starts: [`ErrorKind::BadTimelineId`], [`ErrorKind::BadSwitchLsn`] or
    /// [`ErrorKind::TimelineOutOfOrder`], as PostgreSQL would refuse it.
    pub fn parse(text: &'a [u8]) -> Result<Self, Error> {
        let mut len = 0;
        let mut previous: Option<u32> = None;
        for (at, line) in lines(text) {
            let Some(switch) = parse_line(line).map_err(|kind| Error::new(kind, None, at))? else {
                continue;
            };
            if let Some(previous) = previous.filter(|&p| switch.timeline <= p) {
                let kind = ErrorKind::TimelineOutOfOrder {
                    previous,
                    found: switch.timeline,
                };
                return Err(Error::new(kind, None, at));
            }
            previous = Some(switch.timeline);
            len += 1;
        }
        Ok(TimelineHistory { text, len })
    }

    /// The switches, oldest first.
    pub fn switches(&self) -> Switches<'a> {
        Switches {
            rest: self.text,
            left: self.len,
        }
    }

    /// The number of switches (lines that are not blank or comments).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the file lists no switch (timeline 1 has an empty history).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where `timeline` ended, or `None` when the history does not list it (it is the file's
    /// own timeline, or not an ancestor of it). A position on `timeline` up to this one is
    /// also on its child.
    pub fn end_of(&self, timeline: u32) -> Option<Lsn> {
        self.switches()
            .find(|s| s.timeline == timeline)
            .map(|s| s.switch_lsn)
    }

    /// The file as it was parsed.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.text
    }
}

impl<'a> Iterator for Switches<'a> {
    type Item = TimelineSwitch<'a>;

    fn next(&mut self) -> Option<TimelineSwitch<'a>> {
        while !self.rest.is_empty() {
            let (line, rest) = split_line(self.rest);
            self.rest = rest;
            // The parse has checked every line, so this is never an error; should it be, the
            // iteration ends rather than panics.
            match parse_line(line) {
                Ok(Some(switch)) => {
                    self.left = self.left.saturating_sub(1);
                    return Some(switch);
                }
                Ok(None) => {}
                Err(_) => {
                    self.rest = &[];
                    return None;
                }
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Switches<'_> {}

impl<'a> TimelineSwitch<'a> {
    /// Appends the switch as one line of a history file, as the server writes it:
    /// `<timeline>\t<X/X>\t<reason>\n`. The reason is written up to its first newline, so that
    /// the line stays one line.
    pub fn write(&self, out: &mut impl BufMut) {
        // Writing into a `BufMut` cannot fail.
        let _ = write!(Out(out), "{}\t{}\t", self.timeline, self.switch_lsn);
        let reason = self
            .reason
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        out.put_slice(reason);
        out.put_u8(b'\n');
    }

    /// The reason as text, when it is UTF-8.
    pub fn reason_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.reason).ok()
    }
}

/// Writes a whole history file: each switch as [`TimelineSwitch::write`] writes it.
pub fn write_history<'s>(
    switches: impl IntoIterator<Item = TimelineSwitch<'s>>,
    out: &mut impl BufMut,
) {
    for switch in switches {
        switch.write(out);
    }
}

/// Lines and the offsets where they start, without their `\n`.
fn lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut rest = text;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let at = text.len() - rest.len();
        let (line, tail) = split_line(rest);
        rest = tail;
        Some((at, line))
    })
}

/// The first line of `text` without its `\n`, and what follows the `\n`.
fn split_line(text: &[u8]) -> (&[u8], &[u8]) {
    match text.iter().position(|&b| b == b'\n') {
        Some(end) => (
            text.get(..end).unwrap_or_default(),
            text.get(end + 1..).unwrap_or_default(),
        ),
        None => (text, &[]),
    }
}

/// One line: `None` for a blank line or a comment. Fields may be separated by any run of
/// blanks, as `sscanf`'s `%u\t%X/%X` allows; the position must be one `X/X` word.
fn parse_line(line: &[u8]) -> Result<Option<TimelineSwitch<'_>>, ErrorKind> {
    // A `\r` before the `\n` is kept, in the reason, as PostgreSQL keeps it: stripping it
    // would make a reason ending in `\r` write back differently.
    let line = trim_start(line);
    if line.is_empty() || line.starts_with(b"#") {
        return Ok(None);
    }
    let digits = line.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, rest) = line.split_at(digits);
    let timeline = decimal(number).ok_or(ErrorKind::BadTimelineId)?;
    let rest = trim_start(rest);
    let word = rest.iter().take_while(|&&b| !is_space(b)).count();
    let (position, reason) = rest.split_at(word);
    let switch_lsn = core::str::from_utf8(position)
        .ok()
        .and_then(|p| Lsn::from_str(p).ok())
        .ok_or(ErrorKind::BadSwitchLsn)?;
    Ok(Some(TimelineSwitch {
        timeline,
        switch_lsn,
        reason: trim_start(reason),
    }))
}

/// A non-empty run of ASCII digits as a `u32`, or `None` when empty or too large.
fn decimal(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &d| {
        n.checked_mul(10)?
            .checked_add(u32::from(d.wrapping_sub(b'0')))
    })
}

/// C's `isspace` in the C locale, without the newline that ends a line.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c')
}

fn trim_start(s: &[u8]) -> &[u8] {
    let blanks = s.iter().take_while(|&&b| is_space(b)).count();
    s.get(blanks..).unwrap_or_default()
}

/// `fmt::Write` into a `BufMut`, which `bytes` provides only with `std`.
struct Out<'b, B>(&'b mut B);

impl<B: BufMut> fmt::Write for Out<'_, B> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    use super::*;

    /// A history as a server promoted three times writes it, with the blank line and comment
    /// that hand edits leave (`readTimeLineHistory` skips both).
    const HISTORY: &[u8] = b"1\t0/3000158\tno recovery target specified\n\
        \n\
        # promoted after the disk failure\n\
        2\t0/5000028\tat restore point \"before_upgrade\"\n\
        3\t1/A2000000\tbefore 2026-11-30 12:00:00.123456+00\n";

    fn error(text: &[u8]) -> (ErrorKind, Option<u8>, usize) {
        let e = TimelineHistory::parse(text).unwrap_err();
        (e.kind(), e.tag(), e.offset())
    }

    #[test]
    fn a_real_looking_history_parses_into_its_switches() {
        let history = TimelineHistory::parse(HISTORY).unwrap();
        assert_eq!(history.len(), 3);
        let switches = history.switches();
        assert_eq!(switches.len(), 3);
        let got: Vec<_> = switches
            .map(|s| {
                (
                    s.timeline,
                    s.switch_lsn.to_string(),
                    s.reason_str().unwrap(),
                )
            })
            .collect();
        let want: [(u32, String, &str); 3] = [
            (1, "0/3000158".into(), "no recovery target specified"),
            (2, "0/5000028".into(), "at restore point \"before_upgrade\""),
            (
                3,
                "1/A2000000".into(),
                "before 2026-11-30 12:00:00.123456+00",
            ),
        ];
        assert_eq!(got, want);
        assert_eq!(history.end_of(2), Some(Lsn::new(0x5000028)));
        assert_eq!(history.end_of(4), None);
        assert_eq!(history.as_bytes(), HISTORY);
    }

    #[test]
    fn written_lines_are_the_servers_and_parse_back() {
        let history = TimelineHistory::parse(HISTORY).unwrap();
        let mut out = Vec::new();
        write_history(history.switches(), &mut out);
        let without_comments: Vec<u8> = HISTORY
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| !l.starts_with(b"#") && *l != b"\n")
            .flatten()
            .copied()
            .collect();
        assert_eq!(out, without_comments);
        let again = TimelineHistory::parse(&out).unwrap();
        assert!(again.switches().eq(history.switches()));
    }

    #[test]
    fn empty_blank_and_loosely_spaced_files() {
        assert!(TimelineHistory::parse(b"").unwrap().is_empty());
        assert!(TimelineHistory::parse(b"\n  \t\n# only a comment")
            .unwrap()
            .is_empty());
        // Blanks around fields, no reason, CRLF and no final newline, as sscanf accepts.
        let h = TimelineHistory::parse(b"  1 \t 0/10\r\n2\t0/20").unwrap();
        let got: Vec<_> = h.switches().collect();
        assert_eq!(
            got,
            [
                TimelineSwitch {
                    timeline: 1,
                    switch_lsn: Lsn::new(0x10),
                    reason: b""
                },
                TimelineSwitch {
                    timeline: 2,
                    switch_lsn: Lsn::new(0x20),
                    reason: b""
                },
            ]
        );
    }

    #[test]
    fn bad_lines_are_typed_errors_at_the_lines_offset() {
        let second = b"1\t0/10\tok\n".len();
        assert_eq!(
            error(b"1\t0/10\tok\nx\t0/20\tno id\n"),
            (ErrorKind::BadTimelineId, None, second)
        );
        assert_eq!(
            error(b"4294967296\t0/10\ttoo big\n"),
            (ErrorKind::BadTimelineId, None, 0)
        );
        assert_eq!(
            error(b"1\t0/10\tok\n2\n"),
            (ErrorKind::BadSwitchLsn, None, second)
        );
        assert_eq!(
            error(b"1\t0/10\tok\n2\t0-20\treason\n"),
            (ErrorKind::BadSwitchLsn, None, second)
        );
        assert_eq!(
            error(b"1\t0/10\tok\n2\t123456789/0\treason\n"),
            (ErrorKind::BadSwitchLsn, None, second)
        );
        assert_eq!(
            error(b"1\t0/10\tok\n1\t0/20\tagain\n"),
            (
                ErrorKind::TimelineOutOfOrder {
                    previous: 1,
                    found: 1
                },
                None,
                second
            )
        );
        let e = TimelineHistory::parse(b"\n\n3\t0/1\tx\n2\t0/2\ty\n").unwrap_err();
        assert_eq!(e.offset(), 10);
        assert!(e.to_string().contains("timeline 2 after 3"), "{e}");
    }

    #[test]
    fn a_reason_with_a_newline_is_written_up_to_it() {
        let switch = TimelineSwitch {
            timeline: 7,
            switch_lsn: Lsn::new(0x1_0000_0000),
            reason: b"first\nsecond",
        };
        let mut out = Vec::new();
        switch.write(&mut out);
        assert_eq!(out, b"7\t1/0\tfirst\n");
    }

    /// Found by the fuzzer: a reason ending in `\r` once lost it on the way back.
    #[test]
    fn a_reason_ending_in_carriage_returns_writes_back_the_same() {
        let history = TimelineHistory::parse(b"1\t0/0\t0\r\r").unwrap();
        let switch = history.switches().next().unwrap();
        assert_eq!(switch.reason, b"0\r\r");
        let mut out = Vec::new();
        switch.write(&mut out);
        assert_eq!(out, b"1\t0/0\t0\r\r\n");
        assert!(TimelineHistory::parse(&out)
            .unwrap()
            .switches()
            .eq([switch]));
    }
}

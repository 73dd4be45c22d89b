//! WAL segments: their size (`wal_segment_size`), which segment holds a position, and the
//! file names PostgreSQL gives them (`XLogFileName`, `TLHistoryFileName`).

use std::fmt;
use std::str::FromStr;

use walproto::Lsn;

use crate::error::{Error, ErrorKind, Result};

/// The smallest segment size PostgreSQL allows (`WalSegMinSize`).
const MIN_SEGMENT_SIZE: u64 = 1 << 20;
/// The largest segment size PostgreSQL allows (`WalSegMaxSize`).
const MAX_SEGMENT_SIZE: u64 = 1 << 30;
/// The span of WAL positions one "log id" (the middle eight hex digits of a file name) covers.
const LOG_ID_SPAN: u64 = 0x1_0000_0000;
/// A WAL segment file's name: 24 hex digits (timeline, log id, segment within the log id).
pub(crate) const SEGMENT_NAME_LEN: usize = 24;
/// The suffix of the segment being written.
pub(crate) const PARTIAL_SUFFIX: &str = ".partial";

/// The size of a cluster's WAL segment files: a power of two from 1 MB to 1 GB, chosen at
/// `initdb` (`--wal-segsize`) and shown by `SHOW wal_segment_size`.
///
/// ```
/// use walstream::physical::WalSegmentSize;
/// use walstream::Lsn;
///
/// let size: WalSegmentSize = "16MB".parse()?;
/// assert_eq!(size.bytes(), 16 * 1024 * 1024);
/// assert_eq!(size.segment_name(1, Lsn::new(0x1_2345_6789)), "000000010000000100000023");
/// assert!("3MB".parse::<WalSegmentSize>().is_err());
/// # Ok::<(), walstream::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalSegmentSize(u64);

impl WalSegmentSize {
    /// PostgreSQL's default, 16 MB.
    pub const DEFAULT: WalSegmentSize = WalSegmentSize(16 << 20);

    /// A segment size of `bytes`: a power of two from 1 MB to 1 GB, else a
    /// [`Config`](ErrorKind::Config) error.
    pub fn new(bytes: u64) -> Result<Self> {
        if bytes.is_power_of_two() && (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&bytes) {
            Ok(Self(bytes))
        } else {
            Err(Error::config(format!(
                "a WAL segment size of {bytes} bytes: PostgreSQL's are powers of two from 1 MB \
                 to 1 GB"
            )))
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The number of the segment that holds `lsn`.
    pub fn segment_of(self, lsn: Lsn) -> u64 {
        lsn.get() / self.0
    }

    /// Where segment `segno` starts, or `None` past the end of the WAL address space.
    pub fn segment_start(self, segno: u64) -> Option<Lsn> {
        segno.checked_mul(self.0).map(Lsn::new)
    }

    /// The start of the segment that holds `lsn`.
    pub fn round_down(self, lsn: Lsn) -> Lsn {
        Lsn::new(lsn.get() - lsn.get() % self.0)
    }

    /// The byte offset of `lsn` within its segment.
    pub fn offset_of(self, lsn: Lsn) -> u64 {
        lsn.get() % self.0
    }

    /// The file name of the segment on `timeline` that holds `lsn` (`XLogFileName`).
    pub fn segment_name(self, timeline: u32, lsn: Lsn) -> String {
        self.file_name(timeline, self.segment_of(lsn))
    }

    /// The file name of segment `segno` on `timeline` (`XLogFileName`).
    pub(crate) fn file_name(self, timeline: u32, segno: u64) -> String {
        let per_id = self.segments_per_log_id();
        format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
    }

    /// The timeline and segment number a segment file name stands for (`XLogFromFileName`),
    /// or `None` if `name` is not 24 hex digits of a valid segment of this size.
    pub(crate) fn parse_file_name(self, name: &str) -> Option<(u32, u64)> {
        if name.len() != SEGMENT_NAME_LEN || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let timeline = u32::from_str_radix(name.get(0..8)?, 16).ok()?;
        let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
        let seg = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
        let per_id = self.segments_per_log_id();
        if seg >= per_id {
            return None;
        }
        Some((timeline, log.checked_mul(per_id)?.checked_add(seg)?))
    }

    fn segments_per_log_id(self) -> u64 {
        LOG_ID_SPAN / self.0
    }
}

impl Default for WalSegmentSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for WalSegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1 << 30 {
            write!(f, "{}GB", self.0 >> 30)
        } else {
            write!(f, "{}MB", self.0 >> 20)
        }
    }
}

impl FromStr for WalSegmentSize {
    type Err = Error;

    /// Reads `SHOW wal_segment_size`'s form (`16MB`, `1GB`, `1024kB`) or a number of bytes.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let shift = match unit.trim() {
            "" | "B" => 0,
            "kB" => 10,
            "MB" => 20,
            "GB" => 30,
            _ => u32::MAX,
        };
        let bytes = number
            .parse::<u64>()
            .ok()
            .filter(|_| shift != u32::MAX)
            .and_then(|n| n.checked_mul(1u64.checked_shl(shift)?))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("{s:?} is not a WAL segment size (such as 16MB)"),
                )
            })?;
        Self::new(bytes)
    }
}

/// The name of `timeline`'s history file (`TLHistoryFileName`).
pub(crate) fn history_file_name(timeline: u32) -> String {
    format!("{timeline:08X}.history")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_show_prints_them() {
        let mb = |n: u64| n << 20;
        assert_eq!("16MB".parse::<WalSegmentSize>().unwrap().bytes(), mb(16));
        assert_eq!("1GB".parse::<WalSegmentSize>().unwrap().bytes(), mb(1024));
        assert_eq!("1024kB".parse::<WalSegmentSize>().unwrap().bytes(), mb(1));
        assert_eq!(" 64MB ".parse::<WalSegmentSize>().unwrap().bytes(), mb(64));
        assert_eq!("1048576".parse::<WalSegmentSize>().unwrap().bytes(), mb(1));
        for bad in [
            "",
            "MB",
            "16",
            "3MB",
            "2GB",
            "512kB",
            "16 TB",
            "99999999999999999999GB",
        ] {
            let e = bad.parse::<WalSegmentSize>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad}");
        }
        assert_eq!(WalSegmentSize::DEFAULT.to_string(), "16MB");
    }

    #[test]
    fn file_names_follow_xlog_file_name() {
        let s16 = WalSegmentSize::DEFAULT;
        assert_eq!(s16.file_name(1, 1), "000000010000000000000001");
        // 256 segments of 16 MB per log id.
        assert_eq!(s16.file_name(2, 0x1FF), "0000000200000001000000FF");
        assert_eq!(
            s16.parse_file_name("0000000200000001000000FF"),
            Some((2, 0x1FF))
        );
        // A segment number past the log id's end is not a file name of this size.
        assert_eq!(s16.parse_file_name("000000010000000000000100"), None);
        assert_eq!(s16.parse_file_name("00000001000000000000000G"), None);
        assert_eq!(s16.parse_file_name("0000000100000000000001"), None);
        let s1g = WalSegmentSize::new(1 << 30).unwrap();
        assert_eq!(
            s1g.segment_name(3, Lsn::new(0x5_C000_0001)),
            "000000030000000500000003"
        );
        assert_eq!(history_file_name(0x1A), "0000001A.history");
        let lsn = Lsn::new(0x1_2345_6789);
        assert_eq!(s16.round_down(lsn), Lsn::new(0x1_2300_0000));
        assert_eq!(s16.offset_of(lsn), 0x45_6789);
        assert_eq!(
            s16.segment_start(s16.segment_of(lsn)),
            Some(s16.round_down(lsn))
        );
    }
}

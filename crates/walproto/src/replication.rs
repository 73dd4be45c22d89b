//! The CopyData messages of the streaming replication protocol (`START_REPLICATION`).
//!
//! The server sends [`XLogData`] (`w`) and [`PrimaryKeepalive`] (`k`); the client sends
//! [`StandbyStatusUpdate`] (`r`) and [`HotStandbyFeedback`] (`h`). Both directions can be
//! parsed and encoded: clients parse what servers send and encode their replies, fake servers
//! and tests do the opposite.
//!
//! ```
//! use bytes::BytesMut;
//! use walproto::replication::{ServerMessage, PrimaryKeepalive};
//! use walproto::{Lsn, Timestamp};
//!
//! let keepalive = PrimaryKeepalive {
//!     wal_end: Lsn::new(0x16B3748),
//!     send_time: Timestamp::new(0),
//!     reply_requested: true,
//! };
//! let mut buf = BytesMut::new();
//! ServerMessage::PrimaryKeepalive(keepalive).encode(&mut buf);
//! assert_eq!(ServerMessage::parse(&buf), Ok(ServerMessage::PrimaryKeepalive(keepalive)));
//! ```

use bytes::BufMut;

use crate::error::{Error, ErrorKind};
use crate::reader::Reader;
use crate::types::{Lsn, Timestamp};

/// Tag of [`XLogData`].
pub const XLOG_DATA_TAG: u8 = b'w';
/// Tag of [`PrimaryKeepalive`].
pub const PRIMARY_KEEPALIVE_TAG: u8 = b'k';
/// Tag of [`StandbyStatusUpdate`].
pub const STANDBY_STATUS_UPDATE_TAG: u8 = b'r';
/// Tag of [`HotStandbyFeedback`].
pub const HOT_STANDBY_FEEDBACK_TAG: u8 = b'h';

/// Bytes of an XLogData header before its payload: tag, start, end, send time.
pub const XLOG_DATA_HEADER_LEN: usize = 1 + 8 + 8 + 8;

/// A CopyData message from the server during `START_REPLICATION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMessage<'a> {
    /// WAL data: for logical replication, one output plugin message.
    XLogData(XLogData<'a>),
    /// A keepalive, possibly asking for an immediate status update.
    PrimaryKeepalive(PrimaryKeepalive),
}

/// `w`: a piece of WAL, or for logical replication one message of the output plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XLogData<'a> {
    /// The WAL position where this data starts. For logical replication, the LSN the output
    /// plugin wrote the message at (`0/0` for some messages, such as Relation).
    pub wal_start: Lsn,
    /// The current end of WAL on the server.
    pub wal_end: Lsn,
    /// The server's clock when it sent the message.
    pub send_time: Timestamp,
    /// The payload: for `pgoutput`, one message to parse with [`crate::pgoutput::Message::parse`].
    pub data: &'a [u8],
}

/// `k`: the primary's keepalive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// The current end of WAL on the server.
    pub wal_end: Lsn,
    /// The server's clock when it sent the message.
    pub send_time: Timestamp,
    /// Whether the server asks for a status update at once, to avoid a timeout disconnect.
    pub reply_requested: bool,
}

/// A CopyData message from the client during `START_REPLICATION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientMessage {
    /// The client's written, flushed and applied positions.
    StandbyStatusUpdate(StandbyStatusUpdate),
    /// The client's xmin, for physical standbys.
    HotStandbyFeedback(HotStandbyFeedback),
}

/// `r`: the standby status update, by which a client acknowledges WAL.
///
/// For a logical slot, `flush` is what the server records as the slot's `confirmed_flush_lsn`:
/// the server may remove WAL and will resume from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// The position after the last WAL byte received and written.
    pub write: Lsn,
    /// The position after the last WAL byte durably stored (or applied) by the client.
    pub flush: Lsn,
    /// The position after the last WAL byte applied.
    pub apply: Lsn,
    /// The client's clock when it sent the message.
    pub client_time: Timestamp,
    /// Whether the client asks the server to reply at once (with a keepalive).
    pub reply_requested: bool,
}

/// `h`: hot standby feedback (meaningful for physical replication).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotStandbyFeedback {
    /// The client's clock when it sent the message.
    pub client_time: Timestamp,
    /// The standby's current global xmin, or 0 for none.
    pub xmin: u32,
    /// The epoch of `xmin`.
    pub xmin_epoch: u32,
    /// The lowest catalog xmin of any slot on the standby, or 0 for none.
    pub catalog_xmin: u32,
    /// The epoch of `catalog_xmin`.
    pub catalog_xmin_epoch: u32,
}

impl<'a> ServerMessage<'a> {
    /// Parses one CopyData payload sent by the server.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        match r.tag()? {
            XLOG_DATA_TAG => {
                let wal_start = r.lsn()?;
                let wal_end = r.lsn()?;
                let send_time = r.timestamp()?;
                let data = r.rest();
                Ok(ServerMessage::XLogData(XLogData {
                    wal_start,
                    wal_end,
                    send_time,
                    data,
                }))
            }
            PRIMARY_KEEPALIVE_TAG => {
                let wal_end = r.lsn()?;
                let send_time = r.timestamp()?;
                let reply_requested = r.u8()? != 0;
                r.finish()?;
                Ok(ServerMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end,
                    send_time,
                    reply_requested,
                }))
            }
            _ => Err(r.error_at(ErrorKind::UnknownMessage, 0)),
        }
    }

    /// Appends the message's CopyData payload to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            ServerMessage::XLogData(x) => {
                out.put_u8(XLOG_DATA_TAG);
                out.put_u64(x.wal_start.get());
                out.put_u64(x.wal_end.get());
                out.put_i64(x.send_time.micros_since_2000());
                out.put_slice(x.data);
            }
            ServerMessage::PrimaryKeepalive(k) => {
                out.put_u8(PRIMARY_KEEPALIVE_TAG);
                out.put_u64(k.wal_end.get());
                out.put_i64(k.send_time.micros_since_2000());
                out.put_u8(u8::from(k.reply_requested));
            }
        }
    }
}

impl ClientMessage {
    /// Parses one CopyData payload sent by the client.
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        let msg = match r.tag()? {
            STANDBY_STATUS_UPDATE_TAG => ClientMessage::StandbyStatusUpdate(StandbyStatusUpdate {
                write: r.lsn()?,
                flush: r.lsn()?,
                apply: r.lsn()?,
                client_time: r.timestamp()?,
                reply_requested: r.u8()? != 0,
            }),
            HOT_STANDBY_FEEDBACK_TAG => ClientMessage::HotStandbyFeedback(HotStandbyFeedback {
                client_time: r.timestamp()?,
                xmin: r.u32()?,
                xmin_epoch: r.u32()?,
                catalog_xmin: r.u32()?,
                catalog_xmin_epoch: r.u32()?,
            }),
            _ => return Err(r.error_at(ErrorKind::UnknownMessage, 0)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends the message's CopyData payload to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            ClientMessage::StandbyStatusUpdate(s) => {
                out.put_u8(STANDBY_STATUS_UPDATE_TAG);
                out.put_u64(s.write.get());
                out.put_u64(s.flush.get());
                out.put_u64(s.apply.get());
                out.put_i64(s.client_time.micros_since_2000());
                out.put_u8(u8::from(s.reply_requested));
            }
            ClientMessage::HotStandbyFeedback(h) => {
                out.put_u8(HOT_STANDBY_FEEDBACK_TAG);
                out.put_i64(h.client_time.micros_since_2000());
                out.put_u32(h.xmin);
                out.put_u32(h.xmin_epoch);
                out.put_u32(h.catalog_xmin);
                out.put_u32(h.catalog_xmin_epoch);
            }
        }
    }
}

impl StandbyStatusUpdate {
    /// Appends this update's CopyData payload to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        ClientMessage::StandbyStatusUpdate(*self).encode(out);
    }
}

impl HotStandbyFeedback {
    /// Appends this feedback's CopyData payload to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        ClientMessage::HotStandbyFeedback(*self).encode(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn xlog_bytes(start: u64, end: u64, time: i64, data: &[u8]) -> Vec<u8> {
        let mut v = alloc::vec![b'w'];
        v.extend_from_slice(&start.to_be_bytes());
        v.extend_from_slice(&end.to_be_bytes());
        v.extend_from_slice(&time.to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn xlog_data_from_documented_layout() {
        let bytes = xlog_bytes(0x16B3748, 0x16B3800, 42, b"B...");
        let ServerMessage::XLogData(x) = ServerMessage::parse(&bytes).unwrap() else {
            panic!("not XLogData");
        };
        assert_eq!(x.wal_start, Lsn::new(0x16B3748));
        assert_eq!(x.wal_end, Lsn::new(0x16B3800));
        assert_eq!(x.send_time, Timestamp::new(42));
        assert_eq!(x.data, b"B...");
        let mut out = Vec::new();
        ServerMessage::XLogData(x).encode(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn xlog_data_may_be_empty() {
        let bytes = xlog_bytes(1, 2, 3, b"");
        assert!(matches!(
            ServerMessage::parse(&bytes),
            Ok(ServerMessage::XLogData(XLogData { data: b"", .. }))
        ));
    }

    #[test]
    fn keepalive_layout() {
        let mut bytes = alloc::vec![b'k'];
        bytes.extend_from_slice(&7u64.to_be_bytes());
        bytes.extend_from_slice(&(-5i64).to_be_bytes());
        bytes.push(1);
        let msg = ServerMessage::parse(&bytes).unwrap();
        assert_eq!(
            msg,
            ServerMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end: Lsn::new(7),
                send_time: Timestamp::new(-5),
                reply_requested: true
            })
        );
        bytes.push(0);
        let err = ServerMessage::parse(&bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TrailingBytes);
        assert_eq!(err.offset(), 18);
        assert_eq!(err.tag(), Some(b'k'));
    }

    #[test]
    fn truncated_server_messages_report_offsets() {
        let bytes = xlog_bytes(1, 2, 3, b"");
        for cut in 0..bytes.len() {
            let err = ServerMessage::parse(&bytes[..cut]).unwrap_err();
            let want = if cut == 0 {
                ErrorKind::Empty
            } else {
                ErrorKind::UnexpectedEof
            };
            assert_eq!(err.kind(), want, "cut at {cut}");
            assert!(err.offset() <= cut);
        }
    }

    #[test]
    fn unknown_tags_are_named() {
        let err = ServerMessage::parse(b"r").unwrap_err();
        assert_eq!(
            (err.kind(), err.tag(), err.offset()),
            (ErrorKind::UnknownMessage, Some(b'r'), 0)
        );
        let err = ClientMessage::parse(b"w").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownMessage);
    }

    #[test]
    fn status_update_layout() {
        let s = StandbyStatusUpdate {
            write: Lsn::new(0x10),
            flush: Lsn::new(0x20),
            apply: Lsn::new(0x30),
            client_time: Timestamp::new(99),
            reply_requested: false,
        };
        let mut out = Vec::new();
        s.encode(&mut out);
        assert_eq!(out.len(), 34);
        assert_eq!(out[0], b'r');
        assert_eq!(&out[9..17], &0x20u64.to_be_bytes());
        assert_eq!(out[33], 0);
        assert_eq!(
            ClientMessage::parse(&out),
            Ok(ClientMessage::StandbyStatusUpdate(s))
        );
    }

    #[test]
    fn hot_standby_feedback_layout() {
        let h = HotStandbyFeedback {
            client_time: Timestamp::new(1),
            xmin: 2,
            xmin_epoch: 3,
            catalog_xmin: 4,
            catalog_xmin_epoch: 5,
        };
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out.len(), 25);
        assert_eq!(&out[21..25], &5u32.to_be_bytes());
        assert_eq!(
            ClientMessage::parse(&out),
            Ok(ClientMessage::HotStandbyFeedback(h))
        );
        for cut in 0..out.len() {
            assert!(ClientMessage::parse(&out[..cut]).is_err());
        }
    }
}

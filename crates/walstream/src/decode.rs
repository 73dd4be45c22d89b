//! [`EventDecoder`]: the stream's decoding without a connection, for capture files, tests and
//! other transports.

use bytes::Bytes;
use walproto::pgoutput::Options;
use walproto::replication::ServerMessage;
use walproto::Lsn;

use crate::error::{Error, Result};
use crate::logical::event::ChangeEvent;
use crate::logical::follow::Follower;

/// Turns the CopyData payloads of a logical replication stream into [`ChangeEvent`]s, exactly
/// as [`EventStream`](crate::EventStream) does, but from bytes the caller has: a capture file
/// (`walproto::capture`), a test, a transport of its own.
///
/// Create it with the options the stream was started with (protocol version and streaming
/// mode decide the messages' layout), then feed it every payload in order: it keeps the
/// relation cache and the transaction context (`xid`, commit time) between calls. Events share
/// the payload's buffer (no copy of row data).
///
/// ```
/// use walstream::walproto::capture::Capture;
/// use walstream::walproto::pgoutput::{Options, ProtocolVersion};
/// use walstream::EventDecoder;
///
/// # fn run(file: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
/// let capture = Capture::parse(file)?;
/// let mut decoder = EventDecoder::new(&Options::new(ProtocolVersion::V1));
/// for frame in capture.frames() {
///     let payload = bytes::Bytes::copy_from_slice(frame?.payload);
///     if let Some(event) = decoder.decode(&payload)? {
///         println!("{} {:?}", event.lsn, event.kind);
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct EventDecoder {
    follower: Follower,
}

impl EventDecoder {
    /// A decoder for a stream started with `options` (its protocol version and streaming mode
    /// are what matter).
    pub fn new(options: &Options) -> Self {
        Self {
            follower: Follower::new(options.proto_version, options.streaming, false),
        }
    }

    /// Decodes one CopyData payload of the replication stream (`w...` XLogData, `k...`
    /// keepalive): the event of an XLogData, `None` for anything else. An error names the LSN
    /// of the XLogData that did not decode; after one, the relation cache may be incomplete,
    /// so start over with a new decoder at a point the stream restarts from.
    pub fn decode(&mut self, payload: &Bytes) -> Result<Option<ChangeEvent>> {
        match ServerMessage::parse(payload) {
            Ok(ServerMessage::XLogData(x)) => self
                .follower
                .follow(payload, &x)
                .map(|f| Some(f.event))
                .map_err(|e| Error::decode_at(e, x.wal_start)),
            Ok(_) => Ok(None),
            Err(e) => Err(Error::decode_at(e, Lsn::ZERO)),
        }
    }

    /// Whether the payloads so far ended outside every transaction (and streamed
    /// transaction): a point to stop at, or to start a new decoder from.
    pub fn between_transactions(&self) -> bool {
        self.follower.between_transactions()
    }

    /// Forgets the relation cache and the transaction context, as for a new connection.
    pub fn reset(&mut self) {
        self.follower.reset();
    }
}

//! `walstream record`: the raw replication stream of a slot into a `WALCAP1` capture file.
//!
//! Every CopyData payload the server sends during `START_REPLICATION` is written exactly as
//! sent. The recorder acknowledges (flushes, in the standby status update) only the end of a
//! transaction whose frames are already written and synced to the file, or, between
//! transactions, a keepalive's `wal_end`; so after a crash or a signal, the slot resumes at a
//! transaction boundary that is in the file, and no transaction is ever missing from a
//! sequence of captures (one may appear twice).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use walproto::pgoutput::{Message, ProtocolVersion, Streaming as PgStreaming};
use walproto::replication::{ServerMessage, StandbyStatusUpdate};
use walproto::{capture, Decoder, Lsn};
use walstream::walconn::{
    self, Config, Connection, CopyBoth, CreateSlotOptions, LogicalReplicationOptions, Origin,
    SnapshotAction, Streaming,
};

use crate::{OriginArg, RecordArgs, StreamingArg};

/// The capture header, in the field order of `shared/CLI.md`.
#[derive(Debug, Serialize)]
struct Header<'a> {
    server_version: &'a str,
    server_version_num: u32,
    proto_version: u32,
    streaming: &'static str,
    binary: bool,
    messages: bool,
    two_phase: bool,
    origin: &'static str,
    slot: &'a str,
    publications: &'a [String],
    system_id: &'a str,
    timeline: u32,
}

/// Why recording stopped early.
#[derive(Debug)]
pub(crate) enum RecordError {
    /// Bad arguments for this server (a protocol it lacks, say).
    Usage(String),
    /// The connection or the server failed.
    Server(walconn::Error),
    /// The capture file could not be written.
    Io(io::Error),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Usage(m) => f.write_str(m),
            RecordError::Server(e) => write!(f, "{e}"),
            RecordError::Io(e) => write!(f, "writing the capture: {e}"),
        }
    }
}

impl From<walconn::Error> for RecordError {
    fn from(e: walconn::Error) -> Self {
        RecordError::Server(e)
    }
}

impl From<io::Error> for RecordError {
    fn from(e: io::Error) -> Self {
        RecordError::Io(e)
    }
}

/// What a finished recording did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) frames: u64,
    pub(crate) acknowledged: Lsn,
}

/// Records until `--end`, a signal, or the end of the stream.
pub(crate) async fn record(args: &RecordArgs) -> Result<Summary, RecordError> {
    let a = &args.stream;
    let config = Config::parse(&a.conninfo)?;
    let mut conn = Connection::connect(&config).await?;
    let system = conn.identify_system().await?;
    let version_num = conn.server_version_num();
    let server_version = conn.parameter("server_version").unwrap_or("").to_owned();
    let proto_version = a.proto_version.unwrap_or(match version_num {
        v if v >= 160_000 => 4,
        v if v >= 150_000 => 3,
        v if v >= 140_000 => 2,
        _ => 1,
    });
    let version = ProtocolVersion::from_number(proto_version)
        .ok_or_else(|| RecordError::Usage(format!("no pgoutput protocol {proto_version}")))?;
    tracing::info!(server_version, proto_version, "connected");

    if a.create_slot {
        let mut opts = CreateSlotOptions::logical("pgoutput");
        opts.temporary = a.temporary;
        opts.two_phase = a.two_phase;
        opts.snapshot = Some(SnapshotAction::Nothing);
        match conn.create_replication_slot(&a.slot, &opts).await {
            Ok(created) => {
                tracing::info!(slot = a.slot, at = %created.consistent_point, "created slot")
            }
            // 42710 duplicate_object: the slot exists, which is what we wanted.
            Err(e) if e.code() == Some("42710") => {
                tracing::info!(slot = a.slot, "slot exists; recording from it")
            }
            Err(e) => return Err(e.into()),
        }
    }

    let streaming = match a.streaming {
        StreamingArg::Off => None,
        StreamingArg::On => Some(Streaming::On),
        StreamingArg::Parallel => Some(Streaming::Parallel),
    };
    let mut options = LogicalReplicationOptions::new(proto_version, &[]);
    options.publication_names = a.publication.clone();
    options.streaming = streaming;
    options.binary = a.binary;
    options.messages = a.messages;
    options.two_phase = a.two_phase;
    // Before PostgreSQL 16 there is no `origin` option and every origin is sent, which is
    // what `any` asks for; `none` there is refused by walconn, naming the version it needs.
    options.origin = match a.origin {
        OriginArg::Any if version_num < 160_000 => None,
        OriginArg::Any => Some(Origin::Any),
        OriginArg::None => Some(Origin::None),
    };

    let file = File::create(&args.out)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let header = Header {
        server_version: &server_version,
        server_version_num: version_num,
        proto_version,
        streaming: match a.streaming {
            StreamingArg::Off => "off",
            StreamingArg::On => "on",
            StreamingArg::Parallel => "parallel",
        },
        binary: a.binary,
        messages: a.messages,
        two_phase: a.two_phase,
        origin: match a.origin {
            OriginArg::Any => "any",
            OriginArg::None => "none",
        },
        slot: &a.slot,
        publications: &a.publication,
        system_id: &system.system_id,
        timeline: system.timeline,
    };
    let header = serde_json::to_string(&header).map_err(io::Error::other)?;
    let mut head = Vec::new();
    capture::write_header(&mut head, &header);
    out.write_all(&head)?;

    let pg_streaming = match a.streaming {
        StreamingArg::Off => PgStreaming::Off,
        StreamingArg::On => PgStreaming::On,
        StreamingArg::Parallel => PgStreaming::Parallel,
    };
    let start = a.start.unwrap_or(Lsn::ZERO);
    let stream = conn
        .start_logical_replication(&a.slot, start, &options)
        .await?;
    let mut rec = Recorder {
        stream,
        out,
        decoder: Decoder::new(version, pg_streaming),
        end: a.end,
        received: Lsn::ZERO,
        ready: start,
        acknowledged: start,
        frames: 0,
        tracking: true,
        status_interval: Duration::from_secs(a.status_interval),
    };
    rec.run().await?;
    let Recorder {
        stream,
        frames,
        acknowledged,
        ..
    } = rec;
    let conn = stream.finish().await?;
    conn.close().await?;
    Ok(Summary {
        frames,
        acknowledged,
    })
}

struct Recorder {
    stream: CopyBoth,
    out: BufWriter<File>,
    decoder: Decoder,
    end: Option<Lsn>,
    /// The furthest `wal_end` the server reported.
    received: Lsn,
    /// The position the file holds everything up to, once flushed: the end of the last whole
    /// transaction written, or a keepalive's `wal_end` between transactions.
    ready: Lsn,
    /// What the server was last told is flushed.
    acknowledged: Lsn,
    frames: u64,
    /// False after a message the decoder could not follow: frames are still recorded, but
    /// nothing more is acknowledged, since transaction ends can no longer be trusted.
    tracking: bool,
    /// How often a status update goes out when the server does not ask for one.
    status_interval: Duration,
}

impl Recorder {
    async fn run(&mut self) -> Result<(), RecordError> {
        let mut status = tokio::time::interval(self.status_interval);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = signal(tokio::signal::unix::SignalKind::interrupt())?;
        loop {
            tokio::select! {
                frame = self.stream.recv() => {
                    let Some(frame) = frame? else {
                        tracing::info!("the server ended the stream");
                        break;
                    };
                    if self.on_frame(&frame).await? {
                        break;
                    }
                }
                _ = status.tick() => self.send_status().await?,
                _ = term.recv() => {
                    tracing::info!("SIGTERM: stopping");
                    break;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping");
                    break;
                }
            }
        }
        // The last word to the server: everything in the file, acknowledged.
        self.send_status().await
    }

    /// Writes one frame; returns whether `--end` has been reached.
    async fn on_frame(&mut self, frame: &[u8]) -> Result<bool, RecordError> {
        // The frame as `capture::write_frame` lays it out, straight into the buffered file.
        self.out
            .write_all(&u32::try_from(frame.len()).unwrap_or(u32::MAX).to_be_bytes())?;
        self.out.write_all(frame)?;
        self.frames += 1;
        match ServerMessage::parse(frame) {
            Ok(ServerMessage::XLogData(x)) => {
                self.received = self.received.max(x.wal_end);
                if let Some(end_of_txn) = self.follow(x.data) {
                    self.ready = self.ready.max(end_of_txn);
                    if self.end.is_some_and(|end| end_of_txn >= end) {
                        return Ok(true);
                    }
                }
            }
            Ok(ServerMessage::PrimaryKeepalive(k)) => {
                self.received = self.received.max(k.wal_end);
                if self.tracking && self.decoder.is_idle() {
                    // Nothing is pending: the slot may move to the server's position, so an
                    // idle or unpublished database does not pin WAL.
                    self.ready = self.ready.max(k.wal_end);
                    if self.end.is_some_and(|end| k.wal_end >= end) {
                        return Ok(true);
                    }
                }
                if k.reply_requested {
                    self.send_status().await?;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("frame {}: {e}", self.frames),
        }
        Ok(false)
    }

    /// Follows the transaction state; returns the end LSN of a transaction that just ended.
    fn follow(&mut self, data: &[u8]) -> Option<Lsn> {
        if !self.tracking {
            return None;
        }
        match self.decoder.decode_message(data) {
            Ok(Message::Commit(c)) => Some(c.end_lsn),
            Ok(Message::StreamCommit(c)) => Some(c.end_lsn),
            Ok(Message::Prepare(p) | Message::StreamPrepare(p)) => Some(p.end_lsn),
            Ok(Message::CommitPrepared(c)) => Some(c.end_lsn),
            Ok(Message::RollbackPrepared(r)) => Some(r.rollback_end_lsn),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(
                    "cannot follow the stream ({e}); recording goes on, acknowledging stops"
                );
                self.tracking = false;
                None
            }
        }
    }

    /// Flushes the file to disk, then tells the server what it holds.
    async fn send_status(&mut self) -> Result<(), RecordError> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        let flush = self.ready;
        let update = StandbyStatusUpdate {
            write: self.received.max(flush),
            flush,
            apply: flush,
            client_time: SystemTime::now().into(),
            reply_requested: false,
        };
        self.stream.send_status_update(&update).await?;
        self.acknowledged = flush;
        tracing::debug!(%flush, "status update");
        Ok(())
    }
}

fn signal(kind: tokio::signal::unix::SignalKind) -> io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind)
}

//! [`WalMethod::Stream`](super::WalMethod::Stream): the WAL a backup needs, streamed on a
//! second connection while the backup runs, as `pg_basebackup -X stream` does.
//!
//! A physical slot keeps the WAL from the backup's start: the caller's
//! [`wal_slot`](super::BaseBackupConfig::wal_slot), kept afterwards; else a temporary
//! `walstream_backup_<pid>_<n>` with `RESERVE_WAL`, which goes with its connection (as
//! pg_basebackup's does), so not even a killed process leaves it behind. Streaming starts at
//! the start of the backup start's segment on the backup's timeline and goes on until the
//! backup's end position is written. A [`WalWriter`] on a thread of its own writes the
//! segments; at the end the segment in progress gets its final name (its rest is zeros, as
//! pg_basebackup leaves it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use walconn::BackupPosition;
use walproto::Lsn;

use super::error::{Error, Result};
use crate::physical::{
    PhysicalReplicationStream, PhysicalStreamConfig, WalEvent, WalSegmentSize, WalWriter,
};

/// WAL events between the stream and the writer thread (each at most
/// [`MAX_WAL_MESSAGE`](crate::physical::MAX_WAL_MESSAGE) of WAL).
const CHANNEL_EVENTS: usize = 4;

/// The WAL stream's own buffer ([`buffer_bytes`](crate::physical::PhysicalStreamConfigBuilder::buffer_bytes)):
/// streaming starts at the start of the backup's first segment, so up to a segment of WAL
/// is there at once; a small buffer keeps the backup's memory low (the server waits for the
/// writer instead), where the default would hold megabytes of it.
const WAL_BUFFER_BYTES: usize = 256 << 10;

/// What the WAL streamer needs from the backup: where to connect, where the backup starts,
/// the segment size.
#[derive(Clone, Debug)]
pub(crate) struct WalSource {
    pub(crate) conn_config: walconn::Config,
    pub(crate) start: BackupPosition,
    pub(crate) segment_size: WalSegmentSize,
    /// The slot the caller named (kept after the backup); `None`: one of the backup's own.
    pub(crate) slot: Option<String>,
    /// Create the named slot first.
    pub(crate) create_slot: bool,
}

/// The running WAL streamer: [`finish`](Self::finish) with the backup's end, or
/// [`abort`](Self::abort).
#[derive(Debug)]
pub(crate) struct WalStreamer {
    end_tx: oneshot::Sender<Lsn>,
    task: JoinHandle<Result<()>>,
}

impl WalStreamer {
    /// Creates the slot, connects and starts streaming into `dir` (which exists).
    pub(crate) async fn start(source: WalSource, dir: PathBuf) -> Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        // A slot of the backup's own is dropped at the end; a named one is the caller's.
        let (slot, own) = match &source.slot {
            Some(name) => (name.clone(), false),
            None => (
                format!(
                    "walstream_backup_{}_{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ),
                true,
            ),
        };
        let start = source.segment_size.round_down(source.start.lsn);
        let config = PhysicalStreamConfig::builder()
            .slot(&slot)
            .temporary_slot(own)
            .create_slot_if_missing(source.create_slot)
            .start_lsn(start)
            .timeline(source.start.timeline)
            .buffer_bytes(WAL_BUFFER_BYTES)
            .build()
            .map_err(Error::Wal)?;
        let physical =
            match PhysicalReplicationStream::connect_with(source.conn_config.clone(), config).await
            {
                Ok(p) => p,
                Err(e) => return Err(Error::Wal(e)),
            };
        let (end_tx, end_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            stream(physical, source.start.timeline, start, dir, end_rx).await
        });
        Ok(Self { end_tx, task })
    }

    /// Streams until `end` is written, closes the writer, names the last segment.
    pub(crate) async fn finish(self, end: Lsn) -> Result<()> {
        let _ = self.end_tx.send(end);
        self.task
            .await
            .unwrap_or_else(|e| Err(Error::Protocol(format!("the WAL streamer failed: {e}"))))
    }

    /// Stops streaming (the backup failed) and waits until nothing more is written.
    pub(crate) async fn abort(self) {
        drop(self.end_tx);
        let _ = self.task.await;
    }
}

/// The streamer's task: WAL events to the writer thread until the end is written.
async fn stream(
    physical: PhysicalReplicationStream,
    timeline: u32,
    start: Lsn,
    dir: PathBuf,
    mut end_rx: oneshot::Receiver<Lsn>,
) -> Result<()> {
    let size = physical.segment_size();
    let mut wal = physical.start();
    let (tx, rx) = mpsc::channel::<WalEvent>(CHANNEL_EVENTS);
    let (done_tx, done_rx) = oneshot::channel();
    let writer = WalWriter::open(&dir, size, timeline, start).map_err(Error::Wal)?;
    std::thread::Builder::new()
        .name("walstream-backup-wal".into())
        .spawn(move || {
            let _ = done_tx.send(write_wal(writer, rx, &dir));
        })
        .map_err(|e| Error::io("a WAL writer thread", "start", e))?;
    let mut end: Option<Lsn> = None;
    let mut received = start;
    let outcome = loop {
        if end.is_some_and(|e| received >= e) {
            break Ok(());
        }
        tokio::select! {
            e = &mut end_rx, if end.is_none() => match e {
                Ok(lsn) => end = Some(lsn),
                Err(_) => break Err(Error::Protocol("the backup failed".into())),
            },
            event = wal.next_event() => match event {
                Ok(Some(event)) => {
                    if let WalEvent::Data(d) = &event {
                        received = received.max(d.end());
                    }
                    if tx.send(event).await.is_err() {
                        break Ok(()); // The writer failed: its result says why.
                    }
                }
                Ok(None) => break Err(Error::Protocol(
                    "the WAL stream ended before the backup's end position".into(),
                )),
                Err(e) => break Err(Error::Wal(e)),
            },
        }
    };
    drop(tx);
    let _ = wal.shutdown().await;
    let written = done_rx
        .await
        .unwrap_or_else(|_| Err(Error::Protocol("the WAL writer thread panicked".into())));
    outcome.and(written)
}

/// The writer thread: applies each event, then closes the writer and gives the segment in
/// progress its final name.
fn write_wal(mut writer: WalWriter, mut rx: mpsc::Receiver<WalEvent>, dir: &Path) -> Result<()> {
    while let Some(event) = rx.blocking_recv() {
        writer.apply(&event).map_err(Error::Wal)?;
    }
    writer.close().map_err(Error::Wal)?;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "read", e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, "read", e))?.path();
        if let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".partial"))
        {
            let to = dir.join(name);
            std::fs::rename(&path, &to).map_err(|e| Error::io(&to, "rename into", e))?;
        }
    }
    Ok(())
}

//! The backup's options and its event stream: [`start`] connects, sends `BASE_BACKUP` and
//! returns a [`BackupStream`] of archive entries, their data, progress and the manifest.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use walconn::{BackupPosition, BaseBackupOptions, Config, Connection, Replication, Tablespace};
use walproto::backup::BackupMessage;
use walproto::Lsn;

use super::error::{Error, Result};
use super::manifest::ChecksumAlgorithm;
use super::tar::{EntryKind, TarEvent, TarReader};
use super::wal::WalSource;

pub use walconn::Checkpoint;

/// How many archive messages (each one CopyData payload, 32 KB or less from PostgreSQL) wait
/// between the connection task and the consumer: the stream's memory is this many payloads.
const CHANNEL_PAYLOADS: usize = 16;

/// How far a backup has come: bytes of archives the server reports sent, and the total it
/// estimated. A handle shared with the [`BackupStream`] (which updates it as it reads), so
/// that progress can be shown while a writer consumes the stream:
///
/// ```no_run
/// # async fn run(stream: walstream::backup::BackupStream) -> walstream::backup::Result<()> {
/// let progress = stream.progress();
/// tokio::spawn(async move {
///     loop {
///         tokio::time::sleep(std::time::Duration::from_secs(1)).await;
///         eprintln!("{} of {:?} bytes", progress.done(), progress.total());
///     }
/// });
/// walstream::backup::PlainWriter::new("/backups/today").write(stream).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct BackupProgress {
    marks: Arc<ProgressMarks>,
}

#[derive(Debug, Default)]
struct ProgressMarks {
    done: AtomicU64,
    /// The estimate plus one; 0 while unknown.
    total: AtomicU64,
    archives: AtomicU64,
}

impl BackupProgress {
    /// Bytes of archives sent so far, as the server's last progress message says (PostgreSQL
    /// sends one every few hundred kilobytes and at each archive's end).
    pub fn done(&self) -> u64 {
        self.marks.done.load(Ordering::Relaxed)
    }

    /// The server's estimate of the archives' total size (with [`BaseBackupConfig::progress`];
    /// it leaves out the WAL, so [`done`](Self::done) may pass it).
    pub fn total(&self) -> Option<u64> {
        self.marks.total.load(Ordering::Relaxed).checked_sub(1)
    }

    /// How many archives (the main data directory's and each tablespace's) have started.
    pub fn archives_started(&self) -> u64 {
        self.marks.archives.load(Ordering::Relaxed)
    }
}

/// Where the WAL a backup needs to be consistent comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalMethod {
    /// No WAL: it must come from the archive when the backup is restored (`-X none`).
    None,
    /// The server appends the WAL to the main archive at the end (`BASE_BACKUP`'s `WAL`
    /// option, `-X fetch`): the server must still have it then.
    #[default]
    Fetch,
    /// The WAL is streamed on a second connection while the backup runs (`-X stream`), from
    /// a physical slot that keeps it, into the backup's `pg_wal` (plain) or `pg_wal.tar`
    /// (tar): nothing depends on the server keeping WAL until the end. Done by the writers
    /// ([`PlainWriter`](super::PlainWriter), [`TarWriter`](super::TarWriter)); a consumer of
    /// [`BackupStream::next`] alone gets no WAL.
    Stream,
}

/// The options of a base backup; [`Default`] is pg_basebackup's defaults with a manifest
/// with CRC32C checksums, WAL fetched, and a fast checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseBackupConfig {
    /// The backup's label (`LABEL`, shown in `backup_label`); `walstream base backup` if
    /// `None`.
    pub label: Option<String>,
    /// How the checkpoint that starts the backup is taken.
    pub checkpoint: Checkpoint,
    /// Whether the server sends a manifest, and with which file checksums (`None` for a
    /// manifest without checksums).
    pub manifest: Option<Option<ChecksumAlgorithm>>,
    /// The largest transfer rate in kB per second (`MAX_RATE`, 32 to 1048576).
    pub max_rate: Option<u32>,
    /// Ask for each tablespace's size first, so that [`BackupEvent::Progress`] has a total.
    pub progress: bool,
    /// Where the WAL the backup needs comes from.
    pub wal: WalMethod,
    /// The manifest of an earlier backup: this one is incremental relative to it (PostgreSQL
    /// 17+, with `summarize_wal` on; uploaded with `UPLOAD_MANIFEST` first).
    pub incremental_from: Option<Bytes>,
    /// With [`WalMethod::Stream`]: the physical slot that keeps the WAL (`pg_basebackup -S`),
    /// which must exist unless [`create_wal_slot`](Self::create_wal_slot) is set, and is kept
    /// after the backup (a standby made from the backup can go on from it). `None`: a slot
    /// of the backup's own (`walstream_backup_<pid>_<n>`), dropped at the end.
    pub wal_slot: Option<String>,
    /// Create [`wal_slot`](Self::wal_slot) first (`pg_basebackup -C`).
    pub create_wal_slot: bool,
}

impl Default for BaseBackupConfig {
    fn default() -> Self {
        Self {
            label: None,
            checkpoint: Checkpoint::Fast,
            manifest: Some(Some(ChecksumAlgorithm::Crc32c)),
            max_rate: None,
            progress: true,
            wal: WalMethod::Fetch,
            incremental_from: None,
            wal_slot: None,
            create_wal_slot: false,
        }
    }
}

impl BaseBackupConfig {
    /// walconn's `BASE_BACKUP` options for this configuration.
    fn options(&self) -> BaseBackupOptions {
        BaseBackupOptions {
            label: Some(
                self.label
                    .clone()
                    .unwrap_or_else(|| "walstream base backup".into()),
            ),
            progress: self.progress,
            checkpoint: Some(self.checkpoint),
            wal: self.wal == WalMethod::Fetch,
            manifest: Some(match self.manifest {
                Some(_) => walconn::Manifest::Yes,
                None => walconn::Manifest::No,
            }),
            manifest_checksums: match self.manifest {
                Some(Some(a)) => Some(a.name().into()),
                Some(None) => Some("NONE".into()),
                None => None,
            },
            max_rate: self.max_rate,
            incremental: self.incremental_from.is_some(),
            ..BaseBackupOptions::default()
        }
    }
}

/// One event of a [`BackupStream`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackupEvent {
    /// An archive starts: the main data directory's (`tablespace: None`) or a tablespace's
    /// (its OID and its location on the server).
    Archive {
        /// The archive's name as the server sends it (`base.tar`, `16384.tar`).
        name: String,
        /// The tablespace's OID and location; `None` for the main data directory.
        tablespace: Option<(u32, String)>,
    },
    /// The next raw bytes of the current archive, before the entries they hold (only with
    /// [`BackupStream::with_archive_bytes`]: what [`TarWriter`](super::TarWriter) writes).
    ArchiveBytes(Bytes),
    /// A member of the current archive starts.
    Entry {
        /// Its path relative to the archive's root.
        path: PathBuf,
        /// File, directory or symbolic link.
        kind: EntryKind,
        /// Its data's size in bytes.
        size: u64,
        /// Its permission bits.
        mode: u32,
        /// Its modification time, seconds since the Unix epoch.
        mtime: i64,
        /// A symbolic link's target.
        link: Option<PathBuf>,
    },
    /// The next bytes of the current file (a slice of the server's message, not copied).
    Data(Bytes),
    /// The current member is complete.
    EntryEnd,
    /// The server's progress: bytes sent so far, and the total it estimated (with
    /// [`BaseBackupConfig::progress`]; the estimate leaves out the WAL, so `done` may pass
    /// it).
    Progress {
        /// Bytes of archives sent so far.
        done: u64,
        /// The estimated total in bytes.
        total: Option<u64>,
    },
    /// The next bytes of the backup manifest.
    Manifest(Bytes),
    /// The backup is complete: the WAL from `start` to `end` on `timeline` makes it
    /// consistent.
    End {
        /// Where the backup starts (its checkpoint's redo position).
        start: Lsn,
        /// Where it ends.
        end: Lsn,
        /// The timeline.
        timeline: u32,
    },
}

/// What the connection task sends.
#[derive(Debug)]
enum Msg {
    Payload(Bytes),
    End(BackupPosition),
    Failed(walconn::Error),
}

/// Which of the two the `d` messages belong to.
#[derive(Debug)]
enum Current {
    Nothing,
    Archive(Box<TarReader>),
    Manifest,
    Ended,
}

/// Starts a base backup: connects with `conninfo` (a `replication=true` connection is
/// made whatever it says), uploads the earlier manifest of an incremental backup, and sends
/// `BASE_BACKUP`. PostgreSQL 15+ (walconn refuses an older server as unsupported).
///
/// The connection is owned by a task spawned on the current tokio runtime, which reads
/// ahead at most a few payloads; dropping the stream ends it and the connection.
pub async fn start(conninfo: &str, config: BaseBackupConfig) -> Result<BackupStream> {
    start_with(Config::parse(conninfo)?, config).await
}

/// As [`start`], with a connection configuration built in code or carrying a
/// [`PasswordProvider`](walconn::PasswordProvider) (asked again by the second connection of
/// [`WalMethod::Stream`]).
pub async fn start_with(mut conn_config: Config, config: BaseBackupConfig) -> Result<BackupStream> {
    if config.wal_slot.is_some() && config.wal != WalMethod::Stream {
        return Err(Error::Config(
            "a WAL slot is only used when the WAL is streamed (WalMethod::Stream)".into(),
        ));
    }
    if config.create_wal_slot && config.wal_slot.is_none() {
        return Err(Error::Config(
            "creating a WAL slot needs the slot's name (wal_slot)".into(),
        ));
    }
    conn_config.set_replication(Replication::Physical);
    let mut conn = Connection::connect(&conn_config).await?;
    let options = config.options();
    let wal_source = match config.wal {
        WalMethod::Stream => Some(WalSource {
            conn_config: conn_config.clone(),
            start: BackupPosition {
                lsn: Lsn::ZERO,
                timeline: 0,
            },
            segment_size: conn
                .show("wal_segment_size")
                .await?
                .parse()
                .map_err(Error::Wal)?,
            slot: config.wal_slot.clone(),
            create_slot: config.create_wal_slot,
        }),
        _ => None,
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(CHANNEL_PAYLOADS);
    let incremental = config.incremental_from.clone();
    tokio::spawn(async move {
        if let Some(manifest) = incremental {
            if let Err(e) = conn.upload_manifest(&manifest).await {
                let _ = ready_tx.send(Err(e));
                return;
            }
        }
        let mut backup = match conn.base_backup(&options).await {
            Ok(b) => b,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        if ready_tx
            .send(Ok((backup.start(), backup.tablespaces().to_vec())))
            .is_err()
        {
            return;
        }
        loop {
            let msg = match backup.next().await {
                Ok(Some(p)) => Msg::Payload(p),
                Ok(None) => match backup.end() {
                    Some(end) => Msg::End(end),
                    None => return,
                },
                Err(e) => Msg::Failed(e),
            };
            let last = !matches!(msg, Msg::Payload(_));
            if tx.send(msg).await.is_err() || last {
                break;
            }
        }
        drop(backup);
        let _ = conn.close().await;
    });
    let (start, tablespaces) = ready_rx
        .await
        .map_err(|_| Error::Protocol("the backup's connection task ended".into()))??;
    let total = tablespaces
        .iter()
        .map(|t| t.size_kb.map(|kb| kb * 1024))
        .sum::<Option<u64>>();
    Ok(BackupStream {
        rx,
        wal_source: wal_source.map(|w| WalSource { start, ..w }),
        start,
        tablespaces,
        total,
        current: Current::Nothing,
        archive_bytes: false,
        progress: progress_with(total),
    })
}

/// A progress handle that knows the estimated total.
fn progress_with(total: Option<u64>) -> BackupProgress {
    let progress = BackupProgress::default();
    if let Some(t) = total {
        progress
            .marks
            .total
            .store(t.saturating_add(1), Ordering::Relaxed);
    }
    progress
}

/// The events of a running base backup; see [`start`] and [`BackupStream::next`].
///
/// Memory is bounded: payloads are read ahead by at most a handful, and file data is handed
/// out as it arrives, never gathered per file.
#[derive(Debug)]
pub struct BackupStream {
    rx: mpsc::Receiver<Msg>,
    /// With [`WalMethod::Stream`], for the writer's WAL streamer.
    wal_source: Option<WalSource>,
    start: BackupPosition,
    tablespaces: Vec<Tablespace>,
    total: Option<u64>,
    current: Current,
    archive_bytes: bool,
    progress: BackupProgress,
}

impl BackupStream {
    /// Also hand out each archive's raw bytes as [`BackupEvent::ArchiveBytes`], before the
    /// entries they hold (a tar writer keeps the archives as the server sent them).
    pub fn with_archive_bytes(mut self) -> Self {
        self.archive_bytes = true;
        self
    }

    /// With [`WalMethod::Stream`]: where the writers stream WAL from.
    pub(crate) fn wal_source(&self) -> Option<&WalSource> {
        self.wal_source.as_ref()
    }

    /// A handle that follows this backup's progress (see [`BackupProgress`]).
    pub fn progress(&self) -> BackupProgress {
        self.progress.clone()
    }

    /// Where the backup starts, with its timeline.
    pub fn start_position(&self) -> BackupPosition {
        self.start
    }

    /// The tablespaces, in the order of their archives (the main data directory's has no
    /// OID).
    pub fn tablespaces(&self) -> &[Tablespace] {
        &self.tablespaces
    }

    /// The next event, or `None` after [`BackupEvent::End`].
    ///
    /// Cancel-safe: a dropped call loses nothing (an event is taken from the channel only
    /// when it is returned or parsed into the reader, which keeps what it has not handed
    /// out).
    pub async fn next(&mut self) -> Result<Option<BackupEvent>> {
        loop {
            if let Current::Archive(tar) = &mut self.current {
                if let Some(event) = tar.next_event()? {
                    match entry_event(event) {
                        Some(e) => return Ok(Some(e)),
                        None => continue,
                    }
                }
            }
            if matches!(self.current, Current::Ended) {
                return Ok(None);
            }
            let Some(msg) = self.rx.recv().await else {
                return Err(Error::Protocol(
                    "the backup's connection task ended without the backup's end".into(),
                ));
            };
            let payload = match msg {
                Msg::Payload(p) => p,
                Msg::Failed(e) => {
                    self.current = Current::Ended;
                    return Err(e.into());
                }
                Msg::End(end) => {
                    self.close_archive()?;
                    self.current = Current::Ended;
                    return Ok(Some(BackupEvent::End {
                        start: self.start.lsn,
                        end: end.lsn,
                        timeline: end.timeline,
                    }));
                }
            };
            let message = BackupMessage::parse(&payload)
                .map_err(|e| Error::Protocol(format!("an archive message: {e}")))?;
            match message {
                BackupMessage::NewArchive(n) => {
                    let name = n.name.to_owned();
                    let location = n.tablespace_location.to_owned();
                    self.close_archive()?;
                    self.current = Current::Archive(Box::new(TarReader::new(name.clone())));
                    self.progress.marks.archives.fetch_add(1, Ordering::Relaxed);
                    let tablespace = if location.is_empty() {
                        None
                    } else {
                        let oid = self
                            .tablespaces
                            .iter()
                            .find(|t| t.location.as_deref() == Some(&location))
                            .and_then(|t| t.oid)
                            .ok_or_else(|| {
                                Error::Protocol(format!(
                                    "archive {name} is of tablespace {location}, which the \
                                     server did not list"
                                ))
                            })?;
                        Some((oid, location))
                    };
                    return Ok(Some(BackupEvent::Archive { name, tablespace }));
                }
                BackupMessage::Manifest => {
                    self.close_archive()?;
                    self.current = Current::Manifest;
                }
                BackupMessage::Data(_) => {
                    // The data is the payload after its tag byte: a slice, not a copy.
                    let data = payload.slice(1..);
                    match &mut self.current {
                        Current::Archive(tar) => {
                            tar.push(data.clone());
                            if self.archive_bytes {
                                return Ok(Some(BackupEvent::ArchiveBytes(data)));
                            }
                        }
                        Current::Manifest => return Ok(Some(BackupEvent::Manifest(data))),
                        Current::Nothing | Current::Ended => {
                            return Err(Error::Protocol(
                                "archive data before any archive or manifest".into(),
                            ))
                        }
                    }
                }
                BackupMessage::Progress(p) => {
                    self.progress
                        .marks
                        .done
                        .fetch_max(p.bytes_done, Ordering::Relaxed);
                    return Ok(Some(BackupEvent::Progress {
                        done: p.bytes_done,
                        total: self.total,
                    }));
                }
                _ => {
                    return Err(Error::Protocol(format!(
                        "an archive message of unknown type {:?}",
                        payload.first().map(|&b| char::from(b))
                    )))
                }
            }
        }
    }

    /// The current archive, if any, must be complete.
    fn close_archive(&mut self) -> Result<()> {
        if let Current::Archive(tar) = &self.current {
            tar.finish()?;
        }
        Ok(())
    }
}

/// The stream's event for a reader's; `None` for the archive's end (the next archive, the
/// manifest or the backup's end says as much).
fn entry_event(event: TarEvent) -> Option<BackupEvent> {
    Some(match event {
        TarEvent::Entry(e) => BackupEvent::Entry {
            path: e.path,
            kind: e.kind,
            size: e.size,
            mode: e.mode,
            mtime: e.mtime,
            link: e.link,
        },
        TarEvent::Data(d) => BackupEvent::Data(d),
        TarEvent::EntryEnd => BackupEvent::EntryEnd,
        TarEvent::End => return None,
    })
}

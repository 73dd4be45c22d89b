//! Writing a [`BackupStream`] to disk: [`PlainWriter`] (a data directory) and [`TarWriter`]
//! (the server's tar archives), each on a writer thread of its own.
//!
//! Both write `backup_manifest` last: into `backup_manifest.tmp` while it arrives, renamed
//! once every other file and directory has been synced (`fsync`), so a backup never looks
//! complete without its manifest. On failure a directory the writer created is removed; a
//! directory that existed (empty) before is left with an [`INCOMPLETE_MARKER`] file that
//! says why.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use walproto::Lsn;

use super::data_file::DataFile;
use super::error::{Error, Result};
use super::inject::RecoveryInjector;
use super::stream::{BackupEvent, BackupStream};
use super::tar::{EntryKind, TarEntry, BLOCK};
use super::wal::WalStreamer;

/// The file left in a directory that existed before the backup, when the backup failed.
pub const INCOMPLETE_MARKER: &str = "walstream_backup_incomplete";

/// The manifest while it arrives; renamed to `backup_manifest` at the very end.
const MANIFEST_TMP: &str = "backup_manifest.tmp";
const MANIFEST: &str = "backup_manifest";

/// The streamed WAL of a tar backup while it arrives; made into `pg_wal.tar` at the end.
const WAL_TMP: &str = "pg_wal.tmp";

/// Batches of events between the async side and the writer thread: with
/// [`BATCH_BYTES`] the memory they take, at most.
const CHANNEL_EVENTS: usize = 4;

/// The write buffer of each file.
const WRITE_BUFFER: usize = 128 * 1024;

/// What a finished backup is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// Where the backup starts (its checkpoint's redo position).
    pub start: Lsn,
    /// The WAL position at which it is consistent.
    pub end: Lsn,
    /// The timeline.
    pub timeline: u32,
}

/// Writes a backup as a data directory, as `pg_basebackup --format=plain` does.
///
/// The main archive goes into the directory, each tablespace into its location (or where
/// [`tablespace_mapping`](Self::tablespace_mapping) says), with the `pg_tblspc` links
/// pointing there; files get their modes and modification times. Every directory must be
/// empty or not exist.
#[derive(Clone, Debug)]
pub struct PlainWriter {
    dir: PathBuf,
    mapping: Vec<(PathBuf, PathBuf)>,
    recovery: Option<String>,
    slot: Option<String>,
}

/// Writes a backup as the server's tar archives (`base.tar`, `<oid>.tar`), byte for byte,
/// and `backup_manifest` beside them, as `pg_basebackup --format=tar` does.
#[derive(Clone, Debug)]
pub struct TarWriter {
    dir: PathBuf,
    recovery: Option<String>,
    slot: Option<String>,
}

impl PlainWriter {
    /// A writer into `dir` (created if missing; it must be empty if it exists).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            mapping: Vec::new(),
            recovery: None,
            slot: None,
        }
    }

    /// Writes the tablespace at `old` on the server into `new` (`pg_basebackup -T old=new`);
    /// both must be absolute.
    pub fn tablespace_mapping(
        mut self,
        old: impl Into<PathBuf>,
        new: impl Into<PathBuf>,
    ) -> Result<Self> {
        let (old, new) = (old.into(), new.into());
        if !old.is_absolute() || !new.is_absolute() {
            return Err(Error::Config(format!(
                "tablespace mapping {}={}: both directories must be absolute",
                old.display(),
                new.display()
            )));
        }
        self.mapping.push((old, new));
        Ok(self)
    }

    /// Makes the backup a standby of `primary_conninfo` (`pg_basebackup -R`): writes
    /// `standby.signal` and appends `primary_conninfo` to `postgresql.auto.conf`.
    pub fn write_recovery_conf(mut self, primary_conninfo: impl Into<String>) -> Self {
        self.recovery = Some(primary_conninfo.into());
        self
    }

    /// With [`write_recovery_conf`](Self::write_recovery_conf), also `primary_slot_name`: the
    /// physical slot the standby streams from (`pg_basebackup -R -S slot`).
    pub fn primary_slot_name(mut self, slot: impl Into<String>) -> Self {
        self.slot = Some(slot.into());
        self
    }

    /// Writes the whole backup; see the [type](Self) documentation.
    pub async fn write(self, stream: BackupStream) -> Result<BackupSummary> {
        let wal_dir = stream.wal_source().map(|_| self.dir.join("pg_wal"));
        let sink = PlainSink {
            create_pg_wal: wal_dir.is_some(),
            config: self,
            targets: Vec::new(),
            root: None,
            file: None,
            manifest: None,
        };
        drive(stream, sink, |_| true, wal_dir).await
    }
}

impl TarWriter {
    /// A writer into `dir` (created if missing; it must be empty if it exists).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            recovery: None,
            slot: None,
        }
    }

    /// Makes the backup a standby of `primary_conninfo` (`pg_basebackup -R`), as
    /// pg_basebackup does for tar: in `base.tar`, the `postgresql.auto.conf` member gets the
    /// `primary_conninfo` line appended (its header's size and checksum patched, every other
    /// byte of the archive kept) and a `standby.signal` member is added at the end.
    pub fn write_recovery_conf(mut self, primary_conninfo: impl Into<String>) -> Self {
        self.recovery = Some(primary_conninfo.into());
        self
    }

    /// With [`write_recovery_conf`](Self::write_recovery_conf), also `primary_slot_name`: the
    /// physical slot the standby streams from (`pg_basebackup -R -S slot`).
    pub fn primary_slot_name(mut self, slot: impl Into<String>) -> Self {
        self.slot = Some(slot.into());
        self
    }

    /// Writes the whole backup; see the [type](Self) documentation. The archives are still
    /// parsed as they pass, so a truncated or malformed one fails the backup.
    pub async fn write(self, stream: BackupStream) -> Result<BackupSummary> {
        let wal_dir = stream.wal_source().map(|_| self.dir.join(WAL_TMP));
        let sink = TarSink {
            wal_dir: wal_dir.clone(),
            recovery: self
                .recovery
                .as_deref()
                .map(|c| recovery_line(c, self.slot.as_deref())),
            injector: None,
            dir: self.dir,
            target: None,
            file: None,
            manifest: None,
        };
        let keep = |e: &BackupEvent| {
            !matches!(
                e,
                BackupEvent::Entry { .. } | BackupEvent::Data(_) | BackupEvent::EntryEnd
            )
        };
        drive(stream.with_archive_bytes(), sink, keep, wal_dir).await
    }
}

/// The writer thread's side: events in, files out.
trait Sink: Send + 'static {
    /// Prepares the main directory.
    fn begin(&mut self) -> Result<()>;
    fn event(&mut self, event: BackupEvent) -> Result<()>;
    /// Everything has arrived: syncs and renames the manifest into place.
    fn finish(&mut self) -> Result<()>;
    /// The directories created so far, and whether each was created by the writer.
    fn targets(&self) -> Vec<Target>;
    /// Closes open files (before cleaning up).
    fn close(&mut self);
}

/// A directory the backup writes into.
#[derive(Clone, Debug)]
struct Target {
    dir: PathBuf,
    created: bool,
}

enum Cmd {
    /// Events in stream order, a batch's worth (or what is left at the end), so that the
    /// writer thread is woken once per batch rather than once per archive message.
    Events(Vec<BackupEvent>),
    Abort(String),
}

/// A batch for the writer thread is closed at this many events or bytes of data. The async
/// side waits for a whole batch before handing it over (the writer is usually faster than
/// the server, and woken for whatever happened to be ready it slept and woke a few times per
/// megabyte); only the backup's end, or its failure, sends a smaller one.
const BATCH_EVENTS: usize = 256;
const BATCH_BYTES: usize = 256 << 10;

/// The bytes an event carries.
fn event_bytes(event: &BackupEvent) -> usize {
    match event {
        BackupEvent::Data(b) | BackupEvent::ArchiveBytes(b) | BackupEvent::Manifest(b) => b.len(),
        _ => 0,
    }
}

/// Moves the stream's events (those `keep` keeps) to `sink` on a writer thread, with the
/// WAL streamed into `wal_dir` when the backup's WAL method is `Stream`; cleans up on any
/// failure, once nothing writes any more.
async fn drive<S: Sink>(
    mut stream: BackupStream,
    mut sink: S,
    keep: fn(&BackupEvent) -> bool,
    wal_dir: Option<PathBuf>,
) -> Result<BackupSummary> {
    let (tx, mut rx) = mpsc::channel::<Cmd>(CHANNEL_EVENTS);
    let (begun_tx, begun_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<(Result<BackupSummary>, Vec<Target>)>();
    std::thread::Builder::new()
        .name("walstream-backup-writer".into())
        .spawn(move || {
            let result = sink.begin().and_then(|()| {
                let _ = begun_tx.send(());
                run_sink(&mut sink, &mut rx)
            });
            sink.close();
            // Nobody waits for the result when the write was dropped midway: clean up here.
            if let Err((Err(_), targets)) = done_tx.send((result, sink.targets())) {
                cleanup(&targets, "the backup was abandoned: its writer was dropped");
            }
        })
        .map_err(|e| Error::io("a writer thread", "start", e))?;
    // The directories exist once the thread has begun: only then may WAL go into them.
    let begun = begun_rx.await.is_ok();
    let mut wal = None;
    let mut failure = None;
    if let (true, Some(source), Some(dir)) = (begun, stream.wal_source().cloned(), wal_dir) {
        match WalStreamer::start(source, dir).await {
            Ok(w) => wal = Some(w),
            Err(e) => failure = Some(e),
        }
    }
    let mut batch: Vec<BackupEvent> = Vec::new();
    let mut batch_bytes = 0;
    let mut ended = false;
    while begun && failure.is_none() && !ended {
        // A batch's worth of events, or up to the end.
        let mut next = Some(stream.next().await);
        while let Some(result) = next.take() {
            match result {
                Ok(Some(BackupEvent::End {
                    start,
                    end,
                    timeline,
                })) => {
                    // The WAL must be whole before the end is written (the manifest last).
                    if let Some(w) = wal.take() {
                        if let Err(e) = w.finish(end).await {
                            failure = Some(e);
                            break;
                        }
                    }
                    batch.push(BackupEvent::End {
                        start,
                        end,
                        timeline,
                    });
                }
                Ok(Some(event)) => {
                    if keep(&event) {
                        batch_bytes += event_bytes(&event);
                        batch.push(event);
                    }
                    if batch.len() < BATCH_EVENTS && batch_bytes < BATCH_BYTES {
                        next = Some(stream.next().await);
                    }
                }
                Ok(None) => ended = true,
                Err(e) => failure = Some(e),
            }
        }
        if !batch.is_empty() {
            batch_bytes = 0;
            if tx
                .send(Cmd::Events(std::mem::take(&mut batch)))
                .await
                .is_err()
            {
                break; // The thread failed: its result says why.
            }
        }
    }
    if let Some(w) = wal.take() {
        w.abort().await;
    }
    if let Some(e) = &failure {
        let _ = tx.send(Cmd::Abort(e.to_string())).await;
    }
    drop(tx);
    let (result, targets) = done_rx.await.unwrap_or_else(|_| {
        let e = Error::Protocol("the backup writer thread panicked".into());
        (Err(e), Vec::new())
    });
    let result = match failure {
        Some(e) => Err(e),
        None => result,
    };
    if let Err(e) = &result {
        let reason = e.to_string();
        let _ = tokio::task::spawn_blocking(move || cleanup(&targets, &reason)).await;
    }
    result
}

fn run_sink<S: Sink>(sink: &mut S, rx: &mut mpsc::Receiver<Cmd>) -> Result<BackupSummary> {
    let mut summary = None;
    while let Some(cmd) = rx.blocking_recv() {
        let events = match cmd {
            Cmd::Events(events) => events,
            Cmd::Abort(reason) => return Err(Error::Protocol(reason)),
        };
        for event in events {
            if let BackupEvent::End {
                start,
                end,
                timeline,
            } = event
            {
                summary = Some(BackupSummary {
                    start,
                    end,
                    timeline,
                });
            }
            sink.event(event)?;
        }
    }
    let summary =
        summary.ok_or_else(|| Error::Protocol("the backup stream ended before its end".into()))?;
    sink.finish()?;
    Ok(summary)
}

/// Removes the directories the writer created; marks the others incomplete.
fn cleanup(targets: &[Target], reason: &str) {
    for t in targets {
        if t.created {
            let _ = fs::remove_dir_all(&t.dir);
        } else {
            let _ = fs::remove_file(t.dir.join(MANIFEST_TMP));
            let _ = fs::write(
                t.dir.join(INCOMPLETE_MARKER),
                format!("This base backup is incomplete: {reason}\n"),
            );
        }
    }
}

/// Creates `dir` or checks that it is empty.
fn prepare(dir: &Path) -> Result<Target> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Config(format!(
                    "directory {} exists and is not empty",
                    dir.display()
                )));
            }
            Ok(Target {
                dir: dir.to_owned(),
                created: false,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(dir, "set the mode of", e))?;
            Ok(Target {
                dir: dir.to_owned(),
                created: true,
            })
        }
        Err(e) => Err(Error::io(dir, "open", e)),
    }
}

/// A file written through a buffer: the manifest, or an archive of a tar backup.
struct OpenFile {
    out: BufWriter<File>,
    path: PathBuf,
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, "create", e))?;
    Ok(BufWriter::with_capacity(WRITE_BUFFER, f))
}

fn write(out: &mut BufWriter<File>, path: &Path, data: &[u8]) -> Result<()> {
    out.write_all(data).map_err(|e| Error::io(path, "write", e))
}

fn flush(out: BufWriter<File>, path: &Path) -> Result<File> {
    out.into_inner()
        .map_err(|e| Error::io(path, "write", e.into_error()))
}

/// Syncs every file and directory under `dir` (symbolic links are not followed), then `dir`.
fn sync_tree(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, "read", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, "read", e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(&path, "stat", e))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            sync(&path)?;
        }
    }
    sync(dir)
}

fn sync(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, "fsync", e))
}

/// Puts the finished manifest into place, last: after everything else is synced.
fn install_manifest(dir: &Path, manifest: Option<OpenFile>) -> Result<()> {
    if let Some(m) = manifest {
        let file = flush(m.out, &m.path)?;
        file.sync_all()
            .map_err(|e| Error::io(&m.path, "fsync", e))?;
        let to = dir.join(MANIFEST);
        fs::rename(&m.path, &to).map_err(|e| Error::io(&to, "rename into", e))?;
        sync(dir)?;
    }
    Ok(())
}

fn open_manifest(dir: &Path, current: &mut Option<OpenFile>) -> Result<()> {
    if current.is_none() {
        let path = dir.join(MANIFEST_TMP);
        *current = Some(OpenFile {
            out: create(&path)?,
            path,
        });
    }
    Ok(())
}

fn write_manifest(current: &mut Option<OpenFile>, data: &[u8]) -> Result<()> {
    match current {
        Some(m) => write(&mut m.out, &m.path, data),
        None => Err(Error::Protocol("manifest data before the manifest".into())),
    }
}

struct PlainSink {
    config: PlainWriter,
    /// WAL is streamed into `pg_wal`, which must exist from the start.
    create_pg_wal: bool,
    targets: Vec<Target>,
    /// The current archive's root directory.
    root: Option<PathBuf>,
    file: Option<DataFile>,
    manifest: Option<OpenFile>,
}

impl PlainSink {
    /// Where the tablespace at `location` goes.
    fn mapped(&self, location: &Path) -> PathBuf {
        self.config
            .mapping
            .iter()
            .find(|(old, _)| old == location)
            .map_or_else(|| location.to_owned(), |(_, new)| new.clone())
    }

    fn root(&self) -> Result<&Path> {
        self.root
            .as_deref()
            .ok_or_else(|| Error::Protocol("an entry before any archive".into()))
    }

    fn end_file(&mut self) -> Result<()> {
        match self.file.take() {
            Some(f) => f.finish(),
            None => Ok(()),
        }
    }

    fn entry(
        &mut self,
        path: &Path,
        kind: EntryKind,
        mode: u32,
        mtime: i64,
        link: Option<PathBuf>,
    ) -> Result<()> {
        let main = self.root.as_deref() == Some(self.config.dir.as_path());
        let full = self.root()?.join(path);
        match kind {
            EntryKind::Directory => {
                fs::create_dir_all(&full).map_err(|e| Error::io(&full, "create", e))?;
                fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io(&full, "set the mode of", e))?;
            }
            EntryKind::Symlink => {
                let mut target = link.unwrap_or_default();
                let in_tblspc =
                    path.components().next() == Some(Component::Normal("pg_tblspc".as_ref()));
                if main && in_tblspc {
                    target = self.mapped(&target);
                }
                std::os::unix::fs::symlink(&target, &full)
                    .map_err(|e| Error::io(&full, "create the link", e))?;
            }
            EntryKind::File => self.file = Some(DataFile::create(full, mode, mtime)?),
        }
        Ok(())
    }

    /// `standby.signal` and `primary_conninfo` in `postgresql.auto.conf`, as
    /// `GenerateRecoveryConfig` writes them.
    fn recovery_conf(&self, conninfo: &str) -> Result<()> {
        let dir = &self.config.dir;
        let signal = dir.join("standby.signal");
        drop(create(&signal)?);
        let conf = dir.join("postgresql.auto.conf");
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&conf)
            .map_err(|e| Error::io(&conf, "open", e))?;
        f.write_all(recovery_line(conninfo, self.config.slot.as_deref()).as_bytes())
            .map_err(|e| Error::io(&conf, "write", e))
    }
}

/// The lines `-R` appends to `postgresql.auto.conf`, as `GenerateRecoveryConfig` writes them.
fn recovery_line(conninfo: &str, slot: Option<&str>) -> String {
    let mut lines = format!("primary_conninfo = '{}'\n", escape_quotes(conninfo));
    if let Some(slot) = slot {
        lines.push_str(&format!("primary_slot_name = '{}'\n", escape_quotes(slot)));
    }
    lines
}

/// Doubles single quotes and backslashes, as `escape_quotes` does for the configuration file.
fn escape_quotes(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "''")
}

impl Sink for PlainSink {
    fn begin(&mut self) -> Result<()> {
        let t = prepare(&self.config.dir)?;
        self.targets.push(t);
        if self.create_pg_wal {
            let wal = self.config.dir.join("pg_wal");
            fs::create_dir(&wal).map_err(|e| Error::io(&wal, "create", e))?;
        }
        Ok(())
    }

    fn event(&mut self, event: BackupEvent) -> Result<()> {
        match event {
            BackupEvent::Archive { tablespace, .. } => {
                self.end_file()?;
                let root = match tablespace {
                    None => self.config.dir.clone(),
                    Some((_, location)) => {
                        let dir = self.mapped(Path::new(&location));
                        let t = prepare(&dir)?;
                        self.targets.push(t);
                        dir
                    }
                };
                self.root = Some(root);
            }
            BackupEvent::Entry {
                path,
                kind,
                mode,
                mtime,
                link,
                ..
            } => self.entry(&path, kind, mode, mtime, link)?,
            BackupEvent::Data(d) => match &mut self.file {
                Some(f) => f.push(d)?,
                None => return Err(Error::Protocol("file data outside a file".into())),
            },
            BackupEvent::EntryEnd => self.end_file()?,
            BackupEvent::Manifest(d) => {
                self.end_file()?;
                open_manifest(&self.config.dir, &mut self.manifest)?;
                write_manifest(&mut self.manifest, &d)?;
            }
            BackupEvent::End { .. } => {
                self.end_file()?;
                if let Some(conninfo) = self.config.recovery.clone() {
                    self.recovery_conf(&conninfo)?;
                }
            }
            BackupEvent::ArchiveBytes(_) | BackupEvent::Progress { .. } => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        for t in &self.targets {
            sync_tree(&t.dir)?;
        }
        install_manifest(&self.config.dir, self.manifest.take())
    }

    fn targets(&self) -> Vec<Target> {
        self.targets.clone()
    }

    fn close(&mut self) {
        self.file = None;
        self.manifest = None;
    }
}

struct TarSink {
    dir: PathBuf,
    /// With `-R`: the line for `postgresql.auto.conf`.
    recovery: Option<String>,
    /// With `-R`, while the main archive is written.
    injector: Option<RecoveryInjector>,
    /// Where streamed WAL is written, to become `pg_wal.tar` at the end.
    wal_dir: Option<PathBuf>,
    target: Option<Target>,
    file: Option<OpenFile>,
    manifest: Option<OpenFile>,
}

impl TarSink {
    fn end_file(&mut self) -> Result<()> {
        if let Some(injector) = self.injector.take() {
            injector.finish()?;
        }
        if let Some(f) = self.file.take() {
            flush(f.out, &f.path)?;
        }
        Ok(())
    }
}

impl Sink for TarSink {
    fn begin(&mut self) -> Result<()> {
        self.target = Some(prepare(&self.dir)?);
        if let Some(wal) = &self.wal_dir {
            fs::create_dir(wal).map_err(|e| Error::io(wal, "create", e))?;
        }
        Ok(())
    }

    fn event(&mut self, event: BackupEvent) -> Result<()> {
        match event {
            BackupEvent::Archive { name, tablespace } => {
                self.end_file()?;
                if let (None, Some(line)) = (&tablespace, &self.recovery) {
                    self.injector = Some(RecoveryInjector::new(&name, line.clone()));
                }
                // The name becomes a file in the directory: one plain component only.
                let mut parts = Path::new(&name).components();
                let (Some(Component::Normal(file)), None) = (parts.next(), parts.next()) else {
                    return Err(Error::Protocol(format!(
                        "archive name {name:?} is not a file name"
                    )));
                };
                let path = self.dir.join(file);
                self.file = Some(OpenFile {
                    out: create(&path)?,
                    path,
                });
            }
            BackupEvent::ArchiveBytes(d) => match (&mut self.file, &mut self.injector) {
                (Some(f), Some(injector)) => {
                    injector.feed(d, &mut |b| write(&mut f.out, &f.path, b))?;
                }
                (Some(f), None) => write(&mut f.out, &f.path, &d)?,
                (None, _) => return Err(Error::Protocol("archive data outside an archive".into())),
            },
            BackupEvent::Manifest(d) => {
                self.end_file()?;
                open_manifest(&self.dir, &mut self.manifest)?;
                write_manifest(&mut self.manifest, &d)?;
            }
            BackupEvent::End { .. } => self.end_file()?,
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(wal) = self.wal_dir.take() {
            wal_tar(&wal, &self.dir.join("pg_wal.tar"))?;
            fs::remove_dir_all(&wal).map_err(|e| Error::io(&wal, "remove", e))?;
        }
        sync_tree(&self.dir)?;
        install_manifest(&self.dir, self.manifest.take())
    }

    fn targets(&self) -> Vec<Target> {
        self.target.iter().cloned().collect()
    }

    fn close(&mut self) {
        self.file = None;
        self.manifest = None;
    }
}

/// Writes the files of `wal` (segments and history files, in name order) into the tar file
/// `to`, as `pg_basebackup -Ft -X stream` makes `pg_wal.tar`: an `archive_status` directory,
/// each file, the end-of-archive marker.
fn wal_tar(wal: &Path, to: &Path) -> Result<()> {
    let mut names = Vec::new();
    for entry in fs::read_dir(wal).map_err(|e| Error::io(wal, "read", e))? {
        let entry = entry.map_err(|e| Error::io(wal, "read", e))?;
        names.push(entry.file_name());
    }
    names.sort();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let mut out = create(to)?;
    let status = TarEntry {
        path: PathBuf::from("archive_status"),
        kind: EntryKind::Directory,
        size: 0,
        mode: 0o700,
        mtime: now,
        link: None,
    };
    write(&mut out, to, &status.header().unwrap_or([0; BLOCK]))?;
    for name in names {
        let path = wal.join(&name);
        let mut file = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(&path, "stat", e))?
            .len();
        let header = TarEntry {
            path: PathBuf::from(&name),
            kind: EntryKind::File,
            size,
            mode: 0o600,
            mtime: now,
            link: None,
        }
        .header()
        .ok_or_else(|| Error::Protocol(format!("{} too long for tar", path.display())))?;
        write(&mut out, to, &header)?;
        let copied = std::io::copy(&mut file, &mut out).map_err(|e| Error::io(&path, "copy", e))?;
        if copied != size {
            return Err(Error::io(
                &path,
                "copy",
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file changed size"),
            ));
        }
        let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        write(&mut out, to, &vec![0u8; pad])?;
    }
    write(&mut out, to, &[0u8; 2 * BLOCK])?;
    flush(out, to).map(drop)
}

//! A primary and its standbys: streaming replication pairs for the physical and failover tests.
//!
//! PostgreSQL 15's `pg_basebackup` refuses newer servers and 16-18 come without client tools,
//! so standbys are made with the low-level backup API instead: a [`Session`](crate::Session)
//! holds `pg_backup_start` while the data directory is copied, and `pg_backup_stop`'s label
//! file becomes the copy's `backup_label`. The WAL from the backup's start to its end is
//! copied too, so that a copy reaches consistency without a primary.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pgserver::ServerUser;

use crate::cluster::{quote_ident, quote_literal};
use crate::{Cluster, Config, Error};

/// How long [`wait_caught_up`] and [`Cluster::wait_out_of_recovery`] wait: generous, because
/// several servers share two cores during a test run.
pub const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

/// How much WAL a [`Config::primary`] keeps for standbys without a slot.
const WAL_KEEP_SIZE: &str = "256MB";

/// Rows per transaction of a [`WriteLoad`].
const LOAD_ROWS_PER_TRANSACTION: u32 = 10;

/// The pause between two transactions of a [`WriteLoad`], so that it does not starve the other
/// servers on the machine.
const LOAD_PAUSE: Duration = Duration::from_millis(5);

/// How often the waits poll the server.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The files of a running server in its data directory, which no copy takes.
const SERVER_FILES: [&str; 2] = ["postmaster.pid", "postmaster.opts"];

/// Entries of the data directory that a hot copy does not take besides [`SERVER_FILES`]: WAL and
/// slots (a copy gets its own), the signal and label files of the source, and directories whose
/// contents are rebuilt at start (the same list as `pg_basebackup`'s, abridged). Directories in
/// this list are copied empty.
const NOT_COPIED: [&str; 12] = [
    "pg_wal",
    "pg_replslot",
    "pg_stat_tmp",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
    "standby.signal",
    "recovery.signal",
    "backup_label",
    "tablespace_map",
];

impl Config {
    /// The configuration of a primary: the defaults (wal_level=logical, WAL senders, slots,
    /// trusted replication connections on the socket and 127.0.0.1) plus `hot_standby = on`
    /// (inherited by its standbys) and `wal_keep_size = 256MB`, so that a standby without a
    /// slot finds the WAL it needs.
    ///
    /// ```no_run
    /// let primary = pgtest::Config::primary(17).start()?;
    /// let standby = primary.standby()?;
    /// pgtest::wait_caught_up(&primary, &standby)?;
    /// # Ok::<(), pgtest::Error>(())
    /// ```
    pub fn primary(major: u32) -> Self {
        Self::new(major)
            .setting("hot_standby", "on")
            .setting("wal_keep_size", WAL_KEEP_SIZE)
    }
}

/// How [`Cluster::from_data_dir`] starts a server on a copied data directory: as it is (crash
/// recovery from the WAL in its `pg_wal`), as a standby of a primary, or with archive recovery
/// from a WAL directory up to a target.
///
/// ```no_run
/// # fn f(primary: &pgtest::Cluster, backup: &std::path::Path, wal: &std::path::Path)
/// #     -> Result<(), pgtest::Error> {
/// // A standby streaming from `primary` through a slot.
/// let standby = pgtest::Cluster::from_data_dir(
///     17,
///     backup,
///     &pgtest::Recovery::standby_of(primary).slot("standby_1"),
/// )?;
/// // Point-in-time recovery from archived WAL, promoted at the target.
/// let restored = pgtest::Cluster::from_data_dir(
///     17,
///     backup,
///     &pgtest::Recovery::none().archive(wal).target_lsn("0/3000060"),
/// )?;
/// restored.wait_out_of_recovery()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    primary_conninfo: Option<String>,
    slot: Option<String>,
    archive: Option<PathBuf>,
    target_lsn: Option<String>,
    settings: Vec<(String, String)>,
}

impl Recovery {
    /// No recovery settings: the server starts on the directory as it is (crash recovery, from
    /// its `backup_label` if it has one, with the WAL in its `pg_wal`).
    pub fn none() -> Self {
        Self::default()
    }

    /// A standby of `primary`: `primary_conninfo` (with `dbname=postgres`, as slot
    /// synchronization needs) and `standby.signal`.
    pub fn standby_of(primary: &Cluster) -> Self {
        Self {
            primary_conninfo: Some(primary.conninfo("postgres")),
            ..Self::default()
        }
    }

    /// Streams through physical slot `name` (`primary_slot_name`); the slot must exist on the
    /// primary.
    pub fn slot(mut self, name: &str) -> Self {
        self.slot = Some(name.to_owned());
        self
    }

    /// Restores WAL from the segment files in `dir` (`restore_command`), which is copied into
    /// the cluster's directory at start, so that the server user can read it. Without
    /// [`standby_of`](Self::standby_of), this is archive recovery (`recovery.signal`): it ends
    /// with a promotion to a new timeline once the archive or the target is reached.
    pub fn archive(mut self, dir: &Path) -> Self {
        self.archive = Some(dir.to_path_buf());
        self
    }

    /// Stops recovery at `lsn` (`recovery_target_lsn`, inclusive) and promotes
    /// (`recovery_target_action = promote`).
    pub fn target_lsn(mut self, lsn: &str) -> Self {
        self.target_lsn = Some(lsn.to_owned());
        self
    }

    /// Adds `name = 'value'` to the copy's `postgresql.auto.conf`.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Writes the settings and the signal file into `data`, whose archive copy is `archive`.
    fn apply(&self, data: &Path, archive: &Path, user: ServerUser) -> Result<(), Error> {
        let mut settings: Vec<(String, String)> = Vec::new();
        if let Some(conninfo) = &self.primary_conninfo {
            settings.push(("primary_conninfo".into(), conninfo.clone()));
        }
        if self.primary_conninfo.is_some() || self.slot.is_some() {
            // Also when empty: a slot name copied from the source must not stay.
            let slot = self.slot.clone().unwrap_or_default();
            settings.push(("primary_slot_name".into(), slot));
        }
        if self.archive.is_some() {
            let command = format!("cp \"{}/%f\" \"%p\"", archive.display());
            settings.push(("restore_command".into(), command));
        }
        if let Some(lsn) = &self.target_lsn {
            settings.push(("recovery_target_lsn".into(), lsn.clone()));
            settings.push(("recovery_target_action".into(), "promote".into()));
        }
        settings.extend(self.settings.iter().cloned());
        append_auto_conf(data, &settings, user)?;
        let signal = if self.primary_conninfo.is_some() {
            Some("standby.signal")
        } else if self.archive.is_some() || self.target_lsn.is_some() {
            Some("recovery.signal")
        } else {
            None
        };
        if let Some(signal) = signal {
            write_owned(&data.join(signal), b"", user)?;
        }
        Ok(())
    }
}

impl Cluster {
    /// A streaming standby of this cluster (which must be a primary, for example one started
    /// from [`Config::primary`]), on its own port and socket directory, stopped and removed on
    /// drop. It has replayed the backup when this returns; [`wait_caught_up`] waits for the
    /// rest.
    pub fn standby(&self) -> Result<Cluster, Error> {
        self.standby_with(&Recovery::standby_of(self))
    }

    /// A standby as [`standby`](Self::standby) makes, streaming through physical slot `slot`,
    /// which is created on this cluster (reserving WAL at once) unless it exists.
    pub fn standby_with_slot(&self, slot: &str) -> Result<Cluster, Error> {
        let lit = quote_literal(slot);
        self.psql(
            "postgres",
            &format!(
                "SELECT pg_create_physical_replication_slot({lit}, true) \
                 WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = {lit})"
            ),
        )?;
        self.standby_with(&Recovery::standby_of(self).slot(slot))
    }

    /// A standby as [`standby`](Self::standby) makes, set up as `recovery` says, with this
    /// cluster as its primary unless `recovery` names another: for extra settings
    /// (`hot_standby_feedback`, `sync_replication_slots`, ...) or an existing slot.
    ///
    /// ```no_run
    /// # fn f(primary: &pgtest::Cluster) -> Result<(), pgtest::Error> {
    /// let standby = primary.standby_with(
    ///     &pgtest::Recovery::standby_of(primary).setting("hot_standby_feedback", "on"),
    /// )?;
    /// # Ok(()) }
    /// ```
    pub fn standby_with(&self, recovery: &Recovery) -> Result<Cluster, Error> {
        let mut recovery = recovery.clone();
        if recovery.primary_conninfo.is_none() {
            recovery.primary_conninfo = Recovery::standby_of(self).primary_conninfo;
        }
        Cluster::create_filled(self.major(), |server| {
            self.copy_running(&server.data_dir(), server.user())?;
            start_copy(server, &recovery)
        })
    }

    /// Copies this running primary's data directory to `dest` (created unless it is an existing
    /// empty directory) with the
    /// low-level backup API, as [`standby`](Self::standby) does: the copy has a `backup_label`
    /// and, in `pg_wal`, the WAL from the backup's start to its end, so that
    /// [`from_data_dir`](Self::from_data_dir) starts on it without a primary
    /// ([`Recovery::none`]) or as a standby. Writes may go on meanwhile.
    pub fn hot_copy(&self, dest: &Path) -> Result<(), Error> {
        self.copy_running(dest, ServerUser::current())
    }

    /// [`hot_copy`](Self::hot_copy), handing the copy to `user`.
    fn copy_running(&self, dest: &Path, user: ServerUser) -> Result<(), Error> {
        let source = self.data_dir();
        // The backup lasts as long as this session: an error below ends both.
        let mut session = self.session("postgres")?;
        let start_wal = session.run(
            "SET client_min_messages = warning;\n\
             SELECT pg_walfile_name(pg_backup_start('pgtest copy', true))",
        )?;
        copy_tree(
            &source,
            dest,
            &|rel| is_one_of(rel, &SERVER_FILES) || is_one_of(rel, &NOT_COPIED),
            user,
        )?;
        let stop = session.run(
            "SELECT encode(convert_to(labelfile, 'UTF8'), 'hex'), pg_walfile_name(lsn) \
             FROM pg_backup_stop()",
        )?;
        let (label, stop_wal) = stop
            .split_once('|')
            .ok_or_else(|| Error::new(format!("unexpected pg_backup_stop() output {stop:?}")))?;
        write_owned(&dest.join("backup_label"), &decode_hex(label)?, user)?;
        copy_wal(
            &source.join("pg_wal"),
            &dest.join("pg_wal"),
            &start_wal,
            stop_wal,
            user,
        )
    }

    /// Copies this cluster's data directory to `dest` (created unless it is an existing empty
    /// directory) while the server is briefly stopped (`pg_ctl stop -m fast`), then starts it again on the same port. Start a
    /// server on the copy with [`from_data_dir`](Self::from_data_dir).
    pub fn cold_copy(&self, dest: &Path) -> Result<(), Error> {
        self.stop()?;
        let copied = copy_tree(
            &self.data_dir(),
            dest,
            &|rel| is_one_of(rel, &SERVER_FILES),
            ServerUser::current(),
        );
        let started = self.start_again();
        copied.and(started)
    }

    /// Starts a server of PostgreSQL `major` on a copy of `dir`, a data directory made by a base
    /// backup (with or without `backup_label`) or by [`cold_copy`](Self::cold_copy), set up
    /// as `recovery` says; `dir` itself is left alone. The copy is handed to the server user
    /// (mode 0700) and gets a free port and a socket directory of its own; like
    /// [`Config::start`]'s, it is stopped and removed on drop. When this returns the server
    /// accepts connections: a standby or archive recovery has reached consistency.
    pub fn from_data_dir(major: u32, dir: &Path, recovery: &Recovery) -> Result<Cluster, Error> {
        Cluster::create_filled(major, |server| {
            let user = server.user();
            let data = server.data_dir();
            copy_tree(dir, &data, &|rel| is_one_of(rel, &SERVER_FILES), user)?;
            for empty in ["pg_wal", "pg_wal/archive_status", "pg_replslot"] {
                ensure_dir(&data.join(empty), user)?;
            }
            start_copy(server, recovery)
        })
    }

    /// Whether the server is in recovery (a standby, or not yet promoted).
    pub fn is_in_recovery(&self) -> Result<bool, Error> {
        Ok(self.psql("postgres", "SELECT pg_is_in_recovery()")? == "t")
    }

    /// Promotes a standby (`SELECT pg_promote()`), waits until it is out of recovery, and runs
    /// a `CHECKPOINT`, so that [`timeline`](Self::timeline) shows the new timeline.
    pub fn promote(&self) -> Result<(), Error> {
        let wait = REPLICATION_TIMEOUT.as_secs();
        let promoted = self.psql("postgres", &format!("SELECT pg_promote(true, {wait})"))?;
        if promoted != "t" {
            return Err(Error::new(format!(
                "PostgreSQL {} on port {} was not promoted within {wait}s (see {})",
                self.major(),
                self.port(),
                self.log_file().display()
            )));
        }
        self.wait_out_of_recovery()?;
        self.psql("postgres", "CHECKPOINT").map(drop)
    }

    /// Waits until the server is out of recovery (promoted, or at the end of archive
    /// recovery), up to [`REPLICATION_TIMEOUT`].
    pub fn wait_out_of_recovery(&self) -> Result<(), Error> {
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        while self.is_in_recovery()? {
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "PostgreSQL {} on port {} is still in recovery after {}s (see {})",
                    self.major(),
                    self.port(),
                    REPLICATION_TIMEOUT.as_secs(),
                    self.log_file().display()
                )));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok(())
    }

    /// The timeline of the last checkpoint (`SELECT timeline_id FROM pg_control_checkpoint()`):
    /// 1 for a new cluster, 2 after a first [`promote`](Self::promote).
    pub fn timeline(&self) -> Result<u32, Error> {
        let out = self.psql(
            "postgres",
            "SELECT timeline_id FROM pg_control_checkpoint()",
        )?;
        out.parse()
            .map_err(|_| Error::new(format!("bad timeline {out:?} from pg_control_checkpoint()")))
    }
}

/// Waits until `standby` has replayed everything `primary` has flushed (its
/// `pg_last_wal_replay_lsn()` reaches the primary's `pg_current_wal_flush_lsn()` taken at the
/// call), up to [`REPLICATION_TIMEOUT`]; the error gives both positions and the WAL receiver's
/// state.
pub fn wait_caught_up(primary: &Cluster, standby: &Cluster) -> Result<(), Error> {
    wait_caught_up_within(primary, standby, REPLICATION_TIMEOUT)
}

/// [`wait_caught_up`], giving up after `timeout`.
pub fn wait_caught_up_within(
    primary: &Cluster,
    standby: &Cluster,
    timeout: Duration,
) -> Result<(), Error> {
    let target = primary.psql("postgres", "SELECT pg_current_wal_flush_lsn()")?;
    let check = format!(
        "SELECT coalesce(pg_last_wal_replay_lsn() >= {}::pg_lsn, false)",
        quote_literal(&target)
    );
    let deadline = Instant::now() + timeout;
    while standby.psql("postgres", &check)? != "t" {
        if Instant::now() > deadline {
            let state = standby.psql(
                "postgres",
                "SELECT format('replayed up to %s, received up to %s, WAL receiver %s', \
                 pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn(), \
                 coalesce((SELECT status FROM pg_stat_wal_receiver), 'not running'))",
            )?;
            return Err(Error::new(format!(
                "the standby on port {} has not caught up with the primary on port {} after \
                 {timeout:?}: the primary flushed up to {target}, the standby {state} (see {})",
                standby.port(),
                primary.port(),
                standby.log_file().display()
            )));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(())
}

/// Compares the contents of every permanent user table of database `dbname` in `a` with the
/// table of that name in `b`: the row count and the md5 of the rows' text, sorted. The error
/// names the first table (in name order) that differs or is missing in `b`, or the query that
/// failed; tables only in `b` are not looked at.
pub fn compare_databases(a: &Cluster, b: &Cluster, dbname: &str) -> Result<(), Error> {
    let tables = a.query(
        dbname,
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND c.relpersistence = 'p' \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1",
    )?;
    for table in tables.iter().filter_map(|row| row.first()) {
        // The name is already quoted by format('%I.%I').
        let sql = format!(
            "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) \
             FROM {table} t"
        );
        let left = a.psql(dbname, &sql)?;
        let right = b.psql(dbname, &sql).map_err(|e| {
            Error::new(format!(
                "table {table} differs: reading it on port {} failed: {e}",
                b.port()
            ))
        })?;
        if left != right {
            return Err(Error::new(format!(
                "table {table} differs: (rows|md5) {left} on port {}, {right} on port {}",
                a.port(),
                b.port()
            )));
        }
    }
    Ok(())
}

/// A background write load: a thread that inserts rows into one table in small transactions
/// (10 rows each, through one `psql` session) until [`stop`](Self::stop)ped or dropped.
///
/// ```no_run
/// let primary = pgtest::Config::primary(17).start()?;
/// primary.create_database("load")?;
/// let load = pgtest::WriteLoad::start(&primary, "load", "rows")?;
/// let standby = primary.standby()?;
/// let committed = load.stop()?;
/// pgtest::wait_caught_up(&primary, &standby)?;
/// pgtest::compare_databases(&primary, &standby, "load")?;
/// # let _ = committed;
/// # Ok::<(), pgtest::Error>(())
/// ```
#[derive(Debug)]
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl WriteLoad {
    /// Creates `table` (`id bigserial PRIMARY KEY, payload text`) in database `dbname` of
    /// `cluster` unless it exists, and starts inserting into it.
    pub fn start(cluster: &Cluster, dbname: &str, table: &str) -> Result<Self, Error> {
        let ident = quote_ident(table);
        let mut session = cluster.session(dbname)?;
        session.run(&format!(
            "CREATE TABLE IF NOT EXISTS {ident} (id bigserial PRIMARY KEY, payload text)"
        ))?;
        let insert = format!(
            "INSERT INTO {ident} (payload) \
             SELECT md5(random()::text) FROM generate_series(1, {LOAD_ROWS_PER_TRANSACTION})"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let committed = Arc::clone(&committed);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    session.run(&insert).map_err(|e| {
                        let rows = committed.load(Ordering::Relaxed);
                        Error::new(format!("write load, after {rows} rows committed: {e}"))
                    })?;
                    committed.fetch_add(u64::from(LOAD_ROWS_PER_TRANSACTION), Ordering::Relaxed);
                    std::thread::sleep(LOAD_PAUSE);
                }
                Ok(())
            })
        };
        Ok(Self {
            stop,
            committed,
            thread: Some(thread),
        })
    }

    /// How many rows have been committed so far.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Stops the load after its current transaction and returns how many rows it committed,
    /// or why it stopped early (a failed insert ends the load).
    pub fn stop(mut self) -> Result<u64, Error> {
        self.finish()?;
        Ok(self.committed())
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::new("the write load's thread panicked")),
        }
    }
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Gives a copied data directory its socket directory and settings and starts it.
fn start_copy(server: &mut pgserver::Cluster, recovery: &Recovery) -> Result<u16, Error> {
    let user = server.user();
    let data = server.data_dir();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::new(format!("chmod 0700 {}: {e}", data.display())))?;
    let sock = server.socket_dir();
    ensure_dir(&sock, user)?;
    let archive = server.dir().join("archive");
    if let Some(source) = &recovery.archive {
        copy_tree(source, &archive, &|_| false, user)?;
    }
    append_auto_conf(
        &data,
        &[(
            "unix_socket_directories".to_owned(),
            sock.display().to_string(),
        )],
        user,
    )?;
    recovery.apply(&data, &archive, user)?;
    server.start()
}

/// Copies the WAL segments from `first` to `last` (file names) and the timeline history files
/// from `source` to `dest`, with an empty `archive_status`.
fn copy_wal(
    source: &Path,
    dest: &Path,
    first: &str,
    last: &str,
    user: ServerUser,
) -> Result<(), Error> {
    ensure_dir(&dest.join("archive_status"), user)?;
    let entries = fs::read_dir(source)
        .map_err(|e| Error::new(format!("reading {}: {e}", source.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::new(format!("reading {}: {e}", source.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let segment = name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit());
        let wanted = (segment && name.as_str() >= first && name.as_str() <= last)
            || name.ends_with(".history");
        if wanted {
            copy_file(&entry.path(), &dest.join(&name), user)?;
        }
    }
    Ok(())
}

/// Copies directory `source` to `dest` (created, mode 0700) recursively, handing everything to
/// `user`. Entries for which `skip(path relative to source)` holds are left out, except that
/// skipped directories are created empty. Files and directories that vanish while the copy
/// runs (a live server's temporary files, a dropped database) are left out too.
fn copy_tree(
    source: &Path,
    dest: &Path,
    skip: &dyn Fn(&Path) -> bool,
    user: ServerUser,
) -> Result<(), Error> {
    copy_dir(source, dest, Path::new(""), skip, user)
}

fn copy_dir(
    source: &Path,
    dest: &Path,
    rel: &Path,
    skip: &dyn Fn(&Path) -> bool,
    user: ServerUser,
) -> Result<(), Error> {
    let here = dest.join(rel);
    ensure_dir(&here, user)?;
    let from = source.join(rel);
    let entries = match fs::read_dir(&from) {
        Ok(entries) => entries,
        // A directory removed meanwhile (a dropped database): the WAL replays the removal.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel != Path::new("") => {
            return Ok(());
        }
        Err(e) => return Err(Error::new(format!("reading {}: {e}", from.display()))),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::new(format!("reading {}: {e}", from.display())))?;
        let rel = rel.join(entry.file_name());
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::new(format!(
                    "reading {}: {e}",
                    entry.path().display()
                )))
            }
        };
        if kind.is_dir() {
            if skip(&rel) {
                ensure_dir(&dest.join(&rel), user)?;
            } else {
                copy_dir(source, dest, &rel, skip, user)?;
            }
        } else if kind.is_file() && !skip(&rel) {
            copy_file(&entry.path(), &dest.join(&rel), user)?;
        } else if !skip(&rel) {
            return Err(Error::new(format!(
                "{} is neither a file nor a directory: tablespaces and symbolic links are not \
                 supported",
                entry.path().display()
            )));
        }
    }
    Ok(())
}

/// Whether `rel`, a path relative to the data directory, is one of `names`.
fn is_one_of(rel: &Path, names: &[&str]) -> bool {
    names.iter().any(|n| rel == Path::new(n))
}

/// Copies one file (with its mode), handing it to `user`; a file that vanished is no error.
fn copy_file(from: &Path, to: &Path, user: ServerUser) -> Result<(), Error> {
    match fs::copy(from, to) {
        Ok(_) => user.chown(to),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => Ok(()),
        Err(e) => Err(Error::new(format!(
            "copying {} to {}: {e}",
            from.display(),
            to.display()
        ))),
    }
}

/// Creates `dir` (mode 0700, owned by `user`) unless it exists.
fn ensure_dir(dir: &Path, user: ServerUser) -> Result<(), Error> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Error::new(format!("creating {}: {e}", dir.display())));
        }
        _ => {}
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::new(format!("chmod 0700 {}: {e}", dir.display())))?;
    user.chown(dir)
}

/// Writes `path` (mode 0600), handing it to `user`.
fn write_owned(path: &Path, contents: &[u8], user: ServerUser) -> Result<(), Error> {
    fs::write(path, contents)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o600)))
        .map_err(|e| Error::new(format!("writing {}: {e}", path.display())))?;
    user.chown(path)
}

/// Appends `name = 'value'` lines to `postgresql.auto.conf` in `data`, which wins over
/// `postgresql.conf` and over what the source had there.
fn append_auto_conf(
    data: &Path,
    settings: &[(String, String)],
    user: ServerUser,
) -> Result<(), Error> {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let path = data.join("postgresql.auto.conf");
    let mut text = String::from("\n# Added by pgtest.\n");
    for (name, value) in settings {
        let _ = writeln!(text, "{name} = {}", quote_literal(value));
    }
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::new(format!("appending to {}: {e}", path.display())))?;
    user.chown(&path)
}

/// The bytes of hex text (from `encode(..., 'hex')`).
fn decode_hex(hex: &str) -> Result<Vec<u8>, Error> {
    let bad = || Error::new(format!("bad hex from the server: {hex:?}"));
    let hex = hex.trim().as_bytes();
    if !hex.len().is_multiple_of(2) {
        return Err(bad());
    }
    hex.chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes_and_rejects_odd_or_bad_digits() {
        assert_eq!(decode_hex("4c4142454c0a").unwrap(), b"LABEL\n");
        assert!(decode_hex("4c4").is_err());
        assert!(decode_hex("zz").is_err());
    }
}

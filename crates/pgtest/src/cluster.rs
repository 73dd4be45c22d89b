//! One test cluster: configuration, SQL, and sharing between test processes. Creating,
//! starting, stopping and removing the server is [`pgserver::Cluster`]'s.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgserver::{Installation, ServerUser, HOST, SUPERUSER};

use crate::bins;
use crate::guard::{self, ProcessId};
use crate::{Error, Session};

/// How long to wait for another process to start a shared cluster (as long as `pg_ctl` waits
/// for a server to start).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The settings of every test cluster, on top of pgserver's throwaway defaults: room for the
/// slots, WAL senders, prepared transactions and connections of many tests at once (a test
/// binary's shared cluster outlives the slots its tests leave behind: 40 ran out in CI once
/// the physical and topology tests came).
const TEST_SETTINGS: [(&str, &str); 5] = [
    ("wal_level", "logical"),
    ("max_wal_senders", "40"),
    ("max_replication_slots", "200"),
    ("max_prepared_transactions", "20"),
    ("max_connections", "60"),
];

/// How a cluster is set up. Start one with [`Config::start`].
///
/// The defaults: wal_level=logical, room for replication slots, WAL senders and prepared
/// transactions, pgserver's throwaway settings (fsync off, 127.0.0.1 only, ...), superuser
/// `postgres` trusted over the Unix socket and on 127.0.0.1 (including replication
/// connections).
///
/// ```no_run
/// let cluster = pgtest::Config::new(17)
///     .setting("logical_decoding_work_mem", "64kB")
///     .start()?;
/// # Ok::<(), pgtest::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    major: u32,
    settings: Vec<(String, String)>,
    hba_lines: Vec<String>,
    trust_localhost: bool,
    files: Vec<(String, Vec<u8>)>,
    initdb_args: Vec<String>,
}

impl Config {
    /// The default configuration for PostgreSQL `major`.
    pub fn new(major: u32) -> Self {
        Self {
            major,
            settings: Vec::new(),
            hba_lines: Vec::new(),
            trust_localhost: true,
            files: Vec::new(),
            initdb_args: Vec::new(),
        }
    }

    /// Adds `name = 'value'` to `postgresql.conf` (after the defaults, so it wins).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a `pg_hba.conf` line, before the default trust lines (so it is matched first).
    pub fn hba_line(mut self, line: &str) -> Self {
        self.hba_lines.push(line.to_owned());
        self
    }

    /// Whether to append the default `trust` lines for local and 127.0.0.1 connections
    /// (default true). Turn off for clusters that must demand a password or certificate.
    pub fn trust_localhost(mut self, trust: bool) -> Self {
        self.trust_localhost = trust;
        self
    }

    /// Writes a file into the data directory (mode 0600) before the server starts, for example
    /// `server.key`; refer to it from a [`setting`](Self::setting) by its bare name.
    pub fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.to_owned(), contents.into()));
        self
    }

    /// Passes an extra argument to `initdb` (for example `--pwfile=...`).
    pub fn initdb_arg(mut self, arg: &str) -> Self {
        self.initdb_args.push(arg.to_owned());
        self
    }

    /// Starts a cluster of its own, stopped and removed when the handle is dropped.
    pub fn start(self) -> Result<Cluster, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let owner = ProcessId::current();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("own-{}-{n}-pg{}", owner.pid, self.major);
        Cluster::create(self, &name, owner, true)
    }
}

/// A running PostgreSQL cluster: its address, SQL access and lifetime.
///
/// Owned clusters ([`Config::start`]) stop and delete their directory on drop, also while a
/// test panics (pgserver's guard, which also waits for the postmaster to exit); shared ones
/// ([`cluster`](crate::cluster)) end with the test run: a watchdog process stops them when the
/// test process exits (see the crate docs and [`root_dir`](crate::root_dir)).
#[derive(Debug)]
pub struct Cluster {
    /// Detached for shared clusters: the watchdog removes those.
    server: pgserver::Cluster,
}

impl Cluster {
    /// The server's major version.
    pub fn major(&self) -> u32 {
        self.server.major()
    }

    /// The host to connect to over TCP (`127.0.0.1`).
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port (the Unix socket in [`socket_dir`](Self::socket_dir) uses the same number).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The superuser to connect as.
    pub fn user(&self) -> &str {
        SUPERUSER
    }

    /// The directory holding the server's Unix socket `.s.PGSQL.<port>`.
    pub fn socket_dir(&self) -> PathBuf {
        self.server.socket_dir()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.server.data_dir()
    }

    /// The directory of this major's server binaries.
    pub fn bin_dir(&self) -> &Path {
        self.server.bin_dir()
    }

    /// The server log file.
    pub fn log_file(&self) -> PathBuf {
        self.server.log_file()
    }

    /// A key=value conninfo for `dbname`: `host=127.0.0.1 port=N user=postgres dbname=...`.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host={HOST} port={} user={SUPERUSER} dbname={}",
            self.port(),
            quote_conninfo(dbname)
        )
    }

    /// A URL conninfo for `dbname`: `postgresql://postgres@127.0.0.1:N/dbname`.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@{HOST}:{}/{}",
            self.port(),
            percent_encode(dbname)
        )
    }

    /// Runs `sql` (any number of statements) in `dbname` through
    /// `psql -X -A -t -q -v ON_ERROR_STOP=1`; returns what it printed, without the final
    /// newline. Rows are separated by newlines and columns by `|`.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, Error> {
        let mut out = self.run_psql(dbname, sql, &[])?;
        if out.ends_with('\n') {
            out.pop();
        }
        Ok(out)
    }

    /// Runs `sql` in `dbname` and returns the rows its statements printed, each a list of
    /// column values (a NULL is an empty string). Values may contain newlines and `|`, but not
    /// the ASCII unit separator (0x1F), which separates the columns.
    pub fn query(&self, dbname: &str, sql: &str) -> Result<Vec<Vec<String>>, Error> {
        // Zero bytes separate records (no text value can contain one) and the ASCII unit
        // separator separates fields.
        let out = self.run_psql(dbname, sql, &["-F", "\u{1f}", "-0"])?;
        Ok(out
            .split('\0')
            .map(|r| r.strip_prefix('\n').unwrap_or(r))
            .filter(|r| !r.is_empty())
            .map(|r| r.split('\u{1f}').map(str::to_owned).collect())
            .collect())
    }

    /// `SHOW server_version`, for example `"17.2"`.
    pub fn server_version(&self) -> Result<String, Error> {
        self.psql("postgres", "SHOW server_version")
    }

    /// Creates database `name` (dropping a leftover one of that name and its replication slots
    /// first, so a retried test starts clean) and returns a handle to it.
    ///
    /// Shared clusters are used by many tests at once: give each test its own database, named
    /// after the test.
    pub fn create_database(&self, name: &str) -> Result<Database<'_>, Error> {
        let ident = quote_ident(name);
        let lit = quote_literal(name);
        self.psql(
            "postgres",
            &format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE database = {lit};\n\
                 DROP DATABASE IF EXISTS {ident} WITH (FORCE);\n\
                 CREATE DATABASE {ident};\n"
            ),
        )?;
        Ok(Database {
            cluster: self,
            name: name.to_owned(),
        })
    }

    /// A name no other test in this run will use, for a slot, publication or database:
    /// `<prefix>_<pid>_<n>`, lower case and at most 63 bytes as PostgreSQL requires.
    pub fn unique_name(&self, prefix: &str) -> String {
        unique_name(prefix)
    }

    fn run_psql(&self, dbname: &str, sql: &str, extra: &[&str]) -> Result<String, Error> {
        let psql = bins::psql();
        let mut cmd = Command::new(&psql);
        self.psql_args(&mut cmd, dbname);
        cmd.args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            Error::new(format!(
                "running {}: {e} (PostgreSQL 15's psql is expected at \
                 /usr/lib/postgresql/15/bin/psql; set WALSTREAM_PSQL to use another)",
                psql.display()
            ))
        })?;
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(sql.as_bytes()))
            .transpose();
        let out = child
            .wait_with_output()
            .map_err(|e| Error::new(format!("waiting for psql: {e}")))?;
        if !out.status.success() {
            return Err(Error::new(format!(
                "psql on PostgreSQL {} port {} ({}) failed: {}\nSQL: {}",
                self.major(),
                self.port(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                abbreviate(sql)
            )));
        }
        written.map_err(|e| Error::new(format!("writing SQL to psql: {e}")))?;
        String::from_utf8(out.stdout)
            .map_err(|e| Error::new(format!("psql printed invalid UTF-8: {e}")))
    }

    /// Opens a [`Session`]: one `psql` process, kept open across statements.
    pub fn session(&self, dbname: &str) -> Result<Session, Error> {
        Session::open(self, dbname)
    }

    /// The arguments and environment of every `psql` we run: no psqlrc, unaligned tuples only,
    /// stop at the first error, SQL from stdin, and no `PG*` variables of the caller's that
    /// could point it elsewhere.
    pub(crate) fn psql_args(&self, cmd: &mut Command, dbname: &str) {
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
            "-d",
        ])
        .arg(self.conninfo(dbname))
        .env("PGCONNECT_TIMEOUT", "30")
        .env("PGAPPNAME", "pgtest");
        for var in [
            "PGPASSWORD",
            "PGSERVICE",
            "PGOPTIONS",
            "PGSSLMODE",
            "PGTZ",
            "PGCLIENTENCODING",
        ] {
            cmd.env_remove(var);
        }
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are terminated, walsenders end their
    /// streams); [`start_again`](Self::start_again) brings it back on the same port.
    pub fn stop(&self) -> Result<(), Error> {
        self.server.stop()
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`); start it again with
    /// [`start_again`](Self::start_again). Give the cluster `fsync = on` for a real crash.
    pub fn crash(&self) -> Result<(), Error> {
        self.server.crash()
    }

    /// Starts a server stopped with [`stop`](Self::stop) or [`crash`](Self::crash), on the
    /// same port.
    pub fn start_again(&self) -> Result<(), Error> {
        self.server.start_again()
    }

    /// Creates the cluster directory `<root>/<name>`, or waits for another process that is
    /// creating it, and returns the running cluster.
    pub(crate) fn create(
        config: Config,
        name: &str,
        owner: ProcessId,
        owned: bool,
    ) -> Result<Self, Error> {
        let install = bins::installation(config.major)?;
        let user = ServerUser::detect()?;
        let root = guard::ensure_root()?;
        reap_once(&root, user);
        let dir = root.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !owned => {
                return Self::wait_for(dir, install, user);
            }
            Err(e) => return Err(Error::new(format!("creating {}: {e}", dir.display()))),
        }
        let mut server =
            pgserver::Cluster::create_in(install, user, dir.clone()).inspect_err(|e| {
                let _ = fs::write(dir.join("failed"), e.to_string());
                if owned {
                    let _ = fs::remove_dir_all(&dir);
                }
            })?;
        if !owned {
            server.detach();
        }
        match init_and_start(&mut server, &config, owner) {
            Ok(port) => {
                let _ = fs::write(dir.join("ready"), port.to_string());
                Ok(Self { server })
            }
            Err(e) => {
                // Tell processes waiting for a shared cluster why; its directory stays for them
                // to read until the watchdog removes it. Dropping an owned one removes it now.
                let _ = fs::write(dir.join("failed"), e.to_string());
                drop(server);
                Err(e)
            }
        }
    }

    /// Starts a cluster of its own whose data directory `fill` writes instead of `initdb` (a
    /// copy of another cluster's, for [`standby`](crate::standby)): the directory, owner marker
    /// and watchdog are those of [`Config::start`], and `fill` also starts the server. On error
    /// the directory is removed.
    pub(crate) fn create_filled(
        major: u32,
        fill: impl FnOnce(&mut pgserver::Cluster) -> Result<u16, Error>,
    ) -> Result<Self, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let install = bins::installation(major)?;
        let user = ServerUser::detect()?;
        let root = guard::ensure_root()?;
        reap_once(&root, user);
        let owner = ProcessId::current();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("copy-{}-{n}-pg{major}", owner.pid));
        fs::create_dir(&dir).map_err(|e| Error::new(format!("creating {}: {e}", dir.display())))?;
        let mut server = pgserver::Cluster::create_in(install, user, dir.clone())
            .inspect_err(|_| drop(fs::remove_dir_all(&dir)))?;
        guard::claim(server.dir(), owner, server.bin_dir())?;
        guard::spawn_watchdog(
            server.user(),
            server.dir(),
            owner,
            &server.installation().tool("pg_ctl"),
        )?;
        fill(&mut server)?;
        Ok(Self { server })
    }

    fn wait_for(dir: PathBuf, install: Installation, user: ServerUser) -> Result<Self, Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(port) = fs::read_to_string(dir.join("ready")) {
                let port = port.trim().parse().map_err(|_| {
                    Error::new(format!("bad port {port:?} in {}/ready", dir.display()))
                })?;
                return Ok(Self {
                    server: pgserver::Cluster::attach(install, user, dir, port),
                });
            }
            if let Ok(why) = fs::read_to_string(dir.join("failed")) {
                return Err(Error::new(why));
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "timed out waiting for another process to start the cluster in {}",
                    dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sets up the cluster in `server`'s directory and starts it: the owner marker and the
/// watchdog first (so that a test killed during `initdb` leaves nothing either), then `initdb`,
/// the settings, `pg_hba.conf` and the config's files.
fn init_and_start(
    server: &mut pgserver::Cluster,
    config: &Config,
    owner: ProcessId,
) -> Result<u16, Error> {
    guard::claim(server.dir(), owner, server.bin_dir())?;
    guard::spawn_watchdog(
        server.user(),
        server.dir(),
        owner,
        &server.installation().tool("pg_ctl"),
    )?;
    let initdb_args: Vec<&str> = config.initdb_args.iter().map(String::as_str).collect();
    server.initdb(&initdb_args)?;
    let extra = config
        .settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()));
    server.configure(TEST_SETTINGS.into_iter().chain(extra))?;

    let mut hba = String::from("# Written by pgtest.\n");
    for line in &config.hba_lines {
        let _ = writeln!(hba, "{line}");
    }
    if config.trust_localhost {
        hba.push_str(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n\
             local replication all trust\nhost replication all 127.0.0.1/32 trust\n",
        );
    }
    server.write_file("pg_hba.conf", hba.as_bytes())?;
    for (name, contents) in &config.files {
        server.write_file(name, contents)?;
    }
    server.start()
}

/// A database of a [`Cluster`], made by [`Cluster::create_database`].
#[derive(Debug)]
pub struct Database<'c> {
    cluster: &'c Cluster,
    name: String,
}

impl Database<'_> {
    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster it lives in.
    pub fn cluster(&self) -> &Cluster {
        self.cluster
    }

    /// Key=value conninfo for this database (see [`Cluster::conninfo`]).
    pub fn conninfo(&self) -> String {
        self.cluster.conninfo(&self.name)
    }

    /// URL conninfo for this database (see [`Cluster::url`]).
    pub fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    /// Runs SQL in this database (see [`Cluster::psql`]).
    pub fn psql(&self, sql: &str) -> Result<String, Error> {
        self.cluster.psql(&self.name, sql)
    }

    /// Runs SQL in this database and returns its rows (see [`Cluster::query`]).
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<String>>, Error> {
        self.cluster.query(&self.name, sql)
    }

    /// Opens a [`Session`] on this database (see [`Cluster::session`]).
    pub fn session(&self) -> Result<Session, Error> {
        self.cluster.session(&self.name)
    }
}

/// See [`Cluster::unique_name`].
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{clean}_{}_{n}", std::process::id())
}

fn reap_once(root: &Path, user: ServerUser) {
    static REAPED: std::sync::Once = std::sync::Once::new();
    REAPED.call_once(|| guard::reap_stale(root, user));
}

fn abbreviate(sql: &str) -> String {
    match sql.char_indices().nth(500) {
        Some((i, _)) => format!("{}...", sql.get(..i).unwrap_or(sql)),
        None => sql.to_owned(),
    }
}

/// `'...'` with quotes doubled: a SQL string literal, also valid in `postgresql.conf`.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `"..."` with quotes doubled: a SQL identifier.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_conninfo(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

//! One throwaway cluster: its directory, `initdb`, `pg_ctl`, and the guard that removes it.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Error, Installation, ServerUser, HOST, SUPERUSER};

/// How long `pg_ctl` waits for a server to start or stop: generous, because a test run on a
/// loaded two-core machine starts several servers at once.
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long dropping a cluster waits for its postmaster to exit after `pg_ctl stop` returned.
const POSTMASTER_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many free ports [`Cluster::start`] tries: a port found free may be taken by another
/// process before the server binds it.
const START_ATTEMPTS: usize = 5;

/// Lines of the server log quoted when a start fails.
const LOG_LINES_QUOTED: usize = 20;

/// The settings [`Cluster::initdb`] writes for every cluster: reachable from this machine only,
/// and fast rather than durable (a throwaway cluster need not survive a crash).
const THROWAWAY_SETTINGS: [(&str, &str); 6] = [
    ("listen_addresses", HOST),
    // fsync off makes commits cheap. synchronous_commit stays on: logical decoding only sees
    // flushed WAL, and callers expect a committed change to be decodable at once.
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("shared_buffers", "32MB"),
    ("log_min_messages", "warning"),
    ("timezone", "UTC"),
];

/// A cluster directory and the server running in it; the guard of both.
///
/// The directory holds `data/` (the data directory), `sock/` (the Unix socket directory) and
/// `server.log`, all owned by the [`ServerUser`]. Unless [`detach`](Self::detach)ed, dropping
/// the handle (also while a panic unwinds) runs `pg_ctl stop -m immediate`, waits for the
/// postmaster to exit, and removes the directory; [`remove`](Self::remove) does the same and
/// says what went wrong. Every server command runs as the server user, in a process group of
/// its own, so that a Ctrl-C in the terminal reaches only the caller, which then stops the
/// server through this guard. The call sequence is in the crate docs.
#[derive(Debug)]
pub struct Cluster {
    install: Installation,
    user: ServerUser,
    dir: PathBuf,
    port: u16,
    /// Whether dropping the handle stops the server and removes the directory.
    owned: bool,
}

impl Cluster {
    /// A new, private (mode 0700) directory `<temp dir>/<prefix>-<pid>-<n>`, handed to `user`.
    pub fn create_temp(
        install: Installation,
        user: ServerUser,
        prefix: &str,
    ) -> Result<Self, Error> {
        let dir = make_temp_dir(prefix)?;
        if let Err(e) = user.chown(&dir) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(Self::owning(install, user, dir))
    }

    /// Takes over `dir`, an empty directory the caller made, and hands it to `user`. On error,
    /// the directory is left as it was.
    pub fn create_in(install: Installation, user: ServerUser, dir: PathBuf) -> Result<Self, Error> {
        user.chown(&dir)?;
        Ok(Self::owning(install, user, dir))
    }

    /// A handle to a cluster that someone else set up in `dir` and started on `port` (another
    /// process, for example). It is detached: dropping it stops and removes nothing.
    pub fn attach(install: Installation, user: ServerUser, dir: PathBuf, port: u16) -> Self {
        Self {
            install,
            user,
            dir,
            port,
            owned: false,
        }
    }

    fn owning(install: Installation, user: ServerUser, dir: PathBuf) -> Self {
        Self {
            install,
            user,
            dir,
            port: 0,
            owned: true,
        }
    }

    /// From now on, dropping this handle stops and removes nothing: someone else (a watchdog
    /// process, say) cleans up.
    pub fn detach(&mut self) {
        self.owned = false;
    }

    /// The server's major version.
    pub fn major(&self) -> u32 {
        self.install.major()
    }

    /// The server binaries.
    pub fn installation(&self) -> &Installation {
        &self.install
    }

    /// The directory of the server binaries.
    pub fn bin_dir(&self) -> &Path {
        self.install.bin_dir()
    }

    /// The user that runs the server.
    pub fn user(&self) -> ServerUser {
        self.user
    }

    /// The cluster directory, which holds everything else.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory, `<dir>/data`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory of the server's Unix socket `.s.PGSQL.<port>`, `<dir>/sock`.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The server log, `<dir>/server.log`.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The TCP port on [`HOST`] (and the number of the Unix socket); 0 before the first start.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid, from `postmaster.pid`, while the server runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Creates the data directory (`initdb -U postgres -A trust -E UTF8 --locale=C -N`, then
    /// `extra_args`) and the socket directory, and writes the settings every throwaway cluster
    /// has: it listens on [`HOST`] and in [`socket_dir`](Self::socket_dir) only, with `fsync`
    /// and `full_page_writes` off, `shared_buffers = 32MB`, `log_min_messages = warning` and
    /// `timezone = UTC`.
    pub fn initdb(&self, extra_args: &[&str]) -> Result<(), Error> {
        let sock = self.socket_dir();
        fs::create_dir(&sock)
            .map_err(|e| Error::new(format!("creating {}: {e}", sock.display())))?;
        self.user.chown(&sock)?;
        let mut initdb = self.server_command("initdb");
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .args(extra_args);
        self.run(&mut initdb, "initdb")?;
        let sock = sock.display().to_string();
        self.configure(
            THROWAWAY_SETTINGS
                .into_iter()
                .chain([("unix_socket_directories", sock.as_str())]),
        )
    }

    /// Appends `name = 'value'` lines to `postgresql.conf` (after those written before, so they
    /// win).
    pub fn configure<'a>(
        &self,
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), Error> {
        let mut conf = String::from("\n# Added by pgserver.\n");
        for (name, value) in settings {
            let _ = writeln!(conf, "{name} = '{}'", value.replace('\'', "''"));
        }
        let path = self.data_dir().join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| Error::new(format!("appending to {}: {e}", path.display())))
    }

    /// Writes `name` in the data directory (mode 0600, owned by the server user), replacing a
    /// file of that name: `pg_hba.conf`, or a `server.key` that a setting refers to by its bare
    /// name.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> Result<(), Error> {
        let path = self.data_dir().join(name);
        fs::write(&path, contents)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o600)))
            .map_err(|e| Error::new(format!("writing {}: {e}", path.display())))?;
        self.user.chown(&path)
    }

    /// Starts the server on a free port of [`HOST`] and returns the port.
    pub fn start(&mut self) -> Result<u16, Error> {
        let mut last = Error::new("no start attempted");
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match self.pg_ctl_start(port) {
                Ok(()) => {
                    self.port = port;
                    return Ok(port);
                }
                Err(e) => {
                    let log = fs::read_to_string(self.log_file()).unwrap_or_default();
                    last = Error::new(format!(
                        "{e}\nserver log:\n{}",
                        last_lines(&log, LOG_LINES_QUOTED)
                    ));
                    if !log.contains("Address already in use") {
                        break;
                    }
                    let _ = fs::remove_file(self.log_file());
                }
            }
        }
        Err(last)
    }

    /// Starts a server stopped with [`stop`](Self::stop), on the same port.
    pub fn start_again(&self) -> Result<(), Error> {
        self.pg_ctl_start(self.port)
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are terminated, walsenders end their
    /// streams); [`start_again`](Self::start_again) brings it back.
    pub fn stop(&self) -> Result<(), Error> {
        self.pg_ctl_stop("fast")
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no shutdown checkpoint,
    /// connections dropped, the next start recovers from WAL); [`start_again`](Self::start_again)
    /// brings it back. A crash is only realistic with `fsync` on (see
    /// [`configure`](Self::configure)).
    pub fn crash(&self) -> Result<(), Error> {
        self.pg_ctl_stop("immediate")
    }

    /// `pg_ctl stop` in `mode`, waiting for it.
    fn pg_ctl_stop(&self, mode: &str) -> Result<(), Error> {
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", &PG_CTL_TIMEOUT.as_secs().to_string()])
            .args(["-s", "-m", mode, "stop"]);
        self.run(&mut pg_ctl, "pg_ctl stop")
    }

    /// Stops the server (`pg_ctl stop -m immediate`), waits for the postmaster to exit and
    /// removes the directory, as dropping the handle does (even a detached one), but says what
    /// went wrong: every step is tried, and the first failure is returned.
    pub fn remove(mut self) -> Result<(), Error> {
        let result = self.clean_up();
        self.owned = false;
        result
    }

    fn clean_up(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        let postmaster = self.postmaster_pid();
        if self.data_dir().join("postmaster.pid").exists() {
            let mut pg_ctl = self.server_command("pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", &PG_CTL_TIMEOUT.as_secs().to_string()])
                .args(["-s", "-m", "immediate", "stop"]);
            if let Err(e) = self.run(&mut pg_ctl, "pg_ctl stop") {
                errors.push(e);
            }
        }
        // pg_ctl returns once the pid file is gone, a moment before the postmaster has exited:
        // wait for that too, so that no server outlives its directory.
        if let Some(pid) = postmaster {
            let deadline = Instant::now() + POSTMASTER_EXIT_TIMEOUT;
            while is_postgres_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if is_postgres_running(pid) {
                errors.push(Error::new(format!(
                    "the postmaster of {} (pid {pid}) is still running",
                    self.dir.display()
                )));
            }
        }
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                errors.push(Error::new(format!("removing {}: {e}", self.dir.display())))
            }
            _ => {}
        }
        errors.into_iter().next().map_or(Ok(()), Err)
    }

    fn pg_ctl_start(&self, port: u16) -> Result<(), Error> {
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args([
                "-w",
                "-t",
                &PG_CTL_TIMEOUT.as_secs().to_string(),
                "-s",
                "-o",
            ])
            .arg(format!("-p {port}"))
            .arg("start");
        self.run(&mut pg_ctl, "pg_ctl start")
    }

    /// `<bin>/<tool>` as the server user, in the cluster directory, in a process group of its
    /// own (see the type docs), with no `PG*` variables of the caller's that point elsewhere.
    fn server_command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.install.tool(tool));
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .process_group(0);
        self.user.apply(&mut cmd);
        cmd
    }

    fn run(&self, cmd: &mut Command, what: &str) -> Result<(), Error> {
        let out = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                Error::new(format!(
                    "running {what} ({:?}) as {}: {e}",
                    cmd.get_program(),
                    self.user.describe()
                ))
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "PostgreSQL {}: {what} failed ({}), running as {}:\n{}{}",
                self.major(),
                out.status,
                self.user.describe(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr).trim_end()
            )))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned {
            // Nobody is left to tell: `remove` is the way to hear about failures.
            let _ = self.clean_up();
        }
    }
}

/// A TCP port on [`HOST`] that was free a moment ago.
pub fn free_port() -> Result<u16, Error> {
    TcpListener::bind((HOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::new(format!("finding a free port on {HOST}: {e}")))
}

/// A new directory `<prefix>-<pid>-<n>` in the temporary directory, mode 0700.
pub(crate) fn make_temp_dir(prefix: &str) -> Result<PathBuf, Error> {
    let base = std::env::temp_dir();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "{prefix}-{}-{:x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                return fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map(|()| dir.clone())
                    .map_err(|e| {
                        let _ = fs::remove_dir(&dir);
                        Error::new(format!("chmod 700 {}: {e}", dir.display()))
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::new(format!("creating {}: {e}", dir.display()))),
        }
    }
    Err(Error::new(format!(
        "creating a directory in {}: every name taken",
        base.display()
    )))
}

/// Whether process `pid` is a `postgres` that has not exited (a zombie waiting for its parent
/// has exited; another program that got the pid of a postmaster long gone is not ours).
fn is_postgres_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .and_then(|rest| rest.split_whitespace().next());
    stat.contains("(postgres)") && !matches!(state, Some("Z" | "X"))
}

fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all.get(all.len().saturating_sub(lines)..)
        .unwrap_or_default()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_new_and_private() {
        let a = make_temp_dir("pgserver-unit").unwrap();
        let b = make_temp_dir("pgserver-unit").unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with(&format!("pgserver-unit-{}-", std::process::id())),
            "{name}"
        );
        assert_eq!(
            fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::remove_dir(a).unwrap();
        fs::remove_dir(b).unwrap();
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        assert!(TcpListener::bind((HOST, port)).is_ok());
    }

    #[test]
    fn the_last_lines_of_a_log() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\n", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }

    #[test]
    fn only_a_live_postgres_counts_as_running() {
        // This test process is running, but it is not a postgres.
        assert!(!is_postgres_running(std::process::id()));
        assert!(!is_postgres_running(u32::MAX));
    }
}

//! `walstream demo`: the one-command first run.
//!
//! Finds PostgreSQL server binaries on this machine, starts a throwaway cluster in a temporary
//! directory (as the `postgres` user when run as root: PostgreSQL refuses to run as root),
//! creates a demo table, a publication and a slot, writes a mix of changes in the background
//! over a walconn connection, and tails them with [`tail::follow`], the code path of `tail`.
//! The cluster is stopped and its directory removed however the demo ends: by a signal,
//! `--seconds`, a closed stdout, or an error (the [`Cluster`] guard's `Drop`).

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use walstream::walconn::{self, CreateSlotOptions, SnapshotAction};
use walstream::CancellationToken;

use crate::tail::{self, Summary, TailError};
use crate::{OriginArg, StreamArgs, StreamingArg};

/// The slot and the publication the demo creates.
const NAME: &str = "walstream_demo";

/// The time between two small transactions of the writer.
const TICK: Duration = Duration::from_millis(250);

/// Every this many ticks the writer runs one large transaction instead of a small one, the
/// first after [`LARGE_FIRST`] ticks (so even a short demo shows one).
const LARGE_EVERY: u64 = 24;
const LARGE_FIRST: u64 = 6;

/// Rows in a large transaction: far more than `logical_decoding_work_mem` (64kB in the demo
/// cluster) holds, so the server streams it before it commits (PostgreSQL 14+).
const LARGE_ROWS: u32 = 1000;

/// How long `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT_SECS: &str = "60";

/// The oldest major with logical replication (pgoutput).
const MIN_MAJOR: u32 = 10;

/// Why the demo failed.
#[derive(Debug)]
pub(crate) enum DemoError {
    /// No usable PostgreSQL server binaries were found; the message says what to install.
    NotFound(String),
    /// The cluster could not be set up, or the background writer failed.
    Setup(String),
    /// Tailing failed.
    Tail(TailError),
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoError::NotFound(m) | DemoError::Setup(m) => f.write_str(m),
            DemoError::Tail(e) => write!(f, "{e}"),
        }
    }
}

/// Runs the demo until a signal, `seconds`, or a failure.
pub(crate) async fn demo(
    seconds: Option<u64>,
    bin_dir: Option<&Path>,
) -> Result<Summary, DemoError> {
    let stop = CancellationToken::new();
    // Signals are caught from the start, so that Ctrl-C during the set-up still cleans up.
    tail::stop_on_signals(&stop).map_err(|e| DemoError::Setup(format!("catching signals: {e}")))?;
    let owner = server_user()?;
    let server = find_server(bin_dir, owner.is_some())?;
    tracing::info!(
        "using PostgreSQL {} from {}",
        server.major,
        server.bin_dir.display()
    );
    let cluster = Cluster::create(server, owner)?;
    if stop.is_cancelled() {
        return Ok(Summary::default());
    }
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        cluster.port
    );
    let setup = tokio::select! {
        r = set_up(&conninfo) => r,
        () = stop.cancelled() => return Ok(Summary::default()),
    };
    setup.map_err(|e| DemoError::Setup(format!("creating the demo schema: {e}")))?;
    tracing::info!(
        dir = %cluster.dir.display(),
        postmaster_pid = cluster.postmaster.unwrap_or(0),
        port = cluster.port,
        "demo cluster ready"
    );
    tracing::info!(
        "PostgreSQL {} on 127.0.0.1:{}: a writer changes table public.orders, printed below \
         as JSON lines{}",
        cluster.major,
        cluster.port,
        match seconds {
            Some(1) => " for 1 second".to_owned(),
            Some(n) => format!(" for {n} seconds"),
            None => "; Ctrl-C stops the server and removes its directory".to_owned(),
        }
    );

    if let Some(n) = seconds {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(n)) => stop.cancel(),
                () = stop.cancelled() => {}
            }
        });
    }
    let writer = {
        let (conninfo, stop) = (conninfo.clone(), stop.clone());
        tokio::spawn(async move {
            let written = write_changes(conninfo, stop.clone()).await;
            // A writer that failed ends the demo, rather than leave it tailing an idle server.
            if written.is_err() {
                stop.cancel();
            }
            written
        })
    };
    let args = StreamArgs {
        conninfo,
        slot: NAME.to_owned(),
        publication: vec![NAME.to_owned()],
        create_slot: false,
        temporary: false,
        proto_version: None,
        // The most the server can do: pgoutput streams large transactions from 14, in
        // parallel mode (protocol 4) from 16.
        streaming: match cluster.major {
            16.. => StreamingArg::Parallel,
            14 | 15 => StreamingArg::On,
            _ => StreamingArg::Off,
        },
        binary: false,
        messages: false,
        two_phase: false,
        origin: OriginArg::Any,
        start: None,
        end: None,
        status_interval: 10,
    };
    let tailed = tail::follow(&args, &stop).await;
    stop.cancel();
    let written = match writer.await {
        Ok(r) => r.map_err(|e| DemoError::Setup(format!("the demo writer failed: {e}"))),
        Err(e) => Err(DemoError::Setup(format!("the demo writer failed: {e}"))),
    };
    drop(cluster);
    let summary = tailed.map_err(DemoError::Tail)?;
    written?;
    Ok(summary)
}

/// One directory holding server binaries, and their major version.
#[derive(Debug, Clone)]
struct Server {
    major: u32,
    bin_dir: PathBuf,
}

/// The server in `bin_dir` if given, else the newest found in [`candidate_dirs`] that the
/// server user can run (as root, the `postgres` user must be able to reach the directory).
fn find_server(bin_dir: Option<&Path>, as_postgres: bool) -> Result<Server, DemoError> {
    let dirs = match bin_dir {
        Some(dir) if !is_server_dir(dir) => {
            return Err(DemoError::NotFound(format!(
                "{} does not hold postgres, initdb and pg_ctl; {INSTALL_HINT}",
                dir.display()
            )))
        }
        Some(dir) => vec![dir.to_path_buf()],
        None => candidate_dirs(),
    };
    let mut seen = Vec::new();
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(canonical) = dir.canonicalize() else {
            continue;
        };
        if seen.contains(&canonical) || !is_server_dir(&canonical) {
            continue;
        }
        seen.push(canonical);
        match major_of(&dir) {
            Some(major) => found.push(Server {
                major,
                bin_dir: dir,
            }),
            None => tracing::debug!("{}: no version from postgres --version", dir.display()),
        }
    }
    // The newest first; of one major, the first found.
    found.sort_by_key(|s| std::cmp::Reverse(s.major));
    let mut unusable = Vec::new();
    for server in found {
        if server.major < MIN_MAJOR {
            unusable.push(format!(
                "{} (PostgreSQL {}: no logical replication)",
                server.bin_dir.display(),
                server.major
            ));
        } else if as_postgres && !postgres_user_can_run(&server.bin_dir) {
            unusable.push(format!(
                "{} (the postgres user cannot run it: give others search permission on its \
                 parent directories)",
                server.bin_dir.display()
            ));
        } else {
            return Ok(server);
        }
    }
    let looked = if bin_dir.is_some() {
        String::new()
    } else {
        format!(
            " in PATH, `pg_config --bindir`, /usr/lib/postgresql/*/bin or {}",
            cache_dirs()
                .iter()
                .map(|d| format!("{}/<major>/bin", d.display()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(DemoError::NotFound(if unusable.is_empty() {
        format!("no PostgreSQL server binaries (postgres, initdb, pg_ctl) found{looked}; {INSTALL_HINT}")
    } else {
        format!(
            "no usable PostgreSQL server binaries found{looked}: {}; {INSTALL_HINT}",
            unusable.join(", ")
        )
    }))
}

fn postgres_user_can_run(bin_dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin_dir.join("postgres"))
        .arg("--version")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const INSTALL_HINT: &str = "install a server, for example `apt-get install postgresql-15` \
    (Debian, Ubuntu), `dnf install postgresql-server` (Fedora), `brew install postgresql@17` \
    (macOS), or, in the walstream repository, `cargo xtask pg install` (PostgreSQL 16-18 into \
    target/pg)";

/// Where server binaries may be, in no particular order (the newest major wins).
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for cache in cache_dirs() {
        dirs.extend(subdirs(&cache).into_iter().map(|d| d.join("bin")));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !dir.is_empty() {
                dirs.push(PathBuf::from(dir));
            }
        }
    }
    dirs.extend(
        subdirs(Path::new("/usr/lib/postgresql"))
            .into_iter()
            .map(|d| d.join("bin")),
    );
    dirs
}

/// The `cargo xtask pg install` caches (`<cache>/<major>/bin`): `$WALSTREAM_PG_CACHE`,
/// `$CARGO_TARGET_DIR/pg`, a `pg` directory beside this binary's profile directory (so
/// `cargo run` finds `target/pg`), and this workspace's `target/pg`.
fn cache_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("WALSTREAM_PG_CACHE") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(d).join("pg"));
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(3) {
            let pg = dir.join("pg");
            if pg.is_dir() {
                dirs.push(pg);
            }
        }
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pg"));
    dirs
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    dirs
}

fn is_server_dir(dir: &Path) -> bool {
    ["postgres", "initdb", "pg_ctl"]
        .iter()
        .all(|t| dir.join(t).is_file())
}

/// The major version `<dir>/postgres --version` prints ("postgres (PostgreSQL) 15.18 (Debian
/// 15.18-0+deb12u1)", "postgres (PostgreSQL) 18.1").
fn major_of(dir: &Path) -> Option<u32> {
    let out = Command::new(dir.join("postgres"))
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)?
        .split(['.', 'b', 'r'])
        .next()?
        .parse()
        .ok()
}

/// A running throwaway cluster; dropping it stops the server and removes its directory.
#[derive(Debug)]
struct Cluster {
    major: u32,
    bin_dir: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Whether server commands run as the `postgres` user (we are root).
    as_postgres: bool,
    /// Whether `pg_ctl start` was run (so there may be a server to stop).
    started: bool,
    /// The postmaster's pid once it runs.
    postmaster: Option<u32>,
}

impl Cluster {
    /// Makes the directory, runs initdb, writes the configuration and starts the server.
    fn create(server: Server, owner: Option<(u32, u32)>) -> Result<Self, DemoError> {
        let dir = make_temp_dir().map_err(DemoError::Setup)?;
        let mut cluster = Cluster {
            major: server.major,
            bin_dir: server.bin_dir,
            dir,
            port: 0,
            as_postgres: owner.is_some(),
            started: false,
            postmaster: None,
        };
        cluster
            .init_and_start(owner)
            .map_err(|e| DemoError::Setup(format!("starting PostgreSQL {}: {e}", cluster.major)))?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn init_and_start(&mut self, owner: Option<(u32, u32)>) -> Result<(), String> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown postgres {}: {e}", self.dir.display()))?;
        }
        let data = self.data_dir();
        let mut initdb = self.server_command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ]);
        run(&mut initdb, "initdb")?;

        let mut conf = String::from("\n# Added by walstream demo.\n");
        for (k, v) in [
            ("listen_addresses", "127.0.0.1".to_owned()),
            ("unix_socket_directories", self.dir.display().to_string()),
            ("wal_level", "logical".to_owned()),
            ("max_wal_senders", "10".to_owned()),
            ("max_replication_slots", "10".to_owned()),
            // Small, so that the writer's large transactions are streamed before they commit.
            ("logical_decoding_work_mem", "64kB".to_owned()),
            // A throwaway cluster need not survive a crash.
            ("fsync", "off".to_owned()),
            ("full_page_writes", "off".to_owned()),
            ("shared_buffers", "32MB".to_owned()),
            ("timezone", "UTC".to_owned()),
            ("log_min_messages", "warning".to_owned()),
        ] {
            let _ = writeln!(conf, "{k} = '{}'", v.replace('\'', "''"));
        }
        let conf_path = data.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .map_err(|e| format!("writing {}: {e}", conf_path.display()))?;

        // The port we find free may be taken before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut pg_ctl = self.server_command("pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(self.log_file())
                .args(["-w", "-t", PG_CTL_WAIT_SECS, "-s", "-o"])
                .arg(format!("-p {port}"))
                .arg("start");
            self.started = true;
            match run(&mut pg_ctl, "pg_ctl start") {
                Ok(()) => {
                    self.port = port;
                    self.postmaster = self.postmaster_pid();
                    return Ok(());
                }
                Err(e) => {
                    let log = fs::read_to_string(self.log_file()).unwrap_or_default();
                    last = format!("{e}\nserver log:\n{log}");
                    if !log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// The first line of `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<u32> {
        fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// `initdb`, `pg_ctl`: as the `postgres` user when we are root (through `runuser`), in a
    /// process group of their own, so that the terminal's Ctrl-C reaches only us and the
    /// server stops when we stop it, after the stream has ended cleanly.
    fn server_command(&self, tool: &str) -> Command {
        let program = self.bin_dir.join(tool);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .process_group(0);
        cmd
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started {
            let mut pg_ctl = self.server_command("pg_ctl");
            pg_ctl.arg("-D").arg(self.data_dir()).args([
                "-w",
                "-t",
                PG_CTL_WAIT_SECS,
                "-s",
                "-m",
                "immediate",
                "stop",
            ]);
            if let Err(e) = run(&mut pg_ctl, "pg_ctl stop") {
                tracing::warn!("stopping the demo server: {e}");
            }
            // pg_ctl returns once the pid file is gone, a moment before the postmaster has
            // exited: wait for that too, so that no server outlives the demo.
            if let Some(pid) = self.postmaster {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while is_running(pid) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if is_running(pid) {
                    tracing::warn!("the demo server (pid {pid}) is still running");
                }
            }
        }
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => tracing::info!("removed {}", self.dir.display()),
            Err(e) => tracing::warn!("removing {}: {e}", self.dir.display()),
        }
    }
}

/// Whether process `pid` exists and has not exited (a zombie waiting for its parent to reap
/// it has exited).
fn is_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .and_then(|rest| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

/// `Some((uid, gid))` of the `postgres` user when we are root, `None` otherwise.
fn server_user() -> Result<Option<(u32, u32)>, DemoError> {
    // `/proc/self` is owned by the effective uid of the process looking at it.
    let euid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1);
    if euid != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres"))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            DemoError::NotFound(
                "running as root, and PostgreSQL refuses to run as root, but there is no \
                 `postgres` user to run it as; create one (`useradd --system postgres`) or run \
                 the demo as an ordinary user"
                    .to_owned(),
            )
        })
}

/// A new directory `walstream-demo-<pid>-<n>` in the temporary directory, mode 0700.
fn make_temp_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "walstream-demo-{}-{:x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("creating {}: {e}", dir.display())),
        }
    }
    Err(format!(
        "creating a directory in {}: every name taken",
        base.display()
    ))
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port on 127.0.0.1: {e}"))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running {what} ({:?}): {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// The demo table, its publication and the slot (created before any change is written, so the
/// stream shows every one).
async fn set_up(conninfo: &str) -> Result<(), walstream::Error> {
    let mut conn = connect(conninfo).await?;
    conn.simple_query(&format!(
        "CREATE TABLE public.orders (
             id bigserial PRIMARY KEY,
             customer text NOT NULL,
             amount numeric(10, 2) NOT NULL,
             status text NOT NULL DEFAULT 'new',
             created_at timestamptz NOT NULL DEFAULT now(),
             details jsonb
         );
         -- Updates and deletes then carry the whole old row, and every column of the new one.
         ALTER TABLE public.orders REPLICA IDENTITY FULL;
         CREATE PUBLICATION {NAME} FOR TABLE public.orders;"
    ))
    .await?;
    let mut options = CreateSlotOptions::logical("pgoutput");
    options.snapshot = Some(SnapshotAction::Nothing);
    conn.create_replication_slot(NAME, &options).await?;
    conn.close().await?;
    Ok(())
}

async fn connect(conninfo: &str) -> Result<walconn::Connection, walstream::Error> {
    let config = walconn::Config::parse(conninfo)?;
    Ok(walconn::Connection::connect(&config).await?)
}

/// Writes one transaction every [`TICK`] until `stop`: inserts, updates and deletes, and now
/// and then a large transaction.
async fn write_changes(conninfo: String, stop: CancellationToken) -> Result<(), walstream::Error> {
    let mut conn = connect(&conninfo).await?;
    let mut rng = Rng::seeded();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for tick in 0u64.. {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => break,
        }
        let sql = statement(tick, &mut rng);
        tracing::debug!("demo writer: {sql}");
        // A query is never cancelled half-way (the connection would be out of step): the stop
        // is seen at the next tick.
        conn.simple_query(&sql).await?;
    }
    conn.close().await?;
    Ok(())
}

const CUSTOMERS: [&str; 6] = ["ada", "grace", "edsger", "barbara", "donald", "frances"];

/// The SQL of the writer's `tick`th transaction.
fn statement(tick: u64, rng: &mut Rng) -> String {
    if tick % LARGE_EVERY == LARGE_FIRST {
        // Alternately a bulk import and its removal, each one transaction of LARGE_ROWS rows.
        return if (tick / LARGE_EVERY) % 2 == 0 {
            format!(
                "INSERT INTO orders (customer, amount, status, details) \
                 SELECT 'bulk-' || g, (g % 500) + 0.99, 'imported', \
                        jsonb_build_object('batch', {tick}, 'line', g) \
                 FROM generate_series(1, {LARGE_ROWS}) AS g"
            )
        } else {
            "DELETE FROM orders WHERE status = 'imported'".to_owned()
        };
    }
    match tick % 4 {
        0 | 1 => {
            let customer = CUSTOMERS
                .get(rng.below(CUSTOMERS.len() as u64) as usize)
                .copied()
                .unwrap_or("ada");
            let cents = 100 + rng.below(99_900);
            let items = 1 + rng.below(5);
            let gift = rng.below(2) == 0;
            format!(
                "INSERT INTO orders (customer, amount, details) VALUES ('{customer}', {}.{:02}, \
                 '{{\"items\": {items}, \"gift\": {gift}}}')",
                cents / 100,
                cents % 100
            )
        }
        2 => "UPDATE orders SET status = CASE status WHEN 'new' THEN 'paid' ELSE 'shipped' END, \
              details = details || jsonb_build_object('updated_at', now()) \
              WHERE id = (SELECT min(id) FROM orders WHERE status IN ('new', 'paid'))"
            .to_owned(),
        _ => {
            "DELETE FROM orders WHERE id = (SELECT min(id) FROM orders WHERE status <> 'imported')"
                .to_owned()
        }
    }
}

/// xorshift64: varied demo values without a dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng(nanos | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_mixes_every_kind_of_change_early() {
        let mut rng = Rng(7);
        let first: Vec<String> = (0..=LARGE_FIRST).map(|t| statement(t, &mut rng)).collect();
        for want in [
            "INSERT INTO orders (customer",
            "UPDATE",
            "DELETE",
            "generate_series",
        ] {
            assert!(first.iter().any(|s| s.contains(want)), "{want}: {first:#?}");
        }
        assert_eq!(
            statement(LARGE_FIRST + LARGE_EVERY, &mut rng),
            "DELETE FROM orders WHERE status = 'imported'"
        );
    }
}

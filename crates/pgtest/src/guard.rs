//! Making sure no cluster outlives the test run that started it.
//!
//! Every cluster lives in its own directory under one root ([`root_dir`]). The directory holds an
//! `owner` marker: the pid and start time of the process whose exit ends the cluster, and the
//! `bin` directory of its server. Three things remove a cluster:
//! - dropping its [`Cluster`](crate::Cluster) handle (owned clusters; statics are never dropped);
//! - a watchdog, a small detached `sh` process started with every cluster, that polls the owner
//!   once a second and, once it is gone, runs `pg_ctl stop -m immediate` and deletes the
//!   directory;
//! - [`reap_stale`], run once per process before the first cluster starts, which does the same
//!   for directories whose owner is dead (a killed run whose watchdog was killed too).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use pgserver::{Installation, ServerUser};

use crate::Error;

/// Directories without an owner marker are being created; only one this old is abandoned.
const UNCLAIMED_GRACE: Duration = Duration::from_secs(600);

/// A process, named so that a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessId {
    pub(crate) pid: u32,
    pub(crate) start_time: u64,
}

impl ProcessId {
    pub(crate) fn current() -> Self {
        Self::of(std::process::id())
    }

    /// The process whose exit ends shared clusters: under cargo-nextest, which runs each test in
    /// its own process, the nextest runner (so the tests of one run share clusters); otherwise
    /// the test binary itself.
    pub(crate) fn run_owner() -> Self {
        if std::env::var_os("NEXTEST_RUN_ID").is_some() {
            Self::of(std::os::unix::process::parent_id())
        } else {
            Self::current()
        }
    }

    fn of(pid: u32) -> Self {
        Self {
            pid,
            start_time: start_time(pid).unwrap_or(0),
        }
    }

    fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks after boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The directory that holds every cluster: `$WALSTREAM_PGTEST_ROOT`, else
/// `<temp dir>/walstream-pgtest`. It is world-writable and sticky like `/tmp`, so that watchdogs
/// running as the server user may delete the clusters they own.
pub fn root_dir() -> PathBuf {
    std::env::var_os("WALSTREAM_PGTEST_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("walstream-pgtest"))
}

pub(crate) fn ensure_root() -> Result<PathBuf, Error> {
    let root = root_dir();
    fs::create_dir_all(&root)
        .map_err(|e| Error::new(format!("creating {}: {e}", root.display())))?;
    let meta =
        fs::metadata(&root).map_err(|e| Error::new(format!("reading {}: {e}", root.display())))?;
    if meta.permissions().mode() & 0o7777 != 0o1777 && meta.uid() == current_uid() {
        fs::set_permissions(&root, fs::Permissions::from_mode(0o1777))
            .map_err(|e| Error::new(format!("chmod 1777 {}: {e}", root.display())))?;
    }
    Ok(root)
}

fn current_uid() -> u32 {
    fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// Writes the owner marker of a cluster directory.
pub(crate) fn claim(dir: &Path, owner: ProcessId, bin_dir: &Path) -> Result<(), Error> {
    let marker = format!(
        "{}\n{}\n{}\n",
        owner.pid,
        owner.start_time,
        bin_dir.display()
    );
    let tmp = dir.join("owner.tmp");
    fs::write(&tmp, marker)
        .and_then(|()| fs::rename(&tmp, dir.join("owner")))
        .map_err(|e| {
            Error::new(format!(
                "writing the owner marker in {}: {e}",
                dir.display()
            ))
        })
}

/// Starts the watchdog of the cluster in `dir` (see the module docs).
pub(crate) fn spawn_watchdog(
    user: ServerUser,
    dir: &Path,
    owner: ProcessId,
    pg_ctl: &Path,
) -> Result<(), Error> {
    // If /proc/<owner> is not visible to the server user (a `hidepid` mount), the watchdog would
    // stop the cluster at once: it gives up instead, and `reap_stale` cleans up later.
    const SCRIPT: &str = r#"
owner=$1 dir=$2 pg_ctl=$3
[ -d "/proc/$owner" ] || exit 0
while [ -d "/proc/$owner" ] && [ -d "$dir" ]; do sleep 1; done
if [ -d "$dir" ]; then
    "$pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1
    rm -rf "$dir"
fi
"#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", SCRIPT, "pgtest-watchdog"])
        .arg(owner.pid.to_string())
        .arg(dir)
        .arg(pg_ctl)
        .current_dir(dir)
        // Null stdio: a test harness that captures output waits for its pipes to close, and a
        // process group of its own: Ctrl-C in the terminal must not kill the watchdog too.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    user.apply(&mut cmd);
    // The child is never waited for: it outlives us, and init reaps it.
    cmd.spawn()
        .map(drop)
        .map_err(|e| Error::new(format!("starting the watchdog for {}: {e}", dir.display())))
}

/// Stops and removes every cluster under the root whose owner is gone.
pub(crate) fn reap_stale(root: &Path, user: ServerUser) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        match fs::read_to_string(dir.join("owner")) {
            Ok(marker) => {
                let mut lines = marker.lines();
                let pid = lines.next().and_then(|p| p.parse().ok());
                let start = lines.next().and_then(|s| s.parse().ok());
                let bin_dir = lines.next().map(PathBuf::from);
                if let (Some(pid), Some(start_time)) = (pid, start) {
                    if (ProcessId { pid, start_time }).is_alive() {
                        continue;
                    }
                }
                // pgserver's guard stops the server, waits for its postmaster and removes the
                // directory, as dropping an owned cluster does.
                match bin_dir.map(|b| Installation::at(&b)) {
                    Some(Ok(install)) => {
                        let _ = pgserver::Cluster::attach(install, user, dir, 0).remove();
                    }
                    // Without its binaries no server can have started from it again.
                    _ => {
                        let _ = fs::remove_dir_all(&dir);
                    }
                }
            }
            Err(_) => {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > UNCLAIMED_GRACE);
                if old {
                    let _ = fs::remove_dir_all(&dir);
                }
            }
        }
    }
}

//! Finding PostgreSQL server binaries and `psql` on this machine.
//!
//! Search order for a major version N, first hit wins:
//! 1. `WALSTREAM_PG<N>_BIN` (a `bin` directory holding `postgres`, `initdb` and `pg_ctl`);
//! 2. `WALSTREAM_PG_BIN` (one extra `bin` directory of any major: asked with `postgres --version`);
//! 3. the `cargo xtask pg install` cache: `$WALSTREAM_PG_CACHE/<N>/bin`, else `<target>/pg/<N>/bin`
//!    next to the running test binary or in this workspace's `target` directory;
//! 4. `/usr/lib/postgresql/<N>/bin` (Debian and Ubuntu packages).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::Error;

/// The PostgreSQL major versions the workspace tests against, oldest first.
pub const MAJORS: [u32; 4] = [15, 16, 17, 18];

/// Where one major version's server binaries live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PgBins {
    pub(crate) major: u32,
    pub(crate) bin_dir: PathBuf,
}

impl PgBins {
    pub(crate) fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// The majors among [`MAJORS`] whose server binaries were found, oldest first.
///
/// The search order is described in the crate docs; a major counts as installed when its `bin`
/// directory holds `postgres`, `initdb` and `pg_ctl`. This does not start anything, so a major
/// listed here can still fail to start (for example when the `postgres` user cannot read it).
pub fn installed_majors() -> Vec<u32> {
    found().iter().map(|b| b.major).collect()
}

/// The `bin` directory that will be used for PostgreSQL `major`, if one was found.
pub fn bin_dir(major: u32) -> Option<PathBuf> {
    found()
        .iter()
        .find(|b| b.major == major)
        .map(|b| b.bin_dir.clone())
}

/// The binaries for `major`, or an error that says how to install them.
pub(crate) fn bins(major: u32) -> Result<PgBins, Error> {
    found()
        .iter()
        .find(|b| b.major == major)
        .cloned()
        .ok_or_else(|| {
            Error::new(format!(
                "PostgreSQL {major} server binaries not found (looked in WALSTREAM_PG{major}_BIN, \
                 WALSTREAM_PG_BIN, {} and /usr/lib/postgresql/{major}/bin); install them with \
                 `cargo xtask pg install`",
                cache_dirs()
                    .iter()
                    .map(|d| d.join(major.to_string()).join("bin").display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The `psql` used to run SQL: `$WALSTREAM_PSQL`, else the first `psql` beside a found server
/// (PostgreSQL 15's Debian package has one; the npm packages do not), else `psql` on `PATH`.
pub(crate) fn psql() -> PathBuf {
    if let Some(p) = std::env::var_os("WALSTREAM_PSQL") {
        return PathBuf::from(p);
    }
    found()
        .iter()
        .map(|b| b.tool("psql"))
        .chain(
            MAJORS
                .iter()
                .map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin/psql"))),
        )
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// The `cargo xtask pg install` cache directories that are searched, most specific first.
pub fn cache_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("WALSTREAM_PG_CACHE") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(d).join("pg"));
    }
    // A test binary lives in `<target>/<profile>/deps/`: look for `<target>/pg` above it.
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            let pg = dir.join("pg");
            if pg.is_dir() {
                dirs.push(pg);
            }
        }
    }
    // This crate sits at `<workspace>/crates/pgtest`.
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pg"));
    dirs.dedup();
    dirs
}

fn found() -> &'static [PgBins] {
    static FOUND: OnceLock<Vec<PgBins>> = OnceLock::new();
    FOUND.get_or_init(search)
}

fn search() -> Vec<PgBins> {
    let extra = std::env::var_os("WALSTREAM_PG_BIN").map(PathBuf::from);
    let extra_major = extra.as_deref().and_then(|dir| major_of(dir).ok());
    let caches = cache_dirs();
    MAJORS
        .iter()
        .filter_map(|&major| {
            let mut candidates = Vec::new();
            if let Some(d) = std::env::var_os(format!("WALSTREAM_PG{major}_BIN")) {
                candidates.push(PathBuf::from(d));
            }
            if extra_major == Some(major) {
                candidates.extend(extra.clone());
            }
            candidates.extend(caches.iter().map(|c| c.join(major.to_string()).join("bin")));
            candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
            candidates
                .into_iter()
                .find(|d| is_server_bin_dir(d))
                .map(|bin_dir| PgBins { major, bin_dir })
        })
        .collect()
}

fn is_server_bin_dir(dir: &Path) -> bool {
    ["postgres", "initdb", "pg_ctl"]
        .iter()
        .all(|t| dir.join(t).is_file())
}

/// Asks `<dir>/postgres --version` for its major version.
pub(crate) fn major_of(dir: &Path) -> Result<u32, Error> {
    let postgres = dir.join("postgres");
    let out = Command::new(&postgres)
        .arg("--version")
        .output()
        .map_err(|e| Error::new(format!("running {}: {e}", postgres.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "postgres (PostgreSQL) 16.4" or "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)".
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            Error::new(format!(
                "{} --version printed {:?} ({}); expected \"postgres (PostgreSQL) N.M\"",
                postgres.display(),
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
}

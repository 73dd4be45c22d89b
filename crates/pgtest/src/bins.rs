//! The server binaries and the `psql` the tests use.
//!
//! Servers are found by [`pgserver::Search`] (its documented order: `WALSTREAM_PG<N>_BIN`,
//! `WALSTREAM_PG_BIN`, the `cargo xtask pg install` cache, `PATH`, `pg_config --bindir`,
//! `/usr/lib/postgresql/<N>/bin`), once per test process; of each major in [`MAJORS`], the
//! first found is used.

use std::path::PathBuf;
use std::sync::OnceLock;

use pgserver::{Installation, Installations, Search};

use crate::Error;

/// The PostgreSQL major versions the workspace tests against, oldest first.
pub const MAJORS: [u32; 4] = [15, 16, 17, 18];

/// The majors among [`MAJORS`] whose server binaries were found, oldest first.
///
/// A major counts as installed when a directory in the search holds `postgres`, `initdb` and
/// `pg_ctl`, and `postgres --version` names that major. This does not start anything, so a
/// major listed here can still fail to start (for example when the `postgres` user cannot
/// read it): such a major fails its tests rather than being skipped.
pub fn installed_majors() -> Vec<u32> {
    MAJORS
        .into_iter()
        .filter(|&m| found().major(m).is_ok())
        .collect()
}

/// The `bin` directory that will be used for PostgreSQL `major`, if one was found.
pub fn bin_dir(major: u32) -> Option<PathBuf> {
    found().major(major).ok().map(|i| i.bin_dir().to_path_buf())
}

/// The binaries for `major`, or an error that says where they were looked for.
pub(crate) fn installation(major: u32) -> Result<Installation, Error> {
    found().major(major).cloned()
}

/// The `psql` used to run SQL: `$WALSTREAM_PSQL`, else the first `psql` beside a found server
/// (PostgreSQL 15's Debian package has one; the npm packages do not), else `psql` on `PATH`.
pub(crate) fn psql() -> PathBuf {
    if let Some(p) = std::env::var_os("WALSTREAM_PSQL") {
        return PathBuf::from(p);
    }
    found()
        .iter()
        .map(|i| i.tool("psql"))
        .chain(
            MAJORS
                .iter()
                .map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin/psql"))),
        )
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

fn found() -> &'static Installations {
    static FOUND: OnceLock<Installations> = OnceLock::new();
    FOUND.get_or_init(|| Search::from_env().find())
}

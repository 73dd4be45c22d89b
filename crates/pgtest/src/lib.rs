//! Test support: throwaway PostgreSQL 15-18 clusters for the workspace's live tests.
//!
//! A test asks for a shared cluster of one major version, makes its own database in it, and
//! talks to it through a conninfo or through [`Cluster::psql`]:
//!
//! ```no_run
//! pgtest::for_each_major(16, |cluster| {
//!     let db = cluster.create_database("my_test").unwrap();
//!     let slot = cluster.unique_name("my_test");
//!     db.psql(&format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"))
//!         .unwrap();
//!     // ... connect to db.conninfo() ...
//! });
//! ```
//!
//! - [`cluster`] starts one cluster per major and test binary (under cargo-nextest, per test
//!   run), on first use; tests share it, so each test uses its own database and slot names.
//! - [`Config::start`] starts a cluster of one's own with extra settings, `pg_hba.conf` lines or
//!   files, stopped and deleted when the handle is dropped.
//! - Servers run as the `postgres` user when the tests run as root (PostgreSQL refuses root),
//!   listen on 127.0.0.1 on a free port and in a Unix socket directory, and trust the superuser
//!   `postgres` there.
//! - Every cluster lives under [`root_dir`] and is removed when its test process exits, even if
//!   it is killed: a detached watchdog waits for the process, and the next run reaps whatever a
//!   killed watchdog left behind.
//!
//! Physical replication tests start a primary ([`Config::primary`]) and copy it into streaming
//! standbys ([`Cluster::standby`], [`Cluster::standby_with_slot`]) without `pg_basebackup`
//! (see [`Recovery`] for servers on other copies: [`Cluster::from_data_dir`] on a base
//! backup, a [`Cluster::hot_copy`] or a [`Cluster::cold_copy`], as a standby or with
//! point-in-time recovery):
//!
//! ```no_run
//! # fn main() -> Result<(), pgtest::Error> {
//! let primary = pgtest::Config::primary(17).start()?;
//! primary.create_database("my_test")?;
//! let load = pgtest::WriteLoad::start(&primary, "my_test", "rows")?;
//! let standby = primary.standby()?;
//! let rows = load.stop()?;
//! pgtest::wait_caught_up(&primary, &standby)?;
//! pgtest::compare_databases(&primary, &standby, "my_test")?;
//! standby.promote()?;
//! assert_eq!(standby.timeline()?, 2);
//! # let _ = rows;
//! # Ok(()) }
//! ```
//!
//! Finding server binaries, `initdb`, `pg_ctl` as the server user and removing a cluster are
//! [`pgserver`]'s, which `walstream demo` uses too; this crate adds what only tests need. Of
//! each major in [`MAJORS`], the first installation in pgserver's search order is used
//! (`WALSTREAM_PG<N>_BIN`, `WALSTREAM_PG_BIN`, the `cargo xtask pg install` cache
//! ([`cache_dirs`]), `PATH`, `pg_config --bindir`, `/usr/lib/postgresql/<N>/bin`). SQL runs
//! through PostgreSQL 15's `psql` (or `WALSTREAM_PSQL`).

pub mod alloc;
mod bins;
mod cluster;
mod guard;
mod proxy;
mod seed;
mod session;
mod standby;
mod topology;

// The async test support needs tokio: behind the `async` feature, so that xtask stays std-only.
#[cfg(feature = "async")]
pub mod cancel;
#[cfg(feature = "async")]
pub mod fake;
// The recorded captures and their expected files, for the data-driven tests.
pub mod testdata;

use std::sync::OnceLock;

pub use bins::{bin_dir, installed_majors, MAJORS};
pub use cluster::{unique_name, Cluster, Config, Database};
pub use guard::root_dir;
pub use pgserver::{cache_dirs, Error, ServerUser, HOST, SUPERUSER};
pub use proxy::Proxy;
pub use seed::{seed, seeded_rng, SEED_VAR};
pub use session::Session;
pub use standby::{
    compare_databases, wait_caught_up, wait_caught_up_within, Recovery, WriteLoad,
    REPLICATION_TIMEOUT,
};
pub use topology::Topology;

/// What to run when no server is available.
pub const INSTALL_HINT: &str = "install PostgreSQL 16-18 with `cargo xtask pg install` \
     (PostgreSQL 15 comes from the postgresql-15 Debian package at /usr/lib/postgresql/15/bin)";

/// The shared cluster of PostgreSQL `major`, started on first use.
///
/// # Panics
///
/// When the cluster cannot start; the message says why. Use [`try_cluster`] to handle that.
#[allow(
    clippy::panic,
    reason = "test support: a server that cannot start fails the test"
)]
pub fn cluster(major: u32) -> &'static Cluster {
    match try_cluster(major) {
        Ok(c) => c,
        Err(e) => panic!("PostgreSQL {major} test cluster: {e}\n({INSTALL_HINT})"),
    }
}

/// The shared cluster of PostgreSQL `major`, started on first use, or why it could not start
/// (the same error every time: a failed start is not retried).
pub fn try_cluster(major: u32) -> Result<&'static Cluster, Error> {
    static CLUSTERS: [OnceLock<Result<Cluster, Error>>; MAJORS.len()] =
        [const { OnceLock::new() }; MAJORS.len()];
    let slot = MAJORS
        .iter()
        .position(|&m| m == major)
        .and_then(|i| CLUSTERS.get(i))
        .ok_or_else(|| Error::new(format!("PostgreSQL {major} is not one of {MAJORS:?}")))?;
    slot.get_or_init(|| {
        let owner = guard::ProcessId::run_owner();
        // The start time keeps a recycled pid from finding an old run's directory.
        let name = format!("run-{}-{}-pg{major}", owner.pid, owner.start_time);
        Cluster::create(Config::new(major), &name, owner, false)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Runs `test` against the shared cluster of every installed major from `min_major` on, oldest
/// first, printing `skipping PostgreSQL N: needs M+` for older installed majors.
///
/// # Panics
///
/// When an installed major's cluster cannot start, and when no installed major is new enough:
/// a live test that ran against no server must fail, not pass. Panics from `test` propagate.
pub fn for_each_major(min_major: u32, mut test: impl FnMut(&'static Cluster)) {
    for_each_installed_major(min_major, |major| test(cluster(major)));
}

/// Runs `test` with every installed major from `min_major` on, oldest first, as
/// [`for_each_major`] does, for tests that start clusters of their own ([`Config::start`]).
///
/// # Panics
///
/// When no installed major is new enough: a live test that ran against no server must fail,
/// not pass. Panics from `test` propagate.
#[allow(
    clippy::panic,
    reason = "test support: a test that could not run must fail"
)]
pub fn for_each_installed_major(min_major: u32, mut test: impl FnMut(u32)) {
    let installed = installed_majors();
    let mut ran = 0;
    for &major in &installed {
        if major < min_major {
            println!("skipping PostgreSQL {major}: needs {min_major}+");
            continue;
        }
        println!("PostgreSQL {major}:");
        test(major);
        ran += 1;
    }
    if ran == 0 {
        panic!(
            "no PostgreSQL server of version {min_major} or newer is installed \
             (found: {installed:?}); {INSTALL_HINT}"
        );
    }
}

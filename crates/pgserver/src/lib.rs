//! Throwaway local PostgreSQL servers: find the server binaries on this machine, `initdb` a
//! cluster in a directory of its own, start and stop it with `pg_ctl`, and leave nothing
//! behind.
//!
//! The call sequence:
//!
//! 1. [`ServerUser::detect`]: who runs the server. PostgreSQL refuses to run as root, so when we
//!    are root every server command runs as the `postgres` user.
//! 2. [`Search::from_env`] then [`Search::find`]: every installation on this machine, in the
//!    search order below; pick one with [`Installations::newest`] or [`Installations::major`],
//!    or take a directory the user named with [`Installation::at`].
//! 3. [`Cluster::create_temp`] (a new private directory in the temporary directory) or
//!    [`Cluster::create_in`] (a directory of the caller's): the guard. From here on, dropping it
//!    stops the server, waits for the postmaster to exit and removes the directory.
//! 4. [`Cluster::initdb`], then [`Cluster::configure`] and [`Cluster::write_file`] for the
//!    caller's settings, then [`Cluster::start`], which picks a free port.
//! 5. Connect to `host=127.0.0.1 port=<port> user=postgres`; every local connection is trusted.
//! 6. [`Cluster::remove`] to clean up and hear what went wrong, or just drop the guard.
//!
//! ```no_run
//! use walstream_pgserver::{Cluster, Search, ServerUser};
//!
//! let user = ServerUser::detect()?;
//! let found = Search::from_env().find();
//! let install = found.newest(10, user)?.clone();
//! let mut cluster = Cluster::create_temp(install, user, "my-demo")?;
//! cluster.initdb(&[])?;
//! cluster.configure([("wal_level", "logical")])?;
//! let port = cluster.start()?;
//! println!("PostgreSQL {} on 127.0.0.1:{port}", cluster.major());
//! cluster.remove()?;
//! # Ok::<(), walstream_pgserver::Error>(())
//! ```
//!
//! # Where server binaries are found
//!
//! A directory counts when it holds `postgres`, `initdb` and `pg_ctl`; its major version is
//! what `postgres --version` prints. [`Search::find`] looks, in this order (a directory reached
//! twice counts once, where it was first found):
//!
//! 1. `$WALSTREAM_PG<N>_BIN`, for every N set (ascending);
//! 2. `$WALSTREAM_PG_BIN`;
//! 3. the `cargo xtask pg install` caches ([`cache_dirs`]): `<cache>/<N>/bin`;
//! 4. every directory of `PATH`;
//! 5. `pg_config --bindir`;
//! 6. `/usr/lib/postgresql/<N>/bin` (Debian and Ubuntu packages).
//!
//! Of one major, the first found wins ([`Installations::major`], what the tests use);
//! [`Installations::newest`] (what `walstream demo` uses) takes the newest major, and skips
//! binaries that the server user cannot run.

// docs.rs (`--cfg docsrs`, nightly): label feature-gated items with the feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]

// The README's examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod cluster;
mod search;
mod user;

pub use cluster::{free_port, Cluster};
pub use search::{cache_dirs, Installation, Installations, Search, Source};
pub use user::ServerUser;

/// The superuser of every cluster (`initdb -U postgres`), trusted on local connections.
pub const SUPERUSER: &str = "postgres";

/// The one address servers listen on: they are for this machine only.
pub const HOST: &str = "127.0.0.1";

/// Why binaries were not found, a cluster could not be set up or a command failed; the message
/// names the directory or command and says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error saying `message`; public so that test support built on this crate (pgtest)
    /// reports its own failures in the same type.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

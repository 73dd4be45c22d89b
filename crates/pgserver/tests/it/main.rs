//! Live tests of pgserver: a real PostgreSQL 15 (the Debian package, always installed here)
//! started, stopped and removed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed assertion (clippy.toml's allow-*-in-tests does not \
              reach helper functions outside #[test] items)"
)]

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use walstream_pgserver::{Cluster, Installation, Installations, Search, ServerUser, Source};

/// PostgreSQL 15 as the search finds it.
fn pg15() -> Installation {
    let found = Search::from_env().find();
    found
        .major(15)
        .unwrap_or_else(|e| panic!("{e}; install the postgresql-15 package"))
        .clone()
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

fn started(prefix: &str) -> Cluster {
    let user = ServerUser::detect().unwrap();
    let mut cluster = Cluster::create_temp(pg15(), user, prefix).unwrap();
    cluster.initdb(&[]).unwrap();
    cluster
        .configure([
            ("wal_level", "logical"),
            ("application_name", "it's pgserver"),
        ])
        .unwrap();
    cluster.start().unwrap();
    cluster
}

#[test]
fn a_server_starts_listens_and_drop_leaves_nothing_behind() {
    let cluster = started("pgserver-it-drop");
    let dir = cluster.dir().to_path_buf();
    assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
    let port = cluster.port();
    assert_ne!(port, 0);
    TcpStream::connect((walstream_pgserver::HOST, port)).unwrap();
    assert!(cluster
        .socket_dir()
        .join(format!(".s.PGSQL.{port}"))
        .exists());
    let conf = std::fs::read_to_string(cluster.data_dir().join("postgresql.conf")).unwrap();
    assert!(
        conf.contains("application_name = 'it''s pgserver'"),
        "{conf}"
    );
    let pid = cluster.postmaster_pid().unwrap();
    assert!(alive(pid));

    drop(cluster);
    assert!(!dir.exists(), "{} is left behind", dir.display());
    // The guard waited for the postmaster: it is gone (or an unreaped zombie) already.
    assert!(!alive(pid), "postmaster {pid} still runs");
    assert!(TcpStream::connect((walstream_pgserver::HOST, port)).is_err());
}

#[test]
fn stop_start_again_and_remove() {
    let cluster = started("pgserver-it-restart");
    let port = cluster.port();
    let first = cluster.postmaster_pid().unwrap();
    cluster.stop().unwrap();
    assert!(cluster.postmaster_pid().is_none());
    assert!(eventually(10, || !alive(first)));
    cluster.start_again().unwrap();
    assert_eq!(cluster.port(), port);
    TcpStream::connect((walstream_pgserver::HOST, port)).unwrap();
    let second = cluster.postmaster_pid().unwrap();

    let dir = cluster.dir().to_path_buf();
    cluster.remove().unwrap();
    assert!(!dir.exists(), "{} is left behind", dir.display());
    assert!(!alive(second), "postmaster {second} still runs");
}

#[test]
fn a_detached_handle_leaves_the_cluster_to_its_owner() {
    let owner = started("pgserver-it-detach");
    let mut other = Cluster::attach(
        owner.installation().clone(),
        owner.user(),
        owner.dir().to_path_buf(),
        owner.port(),
    );
    drop(other);
    assert!(owner.postmaster_pid().is_some_and(alive));
    other = Cluster::create_in(
        owner.installation().clone(),
        owner.user(),
        owner.dir().to_path_buf(),
    )
    .unwrap();
    other.detach();
    drop(other);
    assert!(owner.postmaster_pid().is_some_and(alive));
    let dir = owner.dir().to_path_buf();
    drop(owner);
    assert!(!dir.exists());
}

#[test]
fn a_failed_start_quotes_the_server_log() {
    let user = ServerUser::detect().unwrap();
    let mut cluster = Cluster::create_temp(pg15(), user, "pgserver-it-fail").unwrap();
    cluster.initdb(&[]).unwrap();
    cluster.configure([("no_such_setting", "1")]).unwrap();
    let err = cluster.start().unwrap_err().to_string();
    assert!(err.contains("pg_ctl start failed"), "{err}");
    assert!(err.contains("no_such_setting"), "{err}");
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(!dir.exists());
}

#[test]
fn the_named_directory_and_the_search_agree_on_postgresql_15() {
    let found = pg15();
    let named = Installation::at(Path::new("/usr/lib/postgresql/15/bin")).unwrap();
    assert_eq!(named.major(), 15);
    assert_eq!(named.source(), Source::Given);
    assert_eq!(named.bin_dir(), found.bin_dir());
    // The server user (postgres, when the tests run as root) can run the packaged binaries.
    let user = ServerUser::detect().unwrap();
    assert!(named.runs_as(user));
    let one = Installations::one(named);
    assert_eq!(one.newest(10, user).unwrap().major(), 15);
    assert!(one.newest(16, user).is_err());
}

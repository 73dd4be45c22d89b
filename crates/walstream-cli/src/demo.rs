//! `walstream demo`: the one-command first run.
//!
//! Finds PostgreSQL server binaries on this machine, starts a throwaway cluster in a temporary
//! directory (as the `postgres` user when run as root: PostgreSQL refuses to run as root),
//! creates a demo table, a publication and a slot, writes a mix of changes in the background
//! over a walconn connection, and tails them with [`tail::follow`], the code path of `tail`.
//! The cluster is stopped and its directory removed however the demo ends: by a signal,
//! `--seconds`, a closed stdout, or an error ([`remove_cluster`]), or a panic (the guard's
//! `Drop`). Finding the server, `initdb`, `pg_ctl` as the `postgres` user and the guard are
//! [`pgserver`]'s, which the tests' `pgtest` uses too.

use std::path::Path;
use std::time::Duration;

use pgserver::{Cluster, Installation, Installations, Search, ServerUser};
use walstream::walconn::{self, CreateSlotOptions, SnapshotAction};
use walstream::CancellationToken;

use crate::tail::{self, Summary, TailError};
use walproto::pgoutput::{OriginFilter, Request, Streaming};

use crate::StreamArgs;

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

/// The oldest major with logical replication (pgoutput).
const MIN_MAJOR: u32 = 10;

/// The demo cluster's settings, on top of pgserver's throwaway defaults.
const SETTINGS: [(&str, &str); 4] = [
    ("wal_level", "logical"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    // Small, so that the writer's large transactions are streamed before they commit.
    ("logical_decoding_work_mem", "64kB"),
];

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
    let user = ServerUser::detect().map_err(|e| DemoError::NotFound(e.to_string()))?;
    let server = find_server(bin_dir, user)?;
    tracing::info!(
        "using PostgreSQL {} from {}",
        server.major(),
        server.bin_dir().display()
    );
    let cluster = start_cluster(server, user)?;
    let shown = show(&cluster, seconds, &stop).await;
    remove_cluster(cluster);
    shown
}

/// Sets up the demo in `cluster` and shows its changes until a signal, `seconds`, or a failure.
async fn show(
    cluster: &Cluster,
    seconds: Option<u64>,
    stop: &CancellationToken,
) -> Result<Summary, DemoError> {
    if stop.is_cancelled() {
        return Ok(Summary::default());
    }
    let conninfo = format!(
        "host={} port={} user={} dbname=postgres",
        pgserver::HOST,
        cluster.port(),
        pgserver::SUPERUSER
    );
    let setup = tokio::select! {
        r = set_up(&conninfo) => r,
        () = stop.cancelled() => return Ok(Summary::default()),
    };
    setup.map_err(|e| DemoError::Setup(format!("creating the demo schema: {e}")))?;
    tracing::info!(
        dir = %cluster.dir().display(),
        postmaster_pid = cluster.postmaster_pid().unwrap_or(0),
        port = cluster.port(),
        "demo cluster ready"
    );
    tracing::info!(
        "PostgreSQL {} on 127.0.0.1:{}: a writer changes table public.orders, printed below \
         as JSON lines{}",
        cluster.major(),
        cluster.port(),
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
        failover: false,
        proto_version: None,
        // The most the server can do (walproto's rule table: large transactions streamed
        // from 14, in parallel mode from 16).
        streaming: Request::default()
            .negotiate(cluster.major() * 10_000)
            .map_or(Streaming::Off, |o| o.streaming),
        binary: false,
        messages: false,
        two_phase: false,
        origin: OriginFilter::Any,
        start: None,
        end: None,
        status_interval: 10,
        report: Default::default(),
        recvlogical: Default::default(),
    };
    let tailed = tail::follow(&args, stop).await;
    stop.cancel();
    let written = match writer.await {
        Ok(r) => r.map_err(|e| DemoError::Setup(format!("the demo writer failed: {e}"))),
        Err(e) => Err(DemoError::Setup(format!("the demo writer failed: {e}"))),
    };
    let summary = tailed.map_err(DemoError::Tail)?;
    written?;
    Ok(summary)
}

/// The server in `bin_dir` if given, else the newest that pgserver's search finds (its order is
/// in the pgserver docs); as root, one the `postgres` user can run.
fn find_server(bin_dir: Option<&Path>, user: ServerUser) -> Result<Installation, DemoError> {
    let not_found = |e: pgserver::Error| DemoError::NotFound(format!("{e}; {INSTALL_HINT}"));
    let found = match bin_dir {
        Some(dir) => Installations::one(Installation::at(dir).map_err(not_found)?),
        None => Search::from_env().find(),
    };
    found.newest(MIN_MAJOR, user).cloned().map_err(not_found)
}

const INSTALL_HINT: &str = "install a server, for example `apt-get install postgresql-15` \
    (Debian, Ubuntu), `dnf install postgresql-server` (Fedora), `brew install postgresql@17` \
    (macOS), or, in the walstream repository, `cargo xtask pg install` (PostgreSQL 16-18 into \
    target/pg)";
/// A throwaway cluster of `server` in a new temporary directory, started with the demo's
/// settings. If this fails half-way, the guard removes what was made.
fn start_cluster(server: Installation, user: ServerUser) -> Result<Cluster, DemoError> {
    let setup = |e: pgserver::Error| DemoError::Setup(format!("starting the demo server: {e}"));
    let mut cluster = Cluster::create_temp(server, user, "walstream-demo").map_err(setup)?;
    cluster.initdb(&[]).map_err(setup)?;
    cluster.configure(SETTINGS).map_err(setup)?;
    cluster.start().map_err(setup)?;
    Ok(cluster)
}

/// Stops the server, waits for the postmaster to exit and removes the directory, saying so.
/// (The guard's `Drop` does the same silently, when a panic unwinds past it.)
fn remove_cluster(cluster: Cluster) {
    let dir = cluster.dir().to_path_buf();
    match cluster.remove() {
        Ok(()) => tracing::info!("removed {}", dir.display()),
        Err(e) => tracing::warn!("removing the demo cluster {}: {e}", dir.display()),
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
    let mut rng = fastrand::Rng::new();
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
fn statement(tick: u64, rng: &mut fastrand::Rng) -> String {
    if tick % LARGE_EVERY == LARGE_FIRST {
        // Alternately a bulk import and its removal, each one transaction of LARGE_ROWS rows.
        return if (tick / LARGE_EVERY).is_multiple_of(2) {
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
            let customer = rng.choice(CUSTOMERS).unwrap_or("ada");
            let cents = 100 + rng.u64(..99_900);
            let items = rng.u64(1..=5);
            let gift = rng.bool();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_mixes_every_kind_of_change_early() {
        let mut rng = fastrand::Rng::with_seed(7);
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

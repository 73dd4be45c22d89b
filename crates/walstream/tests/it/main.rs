//! Live tests of walstream against PostgreSQL 15-18 (pgtest starts the servers).
//!
//! Two scenarios are left out of the default run for their time and memory (their doc comments
//! give the measurements): a value near 1 GB through a small memory budget, and ten thousand
//! tables on every installed major (the default run has them on the newest). Run them with
//!
//! ```text
//! cargo nextest run -p walstream --run-ignored ignored-only scenarios::a_value_near_1_gb
//! cargo nextest run -p walstream --run-ignored ignored-only scenarios::ten_thousand_tables_on_every_major
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed assertion (clippy.toml's allow-*-in-tests does not \
              reach helper functions outside #[test] items)"
)]

mod api;
mod backup;
mod cancel;
mod credentials;
mod dead_network;
mod failover;
mod faults;
mod feedback;
mod hostile;
mod incremental;
mod lost_slots;
mod memory;
mod metrics;
mod physical;
mod pitr;
mod reconnect;
mod runtime;
mod scenarios;
mod snapshot;
mod snapshot_parallel;
mod stream;
mod transactions;
mod typed_get;
mod values;

use std::time::{Duration, Instant};

use pgtest::{Cluster, Database};

/// Every allocation of this binary is counted, so that memory bounds are measured from
/// outside the code under test (see `memory.rs`).
#[global_allocator]
static ALLOC: pgtest::alloc::Counting = pgtest::alloc::Counting;
use walstream::{
    ChangeEvent, EventStream, LogicalReplicationStream, Lsn, ReplicationStreamConfig,
    ReplicationStreamConfigBuilder, RetryPolicy,
};

/// Runs `f` on a two-worker runtime: the stream's driver task keeps running while the test's
/// own thread blocks in `psql`.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A database with a published table `t (id int primary key, v text)`, an unpublished table
/// `u (id int)`, a publication and a `pgoutput` slot created before any change.
struct Fixture<'c> {
    db: Database<'c>,
    slot: String,
    publication: String,
}

impl<'c> Fixture<'c> {
    fn new(cluster: &'c Cluster, name: &str) -> Self {
        let db = cluster.create_database(name).unwrap();
        let slot = cluster.unique_name(name);
        let publication = format!("{name}_pub");
        db.psql(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             CREATE TABLE u (id int);
             CREATE PUBLICATION {publication} FOR TABLE t;
             SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');"
        ))
        .unwrap();
        Self {
            db,
            slot,
            publication,
        }
    }

    /// A configuration for this fixture: quick status updates and retries.
    fn config(&self) -> ReplicationStreamConfigBuilder {
        ReplicationStreamConfig::builder(&self.slot, [&self.publication])
            .status_interval(Duration::from_millis(200))
            .retry(
                RetryPolicy::default()
                    .backoff(Duration::from_millis(50), Duration::from_millis(500))
                    .max_attempts(Some(200)),
            )
    }

    async fn start(&self, config: ReplicationStreamConfigBuilder) -> EventStream {
        LogicalReplicationStream::connect(&self.db.conninfo(), config.build().unwrap())
            .await
            .unwrap()
            .start()
    }

    /// The slot's `confirmed_flush_lsn`.
    fn confirmed_flush(&self) -> Lsn {
        self.db
            .psql(&format!(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
                self.slot
            ))
            .unwrap()
            .parse()
            .unwrap()
    }

    fn current_lsn(&self) -> Lsn {
        self.db
            .psql("SELECT pg_current_wal_lsn()")
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Waits until the slot's `confirmed_flush_lsn` satisfies `ok`, or fails after 20 s.
    async fn wait_confirmed(&self, what: &str, ok: impl Fn(Lsn) -> bool) -> Lsn {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lsn = self.confirmed_flush();
            if ok(lsn) {
                return lsn;
            }
            assert!(
                Instant::now() < deadline,
                "confirmed_flush_lsn stayed at {lsn}: expected {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads events until `n` transaction ends have arrived (fails after 30 s).
async fn read_transactions(stream: &mut EventStream, n: usize) -> Vec<ChangeEvent> {
    let mut events = Vec::new();
    let mut ends = 0;
    while ends < n {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.next_event())
            .await
            .expect("timed out waiting for events")
            .unwrap()
            .expect("the stream ended early");
        ends += usize::from(event.ack_lsn().is_some());
        events.push(event);
    }
    events
}

//! A primary and one standby of it, with a table published in a database of its own: the
//! topology of the failover and standby-decoding tests of walstream and its CLI.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::{quote_ident, quote_literal};
use crate::standby::{wait_caught_up, Recovery};
use crate::{Cluster, Config, Database, Error, HOST, SUPERUSER};

/// How often [`Topology::wait_synced`] looks again, and [`Topology::create_standby_slot`]
/// asks the primary for a running-transactions record.
const POLL: Duration = Duration::from_millis(200);
/// How long [`Topology::wait_synced`] waits: several servers share two cores in CI.
const SYNC_TIMEOUT: Duration = Duration::from_secs(90);

/// A primary and one standby of it (both [`Cluster`]s, removed when dropped).
///
/// ```no_run
/// # fn main() -> Result<(), pgtest::Error> {
/// // PostgreSQL 17+: a standby that synchronizes failover slots, through physical slot "sb".
/// let t = pgtest::Topology::failover(17, "sb")?;
/// t.table("app", "rows", "app_pub")?;
/// // `host=A,B ... target_session_attrs=read-write`: a client follows a promotion.
/// let conninfo = t.conninfo("app");
/// t.primary.crash()?;
/// t.standby.promote()?;
/// # let _ = conninfo;
/// # Ok(()) }
/// ```
pub struct Topology {
    /// The primary (on timeline 1).
    pub primary: Cluster,
    /// Its standby, streaming from it.
    pub standby: Cluster,
}

impl Topology {
    /// A primary of `major` and a standby of it with `recovery` (made from the primary).
    pub fn start(major: u32, recovery: impl FnOnce(&Cluster) -> Recovery) -> Result<Self, Error> {
        let primary = Config::primary(major).start()?;
        let standby = primary.standby_with(&recovery(&primary))?;
        Ok(Self { primary, standby })
    }

    /// The failover topology (PostgreSQL 17+): the standby streams through the physical slot
    /// `standby_slot` of the primary, with `sync_replication_slots` and the
    /// `hot_standby_feedback` that synchronization needs.
    pub fn failover(major: u32, standby_slot: &str) -> Result<Self, Error> {
        let primary = Config::primary(major).start()?;
        primary.psql(
            "postgres",
            &format!(
                "SELECT pg_create_physical_replication_slot({}, true)",
                quote_literal(standby_slot)
            ),
        )?;
        let standby = primary.standby_with(
            &Recovery::standby_of(&primary)
                .slot(standby_slot)
                .setting("sync_replication_slots", "on")
                .setting("hot_standby_feedback", "on"),
        )?;
        Ok(Self { primary, standby })
    }

    /// Sets the primary's `synchronized_standby_slots` to `standby_slot`: logical walsenders
    /// send nothing the standby has not flushed. Set after the standby's copy, so that the
    /// standby, once promoted, does not wait for a slot it does not have.
    pub fn wait_for_standby(&self, standby_slot: &str) -> Result<(), Error> {
        self.primary.psql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET synchronized_standby_slots = {};
                 SELECT pg_reload_conf();",
                quote_literal(standby_slot)
            ),
        )?;
        Ok(())
    }

    /// Creates database `db` on the primary with `table (id bigserial PRIMARY KEY, payload
    /// text)` and `publication` for it, and waits until the standby has them.
    pub fn table(&self, db: &str, table: &str, publication: &str) -> Result<Database<'_>, Error> {
        let database = self.primary.create_database(db)?;
        database.psql(&format!(
            "CREATE TABLE {table} (id bigserial PRIMARY KEY, payload text);
             CREATE PUBLICATION {publication} FOR TABLE {table};",
            table = quote_ident(table),
            publication = quote_ident(publication),
        ))?;
        wait_caught_up(&self.primary, &self.standby)?;
        Ok(database)
    }

    /// A conninfo for database `db` naming both servers, the primary first, for a read-write
    /// one (`target_session_attrs=read-write`, `connect_timeout=5`).
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={HOST},{HOST} port={},{} user={SUPERUSER} dbname={db} \
             target_session_attrs=read-write connect_timeout=5",
            self.primary.port(),
            self.standby.port()
        )
    }

    /// Waits until the standby holds `slot` as a synchronized, persistent slot (a temporary
    /// synced slot is dropped at promotion).
    pub fn wait_synced(&self, slot: &str) -> Result<(), Error> {
        let check = format!(
            "SELECT synced AND NOT temporary AND confirmed_flush_lsn IS NOT NULL \
             FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot)
        );
        let deadline = Instant::now() + SYNC_TIMEOUT;
        while self.standby.psql("postgres", &check)? != "t" {
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "slot {slot} was not synchronized to the standby on port {} within \
                     {SYNC_TIMEOUT:?} (see {})",
                    self.standby.port(),
                    self.standby.log_file().display()
                )));
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Creates logical slot `slot` (pgoutput) in database `db` on the standby, running
    /// `pg_log_standby_snapshot()` on the primary meanwhile: a slot on a standby is ready
    /// once the standby replays a running-transactions record, which an idle primary writes
    /// seldom.
    pub fn create_standby_slot(&self, db: &str, slot: &str) -> Result<(), Error> {
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(POLL);
                    // A failed nudge is retried; the creation's own error is what counts.
                    let _ = self
                        .primary
                        .psql("postgres", "SELECT pg_log_standby_snapshot()");
                }
            });
            let created = self.standby.psql(
                db,
                &format!(
                    "SELECT pg_create_logical_replication_slot({}, 'pgoutput')",
                    quote_literal(slot)
                ),
            );
            done.store(true, Ordering::Relaxed);
            created.map(drop)
        })
    }
}

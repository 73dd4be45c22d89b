//! Replication slot management: create, drop, read, alter, list.

use walconn::{quote_literal, Config, Connection, CreateSlotOptions, CreatedSlot, QueryResult};
use walproto::Lsn;

use crate::error::{Error, ErrorKind, Result};

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotInfo {
    /// The slot's name.
    pub name: String,
    /// `logical` or `physical`.
    pub slot_type: String,
    /// The output plugin (logical slots).
    pub plugin: Option<String>,
    /// The database (logical slots).
    pub database: Option<String>,
    /// Whether the slot is dropped when its session ends.
    pub temporary: bool,
    /// The pid of the process streaming from it, if one is.
    pub active_pid: Option<i32>,
    /// The oldest WAL the slot still needs.
    pub restart_lsn: Option<Lsn>,
    /// What the consumer has confirmed (logical slots): streaming resumes after it.
    pub confirmed_flush_lsn: Option<Lsn>,
    /// Whether prepared transactions are decoded at PREPARE (PostgreSQL 14+).
    pub two_phase: bool,
    /// Whether the slot is synchronized to standbys (PostgreSQL 17+).
    pub failover: bool,
    /// The WAL availability (`reserved`, `extended`, `unreserved`, `lost`; PostgreSQL 13+).
    pub wal_status: Option<String>,
}

impl SlotInfo {
    fn from_row(r: &QueryResult, i: usize) -> Option<Self> {
        let lsn = |c: &str| r.get(i, c).and_then(|v| v.parse().ok());
        let flag = |c: &str| r.get(i, c) == Some("t");
        Some(Self {
            name: r.get(i, "slot_name")?.to_owned(),
            slot_type: r.get(i, "slot_type")?.to_owned(),
            plugin: r.get(i, "plugin").map(str::to_owned),
            database: r.get(i, "database").map(str::to_owned),
            temporary: flag("temporary"),
            active_pid: r.get(i, "active_pid").and_then(|v| v.parse().ok()),
            restart_lsn: lsn("restart_lsn"),
            confirmed_flush_lsn: lsn("confirmed_flush_lsn"),
            two_phase: flag("two_phase"),
            failover: flag("failover"),
            wal_status: r.get(i, "wal_status").map(str::to_owned),
        })
    }
}

/// Manages replication slots over a replication connection.
///
/// # Cancel safety
///
/// The methods run commands on the connection and are not cancel-safe: a future dropped
/// before it completes poisons the connection (see walconn's
/// [`ErrorKind::Poisoned`](walconn::ErrorKind::Poisoned)), and every later call fails at once,
/// without touching the socket, with an [`ErrorKind::Connection`] error whose
/// [`connection`](crate::Error::connection) [`is_poisoned`](walconn::Error::is_poisoned):
/// drop the manager and connect again. The dropped command may still have taken effect on
/// the server (a slot created, dropped or altered). [`connect`](Self::connect) opens its own
/// socket, so dropping it leaves nothing behind; [`close`](Self::close) consumes the manager.
///
/// ```no_run
/// use walstream::{SlotManager, walconn::CreateSlotOptions};
///
/// # async fn run() -> walstream::Result<()> {
/// let mut slots = SlotManager::connect("postgresql://repl@db/app").await?;
/// slots.create("app_slot", &CreateSlotOptions::logical("pgoutput")).await?;
/// for slot in slots.list().await? {
///     println!("{} at {:?}", slot.name, slot.confirmed_flush_lsn);
/// }
/// slots.drop_slot("app_slot", true).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SlotManager {
    conn: Connection,
}

impl SlotManager {
    /// Connects with a libpq conninfo (a `replication=database` connection).
    ///
    /// Cancel-safe: a dropped future closes the connection it was opening.
    pub async fn connect(conninfo: &str) -> Result<Self> {
        Self::connect_with(&Config::parse(conninfo)?).await
    }

    /// As [`connect`](Self::connect), with a configuration built in code or carrying a
    /// [`PasswordProvider`](walconn::PasswordProvider).
    pub async fn connect_with(config: &Config) -> Result<Self> {
        Ok(Self {
            conn: Connection::connect(config).await?,
        })
    }

    /// Uses an open connection.
    pub fn from_connection(conn: Connection) -> Self {
        Self { conn }
    }

    /// `CREATE_REPLICATION_SLOT`.
    ///
    /// Not cancel-safe: a dropped future poisons the connection (see the type's docs).
    /// The slot may exist even so: a temporary one goes when the connection is dropped, a
    /// permanent one stays.
    pub async fn create(&mut self, name: &str, options: &CreateSlotOptions) -> Result<CreatedSlot> {
        Ok(self.conn.create_replication_slot(name, options).await?)
    }

    /// `DROP_REPLICATION_SLOT`; with `wait`, waits for an active slot to become inactive
    /// instead of failing.
    ///
    /// Not cancel-safe: a dropped future poisons the connection (see the type's docs).
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<()> {
        Ok(self.conn.drop_replication_slot(name, wait).await?)
    }

    /// The slot named `name`, if it exists.
    ///
    /// Not cancel-safe: a dropped future poisons the connection (see the type's docs).
    pub async fn read(&mut self, name: &str) -> Result<Option<SlotInfo>> {
        Ok(self
            .query(&format!("WHERE slot_name = {}", quote_literal(name)))
            .await?
            .into_iter()
            .next())
    }

    /// Every slot of the cluster.
    ///
    /// Not cancel-safe: a dropped future poisons the connection (see the type's docs).
    pub async fn list(&mut self) -> Result<Vec<SlotInfo>> {
        self.query("ORDER BY slot_name").await
    }

    /// `ALTER_REPLICATION_SLOT` (PostgreSQL 17+; `two_phase` 18+): changes what is given.
    ///
    /// Not cancel-safe: a dropped future poisons the connection (see the type's docs).
    pub async fn alter(
        &mut self,
        name: &str,
        failover: Option<bool>,
        two_phase: Option<bool>,
    ) -> Result<()> {
        Ok(self
            .conn
            .alter_replication_slot(name, failover, two_phase)
            .await?)
    }

    /// The connection, for other commands.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Closes the connection.
    ///
    /// Consumes the manager: a dropped future drops the connection (the socket is closed).
    /// On a poisoned connection it fails without writing anything.
    pub async fn close(self) -> Result<()> {
        Ok(self.conn.close().await?)
    }

    async fn query(&mut self, tail: &str) -> Result<Vec<SlotInfo>> {
        let sql = format!("SELECT * FROM pg_catalog.pg_replication_slots {tail}");
        let results = self.conn.simple_query(&sql).await?;
        let r = results.first().ok_or_else(|| {
            Error::new(ErrorKind::Connection, "no result for pg_replication_slots")
        })?;
        Ok((0..r.rows.len())
            .filter_map(|i| SlotInfo::from_row(r, i))
            .collect())
    }
}

//! The health of a replication slot: what `pg_replication_slots` says about it (WAL status,
//! `safe_wal_size`, why it was invalidated, lag), the early warning a stream gives while its
//! slot heads for loss (a task of its own on a side connection), the typed error of a lost
//! slot, and the opt-in recovery policy (a new slot and a new initial snapshot).
//!
//! PostgreSQL invalidates a slot when its WAL passes `max_slot_wal_keep_size` (`wal_removed`),
//! on a conflict with recovery on a standby (`rows_removed`, `wal_level_insufficient`), or
//! after PostgreSQL 18's `idle_replication_slot_timeout` (`idle_timeout`). `START_REPLICATION`
//! on such a slot fails with SQLSTATE 55000 ("cannot read from logical replication slot" on
//! 15, "can no longer get changes from replication slot" on 16 and 17, "can no longer access
//! replication slot" with the reason's name on 18); [`diagnose`] turns that into
//! [`ErrorKind::SlotInvalidated`](crate::ErrorKind::SlotInvalidated) with the reason, from the
//! server's detail where it names it, else from `pg_replication_slots`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use walconn::{quote_literal, Connection, QueryResult, Replication};
use walproto::Lsn;

use crate::error::{Error, ErrorKind, Result};
use crate::logical::config::{CreateSlot, ReplicationStreamConfig};
use crate::logical::event::{ChangeEvent, EventKind};
use crate::session::driver::{Batch, Item, Shared};
use crate::session::open::{open_session, Session};
use crate::snapshot::SnapshotOptions;

/// How often a stream reads its slot's health by default (see
/// [`ReplicationStreamConfigBuilder::slot_check_interval`](crate::ReplicationStreamConfigBuilder::slot_check_interval)).
pub const DEFAULT_SLOT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The part of `max_slot_wal_keep_size` under which `safe_wal_size` counts as low when no
/// threshold is configured: a fifth, so that a consumer has most of the allowance behind it
/// before anyone is warned, and a fifth of it left to act.
const DEFAULT_THRESHOLD_DIVISOR: u64 = 5;

/// How long one read of the slot's health may take on the side connection; a server that does
/// not answer in time is asked again at the next interval, on a new connection.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The window of [`SlotRecovery`]'s limit.
const RECOVERY_WINDOW: Duration = Duration::from_secs(3600);

/// Why PostgreSQL invalidated a replication slot: `pg_replication_slots.invalidation_reason`
/// (PostgreSQL 17+), or what older servers show of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidationReason {
    /// `wal_removed`: the slot's WAL was removed because it held more than
    /// `max_slot_wal_keep_size`.
    WalRemoved,
    /// `rows_removed`: on a standby, the primary removed rows the slot still needed (a
    /// conflict with recovery; `hot_standby_feedback` and a physical slot prevent it).
    RowsRemoved,
    /// `wal_level_insufficient`: on a standby, the primary's `wal_level` went below `logical`.
    WalLevelInsufficient,
    /// `idle_timeout`: the slot stayed inactive longer than `idle_replication_slot_timeout`
    /// (PostgreSQL 18+).
    IdleTimeout,
    /// A conflict with recovery on a standby, on PostgreSQL 16, which does not say whether it
    /// was [`RowsRemoved`](Self::RowsRemoved) or
    /// [`WalLevelInsufficient`](Self::WalLevelInsufficient) (`pg_replication_slots.conflicting`,
    /// which 16 sets for every invalidated logical slot: one that keeps its `restart_lsn` was
    /// not invalidated for `wal_removed`).
    Conflict,
    /// A reason this crate does not know (a newer server), as the server names it.
    Other(String),
}

impl InvalidationReason {
    /// The reason from its name in `pg_replication_slots.invalidation_reason`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "wal_removed" => Self::WalRemoved,
            "rows_removed" => Self::RowsRemoved,
            "wal_level_insufficient" => Self::WalLevelInsufficient,
            "idle_timeout" => Self::IdleTimeout,
            "conflict" => Self::Conflict,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The name PostgreSQL gives it (`conflict` for [`Conflict`](Self::Conflict), which has
    /// none).
    pub fn as_str(&self) -> &str {
        match self {
            Self::WalRemoved => "wal_removed",
            Self::RowsRemoved => "rows_removed",
            Self::WalLevelInsufficient => "wal_level_insufficient",
            Self::IdleTimeout => "idle_timeout",
            Self::Conflict => "conflict",
            Self::Other(name) => name,
        }
    }
}

impl fmt::Display for InvalidationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `pg_replication_slots.wal_status`: whether the WAL the slot needs is still there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WalStatus {
    /// Within `max_wal_size`.
    Reserved,
    /// Past `max_wal_size`, still kept (by the slot or `wal_keep_size`).
    Extended,
    /// Past `max_slot_wal_keep_size`: the next checkpoint removes WAL the slot needs, unless
    /// its consumer catches up first.
    Unreserved,
    /// WAL the slot needs is gone: the slot cannot be used any more.
    Lost,
    /// A status this crate does not know, as the server names it.
    Other(String),
}

impl WalStatus {
    /// The status from its name in `pg_replication_slots.wal_status`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "reserved" => Self::Reserved,
            "extended" => Self::Extended,
            "unreserved" => Self::Unreserved,
            "lost" => Self::Lost,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The samples of the gauge `walstream_slot_wal_status{status}`: 1 for this status, 0
    /// for each other status PostgreSQL has, so that a status the slot left does not stay 1.
    pub fn gauge_samples(&self) -> Vec<(String, f64)> {
        let mut samples: Vec<(String, f64)> = ["reserved", "extended", "unreserved", "lost"]
            .into_iter()
            .map(|name| (name.to_owned(), f64::from(u8::from(name == self.as_str()))))
            .collect();
        if let Self::Other(name) = self {
            samples.push((name.clone(), 1.0));
        }
        samples
    }

    /// The name PostgreSQL gives it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Reserved => "reserved",
            Self::Extended => "extended",
            Self::Unreserved => "unreserved",
            Self::Lost => "lost",
            Self::Other(name) => name,
        }
    }
}

impl fmt::Display for WalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A slot's health as `pg_replication_slots` shows it, with the server's position: what a
/// monitoring check needs (`walstream slot health`). Columns a server does not have are
/// `None` (`invalidation_reason`, `inactive_since` and `synced` are PostgreSQL 17+,
/// `conflicting` 16+).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotStatus {
    /// The slot's name.
    pub name: String,
    /// Whether a process is streaming from it.
    pub active: bool,
    /// Whether its WAL is still there.
    pub wal_status: Option<WalStatus>,
    /// Bytes of WAL that can still be written before the slot is in danger of losing its WAL
    /// (`None` when `max_slot_wal_keep_size` is unlimited or the slot is lost; negative once
    /// it is past it).
    pub safe_wal_size: Option<i64>,
    /// Why the slot was invalidated, if it was (PostgreSQL 17+ names it; on 15 and 16 it is
    /// derived from `wal_status` and `conflicting`).
    pub invalidation_reason: Option<InvalidationReason>,
    /// Since when the slot has been inactive, as the server prints the time (PostgreSQL 17+).
    pub inactive_since: Option<String>,
    /// Whether the slot was invalidated by a conflict with recovery (PostgreSQL 16+).
    pub conflicting: Option<bool>,
    /// Whether the slot is a failover slot synchronized from the primary (PostgreSQL 17+).
    pub synced: Option<bool>,
    /// The WAL between the server's position (`pg_current_wal_lsn()`, on a standby
    /// `pg_last_wal_replay_lsn()`) and the slot's (`confirmed_flush_lsn`, or `restart_lsn`
    /// for a physical slot).
    pub lag_bytes: Option<u64>,
    /// The server's `max_slot_wal_keep_size` in bytes (`None`: unlimited).
    pub max_slot_wal_keep_size: Option<u64>,
}

/// What [`SlotStatus::health`] concludes, in increasing order of gravity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum SlotHealth {
    /// Nothing to do.
    Healthy,
    /// Look soon: the slot holds more WAL than `max_wal_size` (`extended`), lags more than
    /// allowed, or its `safe_wal_size` is low.
    Warning,
    /// Act now: the slot is `unreserved` (the next checkpoint removes WAL it needs unless its
    /// consumer catches up first) or has no `safe_wal_size` left.
    Critical,
    /// The slot is lost (invalidated) or missing: re-create it and take a new snapshot.
    Lost,
}

impl SlotHealth {
    /// `healthy`, `warning`, `critical` or `lost`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Lost => "lost",
        }
    }
}

impl SlotStatus {
    /// Every slot of the server, by name. Runs one query on `conn` (a replication or an
    /// ordinary connection); not cancel-safe (see [`SlotManager`](crate::SlotManager)).
    pub async fn list(conn: &mut Connection) -> Result<Vec<Self>> {
        query(conn, None).await
    }

    /// The slot `name`, if it exists. As [`list`](Self::list).
    pub async fn read(conn: &mut Connection, name: &str) -> Result<Option<Self>> {
        Ok(query(conn, Some(name)).await?.into_iter().next())
    }

    /// Whether the slot can no longer be used: invalidated, or its WAL gone.
    pub fn is_lost(&self) -> bool {
        self.invalidation_reason.is_some() || self.wal_status == Some(WalStatus::Lost)
    }

    /// The `safe_wal_size` under which the slot counts as in danger: `threshold` if given,
    /// else a fifth of `max_slot_wal_keep_size` (none when that is unlimited).
    pub fn safe_wal_threshold(&self, threshold: Option<u64>) -> Option<u64> {
        threshold.or(self
            .max_slot_wal_keep_size
            .map(|keep| keep / DEFAULT_THRESHOLD_DIVISOR))
    }

    /// The slot's health, with the reasons for it (empty when healthy): lag over
    /// `max_lag_bytes` and `safe_wal_size` under `min_safe_wal_size` (by default a fifth of
    /// `max_slot_wal_keep_size`) are warnings; see [`SlotHealth`] for the rest.
    pub fn health(
        &self,
        max_lag_bytes: Option<u64>,
        min_safe_wal_size: Option<u64>,
    ) -> (SlotHealth, Vec<String>) {
        if self.is_lost() {
            let why = match &self.invalidation_reason {
                Some(r) => format!("invalidated: {r}"),
                None => "wal_status is lost".to_owned(),
            };
            return (SlotHealth::Lost, vec![why]);
        }
        let mut reasons = Vec::new();
        let mut health = SlotHealth::Healthy;
        let mut note = |h: SlotHealth, why: String| {
            health = health.max(h);
            reasons.push(why);
        };
        match &self.wal_status {
            Some(WalStatus::Unreserved) => note(
                SlotHealth::Critical,
                "wal_status is unreserved: the next checkpoint removes WAL the slot needs".into(),
            ),
            Some(WalStatus::Extended) => note(
                SlotHealth::Warning,
                "wal_status is extended: the slot holds more WAL than max_wal_size".into(),
            ),
            _ => {}
        }
        if let Some(safe) = self.safe_wal_size {
            if safe <= 0 {
                note(SlotHealth::Critical, format!("safe_wal_size is {safe}"));
            } else if let Some(min) = self.safe_wal_threshold(min_safe_wal_size) {
                if u64::try_from(safe).is_ok_and(|s| s < min) {
                    note(
                        SlotHealth::Warning,
                        format!("safe_wal_size {safe} is under {min} bytes"),
                    );
                }
            }
        }
        if let (Some(lag), Some(max)) = (self.lag_bytes, max_lag_bytes) {
            if lag > max {
                note(
                    SlotHealth::Warning,
                    format!("lag {lag} bytes is over {max}"),
                );
            }
        }
        (health, reasons)
    }

    /// The status in row `i` of a query of `pg_replication_slots` (absent columns are `None`).
    pub(crate) fn from_row(r: &QueryResult, i: usize) -> Option<Self> {
        let flag = |c: &str| r.get(i, c).map(|v| v == "t");
        let lsn = |c: &str| r.get(i, c).and_then(|v| v.parse::<Lsn>().ok());
        let wal_status = r.get(i, "wal_status").map(WalStatus::from_name);
        let conflicting = flag("conflicting");
        let invalidation_reason = match r.get(i, "invalidation_reason") {
            Some(name) => Some(InvalidationReason::from_name(name)),
            // PostgreSQL 16 marks every invalidated logical slot `conflicting`; only a slot
            // whose WAL was removed loses its restart_lsn.
            None if conflicting == Some(true) && r.get(i, "restart_lsn").is_none() => {
                Some(InvalidationReason::WalRemoved)
            }
            None if conflicting == Some(true) => Some(InvalidationReason::Conflict),
            // Before PostgreSQL 17, and while a checkpoint is invalidating it, a slot whose
            // WAL is gone has no reason of its own: it can only be this one.
            None if wal_status == Some(WalStatus::Lost) => Some(InvalidationReason::WalRemoved),
            None => None,
        };
        let position = lsn("confirmed_flush_lsn").or_else(|| lsn("restart_lsn"));
        let lag_bytes = lsn("walstream_current_lsn")
            .zip(position)
            .map(|(now, at)| now.checked_distance(at).unwrap_or(0));
        // pg_settings gives max_slot_wal_keep_size in MB; -1 is unlimited.
        let max_slot_wal_keep_size = r
            .get(i, "walstream_keep_mb")
            .and_then(|v| v.parse::<u64>().ok())
            .and_then(|mb| mb.checked_mul(1024 * 1024));
        Some(Self {
            name: r.get(i, "slot_name")?.to_owned(),
            active: flag("active") == Some(true),
            wal_status,
            safe_wal_size: r.get(i, "safe_wal_size").and_then(|v| v.parse().ok()),
            invalidation_reason,
            inactive_since: r.get(i, "inactive_since").map(str::to_owned),
            conflicting,
            synced: flag("synced"),
            lag_bytes,
            max_slot_wal_keep_size,
        })
    }
}

/// `pg_replication_slots` (every column the server has) with the server's position and
/// `max_slot_wal_keep_size`.
async fn query(conn: &mut Connection, name: Option<&str>) -> Result<Vec<SlotStatus>> {
    let filter = name
        .map(|n| format!("WHERE s.slot_name = {}", quote_literal(n)))
        .unwrap_or_default();
    let sql = format!(
        "SELECT s.*, CASE WHEN pg_catalog.pg_is_in_recovery() \
         THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END \
         AS walstream_current_lsn, (SELECT setting FROM pg_catalog.pg_settings \
         WHERE name = 'max_slot_wal_keep_size') AS walstream_keep_mb \
         FROM pg_catalog.pg_replication_slots s {filter} ORDER BY s.slot_name"
    );
    let results = conn.simple_query(&sql).await?;
    let r = results
        .first()
        .ok_or_else(|| Error::new(ErrorKind::Connection, "no result for pg_replication_slots"))?;
    Ok((0..r.rows.len())
        .filter_map(|i| SlotStatus::from_row(r, i))
        .collect())
}

/// What to do when the stream's slot is found invalidated; see
/// [`ReplicationStreamConfigBuilder::slot_recovery`](crate::ReplicationStreamConfigBuilder::slot_recovery).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRecovery {
    max_per_hour: u32,
    snapshot: SnapshotOptions,
}

impl SlotRecovery {
    /// Drop the invalidated slot, create it again and take a new initial snapshot (of every
    /// published table, unless [`snapshot`](Self::snapshot) says otherwise), at most
    /// `max_per_hour` times in any hour; past that the stream ends with the
    /// [`SlotInvalidated`](crate::ErrorKind::SlotInvalidated) error.
    pub fn resnapshot(max_per_hour: u32) -> Self {
        Self {
            max_per_hour,
            snapshot: SnapshotOptions::all_tables(),
        }
    }

    /// What the new snapshot copies.
    pub fn snapshot(mut self, options: SnapshotOptions) -> Self {
        self.snapshot = options;
        self
    }

    /// The most recoveries in any hour.
    pub fn max_per_hour(&self) -> u32 {
        self.max_per_hour
    }

    pub(crate) fn snapshot_options(&self) -> &SnapshotOptions {
        &self.snapshot
    }
}

/// The slot-health options of a stream (set through its builder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlotWatchOptions {
    /// How often the slot is read on a side connection (`None`: never).
    pub(crate) interval: Option<Duration>,
    /// The `safe_wal_size` under which to warn (`None`: a fifth of `max_slot_wal_keep_size`).
    pub(crate) threshold: Option<u64>,
    /// The recovery policy (`None`: a lost slot ends the stream).
    pub(crate) recovery: Option<SlotRecovery>,
}

impl Default for SlotWatchOptions {
    fn default() -> Self {
        Self {
            interval: Some(DEFAULT_SLOT_CHECK_INTERVAL),
            threshold: None,
            recovery: None,
        }
    }
}

/// Counts recoveries in the last hour (sans-IO: time passed in).
#[derive(Debug, Default)]
pub(crate) struct RecoveryBudget {
    recent: VecDeque<Instant>,
}

impl RecoveryBudget {
    /// Whether another recovery is allowed at `now` under `max_per_hour`; if so it is counted.
    pub(crate) fn take(&mut self, now: Instant, max_per_hour: u32) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RECOVERY_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= usize::try_from(max_per_hour).unwrap_or(usize::MAX) {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// Turns a failure that shows an invalidated slot into
/// [`ErrorKind::SlotInvalidated`](crate::ErrorKind::SlotInvalidated) naming the reason; other
/// errors are returned as they are. A server error that may mean a lost slot (SQLSTATE 55000
/// about a replication slot, or 58P01, WAL already removed) is checked against the server's
/// detail and, where that does not name the reason, against `pg_replication_slots` on a side
/// connection.
pub(crate) async fn diagnose(error: Error, conn_config: &walconn::Config, slot: &str) -> Error {
    let Some(server) = error.connection() else {
        // Not from the server (or already complete, such as a session's check of the slot).
        return error;
    };
    let described = invalidation_in(server);
    let wal_removed = server
        .db()
        .is_some_and(|db| db.code == "58P01" && db.message.contains("has already been removed"));
    if described.is_none() && !wal_removed {
        return error;
    }
    let named = server
        .db()
        .and_then(|db| reason_named_in(db.detail.as_deref().unwrap_or("")));
    let reason = match named {
        Some(r) => Some(r),
        None => match read_side(conn_config, slot).await {
            Ok(Some(s)) if s.is_lost() => s.invalidation_reason,
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(slot, "reading the slot's invalidation reason: {e}");
                None
            }
        },
    };
    match reason.or(described) {
        Some(reason) => Error::slot_invalidated(slot, reason, error.into_connection()),
        // WAL gone but the slot not (yet) invalidated: the server's error stands.
        None => error,
    }
}

/// The reason of an invalidated slot, when `e` is the server's refusal to use one (SQLSTATE
/// 55000 about a replication slot whose detail says it was invalidated), from the detail
/// alone (see [`diagnose`] for the server's own view).
pub(crate) fn invalidation_in(e: &walconn::Error) -> Option<InvalidationReason> {
    let db = e.db()?;
    let detail = db.detail.as_deref()?;
    let invalidated = db.code == "55000"
        && db.message.contains("replication slot")
        && detail.contains("invalidated");
    invalidated.then(|| reason_named_in(detail).unwrap_or_else(|| reason_described_in(detail)))
}

/// For the recovery policy: drops the invalidated slot (waiting for a walsender that still
/// holds it, within [`CHECK_TIMEOUT`]) and opens a session that creates it again (permanent,
/// unless the stream creates temporary slots) with an exported snapshot for `policy`'s copy.
pub(crate) async fn recreate(
    conn_config: &walconn::Config,
    config: &ReplicationStreamConfig,
    policy: &SlotRecovery,
) -> Result<Session> {
    let slot = &config.slot;
    let mut conn = Connection::connect(conn_config).await?;
    match tokio::time::timeout(CHECK_TIMEOUT, conn.drop_replication_slot(slot, true)).await {
        Ok(Ok(())) => tracing::info!(slot, "dropped the invalidated slot"),
        // Dropped meanwhile by someone else: what is wanted.
        Ok(Err(e)) if e.is_slot_missing() => {}
        Ok(Err(e)) => {
            return Err(Error::from(e).with_context(format!(
                "dropping the invalidated replication slot \"{slot}\""
            )))
        }
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Slot,
                format!(
                    "dropping the invalidated replication slot \"{slot}\": still in use after \
                     {CHECK_TIMEOUT:?}"
                ),
            ))
        }
    }
    if let Err(e) = conn.close().await {
        tracing::debug!("closing the connection that dropped the slot: {e}");
    }
    let mut fresh = config.clone();
    fresh.create_slot = Some(config.create_slot.unwrap_or(CreateSlot::Permanent));
    fresh.snapshot = Some(policy.snapshot_options().clone());
    open_session(conn_config, &fresh, true).await
}

/// PostgreSQL 18's detail: `This replication slot has been invalidated due to "wal_removed".`
fn reason_named_in(detail: &str) -> Option<InvalidationReason> {
    let rest = detail.split_once("due to \"")?.1;
    let name = rest.split_once('"')?.0;
    Some(InvalidationReason::from_name(name))
}

/// The reason older servers' details describe (15-17).
fn reason_described_in(detail: &str) -> InvalidationReason {
    if detail.contains("maximum reserved size") {
        InvalidationReason::WalRemoved
    } else if detail.contains("wal_level") {
        InvalidationReason::WalLevelInsufficient
    } else if detail.contains("conflict") {
        InvalidationReason::Conflict
    } else if detail.contains("inactive") || detail.contains("idle") {
        InvalidationReason::IdleTimeout
    } else {
        InvalidationReason::Other(detail.to_owned())
    }
}

/// The slot's status over a new ordinary connection, bounded in time.
async fn read_side(conn_config: &walconn::Config, slot: &str) -> Result<Option<SlotStatus>> {
    let read = async {
        let mut conn = side_connection(conn_config).await?;
        let status = SlotStatus::read(&mut conn, slot).await;
        if let Err(e) = conn.close().await {
            tracing::debug!("closing the slot check's connection: {e}");
        }
        status
    };
    tokio::time::timeout(CHECK_TIMEOUT, read)
        .await
        .map_err(|_| Error::new(ErrorKind::Connection, "the slot check timed out"))?
}

async fn side_connection(conn_config: &walconn::Config) -> Result<Connection> {
    let mut config = conn_config.clone();
    config.set_replication(Replication::Off);
    Ok(Connection::connect(&config).await?)
}

/// How alarming a slot's state is, for the early warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Alarm {
    Fine,
    Low,
    Unreserved,
    Lost,
}

fn alarm(status: &SlotStatus, threshold: Option<u64>) -> Alarm {
    if status.is_lost() {
        return Alarm::Lost;
    }
    if status.wal_status == Some(WalStatus::Unreserved)
        || status.safe_wal_size.is_some_and(|s| s <= 0)
    {
        return Alarm::Unreserved;
    }
    let low = status
        .safe_wal_size
        .zip(status.safe_wal_threshold(threshold))
        .is_some_and(|(safe, min)| u64::try_from(safe).is_ok_and(|s| s < min));
    if low {
        Alarm::Low
    } else {
        Alarm::Fine
    }
}

/// The early warning: reads the slot's health now and every `interval` on a side connection of
/// its own (its own task, so that a slow or failing check never holds up the stream; failures
/// are only logged), and puts an [`EventKind::SlotWarning`] into the stream, with a
/// `tracing::warn!`, each time the slot gets worse (its `safe_wal_size` under the threshold,
/// then `unreserved`). Ends when `stop` is cancelled or the stream's channel is gone.
pub(crate) fn spawn_watch(
    conn_config: walconn::Config,
    slot: String,
    options: &SlotWatchOptions,
    tx: mpsc::WeakSender<Item>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let Some(interval) = options.interval else {
        return;
    };
    let threshold = options.threshold;
    tokio::spawn(async move {
        let mut conn: Option<Connection> = None;
        let mut worst = Alarm::Fine;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let status = tokio::select! {
                () = stop.cancelled() => return,
                s = check(&conn_config, &mut conn, &slot) => s,
            };
            let status = match status {
                Ok(Some(s)) => s,
                Ok(None) => {
                    tracing::debug!(slot, "slot check: the slot does not exist");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(slot, "slot check failed: {e}");
                    continue;
                }
            };
            if let Some(safe) = status.safe_wal_size {
                shared.slot_safe_wal_size.store(safe, Ordering::Release);
            }
            shared
                .slot_safe_wal_known
                .store(status.safe_wal_size.is_some(), Ordering::Release);
            if let Ok(mut known) = shared.slot_wal_status.lock() {
                known.clone_from(&status.wal_status);
            }
            let now = alarm(&status, threshold);
            if now <= worst {
                if now < worst {
                    tracing::info!(slot, wal_status = ?status.wal_status, safe_wal_size = ?status.safe_wal_size, "the slot is out of danger");
                }
                worst = now;
                continue;
            }
            worst = now;
            if now == Alarm::Lost {
                // The stream itself ends with the typed error; no event is owed.
                tracing::debug!(slot, reason = ?status.invalidation_reason, "the replication slot was invalidated");
                continue;
            }
            let wal_status = status.wal_status.clone().unwrap_or(WalStatus::Reserved);
            tracing::warn!(
                slot,
                %wal_status,
                safe_wal_size = ?status.safe_wal_size,
                threshold = ?status.safe_wal_threshold(threshold),
                "the replication slot is in danger of being invalidated: its consumer is too far behind"
            );
            let Some(tx) = tx.upgrade() else { return };
            let lsn = Lsn::new(shared.received.load(Ordering::Relaxed));
            let event = ChangeEvent {
                lsn,
                xid: None,
                commit_time: None,
                kind: EventKind::SlotWarning {
                    wal_status,
                    safe_wal_size: status.safe_wal_size,
                },
            };
            tokio::select! {
                () = stop.cancelled() => return,
                permit = tx.reserve() => match permit {
                    Ok(permit) => permit.send(Ok(Batch { events: vec![event], bytes: 0 })),
                    Err(_) => return,
                },
            }
        }
    });
}

/// One read of the slot on the watch's connection, opened again after a failure.
async fn check(
    conn_config: &walconn::Config,
    conn: &mut Option<Connection>,
    slot: &str,
) -> Result<Option<SlotStatus>> {
    let read = async {
        let c = match conn {
            Some(c) => c,
            None => conn.insert(side_connection(conn_config).await?),
        };
        SlotStatus::read(c, slot).await
    };
    let result = tokio::time::timeout(CHECK_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Connection,
                "the slot check timed out",
            ))
        });
    if result.is_err() {
        // A failed or abandoned query leaves the connection unusable (poisoned).
        *conn = None;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(wal: &str, safe: Option<i64>, lag: u64) -> SlotStatus {
        SlotStatus {
            name: "s".into(),
            active: true,
            wal_status: Some(WalStatus::from_name(wal)),
            safe_wal_size: safe,
            invalidation_reason: None,
            inactive_since: None,
            conflicting: None,
            synced: None,
            lag_bytes: Some(lag),
            max_slot_wal_keep_size: Some(100 << 20),
        }
    }

    #[test]
    fn wal_status_gauge_samples_mark_only_the_current_status() {
        let one = |status: &WalStatus| -> Vec<String> {
            let samples = status.gauge_samples();
            assert_eq!(
                samples.iter().map(|(_, v)| v).sum::<f64>(),
                1.0,
                "{samples:?}"
            );
            samples.into_iter().map(|(n, _)| n).collect()
        };
        let known = ["reserved", "extended", "unreserved", "lost"];
        for name in known {
            let status = WalStatus::from_name(name);
            assert_eq!(one(&status), known);
            assert!(status.gauge_samples().contains(&(name.to_owned(), 1.0)));
        }
        let other = WalStatus::from_name("someday");
        assert_eq!(one(&other).last().map(String::as_str), Some("someday"));
    }

    #[test]
    fn reasons_are_read_from_every_server_s_detail() {
        let pg18 = "This replication slot has been invalidated due to \"idle_timeout\".";
        assert_eq!(reason_named_in(pg18), Some(InvalidationReason::IdleTimeout));
        let pg15 = "This slot has been invalidated because it exceeded the maximum reserved size.";
        assert_eq!(reason_named_in(pg15), None);
        assert_eq!(reason_described_in(pg15), InvalidationReason::WalRemoved);
        assert_eq!(
            reason_described_in(
                "This slot has been invalidated because it was conflicting with recovery."
            ),
            InvalidationReason::Conflict
        );
        for name in [
            "wal_removed",
            "rows_removed",
            "wal_level_insufficient",
            "idle_timeout",
            "x",
        ] {
            assert_eq!(InvalidationReason::from_name(name).as_str(), name);
        }
    }

    #[test]
    fn health_grades_each_column() {
        let mb = 1 << 20;
        assert_eq!(
            status("reserved", Some(90 * mb), 0).health(None, None).0,
            SlotHealth::Healthy
        );
        // A fifth of max_slot_wal_keep_size (20 MB) is the default threshold.
        assert_eq!(
            status("reserved", Some(19 * mb), 0).health(None, None).0,
            SlotHealth::Warning
        );
        assert_eq!(
            status("reserved", Some(19 * mb), 0)
                .health(None, Some(mb as u64))
                .0,
            SlotHealth::Healthy
        );
        assert_eq!(
            status("reserved", None, 501).health(Some(500), None).0,
            SlotHealth::Warning
        );
        assert_eq!(
            status("reserved", None, 500).health(Some(500), None).0,
            SlotHealth::Healthy
        );
        assert_eq!(
            status("extended", None, 0).health(None, None).0,
            SlotHealth::Warning
        );
        let (h, why) = status("unreserved", Some(-5), 0).health(None, None);
        assert_eq!(h, SlotHealth::Critical);
        assert_eq!(why.len(), 2, "{why:?}");
        let (h, why) = status("lost", None, 0).health(None, None);
        assert_eq!(h, SlotHealth::Lost);
        assert_eq!(why, ["wal_status is lost"]);
        let mut idle = status("lost", None, 0);
        idle.invalidation_reason = Some(InvalidationReason::IdleTimeout);
        assert_eq!(idle.health(None, None).1, ["invalidated: idle_timeout"]);
    }

    #[test]
    fn the_alarm_rises_through_low_and_unreserved() {
        let mb = 1 << 20;
        assert_eq!(
            alarm(&status("reserved", Some(50 * mb), 0), None),
            Alarm::Fine
        );
        assert_eq!(
            alarm(&status("reserved", Some(10 * mb), 0), None),
            Alarm::Low
        );
        assert_eq!(
            alarm(&status("reserved", Some(10 * mb), 0), Some(mb as u64)),
            Alarm::Fine
        );
        assert_eq!(
            alarm(&status("unreserved", Some(-1), 0), None),
            Alarm::Unreserved
        );
        assert_eq!(alarm(&status("lost", None, 0), None), Alarm::Lost);
        // Unlimited max_slot_wal_keep_size: no safe_wal_size, no default threshold.
        let mut unlimited = status("extended", None, 0);
        unlimited.max_slot_wal_keep_size = None;
        assert_eq!(alarm(&unlimited, None), Alarm::Fine);
    }

    #[test]
    fn the_recovery_budget_counts_an_hour() {
        let t0 = Instant::now();
        let mut b = RecoveryBudget::default();
        assert!(b.take(t0, 2));
        assert!(b.take(t0 + Duration::from_secs(60), 2));
        assert!(!b.take(t0 + Duration::from_secs(120), 2));
        assert!(!b.take(t0 + Duration::from_secs(3599), 2));
        assert!(b.take(t0 + Duration::from_secs(3600), 2));
        assert!(!RecoveryBudget::default().take(t0, 0));
    }
}

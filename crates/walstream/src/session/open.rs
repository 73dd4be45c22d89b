//! Opening a session: connect, identify, negotiate, learn `wal_sender_timeout`, check or
//! create the slot; on a reconnect, check that the server reached continues the stream
//! (the same cluster and options; after a failover, a slot and a timeline it is safe to resume
//! from).

use std::future::Future;
use std::time::Duration;

use walconn::{
    quote_literal, Connection, CreateSlotOptions, QueryResult, SnapshotAction, SystemInfo,
};
use walproto::Lsn;

use crate::error::{Error, ErrorKind, Result};
use crate::logical::config::{
    negotiate, CreateSlot, Negotiated, ReplicationStreamConfig, MIN_DEFAULT_RECEIVE_TIMEOUT,
};
use crate::session::slot_watch::{InvalidationReason, SlotStatus};

/// The shortest status interval used, whatever `wal_sender_timeout` says.
const MIN_STATUS_INTERVAL: Duration = Duration::from_millis(50);

/// What a session agreed with the server. A reconnect must agree the same, or the stream
/// ends: another cluster or set of options would not continue the same stream, and another
/// timeline or server only after the failover checks ([`check_failover`]).
#[derive(Debug, Clone)]
pub(crate) struct Agreement {
    /// The server's `IDENTIFY_SYSTEM` answer.
    pub(crate) system: SystemInfo,
    /// The pgoutput options.
    pub(crate) negotiated: Negotiated,
    /// The server reached, as it sees itself: `inet_server_addr()` (`local` over a Unix
    /// socket) and its `port`. Tells another host of a multi-host conninfo from the same one.
    pub(crate) server: String,
    /// When the server's postmaster started (`pg_postmaster_start_time()`): the same server
    /// not restarted since cannot have gone back in its WAL.
    pub(crate) started: String,
}

impl Agreement {
    /// Checks that a reconnect's agreement continues this one in what cannot change: the
    /// cluster and the options. The timeline and the server are [`check_failover`]'s.
    fn check_continues(&self, now: &Agreement) -> Result<()> {
        let (was, is) = (&self.system, &now.system);
        if is.system_id != was.system_id || is.timeline < was.timeline {
            return Err(Error::new(
                ErrorKind::ClusterChanged,
                format!(
                    "after reconnecting, the server is system {} timeline {}, not system {} \
                     timeline {} or a later timeline of it: refusing to resume there",
                    is.system_id, is.timeline, was.system_id, was.timeline
                ),
            ));
        }
        if now.negotiated != self.negotiated {
            return Err(Error::new(
                ErrorKind::ClusterChanged,
                format!(
                    "after reconnecting, the server negotiates {:?} instead of {:?}",
                    now.negotiated, self.negotiated
                ),
            ));
        }
        Ok(())
    }

    /// Whether `now` is another timeline or another server than this: a failover, which
    /// resumes only after [`check_failover`].
    fn moved(&self, now: &Agreement) -> bool {
        now.system.timeline != self.system.timeline || now.server != self.server
    }
}

/// Why a stream did not resume after a failover ([`ErrorKind::Failover`]): the server it
/// reached (another timeline, such as a promoted standby, or another host of the conninfo)
/// does not hold what the stream needs to go on without losing a change. (An invalidated
/// slot there is [`ErrorKind::SlotInvalidated`], another cluster
/// [`ErrorKind::ClusterChanged`].)
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailoverRefusal {
    /// The slot does not exist on the server reached: it was not a failover slot, or the
    /// standby did not synchronize it (`sync_replication_slots`).
    SlotMissing,
    /// The slot there is not a failover slot synchronized from the old primary (its
    /// `pg_replication_slots.failover` and `synced` columns, PostgreSQL 17+), and not the
    /// stream's own slot on the same server: it is another slot of the same name, whose
    /// position says nothing about what this stream has seen.
    NotSynchronized {
        /// The slot's `failover` column.
        failover: bool,
        /// The slot's `synced` column.
        synced: bool,
    },
    /// The server's timeline branched off the stream's timeline before the position the
    /// stream resumes from: the changes the stream received between `switch` and `resume`
    /// are not on this server (the standby had not received them when it was promoted).
    SwitchBeforeResume {
        /// The stream's timeline, which ended at `switch` on this server.
        old_timeline: u32,
        /// The server's timeline.
        new_timeline: u32,
        /// Where the server's history ends `old_timeline`.
        switch: Lsn,
        /// The position the stream would resume from.
        resume: Lsn,
    },
}

impl std::fmt::Display for FailoverRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailoverRefusal::SlotMissing => f.write_str("the slot does not exist there"),
            FailoverRefusal::NotSynchronized { failover, synced } => write!(
                f,
                "the slot there is not a synchronized failover slot (failover {failover}, \
                 synced {synced}), and the server is not the one the stream was on"
            ),
            FailoverRefusal::SwitchBeforeResume {
                old_timeline,
                new_timeline,
                switch,
                resume,
            } => write!(
                f,
                "its timeline {new_timeline} branched off timeline {old_timeline} at {switch}, \
                 before the resume position {resume}: what the stream received after {switch} \
                 is not on this server"
            ),
        }
    }
}

/// An open, checked connection, not yet streaming.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) conn: Connection,
    pub(crate) agreement: Agreement,
    /// The interval between status updates, after `wal_sender_timeout`.
    pub(crate) status_interval: Duration,
    /// Silence that means a dead connection, after `wal_sender_timeout` (`None`: never).
    pub(crate) receive_timeout: Option<Duration>,
    /// The slot's `confirmed_flush_lsn` (or the new slot's consistent point).
    pub(crate) slot_position: Lsn,
    /// The slot was created here, as a temporary slot.
    pub(crate) created_temporary: bool,
    /// The snapshot the new slot exported, for the initial snapshot.
    pub(crate) snapshot_name: Option<String>,
    /// A reconnect found the server on another timeline (after the failover checks): the old
    /// timeline and the new one.
    pub(crate) timeline_change: Option<(u32, u32)>,
}

/// Connects and prepares a session. `first` allows creating the slot: on a reconnect a
/// missing slot is an error (creating it anew would silently skip changes).
pub(crate) async fn open_session(
    conn_config: &walconn::Config,
    config: &ReplicationStreamConfig,
    first: bool,
) -> Result<Session> {
    open(conn_config, config, first, None).await
}

/// Connects again for a stream that agreed `previous` and resumes at `resume`: the same
/// cluster and options; on another timeline or server (a failover) only where
/// [`check_failover`] finds it safe.
pub(crate) async fn reopen_session(
    conn_config: &walconn::Config,
    config: &ReplicationStreamConfig,
    previous: &Agreement,
    resume: Lsn,
) -> Result<Session> {
    open(conn_config, config, false, Some((previous, resume))).await
}

async fn open(
    conn_config: &walconn::Config,
    config: &ReplicationStreamConfig,
    first: bool,
    resuming: Option<(&Agreement, Lsn)>,
) -> Result<Session> {
    let mut conn = Connection::connect(conn_config).await?;
    let system = conn.identify_system().await?;
    let version = conn.parameter("server_version").unwrap_or("?").to_owned();
    let negotiated = negotiate(config, conn.server_version_num(), &version)?;
    let timeout = conn.show("wal_sender_timeout").await?;
    let wal_sender_timeout = parse_duration(&timeout);
    let status_interval = status_interval(config.status_interval, wal_sender_timeout);
    let receive_timeout = receive_timeout(config.receive_timeout, wal_sender_timeout);
    let state = ServerState::read(&mut conn, &config.slot).await?;
    let agreement = Agreement {
        system,
        negotiated,
        server: state.server.clone(),
        started: state.started.clone(),
    };
    let mut timeline_change = None;
    if let Some((previous, resume)) = resuming {
        previous.check_continues(&agreement)?;
        if previous.moved(&agreement) {
            check_failover(&mut conn, config, previous, &agreement, &state, resume).await?;
            let (old, new) = (previous.system.timeline, agreement.system.timeline);
            timeline_change = (old != new).then_some((old, new));
            tracing::info!(
                slot = config.slot,
                server = agreement.server,
                old_timeline = old,
                new_timeline = new,
                %resume,
                "failover: resuming on the server reached, whose slot and timeline continue the \
                 stream"
            );
        }
    }
    let wants_snapshot = first && config.snapshot.is_some();
    let (slot_position, created_temporary, snapshot_name) = match state.slot_position(config)? {
        Some(_) if wants_snapshot => {
            return Err(Error::new(
                ErrorKind::Slot,
                format!(
                    "replication slot \"{}\" already exists: an initial snapshot needs a new \
                     slot, whose exported snapshot is its consistent point",
                    config.slot
                ),
            ))
        }
        Some(lsn) => (lsn, false, None),
        None => match config.create_slot.filter(|_| first) {
            Some(kind) => {
                let negotiated = &agreement.negotiated;
                let standby = state.in_recovery;
                create_slot(&mut conn, config, negotiated, kind, wants_snapshot, standby).await?
            }
            None => {
                return Err(Error::new(
                    ErrorKind::Slot,
                    format!(
                        "replication slot \"{}\" does not exist{}",
                        config.slot,
                        if first {
                            " (create it, or ask for it to be created if missing)"
                        } else {
                            " any more: it was dropped while the stream was reconnecting"
                        }
                    ),
                ))
            }
        },
    };
    Ok(Session {
        conn,
        agreement,
        status_interval,
        receive_timeout,
        slot_position,
        created_temporary,
        snapshot_name,
        timeline_change,
    })
}

/// After a failover (the server reached is on a later timeline, or another host): resuming
/// there is safe when the slot exists and is not invalidated, is a failover slot synchronized
/// from the old primary (or the stream's own slot, on the same server), and the server's
/// history ends the stream's timeline at or after `resume`, so that everything the stream
/// received before `resume` is on this server too. The same server, running since the stream
/// was last on it, was promoted under the stream (a standby it decoded from): what it sent
/// after the switch was of its new timeline, so only its history's descent is checked.
async fn check_failover(
    conn: &mut Connection,
    config: &ReplicationStreamConfig,
    previous: &Agreement,
    now: &Agreement,
    state: &ServerState,
    resume: Lsn,
) -> Result<()> {
    let refuse = |refusal: FailoverRefusal| {
        Error::failover(&config.slot, &now.server, now.system.timeline, refusal).at(resume)
    };
    let Some(slot) = &state.slot else {
        return Err(refuse(FailoverRefusal::SlotMissing));
    };
    slot.check_valid(&config.slot)?;
    if now.server != previous.server && !slot.synchronized() {
        return Err(refuse(FailoverRefusal::NotSynchronized {
            failover: slot.failover,
            synced: slot.status.synced == Some(true),
        }));
    }
    let (old_timeline, new_timeline) = (previous.system.timeline, now.system.timeline);
    if new_timeline == old_timeline {
        return Ok(());
    }
    let file = conn.timeline_history(new_timeline).await?;
    let history = file.history()?;
    let same_run = now.server == previous.server && now.started == previous.started;
    match history.end_of(old_timeline) {
        Some(switch) if switch >= resume || same_run => Ok(()),
        Some(switch) => Err(refuse(FailoverRefusal::SwitchBeforeResume {
            old_timeline,
            new_timeline,
            switch,
            resume,
        })),
        None => Err(Error::new(
            ErrorKind::ClusterChanged,
            format!(
                "after reconnecting, the server's timeline {new_timeline} does not descend from \
                 the stream's timeline {old_timeline}: another branch of the cluster"
            ),
        )
        .at(resume)),
    }
}

/// What one query tells about the server and the slot.
#[derive(Debug)]
struct ServerState {
    /// See [`Agreement::server`].
    server: String,
    /// See [`Agreement::started`].
    started: String,
    /// The server is a standby (`pg_is_in_recovery()`).
    in_recovery: bool,
    /// The database of the connection.
    database: String,
    /// The slot's row of `pg_replication_slots`; `None` if it does not exist.
    slot: Option<SlotRow>,
}

/// The columns of a slot's `pg_replication_slots` row that the session checks.
#[derive(Debug)]
struct SlotRow {
    slot_type: String,
    plugin: Option<String>,
    database: Option<String>,
    confirmed_flush: Option<Lsn>,
    /// `failover` (PostgreSQL 17+; false before).
    failover: bool,
    /// Its health: `synced` and whether (and why) it was invalidated.
    status: SlotStatus,
}

impl ServerState {
    async fn read(conn: &mut Connection, slot: &str) -> Result<Self> {
        // `s.*`: the columns this server has (`failover` and `synced` are PostgreSQL 17+,
        // `conflicting` 16+), read by name.
        let sql = format!(
            "SELECT s.*, current_database() AS walstream_db, \
             coalesce(host(inet_server_addr()), 'local') || ':' || current_setting('port') \
             AS walstream_server, pg_catalog.pg_postmaster_start_time()::text \
             AS walstream_started, pg_catalog.pg_is_in_recovery() AS walstream_in_recovery \
             FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_replication_slots AS s \
             ON s.slot_name = {}",
            quote_literal(slot)
        );
        let results = conn.simple_query(&sql).await?;
        let r = results
            .first()
            .filter(|r| r.rows.len() == 1)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Connection,
                    "no row for the server's state and pg_replication_slots",
                )
            })?;
        Ok(Self {
            server: r.get(0, "walstream_server").unwrap_or("?").to_owned(),
            started: r.get(0, "walstream_started").unwrap_or("?").to_owned(),
            in_recovery: r.get(0, "walstream_in_recovery") == Some("t"),
            database: r.get(0, "walstream_db").unwrap_or("").to_owned(),
            slot: SlotRow::from_row(r),
        })
    }

    /// The slot's `confirmed_flush_lsn`, after checking it is a valid `pgoutput` slot of this
    /// database; `None` if it does not exist.
    fn slot_position(&self, config: &ReplicationStreamConfig) -> Result<Option<Lsn>> {
        let Some(row) = &self.slot else {
            return Ok(None);
        };
        let slot = &config.slot;
        if row.slot_type != "logical" {
            return Err(Error::new(
                ErrorKind::Slot,
                format!("replication slot \"{slot}\" is a physical slot, not a logical one"),
            ));
        }
        if row.plugin.as_deref() != Some("pgoutput") {
            return Err(Error::new(
                ErrorKind::Slot,
                format!(
                    "replication slot \"{slot}\" uses the output plugin {:?}, not pgoutput",
                    row.plugin.as_deref().unwrap_or("")
                ),
            ));
        }
        if row.database.as_deref() != Some(self.database.as_str()) {
            return Err(Error::new(
                ErrorKind::Slot,
                format!(
                    "replication slot \"{slot}\" belongs to database {:?}, not {:?}",
                    row.database.as_deref().unwrap_or(""),
                    self.database
                ),
            ));
        }
        row.check_valid(slot)?;
        // A logical slot shows no confirmed position while another session is still creating
        // it (building its snapshot): starting from 0/0 there would be a guess.
        match row.confirmed_flush {
            Some(lsn) => Ok(Some(lsn)),
            None => Err(Error::new(
                ErrorKind::Slot,
                format!(
                    "replication slot \"{slot}\" has no confirmed position yet: another session \
                     is still creating it"
                ),
            )),
        }
    }
}

impl SlotRow {
    /// The slot of the server-state query's row, if its columns show one.
    fn from_row(r: &QueryResult) -> Option<Self> {
        Some(Self {
            status: SlotStatus::from_row(r, 0)?,
            slot_type: r.get(0, "slot_type").unwrap_or("").to_owned(),
            plugin: r.get(0, "plugin").map(str::to_owned),
            database: r.get(0, "database").map(str::to_owned),
            confirmed_flush: r.get(0, "confirmed_flush_lsn").and_then(|v| v.parse().ok()),
            failover: r.get(0, "failover") == Some("t"),
        })
    }

    /// Whether the slot is a failover slot synchronized from a primary.
    fn synchronized(&self) -> bool {
        self.failover && self.status.synced == Some(true)
    }

    /// An invalidated slot ends the stream: what it would stream from is gone.
    fn check_valid(&self, slot: &str) -> Result<()> {
        if !self.status.is_lost() {
            return Ok(());
        }
        let reason = self
            .status
            .invalidation_reason
            .clone()
            .unwrap_or(InvalidationReason::WalRemoved);
        Err(Error::slot_invalidated(slot, reason, None))
    }
}

/// How long creating a slot on a standby waits before saying what it waits for, and then how
/// often it says it again.
const STANDBY_SLOT_NOTICE: Duration = Duration::from_secs(10);

/// What creating a logical slot on a standby waits for, and the remedy.
const STANDBY_SLOT_WAIT: &str = "a logical slot on a standby (PostgreSQL 16+) is ready only \
    once the standby replays a running-transactions record from the primary, which an idle \
    primary writes seldom: run SELECT pg_log_standby_snapshot() on the primary";

async fn create_slot(
    conn: &mut Connection,
    config: &ReplicationStreamConfig,
    negotiated: &Negotiated,
    kind: CreateSlot,
    export: bool,
    standby: bool,
) -> Result<(Lsn, bool, Option<String>)> {
    let mut options = CreateSlotOptions::logical("pgoutput");
    options.temporary = kind == CreateSlot::Temporary;
    options.two_phase = negotiated.pgoutput.two_phase;
    options.failover = config.failover;
    options.snapshot = Some(if export {
        SnapshotAction::Export
    } else {
        SnapshotAction::Nothing
    });
    let creating = conn.create_replication_slot(&config.slot, &options);
    let created = if standby {
        noting_the_wait(creating, &config.slot).await
    } else {
        creating.await
    };
    match created {
        Ok(created) => {
            tracing::info!(slot = config.slot, at = %created.consistent_point, ?kind, failover = options.failover, standby, "created the replication slot");
            Ok((
                created.consistent_point,
                options.temporary,
                created.snapshot_name,
            ))
        }
        // 42710 duplicate_object: created meanwhile by someone else; use it (unless a
        // snapshot was wanted, which only a slot of our own can give).
        Err(e) if e.code() == Some("42710") && !export => {
            match ServerState::read(conn, &config.slot)
                .await?
                .slot_position(config)?
            {
                Some(lsn) => Ok((lsn, false, None)),
                None => Err(e.into()),
            }
        }
        // Anything that ended the wait on a standby (a cancel, a statement timeout, a lost
        // connection) may have been the wait for the primary.
        Err(e) if standby && (e.is_cancelled() || e.is_retryable()) => {
            let message = format!(
                "creating replication slot \"{}\" on a standby failed while it waited: \
                 {STANDBY_SLOT_WAIT}",
                config.slot
            );
            Err(Error::from(e).with_context(message))
        }
        Err(e) => Err(e.into()),
    }
}

/// Awaits `creating` (a slot on a standby), warning after [`STANDBY_SLOT_NOTICE`] and then
/// every three times as long that it waits for the primary, with the remedy.
async fn noting_the_wait<T>(creating: impl Future<Output = T>, slot: &str) -> T {
    tokio::pin!(creating);
    let mut after = STANDBY_SLOT_NOTICE;
    let mut waited = Duration::ZERO;
    loop {
        tokio::select! {
            done = &mut creating => return done,
            () = tokio::time::sleep(after) => {
                waited += after;
                tracing::warn!(slot, ?waited, "still creating the slot on a standby: {STANDBY_SLOT_WAIT}");
                after = STANDBY_SLOT_NOTICE * 3;
            }
        }
    }
}

/// The status interval: the configured one, shortened to a third of `wal_sender_timeout`.
pub(crate) fn status_interval(
    configured: Duration,
    wal_sender_timeout: Option<Duration>,
) -> Duration {
    let interval = match wal_sender_timeout {
        Some(t) if !t.is_zero() => configured.min(t / 3),
        _ => configured,
    };
    interval.max(MIN_STATUS_INTERVAL)
}

/// The receive timeout: the configured one (zero: none), else twice `wal_sender_timeout`, at
/// least [`MIN_DEFAULT_RECEIVE_TIMEOUT`].
pub(crate) fn receive_timeout(
    configured: Option<Duration>,
    wal_sender_timeout: Option<Duration>,
) -> Option<Duration> {
    match configured {
        Some(t) => Some(t).filter(|t| !t.is_zero()),
        None => Some(
            wal_sender_timeout
                .map_or(MIN_DEFAULT_RECEIVE_TIMEOUT, |t| t.saturating_mul(2))
                .max(MIN_DEFAULT_RECEIVE_TIMEOUT),
        ),
    }
}

/// A PostgreSQL time setting as `SHOW` prints it (`60s`, `1min`, `500ms`, `0`).
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreement(system_id: &str, timeline: u32, server: &str) -> Result<Agreement> {
        let config = ReplicationStreamConfig::builder("s", ["p"]).build()?;
        Ok(Agreement {
            system: SystemInfo {
                system_id: system_id.into(),
                timeline,
                xlogpos: Lsn::ZERO,
                dbname: None,
            },
            negotiated: negotiate(&config, 170_000, "17")?,
            server: server.into(),
            started: "2026-12-03 18:00:00+00".into(),
        })
    }

    #[test]
    fn a_reconnect_continues_only_the_same_cluster_and_checks_a_move() -> Result<()> {
        let was = agreement("1", 2, "10.0.0.1:5432")?;
        // Another cluster, or an older timeline: never.
        for now in [
            agreement("9", 2, "10.0.0.1:5432")?,
            agreement("1", 1, "10.0.0.1:5432")?,
        ] {
            let e = was.check_continues(&now).err();
            assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::ClusterChanged));
        }
        // The same server on the same timeline continues as before; a later timeline or
        // another host is a failover, checked before resuming.
        let same = agreement("1", 2, "10.0.0.1:5432")?;
        same.check_continues(&was)?;
        assert!(!was.moved(&same));
        for now in [
            agreement("1", 3, "10.0.0.1:5432")?,
            agreement("1", 2, "10.0.0.2:5432")?,
            agreement("1", 2, "10.0.0.1:5433")?,
        ] {
            was.check_continues(&now)?;
            assert!(was.moved(&now), "{now:?}");
        }
        Ok(())
    }

    #[test]
    fn failover_refusals_say_which() {
        let lsn = |s: &str| s.parse::<Lsn>().unwrap_or(Lsn::ZERO);
        let e = Error::failover("s", "10.0.0.2:5432", 3, FailoverRefusal::SlotMissing);
        assert_eq!(e.kind(), ErrorKind::Failover);
        assert_eq!(e.failover_refusal(), Some(&FailoverRefusal::SlotMissing));
        assert!(e.to_string().contains("does not exist"), "{e}");
        let refusal = FailoverRefusal::SwitchBeforeResume {
            old_timeline: 2,
            new_timeline: 3,
            switch: lsn("0/3000000"),
            resume: lsn("0/3000100"),
        };
        let text = Error::failover("s", "h:1", 3, refusal).to_string();
        for part in [
            "timeline 3",
            "timeline 2",
            "0/3000000",
            "0/3000100",
            "\"s\"",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        let not = FailoverRefusal::NotSynchronized {
            failover: true,
            synced: false,
        };
        assert!(not.to_string().contains("synced false"), "{not}");
    }

    #[test]
    fn wal_sender_timeout_shortens_the_interval() {
        let ten = Duration::from_secs(10);
        assert_eq!(parse_duration("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(status_interval(ten, parse_duration("1min")), ten);
        assert_eq!(
            status_interval(ten, parse_duration("6s")),
            Duration::from_secs(2)
        );
        assert_eq!(status_interval(ten, parse_duration("0")), ten);
        assert_eq!(
            status_interval(ten, parse_duration("30ms")),
            MIN_STATUS_INTERVAL
        );
    }

    #[test]
    fn the_receive_timeout_follows_wal_sender_timeout() {
        let s = Duration::from_secs;
        assert_eq!(receive_timeout(None, parse_duration("1min")), Some(s(120)));
        assert_eq!(
            receive_timeout(None, parse_duration("2s")),
            Some(MIN_DEFAULT_RECEIVE_TIMEOUT)
        );
        // No timeout on the server (0): still the floor.
        assert_eq!(
            receive_timeout(None, parse_duration("0")),
            Some(MIN_DEFAULT_RECEIVE_TIMEOUT)
        );
        assert_eq!(
            receive_timeout(Some(s(3)), parse_duration("1min")),
            Some(s(3))
        );
        assert_eq!(receive_timeout(Some(Duration::ZERO), None), None);
    }
}

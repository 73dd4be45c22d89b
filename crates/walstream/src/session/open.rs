//! Opening a session: connect, identify, negotiate, learn `wal_sender_timeout`, check or
//! create the slot.

use std::time::Duration;

use walconn::{quote_literal, Connection, CreateSlotOptions, SnapshotAction, SystemInfo};
use walproto::Lsn;

use crate::error::{Error, ErrorKind, Result};
use crate::logical::config::{
    negotiate, CreateSlot, Negotiated, ReplicationStreamConfig, MIN_DEFAULT_RECEIVE_TIMEOUT,
};

/// The shortest status interval used, whatever `wal_sender_timeout` says.
const MIN_STATUS_INTERVAL: Duration = Duration::from_millis(50);

/// What a session agreed with the server. A reconnect must agree the same, or the stream
/// ends: another cluster, timeline or set of options would not continue the same stream.
#[derive(Debug, Clone)]
pub(crate) struct Agreement {
    /// The server's `IDENTIFY_SYSTEM` answer.
    pub(crate) system: SystemInfo,
    /// The pgoutput options.
    pub(crate) negotiated: Negotiated,
}

impl Agreement {
    /// Checks that a reconnect's agreement continues this one.
    pub(crate) fn check_continues(&self, now: &Agreement) -> Result<()> {
        let (was, is) = (&self.system, &now.system);
        if is.system_id != was.system_id || is.timeline != was.timeline {
            return Err(Error::new(
                ErrorKind::ClusterChanged,
                format!(
                    "after reconnecting, the server is system {} timeline {}, not system {} \
                     timeline {}: refusing to resume there",
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
}

/// Connects and prepares a session. `first` allows creating the slot: on a reconnect a
/// missing slot is an error (creating it anew would silently skip changes).
pub(crate) async fn open_session(
    conn_config: &walconn::Config,
    config: &ReplicationStreamConfig,
    first: bool,
) -> Result<Session> {
    let mut conn = Connection::connect(conn_config).await?;
    let system = conn.identify_system().await?;
    let version = conn.parameter("server_version").unwrap_or("?").to_owned();
    let negotiated = negotiate(config, conn.server_version_num(), &version)?;
    let timeout = conn.show("wal_sender_timeout").await?;
    let wal_sender_timeout = parse_duration(&timeout);
    let status_interval = status_interval(config.status_interval, wal_sender_timeout);
    let receive_timeout = receive_timeout(config.receive_timeout, wal_sender_timeout);
    let wants_snapshot = first && config.snapshot.is_some();
    let (slot_position, created_temporary, snapshot_name) = match slot_position(&mut conn, config)
        .await?
    {
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
            Some(kind) => create_slot(&mut conn, config, &negotiated, kind, wants_snapshot).await?,
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
        agreement: Agreement { system, negotiated },
        status_interval,
        receive_timeout,
        slot_position,
        created_temporary,
        snapshot_name,
    })
}

/// The slot's `confirmed_flush_lsn`, after checking it is a `pgoutput` slot of this database;
/// `None` if it does not exist.
async fn slot_position(
    conn: &mut Connection,
    config: &ReplicationStreamConfig,
) -> Result<Option<Lsn>> {
    let sql = format!(
        "SELECT slot_type, plugin, database, confirmed_flush_lsn, current_database() AS db \
         FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
        quote_literal(&config.slot)
    );
    let results = conn.simple_query(&sql).await?;
    let Some(r) = results.first().filter(|r| !r.rows.is_empty()) else {
        return Ok(None);
    };
    let slot = &config.slot;
    if r.get(0, "slot_type") != Some("logical") {
        return Err(Error::new(
            ErrorKind::Slot,
            format!("replication slot \"{slot}\" is a physical slot, not a logical one"),
        ));
    }
    if r.get(0, "plugin") != Some("pgoutput") {
        return Err(Error::new(
            ErrorKind::Slot,
            format!(
                "replication slot \"{slot}\" uses the output plugin {:?}, not pgoutput",
                r.get(0, "plugin").unwrap_or("")
            ),
        ));
    }
    if r.get(0, "database") != r.get(0, "db") {
        return Err(Error::new(
            ErrorKind::Slot,
            format!(
                "replication slot \"{slot}\" belongs to database {:?}, not {:?}",
                r.get(0, "database").unwrap_or(""),
                r.get(0, "db").unwrap_or("")
            ),
        ));
    }
    // A logical slot shows no confirmed position while another session is still creating
    // it (building its snapshot): starting from 0/0 there would be a guess.
    match r.get(0, "confirmed_flush_lsn").map(str::parse::<Lsn>) {
        Some(Ok(lsn)) => Ok(Some(lsn)),
        _ => Err(Error::new(
            ErrorKind::Slot,
            format!(
                "replication slot \"{slot}\" has no confirmed position yet: another session \
                 is still creating it"
            ),
        )),
    }
}

async fn create_slot(
    conn: &mut Connection,
    config: &ReplicationStreamConfig,
    negotiated: &Negotiated,
    kind: CreateSlot,
    export: bool,
) -> Result<(Lsn, bool, Option<String>)> {
    let mut options = CreateSlotOptions::logical("pgoutput");
    options.temporary = kind == CreateSlot::Temporary;
    options.two_phase = negotiated.pgoutput.two_phase;
    options.snapshot = Some(if export {
        SnapshotAction::Export
    } else {
        SnapshotAction::Nothing
    });
    match conn.create_replication_slot(&config.slot, &options).await {
        Ok(created) => {
            tracing::info!(slot = config.slot, at = %created.consistent_point, ?kind, "created the replication slot");
            Ok((
                created.consistent_point,
                options.temporary,
                created.snapshot_name,
            ))
        }
        // 42710 duplicate_object: created meanwhile by someone else; use it (unless a
        // snapshot was wanted, which only a slot of our own can give).
        Err(e) if e.code() == Some("42710") && !export => {
            match slot_position(conn, config).await? {
                Some(lsn) => Ok((lsn, false, None)),
                None => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The status interval: the configured one, shortened to a third of `wal_sender_timeout`.
pub(crate) fn status_interval(configured: Duration, wal_sender_timeout: Option<Duration>) -> Duration {
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

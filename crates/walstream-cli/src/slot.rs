//! `walstream slot list|create|drop|health`: replication slots through
//! `walstream::SlotManager` and `walstream::SlotStatus`, one JSON object per line on stdout.

use std::io::{self, Write};

use serde::Serialize;
use walstream::walconn::CreateSlotOptions;
use walstream::{SlotHealth, SlotInfo, SlotManager, SlotStatus};

use crate::{SlotArgs, SlotCommand};

/// Why a slot command failed.
#[derive(Debug)]
pub(crate) enum SlotError {
    /// The connection or the server failed (a missing slot, a name taken, no permission).
    Server(walstream::Error),
    /// Standard output failed.
    Output(io::Error),
}

impl std::fmt::Display for SlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotError::Server(e) => write!(f, "{e:#}"),
            SlotError::Output(e) => write!(f, "writing the output: {e}"),
        }
    }
}

impl From<walstream::Error> for SlotError {
    fn from(e: walstream::Error) -> Self {
        SlotError::Server(e)
    }
}

/// A line of `slot list`, in the column order of `pg_replication_slots`.
#[derive(Serialize)]
struct SlotLine<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    slot_type: &'a str,
    plugin: Option<&'a str>,
    database: Option<&'a str>,
    temporary: bool,
    active_pid: Option<i32>,
    restart_lsn: Option<String>,
    confirmed_flush_lsn: Option<String>,
    two_phase: bool,
    wal_status: Option<&'a str>,
    safe_wal_size: Option<i64>,
    invalidation_reason: Option<&'a str>,
    inactive_since: Option<&'a str>,
    conflicting: Option<bool>,
    synced: Option<bool>,
    lag_bytes: Option<u64>,
}

impl<'a> SlotLine<'a> {
    /// The line of `s`, with the health columns of `status` (null where the server has no
    /// such column, or the slot went between the two queries).
    fn new(s: &'a SlotInfo, status: Option<&'a SlotStatus>) -> Self {
        SlotLine {
            name: &s.name,
            slot_type: &s.slot_type,
            plugin: s.plugin.as_deref(),
            database: s.database.as_deref(),
            temporary: s.temporary,
            active_pid: s.active_pid,
            restart_lsn: s.restart_lsn.map(|l| l.to_string()),
            confirmed_flush_lsn: s.confirmed_flush_lsn.map(|l| l.to_string()),
            two_phase: s.two_phase,
            wal_status: s.wal_status.as_deref(),
            safe_wal_size: status.and_then(|t| t.safe_wal_size),
            invalidation_reason: status
                .and_then(|t| t.invalidation_reason.as_ref())
                .map(|r| r.as_str()),
            inactive_since: status.and_then(|t| t.inactive_since.as_deref()),
            conflicting: status.and_then(|t| t.conflicting),
            synced: status.and_then(|t| t.synced),
            lag_bytes: status.and_then(|t| t.lag_bytes),
        }
    }
}

/// The line of `slot health`.
#[derive(Serialize)]
struct HealthLine<'a> {
    name: &'a str,
    /// `healthy`, `warning`, `critical`, `lost` or `missing`.
    status: &'a str,
    reasons: Vec<String>,
    active: Option<bool>,
    wal_status: Option<&'a str>,
    safe_wal_size: Option<i64>,
    /// The threshold `safe_wal_size` was held against.
    min_safe_wal_size: Option<u64>,
    lag_bytes: Option<u64>,
    max_lag_bytes: Option<u64>,
    invalidation_reason: Option<&'a str>,
}

/// The exit status of `slot health` for each grade (shared/CLI.md).
fn health_exit(health: SlotHealth) -> u8 {
    match health {
        SlotHealth::Healthy => 0,
        SlotHealth::Warning => 1,
        SlotHealth::Critical => 2,
        // Lost, and any grade a newer library adds.
        _ => crate::exit::SLOT,
    }
}

/// The line of `slot create`.
#[derive(Serialize)]
struct CreatedLine<'a> {
    name: &'a str,
    consistent_point: String,
}

/// Runs one slot subcommand; returns its exit status (that of `health`'s grade, else 0).
pub(crate) async fn slot(args: &SlotArgs) -> Result<u8, SlotError> {
    let mut out = io::stdout().lock();
    match &args.command {
        SlotCommand::List { conninfo, slot } => {
            let mut slots = SlotManager::connect(conninfo).await?;
            let list = match slot {
                Some(name) => slots.read(name).await?.into_iter().collect(),
                None => slots.list().await?,
            };
            let statuses = SlotStatus::list(slots.connection()).await?;
            for s in &list {
                let status = statuses.iter().find(|t| t.name == s.name);
                print_line(&mut out, &SlotLine::new(s, status))?;
            }
            close(slots).await;
        }
        SlotCommand::Health {
            conninfo,
            slot,
            max_lag_bytes,
            min_safe_wal_size,
        } => {
            let mut slots = SlotManager::connect(conninfo).await?;
            let status = SlotStatus::read(slots.connection(), slot).await?;
            close(slots).await;
            let Some(s) = status else {
                print_line(
                    &mut out,
                    &HealthLine {
                        name: slot,
                        status: "missing",
                        reasons: vec!["the slot does not exist".to_owned()],
                        active: None,
                        wal_status: None,
                        safe_wal_size: None,
                        min_safe_wal_size: *min_safe_wal_size,
                        lag_bytes: None,
                        max_lag_bytes: *max_lag_bytes,
                        invalidation_reason: None,
                    },
                )?;
                return Ok(crate::exit::SLOT);
            };
            let (health, reasons) = s.health(*max_lag_bytes, *min_safe_wal_size);
            print_line(
                &mut out,
                &HealthLine {
                    name: &s.name,
                    status: health.as_str(),
                    reasons,
                    active: Some(s.active),
                    wal_status: s.wal_status.as_ref().map(|w| w.as_str()),
                    safe_wal_size: s.safe_wal_size,
                    min_safe_wal_size: s.safe_wal_threshold(*min_safe_wal_size),
                    lag_bytes: s.lag_bytes,
                    max_lag_bytes: *max_lag_bytes,
                    invalidation_reason: s.invalidation_reason.as_ref().map(|r| r.as_str()),
                },
            )?;
            return Ok(health_exit(health));
        }
        SlotCommand::Create {
            conninfo,
            slot,
            temporary,
            two_phase,
        } => {
            let mut slots = SlotManager::connect(conninfo).await?;
            let mut options = CreateSlotOptions::logical("pgoutput");
            options.temporary = *temporary;
            options.two_phase = *two_phase;
            let created = slots.create(slot, &options).await?;
            print_line(
                &mut out,
                &CreatedLine {
                    name: &created.slot_name,
                    consistent_point: created.consistent_point.to_string(),
                },
            )?;
            close(slots).await;
        }
        SlotCommand::Drop {
            conninfo,
            slot,
            wait,
        } => {
            let mut slots = SlotManager::connect(conninfo).await?;
            slots.drop_slot(slot, *wait).await?;
            tracing::info!("dropped slot {slot}");
            close(slots).await;
        }
    }
    Ok(0)
}

fn print_line(out: &mut impl Write, line: &impl Serialize) -> Result<(), SlotError> {
    serde_json::to_writer(&mut *out, line).map_err(|e| SlotError::Output(e.into()))?;
    out.write_all(b"\n")
        .and_then(|()| out.flush())
        .map_err(SlotError::Output)
}

/// Ends the session politely; the work is done either way.
async fn close(slots: SlotManager) {
    if let Err(e) = slots.close().await {
        tracing::debug!("closing the connection: {e}");
    }
}

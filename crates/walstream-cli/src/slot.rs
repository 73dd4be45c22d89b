//! `walstream slot list|create|drop`: replication slots through `walstream::SlotManager`, one
//! JSON object per line on stdout.

use std::io::{self, Write};

use serde::Serialize;
use walstream::walconn::CreateSlotOptions;
use walstream::{SlotInfo, SlotManager};

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
            SlotError::Server(e) => write!(f, "{e}"),
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
}

impl<'a> From<&'a SlotInfo> for SlotLine<'a> {
    fn from(s: &'a SlotInfo) -> Self {
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
        }
    }
}

/// The line of `slot create`.
#[derive(Serialize)]
struct CreatedLine<'a> {
    name: &'a str,
    consistent_point: String,
}

/// Runs one slot subcommand.
pub(crate) async fn slot(args: &SlotArgs) -> Result<(), SlotError> {
    let mut out = io::stdout().lock();
    match &args.command {
        SlotCommand::List { conninfo } => {
            let mut slots = SlotManager::connect(conninfo).await?;
            let list = slots.list().await?;
            for s in &list {
                print_line(&mut out, &SlotLine::from(s))?;
            }
            close(slots).await;
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
    Ok(())
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

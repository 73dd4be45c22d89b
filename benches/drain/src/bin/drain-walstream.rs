//! walstream drain consumer (modes `walstream`, `walstream-mt`, `walstream-raw`,
//! `walstream-nocoalesce`, `walstream-tx`, `walstream-latency`); see lib.rs.

use std::time::Duration;

use drain_bench::{Args, BoxError, Counts};

fn main() -> std::process::ExitCode {
    drain_bench::run(
        &[
            "walstream",
            "walstream-mt",
            "walstream-raw",
            "walstream-nocoalesce",
            "walstream-tx",
            "walstream-latency",
        ],
        |args| async move {
            match args.mode.as_str() {
                "walstream-tx" => drain_transactions(&args).await,
                "walstream-latency" => commit_times(&args).await,
                "walstream-raw" => drain_walstream(&args, true).await,
                _ => drain_walstream(&args, false).await,
            }
        },
    )
}

async fn drain_walstream(args: &Args, raw: bool) -> Result<Counts, BoxError> {
    use walstream::{EventKind, LogicalReplicationStream, ReplicationStreamConfig, Streaming};

    let end: walstream::Lsn = args.end.parse().map_err(|e| format!("END_LSN: {e:?}"))?;
    let mut builder =
        ReplicationStreamConfig::builder(args.slot.as_str(), [args.publication.as_str()])
            .proto_version(walstream::ProtocolVersion::V1)
            .streaming(Streaming::Off)
            .raw(raw)
            .end_lsn(end);
    if args.mode == "walstream-nocoalesce" {
        builder = builder.read_coalescing(Duration::ZERO);
    }
    let config = builder.build()?;
    let mut events = LogicalReplicationStream::connect(&args.conninfo, config)
        .await?
        .start();
    let mut counts = Counts::default();
    let mut last_raw_end = None;
    while let Some(event) = events.next_event().await? {
        match &event.kind {
            EventKind::Insert(insert) => {
                counts.rows += 1;
                // Every value read, borrowed from the frame (`Row::columns`, the documented
                // fast path; `values()` would take an owned `Bytes` of each).
                for value in insert.new.columns() {
                    counts.bytes += column_len(value);
                }
            }
            EventKind::XLogData(x) => {
                counts.rows += 1;
                counts.bytes += x.data.len() as u64;
                last_raw_end = Some(x.wal_end);
            }
            _ => {}
        }
        if let Some(lsn) = event.ack_lsn() {
            events.ack(lsn);
        }
    }
    // Raw mode has no transaction ends to acknowledge: acknowledge what was received.
    if let Some(lsn) = last_raw_end {
        events.ack(lsn);
    }
    events.shutdown().await?;
    Ok(counts)
}

/// The latency mode: follows the slot (no end; the bench kills it) and prints
/// `commit UNIX_MICROS` (the server's commit time) the moment each Commit event arrives; the
/// bench timestamps each line as it reads it.
async fn commit_times(args: &Args) -> Result<Counts, BoxError> {
    use walstream::{EventKind, LogicalReplicationStream, ReplicationStreamConfig, Streaming};

    let config = ReplicationStreamConfig::builder(args.slot.as_str(), [args.publication.as_str()])
        .proto_version(walstream::ProtocolVersion::V1)
        .streaming(Streaming::Off)
        .build()?;
    let mut events = LogicalReplicationStream::connect(&args.conninfo, config)
        .await?
        .start();
    let mut counts = Counts::default();
    while let Some(event) = events.next_event().await? {
        if let EventKind::Commit(commit) = &event.kind {
            counts.rows += 1;
            // stdout is line-buffered: one write per commit.
            println!("commit {}", commit.commit_time.unix_micros().unwrap_or(0));
        }
        if let Some(lsn) = event.ack_lsn() {
            events.ack(lsn);
        }
    }
    Ok(counts)
}

/// The big-transaction mode: committed transactions through a `TransactionStream` with the
/// memory budget of the command line (default: walstream's), streaming on; every change of
/// every transaction read (spilled ones back from their file), each transaction acknowledged.
async fn drain_transactions(args: &Args) -> Result<Counts, BoxError> {
    use walstream::{
        ChangeKind, LogicalReplicationStream, ReplicationStreamConfig, Streaming,
        TransactionConfig, DEFAULT_MEMORY_BUDGET,
    };

    let end: walstream::Lsn = args.end.parse().map_err(|e| format!("END_LSN: {e:?}"))?;
    let config = ReplicationStreamConfig::builder(args.slot.as_str(), [args.publication.as_str()])
        .streaming(Streaming::On)
        .end_lsn(end)
        .build()?;
    let budget = args.budget.unwrap_or(DEFAULT_MEMORY_BUDGET);
    let mut txs = LogicalReplicationStream::connect(&args.conninfo, config)
        .await?
        .start()
        .into_transactions(TransactionConfig::default().memory_budget(budget));
    let mut counts = Counts::default();
    let mut spilled = 0u64;
    while let Some(tx) = txs.next_transaction().await? {
        spilled += u64::from(tx.is_spilled());
        for change in tx.changes() {
            if let ChangeKind::Insert(insert) = change?.kind {
                counts.rows += 1;
                // Every value read, borrowed from the frame (`Row::columns`, the documented
                // fast path; `values()` would take an owned `Bytes` of each).
                for value in insert.new.columns() {
                    counts.bytes += column_len(value);
                }
            }
        }
        txs.ack(&tx);
    }
    eprintln!(
        "walstream-tx: budget {budget} bytes, {spilled} transaction(s) spilled, {} bytes spilled",
        txs.assembler().spilled_bytes()
    );
    txs.shutdown().await?;
    Ok(counts)
}

fn column_len(value: walstream::walproto::pgoutput::Column<'_>) -> u64 {
    use walstream::walproto::pgoutput::Column;
    match value {
        Column::Text(b) | Column::Binary(b) => b.len() as u64 + 1,
        Column::Null | Column::UnchangedToast => 1,
    }
}

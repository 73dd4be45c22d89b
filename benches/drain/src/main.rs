//! `drain-bench MODE CONNINFO SLOT PUBLICATION END_LSN`: drains one logical slot from the
//! position it was created at until `END_LSN`, decoding every row, acknowledging each
//! transaction as it ends, then exits printing `rows=N bytes=M` (row events decoded, and the
//! sum of their column value lengths, so that every column of every row is read).
//!
//! Modes (see `benches/README.md`):
//!
//! - `walstream`: `walstream` on a current-thread tokio runtime, counting `EventKind::Insert`.
//! - `walstream-mt`: the same on a two-worker multi-thread runtime.
//! - `walstream-raw`: `walstream` in raw mode (undecoded XLogData), counting `XLogData`; its
//!   byte count is the pgoutput bytes received.
//! - `pg_walstream`: `pg_walstream` 0.10 over libpq, counting `EventType::Insert`.
//!
//! All use pgoutput protocol 1 with streaming off, as `pg_recvlogical` does in the bench.

use std::process::ExitCode;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str =
    "usage: drain-bench walstream|walstream-mt|walstream-raw|pg_walstream CONNINFO SLOT PUBLICATION END_LSN";

struct Args {
    mode: String,
    conninfo: String,
    slot: String,
    publication: String,
    end: String,
}

#[derive(Default)]
struct Counts {
    rows: u64,
    bytes: u64,
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let (Some(mode), Some(conninfo), Some(slot), Some(publication), Some(end), None) = (
        argv.next(),
        argv.next(),
        argv.next(),
        argv.next(),
        argv.next(),
        argv.next(),
    ) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args = Args {
        mode,
        conninfo,
        slot,
        publication,
        end,
    };
    let runtime = match args.mode.as_str() {
        "walstream-mt" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drain-bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.mode.as_str() {
            "walstream" | "walstream-mt" => drain_walstream(&args, false).await,
            "walstream-raw" => drain_walstream(&args, true).await,
            "pg_walstream" => drain_pg_walstream(&args).await,
            other => Err(format!("unknown mode {other:?}\n{USAGE}").into()),
        }
    });
    match result {
        Ok(c) => {
            println!("rows={} bytes={}", c.rows, c.bytes);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("drain-bench {}: {e}", args.mode);
            ExitCode::FAILURE
        }
    }
}

async fn drain_walstream(args: &Args, raw: bool) -> Result<Counts, BoxError> {
    use walstream::{EventKind, LogicalReplicationStream, ReplicationStreamConfig, Streaming};

    let end: walstream::Lsn = args.end.parse().map_err(|e| format!("END_LSN: {e:?}"))?;
    let config = ReplicationStreamConfig::builder(args.slot.as_str(), [args.publication.as_str()])
        .proto_version(1)
        .streaming(Streaming::Off)
        .raw(raw)
        .end_lsn(end)
        .build()?;
    let mut events = LogicalReplicationStream::connect(&args.conninfo, config)
        .await?
        .start();
    let mut counts = Counts::default();
    let mut last_raw_end = None;
    while let Some(event) = events.next_event().await? {
        match &event.kind {
            EventKind::Insert(insert) => {
                counts.rows += 1;
                for value in insert.new.values() {
                    counts.bytes += column_len(&value);
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

fn column_len(value: &walstream::ColumnValue) -> u64 {
    use walstream::ColumnValue;
    match value {
        ColumnValue::Text(b) | ColumnValue::Binary(b) => b.len() as u64 + 1,
        _ => 1,
    }
}

async fn drain_pg_walstream(args: &Args) -> Result<Counts, BoxError> {
    use pg_walstream::{
        EventType, LogicalReplicationStream, Lsn, ReplicationError, ReplicationStreamConfig,
        StreamingMode,
    };

    let end: Lsn = args.end.parse().map_err(|e| format!("END_LSN: {e:?}"))?;
    let config = ReplicationStreamConfig::builder(args.slot.as_str(), args.publication.as_str())
        .with_protocol_version(1)
        .with_streaming_mode(StreamingMode::Off)
        .with_existing_slot_required(true)
        .with_stop_at_lsn(end);
    // libpq opens a replication connection only when asked to.
    let conninfo = format!("{} replication=database", args.conninfo);
    let mut stream = LogicalReplicationStream::new(&conninfo, config).await?;
    stream.start(None).await?;
    let mut events = stream.into_stream(pg_walstream::CancellationToken::new());
    let mut counts = Counts::default();
    loop {
        let event = match events.next_event().await {
            Ok(event) => event,
            Err(ReplicationError::StreamStopped(_)) => break,
            Err(e) => return Err(e.into()),
        };
        match &event.event_type {
            EventType::Insert { data, .. } => {
                counts.rows += 1;
                for (_, value) in data.iter() {
                    counts.bytes += match value {
                        pg_walstream::ColumnValue::Text(b)
                        | pg_walstream::ColumnValue::Binary(b) => b.len() as u64 + 1,
                        _ => 1,
                    };
                }
            }
            EventType::Commit { end_lsn, .. } => events.update_applied_lsn(*end_lsn),
            _ => {}
        }
    }
    events.shutdown().await?;
    Ok(counts)
}

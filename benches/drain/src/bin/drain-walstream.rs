//! walstream drain consumer (modes `walstream`, `walstream-mt`, `walstream-raw`); see lib.rs.

use drain_bench::{Args, BoxError, Counts};

fn main() -> std::process::ExitCode {
    drain_bench::run(
        &["walstream", "walstream-mt", "walstream-raw"],
        |args| async move {
            let raw = args.mode == "walstream-raw";
            drain_walstream(&args, raw).await
        },
    )
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

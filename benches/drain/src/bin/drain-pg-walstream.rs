//! pg_walstream 0.10 drain consumer (modes `pg_walstream` and `pg_walstream-latency`); see
//! lib.rs.

use drain_bench::{Args, BoxError, Counts};

fn main() -> std::process::ExitCode {
    drain_bench::run(
        &["pg_walstream", "pg_walstream-latency"],
        |args| async move { drain_pg_walstream(&args).await },
    )
}

async fn drain_pg_walstream(args: &Args) -> Result<Counts, BoxError> {
    use pg_walstream::{
        EventType, LogicalReplicationStream, Lsn, ReplicationError, ReplicationStreamConfig,
        StreamingMode,
    };

    // The latency mode follows the slot (no end; the bench kills it) and prints
    // `commit UNIX_MICROS` (the server's commit time) the moment each Commit arrives.
    let latency = args.mode == "pg_walstream-latency";
    let mut config =
        ReplicationStreamConfig::builder(args.slot.as_str(), args.publication.as_str())
            .with_protocol_version(1)
            .with_streaming_mode(StreamingMode::Off)
            .with_existing_slot_required(true);
    if !latency {
        let end: Lsn = args.end.parse().map_err(|e| format!("END_LSN: {e:?}"))?;
        config = config.with_stop_at_lsn(end);
    }
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
            EventType::Commit {
                end_lsn,
                commit_timestamp,
                ..
            } => {
                if latency {
                    println!("commit {}", commit_timestamp.timestamp_micros());
                }
                events.update_applied_lsn(*end_lsn);
            }
            _ => {}
        }
    }
    events.shutdown().await?;
    Ok(counts)
}

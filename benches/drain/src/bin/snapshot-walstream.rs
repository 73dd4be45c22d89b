//! The consumer of the snapshot bench (`cargo xtask bench --only snapshot`): walstream's initial
//! snapshot of a publication's tables, as a user would take it, on a two-worker tokio runtime
//! (what `#[tokio::main]` gives on this machine's two cores).
//!
//! Usage: `snapshot-walstream CONNINFO PUBLICATION PARALLELISM`. It creates a temporary slot
//! with the snapshot (`SnapshotOptions::all_tables().parallelism(PARALLELISM)`, every table
//! split whatever its size), reads every value of every inserted row borrowed from its frame
//! (`Row::columns`, the documented fast path), stops at `SnapshotEnd`, and prints
//! `rows=N bytes=M`: the rows, and the sum of their value lengths plus one per column, so that
//! every column of every row is read.

use std::process::ExitCode;

use walstream::walproto::pgoutput::Column;
use walstream::{
    CreateSlot, EventKind, LogicalReplicationStream, ReplicationStreamConfig, SnapshotOptions,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let [conninfo, publication, parallelism] = argv.as_slice() else {
        eprintln!("usage: snapshot-walstream CONNINFO PUBLICATION PARALLELISM");
        return ExitCode::from(2);
    };
    let Ok(parallelism) = parallelism.parse::<usize>() else {
        eprintln!("PARALLELISM: not a number: {parallelism:?}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(snapshot(conninfo, publication, parallelism)) {
        Ok((rows, bytes)) => {
            println!("rows={rows} bytes={bytes}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("snapshot-walstream: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Takes the snapshot; returns the rows and value bytes read.
async fn snapshot(
    conninfo: &str,
    publication: &str,
    parallelism: usize,
) -> Result<(u64, u64), BoxError> {
    let slot = format!("bench_snapshot_{}", std::process::id());
    let config = ReplicationStreamConfig::builder(slot, [publication])
        .create_slot_if_missing(CreateSlot::Temporary)
        .initial_snapshot(
            SnapshotOptions::all_tables()
                .parallelism(parallelism)
                .parallel_threshold(0),
        )
        .build()?;
    let mut events = LogicalReplicationStream::connect(conninfo, config)
        .await?
        .start();
    let (mut rows, mut bytes) = (0u64, 0u64);
    while let Some(event) = events.next_event().await? {
        match &event.kind {
            EventKind::Insert(insert) => {
                rows += 1;
                for value in insert.new.columns() {
                    bytes += match value {
                        Column::Text(b) | Column::Binary(b) => b.len() as u64 + 1,
                        Column::Null | Column::UnchangedToast => 1,
                    };
                }
            }
            EventKind::SnapshotEnd { .. } => break,
            _ => {}
        }
    }
    events.shutdown().await?;
    Ok((rows, bytes))
}

//! A current-thread runtime under `wal_sender_timeout = 2s`: the driver task shares the
//! consumer's thread, so whatever holds that thread holds back the status updates. A consumer
//! that iterates a large spilled transaction with `change_stream`, or that does its blocking
//! work in `spawn_blocking`, keeps its connection; one that blocks the thread itself loses it
//! (what the crate docs tell consumers not to do).

use std::time::{Duration, Instant};

use walstream::{ChangeKind, ColumnValue, EventKind, LogicalReplicationStream, TransactionConfig};

use crate::Fixture;

/// What the server allows between two replies of the client.
const WAL_SENDER_TIMEOUT: &str = "2s";

/// Longer than twice the timeout: the server has given up on a silent client by then.
const BLOCK: Duration = Duration::from_secs(5);

/// The newest installed major's shared cluster.
fn cluster() -> &'static pgtest::Cluster {
    pgtest::cluster(
        *pgtest::installed_majors()
            .last()
            .expect("no PostgreSQL installed"),
    )
}

/// The fixture's database, with a walsender that ends the connection after
/// [`WAL_SENDER_TIMEOUT`] without a reply.
fn conninfo(f: &Fixture<'_>) -> String {
    format!(
        "{} options='-c wal_sender_timeout={WAL_SENDER_TIMEOUT}'",
        f.db.conninfo()
    )
}

/// Runs `f` on a current-thread runtime: the stream's driver task and the consumer take
/// turns on this one thread, as the crate docs recommend for one stream.
fn current_thread<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Streams the fixture's two transactions, running `work` after each before acknowledging
/// it; returns the number of reconnects.
async fn consume_with(f: &Fixture<'_>, work: impl AsyncFnMut()) -> u64 {
    let mut work = work;
    let config = f.config().build().unwrap();
    let mut events = LogicalReplicationStream::connect(&conninfo(f), config)
        .await
        .unwrap()
        .start();
    let mut last_seen = false;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.next_event())
            .await
            .expect("timed out waiting for events")
            .unwrap()
            .expect("the stream ended early");
        if let EventKind::Insert(i) = &event.kind {
            last_seen |= i.new.get("id") == Some(ColumnValue::Text("2".into()));
        }
        if let Some(lsn) = event.ack_lsn() {
            work().await;
            events.ack(lsn);
            if last_seen {
                break;
            }
        }
    }
    let reconnects = settled_reconnects(|| events.stats().reconnects).await;
    let last = events.shutdown().await.unwrap();
    assert_eq!(f.confirmed_flush(), last);
    reconnects
}

/// The reconnects of a stream, once its driver has had the time to notice a connection that
/// the server ended while the consumer worked (it notices at its next read, and then
/// reconnects within a second).
async fn settled_reconnects(stats: impl Fn() -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    while stats() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stats()
}

fn two_transactions(f: &Fixture<'_>) {
    f.db.psql("INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b');")
        .unwrap();
}

#[test]
fn a_consumer_that_blocks_in_spawn_blocking_keeps_its_connection() {
    let f = Fixture::new(cluster(), "ws_rt_spawn_blocking");
    two_transactions(&f);
    let reconnects = current_thread(consume_with(&f, async || {
        tokio::task::spawn_blocking(|| std::thread::sleep(BLOCK))
            .await
            .unwrap();
    }));
    assert_eq!(
        reconnects, 0,
        "the connection was lost while the work was blocking"
    );
}

#[test]
fn a_consumer_that_blocks_the_runtime_thread_loses_its_connection() {
    // The hazard the crate docs warn about, and the proof that the test above would see it:
    // blocking the one thread of the runtime stops the driver's status updates, the server
    // ends the connection after wal_sender_timeout, and the stream reconnects.
    let f = Fixture::new(cluster(), "ws_rt_blocking");
    two_transactions(&f);
    let reconnects = current_thread(consume_with(&f, async || std::thread::sleep(BLOCK)));
    assert!(
        reconnects > 0,
        "blocking the runtime's thread kept the connection"
    );
}

/// The transaction budget of the spilled-transaction test, and what the process may hold
/// besides it: the connection's read buffers, the channel's batches, the spill thread's and
/// the reader's buffers, the runtime.
const SPILL_BUDGET: usize = 4 << 20;
const SPILL_SLACK: usize = 12 << 20;

#[test]
fn iterating_a_spilled_50_mb_transaction_keeps_the_connection() {
    // The spill thread and the change stream's reader allocate on threads of their own: the
    // memory is measured for the whole process, with this test alone in it.
    if !pgtest::alloc::alone("runtime::iterating_a_spilled_50_mb_transaction_keeps_the_connection")
    {
        return;
    }
    let f = Fixture::new(cluster(), "ws_rt_spilled");
    // 50,000 rows of 1,000 bytes, then a marker in a transaction of its own.
    let rows = 50_000;
    f.db.psql(&format!(
        "INSERT INTO t SELECT g, repeat('x', 1000) FROM generate_series(1, {rows}) g;
         INSERT INTO t VALUES (-1, 'marker');"
    ))
    .unwrap();
    let spill_dir = tempfile::tempdir().unwrap();
    let memory = pgtest::alloc::ProcessWindow::open();
    current_thread(async {
        let config = f.config().build().unwrap();
        let mut txs = LogicalReplicationStream::connect(&conninfo(&f), config)
            .await
            .unwrap()
            .start()
            .into_transactions(
                TransactionConfig::default()
                    .memory_budget(SPILL_BUDGET)
                    .spill_dir(spill_dir.path()),
            );
        let big = next(&mut txs).await;
        assert!(big.is_spilled());
        // About 100 µs of work per change, with no await of its own: five seconds in all,
        // more than twice wal_sender_timeout, in which only the change stream's turns let
        // the driver send status updates.
        let started = Instant::now();
        let mut ids = Vec::new();
        let mut changes = big.change_stream();
        while let Some(change) = changes.next_change().await {
            let ChangeKind::Insert(insert) = change.unwrap().kind else {
                panic!("not an insert");
            };
            let Some(ColumnValue::Text(id)) = insert.new.get("id") else {
                panic!("no id");
            };
            ids.push(std::str::from_utf8(&id).unwrap().parse::<i64>().unwrap());
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_micros(100) {
                std::hint::spin_loop();
            }
        }
        drop(changes);
        let took = started.elapsed();
        assert!(took > BLOCK, "the work took only {took:?}");
        assert_eq!(ids, (1..=rows).collect::<Vec<i64>>());
        txs.ack(&big);
        let marker = next(&mut txs).await;
        assert_eq!(marker.len(), 1);
        txs.ack(&marker);
        let reconnects = settled_reconnects(|| txs.stats().reconnects).await;
        assert_eq!(reconnects, 0, "the connection was lost");
        println!(
            "iterated {} changes in {took:?}; {} bytes spilled",
            ids.len(),
            txs.assembler().spilled_bytes()
        );
        // At least the marker (a keepalive's position when idle and all is acknowledged).
        let last = txs.shutdown().await.unwrap();
        assert!(last >= marker.end_lsn, "{last} < {}", marker.end_lsn);
        // Measured from outside: the 50 MB transaction went through the 4 MiB budget, the
        // rest of the process (connection, channel, spill and read-back buffers, runtime)
        // within the stated slack.
        let peak = memory.peak();
        println!("the process held at most {peak} bytes more than at the start");
        assert!(
            peak <= SPILL_BUDGET + SPILL_SLACK,
            "the process held {peak} bytes at its peak for a {SPILL_BUDGET}-byte budget"
        );
    });
    let left: Vec<_> = std::fs::read_dir(spill_dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

async fn next(txs: &mut walstream::TransactionStream) -> walstream::Transaction {
    tokio::time::timeout(Duration::from_secs(120), txs.next_transaction())
        .await
        .expect("timed out waiting for a transaction")
        .unwrap()
        .expect("the stream ended early")
}

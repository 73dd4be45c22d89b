//! Feedback: never beyond the acknowledgement, idle databases do not pin WAL, slow consumers
//! survive `wal_sender_timeout`, and a consumer that does not read bounds memory.

use std::time::Duration;

use walstream::{EventKind, LogicalReplicationStream, MAX_BATCH_BYTES};

use crate::{block_on, read_transactions, Fixture};

#[test]
fn writes_to_unpublished_tables_advance_the_slot() {
    pgtest::for_each_major(15, |cluster| {
        let f = Fixture::new(cluster, "ws_idle");
        block_on(async {
            let events = f.start(f.config()).await;
            let before = f.confirmed_flush();
            for i in 0..5 {
                f.db.psql(&format!(
                    "INSERT INTO u SELECT g FROM generate_series(1, 100) g; SELECT {i}"
                ))
                .unwrap();
            }
            let written = f.current_lsn();
            // Nothing was delivered, nothing acknowledged; the keepalives between transactions
            // still let the slot move past the unpublished writes.
            let after = f
                .wait_confirmed("past the unpublished writes", |l| l >= written)
                .await;
            assert!(after > before);
            assert_eq!(events.stats().reconnects, 0);
            events.shutdown().await.unwrap();
        });
    });
}

#[test]
fn an_application_that_never_acknowledges_never_moves_the_slot() {
    pgtest::for_each_major(15, |cluster| {
        let f = Fixture::new(cluster, "ws_noack");
        let initial = f.confirmed_flush();
        f.db.psql("INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b');")
            .unwrap();
        block_on(async {
            let mut events = f.start(f.config()).await;
            let got = read_transactions(&mut events, 2).await;
            assert_eq!(
                got.iter()
                    .filter(|e| matches!(e.kind, EventKind::Insert(_)))
                    .count(),
                2
            );
            // Unpublished traffic makes the server send keepalives past the transactions.
            for _ in 0..3 {
                f.db.psql("INSERT INTO u VALUES (1)").unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let stats = events.stats();
            assert!(stats.status_updates >= 3, "{stats:?}");
            assert!(stats.received > initial);
            assert_eq!(stats.reported_flush, initial);
            assert_eq!(f.confirmed_flush(), initial);
            let reported = events.shutdown().await.unwrap();
            assert_eq!(reported, initial);
            assert_eq!(f.confirmed_flush(), initial);
        });
    });
}

#[test]
fn a_slow_consumer_survives_wal_sender_timeout_and_bounds_memory() {
    let cluster = pgtest::cluster(17);
    let f = Fixture::new(cluster, "ws_slow");
    // About 9 MB of stream, far more than the channel may hold.
    f.db.psql("INSERT INTO t SELECT g, repeat('x', 40) FROM generate_series(1, 100000) g")
        .unwrap();
    let conninfo = format!("{} options='-c wal_sender_timeout=1s'", f.db.conninfo());
    // On this thread, so that the counting allocator sees everything the stream holds.
    crate::memory::on_this_thread(async {
        let window = pgtest::alloc::Window::open();
        let stream = LogicalReplicationStream::connect(
            &conninfo,
            f.config()
                .status_interval(Duration::from_secs(10))
                .buffer_batches(2)
                .streaming(walstream::Streaming::Off)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
        // A third of the timeout.
        assert_eq!(stream.status_interval().as_millis(), 333);
        let mut events = stream.start();
        let first = events.next_event().await.unwrap().unwrap();
        assert!(matches!(first.kind, EventKind::Begin(_)));
        // Busy for four times the server's timeout.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let stats = events.stats();
        // The driver kept the server informed while nobody read...
        assert!(stats.status_updates >= 8, "{stats:?}");
        // ...and stopped reading: at most the channel's batches, the one it holds, and the
        // consumer's current one, each a batch's bytes plus one message.
        let bound = 4 * (MAX_BATCH_BYTES + 1024);
        assert!(stats.peak_buffered_bytes <= bound, "{stats:?} > {bound}");
        // Measured from outside: what the client holds while nobody reads is that bound plus
        // the connection, the runtime and the decoder, never the 9 MB the server has to send.
        let held = window.usage().peak;
        assert!(
            held <= bound + crate::memory::SLACK,
            "the client held {held} bytes while nobody read"
        );
        let mut inserts = 0;
        let mut end = None;
        while end.is_none() {
            let e = events.next_event().await.unwrap().unwrap();
            match e.kind {
                EventKind::Insert(_) => inserts += 1,
                EventKind::Commit(c) => end = Some(c.end_lsn),
                _ => {}
            }
        }
        assert_eq!(inserts, 100_000);
        let stats = events.stats();
        assert_eq!(
            stats.reconnects, 0,
            "the server dropped the slow consumer: {stats:?}"
        );
        assert!(stats.peak_buffered_bytes <= bound, "{stats:?} > {bound}");
        events.ack(end.unwrap());
        // At the end, or at an idle keepalive past it (other tests write to this cluster).
        assert!(events.shutdown().await.unwrap() >= end.unwrap());
    });
}

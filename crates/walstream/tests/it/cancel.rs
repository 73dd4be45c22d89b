//! Cancel safety: the futures of `EventStream::next_event`, `TransactionStream::next_transaction`
//! and `shutdown` are dropped at random points, many times over, and the object is used on.
//! Against a live server, so are `SlotManager`'s methods (each call completes with the right
//! answer or poisons the connection, and the next call says so at once) and
//! `LogicalReplicationStream::connect` (no backend is left behind; a slot remains only if it
//! is permanent, and then the next connect uses it).
//!
//! The server is the fake walsender of `hostile.rs`, so the expected stream is known exactly:
//! plain transactions, streamed ones (blocks interleaved with plain transactions, one streamed
//! transaction aborted) and keepalives, written in random pieces with pauses so that the
//! futures are dropped while frames are half read, while batches wait in the channel, and
//! between the events of one batch.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use pgtest::cancel::{poll_once, Mix, Tally};
use pgtest::fake::FakeWalsender;
use walstream::{ChangeEvent, EventKind, Lsn, TransactionConfig, Xid};

use crate::block_on;
use crate::hostile::{
    flushes, insert, keepalive, row_id, stream, stream_commit, stream_start, Wal, REL,
};

/// The script's stream and what must come out of it: each event's signature in order, and
/// the committed transactions (xid, row ids) in commit order.
struct Script {
    bytes: Vec<u8>,
    events: Vec<String>,
    committed: Vec<(u32, Vec<i64>)>,
}

fn script(transactions: u32) -> Script {
    let mut wal = Wal::default();
    let mut s = Script {
        bytes: Vec::new(),
        events: Vec::new(),
        committed: Vec::new(),
    };
    let mut next_id = 1i64;
    let mut ids = |n: i64| {
        let v: Vec<i64> = (next_id..next_id + n).collect();
        next_id += n;
        v
    };
    let mut streamed: Option<(u32, Vec<i64>)> = None;
    for i in 0..transactions {
        let xid = 1000 + i;
        let rows = ids(1 + i64::from(i % 4));
        let (frames, _) = wal.transaction(xid, &rows);
        s.bytes.extend(frames);
        s.events.push(format!("B{xid}"));
        if i == 0 {
            s.events.push("R".into());
        }
        s.events.extend(rows.iter().map(|id| format!("I{id}")));
        s.events.push("C".into());
        s.committed.push((xid, rows));
        if i % 7 == 3 {
            s.bytes.extend(keepalive(wal.lsn, i % 14 == 3));
        }
        // Every few transactions, a block of a streamed transaction; every third streamed
        // transaction is aborted, the others commit after three blocks.
        if i % 5 == 2 {
            let (sxid, mut srows) = streamed.take().unwrap_or((900_000 + i, Vec::new()));
            let first = srows.is_empty();
            s.bytes.extend(wal.xlog(&stream_start(sxid, first)));
            s.events.push(format!("S{sxid}"));
            for id in ids(3) {
                s.bytes
                    .extend(wal.xlog(&insert(Some(sxid), REL, &[&id.to_string(), "s"])));
                s.events.push(format!("I{id}"));
                srows.push(id);
            }
            s.bytes.extend(wal.xlog(b"E"));
            s.events.push("E".into());
            if srows.len() < 9 {
                streamed = Some((sxid, srows));
            } else if (sxid / 5) % 3 == 0 {
                let mut a = vec![b'A'];
                a.extend_from_slice(&sxid.to_be_bytes());
                a.extend_from_slice(&sxid.to_be_bytes());
                s.bytes.extend(wal.xlog(&a));
                s.events.push(format!("A{sxid}"));
            } else {
                let commit = wal.lsn;
                s.bytes
                    .extend(wal.xlog(&stream_commit(sxid, commit, commit + 0x20)));
                s.events.push(format!("c{sxid}"));
                s.committed.push((sxid, srows));
            }
        }
    }
    s
}

fn signature(e: &ChangeEvent) -> String {
    match &e.kind {
        EventKind::Begin(b) => format!("B{}", b.xid.0),
        EventKind::Relation(_) => "R".into(),
        EventKind::Insert(_) => format!("I{}", row_id(e).unwrap()),
        EventKind::Commit(_) => "C".into(),
        EventKind::StreamStart(s) => format!("S{}", s.xid.0),
        EventKind::StreamStop => "E".into(),
        EventKind::StreamCommit(c) => format!("c{}", c.xid.0),
        EventKind::StreamAbort(a) => format!("A{}", a.xid.0),
        other => format!("{other:?}"),
    }
}

/// A fake server that writes `bytes` in random pieces, pausing between them.
async fn serve_in_pieces(bytes: Vec<u8>, seed: u64) -> FakeWalsender {
    let bytes = std::sync::Arc::new(bytes);
    FakeWalsender::start(move |peer| {
        let bytes = bytes.clone();
        async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut at = 0;
            while at < bytes.len() {
                let end = (at + rng.usize(1..=1500)).min(bytes.len());
                if !peer.send(&bytes[at..end]).await {
                    return;
                }
                at = end;
                match rng.u32(..4) {
                    0 | 3 => tokio::time::sleep(Duration::from_micros(rng.u64(..300))).await,
                    1 => tokio::task::yield_now().await,
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
    })
    .await
}

#[test]
fn cancel_next_event_dropped_anywhere_loses_and_repeats_nothing() {
    block_on(async {
        let mut rng = pgtest::seeded_rng();
        let s = script(3000);
        let server = serve_in_pieces(s.bytes, rng.u64(..)).await;
        let mut stream = stream(&server, crate::hostile::config()).await;
        let mut got = Vec::new();
        let mut dropped = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while got.len() < s.events.len() {
            assert!(std::time::Instant::now() < deadline, "{} events", got.len());
            match Mix::LOCAL.pick(&mut rng).run(stream.next_event()).await {
                None => dropped += 1,
                Some(e) => {
                    let e = e.unwrap().expect("the stream ended early");
                    if let Some(end) = e.ack_lsn() {
                        stream.ack(end);
                    }
                    got.push(signature(&e));
                }
            }
        }
        println!("{} events, {dropped} futures dropped", got.len());
        assert_eq!(got, s.events);
        assert!(dropped >= 100, "{dropped}");
        // Nothing more is pending: only keepalives could follow.
        let more = tokio::time::timeout(Duration::from_millis(300), stream.next_event()).await;
        assert!(more.is_err(), "{more:?}");
        stream.shutdown().await.unwrap();
    });
}

#[test]
fn cancel_next_transaction_dropped_anywhere_loses_and_repeats_nothing() {
    block_on(async {
        let mut rng = pgtest::seeded_rng();
        let s = script(3000);
        let server = serve_in_pieces(s.bytes, rng.u64(..)).await;
        let mut txs = stream(&server, crate::hostile::config())
            .await
            .into_transactions(TransactionConfig::default());
        let mut got = Vec::new();
        let mut dropped = 0;
        let mut last_end = Lsn::ZERO;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while got.len() < s.committed.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} transactions",
                got.len()
            );
            match Mix::LOCAL.pick(&mut rng).run(txs.next_transaction()).await {
                None => dropped += 1,
                Some(tx) => {
                    let tx = tx.unwrap().expect("the stream ended early");
                    assert!(tx.end_lsn > last_end);
                    last_end = tx.end_lsn;
                    let ids: Vec<i64> = tx
                        .changes()
                        .map(|c| match c.unwrap().kind {
                            walstream::ChangeKind::Insert(i) => match i.new.get("id") {
                                Some(walstream::ColumnValue::Text(b)) => {
                                    std::str::from_utf8(&b).unwrap().parse().unwrap()
                                }
                                other => panic!("{other:?}"),
                            },
                            other => panic!("{other:?}"),
                        })
                        .collect();
                    txs.ack(&tx);
                    got.push((tx.xid, ids));
                }
            }
        }
        println!("{} transactions, {dropped} futures dropped", got.len());
        let expected: Vec<(Xid, Vec<i64>)> = s
            .committed
            .into_iter()
            .map(|(x, ids)| (Xid(x), ids))
            .collect();
        assert_eq!(got, expected);
        assert!(dropped >= 100, "{dropped}");
        let more = tokio::time::timeout(Duration::from_millis(300), txs.next_transaction()).await;
        assert!(more.is_err(), "{more:?}");
        assert_eq!(txs.feedback().flushed(), last_end);
        txs.shutdown().await.unwrap();
    });
}

#[test]
fn cancel_shutdown_dropped_anywhere_still_ends_cleanly() {
    // `shutdown` consumes the stream: a dropped shutdown future drops the stream, which stops
    // the driver in the background. Whatever the point of the drop, the server must see the
    // last status update with the acknowledged position, CopyDone and Terminate: the
    // documented behaviour of dropping the stream.
    block_on(async {
        let mut rng = pgtest::seeded_rng();
        let mut completed = 0;
        for round in 0..40 {
            let server = FakeWalsender::start(|peer| async move {
                let mut wal = Wal::default();
                peer.send(&wal.transaction(700, &[1]).0).await;
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    wal.lsn += 8;
                    if !peer.send(&wal.keepalive(false)).await {
                        return;
                    }
                }
            })
            .await;
            let mut stream = stream(&server, crate::hostile::config()).await;
            let end = loop {
                let e = stream.next_event().await.unwrap().unwrap();
                if let Some(end) = e.ack_lsn() {
                    break end;
                }
            };
            stream.ack(end);
            let result = if round % 2 == 0 {
                Mix::LOCAL.pick(&mut rng).run(stream.shutdown()).await
            } else {
                let txs = stream.into_transactions(TransactionConfig::default());
                Mix::LOCAL.pick(&mut rng).run(txs.shutdown()).await
            };
            if let Some(r) = result {
                completed += 1;
                assert!(r.unwrap() >= end);
            }
            let log = server.log();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while log.terminated() == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: the connection was not closed"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(log.copy_done(), 1, "round {round}");
            let flushes = flushes(&server);
            assert!(
                flushes.last().is_some_and(|&f| f >= end),
                "round {round}: {flushes:?} (acknowledged {end})"
            );
        }
        println!("40 rounds, {completed} shutdowns completed, the others dropped");
    });
}

/// `fut` is ready on its first poll with the poisoned connection's error.
fn poisoned_now<T: std::fmt::Debug>(fut: impl Future<Output = walstream::Result<T>>) {
    match poll_once(fut) {
        Poll::Ready(Err(e)) => {
            assert_eq!(e.kind(), walstream::ErrorKind::Connection, "{e:?}");
            assert!(e.connection().is_some_and(|c| c.is_poisoned()), "{e:?}");
        }
        other => panic!("expected the poisoned error at once, got {other:?}"),
    }
}

/// The backends connected to `db` (other than the asking one), after waiting up to 20 s for
/// the backends of dropped connections to go.
async fn wait_no_backends(db: &pgtest::Database<'_>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = db
            .psql(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
                 AND pid <> pg_backend_pid()",
                db.name()
            ))
            .unwrap();
        if left == "0" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} backends left behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn slot_names(db: &pgtest::Database<'_>, prefix: &str) -> Vec<String> {
    db.psql(&format!(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE '{prefix}%' ORDER BY 1"
    ))
    .unwrap()
    .lines()
    .filter(|l| !l.is_empty())
    .map(str::to_owned)
    .collect()
}

#[test]
fn cancel_slot_manager_methods_complete_or_poison() {
    // Each round one method (create, read, list, alter, drop), its future dropped at a random
    // point or awaited. Completed: the answer is right and the next call (a read of a known
    // slot) is in step. Dropped: every call fails at once with the poisoned error, and a new
    // manager takes over.
    let cluster = pgtest::cluster(17);
    let db = cluster.create_database("walstream_cancel_slots").unwrap();
    let prefix = cluster.unique_name("ws_cancel");
    let known = format!("{prefix}_known");
    db.psql(&format!(
        "SELECT pg_create_logical_replication_slot('{known}', 'pgoutput')"
    ))
    .unwrap();
    block_on(async {
        let mut rng = pgtest::seeded_rng();
        let conninfo = db.conninfo();
        let connect = || walstream::SlotManager::connect(&conninfo);
        let mut slots = connect().await.unwrap();
        let (mut completed, mut dropped) = ([0u32; 5], [0u32; 5]);
        for i in 0..250u32 {
            let method = usize::try_from(i % 5).unwrap();
            let name = format!("{prefix}_{i}");
            let how = Mix::LIVE.pick(&mut rng);
            let done = match method {
                0 => {
                    let mut o = walstream::walconn::CreateSlotOptions::physical();
                    o.temporary = true;
                    how.run(slots.create(&name, &o)).await.map(|r| {
                        assert_eq!(r.unwrap().slot_name, name);
                    })
                }
                1 => how.run(slots.read(&known)).await.map(|r| {
                    assert_eq!(r.unwrap().unwrap().plugin.as_deref(), Some("pgoutput"));
                }),
                2 => how.run(slots.list()).await.map(|r| {
                    assert!(r.unwrap().iter().any(|s| s.name == known));
                }),
                3 => how
                    .run(slots.alter(&known, Some(i % 2 == 0), None))
                    .await
                    .map(|r| r.unwrap()),
                _ => {
                    slots
                        .create(&name, &walstream::walconn::CreateSlotOptions::physical())
                        .await
                        .unwrap();
                    let r = how.run(slots.drop_slot(&name, false)).await;
                    if r.is_none() {
                        // The drop may or may not have run: clean up on a new manager.
                        let mut other = connect().await.unwrap();
                        if let Err(e) = other.drop_slot(&name, true).await {
                            assert_eq!(e.kind(), walstream::ErrorKind::Slot, "{e:?}");
                        }
                        other.close().await.unwrap();
                    }
                    r.map(|r| r.unwrap())
                }
            };
            if done.is_some() {
                completed[method] += 1;
                let info = tokio::time::timeout(Duration::from_secs(20), slots.read(&known))
                    .await
                    .expect("the next call hangs")
                    .unwrap()
                    .unwrap();
                assert_eq!(info.name, known);
            } else {
                dropped[method] += 1;
                assert!(slots.connection().is_poisoned());
                poisoned_now(slots.read(&known));
                poisoned_now(slots.list());
                poisoned_now(slots.drop_slot(&known, false));
                poisoned_now(slots.close());
                slots = connect().await.unwrap();
            }
        }
        println!("create, read, list, alter, drop: {completed:?} completed, {dropped:?} dropped");
        assert!(completed.iter().all(|&n| n > 0), "{completed:?}");
        assert!(dropped.iter().all(|&n| n > 0), "{dropped:?}");
        slots.drop_slot(&known, true).await.unwrap();
        slots.close().await.unwrap();
        // SlotManager::connect dropped anywhere leaves no backend behind.
        let mut connected = 0;
        for _ in 0..50 {
            if let Some(m) = Mix::LIVE.pick(&mut rng).run(connect()).await {
                m.unwrap().close().await.unwrap();
                connected += 1;
            }
        }
        println!("SlotManager::connect: {connected} of 50 completed");
        wait_no_backends(&db).await;
        // The temporary slots went with their connections.
        assert_eq!(slot_names(&db, &prefix), Vec::<String>::new());
    });
}

#[test]
fn cancel_stream_connect_dropped_anywhere_leaves_nothing_that_matters() {
    // `LogicalReplicationStream::connect` owns its connection: dropped at any point, the
    // connection closes. What may remain is what the server already did: a slot the connect
    // created. A temporary slot goes with the connection; a permanent one stays, complete and
    // inactive, and the next connect uses it.
    let cluster = pgtest::cluster(17);
    let db = cluster.create_database("walstream_cancel_connect").unwrap();
    let prefix = cluster.unique_name("ws_cancel_conn");
    db.psql("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t;")
        .unwrap();
    block_on(async {
        let mut rng = pgtest::seeded_rng();
        let mut tally = Tally::default();
        for i in 0..60u32 {
            let kind = if i % 2 == 0 {
                walstream::CreateSlot::Temporary
            } else {
                walstream::CreateSlot::Permanent
            };
            let slot = format!("{prefix}_{i}");
            let config = || {
                walstream::ReplicationStreamConfig::builder(&slot, ["p"])
                    .create_slot_if_missing(kind)
                    .build()
                    .unwrap()
            };
            let conninfo = db.conninfo();
            let connect = walstream::LogicalReplicationStream::connect(&conninfo, config());
            match Mix::LIVE.pick(&mut rng).run(connect).await {
                Some(stream) => {
                    tally.completed += 1;
                    drop(stream.unwrap());
                }
                None => tally.dropped += 1,
            }
            // The dropped connect's backend sees its socket closed and goes; a slot it was
            // creating is then either complete or gone (PostgreSQL drops a slot whose
            // creation failed). Until then a slot mid-creation is visible with no
            // confirmed_flush_lsn, so a connect that races with it would start from 0/0: wait.
            wait_no_backends(&db).await;
            let row = db
                .psql(&format!(
                    "SELECT temporary, active, confirmed_flush_lsn IS NOT NULL \
                     FROM pg_replication_slots WHERE slot_name = '{slot}'"
                ))
                .unwrap();
            match kind {
                walstream::CreateSlot::Temporary => assert_eq!(row, "", "round {i}"),
                _ => assert!(row.is_empty() || row == "f|f|t", "round {i}: {row:?}"),
            }
            if kind == walstream::CreateSlot::Permanent {
                // Whether or not the dropped connect created the slot, connecting again
                // works, from a real position.
                let stream = walstream::LogicalReplicationStream::connect(&conninfo, config())
                    .await
                    .unwrap();
                assert!(stream.start_lsn() > Lsn::ZERO, "round {i}");
            }
        }
        tally.check("LogicalReplicationStream::connect");
        wait_no_backends(&db).await;
        // Only the permanent slots remain, one per odd round, none active.
        let left = slot_names(&db, &prefix);
        let mut want: Vec<String> = (0..60)
            .filter(|i| i % 2 == 1)
            .map(|i| format!("{prefix}_{i}"))
            .collect();
        want.sort();
        assert_eq!(left, want);
        let active = db
            .psql(&format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '{prefix}%' \
                 AND active"
            ))
            .unwrap();
        assert_eq!(active, "0");
        db.psql(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name LIKE '{prefix}%'"
        ))
        .unwrap();
    });
}

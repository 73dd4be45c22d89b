//! Reconnect and resume: a workload under walsender terminations and a server restart
//! arrives whole, at least once, exactly once after deduplication by commit LSN; permanent
//! errors end the stream.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use walstream::{ColumnValue, ErrorKind, EventKind, EventStream, RetryPolicy, Streaming, Xid};

use crate::{block_on, Fixture};

/// What a consumer that assembles committed transactions saw.
#[derive(Debug, Default)]
struct Delivered {
    /// Ids of committed rows, once per distinct commit.
    ids: Vec<i64>,
    /// Rows seen again in a transaction already delivered (at-least-once), before
    /// deduplication.
    duplicates: usize,
    reconnects: usize,
}

fn id(v: Option<ColumnValue>) -> i64 {
    match v {
        Some(ColumnValue::Text(b)) => std::str::from_utf8(&b).unwrap().parse().unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Reads until the row `marker` commits, assembling transactions by top-level xid (streamed
/// ones included), dropping aborted (sub)transactions and partial ones cut by a reconnect,
/// acknowledging each commit. Every read goes through a 1 ms timeout, so many `next_event`
/// futures are dropped mid-way, also during reconnects.
async fn consume(mut events: EventStream, marker: i64) -> Delivered {
    let mut out = Delivered::default();
    let mut open: HashMap<Xid, Vec<(Option<Xid>, i64)>> = HashMap::new();
    let mut commits = HashSet::new();
    loop {
        let event = match tokio::time::timeout(Duration::from_millis(1), events.next_event()).await
        {
            Err(_) => continue,
            Ok(e) => e.unwrap().expect("the stream ended"),
        };
        let (commit, xid) = match &event.kind {
            EventKind::Insert(i) => {
                let top = event.xid.unwrap();
                open.entry(top)
                    .or_default()
                    .push((i.xid, id(i.new.get("id"))));
                continue;
            }
            EventKind::StreamAbort(a) => {
                if a.xid == a.subxid {
                    open.remove(&a.xid);
                } else if let Some(rows) = open.get_mut(&a.xid) {
                    rows.retain(|(x, _)| *x != Some(a.subxid));
                }
                continue;
            }
            EventKind::Reconnected { .. } => {
                out.reconnects += 1;
                open.clear();
                continue;
            }
            EventKind::Commit(c) => (c.commit_lsn, event.xid.unwrap()),
            EventKind::StreamCommit(c) => (c.commit_lsn, c.xid),
            _ => continue,
        };
        let rows = open.remove(&xid).unwrap_or_default();
        let done = rows.iter().any(|&(_, id)| id == marker);
        if commits.insert(commit) {
            out.ids.extend(rows.into_iter().map(|(_, id)| id));
        } else {
            out.duplicates += rows.len();
        }
        events.ack(event.ack_lsn().unwrap());
        if done {
            events.shutdown().await.unwrap();
            return out;
        }
    }
}

#[test]
fn a_workload_survives_terminations_and_a_restart() {
    // The newest installed major, on a cluster of our own (it is restarted), with a small
    // logical_decoding_work_mem so that the larger transactions are streamed.
    let major = *pgtest::installed_majors().last().unwrap();
    let cluster = pgtest::Config::new(major)
        .setting("logical_decoding_work_mem", "64kB")
        .start()
        .unwrap();
    let f = Fixture::new(&cluster, "ws_faults");
    let marker = -1;
    block_on(async {
        let events = f
            .start(f.config().streaming(if major >= 16 {
                Streaming::Parallel
            } else {
                Streaming::On
            }))
            .await;
        let consumer = tokio::spawn(consume(events, marker));

        let db = &f.db;
        let workload = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let mut next = 1i64;
                let mut aborted = 0;
                for round in 0..60 {
                    let size = match round % 6 {
                        0 => 3000, // streamed
                        1 => 1,
                        _ => 1 + (round * 37) % 200,
                    };
                    let sql = |next: i64| {
                        if round % 10 == 9 {
                            // A streamed transaction with a rolled-back subtransaction, and a
                            // rolled-back transaction: none of their rows may arrive.
                            format!(
                                "BEGIN; INSERT INTO t SELECT g, repeat('x', 50) FROM generate_series({a}, {b}) g;
                                 SAVEPOINT s; INSERT INTO t SELECT -g - 1000000, repeat('y', 50) FROM generate_series(1, 2000) g;
                                 ROLLBACK TO SAVEPOINT s; COMMIT;
                                 BEGIN; INSERT INTO t SELECT -g - 2000000, repeat('z', 50) FROM generate_series(1, 2000) g; ROLLBACK;",
                                a = next,
                                b = next + size - 1,
                            )
                        } else {
                            format!(
                                "INSERT INTO t SELECT g, repeat('x', 50) FROM generate_series({}, {}) g",
                                next,
                                next + size - 1
                            )
                        }
                    };
                    // The server may be down: retry with new ids (whether a failed attempt
                    // committed is settled by the table itself at the end).
                    loop {
                        let ok = db.psql(&sql(next)).is_ok();
                        next += size;
                        if ok {
                            break;
                        }
                        aborted += 1;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    std::thread::sleep(Duration::from_millis(30));
                }
                (next, aborted)
            });
            let terminate = || {
                db.psql(&format!(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                     WHERE slot_name = '{}' AND active_pid IS NOT NULL",
                    f.slot
                ))
                .unwrap();
            };
            std::thread::sleep(Duration::from_millis(700));
            terminate();
            std::thread::sleep(Duration::from_millis(700));
            terminate();
            std::thread::sleep(Duration::from_millis(500));
            cluster.stop().unwrap();
            std::thread::sleep(Duration::from_millis(1000));
            cluster.start_again().unwrap();
            std::thread::sleep(Duration::from_millis(700));
            terminate();
            writer.join().unwrap()
        });
        println!("workload: {workload:?}");
        db.psql(&format!("INSERT INTO t VALUES ({marker}, 'end')"))
            .unwrap();
        let delivered = tokio::time::timeout(Duration::from_secs(120), consumer)
            .await
            .expect("the consumer did not see the marker")
            .unwrap();

        let table: BTreeSet<i64> = db
            .psql("SELECT id FROM t")
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let got: BTreeSet<i64> = delivered.ids.iter().copied().collect();
        let missing: Vec<_> = table.difference(&got).take(10).collect();
        let extra: Vec<_> = got.difference(&table).take(10).collect();
        println!(
            "rows: {}, reconnects: {}, duplicates before deduplication: {}, lost: {}",
            table.len(),
            delivered.reconnects,
            delivered.duplicates,
            table.len() - table.intersection(&got).count()
        );
        assert!(
            missing.is_empty(),
            "committed rows never delivered: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "rows delivered that are not committed: {extra:?}"
        );
        assert_eq!(
            delivered.ids.len(),
            got.len(),
            "a row delivered twice after deduplication"
        );
        assert!(delivered.reconnects >= 3, "{delivered:?}");
        assert!(table.len() > 10_000);
    });
}

#[test]
fn a_slot_dropped_during_a_reconnect_ends_the_stream() {
    let cluster = pgtest::cluster(16);
    let f = Fixture::new(cluster, "ws_gone");
    f.db.psql("INSERT INTO t VALUES (1, 'a')").unwrap();
    block_on(async {
        let retry = RetryPolicy::default()
            .backoff(Duration::from_millis(1500), Duration::from_secs(2))
            .jitter(0.0);
        let mut events = f.start(f.config().retry(retry)).await;
        let first = events.next_event().await.unwrap().unwrap();
        assert!(matches!(first.kind, EventKind::Begin(_)));
        f.db.psql(&format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = '{}'",
            f.slot
        ))
        .unwrap();
        // Drop the slot as soon as the walsender has let go of it.
        let drop_sql = format!(
            "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots \
             WHERE slot_name = '{0}' AND active_pid IS NULL",
            f.slot
        );
        while f.db.psql(&drop_sql).unwrap() == "0" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let err = loop {
            match events.next_event().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without an error"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::Slot, "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(events.next_event().await.unwrap().is_none());
        assert!(events.shutdown().await.is_err());
    });
}

#[test]
fn bad_credentials_are_not_retried() {
    let cluster = pgtest::cluster(15);
    let f = Fixture::new(cluster, "ws_auth");
    block_on(async {
        let conninfo = format!("{} user=nobody_here", f.db.conninfo());
        let started = std::time::Instant::now();
        let err =
            walstream::LogicalReplicationStream::connect(&conninfo, f.config().build().unwrap())
                .await
                .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("nobody_here"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    });
}

fn addr(cluster: &pgtest::Cluster) -> std::net::SocketAddr {
    format!("{}:{}", cluster.host(), cluster.port())
        .parse()
        .unwrap()
}

#[test]
fn another_cluster_after_a_reconnect_ends_the_stream() {
    let (a, b) = (pgtest::cluster(16), pgtest::cluster(17));
    let f = Fixture::new(a, "ws_failover");
    // The same database, publication and slot names on the other cluster.
    let other = b.create_database("ws_failover").unwrap();
    other
        .psql(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             CREATE PUBLICATION {} FOR TABLE t;
             SELECT pg_create_logical_replication_slot('{}', 'pgoutput');",
            f.publication, f.slot
        ))
        .unwrap();
    f.db.psql("INSERT INTO t VALUES (1, 'a')").unwrap();
    block_on(async {
        // A TCP proxy whose target can change and whose connections can be cut: what a
        // failover or a load balancer does to a replication connection.
        let proxy = pgtest::Proxy::start(addr(a)).unwrap();
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres dbname=ws_failover",
            proxy.port()
        );
        let config = f.config().build().unwrap();
        let mut events = walstream::LogicalReplicationStream::connect(&conninfo, config)
            .await
            .unwrap()
            .start();
        let first = events.next_event().await.unwrap().unwrap();
        assert!(matches!(first.kind, EventKind::Begin(_)));
        proxy.retarget(addr(b));
        proxy.cut();
        let err = loop {
            match events.next_event().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without an error"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::ClusterChanged, "{err}");
        assert!(err.to_string().contains("system"), "{err}");
    });
}

#[test]
fn cancellation_ends_the_stream_with_a_last_status_update() {
    let cluster = pgtest::cluster(15);
    let f = Fixture::new(cluster, "ws_cancel");
    f.db.psql("INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b');")
        .unwrap();
    block_on(async {
        let token = walstream::CancellationToken::new();
        // A long status interval: only the last update can carry the acknowledgement in time.
        let config = f
            .config()
            .status_interval(Duration::from_secs(600))
            .cancellation_token(token.clone());
        let mut events = f.start(config).await;
        let got = crate::read_transactions(&mut events, 1).await;
        let end = got.last().unwrap().ack_lsn().unwrap();
        events.ack(end);
        token.cancel();
        // The stream ends promptly, although a second transaction is there to read.
        let next = tokio::time::timeout(Duration::from_secs(5), events.next_event())
            .await
            .unwrap()
            .unwrap();
        assert!(next.is_none(), "{next:?}");
        assert_eq!(events.shutdown().await.unwrap(), end);
        assert_eq!(f.confirmed_flush(), end);
    });
}

/// The receive timeout: an idle connection stays (the half-way ping is answered), and a
/// network that swallows everything without closing anything (the proxy paused, no FIN, no
/// RST) is taken for dead after the timeout; the stream reconnects and loses nothing.
#[test]
fn a_black_holed_connection_is_found_by_the_receive_timeout() {
    pgtest::for_each_major(15, |cluster| {
        let f = Fixture::new(cluster, "ws_black_hole");
        block_on(async {
            let proxy = pgtest::Proxy::start(addr(cluster)).unwrap();
            let conninfo = format!(
                "host=127.0.0.1 port={} user=postgres dbname=ws_black_hole",
                proxy.port()
            );
            let timeout = Duration::from_secs(2);
            let config = f.config().receive_timeout(timeout).build().unwrap();
            let mut events = walstream::LogicalReplicationStream::connect(&conninfo, config)
                .await
                .unwrap()
                .start();
            // Idle for longer than the timeout: the ping keeps it alive, no reconnect.
            f.db.psql("INSERT INTO t VALUES (1, 'a')").unwrap();
            let _ = crate::read_transactions(&mut events, 1).await;
            tokio::time::sleep(timeout * 2).await;
            f.db.psql("INSERT INTO t VALUES (2, 'b')").unwrap();
            let e = next_event(&mut events).await;
            assert!(matches!(e.kind, EventKind::Begin(_)), "{e:?}");
            let _ = crate::read_transactions(&mut events, 1).await;

            // The black hole: nothing moves, nothing closes.
            proxy.pause(true);
            f.db.psql("INSERT INTO t VALUES (3, 'c')").unwrap();
            tokio::time::sleep(timeout * 2).await;
            proxy.pause(false);
            let (reason, ids) = loop {
                let e = next_event(&mut events).await;
                if let EventKind::Reconnected { reason, .. } = e.kind {
                    // Then row 3, perhaps after rows sent again (at-least-once).
                    let mut ids = Vec::new();
                    while !ids.contains(&3) {
                        for e in crate::read_transactions(&mut events, 1).await {
                            if let EventKind::Insert(i) = e.kind {
                                ids.push(id(i.new.get("id")));
                            }
                        }
                    }
                    break (reason, ids);
                }
                assert!(
                    !matches!(e.kind, EventKind::Insert(_)),
                    "row 3 arrived on the black-holed connection: {e:?}"
                );
            };
            assert!(reason.contains("receive timeout"), "{reason}");
            assert!(ids.iter().all(|i| (1..=3).contains(i)), "{ids:?}");
            // On a loaded machine the stream may be reconnecting again by now (the old
            // walsender still holding the slot for a moment): a retryable error is no failure.
            if let Err(e) = events.shutdown().await {
                assert!(e.is_retryable(), "{e}");
            }
        });
    });
}

/// The next event, failing after 30 s or at the end of the stream.
async fn next_event(events: &mut EventStream) -> walstream::ChangeEvent {
    tokio::time::timeout(Duration::from_secs(30), events.next_event())
        .await
        .expect("timed out")
        .unwrap()
        .expect("ended")
}

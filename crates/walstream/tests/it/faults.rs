//! Faults with a real server, on every installed major: a workload of plain, streamed,
//! rolled-back and partly-rolled-back transactions runs while a fault-injecting proxy
//! (`pgtest::Proxy`) cuts the replication connection at random moments (some after a stall),
//! swallows everything for longer than the receive timeout without closing anything (a
//! network black hole), the server is stopped and started again, and crashes
//! (`pg_ctl stop -m immediate` with `fsync` on). The consumer reads whole transactions
//! (`EventStream::into_transactions`), acknowledging each, and crashes once itself: it drops
//! its stream without a shutdown and connects a new one, which must deliver again every
//! transaction it had not acknowledged.
//!
//! Checked afterwards: every committed row was delivered (lost = 0); after deduplication by
//! commit LSN none twice; no row of a rolled-back transaction or subtransaction ever; and the
//! slot's `confirmed_flush_lsn`, sampled all along, never passed a transaction the consumer
//! had not acknowledged yet (for every sample C read before a transaction's first
//! acknowledgement, that transaction's commit LSN is at least C: PostgreSQL skips on restart
//! exactly the transactions whose commit record starts before `confirmed_flush_lsn`, so this
//! is what "never lost" needs. A keepalive position past the last acknowledged commit, which
//! the stream may report when everything is acknowledged, is allowed by this check).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use walstream::{
    ChangeKind, ColumnValue, LogicalReplicationStream, Lsn, RetryPolicy, Streaming, Transaction,
    TransactionConfig, TransactionKind, TransactionStream,
};

use crate::Fixture;

/// How much to do.
struct Plan {
    /// Committed rows to write at least.
    rows: i64,
    /// Connection cuts at least.
    cuts: usize,
    /// Server restarts (`pg_ctl stop -m fast`).
    restarts: usize,
    /// Server crashes (`pg_ctl stop -m immediate`).
    crashes: usize,
    /// Network black holes (the proxy paused past the receive timeout).
    black_holes: usize,
    /// The consumer drops its stream without a shutdown after this many transactions.
    consumer_crash_after: Option<usize>,
}

/// A new transaction stream, being connected.
type Start = std::pin::Pin<Box<dyn std::future::Future<Output = TransactionStream> + Send>>;

/// The stream's receive timeout in these tests; a black hole lasts longer than it.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the consumer saw.
#[derive(Debug, Default)]
struct Seen {
    /// Row ids of each distinct commit, in delivery order.
    ids: Vec<i64>,
    /// Rows delivered again in a transaction already seen (at-least-once), before
    /// deduplication.
    duplicates: usize,
    transactions: usize,
    streamed: usize,
    /// The commit LSN of every distinct transaction and when it was first acknowledged.
    acks: Vec<(Lsn, Instant)>,
    reconnects: u64,
    /// At the consumer's crash: the commits delivered and not acknowledged.
    unacked_at_crash: usize,
    /// Of those, the ones the new stream has not delivered again.
    not_redelivered: BTreeSet<Lsn>,
}

fn id(v: Option<ColumnValue>) -> i64 {
    match v {
        Some(ColumnValue::Text(b)) => std::str::from_utf8(&b).unwrap().parse().unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Reads transactions until the one holding `marker`, acknowledging each as an application
/// that applies asynchronously would: a random 0-300 ms after it arrived (so that cuts find
/// transactions delivered and not yet acknowledged, which the server must send again).
async fn consume(
    mut txs: TransactionStream,
    marker: i64,
    crash_after: Option<usize>,
    reconnect: impl Fn() -> Start,
) -> Seen {
    let mut seen = Seen::default();
    let mut crashed = false;
    // The end of the furthest transaction acknowledged.
    let mut acked_end = Lsn::ZERO;
    let mut commits = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    // Delivered, not yet acknowledged: the transaction, when to acknowledge it, and whether it
    // is the first delivery of its commit.
    let mut pending: VecDeque<(Transaction, Instant, bool)> = VecDeque::new();
    let mut done = false;
    let mut idle_since = Instant::now();
    loop {
        while pending
            .front()
            .is_some_and(|(_, due, _)| *due <= Instant::now() || done)
        {
            let (tx, _, first) = pending.pop_front().unwrap();
            if first {
                seen.acks.push((tx.commit_lsn, Instant::now()));
            }
            acked_end = acked_end.max(tx.end_lsn);
            txs.ack(&tx);
        }
        if done && pending.is_empty() {
            seen.reconnects += txs.stats().reconnects;
            txs.shutdown().await.unwrap();
            return seen;
        }
        if !crashed && crash_after.is_some_and(|n| seen.transactions >= n) && !pending.is_empty() {
            // The consumer crashes: its stream is dropped without a shutdown, and what it had
            // not acknowledged is gone from its memory. A new stream must send it again.
            crashed = true;
            seen.reconnects += txs.stats().reconnects;
            // A transaction delivered again after a cut may wait here while its first copy was
            // acknowledged: only what lies past every acknowledgement must come again.
            seen.not_redelivered = pending
                .drain(..)
                .filter(|(tx, _, _)| tx.end_lsn > acked_end)
                .map(|(tx, _, _)| tx.commit_lsn)
                .collect();
            seen.unacked_at_crash = seen.not_redelivered.len();
            drop(txs);
            txs = reconnect().await;
        }
        let Ok(tx) = tokio::time::timeout(Duration::from_millis(20), txs.next_transaction()).await
        else {
            assert!(
                idle_since.elapsed() < Duration::from_secs(120),
                "no transaction for 120 s"
            );
            continue;
        };
        idle_since = Instant::now();
        let tx = tx.unwrap().expect("the stream ended");
        let ids: Vec<i64> = tx
            .changes()
            .filter_map(|c| match c.unwrap().kind {
                ChangeKind::Insert(i) => Some(id(i.new.get("id"))),
                _ => None,
            })
            .collect();
        done |= ids.contains(&marker);
        seen.not_redelivered.remove(&tx.commit_lsn);
        let first = commits.insert(tx.commit_lsn, tx.end_lsn).is_none();
        if first {
            seen.transactions += 1;
            seen.streamed += usize::from(matches!(tx.kind, TransactionKind::Streamed));
            seen.ids.extend(ids);
        } else {
            seen.duplicates += ids.len();
        }
        let due = Instant::now() + Duration::from_millis(rng.u64(..300));
        pending.push_back((tx, due, first));
    }
}

/// The SQL of one step of the workload: committed rows get ids from `next`, rows that must
/// never be delivered (rolled back) get negative ids from `aborted`. Returns the SQL and the
/// number of rows it commits.
fn step(rng: &mut fastrand::Rng, next: &mut i64, aborted: &mut i64) -> (String, i64) {
    let mut rows = |n: i64| {
        let r = (*next, *next + n - 1);
        *next += n;
        r
    };
    let mut gone = |n: i64| {
        let r = (*aborted - n + 1, *aborted);
        *aborted -= n;
        r
    };
    let insert = |(a, b): (i64, i64), fill: &str| {
        format!("INSERT INTO t SELECT g, repeat('{fill}', 40) FROM generate_series({a}, {b}) g;")
    };
    match rng.u64(..100) {
        // Several small transactions in one go.
        0..=44 => {
            let mut sql = String::new();
            let mut total = 0;
            for _ in 0..rng.i64(1..=8) {
                let n = rng.i64(1..=60);
                total += n;
                sql.push_str(&format!("BEGIN; {} COMMIT;\n", insert(rows(n), "s")));
            }
            (sql, total)
        }
        // Medium: some are streamed at 64kB of decoding memory, some not.
        45..=66 => {
            let n = rng.i64(100..=1500);
            (insert(rows(n), "m"), n)
        }
        // Large: streamed in several blocks.
        67..=81 => {
            let n = rng.i64(2000..=6000);
            (insert(rows(n), "l"), n)
        }
        // A rolled-back subtransaction inside a committed (often streamed) transaction.
        82..=91 => {
            let (a, b) = (rng.i64(1..=1500), rng.i64(1..=500));
            let sub = rng.i64(1..=3000);
            let sql = format!(
                "BEGIN; {} SAVEPOINT s; {} ROLLBACK TO SAVEPOINT s; {} COMMIT;",
                insert(rows(a), "a"),
                insert(gone(sub), "x"),
                insert(rows(b), "b")
            );
            (sql, a + b)
        }
        // A rolled-back transaction, small or streamed.
        _ => {
            let n = rng.i64(1..=4000);
            (format!("BEGIN; {} ROLLBACK;", insert(gone(n), "z")), 0)
        }
    }
}

fn run(plan: &Plan, major: u32) {
    let started = Instant::now();
    // fsync on: a crash must be recovered from what is really on disk.
    let cluster = pgtest::Config::new(major)
        .setting("fsync", "on")
        .start()
        .unwrap();
    let f = Fixture::new(&cluster, "ws_faults");
    let target = format!("{}:{}", cluster.host(), cluster.port())
        .parse()
        .unwrap();
    let proxy = pgtest::Proxy::start(target).unwrap();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname={} \
         options='-c logical_decoding_work_mem=64kB'",
        proxy.port(),
        f.db.name()
    );
    let config = f
        .config()
        .streaming(if major >= 16 {
            Streaming::Parallel
        } else {
            Streaming::On
        })
        .status_interval(Duration::from_millis(100))
        .receive_timeout(RECEIVE_TIMEOUT)
        .retry(
            RetryPolicy::default()
                .backoff(Duration::from_millis(20), Duration::from_millis(300))
                .max_attempts(Some(1000)),
        )
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Connects a new stream, retrying while the server is down (a restart or a crash may be
    // under way when the consumer crashes).
    let reconnect = move || -> Start {
        let (conninfo, config) = (conninfo.clone(), config.clone());
        Box::pin(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match LogicalReplicationStream::connect(&conninfo, config.clone()).await {
                    Ok(stream) => {
                        return stream
                            .start()
                            .into_transactions(TransactionConfig::default())
                    }
                    Err(e) => {
                        assert!(Instant::now() < deadline, "cannot connect again: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    let txs = rt.block_on(reconnect());
    let marker = 0;
    let consumer = rt.spawn(consume(txs, marker, plan.consumer_crash_after, reconnect));

    let committed = AtomicI64::new(0);
    let faults_done = AtomicBool::new(false);
    let stop_sampling = AtomicBool::new(false);
    let cuts = AtomicUsize::new(0);
    let stalls = AtomicUsize::new(0);
    let restarts = AtomicUsize::new(0);
    let crashes = AtomicUsize::new(0);
    let black_holes = AtomicUsize::new(0);
    let samples: Mutex<Vec<(Instant, Lsn)>> = Mutex::new(Vec::new());
    let db = &f.db;
    let seed = pgtest::seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut fault_rng = fastrand::Rng::with_seed(seed.rotate_left(23));

    let ((written, failed), seen) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let (mut next, mut aborted) = (1i64, -1i64);
            let mut failed = 0;
            while committed.load(Ordering::SeqCst) < plan.rows
                || !faults_done.load(Ordering::SeqCst)
            {
                let (sql, n) = step(&mut rng, &mut next, &mut aborted);
                // The server may be down: whatever part of a failed step committed is
                // settled by the table itself at the end; its ids are not reused.
                if db.psql(&sql).is_ok() {
                    committed.fetch_add(n, Ordering::SeqCst);
                } else {
                    failed += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            (next - 1, failed)
        });
        s.spawn(|| {
            // The server faults and the black holes, spread between the cuts.
            let spread = |n: usize, shift: usize| -> Vec<usize> {
                (1..=n)
                    .map(|j| (j * plan.cuts / (n + 1) + shift).max(1))
                    .collect()
            };
            let restart_at = spread(plan.restarts, 0);
            let crash_at = spread(plan.crashes, 1);
            let black_hole_at = spread(plan.black_holes, 2);
            // A cut counts only when it closed a connection: while the stream is between
            // connections (backing off, or the server down) there is nothing to cut.
            let mut done = 0;
            while done < plan.cuts {
                // Spread over the workload, at a random moment within each stretch.
                let due =
                    plan.rows * i64::try_from(done).unwrap() / i64::try_from(plan.cuts).unwrap();
                while committed.load(Ordering::SeqCst) < due {
                    std::thread::sleep(Duration::from_millis(2));
                }
                std::thread::sleep(Duration::from_millis(fault_rng.u64(..250)));
                match fault_rng.u64(..6) {
                    0 => {
                        proxy.stall(Duration::from_millis(100 + fault_rng.u64(..400)));
                        stalls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(fault_rng.u64(..300)));
                    }
                    1 => {
                        proxy.set_delay(Duration::from_millis(1 + fault_rng.u64(..3)));
                        std::thread::sleep(Duration::from_millis(100 + fault_rng.u64(..200)));
                        proxy.set_delay(Duration::ZERO);
                    }
                    _ => {}
                }
                if proxy.cut() == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                done += 1;
                cuts.fetch_add(1, Ordering::SeqCst);
                if restart_at.contains(&done) {
                    cluster.stop().unwrap();
                    std::thread::sleep(Duration::from_millis(300 + fault_rng.u64(..700)));
                    cluster.start_again().unwrap();
                    restarts.fetch_add(1, Ordering::SeqCst);
                }
                if crash_at.contains(&done) {
                    cluster.crash().unwrap();
                    std::thread::sleep(Duration::from_millis(300 + fault_rng.u64(..700)));
                    cluster.start_again().unwrap();
                    crashes.fetch_add(1, Ordering::SeqCst);
                }
                if black_hole_at.contains(&done) {
                    // Nothing moves and nothing closes, for longer than the receive timeout.
                    proxy.pause(true);
                    std::thread::sleep(RECEIVE_TIMEOUT * 2 + RECEIVE_TIMEOUT / 2);
                    proxy.pause(false);
                    black_holes.fetch_add(1, Ordering::SeqCst);
                }
            }
            faults_done.store(true, Ordering::SeqCst);
        });
        s.spawn(|| {
            while !stop_sampling.load(Ordering::SeqCst) {
                if let Ok(out) = db.psql(&format!(
                    "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
                    f.slot
                )) {
                    // Taken after the value was read: any acknowledgement after this moment
                    // was not yet made when the server had this position.
                    let at = Instant::now();
                    samples.lock().unwrap().push((at, out.parse().unwrap()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let result = writer.join().unwrap();
        db.psql(&format!("INSERT INTO t VALUES ({marker}, 'end')"))
            .unwrap();
        let seen = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(300), consumer)
                .await
                .expect("the consumer did not see the marker")
                .unwrap()
        });
        stop_sampling.store(true, Ordering::SeqCst);
        (result, seen)
    });
    let elapsed = started.elapsed();

    let table: BTreeSet<i64> =
        f.db.psql("SELECT id FROM t")
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
    let delivered: BTreeSet<i64> = seen.ids.iter().copied().collect();
    let lost: Vec<i64> = table.difference(&delivered).copied().collect();
    let invented: Vec<i64> = delivered.difference(&table).copied().collect();
    let aborted_delivered = seen.ids.iter().filter(|&&i| i < 0).count();
    let twice = seen.ids.len() - delivered.len();

    // The slot never passed a transaction before its first acknowledgement.
    let samples = samples.into_inner().unwrap();
    let mut violations = Vec::new();
    for &(read, confirmed) in &samples {
        for &(commit, acked) in &seen.acks {
            if acked > read && commit < confirmed {
                violations.push((confirmed, commit));
            }
        }
    }
    let (cuts, stalls, restarts, crashes, black_holes) = (
        cuts.into_inner(),
        stalls.into_inner(),
        restarts.into_inner(),
        crashes.into_inner(),
        black_holes.into_inner(),
    );
    println!(
        "PostgreSQL {major}: rows: {} committed ({} written ids, {failed} failed steps), \
         transactions: {} ({} streamed), cuts: {cuts} ({stalls} after a stall), restarts: \
         {restarts}, crashes: {crashes}, black holes: {black_holes}, consumer crash: {} \
         unacknowledged then, {} not sent again, reconnects: \
         {}, duplicates before deduplication: {}, delivered twice after it: \
         {twice}, aborted rows delivered: {aborted_delivered}, lost: {}, confirmed_flush_lsn \
         samples: {}, violations: {}, elapsed: {elapsed:?}",
        table.len(),
        written,
        seen.transactions,
        seen.streamed,
        seen.unacked_at_crash,
        seen.not_redelivered.len(),
        seen.reconnects,
        seen.duplicates,
        lost.len(),
        samples.len(),
        violations.len(),
    );
    assert!(
        lost.is_empty(),
        "committed rows never delivered: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert!(
        invented.is_empty(),
        "rows delivered that are not committed: {:?}",
        &invented[..invented.len().min(20)]
    );
    assert_eq!(aborted_delivered, 0);
    assert_eq!(twice, 0, "a row delivered twice after deduplication");
    assert!(
        violations.is_empty(),
        "confirmed_flush_lsn passed unacknowledged commits (confirmed, commit): {:?}",
        &violations[..violations.len().min(20)]
    );
    assert!(table.len() as i64 > plan.rows, "{}", table.len());
    assert!(cuts >= plan.cuts);
    // Cuts that hit a connection being opened fail that attempt instead of a session.
    assert!(
        seen.reconnects >= (plan.cuts / 2) as u64,
        "{}",
        seen.reconnects
    );
    assert_eq!(restarts, plan.restarts);
    assert_eq!(crashes, plan.crashes);
    assert_eq!(black_holes, plan.black_holes);
    if plan.consumer_crash_after.is_some() {
        assert!(seen.unacked_at_crash > 0, "the consumer never crashed");
    }
    assert!(
        seen.not_redelivered.is_empty(),
        "unacknowledged commits the new stream did not send again: {:?}",
        seen.not_redelivered
    );
    assert!(seen.streamed > 0, "no streamed transaction");
    assert!(samples.len() > 10, "{}", samples.len());
}

/// Every installed major: protocol 2 (PostgreSQL 15, `streaming = on`) and 4 (`parallel`).
#[test]
fn faults_workload_survives_cuts_stalls_restarts_crashes_and_black_holes() {
    for major in pgtest::installed_majors() {
        run(
            &Plan {
                rows: 25_000,
                cuts: 8,
                restarts: 1,
                crashes: 1,
                black_holes: 1,
                consumer_crash_after: Some(20),
            },
            major,
        );
    }
    assert!(
        pgtest::installed_majors().contains(&15),
        "PostgreSQL 15 is always tested: {}",
        pgtest::INSTALL_HINT
    );
}

#[test]
#[ignore = "long: a million rows, 150 cuts, 6 restarts, 6 crashes, 4 black holes on the \
            newest major (run with --run-ignored only)"]
fn faults_long_workload_survives_cuts_stalls_and_restarts() {
    let major = *pgtest::installed_majors().last().unwrap();
    run(
        &Plan {
            rows: 1_000_000,
            cuts: 150,
            restarts: 6,
            crashes: 6,
            black_holes: 4,
            consumer_crash_after: Some(500),
        },
        major,
    );
}

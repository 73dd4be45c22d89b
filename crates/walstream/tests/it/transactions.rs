//! Whole transactions from real servers: streamed with a rolled-back subtransaction, prepared
//! (committed, rolled back, empty, streamed), larger than the memory budget, and past the spill
//! disk budget.

use std::collections::BTreeSet;
use std::time::Duration;

use walstream::{
    ChangeKind, ColumnValue, ErrorKind, LogicalReplicationStream, Streaming, Transaction,
    TransactionConfig, TransactionKind,
};

use crate::{block_on, Fixture};

fn ids(tx: &Transaction) -> Vec<i64> {
    tx.changes()
        .filter_map(|c| match c.unwrap().kind {
            ChangeKind::Insert(i) => match i.new.get("id") {
                Some(ColumnValue::Text(b)) => {
                    Some(std::str::from_utf8(&b).unwrap().parse().unwrap())
                }
                other => panic!("{other:?}"),
            },
            _ => None,
        })
        .collect()
}

#[test]
fn every_transaction_shape_arrives_committed_and_whole() {
    pgtest::for_each_major(15, |cluster| {
        let f = Fixture::new(cluster, "ws_txns");
        // A slot that decodes prepared transactions at PREPARE.
        let slot = cluster.unique_name("ws_txns_2pc");
        f.db.psql(&format!(
            "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput', false, true)"
        ))
        .unwrap();
        f.db.psql(
            "BEGIN;
             INSERT INTO t SELECT g, repeat('a', 100) FROM generate_series(1, 3000) g;
             SAVEPOINT s1;
             INSERT INTO t SELECT g, 'rolled back' FROM generate_series(100001, 103000) g;
             ROLLBACK TO SAVEPOINT s1;
             INSERT INTO t VALUES (5000, 'after the savepoint');
             COMMIT;
             BEGIN;
             INSERT INTO t SELECT g, repeat('b', 100) FROM generate_series(200001, 203000) g;
             PREPARE TRANSACTION 'big_rolled_back';
             ROLLBACK PREPARED 'big_rolled_back';
             BEGIN; INSERT INTO t VALUES (6000, 'prepared'); PREPARE TRANSACTION 'small';
             BEGIN; PREPARE TRANSACTION 'empty';
             COMMIT PREPARED 'empty';
             COMMIT PREPARED 'small';
             INSERT INTO t SELECT g, repeat('c', 100) FROM generate_series(300001, 320000) g;
             INSERT INTO t VALUES (-1, 'marker');",
        )
        .unwrap();
        let streaming = if cluster.major() >= 16 {
            Streaming::Parallel
        } else {
            Streaming::On
        };
        // The walsender streams any transaction over 64 kB.
        let conninfo = format!(
            "{} options='-c logical_decoding_work_mem=64kB'",
            f.db.conninfo()
        );
        let budget = 512 * 1024;
        block_on(async {
            let config = walstream::ReplicationStreamConfig::builder(&slot, [&f.publication])
                .streaming(streaming)
                .two_phase(true)
                .status_interval(Duration::from_millis(200))
                .build()
                .unwrap();
            let mut txs = LogicalReplicationStream::connect(&conninfo, config)
                .await
                .unwrap()
                .start()
                .into_transactions(TransactionConfig::default().memory_budget(budget));
            let mut got = Vec::new();
            loop {
                let tx = tokio::time::timeout(Duration::from_secs(60), txs.next_transaction())
                    .await
                    .expect("timed out")
                    .unwrap()
                    .expect("the stream ended");
                let rows = ids(&tx);
                txs.ack(&tx);
                let done = rows.contains(&-1);
                got.push((tx.kind.clone(), tx.is_spilled(), rows));
                if done {
                    break;
                }
            }
            let (_, peak) = txs.assembler().memory();
            println!(
                "PostgreSQL {}: {} transactions, peak buffered {peak} bytes, spilled {} bytes",
                cluster.major(),
                got.len(),
                txs.assembler().spilled_bytes()
            );
            assert!(
                peak <= budget + 4096,
                "peak {peak} over the budget {budget}"
            );
            txs.shutdown().await.unwrap();

            // The streamed transaction, without its rolled-back subtransaction.
            let first = &got[0];
            assert_eq!(first.0, TransactionKind::Streamed, "{:?}", first.0);
            let want: Vec<i64> = (1..=3000).chain([5000]).collect();
            assert_eq!(first.2, want);
            // The prepared ones: the rolled-back one never arrives; the empty one may.
            let prepared: Vec<_> = got
                .iter()
                .filter_map(|(k, _, rows)| match k {
                    TransactionKind::Prepared { gid, .. } => Some((gid.as_str(), rows.clone())),
                    _ => None,
                })
                .collect();
            assert!(prepared.contains(&("small", vec![6000])), "{prepared:?}");
            assert!(prepared.iter().all(|(gid, _)| *gid != "big_rolled_back"));
            // The large one went through the spill file.
            let big = got
                .iter()
                .find(|(_, _, rows)| rows.first() == Some(&300001))
                .unwrap();
            assert!(big.1, "the large transaction was not spilled");
            assert_eq!(big.2.len(), 20000);
            // Every committed row once; nothing rolled back.
            let all: Vec<i64> = got.iter().flat_map(|(_, _, r)| r.iter().copied()).collect();
            let set: BTreeSet<i64> = all.iter().copied().collect();
            assert_eq!(all.len(), set.len(), "a row delivered twice");
            let table: BTreeSet<i64> =
                f.db.psql("SELECT id FROM t")
                    .unwrap()
                    .lines()
                    .map(|l| l.parse().unwrap())
                    .collect();
            assert_eq!(set, table);
        });
    });
}

#[test]
fn unchanged_toast_is_completed_only_from_an_old_row_that_has_it() {
    let cluster = pgtest::cluster(16);
    let f = Fixture::new(cluster, "ws_toast");
    f.db.psql(&format!(
        "CREATE TABLE full_id (id int PRIMARY KEY, n int, doc text);
         ALTER TABLE full_id REPLICA IDENTITY FULL;
         CREATE TABLE default_id (id int PRIMARY KEY, n int, doc text);
         ALTER PUBLICATION {} ADD TABLE full_id, default_id;
         INSERT INTO full_id SELECT 1, 0, string_agg(md5(g::text), '') FROM generate_series(1, 1000) g;
         INSERT INTO default_id SELECT 1, 0, string_agg(md5(g::text), '') FROM generate_series(1, 1000) g;
         UPDATE full_id SET n = 1;
         UPDATE default_id SET n = 1;",
        f.publication
    ))
    .unwrap();
    let doc = f.db.psql("SELECT doc FROM full_id").unwrap();
    assert!(doc.len() > 20_000);
    block_on(async {
        let mut events = f.start(f.config()).await;
        let mut updates = Vec::new();
        while updates.len() < 2 {
            let e = events.next_event().await.unwrap().unwrap();
            if let walstream::EventKind::Update(u) = e.kind {
                updates.push(u);
            }
        }
        for u in &updates {
            // The server did not send the TOASTed value: unchanged, not NULL.
            assert!(u.has_unchanged_toast(), "{u:?}");
            assert_eq!(u.new.get("doc"), Some(ColumnValue::UnchangedToast));
        }
        let full = updates
            .iter()
            .find(|u| u.relation.name == "full_id")
            .unwrap();
        let completed = full.completed_new();
        assert_eq!(
            completed.get("doc"),
            Some(ColumnValue::Text(doc.clone().into_bytes().into()))
        );
        assert_eq!(completed.get("n"), Some(ColumnValue::Text("1".into())));
        let default = updates
            .iter()
            .find(|u| u.relation.name == "default_id")
            .unwrap();
        assert!(default.old.is_none());
        assert_eq!(
            default.completed_new().get("doc"),
            Some(ColumnValue::UnchangedToast)
        );
        events.shutdown().await.unwrap();
    });
}

#[test]
fn a_transaction_past_the_spill_disk_budget_ends_the_stream_unacknowledged() {
    let cluster = pgtest::cluster(*pgtest::installed_majors().last().unwrap());
    let f = Fixture::new(cluster, "ws_disk_budget");
    // A small transaction, then one of about 2 MB, then a marker.
    f.db.psql("INSERT INTO t VALUES (1, 'small')").unwrap();
    let before_big = f.current_lsn();
    f.db.psql(
        "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(2, 20001) g;
         INSERT INTO t VALUES (-1, 'marker');",
    )
    .unwrap();
    let spill_dir = tempfile::tempdir().unwrap();
    let config = |disk_budget: u64| {
        TransactionConfig::default()
            .memory_budget(256 << 10)
            .spill_dir(spill_dir.path())
            .spill_disk_budget(disk_budget)
    };
    block_on(async {
        // A disk budget of 1 MiB: the large transaction does not fit.
        let mut txs = f.start(f.config()).await.into_transactions(config(1 << 20));
        let small = txs.next_transaction().await.unwrap().unwrap();
        assert_eq!(ids(&small), [1]);
        txs.ack(&small);
        f.wait_confirmed("the small transaction", |lsn| lsn >= small.end_lsn)
            .await;
        let next = tokio::time::timeout(Duration::from_secs(60), txs.next_transaction())
            .await
            .expect("timed out");
        let err = match next {
            Err(e) => e,
            // Not `unwrap_err`: its message would print every change of the transaction.
            Ok(Some(tx)) => panic!("{} changes arrived past the disk budget", tx.len()),
            Ok(None) => panic!("the stream ended without an error"),
        };
        assert_eq!(err.kind(), ErrorKind::SpillBudget, "{err}");
        assert!(err.lsn().is_some_and(|lsn| lsn > before_big), "{err:?}");
        // The error ended the stream, and the large transaction was never acknowledged.
        assert!(txs.next_transaction().await.unwrap().is_none());
        let last = txs.shutdown().await.unwrap();
        assert_eq!(f.confirmed_flush(), last);
        assert!(last >= small.end_lsn);
        let left: Vec<_> = std::fs::read_dir(spill_dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");

        // With a larger budget, the next stream receives it whole.
        let mut txs = f
            .start(f.config())
            .await
            .into_transactions(config(64 << 20));
        let big = txs.next_transaction().await.unwrap().unwrap();
        // (The slot may have moved past the large transaction's first records, on a keepalive
        // while nothing was open: never to its commit.)
        assert!(last < big.commit_lsn, "{last} >= {}", big.commit_lsn);
        assert!(big.is_spilled());
        assert_eq!(ids(&big), (2..=20001).collect::<Vec<i64>>());
        txs.ack(&big);
        let marker = txs.next_transaction().await.unwrap().unwrap();
        assert_eq!(ids(&marker), [-1]);
        txs.ack(&marker);
        txs.shutdown().await.unwrap();
    });
}

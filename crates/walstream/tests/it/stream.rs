//! Events, negotiation, slots, bounded replay, raw mode, shutdown.

use std::time::Duration;

use walproto::pgoutput::{Message, ParseContext};
use walstream::{
    ColumnValue, CreateSlot, ErrorKind, EventKind, LogicalReplicationStream, OldRow,
    ReplicationStreamConfig, SlotManager, Streaming,
};

use crate::{block_on, read_transactions, Fixture};

fn text(v: Option<ColumnValue>) -> Option<String> {
    match v? {
        ColumnValue::Text(b) => Some(String::from_utf8(b.to_vec()).unwrap()),
        other => panic!("not text: {other:?}"),
    }
}

#[test]
fn events_of_every_kind_on_every_major() {
    pgtest::for_each_major(15, |cluster| {
        let f = Fixture::new(cluster, "ws_events");
        f.db.psql(
            "INSERT INTO t VALUES (1, 'a'), (2, NULL);
             UPDATE t SET v = 'b' WHERE id = 1;
             UPDATE t SET id = 3 WHERE id = 2;
             DELETE FROM t WHERE id = 1;
             TRUNCATE t;",
        )
        .unwrap();
        block_on(async {
            let stream =
                LogicalReplicationStream::connect(&f.db.conninfo(), f.config().build().unwrap())
                    .await
                    .unwrap();
            let expected = if cluster.major() >= 16 { 4 } else { 3 };
            assert_eq!(
                stream.negotiated().pgoutput.proto_version.number(),
                expected
            );
            let start = stream.start_lsn();
            assert_eq!(start, f.confirmed_flush());
            let mut events = stream.start();
            let got = read_transactions(&mut events, 5).await;
            let kinds: Vec<&str> = got
                .iter()
                .map(|e| match &e.kind {
                    EventKind::Begin(_) => "B",
                    EventKind::Commit(_) => "C",
                    EventKind::Relation(_) => "R",
                    EventKind::Insert(_) => "I",
                    EventKind::Update(_) => "U",
                    EventKind::Delete(_) => "D",
                    EventKind::Truncate(_) => "T",
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            assert_eq!(kinds.concat(), "BRIICBUCBUCBDCBRTC");
            // Every event of a transaction carries its xid and commit time.
            let begin = match &got[0].kind {
                EventKind::Begin(b) => *b,
                _ => unreachable!(),
            };
            assert!(got[..5]
                .iter()
                .all(|e| e.xid == Some(begin.xid) && e.commit_time == Some(begin.commit_time)));
            let EventKind::Insert(first) = &got[2].kind else {
                unreachable!()
            };
            assert_eq!(
                (
                    first.relation.namespace.as_str(),
                    first.relation.name.as_str()
                ),
                ("public", "t")
            );
            assert_eq!(text(first.new.get("id")).as_deref(), Some("1"));
            assert_eq!(text(first.new.get("v")).as_deref(), Some("a"));
            let EventKind::Insert(second) = &got[3].kind else {
                unreachable!()
            };
            assert_eq!(second.new.get("v"), Some(ColumnValue::Null));
            // The key change sends the old key.
            let EventKind::Update(key_change) = &got[9].kind else {
                unreachable!()
            };
            let Some(OldRow::Key(old)) = &key_change.old else {
                panic!("{key_change:?}")
            };
            assert_eq!(text(old.get("id")).as_deref(), Some("2"));
            assert_eq!(text(key_change.new.get("id")).as_deref(), Some("3"));
            let EventKind::Truncate(t) = &got[16].kind else {
                unreachable!()
            };
            assert_eq!(t.relations[0].name, "t");

            // Acknowledge the third transaction only: the slot moves there and no further.
            let third_end = got.iter().filter_map(|e| e.ack_lsn()).nth(2).unwrap();
            events.ack(third_end);
            f.wait_confirmed("the third commit", |l| l == third_end)
                .await;
            let reported = events.shutdown().await.unwrap();
            assert_eq!(reported, third_end);
            assert_eq!(f.confirmed_flush(), third_end);

            // A new stream resumes after the acknowledged transaction.
            let mut again = f.start(f.config()).await;
            let rest = read_transactions(&mut again, 2).await;
            assert!(matches!(rest[0].kind, EventKind::Begin(_)));
            assert!(rest.iter().any(|e| matches!(e.kind, EventKind::Delete(_))));
            again.shutdown().await.unwrap();
        });
    });
}

#[test]
fn options_the_server_lacks_are_refused_by_name() {
    let cluster = pgtest::cluster(15);
    let f = Fixture::new(cluster, "ws_refuse");
    block_on(async {
        for config in [
            f.config().proto_version(walstream::ProtocolVersion::V4),
            f.config().streaming(Streaming::Parallel),
            f.config().origin(walstream::OriginFilter::None),
        ] {
            let err = LogicalReplicationStream::connect(&f.db.conninfo(), config.build().unwrap())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
            assert!(err.to_string().contains("needs PostgreSQL 16"), "{err}");
        }
    });
}

#[test]
fn slots_are_required_created_and_managed() {
    pgtest::for_each_major(15, |cluster| {
        let f = Fixture::new(cluster, "ws_slots");
        let name = cluster.unique_name("ws_new_slot");
        block_on(async {
            let missing = ReplicationStreamConfig::builder(&name, [&f.publication])
                .build()
                .unwrap();
            let err = LogicalReplicationStream::connect(&f.db.conninfo(), missing)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Slot);
            assert!(err.to_string().contains("does not exist"), "{err}");

            let create = ReplicationStreamConfig::builder(&name, [&f.publication])
                .create_slot_if_missing(CreateSlot::Permanent)
                .build()
                .unwrap();
            let stream = LogicalReplicationStream::connect(&f.db.conninfo(), create)
                .await
                .unwrap();
            let mut slots = SlotManager::connect(&f.db.conninfo()).await.unwrap();
            let info = slots.read(&name).await.unwrap().unwrap();
            assert_eq!(info.slot_type, "logical");
            assert_eq!(info.plugin.as_deref(), Some("pgoutput"));
            assert!(!info.temporary);
            assert_eq!(info.confirmed_flush_lsn, Some(stream.start_lsn()));
            drop(stream);

            // Temporary: exists while the stream runs.
            let temp = cluster.unique_name("ws_temp_slot");
            let events = f
                .start(
                    ReplicationStreamConfig::builder(&temp, [&f.publication])
                        .create_slot_if_missing(CreateSlot::Temporary),
                )
                .await;
            let listed = slots.list().await.unwrap();
            let t = listed.iter().find(|s| s.name == temp).unwrap();
            assert!(t.temporary);
            assert!(listed.iter().any(|s| s.name == f.slot));
            events.shutdown().await.unwrap();

            // A slot of another plugin is refused by name.
            let other = cluster.unique_name("ws_td_slot");
            f.db.psql(&format!(
                "SELECT pg_create_logical_replication_slot('{other}', 'test_decoding')"
            ))
            .unwrap();
            let err = LogicalReplicationStream::connect(
                &f.db.conninfo(),
                ReplicationStreamConfig::builder(&other, [&f.publication])
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap_err();
            assert!(err.to_string().contains("test_decoding"), "{err}");

            slots.drop_slot(&name, true).await.unwrap();
            slots.drop_slot(&other, true).await.unwrap();
            assert!(slots.read(&name).await.unwrap().is_none());
            if cluster.major() >= 17 {
                slots.alter(&f.slot, Some(true), None).await.unwrap();
                assert!(slots.read(&f.slot).await.unwrap().unwrap().failover);
            }
            slots.close().await.unwrap();
        });
    });
}

#[test]
fn bounded_replay_stops_after_the_crossing_transaction() {
    let cluster = pgtest::cluster(17);
    let f = Fixture::new(cluster, "ws_endpos");
    // The unpublished write puts WAL between the first commit and the target.
    f.db.psql("INSERT INTO t VALUES (1, 'a'); INSERT INTO u VALUES (1);")
        .unwrap();
    let target = f.current_lsn();
    f.db.psql("INSERT INTO t VALUES (2, 'b'); INSERT INTO t VALUES (3, 'c');")
        .unwrap();
    block_on(async {
        let mut events = f.start(f.config().end_lsn(target)).await;
        let mut commits = Vec::new();
        while let Some(e) = events.next_event().await.unwrap() {
            if let Some(end) = e.ack_lsn() {
                commits.push(end);
                events.ack(end);
            }
        }
        // The first commit ends before the target; the second is the one that crosses it.
        assert_eq!(commits.len(), 2, "{commits:?}");
        assert!(commits[0] < target && commits[1] >= target);
        let reported = events.shutdown().await.unwrap();
        assert_eq!(reported, commits[1]);
        assert_eq!(f.confirmed_flush(), commits[1]);
    });
}

#[test]
fn raw_mode_delivers_xlogdata_with_feedback() {
    let cluster = pgtest::cluster(16);
    let f = Fixture::new(cluster, "ws_raw");
    f.db.psql("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .unwrap();
    block_on(async {
        let stream = LogicalReplicationStream::connect(
            &f.db.conninfo(),
            f.config().raw(true).build().unwrap(),
        )
        .await
        .unwrap();
        let n = stream.negotiated().clone();
        let mut events = stream.start();
        let ctx = ParseContext::new(n.pgoutput.proto_version, n.pgoutput.streaming);
        let mut inserts = 0;
        let end = loop {
            let e = events.next_event().await.unwrap().unwrap();
            let EventKind::XLogData(x) = &e.kind else {
                panic!("{e:?}")
            };
            match Message::parse(&x.data, ctx).unwrap() {
                Message::Insert(_) => inserts += 1,
                Message::Commit(c) => break c.end_lsn,
                _ => {}
            }
        };
        assert_eq!(inserts, 2);
        events.ack(end);
        // At the commit, or at a keepalive past it (everything is acknowledged, and other
        // tests write to this cluster).
        f.wait_confirmed("the commit", |l| l >= end).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        events.shutdown().await.unwrap();
    });
}

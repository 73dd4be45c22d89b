//! START_REPLICATION, the CopyBoth duplex, acknowledgement and errors mid-stream.

use walconn::{Connection, CreateSlotOptions, LogicalReplicationOptions, SnapshotAction};
use walproto::pgoutput::{Message, ParseContext, ProtocolVersion, Streaming};
use walproto::replication::{ServerMessage, StandbyStatusUpdate};
use walproto::Lsn;

use crate::{block_on, config};

#[test]
fn stream_acknowledge_and_stop() {
    pgtest::for_each_major(15, |cluster| {
        let db = cluster.create_database("walconn_stream").unwrap();
        let slot = cluster.unique_name("walconn_stream");
        let publication = "Pub, \"quoted\"";
        db.psql(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             CREATE PUBLICATION \"Pub, \"\"quoted\"\"\" FOR TABLE t;",
        )
        .unwrap();
        block_on(async {
            let mut conn = Connection::connect(&config(&db.conninfo())).await.unwrap();
            let mut options = CreateSlotOptions::logical("pgoutput");
            options.snapshot = Some(SnapshotAction::Nothing);
            let created = conn.create_replication_slot(&slot, &options).await.unwrap();
            db.psql("INSERT INTO t VALUES (1, 'a'), (2, 'b')").unwrap();

            let version = ProtocolVersion::max_for_server(cluster.major() * 10_000);
            let mut opts = LogicalReplicationOptions::new(version, &[publication]);
            opts.pgoutput.streaming = Streaming::On;
            opts.pgoutput.messages = true;
            let mut stream = conn
                .start_logical_replication(&slot, created.consistent_point, &opts)
                .await
                .unwrap();
            let ctx = ParseContext::new(version, Streaming::On);
            let mut inserts = 0;
            let end = loop {
                let frame = stream.recv().await.unwrap().unwrap();
                match ServerMessage::parse(&frame).unwrap() {
                    ServerMessage::XLogData(x) => match Message::parse(x.data, ctx).unwrap() {
                        Message::Insert(_) => inserts += 1,
                        Message::Commit(c) => break c.end_lsn,
                        _ => {}
                    },
                    ServerMessage::PrimaryKeepalive(_) => {}
                    _ => {}
                }
            };
            assert_eq!(inserts, 2);
            stream
                .send_status_update(&StandbyStatusUpdate {
                    write: end,
                    flush: end,
                    apply: end,
                    client_time: std::time::SystemTime::now().into(),
                    reply_requested: false,
                })
                .await
                .unwrap();
            let ended = stream.end().await.unwrap();
            assert_eq!(
                ended.next_timeline(),
                None,
                "a logical stream has no next timeline"
            );
            let mut conn = ended.into_connection();
            // The connection runs commands again after the stream.
            let rows = conn
                .simple_query(&format!(
                    "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = {}",
                    walconn::quote_literal(&slot)
                ))
                .await
                .unwrap();
            let confirmed: Lsn = rows[0]
                .get(0, "confirmed_flush_lsn")
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(confirmed, end);

            // A second consumer of the same slot while the first streams: 55006.
            conn.close().await.unwrap();
            // A fresh connection: a walsender that has streamed once ends a second logical
            // START_REPLICATION at once (PostgreSQL keeps its CopyDone state).
            let fresh = Connection::connect(&config(&db.conninfo())).await.unwrap();
            let mut first = fresh
                .start_logical_replication(&slot, Lsn::new(0), &opts)
                .await
                .unwrap();
            db.psql("INSERT INTO t VALUES (3, 'c')").unwrap();
            first.recv().await.unwrap().unwrap();
            let second = Connection::connect(&config(&db.conninfo())).await.unwrap();
            let err = match second
                .start_logical_replication(&slot, Lsn::new(0), &opts)
                .await
            {
                Err(e) => e,
                // PostgreSQL 15 and 16 acknowledge START_REPLICATION before they find the
                // slot busy; the error is the first thing the stream yields.
                Ok(mut s) => s.recv().await.unwrap_err(),
            };
            assert!(err.is_slot_in_use(), "{err:?}");
            assert!(err.is_retryable());

            // The server terminating the walsender surfaces as a typed error mid-stream.
            db.psql(&format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = '{slot}'"
            ))
            .unwrap();
            let err = loop {
                match first.recv().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("clean end instead of an error"),
                    Err(e) => break e,
                }
            };
            assert!(err.is_connection_lost(), "{err:?}");
            assert!(err.is_retryable());

            let missing = Connection::connect(&config(&db.conninfo())).await.unwrap();
            let err = missing
                .start_logical_replication("walconn_missing", Lsn::new(0), &opts)
                .await
                .unwrap_err();
            assert!(err.is_slot_missing(), "{err:?}");
        });
        db.psql(&format!("SELECT pg_drop_replication_slot('{slot}')"))
            .unwrap();
    });
}

//! The commands the other modules leave out: physical streaming, `TIMELINE_HISTORY`, cancel
//! requests and the `failover` slot option.

use std::time::Duration;

use walconn::{Connection, CreateSlotOptions, ErrorKind};
use walproto::replication::ServerMessage;

use crate::{block_on, config};

#[test]
fn physical_streaming_sends_the_wal_being_written() {
    pgtest::for_each_major(15, |cluster| {
        let db = cluster.create_database("walconn_physical").unwrap();
        let conninfo = format!("{} replication=true", db.conninfo());
        block_on(async {
            let mut conn = Connection::connect(&config(&conninfo)).await.unwrap();
            let sys = conn.identify_system().await.unwrap();
            assert_eq!(sys.dbname, None, "a physical connection has no database");
            let mut stream = conn
                .start_physical_replication(None, sys.xlogpos, Some(sys.timeline))
                .await
                .unwrap();
            db.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
                .unwrap();
            let mut bytes = 0usize;
            while bytes == 0 {
                let frame = tokio::time::timeout(Duration::from_secs(20), stream.recv())
                    .await
                    .expect("no WAL within 20 s")
                    .unwrap()
                    .expect("the stream ended");
                if let Ok(ServerMessage::XLogData(x)) = ServerMessage::parse(&frame) {
                    assert!(
                        x.wal_start >= sys.xlogpos,
                        "{} < {}",
                        x.wal_start,
                        sys.xlogpos
                    );
                    bytes += x.data.len();
                }
            }
            // A clean end gives the connection back for further commands.
            let mut conn = stream.finish().await.unwrap();
            conn.identify_system().await.unwrap();
            conn.close().await.unwrap();
        })
    });
}

#[test]
fn timeline_history_of_the_first_timeline_is_a_typed_server_error() {
    // Timeline 1 has no history file (only a promotion writes one); the server says so, and
    // the connection stays usable.
    pgtest::for_each_major(15, |cluster| {
        let db = cluster.create_database("walconn_tli").unwrap();
        let conninfo = format!("{} replication=true", db.conninfo());
        block_on(async {
            let mut conn = Connection::connect(&config(&conninfo)).await.unwrap();
            let err = conn.timeline_history(1).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Db, "{err:?}");
            assert_eq!(err.code(), Some("58P01"), "{err:?}");
            assert!(err.to_string().contains("00000001.history"), "{err}");
            conn.identify_system().await.unwrap();
        })
    });
}

#[test]
fn cancel_reaches_the_server_that_was_connected() {
    pgtest::for_each_major(15, |cluster| {
        // `hostaddr` gives the address; the name does not resolve, so the cancel request must
        // use the address the connection reached, not the name.
        let conninfo = format!(
            "host=walconn-no-such-host.invalid hostaddr=127.0.0.1 port={} user={} dbname=postgres",
            cluster.port(),
            cluster.user()
        );
        block_on(async {
            let mut conn = Connection::connect(&config(&conninfo)).await.unwrap();
            let token = conn.cancel_token().expect("the server sent a backend key");
            let (result, cancel) = tokio::join!(conn.simple_query("SELECT pg_sleep(30)"), async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                token.cancel().await
            });
            cancel.unwrap();
            let err = result.unwrap_err();
            assert!(err.is_cancelled(), "{err:?}");
            assert_eq!(err.code(), Some("57014"));
            // The cancelled command left the connection usable.
            conn.identify_system().await.unwrap();
        })
    });
}

#[test]
fn failover_slots_need_17() {
    pgtest::for_each_major(15, |cluster| {
        let db = cluster.create_database("walconn_failover").unwrap();
        block_on(async {
            let mut conn = Connection::connect(&config(&db.conninfo())).await.unwrap();
            let name = cluster.unique_name("walconn_fo");
            let mut options = CreateSlotOptions::logical("pgoutput");
            options.failover = true;
            let created = conn.create_replication_slot(&name, &options).await;
            if cluster.major() < 17 {
                let err = created.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Unsupported, "{err:?}");
                assert!(err.to_string().contains("17"), "{err}");
                return;
            }
            created.unwrap();
            let rows = conn
                .simple_query(&format!(
                    "SELECT failover FROM pg_replication_slots WHERE slot_name = {}",
                    walconn::quote_literal(&name)
                ))
                .await
                .unwrap();
            assert_eq!(rows[0].get(0, "failover"), Some("t"));
            conn.drop_replication_slot(&name, false).await.unwrap();
        })
    });
}

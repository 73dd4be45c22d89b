//! A transaction whose one message would pass the NATS server's `max_payload`: the example
//! stops with an error naming the limit, and the slot stays before the transaction, so that
//! the example started again with one message per change publishes it whole.

use std::time::Duration;

use crate::example::{args, stored, Example};
use crate::nats::NatsServer;

#[test]
fn a_transaction_over_max_payload_stops_the_example_before_the_slot_passes_it() {
    let major = *pgtest::installed_majors()
        .first()
        .unwrap_or_else(|| panic!("no PostgreSQL installed; {}", pgtest::INSTALL_HINT));
    let cluster = pgtest::cluster(major);
    let db = cluster.create_database("jetstream_too_large").unwrap();
    let slot = cluster.unique_name("too_large");
    db.psql(&format!(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL);
         CREATE PUBLICATION p FOR TABLE t;
         SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');
         INSERT INTO t VALUES (1, 'small');
         INSERT INTO t SELECT g, 'large' FROM generate_series(2, 1001) g;"
    ))
    .unwrap();
    let nats = NatsServer::with_config("max_payload: 4096");
    let logs = tempfile::tempdir().unwrap();
    let mut example = Example::start(
        args(&db.conninfo(), &slot, &nats.url(), "per-transaction"),
        logs.path().join("example.log"),
    );
    let status = example.wait_exit(Duration::from_secs(60));
    let log = example.log();
    assert!(!status.success(), "{log}");
    assert!(log.contains("max_payload of 4096 bytes"), "{log}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async {
        async_nats::jetstream::new(
            walstream_jetstream::connect_nats(&nats.url())
                .await
                .unwrap(),
        )
    });
    assert_eq!(stored(&rt, &js), 1, "only the small transaction: {log}");

    // The slot did not move past the large transaction: one message per change now.
    let mut example = Example::start(
        args(&db.conninfo(), &slot, &nats.url(), "per-change"),
        logs.path().join("example.log"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stored(&rt, &js) < 1 + 1000 {
        example.assert_running();
        assert!(std::time::Instant::now() < deadline, "{}", example.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    example.stop();
    assert_eq!(stored(&rt, &js), 1 + 1000);
}

//! Dead networks over TLS, on every installed major: a connection that goes silent without
//! closing (the proxy stops forwarding: no FIN, no RST, every byte held) is noticed within the
//! configured receive timeout, and the stream reconnects and resumes with nothing lost, for
//! the logical stream and for the physical one. The connection configuration is built in code
//! (`walconn::Config::builder`) with the CA in memory and `sslmode=verify-full`, and carries
//! the TCP settings for a real black hole (`keepalives_*`, `tcp_user_timeout`), which the
//! proxy cannot show: its own socket acknowledges everything, so only the receive timeout
//! finds this silence, and it is what is measured here.

use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use walstream::physical::{PhysicalReplicationStream, PhysicalStreamConfig, WalEvent};
use walstream::{walconn, ColumnValue, EventKind, LogicalReplicationStream, Lsn, RetryPolicy};

use crate::{block_on, Fixture};

/// The streams' receive timeout: the bound within which the silence must be noticed.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the notice may take beyond the receive timeout: the liveness check's wake-up and the
/// new connection reaching the proxy, on a loaded test machine.
const SLACK: Duration = Duration::from_secs(2);

/// A CA (PEM) and a server certificate and key for `localhost` and 127.0.0.1 signed by it.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "walstream test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        Self {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A cluster of `major` with TLS on. A short `wal_sender_timeout`, so that the abandoned
    /// walsender lets the slot go soon even if its end of the black hole never closes.
    fn cluster(&self, major: u32) -> pgtest::Cluster {
        pgtest::Config::new(major)
            .file("server.crt", self.cert.clone())
            .file("server.key", self.key.clone())
            .setting("ssl", "on")
            .setting("ssl_cert_file", "server.crt")
            .setting("ssl_key_file", "server.key")
            .setting("wal_sender_timeout", "5s")
            .start()
            .unwrap()
    }

    /// The connection through `proxy` to `dbname`, built in code: verify-full against the CA
    /// in memory, with the TCP settings a production stream would have.
    fn config(&self, proxy: &pgtest::Proxy, dbname: &str) -> walconn::Config {
        walconn::Config::builder()
            .host("localhost")
            .hostaddr("127.0.0.1")
            .port(proxy.port())
            .user("postgres")
            .dbname(dbname)
            .sslmode(walconn::SslMode::VerifyFull)
            .ssl_root_cert_pem(self.ca.clone())
            .connect_timeout(Duration::from_secs(2))
            .keepalives_idle(Duration::from_secs(1))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_count(3)
            .tcp_user_timeout(Duration::from_secs(3))
            .build()
            .unwrap()
    }
}

/// A proxy in front of `cluster`.
fn proxy(cluster: &pgtest::Cluster) -> pgtest::Proxy {
    pgtest::Proxy::start(
        format!("{}:{}", cluster.host(), cluster.port())
            .parse()
            .unwrap(),
    )
    .unwrap()
}

/// Black-holes the proxy's connections until the stream gives up on its connection and opens
/// another (the proxy accepts it), then lets everything through again; returns how long the
/// silence lasted before the stream noticed. Fails if it takes longer than the bound.
async fn black_hole(proxy: &pgtest::Proxy) -> Duration {
    let accepted = proxy.accepted();
    proxy.pause(true);
    let start = Instant::now();
    while proxy.accepted() == accepted {
        assert!(
            start.elapsed() < RECEIVE_TIMEOUT + SLACK * 3,
            "the dead connection was not noticed in {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let noticed = start.elapsed();
    proxy.pause(false);
    noticed
}

/// Whether every walsender of `cluster` uses TLS (and there is one).
fn walsenders_use_tls(cluster: &pgtest::Cluster) -> bool {
    cluster
        .psql(
            "postgres",
            "SELECT count(*) > 0 AND bool_and(s.ssl) FROM pg_stat_replication r \
             JOIN pg_stat_ssl s USING (pid)",
        )
        .unwrap()
        == "t"
}

fn retry() -> RetryPolicy {
    RetryPolicy::default()
        .backoff(Duration::from_millis(50), Duration::from_millis(300))
        .max_attempts(Some(100))
}

#[test]
fn a_black_hole_under_tls_is_noticed_within_the_receive_timeout_and_the_logical_stream_resumes() {
    let pki = Pki::new();
    pgtest::for_each_installed_major(15, |major| {
        let cluster = pki.cluster(major);
        let proxy = proxy(&cluster);
        let f = Fixture::new(&cluster, "ws_dead_network");
        // No slot health checks: their side connections would reach the proxy too, and the
        // proxy's count of connections is how the notice is timed.
        let config = f
            .config()
            .receive_timeout(RECEIVE_TIMEOUT)
            .slot_check_interval(None)
            .retry(retry())
            .build()
            .unwrap();
        block_on(async {
            let mut stream =
                LogicalReplicationStream::connect_with(pki.config(&proxy, f.db.name()), config)
                    .await
                    .unwrap()
                    .start();
            let mut seen = std::collections::BTreeSet::new();
            let mut next_id = 0;
            for round in 0..2 {
                // Rows before the black hole, read and acknowledged.
                for _ in 0..3 {
                    next_id += 1;
                    f.db.psql(&format!("INSERT INTO t VALUES ({next_id}, 'before')"))
                        .unwrap();
                }
                read_rows(&mut stream, &mut seen, next_id).await;
                assert!(walsenders_use_tls(&cluster), "round {round}");
                // Rows committed while the network is silent arrive after the reconnect.
                next_id += 1;
                f.db.psql(&format!("INSERT INTO t VALUES ({next_id}, 'in the hole')"))
                    .unwrap();
                let noticed = black_hole(&proxy).await;
                println!("PostgreSQL {major}, round {round}: noticed after {noticed:?}");
                assert!(
                    noticed <= RECEIVE_TIMEOUT + SLACK,
                    "round {round}: noticed after {noticed:?}"
                );
                next_id += 1;
                f.db.psql(&format!("INSERT INTO t VALUES ({next_id}, 'after')"))
                    .unwrap();
                read_rows(&mut stream, &mut seen, next_id).await;
                assert!(walsenders_use_tls(&cluster), "round {round}");
                assert!(stream.stats().reconnects > round, "{:?}", stream.stats());
            }
            assert_eq!(seen, (1..=next_id).collect());
            stream.shutdown().await.unwrap();
        });
    });
}

/// Reads until row `last` arrives, acknowledging each transaction, collecting the row ids.
async fn read_rows(
    stream: &mut walstream::EventStream,
    seen: &mut std::collections::BTreeSet<i64>,
    last: i64,
) {
    while !seen.contains(&last) {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.next_event())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for row {last}"))
            .unwrap()
            .expect("the stream ended early");
        if let EventKind::Insert(insert) = &event.kind {
            if let Some(ColumnValue::Text(b)) = insert.new.get("id") {
                seen.insert(std::str::from_utf8(&b).unwrap().parse().unwrap());
            }
        }
        if let EventKind::Reconnected { reason, .. } = &event.kind {
            println!("reconnected: {reason}");
        }
        if let Some(lsn) = event.ack_lsn() {
            stream.ack(lsn);
        }
    }
}

#[test]
fn a_black_hole_under_tls_is_noticed_within_the_receive_timeout_and_the_physical_stream_resumes() {
    let pki = Pki::new();
    pgtest::for_each_installed_major(15, |major| {
        let cluster = pki.cluster(major);
        let proxy = proxy(&cluster);
        let slot = cluster.unique_name("dead_phys");
        let config = PhysicalStreamConfig::builder()
            .slot(&slot)
            .create_slot_if_missing(true)
            .status_interval(Duration::from_millis(200))
            .receive_timeout(RECEIVE_TIMEOUT)
            .retry(retry())
            .build()
            .unwrap();
        let current = || -> Lsn {
            cluster
                .psql("postgres", "SELECT pg_current_wal_flush_lsn()")
                .unwrap()
                .parse()
                .unwrap()
        };
        block_on(async {
            let mut wal =
                PhysicalReplicationStream::connect_with(pki.config(&proxy, "postgres"), config)
                    .await
                    .unwrap()
                    .start();
            cluster
                .psql("postgres", "CREATE TABLE dead_phys (id int)")
                .unwrap();
            let mut received = read_wal(&mut wal, current(), Lsn::ZERO).await;
            assert!(walsenders_use_tls(&cluster));
            cluster
                .psql("postgres", "INSERT INTO dead_phys VALUES (1)")
                .unwrap();
            let noticed = black_hole(&proxy).await;
            println!("PostgreSQL {major}: noticed after {noticed:?}");
            assert!(
                noticed <= RECEIVE_TIMEOUT + SLACK,
                "noticed after {noticed:?}"
            );
            cluster
                .psql("postgres", "INSERT INTO dead_phys VALUES (2)")
                .unwrap();
            let target = current();
            let before = received;
            received = read_wal(&mut wal, target, received).await;
            assert!(received >= target && received > before);
            assert!(wal.stats().reconnects >= 1, "{:?}", wal.stats());
            assert!(walsenders_use_tls(&cluster));
            wal.shutdown().await.unwrap();
        });
        cluster
            .psql(
                "postgres",
                &format!("SELECT pg_drop_replication_slot('{slot}'); DROP TABLE dead_phys"),
            )
            .unwrap();
    });
}

/// Reads WAL until `target` has arrived, acknowledging it all; returns the end of what
/// arrived. Data after a reconnect starts at or before the acknowledged position `acked`.
async fn read_wal(wal: &mut walstream::physical::WalStream, target: Lsn, acked: Lsn) -> Lsn {
    let mut end = acked;
    while end < target {
        let event = tokio::time::timeout(Duration::from_secs(30), wal.next_event())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for WAL up to {target}"))
            .unwrap()
            .expect("the stream ended early");
        match event {
            WalEvent::Data(data) => {
                // No gap: each piece starts where the last ended, or earlier after a
                // reconnect (the first starts at its segment's start).
                if !end.is_zero() {
                    assert!(data.start <= end, "a gap from {end} to {}", data.start);
                }
                end = end.max(data.end());
                wal.ack(end);
            }
            WalEvent::Reconnected { resume, .. } => {
                assert!(resume <= end, "resumed at {resume}, past {end}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    end
}

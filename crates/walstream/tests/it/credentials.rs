//! Rotating credentials on every installed major: a logical stream whose connection
//! configuration carries a `walconn::PasswordProvider` (through `connect_with`). The role's
//! password is changed on the server while the stream runs and its walsender is terminated:
//! the stream reconnects with the provider's new password. A provider that then gives the old
//! password ends the stream with the server's authentication error, and one that fails ends
//! it with the provider's error; each after one call, not a retry loop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use walstream::{
    walconn, ColumnValue, ErrorKind, EventKind, EventStream, LogicalReplicationStream,
};

use crate::{block_on, Fixture};

/// What the provider answers: a password, or a failure with this message.
type Answer = Result<String, String>;

/// A provider closure over `answer`, counting its calls in `calls`.
fn provider(
    answer: &Arc<Mutex<Answer>>,
    calls: &Arc<AtomicUsize>,
) -> Arc<dyn walconn::PasswordProvider> {
    let (answer, calls) = (answer.clone(), calls.clone());
    Arc::new(move |_: walconn::PasswordRequest| {
        calls.fetch_add(1, Ordering::SeqCst);
        let answer = answer.lock().unwrap().clone();
        async move { answer.map_err(walconn::BoxError::from) }
    })
}

/// Reads events until the insert of row `id` (fails after 30 s).
async fn read_until_row(stream: &mut EventStream, id: i64) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.next_event())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for row {id}"))
            .unwrap()
            .expect("the stream ended early");
        if let EventKind::Insert(insert) = &event.kind {
            if let Some(ColumnValue::Text(b)) = insert.new.get("id") {
                if std::str::from_utf8(&b).unwrap().parse::<i64>().unwrap() == id {
                    return;
                }
            }
        }
    }
}

/// Reads until the stream ends with an error (fails after 30 s or on a clean end).
async fn read_until_error(stream: &mut EventStream) -> walstream::Error {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next_event()).await {
            Err(_) => panic!("the stream did not end"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("the stream ended without an error"),
            Ok(Err(e)) => return e,
        }
    }
}

#[test]
fn a_rotated_password_is_fetched_again_at_the_reconnect_and_failures_end_the_stream() {
    pgtest::for_each_installed_major(15, |major| {
        let cluster = pgtest::Config::new(major)
            .setting("password_encryption", "scram-sha-256")
            .hba_line("host all rotuser 127.0.0.1/32 scram-sha-256")
            .start()
            .unwrap();
        cluster
            .psql(
                "postgres",
                "CREATE ROLE rotuser LOGIN SUPERUSER PASSWORD 'first'",
            )
            .unwrap();
        let f = Fixture::new(&cluster, "ws_credentials");
        let terminate = format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = '{}' AND active_pid IS NOT NULL",
            f.slot
        );
        let answer = Arc::new(Mutex::new(Ok("first".to_owned())));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut conn_config = walconn::Config::parse_with_env(
            &format!(
                "host=127.0.0.1 port={} user=rotuser dbname={}",
                cluster.port(),
                f.db.name()
            ),
            |_| None,
        )
        .unwrap();
        conn_config.set_password_provider(provider(&answer, &calls));
        let start = |conn_config: walconn::Config| {
            // No slot health checks: their side connections would ask the provider too, at
            // moments of their own, and the test counts the stream's calls.
            let config = f.config().slot_check_interval(None).build().unwrap();
            async move {
                LogicalReplicationStream::connect_with(conn_config, config)
                    .await
                    .unwrap()
                    .start()
            }
        };
        block_on(async {
            let mut stream = start(conn_config.clone()).await;
            f.db.psql("INSERT INTO t VALUES (1, 'a')").unwrap();
            read_until_row(&mut stream, 1).await;
            let before = calls.load(Ordering::SeqCst);
            assert!(before >= 1);

            // The password rotates: on the server, then in the provider; the walsender goes.
            f.db.psql("ALTER ROLE rotuser PASSWORD 'second'").unwrap();
            *answer.lock().unwrap() = Ok("second".to_owned());
            f.db.psql(&terminate).unwrap();
            f.db.psql("INSERT INTO t VALUES (2, 'b')").unwrap();
            read_until_row(&mut stream, 2).await;
            assert!(stream.stats().reconnects >= 1, "{:?}", stream.stats());
            assert!(calls.load(Ordering::SeqCst) > before);
            // The walsender now serving the stream authenticated as rotuser.
            let user =
                f.db.psql(&format!(
                    "SELECT usename FROM pg_stat_replication r JOIN pg_replication_slots s \
                     ON s.active_pid = r.pid WHERE s.slot_name = '{}'",
                    f.slot
                ))
                .unwrap();
            assert_eq!(user, "rotuser");

            // The provider still gives the old password: the server's 28P01 ends the stream
            // after one attempt, though the retry policy allows 200.
            *answer.lock().unwrap() = Ok("first".to_owned());
            let before = calls.load(Ordering::SeqCst);
            let cut = Instant::now();
            f.db.psql(&terminate).unwrap();
            let err = read_until_error(&mut stream).await;
            assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
            assert_eq!(err.code(), Some("28P01"), "{err:?}");
            assert!(err.connection().unwrap().is_auth_failed(), "{err:?}");
            assert!(!err.is_retryable());
            assert_eq!(calls.load(Ordering::SeqCst), before + 1);
            assert!(
                cut.elapsed() < Duration::from_secs(10),
                "{:?}",
                cut.elapsed()
            );
            drop(stream);

            // A provider that fails: its error, typed and with its message, after one call.
            *answer.lock().unwrap() = Ok("second".to_owned());
            let mut stream = start(conn_config.clone()).await;
            f.db.psql("INSERT INTO t VALUES (3, 'c')").unwrap();
            read_until_row(&mut stream, 3).await;
            *answer.lock().unwrap() = Err("the vault is sealed".to_owned());
            let before = calls.load(Ordering::SeqCst);
            f.db.psql(&terminate).unwrap();
            let err = read_until_error(&mut stream).await;
            assert!(!err.is_retryable(), "{err:?}");
            let failure = err
                .connection()
                .and_then(walconn::Error::password_provider_error)
                .unwrap_or_else(|| panic!("not the provider's error: {err:?}"));
            assert_eq!(failure.to_string(), "the vault is sealed");
            // The provider's error is a cause: `{:#}` (and anyhow, eyre) show the chain.
            let shown = format!("{err:#}");
            assert!(shown.contains("the vault is sealed"), "{shown}");
            assert_eq!(calls.load(Ordering::SeqCst), before + 1);
        });
    });
}

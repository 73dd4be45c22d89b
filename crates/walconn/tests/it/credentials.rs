//! The password provider against a live server: asked at each password request with the
//! connection's host, port, user and database, over a static password; its failure and a
//! rejected password are typed, not retryable, and asked once per attempt.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use walconn::{
    BoxError, Connection, ErrorKind, Host, PasswordFuture, PasswordProvider, PasswordRequest,
    Replication,
};

use crate::{block_on, config};

/// What [`Rotating`] answers next.
#[derive(Clone)]
enum Answer {
    Password(String),
    Fail(String),
}

/// A provider whose answer the test changes, counting the calls and keeping the requests.
struct Rotating {
    answer: Mutex<Answer>,
    calls: AtomicUsize,
    requests: Mutex<Vec<PasswordRequest>>,
}

impl Rotating {
    fn new(password: &str) -> Arc<Self> {
        Arc::new(Self {
            answer: Mutex::new(Answer::Password(password.to_owned())),
            calls: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl PasswordProvider for Rotating {
    fn password(&self, request: PasswordRequest) -> PasswordFuture<'_> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.requests.lock().unwrap().push(request);
            // An asynchronous source: the answer comes after a round trip of its own.
            tokio::task::yield_now().await;
            match self.answer.lock().unwrap().clone() {
                Answer::Password(p) => Ok(p),
                Answer::Fail(message) => Err(BoxError::from(message)),
            }
        })
    }
}

#[test]
fn the_provider_is_asked_at_each_connection_and_its_failures_are_typed() {
    pgtest::for_each_installed_major(15, |major| {
        let cluster = pgtest::Config::new(major)
            .setting("password_encryption", "scram-sha-256")
            .hba_line("host all rotuser 127.0.0.1/32 scram-sha-256")
            .hba_line("host replication rotuser 127.0.0.1/32 scram-sha-256")
            .start()
            .unwrap();
        cluster
            .psql(
                "postgres",
                "CREATE ROLE rotuser LOGIN REPLICATION PASSWORD 'first'",
            )
            .unwrap();
        let port = cluster.port();
        block_on(async {
            let provider = Rotating::new("first");
            let mut c = config(&format!(
                "host=127.0.0.1 port={port} user=rotuser dbname=postgres password=static"
            ));
            c.set_password_provider(provider.clone());
            // The provider wins over the conninfo's password, and is asked with the target.
            let mut conn = Connection::connect(&c).await.unwrap();
            assert_eq!(conn.show("session_authorization").await.unwrap(), "rotuser");
            conn.close().await.unwrap();
            assert_eq!(provider.calls(), 1);
            let request = provider.requests.lock().unwrap()[0].clone();
            assert_eq!(request.host, Host::Tcp("127.0.0.1".to_owned()));
            assert_eq!((request.port, request.user.as_str()), (port, "rotuser"));
            assert_eq!(request.dbname, "postgres");

            // The password changes on the server and in the provider: the next connection
            // is asked anew and gets in.
            cluster
                .psql("postgres", "ALTER ROLE rotuser PASSWORD 'second'")
                .unwrap();
            provider.set(Answer::Password("second".to_owned()));
            Connection::connect(&c).await.unwrap();
            assert_eq!(provider.calls(), 2);

            // A physical replication connection names the `replication` database.
            let mut physical = c.clone();
            physical.set_replication(Replication::Physical);
            let mut conn = Connection::connect(&physical).await.unwrap();
            conn.identify_system().await.unwrap();
            assert_eq!(provider.requests.lock().unwrap()[2].dbname, "replication");

            // A stale password: the server's 28P01, asked once, not retryable.
            provider.set(Answer::Password("first".to_owned()));
            let err = Connection::connect(&c).await.unwrap_err();
            assert!(err.is_auth_failed(), "{err:?}");
            assert_eq!(err.code(), Some("28P01"), "{err:?}");
            assert!(!err.is_retryable());
            assert!(err.password_provider_error().is_none());
            assert_eq!(provider.calls(), 4);

            // A failing provider: an Auth error that keeps its message, found by type.
            provider.set(Answer::Fail("token service unavailable".to_owned()));
            let err = Connection::connect(&c).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Auth, "{err:?}");
            assert!(!err.is_retryable());
            assert_eq!(err.code(), None);
            let failure = err.password_provider_error().expect("the provider's error");
            assert_eq!(failure.to_string(), "token service unavailable");
            assert_eq!(failure.error().to_string(), "token service unavailable");
            // The provider's error is the source: `{:#}` shows the chain.
            let shown = format!("{err:#}");
            assert!(shown.contains("token service unavailable"), "{shown}");
            assert!(shown.contains("password provider"), "{shown}");
            assert!(shown.contains("rotuser"), "{shown}");
            assert_eq!(provider.calls(), 5);

            // Trust authentication asks for no password: the provider is not called.
            let mut trusted = config(&cluster.conninfo("postgres"));
            trusted.set_password_provider(provider.clone());
            Connection::connect(&trusted).await.unwrap();
            assert_eq!(provider.calls(), 5);
        });
    });
}

#[test]
fn a_closure_is_a_provider_for_md5_and_cleartext_too() {
    let major = *pgtest::installed_majors().last().unwrap();
    let cluster = pgtest::Config::new(major)
        .hba_line("host all md5user 127.0.0.1/32 md5")
        .hba_line("host all plainuser 127.0.0.1/32 password")
        .start()
        .unwrap();
    cluster
        .psql(
            "postgres",
            "SET password_encryption = 'md5';
             CREATE ROLE md5user LOGIN PASSWORD 'md5 token';
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE plainuser LOGIN PASSWORD 'plain token';",
        )
        .unwrap();
    block_on(async {
        for (user, token) in [("md5user", "md5 token"), ("plainuser", "plain token")] {
            let mut c = config(&format!(
                "host=127.0.0.1 port={} user={user} dbname=postgres replication=false",
                cluster.port()
            ));
            let token = token.to_owned();
            c.set_password_provider(Arc::new(move |_: PasswordRequest| {
                let token = token.clone();
                async move { Ok::<_, BoxError>(token) }
            }));
            let mut conn = Connection::connect(&c).await.unwrap();
            assert_eq!(conn.show("session_authorization").await.unwrap(), user);
        }
    });
}

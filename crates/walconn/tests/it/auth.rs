//! Connecting: TCP and Unix sockets, several hosts, timeouts, and each authentication method.

use walconn::{Connection, ErrorKind};

use crate::{block_on, config};

#[test]
fn trust_over_tcp_and_unix_socket() {
    pgtest::for_each_major(15, |cluster| {
        block_on(async {
            let db = cluster.create_database("walconn_trust").unwrap();
            let conn = Connection::connect(&config(&db.conninfo())).await.unwrap();
            assert!(!conn.is_tls());
            assert_eq!(conn.server_version_num() / 10000, cluster.major());
            assert_eq!(conn.parameter("client_encoding"), Some("UTF8"));
            conn.close().await.unwrap();
            let unix = format!(
                "host={} port={} user=postgres dbname={}",
                cluster.socket_dir().display(),
                cluster.port(),
                db.name()
            );
            let mut conn = Connection::connect(&config(&unix)).await.unwrap();
            let sys = conn.identify_system().await.unwrap();
            assert_eq!(sys.dbname.as_deref(), Some(db.name()));
        })
    });
}

#[test]
fn hosts_are_tried_in_order() {
    let cluster = pgtest::cluster(pgtest::installed_majors()[0]);
    block_on(async {
        // Port 1 on 127.0.0.1 refuses at once; the second host is the server.
        let url = format!(
            "postgresql://postgres@127.0.0.1:1,127.0.0.1:{}/postgres",
            cluster.port()
        );
        Connection::connect(&config(&url)).await.unwrap();
        let err = Connection::connect(&config("host=127.0.0.1 port=1 user=postgres"))
            .await
            .unwrap_err();
        assert!(
            err.is_connection_lost() || err.kind() == ErrorKind::Io,
            "{err:?}"
        );
        assert!(err.is_retryable());
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    });
}

#[test]
fn connect_timeout_gives_up_on_an_unresponsive_host() {
    block_on(async {
        // A listener that never answers the startup message.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let start = std::time::Instant::now();
        let err = Connection::connect(&config(&format!(
            "host=127.0.0.1 port={port} user=u connect_timeout=2 sslmode=disable"
        )))
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    });
}

#[test]
fn password_methods_and_wrong_passwords() {
    pgtest::for_each_installed_major(15, |major| {
        let cluster = pgtest::Config::new(major)
            .setting("password_encryption", "scram-sha-256")
            .hba_line("host all md5user 127.0.0.1/32 md5")
            .hba_line("host all scramuser 127.0.0.1/32 scram-sha-256")
            .hba_line("host all plainuser 127.0.0.1/32 password")
            .start()
            .unwrap();
        cluster
            .psql(
                "postgres",
                "SET password_encryption = 'md5';
                 CREATE ROLE md5user LOGIN REPLICATION PASSWORD 'md5 pass';
                 SET password_encryption = 'scram-sha-256';
                 CREATE ROLE scramuser LOGIN REPLICATION PASSWORD 'scr''am';
                 CREATE ROLE plainuser LOGIN REPLICATION PASSWORD 'plain';",
            )
            .unwrap();
        block_on(async {
            let port = cluster.port();
            for (user, password) in [
                ("md5user", "md5 pass"),
                ("scramuser", "scr'am"),
                ("plainuser", "plain"),
            ] {
                let mut c = config(&format!(
                    "host=127.0.0.1 port={port} user={user} dbname=postgres"
                ));
                let err = Connection::connect(&c).await.unwrap_err();
                assert!(err.is_auth_failed(), "{user} without password: {err:?}");
                c.set_password("wrong");
                let err = Connection::connect(&c).await.unwrap_err();
                assert!(err.is_auth_failed(), "{user}: {err:?}");
                assert_eq!(err.code(), Some("28P01"), "{user}: {err:?}");
                assert!(!err.is_retryable());
                assert!(!format!("{err:?}{err}").contains("wrong"));
                c.set_password(password);
                let mut conn = Connection::connect(&c).await.unwrap();
                assert_eq!(conn.show("session_authorization").await.unwrap(), user);
            }
            // channel_binding=require refuses a server that authenticates without it.
            let err = Connection::connect(&config(&format!(
                "host=127.0.0.1 port={port} user=md5user password='md5 pass' dbname=postgres \
                 channel_binding=require sslmode=prefer"
            )))
            .await
            .unwrap_err();
            assert!(err.is_auth_failed(), "{err:?}");
        });
    });
}

#[test]
fn the_password_file_supplies_the_password() {
    let major = pgtest::installed_majors()[0];
    let cluster = pgtest::Config::new(major)
        .hba_line("host all scramuser 127.0.0.1/32 scram-sha-256")
        .start()
        .unwrap();
    cluster
        .psql(
            "postgres",
            "CREATE ROLE scramuser LOGIN REPLICATION PASSWORD 'from:file'",
        )
        .unwrap();
    let dir = std::env::temp_dir().join(format!("walconn-passfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let passfile = dir.join("pgpass");
    std::fs::write(
        &passfile,
        format!("127.0.0.1:{}:*:scramuser:from\\:file\n", cluster.port()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    block_on(async {
        let c = config(&format!(
            "host=127.0.0.1 port={} user=scramuser dbname=postgres passfile={}",
            cluster.port(),
            passfile.display()
        ));
        Connection::connect(&c).await.unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

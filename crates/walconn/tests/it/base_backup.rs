//! `BASE_BACKUP`: the result sets and the archive-message stream of PostgreSQL 15+, on a
//! real server, and the refusals and server errors around it.

use pgtest::fake::{message, FakeWalsender, Startup};
use walconn::{BaseBackupOptions, Checkpoint, Connection, ErrorKind, Manifest};
use walproto::Lsn;

use crate::{block_on, config};

#[test]
fn base_backup_streams_archives_manifest_and_progress() {
    pgtest::for_each_major(15, |cluster| {
        let db = cluster.create_database("walconn_backup").unwrap();
        db.psql("CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g")
            .unwrap();
        let conninfo = format!("{} replication=true", db.conninfo());
        block_on(async {
            let mut conn = Connection::connect(&config(&conninfo)).await.unwrap();
            let options = BaseBackupOptions {
                label: Some("walconn's test".into()),
                progress: true,
                checkpoint: Some(Checkpoint::Fast),
                wal: true,
                manifest: Some(Manifest::Yes),
                ..BaseBackupOptions::default()
            };
            let mut backup = conn.base_backup(&options).await.unwrap();
            let start = backup.start();
            assert!(start.lsn > Lsn::ZERO, "{start:?}");
            assert!(start.timeline >= 1, "{start:?}");
            let spaces = backup.tablespaces().to_vec();
            assert!(
                spaces
                    .iter()
                    .any(|s| s.oid.is_none() && s.location.is_none()),
                "the main data directory is one of the tablespaces: {spaces:?}"
            );
            let total_kb: u64 = spaces
                .iter()
                .map(|s| s.size_kb.expect("PROGRESS gives each size"))
                .sum();
            assert!(total_kb > 1024, "a cluster is more than 1 MB: {spaces:?}");

            let (mut archives, mut manifests) = (0, 0);
            let (mut archive_bytes, mut manifest_bytes) = (0u64, 0u64);
            let mut in_manifest = false;
            let mut progress: Vec<u64> = Vec::new();
            while let Some(payload) = backup.next().await.unwrap() {
                match payload.first() {
                    Some(b'n') => {
                        archives += 1;
                        in_manifest = false;
                    }
                    Some(b'm') => {
                        manifests += 1;
                        in_manifest = true;
                    }
                    Some(b'd') if in_manifest => manifest_bytes += payload.len() as u64 - 1,
                    Some(b'd') => archive_bytes += payload.len() as u64 - 1,
                    Some(b'p') => {
                        let done = u64::from_be_bytes(payload[1..9].try_into().unwrap());
                        progress.push(done);
                    }
                    other => panic!("an unknown archive message {other:?}"),
                }
            }
            let end = backup.end().expect("the end position after the stream");
            assert!(end.lsn >= start.lsn, "{end:?} before {start:?}");
            assert_eq!(end.timeline, start.timeline);
            assert_eq!(archives, spaces.len(), "one archive per tablespace");
            assert_eq!(manifests, 1);
            assert!(manifest_bytes > 0);
            // The last progress message counts every archive byte sent.
            assert_eq!(progress.last(), Some(&archive_bytes), "{progress:?}");
            assert!(
                progress.windows(2).all(|w| w[0] <= w[1]),
                "progress went backwards: {progress:?}"
            );
            // The archives hold what the estimate counted, in tar form, plus the WAL from
            // the start to the end (whole segments), which the estimate leaves out.
            let estimate = total_kb * 1024;
            let wal = end.lsn.checked_distance(start.lsn).unwrap() + 2 * 16 * 1024 * 1024;
            assert!(
                archive_bytes >= estimate * 9 / 10 && archive_bytes <= estimate * 11 / 10 + wal,
                "{archive_bytes} archive bytes for an estimate of {estimate} and {wal} of WAL"
            );
            // The connection runs commands again after the backup.
            conn.identify_system().await.unwrap();
            conn.close().await.unwrap();
        })
    });
}

#[test]
fn base_backup_option_errors_are_typed_and_leave_the_connection_usable() {
    pgtest::for_each_major(15, |cluster| {
        let db = cluster.create_database("walconn_backup_err").unwrap();
        let conninfo = format!("{} replication=true", db.conninfo());
        block_on(async {
            let mut conn = Connection::connect(&config(&conninfo)).await.unwrap();
            let options = BaseBackupOptions {
                max_rate: Some(1),
                ..BaseBackupOptions::default()
            };
            let err = conn.base_backup(&options).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Db, "{err:?}");
            assert!(err.to_string().contains("MAX_RATE"), "{err}");
            conn.identify_system().await.unwrap();

            // INCREMENTAL: refused before sending on 15 and 16; on 17+ the server refuses
            // it without an uploaded manifest.
            let options = BaseBackupOptions {
                incremental: true,
                ..BaseBackupOptions::default()
            };
            let err = conn.base_backup(&options).await.unwrap_err();
            if cluster.major() < 17 {
                assert_eq!(err.kind(), ErrorKind::Unsupported, "{err:?}");
                assert!(err.to_string().contains("PostgreSQL 17"), "{err}");
            } else {
                assert_eq!(err.kind(), ErrorKind::Db, "{err:?}");
            }
            conn.identify_system().await.unwrap();
        })
    });
}

#[test]
fn base_backup_refuses_a_server_older_than_15() {
    block_on(async {
        // The fake server says 17.0 at startup; a later ParameterStatus makes it 14.9.
        let startup = Startup::new().before_ready(message(b'S', b"server_version\x0014.9\x00"));
        let server = FakeWalsender::start_with(startup, |_| async {}).await;
        let mut conn = Connection::connect(&config(&server.conninfo()))
            .await
            .unwrap();
        assert_eq!(conn.server_version_num(), 140009);
        let err = conn
            .base_backup(&BaseBackupOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err:?}");
        assert!(err.to_string().contains("PostgreSQL 15"), "{err}");
        assert!(err.to_string().contains("14.9"), "{err}");
        assert!(!conn.is_poisoned());
    });
}

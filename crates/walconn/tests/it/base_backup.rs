//! `BASE_BACKUP`: the result sets and the archive-message stream of PostgreSQL 15+, on a
//! real server, and the refusals and server errors around it; `UPLOAD_MANIFEST` and an
//! incremental backup (PostgreSQL 17+).

use pgtest::fake::{copy_data, message, FakeWalsender, Startup};
use walconn::{BaseBackup, BaseBackupOptions, Checkpoint, Connection, ErrorKind, Manifest};
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

/// Reads a backup to its end: its manifest and its archives' bytes (the payloads of the `d`
/// messages after `m`, and of the others).
async fn read_to_end(backup: &mut BaseBackup<'_>) -> (Vec<u8>, Vec<u8>) {
    let (mut manifest, mut archives) = (Vec::new(), Vec::new());
    let mut in_manifest = false;
    while let Some(payload) = backup.next().await.unwrap() {
        match payload.first() {
            Some(b'n') => in_manifest = false,
            Some(b'm') => in_manifest = true,
            Some(b'd') if in_manifest => manifest.extend_from_slice(&payload[1..]),
            Some(b'd') => archives.extend_from_slice(&payload[1..]),
            _ => {}
        }
    }
    (manifest, archives)
}

#[test]
fn upload_manifest_then_an_incremental_backup() {
    pgtest::for_each_installed_major(15, |major| {
        if major < 17 {
            // Refused before anything is sent: the next command's answer is its own.
            let cluster = pgtest::cluster(major);
            let conninfo = format!("{} replication=true", cluster.conninfo("postgres"));
            block_on(async {
                let mut conn = Connection::connect(&config(&conninfo)).await.unwrap();
                let err = conn.upload_manifest(b"{}").await.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Unsupported, "{err:?}");
                assert!(err.to_string().contains("PostgreSQL 17"), "{err}");
                assert!(!conn.is_poisoned());
                conn.identify_system().await.unwrap();
            });
            return;
        }
        let cluster = pgtest::Config::new(major)
            .setting("wal_level", "replica")
            .setting("summarize_wal", "on")
            .start()
            .unwrap();
        cluster
            .psql(
                "postgres",
                "CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g",
            )
            .unwrap();
        let conninfo = format!("{} replication=true", cluster.conninfo("postgres"));
        block_on(async {
            let mut conn = Connection::connect(&config(&conninfo)).await.unwrap();
            let full = BaseBackupOptions {
                checkpoint: Some(Checkpoint::Fast),
                manifest: Some(Manifest::Yes),
                ..BaseBackupOptions::default()
            };
            let mut backup = conn.base_backup(&full).await.unwrap();
            let (manifest, archives) = read_to_end(&mut backup).await;
            assert!(manifest.starts_with(b"{"), "{:?}", &manifest[..16]);
            assert!(!contains(&archives, b"INCREMENTAL."));
            cluster
                .psql("postgres", "INSERT INTO t SELECT generate_series(1, 1000)")
                .unwrap();

            // Garbage is the server's error, in one CopyData or over several (the server
            // refuses the first chunk and ignores the rest), and the connection stays in step.
            for garbage in [b"not a manifest".to_vec(), vec![b'x'; 300_000]] {
                let err = conn.upload_manifest(&garbage).await.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Db, "{err:?}");
                assert!(!conn.is_poisoned());
                conn.identify_system().await.unwrap();
            }

            conn.upload_manifest(&manifest).await.unwrap();
            let incremental = BaseBackupOptions {
                incremental: true,
                ..full
            };
            let mut backup = conn.base_backup(&incremental).await.unwrap();
            let (manifest, archives) = read_to_end(&mut backup).await;
            assert!(manifest.starts_with(b"{"));
            assert!(
                contains(&archives, b"INCREMENTAL."),
                "an incremental backup holds INCREMENTAL.* files"
            );
            conn.identify_system().await.unwrap();
            conn.close().await.unwrap();
        });
    });
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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

/// A result set of text columns `columns` with one row of `values`, as the server sends the
/// position and tablespace results of `BASE_BACKUP`.
pub(crate) fn result_set(columns: &[&str], values: &[Option<&str>]) -> Vec<u8> {
    let mut desc = (columns.len() as u16).to_be_bytes().to_vec();
    for c in columns {
        desc.extend_from_slice(c.as_bytes());
        desc.push(0);
        // Table OID, column number, type OID (text), size, modifier, text format.
        desc.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 255, 255, 255, 255, 255, 255]);
        desc.extend_from_slice(&[0, 0]);
    }
    let mut row = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        match v {
            Some(v) => {
                row.extend_from_slice(&(v.len() as u32).to_be_bytes());
                row.extend_from_slice(v.as_bytes());
            }
            None => row.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let mut out = message(b'T', &desc);
    out.extend(message(b'D', &row));
    out.extend(message(b'C', b"SELECT\0"));
    out
}

/// What a 15+ server sends before the archives: the start position, one tablespace (the
/// data directory, 100 kB) and CopyOutResponse.
pub(crate) fn backup_start() -> Vec<u8> {
    let mut out = result_set(&["recptr", "tli"], &[Some("0/2000028"), Some("1")]);
    out.extend(result_set(
        &["spcoid", "spclocation", "size"],
        &[None, None, Some("100")],
    ));
    // CopyOutResponse: binary, no columns.
    out.extend(message(b'H', &[1, 0, 0]));
    out
}

#[test]
fn base_backup_server_error_mid_stream_is_typed() {
    block_on(async {
        let server = FakeWalsender::start(|peer| async move {
            let mut out = backup_start();
            out.extend(copy_data(b"nbase.tar\0\0"));
            out.extend(copy_data(b"dsome tar bytes"));
            out.extend(message(
                b'E',
                b"SERROR\0VERROR\0C58P01\0Mcould not open file \"base/1/1234\"\0\0",
            ));
            out.extend(message(b'Z', b"I"));
            peer.send(&out).await;
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        })
        .await;
        let mut conn = Connection::connect(&config(&server.conninfo()))
            .await
            .unwrap();
        let mut backup = conn
            .base_backup(&BaseBackupOptions::default())
            .await
            .unwrap();
        assert_eq!(backup.start().lsn, "0/2000028".parse().unwrap());
        assert_eq!(backup.tablespaces()[0].size_kb, Some(100));
        assert_eq!(&backup.next().await.unwrap().unwrap()[..], b"nbase.tar\0\0");
        assert_eq!(
            &backup.next().await.unwrap().unwrap()[..],
            b"dsome tar bytes"
        );
        let err = backup.next().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Db, "{err:?}");
        assert_eq!(err.code(), Some("58P01"), "{err:?}");
        assert!(err.to_string().contains("base/1/1234"), "{err}");
        assert!(
            backup.next().await.unwrap().is_none(),
            "the backup has ended"
        );
        assert!(backup.end().is_none());
        assert!(!conn.is_poisoned(), "back in step after ReadyForQuery");
    });
}

#[test]
fn base_backup_next_dropped_mid_frame_loses_nothing() {
    block_on(async {
        let server = FakeWalsender::start(|peer| async move {
            let mut out = backup_start();
            let frame = copy_data(b"dhalf and half");
            out.extend_from_slice(&frame[..8]);
            peer.send(&out).await;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let mut out = frame[8..].to_vec();
            out.extend(message(b'c', b""));
            out.extend(result_set(
                &["recptr", "tli"],
                &[Some("0/2000100"), Some("1")],
            ));
            out.extend(message(b'C', b"BASE_BACKUP\0"));
            out.extend(message(b'Z', b"I"));
            peer.send(&out).await;
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        })
        .await;
        let mut conn = Connection::connect(&config(&server.conninfo()))
            .await
            .unwrap();
        let mut backup = conn
            .base_backup(&BaseBackupOptions::default())
            .await
            .unwrap();
        let dropped =
            tokio::time::timeout(std::time::Duration::from_millis(50), backup.next()).await;
        assert!(dropped.is_err(), "half a frame is not a payload");
        assert_eq!(
            &backup.next().await.unwrap().unwrap()[..],
            b"dhalf and half"
        );
        assert!(backup.next().await.unwrap().is_none());
        assert_eq!(backup.end().unwrap().lsn, "0/2000100".parse().unwrap());
        assert!(!conn.is_poisoned());
    });
}

#[test]
fn base_backup_fatal_error_then_close_returns_the_servers_error() {
    // A terminated walsender sends FATAL and closes without ReadyForQuery: the server's
    // error is what `next` returns, not the end-of-file after it.
    block_on(async {
        let server = FakeWalsender::start(|peer| async move {
            let mut out = backup_start();
            out.extend(copy_data(b"nbase.tar\0\0"));
            out.extend(message(
                b'E',
                b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0",
            ));
            peer.send(&out).await;
        })
        .await;
        let mut conn = Connection::connect(&config(&server.conninfo()))
            .await
            .unwrap();
        let mut backup = conn
            .base_backup(&BaseBackupOptions::default())
            .await
            .unwrap();
        assert_eq!(&backup.next().await.unwrap().unwrap()[..], b"nbase.tar\0\0");
        let err = backup.next().await.unwrap_err();
        assert_eq!(err.code(), Some("57P01"), "{err:?}");
        assert!(backup.next().await.unwrap().is_none());
    });
}

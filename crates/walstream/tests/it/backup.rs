//! Live tests of base backups: the entry stream, the writers, the manifest.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use pgtest::fake::{copy_data, message, FakeWalsender};
use walstream::backup::{
    self, BackupEvent, BaseBackupConfig, EntryKind, Error, Manifest, PlainWriter, Problem,
    TarEntry, TarErrorKind, TarEvent, TarReader, TarWriter, INCOMPLETE_MARKER,
};

use crate::block_on;

/// A scratch directory for a backup, removed with the test's temporary directory.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// PostgreSQL 15's `pg_verifybackup` (the only major with client tools installed here).
const PG_VERIFYBACKUP_15: &str = "/usr/lib/postgresql/15/bin/pg_verifybackup";

#[test]
fn plain_backup_under_write_load_verifies() {
    // A server of its own: WAL fetched at the end must survive the other tests' checkpoints
    // (wal_keep_size), as pg_basebackup -X fetch needs.
    pgtest::for_each_installed_major(15, |major| {
        let cluster = &pgtest::Config::primary(major).start().unwrap();
        let db = cluster.create_database("walstream_backup_plain").unwrap();
        db.psql(
            "CREATE TABLE fixed AS SELECT g, md5(g::text) AS v FROM generate_series(1, 5000) g",
        )
        .unwrap();
        let load = pgtest::WriteLoad::start(cluster, db.name(), "load").unwrap();
        let tmp = scratch();
        let dir = tmp.path().join("plain");
        wait_for_rows(&load);
        let summary = block_on(async {
            let stream = backup::start(&db.conninfo(), BaseBackupConfig::default())
                .await
                .unwrap();
            PlainWriter::new(&dir)
                .write_recovery_conf("host=primary user=repl password='it''s'")
                .write(stream)
                .await
                .unwrap()
        });
        let rows = load.stop().unwrap();
        assert!(rows > 0, "the load wrote during the backup");
        assert!(summary.end >= summary.start, "{summary:?}");
        assert!(dir.join("PG_VERSION").is_file());
        assert!(dir.join("backup_label").is_file());
        assert!(dir.join("standby.signal").is_file());
        let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
        assert!(
            auto.ends_with("primary_conninfo = 'host=primary user=repl password=''it''''s'''\n"),
            "{auto}"
        );
        assert!(!dir.join("backup_manifest.tmp").exists());

        let text = std::fs::read(dir.join("backup_manifest")).unwrap();
        let manifest = Manifest::parse(&text).unwrap();
        assert!(manifest.files.len() > 100, "{}", manifest.files.len());
        assert_eq!(manifest.wal_ranges[0].start, summary.start);
        manifest.verify(&dir).unwrap();

        match cluster.major() {
            15 => pg_verifybackup(&dir, &[]),
            16 => pg_verifybackup(&dir, &["-n"]),
            _ => {}
        }

        // A flipped byte and a truncated file are each named, with what differs.
        let flipped = pick(&manifest, "base/");
        let truncated = pick(&manifest, "global/");
        flip_byte(&dir.join(&flipped));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&truncated))
            .unwrap();
        f.set_len(f.metadata().unwrap().len() - 1).unwrap();
        let Err(Error::Verify(mismatches)) = manifest.verify(&dir) else {
            panic!("a damaged backup verified")
        };
        assert_eq!(mismatches.len(), 2, "{mismatches:?}");
        let of = |p: &Path| mismatches.iter().find(|m| m.path == p).unwrap();
        assert!(matches!(of(&flipped).problem, Problem::Checksum { .. }));
        assert!(matches!(of(&truncated).problem, Problem::Size { .. }));
        let message = Error::Verify(mismatches.clone()).to_string();
        assert!(
            message.contains(&flipped.display().to_string()),
            "{message}"
        );
    });
}

#[test]
fn the_event_stream_is_in_order_and_complete() {
    pgtest::for_each_major(15, |cluster| {
        block_on(async {
            let config = BaseBackupConfig {
                wal: backup::WalMethod::None,
                ..BaseBackupConfig::default()
            };
            let mut stream = backup::start(&cluster.conninfo("postgres"), config)
                .await
                .unwrap();
            let first = stream.next().await.unwrap().unwrap();
            assert!(
                matches!(
                    &first,
                    BackupEvent::Archive {
                        tablespace: None,
                        ..
                    }
                ),
                "{first:?}"
            );
            let (mut open, mut entries, mut manifest) = (None::<(PathBuf, u64, u64)>, 0, 0);
            let mut progress = Vec::new();
            let mut end = None;
            while let Some(event) = stream.next().await.unwrap() {
                assert!(end.is_none(), "{event:?} after the end");
                match event {
                    BackupEvent::Entry {
                        path, kind, size, ..
                    } => {
                        assert!(open.is_none(), "{path:?} inside another entry");
                        assert!(kind == EntryKind::File || size == 0);
                        open = Some((path, size, 0));
                        entries += 1;
                    }
                    BackupEvent::Data(d) => open.as_mut().unwrap().2 += d.len() as u64,
                    BackupEvent::EntryEnd => {
                        let (path, size, got) = open.take().unwrap();
                        assert_eq!(size, got, "{}", path.display());
                    }
                    BackupEvent::Progress { done, total } => {
                        assert!(total.is_some());
                        progress.push(done);
                    }
                    BackupEvent::Manifest(m) => manifest += m.len(),
                    BackupEvent::End {
                        start,
                        end: e,
                        timeline,
                    } => {
                        assert!(e >= start && timeline >= 1);
                        end = Some(e);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(end.is_some() && open.is_none());
            assert!(
                entries > 100 && manifest > 0,
                "{entries} entries, {manifest} bytes"
            );
            assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
        });
    });
}

#[test]
fn tar_backup_under_write_load_has_the_servers_archives() {
    // A server of its own: WAL fetched at the end must survive the other tests' checkpoints
    // (wal_keep_size), as pg_basebackup -X fetch needs.
    pgtest::for_each_installed_major(15, |major| {
        let cluster = &pgtest::Config::primary(major).start().unwrap();
        let db = cluster.create_database("walstream_backup_tar").unwrap();
        let load = pgtest::WriteLoad::start(cluster, db.name(), "load").unwrap();
        wait_for_rows(&load);
        let tmp = scratch();
        let dir = tmp.path().join("tar");
        let summary = block_on(async {
            let stream = backup::start(&db.conninfo(), BaseBackupConfig::default())
                .await
                .unwrap();
            TarWriter::new(&dir)
                .write_recovery_conf("host=primary user=repl")
                .write(stream)
                .await
                .unwrap()
        });
        load.stop().unwrap();
        assert!(summary.end >= summary.start);
        let text = std::fs::read(dir.join("backup_manifest")).unwrap();
        let manifest = Manifest::parse(&text).unwrap();

        // base.tar reads to its end marker, and holds every file of the manifest with the
        // manifest's size.
        let archive = std::fs::read(dir.join("base.tar")).unwrap();
        let mut tar = TarReader::new("base.tar");
        tar.push(Bytes::from(archive));
        let mut sizes = std::collections::HashMap::new();
        let (mut current, mut auto_conf) = (PathBuf::new(), Vec::new());
        while let Some(e) = tar.next_event().unwrap() {
            match e {
                TarEvent::Entry(e) => {
                    if e.kind == EntryKind::File {
                        sizes.insert(e.path.clone(), e.size);
                    }
                    current = e.path;
                }
                TarEvent::Data(d) if current == Path::new("postgresql.auto.conf") => {
                    auto_conf.extend_from_slice(&d);
                }
                _ => {}
            }
        }
        tar.finish().unwrap();
        assert!(sizes.contains_key(Path::new("PG_VERSION")));
        // -R: the line appended, standby.signal added, everything else as the manifest says.
        let auto_conf = String::from_utf8(auto_conf).unwrap();
        assert!(
            auto_conf.ends_with("\nprimary_conninfo = 'host=primary user=repl'\n"),
            "{auto_conf}"
        );
        assert_eq!(sizes.get(Path::new("standby.signal")), Some(&0));
        for f in &manifest.files {
            if f.path == Path::new("postgresql.auto.conf") {
                assert!(f.size < auto_conf.len() as u64);
                continue;
            }
            assert_eq!(sizes.get(&f.path), Some(&f.size), "{}", f.path.display());
        }
        // WAL fetched: the segments are in the archive.
        assert!(
            sizes
                .keys()
                .any(|p| p.starts_with("pg_wal") && p.components().count() == 2),
            "no WAL segment in base.tar"
        );
    });
}

#[test]
fn streamed_wal_makes_plain_and_tar_backups_self_contained() {
    pgtest::for_each_installed_major(15, |major| {
        let cluster = &pgtest::Config::primary(major).start().unwrap();
        let db = cluster.create_database("walstream_backup_stream").unwrap();
        db.psql("CREATE TABLE fixed AS SELECT generate_series(1, 5000) g")
            .unwrap();
        let load = pgtest::WriteLoad::start(cluster, db.name(), "load").unwrap();
        wait_for_rows(&load);
        let tmp = scratch();
        let (plain, tar) = (tmp.path().join("plain"), tmp.path().join("tar"));
        let config = BaseBackupConfig {
            wal: backup::WalMethod::Stream,
            ..BaseBackupConfig::default()
        };
        let (p, t) = block_on(async {
            let stream = backup::start(&db.conninfo(), config.clone()).await.unwrap();
            let p = PlainWriter::new(&plain).write(stream).await.unwrap();
            let stream = backup::start(&db.conninfo(), config).await.unwrap();
            let t = TarWriter::new(&tar).write(stream).await.unwrap();
            (p, t)
        });
        load.stop().unwrap();
        let slots = cluster
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'walstream_backup_%'",
            )
            .unwrap();
        assert_eq!(slots, "0", "the WAL slots are dropped");

        // Plain: the segments from the start's to the end's are in pg_wal, complete.
        let segment = |lsn: walstream::Lsn| {
            let size: walstream::physical::WalSegmentSize = "16MB".parse().unwrap();
            size.segment_name(p.timeline, lsn)
        };
        for lsn in [p.start, p.end] {
            let file = plain.join("pg_wal").join(segment(lsn));
            let listing: Vec<_> = std::fs::read_dir(plain.join("pg_wal"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            let len = std::fs::metadata(&file).map(|m| m.len());
            assert_eq!(len.ok(), Some(16 << 20), "{file:?} ({p:?}) in {listing:?}");
        }
        let manifest =
            Manifest::parse(&std::fs::read(plain.join("backup_manifest")).unwrap()).unwrap();
        manifest.verify(&plain).unwrap();
        if major == 15 {
            // pg_verifybackup also parses the WAL from start to end with pg_waldump.
            pg_verifybackup(&plain, &[]);
        }
        // The backup alone (no primary) starts and is consistent.
        let restored =
            pgtest::Cluster::from_data_dir(major, &plain, &pgtest::Recovery::none()).unwrap();
        assert_eq!(
            restored
                .psql(db.name(), "SELECT count(*) FROM fixed")
                .unwrap(),
            "5000"
        );

        // Tar: pg_wal.tar holds the segments.
        let mut reader = TarReader::new("pg_wal.tar");
        reader.push(Bytes::from(std::fs::read(tar.join("pg_wal.tar")).unwrap()));
        let mut names = Vec::new();
        while let Some(e) = reader.next_event().unwrap() {
            if let TarEvent::Entry(e) = e {
                names.push(e.path.display().to_string());
            }
        }
        reader.finish().unwrap();
        assert!(names.contains(&segment(t.end)), "{names:?}");
        assert!(!tar.join("pg_wal.tmp").exists());
    });
}

#[test]
fn tablespaces_go_where_the_mapping_says() {
    use std::os::unix::fs::PermissionsExt;
    pgtest::for_each_installed_major(15, |major| {
        let cluster = &pgtest::Config::primary(major).start().unwrap();
        let tmp = scratch();
        // The server's user must reach the tablespace's directory.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ts = tmp.path().join("ts");
        std::fs::create_dir(&ts).unwrap();
        let chown = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&ts)
            .status();
        assert!(chown.unwrap().success());
        cluster
            .psql(
                "postgres",
                &format!("CREATE TABLESPACE walstream_ts LOCATION '{}'", ts.display()),
            )
            .unwrap();
        cluster
            .psql(
                "postgres",
                "CREATE TABLE in_ts TABLESPACE walstream_ts AS SELECT generate_series(1, 1000) g",
            )
            .unwrap();
        let oid = cluster
            .psql(
                "postgres",
                "SELECT oid FROM pg_tablespace WHERE spcname = 'walstream_ts'",
            )
            .unwrap();
        let (plain, mapped, tar) = (
            tmp.path().join("plain"),
            tmp.path().join("ts_copy"),
            tmp.path().join("tar"),
        );
        block_on(async {
            let stream = backup::start(&cluster.conninfo("postgres"), BaseBackupConfig::default())
                .await
                .unwrap();
            assert_eq!(stream.tablespaces().len(), 2);
            PlainWriter::new(&plain)
                .tablespace_mapping(&ts, &mapped)
                .unwrap()
                .write(stream)
                .await
                .unwrap();
            let stream = backup::start(&cluster.conninfo("postgres"), BaseBackupConfig::default())
                .await
                .unwrap();
            TarWriter::new(&tar).write(stream).await.unwrap();
        });
        let link = std::fs::read_link(plain.join("pg_tblspc").join(&oid)).unwrap();
        assert_eq!(link, mapped);
        let version_dir = std::fs::read_dir(&mapped)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<Vec<_>>();
        assert!(
            version_dir
                .iter()
                .any(|d| d.starts_with(&format!("PG_{major}_"))),
            "{version_dir:?}"
        );
        let manifest =
            Manifest::parse(&std::fs::read(plain.join("backup_manifest")).unwrap()).unwrap();
        assert!(
            manifest
                .files
                .iter()
                .any(|f| f.path.starts_with(format!("pg_tblspc/{oid}"))),
            "the manifest lists the tablespace's files"
        );
        manifest.verify(&plain).unwrap();
        if major == 15 {
            pg_verifybackup(&plain, &[]);
        }
        // Tar: one archive per tablespace, named by its OID.
        let mut reader = TarReader::new(format!("{oid}.tar"));
        reader.push(Bytes::from(
            std::fs::read(tar.join(format!("{oid}.tar"))).unwrap(),
        ));
        while reader.next_event().unwrap().is_some() {}
        reader.finish().unwrap();
        assert!(tar.join("base.tar").is_file());
    });
}

#[test]
fn standby_from_a_plain_backup_catches_up() {
    pgtest::for_each_installed_major(15, |major| {
        let primary = pgtest::Config::primary(major).start().unwrap();
        primary
            .psql(
                "postgres",
                "CREATE TABLE before AS SELECT generate_series(1, 1000) g",
            )
            .unwrap();
        let load = pgtest::WriteLoad::start(&primary, "postgres", "load").unwrap();
        wait_for_rows(&load);
        let tmp = scratch();
        let dir = tmp.path().join("standby");
        block_on(async {
            let stream = backup::start(&primary.conninfo("postgres"), BaseBackupConfig::default())
                .await
                .unwrap();
            // -R: the backup's own standby.signal and primary_conninfo make it a standby.
            PlainWriter::new(&dir)
                .write_recovery_conf(primary.conninfo("postgres"))
                .write(stream)
                .await
                .unwrap()
        });
        let standby =
            pgtest::Cluster::from_data_dir(major, &dir, &pgtest::Recovery::none()).unwrap();
        assert!(standby.is_in_recovery().unwrap(), "started as a standby");
        load.stop().unwrap();
        pgtest::wait_caught_up(&primary, &standby).unwrap();
        pgtest::compare_databases(&primary, &standby, "postgres").unwrap();
    });
}

#[test]
fn a_truncated_member_from_the_server_fails_typed_and_cleans_up() {
    let entry = TarEntry {
        path: PathBuf::from("base/1/1234"),
        kind: EntryKind::File,
        size: 8192,
        mode: 0o600,
        mtime: 1_700_000_000,
        link: None,
    };
    for existed in [false, true] {
        let tmp = scratch();
        let dir = tmp.path().join("cut");
        if existed {
            std::fs::create_dir(&dir).unwrap();
        }
        let header = entry.header().unwrap();
        let err = block_on(async {
            let server = FakeWalsender::start(move |peer| async move {
                let mut out = backup_start();
                out.extend(copy_data(b"nbase.tar\0\0"));
                let mut data = b"d".to_vec();
                data.extend(header);
                data.extend([7u8; 1000]);
                out.extend(copy_data(&data));
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
            let stream = backup::start(&server.conninfo(), BaseBackupConfig::default())
                .await
                .unwrap();
            PlainWriter::new(&dir).write(stream).await.unwrap_err()
        });
        let Error::Tar(tar) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(tar.archive(), "base.tar");
        assert_eq!(tar.offset(), 512 + 1000);
        assert_eq!(
            tar.kind(),
            &TarErrorKind::Truncated {
                member: Some(PathBuf::from("base/1/1234"))
            }
        );
        if existed {
            let marker = std::fs::read_to_string(dir.join(INCOMPLETE_MARKER)).unwrap();
            assert!(marker.contains("base/1/1234"), "{marker}");
            assert!(!dir.join("backup_manifest").exists());
        } else {
            assert!(!dir.exists(), "the directory the writer created is removed");
        }
    }
}

/// Waits until the load has committed something, so that the backup runs under writes.
fn wait_for_rows(load: &pgtest::WriteLoad) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while load.committed() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the load wrote nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// What a backup may hold in memory at its peak, whatever the size of its files: the read-ahead
/// of archive messages, the writer's channel and file buffers.
const BACKUP_MEMORY_BOUND: usize = 16 << 20;

/// A backup with a 100 MB relation file holds far less than the file: no file is gathered in
/// memory. Measured for the whole process (the writer works on a thread of its own).
#[test]
fn a_backup_of_a_100_mb_file_stays_within_its_memory_bound() {
    if !pgtest::alloc::alone("backup::a_backup_of_a_100_mb_file_stays_within_its_memory_bound") {
        return;
    }
    let major = *pgtest::installed_majors()
        .last()
        .expect("no PostgreSQL installed");
    let cluster = &pgtest::Config::new(major).start().unwrap();
    // Rows of md5 text, which pglz cannot shrink much: about 100 MB of heap.
    cluster
        .psql(
            "postgres",
            "CREATE TABLE big AS SELECT g, (SELECT string_agg(md5(g::text || i::text), '') \
             FROM generate_series(1, 28) i) AS v FROM generate_series(1, 100000) g",
        )
        .unwrap();
    let tmp = scratch();
    let dir = tmp.path().join("big");
    let memory = pgtest::alloc::ProcessWindow::open();
    block_on(async {
        let config = BaseBackupConfig {
            wal: backup::WalMethod::None,
            ..BaseBackupConfig::default()
        };
        let stream = backup::start(&cluster.conninfo("postgres"), config)
            .await
            .unwrap();
        PlainWriter::new(&dir).write(stream).await.unwrap();
    });
    let peak = memory.peak();
    let manifest = Manifest::parse(&std::fs::read(dir.join("backup_manifest")).unwrap()).unwrap();
    let largest = manifest.files.iter().map(|f| f.size).max().unwrap();
    assert!(
        largest > 90 << 20,
        "the largest file has only {largest} bytes"
    );
    assert!(
        peak < BACKUP_MEMORY_BOUND,
        "the backup held {peak} bytes at its peak (largest file {largest} bytes)"
    );
    println!("peak {peak} bytes for a largest file of {largest} bytes");
}

#[test]
fn a_write_dropped_midway_cleans_up() {
    let tmp = scratch();
    let dir = tmp.path().join("dropped");
    block_on(async {
        let server = FakeWalsender::start(|peer| async move {
            let mut out = backup_start();
            out.extend(copy_data(b"nbase.tar\0\0"));
            peer.send(&out).await;
            // The rest never comes.
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        })
        .await;
        let stream = backup::start(&server.conninfo(), BaseBackupConfig::default())
            .await
            .unwrap();
        let write = PlainWriter::new(&dir).write(stream);
        let dropped = tokio::time::timeout(std::time::Duration::from_millis(300), write).await;
        assert!(dropped.is_err(), "the backup cannot have finished");
    });
    // The writer thread notices and removes the directory it created.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while dir.exists() {
        assert!(std::time::Instant::now() < deadline, "{dir:?} left behind");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The first file of the manifest under `prefix` with at least two bytes.
fn pick(manifest: &Manifest, prefix: &str) -> PathBuf {
    manifest
        .files
        .iter()
        .find(|f| f.path.starts_with(prefix) && f.size > 1)
        .unwrap()
        .path
        .clone()
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

fn pg_verifybackup(dir: &Path, args: &[&str]) {
    if !Path::new(PG_VERIFYBACKUP_15).exists() {
        println!("no {PG_VERIFYBACKUP_15}: not checked");
        return;
    }
    let out = Command::new(PG_VERIFYBACKUP_15)
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_verifybackup {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The two result sets before the archives, as a PostgreSQL 15+ server sends them.
fn backup_start() -> Vec<u8> {
    let mut out = result_set(&["recptr", "tli"], &[Some("0/2000028"), Some("1")]);
    out.extend(result_set(
        &["spcoid", "spclocation", "size"],
        &[None, None, Some("100")],
    ));
    out.extend(message(b'H', &[1, 0, 0]));
    out
}

/// A one-row result set of text columns.
fn result_set(columns: &[&str], values: &[Option<&str>]) -> Vec<u8> {
    let mut desc = (columns.len() as u16).to_be_bytes().to_vec();
    for c in columns {
        desc.extend_from_slice(c.as_bytes());
        desc.push(0);
        desc.extend_from_slice(&0u32.to_be_bytes());
        desc.extend_from_slice(&0u16.to_be_bytes());
        desc.extend_from_slice(&25u32.to_be_bytes());
        desc.extend_from_slice(&(-1i16).to_be_bytes());
        desc.extend_from_slice(&(-1i32).to_be_bytes());
        desc.extend_from_slice(&0u16.to_be_bytes());
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

//! Cancel safety of the physical side against real servers: `base_backup` poisons and
//! `BaseBackup::next` is cancel-safe (dropped anywhere, the archives and the manifest arrive
//! whole: every tar header's checksum holds, the files and sizes are the manifest's, the
//! manifest's own SHA-256 holds, the last progress message counts every archive byte; a
//! server error read before a drop still arrives); `upload_manifest` and `timeline_history`
//! poison; `CopyBoth::end` consumes the stream (dropped, the server sees its walsender's
//! client go); `send_hot_standby_feedback` on a live stream either arrives whole (the
//! walsender's xmin is the one sent) or poisons.

use std::collections::BTreeMap;
use std::time::Duration;

use pgtest::cancel::{poll_once, Mix, Tally};
use pgtest::fake::{copy_data, message, FakeWalsender};
use sha2::{Digest as _, Sha256};
use walconn::{BaseBackup, BaseBackupOptions, Checkpoint, ErrorKind, Manifest, NextTimeline};
use walproto::Lsn;

use super::{
    assert_in_step, assert_poisoned, connect, consumed_poisoned, feedback, poisoned_now, MAJOR,
};
use crate::base_backup::backup_start;
use crate::block_on;
use crate::physical::{promoted_cluster, wait_until};

/// What one backup's archive stream carried, with every `next` dropped at random.
#[derive(Clone, Debug, Default)]
struct Received {
    /// The bytes of each archive (the `d` payloads after each `n`).
    archives: Vec<Vec<u8>>,
    /// The bytes of the manifest (the `d` payloads after `m`).
    manifest: Vec<u8>,
    /// The count of the last progress message.
    progress: Option<u64>,
}

/// Reads a backup to its end with every `next` dropped at random, counting the drops.
async fn read_backup(
    rng: &mut fastrand::Rng,
    backup: &mut BaseBackup<'_>,
    dropped: &mut u32,
) -> Received {
    let mut got = Received::default();
    let mut in_manifest = false;
    loop {
        let Some(r) = Mix::LIVE.pick(rng).run(backup.next()).await else {
            *dropped += 1;
            continue;
        };
        let Some(payload) = r.unwrap() else {
            return got;
        };
        match payload[0] {
            b'n' => {
                got.archives.push(Vec::new());
                in_manifest = false;
            }
            b'm' => in_manifest = true,
            b'd' if in_manifest => got.manifest.extend_from_slice(&payload[1..]),
            b'd' => got
                .archives
                .last_mut()
                .unwrap()
                .extend_from_slice(&payload[1..]),
            b'p' => got.progress = Some(u64::from_be_bytes(payload[1..9].try_into().unwrap())),
            other => panic!("an unknown archive message {other}"),
        }
    }
}

/// The octal number of a tar header field (NUL- or space-terminated).
fn octal(field: &[u8]) -> u64 {
    let digits: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| char::from(b))
        .collect();
    u64::from_str_radix(digits.trim_start(), 8).unwrap()
}

/// The regular files of a tar archive with their sizes, walked header by header: every
/// header's checksum must hold and the last member must end where the archive ends (or where
/// its zero blocks start), so a lost, repeated or reordered payload fails here.
fn tar_files(archive: &[u8]) -> BTreeMap<String, u64> {
    const BLOCK: usize = 512;
    let mut files = BTreeMap::new();
    let mut at = 0;
    while at < archive.len() {
        assert!(at + BLOCK <= archive.len(), "a header cut at byte {at}");
        let header = &archive[at..at + BLOCK];
        if header.iter().all(|&b| b == 0) {
            assert!(archive[at..].iter().all(|&b| b == 0), "data after the end");
            return files;
        }
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, &b)| u64::from(if (148..156).contains(&i) { b' ' } else { b }))
            .sum();
        assert_eq!(
            octal(&header[148..156]),
            sum,
            "header checksum at byte {at}"
        );
        let size = octal(&header[124..136]);
        let name_len = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8(header[..name_len].to_vec()).unwrap();
        if matches!(header[156], b'0' | 0) {
            assert_eq!(files.insert(name, size), None, "a file twice");
        }
        at += BLOCK + usize::try_from(size).unwrap().div_ceil(BLOCK) * BLOCK;
    }
    assert_eq!(at, archive.len(), "the last member runs past the archive");
    files
}

/// The files of a backup manifest with their sizes (its `{ "Path": "...", "Size": n, ...`
/// lines), after checking its `Manifest-Checksum`: the SHA-256 of everything up to the line
/// that holds it.
fn manifest_files(manifest: &[u8]) -> BTreeMap<String, u64> {
    let text = std::str::from_utf8(manifest).unwrap();
    let body = text.trim_end_matches('\n');
    let last_line = body.rfind('\n').unwrap() + 1;
    let digest: String = Sha256::digest(&manifest[..last_line])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        &body[last_line..],
        format!("\"Manifest-Checksum\": \"{digest}\"}}"),
        "the manifest's checksum"
    );
    text.lines()
        .filter_map(|line| line.strip_prefix("{ \"Path\": \""))
        .map(|rest| {
            let (path, rest) = rest.split_once("\", \"Size\": ").unwrap();
            let (size, _) = rest.split_once(',').unwrap();
            (path.to_owned(), size.parse().unwrap())
        })
        .collect()
}

/// Checks what a backup read with random drops carried: one archive per tablespace, each a
/// whole tar whose files are the manifest's, and the last progress count is every archive
/// byte. Returns the archive's file names.
fn check_backup(got: &Received, tablespaces: usize) -> Vec<String> {
    assert_eq!(
        got.archives.len(),
        tablespaces,
        "one archive per tablespace"
    );
    let archive_bytes: usize = got.archives.iter().map(Vec::len).sum();
    assert_eq!(
        got.progress,
        Some(archive_bytes as u64),
        "progress counts every byte"
    );
    let mut files = BTreeMap::new();
    for archive in &got.archives {
        files.extend(tar_files(archive));
    }
    assert!(files.contains_key("PG_VERSION"), "{files:?}");
    assert_eq!(
        files,
        manifest_files(&got.manifest),
        "the archive's files are the manifest's"
    );
    files.into_keys().collect()
}

/// [`check_backup`] fails on `got` (a whole backup) with 8 kB of its archive lost or
/// repeated (the progress count made to match) or 100 bytes of its manifest lost: what a
/// dropped `next` that lost or repeated a payload would leave.
fn checks_catch_a_lost_or_repeated_payload(got: &Received) {
    let fails = |tampered: Received| {
        let check = std::panic::AssertUnwindSafe(|| check_backup(&tampered, 1));
        assert!(
            std::panic::catch_unwind(check).is_err(),
            "a tampered backup passed"
        );
    };
    check_backup(got, 1);
    println!("three tampered backups: the panics below are expected");
    let middle = got.archives[0].len() / 2;
    let mut lost = got.clone();
    lost.archives[0].drain(middle..middle + 8192);
    lost.progress = got.progress.map(|p| p - 8192);
    fails(lost);
    let mut repeated = got.clone();
    let again = got.archives[0][middle..middle + 8192].to_vec();
    repeated.archives[0].splice(middle..middle, again);
    repeated.progress = got.progress.map(|p| p + 8192);
    fails(repeated);
    let mut lost = got.clone();
    let middle = got.manifest.len() / 2;
    lost.manifest.drain(middle..middle + 100);
    fails(lost);
}

#[test]
fn cancel_base_backup_next_and_upload_manifest() {
    // A cluster of its own: the backups are of all of it, and summarize_wal lets the last
    // one be incremental on the manifest uploaded before it.
    let cluster = pgtest::Config::new(MAJOR)
        .setting("wal_level", "logical")
        .setting("summarize_wal", "on")
        .start()
        .unwrap();
    let conninfo = format!("{} replication=true", cluster.conninfo("postgres"));
    block_on(async {
        let mut rng = pgtest::seeded_rng();
        let options = BaseBackupOptions {
            progress: true,
            checkpoint: Some(Checkpoint::Fast),
            manifest: Some(Manifest::Yes),
            ..BaseBackupOptions::default()
        };
        let mut tally = Tally::default();
        let (mut next_dropped, mut abandoned, mut whole) = (0, 0, 0);
        let mut conn = connect(&conninfo).await;
        let mut last = Received::default();
        // At least 20 backups, and more (up to 80) until enough calls of each kind were
        // dropped, one backup abandoned and three read whole.
        for i in 0..80u32 {
            if i >= 20 && next_dropped >= 10 && tally.dropped > 0 && abandoned > 0 && whole >= 3 {
                break;
            }
            let Some(r) = Mix::LIVE
                .pick(&mut rng)
                .run(conn.base_backup(&options))
                .await
            else {
                tally.dropped += 1;
                assert_poisoned(&mut conn);
                let old = std::mem::replace(&mut conn, connect(&conninfo).await);
                consumed_poisoned(old, i);
                continue;
            };
            tally.completed += 1;
            let mut backup = r.unwrap();
            if tally.completed % 3 == 2 {
                // Every third backup is abandoned mid-way: the connection is out of step, so
                // poisoned.
                backup.next().await.unwrap().unwrap();
                drop(backup);
                abandoned += 1;
                assert_poisoned(&mut conn);
                conn = connect(&conninfo).await;
                continue;
            }
            let got = read_backup(&mut rng, &mut backup, &mut next_dropped).await;
            assert!(backup.next().await.unwrap().is_none(), "ended stays ended");
            let (start, end) = (backup.start(), backup.end().unwrap());
            assert!(
                end.lsn >= start.lsn && end.timeline == start.timeline,
                "{start:?} {end:?}"
            );
            check_backup(&got, backup.tablespaces().len());
            whole += 1;
            last = got;
            assert_in_step(&mut conn, i, "logical").await;
        }
        conn.close().await.unwrap();
        tally.check("base_backup");
        println!(
            "BaseBackup::next: {next_dropped} dropped; {whole} read whole, {abandoned} abandoned"
        );
        assert!(next_dropped >= 10, "{next_dropped}");
        assert!(
            abandoned > 0 && whole >= 3,
            "{abandoned} abandoned, {whole} whole"
        );
        checks_catch_a_lost_or_repeated_payload(&last);
        let manifest = last.manifest;

        // UPLOAD_MANIFEST of the last manifest (in 64 KiB chunks) or garbage, the server's
        // error, dropped at random.
        assert!(
            manifest.len() > 64 * 1024,
            "a manifest of one chunk: {}",
            manifest.len()
        );
        let tally = rounds!(60, &conninfo, conn, i,
            call: conn.upload_manifest(if i % 4 == 0 { &b"not a manifest"[..] } else { &manifest[..] }),
            check: |r| match r {
                Err(e) if i % 4 == 0 => assert_eq!(e.kind(), ErrorKind::Db, "{e:?}"),
                r => r.unwrap(),
            },
            after_drop: (),
        );
        tally.check("upload_manifest");

        // After dropped uploads on other connections, a whole one is the base of an
        // incremental backup, read with random drops as well.
        let mut conn = connect(&conninfo).await;
        cluster
            .psql(
                "postgres",
                "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
            )
            .unwrap();
        conn.upload_manifest(&manifest).await.unwrap();
        let incremental = BaseBackupOptions {
            incremental: true,
            ..options
        };
        let mut backup = conn.base_backup(&incremental).await.unwrap();
        let got = read_backup(&mut rng, &mut backup, &mut next_dropped).await;
        let names = check_backup(&got, backup.tablespaces().len());
        assert!(
            names.iter().any(|n| n.contains("/INCREMENTAL.")),
            "an incremental backup holds INCREMENTAL.* files"
        );
        conn.identify_system().await.unwrap();
        conn.close().await.unwrap();
    });
}

#[test]
fn cancel_base_backup_next_keeps_the_servers_error() {
    // A fake server sends payloads in halves, the last half with an error behind it, and
    // ReadyForQuery only 100 ms later: a `next` dropped after the last payload has read the
    // error and waits for ReadyForQuery, and the next call must still return that error,
    // after every payload once, in order.
    let payloads: Vec<Vec<u8>> = (0..30)
        .map(|k| format!("d{k:02}{}", ".".repeat(97 * k)).into_bytes())
        .collect();
    let script_payloads = payloads.clone();
    block_on(async {
        let server = FakeWalsender::start(move |peer| {
            let payloads = script_payloads.clone();
            async move {
                peer.send(&backup_start()).await;
                let error = message(b'E', b"SERROR\0VERROR\0C58P01\0Mno such file\0\0");
                for (k, p) in payloads.iter().enumerate() {
                    let frame = copy_data(p);
                    let (a, b) = frame.split_at(frame.len() / 2);
                    peer.send(a).await;
                    tokio::time::sleep(Duration::from_micros(300)).await;
                    let mut b = b.to_vec();
                    if k + 1 == payloads.len() {
                        b.extend_from_slice(&error);
                    }
                    peer.send(&b).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                peer.send(&message(b'Z', b"I")).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        })
        .await;
        let mut rng = pgtest::seeded_rng();
        let (mut dropped, mut dropped_at_end) = (0, 0);
        for _ in 0..8 {
            let mut conn = connect(&server.conninfo()).await;
            let mut backup = conn
                .base_backup(&BaseBackupOptions::default())
                .await
                .unwrap();
            let mut got = Vec::new();
            let err = loop {
                match Mix::LOCAL.pick(&mut rng).run(backup.next()).await {
                    None if got.len() == payloads.len() => dropped_at_end += 1,
                    None => dropped += 1,
                    Some(Ok(Some(p))) => got.push(p.to_vec()),
                    Some(Ok(None)) => panic!("the backup ended without the server's error"),
                    Some(Err(e)) => break e,
                }
            };
            assert_eq!(got, payloads);
            assert_eq!(err.code(), Some("58P01"), "{err:?}");
            assert!(backup.next().await.unwrap().is_none());
            assert!(backup.end().is_none());
            assert!(!conn.is_poisoned(), "back in step after ReadyForQuery");
        }
        println!("next: {dropped} dropped mid-stream, {dropped_at_end} holding the error");
        assert!(
            dropped > 0 && dropped_at_end > 0,
            "{dropped} {dropped_at_end}"
        );
    });
}

#[test]
fn cancel_timeline_history() {
    // On timeline 2: timeline 1 has no history file (the server's error, with the connection
    // in step), timeline 2's names the switch; a dropped call poisons.
    let (cluster, switch) = promoted_cluster(MAJOR);
    let conninfo = format!("{} replication=true", cluster.conninfo("postgres"));
    block_on(async {
        let tally = rounds!(100, &conninfo, conn, i,
            call: conn.timeline_history(if i % 3 == 0 { 1 } else { 2 }),
            check: |r| if i % 3 == 0 {
                let e = r.unwrap_err();
                assert_eq!(e.code(), Some("58P01"), "{e:?}");
            } else {
                let file = r.unwrap();
                assert_eq!(file.filename(), "00000002.history");
                let history = file.history().unwrap();
                let switches: Vec<_> = history.switches().map(|s| s.switch_lsn).collect();
                assert_eq!(switches, [switch], "{:?}", file.content());
            },
            after_drop: (),
        );
        tally.check("timeline_history");
    });
}

#[test]
fn cancel_copy_both_end_and_hot_standby_feedback() {
    let (cluster, switch) = promoted_cluster(MAJOR);
    let segment_len = 16 * 1024 * 1024;
    let segment = Lsn::new(switch.get() / segment_len * segment_len);
    let next = NextTimeline {
        timeline: 2,
        start: switch,
    };
    // The oldest running transaction: an xmin the server takes as feedback.
    let xmin: u32 = cluster
        .psql("postgres", "SELECT pg_snapshot_xmin(pg_current_snapshot())")
        .unwrap()
        .parse()
        .unwrap();
    let base = format!("{} replication=true", cluster.conninfo("postgres"));
    block_on(async {
        // Started exactly at the switch, the stream has ended before it began: `end` reads
        // nothing, so no drop can land inside it.
        let stream = connect(&base)
            .await
            .start_physical_replication(None, switch, Some(1))
            .await
            .unwrap();
        let std::task::Poll::Ready(ended) = poll_once(stream.end()) else {
            panic!("end waited on an ended stream");
        };
        assert_eq!(ended.unwrap().next_timeline(), Some(next));

        let mut rng = pgtest::seeded_rng();
        let (mut ends, mut feedbacks) = (Tally::default(), Tally::default());
        for i in 0..45u32 {
            // Each round's walsender is found by its application name.
            let app = format!("walconn_end_{i}");
            let backends =
                format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'");
            let gone = format!("SELECT ({backends}) = 0");
            let conn = connect(&format!("{base} application_name={app}")).await;
            // 0: timeline 1 read to its end, 1: timeline 1 ended by the client at once,
            // 2: timeline 2 (the current one) ended by the client, after feedback.
            let kind = i % 3;
            let (start, timeline) = if kind == 2 { (switch, 2) } else { (segment, 1) };
            let mut stream = conn
                .start_physical_replication(None, start, Some(timeline))
                .await
                .unwrap();
            if kind == 0 {
                while stream.recv().await.unwrap().is_some() {}
            }
            if kind == 2 {
                let sent = feedback(xmin);
                let send = stream.send_hot_standby_feedback(&sent);
                if Mix::LIVE.pick(&mut rng).run(send).await.is_none() {
                    feedbacks.dropped += 1;
                    poisoned_now(stream.recv());
                    poisoned_now(stream.send_hot_standby_feedback(&sent));
                    poisoned_now(stream.end());
                    continue;
                }
                feedbacks.completed += 1;
                wait_until(
                    &cluster,
                    &format!(
                        "SELECT backend_xmin::text = '{xmin}' FROM pg_stat_replication \
                         WHERE application_name = '{app}'"
                    ),
                );
            }
            assert_eq!(cluster.psql("postgres", &backends).unwrap(), "1");
            match Mix::LIVE.pick(&mut rng).run(stream.end()).await {
                Some(r) => {
                    ends.completed += 1;
                    let ended = r.unwrap();
                    // The server names the next timeline after a historic one whichever
                    // side ended the copy first.
                    let want = if kind == 2 { None } else { Some(next) };
                    assert_eq!(ended.next_timeline(), want, "kind {kind}");
                    let mut conn = ended.into_connection();
                    assert_eq!(conn.identify_system().await.unwrap().timeline, 2);
                    conn.close().await.unwrap();
                }
                // The dropped future took the connection with it: its walsender goes.
                None => ends.dropped += 1,
            }
            wait_until(&cluster, &gone);
        }
        ends.check("CopyBoth::end");
        // Against a real walsender a send seldom blocks, so seldom is dropped (the fake
        // server that stops reading forces it): what must hold is that each completed one
        // arrived whole.
        println!(
            "send_hot_standby_feedback: {} completed, {} dropped",
            feedbacks.completed, feedbacks.dropped
        );
        assert!(feedbacks.completed > 0);
    });
}

//! Live tests of the physical WAL stream and the WAL segment writer: what the writer stores is
//! the server's own WAL, byte for byte, across segment switches, a terminated walsender and a
//! timeline switch; the slot follows what was flushed and never passes it.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use pgtest::{Cluster, ServerUser};
use walstream::physical::{
    PhysicalReplicationStream, PhysicalStreamConfig, PhysicalStreamConfigBuilder, WalEvent,
    WalStream, WalWriter,
};
use walstream::{ErrorKind, Lsn, RetryPolicy};

use crate::block_on;

/// A stream of `slot` with quick status updates and retries.
fn config(slot: &str) -> PhysicalStreamConfigBuilder {
    PhysicalStreamConfig::builder()
        .slot(slot)
        .status_interval(Duration::from_millis(200))
        .retry(
            RetryPolicy::default()
                .backoff(Duration::from_millis(50), Duration::from_millis(500))
                .max_attempts(Some(200)),
        )
}

/// What the consumer saw besides WAL.
#[derive(Debug, Default)]
struct Seen {
    reconnects: Vec<(Lsn, u32)>,
    switches: Vec<(u32, u32, Lsn)>,
    end: Option<Lsn>,
}

/// Reads events into `writer`, acknowledging what is durable after each, until `done` says
/// so or the stream ends (`false`); fails after 60 s.
async fn pump(
    wal: &mut WalStream,
    writer: &mut WalWriter,
    seen: &mut Seen,
    mut done: impl FnMut(&WalWriter) -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(writer) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, wal.next_event())
            .await
            .unwrap_or_else(|_| panic!("timed out at {} waiting for WAL", writer.position()))
            .unwrap();
        let Some(event) = event else {
            return false;
        };
        match &event {
            WalEvent::Reconnected {
                resume, timeline, ..
            } => seen.reconnects.push((*resume, *timeline)),
            WalEvent::TimelineSwitch {
                previous,
                timeline,
                at,
                ..
            } => seen.switches.push((*previous, *timeline, *at)),
            WalEvent::EndPosition { at } => seen.end = Some(*at),
            _ => {}
        }
        // The writer does blocking file I/O: off the runtime's worker, as the docs say.
        let durable = tokio::task::block_in_place(|| {
            writer.apply(&event)?;
            writer.flush()
        })
        .unwrap();
        wal.ack(durable);
    }
    true
}

fn lsn(cluster: &Cluster, sql: &str) -> Lsn {
    cluster.psql("postgres", sql).unwrap().parse().unwrap()
}

fn restart_lsn(cluster: &Cluster, slot: &str) -> Lsn {
    lsn(
        cluster,
        &format!("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )
}

/// Rows into `table`, then a segment switch; returns the position after it.
fn write_and_switch(cluster: &Cluster, table: &str, rows: u32) -> Lsn {
    cluster
        .psql(
            "postgres",
            &format!(
                "INSERT INTO {table} SELECT g, repeat('x', 200) FROM generate_series(1, {rows}) g;
                 SELECT pg_switch_wal();"
            ),
        )
        .unwrap();
    lsn(cluster, "SELECT pg_current_wal_lsn()")
}

/// Compares every complete segment in `dir` (except those named in `skip`) with the server's
/// file of the same name, where the server still has it; returns how many were compared.
fn compare_segments(dir: &Path, cluster: &Cluster, skip: &[String]) -> usize {
    let pg_wal = cluster.data_dir().join("pg_wal");
    let mut compared = 0;
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .filter(|n| !skip.contains(n))
        .collect();
    names.sort();
    for name in &names {
        let ours = fs::read(dir.join(name)).unwrap();
        match fs::read(pg_wal.join(name)) {
            Ok(theirs) => {
                assert!(
                    ours == theirs,
                    "segment {name} differs from the server's ({} and {} bytes, first \
                     difference at byte {:?})",
                    ours.len(),
                    theirs.len(),
                    ours.iter().zip(&theirs).position(|(a, b)| a != b)
                );
                compared += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("reading the server's {name}: {e}"),
        }
    }
    println!("  {compared} of {} complete segments compared", names.len());
    compared
}

#[test]
fn segments_match_the_servers_across_switches_and_a_terminated_walsender() {
    pgtest::for_each_major(15, |cluster| {
        block_on(async {
            let slot = cluster.unique_name("phys");
            cluster
                .psql(
                    "postgres",
                    &format!(
                        "SELECT pg_create_physical_replication_slot('{slot}', true);
                         CREATE TABLE {slot} (id int, v text);"
                    ),
                )
                .unwrap();
            let stream = PhysicalReplicationStream::connect(
                &cluster.conninfo("postgres"),
                config(&slot).build().unwrap(),
            )
            .await
            .unwrap();
            let size = stream.segment_size();
            assert_eq!(size.offset_of(stream.start_lsn()), 0, "a segment's start");
            assert_eq!(stream.timeline(), 1);
            let dir = tempfile::tempdir().unwrap();
            let mut writer =
                WalWriter::open(dir.path(), size, stream.timeline(), stream.start_lsn()).unwrap();
            let mut wal = stream.start();
            let mut seen = Seen::default();

            let mut target = Lsn::ZERO;
            for _ in 0..3 {
                target = write_and_switch(cluster, &slot, 2000);
            }
            assert!(pump(&mut wal, &mut writer, &mut seen, |w| w.position() >= target).await);
            // The slot is where the acknowledgements put it, never beyond what is durable.
            let flushed = writer.flushed();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let at = restart_lsn(cluster, &slot);
                assert!(
                    at <= flushed,
                    "restart_lsn {at} beyond the flushed {flushed}"
                );
                if at == flushed {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "restart_lsn stayed at {at}, not {flushed}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }

            // A walsender terminated mid-stream: the stream resumes where it was flushed.
            cluster
                .psql(
                    "postgres",
                    &format!(
                        "INSERT INTO {slot} SELECT g, repeat('y', 200) FROM generate_series(1, 5000) g;
                         SELECT pg_terminate_backend(pid) FROM pg_stat_replication
                         WHERE pid = (SELECT active_pid FROM pg_replication_slots
                                      WHERE slot_name = '{slot}');"
                    ),
                )
                .unwrap();
            for _ in 0..2 {
                target = write_and_switch(cluster, &slot, 2000);
            }
            cluster
                .psql(
                    "postgres",
                    &format!("INSERT INTO {slot} VALUES (-1, 'after the last switch')"),
                )
                .unwrap();
            let target = target.max(lsn(cluster, "SELECT pg_current_wal_flush_lsn()"));
            assert!(pump(&mut wal, &mut writer, &mut seen, |w| w.position() >= target).await);
            assert_eq!(seen.reconnects.len(), 1, "{seen:?}");
            let (resume, timeline) = seen.reconnects[0];
            assert_eq!(timeline, 1);
            assert!(resume <= writer.flushed());
            // Counted per connection made: a session refused while the terminated walsender
            // still held the slot counts too.
            assert!(wal.stats().reconnects >= 1);

            // Shutdown reports the last acknowledgement.
            let flushed = writer.flushed();
            let reported = wal.shutdown().await.unwrap();
            assert_eq!(reported, flushed);
            assert_eq!(restart_lsn(cluster, &slot), flushed);

            assert!(compare_segments(dir.path(), cluster, &[]) >= 1);
            let position = writer.position();
            if size.offset_of(position) != 0 {
                let partial = format!("{}.partial", size.segment_name(1, position));
                assert!(dir.path().join(&partial).exists(), "{partial} missing");
            }
            // Where pg_receivewal would resume: the segment in progress.
            let resume = WalWriter::resume_position(dir.path(), size)
                .unwrap()
                .unwrap();
            assert_eq!(
                (resume.timeline, resume.lsn),
                (1, size.round_down(position))
            );
            writer.close().unwrap();

            // A second run resumes the directory there, writing the partial segment again.
            let mut stream = PhysicalReplicationStream::connect(
                &cluster.conninfo("postgres"),
                config(&slot).build().unwrap(),
            )
            .await
            .unwrap();
            stream.resume_at(resume.timeline, resume.lsn).await.unwrap();
            assert_eq!(stream.start_lsn(), resume.lsn);
            let mut writer = WalWriter::open(dir.path(), size, 1, resume.lsn).unwrap();
            let mut wal = stream.start();
            let target = write_and_switch(cluster, &slot, 2000);
            assert!(pump(&mut wal, &mut writer, &mut seen, |w| w.position() >= target).await);
            wal.shutdown().await.unwrap();
            assert!(compare_segments(dir.path(), cluster, &[]) >= 2);
            cluster
                .psql(
                    "postgres",
                    &format!("SELECT pg_drop_replication_slot('{slot}'); DROP TABLE {slot}"),
                )
                .unwrap();
        });
    });
}

#[test]
fn the_end_position_stops_the_stream_there_and_shutdown_reports_it() {
    pgtest::for_each_major(15, |cluster| {
        block_on(async {
            let slot = cluster.unique_name("physend");
            cluster
                .psql(
                    "postgres",
                    &format!(
                        "SELECT pg_create_physical_replication_slot('{slot}', true);
                         CREATE TABLE {slot} (id int, v text);
                         INSERT INTO {slot} SELECT g, 'a' FROM generate_series(1, 3000) g;"
                    ),
                )
                .unwrap();
            let end = lsn(cluster, "SELECT pg_current_wal_flush_lsn()");
            // More WAL after the end, which the stream must not deliver.
            write_and_switch(cluster, &slot, 1000);
            let stream = PhysicalReplicationStream::connect(
                &cluster.conninfo("postgres"),
                config(&slot)
                    .end_lsn(end)
                    .status_interval(Duration::from_secs(60))
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
            let size = stream.segment_size();
            let dir = tempfile::tempdir().unwrap();
            let mut writer = WalWriter::open(dir.path(), size, 1, stream.start_lsn()).unwrap();
            let mut wal = stream.start();
            let mut seen = Seen::default();
            assert!(!pump(&mut wal, &mut writer, &mut seen, |_| false).await);
            assert_eq!(seen.end, Some(end));
            assert_eq!(writer.position(), end);
            assert!(wal.next_event().await.unwrap().is_none(), "ended");
            let reported = wal.shutdown().await.unwrap();
            assert_eq!(reported, end);
            assert_eq!(restart_lsn(cluster, &slot), end);
            cluster
                .psql(
                    "postgres",
                    &format!("SELECT pg_drop_replication_slot('{slot}'); DROP TABLE {slot}"),
                )
                .unwrap();
        });
    });
}

#[test]
fn a_missing_slot_and_a_logical_one_are_slot_errors() {
    pgtest::for_each_major(15, |cluster| {
        block_on(async {
            let slot = cluster.unique_name("physmissing");
            let e = PhysicalReplicationStream::connect(
                &cluster.conninfo("postgres"),
                config(&slot).build().unwrap(),
            )
            .await
            .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Slot, "{e}");
            // Asked for, it is created, reserving WAL.
            let stream = PhysicalReplicationStream::connect(
                &cluster.conninfo("postgres"),
                config(&slot).create_slot_if_missing(true).build().unwrap(),
            )
            .await
            .unwrap();
            assert!(!stream.start_lsn().is_zero());
            drop(stream);
            cluster
                .psql(
                    "postgres",
                    &format!("SELECT pg_drop_replication_slot('{slot}')"),
                )
                .unwrap();
            let logical = cluster.unique_name("physlogical");
            cluster
                .psql(
                    "postgres",
                    &format!("SELECT pg_create_logical_replication_slot('{logical}', 'pgoutput')"),
                )
                .unwrap();
            let e = PhysicalReplicationStream::connect(
                &cluster.conninfo("postgres"),
                config(&logical).build().unwrap(),
            )
            .await
            .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Slot, "{e}");
            assert!(e.to_string().contains("not a physical one"), "{e}");
            cluster
                .psql(
                    "postgres",
                    &format!("SELECT pg_drop_replication_slot('{logical}')"),
                )
                .unwrap();
        });
    });
}

#[test]
fn a_stream_from_timeline_1_follows_the_promotion_to_timeline_2() {
    pgtest::for_each_installed_major(15, |major| {
        let cluster = pgtest::Config::new(major).start().unwrap();
        cluster
            .psql(
                "postgres",
                "SELECT pg_create_physical_replication_slot('tl', true);
                 CREATE TABLE t (id int, v text);",
            )
            .unwrap();
        write_and_switch(&cluster, "t", 2000);
        // Restarted as a standby of nobody, then promoted: timeline 2.
        cluster.stop().unwrap();
        let signal = cluster.data_dir().join("standby.signal");
        fs::write(&signal, b"").unwrap();
        ServerUser::detect().unwrap().chown(&signal).unwrap();
        cluster.start_again().unwrap();
        cluster.promote().unwrap();
        assert_eq!(cluster.timeline().unwrap(), 2);
        let target = write_and_switch(&cluster, "t", 2000);
        block_on(async {
            let stream = PhysicalReplicationStream::connect(
                &cluster.conninfo("postgres"),
                config("tl").build().unwrap(),
            )
            .await
            .unwrap();
            assert_eq!(stream.timeline(), 1, "the slot's timeline");
            let size = stream.segment_size();
            let dir = tempfile::tempdir().unwrap();
            let mut writer = WalWriter::open(dir.path(), size, 1, stream.start_lsn()).unwrap();
            let mut wal = stream.start();
            let mut seen = Seen::default();
            assert!(
                pump(&mut wal, &mut writer, &mut seen, |w| w.timeline() == 2
                    && w.position() >= target)
                .await
            );
            assert_eq!(seen.switches.len(), 1, "{seen:?}");
            let (previous, timeline, at) = seen.switches[0];
            assert_eq!((previous, timeline), (1, 2));
            let theirs = fs::read(cluster.data_dir().join("pg_wal/00000002.history")).unwrap();
            assert_eq!(
                fs::read(dir.path().join("00000002.history")).unwrap(),
                theirs
            );
            assert!(String::from_utf8_lossy(&theirs).contains(&format!("{at}")));
            wal.shutdown().await.unwrap();
            // The old timeline's last segment stays partial, as the server's does; the new
            // timeline's first segment holds only what was streamed on it (zeros before the
            // switch, as pg_receivewal writes it), so it is not compared.
            let first_of_2 = size.segment_name(2, at);
            assert!(dir
                .path()
                .join(format!("{}.partial", size.segment_name(1, at)))
                .exists());
            assert!(compare_segments(dir.path(), &cluster, &[first_of_2]) >= 1);

            // WAL of timeline 1 past the switch is of an abandoned branch: refused.
            let past = Lsn::new(at.get() + size.bytes());
            let e = PhysicalReplicationStream::connect(
                &cluster.conninfo("postgres"),
                config("tl").timeline(1).start_lsn(past).build().unwrap(),
            )
            .await
            .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ClusterChanged, "{e}");
            assert_eq!(e.lsn(), Some(past));
            // A timeline the server has not reached is refused too.
            let e = PhysicalReplicationStream::connect(
                &cluster.conninfo("postgres"),
                config("tl").timeline(3).build().unwrap(),
            )
            .await
            .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ClusterChanged, "{e}");
        });
    });
}

#[test]
fn hot_standby_feedback_holds_the_slots_xmin_and_lets_it_go() {
    pgtest::for_each_major(15, |cluster| {
        block_on(async {
            let slot = cluster.unique_name("physxmin");
            let xid: u64 = cluster
                .psql(
                    "postgres",
                    &format!(
                        "SELECT pg_create_physical_replication_slot('{slot}', true);
                         SELECT txid_current();"
                    ),
                )
                .unwrap()
                .lines()
                .last()
                .unwrap()
                .parse()
                .unwrap();
            let xmin = || {
                cluster
                    .psql(
                        "postgres",
                        &format!(
                            "SELECT xmin FROM pg_replication_slots WHERE slot_name = '{slot}'"
                        ),
                    )
                    .unwrap()
            };
            let wait_for = |want: String| async move {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let got = xmin();
                    if got == want {
                        return;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "slot xmin {got:?}, expected {want:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            let wal = PhysicalReplicationStream::connect(
                &cluster.conninfo("postgres"),
                config(&slot).hot_standby_feedback(true).build().unwrap(),
            )
            .await
            .unwrap()
            .start();
            assert_eq!(xmin(), "", "no xmin before one is set");
            wal.set_standby_xmin(Some((xid as u32, (xid >> 32) as u32)));
            wait_for((xid as u32).to_string()).await;
            wal.set_standby_xmin(None);
            wait_for(String::new()).await;
            wal.shutdown().await.unwrap();
            cluster
                .psql(
                    "postgres",
                    &format!("SELECT pg_drop_replication_slot('{slot}')"),
                )
                .unwrap();
        });
    });
}

#[test]
fn another_cluster_after_a_reconnect_ends_the_stream() {
    let (a, b) = (pgtest::cluster(16), pgtest::cluster(17));
    let slot = a.unique_name("physfailover");
    for c in [a, b] {
        c.psql(
            "postgres",
            &format!("SELECT pg_create_physical_replication_slot('{slot}', true)"),
        )
        .unwrap();
    }
    let addr = |c: &Cluster| -> std::net::SocketAddr {
        format!("{}:{}", c.host(), c.port()).parse().unwrap()
    };
    block_on(async {
        // A TCP proxy whose target can change and whose connections can be cut.
        let proxy = pgtest::Proxy::start(addr(a)).unwrap();
        let conninfo = format!("host=127.0.0.1 port={} user=postgres", proxy.port());
        let mut wal = PhysicalReplicationStream::connect(&conninfo, config(&slot).build().unwrap())
            .await
            .unwrap()
            .start();
        let first = wal.next_event().await.unwrap().unwrap();
        assert!(matches!(first, WalEvent::Data(_)), "{first:?}");
        proxy.retarget(addr(b));
        proxy.cut();
        let err = loop {
            match wal.next_event().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without an error"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::ClusterChanged, "{err}");
        assert!(err.to_string().contains("system"), "{err}");
    });
    for c in [a, b] {
        c.psql(
            "postgres",
            &format!("SELECT pg_drop_replication_slot('{slot}')"),
        )
        .unwrap();
    }
}

#[test]
fn cancellation_ends_the_stream_and_shutdown_reports_the_acknowledgement() {
    pgtest::for_each_major(15, |cluster| {
        block_on(async {
            let slot = cluster.unique_name("physcancel");
            cluster
                .psql(
                    "postgres",
                    &format!("SELECT pg_create_physical_replication_slot('{slot}', true)"),
                )
                .unwrap();
            let token = walstream::CancellationToken::new();
            let stream = PhysicalReplicationStream::connect(
                &cluster.conninfo("postgres"),
                config(&slot)
                    .status_interval(Duration::from_secs(60))
                    .cancellation_token(token.clone())
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
            let start = stream.start_lsn();
            let mut wal = stream.start();
            let WalEvent::Data(data) = wal.next_event().await.unwrap().unwrap() else {
                panic!("WAL first");
            };
            assert_eq!(data.start, start);
            // Acknowledged, then cancelled: only the last status update can carry it.
            wal.ack(data.end());
            token.cancel();
            assert!(wal.next_event().await.unwrap().is_none());
            assert_eq!(wal.shutdown().await.unwrap(), data.end());
            assert_eq!(restart_lsn(cluster, &slot), data.end());
            cluster
                .psql(
                    "postgres",
                    &format!("SELECT pg_drop_replication_slot('{slot}')"),
                )
                .unwrap();
        });
    });
}

//! `StreamStats` (positions, lag, counters, spilled bytes) on live logical and physical
//! streams, and with the `metrics` feature the same values through the `metrics` facade.

use std::path::Path;
use std::time::Duration;

use walstream::physical::{PhysicalReplicationStream, PhysicalStreamConfig};
use walstream::{LogicalReplicationStream, StreamStats, TransactionConfig, EVENT_KINDS};

use crate::{block_on, read_transactions, Fixture};

/// The `metrics` facade's recorder of this test binary: a debugging recorder that keeps what
/// was published, installed once (a process has one recorder).
#[cfg(feature = "metrics")]
fn recorder() -> &'static metrics_util::debugging::Snapshotter {
    static SNAPSHOTTER: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
        std::sync::OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        snapshotter
    })
}

/// What was published to the facade under `name` with the label `slot` (and `kind`, if
/// given): its kind and value; `None` if nothing was.
#[cfg(feature = "metrics")]
fn published(
    name: &str,
    slot: &str,
    kind: Option<&str>,
) -> Option<(
    metrics_util::MetricKind,
    metrics_util::debugging::DebugValue,
)> {
    recorder()
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, ..)| {
            let labels: Vec<(&str, &str)> =
                key.key().labels().map(|l| (l.key(), l.value())).collect();
            key.key().name() == name
                && labels.contains(&("slot", slot))
                && kind.is_none_or(|k| labels.contains(&("kind", k)))
        })
        .map(|(key, _, _, value)| (key.kind(), value))
}

/// The bytes of the open files of this process that are in `dir` (unlinked spill files
/// included: `/proc/self/fd` still reaches them).
fn open_file_bytes_in(dir: &Path) -> u64 {
    let mut total = 0;
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if target.starts_with(dir) {
            total += std::fs::metadata(fd.path()).map_or(0, |m| m.len());
        }
    }
    total
}

/// Polls `stats` until `done` holds (10 s at most).
async fn wait_for(
    stats: impl Fn() -> StreamStats,
    done: impl Fn(&StreamStats) -> bool,
) -> StreamStats {
    for _ in 0..600 {
        let s = stats();
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stats never reached the condition: {:?}", stats());
}

#[test]
fn stats_count_events_and_transactions_and_show_the_lag_until_acknowledged() {
    // A cluster of its own: on the shared one, other tests' WAL moves the server's `wal_end`
    // all the time, so the lag in bytes would seldom be seen at zero.
    let cluster = pgtest::Config::new(15).start().unwrap();
    let f = Fixture::new(&cluster, "ws_stats");
    block_on(async {
        let stream =
            LogicalReplicationStream::connect(&f.db.conninfo(), f.config().build().unwrap())
                .await
                .unwrap();
        let mut events = stream.start();
        let before = events.stats();
        assert_eq!(before.transactions, 0);
        assert_eq!(before.events.total(), 0);
        assert_eq!(before.lag_seconds, 0.0);
        f.db.psql(
            "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c');
             UPDATE t SET v = 'x' WHERE id = 1;
             UPDATE t SET v = 'y' WHERE id = 2;",
        )
        .unwrap();
        // The commit times are in the past by the time they are delivered.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = read_transactions(&mut events, 3).await;
        let s = events.stats();
        assert_eq!(s.transactions, 3);
        assert_eq!(s.events.get("begin"), 3);
        assert_eq!(s.events.get("commit"), 3);
        assert_eq!(s.events.get("insert"), 3);
        assert_eq!(s.events.get("update"), 2);
        assert_eq!(s.events.get("relation"), 1);
        assert_eq!(s.events.get("no such kind"), 0);
        assert_eq!(s.events.total(), got.len() as u64);
        assert_eq!(s.events.iter().count(), EVENT_KINDS.len());
        assert!(s.received_bytes > 0);
        let last_end = got.iter().filter_map(|e| e.ack_lsn()).last().unwrap();
        assert!(s.server_wal_end >= last_end, "{s:?}");
        assert!(s.lag_bytes > 0, "nothing acknowledged yet: {s:?}");
        assert!(s.lag_seconds >= 0.3, "delivered, not acknowledged: {s:?}");
        // Acknowledged and idle: the lag goes to zero (in time at once, in bytes once the
        // server's keepalive position is acknowledged or reported), and a status update says so.
        events.ack(last_end);
        let caught_up = wait_for(
            || events.stats(),
            |s| s.lag_bytes == 0 && s.reported_flush >= last_end,
        )
        .await;
        assert_eq!(caught_up.lag_seconds, 0.0);
        assert_eq!(caught_up.acknowledged, last_end);
        assert!(caught_up.status_updates > 0);
        // The handle reads the same stats from elsewhere, also after the stream has ended.
        let handle = events.stats_handle();
        events.shutdown().await.unwrap();
        assert_eq!(handle.stats().transactions, 3);
    });
}

#[cfg(feature = "metrics")]
#[test]
fn the_metrics_feature_publishes_the_stats_with_the_cli_names() {
    use metrics_util::debugging::DebugValue;
    use metrics_util::MetricKind;

    // Installed before the stream publishes anything.
    recorder();
    let cluster = pgtest::cluster(15);
    let f = Fixture::new(cluster, "ws_metrics");
    let slot = f.slot.as_str();
    let find = |name: &str, kind: Option<&str>| {
        published(name, slot, kind).unwrap_or_else(|| {
            panic!(
                "{name} {kind:?} not published: {:?}",
                recorder().snapshot().into_vec()
            )
        })
    };
    block_on(async {
        let stream =
            LogicalReplicationStream::connect(&f.db.conninfo(), f.config().build().unwrap())
                .await
                .unwrap();
        let mut events = stream.start();
        f.db.psql("INSERT INTO t VALUES (1, 'a'), (2, 'b');")
            .unwrap();
        read_transactions(&mut events, 1).await;
        tokio::time::sleep(walstream::PUBLISH_INTERVAL * 2).await;
        assert_eq!(
            find("walstream_events_total", Some("insert")),
            (MetricKind::Counter, DebugValue::Counter(2))
        );
        assert_eq!(
            find("walstream_transactions_total", None),
            (MetricKind::Counter, DebugValue::Counter(1))
        );
        // Nothing spilled: an EventStream alone never spills.
        assert_eq!(
            find("walstream_spilled_bytes_total", None),
            (MetricKind::Counter, DebugValue::Counter(0))
        );
        for gauge in [
            "walstream_received_lsn",
            "walstream_flushed_lsn",
            "walstream_server_wal_end_lsn",
            "walstream_lag_bytes",
            "walstream_lag_seconds",
        ] {
            assert_eq!(find(gauge, None).0, MetricKind::Gauge, "{gauge}");
        }
        let (_, received) = find("walstream_received_lsn", None);
        let DebugValue::Gauge(received) = received else {
            panic!("{received:?}")
        };
        assert!(received.0 > 0.0);
        for counter in [
            "walstream_received_bytes_total",
            "walstream_reconnects_total",
            "walstream_status_updates_total",
        ] {
            assert_eq!(find(counter, None).0, MetricKind::Counter, "{counter}");
        }
        events.shutdown().await.unwrap();
    });
}

#[test]
fn idle_with_everything_acknowledged_the_lag_in_bytes_is_zero_before_the_next_status_update() {
    // A cluster of its own, so that the keepalives that move `wal_end` are this test's.
    let cluster = pgtest::Config::new(15).start().unwrap();
    let f = Fixture::new(&cluster, "ws_idle_lag");
    block_on(async {
        // Status updates far apart (a third of wal_sender_timeout at most: 20 s): the lag must
        // not wait for one.
        let config = f.config().status_interval(Duration::from_secs(60));
        let mut events = f.start(config).await;
        f.db.psql("INSERT INTO t VALUES (1, 'a')").unwrap();
        let got = read_transactions(&mut events, 1).await;
        let last_end = got.iter().filter_map(|e| e.ack_lsn()).last().unwrap();
        // WAL the publication does not carry: the server sends no transaction for it, only a
        // keepalive whose wal_end is past the last transaction's end.
        f.db.psql("INSERT INTO u SELECT generate_series(1, 100)")
            .unwrap();
        let before = wait_for(|| events.stats(), |s| s.server_wal_end > last_end).await;
        assert!(before.lag_bytes > 0, "nothing acknowledged yet: {before:?}");
        events.ack(last_end);
        let after = events.stats();
        assert_eq!(after.lag_bytes, 0, "{after:?}");
        assert_eq!(after.safe_flush, after.server_wal_end, "{after:?}");
        assert!(after.safe_flush > last_end, "{after:?}");
        // No status update has said so yet: the lag came from the tracker's rule alone.
        assert!(after.reported_flush < after.server_wal_end, "{after:?}");
        assert_eq!(after.acknowledged, last_end);
        // The next status update reports exactly that position.
        let reported = events.shutdown().await.unwrap();
        assert!(reported >= after.safe_flush, "{reported} {after:?}");
    });
}

#[test]
fn spilled_transactions_count_the_bytes_of_their_spill_files() {
    #[cfg(feature = "metrics")]
    recorder();
    let cluster = pgtest::cluster(15);
    let f = Fixture::new(cluster, "ws_spill_stats");
    let spill_dir = tempfile::tempdir().unwrap();
    block_on(async {
        let config = TransactionConfig::default()
            .memory_budget(64 << 10)
            .spill_dir(spill_dir.path());
        let mut txs = f.start(f.config()).await.into_transactions(config);
        assert_eq!(txs.stats().spilled_bytes, 0);
        f.db.psql("INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(1, 4000) g")
            .unwrap();
        let tx = tokio::time::timeout(Duration::from_secs(30), txs.next_transaction())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(tx.is_spilled());
        assert_eq!(tx.len(), 4000);
        // Measured apart: the spill file, unlinked but open while the transaction is held.
        let on_disk = open_file_bytes_in(spill_dir.path());
        assert!(on_disk > 1_000_000, "{on_disk} bytes of spill files");
        let stats = txs.stats();
        assert_eq!(stats.spilled_bytes, on_disk);
        assert_eq!(txs.assembler().spilled_bytes(), on_disk);
        #[cfg(feature = "metrics")]
        {
            tokio::time::sleep(walstream::PUBLISH_INTERVAL * 2).await;
            assert_eq!(
                published("walstream_spilled_bytes_total", &f.slot, None),
                Some((
                    metrics_util::MetricKind::Counter,
                    metrics_util::debugging::DebugValue::Counter(on_disk)
                ))
            );
        }
        drop(tx);
        // A counter: the file is gone, the bytes spilled stay counted.
        assert_eq!(open_file_bytes_in(spill_dir.path()), 0);
        assert_eq!(txs.stats().spilled_bytes, on_disk);
        txs.shutdown().await.unwrap();
    });
}

#[test]
fn a_physical_stream_counts_and_publishes_its_positions_and_bytes() {
    #[cfg(feature = "metrics")]
    recorder();
    let cluster = pgtest::cluster(15);
    let slot = cluster.unique_name("phys_stats");
    cluster
        .psql(
            "postgres",
            &format!(
                "SELECT pg_create_physical_replication_slot('{slot}', true);
                 CREATE TABLE {slot} (id int, v text);"
            ),
        )
        .unwrap();
    block_on(async {
        let config = PhysicalStreamConfig::builder()
            .slot(&slot)
            .status_interval(Duration::from_millis(200))
            .build()
            .unwrap();
        let stream = PhysicalReplicationStream::connect(&cluster.conninfo("postgres"), config)
            .await
            .unwrap();
        let mut wal = stream.start();
        let handle = wal.stats_handle();
        cluster
            .psql(
                "postgres",
                &format!("INSERT INTO {slot} SELECT g, 'x' FROM generate_series(1, 1000) g"),
            )
            .unwrap();
        let written: walstream::Lsn = cluster
            .psql("postgres", "SELECT pg_current_wal_flush_lsn()")
            .unwrap()
            .parse()
            .unwrap();
        // WAL up to the insert, acknowledged as it comes (nothing is kept: these are stats).
        let mut data_bytes = 0u64;
        let mut end = walstream::Lsn::ZERO;
        while end < written {
            let event = tokio::time::timeout(Duration::from_secs(30), wal.next_event())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let walstream::physical::WalEvent::Data(d) = &event {
                data_bytes += d.bytes.len() as u64;
                end = d.end();
                wal.ack(end);
            }
        }
        let s = wait_for(|| wal.stats(), |s| s.reported_flush >= end).await;
        // Frames carry a header besides the WAL bytes.
        assert!(s.received_bytes > data_bytes, "{data_bytes}: {s:?}");
        assert!(s.received >= end && s.server_wal_end >= end, "{s:?}");
        assert_eq!(s.acknowledged, end);
        assert!(s.status_updates > 0);
        assert_eq!(s.lag_bytes, s.server_wal_end.get() - s.safe_flush.get());
        assert_eq!(
            (s.transactions, s.events.total(), s.spilled_bytes),
            (0, 0, 0)
        );
        assert_eq!(handle.stats().received_bytes, wal.stats().received_bytes);
        #[cfg(feature = "metrics")]
        {
            use metrics_util::debugging::DebugValue;
            use metrics_util::MetricKind;
            tokio::time::sleep(walstream::PUBLISH_INTERVAL * 2).await;
            let find = |name: &str| {
                published(name, &slot, None).unwrap_or_else(|| panic!("{name} not published"))
            };
            for gauge in [
                "walstream_received_lsn",
                "walstream_flushed_lsn",
                "walstream_server_wal_end_lsn",
                "walstream_lag_bytes",
            ] {
                assert_eq!(find(gauge).0, MetricKind::Gauge, "{gauge}");
            }
            let DebugValue::Gauge(flushed) = find("walstream_flushed_lsn").1 else {
                panic!("a gauge")
            };
            assert!(flushed.0 >= end.get() as f64);
            for counter in [
                "walstream_received_bytes_total",
                "walstream_reconnects_total",
                "walstream_status_updates_total",
            ] {
                assert_eq!(find(counter).0, MetricKind::Counter, "{counter}");
            }
            let DebugValue::Counter(bytes) = find("walstream_received_bytes_total").1 else {
                panic!("a counter")
            };
            assert!(bytes >= s.received_bytes);
            // A physical stream has no events, transactions or commit times to publish.
            for logical in [
                "walstream_events_total",
                "walstream_transactions_total",
                "walstream_lag_seconds",
            ] {
                assert!(published(logical, &slot, None).is_none(), "{logical}");
            }
        }
        wal.shutdown().await.unwrap();
    });
    cluster
        .psql(
            "postgres",
            &format!("SELECT pg_drop_replication_slot('{slot}'); DROP TABLE {slot}"),
        )
        .unwrap();
}

#[test]
fn stream_counters_count_every_capture_as_its_decoded_events() {
    use bytes::Bytes;
    use walstream::walproto::capture::{Capture, Header};
    use walstream::walproto::replication::ServerMessage;
    use walstream::{EventDecoder, EventKind, StreamCounters};

    let captures = pgtest::testdata::listed_captures();
    assert!(!captures.is_empty());
    for name in captures {
        let file = std::fs::read(pgtest::testdata::dir().join(format!("{name}.walcap"))).unwrap();
        let capture = Capture::parse(&file).unwrap();
        let options = Header::from_json(capture.header()).unwrap().options();
        let mut counters = StreamCounters::new(&options);
        let mut decoder = EventDecoder::new(&options);
        let (mut events, mut ends, mut inserts, mut commits) = (0, 0, 0, 0);
        let (mut bytes, mut wal_end) = (0u64, walstream::Lsn::ZERO);
        for frame in capture.frames() {
            let payload = Bytes::copy_from_slice(frame.unwrap().payload);
            counters.received(&payload);
            bytes += payload.len() as u64;
            match ServerMessage::parse(&payload).unwrap() {
                ServerMessage::XLogData(x) => wal_end = wal_end.max(x.wal_end),
                ServerMessage::PrimaryKeepalive(k) => wal_end = wal_end.max(k.wal_end),
                _ => {}
            }
            let Some(event) = decoder.decode(&payload).unwrap() else {
                continue;
            };
            events += 1;
            ends += u64::from(event.ack_lsn().is_some());
            inserts += u64::from(matches!(event.kind, EventKind::Insert(_)));
            commits += u64::from(matches!(event.kind, EventKind::Commit(_)));
        }
        let s = counters.stats();
        assert_eq!(s.events.total(), events, "{name}");
        assert_eq!(s.transactions, ends, "{name}");
        assert_eq!(s.events.get("insert"), inserts, "{name}");
        assert_eq!(s.events.get("commit"), commits, "{name}");
        assert_eq!(s.received_bytes, bytes, "{name}");
        assert_eq!((s.received, s.server_wal_end), (wal_end, wal_end), "{name}");
        // Nothing acknowledged yet: the lag is everything received.
        assert_eq!(s.lag_bytes, wal_end.get(), "{name}");
        assert_eq!(counters.handle().stats().transactions, ends, "{name}");
    }
}

//! `StreamStats` (positions, lag, counters) on a live stream, and with the `metrics` feature
//! the same values through the `metrics` facade.

use std::time::Duration;

use walstream::{LogicalReplicationStream, StreamStats, EVENT_KINDS};

use crate::{block_on, read_transactions, Fixture};

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
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::MetricKind;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let cluster = pgtest::cluster(15);
    let f = Fixture::new(cluster, "ws_metrics");
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
        let published = snapshotter.snapshot().into_vec();
        let find = |name: &str, kind: Option<&str>| {
            published
                .iter()
                .find(|(key, ..)| {
                    let labels: Vec<(&str, &str)> =
                        key.key().labels().map(|l| (l.key(), l.value())).collect();
                    key.key().name() == name
                        && labels.contains(&("slot", f.slot.as_str()))
                        && kind.is_none_or(|k| labels.contains(&("kind", k)))
                })
                .unwrap_or_else(|| panic!("{name} {kind:?} not published: {published:?}"))
        };
        let (key, _, _, value) = find("walstream_events_total", Some("insert"));
        assert_eq!(key.kind(), MetricKind::Counter);
        assert_eq!(*value, DebugValue::Counter(2));
        let (_, _, _, value) = find("walstream_transactions_total", None);
        assert_eq!(*value, DebugValue::Counter(1));
        for gauge in [
            "walstream_received_lsn",
            "walstream_flushed_lsn",
            "walstream_server_wal_end_lsn",
            "walstream_lag_bytes",
            "walstream_lag_seconds",
        ] {
            assert_eq!(find(gauge, None).0.kind(), MetricKind::Gauge, "{gauge}");
        }
        let (_, _, _, received) = find("walstream_received_lsn", None);
        let DebugValue::Gauge(received) = received else {
            panic!("{received:?}")
        };
        assert!(received.0 > 0.0);
        for counter in [
            "walstream_received_bytes_total",
            "walstream_reconnects_total",
            "walstream_status_updates_total",
        ] {
            assert_eq!(
                find(counter, None).0.kind(),
                MetricKind::Counter,
                "{counter}"
            );
        }
        events.shutdown().await.unwrap();
    });
}

//! Physical replication: `TIMELINE_HISTORY`, a historic timeline streamed to its end and the
//! next timeline's row, hot standby feedback; the malformed next-timeline rows only a fake
//! server sends.

use std::os::unix::fs::MetadataExt as _;
use std::time::{Duration, Instant};

use pgtest::fake::{copy_data, message, FakeWalsender};
use walconn::{Connection, CreateSlotOptions, ErrorKind, NextTimeline};
use walproto::replication::{HotStandbyFeedback, ServerMessage};
use walproto::Lsn;

use crate::base_backup::result_set;
use crate::{block_on, config};

/// How long a test waits for the server to reach a state it polls for.
const WAIT: Duration = Duration::from_secs(60);

/// Polls `sql` (one boolean) until it is true, failing after [`WAIT`].
pub(crate) fn wait_until(cluster: &pgtest::Cluster, sql: &str) {
    let deadline = Instant::now() + WAIT;
    while cluster.psql("postgres", sql).unwrap() != "t" {
        assert!(
            Instant::now() < deadline,
            "still not true after {WAIT:?}: {sql}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cluster of `major` on timeline 2, with no second server: started, stopped, started again
/// as a standby with no primary (`standby.signal`), promoted. Returns it and the switch point
/// (where timeline 1 ended: the end of the WAL the standby replayed).
pub(crate) fn promoted_cluster(major: u32) -> (pgtest::Cluster, Lsn) {
    let cluster = pgtest::Config::new(major)
        .setting("wal_level", "replica")
        .start()
        .unwrap();
    cluster.stop().unwrap();
    let data = cluster.data_dir();
    let signal = data.join("standby.signal");
    std::fs::write(&signal, b"").unwrap();
    let owner = std::fs::metadata(&data).unwrap();
    std::os::unix::fs::chown(&signal, Some(owner.uid()), Some(owner.gid())).unwrap();
    cluster.start_again().unwrap();
    assert_eq!(
        cluster
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    let switch: Lsn = cluster
        .psql("postgres", "SELECT pg_last_wal_replay_lsn()")
        .unwrap()
        .parse()
        .unwrap();
    cluster.psql("postgres", "SELECT pg_promote()").unwrap();
    wait_until(&cluster, "SELECT NOT pg_is_in_recovery()");
    (cluster, switch)
}

#[test]
fn timeline_history_and_the_end_of_a_historic_timeline() {
    pgtest::for_each_installed_major(15, |major| {
        let (cluster, switch) = promoted_cluster(major);
        // The start of the segment that holds the switch: streamed on timeline 1.
        let offset: u64 = cluster
            .psql(
                "postgres",
                &format!("SELECT file_offset FROM pg_walfile_name_offset('{switch}')"),
            )
            .unwrap()
            .parse()
            .unwrap();
        let segment = switch.checked_sub(offset).unwrap();
        let conninfo = format!("{} replication=true", cluster.conninfo("postgres"));
        block_on(async {
            let mut conn = Connection::connect(&config(&conninfo)).await.unwrap();
            assert_eq!(conn.identify_system().await.unwrap().timeline, 2);

            let file = conn.timeline_history(2).await.unwrap();
            assert_eq!(file.filename(), "00000002.history");
            let history = file.history().unwrap();
            let switches: Vec<_> = history.switches().collect();
            assert_eq!(switches.len(), 1, "{:?}", file.content());
            assert_eq!(switches[0].timeline, 1);
            assert_eq!(switches[0].switch_lsn, switch, "{:?}", file.content());

            // Timeline 1 from the segment's start: the server streams up to the switch,
            // contiguously, and ends its side.
            let mut stream = conn
                .start_physical_replication(None, segment, Some(1))
                .await
                .unwrap();
            let mut end = segment;
            while let Some(frame) = stream.recv().await.unwrap() {
                if let ServerMessage::XLogData(x) = ServerMessage::parse(&frame).unwrap() {
                    assert_eq!(x.wal_start, end, "WAL sent with a gap");
                    end = end.checked_add(x.data.len() as u64).unwrap();
                }
            }
            assert_eq!(end, switch, "timeline 1 streamed to its end, no further");
            let ended = stream.end().await.unwrap();
            let next = NextTimeline {
                timeline: 2,
                start: switch,
            };
            assert_eq!(ended.next_timeline(), Some(next));

            // The next START_REPLICATION on the same connection: timeline 2 at the switch.
            let conn = ended.into_connection();
            let mut stream = conn
                .start_physical_replication(None, switch, Some(2))
                .await
                .unwrap();
            let first = loop {
                let frame = stream.recv().await.unwrap().expect("timeline 2 goes on");
                if let ServerMessage::XLogData(x) = ServerMessage::parse(&frame).unwrap() {
                    break x.wal_start;
                }
            };
            assert_eq!(first, switch);
            let (conn, next_timeline) = stream.end().await.unwrap().into_parts();
            assert_eq!(next_timeline, None, "the current timeline has no next one");

            // Exactly at the end of timeline 1 the server enters no copy: the stream has
            // ended before it began, with the next timeline.
            let mut stream = conn
                .start_physical_replication(None, switch, Some(1))
                .await
                .unwrap();
            assert!(stream.recv().await.unwrap().is_none());
            let (mut conn, next_timeline) = stream.end().await.unwrap().into_parts();
            assert_eq!(next_timeline, Some(next));
            assert_eq!(conn.identify_system().await.unwrap().timeline, 2);
            conn.close().await.unwrap();
        });
    });
}

#[test]
fn hot_standby_feedback_sets_the_physical_slots_xmin() {
    pgtest::for_each_major(15, |cluster| {
        let slot = cluster.unique_name("walconn_feedback");
        let conninfo = format!("{} replication=true", cluster.conninfo("postgres"));
        let slot_xmin = format!(
            "SELECT coalesce(xmin::text, 'none') FROM pg_replication_slots \
             WHERE slot_name = '{slot}'"
        );
        block_on(async {
            let mut conn = Connection::connect(&config(&conninfo)).await.unwrap();
            let mut options = CreateSlotOptions::physical();
            options.temporary = true;
            conn.create_replication_slot(&slot, &options).await.unwrap();
            let start = conn.identify_system().await.unwrap().xlogpos;
            let mut stream = conn
                .start_physical_replication(Some(&slot), start, None)
                .await
                .unwrap();
            assert_eq!(cluster.psql("postgres", &slot_xmin).unwrap(), "none");

            // The oldest running transaction, as a full transaction id: the server takes
            // an xmin only in the recent past of its epoch.
            let full: u64 = cluster
                .psql(
                    "postgres",
                    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text",
                )
                .unwrap()
                .parse()
                .unwrap();
            let feedback = HotStandbyFeedback {
                client_time: std::time::SystemTime::now().into(),
                xmin: full as u32,
                xmin_epoch: (full >> 32) as u32,
                catalog_xmin: 0,
                catalog_xmin_epoch: 0,
            };
            stream.send_hot_standby_feedback(&feedback).await.unwrap();
            wait_until(
                cluster,
                &format!(
                    "SELECT coalesce(xmin::text, 'none') = '{}' FROM pg_replication_slots \
                     WHERE slot_name = '{slot}'",
                    full as u32
                ),
            );

            // An xmin of 0 is none: the slot lets go.
            let none = HotStandbyFeedback {
                xmin: 0,
                xmin_epoch: 0,
                ..feedback
            };
            stream.send_hot_standby_feedback(&none).await.unwrap();
            wait_until(
                cluster,
                &format!(
                    "SELECT xmin IS NULL FROM pg_replication_slots WHERE slot_name = '{slot}'"
                ),
            );
            let conn = stream.finish().await.unwrap();
            conn.close().await.unwrap();
        });
    });
}

/// A fake walsender that streams nothing, ends its side, and answers with `row` (a result
/// set) as the next timeline's.
async fn ending_with(row: Vec<u8>) -> FakeWalsender {
    FakeWalsender::start(move |peer| {
        let mut out = copy_data(b"wWAL the client does not parse");
        out.extend(message(b'c', b""));
        out.extend_from_slice(&row);
        out.extend(message(b'C', b"START_STREAMING\0"));
        out.extend(message(b'Z', b"I"));
        async move {
            peer.send(&out).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
    .await
}

#[test]
fn a_malformed_next_timeline_row_is_a_protocol_error() {
    let columns = ["next_tli", "next_tli_startpos"];
    let malformed: &[(&[&str], &[Option<&str>])] = &[
        (&columns, &[Some("two"), Some("0/3000000")]),
        (&columns, &[Some("4294967296"), Some("0/3000000")]),
        (&columns, &[Some("0"), Some("0/3000000")]),
        (&columns, &[Some("2"), Some("0/30G0000")]),
        (&columns, &[Some("2"), None]),
        (&["next_tli"], &[Some("2")]),
    ];
    block_on(async {
        // The control: a well-formed row is read.
        let good = result_set(&columns, &[Some("2"), Some("0/3000000")]);
        let server = ending_with(good).await;
        let conn = Connection::connect(&config(&server.conninfo()))
            .await
            .unwrap();
        let mut stream = conn
            .start_physical_replication(None, Lsn::new(0x100_0000), Some(1))
            .await
            .unwrap();
        assert!(stream.recv().await.unwrap().is_some());
        assert!(stream.recv().await.unwrap().is_none());
        let ended = stream.end().await.unwrap();
        assert_eq!(
            ended.next_timeline(),
            Some(NextTimeline {
                timeline: 2,
                start: Lsn::new(0x300_0000)
            })
        );

        for (columns, values) in malformed {
            let server = ending_with(result_set(columns, values)).await;
            let conn = Connection::connect(&config(&server.conninfo()))
                .await
                .unwrap();
            let mut stream = conn
                .start_physical_replication(None, Lsn::new(0x100_0000), Some(1))
                .await
                .unwrap();
            while stream.recv().await.unwrap().is_some() {}
            let err = stream.end().await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Protocol, "{values:?}: {err:?}");
            assert!(
                err.to_string().contains("next-timeline row"),
                "{values:?}: {err}"
            );
        }
    });
}

//! Cancel safety of every `&mut self` async method of walconn against a real server: each
//! call's future is dropped at a random point (a timeout of a few microseconds to a few
//! milliseconds, or a few polls), many times over, and the object is used on. Either the call
//! completed, with the right answer, and the connection answers the next call in step; or
//! the connection is poisoned, and the next call fails at once (on its first poll, so without
//! waiting on the socket) with `ErrorKind::Poisoned`. Never a wrong or stale answer, never a
//! hang.
//!
//! `CopyOut::next` is cancel-safe and is checked for that: dropped anywhere, the rows come out
//! once each, in order, and a server error mid-copy still arrives. A dropped `CopyBoth::send`,
//! `send_status_update` or `send_hot_standby_feedback` is forced against a fake server that
//! stops reading, so that the send blocks on a full socket buffer. The physical side
//! (`base_backup` and `BaseBackup::next`, `upload_manifest`, `timeline_history`,
//! `CopyBoth::end`, hot standby feedback on a live stream) is in [`physical`].

use std::fmt::Debug;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use pgtest::cancel::{poll_once, Mix, Tally};
use pgtest::fake::{copy_data, FakeWalsender};
use walconn::{Connection, CopyBoth, CreateSlotOptions, ErrorKind, LogicalReplicationOptions};
use walproto::replication::{HotStandbyFeedback, StandbyStatusUpdate};
use walproto::Lsn;

use crate::fake_server::copy_both;
use crate::{block_on, config};

/// The server major these tests run on: 17 has every command (`ALTER_REPLICATION_SLOT`).
const MAJOR: u32 = 17;

/// `fut` is ready on its first poll with the poisoned error: decided without the socket.
fn poisoned_now<T: Debug>(fut: impl Future<Output = walconn::Result<T>>) {
    match poll_once(fut) {
        Poll::Ready(Err(e)) => {
            assert_eq!(e.kind(), ErrorKind::Poisoned, "{e:?}");
            assert!(e.is_poisoned());
            assert!(e.to_string().contains("must be discarded"), "{e}");
        }
        other => panic!("expected the poisoned error at once, got {other:?}"),
    }
}

/// After a dropped call: the connection is poisoned, every command fails at once.
fn assert_poisoned(conn: &mut Connection) {
    assert!(conn.is_poisoned());
    poisoned_now(conn.simple_query("SELECT 1"));
    poisoned_now(conn.identify_system());
    poisoned_now(conn.show("wal_level"));
    poisoned_now(conn.drop_replication_slot("walconn_never", false));
    poisoned_now(conn.copy_out("COPY (SELECT 1) TO STDOUT"));
}

/// The consuming methods refuse a poisoned connection too, at once: `close`,
/// `start_logical_replication` and `start_physical_replication`, one per round in turn.
fn consumed_poisoned(conn: Connection, i: u32) {
    match i % 3 {
        0 => poisoned_now(conn.close()),
        1 => poisoned_now(conn.start_logical_replication(
            "walconn_never",
            Lsn::ZERO,
            &LogicalReplicationOptions::new(
                walconn::walproto::pgoutput::ProtocolVersion::V1,
                &["p"],
            ),
        )),
        _ => poisoned_now(conn.start_physical_replication(None, Lsn::ZERO, Some(1))),
    }
}

/// After a completed call: the connection answers the next query, with its own answer (a
/// physical replication connection runs no SQL: `SHOW` alone there). `wal_level` is the
/// server's, as a first connection read it.
async fn assert_in_step(conn: &mut Connection, i: u32, wal_level: &str) {
    assert!(!conn.is_poisoned());
    let limit = Duration::from_secs(20);
    let level = tokio::time::timeout(limit, conn.show("wal_level"))
        .await
        .expect("SHOW hangs");
    assert_eq!(level.unwrap(), wal_level);
    match tokio::time::timeout(limit, conn.simple_query(&format!("SELECT {i} AS n")))
        .await
        .expect("the next query hangs")
    {
        Ok(r) => assert_eq!(r[0].get(0, "n"), Some(i.to_string().as_str())),
        Err(e) => assert_eq!(e.code(), Some("0A000"), "{e:?}"),
    }
}

/// Waits (up to 20 s) until `conn`'s backend is the only one of its database: the backends
/// of dropped connections have seen their sockets close and gone.
async fn wait_alone(conn: &mut Connection, db: &pgtest::Database<'_>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let sql = format!(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{}' \
         AND pid <> pg_backend_pid()",
        db.name()
    );
    loop {
        let r = conn.simple_query(&sql).await.unwrap();
        if r[0].get(0, "n") == Some("0") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backends left behind: {:?}",
            r[0].rows
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(conninfo: &str) -> Connection {
    Connection::connect(&config(conninfo)).await.unwrap()
}

/// `rounds` rounds of `$call` on `$conn`, each dropped at a random point or not; `$check`
/// judges a completed call's result `$r`, `$after_drop` runs (on a fresh connection) after a
/// dropped one.
macro_rules! rounds {
    ($rounds:expr, $conninfo:expr, $conn:ident, $i:ident,
     call: $call:expr, check: |$r:ident| $check:expr, after_drop: $after_drop:expr $(,)?) => {{
        let mut rng = pgtest::seeded_rng();
        let mut tally = Tally::default();
        let mut $conn = connect($conninfo).await;
        let wal_level = $conn.show("wal_level").await.unwrap();
        for $i in 0..$rounds {
            match Mix::LIVE.pick(&mut rng).run($call).await {
                Some($r) => {
                    tally.completed += 1;
                    $check;
                    assert_in_step(&mut $conn, $i, &wal_level).await;
                }
                None => {
                    tally.dropped += 1;
                    assert_poisoned(&mut $conn);
                    let old = std::mem::replace(&mut $conn, connect($conninfo).await);
                    consumed_poisoned(old, $i);
                    let () = $after_drop;
                }
            }
        }
        $conn.close().await.unwrap();
        tally
    }};
}

mod physical;

#[test]
fn cancel_simple_query_identify_system_and_show() {
    let cluster = pgtest::cluster(MAJOR);
    let db = cluster.create_database("walconn_cancel_q").unwrap();
    let conninfo = db.conninfo();
    block_on(async {
        // A large answer, so that drops land between the frames of one result too.
        let tally = rounds!(150, &conninfo, conn, i,
            call: conn.simple_query(&format!("SELECT {i} AS n, repeat('x', {}) AS pad", 1000 * i)),
            check: |r| {
                let r = r.unwrap();
                assert_eq!(r[0].get(0, "n"), Some(i.to_string().as_str()));
                assert_eq!(r[0].get(0, "pad").unwrap().len(), 1000 * i as usize);
            },
            after_drop: (),
        );
        tally.check("simple_query");

        let system = connect(&conninfo).await.identify_system().await.unwrap();
        let tally = rounds!(100, &conninfo, conn, i,
            call: conn.identify_system(),
            check: |r| {
                let r = r.unwrap();
                assert_eq!(r.system_id, system.system_id);
                assert_eq!(r.dbname.as_deref(), Some(db.name()));
            },
            after_drop: (),
        );
        tally.check("identify_system");

        let tally = rounds!(100, &conninfo, conn, i,
            call: conn.show(if i % 2 == 0 { "wal_level" } else { "max_replication_slots" }),
            check: |r| {
                let got = r.unwrap();
                if i % 2 == 0 {
                    assert_eq!(got, "logical");
                } else {
                    assert!(got.parse::<u32>().is_ok(), "{got}");
                }
            },
            after_drop: (),
        );
        tally.check("show");
    });
}

/// The slots named `prefix*` that the server still has.
fn slots_like(db: &pgtest::Database<'_>, prefix: &str) -> Vec<String> {
    let out = db
        .psql(&format!(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE '{prefix}%' \
             ORDER BY 1"
        ))
        .unwrap();
    out.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Waits (up to 20 s) until the server has no slot named `prefix*`.
async fn wait_no_slots(db: &pgtest::Database<'_>, prefix: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = slots_like(db, prefix);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slots left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn cancel_slot_commands() {
    let cluster = pgtest::cluster(MAJOR);
    let db = cluster.create_database("walconn_cancel_slots").unwrap();
    let conninfo = db.conninfo();
    let prefix = cluster.unique_name("wc_cancel");
    block_on(async {
        // Temporary slots: a dropped creation leaves at most a slot that goes with its
        // connection. Physical ones are cheap; a few logical ones go through decoding setup.
        let mut temporary = CreateSlotOptions::physical();
        temporary.temporary = true;
        let tally = rounds!(100, &conninfo, conn, i,
            call: conn.create_replication_slot(&format!("{prefix}_t{i}"), &temporary),
            check: |r| assert_eq!(r.unwrap().slot_name, format!("{prefix}_t{i}")),
            after_drop: (),
        );
        tally.check("create_replication_slot (physical)");
        let mut logical = CreateSlotOptions::logical("pgoutput");
        logical.temporary = true;
        logical.snapshot = Some(walconn::SnapshotAction::Nothing);
        let tally = rounds!(25, &conninfo, conn, i,
            call: conn.create_replication_slot(&format!("{prefix}_l{i}"), &logical),
            check: |r| {
                let r = r.unwrap();
                assert_eq!(r.slot_name, format!("{prefix}_l{i}"));
                assert_eq!(r.output_plugin.as_deref(), Some("pgoutput"));
            },
            after_drop: (),
        );
        println!(
            "create_replication_slot (logical): {} completed, {} dropped",
            tally.completed, tally.dropped
        );
        wait_no_slots(&db, &prefix).await;

        // Permanent physical slots, each created whole, then dropped with a random drop. A
        // completed drop leaves no slot; after a dropped one the slot may or may not be gone.
        let permanent = CreateSlotOptions::physical();
        let tally = rounds!(100, &conninfo, conn, i,
            call: {
                let name = format!("{prefix}_p{i}");
                conn.create_replication_slot(&name, &permanent).await.unwrap();
                let conn = &mut conn;
                async move { conn.drop_replication_slot(&name, false).await }
            },
            check: |r| {
                r.unwrap();
                assert_eq!(slots_like(&db, &format!("{prefix}_p{i}")), Vec::<String>::new());
            },
            after_drop: match conn.drop_replication_slot(&format!("{prefix}_p{i}"), true).await {
                Ok(()) => {}
                Err(e) => assert!(e.is_slot_missing(), "{e:?}"),
            },
        );
        tally.check("drop_replication_slot");
        wait_no_slots(&db, &prefix).await;

        // READ_REPLICATION_SLOT and ALTER_REPLICATION_SLOT on one slot each.
        let physical = format!("{prefix}_read");
        let logical_name = format!("{prefix}_alter");
        {
            let mut conn = connect(&conninfo).await;
            let mut o = CreateSlotOptions::physical();
            o.reserve_wal = true;
            conn.create_replication_slot(&physical, &o).await.unwrap();
            let mut o = CreateSlotOptions::logical("pgoutput");
            o.snapshot = Some(walconn::SnapshotAction::Nothing);
            conn.create_replication_slot(&logical_name, &o)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
        let tally = rounds!(100, &conninfo, conn, i,
            call: conn.read_replication_slot(if i % 3 == 0 { "walconn_no_such" } else { &physical }),
            check: |r| {
                let r = r.unwrap();
                if i % 3 == 0 {
                    assert_eq!(r, None);
                } else {
                    let info = r.unwrap();
                    assert_eq!(info.slot_type, "physical");
                    assert!(info.restart_lsn.is_some());
                }
            },
            after_drop: (),
        );
        tally.check("read_replication_slot");
        let tally = rounds!(100, &conninfo, conn, i,
            call: conn.alter_replication_slot(&logical_name, Some(i % 2 == 0), None),
            check: |r| {
                r.unwrap();
                let failover = db
                    .psql(&format!(
                        "SELECT failover FROM pg_replication_slots WHERE slot_name = '{logical_name}'"
                    ))
                    .unwrap();
                assert_eq!(failover, if i % 2 == 0 { "t" } else { "f" });
            },
            // The dropped call's ALTER may still run on its backend: wait for it to go, so
            // that it cannot overwrite the next round's.
            after_drop: wait_alone(&mut conn, &db).await,
        );
        tally.check("alter_replication_slot");
        let mut conn = connect(&conninfo).await;
        conn.drop_replication_slot(&physical, true).await.unwrap();
        conn.drop_replication_slot(&logical_name, true)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
}

/// The text rows `1..=n` of `COPY ... TO STDOUT` of [`ROW`].
fn expected_rows(n: u32) -> Vec<String> {
    (1..=n)
        .map(|g| format!("{g}{}\n", ".".repeat(300)))
        .collect()
}

/// The row expression: wide enough that the server's 8 kB output buffer holds few rows, so
/// that the client waits on the socket often within one copy.
const ROW: &str = "g || repeat('.', 300)";

/// Reads a copy to its end with every `next` dropped at random: (rows, the final result).
async fn read_copy(
    rng: &mut fastrand::Rng,
    copy: &mut walconn::CopyOut<'_>,
    dropped: &mut u32,
) -> (Vec<String>, walconn::Result<()>) {
    let mut rows = Vec::new();
    loop {
        let Some(r) = Mix::LIVE.pick(rng).run(copy.next()).await else {
            *dropped += 1;
            continue;
        };
        match r {
            Ok(Some(row)) => rows.push(String::from_utf8(row.to_vec()).unwrap()),
            Ok(None) => return (rows, Ok(())),
            Err(e) => return (rows, Err(e)),
        }
    }
}

#[test]
fn cancel_copy_out_poisons_and_copy_out_next_is_cancel_safe() {
    let cluster = pgtest::cluster(MAJOR);
    let db = cluster.create_database("walconn_cancel_copy").unwrap();
    let conninfo = format!("{} replication=false", db.conninfo());
    block_on(async {
        let mut rng = pgtest::seeded_rng();
        let mut tally = Tally::default();
        let mut next_dropped = 0;
        let mut abandoned = 0;
        let mut conn = connect(&conninfo).await;
        // At least 60 copies, and more (up to 400) until enough `next` calls were dropped:
        // how often one waits on the socket depends on the machine's load.
        for i in 0..400u32 {
            if i >= 60 && next_dropped >= 10 {
                break;
            }
            let n = 200 + 50 * (i % 60);
            // Every third copy fails mid-way with division by zero after n - 1 rows.
            let fails = i % 3 == 1;
            let sql = if fails {
                format!(
                    "COPY (SELECT CASE WHEN g < {n} THEN {ROW} ELSE (1 / (g - g))::text END \
                     FROM generate_series(1, {}) g) TO STDOUT",
                    n + 10
                )
            } else {
                format!("COPY (SELECT {ROW} FROM generate_series(1, {n}) g) TO STDOUT")
            };
            match Mix::LIVE.pick(&mut rng).run(conn.copy_out(&sql)).await {
                None => {
                    tally.dropped += 1;
                    assert_poisoned(&mut conn);
                    conn = connect(&conninfo).await;
                    continue;
                }
                Some(r) => {
                    tally.completed += 1;
                    let mut copy = r.unwrap();
                    if i % 5 == 4 {
                        // Abandoned mid-way: the connection is out of step, so poisoned.
                        copy.next().await.unwrap().unwrap();
                        drop(copy);
                        abandoned += 1;
                        assert_poisoned(&mut conn);
                        conn = connect(&conninfo).await;
                        continue;
                    }
                    let (rows, end) = read_copy(&mut rng, &mut copy, &mut next_dropped).await;
                    // Once ended, it stays ended.
                    assert!(copy.next().await.unwrap().is_none());
                    if fails {
                        assert_eq!(rows, expected_rows(n - 1));
                        assert_eq!(end.unwrap_err().code(), Some("22012"));
                    } else {
                        assert_eq!(rows, expected_rows(n));
                        end.unwrap();
                    }
                    assert_in_step(&mut conn, i, "logical").await;
                }
            }
        }
        conn.close().await.unwrap();
        tally.check("copy_out");
        println!("CopyOut::next: {next_dropped} dropped; {abandoned} copies abandoned");
        assert!(next_dropped >= 10, "{next_dropped}");
    });
}

/// A fake walsender that sends one CopyData after `START_REPLICATION`, then never reads again
/// (so the client's sends block once the socket buffers are full).
async fn stalled_stream() -> CopyBoth {
    let server = FakeWalsender::start_deaf(|peer| async move {
        assert!(peer.send(&copy_data(b"first")).await);
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    copy_both(&server).await
}

fn update(lsn: u64) -> StandbyStatusUpdate {
    StandbyStatusUpdate {
        write: Lsn::new(lsn),
        flush: Lsn::new(lsn),
        apply: Lsn::new(lsn),
        client_time: std::time::SystemTime::now().into(),
        reply_requested: false,
    }
}

/// The sends of a [`CopyBoth`], each not cancel-safe.
#[derive(Clone, Copy, Debug)]
enum SendKind {
    /// `send_status_update`.
    Status,
    /// `send` of 64 kB.
    Big,
    /// `send_hot_standby_feedback`.
    Feedback,
}

/// Hot standby feedback with `xmin` (epoch 0) and no catalog xmin.
fn feedback(xmin: u32) -> HotStandbyFeedback {
    HotStandbyFeedback {
        client_time: std::time::SystemTime::now().into(),
        xmin,
        xmin_epoch: 0,
        catalog_xmin: 0,
        catalog_xmin_epoch: 0,
    }
}

#[test]
fn cancel_dropped_send_poisons_the_copy_both() {
    for kind in [SendKind::Status, SendKind::Big, SendKind::Feedback] {
        block_on(async {
            let mut stream = stalled_stream().await;
            let mut sent = 0u64;
            let payload = vec![b'x'; 64 * 1024];
            // Send until a send blocks on the full socket buffer; that one is dropped.
            loop {
                let fut = async {
                    match kind {
                        SendKind::Status => stream.send_status_update(&update(sent)).await,
                        SendKind::Big => stream.send(&payload).await,
                        SendKind::Feedback => stream.send_hot_standby_feedback(&feedback(3)).await,
                    }
                };
                match tokio::time::timeout(Duration::from_millis(200), fut).await {
                    Ok(r) => {
                        r.unwrap();
                        sent += 1;
                    }
                    Err(_) => break,
                }
                assert!(sent < 10_000_000, "the sends never blocked");
            }
            println!("{kind:?}: {sent} sends completed before one blocked");
            assert!(stream.connection().is_poisoned());
            // `recv` would find a whole frame in the buffer, but refuses: the object is
            // poisoned.
            poisoned_now(stream.recv());
            poisoned_now(stream.send_status_update(&update(sent)));
            poisoned_now(stream.send_hot_standby_feedback(&feedback(3)));
            poisoned_now(stream.send(b"x"));
            match kind {
                SendKind::Feedback => poisoned_now(stream.end()),
                SendKind::Status | SendKind::Big => poisoned_now(stream.finish()),
            }
        });
    }
}

#[test]
fn cancel_copy_both_send_status_update_dropped_at_random() {
    // Against a real walsender the sends rarely block, so most complete: what must hold is
    // that every round ends with a working stream (and a clean finish) or a poisoned one.
    let cluster = pgtest::cluster(MAJOR);
    let db = cluster.create_database("walconn_cancel_send").unwrap();
    let slot = cluster.unique_name("wc_cancel_send");
    db.psql(&format!(
        "CREATE TABLE t (id int); CREATE PUBLICATION p FOR TABLE t;
         SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');"
    ))
    .unwrap();
    block_on(async {
        let mut rng = pgtest::seeded_rng();
        let mut tally = Tally::default();
        for round in 0..20 {
            let conn = connect(&db.conninfo()).await;
            let mut stream = conn
                .start_logical_replication(
                    &slot,
                    Lsn::ZERO,
                    &LogicalReplicationOptions::new(
                        walconn::walproto::pgoutput::ProtocolVersion::V1,
                        &["p"],
                    ),
                )
                .await
                .unwrap();
            let mut poisoned = false;
            for k in 0..50 {
                if Mix::LIVE
                    .pick(&mut rng)
                    .run(stream.send_status_update(&update(0)))
                    .await
                    .is_none()
                {
                    tally.dropped += 1;
                    poisoned_now(stream.recv());
                    poisoned = true;
                    break;
                }
                tally.completed += 1;
                // A keepalive now and then shows the stream still in step.
                if k % 10 == 0 {
                    let mut reply = update(0);
                    reply.reply_requested = true;
                    stream.send_status_update(&reply).await.unwrap();
                    loop {
                        let frame = tokio::time::timeout(Duration::from_secs(20), stream.recv())
                            .await
                            .expect("no keepalive after a reply request")
                            .unwrap()
                            .unwrap();
                        if frame[0] == b'k' {
                            break;
                        }
                        assert_eq!(frame[0], b'w', "round {round}");
                    }
                }
            }
            if poisoned {
                poisoned_now(stream.finish());
            } else {
                stream.finish().await.unwrap().close().await.unwrap();
            }
        }
        println!(
            "send_status_update: {} completed, {} dropped",
            tally.completed, tally.dropped
        );
        assert!(tally.completed > 0);
    });
}

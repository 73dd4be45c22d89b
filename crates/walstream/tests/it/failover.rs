//! Failover without loss (issue 16, PostgreSQL 17+), and logical decoding on a standby (16+).
//!
//! A primary and a standby streaming through a physical slot, with `sync_replication_slots`
//! and `hot_standby_feedback` on the standby and `synchronized_standby_slots` on the primary
//! naming the standby's slot; a writer commits small transactions. The primary is stopped with
//! `pg_ctl stop -m immediate`, the standby promoted, and the writer goes on against it. A
//! stream of a failover slot, connected with both hosts and `target_session_attrs=read-write`,
//! goes on by itself: after deduplication by commit LSN it holds every row of the new
//! primary's table, exactly once, and says that the timeline changed. Streams whose slot is
//! not safe to resume from end with their typed error.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgtest::{Cluster, Recovery, Topology, WriteLoad};
use walstream::{
    ColumnValue, CreateSlot, Error, ErrorKind, EventKind, EventStream, FailoverRefusal,
    InvalidationReason, LogicalReplicationStream, ReplicationStreamConfig,
    ReplicationStreamConfigBuilder, RetryPolicy, Streaming,
};

use crate::block_on;

/// The database, table and publication of every topology here.
const DB: &str = "failover";
const TABLE: &str = "rows";
const PUBLICATION: &str = "failover_pub";
/// The standby's physical slot on the primary.
const STANDBY_SLOT: &str = "standby_1";

/// How long the waits of this file wait: several servers share two cores.
const WAIT: Duration = Duration::from_secs(90);

/// The failover topology of pgtest with [`DB`]'s table and publication; with
/// `wait_for_standby`, the primary's `synchronized_standby_slots` names the standby's slot
/// (logical walsenders send nothing the standby has not flushed).
fn failover_topology(major: u32, wait_for_standby: bool) -> Topology {
    let t = Topology::failover(major, STANDBY_SLOT).unwrap();
    if wait_for_standby {
        t.wait_for_standby(STANDBY_SLOT).unwrap();
    }
    t.table(DB, TABLE, PUBLICATION).unwrap();
    t
}

/// Polls `ok` every 100 ms until it holds, failing after [`WAIT`].
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A stream configuration for `slot`: whole transactions, quick status updates and retries.
fn config(slot: &str) -> ReplicationStreamConfigBuilder {
    ReplicationStreamConfig::builder(slot, [PUBLICATION])
        .streaming(Streaming::Off)
        .status_interval(Duration::from_millis(200))
        .retry(
            RetryPolicy::default()
                .backoff(Duration::from_millis(50), Duration::from_millis(500))
                .max_attempts(Some(1000)),
        )
}

/// What a consumer that deduplicates by commit LSN saw.
#[derive(Debug, Default)]
struct Delivered {
    /// Ids of committed rows, once per distinct commit LSN.
    ids: Vec<i64>,
    /// Transactions delivered again (at-least-once) and dropped as repeats.
    repeats: usize,
    /// The timelines of each reconnect notice.
    reconnects: Vec<(Option<u32>, Option<u32>)>,
    /// The error that ended the stream, if one did.
    error: Option<Error>,
}

fn id(v: Option<ColumnValue>) -> i64 {
    match v {
        Some(ColumnValue::Text(b)) => std::str::from_utf8(&b).unwrap().parse().unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Consumes `events` into `out` until the stream ends, acknowledging each commit; rows of a
/// transaction cut by a reconnect are dropped (the server sends it again whole).
async fn consume(mut events: EventStream, out: Arc<Mutex<Delivered>>) {
    let mut open = Vec::new();
    let mut commits = HashSet::new();
    loop {
        let event = match events.next_event().await {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                out.lock().unwrap().error = Some(e);
                return;
            }
        };
        match &event.kind {
            EventKind::Begin(_) => open.clear(),
            EventKind::Insert(i) => open.push(id(i.new.get("id"))),
            EventKind::Reconnected {
                old_timeline,
                new_timeline,
                ..
            } => {
                open.clear();
                out.lock()
                    .unwrap()
                    .reconnects
                    .push((*old_timeline, *new_timeline));
            }
            EventKind::Commit(c) => {
                let mut out = out.lock().unwrap();
                if commits.insert(c.commit_lsn) {
                    out.ids.append(&mut open);
                } else {
                    out.repeats += 1;
                    open.clear();
                }
                events.ack(c.end_lsn);
            }
            _ => {}
        }
    }
}

/// Connects a stream of `slot` with `conninfo` and consumes it on a task of its own.
async fn spawn_stream(
    conninfo: &str,
    config: ReplicationStreamConfigBuilder,
) -> (Arc<Mutex<Delivered>>, tokio::task::JoinHandle<()>) {
    let stream = LogicalReplicationStream::connect(conninfo, config.build().unwrap())
        .await
        .unwrap();
    let out = Arc::new(Mutex::new(Delivered::default()));
    let task = tokio::spawn(consume(stream.start(), out.clone()));
    (out, task)
}

/// The ids in the table, on `cluster`.
fn table_ids(cluster: &Cluster) -> BTreeSet<i64> {
    cluster
        .psql(DB, &format!("SELECT id FROM {TABLE}"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Waits until the consumer's error has arrived and returns it.
fn wait_error(what: &str, out: &Mutex<Delivered>) -> Error {
    wait_for(what, || out.lock().unwrap().error.is_some());
    out.lock().unwrap().error.take().unwrap()
}

#[test]
fn a_promoted_standby_with_a_synchronized_slot_continues_the_stream_without_loss() {
    pgtest::for_each_installed_major(17, |major| block_on(failover_without_loss(major)));
}

async fn failover_without_loss(major: u32) {
    let t = failover_topology(major, true);
    let conninfo = t.conninfo(DB);
    // The failover slot, created by the stream.
    let (out, task) = spawn_stream(
        &conninfo,
        config("fo_failover")
            .create_slot_if_missing(CreateSlot::Permanent)
            .failover(true),
    )
    .await;
    // A slot that is not a failover slot, which the new primary does not have; another, with
    // a slot of the same name of the standby's own there.
    for slot in ["fo_plain", "fo_other"] {
        t.primary
            .psql(
                DB,
                &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
            )
            .unwrap();
    }
    t.create_standby_slot(DB, "fo_other").unwrap();
    let (plain, _) = spawn_stream(&conninfo, config("fo_plain")).await;
    let (other, _) = spawn_stream(&conninfo, config("fo_other")).await;

    let load = WriteLoad::start(&t.primary, DB, TABLE).unwrap();
    wait_for("transactions through the failover slot", || {
        out.lock().unwrap().ids.len() >= 50
    });
    t.wait_synced("fo_failover").unwrap();
    // More after the slot is synchronized, so that the stream is ahead of the synchronized
    // copy's position when the primary goes.
    let seen = out.lock().unwrap().ids.len();
    wait_for("more transactions", || {
        out.lock().unwrap().ids.len() >= seen + 50
    });

    t.primary.crash().unwrap();
    let before = load.stop();
    println!("PostgreSQL {major}: the writer on the old primary: {before:?}");
    t.standby.promote().unwrap();
    assert_eq!(t.standby.timeline().unwrap(), 2);
    let load = WriteLoad::start(&t.standby, DB, TABLE).unwrap();
    let at_promotion = table_ids(&t.standby).len();
    wait_for("rows written on the new primary", || {
        table_ids(&t.standby).len() >= at_promotion + 100
    });
    let after = load.stop().unwrap();
    let expected = table_ids(&t.standby);
    wait_for("every row of the new primary through the stream", || {
        let out = out.lock().unwrap();
        out.error.is_some() || out.ids.iter().collect::<BTreeSet<_>>().len() >= expected.len()
    });
    task.abort();
    let out = out.lock().unwrap();
    assert!(out.error.is_none(), "{:?}", out.error);
    let got: BTreeSet<i64> = out.ids.iter().copied().collect();
    assert_eq!(got.len(), out.ids.len(), "a row delivered twice");
    assert_eq!(
        got, expected,
        "the stream's rows are not the new primary's table"
    );
    assert!(
        out.reconnects.contains(&(Some(1), Some(2))),
        "no reconnect notice of timeline 1 to 2: {:?}",
        out.reconnects
    );
    println!(
        "PostgreSQL {major}: {} rows ({after} written after the promotion), {} transactions \
         repeated, reconnects {:?}",
        got.len(),
        out.repeats,
        out.reconnects
    );

    let e = wait_error("the stream of a slot the new primary lacks", &plain);
    assert_eq!(e.kind(), ErrorKind::Failover, "{e}");
    assert_eq!(
        e.failover_refusal(),
        Some(&FailoverRefusal::SlotMissing),
        "{e}"
    );
    let e = wait_error("the stream of a slot that is not synchronized", &other);
    assert_eq!(e.kind(), ErrorKind::Failover, "{e}");
    assert_eq!(
        e.failover_refusal(),
        Some(&FailoverRefusal::NotSynchronized {
            failover: false,
            synced: false
        }),
        "{e}"
    );
}

#[test]
fn a_standby_promoted_behind_the_stream_is_refused() {
    pgtest::for_each_installed_major(17, |major| block_on(switch_before_resume(major)));
}

/// Without `synchronized_standby_slots` the stream may receive (and acknowledge) changes the
/// standby never got: here the standby is cut off from the primary before the last
/// transactions. Its synchronized slot is there, but its timeline 2 branched off before the
/// stream's position: resuming there would lose what the stream already has.
async fn switch_before_resume(major: u32) {
    let t = failover_topology(major, false);
    let (out, _task) = spawn_stream(
        &t.conninfo(DB),
        config("fo_behind")
            .create_slot_if_missing(CreateSlot::Permanent)
            .failover(true),
    )
    .await;
    let insert = format!("INSERT INTO {TABLE} (payload) VALUES ('x')");
    // Rows until the slot is synchronized: its copy becomes persistent once the primary's slot
    // moves past where the copy began.
    let mut before = 0;
    let started = Instant::now();
    wait_for("the slot synchronized", || {
        t.primary.psql(DB, &insert).unwrap();
        before += 1;
        t.standby
            .psql(
                "postgres",
                "SELECT synced AND NOT temporary FROM pg_replication_slots \
                 WHERE slot_name = 'fo_behind'",
            )
            .unwrap()
            == "t"
    });
    println!("synchronized after {:?}, {before} rows", started.elapsed());
    wait_for("the first rows", || out.lock().unwrap().ids.len() >= before);
    t.standby
        .psql(
            "postgres",
            "ALTER SYSTEM SET primary_conninfo = ''; SELECT pg_reload_conf();",
        )
        .unwrap();
    wait_for("the standby's WAL receiver to stop", || {
        t.standby
            .psql("postgres", "SELECT count(*) FROM pg_stat_wal_receiver")
            .unwrap()
            == "0"
    });
    for _ in 0..3 {
        t.primary.psql(DB, &insert).unwrap();
    }
    wait_for("the rows the standby does not have", || {
        out.lock().unwrap().ids.len() >= before + 3
    });
    t.primary.crash().unwrap();
    t.standby.promote().unwrap();
    let e = wait_error("the refusal", &out);
    assert_eq!(e.kind(), ErrorKind::Failover, "{e}");
    match e.failover_refusal() {
        Some(&FailoverRefusal::SwitchBeforeResume {
            old_timeline: 1,
            new_timeline: 2,
            switch,
            resume,
        }) => assert!(switch < resume, "{e}"),
        other => panic!("{other:?}: {e}"),
    }
    // The standby has the first rows only.
    assert_eq!(table_ids(&t.standby).len(), before);
    println!("PostgreSQL {major}: {e}");
}

#[test]
fn a_stream_from_a_standby_follows_the_primary_until_a_conflict_invalidates_its_slot() {
    pgtest::for_each_installed_major(16, |major| block_on(standby_decoding(major)));
}

/// Logical decoding on a standby (PostgreSQL 16+): the slot is created on the standby through
/// the stream (the creation waits for a running-transactions record, which
/// `pg_log_standby_snapshot()` on the primary writes), the stream gets the changes made on
/// the primary, and when the primary's `wal_level` drops below `logical` the standby
/// invalidates the slot: the stream ends with `SlotInvalidated`, naming the reason
/// (`wal_level_insufficient`; PostgreSQL 16 says only that it was a conflict).
async fn standby_decoding(major: u32) {
    let t = Topology::start(major, |p| {
        Recovery::standby_of(p).setting("hot_standby_feedback", "on")
    })
    .unwrap();
    let db = t.table(DB, TABLE, PUBLICATION).unwrap();
    let (primary, standby) = (&t.primary, &t.standby);
    // The primary is nudged while the stream creates its slot on the standby.
    let nudging = tokio::spawn(nudge(primary.conninfo("postgres")));
    let (out, _task) = spawn_stream(
        &standby.conninfo(DB),
        config("on_standby").create_slot_if_missing(CreateSlot::Permanent),
    )
    .await;
    nudging.abort();
    for _ in 0..3 {
        db.psql(&format!("INSERT INTO {TABLE} (payload) VALUES ('x')"))
            .unwrap();
    }
    wait_for("the primary's rows through the standby", || {
        out.lock().unwrap().ids.len() >= 3
    });
    assert_eq!(
        out.lock().unwrap().ids.iter().collect::<BTreeSet<_>>(),
        table_ids(primary).iter().collect::<BTreeSet<_>>()
    );
    primary
        .psql("postgres", "ALTER SYSTEM SET wal_level = replica")
        .unwrap();
    primary.stop().unwrap();
    primary.start_again().unwrap();
    let e = wait_error("the invalidated slot's error", &out);
    assert_eq!(e.kind(), ErrorKind::SlotInvalidated, "{e}");
    let expected = if major >= 17 {
        InvalidationReason::WalLevelInsufficient
    } else {
        InvalidationReason::Conflict
    };
    assert_eq!(e.invalidation_reason(), Some(&expected), "{e}");
    println!("PostgreSQL {major}: {e}");
}

/// Runs `SELECT pg_log_standby_snapshot()` on the primary every 200 ms until aborted.
async fn nudge(conninfo: String) {
    let config = walstream::walconn::Config::parse(&conninfo).unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match walstream::walconn::Connection::connect(&config).await {
            Ok(mut conn) => {
                let _ = conn.simple_query("SELECT pg_log_standby_snapshot()").await;
                let _ = conn.close().await;
            }
            Err(e) => println!("nudging the primary: {e}"),
        }
    }
}

#[test]
fn no_writable_server_is_retried_for_the_failover_window_then_gives_up() {
    pgtest::for_each_installed_major(17, |major| {
        block_on(async {
            let t = failover_topology(major, false);
            let (out, _task) = spawn_stream(
                &t.conninfo(DB),
                config("fo_window")
                    .create_slot_if_missing(CreateSlot::Permanent)
                    .failover_window(Duration::from_secs(3)),
            )
            .await;
            t.primary
                .psql(DB, &format!("INSERT INTO {TABLE} (payload) VALUES ('x')"))
                .unwrap();
            wait_for("a row", || out.lock().unwrap().ids.len() == 1);
            // The standby stays a standby: no host is ever writable again.
            t.primary.crash().unwrap();
            let crashed = Instant::now();
            let e = wait_error("the end of the failover window", &out);
            let waited = crashed.elapsed();
            assert_eq!(e.kind(), ErrorKind::RetriesExhausted, "{e}");
            assert!(e.to_string().contains("failover window"), "{e}");
            let last = e.connection().map(walstream::walconn::Error::kind);
            assert_eq!(
                last,
                Some(walstream::walconn::ErrorKind::SessionAttrs),
                "{e}"
            );
            assert!(
                waited >= Duration::from_secs(3) && waited < Duration::from_secs(30),
                "{waited:?}: {e}"
            );
            println!("PostgreSQL {major}: after {waited:?}: {e}");
        });
    });
}

#[test]
fn a_failover_slot_before_postgresql_17_is_refused_before_anything_is_sent() {
    let mut ran = 0;
    pgtest::for_each_major(15, |cluster| {
        if cluster.major() >= 17 {
            return;
        }
        ran += 1;
        let db = cluster.create_database("failover_refused").unwrap();
        db.psql(&format!("CREATE PUBLICATION {PUBLICATION}"))
            .unwrap();
        let config = config("fo_refused")
            .create_slot_if_missing(CreateSlot::Permanent)
            .failover(true)
            .build()
            .unwrap();
        let e = block_on(LogicalReplicationStream::connect(&db.conninfo(), config))
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("PostgreSQL 17"), "{e}");
        let slots = db
            .psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'fo_refused'")
            .unwrap();
        assert_eq!(slots, "0");
    });
    assert!(
        ran > 0,
        "no PostgreSQL before 17 is installed to refuse a failover slot"
    );
    println!("{ran} majors before 17 refused the failover slot");
}

#[test]
fn a_slot_invalidated_on_the_new_primary_ends_the_stream_typed() {
    pgtest::for_each_installed_major(17, |major| block_on(invalidated_there(major)));
}

/// The new primary's slot of that name (here the standby's own, whose WAL the standby's
/// `max_slot_wal_keep_size` let go) is invalidated: `SlotInvalidated`, naming the reason.
async fn invalidated_there(major: u32) {
    let t = Topology::start(major, |p| {
        Recovery::standby_of(p).setting("max_slot_wal_keep_size", "1")
    })
    .unwrap();
    let db = t.table(DB, TABLE, PUBLICATION).unwrap();
    let (primary, standby) = (&t.primary, &t.standby);
    db.psql("SELECT pg_create_logical_replication_slot('fo_inv', 'pgoutput');")
        .unwrap();
    pgtest::wait_caught_up(primary, standby).unwrap();
    t.create_standby_slot(DB, "fo_inv").unwrap();
    let conninfo = t.conninfo(DB);
    let (out, _task) = spawn_stream(&conninfo, config("fo_inv")).await;
    wait_for("the standby's slot invalidated (wal_removed)", || {
        db.psql(&format!(
            "INSERT INTO {TABLE} (payload) VALUES ('x'); SELECT pg_switch_wal(); CHECKPOINT;"
        ))
        .unwrap();
        pgtest::wait_caught_up(primary, standby).unwrap();
        standby.psql("postgres", "CHECKPOINT").unwrap();
        standby
            .psql(
                "postgres",
                "SELECT invalidation_reason FROM pg_replication_slots \
                 WHERE slot_name = 'fo_inv'",
            )
            .unwrap()
            == "wal_removed"
    });
    wait_for("the rows through the primary's slot", || {
        !out.lock().unwrap().ids.is_empty()
    });
    primary.crash().unwrap();
    standby.promote().unwrap();
    let e = wait_error("the invalidated slot's error", &out);
    assert_eq!(e.kind(), ErrorKind::SlotInvalidated, "{e}");
    assert_eq!(
        e.invalidation_reason(),
        Some(&InvalidationReason::WalRemoved),
        "{e}"
    );
    println!("PostgreSQL {major}: {e}");
}

#[test]
fn a_stream_from_a_standby_goes_on_after_that_standby_is_promoted() {
    pgtest::for_each_installed_major(16, |major| block_on(decoding_standby_promoted(major)));
}

/// The stream decodes on a standby, which is then promoted: its slot is the stream's own, on
/// the same server, now on timeline 2. A reconnect there (the walsender terminated) resumes,
/// announcing timelines 1 and 2, and the rows written after the promotion arrive, each once.
async fn decoding_standby_promoted(major: u32) {
    let t = Topology::start(major, |p| {
        Recovery::standby_of(p).setting("hot_standby_feedback", "on")
    })
    .unwrap();
    let db = t.table(DB, TABLE, PUBLICATION).unwrap();
    let (primary, standby) = (&t.primary, &t.standby);
    t.create_standby_slot(DB, "on_promoted").unwrap();
    let (out, _task) = spawn_stream(&standby.conninfo(DB), config("on_promoted")).await;
    let insert = format!("INSERT INTO {TABLE} (payload) VALUES ('x')");
    for _ in 0..3 {
        db.psql(&insert).unwrap();
    }
    wait_for("rows through the standby", || {
        out.lock().unwrap().ids.len() >= 3
    });
    primary.crash().unwrap();
    standby.promote().unwrap();
    for _ in 0..3 {
        standby.psql(DB, &insert).unwrap();
    }
    // Whether or not the walsender went on across the promotion, a reconnect now is one to
    // the same server on a new timeline.
    standby
        .psql(
            "postgres",
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = 'on_promoted' AND active_pid IS NOT NULL",
        )
        .unwrap();
    for _ in 0..3 {
        standby.psql(DB, &insert).unwrap();
    }
    let expected = table_ids(standby);
    wait_for("every row", || {
        let out = out.lock().unwrap();
        out.error.is_some() || out.ids.iter().collect::<BTreeSet<_>>().len() >= expected.len()
    });
    let out = out.lock().unwrap();
    assert!(out.error.is_none(), "{:?}", out.error);
    let got: BTreeSet<i64> = out.ids.iter().copied().collect();
    assert_eq!(got.len(), out.ids.len(), "a row delivered twice");
    assert_eq!(got, expected);
    assert!(
        out.reconnects.contains(&(Some(1), Some(2))),
        "no reconnect notice of timeline 1 to 2: {:?}",
        out.reconnects
    );
    println!("PostgreSQL {major}: reconnects {:?}", out.reconnects);
}

#[test]
fn catalog_rows_removed_under_a_standby_slot_end_its_stream_typed() {
    pgtest::for_each_installed_major(16, |major| block_on(rows_removed(major)));
}

/// Without `hot_standby_feedback` (and no physical slot), the primary's `VACUUM` of the
/// catalog removes rows a standby's slot still needs: the standby invalidates the slot
/// (`rows_removed`; PostgreSQL 16: a conflict) and the stream decoding there ends with
/// `SlotInvalidated`.
async fn rows_removed(major: u32) {
    let t = Topology::start(major, |p| {
        Recovery::standby_of(p).setting("hot_standby_feedback", "off")
    })
    .unwrap();
    let db = t.table(DB, TABLE, PUBLICATION).unwrap();
    t.create_standby_slot(DB, "on_removed").unwrap();
    let (out, _task) = spawn_stream(&t.standby.conninfo(DB), config("on_removed")).await;
    db.psql(&format!("INSERT INTO {TABLE} (payload) VALUES ('x')"))
        .unwrap();
    wait_for("a row through the standby", || {
        !out.lock().unwrap().ids.is_empty()
    });
    // Catalog rows made dead after the slot's catalog_xmin, then removed on the primary.
    wait_for("the slot invalidated on the standby", || {
        db.psql(
            "CREATE TABLE conflict_test (x int, y text); DROP TABLE conflict_test;
             VACUUM pg_class;",
        )
        .unwrap();
        out.lock().unwrap().error.is_some()
    });
    let e = out.lock().unwrap().error.take().unwrap();
    assert_eq!(e.kind(), ErrorKind::SlotInvalidated, "{e}");
    let expected = if major >= 17 {
        InvalidationReason::RowsRemoved
    } else {
        InvalidationReason::Conflict
    };
    assert_eq!(e.invalidation_reason(), Some(&expected), "{e}");
    println!("PostgreSQL {major}: {e}");
}

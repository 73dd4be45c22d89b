//! The assembler fed event sequences by hand: every transaction shape, reconnects and spilling.

use std::sync::Arc;

use bytes::Bytes;
use walproto::owned::TupleBuf;
use walproto::pgoutput::{
    encode_columns, Begin, Column, Commit, ReplicaIdentity, StreamAbort, StreamCommit, StreamStart,
    TupleData,
};
use walproto::{ColumnInfo, Lsn, Oid, RelationInfo, Timestamp, Xid};

use futures_core::Stream;

use super::*;
use crate::logical::event::{ChangeEvent, EventKind, Insert, LogicalMessage, PrepareInfo, Row};
use crate::{TransactionAssembler, TransactionConfig, TransactionKind};

fn rel() -> Arc<RelationInfo> {
    Arc::new(RelationInfo {
        id: Oid(16384),
        namespace: "public".into(),
        name: "t".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![ColumnInfo {
            name: "id".into(),
            type_oid: Oid(23),
            type_modifier: -1,
            key: true,
        }],
    })
}

fn ev(kind: EventKind) -> ChangeEvent {
    ChangeEvent {
        lsn: Lsn::new(1),
        xid: None,
        commit_time: None,
        kind,
    }
}

fn insert(xid: Option<u32>, id: &str) -> ChangeEvent {
    let mut bytes = Vec::new();
    encode_columns([Column::Text(id.as_bytes())], &mut bytes);
    let bytes = Bytes::from(bytes);
    let view = TupleData::parse(&bytes).unwrap();
    let tuple = TupleBuf::from_view(&bytes, &view).unwrap();
    let relation = rel();
    ev(EventKind::Insert(Insert {
        xid: xid.map(Xid),
        new: Row::new(relation.clone(), tuple),
        relation,
    }))
}

fn begin(xid: u32) -> ChangeEvent {
    ev(EventKind::Begin(Begin {
        final_lsn: Lsn::new(100),
        commit_time: Timestamp::new(5),
        xid: Xid(xid),
    }))
}

fn commit(end: u64) -> ChangeEvent {
    ev(EventKind::Commit(Commit {
        flags: 0,
        commit_lsn: Lsn::new(end - 1),
        end_lsn: Lsn::new(end),
        commit_time: Timestamp::new(5),
    }))
}

fn start(xid: u32, first: bool) -> ChangeEvent {
    ev(EventKind::StreamStart(StreamStart {
        xid: Xid(xid),
        first_segment: first,
    }))
}

fn stream_commit(xid: u32, end: u64) -> ChangeEvent {
    ev(EventKind::StreamCommit(StreamCommit {
        xid: Xid(xid),
        flags: 0,
        commit_lsn: Lsn::new(end - 1),
        end_lsn: Lsn::new(end),
        commit_time: Timestamp::new(9),
    }))
}

fn abort(xid: u32, subxid: u32) -> ChangeEvent {
    ev(EventKind::StreamAbort(StreamAbort {
        xid: Xid(xid),
        subxid: Xid(subxid),
        parallel: None,
    }))
}

fn prepare_info(xid: u32, gid: &str) -> PrepareInfo {
    PrepareInfo {
        prepare_lsn: Lsn::new(50),
        end_lsn: Lsn::new(60),
        prepare_time: Timestamp::new(3),
        xid: Xid(xid),
        gid: gid.into(),
    }
}

fn ids(tx: &Transaction) -> Vec<String> {
    tx.changes()
        .map(|c| match c.unwrap().kind {
            ChangeKind::Insert(i) => match i.new.value(0) {
                Some(walproto::owned::ColumnValue::Text(b)) => {
                    String::from_utf8(b.to_vec()).unwrap()
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Pushes `events` as [`TransactionStream`](super::TransactionStream) does: waiting while
/// the spill thread is behind the budget.
fn feed(a: &mut TransactionAssembler, events: Vec<ChangeEvent>) -> Vec<Transaction> {
    let mut out = Vec::new();
    for e in events {
        wait_for_room(a);
        a.push(e).unwrap();
        while let Some(t) = a.pop() {
            out.push(t);
        }
    }
    wait_for_room(a);
    out
}

fn wait_for_room(a: &TransactionAssembler) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.over_budget() {
        assert!(
            std::time::Instant::now() < deadline,
            "the spill thread is stuck"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn assembler() -> TransactionAssembler {
    TransactionAssembler::new(TransactionConfig::default())
}

#[test]
fn plain_transactions_arrive_whole() {
    let mut a = assembler();
    let txs = feed(
        &mut a,
        vec![begin(7), insert(None, "1"), insert(None, "2"), commit(200)],
    );
    assert_eq!(txs.len(), 1);
    assert_eq!((txs[0].xid, txs[0].end_lsn), (Xid(7), Lsn::new(200)));
    assert_eq!(txs[0].kind, TransactionKind::Plain);
    assert_eq!(ids(&txs[0]), ["1", "2"]);
    assert_eq!(a.memory().0, 0);
}

#[test]
fn interleaved_streams_with_a_subtransaction_abort() {
    let mut a = assembler();
    let txs = feed(
        &mut a,
        vec![
            start(10, true),
            insert(Some(10), "a1"),
            ev(EventKind::StreamStop),
            start(20, true),
            insert(Some(20), "b1"),
            ev(EventKind::StreamStop),
            start(10, false),
            insert(Some(11), "a-sub"),
            insert(Some(10), "a2"),
            ev(EventKind::StreamStop),
            abort(10, 11),
            // A whole streamed transaction aborted: nothing of it arrives.
            start(30, true),
            insert(Some(30), "c1"),
            ev(EventKind::StreamStop),
            abort(30, 30),
            stream_commit(20, 300),
            stream_commit(10, 400),
        ],
    );
    assert_eq!(txs.len(), 2);
    assert_eq!(txs[0].xid, Xid(20));
    assert_eq!(ids(&txs[0]), ["b1"]);
    assert_eq!(txs[1].kind, TransactionKind::Streamed);
    assert_eq!(ids(&txs[1]), ["a1", "a2"]);
    assert_eq!(a.memory().0, 0);
}

#[test]
fn prepared_transactions_wait_for_their_outcome() {
    let mut a = assembler();
    let txs = feed(
        &mut a,
        vec![
            ev(EventKind::BeginPrepare(prepare_info(5, "g1"))),
            insert(None, "p1"),
            ev(EventKind::Prepare(prepare_info(5, "g1"))),
            // An empty prepared transaction.
            ev(EventKind::BeginPrepare(prepare_info(6, "g2"))),
            ev(EventKind::Prepare(prepare_info(6, "g2"))),
            begin(8),
            insert(None, "x"),
            commit(500),
        ],
    );
    assert_eq!(txs.len(), 1);
    assert_eq!(a.pending_prepare(), Some(Lsn::new(50)));
    // A reconnect keeps prepared transactions: the server will not send them again.
    a.push(ev(EventKind::Reconnected {
        resume_lsn: Lsn::new(1),
        attempts: 1,
        reason: "lost".into(),
        old_timeline: None,
        new_timeline: None,
    }))
    .unwrap();
    let commit_prepared = |gid: &str| {
        ev(EventKind::CommitPrepared(
            crate::logical::event::CommitPrepared {
                commit_lsn: Lsn::new(600),
                end_lsn: Lsn::new(610),
                commit_time: Timestamp::new(7),
                xid: Xid(5),
                gid: gid.into(),
            },
        ))
    };
    let txs = feed(
        &mut a,
        vec![
            commit_prepared("g1"),
            ev(EventKind::RollbackPrepared(
                crate::logical::event::RollbackPrepared {
                    prepare_end_lsn: Lsn::new(60),
                    rollback_end_lsn: Lsn::new(700),
                    prepare_time: Timestamp::new(3),
                    rollback_time: Timestamp::new(8),
                    xid: Xid(6),
                    gid: "g2".into(),
                },
            )),
        ],
    );
    assert_eq!(txs.len(), 1);
    assert!(
        matches!(&txs[0].kind, TransactionKind::Prepared { gid, streamed: false, .. } if gid == "g1")
    );
    assert_eq!(ids(&txs[0]), ["p1"]);
    assert_eq!(a.pending_prepare(), None);
    // An outcome for a prepare never seen is an error, not a silent loss.
    assert!(a.push(commit_prepared("nope")).is_err());
}

#[test]
fn a_reconnect_drops_partial_transactions() {
    let mut a = assembler();
    let txs = feed(
        &mut a,
        vec![
            begin(1),
            insert(None, "lost"),
            start(2, true),
            insert(Some(2), "lost too"),
            ev(EventKind::Reconnected {
                resume_lsn: Lsn::new(1),
                attempts: 1,
                reason: "lost".into(),
                old_timeline: None,
                new_timeline: None,
            }),
            begin(1),
            insert(None, "again"),
            commit(900),
        ],
    );
    assert_eq!(txs.len(), 1);
    assert_eq!(ids(&txs[0]), ["again"]);
    assert_eq!(a.memory().0, 0);
}

/// The events of streamed transaction `xid` with `n` inserts, every tenth of them in
/// subtransaction `xid + 1`, which aborts; and the ids that must arrive.
fn big_stream(xid: u32, n: usize, end: u64) -> (Vec<ChangeEvent>, Vec<String>) {
    let mut events = vec![start(xid, true)];
    let mut want = Vec::new();
    for i in 0..n {
        let sub = i % 10 == 0;
        events.push(insert(
            Some(if sub { xid + 1 } else { xid }),
            &i.to_string(),
        ));
        if !sub {
            want.push(i.to_string());
        }
    }
    events.push(ev(EventKind::StreamStop));
    events.push(abort(xid, xid + 1));
    events.push(stream_commit(xid, end));
    (events, want)
}

fn spilling(dir: &std::path::Path, budget: usize) -> TransactionAssembler {
    TransactionAssembler::new(
        TransactionConfig::default()
            .memory_budget(budget)
            .spill_dir(dir),
    )
}

#[test]
fn beyond_the_budget_changes_spill_and_come_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 2000;
    let mut a = spilling(dir.path(), budget);
    let (events, want) = big_stream(10, 500, 1000);
    let txs = feed(&mut a, events);
    assert!(a.memory().1 <= budget + 200, "peak {:?}", a.memory());
    assert!(a.spilled_bytes() > 0);
    assert!(txs[0].is_spilled());
    assert_eq!(ids(&txs[0]), want);
}

/// The spill files this process has open in `dir`: (descriptor path, link target).
fn open_spill_files(pid: &str, dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| {
            let path = fd.ok()?.path();
            let target = std::fs::read_link(&path).ok()?;
            target
                .starts_with(dir)
                .then(|| (path, target.display().to_string()))
        })
        .collect()
}

#[test]
fn spill_files_are_private_unlinked_and_in_the_configured_directory() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let mut a = spilling(dir.path(), 2000);
    let (mut events, want) = big_stream(10, 500, 1000);
    let commit = events.pop().unwrap();
    assert!(feed(&mut a, events).is_empty());
    let listing = || std::fs::read_dir(dir.path()).unwrap().count();
    // While the transaction is still arriving: spilled, yet the directory lists nothing.
    assert!(a.spilled_bytes() > 0);
    assert_eq!(listing(), 0, "a spill file has a name");
    let open = open_spill_files("self", dir.path());
    assert_eq!(open.len(), 1, "{open:?}");
    let meta = std::fs::metadata(&open[0].0).unwrap();
    assert!(meta.is_file(), "{open:?}");
    assert_eq!(meta.mode() & 0o777, 0o600, "{open:?}");
    assert_eq!(meta.nlink(), 0, "the spill file is not unlinked: {open:?}");
    // Delivered and held: still nothing in the directory.
    let txs = feed(&mut a, vec![commit]);
    assert!(txs[0].is_spilled());
    assert_eq!(ids(&txs[0]), want);
    assert_eq!(listing(), 0);
    drop(txs);
    assert_eq!(open_spill_files("self", dir.path()).len(), 0, "still open");
    // A directory that does not exist is an error that names it.
    let missing = dir.path().join("missing");
    let mut a = spilling(&missing, 2000);
    let (events, _) = big_stream(10, 500, 1000);
    let err = events
        .into_iter()
        .find_map(|e| a.push(e).err())
        .expect("spilling into a missing directory succeeded");
    assert_eq!(err.kind(), crate::ErrorKind::Spill);
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_killed_process_leaves_no_spill_file() {
    const CHILD: &str = "WALSTREAM_TEST_SPILL_CHILD_DIR";
    if let Some(dir) = std::env::var_os(CHILD) {
        // The child: spill, hold the transaction open, say so, and wait for SIGKILL.
        let mut a = spilling(std::path::Path::new(&dir), 2000);
        let (mut events, _) = big_stream(10, 500, 1000);
        events.pop();
        feed(&mut a, events);
        println!("spilled");
        std::thread::sleep(std::time::Duration::from_secs(60));
        panic!("not killed");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "transaction::tests::a_killed_process_leaves_no_spill_file",
            "--nocapture",
        ])
        .env(CHILD, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let spilled = std::io::BufRead::lines(stdout).any(|l| l.unwrap() == "spilled");
    assert!(spilled, "the child ended before spilling");
    // The child really has a spill file in the directory.
    let open = open_spill_files(&child.id().to_string(), dir.path());
    assert_eq!(open.len(), 1, "{open:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn spill_writes_happen_on_the_spill_thread() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 2000;
    let mut a = spilling(dir.path(), budget);
    let (events, want) = big_stream(10, 500, 1000);
    // The spill thread stalls (a disk that does not answer): pushing goes on regardless.
    let thread = a.spill_thread();
    let gate = thread.gate.lock().unwrap();
    for e in events {
        a.push(e).unwrap();
    }
    // What was handed to the stalled thread still counts as held...
    assert!(a.over_budget(), "{:?}", a.memory());
    // ... and the committed transaction waits for its file.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(a.poll_pop(&mut cx).is_pending());
    assert!(a.poll_room(&mut cx).is_pending());
    drop(gate);
    wait_for_room(&a);
    let tx = match a.poll_pop(&mut cx) {
        std::task::Poll::Ready(Some(Ok(TransactionItem::Transaction(tx)))) => tx,
        other => panic!("{other:?}"),
    };
    assert_eq!(ids(&tx), want);
}

#[test]
fn spilling_past_the_disk_budget_fails_with_its_own_kind() {
    let dir = tempfile::tempdir().unwrap();
    let config = |disk: u64| {
        TransactionConfig::default()
            .memory_budget(2000)
            .spill_dir(dir.path())
            .spill_disk_budget(disk)
    };
    // Room for one such transaction on disk, not for two.
    let mut a = TransactionAssembler::new(config(24_000));
    let (events, _) = big_stream(10, 500, 1000);
    let first = feed(&mut a, events);
    assert!(first[0].is_spilled());
    let spilled = a.spilled_bytes();
    assert!(spilled > 12_000 && spilled < 24_000, "{spilled}");
    // The first, delivered but still held, keeps its disk: the second does not fit.
    let (events, _) = big_stream(20, 500, 2000);
    let err = events
        .into_iter()
        .find_map(|e| {
            wait_for_room(&a);
            a.push(e).err()
        })
        .expect("the disk budget was not enforced");
    assert_eq!(err.kind(), crate::ErrorKind::SpillBudget, "{err}");
    assert!(err.lsn().is_some(), "{err:?}");
    assert!(err.to_string().contains("24000"), "{err}");
    assert!(!err.is_retryable());
    // Once the first is dropped, its disk is free again.
    drop(first);
    let mut a = TransactionAssembler::new(config(24_000));
    let (events, want) = big_stream(20, 500, 2000);
    let txs = feed(&mut a, events);
    assert_eq!(ids(&txs[0]), want);
}

#[test]
fn change_stream_reads_spilled_changes_and_yields_to_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = spilling(dir.path(), 2000);
    let (events, want) = big_stream(10, 2000, 1000);
    let txs = feed(&mut a, events);
    assert!(txs[0].is_spilled());
    // The spilled part is read on a thread: the same changes as the blocking iterator.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let got: Vec<Change> = rt.block_on(async {
        let mut out = Vec::new();
        let mut changes = txs[0].change_stream();
        while let Some(c) = changes.next_change().await {
            out.push(c.unwrap());
        }
        out
    });
    let sync: Vec<Change> = txs[0].changes().map(Result::unwrap).collect();
    assert_eq!(got, sync);
    assert_eq!(ids(&txs[0]), want);
    // Every YIELD_EVERY changes the stream gives the runtime a turn, even when the next
    // change is ready (here all are in memory).
    let (events, _) = big_stream(30, 1000, 3000);
    let mut a = assembler();
    let tx = feed(&mut a, events).pop().unwrap();
    assert!(!tx.is_spilled());
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut changes = tx.change_stream();
    let (mut ready, mut pending) = (0, 0);
    loop {
        match std::pin::Pin::new(&mut changes).poll_next(&mut cx) {
            std::task::Poll::Ready(Some(c)) => {
                c.unwrap();
                ready += 1;
            }
            std::task::Poll::Ready(None) => break,
            std::task::Poll::Pending => pending += 1,
        }
    }
    assert_eq!(ready, tx.len());
    assert_eq!(pending, tx.len() / YIELD_EVERY, "{ready} changes");
}

fn message(transactional: bool, content: &'static str) -> ChangeEvent {
    ev(EventKind::Message(LogicalMessage {
        xid: None,
        transactional,
        lsn: Lsn::new(0x50),
        prefix: "p".into(),
        content: Bytes::from_static(content.as_bytes()),
    }))
}

#[test]
fn non_transactional_messages_are_items_in_order_only_when_asked_for() {
    let events = || {
        vec![
            begin(1),
            insert(None, "1"),
            commit(0x100),
            message(false, "outside"),
            begin(2),
            message(true, "inside"),
            commit(0x200),
        ]
    };
    // Off (the default): dropped, and the transactions are unchanged.
    let mut a = assembler();
    assert_eq!(feed(&mut a, events()).len(), 2);
    // On: an item between the two transactions; `pop` still skips it.
    let mut a = TransactionAssembler::new(TransactionConfig::default().messages(true));
    for e in events() {
        a.push(e).unwrap();
    }
    let kinds: Vec<String> = std::iter::from_fn(|| a.pop_item())
        .map(|item| match item {
            TransactionItem::Transaction(tx) => format!("tx {} changes", tx.len()),
            TransactionItem::Message(m) => format!("message {}", m.content.escape_ascii()),
        })
        .collect();
    assert_eq!(kinds, ["tx 1 changes", "message outside", "tx 1 changes"]);
    let mut a = TransactionAssembler::new(TransactionConfig::default().messages(true));
    assert_eq!(feed(&mut a, events()).len(), 2);
}

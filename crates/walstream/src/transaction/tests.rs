//! The assembler fed event sequences by hand: every transaction shape, reconnects and spilling.

use std::sync::Arc;

use bytes::Bytes;
use walproto::owned::TupleBuf;
use walproto::pgoutput::{
    encode_columns, Begin, Column, Commit, ReplicaIdentity, StreamAbort, StreamCommit, StreamStart,
    TupleData,
};
use walproto::{ColumnInfo, Lsn, Oid, RelationInfo, Timestamp, Xid};

use super::*;
use crate::logical::event::{ChangeEvent, EventKind, Insert, PrepareInfo, Row};
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

fn feed(a: &mut TransactionAssembler, events: Vec<ChangeEvent>) -> Vec<Transaction> {
    let mut out = Vec::new();
    for e in events {
        a.push(e).unwrap();
        while let Some(t) = a.pop() {
            out.push(t);
        }
    }
    out
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

#[test]
fn beyond_the_budget_changes_spill_and_come_back_in_order() {
    let dir = std::env::temp_dir().join(format!("walstream-spill-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let budget = 2000;
    let mut a = TransactionAssembler::new(
        TransactionConfig::default()
            .memory_budget(budget)
            .spill_dir(&dir),
    );
    let mut events = vec![start(10, true)];
    let mut want = Vec::new();
    for i in 0..500 {
        // Every tenth change is made in subtransaction 11, which aborts.
        let sub = i % 10 == 0;
        events.push(insert(Some(if sub { 11 } else { 10 }), &i.to_string()));
        if !sub {
            want.push(i.to_string());
        }
    }
    events.push(ev(EventKind::StreamStop));
    events.push(abort(10, 11));
    events.push(stream_commit(10, 1000));
    let txs = feed(&mut a, events);
    assert!(a.memory().1 <= budget + 200, "peak {:?}", a.memory());
    assert!(a.spilled_bytes() > 0);
    assert!(txs[0].is_spilled());
    assert_eq!(ids(&txs[0]), want);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    drop(txs);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "spill file left behind"
    );
    std::fs::remove_dir(&dir).unwrap();
}

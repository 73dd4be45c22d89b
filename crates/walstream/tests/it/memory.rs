//! Memory bounds measured from outside: pgtest's counting allocator (this binary's global
//! allocator, see `main.rs`) counts every byte the client holds on the test's thread, where a
//! current-thread runtime runs the driver, the fake server and the consumer alike. The
//! library's own counters are not consulted, so a bug in the accounting cannot hide a bug in
//! the bound.

use std::time::Duration;

use pgtest::alloc::Window;
use pgtest::fake::FakeWalsender;
use walstream::walproto::pgoutput::{BeginPrepare, CommitPrepared, Message, Prepare};
use walstream::walproto::{Lsn as ProtoLsn, Timestamp, Xid};
use walstream::{ProtocolVersion, Streaming, TransactionConfig, TransactionKind};

use crate::hostile::{
    begin, commit as commit_message, config, insert, relation, stream, stream_commit, stream_start,
    Wal, REL,
};

/// The transaction budget of the test: far more than the rows held, so nothing spills.
const BUDGET: usize = 1 << 20;

/// What the client may hold besides the budget: the connection's read buffer, the runtime,
/// the relation cache, the channel's batches, the fake server's own buffers.
pub(crate) const SLACK: usize = 2 << 20;

/// Streamed transactions open at once.
const STREAMS: u32 = 4;
/// Blocks of each streamed transaction, each of one small row.
const BLOCKS: usize = 500;
/// Rows of the prepared transaction.
const PREPARED_ROWS: usize = 300;
/// The value of the plain transaction committed after each round of blocks: delivered and
/// dropped at once, it fills the read buffers that the held rows share.
const BIG_VALUE: usize = 30_000;

fn enc(m: Message<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    v
}

/// Runs `f` on a current-thread runtime on this thread: everything the stream allocates is
/// counted here.
pub(crate) fn on_this_thread<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A prepared transaction waiting for its outcome and four streamed transactions interleaved
/// block by block with large plain transactions, all held at once: what the client holds
/// stays within the transaction budget plus a stated slack. Before held rows were copied out
/// of their frames, each kept the read buffer it came in alive, with the large rows around
/// it: tens of MB here, for a few hundred KB of rows.
#[test]
fn held_transactions_cost_their_rows_not_the_read_buffers_they_came_in() {
    on_this_thread(async {
        let window = Window::open();
        let server = FakeWalsender::start(|peer| async move {
            let mut wal = Wal::default();
            // The prepared transaction, described and held until COMMIT PREPARED.
            // The prepare's position: after Begin Prepare, the Relation and the rows.
            let prepare_lsn = wal.lsn + 0x40 * (2 + PREPARED_ROWS as u64);
            let gid = "held";
            peer.send(&wal.xlog(&enc(Message::BeginPrepare(BeginPrepare {
                prepare_lsn: ProtoLsn::new(prepare_lsn),
                end_lsn: ProtoLsn::new(prepare_lsn + 0x40),
                prepare_time: Timestamp::EPOCH,
                xid: Xid(900),
                gid,
            }))))
            .await;
            peer.send(&wal.xlog(&relation(None, REL, &["id", "v"])))
                .await;
            for id in 0..PREPARED_ROWS {
                peer.send(&wal.xlog(&insert(None, REL, &[&id.to_string(), "p"])))
                    .await;
            }
            peer.send(&wal.xlog(&enc(Message::Prepare(Prepare {
                flags: 0,
                prepare_lsn: ProtoLsn::new(prepare_lsn),
                end_lsn: ProtoLsn::new(prepare_lsn + 0x40),
                prepare_time: Timestamp::EPOCH,
                xid: Xid(900),
                gid,
            }))))
            .await;
            // The streamed transactions, block by block, interleaved, and between the rounds
            // a plain transaction with a large row: as on a busy server, each read buffer
            // holds a little of what is held and much of what is not.
            let big = "x".repeat(BIG_VALUE);
            let mut id = 10_000;
            for block in 0..BLOCKS {
                let mut out = Vec::new();
                for xid in 1000..1000 + STREAMS {
                    id += 1;
                    out.extend(wal.xlog(&stream_start(xid, block == 0)));
                    out.extend(wal.xlog(&insert(Some(xid), REL, &[&id.to_string(), "s"])));
                    out.extend(wal.xlog(b"E"));
                }
                id += 1;
                let commit = wal.lsn + 0x80;
                out.extend(wal.xlog(&begin(commit, 2000)));
                out.extend(wal.xlog(&insert(None, REL, &[&id.to_string(), &big])));
                out.extend(wal.xlog(&commit_message(commit, commit + 0x40)));
                peer.send(&out).await;
            }
            // Everything is held now; the outcomes release it.
            for xid in 1000..1000 + STREAMS {
                let commit = wal.lsn;
                peer.send(&wal.xlog(&stream_commit(xid, commit, commit + 0x40)))
                    .await;
            }
            let commit = wal.lsn;
            peer.send(&wal.xlog(&enc(Message::CommitPrepared(CommitPrepared {
                flags: 0,
                commit_lsn: ProtoLsn::new(commit),
                end_lsn: ProtoLsn::new(commit + 0x40),
                commit_time: Timestamp::EPOCH,
                xid: Xid(900),
                gid,
            }))))
            .await;
            peer.send(&wal.keepalive(false)).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let config = config()
            .proto_version(ProtocolVersion::V3)
            .streaming(Streaming::On)
            .two_phase(true)
            .read_coalescing(Duration::ZERO);
        let mut txs = stream(&server, config)
            .await
            .into_transactions(TransactionConfig::default().memory_budget(BUDGET));
        let mut rows = Vec::new();
        let mut plain = 0;
        while rows.len() < STREAMS as usize + 1 {
            let tx = tokio::time::timeout(Duration::from_secs(60), txs.next_transaction())
                .await
                .expect("timed out")
                .unwrap()
                .expect("ended");
            match tx.kind {
                TransactionKind::Plain => plain += 1,
                TransactionKind::Prepared { .. } => rows.push((true, tx.len())),
                _ => rows.push((false, tx.len())),
            }
            txs.ack(&tx);
        }
        let usage = window.usage();
        let (_, counted_peak) = txs.assembler().memory();
        println!("held at the peak: {usage:?}; the assembler counted {counted_peak} bytes");
        txs.shutdown().await.unwrap();
        rows.sort_unstable();
        let mut expected = vec![(false, BLOCKS); STREAMS as usize];
        expected.push((true, PREPARED_ROWS));
        assert_eq!(rows, expected);
        assert_eq!(plain, BLOCKS);
        // Nothing spilled: the bound is the memory held, not a file.
        assert!(counted_peak < BUDGET, "{counted_peak}");
        assert!(
            usage.peak <= BUDGET + SLACK,
            "the client held {} bytes at its peak, more than the budget ({BUDGET}) plus the \
             slack ({SLACK})",
            usage.peak
        );
    });
}

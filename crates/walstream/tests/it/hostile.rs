//! A hostile or broken server: `pgtest::fake`'s scripted walsender (trust auth, `IDENTIFY_SYSTEM`,
//! `SHOW wal_sender_timeout`, the slot query, `START_REPLICATION`, then scripted CopyData)
//! sends what a real server will not do on demand: lengths and counts beyond the frame, rows
//! of undescribed relations, tuples of the wrong width, messages out of order, LSNs going
//! backwards, endless keepalives, and a connection cut mid-frame.
//!
//! Each must end the stream with a typed error (kind; for decode errors the message tag, the
//! byte offset and the XLogData's LSN) after every event before it has been delivered, or be
//! handled as documented; nothing may panic (a panicking driver task would end the stream with
//! no error: every test asserts the error, and that `shutdown` returns the same kind rather
//! than "the driver task failed").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgtest::fake::FakeWalsender;
pub(crate) use pgtest::fake::{message as msg, SLOT_LSN};
use walstream::walproto::ErrorKind as ProtoKind;
use walstream::{
    ChangeEvent, ColumnValue, Error, ErrorKind, EventKind, EventStream, LogicalReplicationStream,
    Lsn, ReplicationStreamConfig, ReplicationStreamConfigBuilder, RetryPolicy, Streaming,
};

use crate::block_on;

/// The relation every script describes: `public.t (id int4 key, v text)`.
pub(crate) const REL: u32 = 16384;

/// Connects to the fake walsender and starts a stream with `config`.
pub(crate) async fn stream(
    server: &FakeWalsender,
    config: ReplicationStreamConfigBuilder,
) -> EventStream {
    let conn = walstream::walconn::Config::parse_with_env(&server.conninfo(), |_| None).unwrap();
    LogicalReplicationStream::connect_with(conn, config.build().unwrap())
        .await
        .unwrap()
        .start()
}

/// The flush position of every status update the fake walsender received.
pub(crate) fn flushes(server: &FakeWalsender) -> Vec<Lsn> {
    server.log().flushes().into_iter().map(Lsn::new).collect()
}

/// The configuration the tests use: protocol 2 with streaming (so that stream blocks exist),
/// quick status updates, no retries unless a test asks.
pub(crate) fn config() -> ReplicationStreamConfigBuilder {
    ReplicationStreamConfig::builder("slot", ["pub"])
        .proto_version(walstream::ProtocolVersion::V2)
        .streaming(Streaming::On)
        .status_interval(Duration::from_millis(100))
        .retry(RetryPolicy::never())
}

/// Builds the replication stream the scripts send: XLogData frames at increasing LSNs.
pub(crate) struct Wal {
    /// The next XLogData's `wal_start`.
    pub(crate) lsn: u64,
    /// Whether [`REL`] was described (its Relation message goes into the first transaction,
    /// after Begin, as PostgreSQL sends it).
    pub(crate) described: bool,
}

impl Default for Wal {
    fn default() -> Self {
        Self::at(SLOT_LSN + 0x100)
    }
}

/// Step between the XLogData of a script.
const STEP: u64 = 0x40;

impl Wal {
    pub(crate) fn at(lsn: u64) -> Self {
        Self {
            lsn,
            described: false,
        }
    }

    /// One CopyData frame with an XLogData at `start` carrying `data`.
    pub(crate) fn xlog_at(start: u64, data: &[u8]) -> Vec<u8> {
        let mut w = vec![b'w'];
        w.extend_from_slice(&start.to_be_bytes());
        w.extend_from_slice(&start.to_be_bytes());
        w.extend_from_slice(&0i64.to_be_bytes());
        w.extend_from_slice(data);
        msg(b'd', &w)
    }

    /// The next XLogData frame.
    pub(crate) fn xlog(&mut self, data: &[u8]) -> Vec<u8> {
        let f = Self::xlog_at(self.lsn, data);
        self.lsn += STEP;
        f
    }

    /// A whole plain transaction `xid` inserting `ids` into [`REL`] (describing it first if
    /// not yet done); returns the frames and the commit's end LSN.
    pub(crate) fn transaction(&mut self, xid: u32, ids: &[i64]) -> (Vec<u8>, Lsn) {
        let describe = !self.described;
        let commit_lsn = self.lsn + STEP * (1 + u64::from(describe) + ids.len() as u64);
        let end = commit_lsn + STEP;
        let mut out = self.xlog(&begin(commit_lsn, xid));
        if describe {
            out.extend(self.xlog(&relation(None, REL, &["id", "v"])));
            self.described = true;
        }
        for id in ids {
            out.extend(self.xlog(&insert(None, REL, &[&id.to_string(), "x"])));
        }
        out.extend(self.xlog(&commit(commit_lsn, end)));
        (out, Lsn::new(end))
    }

    /// A keepalive frame at the current position.
    pub(crate) fn keepalive(&self, reply: bool) -> Vec<u8> {
        keepalive(self.lsn, reply)
    }
}

pub(crate) fn keepalive(wal_end: u64, reply: bool) -> Vec<u8> {
    let mut k = vec![b'k'];
    k.extend_from_slice(&wal_end.to_be_bytes());
    k.extend_from_slice(&0i64.to_be_bytes());
    k.push(u8::from(reply));
    msg(b'd', &k)
}

pub(crate) fn begin(final_lsn: u64, xid: u32) -> Vec<u8> {
    let mut m = vec![b'B'];
    m.extend_from_slice(&final_lsn.to_be_bytes());
    m.extend_from_slice(&0i64.to_be_bytes());
    m.extend_from_slice(&xid.to_be_bytes());
    m
}

pub(crate) fn commit(commit_lsn: u64, end_lsn: u64) -> Vec<u8> {
    let mut m = vec![b'C', 0];
    m.extend_from_slice(&commit_lsn.to_be_bytes());
    m.extend_from_slice(&end_lsn.to_be_bytes());
    m.extend_from_slice(&0i64.to_be_bytes());
    m
}

/// A Relation message for `oid` with `columns` (the first is the key, int4; the others text);
/// `xid` inside a streamed block.
pub(crate) fn relation(xid: Option<u32>, oid: u32, columns: &[&str]) -> Vec<u8> {
    let mut m = vec![b'R'];
    if let Some(x) = xid {
        m.extend_from_slice(&x.to_be_bytes());
    }
    m.extend_from_slice(&oid.to_be_bytes());
    m.extend_from_slice(b"public\0t\0d");
    m.extend_from_slice(&u16::try_from(columns.len()).unwrap().to_be_bytes());
    for (i, c) in columns.iter().enumerate() {
        m.push(u8::from(i == 0));
        m.extend_from_slice(c.as_bytes());
        m.push(0);
        m.extend_from_slice(&(if i == 0 { 23u32 } else { 25 }).to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
    }
    m
}

/// An Insert into `oid` of text `values`; `xid` inside a streamed block.
pub(crate) fn insert(xid: Option<u32>, oid: u32, values: &[&str]) -> Vec<u8> {
    let mut m = vec![b'I'];
    if let Some(x) = xid {
        m.extend_from_slice(&x.to_be_bytes());
    }
    m.extend_from_slice(&oid.to_be_bytes());
    m.push(b'N');
    m.extend_from_slice(&u16::try_from(values.len()).unwrap().to_be_bytes());
    for v in values {
        m.push(b't');
        m.extend_from_slice(&u32::try_from(v.len()).unwrap().to_be_bytes());
        m.extend_from_slice(v.as_bytes());
    }
    m
}

pub(crate) fn stream_start(xid: u32, first: bool) -> Vec<u8> {
    let mut m = vec![b'S'];
    m.extend_from_slice(&xid.to_be_bytes());
    m.push(u8::from(first));
    m
}

pub(crate) fn stream_commit(xid: u32, commit_lsn: u64, end_lsn: u64) -> Vec<u8> {
    let mut m = vec![b'c'];
    m.extend_from_slice(&xid.to_be_bytes());
    m.push(0);
    m.extend_from_slice(&commit_lsn.to_be_bytes());
    m.extend_from_slice(&end_lsn.to_be_bytes());
    m.extend_from_slice(&0i64.to_be_bytes());
    m
}

/// The id column of an event's row.
pub(crate) fn row_id(event: &ChangeEvent) -> Option<i64> {
    match &event.kind {
        EventKind::Insert(i) => match i.new.get("id") {
            Some(ColumnValue::Text(b)) => std::str::from_utf8(&b).ok()?.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Reads events until the stream fails (within 10 s); the stream must then stay ended.
async fn events_then_error(stream: &mut EventStream) -> (Vec<ChangeEvent>, Error) {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next_event())
            .await
            .expect("neither an event nor an error within 10 s")
        {
            Ok(Some(e)) => events.push(e),
            Ok(None) => panic!("the stream ended without an error after {events:?}"),
            Err(e) => {
                assert!(stream.next_event().await.unwrap().is_none());
                return (events, e);
            }
        }
    }
}

/// Serves `prefix` (a good transaction) then `bad`, and returns what the stream delivered and
/// its error; the driver's own result (through `shutdown`) must be the same kind: it did not
/// panic.
fn run(bad: impl Fn(&mut Wal) -> Vec<u8> + Send + Sync + 'static) -> (Vec<ChangeEvent>, Error) {
    block_on(async move {
        let server = FakeWalsender::start(move |peer| {
            let mut wal = Wal::default();
            let mut out = wal.transaction(700, &[1, 2]).0;
            out.extend(bad(&mut wal));
            async move {
                peer.send(&out).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        })
        .await;
        let mut stream = stream(&server, config()).await;
        let (events, err) = events_then_error(&mut stream).await;
        println!("delivered {} events, then: {err:?}", events.len());
        let ended = stream.shutdown().await.unwrap_err();
        assert_eq!(ended.kind(), err.kind(), "{ended}");
        (events, err)
    })
}

/// The good prefix was delivered whole, in order, before the error.
fn assert_prefix(events: &[ChangeEvent]) {
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e.kind {
            EventKind::Relation(_) => "R",
            EventKind::Begin(_) => "B",
            EventKind::Insert(_) => "I",
            EventKind::Commit(_) => "C",
            _ => "?",
        })
        .collect();
    assert!(
        kinds.starts_with(&["B", "R", "I", "I", "C"]),
        "the events before the bad message: {kinds:?}"
    );
    let ids: Vec<i64> = events.iter().filter_map(row_id).collect();
    assert_eq!(&ids[..2], &[1, 2]);
}

fn assert_decode(err: &Error, kind: ProtoKind, tag: u8, lsn: u64) -> usize {
    assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}");
    let d = err
        .decode()
        .expect("a decode error carries the parser's error");
    assert_eq!(d.kind(), kind, "{err}");
    assert_eq!(d.tag(), Some(tag), "{err}");
    assert_eq!(err.lsn(), Some(Lsn::new(lsn)), "{err}");
    assert!(!err.is_retryable());
    d.offset()
}

#[test]
fn hostile_relation_claiming_65535_columns_in_20_bytes() {
    let (events, err) = run(|wal| {
        // Oid, two one-letter names, the replica identity, then the count: no columns at all.
        let mut r = vec![b'R'];
        r.extend_from_slice(&16385u32.to_be_bytes());
        r.extend_from_slice(b"p\0q\0d");
        r.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(r.len() <= 20);
        wal.xlog(&r)
    });
    assert_prefix(&events);
    let offset = assert_decode(
        &err,
        ProtoKind::CountOutOfBounds(65535),
        b'R',
        SLOT_LSN + 0x100 + 5 * STEP,
    );
    // The count is at byte 10 of the message.
    assert_eq!(offset, 10, "{err}");
}

#[test]
fn hostile_column_length_beyond_the_frame() {
    let (events, err) = run(|wal| {
        let mut out = wal.xlog(&begin(0, 701));
        let mut i = vec![b'I'];
        i.extend_from_slice(&REL.to_be_bytes());
        i.extend_from_slice(b"N\x00\x02t\x00\x00\x00\x013t");
        i.extend_from_slice(&0x3fff_ffffu32.to_be_bytes());
        i.extend_from_slice(b"short");
        out.extend(wal.xlog(&i));
        out
    });
    assert_prefix(&events);
    assert!(matches!(events.last().unwrap().kind, EventKind::Begin(_)));
    assert_decode(
        &err,
        ProtoKind::LengthOutOfBounds(0x3fff_ffff),
        b'I',
        SLOT_LSN + 0x100 + 6 * STEP,
    );
}

#[test]
fn hostile_copy_data_lengths_beyond_the_limit_are_refused_from_the_header() {
    // 4 GiB - 1 (negative as the protocol's signed length), 2 GiB - 1 and one byte more than
    // walconn::MAX_MESSAGE_LEN: each is refused from the 5-byte header alone, while the server
    // keeps the connection open and sends nothing more, so nothing was reserved for it (the
    // read buffer only grows for a frame whose length passed the check). The stream's own
    // buffer never held more than the good transaction.
    let over = u32::try_from(walstream::walconn::MAX_MESSAGE_LEN + 1).unwrap();
    for len in [u32::MAX, 0x7fff_ffff, over] {
        let started = std::time::Instant::now();
        // On this thread, so that the counting allocator sees every block the client takes.
        let (events, err) = crate::memory::on_this_thread(async move {
            let window = pgtest::alloc::Window::open();
            let server = FakeWalsender::start(move |peer| {
                let mut wal = Wal::default();
                let mut out = wal.transaction(700, &[1, 2]).0;
                out.push(b'd');
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&[b'w'; 64]);
                async move {
                    peer.send(&out).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            })
            .await;
            let mut stream = stream(&server, config()).await;
            let (events, err) = events_then_error(&mut stream).await;
            let stats = stream.stats();
            assert!(stats.peak_buffered_bytes < 4096, "{stats:?}");
            // Measured from outside: no block anywhere near the declared length was taken.
            let usage = window.usage();
            assert!(usage.largest < 1 << 20, "{len:#x}: {usage:?}");
            assert!(usage.peak < crate::memory::SLACK, "{len:#x}: {usage:?}");
            assert_eq!(stream.shutdown().await.unwrap_err().kind(), err.kind());
            (events, err)
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_prefix(&events);
        assert_eq!(err.kind(), ErrorKind::Connection, "{len:#x}: {err:?}");
        let conn = err.connection().unwrap();
        assert_eq!(
            conn.kind(),
            walstream::walconn::ErrorKind::Protocol,
            "{len:#x}: {err}"
        );
        assert!(!err.is_retryable(), "{err}");
    }
}

#[test]
fn hostile_rows_for_a_relation_never_described() {
    let (events, err) = run(|wal| {
        let mut out = wal.xlog(&begin(0, 701));
        out.extend(wal.xlog(&insert(None, REL + 1, &["3", "x"])));
        out
    });
    assert_prefix(&events);
    let offset = assert_decode(
        &err,
        ProtoKind::UnknownRelation(walstream::walproto::Oid(REL + 1)),
        b'I',
        SLOT_LSN + 0x100 + 6 * STEP,
    );
    assert_eq!(offset, 0);
}

#[test]
fn hostile_tuples_with_fewer_or_more_columns_than_their_relation() {
    for values in [&["3"][..], &["3", "x", "surplus"][..]] {
        let found = u16::try_from(values.len()).unwrap();
        let (events, err) = run(move |wal| {
            let mut out = wal.xlog(&begin(0, 701));
            out.extend(wal.xlog(&insert(None, REL, values)));
            out
        });
        assert_prefix(&events);
        assert_decode(
            &err,
            ProtoKind::ColumnCountMismatch { expected: 2, found },
            b'I',
            SLOT_LSN + 0x100 + 6 * STEP,
        );
    }
}

#[test]
fn hostile_stream_stop_without_stream_start() {
    let (events, err) = run(|wal| wal.xlog(b"E"));
    assert_prefix(&events);
    assert_decode(
        &err,
        ProtoKind::OutOfOrder,
        b'E',
        SLOT_LSN + 0x100 + 5 * STEP,
    );
}

#[test]
fn hostile_commit_without_begin() {
    let (events, err) = run(|wal| {
        let at = wal.lsn;
        wal.xlog(&commit(at, at + STEP))
    });
    assert_prefix(&events);
    assert_decode(
        &err,
        ProtoKind::OutOfOrder,
        b'C',
        SLOT_LSN + 0x100 + 5 * STEP,
    );
}

#[test]
fn hostile_commit_without_begin_through_transactions() {
    // The same through the transaction layer: the good transaction first, then the error.
    block_on(async {
        let server = FakeWalsender::start(|peer| {
            let mut wal = Wal::default();
            let mut out = wal.transaction(700, &[1, 2]).0;
            let at = wal.lsn;
            out.extend(wal.xlog(&commit(at, at + STEP)));
            async move {
                peer.send(&out).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        })
        .await;
        let mut txs = stream(&server, config())
            .await
            .into_transactions(walstream::TransactionConfig::default());
        let tx = txs.next_transaction().await.unwrap().unwrap();
        assert_eq!(tx.xid, walstream::Xid(700));
        assert_eq!(tx.len(), 2);
        let err = txs.next_transaction().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
        assert_eq!(err.decode().unwrap().kind(), ProtoKind::OutOfOrder);
        assert!(txs.next_transaction().await.unwrap().is_none());
    });
}

#[test]
fn hostile_unknown_replication_message() {
    // A CopyData that is neither XLogData nor keepalive.
    let (events, err) = run(|_| msg(b'd', b"x-what-is-this"));
    assert_prefix(&events);
    assert_eq!(err.kind(), ErrorKind::Decode, "{err:?}");
    assert_eq!(err.decode().unwrap().kind(), ProtoKind::UnknownMessage);
    assert!(err.to_string().contains("undecodable CopyData"), "{err}");
}

/// LSNs going backwards: a second transaction whose XLogData positions and commit LSNs are
/// below the first one's.
///
/// XLogData `wal_start` may legitimately go back (pgoutput sends each change at its own
/// record's LSN, so a transaction that began before another but committed after it is
/// replayed at lower positions); commit LSNs may not: transactions are sent in commit order.
///
/// What walstream does today (documented here, reported as a finding): it accepts a commit
/// LSN going backwards silently. The events are delivered with the lower LSNs, the second
/// transaction's `ack_lsn` is below the first's, acknowledging it changes nothing (the marks
/// only move forward; `FeedbackTracker::on_transaction_end` keeps the maximum), and the flush
/// position reported never goes back. A consumer that deduplicates by commit LSN ("skip what
/// is at or below the last commit applied") would drop the second transaction as a repeat: a
/// server (or proxy) doing this would lose data downstream without any error.
#[test]
fn hostile_lsns_going_backwards_end_the_stream() {
    // A second transaction whose commit ends before the first one's: the first is delivered,
    // then a typed error at the bad transaction's position; it is never delivered (a consumer
    // deduplicating by commit LSN would take it for a repeat and drop it).
    block_on(async {
        let server = FakeWalsender::start(|peer| {
            let mut wal = Wal::at(SLOT_LSN + 0x10_0000);
            let mut out = wal.transaction(700, &[1]).0;
            wal.lsn = SLOT_LSN + 0x1000;
            out.extend(wal.transaction(701, &[2]).0);
            async move {
                peer.send(&out).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        })
        .await;
        let mut stream = stream(&server, config()).await;
        let mut ends = Vec::new();
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next_event())
                .await
                .expect("an event or the error")
            {
                Ok(Some(e)) => {
                    if let Some(end) = e.ack_lsn() {
                        stream.ack(end);
                        ends.push(end);
                    }
                }
                Ok(None) => panic!("the stream ended without an error"),
                Err(e) => break e,
            }
        };
        assert_eq!(ends.len(), 1, "{ends:?}");
        assert_eq!(err.kind(), walstream::ErrorKind::Protocol, "{err}");
        assert!(err.to_string().contains("went backwards"), "{err}");
        assert!(err.lsn().is_some());
        let flushes = flushes(&server);
        assert!(flushes.windows(2).all(|w| w[0] <= w[1]), "{flushes:?}");
    });
}

#[test]
fn hostile_endless_keepalives_grow_nothing() {
    // The server sends keepalives as fast as the socket takes them for 1.5 s, then a
    // transaction. Keepalives make no events, so nothing is queued for the consumer: sampled
    // all through the flood, `buffered_bytes` is 0 (the bound, whatever the count), while the
    // received position follows the keepalives and status updates keep going out; the
    // transaction after them arrives. (A batch counts the bytes of every frame read into it,
    // keepalives included, so the batch that carries the last transaction may count up to
    // MAX_BATCH_BYTES of keepalives: still within the documented bound.) Measured from
    // outside too, for the whole process with this test alone in it: the flood of several MB
    // of keepalives leaves the client's memory within the slack.
    if !pgtest::alloc::alone("hostile::hostile_endless_keepalives_grow_nothing") {
        return;
    }
    let memory = pgtest::alloc::ProcessWindow::open();
    block_on(async {
        let sent = Arc::new(AtomicUsize::new(0));
        let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (s, f) = (sent.clone(), flooding.clone());
        let server = FakeWalsender::start(move |peer| {
            let (sent, flooding) = (s.clone(), f.clone());
            async move {
                let mut wal = Wal::default();
                peer.send(&wal.transaction(700, &[1]).0).await;
                let until = std::time::Instant::now() + Duration::from_millis(1500);
                while std::time::Instant::now() < until {
                    let mut batch = Vec::new();
                    for _ in 0..1000 {
                        batch.extend(keepalive(wal.lsn, false));
                        wal.lsn += 8;
                    }
                    if !peer.send(&batch).await {
                        return;
                    }
                    sent.fetch_add(1000, Ordering::Relaxed);
                }
                flooding.store(false, Ordering::SeqCst);
                let mut out = wal.keepalive(true);
                out.extend(wal.transaction(701, &[2]).0);
                peer.send(&out).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        })
        .await;
        let mut stream = stream(&server, config()).await;
        let mut ids = Vec::new();
        let mut samples = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while ids.len() < 2 {
            tokio::select! {
                e = stream.next_event() => {
                    let e = e.unwrap().unwrap();
                    ids.extend(row_id(&e));
                    if let Some(end) = e.ack_lsn() {
                        stream.ack(end);
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(5)) => {
                    let before = flooding.load(Ordering::SeqCst);
                    let stats = stream.stats();
                    if before && flooding.load(Ordering::SeqCst) && ids.len() == 1 {
                        samples.push(stats);
                    }
                }
                () = tokio::time::sleep_until(deadline) => panic!("no second transaction"),
            }
        }
        assert_eq!(ids, [1, 2]);
        let stats = stream.stats();
        let n = sent.load(Ordering::Relaxed);
        println!(
            "{n} keepalives, {} samples during the flood; {stats:?}",
            samples.len()
        );
        assert!(n >= 10_000, "{n}");
        assert!(samples.len() >= 20, "{}", samples.len());
        assert!(samples.iter().all(|s| s.buffered_bytes == 0), "{samples:?}");
        assert!(
            samples.windows(2).any(|w| w[1].received > w[0].received),
            "the received position follows the keepalives: {samples:?}"
        );
        assert!(
            stats.peak_buffered_bytes <= walstream::MAX_BATCH_BYTES + 1024,
            "{stats:?}"
        );
        assert!(stats.received.get() >= SLOT_LSN + 8 * n as u64, "{stats:?}");
        assert!(stats.status_updates >= 2, "{stats:?}");
        stream.shutdown().await.unwrap();
    });
    let peak = memory.peak();
    assert!(
        peak <= crate::memory::SLACK,
        "the process held {peak} bytes more at its peak during the flood"
    );
}

#[test]
fn hostile_server_stopping_mid_frame_is_retried_then_gives_up() {
    // The first connection sends a transaction and half a frame, then closes; every later one
    // closes mid-frame at once. The stream delivers the transaction, reconnects (resuming
    // from what was acknowledged), and gives up after the policy's attempts with the typed
    // cause.
    block_on(async {
        let server = FakeWalsender::start(|peer| async move {
            let mut wal = Wal::default();
            let mut out = Vec::new();
            if peer.connection() == 0 {
                out.extend(wal.transaction(700, &[1, 2]).0);
            }
            let half = wal.xlog(&begin(0, 701));
            out.extend_from_slice(&half[..half.len() / 2]);
            peer.send(&out).await;
            peer.close().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let retry = RetryPolicy::default()
            .max_attempts(Some(3))
            .backoff(Duration::from_millis(100), Duration::from_millis(100))
            .jitter(0.0);
        let mut stream = stream(&server, config().retry(retry)).await;
        let mut events = Vec::new();
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next_event())
                .await
                .unwrap()
            {
                Ok(Some(e)) => {
                    if let Some(end) = e.ack_lsn() {
                        stream.ack(end);
                    }
                    events.push(e);
                }
                Ok(None) => panic!("ended without an error"),
                Err(e) => break e,
            }
        };
        let ids: Vec<i64> = events.iter().filter_map(row_id).collect();
        assert_eq!(ids, [1, 2]);
        let end = events.iter().find_map(ChangeEvent::ack_lsn).unwrap();
        assert_eq!(err.kind(), ErrorKind::RetriesExhausted, "{err:?}");
        let cause = err.connection().expect("the last failure");
        assert_eq!(cause.kind(), walstream::walconn::ErrorKind::Closed, "{err}");
        assert!(cause.to_string().contains("mid-message"), "{err}");
        let starts: Vec<Lsn> = server.log().starts().into_iter().map(Lsn::new).collect();
        assert_eq!(starts.len(), 4, "{starts:?}");
        assert_eq!(starts[0], Lsn::new(SLOT_LSN));
        // Every resume is from the acknowledged end, never past it.
        assert!(starts[1..].iter().all(|&s| s <= end), "{starts:?}");
        assert!(starts[2..].iter().all(|&s| s == end), "{starts:?}");
        assert_eq!(
            stream.shutdown().await.unwrap_err().kind(),
            ErrorKind::RetriesExhausted
        );
    });
}

/// A short Stream Abort (no abort LSN and time) of `subxid` in the transaction `xid`.
pub(crate) fn stream_abort(xid: u32, subxid: u32) -> Vec<u8> {
    let mut m = vec![b'A'];
    m.extend_from_slice(&xid.to_be_bytes());
    m.extend_from_slice(&subxid.to_be_bytes());
    m
}

/// The next transaction, which must come within 10 s.
async fn next(txs: &mut walstream::TransactionStream) -> Option<walstream::Transaction> {
    tokio::time::timeout(Duration::from_secs(10), txs.next_transaction())
        .await
        .expect("a transaction within 10 s")
        .unwrap()
}

/// A fake walsender under protocol 1 that sends a transaction, two stray Stream Aborts (of a
/// subtransaction and of a whole transaction, neither streamed), a second transaction and a
/// keepalive asking for a reply; with the second transaction's end and the keepalive's
/// position.
async fn stray_abort_server() -> (FakeWalsender, Lsn, Lsn) {
    let mut wal = Wal::default();
    let mut out = wal.transaction(700, &[1, 2]).0;
    out.extend(wal.xlog(&stream_abort(702, 703)));
    out.extend(wal.xlog(&stream_abort(704, 704)));
    let (second, end) = wal.transaction(701, &[3]);
    out.extend(second);
    // Past the second transaction's end: only a stream known to be between transactions may
    // acknowledge it.
    wal.lsn += 0x1000;
    out.extend(wal.keepalive(true));
    let keepalive = Lsn::new(wal.lsn);
    assert!(keepalive > end);
    let out = Arc::new(out);
    let server = FakeWalsender::start(move |peer| {
        let out = out.clone();
        async move {
            peer.send(&out).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
    .await;
    (server, end, keepalive)
}

/// Waits until the flush position the server received reaches `lsn`.
async fn flushed_up_to(server: &FakeWalsender, lsn: Lsn) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while flushes(server).last() < Some(&lsn) {
        assert!(
            std::time::Instant::now() < deadline,
            "{lsn} was never acknowledged: {:?}",
            flushes(server)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The protocol 1 options of a client that never asked for streaming.
fn protocol_1() -> ReplicationStreamConfigBuilder {
    config()
        .proto_version(walstream::ProtocolVersion::V1)
        .streaming(Streaming::Off)
}

#[test]
fn stray_stream_abort_under_protocol_1_is_ignored() {
    // PostgreSQL 18 sends Stream Aborts to protocol 1 clients that never asked for streaming.
    // Between two transactions, one changes nothing: both transactions arrive whole through
    // TransactionStream, the stream goes on, and it is still between transactions after it (a
    // keepalive's position is acknowledged once the second transaction is).
    block_on(async {
        let (server, _, keepalive) = stray_abort_server().await;
        let mut txs = stream(&server, protocol_1())
            .await
            .into_transactions(walstream::TransactionConfig::default());
        let first = next(&mut txs).await.expect("the first transaction");
        assert_eq!((first.xid, first.len()), (walstream::Xid(700), 2));
        let second = next(&mut txs).await.expect("the second transaction");
        assert_eq!((second.xid, second.len()), (walstream::Xid(701), 1));
        txs.ack(&second);
        flushed_up_to(&server, keepalive).await;
        // Nothing more was sent: the stream waits, it has not ended.
        let more = tokio::time::timeout(Duration::from_millis(500), txs.next_transaction()).await;
        assert!(more.is_err(), "the stream went on with {more:?}");
        txs.shutdown().await.unwrap();
    });
}

#[test]
fn stray_stream_abort_under_protocol_1_keeps_raw_mode_following() {
    // Raw mode (the CLI's tail) follows the boundaries from the bytes: the stray aborts are
    // delivered as they came, and following goes on, so the keepalive after the second
    // transaction is acknowledged once that transaction is.
    block_on(async {
        let (server, end, keepalive) = stray_abort_server().await;
        let mut events = stream(&server, protocol_1().raw(true)).await;
        let mut tags = Vec::new();
        while tags.len() < 10 {
            let event = tokio::time::timeout(Duration::from_secs(10), events.next_event())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream goes on");
            if let EventKind::XLogData(x) = &event.kind {
                tags.push(x.data[0]);
            }
        }
        assert_eq!(tags, b"BRIICAABIC");
        events.ack(end);
        flushed_up_to(&server, keepalive).await;
        events.shutdown().await.unwrap();
    });
}

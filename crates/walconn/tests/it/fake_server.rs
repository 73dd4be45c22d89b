//! A scripted fake server on a local TCP socket, for what a real server will not do on demand:
//! truncated and inflated frames, an ErrorResponse mid-CopyBoth, silence, and CopyBoth ended by
//! CommandComplete without CopyDone.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pgtest::fake::{copy_data, message as msg, FakeWalsender, Peer};
use tokio::sync::Notify;
use walconn::{Connection, CopyBoth, ErrorKind, LogicalReplicationOptions};
use walproto::Lsn;

use crate::{block_on, config};

/// Runs `script` as the server of one connection ([`pgtest::fake`] answers the startup, as a
/// 17.0 server with trust authentication, and `START_REPLICATION`); returns the client's
/// CopyBoth.
pub(crate) async fn start<F, Fut>(script: F) -> CopyBoth
where
    F: Fn(Peer) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    copy_both(&FakeWalsender::start(script).await).await
}

/// Connects to `server` and starts logical replication of slot `slot`, protocol 1.
pub(crate) async fn copy_both(server: &FakeWalsender) -> CopyBoth {
    let conn = Connection::connect(&config(&server.conninfo()))
        .await
        .unwrap();
    conn.start_logical_replication(
        "slot",
        Lsn::ZERO,
        &LogicalReplicationOptions::new(walconn::walproto::pgoutput::ProtocolVersion::V1, &["p"]),
    )
    .await
    .unwrap()
}

#[test]
fn truncated_frame_is_a_closed_connection() {
    block_on(async {
        let mut stream = start(|peer| async move {
            let mut out = copy_data(b"whole");
            // A CopyData announcing 100 bytes, cut after 10.
            out.extend_from_slice(&copy_data(&[7; 100])[..15]);
            assert!(peer.send(&out).await);
        })
        .await;
        assert_eq!(stream.recv().await.unwrap().unwrap(), &b"whole"[..]);
        let err = stream.recv().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed, "{err:?}");
        assert!(err.to_string().contains("mid-message"), "{err}");
        assert!(err.is_connection_lost(), "{err:?}");
    });
}

#[test]
fn inflated_length_fails_before_allocating() {
    // 2 GiB - 1 passes as a positive i32 and must hit walconn's own limit; 4 GiB - 1 is
    // negative as the protocol's signed length. Neither may reserve the buffer it claims.
    for len in [0x7fff_ffffu32, 0xffff_ffff] {
        // A current-thread runtime: the counting allocator sees every block on this thread.
        let window = pgtest::alloc::Window::open();
        block_on(async {
            let mut stream = start(move |peer| async move {
                let mut out = vec![b'd'];
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&[0; 64]);
                assert!(peer.send(&out).await);
                // Stay open: the client must decide from the header alone.
                tokio::time::sleep(Duration::from_secs(30)).await;
            })
            .await;
            let err = tokio::time::timeout(Duration::from_secs(5), stream.recv())
                .await
                .expect("no answer from the header alone")
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Protocol, "{len:#x}: {err:?}");
            if len == 0x7fff_ffff {
                assert!(err.to_string().contains("more than the"), "{err}");
            }
        });
        // Measured from outside: no block near the declared length was ever taken.
        let usage = window.usage();
        assert!(usage.largest < 1 << 20, "{len:#x}: {usage:?}");
    }
}

#[test]
fn error_response_mid_copy_both_is_typed() {
    block_on(async {
        let mut stream = start(|peer| async move {
            let mut out = copy_data(b"first");
            out.extend(msg(
                b'E',
                b"SERROR\0VERROR\0C55000\0Mreplication slot \"slot\" was invalidated\0\
                  Dthe slot's restart_lsn is too old\0Hcreate a new slot\0\0",
            ));
            assert!(peer.send(&out).await);
            tokio::time::sleep(Duration::from_secs(1)).await;
        })
        .await;
        assert_eq!(stream.recv().await.unwrap().unwrap(), &b"first"[..]);
        let err = stream.recv().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Db, "{err:?}");
        assert_eq!(err.code(), Some("55000"));
        let db = err.db().unwrap();
        assert_eq!(db.severity, "ERROR");
        assert_eq!(db.message, "replication slot \"slot\" was invalidated");
        assert_eq!(
            db.detail.as_deref(),
            Some("the slot's restart_lsn is too old")
        );
        assert_eq!(db.hint.as_deref(), Some("create a new slot"));
        assert!(err.to_string().contains("HINT: create a new slot"), "{err}");
    });
}

#[test]
fn silent_server_times_out_and_a_dropped_recv_keeps_the_stream_in_step() {
    block_on(async {
        let go = Arc::new(Notify::new());
        let wait = go.clone();
        let mut stream = start(move |peer| {
            let wait = wait.clone();
            async move {
                let first = copy_data(b"a frame cut in two by a pause");
                // Half a frame, then silence until the client has given up waiting once.
                assert!(peer.send(&first[..9]).await);
                wait.notified().await;
                let mut rest = first[9..].to_vec();
                rest.extend(copy_data(b"next"));
                assert!(peer.send(&rest).await);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
        .await;
        // The caller's timeout drops a recv that has buffered half a frame.
        let timed_out = tokio::time::timeout(Duration::from_millis(200), stream.recv()).await;
        assert!(timed_out.is_err(), "{timed_out:?}");
        // So does losing a select! race.
        tokio::select! {
            r = stream.recv() => panic!("{r:?}"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        // A permit is stored if the script is not waiting yet.
        go.notify_one();
        assert_eq!(
            stream.recv().await.unwrap().unwrap(),
            &b"a frame cut in two by a pause"[..]
        );
        assert_eq!(stream.recv().await.unwrap().unwrap(), &b"next"[..]);
    });
}

#[test]
fn command_complete_without_copy_done_ends_the_stream() {
    block_on(async {
        let mut stream = start(|mut peer| async move {
            let mut out = copy_data(b"last");
            out.extend(msg(b'C', b"START_REPLICATION\0"));
            out.extend(msg(b'Z', b"I"));
            assert!(peer.send(&out).await);
            // The connection is back to idle: answer one simple query.
            assert_eq!(peer.recv().await.unwrap().tag, b'Q');
            let mut out = msg(b'C', b"SELECT 0\0");
            out.extend(msg(b'Z', b"I"));
            assert!(peer.send(&out).await);
            tokio::time::sleep(Duration::from_secs(1)).await;
        })
        .await;
        assert_eq!(stream.recv().await.unwrap().unwrap(), &b"last"[..]);
        assert_eq!(stream.recv().await.unwrap(), None);
        assert_eq!(stream.recv().await.unwrap(), None);
        let mut conn = stream.finish().await.unwrap();
        conn.simple_query("SELECT").await.unwrap();
    });
}

//! A hostile server at the connection layer: frames whose length field is impossible, backend
//! messages that have no place in CopyBoth, a connection that ends inside a header; and the
//! cancel safety of `CopyBoth::recv`, dropped at random points over thousands of frames
//! written in random pieces.
//!
//! `CopyBoth::send` and `simple_query` poison the connection when dropped mid-way; that is
//! tested in `cancel.rs`.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use walconn::{Connection, CopyBoth, ErrorKind, LogicalReplicationOptions};
use walproto::Lsn;

use crate::cancel::{Drop, Rng};
use crate::{block_on, config};

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(u32::try_from(body.len()).unwrap() + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Answers the startup and `START_REPLICATION`, then runs `script`; returns the client's
/// CopyBoth. (The client's own messages are read and dropped meanwhile.)
async fn start<F, Fut>(script: F) -> CopyBoth
where
    F: FnOnce(tokio::net::tcp::OwnedWriteHalf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _): (TcpStream, _) = listener.accept().await.unwrap();
        let len = s.read_u32().await.unwrap();
        let mut startup = vec![0; usize::try_from(len).unwrap() - 4];
        s.read_exact(&mut startup).await.unwrap();
        let mut out = msg(b'R', &0u32.to_be_bytes());
        out.extend(msg(b'S', b"server_version\x0017.0\x00"));
        out.extend(msg(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]));
        out.extend(msg(b'Z', b"I"));
        s.write_all(&out).await.unwrap();
        let tag = s.read_u8().await.unwrap();
        assert_eq!(tag, b'Q');
        let len = s.read_u32().await.unwrap();
        let mut body = vec![0; usize::try_from(len).unwrap() - 4];
        s.read_exact(&mut body).await.unwrap();
        s.write_all(&msg(b'W', &[0, 0, 0])).await.unwrap();
        let (mut rd, wr) = s.into_split();
        tokio::spawn(async move {
            let mut sink = vec![0; 4096];
            while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        script(wr).await;
    });
    let conn = Connection::connect(&config(&format!(
        "host=127.0.0.1 port={port} user=fake dbname=fake sslmode=disable"
    )))
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

/// Serves `bytes` after one good frame and keeps the connection open; returns the error of
/// the second `recv`, which must come from the bytes alone (within 5 s).
fn second_recv_error(bytes: Vec<u8>) -> walconn::Error {
    block_on(async move {
        let mut stream = start(|mut s| async move {
            let mut out = msg(b'd', b"good");
            out.extend(bytes);
            s.write_all(&out).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        assert_eq!(stream.recv().await.unwrap().unwrap(), &b"good"[..]);
        tokio::time::timeout(Duration::from_secs(5), stream.recv())
            .await
            .expect("decided from the bytes at hand")
            .unwrap_err()
    })
}

#[test]
fn hostile_length_fields_below_the_header_are_protocol_errors() {
    // A length counts itself: 0 to 3 cannot be.
    for len in 0u32..4 {
        let mut bad = vec![b'd'];
        bad.extend_from_slice(&len.to_be_bytes());
        bad.extend_from_slice(&[0; 16]);
        let err = second_recv_error(bad);
        assert_eq!(err.kind(), ErrorKind::Protocol, "{len}: {err:?}");
        assert!(!err.is_retryable());
    }
}

#[test]
fn hostile_length_just_over_the_limit_is_refused_from_the_header() {
    let len = u32::try_from(walconn::MAX_MESSAGE_LEN + 1).unwrap();
    let mut bad = vec![b'd'];
    bad.extend_from_slice(&len.to_be_bytes());
    let err = second_recv_error(bad);
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");
    assert!(err.to_string().contains("more than the"), "{err}");
}

#[test]
fn hostile_backend_message_with_no_place_in_copy_both() {
    // A RowDescription, a DataRow, a BackendKeyData and an unknown tag mid-copy.
    for bad in [
        msg(b'T', &[0, 0]),
        msg(b'D', &[0, 0]),
        msg(b'K', &[0; 8]),
        msg(b'@', b"??"),
    ] {
        let tag = bad[0];
        let err = second_recv_error(bad);
        assert!(
            matches!(err.kind(), ErrorKind::Protocol),
            "{}: {err:?}",
            char::from(tag)
        );
    }
}

#[test]
fn hostile_connection_ending_inside_a_header() {
    block_on(async {
        let mut stream = start(|mut s| async move {
            let mut out = msg(b'd', b"good");
            out.extend_from_slice(&[b'd', 0, 0]);
            s.write_all(&out).await.unwrap();
            s.shutdown().await.unwrap();
        })
        .await;
        assert_eq!(stream.recv().await.unwrap().unwrap(), &b"good"[..]);
        let err = stream.recv().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed, "{err:?}");
        assert!(err.to_string().contains("mid-message"), "{err}");
        assert!(err.is_retryable());
    });
}

/// Frame `i` of the cancel test: its number, then filler of a size that depends on it.
fn frame(i: u32) -> Vec<u8> {
    let mut f = i.to_be_bytes().to_vec();
    let filler = usize::try_from(i.wrapping_mul(2_654_435_761) % 3000).unwrap();
    f.extend(std::iter::repeat_n(u8::try_from(i % 251).unwrap(), filler));
    f
}

#[test]
fn hostile_recv_dropped_anywhere_loses_nothing() {
    const FRAMES: u32 = 5000;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed:#x}");
    block_on(async move {
        let mut stream = start(move |mut s| async move {
            let mut rng = Rng(seed.rotate_left(17) | 1);
            let mut bytes = Vec::new();
            for i in 0..FRAMES {
                bytes.extend(msg(b'd', &frame(i)));
                if i % 100 == 99 {
                    // Messages CopyBoth passes over.
                    bytes.extend(msg(b'S', b"application_name\0x\0"));
                }
            }
            bytes.extend(msg(b'c', b""));
            let mut at = 0;
            while at < bytes.len() {
                let n = usize::try_from(1 + rng.below(2000)).unwrap();
                let end = (at + n).min(bytes.len());
                s.write_all(&bytes[at..end]).await.unwrap();
                at = end;
                if rng.below(3) == 0 {
                    tokio::time::sleep(Duration::from_micros(rng.below(300))).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
        .await;
        let mut rng = Rng(seed);
        let mut next = 0u32;
        let mut dropped = 0;
        loop {
            let how = match rng.below(3) {
                0 => Drop::Timeout(Duration::from_micros(rng.below(300))),
                1 => Drop::Polls(1 + u32::try_from(rng.below(3)).unwrap()),
                _ => Drop::Await,
            };
            let result = how.run(stream.recv()).await;
            match result {
                None => dropped += 1,
                Some(r) => match r.unwrap() {
                    Some(f) => {
                        assert_eq!(f, frame(next), "frame {next}");
                        next += 1;
                    }
                    None => break,
                },
            }
        }
        println!("{next} frames, {dropped} recv futures dropped");
        assert_eq!(next, FRAMES);
        assert!(dropped >= 100, "{dropped}");
        assert_eq!(stream.recv().await.unwrap(), None);
    });
}

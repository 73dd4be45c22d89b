//! A hostile server at the connection layer: frames whose length field is impossible or over
//! the limit of the connection's phase (before authentication too), frames that declare much
//! and send little (memory measured by the counting allocator), backend messages that have no
//! place in CopyBoth, a connection that ends inside a header; and the cancel safety of
//! `CopyBoth::recv`, dropped at random points over thousands of frames written in random
//! pieces.
//!
//! `CopyBoth::send` and `simple_query` poison the connection when dropped mid-way; that is
//! tested in `cancel.rs`.

use std::time::Duration;

use pgtest::alloc::Window;
use pgtest::cancel::Mix;
use pgtest::fake::{message as msg, FakeWalsender, Startup};
use walconn::{Connection, ErrorKind, Phase, MAX_MESSAGE_LEN, MAX_STARTUP_MESSAGE_LEN};

use crate::fake_server::start;
use crate::{block_on, config};

/// The most a connection may allocate in one block, or hold at its peak, while a header
/// claims up to 1 GiB and at most 256 KiB follow: the read buffer grows by doubling at most,
/// so this is twice what came plus a 64 KiB chunk and what connecting costs, with room to
/// spare, and far below any length a header can claim.
const SMALL: usize = 1 << 20;

/// How `recv` is dropped: a third of the calls after up to 300 µs, a third after 1-3 polls, a
/// third awaited.
const RECV_MIX: Mix = Mix {
    timeouts: 1,
    max_timeout: Duration::from_micros(300),
    polls: 1,
    max_polls: 3,
    awaits: 1,
};

/// Serves `bytes` after one good frame and keeps the connection open; returns the error of
/// the second `recv`, which must come from the bytes alone (within 5 s).
fn second_recv_error(bytes: Vec<u8>) -> walconn::Error {
    block_on(async move {
        let mut stream = start(move |peer| {
            let mut out = msg(b'd', b"good");
            out.extend_from_slice(&bytes);
            async move {
                assert!(peer.send(&out).await);
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
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
    let len = u32::try_from(MAX_MESSAGE_LEN + 1).unwrap();
    let mut bad = vec![b'd'];
    bad.extend_from_slice(&len.to_be_bytes());
    let err = second_recv_error(bad);
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");
    assert!(err.to_string().contains("more than the"), "{err}");
}

#[test]
fn hostile_gigabyte_length_before_authentication_is_refused_from_the_header() {
    // The answer to the startup packet (from a server, or from a man in the middle under
    // sslmode=prefer) claims 1 GiB: a length a CopyData may have later, but nothing before
    // ReadyForQuery may. The fake keeps the connection open, so only the header can decide.
    let mut request = vec![b'R'];
    request.extend_from_slice(&u32::try_from(MAX_MESSAGE_LEN).unwrap().to_be_bytes());
    request.extend_from_slice(&[0; 64]);
    block_on(async move {
        let startup = Startup::new().auth_request(request);
        let server = FakeWalsender::start_with(startup, |_| async {}).await;
        let window = Window::open();
        let config = config(&server.conninfo());
        let err = tokio::time::timeout(Duration::from_secs(5), Connection::connect(&config))
            .await
            .expect("refused from the header alone")
            .unwrap_err();
        let usage = window.usage();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");
        assert!(!err.is_retryable(), "{err}");
        let too_long = err.message_too_long().unwrap();
        assert_eq!(too_long.tag, b'R');
        assert_eq!(too_long.declared, MAX_MESSAGE_LEN);
        assert_eq!(too_long.limit, MAX_STARTUP_MESSAGE_LEN);
        assert_eq!(too_long.phase, Phase::Authentication);
        // The cause is the source: `{:#}` shows the chain.
        let text = format!("{err:#}");
        for part in ["'R'", "1073741824", "authentication", "1048576"] {
            assert!(text.contains(part), "{part}: {text}");
        }
        println!("{usage:?}");
        assert!(usage.largest < SMALL && usage.peak < SMALL, "{usage:?}");
    });
}

#[test]
fn hostile_startup_message_of_exactly_the_limit_passes_and_one_byte_more_is_refused() {
    // A ParameterStatus between AuthenticationOk and ReadyForQuery (a role's long search_path,
    // say) whose length field is the startup limit, then one byte more.
    let status = |len: usize| {
        let mut body = b"x_long\0".to_vec();
        body.resize(len - 4 - 1, b'v');
        body.push(0);
        msg(b'S', &body)
    };
    for len in [MAX_STARTUP_MESSAGE_LEN, MAX_STARTUP_MESSAGE_LEN + 1] {
        block_on(async move {
            let startup = Startup::new().before_ready(status(len));
            let server = FakeWalsender::start_with(startup, |_| async {}).await;
            let config = config(&server.conninfo());
            let result = tokio::time::timeout(Duration::from_secs(5), Connection::connect(&config))
                .await
                .expect("decided from the bytes at hand");
            if len == MAX_STARTUP_MESSAGE_LEN {
                let conn = result.unwrap();
                let value = conn.parameter("x_long").unwrap();
                assert_eq!(value.len(), len - 4 - b"x_long\0\0".len());
                return;
            }
            let err = result.unwrap_err();
            let too_long = err.message_too_long().unwrap();
            assert_eq!(
                (
                    too_long.tag,
                    too_long.declared,
                    too_long.limit,
                    too_long.phase
                ),
                (b'S', len, MAX_STARTUP_MESSAGE_LEN, Phase::Startup),
                "{err}"
            );
            assert!(format!("{err:#}").contains("during startup"), "{err:#}");
        });
    }
}

#[test]
fn hostile_copy_data_declaring_the_maximum_holds_only_the_bytes_that_came() {
    // Exactly the limit is allowed, so the client waits for the rest of the frame; its buffer
    // must grow with the bytes that arrive (256 KiB, more than its first 64 KiB chunk), not
    // with the 1 GiB the header claims.
    const SENT: usize = 256 << 10;
    block_on(async {
        let mut stream = start(|peer| async move {
            let mut out = vec![b'd'];
            out.extend_from_slice(&u32::try_from(MAX_MESSAGE_LEN).unwrap().to_be_bytes());
            out.resize(out.len() + SENT, b'w');
            assert!(peer.send(&out).await);
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let window = Window::open();
        let waited = tokio::time::timeout(Duration::from_millis(500), stream.recv()).await;
        let usage = window.usage();
        assert!(
            waited.is_err(),
            "a frame of the limit is not refused: {waited:?}"
        );
        println!("{usage:?}");
        // At least what came is held (so the bytes were read), and at most a little more.
        assert!(usage.largest >= SENT, "{usage:?}");
        assert!(usage.largest < SMALL && usage.peak < SMALL, "{usage:?}");
    });
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
        let mut stream = start(|peer| async move {
            let mut out = msg(b'd', b"good");
            out.extend_from_slice(&[b'd', 0, 0]);
            assert!(peer.send(&out).await);
            peer.close().await;
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
    let seed = pgtest::seed();
    block_on(async move {
        let mut stream = start(move |peer| async move {
            let mut rng = fastrand::Rng::with_seed(seed.rotate_left(17));
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
                let end = (at + rng.usize(1..=2000)).min(bytes.len());
                assert!(peer.send(&bytes[at..end]).await);
                at = end;
                if rng.u32(..3) == 0 {
                    tokio::time::sleep(Duration::from_micros(rng.u64(..300))).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
        .await;
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut next = 0u32;
        let mut dropped = 0;
        loop {
            let result = RECV_MIX.pick(&mut rng).run(stream.recv()).await;
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

//! Truncated and corrupt captures: every good line first, then one error naming the byte offset
//! (and the message type where known), and exit code 1.

use walproto::pgoutput::{Begin, Column, Message, ReplicaIdentity};
use walproto::{Lsn, Xid};

use crate::support::*;

const BEGIN_LINE: &str = r#"{"type":"begin","lsn":"0/100","final_lsn":"0/200","commit_time":"2026-11-24T12:00:00.123456Z","xid":7}"#;

fn begin() -> Vec<u8> {
    enc(Message::Begin(Begin {
        final_lsn: Lsn::new(0x200),
        commit_time: time(0),
        xid: Xid(7),
    }))
}

fn table() -> Vec<u8> {
    relation(
        None,
        16384,
        "public",
        "t",
        ReplicaIdentity::Default,
        &[(true, "id", 23, -1), (false, "v", 25, -1)],
    )
}

/// A capture with a transaction's first messages: Begin, Relation, and an Insert.
fn good_start() -> Capture {
    Capture::new(&header(1, "off"))
        .w(0x100, &begin())
        .w(0, &table())
        .w(
            0x110,
            &insert(None, 16384, &[Column::Text(b"1"), Column::Null]),
        )
}

#[track_caller]
fn assert_failed(run: &Run, good_lines: usize, stderr: &str) {
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    assert_eq!(run.lines().len(), good_lines, "{}", run.stdout);
    assert_eq!(run.stderr, format!("error: <stdin>: {stderr}\n"));
}

#[test]
fn truncated_last_frame_prints_the_good_lines_then_the_offset() {
    let start = good_start();
    let last_frame_at = start.len();
    let full = start.w(
        0x120,
        &insert(None, 16384, &[Column::Text(b"2"), Column::Null]),
    );
    let frame_len = full.len() - last_frame_at;
    // Cut inside the payload, then inside the length prefix.
    let cut = Capture {
        bytes: full.bytes[..full.len() - 5].to_vec(),
    };
    let run = decode(&cut, &[]);
    assert_failed(
        &run,
        3,
        &format!(
            "byte offset {last_frame_at}: truncated frame: its length prefix says {} bytes of \
             payload but the file ends after {} of them",
            frame_len - 4,
            frame_len - 4 - 5
        ),
    );
    assert_eq!(run.lines()[0], BEGIN_LINE);

    let cut = Capture {
        bytes: full.bytes[..last_frame_at + 2].to_vec(),
    };
    assert_failed(
        &decode(&cut, &[]),
        3,
        &format!(
            "byte offset {last_frame_at}: truncated frame: the file ends after 2 of the 4 bytes \
             of its length prefix"
        ),
    );
}

#[test]
fn truncated_file_names_its_path() {
    let full = good_start();
    let path = std::env::temp_dir().join(format!("walstream-it-{}.walcap", std::process::id()));
    std::fs::write(&path, &full.bytes[..full.len() - 1]).unwrap();
    let run = walstream(&["decode", path.to_str().unwrap()], b"");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(run.code, 1);
    assert_eq!(run.lines().len(), 2);
    assert!(
        run.stderr
            .starts_with(&format!("error: {}: byte offset ", path.display())),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_magic() {
    let run = walstream(&["decode", "-"], b"WALCAP2\n{}\n");
    assert_failed(&run, 0, "byte offset 0: not a WALCAP1 capture file");
    let run = walstream(&["decode", "-"], b"PK\x03\x04");
    assert_failed(&run, 0, "byte offset 0: not a WALCAP1 capture file");
    let run = walstream(&["decode", "-"], b"");
    assert_failed(
        &run,
        0,
        "byte offset 0: the file ends after 0 bytes, before the header line's newline",
    );
}

#[test]
fn bad_headers_are_named() {
    for (header, detail) in [
        (
            r#"{"proto_version":1}"#,
            "missing field `streaming` at line 1 column 19",
        ),
        (
            r#"{"proto_version":"1","streaming":"off"}"#,
            "invalid type: string \"1\", expected u32 at line 1 column 20",
        ),
        (
            r#"{"proto_version":9,"streaming":"off"}"#,
            "proto_version 9 is not a pgoutput version (1 to 4)",
        ),
        ("not json", "expected ident at line 1 column 2"),
    ] {
        let run = decode(&Capture::new(header), &[]);
        assert_failed(&run, 0, &format!("byte offset 8, capture header: {detail}"));
    }
}

#[test]
fn row_for_an_unknown_relation() {
    let cap = Capture::new(&header(1, "off")).w(0x100, &begin());
    let insert_at = cap.len() + 4 + 25;
    let cap = cap.w(0x110, &insert(None, 16999, &[Column::Text(b"1")]));
    assert_failed(
        &decode(&cap, &[]),
        1,
        &format!(
            "byte offset {insert_at}, insert message 'I' at LSN 0/110: row for relation 16999 \
             that no Relation message described"
        ),
    );
}

#[test]
fn corrupt_messages_name_offset_and_type() {
    // A Begin cut short: the parser names the offset where the bytes ran out.
    let cap = good_start();
    let at = cap.len();
    let cap = cap.w(0x130, &begin()[..10]);
    assert_failed(
        &decode(&cap, &[]),
        3,
        &format!(
            "byte offset {}, begin message 'B' at LSN 0/130: message ends before a required field",
            at + 4 + 25 + 9
        ),
    );

    // An unknown pgoutput message type.
    let cap = good_start();
    let at = cap.len();
    let cap = cap.w(0x130, b"Zzz");
    assert_failed(
        &decode(&cap, &[]),
        3,
        &format!(
            "byte offset {}, message type 'Z' at LSN 0/130: unknown message type",
            at + 4 + 25
        ),
    );

    // An unknown replication message.
    let cap = good_start();
    let at = cap.len();
    let cap = cap.raw(b"x123");
    assert_failed(
        &decode(&cap, &[]),
        3,
        &format!(
            "byte offset {}, replication message 'x': unknown message type",
            at + 4
        ),
    );

    // An empty XLogData.
    let cap = good_start();
    let at = cap.len();
    let cap = cap.w(0x130, b"");
    assert_failed(
        &decode(&cap, &[]),
        3,
        &format!(
            "byte offset {}, pgoutput message at LSN 0/130: empty message",
            at + 4 + 25
        ),
    );

    // A length prefix no server could send.
    let mut cap = good_start();
    let at = cap.len();
    cap.bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_failed(
        &decode(&cap, &[]),
        3,
        &format!("byte offset {at}: length 4294967295 exceeds the limit of 1073741823 bytes"),
    );

    // A Commit without a Begin.
    let cap = Capture::new(&header(1, "off")).w(0x100, &begin());
    let at = cap.len();
    let cap = cap.w(0x100, &begin());
    assert_failed(
        &decode(&cap, &[]),
        1,
        &format!(
            "byte offset {}, begin message 'B' at LSN 0/100: message out of order for the \
             stream state",
            at + 4 + 25
        ),
    );
}

#[test]
fn a_name_longer_than_any_server_sends_is_named_with_its_length_and_offset() {
    let cap = Capture::new(&header(1, "off")).w(0x100, &begin());
    let at = cap.len();
    let long = "t".repeat(walproto::pgoutput::MAX_NAME_LEN + 1);
    let cap = cap.w(
        0,
        &relation(
            None,
            16384,
            "public",
            &long,
            ReplicaIdentity::Default,
            &[(true, "id", 23, -1)],
        ),
    );
    // The table name starts after the tag, the OID and "public\0".
    assert_failed(
        &decode(&cap, &[]),
        1,
        &format!(
            "byte offset {}, relation message 'R' at LSN 0/0: name of 257 bytes exceeds the \
             limit of 256 bytes",
            at + 4 + 25 + 12
        ),
    );
}

#[test]
fn text_that_is_not_utf8_is_an_error_not_a_guess() {
    let cap = good_start();
    let at = cap.len();
    let cap = cap.w(
        0x120,
        &insert(None, 16384, &[Column::Text(b"1"), Column::Text(b"\xff")]),
    );
    assert_failed(
        &decode(&cap, &[]),
        3,
        &format!(
            "byte offset {}, insert message 'I' at LSN 0/120: text value of column \"v\" of \
             public.t is not valid UTF-8",
            at + 4 + 25
        ),
    );
}

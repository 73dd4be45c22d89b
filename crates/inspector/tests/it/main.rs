//! The inspector's decoding, natively: the same code the wasm module runs, held to
//! `walstream decode`'s lines (`testdata/*.jsonl`, which the CLI's test pins to its output) for
//! every recorded capture, and to the CLI's wording for bad input. `tests/node.mjs` runs the
//! same checks on the wasm module (`cargo xtask wasm --test`).

use std::fs;

use pgtest::testdata;
use walcap_inspector::inspect;

#[test]
fn every_recorded_capture_gives_the_lines_of_walstream_decode() {
    let pairs = testdata::pairs(&testdata::dir(), "jsonl", false);
    assert!(!pairs.is_empty(), "no captures in testdata/");
    for (capture, expected) in pairs {
        let file = fs::read(&capture).unwrap();
        let found = inspect(&file);
        assert_eq!(found.error, None, "{}", capture.display());
        let expected = fs::read_to_string(&expected).unwrap();
        for (n, (got, want)) in found.jsonl.lines().zip(expected.lines()).enumerate() {
            assert_eq!(got, want, "{} line {}", capture.display(), n + 1);
        }
        assert_eq!(found.jsonl, expected, "{}", capture.display());
        assert_eq!(found.messages.len(), expected.lines().count());
        // Each line's frame is a whole XLogData frame, in file order.
        let mut end = 0;
        for m in &found.messages {
            assert!(m.frame_offset >= end, "{}", capture.display());
            let frame = &file[m.frame_offset..m.frame_offset + m.frame_len];
            let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!((len + 4, frame[4]), (m.frame_len, b'w'));
            end = m.frame_offset + m.frame_len;
        }
    }
}

/// Every message between a Begin and its Commit belongs to the Begin's transaction; streamed
/// messages to their stream's.
#[test]
fn messages_are_grouped_by_their_transaction() {
    for name in ["pg16-v1", "pg16-v2-stream", "pg16-v3-twophase"] {
        let file = fs::read(testdata::dir().join(format!("{name}.walcap"))).unwrap();
        let found = inspect(&file);
        let mut open = None;
        let mut in_stream = false;
        for (line, m) in found.jsonl.lines().zip(&found.messages) {
            let kind = line.split('"').nth(3).unwrap();
            let own_xid = line.split(",\"xid\":").nth(1).map(|rest| {
                rest.split([',', '}'])
                    .next()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap()
            });
            match kind {
                "begin" | "begin_prepare" => open = own_xid,
                "stream_start" => {
                    open = own_xid;
                    in_stream = true;
                }
                _ => {}
            }
            // Inside a streamed block a line's `xid` may be a subtransaction's: the block's
            // top-level xid is the transaction.
            let want = if in_stream { open } else { own_xid.or(open) };
            assert_eq!(m.xid.map(|x| x.0), want, "{name}: {line}");
            if matches!(kind, "commit" | "prepare" | "stream_stop") {
                open = None;
                in_stream = false;
            }
        }
    }
}

#[test]
fn bad_input_says_what_and_where_like_the_cli() {
    let good = fs::read(testdata::dir().join("pg15-v1.walcap")).unwrap();
    let expected = fs::read_to_string(testdata::dir().join("pg15-v1.jsonl")).unwrap();
    let header_end = good.iter().skip(8).position(|&b| b == b'\n').unwrap() + 9;
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "foreign",
            b"%PDF-1.7\n",
            "byte offset 0: not a WALCAP1 capture file",
        ),
        (
            "cut in the header",
            &good[..20],
            "byte offset 20: the file ends after 20 bytes, before the header line's newline",
        ),
        (
            "cut in a length prefix",
            &good[..header_end + 3],
            &format!(
                "byte offset {header_end}: truncated frame: the file ends after 3 of the 4 \
                 bytes of its length prefix"
            ),
        ),
        (
            "not JSON",
            b"WALCAP1\n[1,2]\n",
            "byte offset 8, capture header: ",
        ),
        (
            "empty",
            b"",
            "byte offset 0: the file ends after 0 bytes, before the header line's newline",
        ),
    ];
    for (what, file, want) in cases {
        // The whole message, but for serde_json's words after a header's prefix.
        let error = inspect(file).error.unwrap_or_default();
        assert!(error.starts_with(want), "{what}: {error}");
    }
    // Cut inside a frame: the lines before it, then the error naming that frame.
    let whole = inspect(&good);
    for (n, m) in whole.messages.iter().enumerate().step_by(97) {
        let cut = m.frame_offset + m.frame_len / 2;
        let found = inspect(&good[..cut]);
        let error = found.error.unwrap_or_default();
        assert!(
            error.starts_with(&format!(
                "byte offset {}: truncated frame: ",
                m.frame_offset
            )),
            "cut at {cut}: {error}"
        );
        assert_eq!(found.messages.len(), n, "cut at {cut}");
        assert!(expected.starts_with(&found.jsonl), "cut at {cut}");
    }
}

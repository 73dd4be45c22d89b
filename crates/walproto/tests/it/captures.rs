//! Data-driven: every stream recorded from a real server in `testdata/` decodes without error,
//! re-encodes byte for byte, and matches its committed summary in `testdata/expected/`.
//!
//! Set `UPDATE_EXPECT=1` to rewrite the summaries (refused under CI); review the diff like
//! code. The captures are those `testdata/README.md` lists: a missing capture or summary, or
//! one left over, fails (`pgtest::testdata::pairs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use walproto::capture::Capture;
use walproto::pgoutput::{Column, Message, OldTuple, TupleData};
use walproto::replication::ServerMessage;
use walproto::Decoder;

fn summarize(path: &Path) -> String {
    let file = std::fs::read(path).unwrap();
    let cap = Capture::parse(&file).unwrap();
    let header = walproto::capture::Header::from_json(cap.header()).unwrap();
    let (version, streaming) = (header.proto_version.number(), header.streaming);
    let mut decoder = Decoder::new(header.proto_version, streaming);
    let mut tags: BTreeMap<char, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut relations: BTreeMap<String, String> = BTreeMap::new();
    let mut frames = 0;
    let mut stream_xids = 0;
    for frame in cap.frames() {
        let frame = frame.unwrap();
        // Keepalives are counted nowhere: how many the server sends depends on timing, so
        // they would make the summary change from one recording to the next.
        let ServerMessage::XLogData(x) = ServerMessage::parse(frame.payload).unwrap() else {
            continue;
        };
        frames += 1;
        let decoded = decoder
            .decode(x.data)
            .unwrap_or_else(|e| panic!("{}: frame at {}: {e}", path.display(), frame.offset));
        let msg = decoded.message;
        // Real messages re-encode to exactly the bytes the server sent.
        let mut again = Vec::new();
        msg.encode(&mut again);
        assert_eq!(again, x.data, "{}: re-encode of {msg:?}", path.display());
        *tags.entry(msg.tag() as char).or_default() += 1;
        stream_xids += usize::from(msg.stream_xid().is_some());
        let mut count = |t: &TupleData<'_>| {
            for c in t.columns() {
                let k = match c {
                    Column::Null => "null",
                    Column::UnchangedToast => "unchanged_toast",
                    Column::Text(_) => "text",
                    Column::Binary(_) => "binary",
                };
                *kinds.entry(k).or_default() += 1;
            }
        };
        match msg {
            Message::Insert(i) => count(&i.new),
            Message::Update(u) => {
                count(&u.new);
                if let Some(o) = u.old {
                    count(o.tuple());
                }
            }
            Message::Delete(d) => count(match &d.old {
                OldTuple::Key(t) | OldTuple::Full(t) => t,
            }),
            Message::Relation(r) => {
                let cols: Vec<String> = r
                    .columns
                    .iter()
                    .map(|c| {
                        format!(
                            "{}{}:{}",
                            if c.is_key() { "*" } else { "" },
                            c.name,
                            c.type_oid
                        )
                    })
                    .collect();
                relations.insert(
                    format!("{}.{}", r.namespace, r.name),
                    format!("{:?} [{}]", r.replica_identity, cols.join(", ")),
                );
            }
            _ => {}
        }
    }
    assert!(
        decoder.is_idle(),
        "{} ends inside a transaction",
        path.display()
    );
    let mut out = String::new();
    writeln!(out, "proto_version {version} streaming {streaming:?}").unwrap();
    writeln!(out, "xlogdata frames {frames}").unwrap();
    writeln!(out, "messages with a stream xid {stream_xids}").unwrap();
    for (t, n) in &tags {
        writeln!(out, "tag {t} {n}").unwrap();
    }
    for (k, n) in &kinds {
        writeln!(out, "column {k} {n}").unwrap();
    }
    for (name, desc) in &relations {
        writeln!(out, "relation {name} {desc}").unwrap();
    }
    out
}

#[test]
fn recorded_streams_decode_and_match_their_summaries() {
    let mut checked = 0;
    let update = pgtest::testdata::update_expect();
    // Every capture testdata/README.md lists, each with its summary, and no file left over.
    let pairs =
        pgtest::testdata::pairs(&pgtest::testdata::dir().join("expected"), "summary", update);
    let mut failures = Vec::new();
    for (path, expected_path) in &pairs {
        let got = summarize(path);
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if update {
            std::fs::create_dir_all(expected_path.parent().unwrap()).unwrap();
            std::fs::write(expected_path, &got).unwrap();
        } else {
            let want = std::fs::read_to_string(expected_path).unwrap_or_default();
            if want != got {
                failures.push(format!("{name}:\n--- expected\n{want}\n--- got\n{got}"));
            }
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{}\n(UPDATE_EXPECT=1 rewrites)",
        failures.join("\n")
    );
    // Captures from all four majors are committed; a missing one is a failure, not a skip.
    assert!(checked >= 4, "only {checked} captures in testdata/");
    assert_eq!(checked, pgtest::testdata::listed_captures().len());
}

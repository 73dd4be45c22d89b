//! The public API of issue 17's "rows and events you can use": [`EventDecoder`] over the
//! recorded captures, the events' JSON (feature `serde`, which the tests turn on) checked
//! against the CLI's JSON lines of the same captures, `Change::relation`, `OldRow`'s key view
//! and the non-transactional messages of a `TransactionStream`.

use bytes::Bytes;
use walstream::walproto::capture::{Capture, Header};
use walstream::{ChangeEvent, EventDecoder, EventKind};

/// The JSON lines types whose CLI form has fields the events do not keep: `flags` of the
/// two-phase messages (always 0).
const NO_FLAGS: [&str; 4] = [
    "prepare",
    "stream_prepare",
    "commit_prepared",
    "rollback_prepared",
];

/// Every XLogData of the capture `name`, decoded.
fn decode_capture(name: &str) -> Vec<ChangeEvent> {
    let path = pgtest::testdata::dir().join(format!("{name}.walcap"));
    let file = std::fs::read(&path).unwrap();
    let capture = Capture::parse(&file).unwrap();
    let header = Header::from_json(capture.header()).unwrap();
    let mut decoder = EventDecoder::new(&header.options());
    let mut events = Vec::new();
    for frame in capture.frames() {
        let payload = Bytes::copy_from_slice(frame.unwrap().payload);
        if let Some(event) = decoder.decode(&payload).unwrap() {
            events.push(event);
        }
    }
    assert!(
        decoder.between_transactions(),
        "{name} ends inside a transaction"
    );
    events
}

#[test]
fn decoder_and_json_agree_with_the_cli_on_every_capture() {
    let captures = pgtest::testdata::listed_captures();
    assert!(!captures.is_empty());
    for name in captures {
        let events = decode_capture(&name);
        let jsonl =
            std::fs::read_to_string(pgtest::testdata::dir().join(format!("{name}.jsonl"))).unwrap();
        let lines: Vec<&str> = jsonl.lines().collect();
        assert_eq!(events.len(), lines.len(), "{name}: one event per JSON line");
        for (i, (event, line)) in events.iter().zip(&lines).enumerate() {
            let ours = serde_json::to_string(event).unwrap();
            let mut cli: serde_json::Value = serde_json::from_str(line).unwrap();
            let kind = cli["type"].as_str().unwrap().to_owned();
            if NO_FLAGS.contains(&kind.as_str()) {
                cli.as_object_mut().unwrap().remove("flags");
            }
            // Relation and Type messages inside a streamed block carry an xid pgoutput sends
            // but the events do not keep.
            if kind == "relation" || kind == "type" {
                cli.as_object_mut().unwrap().remove("xid");
            }
            let ours_value: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(ours_value, cli, "{name} line {}: {ours}", i + 1);
            if !NO_FLAGS.contains(&kind.as_str()) && kind != "relation" && kind != "type" {
                // Same fields in the same order: byte for byte the CLI's line.
                assert_eq!(ours, *line, "{name} line {}", i + 1);
            }
        }
    }
}

#[test]
fn decoder_errors_name_the_lsn_and_keepalives_are_not_events() {
    let mut decoder = EventDecoder::new(&walstream::walproto::pgoutput::Options::new(
        walstream::ProtocolVersion::V1,
    ));
    // A keepalive: `k`, wal_end, send_time, reply requested.
    let mut keepalive = vec![b'k'];
    keepalive.extend_from_slice(&[0; 17]);
    assert!(decoder.decode(&Bytes::from(keepalive)).unwrap().is_none());
    // An XLogData at 0/10 whose Insert names a relation never described.
    let mut x = vec![b'w'];
    x.extend_from_slice(&0x10u64.to_be_bytes());
    x.extend_from_slice(&0x10u64.to_be_bytes());
    x.extend_from_slice(&0i64.to_be_bytes());
    x.extend_from_slice(b"I\0\0\x40\x00N\0\x01n");
    let err = decoder.decode(&Bytes::from(x)).unwrap_err();
    assert!(err.decode().is_some(), "{err}");
    assert!(err.to_string().contains("0/10"), "{err}");
    assert!(decoder.decode(&Bytes::from_static(b"?")).is_err());
}

#[test]
fn change_relation_and_the_old_key_view() {
    let events = decode_capture("pg15-v1");
    let mut keys = 0;
    for event in &events {
        let EventKind::Delete(d) = &event.kind else {
            continue;
        };
        let change = walstream::Change {
            lsn: event.lsn,
            kind: walstream::ChangeKind::Delete(d.clone()),
        };
        assert!(std::sync::Arc::ptr_eq(
            change.relation().unwrap(),
            &d.relation
        ));
        if d.old.is_key() {
            keys += 1;
            let carried: Vec<_> = d.old.iter().map(|(c, _)| c.name.clone()).collect();
            let key: Vec<_> = d
                .relation
                .columns
                .iter()
                .filter(|c| c.key)
                .map(|c| c.name.clone())
                .collect();
            assert_eq!(carried, key);
            for c in d.relation.columns.iter().filter(|c| !c.key) {
                assert_eq!(d.old.get(&c.name), None, "{}", c.name);
            }
            for c in d.relation.columns.iter().filter(|c| c.key) {
                assert!(d.old.get(&c.name).is_some(), "{}", c.name);
            }
        } else {
            assert_eq!(d.old.iter().count(), d.relation.columns.len());
        }
    }
    assert!(keys > 0, "the capture has deletes by key");
}

#[test]
fn non_transactional_messages_come_through_a_transaction_stream_in_order() {
    use std::time::Duration;
    use walstream::{TransactionConfig, TransactionItem};

    pgtest::for_each_major(15, |cluster| {
        let f = crate::Fixture::new(cluster, "ws_api_msgs");
        f.db.psql(
            "INSERT INTO t VALUES (1, 'before');
             SELECT pg_logical_emit_message(false, 'api', 'outside');
             BEGIN;
             INSERT INTO t VALUES (2, 'with messages');
             SELECT pg_logical_emit_message(true, 'api', 'inside');
             COMMIT;
             INSERT INTO t VALUES (-1, 'marker');",
        )
        .unwrap();
        crate::block_on(async {
            let events = f.start(f.config().messages(true)).await;
            let mut items = events.into_transactions(TransactionConfig::default().messages(true));
            let mut got = Vec::new();
            loop {
                let item = tokio::time::timeout(Duration::from_secs(60), items.next_item())
                    .await
                    .expect("timed out")
                    .unwrap()
                    .expect("the stream ended");
                match item {
                    TransactionItem::Message(m) => {
                        assert!(!m.transactional);
                        got.push(format!("message {}:{}", m.prefix, m.content.escape_ascii()));
                    }
                    TransactionItem::Transaction(tx) => {
                        items.ack(&tx);
                        let mut done = false;
                        for change in tx.changes() {
                            match change.unwrap().kind {
                                walstream::ChangeKind::Insert(i) => {
                                    let id = i.new.get("id").unwrap();
                                    done |= id.as_text() == Some("-1");
                                    got.push(format!("insert {}", id.as_text().unwrap()));
                                }
                                walstream::ChangeKind::Message(m) => {
                                    assert!(m.transactional);
                                    got.push(format!("tx message {}", m.content.escape_ascii()));
                                }
                                other => panic!("{other:?}"),
                            }
                        }
                        if done {
                            break;
                        }
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(
                got,
                [
                    "insert 1",
                    "message api:outside",
                    "insert 2",
                    "tx message inside",
                    "insert -1"
                ]
            );
            items.shutdown().await.unwrap();
        });
    });
}

//! The stateful decoder: stream blocks, transaction order, the relation cache, row checks.

use walproto::pgoutput::*;
use walproto::{Decoder, ErrorKind, Lsn, Oid, Timestamp, Xid};

fn enc(m: Message<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    v
}

fn begin(xid: u32) -> Vec<u8> {
    enc(Message::Begin(Begin {
        final_lsn: Lsn::new(0x100),
        commit_time: Timestamp::new(0),
        xid: Xid(xid),
    }))
}

fn commit() -> Vec<u8> {
    enc(Message::Commit(Commit {
        flags: 0,
        commit_lsn: Lsn::new(0x100),
        end_lsn: Lsn::new(0x108),
        commit_time: Timestamp::new(0),
    }))
}

fn relation(xid: Option<u32>, id: u32, table: &str, cols: &[(&str, bool)]) -> Vec<u8> {
    let mut body = (cols.len() as u16).to_be_bytes().to_vec();
    for (name, key) in cols {
        RelationColumn {
            flags: u8::from(*key),
            name,
            type_oid: Oid(25),
            type_modifier: -1,
        }
        .encode(&mut body);
    }
    enc(Message::Relation(Relation {
        xid: xid.map(Xid),
        id: Oid(id),
        namespace: "public",
        name: table,
        replica_identity: ReplicaIdentity::Default,
        columns: RelationColumns::parse(&body).unwrap(),
    }))
}

fn insert(xid: Option<u32>, id: u32, values: &[&str]) -> Vec<u8> {
    let mut t = Vec::new();
    encode_columns(values.iter().map(|v| Column::Text(v.as_bytes())), &mut t);
    enc(Message::Insert(Insert {
        xid: xid.map(Xid),
        relation_id: Oid(id),
        new: TupleData::parse(&t).unwrap(),
    }))
}

fn stream_start(xid: u32) -> Vec<u8> {
    enc(Message::StreamStart(StreamStart {
        xid: Xid(xid),
        first_segment: true,
    }))
}

#[test]
fn resolves_rows_to_relations_and_replaces_on_resend() {
    let mut d = Decoder::new(ProtocolVersion::V1, Streaming::Off);
    d.decode(&begin(1)).unwrap();
    d.decode(&relation(None, 10, "t", &[("id", true), ("v", false)]))
        .unwrap();
    let ins = insert(None, 10, &["1", "a"]);
    let got = d.decode(&ins).unwrap();
    let rel = got.relation.unwrap();
    assert_eq!((rel.name.as_str(), rel.columns.len()), ("t", 2));
    assert!(rel.columns[0].key && !rel.columns[1].key);
    // A schema change: the relation is re-sent with three columns and replaces the old one.
    d.decode(&relation(
        None,
        10,
        "t",
        &[("id", true), ("v", false), ("w", false)],
    ))
    .unwrap();
    let e = d.decode(&ins).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::ColumnCountMismatch {
            expected: 3,
            found: 2
        }
    );
    assert_eq!(e.tag(), Some(b'I'));
    let ins3 = insert(None, 10, &["1", "a", "b"]);
    let got = d.decode(&ins3).unwrap();
    assert_eq!(got.relation.unwrap().columns[2].name, "w");
    d.decode(&commit()).unwrap();
    assert!(d.is_idle());
}

#[test]
fn unknown_relation_is_an_error_not_a_guess() {
    let mut d = Decoder::new(ProtocolVersion::V1, Streaming::Off);
    d.decode(&begin(1)).unwrap();
    let e = d.decode(&insert(None, 99, &["x"])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownRelation(Oid(99)));
    // The failed message changed nothing: the transaction is still open.
    d.decode(&commit()).unwrap();
}

#[test]
fn transaction_order_is_enforced() {
    let mut d = Decoder::new(ProtocolVersion::V1, Streaming::Off);
    assert_eq!(
        d.decode(&commit()).unwrap_err().kind(),
        ErrorKind::OutOfOrder
    );
    d.decode(&begin(1)).unwrap();
    assert_eq!(
        d.decode(&begin(2)).unwrap_err().kind(),
        ErrorKind::OutOfOrder
    );
    d.decode(&commit()).unwrap();
    // Rows outside a transaction are out of order.
    let e = d.decode(&relation(None, 1, "t", &[])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfOrder);
    // A non-transactional logical message may come between transactions.
    let m = enc(Message::Message(LogicalMessage {
        xid: None,
        flags: 0,
        lsn: Lsn::new(5),
        prefix: "p",
        content: b"c",
    }));
    d.decode(&m).unwrap();
}

#[test]
fn stream_blocks_switch_the_parse_context() {
    let mut d = Decoder::new(ProtocolVersion::V2, Streaming::On);
    let stop = enc(Message::StreamStop);
    assert_eq!(d.decode(&stop).unwrap_err().kind(), ErrorKind::OutOfOrder);
    d.decode(&stream_start(700)).unwrap();
    assert_eq!(d.stream_xid(), Some(Xid(700)));
    assert!(d.context().in_stream);
    // Inside the block, rows carry a (sub)transaction xid.
    d.decode(&relation(Some(700), 10, "t", &[("id", true)]))
        .unwrap();
    let ins = insert(Some(701), 10, &["1"]);
    let got = d.decode(&ins).unwrap();
    assert_eq!(got.message.stream_xid(), Some(Xid(701)));
    // The same row without an xid does not parse inside a block.
    assert!(d.decode(&insert(None, 10, &["1"])).is_err());
    assert_eq!(
        d.decode(&stream_start(800)).unwrap_err().kind(),
        ErrorKind::OutOfOrder
    );
    d.decode(&stop).unwrap();
    assert!(!d.context().in_stream);
    let sc = enc(Message::StreamCommit(StreamCommit {
        xid: Xid(700),
        flags: 0,
        commit_lsn: Lsn::new(1),
        end_lsn: Lsn::new(2),
        commit_time: Timestamp::new(3),
    }));
    d.decode(&sc).unwrap();
    // Outside a block, a row without xid parses again (after a Begin).
    d.decode(&begin(5)).unwrap();
    d.decode(&insert(None, 10, &["2"])).unwrap();
}

#[test]
fn prepare_must_match_its_begin() {
    let mut d = Decoder::new(ProtocolVersion::V3, Streaming::Off);
    let bp = enc(Message::BeginPrepare(BeginPrepare {
        prepare_lsn: Lsn::new(1),
        end_lsn: Lsn::new(2),
        prepare_time: Timestamp::new(0),
        xid: Xid(9),
        gid: "g",
    }));
    let prepare = |xid| {
        enc(Message::Prepare(Prepare {
            flags: 0,
            prepare_lsn: Lsn::new(1),
            end_lsn: Lsn::new(2),
            prepare_time: Timestamp::new(0),
            xid: Xid(xid),
            gid: "g",
        }))
    };
    d.decode(&bp).unwrap();
    assert_eq!(
        d.decode(&prepare(10)).unwrap_err().kind(),
        ErrorKind::OutOfOrder
    );
    d.decode(&prepare(9)).unwrap();
    assert!(d.is_idle());
}

#[test]
fn relation_cache_is_bounded() {
    let mut d = Decoder::new(ProtocolVersion::V1, Streaming::Off).with_max_relations(2);
    d.decode(&begin(1)).unwrap();
    d.decode(&relation(None, 1, "a", &[])).unwrap();
    d.decode(&relation(None, 2, "b", &[])).unwrap();
    // Re-describing a cached relation is fine; a third one is not.
    d.decode(&relation(None, 1, "a", &[])).unwrap();
    let e = d.decode(&relation(None, 3, "c", &[])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooManyRelations);
}

fn type_message(id: u32) -> Vec<u8> {
    enc(Message::Type(Type {
        xid: None,
        id: Oid(id),
        namespace: "public",
        name: "mood",
    }))
}

#[test]
fn type_cache_is_bounded() {
    let mut d = Decoder::new(ProtocolVersion::V1, Streaming::Off).with_max_types(2);
    d.decode(&begin(1)).unwrap();
    d.decode(&type_message(1)).unwrap();
    d.decode(&type_message(2)).unwrap();
    // Re-describing a cached type is fine; a third one is not, and is not cached.
    d.decode(&type_message(1)).unwrap();
    let e = d.decode(&type_message(3)).unwrap_err();
    assert_eq!((e.kind(), e.tag()), (ErrorKind::TooManyTypes, Some(b'Y')));
    assert!(d.type_info(Oid(3)).is_none());
    // The stream goes on after the refused message.
    d.decode(&commit()).unwrap();
}

#[test]
fn type_cache_has_a_default_bound() {
    let mut d = Decoder::new(ProtocolVersion::V1, Streaming::Off);
    d.decode(&begin(1)).unwrap();
    for id in 0..walproto::DEFAULT_MAX_TYPES as u32 {
        d.decode(&type_message(id)).unwrap();
    }
    let e = d
        .decode(&type_message(walproto::DEFAULT_MAX_TYPES as u32))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooManyTypes);
}

#[test]
fn truncate_needs_known_relations() {
    let mut d = Decoder::new(ProtocolVersion::V1, Streaming::Off);
    d.decode(&begin(1)).unwrap();
    d.decode(&relation(None, 1, "a", &[])).unwrap();
    let t = |ids: &[u32]| {
        let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_be_bytes()).collect();
        enc(Message::Truncate(Truncate {
            xid: None,
            options: 0,
            relation_ids: RelationIds::new(&bytes).unwrap(),
        }))
    };
    d.decode(&t(&[1])).unwrap();
    assert_eq!(
        d.decode(&t(&[1, 2])).unwrap_err().kind(),
        ErrorKind::UnknownRelation(Oid(2))
    );
}

/// The server sends `0/0` as the XLogData start of Relation and Type messages (and of a Begin
/// followed by Origin); it is a valid position to parse and print, not an error.
#[test]
fn zero_lsn_on_relation_and_type_frames() {
    use walproto::replication::{ServerMessage, XLogData};
    let mut d = Decoder::new(ProtocolVersion::V1, Streaming::Off);
    d.decode(&begin(1)).unwrap();
    let ty = enc(Message::Type(Type {
        xid: None,
        id: Oid(16390),
        namespace: "public",
        name: "posint",
    }));
    for payload in [ty, relation(None, 10, "t", &[("id", true)])] {
        let mut frame = Vec::new();
        ServerMessage::XLogData(XLogData {
            wal_start: Lsn::ZERO,
            wal_end: Lsn::ZERO,
            send_time: Timestamp::new(0),
            data: &payload,
        })
        .encode(&mut frame);
        let ServerMessage::XLogData(x) = ServerMessage::parse(&frame).unwrap() else {
            panic!("not XLogData");
        };
        assert_eq!(x.wal_start.to_string(), "0/0");
        assert!(x.wal_start.is_zero());
        d.decode(x.data).unwrap();
    }
    assert_eq!(d.type_info(Oid(16390)).unwrap().name, "posint");
}

#[test]
fn decode_message_leaves_the_decoder_free_to_query() {
    let mut d = Decoder::new(ProtocolVersion::V1, Streaming::Off);
    d.decode(&begin(1)).unwrap();
    d.decode(&relation(None, 1, "a", &[])).unwrap();
    d.decode(&relation(None, 2, "b", &[])).unwrap();
    let bytes: Vec<u8> = [1u32, 2].iter().flat_map(|i| i.to_be_bytes()).collect();
    let t = enc(Message::Truncate(Truncate {
        xid: None,
        options: 1,
        relation_ids: RelationIds::new(&bytes).unwrap(),
    }));
    let Message::Truncate(t) = d.decode_message(&t).unwrap() else {
        panic!("not a truncate");
    };
    let names: Vec<_> = t
        .relation_ids
        .iter()
        .map(|id| d.relation(id).unwrap().name.clone())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

fn stream_abort(xid: u32, subxid: u32) -> Vec<u8> {
    enc(Message::StreamAbort(StreamAbort {
        xid: Xid(xid),
        subxid: Xid(subxid),
        parallel: None,
    }))
}

/// PostgreSQL 18 sends Stream Aborts to protocol 1 clients that never asked for streaming: the
/// decoder takes them between transactions, marks them stray, and the stream goes on.
#[test]
fn stray_stream_abort_under_protocol_1_is_decoded_and_marked() {
    let mut d = Decoder::new(ProtocolVersion::V1, Streaming::Off);
    d.decode(&begin(1)).unwrap();
    d.decode(&relation(None, 1, "a", &[("id", true)])).unwrap();
    d.decode(&commit()).unwrap();
    let abort = stream_abort(2, 3);
    let stray = d.decode(&abort).unwrap();
    assert!(matches!(stray.message, Message::StreamAbort(_)));
    assert!(stray.stray_abort);
    assert!(d.boundaries().between_transactions());
    d.decode(&begin(4)).unwrap();
    let row = insert(None, 1, &["7"]);
    let row = d.decode(&row).unwrap();
    assert!(!row.stray_abort);
    d.decode(&commit()).unwrap();
    assert!(d.boundaries().between_transactions());
}

#[test]
fn stream_abort_is_stray_only_when_it_matches_no_open_stream() {
    let mut d = Decoder::new(ProtocolVersion::V2, Streaming::On);
    d.decode(&stream_start(7)).unwrap();
    d.decode(&enc(Message::StreamStop)).unwrap();
    assert!(d.decode(&stream_abort(9, 9)).unwrap().stray_abort);
    assert!(!d.boundaries().between_transactions());
    assert!(!d.decode(&stream_abort(7, 8)).unwrap().stray_abort);
    assert!(!d.boundaries().between_transactions());
    assert!(!d.decode(&stream_abort(7, 7)).unwrap().stray_abort);
    assert!(d.boundaries().between_transactions());
}

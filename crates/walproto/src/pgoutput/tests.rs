//! Unit tests for every pgoutput message, from byte vectors built field by field from
//! "Logical Replication Message Formats" (not from the encoder they then check).

use alloc::vec::Vec;

use super::*;
use crate::types::{Lsn, Oid, Timestamp, Xid};

/// Builds a message the way the documentation lists its fields.
#[derive(Default)]
struct B(Vec<u8>);

impl B {
    fn tag(t: u8) -> Self {
        B(alloc::vec![t])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn i16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn s(mut self, v: &str) -> Self {
        self.0.extend_from_slice(v.as_bytes());
        self.0.push(0);
        self
    }
    fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    fn text(self, v: &[u8]) -> Self {
        self.u8(b't').i32(v.len() as u32).raw(v)
    }
}

const V1: ParseContext = ParseContext::new(ProtocolVersion::V1, Streaming::Off);
const V2: ParseContext = ParseContext::new(ProtocolVersion::V2, Streaming::On);
const V3: ParseContext = ParseContext::new(ProtocolVersion::V3, Streaming::On);
const V4P: ParseContext = ParseContext::new(ProtocolVersion::V4, Streaming::Parallel);

/// Parses, checks that encoding gives back the same bytes, and that every truncation fails.
fn check(bytes: &[u8], ctx: ParseContext) -> Message<'_> {
    let msg = Message::parse(bytes, ctx).unwrap();
    let mut out = Vec::new();
    msg.encode(&mut out);
    assert_eq!(out, bytes, "encode of {msg:?}");
    for cut in 0..bytes.len() {
        let err = Message::parse(&bytes[..cut], ctx).unwrap_err();
        assert!(
            err.offset() <= cut,
            "offset {} past cut {cut}",
            err.offset()
        );
    }
    let mut long = bytes.to_vec();
    long.push(0);
    let err = Message::parse(&long, ctx).unwrap_err();
    assert_eq!(
        (err.kind(), err.offset()),
        (ErrorKind::TrailingBytes, bytes.len())
    );
    assert_eq!(err.tag(), Some(bytes[0]));
    msg
}

#[test]
fn begin() {
    let b = B::tag(b'B').i64(0x16B3748).i64(5).i32(740).0;
    assert_eq!(
        check(&b, V1),
        Message::Begin(Begin {
            final_lsn: Lsn::new(0x16B3748),
            commit_time: Timestamp::new(5),
            xid: Xid(740)
        })
    );
}

#[test]
fn commit() {
    let b = B::tag(b'C').u8(0).i64(1).i64(2).i64(3).0;
    assert_eq!(
        check(&b, V1),
        Message::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn::new(1),
            end_lsn: Lsn::new(2),
            commit_time: Timestamp::new(3)
        })
    );
}

#[test]
fn origin() {
    let b = B::tag(b'O').i64(9).s("node_a").0;
    assert_eq!(
        check(&b, V1),
        Message::Origin(Origin {
            commit_lsn: Lsn::new(9),
            name: "node_a"
        })
    );
}

fn relation_bytes(xid: Option<u32>) -> Vec<u8> {
    let mut b = B::tag(b'R');
    if let Some(x) = xid {
        b = b.i32(x);
    }
    b.i32(16384)
        .s("public")
        .s("t")
        .u8(b'd')
        .i16(2)
        .u8(1)
        .s("id")
        .i32(23)
        .i32(u32::MAX)
        .u8(0)
        .s("name")
        .i32(1043)
        .i32(54)
        .0
}

#[test]
fn relation_outside_and_inside_a_stream() {
    let b = relation_bytes(None);
    let Message::Relation(r) = check(&b, V1) else {
        panic!()
    };
    assert_eq!(
        (r.xid, r.id, r.namespace, r.name),
        (None, Oid(16384), "public", "t")
    );
    assert_eq!(r.replica_identity, ReplicaIdentity::Default);
    let cols: Vec<_> = r.columns.iter().collect();
    assert_eq!(cols.len(), 2);
    assert!(cols[0].is_key() && !cols[1].is_key());
    assert_eq!(
        (cols[0].name, cols[0].type_oid, cols[0].type_modifier),
        ("id", Oid(23), -1)
    );
    assert_eq!((cols[1].name, cols[1].type_modifier), ("name", 54));

    let b = relation_bytes(Some(777));
    let Message::Relation(r) = check(&b, V2.in_stream(true)) else {
        panic!()
    };
    assert_eq!(r.xid, Some(Xid(777)));
    // The same bytes outside a stream are a different, invalid message.
    assert!(Message::parse(&b, V2).is_err());
}

#[test]
fn relation_edge_cases() {
    // Zero columns (a table published with no columns), empty namespace (pg_catalog).
    let b = B::tag(b'R').i32(1).s("").s("empty").u8(b'n').i16(0).0;
    let Message::Relation(r) = check(&b, V1) else {
        panic!()
    };
    assert!(r.columns.is_empty());
    assert_eq!(
        (r.namespace, r.replica_identity),
        ("", ReplicaIdentity::Nothing)
    );
    for (byte, ri) in [
        (b'f', ReplicaIdentity::Full),
        (b'i', ReplicaIdentity::Index),
    ] {
        let b = B::tag(b'R').i32(1).s("s").s("t").u8(byte).i16(0).0;
        let Message::Relation(r) = check(&b, V1) else {
            panic!()
        };
        assert_eq!(r.replica_identity, ri);
    }
    let b = B::tag(b'R').i32(1).s("s").s("t").u8(b'x').i16(0).0;
    let e = Message::parse(&b, V1).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::UnknownReplicaIdentity(b'x'), 9)
    );
    // A relation claiming 65535 columns in a 20-byte message is rejected at the count.
    let b = B::tag(b'R')
        .i32(1)
        .s("s")
        .s("t")
        .u8(b'd')
        .i16(u16::MAX)
        .raw(&[0; 6])
        .0;
    let e = Message::parse(&b, V1).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::CountOutOfBounds(65535), 10)
    );
}

#[test]
fn relation_with_the_maximum_column_count() {
    // PostgreSQL allows 1600 columns per table; the wire allows 65535. Both parse.
    for n in [1600u16, u16::MAX] {
        let mut b = B::tag(b'R').i32(1).s("s").s("wide").u8(b'd').i16(n);
        for _ in 0..n {
            b = b.u8(0).s("").i32(25).i32(u32::MAX);
        }
        let Message::Relation(r) = check(&b.0, V1) else {
            panic!()
        };
        assert_eq!(r.columns.len(), n);
        assert_eq!(r.columns.iter().count(), usize::from(n));
    }
}

#[test]
fn names_longer_than_max_name_len_are_refused_where_they_start() {
    // The longest name allowed, in multi-byte characters as a non-ASCII name arrives.
    let max = "\u{20AC}".repeat(MAX_NAME_LEN / 3) + &"n".repeat(MAX_NAME_LEN % 3);
    assert_eq!(max.len(), MAX_NAME_LEN);
    let over = "n".repeat(MAX_NAME_LEN + 1);
    let relation = |ns: &str, name: &str, column: &str| {
        B::tag(b'R')
            .i32(1)
            .s(ns)
            .s(name)
            .u8(b'd')
            .i16(1)
            .u8(1)
            .s(column)
            .i32(23)
            .i32(u32::MAX)
            .0
    };
    let ty = |ns: &str, name: &str| B::tag(b'Y').i32(1).s(ns).s(name).0;
    let b = relation(&max, &max, &max);
    let Message::Relation(r) = check(&b, V1) else {
        panic!()
    };
    assert_eq!((r.namespace, r.name), (max.as_str(), max.as_str()));
    assert_eq!(r.columns.iter().next().map(|c| c.name), Some(max.as_str()));
    let b = ty(&max, &max);
    let Message::Type(t) = check(&b, V1) else {
        panic!()
    };
    assert_eq!((t.namespace, t.name), (max.as_str(), max.as_str()));

    let too_long = ErrorKind::NameTooLong {
        len: MAX_NAME_LEN as u32 + 1,
        max: MAX_NAME_LEN as u32,
    };
    // Namespace and name follow the tag and OID (bytes 0-4); a column's name follows the
    // replica identity (9), the count (10-11) and its flags (12).
    for (b, at) in [
        (relation(&over, "t", "c"), 5),
        (relation("s", &over, "c"), 7),
        (relation("s", "t", &over), 13),
        (ty(&over, "t"), 5),
        (ty("s", &over), 7),
    ] {
        let e = Message::parse(&b, V1).unwrap_err();
        assert_eq!((e.kind(), e.offset(), e.tag()), (too_long, at, Some(b[0])));
    }
    // The length is checked before the bytes are read as UTF-8.
    let mut bad = alloc::vec![0xFF; MAX_NAME_LEN + 1];
    bad.push(0);
    let b = B::tag(b'Y').i32(1).raw(&bad).s("t").0;
    assert_eq!(Message::parse(&b, V1).unwrap_err().kind(), too_long);
}

#[test]
fn strings_must_be_terminated_and_utf8() {
    let e = Message::parse(&B::tag(b'O').i64(1).raw(b"abc").0, V1).unwrap_err();
    assert_eq!((e.kind(), e.offset()), (ErrorKind::UnterminatedString, 9));
    let e = Message::parse(&B::tag(b'O').i64(1).raw(b"a\xFFb\0").0, V1).unwrap_err();
    assert_eq!((e.kind(), e.offset()), (ErrorKind::InvalidUtf8, 10));
}

#[test]
fn type_message_for_a_domain() {
    let b = B::tag(b'Y').i32(16390).s("public").s("posint").0;
    assert_eq!(
        check(&b, V1),
        Message::Type(Type {
            xid: None,
            id: Oid(16390),
            namespace: "public",
            name: "posint"
        })
    );
    let b = B::tag(b'Y').i32(5).i32(16390).s("public").s("mood").0;
    assert!(matches!(
        check(&b, V4P.in_stream(true)),
        Message::Type(Type {
            xid: Some(Xid(5)),
            ..
        })
    ));
}

#[test]
fn insert_with_null_empty_and_toast() {
    let b = B::tag(b'I')
        .i32(16384)
        .u8(b'N')
        .i16(4)
        .text(b"1")
        .text(b"")
        .u8(b'n')
        .u8(b'u')
        .0;
    let Message::Insert(i) = check(&b, V1) else {
        panic!()
    };
    assert_eq!(i.relation_id, Oid(16384));
    let cols: Vec<_> = i.new.columns().collect();
    assert_eq!(
        cols,
        [
            Column::Text(b"1"),
            Column::Text(b""),
            Column::Null,
            Column::UnchangedToast
        ]
    );
    let bad = B::tag(b'I').i32(1).u8(b'K').i16(0).0;
    let e = Message::parse(&bad, V1).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::UnexpectedTupleMarker(b'K'), 5)
    );
}

#[test]
fn insert_binary_in_a_stream() {
    let b = B::tag(b'I')
        .i32(99)
        .i32(16384)
        .u8(b'N')
        .i16(1)
        .u8(b'b')
        .i32(4)
        .i32(7)
        .0;
    let Message::Insert(i) = check(&b, V2.in_stream(true)) else {
        panic!()
    };
    assert_eq!(i.xid, Some(Xid(99)));
    assert_eq!(i.new.columns().next(), Some(Column::Binary(&[0, 0, 0, 7])));
}

#[test]
fn update_forms() {
    // No old tuple.
    let b = B::tag(b'U').i32(1).u8(b'N').i16(1).text(b"x").0;
    assert!(matches!(
        check(&b, V1),
        Message::Update(Update { old: None, .. })
    ));
    // Old key.
    let b = B::tag(b'U')
        .i32(1)
        .u8(b'K')
        .i16(1)
        .text(b"k")
        .u8(b'N')
        .i16(1)
        .text(b"x")
        .0;
    let Message::Update(u) = check(&b, V1) else {
        panic!()
    };
    assert!(
        matches!(u.old, Some(OldTuple::Key(t)) if t.columns().next() == Some(Column::Text(b"k")))
    );
    // Old full row.
    let b = B::tag(b'U')
        .i32(1)
        .u8(b'O')
        .i16(1)
        .u8(b'n')
        .u8(b'N')
        .i16(1)
        .u8(b'u')
        .0;
    let Message::Update(u) = check(&b, V1) else {
        panic!()
    };
    assert!(matches!(u.old, Some(OldTuple::Full(_))));
    // Old tuple but no N after it.
    let b = B::tag(b'U').i32(1).u8(b'K').i16(0).u8(b'K').i16(0).0;
    let e = Message::parse(&b, V1).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::UnexpectedTupleMarker(b'K'), 8)
    );
}

#[test]
fn delete_forms() {
    let b = B::tag(b'D').i32(1).u8(b'K').i16(1).text(b"7").0;
    assert!(matches!(
        check(&b, V1),
        Message::Delete(Delete {
            old: OldTuple::Key(_),
            ..
        })
    ));
    let b = B::tag(b'D').i32(3).i32(1).u8(b'O').i16(0).0;
    assert!(matches!(
        check(&b, V3.in_stream(true)),
        Message::Delete(Delete {
            xid: Some(Xid(3)),
            old: OldTuple::Full(_),
            ..
        })
    ));
    let e = Message::parse(&B::tag(b'D').i32(1).u8(b'N').i16(0).0, V1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedTupleMarker(b'N'));
}

#[test]
fn truncate() {
    let b = B::tag(b'T').i32(2).u8(3).i32(16384).i32(16390).0;
    let Message::Truncate(t) = check(&b, V1) else {
        panic!()
    };
    assert!(t.cascade() && t.restart_identity());
    assert_eq!(
        t.relation_ids.iter().collect::<Vec<_>>(),
        [Oid(16384), Oid(16390)]
    );
    // A count of four billion relations in a tiny message is rejected, not looped over.
    let e = Message::parse(&B::tag(b'T').i32(u32::MAX).u8(0).i32(1).0, V1).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::CountOutOfBounds(u32::MAX), 1)
    );
}

#[test]
fn logical_message() {
    let b = B::tag(b'M')
        .u8(1)
        .i64(0x100)
        .s("app")
        .i32(3)
        .raw(b"\0\xFFx")
        .0;
    let Message::Message(m) = check(&b, V1) else {
        panic!()
    };
    assert!(m.transactional());
    assert_eq!(
        (m.lsn, m.prefix, m.content),
        (Lsn::new(0x100), "app", &b"\0\xFFx"[..])
    );
    let b = B::tag(b'M').i32(12).u8(0).i64(0x100).s("").i32(0).0;
    assert!(matches!(
        check(&b, V2.in_stream(true)),
        Message::Message(LogicalMessage {
            xid: Some(Xid(12)),
            flags: 0,
            content: b"",
            ..
        })
    ));
    // An inflated content length (a 4 GB claim) is an error naming the length.
    let b = B::tag(b'M')
        .u8(1)
        .i64(0)
        .s("p")
        .i32(0x7FFF_FFFF)
        .raw(b"abc")
        .0;
    let e = Message::parse(&b, V1).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::LengthOutOfBounds(0x7FFF_FFFF), 12)
    );
}

#[test]
fn stream_messages() {
    let b = B::tag(b'S').i32(700).u8(1).0;
    assert_eq!(
        check(&b, V2),
        Message::StreamStart(StreamStart {
            xid: Xid(700),
            first_segment: true
        })
    );
    assert_eq!(check(b"E", V2), Message::StreamStop);
    let b = B::tag(b'c').i32(700).u8(0).i64(1).i64(2).i64(3).0;
    assert!(matches!(
        check(&b, V2),
        Message::StreamCommit(StreamCommit { xid: Xid(700), .. })
    ));
    // Stream messages do not exist in protocol 1 or with streaming off (Stream Abort aside:
    // see below).
    for ctx in [V1, ParseContext::new(ProtocolVersion::V4, Streaming::Off)] {
        let e = Message::parse(b"E", ctx).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedByProtocol(2));
    }
}

#[test]
fn stream_abort_parses_with_streaming_off() {
    // PostgreSQL 18 sends Stream Aborts to protocol 1 clients that never asked for streaming;
    // they come in the short form, as with streaming on.
    let short = B::tag(b'A').i32(700).i32(701).0;
    let long = B::tag(b'A').i32(700).i32(701).i64(0x500).i64(42).0;
    for ctx in [
        V1,
        ParseContext::new(ProtocolVersion::V2, Streaming::Off),
        ParseContext::new(ProtocolVersion::V4, Streaming::Off),
    ] {
        let Message::StreamAbort(a) = check(&short, ctx) else {
            panic!()
        };
        assert_eq!((a.xid, a.subxid, a.parallel), (Xid(700), Xid(701), None));
        let e = Message::parse(&long, ctx).unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::TrailingBytes, 9));
    }
}

#[test]
fn stream_abort_depends_on_parallel_mode() {
    let short = B::tag(b'A').i32(700).i32(701).0;
    let Message::StreamAbort(a) = check(&short, V2) else {
        panic!()
    };
    assert_eq!((a.xid, a.subxid, a.parallel), (Xid(700), Xid(701), None));
    // Protocol 4 with streaming=on: still the short form.
    check(
        &short,
        ParseContext::new(ProtocolVersion::V4, Streaming::On),
    );
    let long = B::tag(b'A').i32(700).i32(700).i64(0x500).i64(42).0;
    let Message::StreamAbort(a) = check(&long, V4P) else {
        panic!()
    };
    assert_eq!(
        a.parallel,
        Some(AbortInfo {
            abort_lsn: Lsn::new(0x500),
            abort_time: Timestamp::new(42)
        })
    );
    assert!(Message::parse(&short, V4P).is_err());
    assert!(Message::parse(&long, V2).is_err());
}

#[test]
fn two_phase_messages() {
    let b = B::tag(b'b').i64(1).i64(2).i64(3).i32(4).s("gid-1").0;
    assert_eq!(
        check(&b, V3),
        Message::BeginPrepare(BeginPrepare {
            prepare_lsn: Lsn::new(1),
            end_lsn: Lsn::new(2),
            prepare_time: Timestamp::new(3),
            xid: Xid(4),
            gid: "gid-1"
        })
    );
    let b = B::tag(b'P').u8(0).i64(1).i64(2).i64(3).i32(4).s("g").0;
    assert!(matches!(
        check(&b, V3),
        Message::Prepare(Prepare {
            xid: Xid(4),
            gid: "g",
            ..
        })
    ));
    let b = B::tag(b'p').u8(0).i64(1).i64(2).i64(3).i32(4).s("g").0;
    assert!(matches!(
        check(&b, V3),
        Message::StreamPrepare(Prepare { gid: "g", .. })
    ));
    let b = B::tag(b'K').u8(0).i64(1).i64(2).i64(3).i32(4).s("g").0;
    assert!(matches!(
        check(&b, V3),
        Message::CommitPrepared(CommitPrepared { commit_lsn, .. }) if commit_lsn == Lsn::new(1)
    ));
    let b = B::tag(b'r')
        .u8(0)
        .i64(1)
        .i64(2)
        .i64(3)
        .i64(4)
        .i32(5)
        .s("g")
        .0;
    assert_eq!(
        check(&b, V3),
        Message::RollbackPrepared(RollbackPrepared {
            flags: 0,
            prepare_end_lsn: Lsn::new(1),
            rollback_end_lsn: Lsn::new(2),
            prepare_time: Timestamp::new(3),
            rollback_time: Timestamp::new(4),
            xid: Xid(5),
            gid: "g"
        })
    );
    let e = Message::parse(&b, V2).unwrap_err();
    assert_eq!(
        (e.kind(), e.tag()),
        (ErrorKind::UnsupportedByProtocol(3), Some(b'r'))
    );
}

#[test]
fn unknown_and_empty() {
    let e = Message::parse(b"Z123", V1).unwrap_err();
    assert_eq!(
        (e.kind(), e.tag(), e.offset()),
        (ErrorKind::UnknownMessage, Some(b'Z'), 0)
    );
    let e = Message::parse(b"", V1).unwrap_err();
    assert_eq!((e.kind(), e.tag()), (ErrorKind::Empty, None));
}

#[test]
fn every_byte_as_a_tag_never_panics() {
    for tag in 0..=255u8 {
        for ctx in [V1, V2, V3, V4P, V4P.in_stream(true)] {
            for len in [0usize, 1, 4, 9, 30] {
                let mut b = alloc::vec![tag];
                b.extend(core::iter::repeat_n(0xFFu8, len));
                let _ = Message::parse(&b, ctx);
                b.truncate(1);
                b.extend(core::iter::repeat_n(0u8, len));
                let _ = Message::parse(&b, ctx);
            }
        }
    }
}

//! Building captures with walproto's encoders, and running the `walstream` binary on them.

use std::io::Write as _;
use std::process::{Command, Stdio};

use walproto::capture;
use walproto::pgoutput::{
    encode_columns, Column, Message, OldTuple, Relation, RelationColumn, RelationColumns,
    RelationIds, ReplicaIdentity, TupleData,
};
use walproto::replication::{PrimaryKeepalive, ServerMessage, XLogData};
use walproto::{Lsn, Oid, Timestamp, Xid};

/// 2026-11-24T12:00:00.123456Z.
pub(crate) const T0: i64 = 1_795_521_600_123_456;

/// A timestamp `secs` seconds after [`T0`].
pub(crate) fn time(secs: i64) -> Timestamp {
    Timestamp::from_unix_micros(T0 + secs * 1_000_000).unwrap()
}

/// A full header as the recorder writes it, with these pgoutput options.
/// `two_phase` is on from protocol 3, as PostgreSQL requires.
pub(crate) fn header(proto_version: u32, streaming: &str) -> String {
    let two_phase = proto_version >= 3;
    format!(
        r#"{{"server_version":"17.2","server_version_num":170002,"proto_version":{proto_version},"streaming":"{streaming}","binary":false,"messages":true,"two_phase":{two_phase},"origin":"any","slot":"s","publications":["pub"],"system_id":"7","timeline":1}}"#
    )
}

/// A capture file being built.
pub(crate) struct Capture {
    pub(crate) bytes: Vec<u8>,
}

impl Capture {
    pub(crate) fn new(header_json: &str) -> Self {
        let mut bytes = Vec::new();
        capture::write_header(&mut bytes, header_json);
        Capture { bytes }
    }

    /// One XLogData frame at `wal_start` carrying the pgoutput message `message`.
    pub(crate) fn w(mut self, wal_start: u64, message: &[u8]) -> Self {
        let mut payload = Vec::new();
        ServerMessage::XLogData(XLogData {
            wal_start: Lsn::new(wal_start),
            wal_end: Lsn::new(wal_start.max(0x0200_0000)),
            send_time: time(60),
            data: message,
        })
        .encode(&mut payload);
        capture::write_frame(&mut self.bytes, &payload);
        self
    }

    /// One primary keepalive frame.
    pub(crate) fn k(mut self, wal_end: u64, send_time: Timestamp, reply: bool) -> Self {
        let mut payload = Vec::new();
        ServerMessage::PrimaryKeepalive(PrimaryKeepalive {
            wal_end: Lsn::new(wal_end),
            send_time,
            reply_requested: reply,
        })
        .encode(&mut payload);
        capture::write_frame(&mut self.bytes, &payload);
        self
    }

    /// One frame with an arbitrary payload.
    pub(crate) fn raw(mut self, payload: &[u8]) -> Self {
        capture::write_frame(&mut self.bytes, payload);
        self
    }

    /// The file offset the next frame will have.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// Encodes one pgoutput message.
pub(crate) fn enc(message: Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    message.encode(&mut out);
    out
}

pub(crate) fn xid(x: Option<u32>) -> Option<Xid> {
    x.map(Xid)
}

/// The bytes of a `TupleData`, to view with [`TupleData::parse`].
pub(crate) fn tuple_bytes(columns: &[Column<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_columns(columns.iter().copied(), &mut out);
    out
}

/// A Relation message. `columns` are (key, name, type OID, type modifier).
pub(crate) fn relation(
    stream_xid: Option<u32>,
    id: u32,
    schema: &str,
    table: &str,
    replica_identity: ReplicaIdentity,
    columns: &[(bool, &str, u32, i32)],
) -> Vec<u8> {
    let mut body = u16::try_from(columns.len()).unwrap().to_be_bytes().to_vec();
    for &(key, name, type_oid, type_modifier) in columns {
        RelationColumn {
            flags: u8::from(key),
            name,
            type_oid: Oid(type_oid),
            type_modifier,
        }
        .encode(&mut body);
    }
    enc(Message::Relation(Relation {
        xid: xid(stream_xid),
        id: Oid(id),
        namespace: schema,
        name: table,
        replica_identity,
        columns: RelationColumns::parse(&body).unwrap(),
    }))
}

pub(crate) fn insert(stream_xid: Option<u32>, rel: u32, new: &[Column<'_>]) -> Vec<u8> {
    let new = tuple_bytes(new);
    enc(Message::Insert(walproto::pgoutput::Insert {
        xid: xid(stream_xid),
        relation_id: Oid(rel),
        new: TupleData::parse(&new).unwrap(),
    }))
}

/// The old image of an Update or Delete: `Some((true, cols))` for a key (`K`), `Some((false,
/// cols))` for a whole old row (`O`).
pub(crate) type Old<'c> = Option<(bool, &'c [Column<'c>])>;

pub(crate) fn update(
    stream_xid: Option<u32>,
    rel: u32,
    old: Old<'_>,
    new: &[Column<'_>],
) -> Vec<u8> {
    let old_bytes = old.map(|(key, cols)| (key, tuple_bytes(cols)));
    let new = tuple_bytes(new);
    enc(Message::Update(walproto::pgoutput::Update {
        xid: xid(stream_xid),
        relation_id: Oid(rel),
        old: old_bytes.as_ref().map(|(key, b)| old_tuple(*key, b)),
        new: TupleData::parse(&new).unwrap(),
    }))
}

pub(crate) fn delete(stream_xid: Option<u32>, rel: u32, key: bool, old: &[Column<'_>]) -> Vec<u8> {
    let old = tuple_bytes(old);
    enc(Message::Delete(walproto::pgoutput::Delete {
        xid: xid(stream_xid),
        relation_id: Oid(rel),
        old: old_tuple(key, &old),
    }))
}

fn old_tuple(key: bool, bytes: &[u8]) -> OldTuple<'_> {
    let t = TupleData::parse(bytes).unwrap();
    if key {
        OldTuple::Key(t)
    } else {
        OldTuple::Full(t)
    }
}

pub(crate) fn truncate(stream_xid: Option<u32>, options: u8, rels: &[u32]) -> Vec<u8> {
    let ids: Vec<u8> = rels.iter().flat_map(|r| r.to_be_bytes()).collect();
    enc(Message::Truncate(walproto::pgoutput::Truncate {
        xid: xid(stream_xid),
        options,
        relation_ids: RelationIds::new(&ids).unwrap(),
    }))
}

pub(crate) fn logical_message(
    stream_xid: Option<u32>,
    transactional: bool,
    lsn: u64,
    prefix: &str,
    content: &[u8],
) -> Vec<u8> {
    enc(Message::Message(walproto::pgoutput::LogicalMessage {
        xid: xid(stream_xid),
        flags: u8::from(transactional),
        lsn: Lsn::new(lsn),
        prefix,
        content,
    }))
}

/// What a run of the binary did.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// The stdout lines, each checked to be one JSON object.
    pub(crate) fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .inspect(|line| {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(v.is_object(), "not an object: {line}");
            })
            .collect()
    }
}

/// Runs `walstream ARGS` with `stdin` as standard input.
pub(crate) fn walstream(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walstream"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Written from a thread so that a large output cannot block the child while we write.
    let writer = std::thread::spawn(move || {
        // The child may exit before reading everything (a bad header); that is not our error.
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `walstream decode - [extra]` on a capture.
pub(crate) fn decode(capture: &Capture, extra: &[&str]) -> Run {
    let mut args = vec!["decode", "-"];
    args.extend_from_slice(extra);
    walstream(&args, &capture.bytes)
}

/// Decodes a capture that must succeed, and returns its lines.
pub(crate) fn decode_ok(capture: &Capture, extra: &[&str]) -> Vec<String> {
    let run = decode(capture, extra);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "");
    run.lines().into_iter().map(str::to_owned).collect()
}

/// Asserts the lines equal `expected` (one line per element), showing the first difference.
#[track_caller]
pub(crate) fn assert_lines(got: &[String], expected: &[&str]) {
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g, e, "line {}", i + 1);
    }
    assert_eq!(got.len(), expected.len(), "number of lines: {got:#?}");
}

//! Every pgoutput message of protocols 1-4, every column kind, with exact expected lines.

use walproto::pgoutput::{
    AbortInfo, Begin, BeginPrepare, Column, Commit, CommitPrepared, Message, Origin, Prepare,
    ReplicaIdentity, RollbackPrepared, StreamAbort, StreamCommit, StreamStart, Type,
};
use walproto::{Lsn, Oid, Xid};

use crate::support::*;

fn begin(final_lsn: u64, secs: i64, xid: u32) -> Vec<u8> {
    enc(Message::Begin(Begin {
        final_lsn: Lsn::new(final_lsn),
        commit_time: time(secs),
        xid: Xid(xid),
    }))
}

fn commit(commit_lsn: u64, end_lsn: u64, secs: i64) -> Vec<u8> {
    enc(Message::Commit(Commit {
        flags: 0,
        commit_lsn: Lsn::new(commit_lsn),
        end_lsn: Lsn::new(end_lsn),
        commit_time: time(secs),
    }))
}

fn mood_type(stream_xid: Option<u32>) -> Vec<u8> {
    enc(Message::Type(Type {
        xid: xid(stream_xid),
        id: Oid(16390),
        namespace: "public",
        name: "mood",
    }))
}

fn stream_start(x: u32, first_segment: bool) -> Vec<u8> {
    enc(Message::StreamStart(StreamStart {
        xid: Xid(x),
        first_segment,
    }))
}

fn stream_stop() -> Vec<u8> {
    enc(Message::StreamStop)
}

fn stream_abort(x: u32, subxid: u32, parallel: Option<(u64, i64)>) -> Vec<u8> {
    enc(Message::StreamAbort(StreamAbort {
        xid: Xid(x),
        subxid: Xid(subxid),
        parallel: parallel.map(|(lsn, secs)| AbortInfo {
            abort_lsn: Lsn::new(lsn),
            abort_time: time(secs),
        }),
    }))
}

/// The two-column table most streamed tests use: `public.t (id int4 key, v text)`.
fn small_table(stream_xid: Option<u32>) -> Vec<u8> {
    relation(
        stream_xid,
        16384,
        "public",
        "t",
        ReplicaIdentity::Default,
        &[(true, "id", 23, -1), (false, "v", 25, -1)],
    )
}

#[test]
fn protocol_1_every_message_and_column_kind() {
    use Column::*;
    let t_columns = [
        (true, "id", 23, -1),
        (false, "name", 1043, 24),
        (false, "data", 17, -1),
        (false, "big", 25, -1),
        (false, "mood", 16390, -1),
    ];
    let cap = Capture::new(&header(1, "off"))
        .w(0x16B3748, &begin(0x16B3880, 0, 740))
        .w(
            0x16B3748,
            &enc(Message::Origin(Origin {
                commit_lsn: Lsn::new(0xABC_DEF0),
                name: "node_a",
            })),
        )
        .w(0, &mood_type(None))
        .w(
            0,
            &relation(
                None,
                16384,
                "public",
                "t",
                ReplicaIdentity::Default,
                &t_columns,
            ),
        )
        .w(
            0x16B3750,
            &insert(
                None,
                16384,
                &[
                    Text(b"1"),
                    Text("quote \" back \\ nl \n tab \t ctl \x01 \u{e9}".as_bytes()),
                    Binary(b"\xfb\xff\x00"),
                    UnchangedToast,
                    Null,
                ],
            ),
        )
        .w(
            0x16B3758,
            &update(
                None,
                16384,
                Some((true, &[Text(b"1"), Null, Null, Null, Null])),
                &[Text(b"2"), Text(b"b"), Null, UnchangedToast, Text(b"ok")],
            ),
        )
        .w(
            0x16B3760,
            &update(
                None,
                16384,
                None,
                &[Text(b"2"), Text(b""), Binary(b""), Null, Text(b"sad")],
            ),
        )
        .w(
            0x16B3768,
            &delete(None, 16384, true, &[Text(b"2"), Null, Null, Null, Null]),
        )
        .w(
            0,
            &relation(
                None,
                16385,
                "s",
                "full",
                ReplicaIdentity::Full,
                &[(true, "a", 23, -1), (true, "b", 25, -1)],
            ),
        )
        .w(
            0x16B3770,
            &update(
                None,
                16385,
                Some((false, &[Text(b"1"), Null])),
                &[Text(b"1"), Text(b"x")],
            ),
        )
        .w(
            0x16B3778,
            &delete(None, 16385, false, &[Text(b"1"), Text(b"x")]),
        )
        .w(
            0,
            &relation(
                None,
                16386,
                "s",
                "nothing",
                ReplicaIdentity::Nothing,
                &[(false, "v", 25, -1)],
            ),
        )
        .w(
            0,
            &relation(
                None,
                16387,
                "s",
                "byindex",
                ReplicaIdentity::Index,
                &[
                    (true, "k1", 23, -1),
                    (false, "v", 25, -1),
                    (true, "k2", 23, -1),
                ],
            ),
        )
        .w(
            0x16B3780,
            &delete(None, 16387, true, &[Text(b"1"), Null, Text(b"2")]),
        )
        .w(0x16B3788, &truncate(None, 3, &[16384, 16386]))
        .w(0x16B3790, &truncate(None, 0, &[16385]))
        .w(
            0x16B37A0,
            &logical_message(None, true, 0x16B37A0, "app", "h\u{e9}llo".as_bytes()),
        )
        .w(0x16B38B0, &commit(0x16B3880, 0x16B38B0, 0))
        .w(
            0x16B38C0,
            &logical_message(None, false, 0x16B38C0, "nontx", b"\x00\xff\x80\xfe"),
        );
    assert_lines(
        &decode_ok(&cap, &[]),
        &[
            r#"{"type":"begin","lsn":"0/16B3748","final_lsn":"0/16B3880","commit_time":"2026-11-24T12:00:00.123456Z","xid":740}"#,
            r#"{"type":"origin","lsn":"0/16B3748","origin_lsn":"0/ABCDEF0","name":"node_a"}"#,
            r#"{"type":"type","lsn":"0/0","type_id":16390,"schema":"public","name":"mood"}"#,
            r#"{"type":"relation","lsn":"0/0","relation_id":16384,"schema":"public","table":"t","replica_identity":"default","columns":[{"name":"id","type_oid":23,"type_modifier":-1,"key":true},{"name":"name","type_oid":1043,"type_modifier":24,"key":false},{"name":"data","type_oid":17,"type_modifier":-1,"key":false},{"name":"big","type_oid":25,"type_modifier":-1,"key":false},{"name":"mood","type_oid":16390,"type_modifier":-1,"key":false}]}"#,
            r#"{"type":"insert","lsn":"0/16B3750","relation_id":16384,"schema":"public","table":"t","new":{"id":"1","name":"quote \" back \\ nl \n tab \t ctl \u0001 é","data":{"binary":"+/8A"},"big":{"unchanged_toast":true},"mood":null}}"#,
            r#"{"type":"update","lsn":"0/16B3758","relation_id":16384,"schema":"public","table":"t","key":{"id":"1"},"new":{"id":"2","name":"b","data":null,"big":{"unchanged_toast":true},"mood":"ok"}}"#,
            r#"{"type":"update","lsn":"0/16B3760","relation_id":16384,"schema":"public","table":"t","new":{"id":"2","name":"","data":{"binary":""},"big":null,"mood":"sad"}}"#,
            r#"{"type":"delete","lsn":"0/16B3768","relation_id":16384,"schema":"public","table":"t","key":{"id":"2"}}"#,
            r#"{"type":"relation","lsn":"0/0","relation_id":16385,"schema":"s","table":"full","replica_identity":"full","columns":[{"name":"a","type_oid":23,"type_modifier":-1,"key":true},{"name":"b","type_oid":25,"type_modifier":-1,"key":true}]}"#,
            r#"{"type":"update","lsn":"0/16B3770","relation_id":16385,"schema":"s","table":"full","old":{"a":"1","b":null},"new":{"a":"1","b":"x"}}"#,
            r#"{"type":"delete","lsn":"0/16B3778","relation_id":16385,"schema":"s","table":"full","old":{"a":"1","b":"x"}}"#,
            r#"{"type":"relation","lsn":"0/0","relation_id":16386,"schema":"s","table":"nothing","replica_identity":"nothing","columns":[{"name":"v","type_oid":25,"type_modifier":-1,"key":false}]}"#,
            r#"{"type":"relation","lsn":"0/0","relation_id":16387,"schema":"s","table":"byindex","replica_identity":"index","columns":[{"name":"k1","type_oid":23,"type_modifier":-1,"key":true},{"name":"v","type_oid":25,"type_modifier":-1,"key":false},{"name":"k2","type_oid":23,"type_modifier":-1,"key":true}]}"#,
            r#"{"type":"delete","lsn":"0/16B3780","relation_id":16387,"schema":"s","table":"byindex","key":{"k1":"1","k2":"2"}}"#,
            r#"{"type":"truncate","lsn":"0/16B3788","relation_ids":[16384,16386],"tables":["public.t","s.nothing"],"cascade":true,"restart_identity":true}"#,
            r#"{"type":"truncate","lsn":"0/16B3790","relation_ids":[16385],"tables":["s.full"],"cascade":false,"restart_identity":false}"#,
            r#"{"type":"message","lsn":"0/16B37A0","transactional":true,"prefix":"app","content":"héllo"}"#,
            r#"{"type":"commit","lsn":"0/16B38B0","flags":0,"commit_lsn":"0/16B3880","end_lsn":"0/16B38B0","commit_time":"2026-11-24T12:00:00.123456Z"}"#,
            r#"{"type":"message","lsn":"0/16B38C0","transactional":false,"prefix":"nontx","content":{"base64":"AP+A/g=="}}"#,
        ],
    );
}

#[test]
fn rows_take_names_from_the_last_relation_message() {
    let cap = Capture::new(&header(1, "off"))
        .w(0x100, &begin(0x200, 0, 1))
        .w(0, &small_table(None))
        .w(
            0x110,
            &insert(None, 16384, &[Column::Text(b"1"), Column::Null]),
        )
        .w(
            0,
            &relation(
                None,
                16384,
                "",
                "renamed",
                ReplicaIdentity::Default,
                &[
                    (true, "id", 23, -1),
                    (false, "w", 25, -1),
                    (false, "x", 23, -1),
                ],
            ),
        )
        .w(
            0x120,
            &insert(
                None,
                16384,
                &[Column::Text(b"2"), Column::Text(b"w"), Column::Null],
            ),
        )
        .w(0x130, &truncate(None, 0, &[16384]))
        .w(0x200, &commit(0x200, 0x230, 0));
    let lines = decode_ok(&cap, &[]);
    assert_lines(
        &lines[2..3],
        &[
            r#"{"type":"insert","lsn":"0/110","relation_id":16384,"schema":"public","table":"t","new":{"id":"1","v":null}}"#,
        ],
    );
    // pgoutput sends an empty schema for pg_catalog; it is printed as sent.
    assert_lines(
        &lines[4..6],
        &[
            r#"{"type":"insert","lsn":"0/120","relation_id":16384,"schema":"","table":"renamed","new":{"id":"2","w":"w","x":null}}"#,
            r#"{"type":"truncate","lsn":"0/130","relation_ids":[16384],"tables":[".renamed"],"cascade":false,"restart_identity":false}"#,
        ],
    );
}

#[test]
fn protocol_2_stream_blocks_carry_xids_and_nothing_else_does() {
    use Column::*;
    let cap = Capture::new(&header(2, "on"))
        .w(0x100_0000, &stream_start(900, true))
        .w(
            0x100_0000,
            &enc(Message::Origin(Origin {
                commit_lsn: Lsn::ZERO,
                name: "node_b",
            })),
        )
        .w(0, &mood_type(Some(900)))
        .w(0, &small_table(Some(900)))
        .w(
            0x100_0010,
            &insert(Some(900), 16384, &[Text(b"1"), Text(b"a")]),
        )
        .w(0x100_0020, &insert(Some(901), 16384, &[Text(b"2"), Null]))
        .w(
            0x100_0030,
            &update(
                Some(901),
                16384,
                Some((true, &[Text(b"1"), Null])),
                &[Text(b"3"), Text(b"c")],
            ),
        )
        .w(
            0x100_0040,
            &delete(Some(900), 16384, true, &[Text(b"3"), Null]),
        )
        .w(0x100_0050, &truncate(Some(900), 0, &[16384]))
        .w(
            0x100_0060,
            &logical_message(Some(900), true, 0x100_0060, "app", b"in stream"),
        )
        .w(0x100_0070, &stream_stop())
        // A whole transaction between two blocks of the streamed one: no xids.
        .w(0x100_00A0, &begin(0x100_0100, 1, 950))
        .w(0x100_00A0, &insert(None, 16384, &[Text(b"9"), Null]))
        .w(0x100_0130, &commit(0x100_0100, 0x100_0130, 1))
        .w(0x100_0200, &stream_start(900, false))
        .w(0x100_0210, &insert(Some(900), 16384, &[Text(b"4"), Null]))
        .w(0x100_0220, &stream_stop())
        .w(
            0x100_0330,
            &enc(Message::StreamCommit(StreamCommit {
                xid: Xid(900),
                flags: 0,
                commit_lsn: Lsn::new(0x100_0300),
                end_lsn: Lsn::new(0x100_0330),
                commit_time: time(2),
            })),
        )
        .w(0x100_0340, &stream_start(910, true))
        .w(0x100_0350, &insert(Some(911), 16384, &[Text(b"5"), Null]))
        .w(0x100_0360, &stream_stop())
        .w(0x100_0400, &stream_abort(910, 911, None))
        .w(
            0x100_0410,
            &logical_message(None, false, 0x100_0410, "after", b""),
        );
    assert_lines(
        &decode_ok(&cap, &[]),
        &[
            r#"{"type":"stream_start","lsn":"0/1000000","xid":900,"first_segment":true}"#,
            r#"{"type":"origin","lsn":"0/1000000","origin_lsn":"0/0","name":"node_b"}"#,
            r#"{"type":"type","lsn":"0/0","xid":900,"type_id":16390,"schema":"public","name":"mood"}"#,
            r#"{"type":"relation","lsn":"0/0","xid":900,"relation_id":16384,"schema":"public","table":"t","replica_identity":"default","columns":[{"name":"id","type_oid":23,"type_modifier":-1,"key":true},{"name":"v","type_oid":25,"type_modifier":-1,"key":false}]}"#,
            r#"{"type":"insert","lsn":"0/1000010","xid":900,"relation_id":16384,"schema":"public","table":"t","new":{"id":"1","v":"a"}}"#,
            r#"{"type":"insert","lsn":"0/1000020","xid":901,"relation_id":16384,"schema":"public","table":"t","new":{"id":"2","v":null}}"#,
            r#"{"type":"update","lsn":"0/1000030","xid":901,"relation_id":16384,"schema":"public","table":"t","key":{"id":"1"},"new":{"id":"3","v":"c"}}"#,
            r#"{"type":"delete","lsn":"0/1000040","xid":900,"relation_id":16384,"schema":"public","table":"t","key":{"id":"3"}}"#,
            r#"{"type":"truncate","lsn":"0/1000050","xid":900,"relation_ids":[16384],"tables":["public.t"],"cascade":false,"restart_identity":false}"#,
            r#"{"type":"message","lsn":"0/1000060","xid":900,"transactional":true,"prefix":"app","content":"in stream"}"#,
            r#"{"type":"stream_stop","lsn":"0/1000070"}"#,
            r#"{"type":"begin","lsn":"0/10000A0","final_lsn":"0/1000100","commit_time":"2026-11-24T12:00:01.123456Z","xid":950}"#,
            r#"{"type":"insert","lsn":"0/10000A0","relation_id":16384,"schema":"public","table":"t","new":{"id":"9","v":null}}"#,
            r#"{"type":"commit","lsn":"0/1000130","flags":0,"commit_lsn":"0/1000100","end_lsn":"0/1000130","commit_time":"2026-11-24T12:00:01.123456Z"}"#,
            r#"{"type":"stream_start","lsn":"0/1000200","xid":900,"first_segment":false}"#,
            r#"{"type":"insert","lsn":"0/1000210","xid":900,"relation_id":16384,"schema":"public","table":"t","new":{"id":"4","v":null}}"#,
            r#"{"type":"stream_stop","lsn":"0/1000220"}"#,
            r#"{"type":"stream_commit","lsn":"0/1000330","xid":900,"flags":0,"commit_lsn":"0/1000300","end_lsn":"0/1000330","commit_time":"2026-11-24T12:00:02.123456Z"}"#,
            r#"{"type":"stream_start","lsn":"0/1000340","xid":910,"first_segment":true}"#,
            r#"{"type":"insert","lsn":"0/1000350","xid":911,"relation_id":16384,"schema":"public","table":"t","new":{"id":"5","v":null}}"#,
            r#"{"type":"stream_stop","lsn":"0/1000360"}"#,
            r#"{"type":"stream_abort","lsn":"0/1000400","xid":910,"subxid":911}"#,
            r#"{"type":"message","lsn":"0/1000410","transactional":false,"prefix":"after","content":""}"#,
        ],
    );
}

#[test]
fn protocol_3_two_phase() {
    let cap = Capture::new(&header(3, "on"))
        .w(
            0x200_0000,
            &enc(Message::BeginPrepare(BeginPrepare {
                prepare_lsn: Lsn::new(0x200_0100),
                end_lsn: Lsn::new(0x200_0130),
                prepare_time: time(3),
                xid: Xid(960),
                gid: "gid \"1\"",
            })),
        )
        .w(0, &small_table(None))
        .w(
            0x200_0000,
            &insert(None, 16384, &[Column::Text(b"1"), Column::Null]),
        )
        .w(
            0x200_0130,
            &enc(Message::Prepare(Prepare {
                flags: 0,
                prepare_lsn: Lsn::new(0x200_0100),
                end_lsn: Lsn::new(0x200_0130),
                prepare_time: time(3),
                xid: Xid(960),
                gid: "gid \"1\"",
            })),
        )
        .w(
            0x200_0230,
            &enc(Message::CommitPrepared(CommitPrepared {
                flags: 0,
                commit_lsn: Lsn::new(0x200_0200),
                end_lsn: Lsn::new(0x200_0230),
                commit_time: time(4),
                xid: Xid(960),
                gid: "gid \"1\"",
            })),
        )
        .w(
            0x200_0330,
            &enc(Message::RollbackPrepared(RollbackPrepared {
                flags: 0,
                prepare_end_lsn: Lsn::new(0x200_0130),
                rollback_end_lsn: Lsn::new(0x200_0330),
                prepare_time: time(3),
                rollback_time: time(5),
                xid: Xid(961),
                gid: "gid-2",
            })),
        )
        .w(0x200_0400, &stream_start(970, true))
        .w(
            0x200_0410,
            &insert(Some(970), 16384, &[Column::Text(b"2"), Column::Null]),
        )
        .w(0x200_0420, &stream_stop())
        .w(
            0x200_0530,
            &enc(Message::StreamPrepare(Prepare {
                flags: 0,
                prepare_lsn: Lsn::new(0x200_0500),
                end_lsn: Lsn::new(0x200_0530),
                prepare_time: time(6),
                xid: Xid(970),
                gid: "gid-3",
            })),
        );
    let lines = decode_ok(&cap, &[]);
    assert_lines(
        &lines,
        &[
            r#"{"type":"begin_prepare","lsn":"0/2000000","prepare_lsn":"0/2000100","end_lsn":"0/2000130","prepare_time":"2026-11-24T12:00:03.123456Z","xid":960,"gid":"gid \"1\""}"#,
            lines[1].as_str(),
            r#"{"type":"insert","lsn":"0/2000000","relation_id":16384,"schema":"public","table":"t","new":{"id":"1","v":null}}"#,
            r#"{"type":"prepare","lsn":"0/2000130","flags":0,"prepare_lsn":"0/2000100","end_lsn":"0/2000130","prepare_time":"2026-11-24T12:00:03.123456Z","xid":960,"gid":"gid \"1\""}"#,
            r#"{"type":"commit_prepared","lsn":"0/2000230","flags":0,"commit_lsn":"0/2000200","end_lsn":"0/2000230","commit_time":"2026-11-24T12:00:04.123456Z","xid":960,"gid":"gid \"1\""}"#,
            r#"{"type":"rollback_prepared","lsn":"0/2000330","flags":0,"prepare_end_lsn":"0/2000130","rollback_end_lsn":"0/2000330","prepare_time":"2026-11-24T12:00:03.123456Z","rollback_time":"2026-11-24T12:00:05.123456Z","xid":961,"gid":"gid-2"}"#,
            r#"{"type":"stream_start","lsn":"0/2000400","xid":970,"first_segment":true}"#,
            r#"{"type":"insert","lsn":"0/2000410","xid":970,"relation_id":16384,"schema":"public","table":"t","new":{"id":"2","v":null}}"#,
            r#"{"type":"stream_stop","lsn":"0/2000420"}"#,
            r#"{"type":"stream_prepare","lsn":"0/2000530","flags":0,"prepare_lsn":"0/2000500","end_lsn":"0/2000530","prepare_time":"2026-11-24T12:00:06.123456Z","xid":970,"gid":"gid-3"}"#,
        ],
    );
}

/// A streamed transaction with one row, aborted with `abort` (a Stream Abort message).
fn aborted_stream(header_json: &str, abort: &[u8]) -> Capture {
    Capture::new(header_json)
        .w(0x300_0000, &stream_start(980, true))
        .w(0, &small_table(Some(980)))
        .w(
            0x300_0010,
            &insert(Some(981), 16384, &[Column::Text(b"1"), Column::Null]),
        )
        .w(0x300_0020, &stream_stop())
        .w(0x300_0100, abort)
}

#[test]
fn protocol_4_parallel_stream_abort_has_lsn_and_time() {
    let cap = aborted_stream(
        &header(4, "parallel"),
        &stream_abort(980, 981, Some((0x300_0100, 7))),
    );
    let lines = decode_ok(&cap, &[]);
    assert_eq!(lines.len(), 5);
    assert_lines(
        &lines[4..],
        &[
            r#"{"type":"stream_abort","lsn":"0/3000100","xid":980,"subxid":981,"abort_lsn":"0/3000100","abort_time":"2026-11-24T12:00:07.123456Z"}"#,
        ],
    );
}

#[test]
fn stream_abort_without_parallel_in_the_header_has_no_lsn_and_time() {
    let plain = r#"{"type":"stream_abort","lsn":"0/3000100","xid":980,"subxid":981}"#;
    // Protocol 4, streaming "on": the server sends the short form.
    let cap = aborted_stream(&header(4, "on"), &stream_abort(980, 981, None));
    assert_lines(&decode_ok(&cap, &[])[4..], &[plain]);

    // The long form under that header does not parse: the header decides, not the bytes.
    let cap = aborted_stream(
        &header(4, "on"),
        &stream_abort(980, 981, Some((0x300_0100, 7))),
    );
    let run = decode(&cap, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.lines().len(), 4);
    assert!(
        run.stderr
            .contains("stream_abort message 'A' at LSN 0/3000100: trailing bytes"),
        "{}",
        run.stderr
    );

    // "parallel" under protocol 3 is what PostgreSQL refuses; it decodes as protocol 3
    // defines Stream Abort, with a warning.
    let cap = aborted_stream(&header(3, "parallel"), &stream_abort(980, 981, None));
    let run = decode(&cap, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.lines()[4], plain);
    assert!(
        run.stderr.contains("parallel\" needs proto_version 4"),
        "{}",
        run.stderr
    );
}

/// PostgreSQL 18 sends Stream Aborts to protocol 1 clients that never asked for streaming (see
/// CLI.md, "Reconnects"): printed as any other line, with a warning on stderr, and the
/// transactions around it decode as usual.
#[test]
fn stray_stream_abort_under_protocol_1_is_printed_with_a_warning() {
    let cap = Capture::new(&header(1, "off"))
        .w(0x16B_3748, &begin(0x16B_3880, 0, 740))
        .w(0, &small_table(None))
        .w(
            0x16B_3750,
            &insert(None, 16384, &[Column::Text(b"1"), Column::Null]),
        )
        .w(0x16B_38B0, &commit(0x16B_3880, 0x16B_38B0, 0))
        .w(0x16B_3900, &stream_abort(741, 742, None))
        .w(0x16B_3A00, &begin(0x16B_3B00, 1, 743))
        .w(
            0x16B_3A08,
            &insert(None, 16384, &[Column::Text(b"2"), Column::Null]),
        )
        .w(0x16B_3B30, &commit(0x16B_3B00, 0x16B_3B30, 1));
    let run = decode(&cap, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = run.lines();
    assert_eq!(lines.len(), 8, "{lines:#?}");
    assert_eq!(
        lines[4],
        r#"{"type":"stream_abort","lsn":"0/16B3900","xid":741,"subxid":742}"#
    );
    assert!(lines[7].starts_with(r#"{"type":"commit","lsn":"0/16B3B30""#));
    assert_eq!(
        run.stderr.matches("stray stream_abort").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "stray stream_abort at LSN 0/16B3900 for xid 741 (subxid 742): streaming is off"
        ),
        "{}",
        run.stderr
    );
}

/// With streaming on, only a Stream Abort that matches no open streamed transaction is stray.
#[test]
fn stream_abort_of_no_open_stream_is_warned_about_and_a_real_one_is_not() {
    let cap = Capture::new(&header(2, "on"))
        .w(0x300_0000, &stream_start(980, true))
        .w(0, &small_table(Some(980)))
        .w(0x300_0020, &stream_stop())
        .w(0x300_0080, &stream_abort(990, 990, None))
        .w(0x300_0100, &stream_abort(980, 980, None));
    let run = decode(&cap, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_lines(
        &run.lines()[3..]
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>(),
        &[
            r#"{"type":"stream_abort","lsn":"0/3000080","xid":990,"subxid":990}"#,
            r#"{"type":"stream_abort","lsn":"0/3000100","xid":980,"subxid":980}"#,
        ],
    );
    assert_eq!(
        run.stderr.matches("stray stream_abort").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "stray stream_abort at LSN 0/3000080 for xid 990 (subxid 990): no streamed \
             transaction of that xid is open"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn keepalives_only_with_the_flag() {
    let cap = Capture::new(&header(1, "off"))
        .k(0x16B_3748, time(8), true)
        .w(0x16B_3748, &begin(0x16B_3880, 0, 740))
        .w(0x16B_38B0, &commit(0x16B_3880, 0x16B_38B0, 0))
        .k(0x1_0000_0000, time(9), false);
    let begin_commit = [
        r#"{"type":"begin","lsn":"0/16B3748","final_lsn":"0/16B3880","commit_time":"2026-11-24T12:00:00.123456Z","xid":740}"#,
        r#"{"type":"commit","lsn":"0/16B38B0","flags":0,"commit_lsn":"0/16B3880","end_lsn":"0/16B38B0","commit_time":"2026-11-24T12:00:00.123456Z"}"#,
    ];
    assert_lines(&decode_ok(&cap, &[]), &begin_commit);
    assert_lines(
        &decode_ok(&cap, &["--keepalives"]),
        &[
            r#"{"type":"keepalive","lsn":"0/16B3748","wal_end":"0/16B3748","send_time":"2026-11-24T12:00:08.123456Z","reply_requested":true}"#,
            begin_commit[0],
            begin_commit[1],
            r#"{"type":"keepalive","lsn":"1/0","wal_end":"1/0","send_time":"2026-11-24T12:00:09.123456Z","reply_requested":false}"#,
        ],
    );
}

#[test]
fn header_only_capture_prints_nothing() {
    assert!(decode_ok(&Capture::new(&header(1, "off")), &[]).is_empty());
}

#[test]
fn frames_larger_than_a_read_chunk() {
    let big = "x".repeat(300_000);
    let cap = Capture::new(&header(1, "off"))
        .w(0x100, &begin(0x200, 0, 1))
        .w(0, &small_table(None))
        .w(
            0x110,
            &insert(
                None,
                16384,
                &[Column::Text(b"1"), Column::Text(big.as_bytes())],
            ),
        )
        .w(0x200, &commit(0x200, 0x230, 0));
    let lines = decode_ok(&cap, &[]);
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[2],
        format!(
            r#"{{"type":"insert","lsn":"0/110","relation_id":16384,"schema":"public","table":"t","new":{{"id":"1","v":"{big}"}}}}"#
        )
    );
}

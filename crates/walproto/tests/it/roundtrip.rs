//! Encode then parse gives back the message, for every message under every valid context.

use proptest::prelude::*;
use walproto::backup::{BackupMessage, NewArchive, Progress};
use walproto::fuzzing::{encode_parse, Sample};
use walproto::pgoutput::{Message, OldTuple};
use walproto::replication::{
    ClientMessage, HotStandbyFeedback, PrimaryKeepalive, ServerMessage, StandbyStatusUpdate,
    XLogData,
};
use walproto::timeline::{write_history, TimelineHistory, TimelineSwitch};
use walproto::{Lsn, Timestamp};

use crate::generate::{config, fuzz_case, pgoutput, regressions};

proptest! {
    #![proptest_config(config(2000, regressions!("roundtrip")))]

    /// Every message under every context it is valid in (protocol 1-4, streaming off, on or
    /// parallel, inside a streamed block or not) parses back to itself.
    #[test]
    fn pgoutput_round_trip(case in pgoutput()) {
        let want = case.tuples();
        case.with_message(|ctx, msg| {
            let mut bytes = Vec::new();
            msg.encode(&mut bytes);
            let parsed = Message::parse(&bytes, ctx);
            prop_assert_eq!(parsed, Ok(msg));
            // The encode_parse fuzz target's check holds for every valid message.
            encode_parse(Sample::Pgoutput(ctx, msg));
            // The lazy columns yield exactly what was encoded.
            let parsed = parsed.unwrap();
            let tuples = match parsed {
                Message::Insert(i) => vec![i.new],
                Message::Update(u) => {
                    let mut v = vec![u.new];
                    v.extend(u.old.as_ref().map(|o| *o.tuple()));
                    v
                }
                Message::Delete(d) => vec![match d.old { OldTuple::Key(t) | OldTuple::Full(t) => t }],
                _ => vec![],
            };
            prop_assert_eq!(tuples.len(), want.len());
            for (t, want) in tuples.iter().zip(&want) {
                let got: Vec<_> = t.columns().collect();
                prop_assert_eq!(&got, want);
            }
            Ok(())
        })?;
    }

    /// The `encode_parse` fuzz target's whole input space (pgoutput and replication messages
    /// both ways), run as the fuzzer runs it.
    #[test]
    fn fuzz_cases_encode_and_parse_back(case in fuzz_case()) {
        case.with_sample(encode_parse);
    }

    #[test]
    fn server_messages_round_trip(
        start in any::<u64>(), end in any::<u64>(), time in any::<i64>(),
        data in proptest::collection::vec(any::<u8>(), 0..64), reply in any::<bool>(),
    ) {
        for msg in [
            ServerMessage::XLogData(XLogData {
                wal_start: Lsn::new(start), wal_end: Lsn::new(end),
                send_time: Timestamp::new(time), data: &data,
            }),
            ServerMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end: Lsn::new(end), send_time: Timestamp::new(time), reply_requested: reply,
            }),
        ] {
            let mut out = Vec::new();
            msg.encode(&mut out);
            prop_assert_eq!(ServerMessage::parse(&out), Ok(msg));
        }
    }

    #[test]
    fn client_messages_round_trip(
        a in any::<u64>(), b in any::<u64>(), c in any::<u64>(), t in any::<i64>(),
        x in any::<[u32; 4]>(), reply in any::<bool>(),
    ) {
        for msg in [
            ClientMessage::StandbyStatusUpdate(StandbyStatusUpdate {
                write: Lsn::new(a), flush: Lsn::new(b), apply: Lsn::new(c),
                client_time: Timestamp::new(t), reply_requested: reply,
            }),
            ClientMessage::HotStandbyFeedback(HotStandbyFeedback {
                client_time: Timestamp::new(t), xmin: x[0], xmin_epoch: x[1],
                catalog_xmin: x[2], catalog_xmin_epoch: x[3],
            }),
        ] {
            let mut out = Vec::new();
            msg.encode(&mut out);
            prop_assert_eq!(ClientMessage::parse(&out), Ok(msg));
        }
    }

    /// Every archive stream message parses back to itself from exactly its bytes.
    #[test]
    fn backup_messages_round_trip(
        name in "[a-z0-9._-]{0,40}", location in "(/[^\0/]{1,12}){0,4}",
        data in proptest::collection::vec(any::<u8>(), 0..64), done in any::<u64>(),
    ) {
        for msg in [
            BackupMessage::NewArchive(NewArchive { name: &name, tablespace_location: &location }),
            BackupMessage::Manifest,
            BackupMessage::Data(&data),
            BackupMessage::Progress(Progress { bytes_done: done }),
        ] {
            let mut out = Vec::new();
            msg.encode(&mut out);
            prop_assert_eq!(out.len(), msg.encoded_len());
            prop_assert_eq!(BackupMessage::parse(&out), Ok(msg));
            walproto::fuzzing::backup_message(&out);
        }
    }

    /// Switches with increasing timelines, written as a history file, parse back to themselves.
    #[test]
    fn timeline_history_round_trip(
        lines in proptest::collection::vec(
            (1u32..1000, any::<u64>(), "[^\n\t #\r\x0b\x0c][^\n]{0,30}|"), 0..8),
    ) {
        let mut timeline = 0u32;
        let switches: Vec<TimelineSwitch<'_>> = lines
            .iter()
            .map(|(step, lsn, reason)| {
                timeline += step;
                TimelineSwitch {
                    timeline,
                    switch_lsn: Lsn::new(*lsn),
                    reason: reason.trim_end_matches(['\r', ' ', '\t', '\x0b', '\x0c']).as_bytes(),
                }
            })
            .collect();
        let mut file = Vec::new();
        write_history(switches.iter().copied(), &mut file);
        let history = TimelineHistory::parse(&file);
        prop_assert!(history.is_ok(), "{:?}: {:?}", String::from_utf8_lossy(&file), history);
        let parsed: Vec<_> = history.unwrap().switches().collect();
        prop_assert_eq!(parsed, switches);
        walproto::fuzzing::timeline_history(&file);
    }

    #[test]
    fn lsn_text_round_trip(raw in any::<u64>()) {
        let lsn = Lsn::new(raw);
        prop_assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
    }
}

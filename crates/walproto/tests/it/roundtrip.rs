//! Encode then parse gives back the message, for every message under every valid context.

use proptest::prelude::*;
use walproto::fuzzing::{encode_parse, Sample};
use walproto::pgoutput::{Message, OldTuple};
use walproto::replication::{
    ClientMessage, HotStandbyFeedback, PrimaryKeepalive, ServerMessage, StandbyStatusUpdate,
    XLogData,
};
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

    #[test]
    fn lsn_text_round_trip(raw in any::<u64>()) {
        let lsn = Lsn::new(raw);
        prop_assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
    }
}

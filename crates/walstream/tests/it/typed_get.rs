//! Typed getters (`Row::try_get`) on rows streamed from a real server, in text and in binary
//! format: one column of each type family, NULL as `Option`, and the errors for a wrong type,
//! an unknown column and an unchanged TOAST value.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use walstream::value::{GetErrorKind, Infinitable, Interval, Value};
use walstream::{EventKind, Row};

use crate::{block_on, read_transactions, Fixture};

#[test]
fn try_get_reads_every_type_family_in_text_and_binary() {
    pgtest::for_each_major(15, |cluster| {
        let f = Fixture::new(cluster, "ws_typed_get");
        f.db.psql(&format!(
            "CREATE TYPE mood AS ENUM ('happy', 'sad');
             CREATE TABLE g (id int8 PRIMARY KEY, i2 int2, i4 int4, f4 float4, f8 float8,
                             n numeric, t text, vc varchar(5), b bool, by bytea, u uuid,
                             d date, tm time, ts timestamp, tz timestamptz, iv interval,
                             j jsonb, ai int4[], at text[], m mood, big text);
             ALTER TABLE g ALTER big SET STORAGE EXTERNAL;
             ALTER PUBLICATION {p} ADD TABLE g;
             INSERT INTO g VALUES (1, -2, 3, 1.5, -0.25, 12.3400, 'héllo', 'abc', true,
                 '\\x00ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '12:34:56.5',
                 '2024-01-02 03:04:05.06', '2024-01-02 03:04:05.123456+00',
                 '1 mon 2 days 00:00:03', '{{\"k\": [1, null]}}', '{{1,NULL,3}}',
                 '{{a,\"b c\"}}', 'sad', repeat('x', 5000));
             INSERT INTO g (id, d) VALUES (2, 'infinity');
             UPDATE g SET i4 = 4 WHERE id = 1;",
            p = f.publication
        ))
        .unwrap();

        block_on(async {
            let mut text_row: Option<Row> = None;
            for binary in [false, true] {
                let mut events = f.start(f.config().binary(binary)).await;
                let got = read_transactions(&mut events, 3).await;
                events.shutdown().await.unwrap();
                let rows: Vec<&Row> = got
                    .iter()
                    .filter_map(|e| match &e.kind {
                        EventKind::Insert(i) if i.relation.name == "g" => Some(&i.new),
                        _ => None,
                    })
                    .collect();
                assert_eq!(rows.len(), 2, "binary {binary}");
                check_full_row(rows[0], binary);
                match &text_row {
                    None => text_row = Some(rows[0].clone()),
                    Some(text) => binary_to_text_matches_the_server(rows[0], text),
                }
                check_null_row(rows[1]);

                let updated = got
                    .iter()
                    .find_map(|e| match &e.kind {
                        EventKind::Update(u) => Some(&u.new),
                        _ => None,
                    })
                    .unwrap();
                assert_eq!(updated.try_get::<i32>("i4").unwrap(), 4);
                let e = updated.try_get::<Option<String>>("big").unwrap_err();
                assert_eq!(e.kind(), &GetErrorKind::UnchangedToast, "{e}");
                assert_eq!(
                    updated.try_get::<Value>("big").unwrap(),
                    Value::UnchangedToast
                );
            }
        });
    });
}

/// `Value::to_text` of each binary value is the server's text of the same value (but for
/// jsonb, whose text the server spaces out, and the enum, whose binary form is not decoded).
fn binary_to_text_matches_the_server(binary: &Row, text: &Row) {
    for (column, raw) in binary.iter() {
        if ["j", "m"].contains(&column.name.as_str()) {
            continue;
        }
        let want = text.get(&column.name).unwrap();
        let want = want.as_text().unwrap();
        let got = Value::decode(column.type_oid, &raw).unwrap().to_text();
        assert_eq!(got.as_deref(), Some(want), "{}", column.name);
    }
}

fn check_full_row(r: &Row, binary: bool) {
    let ctx = format!("binary {binary}");
    assert_eq!(r.try_get::<i64>("id").unwrap(), 1, "{ctx}");
    assert_eq!(r.try_get::<i64>(0).unwrap(), 1, "{ctx}");
    assert_eq!(r.try_get::<i16>("i2").unwrap(), -2, "{ctx}");
    assert_eq!(r.try_get::<i32>("i2").unwrap(), -2, "{ctx}");
    assert_eq!(r.try_get::<i32>("i4").unwrap(), 3, "{ctx}");
    assert_eq!(r.try_get::<f32>("f4").unwrap(), 1.5, "{ctx}");
    assert_eq!(r.try_get::<f64>("f8").unwrap(), -0.25, "{ctx}");
    assert_eq!(r.try_get::<String>("n").unwrap(), "12.3400", "{ctx}");
    assert_eq!(r.try_get::<String>("t").unwrap(), "héllo", "{ctx}");
    assert_eq!(r.try_get::<&str>("t").unwrap(), "héllo", "{ctx}");
    assert_eq!(r.try_get::<&str>("vc").unwrap(), "abc", "{ctx}");
    assert!(r.try_get::<bool>("b").unwrap(), "{ctx}");
    assert_eq!(r.try_get::<Vec<u8>>("by").unwrap(), vec![0, 0xff], "{ctx}");
    if binary {
        assert_eq!(r.try_get::<&[u8]>("by").unwrap(), &[0, 0xff], "{ctx}");
    }
    assert_eq!(
        r.try_get::<uuid::Uuid>("u").unwrap().to_string(),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "{ctx}"
    );
    assert_eq!(
        r.try_get::<NaiveDate>("d").unwrap(),
        NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
        "{ctx}"
    );
    assert_eq!(
        r.try_get::<NaiveTime>("tm").unwrap(),
        NaiveTime::from_hms_milli_opt(12, 34, 56, 500).unwrap(),
        "{ctx}"
    );
    assert_eq!(
        r.try_get::<NaiveDateTime>("ts").unwrap().to_string(),
        "2024-01-02 03:04:05.060",
        "{ctx}"
    );
    assert_eq!(
        r.try_get::<DateTime<Utc>>("tz").unwrap().to_rfc3339(),
        "2024-01-02T03:04:05.123456+00:00",
        "{ctx}"
    );
    assert_eq!(
        r.try_get::<Interval>("iv").unwrap(),
        Interval {
            months: 1,
            days: 2,
            microseconds: 3_000_000
        },
        "{ctx}"
    );
    assert_eq!(
        r.try_get::<serde_json::Value>("j").unwrap(),
        serde_json::json!({"k": [1, null]}),
        "{ctx}"
    );
    assert_eq!(
        r.try_get::<Vec<Option<i32>>>("ai").unwrap(),
        vec![Some(1), None, Some(3)],
        "{ctx}"
    );
    assert_eq!(
        r.try_get::<Vec<String>>("at").unwrap(),
        vec!["a".to_owned(), "b c".to_owned()],
        "{ctx}"
    );
    // An enum: the server's text (in binary format, its send form is the label too, but only
    // the text form is borrowed as text).
    if !binary {
        assert_eq!(r.try_get::<&str>("m").unwrap(), "sad", "{ctx}");
        assert_eq!(r.try_get::<String>("m").unwrap(), "sad", "{ctx}");
    }
    assert_eq!(r.try_get::<Option<i32>>("i4").unwrap(), Some(3), "{ctx}");

    // A NULL element of an array into a Vec of a non-Option type.
    let e = r.try_get::<Vec<i32>>("ai").unwrap_err();
    assert_eq!(e.kind(), &GetErrorKind::Null, "{ctx}: {e}");
    // Wrong types and an unknown column name the column and both types.
    let e = r.try_get::<i32>("t").unwrap_err();
    assert_eq!(e.kind(), &GetErrorKind::WrongType, "{ctx}: {e}");
    assert_eq!(e.to_string(), "column \"t\" (text): cannot be read as i32");
    let e = r.try_get::<i16>("id").unwrap_err();
    assert_eq!(e.kind(), &GetErrorKind::WrongType, "{ctx}: {e}");
    let e = r.try_get::<f64>("n").unwrap_err();
    assert_eq!(e.kind(), &GetErrorKind::WrongType, "{ctx}: {e}");
    let e = r.try_get::<String>("nope").unwrap_err();
    assert_eq!(e.kind(), &GetErrorKind::UnknownColumn, "{ctx}");
    assert_eq!(e.to_string(), "column \"nope\": no such column");
    assert_eq!(
        r.try_get::<String>(99).unwrap_err().kind(),
        &GetErrorKind::UnknownColumn
    );
}

fn check_null_row(r: &Row) {
    for column in ["i2", "f8", "n", "t", "b", "by", "u", "tz", "j", "ai", "m"] {
        assert_eq!(
            r.try_get::<Option<Value>>(column).unwrap(),
            None,
            "{column}"
        );
    }
    assert_eq!(r.try_get::<Option<i16>>("i2").unwrap(), None);
    assert_eq!(r.try_get::<Option<&str>>("t").unwrap(), None);
    assert_eq!(r.try_get::<Option<Vec<i32>>>("ai").unwrap(), None);
    let e = r.try_get::<i16>("i2").unwrap_err();
    assert_eq!(e.kind(), &GetErrorKind::Null, "{e}");
    assert_eq!(
        e.to_string(),
        "column \"i2\" (int2): NULL into i16 (use Option)"
    );
    assert_eq!(
        r.try_get::<Infinitable<NaiveDate>>("d").unwrap(),
        Infinitable::Infinity
    );
    assert_eq!(
        r.try_get::<NaiveDate>("d").unwrap_err().kind(),
        &GetErrorKind::WrongType
    );
}

//! Typed values: a column of every decoded type, streamed in text and in binary format, each
//! value compared with what the server prints for it through an ordinary query.

use serde::Deserialize;
use walstream::value::oid::{self, Type};
use walstream::value::{from_row, Infinitable, Interval, MaybeUnchanged, RowValues, Value};
use walstream::{ColumnValue, EventKind, Insert, LogicalReplicationStream, Row, Update};

use crate::{block_on, read_transactions, Fixture};

/// (column, SQL type); `id int` comes first.
const COLUMNS: &[(&str, &str)] = &[
    ("b", "bool"),
    ("i2", "int2"),
    ("i4", "int4"),
    ("i8", "int8"),
    ("f4", "float4"),
    ("f8", "float8"),
    ("n", "numeric"),
    ("t", "text"),
    ("vc", "varchar(10)"),
    ("bp", "char(5)"),
    ("nm", "name"),
    ("by", "bytea"),
    ("u", "uuid"),
    ("d", "date"),
    ("tm", "time"),
    ("ts", "timestamp"),
    ("tz", "timestamptz"),
    ("iv", "interval"),
    ("j", "json"),
    ("jb", "jsonb"),
    ("o", "oid"),
    ("ab", "bool[]"),
    ("ai2", "int2[]"),
    ("ai", "int4[]"),
    ("ai8", "int8[]"),
    ("af4", "float4[]"),
    ("af8", "float8[]"),
    ("an", "numeric[]"),
    ("at", "text[]"),
    ("avc", "varchar[]"),
    ("abp", "char(2)[]"),
    ("anm", "name[]"),
    ("aby", "bytea[]"),
    ("au", "uuid[]"),
    ("ad", "date[]"),
    ("atm", "time[]"),
    ("ats", "timestamp[]"),
    ("atz", "timestamptz[]"),
    ("aiv", "interval[]"),
    ("aj", "json[]"),
    ("ajb", "jsonb[]"),
    ("ao", "oid[]"),
    ("big", "text"),
];

/// Row 1: ordinary values. Row 2: every column NULL. Rows 3 and 4: edge values.
const ROWS: &str = r#"
INSERT INTO vals (id, b, i2, i4, i8, f4, f8, n, t, vc, bp, nm, by, u, d, tm, ts, tz, iv, j, jb,
                  o, ab, ai2, ai, ai8, af4, af8, an, at, avc, abp, anm, aby, au, ad, atm, ats,
                  atz, aiv, aj, ajb, ao, big) VALUES
 (1, true, -32768, 2147483647, -9223372036854775808, 1.5, 0.1, 12.3400, E'héllo\nwörld|',
  'abc', 'ab', 'a name', '\x00ff5c', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29',
  '23:59:59.999999', '2024-01-02 03:04:05.06', '2024-01-02 03:04:05.123456+00',
  '1 year 2 mons 3 days 04:05:06.789', '{"a": [1, 2.5, null],  "b": "x"}',
  '{"a": [1, 2.5, null], "b": "x"}', 4294967295, '{t,f,NULL}', '{1,-2}', '{1,2,3}',
  '{9223372036854775807}', '{1.5,-0.25}', '{0.1,1e+100}', '{1.5,2.50}', '{plain,"two words"}',
  '{x}', '{a,bc}', '{pg_class}', '{"\\x01"}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}',
  '{2024-01-01}', '{12:00:00}', '{"2024-01-02 03:04:05"}', '{"2024-01-02 03:04:05+00"}',
  '{"1 day","-00:00:01"}', '{"{\"k\": 1}"}', '{"[1, {\"k\": true}]"}', '{1,2}',
  repeat('toasted ', 2000)),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, false, 0, 0, 0, 'NaN', '-Infinity', 'NaN', '', '', '', '', '\x005c', NULL, 'infinity',
  '00:00:00', '-infinity', 'infinity', '-1 days +02:03:00', 'null', '[]', 0, '{}', '{}', '{}',
  '{}', '{NaN,Infinity,-Infinity}', '{NaN,-Infinity,-0}', '{NaN,-0.000001000}',
  ARRAY['a,b', 'say "hi"', NULL, 'NULL', 'back\slash', '', ' sp ', '{}', 'é'],
  ARRAY[NULL]::varchar[], '{" "}', '{}', ARRAY['\x00'::bytea, '\x5c'::bytea, NULL],
  '{}', '{infinity,-infinity}', '{}', '{infinity}', '{-infinity,NULL}', '{}', '{}', '{}', '{}',
  ''),
 (4, NULL, 1, -1, 1, 'Infinity', 'NaN', '-123456789012345678901234567890.123456789012345678901234567890',
  E'tab\there', NULL, 'abcde', NULL, '\x', NULL, '0044-03-15 BC', '12:34:56',
  '0001-01-01 00:00:00 BC', '1900-01-01 00:00:00+00', '-1 years -2 mons +3 days -04:05:06',
  '"\u00e9"', '{"nested": {"deep": [true, false]}}', NULL, NULL, NULL, '[0:1]={5,6}', NULL,
  NULL, NULL, ARRAY['Infinity', '0.00000000000000000001']::numeric[], NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, '{"1970-01-01 00:00:00.000001+00"}', NULL, NULL, NULL, NULL,
  'short');
"#;

/// Equality with `NaN == NaN`, as the server's comparison of floats has it.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float4(x), Value::Float4(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::Float8(x), Value::Float8(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

/// The server's text for every column of every row (a `(c IS NULL)` flag beside each, since
/// `query` prints NULL as an empty string), decoded with the text decoder.
fn expected(f: &Fixture<'_>, row: &Row, setup: &str) -> Vec<Vec<Value>> {
    let select: Vec<String> = row
        .iter()
        .map(|(c, _)| format!("{0} IS NULL, {0}", c.name))
        .collect();
    let rows =
        f.db.query(&format!(
            "{setup} SELECT {} FROM vals ORDER BY id",
            select.join(", ")
        ))
        .unwrap();
    rows.iter()
        .map(|r| {
            row.iter()
                .zip(r.chunks(2))
                .map(|((c, _), pair)| match pair {
                    [null, _] if null == "t" => Value::Null,
                    [_, text] => Value::decode_text(c.type_oid, text)
                        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", c.name)),
                    _ => panic!("{pair:?}"),
                })
                .collect()
        })
        .collect()
}

fn inserts(events: &[walstream::ChangeEvent]) -> Vec<&Insert> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Insert(i) if i.relation.name == "vals" => Some(i),
            _ => None,
        })
        .collect()
}

fn update(events: &[walstream::ChangeEvent]) -> &Update {
    events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Update(u) => Some(u),
            _ => None,
        })
        .unwrap()
}

#[derive(Debug, Deserialize, PartialEq)]
struct Typed {
    id: i32,
    b: Option<bool>,
    i8: Option<i64>,
    /// An `int2` into an `i64`.
    i2: Option<i64>,
    f8: Option<f64>,
    /// `numeric`, exact.
    n: Option<String>,
    t: Option<String>,
    by: Option<Vec<u8>>,
    u: Option<String>,
    tz: Option<String>,
    ai: Option<Vec<i32>>,
    ab: Option<Vec<Option<bool>>>,
    jb: Option<serde_json::Value>,
    big: MaybeUnchanged<Option<String>>,
}

#[test]
fn values_text_and_binary_match_the_server() {
    pgtest::for_each_major(15, |cluster| {
        let f = Fixture::new(cluster, "ws_values");
        // PostgreSQL 17 added infinite intervals.
        let infinite_intervals = cluster.major() >= 17;
        let transactions = 2 + usize::from(infinite_intervals);
        let create: Vec<String> = COLUMNS.iter().map(|(c, t)| format!("{c} {t}")).collect();
        f.db.psql(&format!(
            "ALTER DATABASE {db} SET timezone = 'Asia/Kolkata';
             CREATE TABLE vals (id int PRIMARY KEY, {cols});
             ALTER TABLE vals ALTER big SET STORAGE EXTERNAL;
             ALTER PUBLICATION {publication} ADD TABLE vals;
             {ROWS}
             UPDATE vals SET i4 = i4 WHERE id = 1;
             {infinite_intervals}",
            db = f.db.name(),
            cols = create.join(", "),
            publication = f.publication,
            infinite_intervals = if infinite_intervals {
                "INSERT INTO vals (id, iv, aiv) VALUES (5, 'infinity', '{-infinity,infinity}');"
            } else {
                ""
            },
        ))
        .unwrap();
        // The server prints a local mean time offset with seconds (+05:53:28 or +05:21:10,
        // as the cluster's tzdata has it).
        let lmt = f.db.psql("SELECT tz FROM vals WHERE id = 4").unwrap();
        let offset = lmt.rsplit_once('+').unwrap().1;
        assert_eq!(offset.matches(':').count(), 2, "{lmt}");

        block_on(async {
            let mut text_rows = Vec::new();
            for binary in [false, true] {
                let mut events = f.start(f.config().binary(binary)).await;
                let got = read_transactions(&mut events, transactions).await;
                events.shutdown().await.unwrap();
                let rows: Vec<Row> = inserts(&got).iter().map(|i| i.new.clone()).collect();
                assert_eq!(rows.len(), 4 + usize::from(infinite_intervals));
                if let Some(row) = rows.get(4) {
                    assert_eq!(
                        row.decoded("aiv").unwrap().unwrap(),
                        Value::Array(vec![
                            Value::Interval(Interval::NEG_INFINITY),
                            Value::Interval(Interval::INFINITY)
                        ])
                    );
                }
                let want = expected(&f, &rows[0], "");
                for (row, want) in rows.iter().zip(&want) {
                    for ((column, raw), want) in row.iter().zip(want) {
                        match raw {
                            ColumnValue::Binary(_) => assert!(binary, "{}", column.name),
                            ColumnValue::Text(_) => assert!(!binary, "{}", column.name),
                            _ => {}
                        }
                        let got = Value::decode(column.type_oid, &raw).unwrap_or_else(|e| {
                            panic!("{} (binary: {binary}): {raw:?}: {e}", column.name)
                        });
                        assert!(
                            same(&got, want),
                            "{} (binary: {binary}): {got:?} != {want:?}",
                            column.name
                        );
                    }
                }

                // Spot checks that the comparison is not vacuous.
                let edge = &rows[2];
                let value = |name: &str| edge.decoded(name).unwrap().unwrap();
                assert_eq!(value("n"), Value::Numeric("NaN".into()));
                assert_eq!(
                    value("by"),
                    Value::Bytea(bytes::Bytes::from_static(b"\0\\"))
                );
                assert_eq!(value("u"), Value::Null);
                assert_eq!(value("ai"), Value::Array(vec![]));
                assert!(matches!(
                    value("tz"),
                    Value::TimestampTz(walstream::value::Infinitable::Infinity)
                ));
                let Value::Array(at) = value("at") else {
                    panic!()
                };
                assert_eq!(at[1], Value::Text("say \"hi\"".into()));
                assert_eq!(at[2], Value::Null);
                assert_eq!(at[3], Value::Text("NULL".into()));
                assert_eq!(at[4], Value::Text("back\\slash".into()));
                assert_eq!(
                    rows[3].decoded("n").unwrap().unwrap(),
                    Value::Numeric(
                        "-123456789012345678901234567890.123456789012345678901234567890".into()
                    )
                );
                let Value::Interval(iv) = rows[3].decoded("iv").unwrap().unwrap() else {
                    panic!()
                };
                assert_eq!(iv.to_string(), "-1 years -2 mons +3 days -04:05:06");

                // The update leaves the TOASTed column unsent: not NULL.
                let u = update(&got);
                assert_eq!(
                    u.new.decoded("big").unwrap().unwrap(),
                    Value::UnchangedToast
                );
                assert_eq!(u.new.decoded("i4").unwrap().unwrap(), Value::Int4(i32::MAX));

                // serde: by column name, NULL as None, unchanged TOAST kept apart.
                let typed: Vec<Typed> = rows[..4].iter().map(|r| from_row(r).unwrap()).collect();
                assert_eq!(typed[0].i2, Some(-32768));
                assert_eq!(typed[0].n.as_deref(), Some("12.3400"));
                assert_eq!(typed[0].by.as_deref(), Some(&b"\x00\xff\x5c"[..]));
                assert_eq!(typed[0].ab, Some(vec![Some(true), Some(false), None]));
                assert_eq!(typed[0].tz.as_deref(), Some("2024-01-02T03:04:05.123456Z"));
                assert_eq!(
                    typed[0].jb,
                    Some(serde_json::json!({"a": [1, 2.5, null], "b": "x"}))
                );
                assert_eq!(
                    typed[1],
                    Typed {
                        id: 2,
                        b: None,
                        i8: None,
                        i2: None,
                        f8: None,
                        n: None,
                        t: None,
                        by: None,
                        u: None,
                        tz: None,
                        ai: None,
                        ab: None,
                        jb: None,
                        big: MaybeUnchanged::Value(None),
                    }
                );
                assert!(typed[2].f8.unwrap().is_infinite());
                assert_eq!(typed[2].tz.as_deref(), Some("infinity"));
                let after: Typed = from_row(&u.new).unwrap();
                assert_eq!(after.big, MaybeUnchanged::Unchanged);

                text_rows.push(rows);
            }
            // Text and binary decode to the same values.
            for (t, b) in text_rows[0].iter().zip(&text_rows[1]) {
                for ((c, tv), (_, bv)) in t.decoded_columns().zip(b.decoded_columns()) {
                    assert!(same(&tv.unwrap(), &bv.unwrap()), "{}", c.name);
                }
            }
        });

        // The escape format of bytea decodes to the same bytes as hex.
        let hex =
            f.db.query("SELECT by FROM vals WHERE by IS NOT NULL ORDER BY id")
                .unwrap();
        let escape =
            f.db.query(
                "SET bytea_output = escape; SELECT by FROM vals WHERE by IS NOT NULL ORDER BY id",
            )
            .unwrap();
        assert_eq!(escape[1][0], r"\000\\");
        for (h, e) in hex.iter().zip(&escape) {
            assert_eq!(
                Value::decode_text(oid::of(&Type::BYTEA), &h[0]).unwrap(),
                Value::decode_text(oid::of(&Type::BYTEA), &e[0]).unwrap()
            );
        }
    });
}

#[test]
fn values_serde_mismatch_names_the_column() {
    let cluster = pgtest::cluster(15);
    let f = Fixture::new(cluster, "ws_values_serde");
    f.db.psql(&format!(
        "CREATE TABLE vals (id int PRIMARY KEY, t text, b bool, big text);
         ALTER TABLE vals ALTER big SET STORAGE EXTERNAL;
         ALTER PUBLICATION {} ADD TABLE vals;
         INSERT INTO vals VALUES (1, 'one', NULL, repeat('x', 10000));
         UPDATE vals SET t = 'uno' WHERE id = 1;",
        f.publication
    ))
    .unwrap();
    block_on(async {
        let mut events = f.start(f.config()).await;
        let got = read_transactions(&mut events, 2).await;
        events.shutdown().await.unwrap();
        let row = &inserts(&got)[0].new;

        #[derive(Debug, Deserialize)]
        #[allow(dead_code, reason = "only the error is looked at")]
        struct WrongType {
            t: i32,
        }
        let err = from_row::<WrongType>(row).unwrap_err();
        assert_eq!(err.column(), Some("t"));
        assert_eq!(
            err.to_string(),
            r#"column "t" (text): invalid type: string "one", expected i32"#
        );

        #[derive(Debug, Deserialize)]
        #[allow(dead_code, reason = "only the error is looked at")]
        struct NotNullable {
            b: bool,
        }
        let err = from_row::<NotNullable>(row).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"column "b" (bool): invalid type: Option value, expected a boolean"#
        );

        #[derive(Debug, Deserialize)]
        #[allow(dead_code, reason = "only the error is looked at")]
        struct Missing {
            nope: String,
        }
        assert_eq!(
            from_row::<Missing>(row).unwrap_err().to_string(),
            "missing field `nope`"
        );

        #[derive(Debug, Deserialize)]
        #[allow(dead_code, reason = "only the error is looked at")]
        struct Plain {
            big: Option<String>,
        }
        let new = &update(&got).new;
        let err = from_row::<Plain>(new).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"column "big" (text): an unchanged TOAST value"#),
            "{err}"
        );
    });
}

/// A role whose defaults change how the server prints dates, timestamps, intervals and floats
/// (`DateStyle`, `IntervalStyle`, `extra_float_digits`) still streams the right typed values,
/// because the connection pins the forms the text decoder reads.
#[test]
fn values_decode_right_whatever_styles_the_role_sets() {
    pgtest::for_each_major(15, |cluster| {
        let f = Fixture::new(cluster, "ws_styles");
        let role = cluster.unique_name("ws_styles");
        f.db.psql(&format!(
            "CREATE ROLE {role} LOGIN REPLICATION;
             ALTER ROLE {role} SET DateStyle = 'SQL, DMY';
             ALTER ROLE {role} SET IntervalStyle = 'iso_8601';
             ALTER ROLE {role} SET extra_float_digits = 0;
             CREATE TABLE styled (id int PRIMARY KEY, d date, ts timestamp, iv interval,
                                  f8 float8);
             ALTER PUBLICATION {publication} ADD TABLE styled;
             INSERT INTO styled VALUES (1, '2024-01-02', '2024-01-02 03:04:05.06',
                                        '1 year 2 mons 3 days 04:05:06.789',
                                        0.1::float8 + 0.2::float8);",
            publication = f.publication
        ))
        .unwrap();
        block_on(async {
            let conninfo = format!("{} user={role}", f.db.conninfo());
            let mut events =
                LogicalReplicationStream::connect(&conninfo, f.config().build().unwrap())
                    .await
                    .unwrap()
                    .start();
            let got = read_transactions(&mut events, 1).await;
            events.shutdown().await.unwrap();
            let row = got
                .iter()
                .find_map(|e| match &e.kind {
                    EventKind::Insert(i) if i.relation.name == "styled" => Some(&i.new),
                    _ => None,
                })
                .unwrap();
            assert!(
                matches!(row.get("d"), Some(ColumnValue::Text(_))),
                "the text form is what the styles change"
            );
            let value = |name: &str| row.decoded(name).unwrap().unwrap();
            let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
            assert_eq!(value("d"), Value::Date(Infinitable::Finite(day)));
            assert_eq!(
                value("ts"),
                Value::Timestamp(Infinitable::Finite(
                    day.and_hms_micro_opt(3, 4, 5, 60_000).unwrap()
                ))
            );
            assert_eq!(
                value("iv"),
                Value::Interval(Interval {
                    months: 14,
                    days: 3,
                    microseconds: ((4 * 60 + 5) * 60 + 6) * 1_000_000 + 789_000,
                })
            );
            assert_eq!(value("f8"), Value::Float8(0.1 + 0.2));
        });
    });
}

//! `--typed` and `--format wal2json` (CLI.md): every recorded capture of `testdata/` decoded
//! both ways and checked line by line against the untyped output it must agree with, binary
//! captures against their text twins, and `tail --typed` / `--format wal2json` on live servers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::record::{bin, setup};
use crate::support::walstream;

/// The lines of `walstream decode CAPTURE [extra]`, which must succeed; each must be a JSON
/// object.
fn decode(capture: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["decode", capture.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = walstream(&args, b"");
    assert_eq!(run.code, 0, "{}: {}", capture.display(), run.stderr);
    run.lines()
        .into_iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn captures() -> Vec<PathBuf> {
    let dir = pgtest::testdata::dir();
    let names = pgtest::testdata::listed_captures();
    assert!(!names.is_empty());
    names
        .iter()
        .map(|n| dir.join(format!("{n}.walcap")))
        .collect()
}

/// The type OIDs of each relation's columns, from the `relation` lines seen so far.
type Types = BTreeMap<i64, Vec<(String, i64)>>;

/// Checks one typed value against the untyped one of the same column (type `oid`).
fn check_value(oid: i64, untyped: &Value, typed: &Value, at: &str) {
    let text = match untyped {
        Value::String(s) => s.as_str(),
        // Binary values: `binary_captures_type_like_their_text_twins`.
        Value::Object(o) if o.contains_key("binary") => return,
        // NULL and unchanged TOAST are left as they are.
        _ => return assert_eq!(typed, untyped, "{at}"),
    };
    let special = ["NaN", "Infinity", "-Infinity"].contains(&text);
    match oid {
        20 | 21 | 23 | 26 => assert_eq!(typed.as_i64(), text.parse().ok(), "{at}"),
        16 => assert_eq!(typed, &json!(text == "t"), "{at}"),
        700 | 701 if special => assert_eq!(typed, untyped, "{at}"),
        700 | 701 => assert_eq!(typed.as_f64(), text.parse().ok(), "{at}"),
        1700 => match typed {
            Value::Number(n) => {
                assert!(!special, "{at}");
                assert_eq!(n.as_f64(), text.parse().ok(), "{at}");
            }
            _ => assert_eq!(
                typed, untyped,
                "{at}: a numeric string is the server's text"
            ),
        },
        114 | 3802 => {
            assert_eq!(typed, &serde_json::from_str::<Value>(text).unwrap(), "{at}")
        }
        1007 | 1009 => {
            let elements = typed.as_array().unwrap_or_else(|| panic!("{at}: {typed}"));
            assert_eq!(text == "{}", elements.is_empty(), "{at}");
            assert!(
                text.matches("NULL").count() >= elements.iter().filter(|e| e.is_null()).count(),
                "{at}"
            );
        }
        _ => assert_eq!(typed, untyped, "{at}: the server's text"),
    }
}

#[test]
fn typed_decode_of_every_capture_agrees_with_the_untyped_lines() {
    let mut values_checked = 0;
    let mut numbers = 0;
    for capture in captures() {
        let name = capture.file_name().unwrap().to_string_lossy().into_owned();
        let untyped = decode(&capture, &[]);
        let typed = decode(&capture, &["--typed"]);
        assert_eq!(typed.len(), untyped.len(), "{name}");
        let mut types = Types::new();
        for (i, (u, t)) in untyped.iter().zip(&typed).enumerate() {
            let at = format!("{name} line {}", i + 1);
            if u["type"] == "relation" {
                let columns = u["columns"].as_array().unwrap();
                let id = u["relation_id"].as_i64().unwrap();
                let cols = columns
                    .iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap().to_owned(),
                            c["type_oid"].as_i64().unwrap(),
                        )
                    })
                    .collect();
                types.insert(id, cols);
            }
            let (Value::Object(uo), Value::Object(to)) = (u, t) else {
                panic!("{at}")
            };
            assert_eq!(
                uo.keys().collect::<Vec<_>>(),
                to.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (key, uv) in uo {
                let tv = &to[key];
                if !["new", "old", "key"].contains(&key.as_str()) {
                    assert_eq!(uv, tv, "{at}: {key}");
                    continue;
                }
                let cols = &types[&u["relation_id"].as_i64().unwrap()];
                let (urow, trow) = (uv.as_object().unwrap(), tv.as_object().unwrap());
                assert_eq!(
                    urow.keys().collect::<Vec<_>>(),
                    trow.keys().collect::<Vec<_>>(),
                    "{at}: {key}"
                );
                for (column, oid) in cols {
                    let Some(uval) = urow.get(column) else {
                        // Only a key row leaves columns out.
                        assert_eq!(key, "key", "{at}: {column}");
                        continue;
                    };
                    check_value(*oid, uval, &trow[column], &format!("{at}: {key}.{column}"));
                    values_checked += 1;
                    numbers += usize::from(trow[column].is_number());
                }
            }
        }
    }
    assert!(values_checked > 10_000, "{values_checked}");
    assert!(numbers > 1_000, "{numbers}");
}

/// The typed rows of `kitchen` and `rfull` in a binary capture equal those of the text capture
/// of the same major, but for the values of types only the server can print (an enum, a
/// domain, a composite), which stay `{"binary": ...}`.
#[test]
fn binary_captures_type_like_their_text_twins() {
    let dir = pgtest::testdata::dir();
    let mut compared = 0;
    for major in 15..=18 {
        let rows = |variant: &str| -> Vec<Value> {
            decode(
                &dir.join(format!("pg{major}-{variant}.walcap")),
                &["--typed"],
            )
            .into_iter()
            .filter(|l| ["kitchen", "rfull"].contains(&l["table"].as_str().unwrap_or("")))
            .filter_map(|l| l.get("new").cloned())
            .collect()
        };
        let (text, binary) = (rows("v1"), rows("binary"));
        assert_eq!(text.len(), binary.len(), "pg{major}");
        assert!(!text.is_empty());
        for (t, b) in text.iter().zip(&binary) {
            for (column, bv) in b.as_object().unwrap() {
                if bv.get("binary").is_some() {
                    assert!(["m", "p", "c"].contains(&column.as_str()), "{column}: {bv}");
                    continue;
                }
                assert_eq!(&t[column], bv, "pg{major} {column}");
                compared += 1;
            }
        }
    }
    assert!(compared > 100, "{compared}");
}

#[test]
fn wal2json_decode_of_the_recorded_captures() {
    let mut checked = 0;
    for capture in captures() {
        let name = capture.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.contains("-v1") || name.contains("-binary")) {
            // Streamed and prepared transactions have no wal2json form: refused, exit 2.
            let run = walstream(
                &["decode", capture.to_str().unwrap(), "--format", "wal2json"],
                b"",
            );
            assert_eq!(run.code, 2, "{name}: {}", run.stderr);
            assert!(run.stdout.is_empty(), "{name}");
            assert!(
                run.stderr
                    .contains("--format wal2json needs --streaming off"),
                "{name}: {}",
                run.stderr
            );
            continue;
        }
        let untyped = decode(&capture, &[]);
        let lines = decode(&capture, &["--format", "wal2json"]);
        let count = |t: &str| untyped.iter().filter(|l| l["type"] == t).count();
        let actions = |a: &str| lines.iter().filter(|l| l["action"] == a).count();
        assert_eq!(actions("B"), count("begin"), "{name}");
        assert_eq!(actions("C"), count("commit"), "{name}");
        assert_eq!(actions("I"), count("insert"), "{name}");
        assert_eq!(actions("U"), count("update"), "{name}");
        assert_eq!(actions("D"), count("delete"), "{name}");
        assert_eq!(actions("M"), count("message"), "{name}");
        let truncated: usize = untyped
            .iter()
            .filter(|l| l["type"] == "truncate")
            .map(|l| l["tables"].as_array().unwrap().len())
            .sum();
        assert_eq!(actions("T"), truncated, "{name}");
        assert_eq!(
            lines.len(),
            ["B", "C", "I", "U", "D", "M", "T"]
                .map(actions)
                .iter()
                .sum::<usize>()
        );

        // The first kitchen insert, column by column.
        let insert = lines
            .iter()
            .find(|l| l["action"] == "I" && l["table"] == "kitchen")
            .unwrap();
        assert_eq!(insert["schema"], "public");
        let col = |line: &Value, field: &str, name: &str| -> Value {
            line[field]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .cloned()
                .unwrap_or(Value::Null)
        };
        assert_eq!(
            col(insert, "columns", "id"),
            json!({"name": "id", "type": "bigint", "value": 1})
        );
        assert_eq!(col(insert, "columns", "i4")["type"], "integer");
        assert_eq!(
            col(insert, "columns", "vc")["type"],
            "character varying(20)"
        );
        assert_eq!(
            col(insert, "columns", "flag"),
            json!({"name": "flag", "type": "boolean", "value": true})
        );
        assert_eq!(
            col(insert, "columns", "f4")["value"],
            Value::Null,
            "NaN is null"
        );
        assert_eq!(col(insert, "columns", "b")["value"], "deadbeef00");
        assert_eq!(
            col(insert, "columns", "ts")["type"],
            "timestamp with time zone"
        );
        assert_eq!(
            col(insert, "columns", "ia"),
            json!({"name": "ia", "type": "integer[]", "value": "{1,2,NULL}"})
        );
        assert_eq!(col(insert, "columns", "m")["type"], "mood");
        assert!(col(insert, "columns", "n")["value"].is_number());
        assert_eq!(insert["pk"], json!([{"name": "id", "type": "bigint"}]));
        assert!(insert.get("identity").is_none());

        // Deletes carry the old key as identity; an update without an old image takes the key
        // from its new row; unchanged TOAST values are left out of the columns.
        let delete = lines
            .iter()
            .find(|l| l["action"] == "D" && l["table"] == "kitchen")
            .unwrap();
        assert_eq!(delete["identity"].as_array().unwrap().len(), 1);
        assert_eq!(col(delete, "identity", "id")["type"], "bigint");
        assert!(delete.get("columns").is_none());
        let update = lines
            .iter()
            .find(|l| l["action"] == "U" && l["table"] == "kitchen")
            .unwrap();
        let identity = update["identity"].as_array().unwrap();
        assert_eq!(identity.len(), 1, "{update}");
        assert_eq!(identity[0]["value"], col(update, "columns", "id")["value"]);
        let untoasted = untyped
            .iter()
            .filter(|l| l["type"] == "update" && l["table"] == "kitchen")
            .any(|l| l["new"]["big"] == json!({"unchanged_toast": true}));
        let left_out = lines
            .iter()
            .filter(|l| l["action"] == "U" && l["table"] == "kitchen")
            .any(|l| col(l, "columns", "big").is_null());
        assert_eq!(untoasted, left_out, "{name}");
        // Replica identity full: the whole old row, every column in pk.
        let rfull = lines
            .iter()
            .find(|l| l["action"] == "D" && l["table"] == "rfull")
            .unwrap();
        assert_eq!(
            rfull["identity"].as_array().unwrap().len(),
            rfull["pk"].as_array().unwrap().len()
        );
        assert!(rfull["identity"].as_array().unwrap().len() > 1);
        let truncate = lines.iter().find(|l| l["action"] == "T").unwrap();
        assert_eq!(truncate.as_object().unwrap().len(), 3, "{truncate}");
        let message = lines.iter().find(|l| l["action"] == "M").unwrap();
        assert!(message["transactional"].is_boolean() && message["prefix"].is_string());

        // With --typed, values follow --typed's rules inside the same shape.
        let typed = decode(&capture, &["--format", "wal2json", "--typed"]);
        assert_eq!(typed.len(), lines.len());
        let insert = typed
            .iter()
            .find(|l| l["action"] == "I" && l["table"] == "kitchen")
            .unwrap();
        assert_eq!(col(insert, "columns", "ia")["value"], json!([1, 2, null]));
        assert_eq!(col(insert, "columns", "f4")["value"], "NaN");
        assert!(col(insert, "columns", "j")["value"].is_object());
        checked += 1;
    }
    assert_eq!(checked, 8);
}

#[test]
fn tail_typed_and_wal2json_on_a_live_server() {
    pgtest::for_each_major(15, |cluster| {
        let (db, first_slot) = setup(cluster, "tail_typed");
        // A slot for each run (a run acknowledges what it printed).
        let slots = [
            first_slot,
            cluster.unique_name("typed"),
            cluster.unique_name("typed"),
        ];
        for slot in &slots[1..] {
            db.psql(&format!(
                "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
            ))
            .unwrap();
        }
        db.psql(
            "CREATE TABLE g (id int8 PRIMARY KEY, n numeric, f float8, b bool, j jsonb,
                             a int4[], d date);
             ALTER PUBLICATION p ADD TABLE g;",
        )
        .unwrap();
        db.psql(
            "INSERT INTO g VALUES (1, 12.50, 'NaN', true, '{\"k\": [1, null]}', '{1,NULL}',
                                   '2024-02-29'),
                                  (2, 0.123456789012345678, 1.5, NULL, NULL, '{}', NULL)",
        )
        .unwrap();
        db.psql("DELETE FROM g WHERE id = 2").unwrap();
        let end = db.query("SELECT pg_current_wal_lsn()").unwrap()[0][0].clone();
        let tail = |slot: &str, extra: &[&str]| -> Vec<Value> {
            let run = bin()
                .args(["tail", &db.conninfo(), "--slot", slot, "--publication", "p"])
                .args(["--end", &end])
                .args(extra)
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            String::from_utf8(run.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        for (slot, binary) in slots.iter().zip([&[][..], &["--binary"][..]]) {
            let mut args = vec!["--typed"];
            args.extend_from_slice(binary);
            let lines = tail(slot, &args);
            let inserts: Vec<&Value> = lines.iter().filter(|l| l["type"] == "insert").collect();
            assert_eq!(inserts.len(), 2, "{lines:?}");
            assert_eq!(
                inserts[0]["new"],
                json!({"id": 1, "n": 12.50, "f": "NaN", "b": true, "j": {"k": [1, null]},
                       "a": [1, null], "d": "2024-02-29"}),
                "{binary:?}"
            );
            assert_eq!(inserts[1]["new"]["n"], "0.123456789012345678");
            assert_eq!(inserts[1]["new"]["f"], 1.5);
            assert_eq!(inserts[1]["new"]["a"], json!([]));
            let delete = lines.iter().find(|l| l["type"] == "delete").unwrap();
            assert_eq!(delete["key"], json!({"id": 2}));
        }
        let lines = tail(&slots[2], &["--format", "wal2json"]);
        let actions: Vec<&str> = lines
            .iter()
            .map(|l| l["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["B", "I", "I", "C", "B", "D", "C"]);
        assert_eq!(
            lines[1]["columns"][1],
            json!({"name": "n", "type": "numeric", "value": 12.50})
        );
        assert_eq!(
            lines[5]["identity"],
            json!([{"name": "id", "type": "bigint", "value": 2}])
        );
        assert_eq!(lines[5]["pk"], json!([{"name": "id", "type": "bigint"}]));

        // Streamed transactions have no wal2json form: refused before connecting.
        let run = bin()
            .args([
                "tail",
                &db.conninfo(),
                "--slot",
                &slots[0],
                "--publication",
                "p",
            ])
            .args(["--format", "wal2json", "--streaming", "on"])
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&run.stderr).contains("--streaming off"));
    });
}

/// `tail --snapshot` with `--typed` and with `--format wal2json`: the snapshot's rows (binary,
/// from `COPY`) rendered by their types, then a streamed change.
#[test]
fn tail_snapshot_typed_and_wal2json() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let cluster = pgtest::cluster(17);
    let db = cluster.create_database("tail_snapshot_typed").unwrap();
    db.psql(
        "CREATE TABLE s (id int PRIMARY KEY, v text, n numeric(6,2), a text[]);
         CREATE PUBLICATION p FOR TABLE s;
         INSERT INTO s VALUES (1, 'one', 1.50, '{x,NULL}');",
    )
    .unwrap();
    for (i, extra) in [&["--typed"][..], &["--format", "wal2json"][..]]
        .into_iter()
        .enumerate()
    {
        let slot = cluster.unique_name("snap_typed");
        let mut child = bin()
            .args([
                "tail",
                &db.conninfo(),
                "--slot",
                &slot,
                "--publication",
                "p",
            ])
            .args(["--create-slot", "--snapshot", "--status-interval", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut read = || -> Value {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "tail ended early");
            serde_json::from_str(&line).unwrap()
        };
        if i == 0 {
            assert_eq!(read()["type"], "relation");
            let row = read();
            assert_eq!(
                row["new"],
                json!({"id": 1, "v": "one", "n": 1.50, "a": ["x", null]})
            );
        } else {
            let row = read();
            assert_eq!(
                row,
                json!({"action": "I", "schema": "public", "table": "s", "columns": [
                    {"name": "id", "type": "integer", "value": 1},
                    {"name": "v", "type": "text", "value": "one"},
                    {"name": "n", "type": "numeric(6,2)", "value": 1.50},
                    {"name": "a", "type": "text[]", "value": "{x,NULL}"}],
                    "pk": [{"name": "id", "type": "integer"}]})
            );
        }
        // Then a change streamed after the snapshot (text format).
        db.psql(&format!(
            "INSERT INTO s VALUES ({}, 'two', 2, '{{}}')",
            i + 2
        ))
        .unwrap();
        loop {
            let line = read();
            // The second run's snapshot also holds the first run's streamed row.
            if line["type"] == "insert" && line["new"]["id"] == i + 2 {
                assert_eq!(line["new"]["a"], json!([]));
                break;
            }
            if line["action"] == "I" && line["columns"][0]["value"] == i + 2 {
                assert_eq!(line["columns"][3]["value"], "{}");
                break;
            }
        }
        let kill = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

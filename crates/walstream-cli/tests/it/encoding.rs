//! Databases whose encoding is not UTF-8. The connection asks for `client_encoding=UTF8`: a
//! LATIN1 database's text is converted by the server and arrives intact; in an SQL_ASCII
//! database the server itself refuses to send a value that is not UTF-8 (SQLSTATE 22021): a
//! clear error that says so (exit 1, undecodable data, not retried), never a panic or a silent
//! replacement. (A value that did reach the client as invalid UTF-8 is an error naming the
//! table and column: see `errors.rs`.)

use crate::record::bin;

/// A new database of `encoding` (C locale) holding table `t` in publication `p`, a slot, and
/// one row whose `v` is `value_sql`; returns the database's name, the slot and the LSN after
/// the row.
fn database(
    cluster: &pgtest::Cluster,
    encoding: &str,
    value_sql: &str,
) -> (String, String, String) {
    let name = cluster.unique_name(&format!("enc_{}", encoding.to_lowercase()));
    let slot = cluster.unique_name("enc");
    cluster
        .psql(
            "postgres",
            &format!(
                "CREATE DATABASE {name} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' \
                 TEMPLATE template0"
            ),
        )
        .unwrap();
    cluster
        .psql(
            &name,
            &format!(
                "SET client_encoding = 'UTF8';
                 CREATE TABLE t (id int PRIMARY KEY, v text);
                 CREATE PUBLICATION p FOR TABLE t;
                 SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');
                 INSERT INTO t VALUES (1, {value_sql});"
            ),
        )
        .unwrap();
    let end = cluster.query(&name, "SELECT pg_current_wal_lsn()").unwrap()[0][0].clone();
    (name, slot, end)
}

fn tail(cluster: &pgtest::Cluster, db: &str, slot: &str, end: &str) -> std::process::Output {
    bin()
        .args([
            "tail",
            &cluster.conninfo(db),
            "--slot",
            slot,
            "--publication",
            "p",
        ])
        .args(["--end", end])
        .output()
        .unwrap()
}

#[test]
fn latin1_text_arrives_converted_and_intact() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot, end) = database(cluster, "LATIN1", "'café ÿ'");
        let run = tail(cluster, &db, &slot, &end);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{stderr}");
        let stdout = String::from_utf8(run.stdout).unwrap();
        let insert: serde_json::Value = stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["type"] == "insert")
            .unwrap();
        assert_eq!(insert["new"]["v"], "café ÿ");
    });
}

#[test]
fn sql_ascii_bytes_that_are_not_utf8_are_a_data_error_not_retried() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot, end) = database(cluster, "SQL_ASCII", r"E'ok \xff'");
        let run = tail(cluster, &db, &slot, &end);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("22021"), "{stderr}");
        assert!(stderr.contains("not valid in UTF-8"), "{stderr}");
        assert!(!stderr.contains("reconnecting"), "retried: {stderr}");
        // The lines before the bad row were printed, and no replacement character was.
        let stdout = String::from_utf8(run.stdout).unwrap();
        assert!(
            stdout.lines().any(|l| l.contains("\"type\":\"begin\"")),
            "{stdout}"
        );
        assert!(!stdout.contains('\u{fffd}'), "{stdout}");
    });
}

/// The explicit way to read an SQL_ASCII database's bytes: `client_encoding=SQL_ASCII` in the
/// conninfo. The server then sends them unconverted, and `tail`, which prints text as JSON
/// strings, names the table and column of the value that is not UTF-8 (exit 1) after printing
/// every line before it.
#[test]
fn sql_ascii_bytes_read_unconverted_are_named_by_table_and_column() {
    pgtest::for_each_major(15, |cluster| {
        let (db, slot, end) = database(cluster, "SQL_ASCII", r"E'ok \xff'");
        let conninfo = format!("{} client_encoding=SQL_ASCII", cluster.conninfo(&db));
        let run = bin()
            .args(["tail", &conninfo, "--slot", &slot, "--publication", "p"])
            .args(["--end", &end])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("text value of column \"v\" of public.t is not valid UTF-8"),
            "{stderr}"
        );
        let stdout = String::from_utf8(run.stdout).unwrap();
        assert!(
            stdout.lines().any(|l| l.contains("\"type\":\"begin\"")),
            "{stdout}"
        );
        assert!(!stdout.contains('\u{fffd}'), "{stdout}");
    });
}

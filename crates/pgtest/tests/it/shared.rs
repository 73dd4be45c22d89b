//! The shared clusters: every installed major starts, runs SQL and decodes with pgoutput.

#[test]
fn every_installed_major_starts_and_answers_sql() {
    let installed = pgtest::installed_majors();
    assert!(!installed.is_empty(), "{}", pgtest::INSTALL_HINT);
    pgtest::for_each_major(15, |cluster| {
        let version = cluster.server_version().unwrap();
        assert!(
            version.starts_with(&format!("{}.", cluster.major())),
            "PostgreSQL {} reports {version}",
            cluster.major()
        );
        assert_eq!(
            cluster.psql("postgres", "SHOW wal_level").unwrap(),
            "logical"
        );
        assert_eq!(cluster.psql("postgres", "SHOW fsync").unwrap(), "off");
        assert_eq!(
            cluster.psql("postgres", "SELECT current_user").unwrap(),
            "postgres"
        );
        assert!(cluster
            .socket_dir()
            .join(format!(".s.PGSQL.{}", cluster.port()))
            .exists());
    });
}

#[test]
fn conninfo_forms() {
    let cluster = pgtest::cluster(crate::some_major());
    let port = cluster.port();
    assert_eq!(cluster.host(), "127.0.0.1");
    assert_eq!(cluster.user(), "postgres");
    assert_eq!(
        cluster.conninfo("db1"),
        format!("host=127.0.0.1 port={port} user=postgres dbname=db1")
    );
    assert_eq!(
        cluster.url("db 1"),
        format!("postgresql://postgres@127.0.0.1:{port}/db%201")
    );
    assert_eq!(
        cluster.conninfo("it's"),
        format!("host=127.0.0.1 port={port} user=postgres dbname='it\\'s'")
    );
}

#[test]
fn query_keeps_newlines_and_pipes_inside_values() {
    let cluster = pgtest::cluster(crate::some_major());
    let db = cluster.create_database("pgtest_query").unwrap();
    let rows = db
        .query("SELECT 1, E'a|b\\nc', NULL UNION ALL SELECT 2, '', 'x' ORDER BY 1")
        .unwrap();
    assert_eq!(
        rows,
        vec![
            vec!["1".to_owned(), "a|b\nc".to_owned(), String::new()],
            vec!["2".to_owned(), String::new(), "x".to_owned()],
        ]
    );
    assert_eq!(
        db.psql("SELECT current_database()").unwrap(),
        "pgtest_query"
    );
}

#[test]
fn sql_errors_are_reported() {
    let cluster = pgtest::cluster(crate::some_major());
    let err = cluster
        .psql("postgres", "SELECT 1/0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("division by zero"), "{err}");
}

#[test]
fn create_database_twice_starts_clean() {
    let cluster = pgtest::cluster(crate::some_major());
    let db = cluster.create_database("pgtest_twice").unwrap();
    db.psql("CREATE TABLE t (a int)").unwrap();
    let slot = cluster.unique_name("pgtest_twice");
    db.psql(&format!(
        "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
    ))
    .unwrap();
    let db = cluster.create_database("pgtest_twice").unwrap();
    assert_eq!(
        db.psql("SELECT count(*) FROM pg_class WHERE relname = 't'")
            .unwrap(),
        "0"
    );
}

#[test]
fn unique_names_differ_and_fit() {
    let a = pgtest::unique_name("Some-Test::name");
    let b = pgtest::unique_name("Some-Test::name");
    assert_ne!(a, b);
    assert!(a.starts_with("some_test__name_"), "{a}");
    let long = pgtest::unique_name(&"x".repeat(200));
    assert!(long.len() <= 63, "{long}");
}

#[test]
fn pgoutput_changes_through_sql() {
    pgtest::for_each_major(15, |cluster| {
        let db = cluster.create_database("pgtest_pgoutput").unwrap();
        let slot = cluster.unique_name("pgtest_pgoutput");
        db.psql(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             CREATE PUBLICATION pub FOR TABLE t;
             SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');
             INSERT INTO t VALUES (1, 'one');"
        ))
        .unwrap();
        let rows = db
            .query(&format!(
                "SELECT lsn, xid, encode(data, 'hex') FROM pg_logical_slot_get_binary_changes(
                     '{slot}', NULL, NULL, 'proto_version', '1', 'publication_names', 'pub')"
            ))
            .unwrap();
        let tags: String = rows
            .iter()
            .map(|r| {
                let hex = &r[2];
                char::from(u8::from_str_radix(&hex[..2], 16).unwrap())
            })
            .collect();
        assert_eq!(tags, "BRIC", "PostgreSQL {}: {rows:?}", cluster.major());
        // The insert carries the text "one" (hex 6f6e65).
        assert!(rows[2][2].contains("6f6e65"), "{rows:?}");
        db.psql(&format!("SELECT pg_drop_replication_slot('{slot}')"))
            .unwrap();
    });
}

#[test]
fn for_each_major_skips_older_majors() {
    let newest = *pgtest::installed_majors().last().unwrap();
    let mut seen = Vec::new();
    pgtest::for_each_major(newest, |c| seen.push(c.major()));
    assert_eq!(seen, vec![newest]);
}

#[test]
#[should_panic(expected = "no PostgreSQL server of version 99 or newer")]
fn for_each_major_fails_when_nothing_is_new_enough() {
    pgtest::for_each_major(99, |_| {});
}

#[test]
#[should_panic(expected = "no PostgreSQL server of version 99 or newer")]
fn for_each_installed_major_fails_when_nothing_is_new_enough() {
    pgtest::for_each_installed_major(99, |_| {});
}

//! Long-lived psql sessions.

#[test]
fn a_session_holds_a_transaction_open_across_calls() {
    let cluster = pgtest::cluster(crate::some_major());
    let db = cluster.create_database("pgtest_session").unwrap();
    db.psql("CREATE TABLE t (a int)").unwrap();
    let mut session = db.session().unwrap();
    assert_eq!(
        session
            .run("BEGIN; INSERT INTO t VALUES (1); SELECT count(*) FROM t")
            .unwrap(),
        "1"
    );
    // Not committed yet: another connection sees nothing.
    assert_eq!(db.psql("SELECT count(*) FROM t").unwrap(), "0");
    assert_eq!(
        session
            .run("SELECT 'a', 2 UNION ALL SELECT 'b', 3")
            .unwrap(),
        "a|2\nb|3"
    );
    session.run("COMMIT").unwrap();
    assert_eq!(db.psql("SELECT count(*) FROM t").unwrap(), "1");
}

#[test]
fn a_session_reports_errors_and_rolls_back_on_drop() {
    let cluster = pgtest::cluster(crate::some_major());
    let db = cluster.create_database("pgtest_session_err").unwrap();
    db.psql("CREATE TABLE t (a int)").unwrap();
    let mut session = db.session().unwrap();
    session.run("BEGIN; INSERT INTO t VALUES (1)").unwrap();
    drop(session);
    assert_eq!(db.psql("SELECT count(*) FROM t").unwrap(), "0");
    let mut session = db.session().unwrap();
    let err = session
        .run("SELECT * FROM missing_table")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing_table"), "{err}");
    assert!(
        session.run("SELECT 1").is_err(),
        "a failed session stays failed"
    );
}

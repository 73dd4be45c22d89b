//! Replication commands and plain SQL on a replication connection.

use walconn::{Connection, CreateSlotOptions, ErrorKind, SnapshotAction};

use crate::{block_on, config};

#[test]
fn slot_commands_and_sql() {
    pgtest::for_each_major(15, |cluster| {
        let db = cluster.create_database("walconn_commands").unwrap();
        block_on(async {
            let mut conn = Connection::connect(&config(&db.conninfo())).await.unwrap();
            let sys = conn.identify_system().await.unwrap();
            assert!(sys.timeline >= 1);
            assert_eq!(conn.show("wal_level").await.unwrap(), "logical");

            // A name that needs quoting cannot be a slot name, so the server must see it whole
            // and refuse it, rather than the client mangling the command.
            let err = conn
                .create_replication_slot("Bad \"Name\"", &CreateSlotOptions::default())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Db, "{err:?}");

            let name = cluster.unique_name("walconn_cmd");
            let mut options = CreateSlotOptions::logical("pgoutput");
            options.snapshot = Some(SnapshotAction::Export);
            options.two_phase = true;
            let slot = conn.create_replication_slot(&name, &options).await.unwrap();
            assert_eq!(slot.slot_name, name);
            assert!(slot.snapshot_name.is_some());
            assert_eq!(slot.output_plugin.as_deref(), Some("pgoutput"));

            // READ_REPLICATION_SLOT reads physical slots only.
            let physical = format!("{name}_phys");
            let mut options = CreateSlotOptions::physical();
            options.temporary = true;
            options.reserve_wal = true;
            conn.create_replication_slot(&physical, &options)
                .await
                .unwrap();
            let info = conn
                .read_replication_slot(&physical)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(info.slot_type, "physical");
            assert!(info.restart_lsn.is_some());
            assert!(conn
                .read_replication_slot("walconn_no_such_slot")
                .await
                .unwrap()
                .is_none());

            let rows = conn
                .simple_query(&format!(
                    "SELECT slot_name, two_phase, NULL AS n FROM pg_replication_slots \
                     WHERE slot_name = {}",
                    walconn::quote_literal(&name)
                ))
                .await
                .unwrap();
            assert_eq!(rows[0].get(0, "slot_name"), Some(name.as_str()));
            assert_eq!(rows[0].get(0, "two_phase"), Some("t"));
            assert_eq!(rows[0].rows[0][2], None);

            let alter = conn.alter_replication_slot(&name, Some(true), None).await;
            if cluster.major() >= 17 {
                alter.unwrap();
            } else {
                let err = alter.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Unsupported);
                assert!(err.to_string().contains("17"), "{err}");
            }

            // An error leaves the connection usable.
            let err = conn.simple_query("SELECT 1/0").await.unwrap_err();
            assert_eq!(err.code(), Some("22012"));

            conn.drop_replication_slot(&name, false).await.unwrap();
            let err = conn.drop_replication_slot(&name, true).await.unwrap_err();
            assert!(err.is_slot_missing(), "{err:?}");

            // A temporary slot with the option syntax, and no snapshot.
            let mut options = CreateSlotOptions::logical("pgoutput");
            options.temporary = true;
            options.snapshot = Some(SnapshotAction::Nothing);
            options.two_phase = true;
            let slot = conn.create_replication_slot(&name, &options).await.unwrap();
            assert_eq!(slot.snapshot_name, None);
            conn.close().await.unwrap();
        })
    });
}

/// The settings whose text walstream's typed values read are pinned at startup: a role that
/// sets others, and `options` in the conninfo, change neither what `SHOW` says, nor what the
/// server reports (ParameterStatus), nor how it prints values.
#[test]
fn startup_pins_the_output_settings_over_the_role_and_options() {
    pgtest::for_each_major(15, |cluster| {
        let db = cluster.create_database("walconn_pinned").unwrap();
        let role = cluster.unique_name("walconn_pinned");
        db.psql(&format!(
            "CREATE ROLE {role} LOGIN REPLICATION;
             ALTER ROLE {role} SET DateStyle = 'SQL, DMY';
             ALTER ROLE {role} SET IntervalStyle = 'iso_8601';
             ALTER ROLE {role} SET extra_float_digits = 0;"
        ))
        .unwrap();
        let options = "options='-c DateStyle=German -c IntervalStyle=sql_standard \
                       -c extra_float_digits=-15'";
        for (replication, extra) in [
            ("database", ""),
            ("false", ""),
            ("true", ""),
            ("database", options),
            ("false", options),
        ] {
            let conninfo = format!(
                "{} user={role} replication={replication} {extra}",
                db.conninfo()
            );
            block_on(async {
                let mut conn = Connection::connect(&config(&conninfo)).await.unwrap();
                let at = format!("replication={replication} {extra}");
                let date_style = conn.parameter("DateStyle").unwrap();
                assert!(date_style.starts_with("ISO,"), "{at}: {date_style}");
                assert_eq!(conn.parameter("IntervalStyle"), Some("postgres"), "{at}");
                assert_eq!(conn.parameter("client_encoding"), Some("UTF8"), "{at}");
                let shown = conn.show("DateStyle").await.unwrap();
                assert!(shown.starts_with("ISO,"), "{at}: {shown}");
                assert_eq!(
                    conn.show("IntervalStyle").await.unwrap(),
                    "postgres",
                    "{at}"
                );
                assert_eq!(conn.show("extra_float_digits").await.unwrap(), "3", "{at}");
                if replication != "true" {
                    let rows = conn
                        .simple_query(
                            "SELECT date '2024-01-02', timestamp '2024-01-02 03:04:05.06', \
                             interval '1 year 2 mons 3 days 04:05:06.789', \
                             0.1::float8 + 0.2::float8",
                        )
                        .await
                        .unwrap();
                    let row: Vec<&str> = rows[0].rows[0]
                        .iter()
                        .flatten()
                        .map(String::as_str)
                        .collect();
                    assert_eq!(
                        row,
                        [
                            "2024-01-02",
                            "2024-01-02 03:04:05.06",
                            "1 year 2 mons 3 days 04:05:06.789",
                            "0.30000000000000004"
                        ],
                        "{at}"
                    );
                }
                conn.close().await.unwrap();
            });
        }
    });
}

//! Entry points for walconn's fuzz targets in `fuzz/` (as `walproto::fuzzing` holds
//! walproto's): each target is one line calling one of these, so the logic is built, linted
//! and tested with the crate. Each function must never panic, whatever the input.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use walproto::replication::{ServerMessage, StandbyStatusUpdate};
use walproto::Lsn;

use crate::config::conninfo::Raw;
use crate::config::Config;
use crate::{pgpass, Connection, CreateSlotOptions, LogicalReplicationOptions};

/// How long [`server_bytes`] lets one input run before calling it a hang. Everything is in
/// memory and the pipe closes when the input is exhausted, so an input takes milliseconds
/// (the slowest, a SCRAM exchange at postgres-protocol's cap of 100,000 iterations, well
/// under a second); libFuzzer's own timeout (20 s in `cargo xtask fuzz`) is the backstop.
const HANG: Duration = Duration::from_secs(10);

/// The room in each direction of [`server_bytes`]'s pipe: small, so that frames arrive in
/// several reads as they do from a socket.
const PIPE_CAPACITY: usize = 4096;

/// Parses a conninfo (URL or key=value) with no environment. What parses has at least one
/// target, each with a port, and its settings written back as key=value parse to the same
/// settings (so URL decoding, quoting and escaping agree).
pub fn conninfo(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let config = Config::parse_with_env(s, |_| None);
    let Ok(mut raw) = Raw::parse(s) else {
        assert!(config.is_err(), "{s:?}: a Config without settings");
        return;
    };
    let again = raw.key_value();
    assert_eq!(
        Raw::parse(&again).as_ref().ok(),
        Some(&raw),
        "{s:?} as {again:?}"
    );
    if let Ok(config) = config {
        let targets = config.targets();
        assert!(!targets.is_empty(), "{s:?}: no host to connect to");
        assert!(targets.iter().all(|(_, _, port)| *port != 0), "{s:?}");
        let reparsed = Config::parse_with_env(&again, |_| None);
        assert!(reparsed.is_ok(), "{s:?} as {again:?}: {reparsed:?}");
    }
}

/// Looks a connection up in a password file: the input's first line is
/// `host:port:dbname:user:password` (split at every `:`, no escapes), the rest is the file.
/// The lookup never panics, and with a line for exactly that connection put first (every
/// character escaped) it finds that password.
pub fn pgpass(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (first, file) = s.split_once('\n').unwrap_or((s, ""));
    let _ = pgpass::find(file, "", "", "", "");
    let mut fields = first.splitn(5, ':');
    let mut field = || fields.next().unwrap_or("");
    let [host, port, dbname, user, password] = [field(), field(), field(), field(), field()];
    let _ = pgpass::find(file, host, port, dbname, user);
    // A line break cannot be escaped: the file is read line by line.
    if first.contains('\r') {
        return;
    }
    let mut text = String::new();
    for f in [host, port, dbname, user] {
        for c in f.chars() {
            text.push('\\');
            text.push(c);
        }
        text.push(':');
    }
    for c in password.chars() {
        text.push('\\');
        text.push(c);
    }
    text.push('\n');
    text.push_str(file);
    assert_eq!(
        pgpass::find(&text, host, port, dbname, user).as_deref(),
        Some(password),
        "{text:?}"
    );
}

/// Plays `data` as everything a server sends to one client: the client connects
/// (`user=u password=p`, `replication=database`, no TLS) over an in-memory pipe, so the input
/// answers the startup packet and the authentication exchange (cleartext, MD5, SASL SCRAM with
/// whatever contents), then `IDENTIFY_SYSTEM`, `SHOW`, `CREATE_REPLICATION_SLOT`,
/// `TIMELINE_HISTORY` and `START_REPLICATION`, whose CopyBoth frames are received (and
/// keepalives asking for a reply answered) until an error or the end. The pipe closes when
/// the input is exhausted; what the client writes is read and dropped. Errors are expected;
/// a panic, or an exchange still running after `HANG` (10 s), is a bug.
pub fn server_bytes(data: &[u8]) {
    let config = Config::parse_with_env("user=u password=p dbname=d", |_| None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build();
    let (Ok(config), Ok(runtime)) = (config, runtime) else {
        unreachable!("a fixed conninfo parses, and a current-thread runtime builds");
    };
    let (client, server) = tokio::io::duplex(PIPE_CAPACITY);
    let (mut from_client, mut to_client) = tokio::io::split(server);
    let serve = async move {
        // A write fails only once the client has gone, which ends the exchange anyway.
        let _ = to_client.write_all(data).await;
        let _ = to_client.shutdown().await;
    };
    let drain = async move {
        let mut sink = [0; PIPE_CAPACITY];
        while from_client.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    };
    let exchange = async { tokio::join!(client_session(client, &config), serve, drain) };
    let finished = runtime.block_on(async { tokio::time::timeout(HANG, exchange).await });
    assert!(finished.is_ok(), "the exchange hung");
}

/// The client side of [`server_bytes`]: every step runs whatever the previous one returned,
/// until the connection is gone.
async fn client_session(pipe: tokio::io::DuplexStream, config: &Config) {
    let Ok(mut conn) = Connection::over_pipe(pipe, config).await else {
        return;
    };
    let _ = conn.identify_system().await;
    let _ = conn.show("wal_level").await;
    let _ = conn
        .create_replication_slot("s", &CreateSlotOptions::logical("pgoutput"))
        .await;
    let _ = conn.timeline_history(1).await;
    let options = LogicalReplicationOptions::new(walproto::pgoutput::ProtocolVersion::V1, &["p"]);
    let Ok(mut copy) = conn
        .start_logical_replication("s", Lsn::new(0), &options)
        .await
    else {
        return;
    };
    while let Ok(Some(frame)) = copy.recv().await {
        if let Ok(ServerMessage::PrimaryKeepalive(k)) = ServerMessage::parse(&frame) {
            if k.reply_requested {
                let update = StandbyStatusUpdate {
                    write: k.wal_end,
                    flush: k.wal_end,
                    apply: k.wal_end,
                    client_time: k.send_time,
                    reply_requested: false,
                };
                if copy.send_status_update(&update).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = copy.finish().await;
}

/// Walks a DER certificate to its `signatureAlgorithm` for the `tls-server-end-point` channel
/// binding: never panics, the OID found lies inside the input, and the hash is SHA-256,
/// SHA-384 or SHA-512.
#[cfg(feature = "tls")]
pub fn cert_walk(data: &[u8]) {
    use crate::tls;
    if let Some(oid) = tls::signature_algorithm(data) {
        let inside = data.as_ptr_range();
        assert!(
            inside.start <= oid.as_ptr() && oid.as_ptr_range().end <= inside.end,
            "the OID is not a part of the certificate"
        );
    }
    let hash = tls::end_point_hash(data);
    assert!(
        matches!(hash.len(), 32 | 48 | 64),
        "a {}-byte hash",
        hash.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inputs of `testdata/malformed/` for walconn's targets
    /// (`pgtest::testdata::fuzz_regressions` says which must exist).
    #[test]
    fn fuzz_regressions() {
        pgtest::testdata::fuzz_regressions("walconn", |target| {
            Some(match target {
                "conninfo" => conninfo,
                "pgpass" => pgpass,
                "server_bytes" => server_bytes,
                #[cfg(feature = "tls")]
                "cert_walk" => cert_walk,
                _ => return None,
            })
        });
    }

    #[test]
    fn round_trips_of_hand_written_inputs() {
        for s in [
            "host=a,b port=1,2 dbname='my db' password='it\\'s'",
            "postgresql://u:p%40ss@h1:5433,[::1]:5434/d%20b?sslmode=disable&application_name=x",
            "postgres://",
            "",
        ] {
            conninfo(s.as_bytes());
        }
        pgpass(b"h:5432:d:u:p:w\nh:5432:d:u:other\n");
        pgpass(b"#h::::\n");
    }
}

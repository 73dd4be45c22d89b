//! Entry points for walconn's fuzz targets in `fuzz/` (as `walproto::fuzzing` holds
//! walproto's): each target is one line calling one of these, so the logic is built, linted
//! and tested with the crate. Each function must never panic, whatever the input.

use crate::config::conninfo::Raw;
use crate::config::Config;
use crate::pgpass;

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

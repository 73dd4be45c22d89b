//! A long-lived `psql` session, for tests that hold a transaction open while they do something
//! else (decode its changes so far, make another session wait, ...).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::{bins, Cluster, Error};

/// One `psql -X -A -t -q -v ON_ERROR_STOP=1` process connected to a database; statements sent
/// with [`run`](Self::run) execute in order in the same backend, so a `BEGIN` stays open
/// across calls. Dropping it closes the connection (rolling back an open transaction).
///
/// ```no_run
/// let cluster = pgtest::cluster(17);
/// let db = cluster.create_database("held_open").unwrap();
/// let mut session = db.session().unwrap();
/// session.run("BEGIN; CREATE TABLE t (a int);").unwrap();
/// // ... look at the server while the transaction is open ...
/// session.run("COMMIT").unwrap();
/// ```
#[derive(Debug)]
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    counter: u64,
}

impl Session {
    pub(crate) fn open(cluster: &Cluster, dbname: &str) -> Result<Self, Error> {
        let mut cmd = Command::new(bins::psql());
        cluster.psql_args(&mut cmd, dbname);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::new(format!("starting psql: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .map(BufReader::new)
            .ok_or_else(|| Error::new("psql has no stdout"))?;
        Ok(Self {
            child,
            stdin,
            stdout,
            counter: 0,
        })
    }

    /// Runs `sql` and waits until it has finished; returns what it printed (rows separated by
    /// newlines, columns by `|`), without the final newline.
    pub fn run(&mut self, sql: &str) -> Result<String, Error> {
        self.counter += 1;
        // A line no query prints: psql echoes it once everything before it has run.
        let marker = format!(
            "pgtest-session-done-{}-{}",
            std::process::id(),
            self.counter
        );
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::new("psql session is closed"))?;
        let written = stdin
            .write_all(format!("{sql}\n;\n\\echo {marker}\n").as_bytes())
            .and_then(|()| stdin.flush());
        let mut out = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .map_err(|e| Error::new(format!("reading from psql: {e}")))?;
            if n == 0 {
                return Err(self.died(sql));
            }
            if line.trim_end() == marker {
                break;
            }
            out.push_str(&line);
        }
        written.map_err(|e| Error::new(format!("writing to psql: {e}")))?;
        if out.ends_with('\n') {
            out.pop();
        }
        Ok(out)
    }

    /// psql exited (ON_ERROR_STOP): collect its error message.
    fn died(&mut self, sql: &str) -> Error {
        self.stdin = None;
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
        Error::new(format!(
            "psql session failed ({status}): {}\nSQL: {sql}",
            stderr.trim()
        ))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing stdin ends psql, which closes the connection.
        self.stdin = None;
        let _ = self.child.wait();
    }
}

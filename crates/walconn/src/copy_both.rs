//! `START_REPLICATION` and the CopyBoth duplex of raw CopyData frames; the cancel request.

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::backend::{DataRowBody, Message, RowDescriptionBody};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use walproto::pgoutput::{Options, ProtocolVersion};
use walproto::replication::{HotStandbyFeedback, StandbyStatusUpdate};
use walproto::Lsn;

use crate::commands::{column_names, parse_field, quote_ident, quote_literal, text_values};
use crate::config::Host;
use crate::conn::{server_error, unexpected, Connection};
use crate::error::{Error, ErrorKind, Result};

/// The options of `START_REPLICATION ... LOGICAL` for `pgoutput`: the publications and
/// walproto's [`Options`] (protocol version, streaming, binary, messages, two-phase, origin),
/// the one vocabulary every layer speaks.
///
/// ```
/// use walconn::walproto::pgoutput::{Options, ProtocolVersion, Streaming};
/// use walconn::LogicalReplicationOptions;
///
/// let mut options = LogicalReplicationOptions::new(ProtocolVersion::V4, &["app_pub"]);
/// options.pgoutput.streaming = Streaming::Parallel;
/// assert_eq!(options.pgoutput, Options { streaming: Streaming::Parallel, ..Options::new(ProtocolVersion::V4) });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalReplicationOptions {
    /// `publication_names`: each is quoted, so commas, quotes and capitals are safe.
    pub publication_names: Vec<String>,
    /// Everything else pgoutput is told.
    pub pgoutput: Options,
}

impl LogicalReplicationOptions {
    /// `options` (or just a protocol version: nothing else on) for `publications`.
    pub fn new(options: impl Into<Options>, publications: &[&str]) -> Self {
        Self {
            publication_names: publications.iter().map(|&p| p.to_owned()).collect(),
            pgoutput: options.into(),
        }
    }

    /// The parenthesized option list of `START_REPLICATION`.
    pub(crate) fn to_sql(&self) -> String {
        let o = &self.pgoutput;
        let pubs = self
            .publication_names
            .iter()
            .map(|p| quote_ident(p))
            .collect::<Vec<_>>()
            .join(",");
        let mut opts = vec![
            format!("\"proto_version\" '{}'", o.proto_version.number()),
            format!("\"publication_names\" {}", quote_literal(&pubs)),
        ];
        // Protocol 1 has no `streaming` option; from 2 on it is always said.
        if o.proto_version >= ProtocolVersion::V2 {
            opts.push(format!("\"streaming\" '{}'", o.streaming.as_str()));
        }
        for (name, on) in [
            ("binary", o.binary),
            ("messages", o.messages),
            ("two_phase", o.two_phase),
        ] {
            if on {
                opts.push(format!("\"{name}\" 'true'"));
            }
        }
        if let Some(origin) = o.origin {
            opts.push(format!("\"origin\" '{}'", origin.as_str()));
        }
        format!("({})", opts.join(", "))
    }

    /// Refuses, before anything is sent, what the protocol version or the server cannot do
    /// (walproto's rule table decides).
    fn check(&self, conn: &Connection) -> Result<()> {
        let refusal = match self.pgoutput.protocol_refusals().next() {
            Some(r) => Some(r),
            None => self.pgoutput.check_server(conn.server_version_num()).err(),
        };
        match refusal {
            Some(r) => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{r}; the server is PostgreSQL {}",
                    conn.parameter("server_version").unwrap_or("unknown")
                ),
            )),
            None => Ok(()),
        }
    }
}

impl Connection {
    /// `START_REPLICATION SLOT slot LOGICAL start (options)`: enters CopyBoth mode.
    ///
    /// Options the server is too old for are refused before anything is sent. A server error
    /// (the slot is missing or in use, ...) is returned with the connection still usable; it
    /// is consumed either way, so reconnect for a retry.
    ///
    /// Consumes the connection: dropping the future drops it (and closes the socket), so
    /// there is nothing left to be out of step. A poisoned connection (see
    /// [`ErrorKind::Poisoned`]) is refused before anything is sent.
    pub async fn start_logical_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &LogicalReplicationOptions,
    ) -> Result<CopyBoth> {
        self.check_poisoned()?;
        options.check(&self)?;
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} {}",
            quote_ident(slot),
            options.to_sql()
        );
        match self.start_copy_both(&sql).await? {
            None => Ok(CopyBoth::new(self)),
            Some(_) => Err(Error::protocol(
                "the server answered START_REPLICATION ... LOGICAL with a next timeline",
            )),
        }
    }

    /// `START_REPLICATION [SLOT slot] PHYSICAL start [TIMELINE tli]` on a `replication=true`
    /// connection: enters CopyBoth mode.
    ///
    /// On a historic `timeline` the server streams up to the point where it switched to the
    /// next one, then ends its side; [`CopyBoth::end`] returns that [`NextTimeline`]. Asked to
    /// start exactly at that switch point, the server skips the copy altogether: the
    /// returned stream has then already ended ([`recv`](CopyBoth::recv) returns `None` at
    /// once and [`end`](CopyBoth::end) returns the next timeline without reading).
    ///
    /// Consumes the connection, as
    /// [`start_logical_replication`](Self::start_logical_replication) does.
    pub async fn start_physical_replication(
        mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: Option<u32>,
    ) -> Result<CopyBoth> {
        self.check_poisoned()?;
        let mut sql = String::from("START_REPLICATION");
        if let Some(s) = slot {
            sql.push_str(&format!(" SLOT {}", quote_ident(s)));
        }
        sql.push_str(&format!(" PHYSICAL {start}"));
        if let Some(t) = timeline {
            sql.push_str(&format!(" TIMELINE {t}"));
        }
        Ok(match self.start_copy_both(&sql).await? {
            None => CopyBoth::new(self),
            Some(next) => {
                let mut stream = CopyBoth::new(self);
                stream.client_done = true;
                stream.server_done = true;
                stream.ready = true;
                stream.next_timeline = Some(next);
                stream
            }
        })
    }

    /// Sends `sql` and reads up to the CopyBothResponse (`None`), or to the ReadyForQuery
    /// after the next-timeline row of a physical start at the very end of a historic
    /// timeline, which enters no copy (`Some`).
    async fn start_copy_both(&mut self, sql: &str) -> Result<Option<NextTimeline>> {
        frontend::query(sql, self.write_buf())
            .map_err(|e| Error::config("command contains a NUL byte").with_source(e))?;
        self.flush().await?;
        let mut next = NextTimelineRow::default();
        loop {
            self.fill_frame().await?;
            if self.take_copy_both_response() {
                return Ok(None);
            }
            match self.read_raw().await? {
                Message::ErrorResponse(body) => {
                    let e = server_error(&body)?;
                    self.read_until_ready().await?;
                    return Err(e);
                }
                Message::RowDescription(desc) => next.describe(&desc)?,
                Message::DataRow(row) => next.row(&row)?,
                Message::ParameterStatus(_) | Message::CommandComplete(_) => {}
                Message::ReadyForQuery(_) => {
                    return match next.finish()? {
                        Some(n) => Ok(Some(n)),
                        None => Err(Error::protocol(
                            "START_REPLICATION ended without a copy or a next timeline",
                        )),
                    };
                }
                other => return Err(unexpected(&other, "START_REPLICATION")),
            }
        }
    }
}

/// Where the stream goes on after a historic timeline: the server's one-row result set
/// (`next_tli`, `next_tli_startpos`) at the end of `START_REPLICATION ... TIMELINE t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextTimeline {
    /// The timeline that follows the one streamed (`next_tli`).
    pub timeline: u32,
    /// Where the server switched to it (`next_tli_startpos`): the end of the streamed
    /// timeline, and the start position for the next `START_REPLICATION`.
    pub start: Lsn,
}

/// How a [`CopyBoth`] ended ([`CopyBoth::end`]): the connection, ready for the next command
/// (such as the next timeline's `START_REPLICATION`), and the next timeline when the server
/// streamed a historic one to its end.
///
/// Take it apart with [`into_parts`](Self::into_parts), or read
/// [`next_timeline`](Self::next_timeline) and keep [`into_connection`](Self::into_connection).
#[derive(Debug)]
pub struct Ended {
    connection: Connection,
    next_timeline: Option<NextTimeline>,
}

impl Ended {
    /// The next timeline and where it starts, when the stream was of a historic timeline
    /// that the server sent to its end; `None` when the client ended the stream first (or a
    /// logical stream ended).
    pub fn next_timeline(&self) -> Option<NextTimeline> {
        self.next_timeline
    }

    /// The connection, ready for the next command.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The connection, ready for the next command.
    pub fn into_connection(self) -> Connection {
        self.connection
    }

    /// The connection and the next timeline.
    pub fn into_parts(self) -> (Connection, Option<NextTimeline>) {
        (self.connection, self.next_timeline)
    }
}

/// Reads the next-timeline result set: its description, then exactly one row.
#[derive(Debug, Default)]
struct NextTimelineRow {
    columns: Option<Vec<String>>,
    next: Option<NextTimeline>,
}

impl NextTimelineRow {
    fn describe(&mut self, desc: &RowDescriptionBody) -> Result<()> {
        if self.columns.is_some() {
            return Err(malformed_next("a second result set"));
        }
        self.columns = Some(column_names(desc)?);
        Ok(())
    }

    fn row(&mut self, row: &DataRowBody) -> Result<()> {
        let (Some(columns), None) = (&self.columns, self.next) else {
            return Err(malformed_next(
                "a row without a description, or a second row",
            ));
        };
        let r = crate::QueryResult {
            columns: columns.clone(),
            rows: vec![text_values(row)?],
            tag: String::new(),
        };
        let timeline: u32 = parse_field(&r, "next_tli").map_err(|e| e.context(NEXT_ROW))?;
        if timeline == 0 {
            return Err(malformed_next("next_tli is 0, which is no timeline"));
        }
        let start = parse_field(&r, "next_tli_startpos").map_err(|e| e.context(NEXT_ROW))?;
        self.next = Some(NextTimeline { timeline, start });
        Ok(())
    }

    /// The row, if there was a result set; a description without its row is an error.
    fn finish(self) -> Result<Option<NextTimeline>> {
        match (self.columns, self.next) {
            (Some(_), None) => Err(malformed_next("a result set without its row")),
            (_, next) => Ok(next),
        }
    }
}

/// What the errors of [`NextTimelineRow`] are about.
const NEXT_ROW: &str = "the next-timeline row at the end of START_REPLICATION";

fn malformed_next(what: &str) -> Error {
    Error::protocol(format!("{NEXT_ROW}: {what}"))
}

/// The CopyBoth duplex after `START_REPLICATION`: receive CopyData payloads, send CopyData
/// (status updates) at any time, end with [`finish`](Self::finish).
///
/// [`recv`](Self::recv) is cancel-safe: use it in `tokio::select!` beside a timer that sends
/// status updates; a dropped `recv` loses no data and never leaves half a frame consumed.
/// [`send`](Self::send) and [`send_status_update`](Self::send_status_update) are not: a
/// dropped send may have written part of a message, so it poisons the connection, and every
/// later call ([`recv`](Self::recv) and [`finish`](Self::finish) too) fails with
/// [`ErrorKind::Poisoned`] without touching the socket: drop the stream. Await sends in the
/// body of a `select!` arm, not as a branch.
#[derive(Debug)]
pub struct CopyBoth {
    conn: Connection,
    client_done: bool,
    server_done: bool,
    /// The server has sent ReadyForQuery: the copy is over on both sides.
    ready: bool,
    /// The next timeline, when the server named it before the copy (a start at the end of
    /// a historic timeline).
    next_timeline: Option<NextTimeline>,
    scratch: BytesMut,
}

impl CopyBoth {
    fn new(conn: Connection) -> Self {
        Self {
            conn,
            client_done: false,
            server_done: false,
            ready: false,
            next_timeline: None,
            scratch: BytesMut::new(),
        }
    }

    /// The next CopyData payload (for logical replication, an XLogData or keepalive to parse
    /// with `walproto::replication::ServerMessage::parse`), as `Bytes` split from the read
    /// buffer without a copy; `None` when the server has ended its side with CopyDone.
    ///
    /// A server `ErrorResponse` becomes the typed error (the slot was dropped, the server
    /// shuts down: [`Error::is_connection_lost`], ...).
    ///
    /// Cancel-safe: a dropped call consumes nothing (frames are taken from the read buffer
    /// only when whole), and the next call returns what it would have. It does not poison the
    /// connection, but fails with [`ErrorKind::Poisoned`] after a dropped [`send`](Self::send).
    pub async fn recv(&mut self) -> Result<Option<Bytes>> {
        self.conn.check_poisoned()?;
        if self.ready || self.server_done {
            return Ok(None);
        }
        loop {
            match self.conn.read_raw().await? {
                Message::CopyData(body) => return Ok(Some(body.into_bytes())),
                Message::CopyDone => {
                    self.server_done = true;
                    return Ok(None);
                }
                // A walsender told to stop (pg_terminate_backend, shutdown) may end the copy
                // with CommandComplete and no CopyDone; what follows says how it ended.
                Message::CommandComplete(_) => self.server_done = true,
                Message::ReadyForQuery(_) if self.server_done => {
                    self.ready = true;
                    return Ok(None);
                }
                Message::ErrorResponse(body) => return Err(server_error(&body)?),
                Message::ParameterStatus(_) => {}
                other => return Err(unexpected(&other, "CopyBoth")),
            }
        }
    }

    /// Whether the next message is already buffered, so that [`recv`](Self::recv) returns
    /// without reading the socket. A consumer that batches drains the buffered messages this
    /// way and waits on the socket only when it is empty: fewer wake-ups and system calls.
    pub fn has_buffered_frame(&self) -> bool {
        self.conn.has_buffered_frame()
    }

    /// Sets the TCP socket's receive low-water mark (`SO_RCVLOWAT`): [`recv`](Self::recv)
    /// then waits until `bytes` are there (or the server closes), which batches a busy
    /// stream's small messages into few wake-ups. Lowering it (to 1, the default) wakes a
    /// waiting `recv` at once if data is there: pair a high mark with a timer that lowers it,
    /// to bound the latency. Returns false on a Unix socket, where nothing is set.
    pub fn set_read_low_water(&self, bytes: usize) -> Result<bool> {
        self.conn.set_read_low_water(bytes)
    }

    /// Sends one CopyData message with `payload` (an encoded `StandbyStatusUpdate`, for
    /// example) and flushes it.
    ///
    /// Not cancel-safe: a future dropped before it completes may have written part of the
    /// message, so it poisons the connection (every later call fails with
    /// [`ErrorKind::Poisoned`]; drop the stream).
    pub async fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.conn.check_poisoned()?;
        if self.client_done {
            return Err(Error::new(
                ErrorKind::Protocol,
                "CopyData after CopyDone: the client side of the stream has ended",
            ));
        }
        frontend::CopyData::new(payload)
            .map_err(|e| Error::protocol("CopyData too large").with_source(e))?
            .write(self.conn.write_buf());
        self.conn.begin_operation()?;
        let result = self.conn.flush().await;
        self.conn.end_operation();
        result
    }

    /// Encodes and sends a standby status update.
    ///
    /// Not cancel-safe, as [`send`](Self::send): a dropped call poisons the connection.
    pub async fn send_status_update(&mut self, update: &StandbyStatusUpdate) -> Result<()> {
        self.scratch.clear();
        update.encode(&mut self.scratch);
        let payload = self.scratch.split().freeze();
        self.send(&payload).await
    }

    /// Encodes and sends hot standby feedback (`h`: the standby's xmin and catalog xmin,
    /// with their epochs), which a physical slot or the walsender keeps as its xmin.
    ///
    /// Not cancel-safe, as [`send`](Self::send): a dropped call poisons the connection.
    pub async fn send_hot_standby_feedback(&mut self, feedback: &HotStandbyFeedback) -> Result<()> {
        self.scratch.clear();
        feedback.encode(&mut self.scratch);
        let payload = self.scratch.split().freeze();
        self.send(&payload).await
    }

    /// Ends the stream: [`end`](Self::end), keeping only the connection.
    ///
    /// Consumes the stream, as `end` does.
    pub async fn finish(self) -> Result<Connection> {
        self.end().await.map(Ended::into_connection)
    }

    /// Ends the stream cleanly: sends CopyDone (once), skips the data still in flight, reads
    /// the server's CopyDone, for a historic timeline streamed to its end the next timeline
    /// ([`NextTimeline`]), then CommandComplete and ReadyForQuery, and returns the
    /// connection, ready for further commands, with the next timeline ([`Ended`]).
    ///
    /// A server error is returned once ReadyForQuery is read; a malformed next-timeline
    /// result set is an [`ErrorKind::Protocol`] error.
    ///
    /// Consumes the stream: dropping the future drops the connection (and closes the
    /// socket). After a dropped [`send`](Self::send) it fails with [`ErrorKind::Poisoned`]
    /// without writing anything.
    pub async fn end(mut self) -> Result<Ended> {
        self.conn.check_poisoned()?;
        if !self.ready {
            if !self.client_done {
                frontend::copy_done(self.conn.write_buf());
                self.conn.flush().await?;
                self.client_done = true;
            }
            let mut next = NextTimelineRow::default();
            let mut error = None;
            loop {
                match self.conn.read_raw().await? {
                    Message::ReadyForQuery(_) => break,
                    Message::ErrorResponse(body) => error = Some(server_error(&body)?),
                    Message::RowDescription(desc) => next.describe(&desc)?,
                    Message::DataRow(row) => next.row(&row)?,
                    // Data in flight, the server's CopyDone, the command tags.
                    Message::CopyData(_)
                    | Message::CopyDone
                    | Message::CommandComplete(_)
                    | Message::ParameterStatus(_) => {}
                    other => return Err(unexpected(&other, "the end of START_REPLICATION")),
                }
            }
            if let Some(e) = error {
                return Err(e);
            }
            self.ready = true;
            self.next_timeline = next.finish()?;
        }
        Ok(Ended {
            connection: self.conn,
            next_timeline: self.next_timeline,
        })
    }

    /// The connection under the stream (for its parameters and cancel token).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Cancels the command running on a connection (such as `START_REPLICATION`), from any task:
/// opens a new connection and sends `CancelRequest` with the backend's key.
#[derive(Clone, Debug)]
pub struct CancelToken {
    pub(crate) host: Host,
    pub(crate) port: u16,
    pub(crate) peer: Option<std::net::SocketAddr>,
    pub(crate) process_id: i32,
    pub(crate) secret_key: i32,
}

impl CancelToken {
    /// Sends the cancel request. The server answers nothing; success means it was delivered,
    /// not that a command was running. (The request is sent without TLS.)
    ///
    /// Cancel-safe: it opens a socket of its own, so dropping the future closes that socket
    /// and leaves the connection it cancels untouched (the request may or may not have been
    /// delivered).
    pub async fn cancel(&self) -> Result<()> {
        let mut buf = BytesMut::new();
        frontend::cancel_request(self.process_id, self.secret_key, &mut buf);
        let io = |e| Error::io("send cancel request", e);
        match &self.host {
            Host::Tcp(h) => {
                // The address the connection reached, not the name again: with `hostaddr`
                // the name may not resolve, and a name may resolve to another server.
                let mut s = match self.peer {
                    Some(addr) => tokio::net::TcpStream::connect(addr).await,
                    None => tokio::net::TcpStream::connect((h.as_str(), self.port)).await,
                }
                .map_err(io)?;
                s.write_all(&buf).await.map_err(io)?;
                let _ = s.read_u8().await;
            }
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", self.port));
                let mut s = tokio::net::UnixStream::connect(path).await.map_err(io)?;
                s.write_all(&buf).await.map_err(io)?;
                let _ = s.read_u8().await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walproto::pgoutput::{OriginFilter, Streaming};

    #[test]
    fn options_are_quoted() {
        let mut o =
            LogicalReplicationOptions::new(ProtocolVersion::V4, &["pub", "My,Pub \"x\" 'y'"]);
        o.pgoutput.streaming = Streaming::Parallel;
        o.pgoutput.messages = true;
        o.pgoutput.origin = Some(OriginFilter::None);
        assert_eq!(
            o.to_sql(),
            r#"("proto_version" '4', "publication_names" '"pub","My,Pub ""x"" ''y''"', "streaming" 'parallel', "messages" 'true', "origin" 'none')"#
        );
    }
}

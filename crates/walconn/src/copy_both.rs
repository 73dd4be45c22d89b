//! `START_REPLICATION` and the CopyBoth duplex of raw CopyData frames; the cancel request.

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use walproto::pgoutput::{Options, ProtocolVersion};
use walproto::replication::StandbyStatusUpdate;
use walproto::Lsn;

use crate::commands::{quote_ident, quote_literal};
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
        self.start_copy_both(&sql).await?;
        Ok(CopyBoth::new(self))
    }

    /// `START_REPLICATION [SLOT slot] PHYSICAL start [TIMELINE tli]` on a `replication=true`
    /// connection: enters CopyBoth mode.
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
        self.start_copy_both(&sql).await?;
        Ok(CopyBoth::new(self))
    }

    async fn start_copy_both(&mut self, sql: &str) -> Result<()> {
        frontend::query(sql, self.write_buf())
            .map_err(|e| Error::config("command contains a NUL byte").with_source(e))?;
        self.flush().await?;
        loop {
            self.fill_frame().await?;
            if self.take_copy_both_response() {
                return Ok(());
            }
            match self.read_raw().await? {
                Message::ErrorResponse(body) => {
                    let e = server_error(&body)?;
                    self.read_until_ready().await?;
                    return Err(e);
                }
                Message::ParameterStatus(_) => {}
                other => return Err(unexpected(&other, "START_REPLICATION")),
            }
        }
    }
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
    scratch: BytesMut,
}

impl CopyBoth {
    fn new(conn: Connection) -> Self {
        Self {
            conn,
            client_done: false,
            server_done: false,
            ready: false,
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

    /// Ends the stream cleanly: sends CopyDone (once), skips what the server still sends,
    /// reads its CopyDone, CommandComplete and ReadyForQuery, and returns the connection for
    /// further commands.
    ///
    /// Consumes the stream: dropping the future drops the connection (and closes the
    /// socket). After a dropped [`send`](Self::send) it fails with [`ErrorKind::Poisoned`]
    /// without writing anything.
    pub async fn finish(mut self) -> Result<Connection> {
        self.conn.check_poisoned()?;
        if self.ready {
            return Ok(self.conn);
        }
        if !self.client_done {
            frontend::copy_done(self.conn.write_buf());
            self.conn.flush().await?;
            self.client_done = true;
        }
        let mut error = None;
        loop {
            match self.conn.read_raw().await? {
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(body) => {
                    error = Some(server_error(&body)?);
                }
                // Data in flight, the server's CopyDone, and for physical replication the
                // next timeline's result set.
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(self.conn),
        }
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

//! The connection: framing of backend messages over a read buffer, startup and authentication.

use std::collections::HashMap;

use bytes::{Buf as _, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ScramSha256};
use postgres_protocol::message::backend::{Header, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::net::{TcpStream, UnixStream};

use crate::config::credentials::{self, PasswordRequest};
use crate::config::{
    ChannelBinding, Config, Host, Replication, SslMode, TargetSessionAttrs, DEFAULT_PORT,
};
use crate::error::{DbError, Error, ErrorKind, Result};
use crate::stream::Stream;
use crate::tls;

/// The largest length a backend message may declare once the connection is ready
/// ([`Phase::Ready`]: commands, COPY, replication), counting the length field itself as the
/// protocol does. PostgreSQL never sends more than 1 GiB in one message (`MaxAllocSize`); a
/// larger length is corruption.
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

/// The largest length a backend message may declare before the first ReadyForQuery
/// ([`Phase::Authentication`] and [`Phase::Startup`]), when the peer may be anyone (a man in
/// the middle under `sslmode=prefer`) and nothing large is due. The largest legitimate
/// messages then are an ErrorResponse or NoticeResponse (a login event trigger's, on
/// PostgreSQL 17+, may say anything) and a ParameterStatus of a role's long `search_path`
/// (reported from PostgreSQL 18); authentication requests and SASL messages are under a
/// kilobyte, and before authentication libpq takes no authentication request over 2,000
/// bytes and no error over 30,000. 1 MiB is thirty times libpq's error limit, and a
/// thousandth of what a forged header could otherwise have the client hold.
pub const MAX_STARTUP_MESSAGE_LEN: usize = 1 << 20;

/// How much the read buffer asks the socket for at once: large, so that a busy replication
/// stream of small messages costs few system calls.
const READ_CHUNK: usize = 64 * 1024;

/// `W`: CopyBothResponse, which `postgres-protocol`'s parser does not know.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// The settings every startup packet pins, because what the server prints depends on them and
/// the readers above expect one form: walstream's typed values read the text of dates and
/// times as `DateStyle = ISO` prints it, intervals as `IntervalStyle = postgres` does, and
/// floats as printed with `extra_float_digits` above zero (the shortest text that reads back
/// to the same number; 0, which a role may set, rounds to 15 significant digits). A role or
/// database default (`ALTER ROLE ... SET DateStyle = 'SQL, DMY'`) would otherwise change all
/// three, for the walsender's pgoutput text too. pgjdbc sends the same `DateStyle` and
/// `extra_float_digits` (it leaves `IntervalStyle` alone, having a parser for each style).
///
/// The server applies startup-packet settings after the command-line `options`, so these win
/// over an `options=-c DateStyle=...` in the conninfo; a session that wants another style can
/// still `SET` it, at the cost of the typed decoding above. `TimeZone` is not pinned: the text
/// of a `timestamptz` carries its offset. `client_encoding` is sent beside these: UTF8, unless
/// the conninfo asks for `SQL_ASCII` (see [`ClientEncoding`](crate::ClientEncoding)).
const PINNED_SETTINGS: [(&str, &str); 3] = [
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
];

/// Where a connection is in its life, which decides how long a backend message may be
/// ([`Phase::max_message_len`]); named by [`MessageTooLong`](crate::MessageTooLong).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// From the startup packet to AuthenticationOk: the client has not authenticated, and
    /// under `sslmode=prefer` or `allow` may not know who answers.
    Authentication,
    /// From AuthenticationOk to the first ReadyForQuery: parameter reports, the backend key
    /// and notices.
    Startup,
    /// After the first ReadyForQuery: commands, COPY and replication.
    Ready,
}

impl Phase {
    /// The largest length a backend message may declare in this phase, counting the length
    /// field itself: [`MAX_STARTUP_MESSAGE_LEN`] until ReadyForQuery, then
    /// [`MAX_MESSAGE_LEN`].
    pub fn max_message_len(self) -> usize {
        match self {
            Phase::Authentication | Phase::Startup => MAX_STARTUP_MESSAGE_LEN,
            Phase::Ready => MAX_MESSAGE_LEN,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Authentication => "authentication",
            Phase::Startup => "startup",
            Phase::Ready => "ready",
        })
    }
}

/// An open replication connection, ready for commands.
///
/// Made by [`Connection::connect`]; runs replication commands and plain SQL (see the crate
/// docs for the call sequence), and becomes a [`CopyBoth`](crate::CopyBoth) with
/// [`start_logical_replication`](Self::start_logical_replication).
pub struct Connection {
    stream: Stream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    params: HashMap<String, String>,
    backend_key: Option<(i32, i32)>,
    server_version_num: u32,
    host: Host,
    port: u16,
    /// The address a TCP connection reached (after `hostaddr` and name resolution), so a
    /// cancel request goes to the very same server.
    peer: Option<std::net::SocketAddr>,
    tls: bool,
    /// Where the connection is, which bounds the length of the next backend message.
    phase: Phase,
    /// Set while an operation that is not cancel-safe runs, cleared when it returns: still
    /// set at the next call means the previous one's future was dropped mid-way (or a
    /// `CopyOut` before its end), so the connection may be out of step with the server.
    poisoned: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("server_version_num", &self.server_version_num)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects as `config` says: each host in order (within `connect_timeout` each), TLS as
    /// `sslmode` says, authentication, then checks `target_session_attrs`. The error of the
    /// last host tried is returned when none succeeds.
    ///
    /// The startup packet pins `client_encoding = UTF8`, `DateStyle = ISO`,
    /// `IntervalStyle = postgres` and `extra_float_digits = 3`, over the role's and the
    /// database's defaults and over `options`, because walstream's typed values read the
    /// server's text in those forms (the walsender's pgoutput text included).
    ///
    /// Cancel-safe: the future owns the socket it opens, so dropping it (a timeout around
    /// it, say) closes the half-open connection and leaves nothing behind.
    pub async fn connect(config: &Config) -> Result<Connection> {
        let mut last = Error::config("no host to connect to");
        let targets = config.targets();
        // prefer-standby: a first pass for standbys only, then any server.
        let passes: &[TargetSessionAttrs] =
            if config.target_session_attrs == TargetSessionAttrs::PreferStandby {
                &[TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
            } else {
                std::slice::from_ref(&config.target_session_attrs)
            };
        for &attrs in passes {
            for (host, addr, port) in &targets {
                let attempt = Self::connect_host(config, host, addr.as_deref(), *port, attrs);
                let result = match config.connect_timeout {
                    Some(t) => match tokio::time::timeout(t, attempt).await {
                        Ok(r) => r,
                        Err(_) => Err(Error::new(
                            ErrorKind::Timeout,
                            format!("timeout expired after {}s", t.as_secs()),
                        )),
                    },
                    None => attempt.await,
                };
                match result {
                    Ok(c) => return Ok(c),
                    Err(e) => {
                        tracing::debug!(%host, port, error = %format_args!("{e:#}"), "connection attempt failed");
                        last = e.context(format!(
                            "connection to server at \"{host}\", port {port} failed"
                        ));
                    }
                }
            }
        }
        Err(last)
    }

    /// One host, with libpq's second try: `allow` retries with TLS when the server refuses a
    /// plaintext connection, `prefer` retries without TLS when the TLS handshake fails.
    async fn connect_host(
        config: &Config,
        host: &Host,
        addr: Option<&str>,
        port: u16,
        attrs: TargetSessionAttrs,
    ) -> Result<Connection> {
        let first = Self::connect_one(config, host, addr, port, attrs, config.sslmode).await;
        match (config.sslmode, first) {
            // Without the `tls` feature there is no TLS to retry with: the refusal stands.
            (SslMode::Allow, Err(e))
                if cfg!(feature = "tls") && matches!(e.kind(), ErrorKind::Auth | ErrorKind::Db) =>
            {
                tracing::debug!(error = %format_args!("{e:#}"), "plaintext refused, retrying with TLS (sslmode=allow)");
                Self::connect_one(config, host, addr, port, attrs, SslMode::Require).await
            }
            (SslMode::Prefer, Err(e)) if e.kind() == ErrorKind::Tls => {
                tracing::debug!(error = %format_args!("{e:#}"), "TLS failed, retrying without (sslmode=prefer)");
                Self::connect_one(config, host, addr, port, attrs, SslMode::Disable).await
            }
            (_, result) => result,
        }
    }

    async fn connect_one(
        config: &Config,
        host: &Host,
        addr: Option<&str>,
        port: u16,
        attrs: TargetSessionAttrs,
        mode: SslMode,
    ) -> Result<Connection> {
        let mut peer = None;
        let (stream, tls_used) = match host {
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                let s = UnixStream::connect(&path)
                    .await
                    .map_err(|e| Error::io(format!("connect to {}", path.display()), e))?;
                (Stream::Unix(s), false)
            }
            Host::Tcp(name) => {
                let target = addr.unwrap_or(name);
                let tcp = TcpStream::connect((target, port))
                    .await
                    .map_err(|e| Error::io(format!("connect to {target}:{port}"), e))?;
                tcp.set_nodelay(true)
                    .map_err(|e| Error::io("set TCP_NODELAY", e))?;
                peer = tcp.peer_addr().ok();
                set_keepalives(&tcp, config)?;
                set_tcp_user_timeout(&tcp, config)?;
                tls::negotiate(tcp, name, config, mode).await?
            }
        };
        let mut conn = Connection::new(stream, host.clone(), port, peer, tls_used);
        conn.startup(config).await?;
        conn.check_attrs(attrs)?;
        Ok(conn)
    }

    /// Startup and authentication over an in-memory pipe whose other end plays the server,
    /// for the fuzz target `server_bytes` (`crate::fuzzing::server_bytes`): what
    /// [`connect`](Self::connect) does after the socket and TLS, without
    /// `target_session_attrs`.
    pub(crate) async fn over_pipe(pipe: DuplexStream, config: &Config) -> Result<Connection> {
        let host = Host::Tcp("pipe".to_owned());
        let mut conn = Connection::new(Stream::Memory(pipe), host, DEFAULT_PORT, None, false);
        conn.startup(config).await?;
        Ok(conn)
    }

    /// A connection over `stream`, before the startup packet.
    fn new(
        stream: Stream,
        host: Host,
        port: u16,
        peer: Option<std::net::SocketAddr>,
        tls: bool,
    ) -> Connection {
        Connection {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::new(),
            params: HashMap::new(),
            backend_key: None,
            server_version_num: 0,
            host,
            port,
            peer,
            tls,
            phase: Phase::Authentication,
            poisoned: false,
        }
    }

    async fn startup(&mut self, config: &Config) -> Result<()> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &config.user),
            ("client_encoding", config.client_encoding.as_str()),
        ];
        params.extend(PINNED_SETTINGS);
        match config.replication {
            Replication::Database => {
                params.push(("database", &config.dbname));
                params.push(("replication", "database"));
            }
            Replication::Physical => params.push(("replication", "true")),
            Replication::Off => params.push(("database", &config.dbname)),
        }
        if let Some(a) = &config.application_name {
            params.push(("application_name", a));
        }
        if let Some(o) = &config.options {
            params.push(("options", o));
        }
        frontend::startup_message(params.iter().copied(), &mut self.write_buf)
            .map_err(|e| Error::config("invalid startup parameter").with_source(e))?;
        self.flush().await?;
        self.authenticate(config).await?;
        self.phase = Phase::Startup;
        loop {
            match self.read_message().await? {
                Message::ReadyForQuery(_) => {
                    self.phase = Phase::Ready;
                    break;
                }
                Message::BackendKeyData(k) => {
                    self.backend_key = Some((k.process_id(), k.secret_key()));
                }
                Message::ParameterStatus(p) => {
                    let name = p.name().map_err(bad_message)?.to_owned();
                    let value = p.value().map_err(bad_message)?.to_owned();
                    self.params.insert(name, value);
                }
                other => return Err(unexpected(&other, "startup")),
            }
        }
        self.server_version_num = self
            .params
            .get("server_version")
            .map(|v| parse_server_version(v))
            .unwrap_or(0);
        Ok(())
    }

    async fn authenticate(&mut self, config: &Config) -> Result<()> {
        let mut channel_bound = false;
        loop {
            match self.read_message().await? {
                Message::AuthenticationOk => break,
                Message::AuthenticationCleartextPassword => {
                    self.refuse_without_binding(config)?;
                    let pw = self.password(config).await?;
                    frontend::password_message(pw.as_bytes(), &mut self.write_buf)
                        .map_err(|e| Error::new(ErrorKind::Auth, "password").with_source(e))?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    self.refuse_without_binding(config)?;
                    let pw = self.password(config).await?;
                    let hash = md5_hash(config.user.as_bytes(), pw.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)
                        .map_err(|e| Error::new(ErrorKind::Auth, "password").with_source(e))?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut plus = false;
                    let mut plain = false;
                    let mut mechs = body.mechanisms();
                    while let Some(m) = fallible_iterator::FallibleIterator::next(&mut mechs)
                        .map_err(bad_message)?
                    {
                        plus |= m == sasl::SCRAM_SHA_256_PLUS;
                        plain |= m == sasl::SCRAM_SHA_256;
                    }
                    let endpoint = match &self.stream {
                        #[cfg(feature = "tls")]
                        Stream::Tls(s) => tls::server_end_point(s),
                        _ => None,
                    };
                    let (mechanism, binding) = match (config.channel_binding, endpoint) {
                        (ChannelBinding::Disable, _) => {
                            (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unsupported())
                        }
                        (_, Some(sig)) if plus => (
                            sasl::SCRAM_SHA_256_PLUS,
                            sasl::ChannelBinding::tls_server_end_point(sig),
                        ),
                        (ChannelBinding::Require, _) => {
                            return Err(Error::new(
                                ErrorKind::Auth,
                                "channel binding required, but the server did not offer \
                                 SCRAM-SHA-256-PLUS over TLS",
                            ))
                        }
                        (_, Some(_)) => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unrequested()),
                        (_, None) => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unsupported()),
                    };
                    if mechanism == sasl::SCRAM_SHA_256 && !plain {
                        return Err(Error::new(
                            ErrorKind::Auth,
                            "the server offers no SASL mechanism this client supports",
                        ));
                    }
                    channel_bound = mechanism == sasl::SCRAM_SHA_256_PLUS;
                    let pw = self.password(config).await?;
                    self.scram(mechanism, ScramSha256::new(pw.as_bytes(), binding))
                        .await?;
                }
                Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential => {
                    return Err(Error::new(
                        ErrorKind::Auth,
                        "the server asks for an authentication method this client does not \
                         support (GSSAPI, SSPI, Kerberos or SCM credentials)",
                    ))
                }
                other => return Err(unexpected(&other, "authentication")),
            }
        }
        if config.channel_binding == ChannelBinding::Require && !channel_bound {
            return Err(Error::new(
                ErrorKind::Auth,
                "channel binding required, but the server authenticated the client without it",
            ));
        }
        Ok(())
    }

    async fn scram(&mut self, mechanism: &str, mut scram: ScramSha256) -> Result<()> {
        let auth = |e: std::io::Error| Error::new(ErrorKind::Auth, "SCRAM exchange").with_source(e);
        frontend::sasl_initial_response(mechanism, scram.message(), &mut self.write_buf)
            .map_err(auth)?;
        self.flush().await?;
        match self.read_message().await? {
            Message::AuthenticationSaslContinue(body) => scram.update(body.data()).map_err(auth)?,
            other => return Err(unexpected(&other, "SCRAM")),
        }
        frontend::sasl_response(scram.message(), &mut self.write_buf).map_err(auth)?;
        self.flush().await?;
        match self.read_message().await? {
            Message::AuthenticationSaslFinal(body) => scram.finish(body.data()).map_err(auth)?,
            other => return Err(unexpected(&other, "SCRAM")),
        }
        Ok(())
    }

    fn refuse_without_binding(&self, config: &Config) -> Result<()> {
        if config.channel_binding == ChannelBinding::Require {
            return Err(Error::new(
                ErrorKind::Auth,
                "channel binding required, but the server asked for a password without SCRAM",
            ));
        }
        Ok(())
    }

    /// The password the server asked for: the provider's when one is set (asked anew at
    /// each request), else the config's, else the password file's.
    async fn password(&self, config: &Config) -> Result<String> {
        let db = match config.replication {
            Replication::Database | Replication::Off => config.dbname.as_str(),
            Replication::Physical => "replication",
        };
        if let Some(provider) = &config.password_provider {
            let request = PasswordRequest::new(self.host.clone(), self.port, &config.user, db);
            return credentials::ask(provider, request).await;
        }
        if let Some(p) = &config.password {
            return Ok(p.0.clone());
        }
        config
            .passfile
            .as_deref()
            .and_then(|f| {
                crate::pgpass::lookup(f, self.host.pgpass_name(), self.port, db, &config.user)
            })
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Auth,
                    "the server requested password authentication, but no password was given",
                )
            })
    }

    fn check_attrs(&self, attrs: TargetSessionAttrs) -> Result<()> {
        let on = |name: &str| self.params.get(name).is_some_and(|v| v == "on");
        let standby = on("in_hot_standby");
        let read_only = standby || on("default_transaction_read_only");
        let ok = match attrs {
            TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby => true,
            TargetSessionAttrs::ReadWrite => !read_only,
            TargetSessionAttrs::ReadOnly => read_only,
            TargetSessionAttrs::Primary => !standby,
            TargetSessionAttrs::Standby => standby,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::SessionAttrs,
                format!("server does not match target_session_attrs {attrs:?}"),
            ))
        }
    }

    /// A run-time parameter the server reported (`server_version`, `in_hot_standby`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The server's version as in `server_version_num`: `170002` for 17.2.
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// Whether the connection is encrypted with TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// A token that cancels the command running on this connection from elsewhere.
    pub fn cancel_token(&self) -> Option<crate::CancelToken> {
        self.backend_key.map(|(pid, key)| crate::CancelToken {
            host: self.host.clone(),
            port: self.port,
            peer: self.peer,
            process_id: pid,
            secret_key: key,
        })
    }

    /// Whether a previous call was cancelled mid-way, so that every further call fails with
    /// [`ErrorKind::Poisoned`]: the connection must be discarded.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Fails with [`ErrorKind::Poisoned`] if a previous call was cancelled mid-way.
    pub(crate) fn check_poisoned(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::poisoned());
        }
        Ok(())
    }

    /// Starts an operation that is not cancel-safe: fails if the connection is poisoned,
    /// else poisons it until [`end_operation`](Self::end_operation). A future dropped in
    /// between leaves it poisoned.
    pub(crate) fn begin_operation(&mut self) -> Result<()> {
        self.check_poisoned()?;
        self.poisoned = true;
        Ok(())
    }

    /// The operation begun with [`begin_operation`](Self::begin_operation) has returned.
    pub(crate) fn end_operation(&mut self) {
        self.poisoned = false;
    }

    /// Errors with [`ErrorKind::Unsupported`] unless the server is at least `major`.
    pub(crate) fn require_version(&self, major: u32, what: &str) -> Result<()> {
        if self.server_version_num < major * 10000 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{what} needs PostgreSQL {major} or newer; the server is {}",
                    self.parameter("server_version").unwrap_or("unknown")
                ),
            ));
        }
        Ok(())
    }

    /// The next backend message. Notices are logged and skipped; an `ErrorResponse` is
    /// returned as a message for the caller to handle (see [`read_message`](Self::read_message)).
    ///
    /// Cancel-safe: bytes are only taken from the read buffer once a whole message is there,
    /// so a dropped call loses nothing and the next call resumes where it left off.
    pub(crate) async fn read_raw(&mut self) -> Result<Message> {
        loop {
            if self.fill_frame().await? == COPY_BOTH_RESPONSE_TAG {
                return Err(Error::protocol(
                    "unexpected CopyBothResponse from the server",
                ));
            }
            let msg = Message::parse(&mut self.read_buf)
                .map_err(bad_message)?
                .ok_or_else(|| Error::protocol("incomplete message after a complete frame"))?;
            if let Message::NoticeResponse(n) = &msg {
                if let Ok(notice) = DbError::from_fields(&mut n.fields()) {
                    tracing::info!(%notice, "server notice");
                }
                continue;
            }
            return Ok(msg);
        }
    }

    /// Reads until one whole frame is buffered and returns its tag, without consuming it.
    ///
    /// A frame's declared length is checked against the limit of the connection's [`Phase`]
    /// as soon as its header is in, and no room is reserved for it up front: the length is
    /// only the peer's word, so the buffer grows as bytes arrive (a chunk at a time, or by
    /// doubling), never by what a header claims.
    ///
    /// Cancel-safe, as is everything built on it that consumes only whole frames.
    pub(crate) async fn fill_frame(&mut self) -> Result<u8> {
        loop {
            if let Some(header) = Header::parse(&self.read_buf).map_err(bad_message)? {
                let len = usize::try_from(header.len()).unwrap_or(usize::MAX);
                let limit = self.phase.max_message_len();
                if len > limit {
                    return Err(Error::too_long(crate::MessageTooLong {
                        tag: header.tag(),
                        declared: len,
                        limit,
                        phase: self.phase,
                    }));
                }
                if self.read_buf.len() > len {
                    return Ok(header.tag());
                }
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
                self.read_buf.reserve(READ_CHUNK);
            }
            let n = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(|e| Error::io("read from server", e))?;
            if n == 0 {
                return Err(if self.read_buf.has_remaining() {
                    Error::new(
                        ErrorKind::Closed,
                        "the server closed the connection mid-message",
                    )
                } else {
                    Error::closed()
                });
            }
        }
    }

    /// Whether a whole backend message is already in the read buffer, so that the next read
    /// completes without waiting for the socket.
    pub(crate) fn has_buffered_frame(&self) -> bool {
        match Header::parse(&self.read_buf) {
            Ok(Some(header)) => {
                let len = usize::try_from(header.len()).unwrap_or(usize::MAX);
                self.read_buf.len() > len
            }
            _ => false,
        }
    }

    /// Sets the socket's receive low-water mark; false on a Unix socket (where it is not set).
    pub(crate) fn set_read_low_water(&self, bytes: usize) -> Result<bool> {
        match self.stream.tcp_fd() {
            Some(fd) => crate::lowat::set_rcvlowat(fd, bytes)
                .map(|()| true)
                .map_err(|e| Error::io("set SO_RCVLOWAT", e)),
            None => Ok(false),
        }
    }

    /// Consumes a `CopyBothResponse` if that is the next (whole, buffered) frame.
    pub(crate) fn take_copy_both_response(&mut self) -> bool {
        let Some(Ok(Some(header))) = Some(Header::parse(&self.read_buf)) else {
            return false;
        };
        let total = usize::try_from(header.len())
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        if header.tag() == COPY_BOTH_RESPONSE_TAG && self.read_buf.len() >= total {
            self.read_buf.advance(total);
            return true;
        }
        false
    }

    /// The next backend message, with an `ErrorResponse` turned into an [`Error`].
    ///
    /// After an `ErrorResponse` outside startup the server still sends `ReadyForQuery`; use
    /// [`read_until_ready`](Self::read_until_ready) to stay in step.
    pub(crate) async fn read_message(&mut self) -> Result<Message> {
        match self.read_raw().await? {
            Message::ErrorResponse(body) => Err(server_error(&body)?),
            m => Ok(m),
        }
    }

    /// Reads and drops messages up to and including `ReadyForQuery`.
    pub(crate) async fn read_until_ready(&mut self) -> Result<()> {
        loop {
            if let Message::ReadyForQuery(_) = self.read_raw().await? {
                return Ok(());
            }
        }
    }

    /// Sends whatever is in the write buffer.
    ///
    /// Not cancel-safe: a dropped call may have sent part of a message, after which the
    /// connection must be dropped.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.stream
            .write_all_buf(&mut self.write_buf)
            .await
            .map_err(|e| Error::io("write to server", e))?;
        self.stream
            .flush()
            .await
            .map_err(|e| Error::io("write to server", e))
    }

    /// The write buffer, for callers that encode a message into it before [`flush`](Self::flush).
    pub(crate) fn write_buf(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// The read buffer, for readers that take several whole frames at once (`CopyOut::next_chunk`).
    pub(crate) fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// Sends `Terminate` and closes the socket.
    ///
    /// Consumes the connection: dropping the future drops the connection (the socket is
    /// closed without `Terminate`, which the server treats as a lost client). On a poisoned
    /// connection it fails with [`ErrorKind::Poisoned`] without writing anything, and the
    /// socket is closed as the connection is dropped.
    pub async fn close(mut self) -> Result<()> {
        self.check_poisoned()?;
        frontend::terminate(&mut self.write_buf);
        self.flush().await?;
        self.stream
            .shutdown()
            .await
            .map_err(|e| Error::io("close connection", e))
    }
}

/// Applies `keepalives*` to the socket. tokio can only switch keepalive on; socket2 (already
/// under tokio) sets the timers.
fn set_keepalives(tcp: &TcpStream, config: &Config) -> Result<()> {
    let sock = socket2::SockRef::from(tcp);
    if !config.keepalives {
        return sock
            .set_keepalive(false)
            .map_err(|e| Error::io("turn TCP keepalive off", e));
    }
    let mut params = socket2::TcpKeepalive::new();
    if let Some(idle) = config.keepalives_idle {
        params = params.with_time(idle);
    }
    if let Some(interval) = config.keepalives_interval {
        params = params.with_interval(interval);
    }
    if let Some(count) = config.keepalives_count {
        params = params.with_retries(count);
    }
    sock.set_tcp_keepalive(&params)
        .map_err(|e| Error::io("set TCP keepalive", e))
}

/// Applies `tcp_user_timeout` to the socket, where the kernel has the option (Linux and
/// Android); elsewhere libpq ignores it too.
fn set_tcp_user_timeout(tcp: &TcpStream, config: &Config) -> Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(timeout) = config.tcp_user_timeout {
        socket2::SockRef::from(tcp)
            .set_tcp_user_timeout(Some(timeout))
            .map_err(|e| Error::io("set TCP_USER_TIMEOUT", e))?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (tcp, config);
    Ok(())
}

/// `server_version` such as `17.2 (Debian 17.2-1)` or `16beta1` as `server_version_num`.
fn parse_server_version(v: &str) -> u32 {
    let digits_of = |s: &str| -> u32 {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    };
    let mut parts = v.split('.');
    let major = parts.next().map(digits_of).unwrap_or(0);
    let minor = parts.next().map(digits_of).unwrap_or(0);
    major * 10000 + minor
}

/// The typed error of a server `ErrorResponse` (its fields kept: SQLSTATE, message, detail,
/// hint, ...).
pub(crate) fn server_error(
    body: &postgres_protocol::message::backend::ErrorResponseBody,
) -> Result<Error> {
    Ok(Error::server(
        DbError::from_fields(&mut body.fields()).map_err(bad_message)?,
    ))
}

pub(crate) fn bad_message(e: std::io::Error) -> Error {
    Error::protocol("malformed message from the server").with_source(e)
}

pub(crate) fn unexpected(msg: &Message, during: &str) -> Error {
    let name = match msg {
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::DataRow(_) => "DataRow",
        Message::RowDescription(_) => "RowDescription",
        Message::CommandComplete(_) => "CommandComplete",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::EmptyQueryResponse => "EmptyQueryResponse",
        _ => "message",
    };
    Error::protocol(format!("unexpected {name} from the server during {during}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(parse_server_version("17.2 (Debian 17.2-1.pgdg)"), 170002);
        assert_eq!(parse_server_version("15.10"), 150010);
        assert_eq!(parse_server_version("18beta1"), 180000);
    }

    #[tokio::test]
    async fn keepalives_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let sock = socket2::SockRef::from(&tcp);
        let config = |c: &str| Config::parse_with_env(c, |_| None).unwrap();
        set_keepalives(
            &tcp,
            &config("user=u keepalives_idle=31 keepalives_interval=7 keepalives_count=4"),
        )
        .unwrap();
        assert!(sock.keepalive().unwrap());
        assert_eq!(
            sock.tcp_keepalive_time().unwrap(),
            std::time::Duration::from_secs(31)
        );
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            std::time::Duration::from_secs(7)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
        set_keepalives(&tcp, &config("user=u keepalives=0")).unwrap();
        assert!(!sock.keepalive().unwrap());
        assert!(Config::parse_with_env("user=u keepalives_idle=soon", |_| None).is_err());
    }

    /// The TCP options are read back from the socket of a connection made by `connect`, so
    /// the test fails if the connect path forgets to set one.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn tcp_user_timeout_reaches_the_connected_socket() {
        let server = pgtest::fake::FakeWalsender::start(|_| async {}).await;
        let connect = |extra: &str| {
            let config =
                Config::parse_with_env(&format!("{} {extra}", server.conninfo()), |_| None);
            async move { Connection::connect(&config.unwrap()).await.unwrap() }
        };
        let conn = connect("tcp_user_timeout=4500 keepalives_idle=31").await;
        let fd = conn.stream.tcp_fd().unwrap();
        let sock = socket2::SockRef::from(&fd);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(std::time::Duration::from_millis(4500))
        );
        assert_eq!(
            sock.tcp_keepalive_time().unwrap(),
            std::time::Duration::from_secs(31)
        );
        let conn = connect("tcp_user_timeout=0").await;
        let fd = conn.stream.tcp_fd().unwrap();
        assert_eq!(
            socket2::SockRef::from(&fd).tcp_user_timeout().unwrap(),
            None
        );
    }
}

//! A scripted fake walsender on 127.0.0.1, for what a real server will not do on demand:
//! frames cut short or claiming gigabytes, messages out of order, LSNs going backwards,
//! silence, a connection closed mid-frame, a server that stops reading its client.
//!
//! # What each connection is served
//!
//! 1. The startup packet is answered as a PostgreSQL 17.0 server with trust authentication
//!    answers it (AuthenticationOk, `server_version`, BackendKeyData, ReadyForQuery). An SSL or
//!    GSS encryption request is refused with `N` first. [`FakeWalsender::start_with`] can
//!    accept an SSLRequest and serve the connection over TLS ([`Startup::tls`]), and send an
//!    authentication request of the test's own before AuthenticationOk
//!    ([`Startup::auth_request`]); the client's answer to it is logged in the [`Log`]. Bytes
//!    of the test's own can also go between BackendKeyData and ReadyForQuery
//!    ([`Startup::before_ready`]).
//! 2. Simple queries are answered as a walsender with one logical slot would answer them:
//!    `IDENTIFY_SYSTEM` (system [`SYSTEM_ID`], timeline 1, at [`SLOT_LSN`], database `fake`),
//!    `SHOW` of the [`SETTINGS`], and any query of `pg_replication_slots` (a `pgoutput` slot of
//!    database `fake` confirmed at [`SLOT_LSN`]). Anything else gets an ErrorResponse
//!    (SQLSTATE 42601) and ReadyForQuery.
//! 3. `START_REPLICATION` (any slot, logical or physical) logs its start LSN, is answered with
//!    CopyBothResponse, and runs the script with a [`Peer`]. What the script sends is the
//!    replication stream, byte for byte ([`message`] frames one backend message), so it can be
//!    as wrong as a test needs. `BASE_BACKUP` runs the script at once: its whole answer, from
//!    the first result set on, is the script's. When the script returns, the server closes its side of the
//!    connection (the client reads end-of-file).
//! 4. Meanwhile every client message is read and logged in the [`Log`]: the flush position of
//!    each standby status update; CopyDone, which stops the script and is answered with
//!    CopyDone, CommandComplete and ReadyForQuery (back to step 2); Terminate, which ends the
//!    connection. While the script runs, every client message also goes to [`Peer::recv`],
//!    and queries are the script's to answer.
//!
//! [`FakeWalsender::start_deaf`] stops reading at step 3 instead, so that the client's sends
//! block once the socket buffers are full.
//!
//! ```no_run
//! # async fn example() {
//! use pgtest::fake::{copy_data, FakeWalsender};
//!
//! let server = FakeWalsender::start(|peer| async move {
//!     // One CopyData that is neither XLogData nor a keepalive, then silence.
//!     peer.send(&copy_data(b"x-what-is-this")).await;
//!     tokio::time::sleep(std::time::Duration::from_secs(30)).await;
//! })
//! .await;
//! // ... connect a client to server.conninfo() and start replication ...
//! assert_eq!(server.log().connections(), 1);
//! # }
//! ```
//!
//! LSNs are plain `u64`s here: test support does not depend on the crates it tests (a test of
//! walproto would otherwise link two walproto crates whose types do not match).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

/// The fake slot's `confirmed_flush_lsn`, which is also `IDENTIFY_SYSTEM`'s `xlogpos`.
pub const SLOT_LSN: u64 = 0x100_0000;

/// The system identifier `IDENTIFY_SYSTEM` reports.
pub const SYSTEM_ID: &str = "7000000000000000001";

/// The settings `SHOW` knows, with their values.
pub const SETTINGS: &[(&str, &str)] = &[("wal_sender_timeout", "60s"), ("wal_level", "logical")];

/// The address the fake listens on.
const HOST: &str = "127.0.0.1";

/// The largest client message read: far above anything a replication client sends, it only
/// keeps a broken length from allocating gigabytes.
const MAX_MESSAGE_LEN: usize = 64 << 20;

/// The largest startup packet read (PostgreSQL's own limit is 10,000 bytes).
const MAX_STARTUP_LEN: usize = 10_000;

/// The request code of SSLRequest.
const SSL_REQUEST: u32 = 80_877_103;

/// The request code of GSSENCRequest, which the fake always refuses.
const GSSENC_REQUEST: u32 = 80_877_104;

/// A fake walsender serving a script on every connection (see the [module docs](self)).
///
/// It serves until the tokio runtime it was started on shuts down.
#[derive(Debug)]
pub struct FakeWalsender {
    port: u16,
    log: Arc<Log>,
}

/// What the fake walsender saw from its clients.
#[derive(Debug, Default)]
pub struct Log {
    connections: AtomicUsize,
    starts: Mutex<Vec<u64>>,
    flushes: Mutex<Vec<u64>>,
    copy_done: AtomicUsize,
    terminated: AtomicUsize,
    auth_answers: Mutex<Vec<Option<FrontendMessage>>>,
}

/// How the fake answers before its script, where a test needs more than the defaults of
/// step 1 in the [module docs](self): TLS, and an authentication request of the test's own.
///
/// ```no_run
/// # async fn example(cert_pem: &str, key_pem: &str) {
/// use pgtest::fake::{message, FakeWalsender, Startup};
///
/// // AuthenticationCleartextPassword (3), over TLS.
/// let startup = Startup::new()
///     .tls(cert_pem, key_pem)
///     .auth_request(message(b'R', &3u32.to_be_bytes()));
/// let server = FakeWalsender::start_with(startup, |_peer| async {}).await;
/// // ... connect a client with sslmode=require ...
/// let answers = server.log().auth_answers();
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Startup {
    tls: Option<Arc<ServerConfig>>,
    auth_request: Option<Vec<u8>>,
    before_ready: Vec<u8>,
}

/// The script's end of one connection.
pub struct Peer {
    writer: Writer,
    messages: mpsc::UnboundedReceiver<FrontendMessage>,
    connection: usize,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The write half is a trait object, TCP or TLS, with nothing worth printing.
        f.debug_struct("Peer")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// One message from the client: its tag and its body (without the length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendMessage {
    /// The message type, `b'Q'` for a simple query.
    pub tag: u8,
    /// The bytes after the length.
    pub body: Vec<u8>,
}

/// The read half of a connection, over TCP or TLS.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// The write half of a connection, over TCP or TLS.
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The write half of a connection, shared by the script and the server's answers.
type Writer = Arc<tokio::sync::Mutex<WriteHalf>>;

impl Startup {
    /// The defaults: an SSLRequest is refused with `N`, and the client is trusted
    /// (AuthenticationOk at once).
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts an SSLRequest with `S` and serves the rest of the connection over TLS, with
    /// this certificate chain and key (PEM). Direct TLS (`sslnegotiation=direct`) is not
    /// served.
    ///
    /// # Panics
    ///
    /// When the PEM holds no certificate or no key rustls can use.
    #[allow(
        clippy::panic,
        reason = "test support: a test that passes a broken certificate is wrong"
    )]
    pub fn tls(mut self, cert_pem: &str, key_pem: &str) -> Self {
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("fake walsender: the certificate PEM: {e}"));
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .unwrap_or_else(|e| panic!("fake walsender: the key PEM: {e}"));
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .unwrap_or_else(|e| panic!("fake walsender: the TLS configuration: {e}"));
        self.tls = Some(Arc::new(config));
        self
    }

    /// Sends `request` (raw bytes: an AuthenticationSASL, an AuthenticationCleartextPassword,
    /// or anything at all) where a trust server sends AuthenticationOk, and logs the client's
    /// answer in [`Log::auth_answers`]: its next message, or `None` when it closes the
    /// connection instead. After an answer the fake goes on as a trust server would
    /// (AuthenticationOk and the rest of step 1), whatever the answer was: a test learns
    /// from the log what the client would have given away.
    pub fn auth_request(mut self, request: Vec<u8>) -> Self {
        self.auth_request = Some(request);
        self
    }

    /// Sends `bytes` (raw: ParameterStatus and NoticeResponse messages, or anything at all)
    /// after AuthenticationOk, `server_version` and BackendKeyData, before ReadyForQuery: what
    /// a server reports after authentication.
    pub fn before_ready(mut self, bytes: Vec<u8>) -> Self {
        self.before_ready = bytes;
        self
    }
}

impl FakeWalsender {
    /// Starts serving `script` on every connection, reading the client all along.
    ///
    /// # Panics
    ///
    /// When no port on 127.0.0.1 can be bound.
    pub async fn start<F, Fut>(script: F) -> Self
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::serve(script, true, Startup::new()).await
    }

    /// Starts serving `script` on every connection, as [`start`](Self::start) does, after a
    /// startup as `startup` says (TLS, an authentication request).
    ///
    /// # Panics
    ///
    /// When no port on 127.0.0.1 can be bound.
    pub async fn start_with<F, Fut>(startup: Startup, script: F) -> Self
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::serve(script, true, startup).await
    }

    /// Starts serving `script` on every connection, reading nothing from the client after
    /// `START_REPLICATION` (and so logging nothing after it either): the client's sends block
    /// once the socket buffers are full. The script's [`Peer::recv`] returns `None`.
    ///
    /// # Panics
    ///
    /// When no port on 127.0.0.1 can be bound.
    pub async fn start_deaf<F, Fut>(script: F) -> Self
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::serve(script, false, Startup::new()).await
    }

    #[allow(
        clippy::panic,
        reason = "test support: a fake server that cannot listen fails the test"
    )]
    async fn serve<F, Fut>(script: F, listening: bool, startup: Startup) -> Self
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = match TcpListener::bind((HOST, 0)).await {
            Ok(l) => l,
            Err(e) => panic!("fake walsender: binding {HOST}: {e}"),
        };
        let port = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => panic!("fake walsender: the bound address: {e}"),
        };
        let log = Arc::new(Log::default());
        let script = Arc::new(script);
        let startup = Arc::new(startup);
        let l = log.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let n = l.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(connection(
                    socket,
                    n,
                    l.clone(),
                    script.clone(),
                    listening,
                    startup.clone(),
                ));
            }
        });
        Self { port, log }
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq conninfo for it: user and database `fake`, no TLS (a later `sslmode` in the
    /// same conninfo overrides it, for a server started with [`Startup::tls`]).
    pub fn conninfo(&self) -> String {
        format!(
            "host={HOST} port={} user=fake dbname=fake sslmode=disable",
            self.port
        )
    }

    /// What it saw so far.
    pub fn log(&self) -> &Log {
        &self.log
    }
}

impl Log {
    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The start LSN of every `START_REPLICATION`, in order.
    pub fn starts(&self) -> Vec<u64> {
        self.starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The flush position of every standby status update, in order.
    pub fn flushes(&self) -> Vec<u64> {
        self.flushes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// CopyDone messages received.
    pub fn copy_done(&self) -> usize {
        self.copy_done.load(Ordering::SeqCst)
    }

    /// Terminate messages received.
    pub fn terminated(&self) -> usize {
        self.terminated.load(Ordering::SeqCst)
    }

    /// The client's answer to each [authentication request](Startup::auth_request), one per
    /// connection that got that far, in order: the message, or `None` when the client closed
    /// the connection without answering.
    pub fn auth_answers(&self) -> Vec<Option<FrontendMessage>> {
        self.auth_answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(list: &Mutex<Vec<u64>>, lsn: u64) {
        list.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(lsn);
    }
}

impl Peer {
    /// Which connection this is, from 0 (a client that reconnects gets 1, 2, ...).
    pub fn connection(&self) -> usize {
        self.connection
    }

    /// Writes raw bytes to the client: false once the client is gone.
    pub async fn send(&self, bytes: &[u8]) -> bool {
        send(&self.writer, bytes).await
    }

    /// Ends the server's side of the connection: the client reads end-of-file.
    pub async fn close(&self) {
        // The client may be gone already, which is what closing wanted.
        let _ = self.writer.lock().await.shutdown().await;
    }

    /// The client's next message since `START_REPLICATION`; `None` once the connection is
    /// closed, and at once for a [deaf](FakeWalsender::start_deaf) server.
    pub async fn recv(&mut self) -> Option<FrontendMessage> {
        self.messages.recv().await
    }
}

/// One backend message: its tag, its length (counting itself) and its body.
///
/// # Panics
///
/// When the body is longer than a message can be (4 GiB).
#[allow(
    clippy::expect_used,
    reason = "test support: a test that builds a 4 GiB message is wrong"
)]
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len() + 4).expect("a backend message under 4 GiB");
    let mut m = Vec::with_capacity(body.len() + 5);
    m.push(tag);
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A CopyData message carrying `payload`.
pub fn copy_data(payload: &[u8]) -> Vec<u8> {
    message(b'd', payload)
}

/// Serves one connection (steps 1 to 4 of the module docs).
async fn connection<F, Fut>(
    socket: TcpStream,
    n: usize,
    log: Arc<Log>,
    script: Arc<F>,
    listening: bool,
    startup: Arc<Startup>,
) where
    F: Fn(Peer) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok((mut rd, wr)) = serve_startup(socket, &startup, &log).await else {
        return;
    };
    let writer: Writer = Arc::new(tokio::sync::Mutex::new(wr));
    // The running script and the sender of its Peer's messages.
    let mut running: Option<(JoinHandle<()>, mpsc::UnboundedSender<FrontendMessage>)> = None;
    while let Ok(m) = read_message(&mut rd).await {
        if let Some((_, to_script)) = &running {
            // A script that stopped listening does not stop the server.
            let _ = to_script.send(m.clone());
        }
        match m.tag {
            b'Q' if running.is_none() => {
                let sql = String::from_utf8_lossy(m.body.strip_suffix(b"\0").unwrap_or(&m.body));
                let base_backup = sql.starts_with("BASE_BACKUP");
                if !sql.starts_with("START_REPLICATION") && !base_backup {
                    if !send(&writer, &answer(&sql)).await {
                        break;
                    }
                    continue;
                }
                if !base_backup {
                    let Some(lsn) = sql.split_whitespace().find_map(parse_lsn) else {
                        if !send(&writer, &error("START_REPLICATION without a start LSN")).await {
                            break;
                        }
                        continue;
                    };
                    Log::push(&log.starts, lsn);
                    // CopyBothResponse: text format, no columns.
                    if !send(&writer, &message(b'W', &[0, 0, 0])).await {
                        break;
                    }
                }
                let (to_script, messages) = mpsc::unbounded_channel();
                let peer = Peer {
                    writer: writer.clone(),
                    messages,
                    connection: n,
                };
                let run = script(peer);
                let w = writer.clone();
                let run = async move {
                    run.await;
                    // The client may be gone already, which is what closing wanted.
                    let _ = w.lock().await.shutdown().await;
                };
                if !listening {
                    // Deaf: the read half stays open, unread, until the script ends.
                    drop(to_script);
                    run.await;
                    return;
                }
                running = Some((tokio::spawn(run), to_script));
            }
            b'd' => {
                if let Some(flush) = status_update_flush(&m.body) {
                    Log::push(&log.flushes, flush);
                }
            }
            b'c' => {
                log.copy_done.fetch_add(1, Ordering::SeqCst);
                if let Some((task, _)) = running.take() {
                    task.abort();
                }
                let mut out = message(b'c', b"");
                out.extend(message(b'C', b"START_REPLICATION\0"));
                out.extend(message(b'Z', b"I"));
                if !send(&writer, &out).await {
                    break;
                }
            }
            b'X' => {
                log.terminated.fetch_add(1, Ordering::SeqCst);
                break;
            }
            _ => {}
        }
    }
    if let Some((task, _)) = running {
        task.abort();
    }
}

/// Step 1: encryption requests (TLS when `startup` has it, else refused), the startup packet,
/// the test's authentication request if any, and the answer a trust server gives. Returns the
/// connection's halves, over TLS or not.
async fn serve_startup(
    mut socket: TcpStream,
    startup: &Startup,
    log: &Log,
) -> io::Result<(ReadHalf, WriteHalf)> {
    let (mut rd, mut wr): (ReadHalf, WriteHalf) = loop {
        let body = startup_packet(&mut socket).await?;
        let code = match body.first_chunk::<4>() {
            Some(c) if body.len() == 4 => Some(u32::from_be_bytes(*c)),
            _ => None,
        };
        match (code, &startup.tls) {
            (Some(SSL_REQUEST), Some(tls)) => {
                socket.write_all(b"S").await?;
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                let mut tls = acceptor.accept(socket).await?;
                // Inside TLS only the startup packet may follow; PostgreSQL refuses a
                // second encryption request there, and so does the size check of a client
                // that sends one.
                startup_packet(&mut tls).await?;
                let (r, w) = tokio::io::split(tls);
                break (Box::new(r), Box::new(w));
            }
            (Some(SSL_REQUEST | GSSENC_REQUEST), _) => socket.write_all(b"N").await?,
            _ => {
                let (r, w) = socket.into_split();
                break (Box::new(r), Box::new(w));
            }
        }
    };
    if let Some(request) = &startup.auth_request {
        wr.write_all(request).await?;
        wr.flush().await?;
        let answer = read_message(&mut rd).await.ok();
        let answered = answer.is_some();
        log.auth_answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(answer);
        if !answered {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    let mut out = message(b'R', &0u32.to_be_bytes());
    out.extend(message(b'S', b"server_version\x0017.0\x00"));
    out.extend(message(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]));
    out.extend_from_slice(&startup.before_ready);
    out.extend(message(b'Z', b"I"));
    wr.write_all(&out).await?;
    wr.flush().await?;
    Ok((rd, wr))
}

/// Reads one startup packet (or encryption request) and returns its body.
async fn startup_packet<S: AsyncRead + Unpin>(socket: &mut S) -> io::Result<Vec<u8>> {
    let len = usize::try_from(socket.read_u32().await?).unwrap_or(usize::MAX);
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(io::Error::other(format!("a startup packet of {len} bytes")));
    }
    let mut body = vec![0; len - 4];
    socket.read_exact(&mut body).await?;
    Ok(body)
}

/// Reads one tagged client message.
async fn read_message(rd: &mut ReadHalf) -> io::Result<FrontendMessage> {
    let tag = rd.read_u8().await?;
    let len = usize::try_from(rd.read_u32().await?).unwrap_or(usize::MAX);
    let len = len.saturating_sub(4);
    if len > MAX_MESSAGE_LEN {
        return Err(io::Error::other(format!("a client message of {len} bytes")));
    }
    let mut body = vec![0; len];
    rd.read_exact(&mut body).await?;
    Ok(FrontendMessage { tag, body })
}

/// Writes `bytes` and flushes them (TLS holds written bytes until then): false once the client
/// is gone.
async fn send(writer: &Writer, bytes: &[u8]) -> bool {
    let mut w = writer.lock().await;
    w.write_all(bytes).await.is_ok() && w.flush().await.is_ok()
}

/// The answer to a simple query other than `START_REPLICATION` (step 2 of the module docs).
fn answer(sql: &str) -> Vec<u8> {
    let slot_lsn = lsn_text(SLOT_LSN);
    if sql.starts_with("IDENTIFY_SYSTEM") {
        return one_row(
            &["systemid", "timeline", "xlogpos", "dbname"],
            &[SYSTEM_ID, "1", &slot_lsn, "fake"],
            "IDENTIFY_SYSTEM",
        );
    }
    if let Some(name) = sql.strip_prefix("SHOW ") {
        let name = name.trim().trim_end_matches(';').trim_matches('"');
        return match SETTINGS.iter().find(|(setting, _)| *setting == name) {
            Some((setting, value)) => one_row(&[setting], &[value], "SHOW"),
            None => error("the fake server has no such setting"),
        };
    }
    if sql.contains("pg_replication_slots") {
        return one_row(
            &[
                "slot_name",
                "slot_type",
                "plugin",
                "database",
                "confirmed_flush_lsn",
                "walstream_db",
                "walstream_server",
                "walstream_in_recovery",
            ],
            &[
                "fake",
                "logical",
                "pgoutput",
                "fake",
                &slot_lsn,
                "fake",
                "fake:5432",
                "f",
            ],
            "SELECT 1",
        );
    }
    error("the fake server does not know this")
}

/// RowDescription (every column text), one DataRow, CommandComplete and ReadyForQuery.
fn one_row(columns: &[&str], values: &[&str], tag: &str) -> Vec<u8> {
    let mut t = count(columns.len()).to_vec();
    for c in columns {
        t.extend_from_slice(c.as_bytes());
        t.push(0);
        t.extend_from_slice(&0u32.to_be_bytes()); // table
        t.extend_from_slice(&0u16.to_be_bytes()); // attnum
        t.extend_from_slice(&25u32.to_be_bytes()); // text
        t.extend_from_slice(&(-1i16).to_be_bytes()); // typlen
        t.extend_from_slice(&(-1i32).to_be_bytes()); // typmod
        t.extend_from_slice(&0u16.to_be_bytes()); // text format
    }
    let mut d = count(values.len()).to_vec();
    for v in values {
        d.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
        d.extend_from_slice(v.as_bytes());
    }
    let mut out = message(b'T', &t);
    out.extend(message(b'D', &d));
    out.extend(message(b'C', format!("{tag}\0").as_bytes()));
    out.extend(message(b'Z', b"I"));
    out
}

/// A column count: the fake's rows have a handful.
fn count(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes()
}

/// An ErrorResponse (SQLSTATE 42601, syntax error) and ReadyForQuery.
fn error(text: &str) -> Vec<u8> {
    let mut e = message(b'E', format!("SERROR\0C42601\0M{text}\0\0").as_bytes());
    e.extend(message(b'Z', b"I"));
    e
}

/// The flush position of a standby status update (`r`, then write, flush, apply, ...).
fn status_update_flush(body: &[u8]) -> Option<u64> {
    let rest = body.strip_prefix(b"r")?;
    let flush = rest.get(8..16)?;
    Some(u64::from_be_bytes(flush.try_into().ok()?))
}

/// An LSN as PostgreSQL writes it, `16/B374D848`.
fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some(u64::from(hi) << 32 | u64::from(lo))
}

fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip_through_text() {
        assert_eq!(lsn_text(SLOT_LSN), "0/1000000");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn(&lsn_text(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_lsn("\"slot\""), None);
        let sql = "START_REPLICATION SLOT \"slot\" LOGICAL 0/1000000 (\"proto_version\" '2')";
        assert_eq!(sql.split_whitespace().find_map(parse_lsn), Some(SLOT_LSN));
    }

    #[test]
    fn status_updates_give_their_flush_position() {
        let mut r = vec![b'r'];
        for lsn in [1u64, 2, 3] {
            r.extend_from_slice(&lsn.to_be_bytes());
        }
        r.extend_from_slice(&0i64.to_be_bytes());
        r.push(0);
        assert_eq!(status_update_flush(&r), Some(2));
        assert_eq!(status_update_flush(&r[..12]), None);
        assert_eq!(status_update_flush(b"h"), None);
    }

    #[test]
    fn messages_count_their_own_length() {
        assert_eq!(message(b'Z', b"I"), b"Z\0\0\0\x05I");
        assert_eq!(copy_data(b""), b"d\0\0\0\x04");
    }
}

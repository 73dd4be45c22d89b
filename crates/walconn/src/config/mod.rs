//! Connection settings as libpq takes them: URL and key=value conninfo, `PG*` environment
//! variables as defaults, and the password file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use conninfo::Raw;
use credentials::ProviderSlot;

mod builder;
pub(crate) mod conninfo;
pub(crate) mod credentials;

pub use builder::ConfigBuilder;
pub use credentials::{
    BoxError, PasswordFuture, PasswordProvider, PasswordProviderError, PasswordRequest,
};

/// The port PostgreSQL listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 5432;

/// How a connection negotiates TLS (`sslmode`), with libpq's meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plaintext first; TLS if the server insists (libpq: retry with TLS after a refusal).
    Allow,
    /// TLS if the server supports it, plaintext otherwise (the default).
    #[default]
    Prefer,
    /// TLS, without checking the server's certificate (unless a root certificate file is
    /// configured or exists at `~/.postgresql/root.crt`: then as [`VerifyCa`](Self::VerifyCa)).
    Require,
    /// TLS, and the server's certificate must chain to a trusted root.
    VerifyCa,
    /// As [`VerifyCa`](Self::VerifyCa), and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The mode named `s`, in libpq's spelling.
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(Error::config(format!("invalid sslmode value: \"{s}\""))),
        })
    }

    /// libpq's spelling of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where trusted root certificates come from (`sslrootcert`, or
/// [`ConfigBuilder::ssl_root_cert_pem`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslRootCert {
    /// A PEM file of one or more certificates.
    File(PathBuf),
    /// The platform's certificate store (`sslrootcert=system`); implies `verify-full` unless a
    /// stricter or explicit mode is set, as in libpq.
    System,
    /// One or more PEM certificates given in memory (checked when the configuration is
    /// built: at least one must parse).
    Pem(Vec<u8>),
}

/// How TLS is started (`sslnegotiation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslNegotiation {
    /// Ask with `SSLRequest`, then start TLS if the server agrees (the default; every server).
    #[default]
    Postgres,
    /// Start TLS at once, with ALPN `postgresql` (PostgreSQL 17+; saves a round trip). Needs
    /// `sslmode` require, verify-ca or verify-full, as in libpq.
    Direct,
}

impl SslNegotiation {
    /// The negotiation named `s`, in libpq's spelling.
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "postgres" => Self::Postgres,
            "direct" => Self::Direct,
            other => {
                return Err(Error::config(format!(
                    "invalid sslnegotiation value: \"{other}\""
                )))
            }
        })
    }
}

/// The encoding the server converts text to (`client_encoding`).
///
/// Everything above this crate reads UTF-8, so that is what the connection asks for unless told
/// otherwise. The one other choice is the explicit way to read an `SQL_ASCII` database whose
/// text is not UTF-8: with `SQL_ASCII` the server sends the bytes as stored, unconverted, where
/// with UTF8 it refuses a value it cannot convert (SQLSTATE 22021) and the stream cannot go on.
/// Names must still be UTF-8 to be parsed; text values arrive as bytes, and a value that is not
/// UTF-8 fails only where it is read as text (naming its column), never silently replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientEncoding {
    /// `UTF8` (the default; also `utf-8`, `unicode`, any case).
    #[default]
    Utf8,
    /// `SQL_ASCII`: the stored bytes, unconverted.
    SqlAscii,
}

impl ClientEncoding {
    /// The encoding named `s` (any case), as PostgreSQL spells its aliases.
    fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "utf8" | "utf-8" | "unicode" => Ok(Self::Utf8),
            "sql_ascii" => Ok(Self::SqlAscii),
            _ => Err(Error::config(format!(
                "client_encoding \"{s}\" is not supported: the stream reads UTF8, or SQL_ASCII \
                 for a database's unconverted bytes"
            ))),
        }
    }

    /// The name sent in the startup packet.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Utf8 => "UTF8",
            Self::SqlAscii => "SQL_ASCII",
        }
    }
}

/// Whether SCRAM channel binding is used (`channel_binding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ChannelBinding {
    /// Never use channel binding.
    Disable,
    /// Use it when the server offers SCRAM-SHA-256-PLUS over TLS (the default).
    #[default]
    Prefer,
    /// Refuse to authenticate without it.
    Require,
}

impl ChannelBinding {
    /// The policy named `s`, in libpq's spelling.
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "prefer" => Self::Prefer,
            "disable" => Self::Disable,
            "require" => Self::Require,
            other => {
                return Err(Error::config(format!(
                    "invalid channel_binding value: \"{other}\""
                )))
            }
        })
    }
}

/// What kind of replication connection to open (`replication`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Replication {
    /// `replication=database`: logical replication and SQL on one database (the default).
    #[default]
    Database,
    /// `replication=true`: physical replication, no database.
    Physical,
    /// No replication: an ordinary SQL session on the database (`replication=false`), for
    /// the work beside a stream (copying a snapshot's tables, say).
    Off,
}

impl Replication {
    /// The kind named `s`: `database`, or one of libpq's spellings of a boolean.
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "database" => Self::Database,
            "true" | "on" | "yes" | "1" => Self::Physical,
            "false" | "off" | "no" | "0" => Self::Off,
            other => {
                return Err(Error::config(format!(
                    "invalid replication value: \"{other}\" (\"database\", \"true\" or \"false\")"
                )))
            }
        })
    }
}

/// Which servers are acceptable (`target_session_attrs`), judged from the `in_hot_standby` and
/// `default_transaction_read_only` parameters that PostgreSQL 14+ reports at startup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TargetSessionAttrs {
    /// Any server.
    #[default]
    Any,
    /// A server that accepts writes by default.
    ReadWrite,
    /// A server that does not accept writes by default.
    ReadOnly,
    /// A server that is not in hot standby.
    Primary,
    /// A server in hot standby.
    Standby,
    /// A standby if one of the hosts is, otherwise any.
    PreferStandby,
}

impl TargetSessionAttrs {
    /// The attributes named `s`, in libpq's spelling.
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "any" => Self::Any,
            "read-write" => Self::ReadWrite,
            "read-only" => Self::ReadOnly,
            "primary" => Self::Primary,
            "standby" => Self::Standby,
            "prefer-standby" => Self::PreferStandby,
            _ => {
                return Err(Error::config(format!(
                    "invalid target_session_attrs value: \"{s}\""
                )))
            }
        })
    }
}

/// One host to try: a name or address for TCP, or a directory holding a Unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address.
    Tcp(String),
    /// A directory holding the socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

impl Host {
    /// A Unix socket directory if `s` is an absolute path, as in libpq; otherwise a TCP host.
    fn parse(s: &str) -> Host {
        if s.starts_with('/') {
            Host::Unix(PathBuf::from(s))
        } else {
            Host::Tcp(s.to_owned())
        }
    }

    /// The name libpq would show and look up in the password file: the host name, or for a
    /// Unix socket `localhost`.
    pub(crate) fn pgpass_name(&self) -> &str {
        match self {
            Host::Tcp(h) => h,
            Host::Unix(_) => "localhost",
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(d) => write!(f, "{}", d.display()),
        }
    }
}

/// A password or a private key: kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret<T = String>(pub(crate) T);

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

/// A client certificate chain and its private key, PEM in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientCertPem {
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Secret<Vec<u8>>,
}

/// Connection settings, parsed from a libpq conninfo with `PG*` environment variables as
/// defaults, or built in code with [`Config::builder`].
///
/// Two configurations are equal when every setting is, a [`PasswordProvider`] counting as
/// equal only to itself (the same `Arc`).
///
/// TLS uses the rustls crypto provider the application installed as the process default
/// ([`rustls::crypto::CryptoProvider::install_default`], aws-lc-rs for FIPS say), else the
/// built-in `ring` provider.
///
/// # Settings accepted but not honoured
///
/// These libpq settings (and their `PG*` variables) are accepted so that a conninfo written
/// for libpq parses, but walconn does not act on them. A value that asks for something other
/// than what walconn does anyway is logged with `tracing::warn!` (fields `key`, `value` and
/// `origin`: `conninfo` or the variable's name); libpq's defaults are not.
///
/// | setting (variable) | quiet for | what walconn does whatever the value |
/// | --- | --- | --- |
/// | `gssencmode` (`PGGSSENCMODE`) | `disable`, `prefer` | no GSSAPI encryption |
/// | `sslcompression` (`PGSSLCOMPRESSION`) | `0` | no TLS compression |
/// | `sslsni` (`PGSSLSNI`) | `1` | sends the host name (SNI) when it is a DNS name |
/// | `ssl_min_protocol_version` (`PGSSLMINPROTOCOLVERSION`) | `TLSv1` to `TLSv1.2` | offers TLS 1.2 and 1.3 |
/// | `ssl_max_protocol_version` (`PGSSLMAXPROTOCOLVERSION`) | empty, `TLSv1.3` | offers TLS 1.2 and 1.3 |
/// | `load_balance_hosts` (`PGLOADBALANCEHOSTS`) | `disable` | tries hosts in the order given |
///
/// Any other setting libpq does not know, or walconn does not read, is an error.
///
/// ```
/// let config = walconn::Config::parse_with_env(
///     "postgresql://app:s%40cret@db1,db2:5433/orders?sslmode=verify-full&connect_timeout=5",
///     |_| None,
/// )?;
/// assert_eq!(config.hosts().len(), 2);
/// assert_eq!(config.ports(), &[5432, 5433]); // a host without a port gets 5432
/// assert_eq!(config.dbname(), "orders");
/// assert!(!format!("{config:?}").contains("s@cret"));
/// # Ok::<(), walconn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub(crate) hosts: Vec<Host>,
    pub(crate) hostaddrs: Vec<String>,
    pub(crate) ports: Vec<u16>,
    pub(crate) user: String,
    pub(crate) password: Option<Secret>,
    pub(crate) passfile: Option<PathBuf>,
    pub(crate) dbname: String,
    pub(crate) application_name: Option<String>,
    pub(crate) options: Option<String>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) sslmode: SslMode,
    pub(crate) sslrootcert: Option<SslRootCert>,
    pub(crate) sslcert: Option<PathBuf>,
    pub(crate) sslkey: Option<PathBuf>,
    /// A client certificate and key given in memory; used instead of the files when set.
    pub(crate) client_cert_pem: Option<ClientCertPem>,
    pub(crate) channel_binding: ChannelBinding,
    pub(crate) sslnegotiation: SslNegotiation,
    /// `keepalives`: TCP keepalive on (the default) or off.
    pub(crate) keepalives: bool,
    /// `keepalives_idle`, `keepalives_interval`, `keepalives_count`: the kernel's defaults
    /// unless set.
    pub(crate) keepalives_idle: Option<Duration>,
    pub(crate) keepalives_interval: Option<Duration>,
    pub(crate) keepalives_count: Option<u32>,
    /// `tcp_user_timeout`: how long sent data may stay unacknowledged before the kernel
    /// drops the connection; the kernel's default unless set.
    pub(crate) tcp_user_timeout: Option<Duration>,
    /// `client_encoding`: UTF8 unless `SQL_ASCII` is asked for.
    pub(crate) client_encoding: ClientEncoding,
    pub(crate) replication: Replication,
    pub(crate) target_session_attrs: TargetSessionAttrs,
    /// Asked for the password at each connection when set, in place of `password` and the
    /// password file.
    pub(crate) password_provider: Option<ProviderSlot>,
}

impl Config {
    /// Parses a conninfo (URL or key=value), with the process's `PG*` environment variables as
    /// defaults for what it leaves out.
    pub fn parse(conninfo: &str) -> Result<Config> {
        Self::parse_with_env(conninfo, |name| std::env::var(name).ok())
    }

    /// Parses a conninfo with `env` standing in for the environment (`PGHOST`, `HOME`, `USER`,
    /// ...): for tests, and for callers that want no environment at all (`|_| None`).
    pub fn parse_with_env(
        conninfo: &str,
        mut env: impl FnMut(&str) -> Option<String>,
    ) -> Result<Config> {
        let mut raw = Raw::parse(conninfo)?;
        raw.env_defaults(&mut env);
        Self::from_raw(raw, &mut env)
    }

    /// Interprets the settings as given: each value parsed, libpq's defaults filled in, and
    /// the combinations libpq refuses refused.
    ///
    /// The steps run in this order because a conninfo with several faults reports the first
    /// one met, so reordering them would change which error a caller sees.
    fn from_raw(raw: Raw, env: &mut dyn FnMut(&str) -> Option<String>) -> Result<Config> {
        let home = env("HOME").map(PathBuf::from);
        let targets = Targets::from_raw(&raw)?;
        let identity = Identity::from_raw(&raw, env)?;
        let connect_timeout = connect_timeout(raw.connect_timeout.as_deref())?;
        let tls = Tls::from_raw(&raw, home.as_deref())?;
        let keepalives = Keepalives::from_raw(&raw)?;
        let tcp_user_timeout = tcp_user_timeout(raw.tcp_user_timeout.as_deref())?;
        let client_encoding =
            parse_or_default(raw.client_encoding.as_deref(), ClientEncoding::parse)?;
        let target_session_attrs = parse_or_default(
            raw.target_session_attrs.as_deref(),
            TargetSessionAttrs::parse,
        )?;
        Ok(Config {
            hosts: targets.hosts,
            hostaddrs: targets.hostaddrs,
            ports: targets.ports,
            user: identity.user,
            password: raw.password.map(Secret),
            passfile: passfile(raw.passfile.as_deref(), home.as_deref()),
            dbname: identity.dbname,
            application_name: raw.application_name.or(raw.fallback_application_name),
            options: raw.options.filter(|o| !o.is_empty()),
            connect_timeout,
            sslmode: tls.sslmode,
            sslrootcert: tls.sslrootcert,
            sslcert: tls.sslcert,
            sslkey: tls.sslkey,
            client_cert_pem: None,
            channel_binding: tls.channel_binding,
            sslnegotiation: tls.sslnegotiation,
            keepalives: keepalives.on,
            keepalives_idle: keepalives.idle,
            keepalives_interval: keepalives.interval,
            keepalives_count: keepalives.count,
            tcp_user_timeout,
            client_encoding,
            replication: identity.replication,
            target_session_attrs,
            password_provider: None,
        })
    }

    /// A configuration built in code rather than parsed: see [`ConfigBuilder`]. Nothing is
    /// read from the environment.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The hosts to try, in order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The ports: one for all hosts, or one per host.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether a password was given (in the conninfo or `PGPASSWORD`); the password file is
    /// read only when connecting.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// Whether a [`PasswordProvider`] is set.
    pub fn has_password_provider(&self) -> bool {
        self.password_provider.is_some()
    }

    /// The database name (for `replication=database`).
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// `application_name`, if set.
    pub fn application_name(&self) -> Option<&str> {
        self.application_name.as_deref()
    }

    /// `options`: command-line options sent to the server, if set. The settings
    /// [`Connection::connect`](crate::Connection::connect) pins win over the same settings
    /// given here.
    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }

    /// The time limit for each connection attempt, if any.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// `client_encoding`: what the server converts text to (see [`ClientEncoding`]).
    pub fn client_encoding(&self) -> ClientEncoding {
        self.client_encoding
    }

    /// `tcp_user_timeout`: how long data sent over TCP may stay unacknowledged before the
    /// kernel gives up on the connection, if set (libpq's milliseconds; zero or less is the
    /// kernel's default, as unset). Applied on Linux and Android, where the socket option
    /// exists; elsewhere it is accepted and has no effect, as in libpq.
    pub fn tcp_user_timeout(&self) -> Option<Duration> {
        self.tcp_user_timeout
    }

    /// The TLS mode.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// The trusted roots, if configured (or found at `~/.postgresql/root.crt`).
    pub fn sslrootcert(&self) -> Option<&SslRootCert> {
        self.sslrootcert.as_ref()
    }

    /// The client certificate file, if any.
    pub fn sslcert(&self) -> Option<&Path> {
        self.sslcert.as_deref()
    }

    /// The client key file, if any.
    pub fn sslkey(&self) -> Option<&Path> {
        self.sslkey.as_deref()
    }

    /// Whether a client certificate and key were given in memory
    /// ([`ConfigBuilder::ssl_client_cert_pem`]); they are used instead of the files.
    pub fn has_client_cert_pem(&self) -> bool {
        self.client_cert_pem.is_some()
    }

    /// The channel binding policy.
    pub fn channel_binding(&self) -> ChannelBinding {
        self.channel_binding
    }

    /// How TLS is started.
    pub fn sslnegotiation(&self) -> SslNegotiation {
        self.sslnegotiation
    }

    /// The kind of replication connection.
    pub fn replication(&self) -> Replication {
        self.replication
    }

    /// The acceptable kinds of server.
    pub fn target_session_attrs(&self) -> TargetSessionAttrs {
        self.target_session_attrs
    }

    /// Sets the password (for example from a secret store), replacing any from the conninfo.
    pub fn set_password(&mut self, password: impl Into<String>) -> &mut Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// Sets a [`PasswordProvider`], asked for the password whenever a server requests one
    /// (each connection and reconnect), over any password of the conninfo, `PGPASSWORD` or
    /// the password file.
    pub fn set_password_provider(&mut self, provider: Arc<dyn PasswordProvider>) -> &mut Self {
        self.password_provider = Some(ProviderSlot(provider));
        self
    }

    /// Sets the replication mode (the library asks for `replication=database` by default).
    pub fn set_replication(&mut self, replication: Replication) -> &mut Self {
        self.replication = replication;
        self
    }

    /// Sets `application_name`.
    pub fn set_application_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.application_name = Some(name.into());
        self
    }

    /// The (host, hostaddr, port) triples to try, in order.
    pub(crate) fn targets(&self) -> Vec<(Host, Option<String>, u16)> {
        let n = self.hosts.len().max(self.hostaddrs.len());
        (0..n)
            .map(|i| {
                let addr = self.hostaddrs.get(i).cloned();
                let host = match (self.hosts.get(i), &addr) {
                    (Some(h), _) if self.hosts.len() == n => h.clone(),
                    (_, Some(a)) => Host::Tcp(a.clone()),
                    (Some(h), None) => h.clone(),
                    (None, None) => default_host(),
                };
                let port = if self.ports.len() == 1 {
                    self.ports.first().copied()
                } else {
                    self.ports.get(i).copied()
                };
                (host, addr, port.unwrap_or(DEFAULT_PORT))
            })
            .collect()
    }
}

impl std::str::FromStr for Config {
    type Err = Error;

    fn from_str(s: &str) -> Result<Config> {
        Config::parse(s)
    }
}

/// libpq's shortest `connect_timeout`: it raises one second to two, because a limit counted
/// in whole seconds could otherwise expire almost at once.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where to connect: the `host`, `hostaddr` and `port` lists, checked to pair up the way
/// [`Config::targets`] pairs them.
struct Targets {
    hosts: Vec<Host>,
    hostaddrs: Vec<String>,
    ports: Vec<u16>,
}

impl Targets {
    /// Reads the three comma-separated lists and refuses lengths that cannot be paired.
    fn from_raw(raw: &Raw) -> Result<Targets> {
        let hosts = host_list(raw.host.as_deref());
        let hostaddrs: Vec<String> = match raw.hostaddr.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => list.split(',').map(str::to_owned).collect(),
        };
        let ports = port_list(raw.port.as_deref())?;
        check_targets(&hosts, raw.host.is_some(), &hostaddrs, &ports)?;
        Ok(Targets {
            hosts,
            hostaddrs,
            ports,
        })
    }
}

/// Refuses `host`, `hostaddr` and `port` lists of lengths that cannot be paired
/// (`hosts_given`: the host list was given, not defaulted).
fn check_targets(
    hosts: &[Host],
    hosts_given: bool,
    hostaddrs: &[String],
    ports: &[u16],
) -> Result<()> {
    // Each address belongs to the host name in the same position, so when both lists are
    // given they must be equally long; an address list alone brings its own hosts.
    if !hostaddrs.is_empty() && hosts_given && hostaddrs.len() != hosts.len() {
        return Err(Error::config(format!(
            "could not match {} host names to {} hostaddr values",
            hosts.len(),
            hostaddrs.len()
        )));
    }
    let host_count = hosts.len().max(hostaddrs.len());
    // One port serves every host; more than one must give each host its own.
    if ports.len() != 1 && ports.len() != host_count {
        return Err(Error::config(format!(
            "could not match {} port numbers to {host_count} hosts",
            ports.len()
        )));
    }
    Ok(())
}

/// The `host` list; an empty list or entry is the default socket directory, as in libpq.
fn host_list(value: Option<&str>) -> Vec<Host> {
    match value {
        None | Some("") => vec![default_host()],
        Some(list) => list
            .split(',')
            .map(|h| {
                if h.is_empty() {
                    default_host()
                } else {
                    Host::parse(h)
                }
            })
            .collect(),
    }
}

/// The `port` list; an empty list or entry is [`DEFAULT_PORT`], as in libpq.
fn port_list(value: Option<&str>) -> Result<Vec<u16>> {
    match value {
        None | Some("") => Ok(vec![DEFAULT_PORT]),
        Some(list) => list
            .split(',')
            .map(|p| {
                if p.is_empty() {
                    Ok(DEFAULT_PORT)
                } else {
                    p.trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| Error::config(format!("invalid port number: \"{p}\"")))
                }
            })
            .collect(),
    }
}

/// Who connects, to which database, in which kind of session.
struct Identity {
    user: String,
    dbname: String,
    replication: Replication,
}

impl Identity {
    /// Reads `user` (else the operating-system user from `USER`, then `LOGNAME`),
    /// `replication`, and `dbname` (else the user name), with libpq's defaults.
    fn from_raw(raw: &Raw, env: &mut dyn FnMut(&str) -> Option<String>) -> Result<Identity> {
        let user = match raw.user.as_deref().filter(|u| !u.is_empty()) {
            Some(u) => u.to_owned(),
            None => env("USER")
                .or_else(|| env("LOGNAME"))
                .ok_or_else(|| Error::config("no user name given and none found in USER"))?,
        };
        let replication = parse_or_default(raw.replication.as_deref(), Replication::parse)?;
        let dbname = raw
            .dbname
            .as_deref()
            .filter(|d| !d.is_empty())
            .map_or_else(|| user.clone(), str::to_owned);
        Ok(Identity {
            user,
            dbname,
            replication,
        })
    }
}

/// How TLS is started and checked, and the files it uses.
struct Tls {
    sslmode: SslMode,
    sslrootcert: Option<SslRootCert>,
    sslcert: Option<PathBuf>,
    sslkey: Option<PathBuf>,
    channel_binding: ChannelBinding,
    sslnegotiation: SslNegotiation,
}

impl Tls {
    /// Reads the TLS settings and refuses the combinations libpq refuses. A client
    /// certificate, key or root certificate not given is taken from `~/.postgresql` if the
    /// file is there, as libpq does.
    fn from_raw(raw: &Raw, home: Option<&Path>) -> Result<Tls> {
        let sslrootcert = match raw.sslrootcert.as_deref() {
            None | Some("") => None,
            Some("system") => Some(SslRootCert::System),
            Some(path) => Some(SslRootCert::File(PathBuf::from(path))),
        };
        let sslmode = sslmode(raw, sslrootcert.as_ref())?;
        let channel_binding = channel_binding(raw, sslmode)?;
        let sslnegotiation = sslnegotiation(raw, sslmode)?;
        crate::tls::check_config(sslmode, channel_binding, sslrootcert.as_ref(), None)?;
        let dot_pg = home.map(|h| h.join(".postgresql"));
        let in_dot_pg = |name: &str| existing(dot_pg.as_ref().map(|d| d.join(name)));
        Ok(Tls {
            sslmode,
            sslcert: given_path(raw.sslcert.as_deref()).or_else(|| in_dot_pg("postgresql.crt")),
            sslkey: given_path(raw.sslkey.as_deref()).or_else(|| in_dot_pg("postgresql.key")),
            sslrootcert: sslrootcert.or_else(|| in_dot_pg("root.crt").map(SslRootCert::File)),
            channel_binding,
            sslnegotiation,
        })
    }
}

/// `sslmode`, with libpq's default, refused if too weak for `sslrootcert=system`.
fn sslmode(raw: &Raw, sslrootcert: Option<&SslRootCert>) -> Result<SslMode> {
    let sslmode = match raw.sslmode.as_deref() {
        Some(m) => SslMode::parse(m)?,
        None => default_sslmode(sslrootcert),
    };
    check_root_mode(sslrootcert, sslmode)?;
    Ok(sslmode)
}

/// libpq's `sslmode` when none is given: `verify-full` with `sslrootcert=system`, else
/// `prefer`.
fn default_sslmode(sslrootcert: Option<&SslRootCert>) -> SslMode {
    if sslrootcert == Some(&SslRootCert::System) {
        SslMode::VerifyFull
    } else {
        SslMode::Prefer
    }
}

/// Refuses an `sslmode` too weak for `sslrootcert=system`.
fn check_root_mode(sslrootcert: Option<&SslRootCert>, sslmode: SslMode) -> Result<()> {
    // libpq: the system store trusts every public authority, and those certify a name for
    // whoever owns it, so a mode that does not check the host name would accept anyone's.
    if sslrootcert == Some(&SslRootCert::System)
        && !matches!(sslmode, SslMode::VerifyFull | SslMode::Disable)
    {
        return Err(Error::config(format!(
            "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
            sslmode.as_str()
        )));
    }
    Ok(())
}

/// `channel_binding`, refused as `require` when `sslmode` rules out TLS.
fn channel_binding(raw: &Raw, sslmode: SslMode) -> Result<ChannelBinding> {
    let channel_binding = parse_or_default(raw.channel_binding.as_deref(), ChannelBinding::parse)?;
    check_channel_binding(channel_binding, sslmode)?;
    Ok(channel_binding)
}

/// Refuses `channel_binding=require` when `sslmode` rules out TLS: there would be no channel
/// to bind to.
fn check_channel_binding(channel_binding: ChannelBinding, sslmode: SslMode) -> Result<()> {
    if channel_binding == ChannelBinding::Require && sslmode == SslMode::Disable {
        return Err(Error::config(
            "channel_binding=require needs TLS, but sslmode is disable",
        ));
    }
    Ok(())
}

/// `sslnegotiation`, refused as `direct` with an `sslmode` that allows plaintext.
fn sslnegotiation(raw: &Raw, sslmode: SslMode) -> Result<SslNegotiation> {
    let sslnegotiation = parse_or_default(raw.sslnegotiation.as_deref(), SslNegotiation::parse)?;
    check_negotiation(sslnegotiation, sslmode)?;
    Ok(sslnegotiation)
}

/// Refuses `sslnegotiation=direct` with an `sslmode` that allows plaintext.
fn check_negotiation(sslnegotiation: SslNegotiation, sslmode: SslMode) -> Result<()> {
    // libpq: direct TLS leaves no plaintext fallback, so a mode that allows one is refused.
    if sslnegotiation == SslNegotiation::Direct
        && !matches!(
            sslmode,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    {
        return Err(Error::config(format!(
            "weak sslmode \"{}\" may not be used with sslnegotiation=direct (use \
             \"require\", \"verify-ca\", or \"verify-full\")",
            sslmode.as_str()
        )));
    }
    Ok(())
}

/// TCP keepalive: whether it is on, and the kernel's timers where they are set.
struct Keepalives {
    on: bool,
    idle: Option<Duration>,
    interval: Option<Duration>,
    count: Option<u32>,
}

impl Keepalives {
    /// Reads `keepalives`, `keepalives_idle`, `keepalives_interval` and `keepalives_count`.
    fn from_raw(raw: &Raw) -> Result<Keepalives> {
        // libpq: keepalives=0 turns them off, any other integer leaves them on; the timers
        // are seconds, and zero means the kernel's default.
        let on = parse_int(raw.keepalives.as_deref(), "keepalives")?.is_none_or(|k| k != 0);
        let idle = positive_seconds(parse_int(
            raw.keepalives_idle.as_deref(),
            "keepalives_idle",
        )?);
        let interval = positive_seconds(parse_int(
            raw.keepalives_interval.as_deref(),
            "keepalives_interval",
        )?);
        let count = parse_int(raw.keepalives_count.as_deref(), "keepalives_count")?
            .and_then(|c| u32::try_from(c).ok())
            .filter(|&c| c > 0);
        Ok(Keepalives {
            on,
            idle,
            interval,
            count,
        })
    }
}

/// `connect_timeout` in seconds, if set.
fn connect_timeout(value: Option<&str>) -> Result<Option<Duration>> {
    // libpq: an empty value is unset, and zero or negative means wait forever.
    let secs = parse_int(value.filter(|t| !t.is_empty()), "connect_timeout")?;
    Ok(positive_seconds(secs).map(|t| t.max(MIN_CONNECT_TIMEOUT)))
}

/// `tcp_user_timeout` in milliseconds, if positive.
fn tcp_user_timeout(value: Option<&str>) -> Result<Option<Duration>> {
    // libpq: zero or less leaves the kernel's default, which is what not setting it does.
    let millis = parse_int(value, "tcp_user_timeout")?;
    Ok(millis
        .and_then(|m| u64::try_from(m).ok())
        .filter(|&m| m > 0)
        .map(Duration::from_millis))
}

/// `passfile`, else `~/.pgpass`; whether it exists matters only when connecting, which is
/// when it is read.
fn passfile(value: Option<&str>, home: Option<&Path>) -> Option<PathBuf> {
    given_path(value).or_else(|| home.map(|h| h.join(".pgpass")))
}

/// A path setting, if given and not empty.
fn given_path(value: Option<&str>) -> Option<PathBuf> {
    value.filter(|s| !s.is_empty()).map(PathBuf::from)
}

/// A keyword setting parsed by `parse`, or the type's default (which is libpq's) if not given.
fn parse_or_default<T: Default>(value: Option<&str>, parse: fn(&str) -> Result<T>) -> Result<T> {
    value.map(parse).transpose().map(Option::unwrap_or_default)
}

/// A number of seconds, if positive: for the settings where zero or less means "no limit"
/// or "the kernel's default".
fn positive_seconds(secs: Option<i64>) -> Option<Duration> {
    secs.and_then(|s| u64::try_from(s).ok())
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
}

/// `path`, if there is a file (or directory) at it.
fn existing(path: Option<PathBuf>) -> Option<PathBuf> {
    path.filter(|p| p.exists())
}

/// An integer setting, if given.
fn parse_int(value: Option<&str>, key: &str) -> Result<Option<i64>> {
    value
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| Error::config(format!("invalid integer value \"{v}\" for {key}")))
        })
        .transpose()
}

/// libpq's default: the Unix socket directory (Debian's, else the upstream `/tmp`).
fn default_host() -> Host {
    let debian = Path::new("/var/run/postgresql");
    if debian.is_dir() {
        Host::Unix(debian.to_path_buf())
    } else {
        Host::Unix(PathBuf::from("/tmp"))
    }
}

#[cfg(test)]
mod tests;

//! Connection settings as libpq takes them: URL and key=value conninfo, `PG*` environment
//! variables as defaults, and the password file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

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
}

/// Where trusted root certificates come from (`sslrootcert`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SslRootCert {
    /// A PEM file of one or more certificates.
    File(PathBuf),
    /// The platform's certificate store (`sslrootcert=system`); implies `verify-full` unless a
    /// stricter or explicit mode is set, as in libpq.
    System,
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

/// A password: kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

/// Connection settings, parsed from a libpq conninfo with `PG*` environment variables as
/// defaults.
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
#[derive(Clone, Debug)]
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
    pub(crate) channel_binding: ChannelBinding,
    pub(crate) sslnegotiation: SslNegotiation,
    /// `keepalives`: TCP keepalive on (the default) or off.
    pub(crate) keepalives: bool,
    /// `keepalives_idle`, `keepalives_interval`, `keepalives_count`: the kernel's defaults
    /// unless set.
    pub(crate) keepalives_idle: Option<Duration>,
    pub(crate) keepalives_interval: Option<Duration>,
    pub(crate) keepalives_count: Option<u32>,
    pub(crate) replication: Replication,
    pub(crate) target_session_attrs: TargetSessionAttrs,
}

/// The settings as given, before defaults are filled in.
#[derive(Default)]
struct Raw {
    host: Option<String>,
    hostaddr: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    passfile: Option<String>,
    dbname: Option<String>,
    application_name: Option<String>,
    fallback_application_name: Option<String>,
    options: Option<String>,
    connect_timeout: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    channel_binding: Option<String>,
    replication: Option<String>,
    target_session_attrs: Option<String>,
    sslnegotiation: Option<String>,
    keepalives: Option<String>,
    keepalives_idle: Option<String>,
    keepalives_interval: Option<String>,
    keepalives_count: Option<String>,
}

/// Settings libpq knows that this crate accepts and ignores: they tune what it does not do
/// (GSSAPI is not supported, the TLS versions are rustls' safe defaults).
const IGNORED_KEYS: &[&str] = &[
    "tcp_user_timeout",
    "gssencmode",
    "sslcompression",
    "sslsni",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "client_encoding",
    "load_balance_hosts",
];

impl Raw {
    fn set(&mut self, key: &str, value: String) -> Result<()> {
        let slot = match key {
            "host" => &mut self.host,
            "hostaddr" => &mut self.hostaddr,
            "port" => &mut self.port,
            "user" => &mut self.user,
            "password" => &mut self.password,
            "passfile" => &mut self.passfile,
            "dbname" => &mut self.dbname,
            "application_name" => &mut self.application_name,
            "fallback_application_name" => &mut self.fallback_application_name,
            "options" => &mut self.options,
            "connect_timeout" => &mut self.connect_timeout,
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "channel_binding" => &mut self.channel_binding,
            "replication" => &mut self.replication,
            "target_session_attrs" => &mut self.target_session_attrs,
            "sslnegotiation" => &mut self.sslnegotiation,
            "keepalives" => &mut self.keepalives,
            "keepalives_idle" => &mut self.keepalives_idle,
            "keepalives_interval" => &mut self.keepalives_interval,
            "keepalives_count" => &mut self.keepalives_count,
            k if IGNORED_KEYS.contains(&k) => return Ok(()),
            k => return Err(Error::config(format!("invalid connection option \"{k}\""))),
        };
        *slot = Some(value);
        Ok(())
    }

    fn env_defaults(&mut self, env: &mut dyn FnMut(&str) -> Option<String>) {
        let pairs: [(&mut Option<String>, &str); 17] = [
            (&mut self.host, "PGHOST"),
            (&mut self.hostaddr, "PGHOSTADDR"),
            (&mut self.port, "PGPORT"),
            (&mut self.user, "PGUSER"),
            (&mut self.password, "PGPASSWORD"),
            (&mut self.passfile, "PGPASSFILE"),
            (&mut self.dbname, "PGDATABASE"),
            (&mut self.application_name, "PGAPPNAME"),
            (&mut self.options, "PGOPTIONS"),
            (&mut self.connect_timeout, "PGCONNECT_TIMEOUT"),
            (&mut self.sslmode, "PGSSLMODE"),
            (&mut self.sslrootcert, "PGSSLROOTCERT"),
            (&mut self.sslcert, "PGSSLCERT"),
            (&mut self.sslkey, "PGSSLKEY"),
            (&mut self.channel_binding, "PGCHANNELBINDING"),
            (&mut self.target_session_attrs, "PGTARGETSESSIONATTRS"),
            (&mut self.sslnegotiation, "PGSSLNEGOTIATION"),
        ];
        for (slot, var) in pairs {
            if slot.is_none() {
                *slot = env(var).filter(|v| !v.is_empty());
            }
        }
    }
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
        let mut raw = Raw::default();
        let trimmed = conninfo.trim_start();
        if trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://") {
            parse_url(trimmed, &mut raw)?;
        } else {
            parse_key_value(conninfo, &mut raw)?;
        }
        raw.env_defaults(&mut env);
        Self::from_raw(raw, &mut env)
    }

    fn from_raw(raw: Raw, env: &mut dyn FnMut(&str) -> Option<String>) -> Result<Config> {
        let home = env("HOME").map(PathBuf::from);
        let hosts: Vec<Host> = match raw.host.as_deref() {
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
        };
        let hostaddrs: Vec<String> = match raw.hostaddr.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => list.split(',').map(str::to_owned).collect(),
        };
        if !hostaddrs.is_empty() && raw.host.is_some() && hostaddrs.len() != hosts.len() {
            return Err(Error::config(format!(
                "could not match {} host names to {} hostaddr values",
                hosts.len(),
                hostaddrs.len()
            )));
        }
        let host_count = hosts.len().max(hostaddrs.len());
        let ports: Vec<u16> = match raw.port.as_deref() {
            None | Some("") => vec![DEFAULT_PORT],
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
                .collect::<Result<_>>()?,
        };
        if ports.len() != 1 && ports.len() != host_count {
            return Err(Error::config(format!(
                "could not match {} port numbers to {host_count} hosts",
                ports.len()
            )));
        }
        let user = match raw.user.filter(|u| !u.is_empty()) {
            Some(u) => u,
            None => env("USER")
                .or_else(|| env("LOGNAME"))
                .ok_or_else(|| Error::config("no user name given and none found in USER"))?,
        };
        let replication = match raw.replication.as_deref() {
            None | Some("database") => Replication::Database,
            Some("true" | "on" | "yes" | "1") => Replication::Physical,
            Some("false" | "off" | "no" | "0") => Replication::Off,
            Some(other) => {
                return Err(Error::config(format!(
                    "invalid replication value: \"{other}\" (\"database\", \"true\" or \"false\")"
                )))
            }
        };
        let dbname = raw
            .dbname
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());
        let connect_timeout = match raw.connect_timeout.as_deref() {
            None | Some("") => None,
            Some(t) => {
                let secs: i64 = t.trim().parse().map_err(|_| {
                    Error::config(format!("invalid integer value \"{t}\" for connect_timeout"))
                })?;
                // libpq: zero or negative means wait forever, and 1 is raised to 2.
                match u64::try_from(secs) {
                    Ok(0) | Err(_) => None,
                    Ok(s) => Some(Duration::from_secs(s.max(2))),
                }
            }
        };
        let sslrootcert = match raw.sslrootcert.as_deref() {
            None | Some("") => None,
            Some("system") => Some(SslRootCert::System),
            Some(path) => Some(SslRootCert::File(PathBuf::from(path))),
        };
        let sslmode = match raw.sslmode.as_deref() {
            Some(m) => SslMode::parse(m)?,
            // libpq: sslrootcert=system without an explicit mode means verify-full.
            None if sslrootcert == Some(SslRootCert::System) => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if sslrootcert == Some(SslRootCert::System)
            && !matches!(sslmode, SslMode::VerifyFull | SslMode::Disable)
        {
            return Err(Error::config(format!(
                "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                raw.sslmode.as_deref().unwrap_or("prefer")
            )));
        }
        let channel_binding = match raw.channel_binding.as_deref() {
            None | Some("prefer") => ChannelBinding::Prefer,
            Some("disable") => ChannelBinding::Disable,
            Some("require") => ChannelBinding::Require,
            Some(other) => {
                return Err(Error::config(format!(
                    "invalid channel_binding value: \"{other}\""
                )))
            }
        };
        if channel_binding == ChannelBinding::Require && sslmode == SslMode::Disable {
            return Err(Error::config(
                "channel_binding=require needs TLS, but sslmode is disable",
            ));
        }
        let sslnegotiation = match raw.sslnegotiation.as_deref() {
            None | Some("postgres") => SslNegotiation::Postgres,
            Some("direct") => SslNegotiation::Direct,
            Some(other) => {
                return Err(Error::config(format!(
                    "invalid sslnegotiation value: \"{other}\""
                )))
            }
        };
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
                raw.sslmode.as_deref().unwrap_or("prefer")
            )));
        }
        // libpq: keepalives=0 turns them off, any other integer leaves them on; the timers
        // are seconds, and zero means the kernel's default.
        let keepalives = parse_int(raw.keepalives.as_deref(), "keepalives")?.is_none_or(|k| k != 0);
        let seconds = |v: Option<i64>| {
            v.and_then(|s| u64::try_from(s).ok())
                .filter(|&s| s > 0)
                .map(Duration::from_secs)
        };
        let keepalives_idle = seconds(parse_int(
            raw.keepalives_idle.as_deref(),
            "keepalives_idle",
        )?);
        let keepalives_interval = seconds(parse_int(
            raw.keepalives_interval.as_deref(),
            "keepalives_interval",
        )?);
        let keepalives_count = parse_int(raw.keepalives_count.as_deref(), "keepalives_count")?
            .and_then(|c| u32::try_from(c).ok())
            .filter(|&c| c > 0);
        let target_session_attrs = match raw.target_session_attrs.as_deref() {
            None => TargetSessionAttrs::Any,
            Some(t) => TargetSessionAttrs::parse(t)?,
        };
        let dot_pg = home.as_ref().map(|h| h.join(".postgresql"));
        let sslcert = raw
            .sslcert
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| existing(dot_pg.as_ref().map(|d| d.join("postgresql.crt"))));
        let sslkey = raw
            .sslkey
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| existing(dot_pg.as_ref().map(|d| d.join("postgresql.key"))));
        let sslrootcert = sslrootcert
            .or_else(|| existing(dot_pg.map(|d| d.join("root.crt"))).map(SslRootCert::File));
        let passfile = raw
            .passfile
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(".pgpass")));
        Ok(Config {
            hosts,
            hostaddrs,
            ports,
            user,
            password: raw.password.map(Secret),
            passfile,
            dbname,
            application_name: raw.application_name.or(raw.fallback_application_name),
            options: raw.options.filter(|o| !o.is_empty()),
            connect_timeout,
            sslmode,
            sslrootcert,
            sslcert,
            sslkey,
            channel_binding,
            sslnegotiation,
            keepalives,
            keepalives_idle,
            keepalives_interval,
            keepalives_count,
            replication,
            target_session_attrs,
        })
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

    /// The database name (for `replication=database`).
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// `application_name`, if set.
    pub fn application_name(&self) -> Option<&str> {
        self.application_name.as_deref()
    }

    /// `options`: command-line options sent to the server, if set.
    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }

    /// The time limit for each connection attempt, if any.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
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

/// Parses `key=value key2='quoted \' value'` into `raw`.
fn parse_key_value(s: &str, raw: &mut Raw) -> Result<()> {
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(());
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|&c| c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(Error::config(format!(
                "missing \"=\" after \"{key}\" in connection info string"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(Error::config(
                            "unterminated quoted string in connection info string",
                        ))
                    }
                    Some('\'') => break,
                    Some('\\') => {
                        if let Some(c) = chars.next() {
                            value.push(c);
                        }
                    }
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        raw.set(&key, value)?;
    }
}

/// Parses `postgresql://[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`.
fn parse_url(s: &str, raw: &mut Raw) -> Result<()> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .unwrap_or(s);
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            raw.user = Some(percent_decode(user)?);
        }
        if let Some(p) = password {
            raw.password = Some(percent_decode(p)?);
        }
    }
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for spec in hostlist.split(',') {
            let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
                let (addr, after) = v6.split_once(']').ok_or_else(|| {
                    Error::config(format!("missing \"]\" in URL host \"{spec}\""))
                })?;
                (addr.to_owned(), after.strip_prefix(':'))
            } else {
                match spec.split_once(':') {
                    Some((h, p)) => (percent_decode(h)?, Some(p)),
                    None => (percent_decode(spec)?, None),
                }
            };
            hosts.push(host);
            ports.push(port.map(percent_decode).transpose()?.unwrap_or_default());
        }
        raw.host = Some(hosts.join(","));
        if ports.iter().any(|p| !p.is_empty()) {
            raw.port = Some(ports.join(","));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        raw.dbname = Some(percent_decode(db)?);
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| Error::config(format!("missing \"=\" in URL parameter \"{pair}\"")))?;
        let k = percent_decode(k)?;
        // libpq's URL aliases for JDBC-style parameters.
        let k = match k.as_str() {
            "ssl" if v == "true" => {
                raw.sslmode.get_or_insert_with(|| "require".to_owned());
                continue;
            }
            other => other.to_owned(),
        };
        raw.set(&k, percent_decode(v)?)?;
    }
    Ok(())
}

/// Decodes `%XX` escapes (UTF-8 required after decoding).
fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::config(
                        "invalid percent-encoded token in URL (\"%\" needs two hex digits)",
                    )
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::config("percent-decoded URL component is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    fn parse(s: &str) -> Config {
        Config::parse_with_env(s, |v| (v == "USER").then(|| "osuser".to_owned())).unwrap()
    }

    fn err(s: &str) -> String {
        Config::parse_with_env(s, |v| (v == "USER").then(|| "x".to_owned()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn key_value_with_quotes_and_escapes() {
        let c = parse(
            r"host=db port = 5433 user='it\'s' dbname='my db' password='a\'b\\c' application_name=x\ y",
        );
        assert_eq!(c.hosts, vec![Host::Tcp("db".into())]);
        assert_eq!(c.ports, vec![5433]);
        assert_eq!(c.user, "it's");
        assert_eq!(c.dbname, "my db");
        assert_eq!(c.password, Some(Secret(r"a'b\c".into())));
        assert_eq!(c.application_name.as_deref(), Some("x y"));
    }

    #[test]
    fn url_with_percent_decoding_and_multiple_hosts() {
        let c = parse("postgresql://us%40er:p%3Ass@h1:5433,[::1]:5434,%2Fvar%2Frun/d%20b?application_name=a%26b&sslmode=require&replication=true");
        assert_eq!(c.user, "us@er");
        assert_eq!(c.password, Some(Secret("p:ss".into())));
        assert_eq!(
            c.hosts,
            vec![
                Host::Tcp("h1".into()),
                Host::Tcp("::1".into()),
                Host::Unix("/var/run".into())
            ]
        );
        assert_eq!(c.ports, vec![5433, 5434, 5432]);
        assert_eq!(c.dbname, "d b");
        assert_eq!(c.application_name.as_deref(), Some("a&b"));
        assert_eq!(c.sslmode, SslMode::Require);
        assert_eq!(c.replication, Replication::Physical);
    }

    #[test]
    fn url_host_in_query_and_empty_authority() {
        let c = parse("postgres:///mydb?host=/tmp/sock&port=6000");
        assert_eq!(c.hosts, vec![Host::Unix("/tmp/sock".into())]);
        assert_eq!(c.ports, vec![6000]);
        assert_eq!(c.dbname, "mydb");
        assert_eq!(c.user, "osuser");
    }

    #[test]
    fn environment_fills_what_the_string_leaves_out() {
        let env = |v: &str| match v {
            "PGHOST" => Some("envhost".to_owned()),
            "PGPORT" => Some("7000".to_owned()),
            "PGUSER" => Some("envuser".to_owned()),
            "PGSSLMODE" => Some("verify-ca".to_owned()),
            "PGCONNECT_TIMEOUT" => Some("1".to_owned()),
            _ => None,
        };
        let c = Config::parse_with_env("dbname=x port=7001", env).unwrap();
        assert_eq!(c.hosts, vec![Host::Tcp("envhost".into())]);
        assert_eq!(c.ports, vec![7001]);
        assert_eq!(c.user, "envuser");
        assert_eq!(c.sslmode, SslMode::VerifyCa);
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.dbname, "x");
    }

    #[test]
    fn defaults() {
        let c = parse("");
        assert_eq!(c.user, "osuser");
        assert_eq!(c.dbname, "osuser");
        assert_eq!(c.ports, vec![5432]);
        assert!(matches!(c.hosts[..], [Host::Unix(_)]));
        assert_eq!(c.sslmode, SslMode::Prefer);
        assert_eq!(c.replication, Replication::Database);
        assert_eq!(
            parse("host=h replication=false").replication,
            Replication::Off
        );
        assert_eq!(c.connect_timeout, None);
    }

    #[test]
    fn sslrootcert_system_implies_verify_full() {
        let c = parse("host=h sslrootcert=system");
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(c.sslrootcert, Some(SslRootCert::System));
        assert!(err("host=h sslrootcert=system sslmode=require").contains("weak sslmode"));
    }

    #[test]
    fn invalid_values_are_named() {
        assert!(err("sslmode=maybe").contains("sslmode"));
        assert!(err("port=70000").contains("port"));
        assert!(err("bogus=1").contains("bogus"));
        assert!(err("host=a,b,c port=1,2").contains("could not match"));
        assert!(err("host").contains("missing \"=\""));
        assert!(err("host='abc").contains("unterminated"));
        assert!(err("postgresql://h/%zz").contains("percent"));
        assert!(err("replication=maybe").contains("replication"));
        assert!(err("channel_binding=require sslmode=disable").contains("needs TLS"));
        assert!(err("target_session_attrs=whatever").contains("target_session_attrs"));
    }

    #[test]
    fn passwords_stay_out_of_debug_and_errors() {
        let c = parse("password=hunter2 host=h");
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = err("password=hunter2 sslmode=bogus");
        assert!(!e.contains("hunter2"), "{e}");
        let c = parse("postgresql://u:hunter2@h/db");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn targets_pair_hosts_ports_and_hostaddrs() {
        let c = parse("host=a,b port=1,2 hostaddr=10.0.0.1,10.0.0.2");
        let t = c.targets();
        assert_eq!(t[1], (Host::Tcp("b".into()), Some("10.0.0.2".into()), 2));
        let c = parse("host=a,b port=9");
        assert_eq!(c.targets()[1].2, 9);
    }
}

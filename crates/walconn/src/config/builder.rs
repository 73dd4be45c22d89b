//! [`ConfigBuilder`]: a [`Config`] made in code, with TLS material from memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::credentials::ProviderSlot;
use super::{
    check_channel_binding, check_negotiation, check_root_mode, check_targets, default_host,
    default_sslmode, ChannelBinding, ClientCertPem, ClientEncoding, Config, Host, PasswordProvider,
    Replication, Secret, SslMode, SslNegotiation, SslRootCert, TargetSessionAttrs, DEFAULT_PORT,
    MIN_CONNECT_TIMEOUT,
};
use crate::error::{Error, Result};
use crate::tls;

/// Builds a [`Config`] in code: hosts, credentials and TLS material (root certificates and a
/// client certificate from memory, say from a secret store) without writing a conninfo
/// string or files. Made by [`Config::builder`]; [`build`](Self::build) fills in libpq's
/// defaults and refuses what [`Config::parse`] refuses, so that the same settings built or
/// parsed (with no environment: [`Config::parse_with_env`] and `|_| None`) give equal
/// configurations. Nothing is read from the environment: no `PG*` variables, no
/// `~/.postgresql` files, no password file unless [`passfile`](Self::passfile) names one.
///
/// ```
/// use std::time::Duration;
/// use walconn::{Config, SslMode};
///
/// let built = Config::builder()
///     .host("db.example")
///     .port(5432)
///     .user("repl")
///     .dbname("app")
///     .sslmode(SslMode::VerifyFull)
///     .application_name("orders-cdc")
///     .connect_timeout(Duration::from_secs(10))
///     .keepalives_idle(Duration::from_secs(30))
///     .tcp_user_timeout(Duration::from_secs(20))
///     .build()?;
/// let parsed = Config::parse_with_env(
///     "host=db.example port=5432 user=repl dbname=app sslmode=verify-full \
///      application_name=orders-cdc connect_timeout=10 keepalives_idle=30 \
///      tcp_user_timeout=20000",
///     |_| None,
/// )?;
/// assert_eq!(built, parsed);
/// # Ok::<(), walconn::Error>(())
/// ```
///
/// The CA and a client certificate from memory (PEM), for `verify-full`:
///
/// ```
/// # fn config(ca_pem: Vec<u8>, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> walconn::Result<()> {
/// let config = walconn::Config::builder()
///     .host("db.example")
///     .user("repl")
///     .sslmode(walconn::SslMode::VerifyFull)
///     .ssl_root_cert_pem(ca_pem)
///     .ssl_client_cert_pem(cert_pem, key_pem)
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ConfigBuilder {
    hosts: Vec<Host>,
    hostaddrs: Vec<String>,
    ports: Vec<u16>,
    user: Option<String>,
    password: Option<Secret>,
    passfile: Option<PathBuf>,
    dbname: Option<String>,
    application_name: Option<String>,
    options: Option<String>,
    connect_timeout: Option<Duration>,
    sslmode: Option<SslMode>,
    sslrootcert: Option<SslRootCert>,
    sslcert: Option<PathBuf>,
    sslkey: Option<PathBuf>,
    client_cert_pem: Option<ClientCertPem>,
    channel_binding: ChannelBinding,
    sslnegotiation: SslNegotiation,
    keepalives_off: bool,
    keepalives_idle: Option<Duration>,
    keepalives_interval: Option<Duration>,
    keepalives_count: Option<u32>,
    tcp_user_timeout: Option<Duration>,
    client_encoding: ClientEncoding,
    replication: Replication,
    target_session_attrs: TargetSessionAttrs,
    password_provider: Option<ProviderSlot>,
}

impl ConfigBuilder {
    /// Adds a host to try (in the order added): a name or address for TCP, or an absolute
    /// path for a Unix socket directory (`host`). None: the default socket directory.
    pub fn host(mut self, host: impl AsRef<str>) -> Self {
        self.hosts.push(Host::parse(host.as_ref()));
        self
    }

    /// Adds a numeric address for the host in the same position (`hostaddr`): connected to
    /// without a name lookup, while certificates are still checked against the host name.
    pub fn hostaddr(mut self, addr: impl Into<String>) -> Self {
        self.hostaddrs.push(addr.into());
        self
    }

    /// Adds a port: one for every host, or one per host in order (`port`; default 5432).
    pub fn port(mut self, port: u16) -> Self {
        self.ports.push(port);
        self
    }

    /// The role to connect as (`user`; required, as nothing is read from the environment).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// A static password (`password`); see [`password_provider`](Self::password_provider)
    /// for one that changes.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// The password file to look in when no password or provider is given (`passfile`).
    pub fn passfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.passfile = Some(path.into());
        self
    }

    /// A [`PasswordProvider`], asked at every connection and reconnect (over
    /// [`password`](Self::password)).
    pub fn password_provider(mut self, provider: Arc<dyn PasswordProvider>) -> Self {
        self.password_provider = Some(ProviderSlot(provider));
        self
    }

    /// The database (`dbname`; default: the user name).
    pub fn dbname(mut self, dbname: impl Into<String>) -> Self {
        self.dbname = Some(dbname.into());
        self
    }

    /// `application_name`, shown in `pg_stat_activity` and `pg_stat_replication`.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// Command-line options sent to the server (`options`, such as `-c work_mem=64MB`).
    pub fn options(mut self, options: impl Into<String>) -> Self {
        self.options = Some(options.into());
        self
    }

    /// The time limit of each connection attempt (`connect_timeout`): zero is none, and as
    /// in libpq anything under two seconds is two seconds.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How TLS is negotiated and checked (`sslmode`; default `prefer`, or `verify-full` with
    /// [`SslRootCert::System`]).
    pub fn sslmode(mut self, mode: SslMode) -> Self {
        self.sslmode = Some(mode);
        self
    }

    /// The trusted roots (`sslrootcert`): a file, the platform's store or PEM in memory.
    pub fn ssl_root_cert(mut self, roots: SslRootCert) -> Self {
        self.sslrootcert = Some(roots);
        self
    }

    /// The trusted roots as PEM bytes (one certificate or more), in memory.
    pub fn ssl_root_cert_pem(self, pem: impl Into<Vec<u8>>) -> Self {
        self.ssl_root_cert(SslRootCert::Pem(pem.into()))
    }

    /// A client certificate and key from files (`sslcert`, `sslkey`).
    pub fn ssl_client_cert_files(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.sslcert = Some(cert.into());
        self.sslkey = Some(key.into());
        self
    }

    /// A client certificate (PEM: the certificate, then any intermediates) and its private
    /// key (PEM: PKCS#8, PKCS#1 or SEC1), in memory; used instead of any files. The key stays
    /// out of `Debug` output.
    pub fn ssl_client_cert_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_cert_pem = Some(ClientCertPem {
            cert: cert.into(),
            key: Secret(key.into()),
        });
        self
    }

    /// Whether SCRAM channel binding is used (`channel_binding`; default `prefer`).
    pub fn channel_binding(mut self, binding: ChannelBinding) -> Self {
        self.channel_binding = binding;
        self
    }

    /// How TLS is started (`sslnegotiation`; default `postgres`).
    pub fn ssl_negotiation(mut self, negotiation: SslNegotiation) -> Self {
        self.sslnegotiation = negotiation;
        self
    }

    /// TCP keepalive on (the default) or off (`keepalives`).
    pub fn keepalives(mut self, on: bool) -> Self {
        self.keepalives_off = !on;
        self
    }

    /// Idle time before the first keepalive probe (`keepalives_idle`; zero: the kernel's
    /// default). Rounded up to whole seconds, as the kernel counts them.
    pub fn keepalives_idle(mut self, idle: Duration) -> Self {
        self.keepalives_idle = Some(idle);
        self
    }

    /// Time between unanswered keepalive probes (`keepalives_interval`; zero: the kernel's
    /// default). Rounded up to whole seconds.
    pub fn keepalives_interval(mut self, interval: Duration) -> Self {
        self.keepalives_interval = Some(interval);
        self
    }

    /// Unanswered probes before the connection is dropped (`keepalives_count`; zero: the
    /// kernel's default).
    pub fn keepalives_count(mut self, count: u32) -> Self {
        self.keepalives_count = Some(count);
        self
    }

    /// How long sent data may stay unacknowledged before the kernel drops the connection
    /// (`tcp_user_timeout`; zero: the kernel's default; Linux and Android). Rounded up to
    /// whole milliseconds.
    pub fn tcp_user_timeout(mut self, timeout: Duration) -> Self {
        self.tcp_user_timeout = Some(timeout);
        self
    }

    /// What the server converts text to (`client_encoding`; default UTF8).
    pub fn client_encoding(mut self, encoding: ClientEncoding) -> Self {
        self.client_encoding = encoding;
        self
    }

    /// The kind of session (`replication`; default `database`).
    pub fn replication(mut self, replication: Replication) -> Self {
        self.replication = replication;
        self
    }

    /// Which servers are acceptable (`target_session_attrs`; default any).
    pub fn target_session_attrs(mut self, attrs: TargetSessionAttrs) -> Self {
        self.target_session_attrs = attrs;
        self
    }

    /// The configuration, with libpq's defaults for what was not set; refuses what
    /// [`Config::parse`] refuses (host, address and port lists that do not pair up, a port
    /// of 0, `sslmode` too weak for the system roots or for direct TLS, channel binding
    /// without TLS), a missing user, and PEM material in which no certificate (or no key)
    /// parses. Without walconn's `tls` feature, TLS material given in memory
    /// ([`ssl_root_cert_pem`](Self::ssl_root_cert_pem),
    /// [`ssl_client_cert_pem`](Self::ssl_client_cert_pem)), `sslmode` require or stricter and
    /// `channel_binding=require` are refused with
    /// [`ErrorKind::TlsUnavailable`](crate::ErrorKind::TlsUnavailable): the methods are there
    /// in every build, so that code compiles with the feature off and says so when it runs.
    pub fn build(self) -> Result<Config> {
        let user = self
            .user
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Error::config("no user name given (ConfigBuilder::user)"))?;
        let hosts_given = !self.hosts.is_empty();
        let hosts = if hosts_given {
            self.hosts
        } else {
            vec![default_host()]
        };
        if self.ports.contains(&0) {
            return Err(Error::config("invalid port number: \"0\""));
        }
        let ports = if self.ports.is_empty() {
            vec![DEFAULT_PORT]
        } else {
            self.ports
        };
        check_targets(&hosts, hosts_given, &self.hostaddrs, &ports)?;
        let sslmode = self
            .sslmode
            .unwrap_or_else(|| default_sslmode(self.sslrootcert.as_ref()));
        check_root_mode(self.sslrootcert.as_ref(), sslmode)?;
        check_channel_binding(self.channel_binding, sslmode)?;
        check_negotiation(self.sslnegotiation, sslmode)?;
        tls::check_config(
            sslmode,
            self.channel_binding,
            self.sslrootcert.as_ref(),
            self.client_cert_pem.as_ref(),
        )?;
        let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        Ok(Config {
            hosts,
            hostaddrs: self.hostaddrs,
            ports,
            dbname: self
                .dbname
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| user.clone()),
            user,
            password: self.password,
            passfile: self.passfile,
            application_name: self.application_name,
            options: self.options.filter(|o| !o.is_empty()),
            connect_timeout: nonzero(self.connect_timeout).map(|t| t.max(MIN_CONNECT_TIMEOUT)),
            sslmode,
            sslrootcert: self.sslrootcert,
            sslcert: self.sslcert,
            sslkey: self.sslkey,
            client_cert_pem: self.client_cert_pem,
            channel_binding: self.channel_binding,
            sslnegotiation: self.sslnegotiation,
            keepalives: !self.keepalives_off,
            keepalives_idle: nonzero(self.keepalives_idle).map(|d| round_up(d, SECOND)),
            keepalives_interval: nonzero(self.keepalives_interval).map(|d| round_up(d, SECOND)),
            keepalives_count: self.keepalives_count.filter(|&c| c > 0),
            tcp_user_timeout: nonzero(self.tcp_user_timeout).map(|d| round_up(d, MILLISECOND)),
            client_encoding: self.client_encoding,
            replication: self.replication,
            target_session_attrs: self.target_session_attrs,
            password_provider: self.password_provider,
        })
    }
}

/// The units the kernel counts the TCP timers in.
const SECOND: Duration = Duration::from_secs(1);
const MILLISECOND: Duration = Duration::from_millis(1);

/// `d` rounded up to a whole number of `unit`s (a fraction would be cut to nothing, which
/// the kernel refuses or reads as its default).
fn round_up(d: Duration, unit: Duration) -> Duration {
    let units = d.as_nanos().div_ceil(unit.as_nanos());
    unit.saturating_mul(u32::try_from(units).unwrap_or(u32::MAX))
}

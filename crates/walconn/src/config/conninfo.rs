//! The conninfo syntax: a libpq URL or key=value string read into [`Raw`], the settings as
//! given, with `PG*` environment variables filling what the string leaves out. What the
//! values mean is for the parent module, which turns a `Raw` into a `Config`.

use crate::error::{Error, Result};

/// The settings as given, before defaults are filled in.
///
/// [`Raw::parse`] reads a conninfo, [`Raw::env_defaults`] fills the gaps from the
/// environment, and `Config::from_raw` interprets the result. The fields are open to the
/// parent module because it reads every one of them; only this module writes them.
// PartialEq and Debug: the fuzz target compares a round trip.
#[derive(Default, PartialEq, Debug)]
pub(crate) struct Raw {
    pub(super) host: Option<String>,
    pub(super) hostaddr: Option<String>,
    pub(super) port: Option<String>,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) passfile: Option<String>,
    pub(super) dbname: Option<String>,
    pub(super) application_name: Option<String>,
    pub(super) fallback_application_name: Option<String>,
    pub(super) options: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) sslmode: Option<String>,
    pub(super) sslrootcert: Option<String>,
    pub(super) sslcert: Option<String>,
    pub(super) sslkey: Option<String>,
    pub(super) channel_binding: Option<String>,
    pub(super) replication: Option<String>,
    pub(super) target_session_attrs: Option<String>,
    pub(super) sslnegotiation: Option<String>,
    pub(super) keepalives: Option<String>,
    pub(super) keepalives_idle: Option<String>,
    pub(super) keepalives_interval: Option<String>,
    pub(super) keepalives_count: Option<String>,
    pub(super) tcp_user_timeout: Option<String>,
    pub(super) client_encoding: Option<String>,
}

/// Settings libpq knows that this crate accepts without acting on them, each with the values
/// that ask for nothing it does not do, the `PG*` variable that sets it, and what it does
/// instead. Any other value is logged with `tracing::warn!` (see [`unhonoured`]) rather than
/// dropped silently; the crate docs of `Config` list them.
const IGNORED_KEYS: &[Ignored] = &[
    Ignored {
        key: "gssencmode",
        env: "PGGSSENCMODE",
        honoured: &["disable", "prefer"],
        instead: "GSSAPI encryption is not supported; the connection is made without it",
    },
    Ignored {
        key: "sslcompression",
        env: "PGSSLCOMPRESSION",
        honoured: &["0"],
        instead: "TLS compression is never used",
    },
    Ignored {
        key: "sslsni",
        env: "PGSSLSNI",
        honoured: &["1"],
        instead: "the host name is always sent (SNI) when it is a DNS name",
    },
    Ignored {
        key: "ssl_min_protocol_version",
        env: "PGSSLMINPROTOCOLVERSION",
        honoured: &["TLSv1", "TLSv1.1", "TLSv1.2"],
        instead: "TLS 1.2 and 1.3 are both offered",
    },
    Ignored {
        key: "ssl_max_protocol_version",
        env: "PGSSLMAXPROTOCOLVERSION",
        honoured: &["", "TLSv1.3"],
        instead: "TLS 1.2 and 1.3 are both offered",
    },
    Ignored {
        key: "load_balance_hosts",
        env: "PGLOADBALANCEHOSTS",
        honoured: &["disable"],
        instead: "hosts are tried in the order given",
    },
];

/// A libpq setting accepted without effect: one row of [`IGNORED_KEYS`].
struct Ignored {
    key: &'static str,
    env: &'static str,
    /// The values whose meaning this crate's behaviour already has (libpq's default among
    /// them).
    honoured: &'static [&'static str],
    /// What the connection does whatever the value.
    instead: &'static str,
}

/// Why `key=value` is not honoured, when `key` is one of [`IGNORED_KEYS`] and `value` asks
/// for something this crate does not do; `None` for any other key or value.
pub(super) fn unhonoured(key: &str, value: &str) -> Option<&'static str> {
    let ignored = IGNORED_KEYS.iter().find(|i| i.key == key)?;
    (!ignored.honoured.contains(&value)).then_some(ignored.instead)
}

/// Logs that `key=value` (from `origin`: the conninfo, or a `PG*` variable) is not honoured.
fn warn_unhonoured(key: &str, value: &str, origin: &str) {
    if let Some(instead) = unhonoured(key, value) {
        tracing::warn!(
            key,
            value,
            origin,
            "connection option {key}={value:?} is accepted but not honoured: {instead}"
        );
    }
}

impl Raw {
    /// Reads a conninfo: a `postgresql://` or `postgres://` URL (leading whitespace allowed),
    /// otherwise key=value pairs.
    pub(crate) fn parse(conninfo: &str) -> Result<Raw> {
        let mut raw = Raw::default();
        let trimmed = conninfo.trim_start();
        if trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://") {
            parse_url(trimmed, &mut raw)?;
        } else {
            parse_key_value(conninfo, &mut raw)?;
        }
        Ok(raw)
    }

    /// Fills each setting the conninfo left out from its `PG*` variable; an empty variable
    /// counts as unset, as in libpq.
    pub(super) fn env_defaults(&mut self, env: &mut dyn FnMut(&str) -> Option<String>) {
        let pairs: [(&mut Option<String>, &str); 18] = [
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
            (&mut self.client_encoding, "PGCLIENTENCODING"),
        ];
        for (slot, var) in pairs {
            if slot.is_none() {
                *slot = env(var).filter(|v| !v.is_empty());
            }
        }
        for ignored in IGNORED_KEYS {
            if let Some(value) = env(ignored.env).filter(|v| !v.is_empty()) {
                warn_unhonoured(ignored.key, &value, ignored.env);
            }
        }
    }

    /// Records one setting; a later value for the same key replaces an earlier one, keys in
    /// [`IGNORED_KEYS`] are accepted and dropped (with a warning when the value asks for
    /// something this crate does not do), and any other unknown key is an error.
    fn set(&mut self, key: &str, value: String) -> Result<()> {
        if IGNORED_KEYS.iter().any(|i| i.key == key) {
            warn_unhonoured(key, &value, "conninfo");
            return Ok(());
        }
        let slot = self
            .settings()
            .into_iter()
            .find_map(|(k, slot)| (k == key).then_some(slot))
            .ok_or_else(|| Error::config(format!("invalid connection option \"{key}\"")))?;
        *slot = Some(value);
        Ok(())
    }

    /// The settings as a key=value string that parses back to the same settings (each value
    /// quoted, `\` and `'` escaped): the fuzz target's round trip.
    pub(crate) fn key_value(&mut self) -> String {
        let mut out = String::new();
        for (key, value) in self.settings() {
            if let Some(value) = value {
                out.push_str(key);
                out.push_str("='");
                for c in value.chars() {
                    if matches!(c, '\\' | '\'') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push_str("' ");
            }
        }
        out
    }

    /// Every key this crate reads, with its slot: the one list of them.
    fn settings(&mut self) -> [(&'static str, &mut Option<String>); 25] {
        [
            ("host", &mut self.host),
            ("hostaddr", &mut self.hostaddr),
            ("port", &mut self.port),
            ("user", &mut self.user),
            ("password", &mut self.password),
            ("passfile", &mut self.passfile),
            ("dbname", &mut self.dbname),
            ("application_name", &mut self.application_name),
            (
                "fallback_application_name",
                &mut self.fallback_application_name,
            ),
            ("options", &mut self.options),
            ("connect_timeout", &mut self.connect_timeout),
            ("sslmode", &mut self.sslmode),
            ("sslrootcert", &mut self.sslrootcert),
            ("sslcert", &mut self.sslcert),
            ("sslkey", &mut self.sslkey),
            ("channel_binding", &mut self.channel_binding),
            ("replication", &mut self.replication),
            ("target_session_attrs", &mut self.target_session_attrs),
            ("sslnegotiation", &mut self.sslnegotiation),
            ("keepalives", &mut self.keepalives),
            ("keepalives_idle", &mut self.keepalives_idle),
            ("keepalives_interval", &mut self.keepalives_interval),
            ("keepalives_count", &mut self.keepalives_count),
            ("tcp_user_timeout", &mut self.tcp_user_timeout),
            ("client_encoding", &mut self.client_encoding),
        ]
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
    use crate::config::tests::parse;
    use crate::config::{Host, Replication, Secret, SslMode};

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
}

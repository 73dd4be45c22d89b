//! The TLS module without the `tls` feature: the same functions as `tls.rs`, with plaintext for
//! the `sslmode`s that allow it (`disable`, `allow`, `prefer`: as libpq built without SSL
//! support, no `SSLRequest` is sent) and [`ErrorKind::TlsUnavailable`] for what needs TLS.

use tokio::net::TcpStream;

use crate::config::{ChannelBinding, ClientCertPem, Config, SslMode, SslRootCert};
use crate::error::{Error, ErrorKind, Result};
use crate::stream::Stream;

/// The plaintext stream for `disable`, `allow` and `prefer`; an error for the modes that need
/// TLS (which [`check_config`] refuses before a connection is attempted).
pub(crate) async fn negotiate(
    tcp: TcpStream,
    _host: &str,
    _config: &Config,
    mode: SslMode,
) -> Result<(Stream, bool)> {
    match mode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => Ok((Stream::Tcp(tcp), false)),
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            Err(unavailable(&format!("sslmode={}", mode.as_str())))
        }
    }
}

/// Refuses, when a configuration is parsed or built, what cannot be honoured without TLS: an
/// `sslmode` of require or stricter, `channel_binding=require`, and TLS material given in
/// memory (the application clearly meant it to be used). Certificate and key files named in a
/// conninfo (or found in `~/.postgresql`) are ignored under the plaintext modes, as libpq
/// ignores them without SSL support.
pub(crate) fn check_config(
    sslmode: SslMode,
    channel_binding: ChannelBinding,
    roots: Option<&SslRootCert>,
    client: Option<&ClientCertPem>,
) -> Result<()> {
    if !matches!(sslmode, SslMode::Disable | SslMode::Allow | SslMode::Prefer) {
        return Err(unavailable(&format!("sslmode={}", sslmode.as_str())));
    }
    if channel_binding == ChannelBinding::Require {
        return Err(unavailable("channel_binding=require"));
    }
    if let Some(SslRootCert::Pem(_)) = roots {
        return Err(unavailable(
            "root certificates given in memory (ConfigBuilder::ssl_root_cert_pem)",
        ));
    }
    if client.is_some() {
        return Err(unavailable(
            "a client certificate given in memory (ConfigBuilder::ssl_client_cert_pem)",
        ));
    }
    Ok(())
}

/// The error for `what`, which needs TLS.
fn unavailable(what: &str) -> Error {
    Error::new(
        ErrorKind::TlsUnavailable,
        format!(
            "{what} needs TLS, but walconn was built without its `tls` feature (enable it, or \
             use sslmode disable, allow or prefer)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    fn parse(conninfo: &str) -> Result<Config> {
        Config::parse_with_env(conninfo, |_| None)
    }

    #[test]
    fn what_needs_tls_is_refused_with_its_own_kind() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let e = parse(&format!("host=db user=u sslmode={mode}")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TlsUnavailable, "{mode}");
            assert!(!e.is_retryable());
            let text = e.to_string();
            assert!(text.contains(&format!("sslmode={mode}")), "{text}");
            assert!(text.contains("`tls` feature"), "{text}");
        }
        // The system roots imply verify-full.
        let e = parse("host=db user=u sslrootcert=system").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TlsUnavailable);
        let e = parse("host=db user=u channel_binding=require").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TlsUnavailable);
        assert!(e.to_string().contains("channel_binding=require"));
        for mode in ["disable", "allow", "prefer"] {
            let config = parse(&format!("host=db user=u sslmode={mode} sslcert=c sslkey=k"));
            assert_eq!(config.unwrap().sslmode().as_str(), mode);
        }
    }

    #[test]
    fn tls_material_from_memory_is_refused() {
        let roots = Config::builder()
            .user("u")
            .ssl_root_cert_pem(b"-----BEGIN CERTIFICATE-----".to_vec())
            .build()
            .unwrap_err();
        assert_eq!(roots.kind(), ErrorKind::TlsUnavailable);
        assert!(roots.to_string().contains("ssl_root_cert_pem"));
        let client = Config::builder()
            .user("u")
            .sslmode(SslMode::Disable)
            .ssl_client_cert_pem(b"cert".to_vec(), b"key".to_vec())
            .build()
            .unwrap_err();
        assert_eq!(client.kind(), ErrorKind::TlsUnavailable);
        let built = Config::builder()
            .user("u")
            .sslmode(SslMode::VerifyFull)
            .build()
            .unwrap_err();
        assert_eq!(built.kind(), ErrorKind::TlsUnavailable);
        assert!(Config::builder().user("u").build().is_ok());
    }

    /// `prefer` (the default) and `allow` connect in plaintext without an `SSLRequest`: the
    /// first bytes the server reads are the client's own.
    #[tokio::test]
    async fn plaintext_modes_send_no_ssl_request() {
        let config = parse("host=127.0.0.1 user=u").unwrap();
        for mode in [SslMode::Prefer, SslMode::Allow, SslMode::Disable] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let (mut server, _) = server.unwrap();
            let (stream, tls) = negotiate(client.unwrap(), "127.0.0.1", &config, mode)
                .await
                .unwrap();
            assert!(!tls);
            let Stream::Tcp(mut tcp) = stream else {
                panic!("not TCP")
            };
            tcp.write_all(b"hello").await.unwrap();
            let mut first = [0; 5];
            server.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, b"hello", "{mode:?}");
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let Err(e) = negotiate(client, "127.0.0.1", &config, SslMode::Require).await else {
            panic!("require connected without TLS")
        };
        assert_eq!(e.kind(), ErrorKind::TlsUnavailable);
    }
}

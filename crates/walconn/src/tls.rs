//! TLS with rustls (the `tls` feature): the `SSLRequest` negotiation and libpq's `sslmode`
//! checks. Without the feature, `tls_off.rs` stands in for this module with the same
//! functions: plaintext for the modes that allow it, [`ErrorKind::TlsUnavailable`] for the rest.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::{ChannelBinding, ClientCertPem, Config, SslMode, SslNegotiation, SslRootCert};
use crate::error::{Error, ErrorKind, Result};
use crate::stream::Stream;

/// The ALPN protocol name PostgreSQL 17+ registers for itself.
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Negotiates TLS on a fresh TCP connection as `config.sslmode` and `sslnegotiation` say;
/// returns the stream and whether it is encrypted. `host` is the name certificates are checked against.
pub(crate) async fn negotiate(
    mut tcp: TcpStream,
    host: &str,
    config: &Config,
    mode: SslMode,
) -> Result<(Stream, bool)> {
    if matches!(mode, SslMode::Disable | SslMode::Allow) {
        return Ok((Stream::Tcp(tcp), false));
    }
    let direct = config.sslnegotiation == SslNegotiation::Direct;
    if !direct {
        let mut buf = BytesMut::new();
        frontend::ssl_request(&mut buf);
        tcp.write_all(&buf)
            .await
            .map_err(|e| Error::io("send SSLRequest", e))?;
        let answer = tcp
            .read_u8()
            .await
            .map_err(|e| Error::io("read the answer to SSLRequest", e))?;
        match answer {
            b'S' => {}
            b'N' if mode == SslMode::Prefer => return Ok((Stream::Tcp(tcp), false)),
            b'N' => {
                return Err(Error::new(
                    ErrorKind::Tls,
                    format!("the server does not support TLS, but sslmode={mode:?} requires it"),
                ))
            }
            other => {
                return Err(Error::protocol(format!(
                    "unexpected answer {:?} to SSLRequest",
                    char::from(other)
                )))
            }
        }
    }
    let client_config = client_config(config, mode)?;
    let name = server_name(host)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tls = connector.connect(name, tcp).await.map_err(|e| {
        let what = match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                ..
            })) => format!(
                "TLS: the server certificate is not valid for host name \"{host}\" \
                 (sslmode=verify-full)"
            ),
            Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                "TLS: the server certificate is not signed by a trusted root (sslrootcert)"
                    .to_owned()
            }
            // webpki picks the issuer by name: a root with the right name and another key
            // leaves a signature that does not verify.
            Some(rustls::Error::InvalidCertificate(CertificateError::BadSignature)) => {
                "TLS: the server certificate is not signed by a trusted root (sslrootcert): \
                 a root of the same name has another key"
                    .to_owned()
            }
            Some(rustls::Error::InvalidCertificate(CertificateError::Expired))
            | Some(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                ..
            })) => "TLS: the server certificate has expired".to_owned(),
            Some(rustls::Error::InvalidCertificate(c)) => {
                format!("TLS: the server certificate was rejected: {c:?}")
            }
            // A server before 17 reads the ClientHello as a startup packet and hangs up.
            _ if direct => "TLS handshake failed (sslnegotiation=direct needs PostgreSQL 17 or \
                            newer)"
                .to_owned(),
            _ => "TLS handshake failed".to_owned(),
        };
        Error::new(ErrorKind::Tls, what).with_source(e)
    })?;
    // libpq insists on ALPN for direct TLS: it is what tells the server (and any TLS proxy
    // in between) that PostgreSQL runs inside.
    if direct && tls.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        return Err(Error::new(
            ErrorKind::Tls,
            "the server did not negotiate ALPN \"postgresql\" on a direct TLS connection",
        ));
    }
    Ok((Stream::Tls(Box::new(tls)), true))
}

/// The `tls-server-end-point` channel binding data (RFC 5929): a hash of the server's
/// certificate, with the hash of the certificate's signature algorithm (SHA-256 for MD5,
/// SHA-1 and anything else, as the RFC and PostgreSQL's server say).
pub(crate) fn server_end_point(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    let cert = tls.get_ref().1.peer_certificates()?.first()?;
    Some(end_point_hash(cert.as_ref()))
}

/// [`server_end_point`] for a DER certificate.
pub(crate) fn end_point_hash(der: &[u8]) -> Vec<u8> {
    // Signature algorithm OIDs (contents octets): sha384/sha512 with RSA, ECDSA with
    // SHA-384/512. RSASSA-PSS carries its hash in the parameters; it falls back to SHA-256.
    const SHA384: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
    ];
    const SHA512: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
    ];
    match signature_algorithm(der) {
        Some(oid) if SHA512.contains(&oid) => sha2::Sha512::digest(der).to_vec(),
        Some(oid) if SHA384.contains(&oid) => sha2::Sha384::digest(der).to_vec(),
        _ => sha2::Sha256::digest(der).to_vec(),
    }
}

/// The OID (contents octets) of a DER certificate's outer `signatureAlgorithm` (RFC 5280
/// section 4.1: `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }`).
/// A walk of three DER headers: no X.509 crate is needed for one field.
pub(crate) fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (certificate, _) = der_element(cert, SEQUENCE)?;
    let (_tbs, rest) = der_element(certificate, SEQUENCE)?;
    let (algorithm, _) = der_element(rest, SEQUENCE)?;
    let (oid, _) = der_element(algorithm, OID)?;
    Some(oid)
}

/// Splits the DER element with tag `tag` off the front of `input`: its contents and what
/// follows it. `None` for another tag, an indefinite or oversized length, or a short input.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits count the length octets; certificates need at most 4.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (octets, rest) = rest.split_at_checked(count)?;
        let len = octets
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    rest.split_at_checked(len)
}

fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|e| {
        Error::new(
            ErrorKind::Tls,
            format!("invalid TLS server name \"{host}\""),
        )
        .with_source(e)
    })
}

/// The crypto provider of every TLS connection: the process default the application installed
/// ([`CryptoProvider::install_default`], aws-lc-rs for FIPS say), else the built-in `ring`
/// provider. The fallback is not installed as the default: that choice is the application's.
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn client_config(config: &Config, mode: SslMode) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Tls, "TLS setup").with_source(e))?;
    // libpq: with a root certificate file, require behaves as verify-ca.
    let verify = match mode {
        SslMode::VerifyCa | SslMode::VerifyFull => true,
        SslMode::Require => matches!(
            config.sslrootcert,
            Some(SslRootCert::File(_) | SslRootCert::Pem(_))
        ),
        _ => false,
    };
    let verifier: Arc<dyn ServerCertVerifier> = if verify {
        let roots = Arc::new(root_store(config)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| Error::new(ErrorKind::Tls, "TLS root certificates").with_source(e))?;
        if mode == SslMode::VerifyFull {
            webpki
        } else {
            Arc::new(VerifyCa(webpki))
        }
    } else {
        Arc::new(NoVerify(provider))
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls_config = match (&config.client_cert_pem, &config.sslcert, &config.sslkey) {
        // In memory: used instead of any files.
        (Some(pem), _, _) => {
            let certs = certificates_from_pem(&pem.cert, "the client certificate given in memory")?;
            builder
                .with_client_auth_cert(certs, key_from_pem(&pem.key.0)?)
                .map_err(|e| Error::new(ErrorKind::Tls, "client certificate").with_source(e))
        }
        (None, Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Tls,
                        format!("could not read client certificate {}", cert.display()),
                    )
                    .with_source(e)
                })?;
            check_key_file(key)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::new(
                    ErrorKind::Tls,
                    format!("could not read client key {}", key.display()),
                )
                .with_source(e)
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| Error::new(ErrorKind::Tls, "client certificate").with_source(e))
        }
        (None, Some(cert), None) => Err(Error::new(
            ErrorKind::Tls,
            format!("client certificate {} given without sslkey", cert.display()),
        )),
        _ => Ok(builder.with_no_client_auth()),
    }?;
    // Sent on every connection, as libpq 17+ does; older servers ignore it.
    tls_config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(tls_config)
}

/// Refuses a client key file that is not a regular file, or that others may read or change,
/// as libpq does before loading one (`fe-secure-openssl.c`, `initialize_SSL`): a key owned by
/// root may be `u=rw,g=r` (0640), so that a system-wide key can be shared with a group, any
/// other key `u=rw` (0600) at most. Whose key it is does not matter (a process running as root
/// may use another user's key); libpq checks the mode alone, and so does this.
fn check_key_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::new(
            ErrorKind::Tls,
            format!("could not read client key {}", path.display()),
        )
        .with_source(e)
    })?;
    // A FIFO or a device would be read as if it were the key (a FIFO blocking the connection
    // until someone writes to it).
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::Tls,
            format!(
                "private key file \"{}\" is not a regular file",
                path.display()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if key_mode_too_open(mode, meta.uid()) {
        return Err(Error::new(
            ErrorKind::Tls,
            format!(
                "private key file \"{}\" has group or world access (mode {mode:04o}); file \
                 must have permissions u=rw (0600) or less if owned by the current user, or \
                 permissions u=rw,g=r (0640) or less if owned by root",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Whether a key file of permission bits `mode` owned by the user `owner` is open to others:
/// any group or other bit, except the group's read bit on a file owned by root.
fn key_mode_too_open(mode: u32, owner: u32) -> bool {
    /// Group write and execute, and every bit for others (libpq's
    /// `S_IWGRP | S_IXGRP | S_IRWXO`).
    const ROOT_OWNED_FORBIDDEN: u32 = 0o037;
    /// Every bit for the group and for others (`S_IRWXG | S_IRWXO`).
    const FORBIDDEN: u32 = 0o077;
    let forbidden = if owner == 0 {
        ROOT_OWNED_FORBIDDEN
    } else {
        FORBIDDEN
    };
    mode & forbidden != 0
}

fn root_store(config: &Config) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match &config.sslrootcert {
        Some(SslRootCert::File(path)) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Tls,
                        format!("could not read root certificate file {}", path.display()),
                    )
                    .with_source(e)
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::new(
                    ErrorKind::Tls,
                    format!("no usable certificate in {}", path.display()),
                ));
            }
        }
        Some(SslRootCert::Pem(pem)) => {
            let certs = certificates_from_pem(pem, "the root certificates given in memory")?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::new(
                    ErrorKind::Tls,
                    "no usable certificate in the root certificates given in memory",
                ));
            }
        }
        Some(SslRootCert::System) => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(Error::new(
                    ErrorKind::Tls,
                    "sslrootcert=system: no certificates in the platform store",
                ));
            }
        }
        None => {
            return Err(Error::new(
                ErrorKind::Tls,
                "root certificate file \"~/.postgresql/root.crt\" does not exist; either \
                 provide the file (sslrootcert), use the system's trusted roots with \
                 sslrootcert=system, or change sslmode to disable server certificate \
                 verification",
            ))
        }
    }
    Ok(roots)
}

/// Checks the TLS material given in memory when a configuration is built: at least one root
/// certificate, and the client certificate and its key, must parse. (Every `sslmode` and
/// `channel_binding` can be honoured: `tls_off.rs` refuses those that need TLS.)
pub(crate) fn check_config(
    _sslmode: SslMode,
    _channel_binding: ChannelBinding,
    roots: Option<&SslRootCert>,
    client: Option<&ClientCertPem>,
) -> Result<()> {
    if let Some(SslRootCert::Pem(pem)) = roots {
        certificates_from_pem(pem, "the root certificates given in memory")?;
    }
    if let Some(client) = client {
        certificates_from_pem(&client.cert, "the client certificate given in memory")?;
        key_from_pem(&client.key.0)?;
    }
    Ok(())
}

/// The certificates of PEM bytes given in memory (`what` names them in errors): at least one.
fn certificates_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::new(ErrorKind::Tls, format!("could not read {what}")).with_source(e))?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::Tls,
            format!("no PEM certificate in {what}"),
        ));
    }
    Ok(certs)
}

/// The private key of PEM bytes given in memory (the first key; PKCS#8, PKCS#1 or SEC1).
fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        Error::new(
            ErrorKind::Tls,
            "could not read the client key given in memory",
        )
        .with_source(e)
    })
}

/// `verify-ca`: the chain must be trusted, the name need not match.
#[derive(Debug)]
struct VerifyCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for VerifyCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` and `prefer` without a root certificate: encryption without authentication of
/// the server, as in libpq. The handshake signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn key_files_open_to_others_are_refused_as_libpq_refuses_them() {
        const ROOT: u32 = 0;
        const USER: u32 = 1000;
        for owner in [ROOT, USER] {
            for mode in [0o400, 0o600, 0o700] {
                assert!(!key_mode_too_open(mode, owner), "{mode:o} of {owner}");
            }
            for mode in [0o604, 0o602, 0o601, 0o620, 0o610, 0o666, 0o777] {
                assert!(key_mode_too_open(mode, owner), "{mode:o} of {owner}");
            }
        }
        // Readable by the group: a system-wide key of root's, not a user's.
        for mode in [0o640, 0o440] {
            assert!(!key_mode_too_open(mode, ROOT), "{mode:o}");
            assert!(key_mode_too_open(mode, USER), "{mode:o}");
        }
    }

    /// The only test that installs a process default: before it, the built-in ring provider;
    /// after it, the installed one (told apart by its cipher suites in reverse order).
    #[test]
    fn tls_uses_the_provider_the_application_installed() {
        let suites =
            |p: &CryptoProvider| -> Vec<_> { p.cipher_suites.iter().map(|s| s.suite()).collect() };
        let ring = rustls::crypto::ring::default_provider();
        let config = Config::parse("host=db.example user=u sslmode=require").unwrap();
        if CryptoProvider::get_default().is_none() {
            let tls = client_config(&config, SslMode::Require).unwrap();
            assert_eq!(suites(tls.crypto_provider()), suites(&ring));
        }

        let mut installed = rustls::crypto::ring::default_provider();
        installed.cipher_suites.reverse();
        assert_ne!(suites(&installed), suites(&ring));
        let expected = suites(&installed);
        installed.install_default().unwrap();
        let tls = client_config(&config, SslMode::Require).unwrap();
        assert_eq!(suites(tls.crypto_provider()), expected);
        assert_eq!(suites(&provider()), expected);
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            signature_algorithm(&p384),
            Some(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03][..])
        );
        assert_eq!(end_point_hash(&p256), sha2::Sha256::digest(&p256).to_vec());
        assert_eq!(end_point_hash(&p384), sha2::Sha384::digest(&p384).to_vec());
        // Not a certificate: SHA-256, and no panic on any prefix.
        for len in 0..p384.len() {
            assert_eq!(signature_algorithm(&p384[..len]), None, "{len}");
        }
        assert_eq!(end_point_hash(b"junk").len(), 32);
    }
}

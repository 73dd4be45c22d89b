//! TLS against servers with a certificate chain generated here: every sslmode, host names, a
//! wrong CA, client certificates, `sslrootcert=system`, SCRAM-SHA-256-PLUS channel binding and
//! `sslnegotiation=direct`.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
    SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
};
use walconn::{Connection, ErrorKind};

use crate::{block_on, config};

/// The certificates of one test, as files in a directory of their own.
struct Pki {
    dir: PathBuf,
    /// The CA that signed the server and client certificates (PEM, also at `ca.pem`).
    ca_pem: String,
    server_cert: String,
    server_key: String,
}

impl Pki {
    /// A P-384 CA (so the server certificate is signed with ECDSA-SHA384 and channel binding
    /// must hash with SHA-384, not the default SHA-256), a server certificate for `localhost`
    /// and 127.0.0.1, a client certificate for `certuser`, and another CA of the same name
    /// and another key (`other.pem`).
    fn new(test: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("walconn-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, ca_key) = new_ca(&PKCS_ECDSA_P384_SHA384);
        let (other_ca, _) = new_ca(&PKCS_ECDSA_P256_SHA256);
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name = DistinguishedName::new();
        client
            .distinguished_name
            .push(DnType::CommonName, "certuser");
        let client = client.signed_by(&client_key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("other.pem"), other_ca.pem()).unwrap();
        std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
        std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
        // walconn refuses a key file others can read, as libpq does (see tls_keys.rs).
        let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
        std::fs::set_permissions(dir.join("client.key"), private).unwrap();
        Pki {
            dir,
            ca_pem: ca.pem(),
            server_cert: server.pem(),
            server_key: server_key.serialize_pem(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A cluster of `major` with TLS on and this PKI: `tlsuser` (SCRAM) only over TLS,
    /// `certuser` by client certificate, `plainuser` (SCRAM) with or without TLS.
    fn cluster(&self, major: u32) -> pgtest::Cluster {
        let cluster = pgtest::Config::new(major)
            .file("server.crt", self.server_cert.clone())
            .file("server.key", self.server_key.clone())
            .file("ca.crt", self.ca_pem.clone())
            .setting("ssl", "on")
            .setting("ssl_cert_file", "server.crt")
            .setting("ssl_key_file", "server.key")
            .setting("ssl_ca_file", "ca.crt")
            .hba_line("hostnossl all tlsuser 127.0.0.1/32 reject")
            .hba_line("hostssl all tlsuser 127.0.0.1/32 scram-sha-256")
            .hba_line("hostssl all certuser 127.0.0.1/32 cert")
            .hba_line("host all plainuser 127.0.0.1/32 scram-sha-256")
            .start()
            .unwrap();
        create_roles(&cluster);
        cluster
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed CA named "walconn test CA" with a key of `alg`.
fn new_ca(alg: &'static SignatureAlgorithm) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "walconn test CA");
    (params.self_signed(&key).unwrap(), key)
}

fn create_roles(cluster: &pgtest::Cluster) {
    cluster
        .psql(
            "postgres",
            "CREATE ROLE tlsuser LOGIN REPLICATION PASSWORD 'tls pass'; \
             CREATE ROLE plainuser LOGIN REPLICATION PASSWORD 'plain pass'; \
             CREATE ROLE certuser LOGIN REPLICATION",
        )
        .unwrap();
}

/// Connects and returns whether TLS is in use, panicking with the conninfo on failure.
async fn connects(conninfo: &str) -> bool {
    let conn = Connection::connect(&config(conninfo))
        .await
        .unwrap_or_else(|e| panic!("{conninfo}: {e}"));
    let tls = conn.is_tls();
    conn.close().await.unwrap();
    tls
}

async fn fails(conninfo: &str) -> walconn::Error {
    match Connection::connect(&config(conninfo)).await {
        Ok(_) => panic!("{conninfo}: connected"),
        Err(e) => e,
    }
}

#[test]
fn sslmodes_against_a_server_with_tls() {
    let pki = Pki::new("tls");
    let (ca, other, cert, key) = (
        pki.path("ca.pem"),
        pki.path("other.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    pgtest::for_each_installed_major(15, |major| {
        let cluster = pki.cluster(major);
        let port = cluster.port();
        let tls =
            format!("host=127.0.0.1 port={port} user=tlsuser password='tls pass' dbname=postgres");
        let plain = format!(
            "host=127.0.0.1 port={port} user=plainuser password='plain pass' dbname=postgres"
        );
        let named = format!(
            "host=localhost hostaddr=127.0.0.1 port={port} user=tlsuser password='tls pass' dbname=postgres"
        );
        let wrong = format!(
            "host=wrong.example hostaddr=127.0.0.1 port={port} user=tlsuser password='tls pass' dbname=postgres"
        );
        block_on(async {
            assert!(!connects(&format!("{plain} sslmode=disable")).await);
            // allow: plaintext first; tlsuser is refused without TLS, so the retry uses it.
            assert!(!connects(&format!("{plain} sslmode=allow")).await);
            assert!(connects(&format!("{tls} sslmode=allow")).await);
            assert!(connects(&format!("{plain} sslmode=prefer")).await);
            assert!(connects(&format!("{tls} sslmode=require")).await);
            assert!(connects(&format!("{named} sslmode=verify-ca sslrootcert={ca}")).await);
            assert!(connects(&format!("{named} sslmode=verify-full sslrootcert={ca}")).await);
            // An IP address is checked against the certificate's IP address entries.
            assert!(connects(&format!("{tls} sslmode=verify-full sslrootcert={ca}")).await);
            // require with a root certificate file verifies the chain, as in libpq.
            let err = fails(&format!("{tls} sslmode=require sslrootcert={other}")).await;
            assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");

            // A wrong host name: verify-ca does not check it, verify-full does.
            assert!(connects(&format!("{wrong} sslmode=verify-ca sslrootcert={ca}")).await);
            let err = fails(&format!("{wrong} sslmode=verify-full sslrootcert={ca}")).await;
            assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
            assert!(
                err.to_string()
                    .contains("not valid for host name \"wrong.example\""),
                "{err}"
            );
            // A CA of the same name with another key, and a root file that is no CA at all.
            for roots in [&other, &cert] {
                let err = fails(&format!("{named} sslmode=verify-ca sslrootcert={roots}")).await;
                assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
                assert!(err.to_string().contains("trusted root"), "{err}");
            }
            // Without a root certificate, verify-ca cannot verify: an error before connecting.
            let err = fails(&format!(
                "{named} sslmode=verify-ca sslrootcert={}",
                pki.path("missing.pem")
            ))
            .await;
            assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
            assert!(err.to_string().contains("missing.pem"), "{err}");

            // SCRAM-SHA-256-PLUS: the server certificate is signed with ECDSA-SHA384, so a
            // wrong hash choice fails the server's channel binding check.
            assert!(connects(&format!("{tls} sslmode=require channel_binding=require")).await);
            assert!(
                connects(&format!(
                    "{named} sslmode=verify-full sslrootcert={ca} channel_binding=require"
                ))
                .await
            );
            assert!(connects(&format!("{tls} sslmode=require channel_binding=disable")).await);
            let err = fails(&format!("{tls} sslmode=disable")).await;
            assert!(err.is_auth_failed(), "{err:?}");

            // A client certificate, for the `cert` method (no password at all).
            let certuser = format!(
                "host=localhost hostaddr=127.0.0.1 port={port} user=certuser dbname=postgres"
            );
            assert!(
                connects(&format!(
                    "{certuser} sslmode=verify-full sslrootcert={ca} sslcert={cert} sslkey={key}"
                ))
                .await
            );
            let err = fails(&format!("{certuser} sslmode=verify-full sslrootcert={ca}")).await;
            assert!(err.is_auth_failed(), "{err:?}");
            let err = fails(&format!("{certuser} sslmode=require sslcert={cert}")).await;
            assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
        });
    });
}

#[test]
fn channel_binding_require_without_tls_fails() {
    let err = walconn::Config::parse_with_env(
        "host=127.0.0.1 user=u sslmode=disable channel_binding=require",
        |_| None,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    pgtest::for_each_installed_major(15, |major| {
        let cluster = pgtest::Config::new(major)
            .hba_line("host all plainuser 127.0.0.1/32 scram-sha-256")
            .start()
            .unwrap();
        create_roles(&cluster);
        let plain = format!(
            "host=127.0.0.1 port={} user=plainuser password='plain pass' dbname=postgres",
            cluster.port()
        );
        block_on(async {
            // A server without TLS: prefer and allow fall back to plaintext, require refuses.
            assert!(!connects(&format!("{plain} sslmode=prefer")).await);
            assert!(!connects(&format!("{plain} sslmode=allow")).await);
            let err = fails(&format!("{plain} sslmode=require")).await;
            assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
            assert!(err.to_string().contains("does not support TLS"), "{err}");
            // SCRAM without TLS offers no SCRAM-SHA-256-PLUS.
            let err = fails(&format!("{plain} sslmode=prefer channel_binding=require")).await;
            assert_eq!(err.kind(), ErrorKind::Auth, "{err:?}");
            assert!(
                err.to_string().contains("channel binding required"),
                "{err}"
            );
        });
    });
}

/// `sslrootcert=system` means verify-full against the platform store. rustls-native-certs reads
/// `SSL_CERT_FILE`, which points the "system" store at the test CA here; this test is the only
/// reader of that variable.
#[test]
fn sslrootcert_system_is_verify_full() {
    let pki = Pki::new("tls-system");
    let c = config("host=localhost user=u sslrootcert=system");
    assert_eq!(c.sslmode(), walconn::SslMode::VerifyFull);
    let err =
        walconn::Config::parse_with_env("user=u sslrootcert=system sslmode=require", |_| None)
            .unwrap_err();
    assert!(err.to_string().contains("weak sslmode"), "{err}");
    std::env::set_var("SSL_CERT_FILE", pki.path("ca.pem"));
    std::env::remove_var("SSL_CERT_DIR");
    pgtest::for_each_installed_major(15, |major| {
        let cluster = pki.cluster(major);
        let port = cluster.port();
        block_on(async {
            let base = format!(
                "hostaddr=127.0.0.1 port={port} user=tlsuser password='tls pass' dbname=postgres"
            );
            assert!(connects(&format!("{base} host=localhost sslrootcert=system")).await);
            let err = fails(&format!("{base} host=wrong.example sslrootcert=system")).await;
            assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
            assert!(err.to_string().contains("not valid for host name"), "{err}");
        });
    });
}

/// `sslnegotiation=direct`: TLS at once with ALPN, on 17+; a clear error from older servers.
#[test]
fn sslnegotiation_direct() {
    let err =
        walconn::Config::parse_with_env("user=u sslmode=prefer sslnegotiation=direct", |_| None)
            .unwrap_err();
    assert!(err.to_string().contains("weak sslmode \"prefer\""), "{err}");
    let pki = Pki::new("tls-direct");
    let ca = pki.path("ca.pem");
    let direct = |cluster: &pgtest::Cluster| {
        format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=tlsuser password='tls pass' \
             dbname=postgres connect_timeout=10 sslnegotiation=direct",
            cluster.port()
        )
    };
    // Older servers: a clear error (nothing to check when only 17+ is installed).
    for major in pgtest::installed_majors().into_iter().filter(|&m| m < 17) {
        println!("PostgreSQL {major}: direct TLS needs 17+, checking the error");
        let cluster = pki.cluster(major);
        block_on(async {
            let err = fails(&format!("{} sslmode=require", direct(&cluster))).await;
            assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
            assert!(err.to_string().contains("needs PostgreSQL 17"), "{err}");
        });
    }
    // Direct TLS itself: a run without a 17+ server fails rather than checking nothing.
    pgtest::for_each_installed_major(17, |major| {
        let cluster = pki.cluster(major);
        let named = direct(&cluster);
        block_on(async {
            assert!(connects(&format!("{named} sslmode=require")).await);
            assert!(
                connects(&format!(
                    "{named} sslmode=verify-full sslrootcert={ca} channel_binding=require"
                ))
                .await
            );
            let err = fails(&format!(
                "{named} sslmode=verify-ca sslrootcert={}",
                pki.path("other.pem")
            ))
            .await;
            assert!(err.to_string().contains("trusted root"), "{err}");
        });
    });
}

/// A configuration built in code with the TLS material in memory (no file): the CA as the
/// trusted root and a client certificate and key for `verify-full`, the same refusals as
/// from files.
#[test]
fn a_config_built_in_code_takes_its_roots_and_client_certificate_from_memory() {
    let pki = Pki::new("tls-memory");
    let read = |name: &str| std::fs::read(pki.dir.join(name)).unwrap();
    let (ca, other, cert, key) = (
        read("ca.pem"),
        read("other.pem"),
        read("client.pem"),
        read("client.key"),
    );
    let major = *pgtest::installed_majors().last().unwrap();
    let cluster = pki.cluster(major);
    let base = |host: &str, user: &str| {
        walconn::Config::builder()
            .host(host)
            .hostaddr("127.0.0.1")
            .port(cluster.port())
            .user(user)
            .dbname("postgres")
            .sslmode(walconn::SslMode::VerifyFull)
    };
    block_on(async {
        let config = base("localhost", "certuser")
            .ssl_root_cert_pem(ca.clone())
            .ssl_client_cert_pem(cert.clone(), key.clone())
            .build()
            .unwrap();
        assert!(!format!("{config:?}").contains("PRIVATE KEY"));
        let mut conn = Connection::connect(&config).await.unwrap();
        assert!(conn.is_tls());
        assert_eq!(
            conn.show("session_authorization").await.unwrap(),
            "certuser"
        );
        conn.close().await.unwrap();
        // The same with a password and channel binding, the roots alone in memory.
        let config = base("localhost", "tlsuser")
            .password("tls pass")
            .channel_binding(walconn::ChannelBinding::Require)
            .ssl_root_cert_pem(ca.clone())
            .build()
            .unwrap();
        Connection::connect(&config).await.unwrap();
        // Without the client certificate the cert method refuses.
        let config = base("localhost", "certuser")
            .ssl_root_cert_pem(ca.clone())
            .build()
            .unwrap();
        let err = Connection::connect(&config).await.unwrap_err();
        assert!(err.is_auth_failed(), "{err:?}");
        // Another CA of the same name, and another host name: refused as from files.
        let config = base("localhost", "certuser")
            .ssl_root_cert_pem(other)
            .ssl_client_cert_pem(cert.clone(), key.clone())
            .build()
            .unwrap();
        let err = Connection::connect(&config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
        assert!(err.to_string().contains("trusted root"), "{err}");
        let config = base("wrong.example", "certuser")
            .ssl_root_cert_pem(ca.clone())
            .ssl_client_cert_pem(cert, key)
            .build()
            .unwrap();
        let err = Connection::connect(&config).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("not valid for host name \"wrong.example\""),
            "{err}"
        );
        // require with roots in memory verifies the chain, as with a root file.
        let config = base("localhost", "tlsuser")
            .password("tls pass")
            .sslmode(walconn::SslMode::Require)
            .ssl_root_cert_pem(read("other.pem"))
            .build()
            .unwrap();
        let err = Connection::connect(&config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    });
}

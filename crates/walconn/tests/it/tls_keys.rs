//! Client certificates with each kind of key file a libpq user may have (RSA in PKCS#1 and
//! PKCS#8, ECDSA P-256 in SEC1 and PKCS#8: `tests/keys/`, test-only), against servers that
//! authenticate by certificate alone; and key files others can read, refused before use as
//! libpq refuses them.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};
use walconn::{Connection, ErrorKind};

use crate::{block_on, config};

/// The key files, by name, each with the PKCS#8 form of the same key (which rcgen reads to
/// put the public key in a certificate).
const KEYS: [(&str, &str, &str); 4] = [
    (
        "rsa-pkcs1.key",
        include_str!("../keys/rsa-pkcs1.key"),
        include_str!("../keys/rsa-pkcs8.key"),
    ),
    (
        "rsa-pkcs8.key",
        include_str!("../keys/rsa-pkcs8.key"),
        include_str!("../keys/rsa-pkcs8.key"),
    ),
    (
        "p256-sec1.key",
        include_str!("../keys/p256-sec1.key"),
        include_str!("../keys/p256-pkcs8.key"),
    ),
    (
        "p256-pkcs8.key",
        include_str!("../keys/p256-pkcs8.key"),
        include_str!("../keys/p256-pkcs8.key"),
    ),
];

/// A CA, a server certificate for 127.0.0.1 and, for each of [`KEYS`], a certificate for
/// `certuser` and the key file (mode 0600), in a directory of their own.
struct Certs {
    dir: PathBuf,
    ca_pem: String,
    server_cert: String,
    server_key: String,
}

impl Certs {
    fn new(test: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("walconn-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "walconn key test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();
        for (name, pem, pkcs8) in KEYS {
            let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
            client.distinguished_name = DistinguishedName::new();
            client
                .distinguished_name
                .push(DnType::CommonName, "certuser");
            let client = client
                .signed_by(&KeyPair::from_pem(pkcs8).unwrap(), &ca, &ca_key)
                .unwrap();
            std::fs::write(dir.join(format!("{name}.crt")), client.pem()).unwrap();
            write_key(&dir.join(name), pem, 0o600);
        }
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Certs {
            dir,
            ca_pem: ca.pem(),
            server_cert: server.pem(),
            server_key: server_key.serialize_pem(),
        }
    }

    /// A cluster of `major` with TLS on, where `certuser` logs in by certificate alone.
    fn cluster(&self, major: u32) -> pgtest::Cluster {
        let cluster = pgtest::Config::new(major)
            .file("server.crt", self.server_cert.clone())
            .file("server.key", self.server_key.clone())
            .file("ca.crt", self.ca_pem.clone())
            .setting("ssl", "on")
            .setting("ssl_cert_file", "server.crt")
            .setting("ssl_key_file", "server.key")
            .setting("ssl_ca_file", "ca.crt")
            .hba_line("hostssl all certuser 127.0.0.1/32 cert")
            .start()
            .unwrap();
        cluster
            .psql("postgres", "CREATE ROLE certuser LOGIN REPLICATION")
            .unwrap();
        cluster
    }

    /// The conninfo of `certuser` on `cluster` with the certificate of key `name` and the key
    /// file `key`, verifying the server.
    fn conninfo(&self, cluster: &pgtest::Cluster, name: &str, key: &Path) -> String {
        format!(
            "host=127.0.0.1 port={} user=certuser dbname=postgres sslmode=verify-full \
             sslrootcert={} sslcert={} sslkey={}",
            cluster.port(),
            self.dir.join("ca.pem").display(),
            self.dir.join(format!("{name}.crt")).display(),
            key.display()
        )
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `pem` to `path` with permission bits `mode` (whatever the umask).
fn write_key(path: &Path, pem: &str, mode: u32) {
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Connects as `certuser`, checking that the server knows who it is.
async fn connects_as_certuser(conninfo: &str) {
    let mut conn = Connection::connect(&config(conninfo))
        .await
        .unwrap_or_else(|e| panic!("{conninfo}: {e}"));
    assert!(conn.is_tls());
    assert_eq!(
        conn.show("session_authorization").await.unwrap(),
        "certuser"
    );
    conn.close().await.unwrap();
}

#[test]
fn client_keys_in_every_format_authenticate() {
    let certs = Certs::new("keys");
    pgtest::for_each_installed_major(15, |major| {
        let cluster = certs.cluster(major);
        block_on(async {
            for (name, _, _) in KEYS {
                let conninfo = certs.conninfo(&cluster, name, &certs.dir.join(name));
                connects_as_certuser(&conninfo).await;
            }
        });
    });
}

#[test]
fn key_files_others_can_read_are_refused() {
    let certs = Certs::new("key-modes");
    let cluster = certs.cluster(pgtest::installed_majors()[0]);
    let (name, pem, _) = KEYS[1];
    let key = certs.dir.join("modes.key");
    block_on(async {
        let conninfo = certs.conninfo(&cluster, name, &key);
        // Refused whoever owns the file: anything for others, or write or execute for the group.
        for mode in [0o644, 0o604, 0o606, 0o660, 0o620, 0o610, 0o666] {
            write_key(&key, pem, mode);
            let err = Connection::connect(&config(&conninfo)).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Tls, "{mode:o}: {err:?}");
            assert!(!err.is_retryable(), "{mode:o}: {err:?}");
            let text = err.to_string();
            assert!(text.contains("has group or world access"), "{text}");
            assert!(text.contains(&key.display().to_string()), "{text}");
            assert!(text.contains(&format!("(mode {mode:04o})")), "{text}");
        }
        for mode in [0o600, 0o400] {
            write_key(&key, pem, mode);
            connects_as_certuser(&conninfo).await;
        }
        // Readable by the group: allowed for a key of root's (a system-wide key shared with a
        // group), refused for anyone else's.
        write_key(&key, pem, 0o640);
        let result = Connection::connect(&config(&conninfo)).await;
        if std::fs::metadata(&key).unwrap().uid() == 0 {
            result.unwrap().close().await.unwrap();
        } else {
            let err = result.unwrap_err();
            assert!(err.to_string().contains("(mode 0640)"), "{err}");
        }
        // A directory is not a key file.
        let conninfo = certs.conninfo(&cluster, name, &certs.dir);
        let err = Connection::connect(&config(&conninfo)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
        assert!(err.to_string().contains("is not a regular file"), "{err}");
    });
}

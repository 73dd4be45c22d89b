//! The settings' meanings, defaults and refusals.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
use super::*;

/// Parses `s` with `USER=osuser` as the whole environment; shared with the syntax
/// tests in `conninfo`.
pub(super) fn parse(s: &str) -> Config {
    Config::parse_with_env(s, |v| (v == "USER").then(|| "osuser".to_owned())).unwrap()
}

fn err(s: &str) -> String {
    Config::parse_with_env(s, |v| (v == "USER").then(|| "x".to_owned()))
        .unwrap_err()
        .to_string()
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
fn client_encoding_is_utf8_unless_sql_ascii_is_asked_for() {
    assert_eq!(parse("host=h").client_encoding(), ClientEncoding::Utf8);
    for (value, expected) in [
        ("UTF8", ClientEncoding::Utf8),
        ("utf-8", ClientEncoding::Utf8),
        ("Unicode", ClientEncoding::Utf8),
        ("SQL_ASCII", ClientEncoding::SqlAscii),
        ("sql_ascii", ClientEncoding::SqlAscii),
    ] {
        let c = parse(&format!("host=h client_encoding={value}"));
        assert_eq!(c.client_encoding(), expected, "{value}");
    }
    assert!(err("client_encoding=LATIN1").contains("client_encoding \"LATIN1\""));
    let from_env = Config::parse_with_env("host=h user=u", |k| {
        (k == "PGCLIENTENCODING").then(|| "SQL_ASCII".to_owned())
    })
    .unwrap();
    assert_eq!(from_env.client_encoding(), ClientEncoding::SqlAscii);
}

#[test]
fn tcp_user_timeout_is_milliseconds_and_zero_is_the_default() {
    let millis = |c: &str| parse(c).tcp_user_timeout();
    assert_eq!(
        millis("tcp_user_timeout=4500"),
        Some(Duration::from_millis(4500))
    );
    assert_eq!(
        millis("postgresql://h/db?tcp_user_timeout=10"),
        Some(Duration::from_millis(10))
    );
    assert_eq!(millis("tcp_user_timeout=0"), None);
    assert_eq!(millis("tcp_user_timeout=-1"), None);
    assert_eq!(millis("host=h"), None);
    assert_eq!(
        err("tcp_user_timeout=soon"),
        "invalid integer value \"soon\" for tcp_user_timeout"
    );
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

#[test]
fn built_and_parsed_configs_are_equal() {
    let parsed = |s: &str| Config::parse_with_env(s, |_| None).unwrap();
    let built = Config::builder()
        .host("a")
        .host("/run/pg")
        .port(5433)
        .port(5434)
        .user("u")
        .password("pw")
        .dbname("d")
        .application_name("app")
        .options("-c work_mem=64MB")
        .sslmode(SslMode::Require)
        .channel_binding(ChannelBinding::Disable)
        .connect_timeout(Duration::from_secs(1))
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_count(3)
        .tcp_user_timeout(Duration::from_millis(4500))
        .replication(Replication::Physical)
        .target_session_attrs(TargetSessionAttrs::ReadWrite)
        .build()
        .unwrap();
    assert_eq!(
        built,
        parsed(
            "host=a,/run/pg port=5433,5434 user=u password=pw dbname=d application_name=app \
             options='-c work_mem=64MB' sslmode=require channel_binding=disable \
             connect_timeout=1 keepalives_idle=30 keepalives_interval=5 keepalives_count=3 \
             tcp_user_timeout=4500 replication=true target_session_attrs=read-write"
        )
    );
    // Defaults: the socket directory, 5432, the user's database, prefer, keepalives on.
    assert_eq!(
        Config::builder().user("u").build().unwrap(),
        parsed("user=u")
    );
    assert_eq!(
        Config::builder()
            .user("u")
            .keepalives(false)
            .ssl_root_cert(SslRootCert::System)
            .build()
            .unwrap(),
        parsed("user=u keepalives=0 sslrootcert=system")
    );
    assert_eq!(
        Config::builder()
            .user("u")
            .hostaddr("10.0.0.1")
            .hostaddr("10.0.0.2")
            .build()
            .unwrap(),
        parsed("user=u hostaddr=10.0.0.1,10.0.0.2")
    );
    // Zero is "not set", as in the conninfo.
    assert_eq!(
        Config::builder()
            .user("u")
            .connect_timeout(Duration::ZERO)
            .tcp_user_timeout(Duration::ZERO)
            .keepalives_count(0)
            .build()
            .unwrap(),
        parsed("user=u connect_timeout=0 tcp_user_timeout=0 keepalives_count=0")
    );
}

#[test]
fn the_builder_refuses_what_parse_refuses() {
    let err = |b: ConfigBuilder| b.build().unwrap_err().to_string();
    let u = || Config::builder().user("u");
    assert!(err(Config::builder().host("h")).contains("no user name"));
    assert_eq!(
        err(u().host("a").host("b").host("c").port(1).port(2)),
        "could not match 2 port numbers to 3 hosts"
    );
    assert_eq!(
        err(u().host("a").hostaddr("10.0.0.1").hostaddr("10.0.0.2")),
        "could not match 1 host names to 2 hostaddr values"
    );
    assert!(err(u().port(0)).contains("invalid port number"));
    assert_eq!(
        err(u()
            .ssl_root_cert(SslRootCert::System)
            .sslmode(SslMode::Require)),
        "weak sslmode \"require\" may not be used with sslrootcert=system (use \"verify-full\")"
    );
    assert!(err(u()
        .sslmode(SslMode::Disable)
        .channel_binding(ChannelBinding::Require))
    .contains("needs TLS"));
    assert!(err(u().ssl_negotiation(SslNegotiation::Direct)).contains("sslnegotiation=direct"));
    assert!(err(u().ssl_root_cert_pem("not pem")).contains("no PEM certificate"));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["h".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert!(err(u().ssl_client_cert_pem(cert.pem(), "no key")).contains("client key"));
    assert!(
        err(u().ssl_client_cert_pem("no cert", key.serialize_pem())).contains("client certificate")
    );
    // The same messages from the conninfo.
    assert_eq!(
        Config::parse_with_env("user=u sslrootcert=system sslmode=require", |_| None)
            .unwrap_err()
            .to_string(),
        err(u()
            .ssl_root_cert(SslRootCert::System)
            .sslmode(SslMode::Require))
    );
    // Good PEM builds, and the key stays out of Debug output.
    let c = u()
        .ssl_root_cert_pem(cert.pem())
        .ssl_client_cert_pem(cert.pem(), key.serialize_pem())
        .build()
        .unwrap();
    assert!(c.has_client_cert_pem());
    let debug = format!("{c:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn a_password_provider_is_compared_by_identity_and_not_shown() {
    let provider: Arc<dyn PasswordProvider> =
        Arc::new(|_: PasswordRequest| async { Ok::<_, BoxError>("hunter2".to_owned()) });
    let mut a = parse("host=h");
    assert!(!a.has_password_provider());
    a.set_password_provider(provider.clone());
    assert!(a.has_password_provider());
    let mut b = parse("host=h");
    b.set_password_provider(provider);
    assert_eq!(a, b);
    let mut c = parse("host=h");
    c.set_password_provider(Arc::new(|_: PasswordRequest| async {
        Ok::<_, BoxError>("hunter2".to_owned())
    }));
    assert_ne!(a, c);
    assert!(format!("{a:?}").contains("PasswordProvider"));
}

#[test]
fn the_builder_rounds_the_tcp_timers_up_to_the_kernels_units() {
    let c = Config::builder()
        .user("u")
        .keepalives_idle(Duration::from_millis(1500))
        .keepalives_interval(Duration::from_millis(1))
        .tcp_user_timeout(Duration::from_micros(2500))
        .build()
        .unwrap();
    assert_eq!(c.keepalives_idle, Some(Duration::from_secs(2)));
    assert_eq!(c.keepalives_interval, Some(Duration::from_secs(1)));
    assert_eq!(c.tcp_user_timeout(), Some(Duration::from_millis(3)));
}

/// What `f` logs, as tracing-subscriber's fmt layer writes it.
fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = Shared::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn settings_accepted_but_not_honoured_are_warned_about() {
    use conninfo::unhonoured;
    // libpq's defaults and what walconn does anyway: no warning.
    for (key, value) in [
        ("gssencmode", "prefer"),
        ("gssencmode", "disable"),
        ("sslsni", "1"),
        ("ssl_min_protocol_version", "TLSv1.2"),
        ("ssl_max_protocol_version", "TLSv1.3"),
        ("load_balance_hosts", "disable"),
        ("sslmode", "verify-full"),
    ] {
        assert_eq!(unhonoured(key, value), None, "{key}={value}");
    }
    for (key, value) in [
        ("gssencmode", "require"),
        ("sslcompression", "1"),
        ("sslsni", "0"),
        ("ssl_min_protocol_version", "TLSv1.3"),
        ("ssl_max_protocol_version", "TLSv1.2"),
        ("load_balance_hosts", "random"),
    ] {
        assert!(unhonoured(key, value).is_some(), "{key}={value}");
    }

    let quiet = logged(|| {
        parse("host=db gssencmode=disable sslsni=1 load_balance_hosts=disable");
    });
    assert_eq!(quiet, "");
    let log = logged(|| {
        let c = parse("postgresql://db/app?load_balance_hosts=random&gssencmode=require");
        assert_eq!(c.hosts, vec![Host::Tcp("db".into())]);
    });
    assert!(log.contains("WARN"), "{log}");
    assert!(
        log.contains("load_balance_hosts=\"random\" is accepted but not honoured"),
        "{log}"
    );
    assert!(log.contains("gssencmode=\"require\""), "{log}");
    assert!(log.contains("origin=\"conninfo\""), "{log}");

    let log = logged(|| {
        let env = |v: &str| (v == "PGSSLMAXPROTOCOLVERSION").then(|| "TLSv1.2".to_owned());
        Config::parse_with_env("host=db user=u", env).unwrap();
    });
    assert!(
        log.contains("ssl_max_protocol_version=\"TLSv1.2\""),
        "{log}"
    );
    assert!(log.contains("origin=\"PGSSLMAXPROTOCOLVERSION\""), "{log}");
}

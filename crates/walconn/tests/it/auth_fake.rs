//! `channel_binding` against a fake server that asks for what a man in the middle would: no
//! authentication at all, SCRAM without SCRAM-SHA-256-PLUS, or a password. `require` must
//! refuse each before the client gives anything away; `prefer` and `disable` go on.
//!
//! Each case runs over TLS (the fake's own certificate, `sslmode=require`), where channel
//! binding is possible and only the server's offer decides, and over plaintext (`sslmode=prefer`
//! against a fake that refuses TLS), where it never is.

use pgtest::fake::{message, FakeWalsender, FrontendMessage, Startup};
use walconn::{Connection, ErrorKind};

use crate::{block_on, config};

/// AuthenticationSASL with `mechanisms`, in the server's order of preference.
fn sasl(mechanisms: &[&str]) -> Vec<u8> {
    let mut body = 10u32.to_be_bytes().to_vec();
    for m in mechanisms {
        body.extend_from_slice(m.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'R', &body)
}

/// AuthenticationCleartextPassword.
fn cleartext() -> Vec<u8> {
    message(b'R', &3u32.to_be_bytes())
}

/// AuthenticationMD5Password with a fixed salt.
fn md5() -> Vec<u8> {
    let mut body = 5u32.to_be_bytes().to_vec();
    body.extend_from_slice(&[1, 2, 3, 4]);
    message(b'R', &body)
}

/// A fake server, over TLS (a self-signed certificate for 127.0.0.1) or not, sending `request`
/// in place of AuthenticationOk when given; and a conninfo with password `secret` that reaches
/// it (`sslmode=require` over TLS, `prefer` otherwise: the fake then refuses TLS).
async fn fake(tls: bool, request: Option<Vec<u8>>) -> (FakeWalsender, String) {
    let mut startup = Startup::new();
    let sslmode = if tls {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        startup = startup.tls(&cert.pem(), &key.serialize_pem());
        "require"
    } else {
        "prefer"
    };
    if let Some(request) = request {
        startup = startup.auth_request(request);
    }
    let server = FakeWalsender::start_with(startup, |_peer| async {}).await;
    let conninfo = format!("{} password=secret sslmode={sslmode}", server.conninfo());
    (server, conninfo)
}

/// The client's answers to the fake's authentication request, once there are `n`: the fake
/// logs one when the client answers or hangs up, which may come after `connect` returned.
async fn answers(server: &FakeWalsender, n: usize) -> Vec<Option<FrontendMessage>> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answers = server.log().auth_answers();
        if answers.len() >= n {
            assert_eq!(answers.len(), n, "{answers:?}");
            return answers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} answers, waiting for {n}",
            answers.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The mechanism and the client-first-message of a SASLInitialResponse.
fn initial_response(answer: &Option<FrontendMessage>) -> (String, String) {
    let answer = answer.as_ref().expect("the client answered");
    assert_eq!(answer.tag, b'p', "{answer:?}");
    let nul = answer.body.iter().position(|&b| b == 0).unwrap();
    let mechanism = String::from_utf8(answer.body[..nul].to_vec()).unwrap();
    let data = &answer.body[nul + 5..];
    (mechanism, String::from_utf8(data.to_vec()).unwrap())
}

/// Connects, checks whether TLS is in use, and closes.
async fn connects(conninfo: &str, tls: bool) {
    let conn = Connection::connect(&config(conninfo))
        .await
        .unwrap_or_else(|e| panic!("{conninfo}: {e}"));
    assert_eq!(conn.is_tls(), tls, "{conninfo}");
    conn.close().await.unwrap();
}

/// Fails to connect with an authentication error whose message has `says`.
async fn refused(conninfo: &str, says: &str) {
    match Connection::connect(&config(conninfo)).await {
        Ok(_) => panic!("{conninfo}: connected"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Auth, "{conninfo}: {e:?}");
            assert!(e.is_auth_failed(), "{conninfo}: {e:?}");
            assert!(!e.is_retryable(), "{conninfo}: {e:?}");
            assert!(e.to_string().contains(says), "{conninfo}: {e}");
        }
    }
}

#[test]
fn channel_binding_require_refuses_a_server_that_skips_sasl() {
    // AuthenticationOk at once, as a trust server (or a man in the middle) says it: nothing
    // was bound to the TLS connection, so `require` has nothing to rely on.
    block_on(async {
        for tls in [true, false] {
            let (_server, conninfo) = fake(tls, None).await;
            refused(
                &format!("{conninfo} channel_binding=require"),
                "authenticated the client without it",
            )
            .await;
            connects(&format!("{conninfo} channel_binding=prefer"), tls).await;
            connects(&format!("{conninfo} channel_binding=disable"), tls).await;
        }
    });
}

#[test]
fn channel_binding_require_refuses_scram_without_plus() {
    block_on(async {
        for tls in [true, false] {
            let (server, conninfo) = fake(tls, Some(sasl(&["SCRAM-SHA-256"]))).await;
            refused(
                &format!("{conninfo} channel_binding=require"),
                "did not offer SCRAM-SHA-256-PLUS",
            )
            .await;
            // Refused before the exchange starts: the client hung up without answering.
            assert_eq!(answers(&server, 1).await, [None]);
            // prefer and disable use SCRAM-SHA-256. The fake then says AuthenticationOk
            // mid-exchange, which the client refuses; its first message is what counts. Over
            // TLS, prefer's "y" says the client could have bound, so that a server that did
            // offer -PLUS (and was hidden by a man in the middle) detects the downgrade.
            let prefer = if tls { "y,," } else { "n,," };
            for (i, (binding, gs2)) in [("prefer", prefer), ("disable", "n,,")]
                .into_iter()
                .enumerate()
            {
                Connection::connect(&config(&format!("{conninfo} channel_binding={binding}")))
                    .await
                    .unwrap_err();
                let (mechanism, first) = initial_response(&answers(&server, i + 2).await[i + 1]);
                assert_eq!(mechanism, "SCRAM-SHA-256", "{binding}");
                assert!(
                    first.starts_with(&format!("{gs2}n=,r=")),
                    "{binding}: {first}"
                );
            }
        }
        // Offered with -PLUS over TLS, require and prefer bind to the certificate and disable
        // does not.
        let (server, conninfo) =
            fake(true, Some(sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]))).await;
        for (i, (binding, mechanism, gs2)) in [
            ("require", "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,"),
            ("prefer", "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,"),
            ("disable", "SCRAM-SHA-256", "n,,"),
        ]
        .into_iter()
        .enumerate()
        {
            Connection::connect(&config(&format!("{conninfo} channel_binding={binding}")))
                .await
                .unwrap_err();
            let (chosen, first) = initial_response(&answers(&server, i + 1).await[i]);
            assert_eq!(chosen, mechanism, "{binding}");
            assert!(first.starts_with(gs2), "{binding}: {first}");
        }
    });
}

#[test]
fn channel_binding_require_refuses_a_password_request() {
    // A cleartext or MD5 password request binds nothing; worse, answering it hands the
    // password (or a hash that replays) to whoever asked. `require` must hang up unanswered.
    block_on(async {
        for tls in [true, false] {
            for (method, request) in [("cleartext", cleartext()), ("MD5", md5())] {
                let (server, conninfo) = fake(tls, Some(request)).await;
                refused(
                    &format!("{conninfo} channel_binding=require"),
                    "asked for a password without SCRAM",
                )
                .await;
                assert_eq!(answers(&server, 1).await, [None], "{method}");
                connects(&format!("{conninfo} channel_binding=prefer"), tls).await;
                let answer = answers(&server, 2).await[1].clone().unwrap();
                assert_eq!(answer.tag, b'p', "{method}");
                let expected: &[u8] = if method == "MD5" { b"md5" } else { b"secret\0" };
                assert!(answer.body.starts_with(expected), "{method}: {answer:?}");
            }
        }
    });
}

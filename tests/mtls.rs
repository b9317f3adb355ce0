//! Mutual TLS: a client certificate's common name is the nick; a missing,
//! untrusted or expired certificate is refused at the handshake, and the
//! client says why; `make client-cert` makes pairs the server accepts.

use secure_chat_test_support as support;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::thread;

use rustls::AlertDescription;
use secure_chat::client::{self, ClientOptions};
use secure_chat::duplex::HandshakeError;
use secure_chat::error::report;
use secure_chat::screen::Screen;
use secure_chat::server::Limits;
use secure_chat::tls::{self, Identity, Trust};
use secure_chat::Error;
use support::{
    cert_args, client_options, finish, tls_connect_as, ClientFlaw, Incoming, Pki, ServerProcess,
    TempDir, TestClient, TestServer, CLIENT, TIMEOUT,
};

/// Connects with `identity` and reads the greeting.
fn join_as(server: &TestServer, pki: &Pki, identity: &Identity) -> TestClient {
    let mut client = TestClient::connect_as(server.addr, &pki.ca, identity);
    client.read_greeting();
    client
}

#[test]
fn certificate_name_is_the_nick_and_cannot_change() {
    let pki = Pki::new();
    let server = TestServer::start_mutual(&pki);
    let mut alice = join_as(
        &server,
        &pki,
        &pki.client_identity("alice", ClientFlaw::None),
    );
    assert_eq!(alice.nick, "alice");

    alice.send("/nick bob");
    assert_eq!(
        alice.recv(),
        "error your nick is alice, the name in your certificate; it cannot be changed"
    );
    // Still alice, for everyone.
    alice.send("still me");
    assert_eq!(alice.recv(), "chat alice still me");

    let mut bob = join_as(&server, &pki, &pki.client_identity("bob", ClientFlaw::None));
    assert_eq!(bob.nick, "bob");
    assert_eq!(alice.recv(), "notice bob joined #lobby");
    bob.send("/whois alice");
    assert_eq!(
        bob.recv_until(|line| line.contains("alice is")),
        "notice alice is in #lobby, certificate CN=alice"
    );
    server.stop();
}

/// A person is a certificate's key: another certificate whose name differs
/// only in case (or not at all), with its own key, is refused while the
/// first is here, and the private lines sent to the name stay with it.
#[test]
fn a_certificate_with_another_key_is_not_the_same_person() {
    let pki = Pki::new();
    let server = TestServer::start_mutual(&pki);
    let alice = join_as(
        &server,
        &pki,
        &pki.client_identity("alice", ClientFlaw::None),
    );
    let mut bob = join_as(&server, &pki, &pki.client_identity("bob", ClientFlaw::None));
    for name in ["Alice", "alice"] {
        // A new key each time, signed by the same CA.
        let impostor = TestClient::connect_as(
            server.addr,
            &pki.ca,
            &pki.client_identity(name, ClientFlaw::None),
        );
        assert_eq!(
            impostor.next(),
            Incoming::Line(
                "error alice is connected with another certificate (another key); \
                 a name is one person's at a time"
                    .into()
            )
        );
        assert_eq!(impostor.next(), Incoming::Closed);
    }
    bob.send("/msg Alice still yours");
    assert_eq!(
        alice.recv_until(|line| line.starts_with("private ")),
        "private bob alice still yours"
    );
    server.stop();
}

/// Connects twice with one client configuration (so one session store)
/// and `identity`; true if the second connection resumed the first's TLS
/// session instead of authenticating again.
fn second_connection_resumed(server: &TestServer, pki: &Pki, identity: Option<&Identity>) -> bool {
    let options = ClientOptions {
        identity: identity.cloned(),
        ..client_options(server.addr, &pki.ca)
    };
    let config = tls::client_config(&options.trust, options.identity.as_ref()).unwrap();
    let connect = || {
        let socket = client::dial(&options.addr, TIMEOUT).unwrap();
        client::handshake(socket, Arc::clone(&config), &options).unwrap()
    };
    // A ticket, if the server gives one, comes before the greeting.
    let mut first = TestClient::over(connect().into_parts());
    first.read_greeting();
    let second = connect();
    let resumed = second.resumed();
    let mut second = TestClient::over(second.into_parts());
    second.read_greeting();
    first.close();
    second.close();
    resumed
}

/// A resumed session would carry the chain checked when it began: a client
/// reconnecting within a ticket's lifetime would go on as the certificate's
/// owner past its expiry. With client certificates, every connection
/// presents its certificate again.
#[test]
fn with_client_certificates_no_session_is_resumed() {
    let pki = Pki::new();
    // The control: the same client resumes with a server that asks for no
    // certificate, so the check below can tell.
    let plain = TestServer::start(&pki);
    assert!(second_connection_resumed(&plain, &pki, None));
    plain.stop();

    let mutual = TestServer::start_mutual(&pki);
    let alice = pki.client_identity("alice", ClientFlaw::None);
    assert!(!second_connection_resumed(&mutual, &pki, Some(&alice)));
    mutual.stop();
}

/// A laptop and a phone, or a reconnect before the old connection is
/// known dead: one certificate, one person, several sessions.
#[test]
fn a_second_connection_with_the_same_certificate_is_another_session() {
    let pki = Pki::new();
    let limits = Limits {
        max_sessions: 2,
        ..support::test_limits()
    };
    let config = tls::server_config(&pki.cert, &pki.key, Some(&pki.signer)).unwrap();
    let server = TestServer::start_config(config, limits);
    let identity = pki.client_identity("alice", ClientFlaw::None);
    let mut laptop = join_as(&server, &pki, &identity);
    let mut phone = TestClient::connect_as(server.addr, &pki.ca, &identity);
    assert_eq!(
        phone.recv(),
        format!("notice {}", secure_chat::protocol::WELCOME)
    );
    assert_eq!(phone.recv(), "notice you are alice (2 sessions)");
    assert!(phone
        .recv()
        .starts_with("notice you are in #lobby (1 person here)"));

    // What one says, the other sees.
    laptop.send("from the laptop");
    assert_eq!(laptop.recv(), "chat alice from the laptop");
    assert_eq!(phone.recv(), "chat alice from the laptop");
    phone.send("/whois alice");
    assert_eq!(
        phone.recv(),
        "notice alice is in #lobby, certificate CN=alice, 2 sessions"
    );

    // A third is one too many.
    let third = TestClient::connect_as(server.addr, &pki.ca, &identity);
    assert_eq!(
        third.next(),
        Incoming::Line(
            "error alice has 2 sessions already, the most one person may have; \
             close one and try again"
                .into()
        )
    );
    assert_eq!(third.next(), Incoming::Closed);
    server.stop();
}

#[test]
fn common_name_that_is_not_a_nick_is_refused_with_the_name() {
    let pki = Pki::new();
    let server = TestServer::start_mutual(&pki);
    let identity = pki.client_identity("not a nick", ClientFlaw::None);
    let client = TestClient::connect_as(server.addr, &pki.ca, &identity);
    assert_eq!(
        client.next(),
        Incoming::Line(
            "error your certificate's common name (\"not a nick\") is not a valid nick: \
             it must be 1 to 24 letters, digits, _ or -, starting with a letter or _"
                .into()
        )
    );
    assert_eq!(client.next(), Incoming::Closed);
    server.stop();
}

/// Connects with the library's client and chats with no input; returns
/// what it printed and how it ended. Bounded by [`TIMEOUT`].
fn library_client(
    server: &TestServer,
    pki: &Pki,
    identity: Option<Identity>,
) -> (String, Result<(), Error>) {
    let options = ClientOptions {
        addr: format!("localhost:{}", server.addr.port()),
        server_name: None,
        trust: Trust::CaFile(pki.ca.clone()),
        identity,
        timeout: TIMEOUT,
    };
    // In TLS 1.3 the client's side of the handshake is done before the
    // server has looked at its certificate: connecting succeeds, and a
    // refusal arrives on the first read.
    let connected = client::connect(&options).expect("the client's side of the handshake");
    let (done, finished) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let mut printed = Vec::new();
        let mut status = Vec::new();
        let result = connected.chat(
            std::io::empty(),
            &mut printed,
            Screen::new(false),
            &mut status,
        );
        assert!(status.is_empty(), "a refused client said it connected");
        let _ = done.send((String::from_utf8(printed).unwrap(), result));
    });
    finished
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("the client did not finish within {TIMEOUT:?}"))
}

/// The alert a refused client received, and the hint it was given.
fn refusal(result: Result<(), Error>) -> (AlertDescription, String, String) {
    let err = result.expect_err("the server accepted the client");
    let message = report(&err);
    match err {
        Error::Handshake {
            source: HandshakeError::Tls(rustls::Error::AlertReceived(alert)),
            hint: Some(hint),
            ..
        } => (alert, hint, message),
        other => panic!("expected a handshake alert with a hint, got {other:?}: {message}"),
    }
}

/// How the chat-client binary fares against `server` with these extra
/// arguments and this input.
fn run_client(server: &TestServer, pki: &Pki, extra: &[&OsStr], input: &str) -> Output {
    support::run(
        Command::new(&CLIENT)
            .arg("--addr")
            .arg(format!("localhost:{}", server.addr.port()))
            .arg("--ca")
            .arg(&pki.ca)
            .args(extra),
        input,
    )
}

fn identity_args(identity: &Identity) -> [&OsStr; 4] {
    [
        OsStr::new("--cert"),
        identity.cert.as_os_str(),
        OsStr::new("--key"),
        identity.key.as_os_str(),
    ]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The binary's error for a refused handshake: exit code 1, one clear
/// line on stderr, nothing typed reached anyone.
fn binary_refusal(server: &TestServer, pki: &Pki, extra: &[&OsStr]) -> String {
    let output = run_client(server, pki, extra, "a secret\n");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!text(&output.stdout).contains("a secret"));
    let error = stderr
        .lines()
        .find(|line| line.starts_with("chat-client: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    error.to_string()
}

#[test]
fn client_without_a_certificate_is_told_to_pass_one() {
    let pki = Pki::new();
    let server = TestServer::start_mutual(&pki);
    let watcher = join_as(
        &server,
        &pki,
        &pki.client_identity("watcher", ClientFlaw::None),
    );

    let (printed, result) = library_client(&server, &pki, None);
    assert_eq!(printed, "");
    let (alert, hint, message) = refusal(result);
    assert_eq!(alert, AlertDescription::CertificateRequired, "{message}");
    assert!(hint.contains("--cert and --key"), "{message}");

    let port = server.addr.port();
    let error = binary_refusal(&server, &pki, &[]);
    assert_eq!(
        error,
        format!(
            "chat-client: TLS handshake with localhost:{port} failed: the peer refused the \
             handshake (alert CertificateRequired): the server accepts only clients with a \
             certificate: pass --cert and --key (`make client-cert NAME=you` makes a pair)"
        )
    );
    // Nobody joined: the next thing the watcher hears is its own line.
    let mut watcher = watcher;
    watcher.send("marker");
    assert_eq!(watcher.recv(), "chat watcher marker");
    server.stop();
}

#[test]
fn client_certificate_from_another_ca_is_refused_with_a_reason() {
    let pki = Pki::new();
    let server = TestServer::start_mutual(&pki);
    let stranger = pki.client_identity("alice", ClientFlaw::OtherCa);

    let (printed, result) = library_client(&server, &pki, Some(stranger.clone()));
    assert_eq!(printed, "");
    let (alert, hint, message) = refusal(result);
    assert_eq!(alert, AlertDescription::UnknownCA, "{message}");
    assert!(hint.contains("--client-ca"), "{message}");

    let port = server.addr.port();
    let error = binary_refusal(&server, &pki, &identity_args(&stranger));
    assert_eq!(
        error,
        format!(
            "chat-client: TLS handshake with localhost:{port} failed: the peer refused the \
             handshake (alert UnknownCA): the server does not accept your client certificate: \
             is it signed by the CA the server trusts (its --client-ca)?"
        )
    );
    server.stop();
}

#[test]
fn expired_client_certificate_is_refused_with_a_reason() {
    let pki = Pki::new();
    let server = TestServer::start_mutual(&pki);
    let expired = pki.client_identity("alice", ClientFlaw::Expired);

    let (printed, result) = library_client(&server, &pki, Some(expired.clone()));
    assert_eq!(printed, "");
    let (alert, hint, message) = refusal(result);
    assert_eq!(alert, AlertDescription::CertificateExpired, "{message}");
    assert!(hint.contains("expired"), "{message}");

    let port = server.addr.port();
    let error = binary_refusal(&server, &pki, &identity_args(&expired));
    assert_eq!(
        error,
        format!(
            "chat-client: TLS handshake with localhost:{port} failed: the peer refused the \
             handshake (alert CertificateExpired): your client certificate has expired: make \
             a new one (`make client-cert NAME=you`)"
        )
    );
    server.stop();
}

/// A refused client should not first claim to be connected: in TLS 1.3
/// its side of the handshake ends before the server has judged its
/// certificate, and the binary prints its `connected to ...` summary then.
#[test]
fn refused_client_does_not_say_it_connected() {
    let pki = Pki::new();
    let server = TestServer::start_mutual(&pki);
    let output = run_client(&server, &pki, &[], "");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CertificateRequired"), "{stderr}");
    assert!(!stderr.contains("connected to"), "{stderr}");
    server.stop();
}

#[test]
fn chat_client_binary_chats_under_its_certificate_name() {
    let pki = Pki::new();
    let server = TestServer::start_mutual(&pki);
    let mut watcher = join_as(
        &server,
        &pki,
        &pki.client_identity("watcher", ClientFlaw::None),
    );
    let alice = pki.client_identity("alice", ClientFlaw::None);

    let output = run_client(&server, &pki, &identity_args(&alice), "/nick bob\nhello\n");
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(stdout.contains("*** you are alice\n"), "{stdout}");
    assert!(
        stdout.contains("!!! your nick is alice, the name in your certificate"),
        "{stdout}"
    );
    assert!(stdout.contains("<alice> hello\n"), "{stdout}");
    assert_eq!(
        watcher.recv_until(|line| line.starts_with("chat ")),
        "chat alice hello"
    );

    // --cert without --key is a usage error, before any connection.
    let half = [OsStr::new("--cert"), alice.cert.as_os_str()];
    let output = run_client(&server, &pki, &half, "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("--cert and --key go together"),
        "{}",
        text(&output.stderr)
    );
    watcher.send("marker");
    assert_eq!(
        watcher.recv_until(|line| line.starts_with("chat ")),
        "chat watcher marker"
    );
    server.stop();
}

/// Runs `make` in the crate's directory with these arguments.
fn make(args: &[&OsStr]) -> Output {
    let child = Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        // Not the jobserver of a `make test` this may run under.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child)
}

#[test]
fn make_client_cert_makes_a_pair_the_server_accepts() {
    let dir = TempDir::new();
    let certs_dir = {
        let mut arg = OsStr::new("CERTS_DIR=").to_owned();
        arg.push(dir.path());
        arg
    };
    let made = make(&[OsStr::new("certs"), &certs_dir]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let made = make(&[
        OsStr::new("client-cert"),
        OsStr::new("NAME=alice"),
        &certs_dir,
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));

    let config = tls::server_config(
        &dir.path().join("server.crt"),
        &dir.path().join("server.key"),
        Some(&dir.path().join("ca.crt")),
    )
    .unwrap();
    let server = TestServer::start_config(config, support::test_limits());
    let identity = Identity {
        cert: dir.path().join("alice.crt"),
        key: dir.path().join("alice.key"),
    };
    let mut alice = TestClient::connect_as(server.addr, &dir.path().join("ca.crt"), &identity);
    alice.read_greeting();
    assert_eq!(alice.nick, "alice");
    alice.send("/whois alice");
    assert_eq!(
        alice.recv(),
        "notice alice is in #lobby, certificate CN=alice"
    );
    server.stop();

    // Without NAME: a usage message, and no key or certificate made.
    let before = files_in(dir.path());
    let made = make(&[OsStr::new("client-cert"), &certs_dir]);
    assert!(!made.status.success());
    assert!(
        text(&made.stderr).contains("usage: make client-cert NAME=alice"),
        "{}",
        text(&made.stderr)
    );
    assert_eq!(files_in(dir.path()), before);
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn server_log_names_the_certificate_and_never_what_was_said() {
    let pki = Pki::new();
    let mut args = cert_args(&pki.cert, &pki.key);
    args.extend([OsStr::new("--client-ca"), pki.signer.as_os_str()]);
    let mut server = ServerProcess::start(&args);
    let identity = pki.client_identity("alice", ClientFlaw::None);
    let (conn, socket) = tls_connect_as(server.addr, &pki.ca, Some(&identity));
    let local = socket.local_addr().unwrap();
    let mut alice = TestClient::over((conn, socket));
    alice.read_greeting();
    let secret = "the-password-is-swordfish";
    alice.send(secret);
    assert_eq!(alice.recv(), format!("chat alice {secret}"));
    alice.close();
    assert_eq!(alice.expect_end(), Incoming::Closed);

    let ours = format!(" 127.0.0.1:{}: ", local.port());
    let connected = server.wait_for_log(|line| line.contains(&ours) && line.contains("connected"));
    assert!(
        connected.contains(": connected, TLSv1.3, ")
            && connected.ends_with(", peer certificate CN=alice"),
        "{connected}"
    );
    let closed = server.wait_for_log(|line| line.contains(&ours) && line.contains(": closed, "));
    let (bytes_in, bytes_out) = closed
        .rsplit_once(": closed, ")
        .and_then(|(_, counts)| counts.strip_suffix(" bytes out"))
        .and_then(|counts| counts.split_once(" bytes in, "))
        .and_then(|(i, o)| Some((i.parse::<u64>().ok()?, o.parse::<u64>().ok()?)))
        .unwrap_or_else(|| panic!("not `closed, N bytes in, M bytes out`: {closed}"));
    assert!(bytes_in > 0 && bytes_out > 0, "{closed}");

    // `stop` checks that the server exited with status 0.
    let log = server.stop();
    assert!(
        !log.iter().any(|line| line.contains("swordfish")),
        "{log:#?}"
    );
}

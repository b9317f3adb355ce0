//! Certificates: the mistakes a learner can make with them, each refused
//! with a message that says how to fix it, and the ones `make certs` makes.

use secure_chat_test_support as support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;

use rustls::{Connection, ServerConnection};
use secure_chat::client::{self, ClientOptions};
use secure_chat::duplex::{self, HandshakeError};
use secure_chat::error::report;
use secure_chat::tls::{self, Trust};
use secure_chat::{x509, Error};
use support::{Flaw, Pki, TempDir, TestClient, TestServer, TIMEOUT};

/// What a one-connection TLS server saw of a client.
struct Seen {
    handshake: Result<(), String>,
    plaintext: Vec<u8>,
}

/// Serves one connection with `pki`'s certificate and records what the
/// client did; for the client's failure cases, where our real server would
/// not show whether anything was sent.
fn serve_once(pki: &Pki) -> (String, thread::JoinHandle<Seen>) {
    let config = tls::server_config(&pki.cert, &pki.key, None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("localhost:{}", listener.local_addr().unwrap().port());
    let handle = thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let mut conn = Connection::Server(ServerConnection::new(config).unwrap());
        let handshake = duplex::handshake(&mut conn, &socket, TIMEOUT).map_err(|e| e.to_string());
        let mut plaintext = Vec::new();
        if handshake.is_ok() {
            let (mut reader, _writer) = duplex::split(conn, Arc::new(socket));
            socket_read_all(&mut reader, &mut plaintext);
        }
        Seen {
            handshake,
            plaintext,
        }
    });
    (addr, handle)
}

fn socket_read_all(reader: &mut duplex::ReadHalf, out: &mut Vec<u8>) {
    while let Ok(duplex::Received::Data { .. }) = reader.receive(&mut |b| out.extend_from_slice(b))
    {
    }
}

fn options(addr: &str, trust: Trust) -> ClientOptions {
    ClientOptions {
        addr: addr.to_string(),
        server_name: None,
        trust,
        identity: None,
        timeout: TIMEOUT,
    }
}

/// Connects to a server with a flawed certificate; returns the client's
/// error message, after checking that the server got no data at all.
fn refused(flaw: Flaw) -> String {
    let pki = Pki::with_flaw(flaw);
    let (addr, server) = serve_once(&pki);
    let err = match client::connect(&options(&addr, Trust::CaFile(pki.ca.clone()))) {
        Ok(_) => panic!("connected despite {flaw:?}"),
        Err(err) => err,
    };
    assert!(matches!(
        err,
        Error::Handshake {
            source: HandshakeError::Tls(_),
            ..
        }
    ));
    let seen = server.join().unwrap();
    let server_error = seen
        .handshake
        .expect_err("the server finished the handshake");
    assert!(
        server_error.contains("the peer refused the handshake"),
        "server saw: {server_error}"
    );
    assert!(seen.plaintext.is_empty(), "the client sent data");
    report(&err)
}

#[test]
fn untrusted_ca_is_refused_with_a_hint_about_ca() {
    let message = refused(Flaw::UntrustedCa);
    assert!(
        message.contains("certificate not trusted (UnknownIssuer)"),
        "{message}"
    );
    assert!(message.contains("does --ca point at"), "{message}");
}

#[test]
fn a_remade_ca_with_the_same_name_is_refused_with_a_hint_about_ca() {
    let message = refused(Flaw::RemadeCa);
    assert!(
        message.contains("certificate not trusted (BadSignature)"),
        "{message}"
    );
    assert!(message.contains("does --ca point at"), "{message}");
}

#[test]
fn expired_certificate_is_refused_with_a_hint_to_renew() {
    let message = refused(Flaw::Expired);
    assert!(message.contains("certificate expired"), "{message}");
    assert!(message.contains("make clean-certs certs"), "{message}");
}

#[test]
fn certificate_for_another_host_is_refused_with_a_hint_about_names() {
    let message = refused(Flaw::OtherHost);
    assert!(
        message.contains("certificate is for another host"),
        "{message}"
    );
    assert!(message.contains("example.org"), "{message}");
    assert!(message.contains("--server-name"), "{message}");
}

#[test]
fn ca_certificate_used_as_server_certificate_is_refused() {
    let message = refused(Flaw::CaAsLeaf);
    assert!(message.contains("CaUsedAsEndEntity"), "{message}");
    assert!(
        message.contains("leaf certificate signed by the CA"),
        "{message}"
    );
}

#[test]
fn public_roots_do_not_trust_a_local_ca() {
    let pki = Pki::new();
    let (addr, server) = serve_once(&pki);
    let err = client::connect(&options(&addr, Trust::PublicRoots))
        .err()
        .expect("a local CA is not a public one");
    let message = report(&err);
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("pass --ca"), "{message}");
    assert!(server.join().unwrap().plaintext.is_empty());
}

#[test]
fn server_name_override_is_what_gets_checked() {
    let pki = Pki::with_flaw(Flaw::OtherHost);
    let (addr, server) = serve_once(&pki);
    let mut opts = options(&addr, Trust::CaFile(pki.ca.clone()));
    opts.server_name = Some("example.org".into());
    let connected = client::connect(&opts).expect("example.org is in the certificate");
    assert!(
        connected.summary.contains("TLSv1.3"),
        "{}",
        connected.summary
    );
    drop(connected);
    server.join().unwrap().handshake.unwrap();
}

#[test]
fn summary_names_version_suite_group_and_subject() {
    let pki = Pki::new();
    let (addr, server) = serve_once(&pki);
    let connected = client::connect(&options(&addr, Trust::CaFile(pki.ca.clone()))).unwrap();
    let summary = &connected.summary;
    for part in ["TLSv1.3", "TLS13_", "X25519MLKEM768", "CN=localhost"] {
        assert!(summary.contains(part), "{part} missing from {summary}");
    }
    drop(connected);
    server.join().unwrap().handshake.unwrap();
}

/// A client that speaks only TLS 1.2 gets AES-128-GCM too, as the README
/// says of the server's choice.
#[test]
fn a_tls_1_2_client_gets_aes_128_gcm() {
    let pki = Pki::new();
    let (addr, server) = serve_once(&pki);
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(tls::load_certs(&pki.ca).unwrap());
    let config = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    let options = options(&addr, Trust::CaFile(pki.ca.clone()));
    let socket = client::dial(&addr, TIMEOUT).unwrap();
    let connected = client::handshake(socket, Arc::new(config), &options).unwrap();
    let summary = &connected.summary;
    for part in ["TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"] {
        assert!(summary.contains(part), "{part} missing from {summary}");
    }
    drop(connected);
    server.join().unwrap().handshake.unwrap();
}

#[test]
fn server_refuses_a_key_that_does_not_match_its_certificate() {
    let one = Pki::new();
    let other = Pki::new();
    let err = tls::server_config(&one.cert, &other.key, None)
        .err()
        .unwrap();
    let message = report(&err);
    assert!(
        message.contains("does not belong to the certificate"),
        "{message}"
    );
    assert!(
        message.contains(&other.key.display().to_string()),
        "{message}"
    );
}

#[test]
fn unreadable_and_empty_files_are_named() {
    let pki = Pki::new();
    let missing = pki.path("missing.crt");
    let message = report(&tls::load_certs(&missing).unwrap_err());
    assert!(
        message.starts_with(&format!("cannot read {}", missing.display())),
        "{message}"
    );

    let empty = pki.path("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    let message = report(&tls::load_certs(&empty).unwrap_err());
    assert_eq!(
        message,
        format!("{} holds no PEM certificate", empty.display())
    );
    let message = report(&tls::load_private_key(&empty).unwrap_err());
    assert_eq!(
        message,
        format!("{} holds no PEM private key", empty.display())
    );
    // A certificate is not a key.
    let message = report(&tls::load_private_key(&pki.cert).unwrap_err());
    assert!(message.contains("holds no PEM private key"), "{message}");
}

#[test]
fn subject_is_read_from_a_certificate() {
    let pki = Pki::new();
    let der = tls::load_certs(&pki.cert).unwrap().remove(0);
    assert_eq!(x509::subject(&der).as_deref(), Some("CN=localhost"));
    assert_eq!(x509::common_name(&der).as_deref(), Some("localhost"));
    let ca = tls::load_certs(&pki.ca).unwrap().remove(0);
    assert_eq!(x509::common_name(&ca).as_deref(), Some("test CA"));
}

/// Runs `make certs` into a fresh directory.
fn make_certs(dir: &Path) {
    let status = Command::new("make")
        .args(["-s", "certs"])
        .arg(format!("CERTS_DIR={}", dir.display()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("make runs");
    assert!(
        status.status.success(),
        "make certs failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn make_certs_output_is_accepted_by_server_and_client() {
    let dir = TempDir::new();
    make_certs(dir.path());
    let pki = Pki::from_dir(dir.path());

    let cert = tls::load_certs(&pki.cert).unwrap().remove(0);
    assert_eq!(x509::subject(&cert).as_deref(), Some("CN=localhost"));
    let server = TestServer::start(&pki);
    let mut client = TestClient::connect(server.addr, &pki.ca);
    client.send("made by make");
    assert_eq!(client.recv(), format!("chat {} made by make", client.nick));

    // Reached by its IP address, the certificate must name that too.
    let opts = ClientOptions {
        addr: server.addr.to_string(),
        server_name: None,
        trust: Trust::CaFile(pki.ca.clone()),
        identity: None,
        timeout: TIMEOUT,
    };
    client::connect(&opts).expect("127.0.0.1 is in the certificate");
    server.stop();
}

#[test]
fn make_certs_keeps_existing_certificates() {
    let dir = TempDir::new();
    make_certs(dir.path());
    let before = std::fs::read(dir.path().join("server.crt")).unwrap();
    make_certs(dir.path());
    let after = std::fs::read(dir.path().join("server.crt")).unwrap();
    assert_eq!(before, after, "make certs replaced an existing certificate");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("server.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o077, 0, "the private key is readable by others");
}

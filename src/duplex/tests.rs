//! Unit tests of the duplex: the handshake loop, both sides over a
//! loopback TCP pair with certificates made here, and the two halves. The
//! client's and server's own use is tested in tests/.

use super::*;

use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use secure_chat_test_support::{bad_record, read_plaintext_until, typeless_record};

/// The longest any wait of these tests may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// Two ends of one loopback TCP connection.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let near = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (far, _) = listener.accept().unwrap();
    (near, far)
}

/// A CA, and a server configuration whose leaf (for `localhost`) it
/// signed.
struct Pki {
    ca: rustls::pki_types::CertificateDer<'static>,
    server: Arc<ServerConfig>,
}

fn ca_params(name: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_params = ca_params("duplex test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    Pki {
        ca: ca.der().clone(),
        server: Arc::new(server),
    }
}

/// A CA of its own, which signed nothing the server presents.
fn stranger() -> rustls::pki_types::CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    ca_params("stranger CA")
        .self_signed(&key)
        .unwrap()
        .der()
        .clone()
}

fn client(trusted: rustls::pki_types::CertificateDer<'static>) -> Connection {
    client_with(client_config(trusted))
}

fn client_config(trusted: rustls::pki_types::CertificateDer<'static>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(trusted).unwrap();
    ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn client_with(config: ClientConfig) -> Connection {
    let name = ServerName::try_from("localhost").unwrap();
    Connection::Client(ClientConnection::new(Arc::new(config), name).unwrap())
}

fn server(pki: &Pki) -> Connection {
    Connection::Server(ServerConnection::new(Arc::clone(&pki.server)).unwrap())
}

/// Runs `side`'s handshake on a thread of its own; its outcome (and the
/// connection) arrives on the channel, so every wait for it is bounded.
fn handshake_in_thread(
    mut side: Connection,
    socket: TcpStream,
    timeout: Duration,
) -> mpsc::Receiver<(Result<(), HandshakeError>, Connection, TcpStream)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let result = handshake(&mut side, &socket, timeout);
        // The test may have failed and gone; nothing to tell then.
        let _ = tx.send((result, side, socket));
    });
    rx
}

#[test]
fn both_sides_finish_the_handshake_and_agree_on_keys() {
    let pki = pki();
    let (near, far) = tcp_pair();
    let server = handshake_in_thread(server(&pki), far, PATIENCE);
    let mut client = client(pki.ca.clone());
    handshake(&mut client, &near, PATIENCE).unwrap();
    let (result, mut server, far) = server.recv_timeout(PATIENCE).unwrap();
    result.unwrap();

    assert!(!client.is_handshaking() && !server.is_handshaking());
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // The deadline's timeouts are gone: later reads wait for the peer.
    assert_eq!(near.read_timeout().unwrap(), None);
    assert_eq!(far.read_timeout().unwrap(), None);
    // The server sent its leaf alone; the client trusted it through the
    // CA in its roots (the stranger-CA test shows the other side).
    let leaf = client.peer_certificates().unwrap();
    assert_eq!(leaf.len(), 1);

    // Both hold the same keys: what one encrypts the other decrypts.
    client.writer().write_all(b"hello\n").unwrap();
    while client.wants_write() {
        client.write_tls(&mut &near).unwrap();
    }
    far.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut plaintext = Vec::new();
    while plaintext.len() < b"hello\n".len() {
        assert!(server.read_tls(&mut &far).unwrap() > 0, "the pipe closed");
        server.process_new_packets().unwrap();
        match server.reader().read_to_end(&mut plaintext) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("the stream ended: {other:?}"),
        }
    }
    assert_eq!(plaintext, b"hello\n");
}

#[test]
fn a_server_from_another_ca_is_refused_and_told_why() {
    let pki = pki();
    let (near, far) = tcp_pair();
    let server = handshake_in_thread(server(&pki), far, PATIENCE);
    let mut client = client(stranger());
    let err = handshake(&mut client, &near, PATIENCE).unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "certificate not trusted (UnknownIssuer)");

    // The client's alert reached the server, which says so.
    let (result, _, _) = server.recv_timeout(PATIENCE).unwrap();
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::Tls(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA
            ))
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the peer refused the handshake (alert UnknownCA)"
    );
}

#[test]
fn a_peer_that_says_nothing_is_given_up_at_the_deadline() {
    let pki = pki();
    let limit = Duration::from_millis(200);
    for side in [client(pki.ca.clone()), server(&pki)] {
        // `_silent` stays open and never writes.
        let (near, _silent) = tcp_pair();
        let started = Instant::now();
        let outcome = handshake_in_thread(side, near, limit);
        let (result, _, near) = outcome.recv_timeout(PATIENCE).unwrap();
        let err = result.unwrap_err();
        assert!(
            matches!(err, HandshakeError::TimedOut(l) if l == limit),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "not finished within 0.2 s");
        assert!(started.elapsed() >= limit);
        // The timeouts are taken off even after a failure.
        assert_eq!(near.read_timeout().unwrap(), None);
    }
}

#[test]
fn a_peer_that_trickles_bytes_is_given_up_at_the_deadline_all_the_same() {
    let pki = pki();
    let limit = Duration::from_millis(300);
    let (near, far) = tcp_pair();
    let outcome = handshake_in_thread(server(&pki), far, limit);
    // A real ClientHello, one byte every 20 ms: each read gets a byte
    // well within the limit, but the whole would take seconds.
    let mut hello = Vec::new();
    let mut client = client(pki.ca.clone());
    client.write_tls(&mut hello).unwrap();
    // Trickled until the server gives up: only a deadline for the whole
    // handshake ends it within a few times the limit.
    let started = Instant::now();
    let mut bytes = hello.into_iter();
    let result = loop {
        if let Ok((result, _, _)) = outcome.try_recv() {
            break result;
        }
        assert!(
            started.elapsed() < limit * 3,
            "a trickling peer held the handshake past its deadline"
        );
        let byte = bytes.next().expect("the ClientHello outlasts the deadline");
        (&near).write_all(&[byte]).unwrap();
        thread::sleep(Duration::from_millis(20));
    };
    let err = result.unwrap_err();
    assert!(matches!(err, HandshakeError::TimedOut(_)), "{err:?}");
}

#[test]
fn a_peer_that_hangs_up_or_is_not_tls_is_named() {
    let pki = pki();
    let (near, far) = tcp_pair();
    drop(far);
    let err = handshake(&mut server(&pki), &near, PATIENCE).unwrap_err();
    assert!(matches!(err, HandshakeError::Closed), "{err:?}");
    assert_eq!(err.to_string(), "the peer closed the connection");

    let (near, far) = tcp_pair();
    (&far).write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let err = handshake(&mut server(&pki), &near, PATIENCE).unwrap_err();
    assert!(
        matches!(err, HandshakeError::Tls(rustls::Error::InvalidMessage(_))),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "the peer does not speak TLS");

    // TLS, but a record longer than TLS allows (18 KiB of handshake):
    // not "not TLS".
    let (near, far) = tcp_pair();
    let mut hello = vec![0x16, 0x03, 0x01, 0x48, 0x01, 0x01, 0x00, 0x47, 0xfd];
    hello.resize(5 + 0x4801, 0);
    (&far).write_all(&hello).unwrap();
    let err = handshake(&mut server(&pki), &near, PATIENCE).unwrap_err();
    let said = err.to_string();
    assert!(
        said.starts_with("the peer sent a TLS message over the size allowed"),
        "{said}"
    );

    // TLS records around a message that is not what it claims to be.
    let (near, far) = tcp_pair();
    (&far)
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00])
        .unwrap();
    let err = handshake(&mut server(&pki), &near, PATIENCE).unwrap_err();
    let said = err.to_string();
    assert!(
        said.starts_with("the peer sent a malformed TLS message"),
        "{said}"
    );
}

/// `client` and a server of `pki` over loopback TCP, the handshake done:
/// the client's connection and socket, the server's. Reads give up after
/// [`PATIENCE`] rather than hang.
fn handshaken(pki: &Pki, mut client: Connection) -> (Connection, TcpStream, Connection, TcpStream) {
    let (near, far) = tcp_pair();
    let server = handshake_in_thread(server(pki), far, PATIENCE);
    handshake(&mut client, &near, PATIENCE).unwrap();
    let (result, server, far) = server.recv_timeout(PATIENCE).unwrap();
    result.unwrap();
    far.set_read_timeout(Some(PATIENCE)).unwrap();
    near.set_read_timeout(Some(PATIENCE)).unwrap();
    (client, near, server, far)
}

/// As [`handshaken`], the server's side split in two and, as the real
/// server does, a greeting sent and read (the session ticket the handshake
/// queued goes with it).
fn greeted(pki: &Pki, client: Connection) -> (Connection, TcpStream, ReadHalf, WriteHalf) {
    let (mut client, near, server, far) = handshaken(pki, client);
    let (reader, mut writer) = split(server, Arc::new(far));
    writer.send(b"hello\n").unwrap();
    assert_eq!(client_reads(&mut client, &near, 6), b"hello\n");
    (client, near, reader, writer)
}

/// A client's KeyUpdate that asks for the server's is answered at once,
/// not with the server's next line (which in a quiet room may never come).
#[test]
fn a_key_update_request_is_answered_at_once() {
    let pki = pki();
    let (mut client, near, mut reader, mut writer) = greeted(&pki, client(pki.ca.clone()));

    client.refresh_traffic_keys().unwrap();
    while client.wants_write() {
        client.write_tls(&mut &near).unwrap();
    }
    let received = reader.receive(&mut |_| {}).unwrap();
    assert_eq!(received, Received::Data { wants_write: true });
    // What the writer then sends is the server's KeyUpdate: the client
    // reads it, and both go on with new keys.
    writer.send(b"after\n").unwrap();
    assert_eq!(client_reads(&mut client, &near, 6), b"after\n");
}

#[test]
fn close_after_a_failure_without_an_alert_sends_no_close_notify() {
    let pki = pki();
    let mut config = client_config(pki.ca.clone());
    config.enable_secret_extraction = true;
    // The greeting is read before the client gives up its keys.
    let (client, near, mut reader, mut writer) = greeted(&pki, client_with(config));

    (&near).write_all(&typeless_record(client)).unwrap();
    let failed = reader.receive(&mut |_| panic!("plaintext from a record with no type"));
    assert!(failed.is_err(), "{failed:?}");
    writer.close().unwrap();
    let mut after = Vec::new();
    (&near).read_to_end(&mut after).unwrap();
    assert!(
        after.is_empty(),
        "{} bytes after the failure, where none should be",
        after.len()
    );
}

#[test]
fn the_alert_sent_when_an_offer_fails_is_counted() {
    let pki = pki();
    let (mut client, near, mut reader, mut writer) = greeted(&pki, client(pki.ca.clone()));
    let before = writer.bytes_sent();

    // A record that does not decrypt: rustls queues its alert.
    (&near).write_all(&bad_record()).unwrap();
    assert!(reader.receive(&mut |_| {}).is_err());
    // The offer fails, and sends the alert on its way out.
    let offered = writer.offer(&[IoSlice::new(b"too late\n")], false);
    assert!(offered.is_err(), "{offered:?}");
    let mut read = 0;
    let alert = loop {
        let got = client.read_tls(&mut &near).unwrap();
        assert_ne!(got, 0, "the connection ended before the alert");
        read += got;
        match client.process_new_packets() {
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert_eq!(
        alert,
        rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
    );
    assert_eq!(writer.bytes_sent() - before, read as u64);
}

/// Reads `want` bytes of plaintext on an unsplit connection.
fn client_reads(client: &mut Connection, socket: &TcpStream, want: usize) -> Vec<u8> {
    read_plaintext_until(client, socket, |got| got.len() >= want)
}

/// A client and a server connection over loopback TCP, handshake done,
/// each split in two. Reads give up after [`PATIENCE`] rather than hang.
fn split_pair() -> ((ReadHalf, WriteHalf), (ReadHalf, WriteHalf)) {
    let pki = pki();
    let (client, near, server, far) = handshaken(&pki, client(pki.ca.clone()));
    (split(client, Arc::new(near)), split(server, Arc::new(far)))
}

/// Receives until `want` bytes of plaintext have come, or the stream
/// ends (then the result is shorter).
fn receive_bytes(reader: &mut ReadHalf, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        match reader.receive(&mut |bytes| got.extend_from_slice(bytes)) {
            Ok(Received::Data { .. }) => {}
            Ok(_) | Err(_) => break,
        }
    }
    got
}

/// True once the thread named `name` (of this process) sleeps in a system
/// call, which for a thread that does nothing else is the wait under test;
/// false if that has not happened within [`PATIENCE`].
fn sleeps_within_patience(name: &str) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let read = |file: &str| std::fs::read_to_string(task.path().join(file));
            let is_it = read("comm").is_ok_and(|comm| comm.trim_end() == name);
            // "TID (NAME) STATE ...": the state follows the last ')'.
            let state = read("stat").ok().and_then(|stat| {
                let (_, rest) = stat.rsplit_once(')')?;
                rest.trim_start().chars().next()
            });
            if is_it && state == Some('S') {
                return true;
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn a_reader_waiting_on_the_socket_does_not_hold_up_its_writer() {
    let ((mut client_reader, mut client_writer), (mut server_reader, mut server_writer)) =
        split_pair();
    // The client's reader waits for the answer before anything is sent.
    let name = "duplex-waiting";
    let answer = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || receive_bytes(&mut client_reader, b"pong\n".len()))
        .unwrap();
    assert!(sleeps_within_patience(name), "the reader never waited");
    // Its writer sends meanwhile: were the lock held across the wait, the
    // ping would leave only once the reader gave up, with nothing.
    client_writer.send(b"ping\n").unwrap();
    assert_eq!(receive_bytes(&mut server_reader, 5), b"ping\n");
    server_writer.send(b"pong\n").unwrap();
    assert_eq!(answer.join().unwrap(), b"pong\n");
}

#[test]
fn both_halves_of_both_sides_stream_at_once_in_order_and_close() {
    const LINES: usize = 2_000;
    let ((mut client_reader, mut client_writer), (mut server_reader, mut server_writer)) =
        split_pair();
    let text: Vec<u8> = (0..LINES)
        .flat_map(|i| format!("line {i:05} of the test's stream\n").into_bytes())
        .collect();
    let total = text.len();

    // Four threads: each side writes all of it while reading the other's.
    let to_server = {
        let text = text.clone();
        thread::spawn(move || {
            for chunk in text.chunks(1000) {
                client_writer.send(chunk).unwrap();
            }
            client_writer.close().unwrap();
            client_writer
        })
    };
    let to_client = {
        let text = text.clone();
        thread::spawn(move || {
            for chunk in text.chunks(700) {
                server_writer.send(chunk).unwrap();
            }
            server_writer.close().unwrap();
            server_writer
        })
    };
    let at_client = thread::spawn(move || {
        let got = receive_bytes(&mut client_reader, total);
        // The server's close_notify follows its last line.
        let end = client_reader.receive(&mut |_| panic!("data after the end"));
        (got, end.unwrap(), client_reader)
    });
    let (got, end, server_reader) = {
        let got = receive_bytes(&mut server_reader, total);
        let end = server_reader.receive(&mut |_| panic!("data after the end"));
        (got, end.unwrap(), server_reader)
    };
    assert!(got == text, "the server got {} of {total} bytes", got.len());
    assert_eq!(end, Received::Closed);
    let (got, end, client_reader) = at_client.join().unwrap();
    assert!(got == text, "the client got {} of {total} bytes", got.len());
    assert_eq!(end, Received::Closed);

    // What left one side is what reached the other.
    let client_writer = to_server.join().unwrap();
    let server_writer = to_client.join().unwrap();
    assert_eq!(client_writer.bytes_sent(), server_reader.bytes_received());
    assert_eq!(server_writer.bytes_sent(), client_reader.bytes_received());
}

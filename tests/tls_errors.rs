//! When TLS fails, the peer learns why: the server's alert reaches it, no
//! close_notify pretends all went well, and no reset overtakes the alert,
//! whether the failure comes in the handshake or after it, and even when
//! the peer goes on sending or lines were waiting for it.

use secure_chat_test_support as support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::Connection;
use rustls::{AlertDescription, ClientConfig, ClientConnection};
use secure_chat::server::Limits;
use secure_chat::tls::{self, Trust};
use support::{
    bad_record, read_plaintext_until, test_limits, tls_connect, typeless_record, Pki, TestClient,
    TestServer, TIMEOUT,
};

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq)]
enum Seen {
    /// The server's fatal alert.
    Alert(AlertDescription),
    /// The server's close_notify: "all went well", which it did not.
    CloseNotify,
    /// The TCP stream ended with neither.
    Eof,
    /// The connection was reset: whatever the server sent last was lost.
    Reset,
    /// Anything else.
    Other(String),
}

/// Reads until the connection ends, and says how it did; the lines
/// before the end are read and dropped.
fn how_it_ends(conn: &mut Connection, socket: &TcpStream) -> Seen {
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    loop {
        let _ = io::copy(&mut conn.reader(), &mut io::sink());
        match conn.read_tls(&mut &*socket) {
            Ok(0) => return Seen::Eof,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => return Seen::Reset,
            Err(err) => return Seen::Other(err.to_string()),
        }
        match conn.process_new_packets() {
            Err(rustls::Error::AlertReceived(alert)) => return Seen::Alert(alert),
            Err(err) => return Seen::Other(err.to_string()),
            Ok(state) if state.peer_has_closed() => return Seen::CloseNotify,
            Ok(_) => {}
        }
    }
}

/// Reads until the plaintext so far holds `text`.
fn read_until(conn: &mut Connection, socket: &TcpStream, text: &str) {
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    read_plaintext_until(conn, socket, |got| {
        String::from_utf8_lossy(got).contains(text)
    });
}

/// After the alert, the client sends 32 KiB more (as a test suite's next
/// probe would) and hangs up: all of it must go, into a socket still open,
/// not one that answers with a reset; then the server closes in order.
/// 32 KiB is well within what the two kernels buffer by default, so the
/// writes do not wait for the server to read and the test does not race
/// its one-second linger on a loaded machine; the server must still read
/// it all, or its close resets the connection and the read below fails.
fn more_then_hang_up(socket: &TcpStream) {
    let mut more = vec![0x17, 0x03, 0x03, 0x40, 0x00];
    more.resize(5 + 0x4000, 0x5a);
    for chunk in 0..2 {
        if let Err(err) = (&*socket).write_all(&more) {
            panic!("chunk {chunk}: {err}");
        }
    }
    socket.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let read = (&*socket).read_to_end(&mut rest);
    assert!(read.is_ok(), "{read:?}");
}

/// Once chatting (the greeting read): the reading thread meets the record.
#[test]
fn a_bad_record_while_chatting_gets_its_alert_and_no_reset() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    for round in 0..3 {
        let (mut conn, socket) = tls_connect(server.addr, &pki.ca);
        read_until(&mut conn, &socket, "you are in #lobby");
        (&socket).write_all(&bad_record()).unwrap();
        assert_eq!(
            how_it_ends(&mut conn, &socket),
            Seen::Alert(AlertDescription::BadRecordMac),
            "round {round}"
        );
        more_then_hang_up(&socket);
    }
    server.stop();
}

/// Connects with `config` and runs the handshake by hand: the
/// ClientHello, then the server's flight, until our Finished waits to be
/// sent.
fn handshake_until_finished(
    server: &TestServer,
    config: &Arc<ClientConfig>,
) -> (Connection, TcpStream) {
    let socket = TcpStream::connect(server.addr).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = Connection::Client(ClientConnection::new(Arc::clone(config), name).unwrap());
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut &socket).unwrap();
        }
        conn.read_tls(&mut &socket).unwrap();
        conn.process_new_packets().unwrap();
    }
    (conn, socket)
}

/// With the client's Finished, in one segment: the handshake itself meets
/// the record, on the server's handshake thread.
#[test]
fn a_bad_record_with_the_finished_gets_its_alert_and_no_reset() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let config = tls::client_config(&Trust::CaFile(pki.ca.clone()), None).unwrap();
    for round in 0..3 {
        let (mut conn, socket) = handshake_until_finished(&server, &config);
        let mut flight = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut flight).unwrap();
        }
        flight.extend_from_slice(&bad_record());
        (&socket).write_all(&flight).unwrap();
        assert_eq!(
            how_it_ends(&mut conn, &socket),
            Seen::Alert(AlertDescription::BadRecordMac),
            "round {round}"
        );
        more_then_hang_up(&socket);
    }
    server.stop();
}

/// Lines were waiting for the client when its record failed: they can
/// never go, and that is no reason to reset the connection under the
/// alert.
#[test]
fn an_alert_is_not_lost_when_lines_were_waiting() {
    const LINES: usize = 8000;
    let pki = Pki::new();
    // The silent client's lines wait for as long as the test takes: on a
    // loaded machine the flood may take longer than the default stall
    // timeout, and a client cut as too slow would never see the alert.
    let patient = Limits {
        stall_timeout: Duration::from_secs(120),
        max_lag: Duration::from_secs(120),
        ..test_limits()
    };
    let server = TestServer::start_with(&pki, patient);
    // Connected, in the lobby (the hub has it before the flood), and not
    // reading from then on.
    let (mut conn, socket) = tls_connect(server.addr, &pki.ca);
    read_until(&mut conn, &socket, "you are in #lobby");
    let mut talker = TestClient::connect(server.addr, &pki.ca);
    let line = "x".repeat(1000);
    for _ in 0..LINES {
        talker.send(&line);
    }
    // Every line went through the hub once the talker has its own back:
    // what the silent client's kernel could not take waits for it.
    for _ in 0..LINES {
        talker.recv_until(|got| got.starts_with("chat "));
    }
    (&socket).write_all(&bad_record()).unwrap();
    assert_eq!(
        how_it_ends(&mut conn, &socket),
        Seen::Alert(AlertDescription::BadRecordMac)
    );
    more_then_hang_up(&socket);
    server.stop();
}

/// A record rustls refuses without an alert, while chatting: the server
/// sends nothing more, no close_notify (it would say all went well), and
/// ends the TCP stream in order.
#[test]
fn a_failure_without_an_alert_gets_no_close_notify() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut config = (*tls::client_config(&Trust::CaFile(pki.ca.clone()), None).unwrap()).clone();
    config.enable_secret_extraction = true;
    let config = Arc::new(config);
    for round in 0..3 {
        let (mut conn, socket) = handshake_until_finished(&server, &config);
        while conn.wants_write() {
            conn.write_tls(&mut &socket).unwrap();
        }
        // The greeting is the last the server sends unasked: what comes
        // after the record is its answer to it.
        read_until(&mut conn, &socket, "you are in #lobby");
        (&socket).write_all(&typeless_record(conn)).unwrap();
        let mut after = Vec::new();
        let read = (&socket).read_to_end(&mut after);
        assert!(read.is_ok(), "round {round}: {read:?}");
        assert!(
            after.is_empty(),
            "round {round}: {} bytes after the failure, where none should be: {:02x?}",
            after.len(),
            &after[..after.len().min(32)]
        );
    }
    server.stop();
}

//! Clients under the test's control: [`TestClient`], which reads every
//! line on a thread of its own with the library's [`LineReader`], and
//! [`SilentClient`], which never reads.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection};
use secure_chat::client::{self, ClientOptions, Connected, MAX_SERVER_LINE};
use secure_chat::duplex::{self, WriteHalf};
use secure_chat::error::report;
use secure_chat::line::Frame;
use secure_chat::line_reader::{End, LineReader};
use secure_chat::tls::{self, Identity, Trust};

use crate::TIMEOUT;

/// What a [`TestClient`]'s reader thread saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// One line from the server, without its `\n`.
    Line(String),
    /// The server sent close_notify.
    Closed,
    /// The connection ended without close_notify.
    Eof,
    /// Reading failed; the error as text.
    Failed(String),
}

impl From<End> for Incoming {
    fn from(end: End) -> Incoming {
        match end {
            End::Closed => Incoming::Closed,
            End::Lost => Incoming::Eof,
            End::Failed(err) => Incoming::Failed(err.to_string()),
        }
    }
}

/// A TLS chat client under the test's control: lines in, lines out.
pub struct TestClient {
    writer: WriteHalf,
    incoming: Receiver<Incoming>,
    /// The nick the server gave it, learnt from its greeting.
    pub nick: String,
}

/// How the test clients reach a server of the tests: its address as it
/// is (no name to resolve), the name `localhost` checked in its
/// certificate, trusting `ca`, each step within [`TIMEOUT`] like every
/// other wait of a test.
pub fn client_options(addr: SocketAddr, ca: &Path) -> ClientOptions {
    ClientOptions {
        addr: addr.to_string(),
        server_name: Some("localhost".to_string()),
        trust: Trust::CaFile(ca.to_owned()),
        identity: None,
        timeout: TIMEOUT,
    }
}

/// Connects with the library's client and finishes the TLS handshake,
/// trusting `ca` and presenting `identity` if given; fails the test if
/// that does not work.
pub fn tls_connected(addr: SocketAddr, ca: &Path, identity: Option<&Identity>) -> Connected {
    let options = ClientOptions {
        identity: identity.cloned(),
        ..client_options(addr, ca)
    };
    client::connect(&options)
        .unwrap_or_else(|err| panic!("cannot connect to {addr}: {}", report(&err)))
}

/// Connects and finishes the TLS handshake, trusting `ca`; the TLS state
/// and the socket, for a test that moves the bytes itself.
pub fn tls_connect(addr: SocketAddr, ca: &Path) -> (Connection, TcpStream) {
    tls_connect_as(addr, ca, None)
}

/// [`tls_connect`], presenting `identity` if given.
pub fn tls_connect_as(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<&Identity>,
) -> (Connection, TcpStream) {
    tls_connected(addr, ca, identity).into_parts()
}

impl TestClient {
    /// Connects and reads the greeting (see [`TestClient::read_greeting`]).
    pub fn connect(addr: SocketAddr, ca: &Path) -> TestClient {
        let mut client = TestClient::connect_quietly(addr, ca);
        client.read_greeting();
        client
    }

    /// Reads the greeting: the welcome, "you are NICK" (which becomes
    /// `self.nick`) and "you are in #lobby". Any topic and history are left
    /// to the test.
    pub fn read_greeting(&mut self) {
        assert_eq!(
            self.recv(),
            format!("notice {}", secure_chat::protocol::WELCOME)
        );
        let you_are = self.recv();
        self.nick = you_are
            .strip_prefix("notice you are ")
            .unwrap_or_else(|| panic!("expected 'you are', got {you_are:?}"))
            .to_string();
        let room = self.recv();
        assert!(room.starts_with("notice you are in #lobby ("), "{room}");
    }

    /// Connects without reading anything.
    pub fn connect_quietly(addr: SocketAddr, ca: &Path) -> TestClient {
        TestClient::on(tls_connected(addr, ca, None))
    }

    /// Connects with a client certificate, without reading anything.
    pub fn connect_as(addr: SocketAddr, ca: &Path, identity: &Identity) -> TestClient {
        TestClient::on(tls_connected(addr, ca, Some(identity)))
    }

    /// A test client on a connection the library's client opened.
    pub fn on(connected: Connected) -> TestClient {
        let (lines, writer) = connected.split(no_flush);
        TestClient::reading(lines, writer)
    }

    /// A test client on a connection whose handshake is done, taken apart
    /// (as [`tls_connect`] returns it) so that the test could look at the
    /// socket first.
    pub fn over((conn, socket): (Connection, TcpStream)) -> TestClient {
        let (read_half, writer) = duplex::split(conn, Arc::new(socket));
        TestClient::reading(
            LineReader::new(read_half, MAX_SERVER_LINE, no_flush),
            writer,
        )
    }

    /// Starts the reader thread: every line, then how the connection
    /// ended, goes to the channel [`TestClient::next`] takes from.
    fn reading(mut lines: LineReader, writer: WriteHalf) -> TestClient {
        let (tx, incoming) = crossbeam_channel::unbounded();
        thread::spawn(move || loop {
            let next = match lines.next_line() {
                Ok(Frame::Line(line)) => Incoming::Line(line),
                // Our server never sends one: that would be a bug to see.
                Ok(frame) => panic!("server sent a bad line: {frame:?}"),
                Err(end) => {
                    let _ = tx.send(end.into());
                    return;
                }
            };
            if tx.send(next).is_err() {
                // The test dropped the client: nobody reads any more.
                return;
            }
        });
        TestClient {
            writer,
            incoming,
            nick: String::new(),
        }
    }

    /// Sends one line (the `\n` is added).
    pub fn send(&mut self, text: &str) {
        self.send_raw(format!("{text}\n").as_bytes());
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.send(bytes).expect("send failed");
    }

    /// Sends close_notify; the server's last lines can still be read.
    pub fn close(&mut self) {
        self.writer.close().expect("close failed");
    }

    /// The next thing that arrives, line or end.
    pub fn next(&self) -> Incoming {
        match self.incoming.recv_timeout(TIMEOUT) {
            Ok(incoming) => incoming,
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: nothing arrived in {TIMEOUT:?}", self.nick)
            }
            Err(RecvTimeoutError::Disconnected) => panic!("{}: read after the end", self.nick),
        }
    }

    /// The next line; fails if the connection ends instead.
    pub fn recv(&self) -> String {
        match self.next() {
            Incoming::Line(line) => line,
            other => panic!("{}: expected a line, got {other:?}", self.nick),
        }
    }

    /// Skips lines until one satisfies `wanted`, and returns it.
    pub fn recv_until(&self, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self.recv();
            if wanted(&line) {
                return line;
            }
        }
    }

    /// The next line that is not a notice.
    pub fn recv_non_notice(&self) -> String {
        self.recv_until(|line| !line.starts_with("notice "))
    }

    /// Waits for the end of the connection, skipping any lines before it.
    pub fn expect_end(&self) -> Incoming {
        loop {
            match self.next() {
                Incoming::Line(_) => continue,
                end => return end,
            }
        }
    }

    /// True if nothing is waiting to be read right now.
    pub fn nothing_pending(&self) -> bool {
        self.incoming.is_empty()
    }
}

/// The reader's `flush`: nothing to do. The writing half belongs to the
/// test thread, which cannot be woken for it; whatever rustls queues while
/// reading (a key update's answer; our server never asks for one) goes out
/// with the test's next send or close.
fn no_flush() {}

impl Drop for TestClient {
    fn drop(&mut self) {
        // Ends the reader thread, which waits on the socket.
        self.writer.disconnect();
    }
}

/// A client that finishes the handshake and then never reads.
pub struct SilentClient {
    _conn: Connection,
    socket: TcpStream,
}

impl SilentClient {
    /// Connects and finishes the handshake, trusting `ca`.
    pub fn connect(addr: SocketAddr, ca: &Path) -> SilentClient {
        let (conn, socket) = tls_connect(addr, ca);
        SilentClient {
            _conn: conn,
            socket,
        }
    }

    /// Reads (and discards) until the server ends the connection. Returns
    /// false if the connection was still open after [`TIMEOUT`] of silence.
    pub fn was_disconnected(&mut self) -> bool {
        self.socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.socket.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// The first half of a real TLS ClientHello, as a client trusting `ca`
/// would send it: enough for the server to start its handshake and then
/// wait for the rest.
pub fn half_client_hello(ca: &Path) -> Vec<u8> {
    let config = tls::client_config(&Trust::CaFile(ca.to_owned()), None).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    assert!(hello.len() > 100, "a ClientHello of {} bytes", hello.len());
    hello.truncate(hello.len() / 2);
    hello
}

/// A TLS 1.3 record that decrypts, but whose inner plaintext is all zeros,
/// so it has no content type, sealed with the client's traffic key by
/// rustls' own AEAD (nonce and additional data as any record's): the last
/// thing `conn` sends. rustls fails a connection on it without raising an
/// alert (`IllegalTlsInnerPlaintext`), so nothing in rustls keeps a
/// close_notify from following the failure: only the application's check.
pub fn typeless_record(conn: Connection) -> Vec<u8> {
    use rustls::crypto::cipher::{OutboundChunks, OutboundPlainMessage};
    use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion, SupportedCipherSuite};
    let Some(SupportedCipherSuite::Tls13(suite)) = conn.negotiated_cipher_suite() else {
        panic!("not TLS 1.3: {:?}", conn.negotiated_cipher_suite());
    };
    let (seq, secrets) = conn.dangerous_extract_secrets().unwrap().tx;
    let (key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
        _ => panic!("a cipher this test does not know"),
    };
    let zeros = [0u8; 16];
    let inner = OutboundPlainMessage {
        // Sealed after the zeros as the inner content type: one more zero.
        typ: ContentType::from(0),
        version: ProtocolVersion::TLSv1_2,
        payload: OutboundChunks::Single(&zeros),
    };
    suite
        .aead_alg
        .encrypter(key, iv)
        .encrypt(inner, seq)
        .unwrap()
        .encode()
}

/// Reads on an unsplit connection until the plaintext read so far
/// satisfies `done`, and returns it. Fails the test if the connection
/// ends first, or, with the socket's read timeout set, stays silent.
pub fn read_plaintext_until(
    conn: &mut Connection,
    socket: &TcpStream,
    done: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let mut got = Vec::new();
    while !done(&got) {
        let read = conn.read_tls(&mut &*socket).expect("read");
        assert_ne!(read, 0, "the connection ended after {got:?}");
        conn.process_new_packets().expect("TLS");
        let _ = std::io::Read::read_to_end(&mut conn.reader(), &mut got);
    }
    got
}

/// An application-data record nobody can decrypt: its contents are not
/// sealed with any key.
pub fn bad_record() -> Vec<u8> {
    let mut bad = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    bad.resize(5 + 0x40, 0xa5);
    bad
}

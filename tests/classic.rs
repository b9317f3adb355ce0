//! `chat-server --classic`, as a client written for the original app sees
//! it: send a line, read exactly one line, repeat.

use secure_chat_test_support as support;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, Connection, DigitallySignedStruct, SignatureScheme};
use secure_chat::classic::ECHO_PREFIX;
use secure_chat::duplex::{self, WriteHalf};
use secure_chat::line::Frame;
use secure_chat::line_reader::LineReader;
use secure_chat::protocol::{BYE_REPLY, HI_REPLY, WELCOME};
use secure_chat::server::Limits;
use secure_chat::throttle::RateLimit;
use support::{test_limits, Incoming, Pki, TestServer, TIMEOUT};

/// How long a client waits to see that nothing more arrives. Only ever
/// the last check after a sequence that already proves the order (the
/// reply to a `hi` coming next means nothing came between); a line the
/// server had queued would be here in well under this.
const QUIET: Duration = Duration::from_millis(200);

/// Limits with `--classic`, flood control off (as in the other tests).
fn classic_limits() -> Limits {
    Limits {
        classic: true,
        ..test_limits()
    }
}

/// Accepts any certificate at all: what the original app's client did
/// (it skipped verification so that a self-signed test certificate would
/// do). It still checks the handshake's signatures against the key in the
/// certificate, as that client's TLS library did, so the session is
/// encrypted, but to whoever answered: anyone on the path can pose as the
/// server. That is why it lives here, in a test of the old behaviour, and
/// why the project's own client has no such switch and never will.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client like the original app's: no certificate check, plain lines,
/// and one read for each line it sends. Its lines are read on a thread
/// of their own (with the library's [`LineReader`]) only so that a test
/// can wait for one with a deadline instead of hanging.
struct OriginalClient {
    writer: WriteHalf,
    incoming: Receiver<Incoming>,
}

impl OriginalClient {
    /// Connects and finishes the handshake; reads nothing yet.
    fn connect(addr: SocketAddr) -> OriginalClient {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = Connection::Client(ClientConnection::new(Arc::new(config), name).unwrap());
        let socket = TcpStream::connect(addr).unwrap();
        duplex::handshake(&mut conn, &socket, TIMEOUT).expect("handshake");
        let (read_half, writer) = duplex::split(conn, Arc::new(socket));
        let mut lines = LineReader::new(read_half, 64 * 1024, || {});
        let (tx, incoming) = crossbeam_channel::unbounded();
        thread::spawn(move || loop {
            let next = match lines.next_line() {
                Ok(Frame::Line(line)) => Incoming::Line(line),
                Ok(frame) => Incoming::Failed(format!("the server sent {frame:?}")),
                Err(end) => {
                    let _ = tx.send(end.into());
                    return;
                }
            };
            if tx.send(next).is_err() {
                return;
            }
        });
        OriginalClient { writer, incoming }
    }

    /// Connects and reads the one line the server starts with.
    fn welcomed(addr: SocketAddr) -> OriginalClient {
        let client = OriginalClient::connect(addr);
        assert_eq!(client.read(), WELCOME);
        client
    }

    /// Sends `text` and a `\n`.
    fn send(&mut self, text: &str) {
        self.send_raw(format!("{text}\n").as_bytes());
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.send(bytes).expect("send failed");
    }

    /// What comes next, line or end, within [`TIMEOUT`].
    fn next(&self) -> Incoming {
        self.incoming
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|err| panic!("nothing arrived: {err}"))
    }

    /// The next line; fails if the connection ends instead.
    fn read(&self) -> String {
        match self.next() {
            Incoming::Line(line) => line,
            other => panic!("expected a line, got {other:?}"),
        }
    }

    /// One step of the original client: send a line, read one line.
    fn ask(&mut self, text: &str) -> String {
        self.send(text);
        self.read()
    }

    /// True if nothing arrives within [`QUIET`].
    fn is_quiet(&self) -> bool {
        match self.incoming.recv_timeout(QUIET) {
            Err(RecvTimeoutError::Timeout) => true,
            Ok(extra) => panic!("nothing more was due, but got {extra:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the reader ended"),
        }
    }
}

impl Drop for OriginalClient {
    fn drop(&mut self) {
        // Ends the reader thread, which waits on the socket.
        self.writer.disconnect();
    }
}

fn echo(text: &str) -> String {
    format!("{ECHO_PREFIX}{text}")
}

#[test]
fn the_welcome_comes_alone_and_each_line_gets_its_one_reply() {
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, classic_limits());
    let mut client = OriginalClient::connect(server.addr);
    assert_eq!(client.read(), WELCOME);
    assert!(client.is_quiet(), "more than the welcome on connect");
    assert_eq!(client.ask("hi"), HI_REPLY);
    assert_eq!(client.ask(" Hi "), HI_REPLY);
    assert_eq!(client.ask("hello there"), echo("hello there"));
    assert_eq!(client.ask("héllo 世界 🙂"), echo("héllo 世界 🙂"));
    // Commands of the chat mean nothing here, and a blank line is a line.
    assert_eq!(client.ask("/quit"), echo("/quit"));
    assert_eq!(client.ask("/who"), echo("/who"));
    assert_eq!(client.ask(""), echo(""));
    assert_eq!(client.ask("bye now"), echo("bye now"));
    assert!(client.is_quiet());
    server.stop();
}

#[test]
fn bye_says_goodbye_and_closes_cleanly() {
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, classic_limits());
    let mut client = OriginalClient::welcomed(server.addr);
    assert_eq!(client.ask("BYE"), BYE_REPLY);
    assert_eq!(client.next(), Incoming::Closed, "expected close_notify");
    server.stop();
}

#[test]
fn many_lines_in_a_row_get_exactly_one_reply_each() {
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, classic_limits());
    let mut client = OriginalClient::welcomed(server.addr);
    // Lock-step: after each echo, the reply to `hi` is the very next line,
    // so nothing came between the two.
    for n in 0..20 {
        let text = format!("line {n}");
        assert_eq!(client.ask(&text), echo(&text));
        assert_eq!(client.ask("hi"), HI_REPLY);
    }
    // Sent all at once, read after: one reply per line, in order.
    let lines: Vec<String> = (0..50).map(|n| format!("burst {n}")).collect();
    client.send_raw(format!("{}\n", lines.join("\n")).as_bytes());
    for text in &lines {
        assert_eq!(client.read(), echo(text));
    }
    assert!(client.is_quiet());
    server.stop();
}

#[test]
fn refused_lines_get_one_reply_too() {
    let pki = Pki::new();
    let limits = Limits {
        max_line: 16,
        ..classic_limits()
    };
    let server = TestServer::start_with(&pki, limits);
    let mut client = OriginalClient::welcomed(server.addr);
    client.send_raw(b"this line is longer than sixteen bytes\n");
    assert_eq!(
        client.read(),
        echo("(a line longer than 16 bytes, not shown)")
    );
    client.send_raw(b"caf\xe9\n");
    assert_eq!(
        client.read(),
        echo("(a line that is not valid UTF-8, not shown)")
    );
    // Still in step.
    assert_eq!(client.ask("hi"), HI_REPLY);
    assert!(client.is_quiet());
    server.stop();
}

#[test]
fn two_clients_never_see_each_other() {
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, classic_limits());
    let mut alice = OriginalClient::welcomed(server.addr);
    let mut bob = OriginalClient::welcomed(server.addr);
    assert_eq!(alice.ask("hello"), echo("hello"));
    assert_eq!(bob.ask("hi"), HI_REPLY);
    assert_eq!(alice.ask("bye"), BYE_REPLY);
    assert_eq!(alice.next(), Incoming::Closed);
    // Bob heard nothing of Alice's lines, nor of her going: his next line
    // gets its own reply and nothing else.
    assert_eq!(bob.ask("still here"), echo("still here"));
    assert!(bob.is_quiet());
    server.stop();
}

#[test]
fn flood_control_delays_lines_without_a_word() {
    let pki = Pki::new();
    let limits = Limits {
        rate: Some(RateLimit {
            per_second: 50,
            burst: 2,
        }),
        ..classic_limits()
    };
    let server = TestServer::start_with(&pki, limits);
    let mut client = OriginalClient::welcomed(server.addr);
    // Ten lines at once, past the burst: the reader slows them down, and
    // the chat's "sending too fast" warning would put this client one line
    // behind. Each gets its reply, in order, and nothing else comes.
    let lines: Vec<String> = (0..10).map(|n| format!("fast {n}")).collect();
    client.send_raw(format!("{}\n", lines.join("\n")).as_bytes());
    for text in &lines {
        assert_eq!(client.read(), echo(text));
    }
    assert_eq!(client.ask("hi"), HI_REPLY);
    assert!(client.is_quiet());
    server.stop();
}

#[test]
fn shutdown_closes_without_a_notice() {
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, classic_limits());
    let mut client = OriginalClient::welcomed(server.addr);
    assert_eq!(client.ask("hi"), HI_REPLY);
    server.stop();
    assert_eq!(client.next(), Incoming::Closed);
}

/// Why `--classic` exists: against the chat, the same client reads a
/// notice as the reply to its first line, and is out of step from then on.
#[test]
fn without_classic_a_lock_step_client_falls_behind() {
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, test_limits());
    let mut client = OriginalClient::connect(server.addr);
    assert_eq!(client.read(), format!("notice {WELCOME}"));
    let reply = client.ask("hi");
    assert!(
        reply.starts_with("notice you are "),
        "the chat's second greeting line, not a reply to hi: {reply:?}"
    );
    // The real answer comes later, after the rest of the greeting and the
    // client's own line echoed back.
    let mut skipped = 0;
    while client.read() != format!("notice {HI_REPLY}") {
        skipped += 1;
    }
    assert!(skipped >= 2, "only {skipped} lines came between");
    server.stop();
}

//! The interactive client: connect, verify the server, then chat.
//!
//! Two threads share the connection: the keyboard thread reads lines and
//! queues them for the writer thread, while the calling thread prints what
//! arrives, so messages appear even while the user is not typing.

use std::io::{self, BufRead, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection};

use crate::duplex::{self, HandshakeError, Received};
use crate::error::Error;
use crate::line::{Frame, LineFramer};
use crate::outbox::{self, Outbox, QueueLimits};
use crate::screen::Screen;
use crate::tls::{self, Identity, Trust};

/// The server the client talks to unless told otherwise.
pub const DEFAULT_ADDR: &str = "localhost:8080";

/// How long to wait for the TCP connection, then again for the handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// After the user's input ends, how long the server has to send its last
/// lines and close before the client stops waiting.
const LINGER: Duration = Duration::from_secs(5);

/// The longest line the client accepts from the server. Server lines carry
/// a client's line plus a short prefix, so this is well above the server's
/// default line limit.
const MAX_SERVER_LINE: usize = 64 * 1024;

/// Lines typed ahead of the network before the keyboard thread waits.
const TYPE_AHEAD: QueueLimits = QueueLimits {
    max_messages: 64,
    max_bytes: 64 * 1024,
};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` of the server.
    pub addr: String,
    /// The name the server's certificate must hold; by default the host
    /// part of `addr`.
    pub server_name: Option<String>,
    /// Which CAs to trust.
    pub trust: Trust,
    /// The client certificate to present, for a server that asks for one.
    pub identity: Option<Identity>,
    /// Limit for the TCP connect, and again for the TLS handshake.
    pub timeout: Duration,
}

/// A connection whose handshake is done and whose certificate was verified.
pub struct Connected {
    conn: Connection,
    socket: TcpStream,
    /// For error messages: where, what was trusted, which name was checked.
    addr: String,
    trust: Trust,
    server_name: String,
    /// One line for the user: what was negotiated and who the server is.
    pub summary: String,
}

/// Connects to the server and completes the TLS handshake.
///
/// Nothing is sent to the server but the handshake itself until this has
/// verified the server's certificate.
pub fn connect(options: &ClientOptions) -> Result<Connected, Error> {
    let addr = &options.addr;
    let name = match &options.server_name {
        Some(name) => name.clone(),
        None => host_of(addr).to_string(),
    };
    let server_name =
        ServerName::try_from(name.clone()).map_err(|_| Error::ServerName { name: name.clone() })?;
    let config = tls::client_config(&options.trust, options.identity.as_ref())?;

    let socket = connect_tcp(addr, options.timeout)?;
    socket.set_nodelay(true)?;
    let client = ClientConnection::new(config, server_name).map_err(|err| Error::Handshake {
        peer: addr.clone(),
        source: HandshakeError::Tls(err),
        hint: None,
    })?;
    let mut conn = Connection::Client(client);
    duplex::handshake(&mut conn, &socket, options.timeout).map_err(|source| Error::Handshake {
        peer: addr.clone(),
        hint: tls::client_hint(&source, &options.trust, &name),
        source,
    })?;
    let summary = format!("connected to {addr}: {}", tls::describe(&conn));
    Ok(Connected {
        conn,
        socket,
        addr: addr.clone(),
        trust: options.trust.clone(),
        server_name: name,
        summary,
    })
}

/// The host part of `host:port`, without the brackets of `[::1]:8080`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn connect_tcp(addr: &str, timeout: Duration) -> Result<TcpStream, Error> {
    let addrs = addr.to_socket_addrs().map_err(|source| Error::Resolve {
        addr: addr.to_string(),
        source,
    })?;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address found");
    for candidate in addrs {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(socket) => return Ok(socket),
            Err(err) => last_error = err,
        }
    }
    Err(Error::Connect {
        addr: addr.to_string(),
        source: last_error,
    })
}

impl Connected {
    /// Chats until the server closes the connection: lines from `input` go
    /// to the server, lines from the server are written to `output`.
    ///
    /// When `input` ends, the client says close_notify and still prints
    /// whatever the server sends until it closes too. `screen` decides how
    /// lines look.
    ///
    /// The [`summary`](Connected::summary) goes to `status` once the first
    /// line arrives: only then is the client sure the server accepted it
    /// (in TLS 1.3 a server checks a client certificate after the client
    /// has finished its side of the handshake).
    pub fn chat<I, O>(
        self,
        input: I,
        output: &mut O,
        mut screen: Screen,
        status: &mut dyn Write,
    ) -> Result<(), Error>
    where
        I: BufRead + Send + 'static,
        O: Write,
    {
        let Connected {
            conn,
            socket,
            addr,
            trust,
            server_name,
            summary,
        } = self;
        let mut summary = Some(summary);
        let socket = Arc::new(socket);
        let (mut read_half, write_half) = duplex::split(conn, Arc::clone(&socket));
        let (outbox, inbox) = outbox::channel(TYPE_AHEAD);
        // Each disconnects when its thread ends.
        let (reader_alive, reader_done) = crossbeam_channel::bounded::<()>(0);
        let (writer_alive, writer_done) = crossbeam_channel::bounded::<()>(0);
        let writer = thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                outbox::run_writer(write_half, inbox, reader_done, LINGER);
                drop(writer_alive);
            })?;
        let keyboard = outbox.clone();
        thread::Builder::new()
            .name("keyboard".into())
            .spawn(move || send_input(input, keyboard))?;

        let mut framer = LineFramer::new(MAX_SERVER_LINE);
        let mut frames = Vec::new();
        let result = loop {
            let received = read_half.receive(&mut |bytes| framer.push(bytes, &mut frames));
            if !frames.is_empty() {
                if let Some(summary) = summary.take() {
                    // Status output is a courtesy; chatting does not need it.
                    let _ = writeln!(status, "{summary}");
                }
            }
            for frame in frames.drain(..) {
                show(output, &mut screen, &frame).map_err(Error::Output)?;
            }
            match received {
                Ok(Received::Data { wants_write }) => {
                    if wants_write {
                        outbox.flush();
                    }
                }
                Ok(Received::Closed) => {
                    if let Some(frame) = framer.finish() {
                        show(output, &mut screen, &frame).map_err(Error::Output)?;
                    }
                    break Ok(());
                }
                Ok(Received::Eof) => {
                    log::warn!(
                        "the connection ended without the server's close_notify: \
                         the server vanished, or did not answer ours in time"
                    );
                    break Ok(());
                }
                Err(err) => break Err(refusal_or(err, &addr, &trust, &server_name)),
            }
        };
        output.flush().map_err(Error::Output)?;
        // Our answer to the server's close_notify; the writer then ends.
        outbox.close();
        drop(reader_alive);
        // A writer stuck sending to a server that stopped reading would
        // never end: past its linger time, cut the connection under it.
        if writer_done.recv_timeout(LINGER) == Err(RecvTimeoutError::Timeout) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let _ = writer.join();
        result
    }
}

/// The error for a failed read. In TLS 1.3 the server checks a client
/// certificate after the client has finished its side of the handshake,
/// so a refusal arrives as the first read's error: it is reported as the
/// handshake failure it is, with advice.
fn refusal_or(err: io::Error, addr: &str, trust: &Trust, server_name: &str) -> Error {
    let tls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned();
    match tls_error {
        Some(tls_error) => {
            let source = HandshakeError::Tls(tls_error);
            Error::Handshake {
                peer: addr.to_string(),
                hint: tls::client_hint(&source, trust, server_name),
                source,
            }
        }
        None => Error::Io(err),
    }
}

/// The keyboard thread: every input line goes to the writer, waiting when
/// the user types (or pastes) faster than the network takes it; the end of
/// input asks the writer to close.
fn send_input(input: impl BufRead, outbox: Outbox) {
    for line in input.lines() {
        let Ok(mut line) = line else { break };
        line.push('\n');
        if outbox.push_waiting(line.into()).is_err() {
            return;
        }
    }
    outbox.close();
}

/// Writes one line from the server for a person to read.
fn show(output: &mut impl Write, screen: &mut Screen, frame: &Frame) -> io::Result<()> {
    match frame {
        Frame::Line(line) => writeln!(output, "{}", screen.render(line))?,
        Frame::TooLong => writeln!(output, "[an over-long line from the server was dropped]")?,
        Frame::InvalidUtf8 => writeln!(output, "[a line from the server was not UTF-8]")?,
    }
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("localhost:8080"), "localhost");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(host_of("example.org"), "example.org");
    }
}

//! The client: connect, verify the server, then chat (here for pipes and
//! scripts; [`terminal`](crate::terminal) for a person at a terminal).
//!
//! [`connect`] decides whom the client talks to: read it right after
//! [`tls`]. Then [`Connected::chat`] shows the server's lines as they come,
//! even while the user is not typing: a keyboard thread queues typed lines
//! for a writer thread.
//!
//! Next, after [`connect`]: [`duplex`], the handshake loop. After the
//! rest: [`outbox`], the writer's queue; on the tour's path of one
//! message, [`screen`](crate::screen), how bob's client shows the line.

use std::io::{self, BufRead, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection};

use crate::duplex::{self, HandshakeError, WriteHalf};
use crate::error::Error;
use crate::known_servers::{self, KnownServers};
use crate::line::Frame;
use crate::line_reader::{End, LineReader};
use crate::outbox::{self, Outbox, QueueLimits};
use crate::screen::Screen;
use crate::tls::{self, CertProblem, Fingerprint, Identity, Trust};

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
pub const MAX_SERVER_LINE: usize = 64 * 1024;

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
/// It opens the TCP connection ([`dial`]) and runs the TLS handshake
/// ([`handshake`]) with the configuration from [`tls::client_config`],
/// which holds the roots it trusts, and with the name to check:
/// `--server-name`, else the host part of `--addr`. rustls uses that name
/// twice: it sends it in the ClientHello (SNI, for a DNS name only), and
/// it checks it against the subjectAltName of the certificate the server
/// presents. If rustls refuses the certificate (no trusted chain, out of
/// its dates, another name, a bad signature), the handshake fails and this
/// returns [`Error::Handshake`] with a hint: nothing but the handshake was
/// sent. A refusal of *our* certificate cannot arrive here: in TLS 1.3 the
/// server checks it after we sent our Finished, so it arrives at the first
/// read, and is reported then as the handshake failure it is.
///
/// Every client in the project (this one, the terminal's, the benchmark's
/// and the tests') connects through this or [`handshake`], and reads
/// through the same [`LineReader`].
pub fn connect(options: &ClientOptions) -> Result<Connected, Error> {
    let config = tls::client_config(&options.trust, options.identity.as_ref())?;
    let socket = dial(&options.addr, options.timeout)?;
    handshake(socket, config, options)
}

/// A server the client could not verify and does not know: what the user
/// is shown before being asked whether to trust it.
#[derive(Debug, Clone)]
pub struct Unknown {
    /// `host:port`, as the client was told to connect.
    pub addr: String,
    /// Why the certificate did not verify.
    pub problem: CertProblem,
    /// The fingerprint of the key the server presented.
    pub fingerprint: Fingerprint,
    /// The certificate's subject, for display only.
    pub subject: Option<String>,
}

/// [`connect`], with trust on first use as SSH does it: a server in
/// `known` is trusted by the key stored there (as with `--pin`); any other
/// must verify against `options.trust`, and if its certificate does not,
/// `ask` (when given: the client runs on a terminal) is shown its
/// fingerprint. A yes connects again trusting that key, and stores it in
/// `known`. Without `ask`, or on a no, the handshake's error is returned,
/// its hint saying how to pin.
///
/// A known server is not checked against the CA at all: its stored key
/// decides, so a changed key is refused loudly (with both fingerprints
/// and what to do) even if some CA would vouch for the new one. That is
/// the point of remembering a key.
pub fn connect_or_ask(
    options: &ClientOptions,
    known: &mut KnownServers,
    ask: Option<&mut dyn FnMut(&Unknown) -> bool>,
) -> Result<Connected, Error> {
    let server = known_servers::server_key(&options.addr);
    if let Some(entry) = known.lookup(&server) {
        log::info!(
            "{server} is in {} (line {}): trusting its key {}",
            known.path().display(),
            entry.line,
            entry.fingerprint
        );
        let line = entry.line;
        return connect(&pinned(options, entry.fingerprint))
            .map_err(|err| changed_key(err, &server, known.path(), line));
    }
    // The first handshake verifies as `connect` would; the recorder keeps
    // the certificate it was shown, so that a refused one can be shown to
    // the user without connecting again just to look.
    let (config, recorder) =
        tls::recording_client_config(&options.trust, options.identity.as_ref())?;
    let socket = dial(&options.addr, options.timeout)?;
    let err = match handshake(socket, config, options) {
        Ok(connected) => return Ok(connected),
        Err(err) => err,
    };
    let problem = match &err {
        Error::Handshake {
            source: HandshakeError::Tls(tls_error),
            ..
        } => tls::certificate_problem(tls_error),
        _ => None,
    };
    let (Some(problem), Some(leaf)) = (problem, recorder.leaf()) else {
        return Err(err);
    };
    let Some(fingerprint) = Fingerprint::of_certificate(&leaf) else {
        return Err(err);
    };
    let unknown = Unknown {
        addr: options.addr.clone(),
        problem,
        fingerprint,
        subject: crate::x509::subject(&leaf),
    };
    let Some(ask) = ask else {
        return Err(with_hint(err, |hint| {
            format!(
                "{hint}; or, if the server's operator confirms that its key's fingerprint is \
                 {fingerprint}, pass --pin {fingerprint} (on a terminal, chat-client asks)"
            )
        }));
    };
    if !ask(&unknown) {
        return Err(with_hint(err, |_| {
            "you chose not to trust it; check its fingerprint with the server's operator, \
             then connect again (or pass --pin)"
                .to_string()
        }));
    }
    // A second connection, trusting exactly the key the user saw: if the
    // server presents another one now, this fails and nothing is stored.
    let connected = connect(&pinned(options, fingerprint))?;
    match known.remember(&server, &fingerprint) {
        Ok(()) => log::info!(
            "trusted {server} by its key {fingerprint}, in {}",
            known.path().display()
        ),
        // The user said yes and the connection is made: chat on, and say
        // that the answer was not kept.
        Err(err) => log::warn!(
            "{}; you will be asked again next time",
            crate::error::report(&err)
        ),
    }
    Ok(connected)
}

/// `options`, trusting the key with fingerprint `pin` instead.
fn pinned(options: &ClientOptions, pin: Fingerprint) -> ClientOptions {
    ClientOptions {
        trust: Trust::Pin(pin),
        ..options.clone()
    }
}

/// A handshake error's hint, rewritten by `rewrite` (given the old one, or
/// nothing).
fn with_hint(err: Error, rewrite: impl FnOnce(&str) -> String) -> Error {
    match err {
        Error::Handshake { peer, source, hint } => Error::Handshake {
            peer,
            source,
            hint: Some(rewrite(
                hint.as_deref().unwrap_or("the certificate does not verify"),
            )),
        },
        other => other,
    }
}

/// The error for a known server that presented another key: loud, with
/// what to do. Other errors pass unchanged.
fn changed_key(err: Error, server: &str, file: &Path, line: usize) -> Error {
    let changed = matches!(
        &err,
        Error::Handshake { source: HandshakeError::Tls(tls_error), .. }
            if matches!(tls::certificate_problem(tls_error), Some(CertProblem::PinMismatch(_)))
    );
    if !changed {
        return err;
    }
    with_hint(err, |_| {
        format!(
            "WARNING: the key of {server} has CHANGED since you trusted it. Someone may be \
             intercepting the connection, or the server's operator made a new key. Ask the \
             operator which fingerprint is right; only if it is the new one, delete line \
             {line} ({server}) of {} and connect again",
            file.display()
        )
    })
}

/// The TLS half of [`connect`], on a socket that is already connected:
/// for callers that open the socket themselves or tune the configuration
/// (the benchmark turns resumption off). `config` should trust what
/// `options.trust` says; that is what the hints on failure assume.
pub fn handshake(
    socket: TcpStream,
    config: Arc<ClientConfig>,
    options: &ClientOptions,
) -> Result<Connected, Error> {
    let addr = &options.addr;
    let name = match &options.server_name {
        Some(name) => name.clone(),
        None => host_of(addr).to_string(),
    };
    // The name is used twice. A DNS name is sent in the ClientHello (SNI),
    // in clear, so that a server with several certificates can pick one;
    // an IP address is not sent (SNI carries only names). Either way it is
    // what the server's certificate must hold.
    let server_name =
        ServerName::try_from(name.clone()).map_err(|_| Error::ServerName { name: name.clone() })?;
    // Each batch of lines leaves at once: chat is small and interactive.
    socket.set_nodelay(true)?;
    let client = ClientConnection::new(config, server_name).map_err(|err| Error::Handshake {
        peer: addr.clone(),
        source: HandshakeError::Tls(err),
        hint: None,
    })?;
    let mut conn = Connection::Client(client);
    duplex::handshake(&mut conn, &socket, options.timeout).map_err(|source| Error::Handshake {
        peer: addr.clone(),
        hint: handshake_hint(&source, &options.trust, &name),
        source,
    })?;
    let mut summary = format!("connected to {addr}: {}", tls::describe(&conn));
    if let Trust::Pin(pin) = &options.trust {
        summary.push_str(&format!(", pinned key {pin}"));
    }
    Ok(Connected {
        conn,
        socket,
        addr: addr.clone(),
        trust: options.trust.clone(),
        server_name: name,
        summary,
    })
}

/// Advice for a failed handshake: the TLS failures [`tls::client_hint`]
/// knows, and a peer that hung up, which is most often not a TLS server.
fn handshake_hint(err: &HandshakeError, trust: &Trust, server_name: &str) -> Option<String> {
    match err {
        HandshakeError::Tls(err) => tls::client_hint(err, trust, server_name),
        HandshakeError::Closed => {
            Some("is the address a TLS chat server (chat-server)?".to_string())
        }
        HandshakeError::TimedOut(_) | HandshakeError::Io(_) => None,
    }
}

/// The host part of `host:port`, without the brackets of `[::1]:8080`.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Opens the TCP connection: each address `addr` resolves to in turn,
/// each within `timeout`, until one answers.
pub fn dial(addr: &str, timeout: Duration) -> Result<TcpStream, Error> {
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
    /// True if the handshake resumed an earlier session with a ticket
    /// instead of authenticating the server again: what a reconnect with
    /// the same `ClientConfig` (and so the same session store) hopes for.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The fingerprint of the key the server presented, which this
    /// connection verified (by a CA or a pin).
    pub fn peer_fingerprint(&self) -> Option<Fingerprint> {
        Fingerprint::of_certificate(self.conn.peer_certificates()?.first()?)
    }

    /// The TLS state and the socket, for a caller that moves the bytes
    /// itself (the benchmark's poller reads thousands of sockets in one
    /// thread).
    pub fn into_parts(self) -> (Connection, TcpStream) {
        (self.conn, self.socket)
    }

    /// The two halves: a [`LineReader`] for the server's lines, and the
    /// [`WriteHalf`] that sends. `flush` asks whoever owns the writing half
    /// to send what rustls queued while reading.
    pub fn split(self, flush: impl FnMut() + Send + 'static) -> (LineReader, WriteHalf) {
        let (read_half, write_half) = duplex::split(self.conn, Arc::new(self.socket));
        let lines = LineReader::new(read_half, MAX_SERVER_LINE, flush);
        (lines, write_half)
    }

    /// Chats until the server closes the connection: lines from `input` go
    /// to the server, lines from the server are written to `output`, as
    /// `screen` shows them. The [`summary`](Connected::summary) goes to
    /// `status` once the first line arrives: only then is the client sure
    /// the server accepted it (in TLS 1.3 a server checks a client
    /// certificate after the client has finished its side of the
    /// handshake).
    ///
    /// When `input` ends, the client says close_notify and still prints
    /// whatever the server sends until it closes too; when `output` is
    /// closed (`chat-client | head -1`), it says close_notify at once and
    /// ends, without an error, once the server has closed too. Whatever
    /// ends the chat, the writer thread is asked to close and is waited for.
    pub fn chat(
        self,
        input: impl BufRead + Send + 'static,
        output: &mut impl Write,
        mut screen: Screen,
        status: &mut dyn Write,
    ) -> Result<(), Error> {
        let mut wiring = Wiring::start(self.conn, self.socket)?;
        let keyboard = wiring.outbox.clone();
        let started = thread::Builder::new()
            .name("keyboard".into())
            .spawn(move || send_input(input, keyboard));
        let result = match started {
            Ok(_) => read_until_end(
                &mut wiring.lines,
                output,
                &mut screen,
                &wiring.outbox,
                (self.summary, status),
            )
            .map_err(|end| match end {
                Ended::Output(err) => Error::Output(err),
                Ended::Failed(end) => refusal_or(end, &self.addr, &self.trust, &self.server_name),
            }),
            Err(err) => Err(Error::Thread(err)),
        };
        wiring.finish();
        result
    }
}

/// One connection's moving parts while it chats, for both clients (pipes,
/// and [`terminal`](crate::terminal)): the server's lines, and a writer
/// thread that sends what is queued in the outbox.
pub(crate) struct Wiring {
    /// The server's lines.
    pub(crate) lines: LineReader,
    /// Where lines for the server wait; the writer thread holds the drain.
    pub(crate) outbox: Outbox,
    socket: Arc<TcpStream>,
    /// Dropped when reading is over: the writer stops lingering for the
    /// server's close_notify.
    reader_alive: crossbeam_channel::Sender<()>,
    /// Disconnects when the writer thread ends.
    writer_done: crossbeam_channel::Receiver<()>,
    writer: thread::JoinHandle<()>,
}

impl Wiring {
    /// Splits the connection and starts its writer thread.
    pub(crate) fn start(conn: Connection, socket: TcpStream) -> io::Result<Wiring> {
        let socket = Arc::new(socket);
        let (outbox, drain) = outbox::channel(TYPE_AHEAD);
        let flusher = outbox.clone();
        let (read_half, write_half) = duplex::split(conn, Arc::clone(&socket));
        let lines = LineReader::new(read_half, MAX_SERVER_LINE, move || flusher.flush());
        let (reader_alive, reader_done) = crossbeam_channel::bounded::<()>(0);
        let (writer_alive, writer_done) = crossbeam_channel::bounded::<()>(0);
        let writer = thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                outbox::run_writer(write_half, drain, reader_done, LINGER);
                drop(writer_alive);
            })?;
        Ok(Wiring {
            lines,
            outbox,
            socket,
            reader_alive,
            writer_done,
            writer,
        })
    }

    /// Ends the connection: close_notify (our answer to the server's, or
    /// our own) once what is queued is sent, then waits for the writer.
    pub(crate) fn finish(self) {
        let Wiring {
            lines,
            outbox,
            socket,
            reader_alive,
            writer_done,
            writer,
        } = self;
        outbox.close();
        drop(lines);
        drop(reader_alive);
        // A writer stuck sending to a server that stopped reading would
        // never end: past its linger time, cut the connection under it.
        if writer_done.recv_timeout(LINGER) == Err(RecvTimeoutError::Timeout) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let _ = writer.join();
    }
}

/// Why [`read_until_end`] stopped early.
enum Ended {
    /// Writing to the output failed, other than by being closed.
    Output(io::Error),
    /// The connection failed.
    Failed(End),
}

/// The client's read loop: shows each line until the server closes. The
/// first line also sends the connection's summary to `status`.
fn read_until_end(
    lines: &mut LineReader,
    output: &mut impl Write,
    screen: &mut Screen,
    outbox: &Outbox,
    (summary, status): (String, &mut dyn Write),
) -> Result<(), Ended> {
    let mut summary = Some(summary);
    let mut showing = true;
    loop {
        let frame = match lines.next_line() {
            Ok(frame) => frame,
            Err(end) => return finish_reading(end, output, showing),
        };
        if let Some(summary) = summary.take() {
            // Status output is a courtesy; chatting does not need it.
            let _ = writeln!(status, "{summary}");
        }
        if showing {
            if let Err(err) = show(output, screen, &frame) {
                stop_showing(err, outbox)?;
                showing = false;
            }
        }
    }
}

/// Showing a line failed. If the output was closed, its reader has left:
/// the client says close_notify at once and reads on, discarding, until
/// the server closes too, so that the server still sees an orderly end.
/// Any other failure ends the chat with it.
fn stop_showing(err: io::Error, outbox: &Outbox) -> Result<(), Ended> {
    if err.kind() != io::ErrorKind::BrokenPipe {
        return Err(Ended::Output(err));
    }
    outbox.close();
    Ok(())
}

/// The connection's end: the server's close_notify, or the server gone
/// without one (which the client only warns of), or a failure.
fn finish_reading(end: End, output: &mut impl Write, showing: bool) -> Result<(), Ended> {
    match end {
        End::Closed => {}
        End::Lost => log::warn!(
            "the connection ended without the server's close_notify: \
             the server vanished, or did not answer ours in time"
        ),
        End::Failed(_) => return Err(Ended::Failed(end)),
    }
    if showing {
        match output.flush() {
            Err(err) if err.kind() != io::ErrorKind::BrokenPipe => return Err(Ended::Output(err)),
            _ => {}
        }
    }
    Ok(())
}

/// The error for a failed read. In TLS 1.3 the server checks a client
/// certificate after the client has finished its side of the handshake,
/// so a refusal arrives as the first read's error: it is reported as the
/// handshake failure it is, with advice.
pub(crate) fn refusal_or(end: End, addr: &str, trust: &Trust, server_name: &str) -> Error {
    match end.tls_error().cloned() {
        Some(tls_error) => {
            let source = HandshakeError::Tls(tls_error);
            Error::Handshake {
                peer: addr.to_string(),
                hint: handshake_hint(&source, trust, server_name),
                source,
            }
        }
        None => match end {
            End::Failed(err) => Error::Io(err),
            // Not an error; not reached, as only failures come here.
            End::Closed | End::Lost => Error::Io(io::Error::other(end.to_string())),
        },
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

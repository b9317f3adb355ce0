//! The TLS handshake, then one connection used by two threads at once: one
//! reads, one writes.
//!
//! rustls does no I/O of its own: the program moves the bytes. `read_tls`
//! gives rustls what came from the socket, `process_new_packets` makes it
//! act on it (check, decrypt, decide what to answer), `write_tls` takes what
//! it wants sent to the socket. Every decision, the certificate checks
//! included, is made inside `process_new_packets`.
//!
//! [`handshake`] is one loop for both sides: each pass sends what rustls
//! has queued, reads once, and processes what was read (a flight that
//! arrives in pieces takes a pass per piece). In TLS 1.3 a client:
//! 1. sends the ClientHello, which `ClientConnection::new` queued; reads
//!    the server's flight: ServerHello, then, encrypted,
//!    EncryptedExtensions, (CertificateRequest), Certificate,
//!    CertificateVerify and Finished. Processing it checks the certificate
//!    and the Finished, and queues the client's (Certificate,
//!    CertificateVerify,) Finished: the handshake is over;
//! 2. sends that flight and returns: the server waits for its Finished.
//!
//! A server:
//! 1. has nothing to send; reads the ClientHello, and processing it queues
//!    its whole flight, ServerHello to Finished;
//! 2. sends it, reads the client's flight, and processing checks it (the
//!    client's certificate too, with mutual TLS) and queues a session
//!    ticket: the handshake is over;
//! 3. returns at once: the ticket leaves with the first lines, in one send.
//!
//! A deadline covers the whole loop. After it, rustls keeps a connection's
//! state in one value that needs `&mut` for both directions, so a thread
//! blocked reading would starve every write. [`split`] shares that state
//! behind a mutex that is never held while a thread waits on the network.
//! This module moves bytes; it knows nothing of lines or chat.
//!
//! Next: [`line`](crate::line), which cuts the bytes into lines.

use std::fmt;
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::Connection;
use rustls::ProtocolVersion::TLSv1_3;

use crate::tls;

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The deadline passed before the handshake finished.
    TimedOut(Duration),
    /// The peer closed the TCP connection during the handshake.
    Closed,
    /// The socket failed.
    Io(io::Error),
    /// TLS itself failed: a certificate was refused, the peer sent an alert,
    /// a malformed or oversized TLS message, or something that is not TLS
    /// (each said apart by `Display`).
    Tls(rustls::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use rustls::Error as E;
        match self {
            HandshakeError::TimedOut(limit) => {
                write!(f, "not finished within {} s", limit.as_secs_f32())
            }
            HandshakeError::Closed => write!(f, "the peer closed the connection"),
            HandshakeError::Io(err) => write!(f, "{err}"),
            HandshakeError::Tls(err @ E::InvalidCertificate(_)) => {
                match tls::certificate_problem(err) {
                    Some(problem) => write!(f, "{problem}"),
                    None => write!(f, "{err}"),
                }
            }
            HandshakeError::Tls(E::AlertReceived(alert)) => {
                write!(f, "the peer refused the handshake (alert {alert:?})")
            }
            HandshakeError::Tls(E::InvalidMessage(why)) => {
                use rustls::InvalidMessage as M;
                match why {
                    // The first bytes are no TLS record: HTTP, SSH, a scan.
                    M::InvalidContentType | M::UnknownProtocolVersion => {
                        write!(f, "the peer does not speak TLS")
                    }
                    M::MessageTooLarge
                    | M::HandshakePayloadTooLarge
                    | M::CertificatePayloadTooLarge => {
                        write!(
                            f,
                            "the peer sent a TLS message over the size allowed ({why:?})"
                        )
                    }
                    _ => write!(f, "the peer sent a malformed TLS message ({why:?})"),
                }
            }
            HandshakeError::Tls(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandshakeError::Io(err) => Some(err),
            // Display already names the rustls error in plain words.
            _ => None,
        }
    }
}

/// Runs the TLS handshake to completion, or fails once `timeout` has passed.
///
/// This is the only time one thread both reads and writes the socket: it
/// needs no lock, because no other thread has the connection yet. The
/// deadline covers the whole handshake, so a peer that trickles one byte at
/// a time cannot hold the connection open for longer.
pub fn handshake(
    conn: &mut Connection,
    socket: &TcpStream,
    timeout: Duration,
) -> Result<(), HandshakeError> {
    let deadline = Instant::now() + timeout;
    let result = drive_handshake(conn, socket, deadline, timeout);
    if let Err(HandshakeError::Tls(_)) = &result {
        // rustls queued an alert telling the peer why; the handshake has
        // failed either way, so a failure to send it changes nothing. It
        // gets a moment of its own: a failure near the handshake's deadline
        // would otherwise find no time left to send it. The peer may still
        // be sending (the rest of its flight, its first lines): the
        // connection closes once it hangs up, or after a moment, not under
        // its bytes, which would reset it.
        // One moment for both, whatever the peer trickles.
        let moment = Instant::now() + AFTER_THE_ALERT;
        if write_pending(conn, socket, moment).is_ok() {
            let _ = socket.shutdown(Shutdown::Write);
            discard_until_closed(socket, moment);
        }
    }
    // From here on, reads wait for as long as the peer is silent.
    let restored = socket
        .set_read_timeout(None)
        .and_then(|()| socket.set_write_timeout(None));
    result.and(restored.map_err(HandshakeError::Io))
}

fn drive_handshake(
    conn: &mut Connection,
    socket: &TcpStream,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), HandshakeError> {
    let timed_out = |err: io::Error| {
        if is_timeout(&err) {
            HandshakeError::TimedOut(timeout)
        } else {
            HandshakeError::Io(err)
        }
    };
    let server = matches!(conn, Connection::Server(_));
    loop {
        // A TLS 1.3 server's handshake is over once the client's Finished
        // is read; what it queued then (a session ticket) goes out with its
        // first lines, in one send. In TLS 1.2 the server speaks last (its
        // ChangeCipherSpec and Finished), and a client must send its
        // Finished now: the other side waits for them.
        if server && !conn.is_handshaking() && conn.protocol_version() == Some(TLSv1_3) {
            return Ok(());
        }
        write_pending(conn, socket, deadline).map_err(timed_out)?;
        if !conn.is_handshaking() {
            return Ok(());
        }
        let left = remaining(deadline).ok_or(HandshakeError::TimedOut(timeout))?;
        socket
            .set_read_timeout(Some(left))
            .map_err(HandshakeError::Io)?;
        // A signal that arrives while a read waits with a timeout ends the
        // read early (Linux does not restart those), and the kernel's timer
        // may end it a little before the deadline: read again, and the
        // deadline decides.
        match conn.read_tls(&mut &*socket) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if is_timeout(&err) && remaining(deadline).is_some() => continue,
            Err(err) => return Err(timed_out(err)),
        }
        conn.process_new_packets().map_err(HandshakeError::Tls)?;
    }
}

/// Writes everything rustls has queued, each write bounded by the deadline.
fn write_pending(conn: &mut Connection, socket: &TcpStream, deadline: Instant) -> io::Result<()> {
    while conn.wants_write() {
        let left = remaining(deadline).ok_or(io::ErrorKind::TimedOut)?;
        socket.set_write_timeout(Some(left))?;
        match conn.write_tls(&mut &*socket) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            // The kernel's timer may end a send a little early: only the
            // deadline ends the wait.
            Err(err) if is_timeout(&err) && remaining(deadline).is_some() => continue,
            result => result?,
        };
    }
    Ok(())
}

/// A socket timeout, which shows up as either kind, depending on the
/// platform.
fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

/// Splits a connection whose handshake is done into its two halves.
///
/// Both halves share the rustls state (behind a mutex) and the socket
/// (behind an `Arc`: `&TcpStream` reads and writes, so one file descriptor
/// serves both threads, with no `try_clone`).
pub fn split(conn: Connection, socket: Arc<TcpStream>) -> (ReadHalf, WriteHalf) {
    let conn = Arc::new(Mutex::new(conn));
    let read = ReadHalf {
        conn: Arc::clone(&conn),
        socket: Arc::clone(&socket),
        primed: false,
        received: 0,
    };
    let write = WriteHalf {
        conn,
        socket,
        sent: 0,
    };
    (read, write)
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic in the other half leaves rustls' state as consistent as any
    // I/O error would: the next call fails on its own terms.
    crate::sync::lock(conn)
}

/// What one [`ReadHalf::receive`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Whatever was decrypted went to the sink (maybe nothing: not every
    /// TLS record carries data). If `wants_write`, reading made rustls
    /// queue something to send in reply (a key update, an alert) while
    /// nothing else was waiting; the writer must flush it.
    Data {
        /// rustls has newly queued bytes that only the writer may send.
        wants_write: bool,
    },
    /// The peer sent close_notify: it has said all it will say.
    Closed,
    /// The TCP stream ended without close_notify: the peer vanished, or
    /// this side shut the socket down.
    Eof,
}

/// The reading half: waits for the peer without holding the lock.
pub struct ReadHalf {
    conn: Arc<Mutex<Connection>>,
    socket: Arc<TcpStream>,
    /// Set once plaintext that arrived with the handshake has been drained.
    primed: bool,
    /// TLS bytes read from the socket so far.
    received: u64,
}

impl ReadHalf {
    /// Blocks until the peer sends something, then hands every decrypted
    /// byte to `sink`, in order.
    ///
    /// `sink` runs while the lock is held, so it should only copy or frame
    /// bytes, never block.
    pub fn receive(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<Received> {
        if !self.primed {
            self.primed = true;
            // A client's first lines can arrive with its Finished message and
            // be decrypted already; the socket may then stay silent.
            let mut delivered = false;
            // What is queued now, the handshake queued (a server's session
            // ticket): it goes out with the first lines.
            let queued_before = true;
            let state = drain_plaintext(&mut lock(&self.conn), queued_before, &mut |bytes| {
                delivered = true;
                sink(bytes)
            })?;
            if delivered || state != (Received::Data { wants_write: false }) {
                return Ok(state);
            }
        }
        // Wait for at least one byte with the lock released, so the writer
        // can encrypt and send meanwhile. `peek` leaves the byte in the
        // socket for rustls to read: no buffer of our own per connection.
        let mut probe = [0u8; 1];
        loop {
            match self.socket.peek(&mut probe) {
                Ok(_) => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        let mut conn = lock(&self.conn);
        let queued_before = conn.wants_write();
        // rustls takes at most one buffer's worth per call; whatever is left
        // in the socket wakes the next `peek` at once.
        let read = conn.read_tls(&mut &*self.socket)?;
        self.received += read as u64;
        conn.process_new_packets()
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
        drain_plaintext(&mut conn, queued_before, sink)
    }

    /// TLS bytes read from the socket since the split (handshake excluded).
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// After TLS failed: reads and drops whatever the peer still sends,
    /// until it hangs up or the connection is cut (the shard cuts it at
    /// the end of its linger).
    pub fn discard_until_closed(&mut self) {
        self.received += discard_until_closed(&self.socket, None);
    }
}

/// How long a failed handshake waits, after its alert, for the peer to
/// hang up.
const AFTER_THE_ALERT: Duration = Duration::from_secs(1);

/// Reads and drops what the peer sends until it hangs up, the socket fails
/// (a read timeout included), or `until` has passed; returns the bytes
/// read. A socket closed with bytes still unread in it, or that receives
/// some after it closed, is reset by the kernel, and the reset can reach
/// the peer before the alert that said what failed: its next write fails,
/// and it never reads why.
fn discard_until_closed(socket: &TcpStream, until: impl Into<Option<Instant>>) -> u64 {
    let until = until.into();
    let mut scrap = [0u8; 4096];
    let mut read = 0;
    loop {
        if let Some(until) = until {
            // Each read waits only for what is left of the moment.
            let Some(left) = remaining(until) else { break };
            if socket.set_read_timeout(Some(left)).is_err() {
                break;
            }
        }
        match (&*socket).read(&mut scrap) {
            Ok(0) => break,
            Ok(n) => read += n as u64,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    read
}

/// Passes all decrypted bytes to `sink`, then says what state the stream is
/// in. If output was `queued_before` the read, the writer already has it
/// waiting (a full socket, a session ticket) and sends anything new with
/// it: only output that reading alone queued asks for a flush.
fn drain_plaintext(
    conn: &mut Connection,
    queued_before: bool,
    sink: &mut dyn FnMut(&[u8]),
) -> io::Result<Received> {
    let mut reader = conn.reader();
    let mut delivered = false;
    loop {
        match reader.fill_buf() {
            Ok([]) => return Ok(Received::Closed),
            Ok(bytes) => {
                let n = bytes.len();
                sink(bytes);
                reader.consume(n);
                delivered = true;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(Received::Eof),
            Err(err) => return Err(err),
        }
    }
    // A peer's KeyUpdate that asks for ours: rustls keeps our reply aside
    // until it next encrypts something, and does not count it in
    // `wants_write`, so in a quiet room it would wait for the next line,
    // or the close. Handing rustls no plaintext puts the reply in the
    // outgoing bytes; otherwise it does nothing (an error is the
    // connection's, and the next read or write reports it). Only after a
    // read that delivered nothing, which is the case of a KeyUpdate sent
    // alone: most reads bring data, and skip the call. A reply held
    // after data goes with our next record, which is all TLS 1.3 asks,
    // and a line is mostly answered soon (a chat line by its echo).
    if !delivered {
        let _ = conn.writer().write(&[]);
    }
    Ok(Received::Data {
        wants_write: !queued_before && conn.wants_write(),
    })
}

/// The writing half: the only code that writes the socket after the handshake.
///
/// TLS records must leave in the order rustls made them, so exactly one
/// thread may take them out of rustls and put them on the wire. It writes
/// one of two ways: [`send`](WriteHalf::send) waits until the kernel has
/// taken everything (the client's writer thread, which has nothing else to
/// do), [`offer`](WriteHalf::offer) never waits (the server's writer
/// shards, which serve thousands of sockets each).
pub struct WriteHalf {
    conn: Arc<Mutex<Connection>>,
    socket: Arc<TcpStream>,
    /// TLS bytes written to the socket so far.
    sent: u64,
}

impl WriteHalf {
    /// Encrypts `plaintext` and writes it, blocking until the kernel has
    /// taken all of it. An empty `plaintext` sends only what rustls itself
    /// has queued (an alert, a key update).
    pub fn send(&mut self, plaintext: &[u8]) -> io::Result<()> {
        // Encrypt under the lock; write to the socket without it.
        let records = encrypt(&mut lock(&self.conn), plaintext)?;
        (&*self.socket).write_all(&records)?;
        self.sent += records.len() as u64;
        Ok(())
    }

    /// TLS bytes written to the socket since the split (handshake excluded).
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// The socket's descriptor, for registering it with a readiness API.
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }

    /// Sends close_notify, then ends our direction of the TCP stream.
    ///
    /// The peer can still send: its last lines and its own close_notify
    /// arrive at the reading half as usual.
    ///
    /// After TLS failed, no close_notify: it would tell the peer that all
    /// went well. What rustls queued instead, an alert if it raised one,
    /// goes as it is.
    pub fn close(&mut self) -> io::Result<()> {
        let records = {
            let mut conn = lock(&self.conn);
            close_unless_failed(&mut conn);
            encrypt(&mut conn, &[])?
        };
        (&*self.socket).write_all(&records)?;
        self.sent += records.len() as u64;
        self.socket.shutdown(Shutdown::Write)
    }

    /// Ends both directions at once, waking a reader blocked on the socket.
    pub fn disconnect(&self) {
        // Fails only if the socket is already disconnected, which is the goal.
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    /// Never waits: encrypts as much of `plaintext` as rustls will take (up
    /// to 64 KiB of records) and sends it, with whatever rustls already
    /// held, as far as the kernel takes it.
    ///
    /// The writer shards' way to write: what the kernel does not take stays
    /// inside rustls, already encrypted, for the next call. After the kernel
    /// was `full` the records already waiting go first, and nothing new is
    /// encrypted until they are all gone, so at most one batch of
    /// ciphertext is ever held per connection. Otherwise what waits is
    /// small (a session ticket, a key update) and goes in the same system
    /// call as the new lines. The lock is held throughout, which is fine
    /// because nothing here waits for the network.
    pub fn offer(&mut self, plaintext: &[IoSlice<'_>], full: bool) -> io::Result<Offered> {
        let mut conn = lock(&self.conn);
        let mut sent = 0;
        // What went before an error counts too.
        let taken = offer_locked(&mut conn, &self.socket, plaintext, full, &mut sent);
        self.sent += sent as u64;
        Ok(Offered {
            taken: taken?,
            sent,
            blocked: conn.wants_write(),
        })
    }

    /// Queues close_notify and sends it without waiting, as
    /// [`offer`](WriteHalf::offer) does; `blocked` means it is still inside
    /// rustls, and `offer(&[], true)` sends the rest.
    ///
    /// After TLS failed (a record that did not decrypt, a message rustls
    /// refused), no close_notify: it would tell the peer that all went
    /// well. What rustls queued instead, the alert saying what failed if it
    /// raised one, goes as it is.
    pub fn offer_close(&mut self) -> io::Result<Offered> {
        close_unless_failed(&mut lock(&self.conn));
        self.offer(&[], false)
    }

    /// Ends our direction of the TCP stream, after close_notify went out.
    pub fn shutdown_write(&self) {
        // Fails only on a socket already shut down.
        let _ = self.socket.shutdown(Shutdown::Write);
    }

    /// Cuts the connection: both directions end now, and when the socket
    /// closes the kernel resets it instead of trying for minutes to deliver
    /// what the peer would not read.
    pub fn reset(&self) {
        // Without SO_LINGER the close would leave the unsent bytes to the
        // kernel; if setting it fails, the socket is going anyway.
        let _ = socket2::SockRef::from(&*self.socket).set_linger(Some(Duration::ZERO));
        self.disconnect();
    }
}

/// Queues close_notify, unless TLS has failed (a record that did not
/// decrypt, a message rustls refused): close_notify would tell the peer
/// that all went well. rustls itself refuses it only after a failure for
/// which it raised an alert; some failures raise none (a TLS 1.3 record
/// whose inner content type is zero), and rustls would then send it.
fn close_unless_failed(conn: &mut Connection) {
    // rustls answers even an empty write with its earlier failure.
    if conn.writer().write(&[]).is_ok() {
        conn.send_close_notify();
    }
}

/// What one [`WriteHalf::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    /// Plaintext bytes encrypted (from the start of what was offered).
    pub taken: usize,
    /// TLS bytes the kernel took.
    pub sent: usize,
    /// The kernel is full: encrypted bytes wait inside rustls until the
    /// socket is writable again.
    pub blocked: bool,
}

/// [`WriteHalf::offer`] under the lock: returns the plaintext bytes taken,
/// and adds the TLS bytes the kernel took to `sent`, error or not.
fn offer_locked(
    conn: &mut Connection,
    socket: &TcpStream,
    plaintext: &[IoSlice<'_>],
    full: bool,
    sent: &mut usize,
) -> io::Result<usize> {
    if full {
        send_without_waiting(conn, socket, sent)?;
    }
    let mut taken = 0;
    if !conn.wants_write() || !full {
        if !plaintext.is_empty() {
            match conn.writer().write_vectored(plaintext) {
                Ok(n) => taken = n,
                Err(err) => {
                    // rustls refuses data after a fatal error, but has
                    // queued an alert saying what it was: send that. The
                    // error to report is the one that ended TLS.
                    let _ = send_without_waiting(conn, socket, sent);
                    return Err(err);
                }
            }
        }
        send_without_waiting(conn, socket, sent)?;
    }
    Ok(taken)
}

/// Hands the kernel what rustls has encrypted, until it is all gone or the
/// socket is full, adding the bytes the kernel took to `sent`.
fn send_without_waiting(
    conn: &mut Connection,
    socket: &TcpStream,
    sent: &mut usize,
) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(&mut NoWait(socket)) {
            Ok(n) => *sent += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Writes to a socket without waiting, whatever mode the socket is in.
///
/// `O_NONBLOCK` belongs to the open file, shared by every thread that uses
/// the socket: setting it would break the reader's blocking wait. A flag on
/// each send makes just that send non-blocking. `MSG_NOSIGNAL`: a peer that
/// is gone is an error to handle, not a signal.
struct NoWait<'a>(&'a TcpStream);

impl Write for NoWait<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(self.0).send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // What rustls has sealed is most often one piece (a line, or a
        // batch of lines sealed together): `send` takes it without the
        // message header and vector `sendmsg` must copy in first: about
        // 0.25 µs less a send, of the 3.4 µs a small loopback send costs
        // (README, "Threads and channels").
        if let [one] = bufs {
            return self.write(one);
        }
        socket2::SockRef::from(self.0)
            .send_vectored_with_flags(bufs, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Turns plaintext into TLS records, plus whatever else rustls has queued.
///
/// One `write` into rustls makes at least one record, so callers pass a
/// whole batch at once. rustls stops taking plaintext while 64 KiB of its
/// output is unsent, hence the loop that takes the output out as it goes.
fn encrypt(conn: &mut Connection, plaintext: &[u8]) -> io::Result<Vec<u8>> {
    // A record adds a few dozen bytes of header and tag per 16 KiB.
    let mut records = Vec::with_capacity(plaintext.len() + 64);
    let mut rest = plaintext;
    while !rest.is_empty() {
        let taken = conn.writer().write(rest)?;
        rest = &rest[taken..];
        if taken == 0 && !conn.wants_write() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while conn.wants_write() {
            conn.write_tls(&mut records)?;
        }
    }
    while conn.wants_write() {
        conn.write_tls(&mut records)?;
    }
    Ok(records)
}

#[cfg(test)]
mod tests;

//! The reading side of a connection, in lines: a [`ReadHalf`] and a
//! [`LineFramer`] together, read the same way by every reader in the
//! project (the server, the client, the benchmark, the tests): one line at
//! a time, or how the connection ended. What a line means is not its job.
//!
//! Next: [`protocol`](crate::protocol), what a line means.

use std::collections::VecDeque;
use std::fmt;
use std::io;

use crate::duplex::{ReadHalf, Received};
use crate::line::{Frame, LineFramer};

/// How a connection's reading side ended.
#[derive(Debug)]
pub enum End {
    /// The peer sent close_notify: everything it sent has been read, its
    /// last unterminated line included.
    Closed,
    /// The TCP stream ended without close_notify: the peer vanished, or
    /// this side shut the socket down. Its last lines may be missing.
    Lost,
    /// Reading or decrypting failed. A TLS alert from the peer, or one
    /// rustls raised itself, is a `rustls::Error` inside.
    Failed(io::Error),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => write!(f, "closed the connection"),
            End::Lost => write!(f, "connection lost (no close_notify)"),
            End::Failed(err) => write!(f, "connection failed: {err}"),
        }
    }
}

impl End {
    /// The rustls error inside a [`End::Failed`], if that is what it was.
    pub fn tls_error(&self) -> Option<&rustls::Error> {
        match self {
            End::Failed(err) => err.get_ref()?.downcast_ref::<rustls::Error>(),
            _ => None,
        }
    }
}

/// A connection's reading half that yields lines.
///
/// Reading can make rustls queue something to send by itself (a reply to
/// the peer's key update, an alert). Only the writing side may send, so
/// the reader calls `flush`, given at construction, to ask it to.
pub struct LineReader {
    half: ReadHalf,
    framer: LineFramer,
    /// Lines already framed, not yet handed out.
    ready: VecDeque<Frame>,
    flush: Box<dyn FnMut() + Send>,
    /// How the connection ended, once it has: returned once `ready` is
    /// empty, and then replaced by the error of a read after the end.
    end: Option<End>,
    /// It ended because TLS failed (rustls' error, not the socket's).
    tls_failed: bool,
}

impl LineReader {
    /// Reads lines of at most `max_line` bytes from `half`; `flush` asks
    /// the writing side to send what rustls queued while reading.
    pub fn new(half: ReadHalf, max_line: usize, flush: impl FnMut() + Send + 'static) -> Self {
        LineReader {
            half,
            framer: LineFramer::new(max_line),
            ready: VecDeque::new(),
            flush: Box::new(flush),
            end: None,
            tls_failed: false,
        }
    }

    /// The next line, waiting for the peer as long as it takes; or how the
    /// connection ended, once every line before the end has been returned.
    ///
    /// After the end has been returned, every later call fails at once.
    pub fn next_line(&mut self) -> Result<Frame, End> {
        while self.ready.is_empty() && self.end.is_none() {
            self.receive();
        }
        if let Some(frame) = self.ready.pop_front() {
            return Ok(frame);
        }
        let after = io::Error::new(io::ErrorKind::NotConnected, "read after the end");
        Err(self.end.replace(End::Failed(after)).expect("the end came"))
    }

    /// One wait for the peer: whatever it decrypts is framed into `ready`.
    fn receive(&mut self) {
        let (framer, ready) = (&mut self.framer, &mut self.ready);
        match self.half.receive(&mut |bytes| framer.push(bytes, ready)) {
            Ok(Received::Data { wants_write }) => {
                if wants_write {
                    (self.flush)();
                }
            }
            Ok(Received::Closed) => {
                self.ready.extend(self.framer.finish());
                self.end = Some(End::Closed);
            }
            Ok(Received::Eof) => self.end = Some(End::Lost),
            Err(err) => {
                // rustls may have queued an alert that says why.
                (self.flush)();
                let end = End::Failed(err);
                self.tls_failed = end.tls_error().is_some();
                self.end = Some(end);
            }
        }
    }

    /// TLS bytes read from the socket so far (the handshake excluded).
    pub fn bytes_received(&self) -> u64 {
        self.half.bytes_received()
    }

    /// If TLS failed, reads and drops what the peer still sends until it
    /// hangs up or the connection is cut
    /// ([`ReadHalf::discard_until_closed`]); otherwise does nothing.
    pub fn discard_if_failed(&mut self) {
        if self.tls_failed {
            self.half.discard_until_closed();
        }
    }
}

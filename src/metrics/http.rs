//! The metrics endpoint: plain HTTP/1.1 on one thread that serves a few
//! connections at once from one mio poll, one request per connection.
//! `GET /metrics` is answered with the scrape; anything else with 404. No
//! TLS and no authentication: see the README.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::text::CONTENT_TYPE;
use super::Registry;
use crate::error::Error;
use crate::server::{bind_first, is_resource_exhaustion, ACCEPT_BACKOFF};

/// The most a request's head may take. A scraper's `GET /metrics` with its
/// headers is a few hundred bytes; this is room for a proxy's additions.
pub const MAX_REQUEST: usize = 8 * 1024;

/// How long one connection may stay open, in all: to send its request,
/// take the answer and (after a request too large) stop sending. A
/// connection that trickles bytes is dropped when this passes, however it
/// trickles.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections served at once. One more is made room for by dropping the
/// one open longest: a scraper's request, sent as soon as it connects, is
/// answered unless this many others connect in that moment, and silent
/// connections hold nothing for the next one.
pub const MAX_OPEN: usize = 16;

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);
/// The first token of a connection; each gets the next one.
const FIRST: usize = 2;

/// The endpoint's thread, serving until [`Endpoint::stop`] (or the
/// process's end).
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: JoinHandle<()>,
}

impl Endpoint {
    /// Binds `addr` and starts answering scrapes of `registry`.
    pub fn serve(addr: &str, registry: Arc<Registry>) -> Result<Endpoint, Error> {
        let listener = bind_first(addr, |candidate| {
            let listener = TcpListener::bind(candidate)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let poll = Poll::new().map_err(Error::Thread)?;
        poll.registry()
            .register(
                &mut SourceFd(&listener.as_raw_fd()),
                LISTENER,
                Interest::READABLE,
            )
            .map_err(Error::Thread)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).map_err(Error::Thread)?);
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = Serving {
            poll,
            listener,
            registry,
            stop: Arc::clone(&stop),
            open: HashMap::new(),
            next: FIRST,
            accept_paused: false,
        };
        let thread = thread::Builder::new()
            .name("metrics".into())
            .spawn(move || server.run())
            .map_err(Error::Thread)?;
        Ok(Endpoint {
            addr,
            stop,
            waker,
            thread,
        })
    }

    /// The address actually bound (after port 0, the port given).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering, drops the connections open, and waits for the
    /// thread. `chat-server` never calls it (the endpoint ends with the
    /// process); a program that embeds the server and outlives it does.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        // If waking fails the poll is gone, and so is the thread.
        let _ = self.waker.wake();
        let _ = self.thread.join();
    }
}

/// What a request asked for, as far as the endpoint cares.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics,
    Other,
    TooLarge,
}

/// Where one connection is.
enum Phase {
    /// Reading the request's head: `scanned` bytes of it hold no end.
    Reading { head: Vec<u8>, scanned: usize },
    /// Sending the answer, from `sent` on; then, for a request too large,
    /// draining.
    Answering {
        answer: Vec<u8>,
        sent: usize,
        drain: bool,
    },
    /// Reading and dropping what a request too large still sends, until
    /// the peer hangs up: closing with it unread would reset the
    /// connection, and the scraper could lose the answer. `left` bytes at
    /// most.
    Draining { left: usize },
}

struct Open {
    socket: TcpStream,
    /// When it must be done: [`REQUEST_TIMEOUT`] after it was accepted.
    deadline: Instant,
    phase: Phase,
}

/// The thread's state.
struct Serving {
    poll: Poll,
    listener: TcpListener,
    registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    open: HashMap<Token, Open>,
    next: usize,
    /// `accept` failed for want of descriptors or memory: it is tried
    /// again after [`ACCEPT_BACKOFF`], not at once (it would fail again,
    /// and the thread would spin).
    accept_paused: bool,
}

impl Serving {
    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut wait = self
                .open
                .values()
                .map(|open| open.deadline.saturating_duration_since(now))
                .min();
            if self.accept_paused {
                wait = Some(wait.map_or(ACCEPT_BACKOFF, |w| w.min(ACCEPT_BACKOFF)));
            }
            if let Err(err) = self.poll.poll(&mut events, wait) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("metrics: cannot wait for connections: {err}");
                return;
            }
            let mut accept = std::mem::take(&mut self.accept_paused);
            for event in &events {
                match event.token() {
                    LISTENER => accept = true,
                    WAKE => {}
                    token => self.advance(token),
                }
            }
            if accept {
                self.accept();
            }
            let now = Instant::now();
            self.open.retain(|_, open| open.deadline > now);
        }
    }

    /// Takes every connection waiting, dropping the oldest open one to
    /// make room for each past [`MAX_OPEN`].
    fn accept(&mut self) {
        loop {
            let socket = match self.listener.accept() {
                Ok((socket, _)) => socket,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if is_resource_exhaustion(&err) => {
                    log::debug!("metrics: accept failed: {err}; trying again shortly");
                    self.accept_paused = true;
                    return;
                }
                // One connection's trouble (it was reset while queued).
                Err(_) => continue,
            };
            if self.open.len() >= MAX_OPEN {
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, open)| open.deadline)
                    .map(|(&token, _)| token);
                if let Some(oldest) = oldest {
                    self.open.remove(&oldest);
                }
            }
            let token = Token(self.next);
            self.next += 1;
            let fd = socket.as_raw_fd();
            let registered = socket.set_nonblocking(true).and_then(|()| {
                self.poll.registry().register(
                    &mut SourceFd(&fd),
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )
            });
            if registered.is_err() {
                continue;
            }
            let open = Open {
                socket,
                deadline: Instant::now() + REQUEST_TIMEOUT,
                phase: Phase::Reading {
                    head: Vec::with_capacity(512),
                    scanned: 0,
                },
            };
            self.open.insert(token, open);
            // What came with the connection is read now.
            self.advance(token);
        }
    }

    /// Takes a connection as far as its socket lets it go now; drops it
    /// when it is done or has failed.
    fn advance(&mut self, token: Token) {
        let Some(open) = self.open.get_mut(&token) else {
            return;
        };
        match step(open, &self.registry) {
            Ok(true) | Err(_) => {
                // Closing the socket takes it out of the poll.
                self.open.remove(&token);
            }
            Ok(false) => {}
        }
    }
}

/// Moves `open` on until its socket would block (false) or it is done
/// (true).
fn step(open: &mut Open, registry: &Registry) -> io::Result<bool> {
    loop {
        match &mut open.phase {
            Phase::Reading { head, scanned } => {
                let request = match read_head(&mut open.socket, head, scanned)? {
                    Some(request) => request,
                    None => return Ok(false),
                };
                open.phase = Phase::Answering {
                    answer: answer(&request, registry),
                    sent: 0,
                    drain: request == Request::TooLarge,
                };
            }
            Phase::Answering {
                answer,
                sent,
                drain,
            } => {
                while *sent < answer.len() {
                    match open.socket.write(&answer[*sent..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => *sent += n,
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => return Err(err),
                    }
                }
                open.socket.shutdown(Shutdown::Write)?;
                if !*drain {
                    return Ok(true);
                }
                open.phase = Phase::Draining {
                    left: 8 * MAX_REQUEST,
                };
            }
            Phase::Draining { left } => {
                let mut buf = [0u8; 1024];
                while *left > 0 {
                    match open.socket.read(&mut buf) {
                        Ok(0) => return Ok(true),
                        Ok(n) => *left = left.saturating_sub(n),
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => return Err(err),
                    }
                }
                return Ok(true);
            }
        }
    }
}

/// Reads what the socket has of the request's head (up to the empty line,
/// within [`MAX_REQUEST`] bytes): the request once it is whole, or None
/// while more is to come. Only the bytes new since the last call are
/// searched for the end (with the three before them, where an end may
/// have begun).
fn read_head(
    socket: &mut TcpStream,
    head: &mut Vec<u8>,
    scanned: &mut usize,
) -> io::Result<Option<Request>> {
    let mut buf = [0u8; 1024];
    loop {
        if let Some(request) = complete(head, scanned) {
            return Ok(Some(request));
        }
        let room = (MAX_REQUEST - head.len()).min(buf.len());
        match socket.read(&mut buf[..room]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// The request, if `head` now holds all of its head, or too much;
/// `scanned` is how far it is known to hold no end.
fn complete(head: &[u8], scanned: &mut usize) -> Option<Request> {
    let from = scanned.saturating_sub(3);
    let new = &head[from..];
    if new.windows(4).any(|w| w == b"\r\n\r\n") || new.windows(2).any(|w| w == b"\n\n") {
        return Some(parse(head));
    }
    *scanned = head.len();
    (head.len() >= MAX_REQUEST).then_some(Request::TooLarge)
}

/// The whole answer to `request`: head and body.
fn answer(request: &Request, registry: &Registry) -> Vec<u8> {
    let (status, content_type, body) = match request {
        Request::Metrics => ("200 OK", CONTENT_TYPE, registry.render()),
        Request::Other => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only /metrics is served here\n".to_string(),
        ),
        Request::TooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
            "request too large\n".to_string(),
        ),
    };
    let mut answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    answer
}

/// `GET /metrics` (a query after it is allowed) over HTTP/1.x is the one
/// request answered with figures.
fn parse(head: &[u8]) -> Request {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Request::Other;
    };
    let path = target.split('?').next().unwrap_or_default();
    if method == "GET" && path == "/metrics" && version.starts_with("HTTP/1.") {
        Request::Metrics
    } else {
        Request::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_a_scrape() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0\n\n"), Request::Metrics);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Request::Other);
        assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n"), Request::Other);
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Request::Other);
        assert_eq!(parse(b"\xff\xfe\r\n\r\n"), Request::Other);
    }

    /// Sends `request` to a fresh endpoint; returns what came back.
    fn ask(request: &[u8]) -> String {
        let endpoint = Endpoint::serve("127.0.0.1:0", Registry::new()).unwrap();
        let mut socket = TcpStream::connect(endpoint.local_addr()).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The endpoint may answer and close before all of a large request
        // is written: what it said is what counts.
        let _ = socket.write_all(request);
        let _ = socket.shutdown(Shutdown::Write);
        let mut reply = String::new();
        let _ = socket.read_to_string(&mut reply);
        endpoint.stop();
        reply
    }

    #[test]
    fn a_scrape_gets_the_text_format_and_anything_else_404() {
        let reply = ask(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("version=0.0.4"), "{reply}");
        assert!(
            reply.contains("# TYPE chat_server_threads gauge"),
            "{reply}"
        );
        let reply = ask(b"GET /secret HTTP/1.1\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 404 Not Found\r\n"), "{reply}");
    }

    #[test]
    fn a_request_past_the_cap_is_refused_without_being_read_whole() {
        let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'a', 4 * MAX_REQUEST));
        let reply = ask(&request);
        assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    }

    #[test]
    fn an_end_split_across_reads_is_found_scanning_only_new_bytes() {
        let whole = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut head = Vec::new();
        let mut scanned = 0;
        for (i, &byte) in whole.iter().enumerate() {
            head.push(byte);
            let request = complete(&head, &mut scanned);
            if i + 1 < whole.len() {
                assert_eq!(request, None, "after {} bytes", i + 1);
                assert_eq!(scanned, head.len());
            } else {
                assert_eq!(request, Some(Request::Metrics));
            }
        }
    }

    /// A connection to `endpoint` that says nothing.
    fn silent(endpoint: &Endpoint) -> TcpStream {
        let socket = TcpStream::connect(endpoint.local_addr()).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        socket
    }

    /// Scrapes `endpoint` once; returns the reply.
    fn scrape(endpoint: &Endpoint) -> String {
        let mut socket = silent(endpoint);
        socket
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        socket.read_to_string(&mut reply).unwrap();
        reply
    }

    #[test]
    fn silent_connections_do_not_hold_up_a_scrape() {
        let endpoint = Endpoint::serve("127.0.0.1:0", Registry::new()).unwrap();
        let _held: Vec<TcpStream> = (0..MAX_OPEN - 1).map(|_| silent(&endpoint)).collect();
        let started = Instant::now();
        let reply = scrape(&endpoint);
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        // One at a time, it waited out each silent one's timeout first.
        assert!(
            started.elapsed() < REQUEST_TIMEOUT / 2,
            "{:?}",
            started.elapsed()
        );
        endpoint.stop();
    }

    #[test]
    fn past_the_cap_the_oldest_connection_is_dropped() {
        let endpoint = Endpoint::serve("127.0.0.1:0", Registry::new()).unwrap();
        let mut first = silent(&endpoint);
        // The endpoint has taken it once a scrape made after it is answered.
        assert!(scrape(&endpoint).starts_with("HTTP/1.1 200"));
        let started = Instant::now();
        let _others: Vec<TcpStream> = (0..MAX_OPEN).map(|_| silent(&endpoint)).collect();
        let mut rest = Vec::new();
        let read = first.read_to_end(&mut rest);
        assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
        assert!(
            started.elapsed() < REQUEST_TIMEOUT / 2,
            "{:?}",
            started.elapsed()
        );
        endpoint.stop();
    }

    #[test]
    fn a_silent_scraper_is_dropped_after_the_timeout() {
        let endpoint = Endpoint::serve("127.0.0.1:0", Registry::new()).unwrap();
        let silent = TcpStream::connect(endpoint.local_addr()).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut reply = Vec::new();
        // The endpoint closes without a word once its timeout passes.
        let read = (&silent).read_to_end(&mut reply);
        assert!(read.is_ok() && reply.is_empty(), "{read:?} {reply:?}");
        assert!(started.elapsed() >= REQUEST_TIMEOUT - Duration::from_millis(100));
        endpoint.stop();
    }
}

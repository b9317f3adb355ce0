//! The server: the accept loop, one [`Session`] per client, and shutdown.
//!
//! Owns the threads. The accept loop only accepts; each connection's
//! handshake runs in a thread of its own, which then starts the reading and
//! writing threads and ends. The hub thread owns the chat itself.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rustls::{Connection, ServerConfig, ServerConnection};

use crate::duplex::{self, ReadHalf, Received};
use crate::error::Error;
use crate::hub::{self, ClientId, Event, HubSettings};
use crate::line::{LineFramer, MAX_LINE_LEN};
use crate::outbox::{self, Outbox, QueueLimits};
use crate::tls;

/// The address the server listens on unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// Default time a client has to finish the TLS handshake.
///
/// A real handshake takes a few round trips, milliseconds even across the
/// world; ten seconds forgives a slow link while a socket that never speaks
/// TLS is dropped soon.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closing connection waits for the peer to hang up after our
/// close_notify, so that our last lines are read, not lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(1);

/// How long shutdown waits for connections to close by themselves before
/// cutting the rest.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// How long the accept loop pauses when the system is out of file
/// descriptors or memory, instead of spinning on an error that persists.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the server allows each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// The longest line, in bytes, without its line end.
    pub max_line: usize,
    /// How far a client's outbound queue may fall behind.
    pub queue: QueueLimits,
    /// Lines of history each room keeps for newcomers (0: none).
    pub history: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_line: MAX_LINE_LEN,
            queue: QueueLimits::default(),
            history: hub::HISTORY_LINES,
        }
    }
}

/// A bound listening socket, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    limits: Limits,
    stop: Arc<AtomicBool>,
}

/// Stops a running server from another thread (a signal handler, a test).
#[derive(Debug, Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    /// Where to connect to wake the accept loop.
    wake: SocketAddr,
}

impl Stopper {
    /// Asks the server to stop; [`Server::run`] returns once it has.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // `accept` cannot be interrupted; a connection of our own wakes it
        // to see the flag. If this fails, the listener is already gone.
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
    }
}

impl Server {
    /// Binds the listening socket. Fails if the address is taken or invalid.
    pub fn bind(addr: &str, tls: Arc<ServerConfig>, limits: Limits) -> Result<Server, Error> {
        let bind_error = |source| Error::Bind {
            addr: addr.to_string(),
            source,
        };
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(bind_error)?.collect();
        let listener = TcpListener::bind(&addrs[..]).map_err(bind_error)?;
        Ok(Server {
            listener,
            tls,
            limits,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The address actually bound (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// A handle that stops this server.
    pub fn stopper(&self) -> Stopper {
        let mut wake = self.local_addr();
        // A server on every interface is woken through loopback.
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Stopper {
            stop: Arc::clone(&self.stop),
            wake,
        }
    }

    /// Accepts clients until stopped, then closes every connection and
    /// joins every thread it started.
    pub fn run(self) -> Result<(), Error> {
        let (events, hub_events) = crossbeam_channel::unbounded();
        let settings = HubSettings {
            max_line: self.limits.max_line,
            history: self.limits.history,
        };
        let hub = thread::Builder::new()
            .name("hub".into())
            .spawn(move || hub::run(hub_events, settings))?;
        // Every thread of every session holds a clone; when the last one
        // ends, `recv` on `all_done` reports the channel disconnected.
        let (alive, all_done) = crossbeam_channel::bounded::<()>(0);

        let mut next_id = 0;
        let mut out_of_resources = false;
        while !self.stop.load(Ordering::SeqCst) {
            let (socket, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(err) => {
                    if is_resource_exhaustion(&err) {
                        if !out_of_resources {
                            log::error!("accept failed: {err}; pausing new connections");
                            out_of_resources = true;
                        }
                        thread::sleep(ACCEPT_BACKOFF);
                    } else {
                        log::warn!("accept failed: {err}");
                    }
                    continue;
                }
            };
            out_of_resources = false;
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            next_id += 1;
            let session = Session {
                id: ClientId(next_id),
                peer,
                socket: Arc::new(socket),
                tls: Arc::clone(&self.tls),
                limits: self.limits,
                events: events.clone(),
                alive: alive.clone(),
            };
            // Registered before its thread exists, so the hub hears of the
            // connection before anything the session says.
            let _ = events.send(Event::Accepted {
                id: session.id,
                peer,
                socket: Arc::clone(&session.socket),
            });
            let id = session.id;
            if let Err(err) = spawn(format!("handshake {id}"), move || session.handshake()) {
                log::error!("{id} {peer}: dropped: cannot start a thread: {err}");
                let _ = events.send(Event::Gone {
                    id,
                    reason: "no thread".into(),
                });
            }
        }
        drop(self.listener);
        log::info!("stopping: closing every connection");

        let _ = events.send(Event::Shutdown);
        drop(events);
        let sockets = hub.join().unwrap_or_default();
        drop(alive);
        if wait_for_all(&all_done, SHUTDOWN_GRACE).is_err() {
            log::warn!("cutting connections that did not close in time");
            for socket in &sockets {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
            // Every thread is now one failed system call from ending.
            if wait_for_all(&all_done, SHUTDOWN_GRACE).is_err() {
                log::error!("some connection threads did not end");
            }
        }
        Ok(())
    }
}

/// Waits until every holder of the `alive` sender is gone, or `limit` passes.
fn wait_for_all(all_done: &Receiver<()>, limit: Duration) -> Result<(), ()> {
    match all_done.recv_timeout(limit) {
        Err(RecvTimeoutError::Disconnected) => Ok(()),
        Ok(()) | Err(RecvTimeoutError::Timeout) => Err(()),
    }
}

/// Errors after which `accept` fails again at once until something is freed.
fn is_resource_exhaustion(err: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(err.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

fn spawn(name: String, work: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new().name(name).spawn(work).map(drop)
}

/// One client's connection, from accept to goodbye, on the server side.
struct Session {
    id: ClientId,
    peer: SocketAddr,
    socket: Arc<TcpStream>,
    tls: Arc<ServerConfig>,
    limits: Limits,
    /// The hub holds the receiving end.
    events: Sender<Event>,
    /// Dropped when the thread holding it ends; see [`Server::run`].
    alive: Sender<()>,
}

impl Session {
    /// Runs in a short-lived thread of its own: the handshake's deep stack
    /// is freed when it ends, instead of staying resident in the reader.
    fn handshake(self) {
        let Session { id, peer, .. } = self;
        let gone = |reason: String| {
            let _ = self.events.send(Event::Gone { id, reason });
        };
        // Chat lines are small and interactive: send each batch at once.
        if let Err(err) = self.socket.set_nodelay(true) {
            return gone(format!("socket failed: {err}"));
        }
        let mut conn = match ServerConnection::new(Arc::clone(&self.tls)) {
            Ok(conn) => Connection::Server(conn),
            Err(err) => return gone(format!("TLS setup failed: {err}")),
        };
        if let Err(err) = duplex::handshake(&mut conn, &self.socket, self.limits.handshake_timeout)
        {
            return gone(format!("handshake failed: {err}"));
        }
        log::info!("{id} {peer}: connected, {}", tls::describe(&conn));

        let (read_half, write_half) = duplex::split(conn, Arc::clone(&self.socket));
        let (outbox, inbox) = outbox::channel(self.limits.queue);
        // Disconnects when the reader ends; the writer lingers on it.
        let (reader_alive, reader_done) = crossbeam_channel::bounded::<()>(0);

        let alive = self.alive.clone();
        let writer = move || {
            outbox::run_writer(write_half, inbox, reader_done, LINGER);
            drop(alive);
        };
        if let Err(err) = spawn(format!("writer {id}"), writer) {
            return gone(format!("cannot start a thread: {err}"));
        }
        let reader = Reader {
            id,
            half: read_half,
            framer: LineFramer::new(self.limits.max_line),
            events: self.events.clone(),
            outbox: outbox.clone(),
            _alive: (self.alive.clone(), reader_alive),
        };
        // The hub learns of the outbox before the reader's first line.
        if self.events.send(Event::Ready { id, outbox }).is_err() {
            // The server is stopping; the writer closes when `reader` drops.
            return;
        }
        if let Err(err) = spawn(format!("reader {id}"), move || reader.run()) {
            gone(format!("cannot start a thread: {err}"));
        }
    }
}

/// The reading thread of one session: frames lines, hands them to the hub.
struct Reader {
    id: ClientId,
    half: ReadHalf,
    framer: LineFramer,
    /// The hub holds the receiving end.
    events: Sender<Event>,
    /// Used only to ask the writer to flush or to close, never to push lines.
    outbox: Outbox,
    /// Dropped when the reader ends: tells the server and the writer.
    _alive: (Sender<()>, Sender<()>),
}

impl Reader {
    fn run(mut self) {
        let mut frames = Vec::new();
        let reason = loop {
            let framer = &mut self.framer;
            let received = self
                .half
                .receive(&mut |bytes| framer.push(bytes, &mut frames));
            for frame in frames.drain(..) {
                let _ = self.events.send(Event::Frame { id: self.id, frame });
            }
            match received {
                Ok(Received::Data { wants_write }) => {
                    if wants_write {
                        self.outbox.flush();
                    }
                }
                Ok(Received::Closed) => {
                    if let Some(frame) = self.framer.finish() {
                        let _ = self.events.send(Event::Frame { id: self.id, frame });
                    }
                    break "client closed the connection".to_string();
                }
                Ok(Received::Eof) => break "connection lost (no close_notify)".to_string(),
                Err(err) => break format!("connection failed: {err}"),
            }
        };
        // The hub closes the outbox once it has queued its last lines for
        // this client (a reply, a goodbye). Only if the hub has stopped
        // does the reader close it, as nobody else will.
        if self
            .events
            .send(Event::Gone {
                id: self.id,
                reason,
            })
            .is_err()
        {
            self.outbox.close();
        }
    }
}

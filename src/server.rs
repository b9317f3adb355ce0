//! The server: the accept loop, one `Session` per client, and shutdown.
//!
//! Owns the threads and the limits on them. The accept loop only accepts;
//! each connection's handshake runs in a thread of its own, which then
//! starts the reading and writing threads and ends. The hub thread owns the
//! chat itself.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rustls::{Connection, ServerConfig, ServerConnection};

use crate::duplex::{self, ReadHalf, Received};
use crate::error::Error;
use crate::hub::{self, ClientId, Event, HubSettings, PeerCertificate};
use crate::line::{LineFramer, MAX_LINE_LEN};
use crate::outbox::{self, Outbox, QueueLimits};
use crate::throttle::{RateLimit, TokenBucket};
use crate::{tls, x509};

/// The address the server listens on unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// Default time a client has to finish the TLS handshake.
///
/// A real handshake takes a few round trips, milliseconds even across the
/// world; ten seconds forgives a slow link while a socket that never speaks
/// TLS is dropped soon.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for the most clients in the chat at once.
///
/// Each costs two threads and about 40 KiB; a thousand fit a small machine
/// many times over, and the limit keeps a flood of connections from taking
/// the whole machine.
pub const MAX_CLIENTS: usize = 1000;

/// Default for how long a single write to a client may make no progress
/// before the client is taken for dead and disconnected.
///
/// Long enough for any live network; a client that merely reads slowly is
/// found out sooner by its queue limit.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// TCP keepalive: after this long without traffic, the kernel checks that
/// the peer still exists, three times at ten-second intervals. A client
/// that vanished (power cut, lost network) is then dropped within two
/// minutes instead of holding its threads for ever in a quiet room.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// How long a closing connection waits for the peer to hang up after our
/// close_notify, so that our last lines are read, not lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(1);

/// How long shutdown waits for connections to close by themselves before
/// cutting the rest. With [`LINGER`] below it, stopping takes under two
/// seconds.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1200);

/// How long the accept loop pauses when the system is out of file
/// descriptors or memory, instead of spinning on an error that persists.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Events waiting for the hub before readers wait to add more. A reader
/// that waits stops reading its socket, so a client flooding the hub is
/// slowed by TCP itself instead of growing the server's memory.
const EVENT_QUEUE: usize = 4096;

/// What the server allows each client, and how many clients.
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
    /// The most clients in the chat at once. Up to as many again may be
    /// connecting (in their handshake, or being refused); connections past
    /// that are closed at once.
    pub max_clients: usize,
    /// The most clients from one IP address, if limited; then also at most
    /// twice as many connections from it in any state.
    pub max_per_ip: Option<usize>,
    /// How fast each client may send lines, if limited.
    pub rate: Option<RateLimit>,
    /// How long one write to a client may make no progress.
    pub write_timeout: Duration,
    /// Rooms with more people than this do not announce who joins or quits.
    pub announce_limit: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_line: MAX_LINE_LEN,
            queue: QueueLimits::default(),
            history: hub::HISTORY_LINES,
            max_clients: MAX_CLIENTS,
            max_per_ip: None,
            rate: Some(RateLimit::default()),
            write_timeout: WRITE_TIMEOUT,
            announce_limit: hub::ANNOUNCE_LIMIT,
        }
    }
}

/// A bound listening socket, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    /// Read at each accept; [`Reloader`] replaces it.
    tls: Arc<Mutex<Arc<ServerConfig>>>,
    limits: Limits,
    stop: Arc<AtomicBool>,
    /// Connections open right now, in any state.
    open: Arc<AtomicUsize>,
    /// Connections open right now per address, counted only with
    /// `max_per_ip`.
    per_ip: PerIp,
}

/// Open connections per IP address.
type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

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

/// Replaces the TLS configuration of a running server: connections
/// accepted afterwards use the new one; those already open keep theirs.
#[derive(Debug, Clone)]
pub struct Reloader {
    tls: Arc<Mutex<Arc<ServerConfig>>>,
}

impl Reloader {
    /// Uses `config` for every connection from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }
}

/// Counts of what a running server holds, for tests and monitoring.
#[derive(Debug, Clone)]
pub struct Gauges {
    open: Arc<AtomicUsize>,
}

impl Gauges {
    /// Connections open right now: accepted and not yet fully closed.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Server {
    /// Binds the listening socket. Fails if the address is taken or invalid.
    pub fn bind(addr: &str, tls: Arc<ServerConfig>, limits: Limits) -> Result<Server, Error> {
        let bind_error = |source| Error::Bind {
            addr: addr.to_string(),
            source,
        };
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address to bind");
        let mut bound = None;
        for candidate in addr.to_socket_addrs().map_err(bind_error)? {
            match listen(candidate) {
                Ok(listener) => {
                    bound = Some(listener);
                    break;
                }
                Err(err) => last_error = err,
            }
        }
        let listener = bound.ok_or_else(|| bind_error(last_error))?;
        Ok(Server {
            listener,
            tls: Arc::new(Mutex::new(tls)),
            limits,
            stop: Arc::new(AtomicBool::new(false)),
            open: Arc::new(AtomicUsize::new(0)),
            per_ip: PerIp::default(),
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

    /// A handle that replaces this server's TLS configuration.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            tls: Arc::clone(&self.tls),
        }
    }

    /// A handle that reads this server's counts.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            open: Arc::clone(&self.open),
        }
    }

    /// Accepts clients until stopped, then closes every connection and
    /// waits for every thread it started.
    pub fn run(self) -> Result<(), Error> {
        let (events, hub_events) = crossbeam_channel::bounded(EVENT_QUEUE);
        let settings = HubSettings {
            max_line: self.limits.max_line,
            history: self.limits.history,
            max_clients: self.limits.max_clients,
            max_per_ip: self.limits.max_per_ip,
            announce_limit: self.limits.announce_limit,
        };
        let hub = thread::Builder::new()
            .name("hub".into())
            .spawn(move || hub::run(hub_events, settings))
            .map_err(Error::Thread)?;
        // Every connection's guard holds a clone; when the last guard is
        // gone, `recv` on `all_done` reports the channel disconnected.
        let (alive, all_done) = crossbeam_channel::bounded::<()>(0);

        let mut next_id = 0;
        let mut out_of_resources = false;
        let mut turning_away = false;
        while !self.stop.load(Ordering::SeqCst) {
            let (socket, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(err) => {
                    if is_resource_exhaustion(&err) {
                        if !out_of_resources {
                            log::error!(
                                "accept failed: {err}; pausing new connections \
                                 (raise the open files limit: ulimit -n)"
                            );
                            out_of_resources = true;
                        }
                        thread::sleep(ACCEPT_BACKOFF);
                    } else {
                        log::warn!("accept failed: {err}");
                    }
                    continue;
                }
            };
            if out_of_resources {
                log::info!("accepting connections again");
                out_of_resources = false;
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            // Room for every client, and as many again in their handshake
            // or being refused with a reason; past that, no TLS at all.
            let cap = self.limits.max_clients.max(1).saturating_mul(2);
            if self.open.load(Ordering::SeqCst) >= cap {
                if !turning_away {
                    log::warn!("too many connections: closing new ones at once");
                    turning_away = true;
                }
                continue;
            }
            turning_away = false;
            // The same for one address, so that it cannot take every
            // handshake slot: the hub refuses its extra members by name,
            // but connections still in their handshake are counted here.
            let per_ip = self
                .limits
                .max_per_ip
                .map(|max| (max.max(1) * 2, &self.per_ip));
            if let Some((cap, counts)) = per_ip {
                let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
                let count = counts.entry(peer.ip()).or_default();
                if *count >= cap {
                    log::debug!("{peer}: closed at once: {cap} connections from its address");
                    continue;
                }
                *count += 1;
            }
            next_id += 1;
            let id = ClientId(next_id);
            let socket = Arc::new(socket);
            let guard = Arc::new(ConnGuard::new(
                id,
                peer,
                per_ip.map(|(_, counts)| Arc::clone(counts)),
                &self.open,
                alive.clone(),
                events.clone(),
            ));
            // Registered before its thread exists, so the hub hears of the
            // connection before anything the session says.
            let accepted = Event::Accepted {
                id,
                peer,
                socket: Arc::clone(&socket),
            };
            if events.send(accepted).is_err() {
                break;
            }
            let session = Session {
                id,
                peer,
                socket,
                tls: Arc::clone(&self.tls.lock().unwrap_or_else(|p| p.into_inner())),
                limits: self.limits,
                events: events.clone(),
                guard,
            };
            if let Err(err) = spawn(format!("handshake {id}"), move || session.handshake()) {
                // The session, and with it the guard, were dropped: the hub
                // hears that the connection closed.
                log::error!("{id} {peer}: dropped: cannot start a thread: {err}");
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

/// Connections the kernel queues for `accept` while the accept loop is busy.
///
/// std listens with 128; a burst of clients (everyone reconnecting after a
/// restart) overflows that, and each client whose SYN was dropped waits a
/// second or more to retry. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// A listening socket on `addr`, as `TcpListener::bind` makes one (address
/// reuse on), but with a deeper backlog.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
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

/// Lives as long as any thread of one connection: counts the connection as
/// open, adds up its traffic, and when the last thread ends, logs it and
/// tells the hub the socket is closed.
struct ConnGuard {
    id: ClientId,
    peer: SocketAddr,
    open: Arc<AtomicUsize>,
    /// Set when connections are counted per address.
    per_ip: Option<PerIp>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Dropped with the guard; see [`Server::run`].
    _alive: Sender<()>,
    events: Sender<Event>,
}

impl ConnGuard {
    fn new(
        id: ClientId,
        peer: SocketAddr,
        per_ip: Option<PerIp>,
        open: &Arc<AtomicUsize>,
        alive: Sender<()>,
        events: Sender<Event>,
    ) -> ConnGuard {
        open.fetch_add(1, Ordering::SeqCst);
        ConnGuard {
            id,
            peer,
            open: Arc::clone(open),
            per_ip,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            _alive: alive,
            events,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        log::info!(
            "{} {}: closed, {} bytes in, {} bytes out",
            self.id,
            self.peer,
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed)
        );
        // After shutdown nobody is listening, and nothing needs to be.
        let _ = self.events.send(Event::Closed { id: self.id });
        if let Some(per_ip) = &self.per_ip {
            let mut counts = per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let ip = self.peer.ip();
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
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
    guard: Arc<ConnGuard>,
}

impl Session {
    /// Runs in a short-lived thread of its own: the handshake's deep stack
    /// is freed when it ends, instead of staying resident in the reader.
    fn handshake(self) {
        let (id, peer) = (self.id, self.peer);
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
        // A write that makes no progress for this long means a dead peer;
        // without it, a writer could wait on one for ever.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES);
        let configured = self
            .socket
            .set_write_timeout(Some(self.limits.write_timeout))
            .and_then(|()| socket2::SockRef::from(&*self.socket).set_tcp_keepalive(&keepalive));
        if let Err(err) = configured {
            return gone(format!("socket failed: {err}"));
        }
        log::info!("{id} {peer}: connected, {}", tls::describe(&conn));
        let certificate = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| PeerCertificate {
                subject: x509::subject(leaf).unwrap_or_default(),
                common_name: x509::common_name(leaf),
            });

        let (read_half, write_half) = duplex::split(conn, Arc::clone(&self.socket));
        let (outbox, inbox) = outbox::channel(self.limits.queue);
        // Disconnects when the reader ends; the writer lingers on it.
        let (reader_alive, reader_done) = crossbeam_channel::bounded::<()>(0);

        let guard = Arc::clone(&self.guard);
        let writer = move || {
            let sent = outbox::run_writer(write_half, inbox, reader_done, LINGER);
            guard.bytes_out.store(sent, Ordering::Relaxed);
        };
        if let Err(err) = spawn(format!("writer {id}"), writer) {
            return gone(format!("cannot start a thread: {err}"));
        }
        let reader = Reader {
            id,
            half: read_half,
            framer: LineFramer::new(self.limits.max_line),
            bucket: self
                .limits
                .rate
                .map(|rate| TokenBucket::new(rate, Instant::now())),
            warned: false,
            events: self.events.clone(),
            outbox: outbox.clone(),
            guard: Arc::clone(&self.guard),
            _reader_alive: reader_alive,
        };
        // The hub learns of the outbox before the reader's first line.
        let ready = Event::Ready {
            id,
            outbox,
            certificate,
        };
        if self.events.send(ready).is_err() {
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
    /// Flood control, if the server limits rates.
    bucket: Option<TokenBucket>,
    /// The client was told it is too fast, and has not slowed down since.
    warned: bool,
    /// The hub holds the receiving end.
    events: Sender<Event>,
    /// Used only to ask the writer to flush or to close, never to push
    /// lines: only the hub does that.
    outbox: Outbox,
    guard: Arc<ConnGuard>,
    /// Dropped when the reader ends: the writer stops lingering.
    _reader_alive: Sender<()>,
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
                self.keep_to_rate();
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
        self.guard
            .bytes_in
            .store(self.half.bytes_received(), Ordering::Relaxed);
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

    /// Flood control, before each line goes to the hub: waits as long as
    /// the rate limit asks, and tells the client once per flood.
    fn keep_to_rate(&mut self) {
        let Some(bucket) = &mut self.bucket else {
            return;
        };
        let now = Instant::now();
        if bucket.is_full(now) {
            self.warned = false;
        }
        let wait = bucket.take(now);
        if wait.is_zero() {
            return;
        }
        if !self.warned {
            let _ = self.events.send(Event::Throttled { id: self.id });
            self.warned = true;
        }
        // Not reading meanwhile is the point: the client's sends back up
        // into its own TCP connection.
        thread::sleep(wait);
    }
}

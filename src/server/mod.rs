//! The server: the accept loop, one thread per client, and shutdown.
//!
//! Each connection is first a *handshake*, on a pooled thread with a deep
//! stack, then a *reader*, on a reading thread of its own for as long as
//! it stays (both in `connection.rs`). Writing to clients is the writer
//! shards' job ([`shard`]), the chat the hub's ([`hub`]).
//!
//! Next: [`seats`](crate::seats), admission, and [`queue`], the hub's
//! inbox; then the rest of [`client`](crate::client).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::queue;
use rustls::{Connection, ServerConfig, ServerConnection};

use crate::budget::{Budget, Outgoing};
use crate::capacity::Capacity;
use crate::chat::{self, ChatSettings, ClientId, CloseReason, PeerCertificate};
use crate::duplex;
use crate::elsewhere::{Alone, Elsewhere};
use crate::error::Error;
use crate::hub::{self, Address, Event};
use crate::line::MAX_LINE_LEN;
use crate::line_reader::{End, LineReader};
use crate::metrics::{
    Counters, Disconnect, HubFigures, Refused, Registry, ServerFigures, StoreFigures,
};
use crate::operators::Operators;
use crate::pool::Pool;
use crate::protocol::ServerLine;
use crate::seats::{Block, Seats};
use crate::shard::{self, Fate, Registration, Shard, ShardSettings, Slot, To, Work};
use crate::slow_readers::{self, Policy};
use crate::store::{self, StoreCounts, Writing};
use crate::sync::lock;
use crate::throttle::{RateLimit, TokenBucket};
use crate::tls::{self, Fingerprint};
use crate::x509;

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
/// Each costs one thread and about 20 KiB; ten thousand fit a small machine
/// (about 200 MiB), and the limit keeps a flood of connections from taking
/// all of it. The machine's own limits may allow fewer: then those.
pub const MAX_CLIENTS: usize = 10_000;

/// TCP keepalive: after this long without traffic, the kernel checks that
/// the peer still exists, three times at ten-second intervals. A client
/// that vanished (power cut, lost network) is then dropped within two
/// minutes instead of holding its thread for ever in a quiet room.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// How long a closing connection waits for the peer to hang up after our
/// close_notify, so that our last lines are read, not lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(1);

/// The server stops within this long of being asked to. Every wait of the
/// shutdown is measured against this one deadline, so that waits in a row
/// cannot add up past it.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(2);

/// The last part of [`SHUTDOWN_LIMIT`]: by then every connection still
/// open is cut, and what is left is for the last threads, each one failed
/// system call from its end. Those that answer our close_notify within
/// [`LINGER`] are gone well before.
const LAST_WAIT: Duration = Duration::from_millis(400);

// An orderly close (close_notify, then up to LINGER for the peer to hang
// up) must fit before the cut, or every shutdown would cut.
const _: () = assert!(LINGER.as_millis() + LAST_WAIT.as_millis() < SHUTDOWN_LIMIT.as_millis());

/// How long a thread waits for the next connection after its own ended,
/// before it ends too (see [`Pool`]): long enough to carry a burst of
/// connections, short enough that a quiet server gives its threads back.
const THREAD_KEEP: Duration = Duration::from_secs(5);

/// Handshake threads kept waiting at most. Each keeps the deep stack and
/// the allocator cache of its last handshake, about 50 KiB.
const IDLE_HANDSHAKE_THREADS: usize = 64;

/// Reading threads kept waiting at most, about 10 KiB each.
const IDLE_READER_THREADS: usize = 256;

/// How long the accept loop pauses when the system is out of file
/// descriptors or memory, instead of spinning on an error that persists.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Events waiting for the hub before readers wait to add more. A reader
/// that waits stops reading its socket, so a client flooding the hub is
/// slowed by TCP itself instead of growing the server's memory.
const EVENT_QUEUE: usize = 4096;

/// Stack reserved for each client's handshake thread: the cryptography's
/// deepest calls need tens of KiB. Only the pages touched become memory.
///
/// The handshake has a thread of its own because a thread keeps what it
/// has touched for as long as it lives: the stack pages of the deep
/// cryptography, and the blocks its allocator caches for it (glibc keeps
/// up to seven freed blocks of each size per thread, about 9 KiB of the
/// handshake's leftovers). For an idle client that would be most of its
/// memory; a reading thread, which never handshakes, has neither.
///
/// More than four times [`READER_STACK`] on purpose: glibc hands a new
/// thread the cached stack of one that ended if it is at most four times
/// the size asked for, and a handshake's stack comes with 16 KiB or more
/// still resident.
const HANDSHAKE_STACK: usize = 1024 * 1024;

/// Stack reserved for each client's reading thread, which only decrypts
/// and frames lines: it touches a few pages. The reservation bounds the
/// address space ten thousand threads take.
const READER_STACK: usize = 64 * 1024;

/// What the server allows each client, and how many clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// The longest line, in bytes, without its line end.
    pub max_line: usize,
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
    /// A client whose socket takes nothing for this long, while lines wait
    /// for it, is cut as stalled.
    pub stall_timeout: Duration,
    /// A client for whom the oldest waiting line is this old is cut as too
    /// far behind.
    pub max_lag: Duration,
    /// A client for whom more than this many bytes wait is cut.
    pub max_pending: usize,
    /// Past this many bytes of lines waiting in the whole server, the hub
    /// takes no new lines until the writers catch up.
    pub memory_budget: usize,
    /// Writer threads (shards).
    pub writers: usize,
    /// Rooms with more people than this do not announce who joins or quits.
    pub announce_limit: usize,
    /// New rooms one person may make in a minute.
    pub rooms_per_minute: usize,
    /// With client certificates, the most connections one certificate
    /// identity may have at once.
    pub max_sessions: usize,
    /// Run the original app's rules ([`classic`](crate::classic)) instead
    /// of the chat's: one reply to every line, no rooms, nobody sees
    /// anyone else. Flood control and every limit on connections still
    /// apply; `history` and `announce_limit`, which are about rooms, do not.
    pub classic: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_line: MAX_LINE_LEN,
            history: chat::HISTORY_LINES,
            max_clients: MAX_CLIENTS,
            max_per_ip: None,
            rate: Some(RateLimit::default()),
            stall_timeout: slow_readers::STALL_TIMEOUT,
            max_lag: slow_readers::MAX_LAG,
            max_pending: slow_readers::MAX_PENDING,
            memory_budget: slow_readers::MEMORY_BUDGET,
            writers: default_writers(),
            announce_limit: chat::ANNOUNCE_LIMIT,
            rooms_per_minute: chat::ROOMS_PER_MINUTE,
            max_sessions: chat::MAX_SESSIONS,
            classic: false,
        }
    }
}

/// One writer per core: a writer spends its time encrypting and in system
/// calls, so more would only take turns.
pub fn default_writers() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// A bound listening socket, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    /// Read at each accept; [`Reloader`] replaces it.
    tls: Arc<Mutex<Arc<ServerConfig>>>,
    limits: Limits,
    /// What the machine's limits allow, read at bind.
    capacity: Capacity,
    stop: Arc<AtomicBool>,
    asked_at: Arc<OnceLock<Instant>>,
    /// Every connection open right now, in any state.
    connections: Arc<Connections>,
    /// Places in the chat, taken after the handshake.
    seats: Arc<Seats>,
    /// Shared with other servers: them, for the hub.
    elsewhere: Option<Box<dyn Elsewhere>>,
    /// Where the server's figures are shown, with `--metrics`.
    metrics: Option<Arc<Registry>>,
    /// The server operators, handed to the hub when it starts.
    operators: Operators,
    /// Alone, with a data directory: the store, opened, for the hub.
    store: Option<store::Opened>,
}

// What the server locks (the sockets, the connections per address, the TLS
// configuration) is changed by single inserts, removes or swaps: a
// panicking thread cannot leave it half changed, so `lock` takes a poisoned
// one (see crate::sync).

/// Stops a running server from another thread (a signal handler, a test).
#[derive(Debug, Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    /// When the first stop was asked for: the shutdown's deadline counts
    /// from here.
    asked_at: Arc<OnceLock<Instant>>,
    /// Where to connect to wake the accept loop.
    wake: SocketAddr,
}

impl Stopper {
    /// Asks the server to stop; [`Server::run`] returns once it has, within
    /// [`SHUTDOWN_LIMIT`].
    pub fn stop(&self) {
        let _ = self.asked_at.set(Instant::now());
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
        *lock(&self.tls) = config;
    }
}

/// Counts of what a running server holds, for tests and monitoring.
#[derive(Debug, Clone)]
pub struct Gauges {
    connections: Arc<Connections>,
}

impl Gauges {
    /// Connections open right now: accepted and not yet fully closed.
    pub fn open_connections(&self) -> usize {
        self.connections.open()
    }
}

impl Server {
    /// Binds the listening socket. Fails if the address is taken or invalid.
    pub fn bind(addr: &str, tls: Arc<ServerConfig>, limits: Limits) -> Result<Server, Error> {
        let listener = bind_first(addr, listen)?;
        Ok(Server {
            listener,
            tls: Arc::new(Mutex::new(tls)),
            limits,
            capacity: Capacity::of_this_machine(limits.writers),
            stop: Arc::new(AtomicBool::new(false)),
            asked_at: Arc::default(),
            connections: Arc::default(),
            seats: Seats::new(
                limits.max_clients.max(1),
                limits.max_per_ip.map(|m| m.max(1)),
            ),
            elsewhere: None,
            metrics: None,
            operators: Operators::default(),
            store: None,
        })
    }

    /// Keeps each room's history and topic in `store` across restarts:
    /// the chat starts with what it kept. A server alone only: shared
    /// ([`Server::share`]), Redis keeps them, and with [`Limits::classic`]
    /// there are no rooms; then the store is closed unused.
    pub fn keep_in(&mut self, store: store::Opened) {
        self.store = Some(store);
    }

    /// The store's queue and losses, if it has one.
    pub fn store_counts(&self) -> Option<Arc<StoreCounts>> {
        self.store.as_ref().map(store::Opened::counts)
    }

    /// Makes this server one of several that act as one chat: names,
    /// presence, private lines and every room line go through `elsewhere`
    /// (with `--redis`, the link through Redis: the tour's last step). Not
    /// with [`Limits::classic`],
    /// whose clients see no one.
    pub fn share(&mut self, elsewhere: Box<dyn Elsewhere>) {
        self.elsewhere = Some(elsewhere);
    }

    /// Shows this server's figures in `registry` once it runs.
    pub fn report_to(&mut self, registry: Arc<Registry>) {
        self.metrics = Some(registry);
    }

    /// The address actually bound (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// What the machine's limits allow this server, as read at bind.
    pub fn capacity(&self) -> &Capacity {
        &self.capacity
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
            asked_at: Arc::clone(&self.asked_at),
            wake,
        }
    }

    /// A handle that replaces this server's TLS configuration.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            tls: Arc::clone(&self.tls),
        }
    }

    /// A handle that gives this server's hub its operators (`--operators`).
    pub fn operators(&self) -> Operators {
        self.operators.clone()
    }

    /// A handle that reads this server's counts.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            connections: Arc::clone(&self.connections),
        }
    }

    /// Accepts clients until stopped, then closes every connection and
    /// waits for every thread it started.
    pub fn run(mut self) -> Result<(), Error> {
        let running = self.start()?;
        self.accept_until_stopped(&running);
        self.shut_down(running)
    }

    /// Starts the threads every connection needs: the writer shards, the
    /// hub, and the pools that handshakes and readers run on.
    fn start(&mut self) -> Result<Running, Error> {
        let limits = self.limits;
        let mut elsewhere = self.elsewhere.take();
        log::info!("{}", self.capacity);
        // Room for every client, and as many again in their handshake or
        // being refused with a reason; never more than the machine allows.
        let mut cap = limits.max_clients.max(1).saturating_mul(2);
        if let Some(allowed) = self.capacity.connections() {
            if limits.max_clients > allowed {
                log::warn!(
                    "--max-clients {} is more than this machine allows: connections \
                     past {allowed} will be closed at once",
                    limits.max_clients
                );
            }
            cap = cap.min(allowed);
        }

        let policy = Policy {
            stall_timeout: limits.stall_timeout,
            max_lag: limits.max_lag,
            max_pending: limits.max_pending,
            memory_budget: limits.memory_budget,
        };
        if let Some(caution) = policy.caution() {
            log::warn!("{caution}");
        }
        let budget = Budget::new(&policy);
        let settings = ShardSettings {
            policy,
            linger: LINGER,
        };
        let mut shards: Vec<Shard> = Vec::new();
        let mut writers = Vec::new();
        for index in 0..limits.writers.max(1) {
            let stopper = self.stopper();
            let on_panic = Box::new(move || stopper.stop());
            let (shard, thread) = shard::spawn(index, settings, Arc::clone(&budget), on_panic)
                .map_err(Error::Thread)?;
            shards.push(shard);
            writers.push(thread);
        }
        // A shared chat is kept by the other servers' Redis, the original
        // app's has no rooms: a store would write twice, or nothing.
        let store = self
            .store
            .take()
            .filter(|_| elsewhere.is_none() && !limits.classic);
        let (store, writing) = match store {
            Some(opened) => {
                if let Some(registry) = &self.metrics {
                    registry.register(Arc::new(StoreFigures {
                        counts: opened.counts(),
                        budget: Arc::clone(&budget),
                    }));
                }
                let (kept, writing) = opened.start(&budget).map_err(Error::Thread)?;
                (Some(kept), Some(writing))
            }
            None => (None, None),
        };
        let (events, hub_events) = queue::bounded(EVENT_QUEUE);
        self.operators.connect(events.clone());
        let hub_stop = Arc::new(AtomicBool::new(false));
        // What the other servers send reaches the hub among the readers'
        // events: the hub waits on one queue only.
        if let Some(elsewhere) = &mut elsewhere {
            elsewhere.forward(events.clone());
        }
        let hub_figures = Arc::new(HubFigures::default());
        if let Some(registry) = &self.metrics {
            registry.register(Arc::new(ServerFigures {
                gauges: self.gauges(),
                seats: Arc::clone(&self.seats),
                max_clients: limits.max_clients,
                counters: Arc::clone(&self.connections.counters),
                hub: Arc::clone(&hub_figures),
                shards: shards.iter().map(Shard::figures).collect(),
                budget: Arc::clone(&budget),
            }));
        }
        let hub = spawn_hub(
            hub_events,
            (elsewhere, store),
            &limits,
            shards.clone(),
            Arc::clone(&budget),
            Arc::clone(&hub_stop),
            self.stopper(),
            hub_figures,
        )?;
        let (alive, all_done) = crossbeam_channel::bounded::<()>(0);
        let handshakes = Pool::new(
            "handshake",
            HANDSHAKE_STACK,
            THREAD_KEEP,
            IDLE_HANDSHAKE_THREADS,
        );
        let readers = Pool::new("reader", READER_STACK, THREAD_KEEP, IDLE_READER_THREADS);
        Ok(Running {
            cap,
            budget,
            shards,
            writers,
            events,
            hub,
            hub_stop,
            writing,
            alive,
            all_done,
            handshakes,
            readers,
        })
    }

    /// The accept loop: each connection gets an id, a shard and a
    /// handshake thread, until the server is asked to stop.
    fn accept_until_stopped(&self, running: &Running) {
        let mut next_id = 0;
        let mut alarms = Alarms::default();
        while !self.stop.load(Ordering::SeqCst) {
            let (socket, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(err) => {
                    alarms.accept_failed(&err);
                    continue;
                }
            };
            alarms.accepting();
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            // A connection past a cap is dropped here: closed at once.
            if !self.has_room(peer, running.cap, &mut alarms) {
                continue;
            }
            next_id += 1;
            let id = ClientId(next_id);
            let socket = Arc::new(socket);
            let shard_index = (next_id % running.shards.len() as u64) as usize;
            let handshake = Handshake {
                tracker: Arc::new(Tracker::new(id, peer, &socket, self, running)),
                socket,
                tls: Arc::clone(&lock(&self.tls)),
                limits: self.limits,
                events: running.events.clone(),
                shard: running.shards[shard_index].clone(),
                shard_index,
                seats: Arc::clone(&self.seats),
                budget: Arc::clone(&running.budget),
                readers: running.readers.clone(),
            };
            // On failure the handshake, and with it the socket and the
            // tracker, were dropped: the connection is closed and uncounted.
            match running.handshakes.run(move || handshake.run()) {
                Ok(()) => alarms.no_threads = false,
                Err(err) => alarms.no_thread(id, peer, &err),
            }
        }
    }

    /// Whether a new connection fits under the caps on connections, in all
    /// and (with `--max-per-ip`) from its address; if so, it is counted.
    fn has_room(&self, peer: SocketAddr, cap: usize, alarms: &mut Alarms) -> bool {
        let counters = &self.connections.counters;
        if self.connections.open() >= cap {
            alarms.too_many(cap);
            counters.refused(Refused::ConnectionCap);
            return false;
        }
        alarms.turning_away = false;
        let counted = match self.limits.max_per_ip {
            Some(max) => self.connections.count_per_ip(peer, max),
            None => true,
        };
        if !counted {
            counters.refused(Refused::AddressConnectionCap);
        }
        counted
    }

    /// Closes every connection, and waits (within [`SHUTDOWN_LIMIT`]) for
    /// every thread [`start`](Server::start) started.
    fn shut_down(self, running: Running) -> Result<(), Error> {
        let Running {
            budget,
            shards,
            writers,
            events,
            hub,
            hub_stop,
            writing,
            alive,
            all_done,
            handshakes,
            readers,
            ..
        } = running;
        drop(self.listener);
        self.connections.stopping();
        log::info!("stopping: closing every connection");
        // One deadline for the whole shutdown; each wait below takes what
        // is left of it, so they cannot add up past the promise.
        let asked_at = self.asked_at.get().copied().unwrap_or_else(Instant::now);
        let deadline = asked_at + SHUTDOWN_LIMIT;
        let cut_at = deadline - LAST_WAIT;
        let left = |until: Instant| until.saturating_duration_since(Instant::now());
        // Clients still in their handshake get no goodbye: there is no
        // TLS connection yet to say it in.
        self.connections.cut(false);
        hub_stop.store(true, Ordering::SeqCst);
        budget.release();
        // If the queue is full the hub is busy, and sees the flag instead.
        let _ = events.send_timeout(Event::Shutdown, left(cut_at).min(SHUTDOWN_NUDGE));
        drop(events);
        // The hub says goodbye to everyone and hands the shards their last
        // work; it has only its current round to finish.
        let hub_ended = hub.wait(left(cut_at));
        for shard in &shards {
            shard.send(Work::Shutdown);
        }
        drop(shards);
        // The hub held the store's queue: the writer now writes what
        // waits, and ends, while the shards say goodbye.
        if let Some(writing) = writing {
            if !writing.finish(left(cut_at)) {
                log::error!("the store did not finish writing in time");
            }
        }
        drop(alive);
        let mut finished = wait_for_all(&all_done, left(cut_at)).is_ok();
        if !finished {
            log::warn!("cutting connections that did not close in time");
            self.connections.cut(true);
            finished = wait_for_all(&all_done, left(deadline)).is_ok();
        }
        handshakes.close();
        readers.close();
        let mut writers_failed = false;
        if finished {
            for writer in writers {
                // A writer ends once its last connection is gone.
                writers_failed |= writer.join().is_err();
            }
        } else {
            log::error!("some connection threads did not end");
            // Those still busy are left to the end of the process; one that
            // has ended is joined, to learn whether it failed.
            for writer in writers.into_iter().filter(|w| w.is_finished()) {
                writers_failed |= writer.join().is_err();
            }
        }
        match hub_ended {
            Some(Ok(())) => {}
            Some(Err(())) => return Err(Error::HubFailed),
            None => log::error!("the hub did not finish its last round in time"),
        }
        if writers_failed {
            return Err(Error::WriterFailed);
        }
        Ok(())
    }
}

/// The threads a running server started, which shutdown stops in turn.
struct Running {
    /// Connections at most at once, in the chat or on their way.
    cap: usize,
    budget: Arc<Budget>,
    shards: Vec<Shard>,
    writers: Vec<JoinHandle<()>>,
    /// The hub's inbox: every reading thread holds a clone.
    events: queue::Sender<Event>,
    hub: Guarded,
    hub_stop: Arc<AtomicBool>,
    /// The store's writer, with a store.
    writing: Option<Writing>,
    /// Each connection's tracker holds a clone; when the last is gone,
    /// `all_done` reports the channel disconnected.
    alive: Sender<()>,
    all_done: Receiver<()>,
    handshakes: Pool,
    readers: Pool,
}

/// Troubles the accept loop logs when they begin, not at every connection
/// they touch; each flag is set while its trouble lasts.
#[derive(Default)]
struct Alarms {
    out_of_resources: bool,
    turning_away: bool,
    no_threads: bool,
}

impl Alarms {
    /// A connection was accepted: the system has resources again.
    fn accepting(&mut self) {
        if std::mem::take(&mut self.out_of_resources) {
            log::info!("accepting connections again");
        }
    }

    /// `accept` failed; out of descriptors or memory, it would fail again
    /// at once, so the loop pauses instead of spinning.
    fn accept_failed(&mut self, err: &io::Error) {
        if !is_resource_exhaustion(err) {
            return log::warn!("accept failed: {err}");
        }
        if !self.out_of_resources {
            log::error!(
                "accept failed: {err}; pausing new connections \
                 (raise the open files limit: ulimit -n)"
            );
            self.out_of_resources = true;
        }
        thread::sleep(ACCEPT_BACKOFF);
    }

    fn too_many(&mut self, cap: usize) {
        if !self.turning_away {
            log::warn!("too many connections ({cap}): closing new ones at once");
            self.turning_away = true;
        }
    }

    fn no_thread(&mut self, id: ClientId, peer: SocketAddr, err: &io::Error) {
        if self.no_threads {
            log::debug!("{id} {peer}: refused: cannot start a thread: {err}");
        } else {
            log::error!("{id} {peer}: refused: cannot start a thread: {err}");
            self.no_threads = true;
        }
    }
}

/// How long shutdown tries to hand the hub its `Shutdown` event while the
/// queue is full; a hub that busy sees the stop flag instead.
const SHUTDOWN_NUDGE: Duration = Duration::from_millis(100);

/// Starts the hub thread. If it ever panics, the server stops: without the
/// hub nobody can chat, and a server that looks alive but relays nothing is
/// worse than one that says why it stopped.
/// The hub shares its chat with the other servers (`elsewhere`), or keeps
/// it in a `store`, or neither; never both.
#[allow(clippy::too_many_arguments)]
fn spawn_hub(
    events: queue::Receiver<Event>,
    (elsewhere, store): (Option<Box<dyn Elsewhere>>, Option<store::Kept>),
    limits: &Limits,
    shards: Vec<Shard>,
    budget: Arc<Budget>,
    stop: Arc<AtomicBool>,
    stopper: Stopper,
    figures: Arc<HubFigures>,
) -> Result<Guarded, Error> {
    let settings = ChatSettings {
        max_line: limits.max_line,
        history: limits.history,
        // The rooms' history may hold a quarter of the memory budget more
        // (a line still waiting to be sent counts in both). Never less than
        // four rooms' worth of full lines, so that a small budget does not
        // make the history's cut run on nearly every line.
        history_bytes: (limits.memory_budget / 4).max(4 * limits.history.max(1) * limits.max_line),
        rooms_per_minute: limits.rooms_per_minute,
        announce_limit: limits.announce_limit,
        max_sessions: limits.max_sessions,
    };
    let classic = limits.classic;
    // Alone, the hub runs with [`Alone`], whose seam compiles away; shared,
    // with the other servers behind the trait.
    match elsewhere {
        None => Guarded::spawn("hub", stopper, move || {
            hub::run(
                events, settings, classic, Alone, shards, budget, stop, figures, store,
            )
        }),
        Some(elsewhere) => Guarded::spawn("hub", stopper, move || {
            hub::run(
                events, settings, classic, elsewhere, shards, budget, stop, figures, store,
            )
        }),
    }
    .map_err(Error::Thread)
}

/// Waits until every holder of the `alive` sender is gone, or `limit` passes.
fn wait_for_all(all_done: &Receiver<()>, limit: Duration) -> Result<(), ()> {
    match all_done.recv_timeout(limit) {
        Err(RecvTimeoutError::Disconnected) => Ok(()),
        Ok(()) | Err(RecvTimeoutError::Timeout) => Err(()),
    }
}

mod connection;
mod connections;
mod guarded;
mod listening;

use connection::{Handshake, Tracker};
use connections::Connections;
use guarded::Guarded;
use listening::listen;
pub(crate) use listening::{bind_first, is_resource_exhaustion};

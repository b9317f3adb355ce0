//! Opening clients: TCP, the blocking TLS handshake, and then a home for
//! each client: a poller for those that only read, two threads of their
//! own for the few that send. A [`Crowd`] is the clients of one run,
//! connected together and closed together; the [`Watchdog`] bounds it all.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use secure_chat::client::{self, ClientOptions, Connected, CONNECT_TIMEOUT, MAX_SERVER_LINE};
use secure_chat::duplex::{self, ReadHalf, WriteHalf};
use secure_chat::error::report;
use secure_chat::line_reader::LineReader;
use secure_chat::tls::{self, Trust};
use socket2::{Domain, Protocol, Socket, Type};

use crate::check::{Checker, ClientReport, Expect, Note, Rules, RunFlags, Tally};
use crate::options::{Kx, Mode, Options};
use crate::poller::{NewClient, Poller};
use crate::probe::{Probe, Samples};
use crate::progress::Progress;

/// After the deadline, how long the main thread has to print its results
/// before the watchdog exits the process.
const FORCE_EXIT_GRACE: Duration = Duration::from_secs(10);
/// Stack of each blocking reading thread: it only decrypts and frames.
const READER_STACK: usize = 256 * 1024;
/// Receive buffer of a stalled client, set before connecting so that the
/// window the server sees is small from the start: the server's queue,
/// not the kernel's buffers, must take the backlog.
pub const STALLED_RCVBUF: usize = 4096;

/// What every measurement of one process shares.
pub struct Bench {
    /// The command line.
    pub options: Options,
    /// Every server given, clients spread over them in turn.
    pub addrs: Vec<SocketAddr>,
    /// How many connections were opened: which server the next one goes to.
    opened: AtomicUsize,
    /// TLS settings for every chat client: no resumption, so that every
    /// connection pays a full handshake, as a crowd of distinct users
    /// would, and runs are comparable.
    pub config: Arc<ClientConfig>,
    /// What the library's client needs to know for each handshake: the
    /// server's address, the name its certificate must hold, the CA
    /// trusted (for the hints on failure).
    pub client: ClientOptions,
    /// Zero point of the timestamps the latency mode puts in its lines.
    pub epoch: Instant,
    /// When the run gives up.
    pub deadline: Instant,
    /// Cuts every connection at the deadline.
    pub watchdog: Watchdog,
    /// The servers' /proc entries, if `--server-pid` was given.
    pub server: Option<Probe>,
    /// This process's own /proc entry: the bench shares the CPUs with the
    /// server, so its own use is part of the picture.
    pub me: Probe,
}

impl Bench {
    /// Checks the options against the machine and sets everything up.
    pub fn new(options: Options) -> Result<Bench, String> {
        let addrs = options
            .addr
            .split(',')
            .map(|addr| resolve_loopback(addr.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let config = plain_config(&options.ca)?;
        // Checked here as well as in each handshake: a bad name is a
        // mistake on the command line, not a failure of the first client.
        ServerName::try_from(options.server_name.clone())
            .map_err(|_| format!("'{}' is not a valid server name", options.server_name))?;
        let client = ClientOptions {
            addr: addrs[0].to_string(),
            server_name: Some(options.server_name.clone()),
            trust: Trust::CaFile(options.ca.clone()),
            identity: None,
            timeout: CONNECT_TIMEOUT,
        };
        let server = match options.server_pid.as_slice() {
            [] => None,
            pids => {
                let probe = Probe::of(pids);
                probe.sample().map_err(|err| {
                    format!("cannot read /proc/{pids:?}: {err} (is --server-pid right?)")
                })?;
                Some(probe)
            }
        };
        let deadline = Instant::now() + options.timeout;
        Ok(Bench {
            addrs,
            opened: AtomicUsize::new(0),
            config,
            client,
            epoch: Instant::now(),
            deadline,
            watchdog: Watchdog::start(deadline, options.mode),
            server,
            me: Probe::me(),
            options,
        })
    }

    /// Time left before the deadline, if any.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }

    /// Server and bench readings now.
    pub fn samples(&self) -> Samples {
        Samples::take(self.server.as_ref(), &self.me)
    }

    /// A marker distinct per process and per `run`, so that lines from
    /// anyone else on the server (or an earlier run) are never counted.
    pub fn marker(&self, run: &str) -> Arc<str> {
        format!("b{}{run}", std::process::id()).into()
    }

    /// Opens one TLS connection and finishes its handshake; `rcvbuf` pins
    /// the socket's receive buffer before connecting.
    ///
    /// The TCP part is the bench's own: the receive buffer must be set
    /// before `connect`, for the window the server sees to be small from
    /// the first byte, and the library's `dial` connects at once. The TLS
    /// part is the library client's handshake, with its error hints.
    pub fn open(
        &self,
        config: &Arc<ClientConfig>,
        rcvbuf: Option<usize>,
    ) -> Result<Connected, String> {
        let limit = self
            .remaining()
            .ok_or("the deadline passed")?
            .min(CONNECT_TIMEOUT);
        let turn = self.opened.fetch_add(1, Ordering::Relaxed);
        let addr = self.addrs[turn % self.addrs.len()];
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|err| format!("socket: {err}{}", io_hint(&err, &addr)))?;
        if let Some(size) = rcvbuf {
            socket
                .set_recv_buffer_size(size)
                .map_err(|err| format!("SO_RCVBUF: {err}"))?;
        }
        socket
            .connect_timeout(&addr.into(), limit)
            .map_err(|err| format!("connect: {err}{}", io_hint(&err, &addr)))?;
        let options = ClientOptions {
            addr: addr.to_string(),
            timeout: limit,
            ..self.client.clone()
        };
        // The handshake also sets TCP_NODELAY, as the server does.
        client::handshake(TcpStream::from(socket), Arc::clone(config), &options)
            .map_err(|err| report(&err))
    }
}

/// Resolves `addr` and insists on loopback: this tool generates load and
/// must not be pointed at anyone else's machine.
pub fn resolve_loopback(addr: &str) -> Result<SocketAddr, String> {
    let candidates = addr
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {addr}: {err}"))?;
    candidates
        .into_iter()
        .find(|candidate| candidate.ip().is_loopback())
        .ok_or_else(|| format!("{addr} is not a loopback address; chat-bench only loads loopback"))
}

/// The library's client configuration, without session resumption.
pub fn plain_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let shared =
        tls::client_config(&Trust::CaFile(ca.to_owned()), None).map_err(|err| report(&err))?;
    let mut config = (*shared).clone();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A client configuration that offers only the key exchange `kx`.
///
/// The library's configuration offers rustls' defaults; to measure one
/// group alone the provider itself must be narrowed, which only a new
/// configuration can do. It trusts the same CA file, loaded the same way
/// (every certificate in it, none skipped).
pub fn kx_config(ca: &Path, kx: Kx) -> Result<Arc<ClientConfig>, String> {
    let group = match kx {
        Kx::Default => return plain_config(ca),
        Kx::X25519 => aws_lc_rs::kx_group::X25519,
        Kx::X25519Mlkem768 => aws_lc_rs::kx_group::X25519MLKEM768,
    };
    let provider = CryptoProvider {
        kx_groups: vec![group],
        ..aws_lc_rs::default_provider()
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|err| format!("cannot read {}: {err}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|err| format!("{}: {err}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|err| format!("{}: unusable CA certificate: {err}", ca.display()))?;
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS setup: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The fix for the socket errors a large run is likely to hit.
pub fn io_hint(err: &io::Error, addr: &SocketAddr) -> String {
    // Linux's numbers; std names none of them as an ErrorKind that
    // tells them apart.
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const EADDRNOTAVAIL: i32 = 99;
    match err.raw_os_error() {
        Some(EMFILE | ENFILE) => " (out of file descriptors: raise `ulimit -n`)".to_string(),
        Some(EADDRNOTAVAIL) => " (out of local ports: use fewer clients)".to_string(),
        _ if err.kind() == io::ErrorKind::ConnectionRefused => {
            format!(" (is a chat server listening on {addr}?)")
        }
        _ if err.kind() == io::ErrorKind::TimedOut => {
            " (the server may be out of file descriptors or full: check its log and `ulimit -n`)"
                .to_string()
        }
        _ => String::new(),
    }
}

/// Cuts every blocking connection at the deadline, so that no thread stays
/// blocked on a socket, and ends the process if the main thread still hangs.
/// Pollers watch the same flag themselves.
#[derive(Clone)]
pub struct Watchdog {
    /// Set once the deadline has passed.
    pub expired: Arc<AtomicBool>,
    /// Every blocking socket the bench opened.
    sockets: Arc<Mutex<Vec<Arc<TcpStream>>>>,
}

impl Watchdog {
    /// Starts the watchdog thread; it sleeps until `deadline`.
    fn start(deadline: Instant, mode: Mode) -> Watchdog {
        let watchdog = Watchdog {
            expired: Arc::new(AtomicBool::new(false)),
            sockets: Arc::new(Mutex::new(Vec::new())),
        };
        let dog = watchdog.clone();
        let spawned = thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                thread::sleep(deadline.saturating_duration_since(Instant::now()));
                dog.expired.store(true, Ordering::SeqCst);
                eprintln!("chat-bench: --timeout reached: cutting every connection");
                dog.cut_all();
                thread::sleep(FORCE_EXIT_GRACE);
                eprintln!("chat-bench: still not finished after the deadline; exiting");
                println!("RESULT mode={} status=stuck", mode.name());
                std::process::exit(1);
            });
        if let Err(err) = spawned {
            // Without a watchdog the deadline still bounds every wait of the
            // main thread; only a send the server never reads could hang.
            eprintln!("chat-bench: cannot start the watchdog thread: {err}");
        }
        watchdog
    }

    /// Adds a socket to cut at the deadline; cuts it at once if that has
    /// passed already.
    fn register(&self, socket: Arc<TcpStream>) {
        let mut sockets = lock(&self.sockets);
        // Read under the lock: the watchdog sets the flag before it takes
        // the lock, so a socket pushed after its sweep sees the flag.
        if self.expired() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        sockets.push(socket);
    }

    /// Shuts every registered socket down, waking any thread blocked on one.
    fn cut_all(&self) {
        for socket in lock(&self.sockets).iter() {
            // Fails only for a socket already closed, which is the goal.
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// True once the deadline has passed.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }
}

/// Locks a mutex whether or not a thread panicked while holding it: the
/// data guarded here (a list, a first error) stays valid either way.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a client of a crowd is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Only reads: lives on a poller.
    Listener,
    /// Sends, and reads its own lines back: a blocking writer and a
    /// blocking reader thread of its own.
    Sender,
    /// Never reads until closing (slow mode): on a poller, watched for a
    /// cut, with a small receive buffer.
    Stalled,
}

/// What one client of a crowd does and expects.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// How it is run.
    pub role: Role,
    /// What it checks.
    pub expect: Expect,
}

/// A client with threads of its own, seen from the main thread.
pub struct SendingClient {
    /// Its number in the crowd.
    pub index: usize,
    /// The socket, to cut it when closing takes too long.
    socket: Arc<TcpStream>,
    /// Sends lines and the final close_notify.
    pub write: WriteHalf,
    /// The reading thread, which returns what it saw.
    reader: JoinHandle<ClientReport>,
}

impl SendingClient {
    /// The socket, so that another thread can cut it: a thread blocked
    /// writing to a server that stopped reading then returns (with an
    /// error).
    pub fn socket(&self) -> Arc<TcpStream> {
        Arc::clone(&self.socket)
    }
}

/// What closing a crowd found.
pub struct Closed {
    /// Each client's report, in client order.
    pub reports: Vec<ClientReport>,
    /// How long closing took.
    pub took: Duration,
    /// When each stalled client was seen cut.
    pub stalled_cuts: Vec<Instant>,
}

/// The clients of one run: connected together, closed together.
pub struct Crowd<'b> {
    /// Settings shared by every run.
    bench: &'b Bench,
    /// What every client checks.
    rules: Arc<Rules>,
    /// Notes from every client.
    notes: Receiver<Note>,
    /// Their count so far.
    pub tally: Tally,
    /// Clients that send, in index order.
    pub senders: Vec<SendingClient>,
    /// The reading threads of every other client.
    pollers: Vec<Poller>,
    /// Clients connected.
    count: usize,
    /// Handshakes done, for the progress display.
    connected: Arc<AtomicU64>,
}

impl<'b> Crowd<'b> {
    /// A crowd whose lines carry `marker` and come from `senders` senders;
    /// starts its pollers.
    pub fn new(bench: &'b Bench, marker: Arc<str>, senders: usize) -> Result<Crowd<'b>, String> {
        let (notes_tx, notes) = crossbeam_channel::unbounded();
        let flags = Arc::new(RunFlags::new(Arc::clone(&bench.watchdog.expired)));
        let rules = Arc::new(Rules {
            marker,
            senders,
            epoch: bench.epoch,
            peer: bench.options.peer,
            notes: notes_tx,
            flags: Arc::clone(&flags),
            lines: Arc::new(AtomicU64::new(0)),
        });
        let pollers = (0..bench.options.readers)
            .map(|i| Poller::start(format!("poller{i}"), bench.epoch, Arc::clone(&flags)))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|err| format!("cannot start a reading thread: {err}"))?;
        Ok(Crowd {
            bench,
            rules,
            notes,
            tally: Tally::default(),
            senders: Vec::new(),
            pollers,
            count: 0,
            connected: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The first word of this crowd's lines.
    pub fn marker(&self) -> Arc<str> {
        Arc::clone(&self.rules.marker)
    }

    /// The senders, the tally and the notes at once, for a mode that
    /// lends the senders to threads while it counts notes.
    pub fn parts(&mut self) -> (&mut Vec<SendingClient>, &mut Tally, &Receiver<Note>) {
        (&mut self.senders, &mut self.tally, &self.notes)
    }

    /// Bench lines received by every client so far.
    pub fn lines(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.rules.lines)
    }

    /// Takes notes until `enough` holds (true) or `until` passes (false).
    pub fn wait(&mut self, until: Instant, enough: impl Fn(&Tally) -> bool) -> bool {
        self.tally.wait(&self.notes, until, enough)
    }

    /// Clients connected so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Connects clients `indices` with `--connectors` threads, each as
    /// `plan` says, then waits until every client of the crowd has been
    /// greeted. Returns how long it took, or why it did not finish.
    pub fn connect(
        &mut self,
        indices: Range<usize>,
        plan: &(dyn Fn(usize) -> Plan + Sync),
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let count = indices.len();
        let total = self.count + count;
        let next = AtomicUsize::new(indices.start);
        let failure: Mutex<Option<String>> = Mutex::new(None);
        let progress = Progress::start(
            "connecting".into(),
            total as u64,
            Arc::clone(&self.connected),
        );
        let connectors = self.bench.options.connectors.min(count.max(1));
        let mut senders: Vec<SendingClient> = thread::scope(|scope| {
            let workers: Vec<_> = (0..connectors)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        // At most `count` indices are handed out in all.
                        while !self.bench.watchdog.expired() && lock(&failure).is_none() {
                            let index = next.fetch_add(1, Ordering::Relaxed);
                            if index >= indices.end {
                                break;
                            }
                            match self.connect_one(index, plan(index)) {
                                Ok(Some(sender)) => mine.push(sender),
                                Ok(None) => {}
                                Err(err) => {
                                    lock(&failure).get_or_insert(format!("client {index}: {err}"));
                                }
                            }
                        }
                        mine
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().unwrap_or_default())
                .collect()
        });
        self.count = self.connected.load(Ordering::SeqCst) as usize;
        self.senders.append(&mut senders);
        self.senders.sort_by_key(|sender| sender.index);
        if let Some(err) = lock(&failure).take() {
            return Err(err);
        }
        if self.count < total {
            return Err("the deadline passed while connecting".into());
        }
        let greeted = self.tally.wait(&self.notes, self.bench.deadline, |t| {
            t.greeted >= total || t.ended_early > 0
        });
        drop(progress);
        if !greeted || self.tally.greeted < total {
            return Err(format!(
                "{} of {total} clients were greeted; {} connections were cut",
                self.tally.greeted, self.tally.ended_early
            ));
        }
        Ok(start.elapsed())
    }

    /// Opens client `index` and gives it a home; a sender comes back.
    fn connect_one(&self, index: usize, plan: Plan) -> Result<Option<SendingClient>, String> {
        let rcvbuf = (plan.role == Role::Stalled).then_some(STALLED_RCVBUF);
        // Taken apart: a poller moves the bytes itself, and a sender's
        // socket is also kept, for the watchdog and the close phase to cut.
        let (conn, socket) = self.bench.open(&self.bench.config, rcvbuf)?.into_parts();
        let checker = Checker::new(Arc::clone(&self.rules), index, plan.expect);
        let sender = match plan.role {
            Role::Listener | Role::Stalled => {
                let poller = &self.pollers[index % self.pollers.len()];
                poller.add(NewClient {
                    conn,
                    socket,
                    checker,
                    stalled: plan.role == Role::Stalled,
                })?;
                None
            }
            Role::Sender => {
                let socket = Arc::new(socket);
                self.bench.watchdog.register(Arc::clone(&socket));
                let (read_half, write) = duplex::split(conn, Arc::clone(&socket));
                let reader = thread::Builder::new()
                    .name("reader".into())
                    .stack_size(READER_STACK)
                    .spawn(move || read_blocking(read_half, checker))
                    .map_err(|err| {
                        format!(
                            "cannot start a reading thread: {err} (check `ulimit -u` and memory)"
                        )
                    })?;
                Some(SendingClient {
                    index,
                    socket,
                    write,
                    reader,
                })
            }
        };
        self.connected.fetch_add(1, Ordering::SeqCst);
        Ok(sender)
    }

    /// Sends close_notify on every connection, waits (up to
    /// `--close-wait`) for the server's, then cuts whatever is left and
    /// collects every report.
    pub fn close(mut self) -> Closed {
        self.rules.flags.closing.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let until = self
            .bench
            .deadline
            .min(start + self.bench.options.close_wait);
        for sender in &mut self.senders {
            // A server that stopped reading would block this write; the
            // timeout bounds it, and the reader reports the failure.
            let left = until.saturating_duration_since(Instant::now());
            let _ = sender
                .socket
                .set_write_timeout(Some(left.max(Duration::from_millis(1))));
            let _ = sender.write.close();
        }
        for poller in &self.pollers {
            poller.close();
        }
        let count = self.count;
        self.tally.wait(&self.notes, until, |t| t.ended >= count);
        let took = start.elapsed();
        self.rules.flags.gave_up.store(true, Ordering::SeqCst);
        let mut reports = Vec::with_capacity(count);
        for poller in self.pollers {
            reports.extend(poller.finish());
        }
        for sender in self.senders {
            // Wakes a reader still waiting, so that `join` cannot block.
            let _ = sender.socket.shutdown(Shutdown::Both);
            reports.push(sender.reader.join().unwrap_or_default());
        }
        reports.sort_by_key(|report| report.index);
        Closed {
            reports,
            took,
            stalled_cuts: self.tally.stalled_cuts,
        }
    }
}

/// The blocking reading thread of a sender: checks each line, reports.
fn read_blocking(half: ReadHalf, mut checker: Checker) -> ClientReport {
    // Only the main thread writes this connection, and it cannot be woken
    // for what rustls queues while reading (a key update's answer, an
    // alert): the reader counts those for the report instead.
    let wanted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&wanted);
    let flush = move || {
        counter.fetch_add(1, Ordering::Relaxed);
    };
    let mut lines = LineReader::new(half, MAX_SERVER_LINE, flush);
    let epoch = checker.epoch();
    // Ends when the server closes, or when the socket is shut down: by the
    // close phase, or by the watchdog at the deadline.
    let end = loop {
        match lines.next_line() {
            Ok(frame) => {
                // The clock as each line is handed over: lines decrypted
                // together differ only by the checking of those before.
                checker.take(frame, epoch.elapsed());
                checker.flush_progress();
            }
            Err(end) => break end,
        }
    };
    checker.wanted_writes(wanted.load(Ordering::Relaxed));
    checker.finish(end.into())
}

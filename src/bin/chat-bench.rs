//! `chat-bench`: a load generator for a `chat-server` already running on
//! loopback.
//!
//! Three measurements that tell server designs apart: fan-out
//! throughput, delivery latency at a steady rate, and the server's memory
//! per idle connection. Every client is a real TLS client built from the
//! library (handshake, [`duplex::split`], one reading thread each), so the
//! bench pays the same TLS costs a `chat-client` would.
//!
//! Nothing here may run forever: every wait is bounded by the `--timeout`
//! deadline, and a watchdog thread cuts every connection when it passes
//! (which unblocks any thread stuck on a socket), then exits the process
//! if the main thread still has not finished.

#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection};
use secure_chat::duplex::{self, ReadHalf, Received, WriteHalf};
use secure_chat::error::report;
use secure_chat::hub::SHUTDOWN_NOTICE;
use secure_chat::line::{Frame, LineFramer};
use secure_chat::protocol::ServerLine;
use secure_chat::tls::{self, Trust};

/// The `--help` text.
const HELP: &str = "\
chat-bench: a load generator for chat-server (loopback only)

Usage: chat-bench MODE [OPTIONS]

Modes:
  fanout    N clients connect; S of them each send M lines as fast as they
            can, B lines per send call; every client must receive all S*M
            lines, in order per sender. Reports deliveries/s (N*S*M over the
            time from the first send to the last delivery) and, with
            --server-pid, the server's CPU time per delivery.
  latency   N receivers, plus one more client that sends R lines/s for T
            seconds, each stamped with its send time. Reports p50, p99 and
            max of (arrival - send) over all N*R*T deliveries and, with
            --server-pid, the server's CPU use.
  idle      N clients finish the TLS handshake, read their greeting and sit
            idle for --hold seconds. Reports how long connecting took and,
            with --server-pid, the server's RSS and threads per idle
            connection. Then every client closes cleanly.

Connection:
  --addr HOST:PORT     server to load; must be a loopback address
                       [default: 127.0.0.1:8080]
  --ca FILE            trust only the CA certificate(s) in FILE [default: certs/ca.crt]
  --server-name NAME   name the server's certificate must hold [default: localhost]
  --connectors K       threads opening connections in parallel [default: 4]

Load:
  --clients N          connections [default: 100 for fanout and latency, 1000 for idle]
  --senders S          fanout: clients that send [default: 10]
  --messages M         fanout: lines each sender sends [default: 2000]
  --batch B            fanout: lines per send call [default: 16]
  --size BYTES         length of each chat line's text [default: 64]
  --rate R             latency: lines per second [default: 200]
  --seconds T          latency: how long to send [default: 5]
  --hold SECS          idle: how long connections sit idle before the
                       server's RSS is read [default: 2]
  --close-wait SECS    at the end, how long every client waits for the
                       server's close_notify before the bench cuts it
                       [default: 30]

Measurement:
  --server-pid PID     the server's process: report its CPU time (utime +
                       stime from /proc/PID/stat) and RSS (VmRSS from
                       /proc/PID/status) before and after the load
  --timeout SECS       give up after this long: print what was measured and
                       exit with status 1 [default: 60]
  -h, --help           print this help

File descriptors: the bench holds one per client (latency: N+1), and the
server one per client too. A shell's `ulimit -n` is often 1024: run
`ulimit -n 65536` in the shell that starts the server and in the one that
runs the bench before large runs. The bench refuses to start if its own
limit is too low; if the server's is, connecting fails or times out.

The server cuts clients whose queue overflows (by default 4096 lines or
512 KiB); for fanout start it with e.g.
  chat-server -q --queue-lines 65536 --queue-bytes 67108864

Output: a few lines for people, then one line `RESULT mode=... key=value ...`
(values `na` where not measured; `status=ok` or the problems seen).
Exit status: 0 if every check passed; 1 if a line was lost or out of order,
a client was cut, a close was unclean, or the deadline passed; 2 for a
usage error.
";

/// Default client count for `fanout` and `latency`.
const DEFAULT_CLIENTS: usize = 100;
/// Default client count for `idle`, where only the count matters.
const DEFAULT_IDLE_CLIENTS: usize = 1000;
/// The most connections one run may open: about one loopback port range.
const MAX_CLIENTS: usize = 60_000;
/// Longest `--size`: the server's default line limit is 4096 bytes.
const MAX_SIZE: usize = 4000;
/// Longest line the bench accepts from the server.
const MAX_SERVER_LINE: usize = 64 * 1024;
/// File descriptors the bench needs besides one per client: std streams,
/// the watchdog, /proc reads, with room to spare.
const SPARE_FDS: u64 = 32;
/// Limit for one TCP connect and, again, for one TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the latency mode waits for the last lines after the last send.
const DRAIN_WAIT: Duration = Duration::from_secs(10);
/// After the deadline, how long the main thread has to print its results
/// before the watchdog exits the process.
const FORCE_EXIT_GRACE: Duration = Duration::from_secs(10);
/// Stack of each reading thread. It only decrypts and frames; the deep
/// handshake stack is used by the connector threads. Small stacks keep
/// thousands of readers cheap in address space.
const READER_STACK: usize = 256 * 1024;
/// A line's delay above which it is counted as an outlier.
const SLOW_LINE: Duration = Duration::from_millis(10);
/// How many problem lines are printed at most.
const SHOWN_PROBLEMS: usize = 5;

/// What the bench measures; the first positional argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Throughput when several clients send to many.
    Fanout,
    /// Delay of each line at a steady rate.
    Latency,
    /// Server memory per idle connection.
    Idle,
}

impl Mode {
    /// The name used on the command line and in the `RESULT` line.
    fn name(self) -> &'static str {
        match self {
            Mode::Fanout => "fanout",
            Mode::Latency => "latency",
            Mode::Idle => "idle",
        }
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "fanout" => Ok(Mode::Fanout),
            "latency" => Ok(Mode::Latency),
            "idle" => Ok(Mode::Idle),
            other => Err(format!(
                "unknown mode '{other}': use fanout, latency or idle"
            )),
        }
    }
}

/// Everything the command line sets.
#[derive(Debug, Clone)]
struct Options {
    /// What to measure.
    mode: Mode,
    /// `host:port` of the server.
    addr: String,
    /// The CA file to trust.
    ca: PathBuf,
    /// The name the server's certificate must hold.
    server_name: String,
    /// Threads that open connections in parallel.
    connectors: usize,
    /// Connections (receivers, in latency mode).
    clients: usize,
    /// Fanout: clients that send.
    senders: usize,
    /// Fanout: lines per sender.
    messages: u64,
    /// Fanout: lines per send call.
    batch: usize,
    /// Length of each line's text, in bytes.
    size: usize,
    /// Latency: lines per second.
    rate: u64,
    /// Latency: seconds of sending.
    seconds: u64,
    /// Idle: time connections sit idle before the RSS is read.
    hold: Duration,
    /// How long closing may take before the bench cuts what is left.
    close_wait: Duration,
    /// The server's process id, for /proc.
    server_pid: Option<u32>,
    /// The whole run's time limit.
    timeout: Duration,
}

/// The outcome of reading the command line.
enum Parsed {
    /// Run the bench.
    Run(Options),
    /// Print the help and stop.
    Help,
}

/// Reads the command line; errors are usage errors.
fn parse_args() -> Result<Parsed, lexopt::Error> {
    use lexopt::prelude::*;
    let mut mode: Option<Mode> = None;
    let mut clients: Option<usize> = None;
    let mut options = Options {
        mode: Mode::Fanout,
        addr: "127.0.0.1:8080".to_string(),
        ca: PathBuf::from("certs/ca.crt"),
        server_name: "localhost".to_string(),
        connectors: 4,
        clients: 0,
        senders: 10,
        messages: 2000,
        batch: 16,
        size: 64,
        rate: 200,
        seconds: 5,
        hold: Duration::from_secs(2),
        close_wait: Duration::from_secs(30),
        server_pid: None,
        timeout: Duration::from_secs(60),
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Value(value) if mode.is_none() => mode = Some(value.parse()?),
            Long("addr") => options.addr = parser.value()?.parse()?,
            Long("ca") => options.ca = parser.value()?.into(),
            Long("server-name") => options.server_name = parser.value()?.parse()?,
            Long("connectors") => options.connectors = parser.value()?.parse()?,
            Long("clients") => clients = Some(parser.value()?.parse()?),
            Long("senders") => options.senders = parser.value()?.parse()?,
            Long("messages") => options.messages = parser.value()?.parse()?,
            Long("batch") => options.batch = parser.value()?.parse()?,
            Long("size") => options.size = parser.value()?.parse()?,
            Long("rate") => options.rate = parser.value()?.parse()?,
            Long("seconds") => options.seconds = parser.value()?.parse()?,
            Long("hold") => options.hold = Duration::from_secs(parser.value()?.parse()?),
            Long("close-wait") => {
                options.close_wait = Duration::from_secs(parser.value()?.parse()?);
            }
            Long("server-pid") => options.server_pid = Some(parser.value()?.parse()?),
            Long("timeout") => options.timeout = Duration::from_secs(parser.value()?.parse()?),
            Short('h') | Long("help") => return Ok(Parsed::Help),
            _ => return Err(arg.unexpected()),
        }
    }
    options.mode = mode.ok_or("missing MODE: fanout, latency or idle")?;
    options.clients = clients.unwrap_or(match options.mode {
        Mode::Idle => DEFAULT_IDLE_CLIENTS,
        Mode::Fanout | Mode::Latency => DEFAULT_CLIENTS,
    });
    validate(&options)?;
    Ok(Parsed::Run(options))
}

/// Refuses option values that make no sense or no end.
fn validate(o: &Options) -> Result<(), String> {
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    check(
        (1..=MAX_CLIENTS).contains(&o.clients),
        "--clients must be 1 to 60000",
    )?;
    check(
        (1..=256).contains(&o.connectors),
        "--connectors must be 1 to 256",
    )?;
    check(o.size <= MAX_SIZE, "--size must be at most 4000")?;
    check(!o.timeout.is_zero(), "--timeout must be at least 1")?;
    check(
        o.close_wait <= Duration::from_secs(3600),
        "--close-wait must be at most 3600",
    )?;
    match o.mode {
        Mode::Fanout => {
            check(
                (1..=o.clients).contains(&o.senders),
                "--senders must be 1 to --clients",
            )?;
            check(
                (1..=10_000_000).contains(&o.messages),
                "--messages must be 1 to 10000000",
            )?;
            check((1..=4096).contains(&o.batch), "--batch must be 1 to 4096")
        }
        Mode::Latency => {
            check(
                (1..=100_000).contains(&o.rate),
                "--rate must be 1 to 100000",
            )?;
            check(
                (1..=3600).contains(&o.seconds),
                "--seconds must be 1 to 3600",
            )
        }
        Mode::Idle => check(
            o.hold <= Duration::from_secs(3600),
            "--hold must be at most 3600",
        ),
    }
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(Parsed::Run(options)) => options,
        Ok(Parsed::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("chat-bench: {err}\nTry 'chat-bench --help'.");
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("chat-bench: {err}");
            ExitCode::from(1)
        }
    }
}

/// Sets up, runs the chosen mode; true if every check passed.
fn run(options: Options) -> Result<bool, String> {
    let addr = resolve_loopback(&options.addr)?;
    let connections = options.clients + usize::from(options.mode == Mode::Latency);
    check_fd_limit(connections as u64)?;
    let config = client_config(&options.ca)?;
    let server_name = ServerName::try_from(options.server_name.clone())
        .map_err(|_| format!("'{}' is not a valid server name", options.server_name))?;
    // Read once: it runs a program.
    let ticks = clock_ticks();
    let server = match options.server_pid {
        Some(pid) => {
            let probe = Probe::new(&format!("/proc/{pid}"), ticks);
            probe.sample().map_err(|err| {
                format!("cannot read /proc/{pid}: {err} (is --server-pid right?)")
            })?;
            Some(probe)
        }
        None => None,
    };
    let deadline = Instant::now() + options.timeout;
    let (notes_tx, notes) = crossbeam_channel::unbounded();
    let bench = Bench {
        addr,
        config,
        server_name,
        epoch: Instant::now(),
        deadline,
        // Distinct per run, so lines from anyone else on the server (or a
        // previous run) are never counted as ours.
        marker: format!("b{}", std::process::id()).into(),
        watchdog: Watchdog::start(deadline, options.mode),
        closing: Arc::new(AtomicBool::new(false)),
        gave_up: Arc::new(AtomicBool::new(false)),
        notes: notes_tx,
        server,
        me: Probe::new("/proc/self", ticks),
        options,
    };
    Ok(match bench.options.mode {
        Mode::Fanout => fanout(&bench, &notes),
        Mode::Latency => latency(&bench, &notes),
        Mode::Idle => idle(&bench, &notes),
    })
}

/// Resolves `addr` and insists on loopback: this tool generates load and
/// must not be pointed at anyone else's machine.
fn resolve_loopback(addr: &str) -> Result<SocketAddr, String> {
    let candidates = addr
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {addr}: {err}"))?;
    candidates
        .into_iter()
        .find(|candidate| candidate.ip().is_loopback())
        .ok_or_else(|| format!("{addr} is not a loopback address; chat-bench only loads loopback"))
}

/// Fails early, with the fix, if this process may not open enough files.
fn check_fd_limit(connections: u64) -> Result<(), String> {
    let Some(limit) = open_files_limit() else {
        return Ok(());
    };
    let needed = connections + SPARE_FDS;
    if limit < needed {
        return Err(format!(
            "{connections} connections need about {needed} file descriptors, but the limit \
             (`ulimit -n`) is {limit}: raise it in this shell and in the server's, e.g. \
             `ulimit -n 65536` (at most the hard limit, `ulimit -Hn`)"
        ));
    }
    Ok(())
}

/// The soft limit on open files, from /proc/self/limits; `None` if unlimited
/// or unreadable.
fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The client TLS configuration: the library's, without session resumption,
/// so that every connection pays a full handshake, as a crowd of distinct
/// users would, and runs are comparable.
fn client_config(ca: &std::path::Path) -> Result<Arc<ClientConfig>, String> {
    let shared =
        tls::client_config(&Trust::CaFile(ca.to_owned()), None).map_err(|err| report(&err))?;
    let mut config = (*shared).clone();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// What every connection of one run shares.
struct Bench {
    /// The command line.
    options: Options,
    /// The server.
    addr: SocketAddr,
    /// TLS settings for every client.
    config: Arc<ClientConfig>,
    /// The name the certificate must hold.
    server_name: ServerName<'static>,
    /// Zero point of the timestamps the latency mode puts in its lines.
    epoch: Instant,
    /// When the run gives up.
    deadline: Instant,
    /// First word of every line this run sends.
    marker: Arc<str>,
    /// Cuts every connection at the deadline.
    watchdog: Watchdog,
    /// Set when the bench starts closing: a connection that ends before
    /// was cut by the server.
    closing: Arc<AtomicBool>,
    /// Set when the bench stops waiting for the server to close and cuts
    /// the connections left.
    gave_up: Arc<AtomicBool>,
    /// Where readers report progress to the main thread.
    notes: Sender<Note>,
    /// The server's /proc entry, if `--server-pid` was given.
    server: Option<Probe>,
    /// This process's own /proc entry: the bench shares the CPUs with the
    /// server, so its own use is part of the picture.
    me: Probe,
}

impl Bench {
    /// What the reading thread of client `index` must check.
    fn job(&self, expected: Option<u64>, senders: usize, record_latency: bool) -> ReaderJob {
        ReaderJob {
            marker: Arc::clone(&self.marker),
            expected,
            senders,
            epoch: self.epoch,
            record_latency,
            notes: self.notes.clone(),
            closing: Arc::clone(&self.closing),
            gave_up: Arc::clone(&self.gave_up),
            expired: Arc::clone(&self.watchdog.expired),
        }
    }

    /// Time left before the deadline, if any.
    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }
}

/// Cuts every connection at the deadline, so that no thread stays blocked
/// on a socket, and ends the process if the main thread still hangs.
#[derive(Clone)]
struct Watchdog {
    /// Set once the deadline has passed.
    expired: Arc<AtomicBool>,
    /// Every socket the bench opened.
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
                for socket in lock(&dog.sockets).iter() {
                    let _ = socket.shutdown(Shutdown::Both);
                }
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
        sockets.push(Arc::clone(&socket));
        // Read under the lock: the watchdog sets the flag before it takes
        // the lock, so a socket pushed after its sweep sees the flag.
        if self.expired() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// True once the deadline has passed.
    fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }
}

/// Locks a mutex whether or not a thread panicked while holding it: the
/// data guarded here (a list, a first error) stays valid either way.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connected client, seen from the main thread.
struct Client {
    /// The socket, to cut it when closing takes too long.
    socket: Arc<TcpStream>,
    /// Sends lines and the final close_notify.
    write: WriteHalf,
    /// The reading thread, which returns what it saw.
    reader: JoinHandle<ReaderReport>,
}

/// What a reading thread tells the main thread while it runs.
#[derive(Debug)]
enum Note {
    /// The server's greeting (`notice you are ...`) arrived.
    Greeted,
    /// Every expected bench line arrived; `at` is when the last one did.
    Done {
        /// When the last expected line was read.
        at: Instant,
    },
    /// The connection ended. `early` if the server ended it before the
    /// bench began closing (and before the deadline).
    Ended {
        /// The server ended it, before the bench closed it or the deadline.
        early: bool,
    },
}

/// The main thread's count of [`Note`]s.
#[derive(Debug, Default)]
struct Tally {
    /// Clients that read their greeting.
    greeted: usize,
    /// Clients that received every expected line.
    done: usize,
    /// When the last of those did.
    last_done: Option<Instant>,
    /// Connections that ended.
    ended: usize,
    /// Connections that ended before the bench closed them.
    ended_early: usize,
}

impl Tally {
    /// Takes notes until `enough` holds (true) or `until` passes (false).
    fn wait(
        &mut self,
        notes: &Receiver<Note>,
        until: Instant,
        enough: impl Fn(&Tally) -> bool,
    ) -> bool {
        // Each client sends at most three notes, and `recv_deadline` stops
        // at `until`: the loop is bounded both in count and in time.
        while !enough(self) {
            match notes.recv_deadline(until) {
                Ok(Note::Greeted) => self.greeted += 1,
                Ok(Note::Done { at }) => {
                    self.done += 1;
                    self.last_done = self.last_done.max(Some(at));
                }
                Ok(Note::Ended { early }) => {
                    self.ended += 1;
                    self.ended_early += usize::from(early);
                }
                Err(_) => return false,
            }
        }
        true
    }
}

/// What one reading thread checks.
struct ReaderJob {
    /// This run's marker.
    marker: Arc<str>,
    /// Bench lines to expect in all, if known: reaching it sends [`Note::Done`].
    expected: Option<u64>,
    /// Senders numbered `0..senders` whose order is checked.
    senders: usize,
    /// Zero point of the send timestamps.
    epoch: Instant,
    /// Keep each line's delay.
    record_latency: bool,
    /// To the main thread.
    notes: Sender<Note>,
    /// Set when the bench starts closing.
    closing: Arc<AtomicBool>,
    /// Set when the bench cuts the connections that did not close in time.
    gave_up: Arc<AtomicBool>,
    /// Set when the watchdog cuts every connection at the deadline.
    expired: Arc<AtomicBool>,
}

/// How a connection ended, from the reader's side.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum End {
    /// The reader had not ended when the report was taken (it panicked).
    #[default]
    Unknown,
    /// The server sent close_notify: a clean close.
    CloseNotify,
    /// The TCP stream ended without close_notify.
    Eof,
    /// The socket or TLS failed.
    Failed(String),
}

/// What one reading thread saw, returned when it ends.
#[derive(Debug, Default)]
struct ReaderReport {
    /// Bench lines received (this run's marker, well formed).
    received: u64,
    /// Bench lines whose sequence number was not the next from their sender.
    out_of_order: u64,
    /// Lines that mean trouble: `error` lines, notices of a client cut as
    /// too slow or of the server shutting down, unparsable lines.
    problems: u64,
    /// The first of those, for the report.
    first_problem: Option<String>,
    /// Chat lines from someone else (another marker), and replayed history.
    foreign: u64,
    /// Times rustls wanted to write (a key update): the bench's readers
    /// cannot, so it is only counted.
    wants_write: u64,
    /// `(sequence number, delay in ns)` of each line, in latency mode.
    latencies: Vec<(u64, u64)>,
    /// How the connection ended.
    end: End,
    /// The server ended it, before the bench closed it or the deadline.
    early: bool,
    /// It was still open when the bench stopped waiting (`--close-wait`
    /// or `--timeout`) and cut it.
    cut_by_bench: bool,
}

/// The state of one reading thread.
struct Reader {
    /// What to check.
    job: ReaderJob,
    /// What was seen.
    report: ReaderReport,
    /// Per sender, the sequence number expected next.
    next_seq: Vec<u64>,
    /// The greeting was seen.
    greeted: bool,
}

/// The reading thread: frames lines, checks them, reports.
fn read_loop(mut half: ReadHalf, job: ReaderJob) -> ReaderReport {
    let mut reader = Reader {
        next_seq: vec![0; job.senders],
        job,
        report: ReaderReport::default(),
        greeted: false,
    };
    let mut framer = LineFramer::new(MAX_SERVER_LINE);
    let mut frames = Vec::new();
    // Ends when the server closes, or when the socket is shut down: by the
    // close phase, or by the watchdog at the deadline.
    let end = loop {
        let received = half.receive(&mut |bytes| framer.push(bytes, &mut frames));
        // One clock reading per batch: lines decrypted together arrived together.
        let now = reader.job.epoch.elapsed();
        for frame in frames.drain(..) {
            reader.take(frame, now);
        }
        match received {
            Ok(Received::Data { wants_write }) => {
                reader.report.wants_write += u64::from(wants_write);
            }
            Ok(Received::Closed) => break End::CloseNotify,
            Ok(Received::Eof) => break End::Eof,
            Err(err) => break End::Failed(err.to_string()),
        }
    };
    // Only the server can have ended a connection that neither the close
    // phase nor the watchdog touched.
    let early =
        !reader.job.closing.load(Ordering::SeqCst) && !reader.job.expired.load(Ordering::SeqCst);
    let _ = reader.job.notes.send(Note::Ended { early });
    reader.report.end = end;
    reader.report.early = early;
    reader.report.cut_by_bench =
        reader.job.gave_up.load(Ordering::SeqCst) || reader.job.expired.load(Ordering::SeqCst);
    reader.report
}

impl Reader {
    /// Checks one line from the server.
    fn take(&mut self, frame: Frame, now: Duration) {
        let line = match frame {
            Frame::Line(line) => line,
            other => return self.problem(format!("unreadable line from the server: {other:?}")),
        };
        // A server that replays a room's history on joining may replay an
        // earlier run's lines: neither ours nor a problem.
        if line.starts_with("history ") {
            self.report.foreign += 1;
            return;
        }
        match ServerLine::parse(&line) {
            Some(ServerLine::Chat { text, .. }) => self.chat(text, now),
            Some(ServerLine::Notice(text)) if text.starts_with("you are ") && !self.greeted => {
                self.greeted = true;
                let _ = self.job.notes.send(Note::Greeted);
            }
            // Only the notices that mean trouble are checked: the server
            // adds routine ones (joins, rooms, topics) as it grows.
            Some(ServerLine::Notice(text))
                if !text.contains("too slow") && text != SHUTDOWN_NOTICE => {}
            _ => self.problem(line),
        }
    }

    /// Checks one chat line: ours, well formed, next in its sender's order.
    fn chat(&mut self, text: &str, now: Duration) {
        let mut words = text.split(' ');
        if words.next() != Some(&*self.job.marker) {
            self.report.foreign += 1;
            return;
        }
        let mut number = || words.next().and_then(|word| word.parse::<u64>().ok());
        let (Some(sender), Some(seq), Some(sent_ns)) = (number(), number(), number()) else {
            return self.problem(format!("malformed bench line: {text}"));
        };
        let Some(next) = usize::try_from(sender)
            .ok()
            .and_then(|sender| self.next_seq.get_mut(sender))
        else {
            return self.problem(format!("bench line from unknown sender {sender}"));
        };
        if seq != *next {
            self.report.out_of_order += 1;
            let text = format!("sender {sender}: line {seq} arrived when {next} was due");
            *next = seq + 1;
            self.problem(text);
        } else {
            *next = seq + 1;
        }
        self.report.received += 1;
        if self.job.record_latency {
            let delay = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
            self.report
                .latencies
                .push((seq, delay.saturating_sub(sent_ns)));
        }
        if Some(self.report.received) == self.job.expected {
            let _ = self.job.notes.send(Note::Done { at: Instant::now() });
        }
    }

    /// Counts something unexpected, keeping the first for the report.
    fn problem(&mut self, text: String) {
        self.report.problems += 1;
        self.report.first_problem.get_or_insert(text);
    }
}

/// Opens one connection, verifies the server, starts its reading thread.
fn connect_one(bench: &Bench, job: ReaderJob) -> Result<Client, String> {
    let limit = bench
        .remaining()
        .ok_or("the deadline passed")?
        .min(CONNECT_TIMEOUT);
    let socket = TcpStream::connect_timeout(&bench.addr, limit)
        .map_err(|err| format!("connect: {err}{}", io_hint(&err, &bench.addr)))?;
    let socket = Arc::new(socket);
    bench.watchdog.register(Arc::clone(&socket));
    // As the server does: each batch of lines leaves at once.
    socket
        .set_nodelay(true)
        .map_err(|err| format!("socket: {err}"))?;
    let client = ClientConnection::new(Arc::clone(&bench.config), bench.server_name.clone())
        .map_err(|err| format!("TLS setup: {err}"))?;
    let mut conn = Connection::Client(client);
    duplex::handshake(&mut conn, &socket, limit).map_err(|err| format!("handshake: {err}"))?;
    let (read_half, write) = duplex::split(conn, Arc::clone(&socket));
    let reader = thread::Builder::new()
        .name("reader".into())
        .stack_size(READER_STACK)
        .spawn(move || read_loop(read_half, job))
        .map_err(|err| {
            format!("cannot start a reading thread: {err} (check `ulimit -u` and memory)")
        })?;
    Ok(Client {
        socket,
        write,
        reader,
    })
}

/// The fix for the socket errors a large run is likely to hit.
fn io_hint(err: &io::Error, addr: &SocketAddr) -> String {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const EADDRNOTAVAIL: i32 = 99;
    match err.raw_os_error() {
        Some(EMFILE | ENFILE) => " (out of file descriptors: raise `ulimit -n`)".to_string(),
        Some(EADDRNOTAVAIL) => " (out of local ports: use fewer clients)".to_string(),
        _ if err.kind() == io::ErrorKind::ConnectionRefused => {
            format!(" (is chat-server listening on {addr}?)")
        }
        _ if err.kind() == io::ErrorKind::TimedOut => {
            " (the server may be out of file descriptors: check its log and `ulimit -n`)"
                .to_string()
        }
        _ => String::new(),
    }
}

/// Opens `count` connections with `--connectors` threads, then waits until
/// every client has read its greeting.
///
/// Returns the clients opened (in index order) and how long it all took,
/// or why it did not finish.
fn connect_and_greet(
    bench: &Bench,
    notes: &Receiver<Note>,
    tally: &mut Tally,
    count: usize,
    job: &(dyn Fn(usize) -> ReaderJob + Sync),
) -> (Vec<Client>, Result<Duration, String>) {
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let mut opened: Vec<(usize, Client)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..bench.options.connectors.min(count))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    // At most `count` indices are handed out in all.
                    loop {
                        if bench.watchdog.expired() || lock(&failure).is_some() {
                            break;
                        }
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count {
                            break;
                        }
                        match connect_one(bench, job(index)) {
                            Ok(client) => mine.push((index, client)),
                            Err(err) => {
                                lock(&failure).get_or_insert(format!("client {index}: {err}"));
                                break;
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
    opened.sort_by_key(|(index, _)| *index);
    let clients: Vec<Client> = opened.into_iter().map(|(_, client)| client).collect();
    if let Some(err) = lock(&failure).take() {
        return (clients, Err(err));
    }
    if clients.len() < count {
        return (clients, Err("the deadline passed while connecting".into()));
    }
    let greeted = tally.wait(notes, bench.deadline, |t| {
        t.greeted >= count || t.ended_early > 0
    });
    if !greeted || tally.greeted < count {
        let why = format!(
            "{} of {count} clients read their greeting; {} connections were cut",
            tally.greeted, tally.ended_early
        );
        return (clients, Err(why));
    }
    (clients, Ok(start.elapsed()))
}

/// What closing every client found.
struct Closed {
    /// Each reader's report, in client order.
    reports: Vec<ReaderReport>,
    /// Clients that got the server's close_notify.
    clean: usize,
    /// How long closing took.
    took: Duration,
}

/// Sends close_notify on every connection, waits for the server's, then
/// cuts whatever is left and collects every reader's report.
fn close_all(
    bench: &Bench,
    notes: &Receiver<Note>,
    tally: &mut Tally,
    mut clients: Vec<Client>,
) -> Closed {
    bench.closing.store(true, Ordering::SeqCst);
    let start = Instant::now();
    for client in &mut clients {
        // Fails only for a connection already cut, which the reader reports.
        let _ = client.write.close();
    }
    let until = bench.deadline.min(start + bench.options.close_wait);
    let count = clients.len();
    tally.wait(notes, until, |t| t.ended >= count);
    let took = start.elapsed();
    bench.gave_up.store(true, Ordering::SeqCst);
    let mut reports = Vec::with_capacity(count);
    for client in clients {
        // Wakes a reader still waiting, so that `join` cannot block.
        let _ = client.socket.shutdown(Shutdown::Both);
        reports.push(client.reader.join().unwrap_or_default());
    }
    let clean = reports
        .iter()
        .filter(|report| report.end == End::CloseNotify)
        .count();
    Closed {
        reports,
        clean,
        took,
    }
}

/// Writes one bench line: `MARKER SENDER SEQ SENT_NS ` padded with `x` to
/// `size` bytes, then `\n`.
fn push_line(out: &mut Vec<u8>, marker: &str, sender: usize, seq: u64, sent_ns: u64, size: usize) {
    let start = out.len();
    write!(out, "{marker} {sender} {seq} {sent_ns} ").expect("writing to a Vec cannot fail");
    if out.len() - start < size {
        out.resize(start + size, b'x');
    }
    out.push(b'\n');
}

/// Fanout: `--senders` clients send `--messages` lines each as fast as
/// they can; every client must receive every line.
fn fanout(bench: &Bench, notes: &Receiver<Note>) -> bool {
    let o = &bench.options;
    let (n, s, m) = (o.clients, o.senders, o.messages);
    let expected = s as u64 * m;
    let total = n as u64 * expected;
    println!(
        "fanout: {n} clients, {s} senders x {m} lines of {} bytes, {} lines per send",
        o.size, o.batch
    );
    let mut tally = Tally::default();
    let job = |_| bench.job(Some(expected), s, false);
    let (mut clients, connected) = connect_and_greet(bench, notes, &mut tally, n, &job);
    let mut result = ResultLine::new(Mode::Fanout, bench);
    result
        .add("senders", s)
        .add("messages", m)
        .add("size", o.size);
    if let Some(took) = report_connect(connected, &mut result) {
        println!(
            "connect: {n} clients connected and greeted in {:.2} s",
            secs(took)
        );
    }
    let before = Samples::take(bench);

    let mut sent_at = Vec::new();
    let mut send_errors = Vec::new();
    let mut all_done = false;
    let mut start = Instant::now();
    let mut after = None;
    if result.problems.is_empty() {
        let barrier = Barrier::new(s + 1);
        thread::scope(|scope| {
            let senders: Vec<_> = clients
                .iter_mut()
                .take(s)
                .enumerate()
                .map(|(sender, client)| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        send_burst(bench, &mut client.write, sender)
                    })
                })
                .collect();
            // Nothing is sent before the main thread reaches the barrier.
            start = Instant::now();
            barrier.wait();
            all_done = tally.wait(notes, bench.deadline, |t| t.done >= n || t.ended_early > 0);
            after = Some(Samples::take(bench));
            for sender in senders {
                match sender.join() {
                    Ok(Ok(at)) => sent_at.push(at),
                    Ok(Err(err)) => send_errors.push(err),
                    Err(_) => send_errors.push("a sending thread panicked".to_string()),
                }
            }
        });
    }
    let end = match (all_done, tally.last_done) {
        (true, Some(last)) => last,
        _ => Instant::now(),
    };
    let wall = end.saturating_duration_since(start);
    let closed = close_all(bench, notes, &mut tally, clients);

    let delivered: u64 = closed
        .reports
        .iter()
        .map(|r| r.received.min(expected))
        .sum();
    let extra: u64 = closed
        .reports
        .iter()
        .map(|r| r.received.saturating_sub(expected))
        .sum();
    let lost = total - delivered;
    let rate = delivered as f64 / secs(wall).max(1e-9);
    if let Some(last_sent) = sent_at.iter().max() {
        println!(
            "send: all {} lines sent after {:.3} s",
            s as u64 * m,
            secs(last_sent.saturating_duration_since(start))
        );
    }
    println!(
        "fanout: {delivered} of {total} deliveries in {:.3} s: {:.2} M deliveries/s",
        secs(wall),
        rate / 1e6
    );
    result
        .add("delivered", delivered)
        .add("expected", total)
        .add("lost", lost)
        .add("extra", extra)
        .add("seconds", format!("{:.3}", secs(wall)))
        .add("deliveries_per_s", format!("{rate:.0}"));
    match report_cpu(&before, after.as_ref(), &mut result) {
        Some(cpu) => {
            let per_delivery = cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64;
            println!("server: {per_delivery:.3} µs CPU per delivery");
            result.add("server_cpu_us_per_delivery", format!("{per_delivery:.3}"));
        }
        None => {
            result.add("server_cpu_us_per_delivery", "na");
        }
    }
    if lost > 0 {
        result.problem("lost");
    }
    if extra > 0 {
        result.problem("extra");
    }
    for err in send_errors.iter().take(SHOWN_PROBLEMS) {
        println!("send error: {err}");
    }
    if !send_errors.is_empty() {
        result.problem("send_failed");
    }
    report_reader_problems(&closed, &mut result);
    result.finish()
}

/// One fanout sender: all its lines, `--batch` per send call. Returns when
/// the last batch went out.
fn send_burst(bench: &Bench, write: &mut WriteHalf, sender: usize) -> Result<Instant, String> {
    let o = &bench.options;
    let mut batch = Vec::with_capacity(o.batch * (o.size + 48));
    let mut seq = 0;
    while seq < o.messages {
        if bench.watchdog.expired() {
            return Err(format!(
                "sender {sender}: stopped at the deadline after {seq} lines"
            ));
        }
        let end = (seq + o.batch as u64).min(o.messages);
        batch.clear();
        for line in seq..end {
            push_line(&mut batch, &bench.marker, sender, line, 0, o.size);
        }
        write
            .send(&batch)
            .map_err(|err| format!("sender {sender}: after {seq} lines: {err}"))?;
        seq = end;
    }
    Ok(Instant::now())
}

/// Latency: one extra client sends `--rate` lines a second for `--seconds`;
/// every receiver records each line's delay.
fn latency(bench: &Bench, notes: &Receiver<Note>) -> bool {
    let o = &bench.options;
    let n = o.clients;
    let count = o.rate * o.seconds;
    println!(
        "latency: {n} receivers + 1 sender, {} lines/s of {} bytes for {} s ({count} lines)",
        o.rate, o.size, o.seconds
    );
    let mut tally = Tally::default();
    // Client `n` is the sender; it receives its own lines too, as its
    // acknowledgement, but only the other clients' delays are counted.
    let job = |index| bench.job(Some(count), 1, index < n);
    let (mut clients, connected) = connect_and_greet(bench, notes, &mut tally, n + 1, &job);
    let mut result = ResultLine::new(Mode::Latency, bench);
    result
        .add("rate", o.rate)
        .add("seconds_sent", o.seconds)
        .add("size", o.size);
    if let Some(took) = report_connect(connected, &mut result) {
        println!(
            "connect: {} clients connected and greeted in {:.2} s",
            n + 1,
            secs(took)
        );
    }
    let before = Samples::take(bench);
    let start = Instant::now();
    let mut sent = 0;
    let mut worst_lag = Duration::ZERO;
    let mut send_error = None;
    let mut all_done = false;
    let mut after = None;
    if let (true, Some(sender)) = (result.problems.is_empty(), clients.get_mut(n)) {
        let mut line = Vec::with_capacity(o.size + 48);
        // `count` is at most 100000 * 3600 and the deadline stops it sooner.
        for seq in 0..count {
            if bench.watchdog.expired() {
                break;
            }
            let due = start + Duration::from_nanos(seq * 1_000_000_000 / o.rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            // Lateness includes the sleep's own overshoot: how far the
            // sender itself was from a steady rate.
            worst_lag = worst_lag.max(Instant::now().saturating_duration_since(due));
            line.clear();
            let sent_ns = u64::try_from(bench.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            push_line(&mut line, &bench.marker, 0, seq, sent_ns, o.size);
            if let Err(err) = sender.write.send(&line) {
                send_error = Some(format!("after {seq} lines: {err}"));
                break;
            }
            sent += 1;
        }
        let until = bench.deadline.min(Instant::now() + DRAIN_WAIT);
        all_done = tally.wait(notes, until, |t| t.done > n || t.ended_early > 0);
        after = Some(Samples::take(bench));
    }
    let end = match (all_done, tally.last_done) {
        (true, Some(last)) => last,
        _ => Instant::now(),
    };
    let wall = end.saturating_duration_since(start);
    let closed = close_all(bench, notes, &mut tally, clients);

    let mut delays: Vec<(u64, u64)> = closed
        .reports
        .iter()
        .take(n)
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    let total = n as u64 * count;
    let delivered = delays.len() as u64;
    let lost = total.saturating_sub(delivered);
    delays.sort_unstable_by_key(|&(_, delay)| delay);
    let sorted: Vec<u64> = delays.iter().map(|&(_, delay)| delay).collect();
    let ms = |ns: u64| format!("{:.3}", ns as f64 / 1e6);
    let (p50, p90, p99, p999) = (
        percentile(&sorted, 50.0),
        percentile(&sorted, 90.0),
        percentile(&sorted, 99.0),
        percentile(&sorted, 99.9),
    );
    let max = sorted.last().copied().unwrap_or(0);
    let slow_limit = u64::try_from(SLOW_LINE.as_nanos()).unwrap_or(u64::MAX);
    let slow = sorted.iter().filter(|&&delay| delay > slow_limit).count();
    println!(
        "latency: {delivered} of {total} deliveries; p50 {} ms, p90 {} ms, p99 {} ms, \
         p99.9 {} ms, max {} ms; {slow} over {} ms",
        ms(p50),
        ms(p90),
        ms(p99),
        ms(p999),
        ms(max),
        SLOW_LINE.as_millis()
    );
    if let Some(&(worst_seq, _)) = delays.last() {
        // A line late for every receiver points at the server or the
        // machine; one late for a single receiver, at that reader.
        let mut of_worst: Vec<u64> = delays
            .iter()
            .filter(|&&(seq, _)| seq == worst_seq)
            .map(|&(_, delay)| delay)
            .collect();
        of_worst.sort_unstable();
        println!(
            "latency: the slowest line was #{worst_seq} (sent at {:.3} s); its median over \
             receivers {} ms",
            worst_seq as f64 / o.rate as f64,
            ms(percentile(&of_worst, 50.0))
        );
    }
    println!(
        "send: {sent} of {count} lines sent; the sender ran up to {} ms behind schedule",
        ms(u64::try_from(worst_lag.as_nanos()).unwrap_or(u64::MAX))
    );
    result
        .add("delivered", delivered)
        .add("expected", total)
        .add("lost", lost)
        .add("p50_ms", ms(p50))
        .add("p90_ms", ms(p90))
        .add("p99_ms", ms(p99))
        .add("p999_ms", ms(p999))
        .add("max_ms", ms(max))
        .add("over_10ms", slow)
        .add(
            "sender_lag_ms",
            ms(u64::try_from(worst_lag.as_nanos()).unwrap_or(u64::MAX)),
        )
        .add("seconds", format!("{:.3}", secs(wall)));
    report_cpu(&before, after.as_ref(), &mut result);
    if lost > 0 {
        result.problem("lost");
    }
    if let Some(err) = send_error {
        println!("send error: {err}");
        result.problem("send_failed");
    }
    report_reader_problems(&closed, &mut result);
    result.finish()
}

/// Idle: `--clients` connections that only read their greeting; the
/// server's memory and threads per connection.
fn idle(bench: &Bench, notes: &Receiver<Note>) -> bool {
    let n = bench.options.clients;
    println!("idle: {n} connections");
    let mut result = ResultLine::new(Mode::Idle, bench);
    let before = Samples::take(bench);
    let mut tally = Tally::default();
    let job = |_| bench.job(None, 0, false);
    let (clients, connected) = connect_and_greet(bench, notes, &mut tally, n, &job);
    if let Some(took) = report_connect(connected, &mut result) {
        println!(
            "connect: {n} clients connected and greeted in {:.2} s ({:.0} per second)",
            secs(took),
            n as f64 / secs(took).max(1e-9)
        );
    }
    let mut after = None;
    if result.problems.is_empty() {
        // Also drains the join notices still on their way to early clients.
        let until = bench.deadline.min(Instant::now() + bench.options.hold);
        tally.wait(notes, until, |t| t.ended_early > 0);
        after = Some(Samples::take(bench));
    }
    let closed = close_all(bench, notes, &mut tally, clients);
    match (
        &before.server,
        after.as_ref().and_then(|a| a.server.as_ref()),
    ) {
        (Some(b), Some(a)) => {
            let per_conn = (a.rss_kib as f64 - b.rss_kib as f64) / n as f64;
            let threads = (a.threads as f64 - b.threads as f64) / n as f64;
            println!(
                "server: RSS {} KiB before, {} KiB after: {per_conn:.1} KiB per idle \
                 connection; threads {} -> {} ({threads:.2} per connection)",
                b.rss_kib, a.rss_kib, b.threads, a.threads
            );
            result
                .add("rss_before_kib", b.rss_kib)
                .add("rss_after_kib", a.rss_kib)
                .add("kib_per_conn", format!("{per_conn:.1}"))
                .add("threads_before", b.threads)
                .add("threads_after", a.threads);
        }
        _ => {
            result.add("kib_per_conn", "na");
        }
    }
    report_reader_problems(&closed, &mut result);
    result.finish()
}

/// Prints and records how connecting went; the time taken if it worked.
fn report_connect(
    connected: Result<Duration, String>,
    result: &mut ResultLine,
) -> Option<Duration> {
    match connected {
        Ok(took) => {
            result.add("connect_s", format!("{:.3}", secs(took)));
            Some(took)
        }
        Err(err) => {
            println!("connect failed: {err}");
            result.problem("connect_failed");
            None
        }
    }
}

/// Prints and records the CPU use of server and bench between two
/// samples; returns the server's CPU time, if measured.
fn report_cpu(
    before: &Samples,
    after: Option<&Samples>,
    result: &mut ResultLine,
) -> Option<Duration> {
    let after = after?;
    let wall = after.at.saturating_duration_since(before.at);
    let pct = |cpu: Duration| format!("{:.0}", 100.0 * cpu.as_secs_f64() / secs(wall).max(1e-9));
    let server_cpu = match (&before.server, &after.server) {
        (Some(b), Some(a)) => {
            let cpu = a.cpu.saturating_sub(b.cpu);
            println!(
                "server: {} % CPU, RSS {} -> {} KiB",
                pct(cpu),
                b.rss_kib,
                a.rss_kib
            );
            result
                .add("server_cpu_pct", pct(cpu))
                .add("server_rss_kib", a.rss_kib);
            Some(cpu)
        }
        _ => {
            result.add("server_cpu_pct", "na");
            None
        }
    };
    if let (Some(b), Some(a)) = (&before.me, &after.me) {
        let cpu = a.cpu.saturating_sub(b.cpu);
        println!(
            "bench: {} % CPU (it shares the machine with the server)",
            pct(cpu)
        );
        result.add("bench_cpu_pct", pct(cpu));
    }
    server_cpu
}

/// Prints and records what the readers saw go wrong.
fn report_reader_problems(closed: &Closed, result: &mut ResultLine) {
    let reports = &closed.reports;
    let count = reports.len();
    let early = reports.iter().filter(|r| r.early).count();
    let out_of_order: u64 = reports.iter().map(|r| r.out_of_order).sum();
    let problems: u64 = reports.iter().map(|r| r.problems).sum();
    let foreign: u64 = reports.iter().map(|r| r.foreign).sum();
    let wants_write: u64 = reports.iter().map(|r| r.wants_write).sum();
    println!(
        "close: {} of {count} connections closed cleanly in {:.2} s",
        closed.clean,
        secs(closed.took)
    );
    let mut ends: Vec<String> = reports
        .iter()
        .filter(|r| r.end != End::CloseNotify)
        .map(|r| {
            let when = if r.early {
                " (the server ended it before the bench closed)"
            } else if r.cut_by_bench {
                " (cut by the bench: no close_notify within --close-wait)"
            } else {
                ""
            };
            format!("{:?}{when}", r.end)
        })
        .collect();
    ends.sort();
    ends.dedup();
    for end in ends.iter().take(SHOWN_PROBLEMS) {
        println!("close: a connection ended with {end}");
    }
    for problem in reports
        .iter()
        .filter_map(|r| r.first_problem.as_ref())
        .take(SHOWN_PROBLEMS)
    {
        println!("problem: {problem}");
    }
    if foreign > 0 {
        println!("note: {foreign} chat or history lines from someone else were ignored");
    }
    if wants_write > 0 {
        println!("note: rustls wanted to write {wants_write} times (key updates?)");
    }
    result
        .add("out_of_order", out_of_order)
        .add("problems", problems)
        .add("cut", early)
        .add("closed_clean", closed.clean)
        .add(
            "close_cut",
            reports
                .iter()
                .filter(|r| r.cut_by_bench && r.end != End::CloseNotify)
                .count(),
        )
        .add("close_s", format!("{:.3}", secs(closed.took)));
    if out_of_order > 0 {
        result.problem("out_of_order");
    }
    if problems > 0 {
        result.problem("unexpected_lines");
    }
    if early > 0 {
        result.problem("cut_by_server");
    }
    if closed.clean < count {
        result.problem("unclean_close");
    }
}

/// The final `RESULT` line, built as the run goes.
struct ResultLine {
    /// `key=value` pairs, in order.
    fields: Vec<String>,
    /// Short names of what went wrong; empty means `status=ok`.
    problems: Vec<&'static str>,
    /// The watchdog's flag, to report a timeout.
    expired: Arc<AtomicBool>,
}

impl ResultLine {
    /// Starts the line with the mode and the client count.
    fn new(mode: Mode, bench: &Bench) -> ResultLine {
        let mut line = ResultLine {
            fields: Vec::new(),
            problems: Vec::new(),
            expired: Arc::clone(&bench.watchdog.expired),
        };
        line.add("mode", mode.name())
            .add("clients", bench.options.clients);
        line
    }

    /// Appends `key=value`.
    fn add(&mut self, key: &str, value: impl std::fmt::Display) -> &mut ResultLine {
        self.fields.push(format!("{key}={value}"));
        self
    }

    /// Records a failed check.
    fn problem(&mut self, what: &'static str) {
        if !self.problems.contains(&what) {
            self.problems.push(what);
        }
    }

    /// Prints the line; true if every check passed.
    fn finish(mut self) -> bool {
        if self.expired.load(Ordering::SeqCst) {
            self.problems.insert(0, "timeout");
        }
        let status = if self.problems.is_empty() {
            "ok".to_string()
        } else {
            self.problems.join(",")
        };
        println!("RESULT {} status={status}", self.fields.join(" "));
        self.problems.is_empty()
    }
}

/// A /proc entry to sample: the server's, or the bench's own.
struct Probe {
    /// `/proc/PID` or `/proc/self`.
    dir: String,
    /// Clock ticks per second, the unit of utime and stime.
    ticks: u64,
}

/// One reading of a process's CPU time, memory and threads.
#[derive(Debug, Clone, Copy)]
struct ProcSample {
    /// utime + stime.
    cpu: Duration,
    /// Resident set size.
    rss_kib: u64,
    /// Threads alive.
    threads: u64,
}

/// Server and bench readings at one moment.
struct Samples {
    /// When they were taken.
    at: Instant,
    /// The server's, with `--server-pid`.
    server: Option<ProcSample>,
    /// The bench's own.
    me: Option<ProcSample>,
}

impl Samples {
    /// Reads both now; a failed read leaves a field empty.
    fn take(bench: &Bench) -> Samples {
        Samples {
            at: Instant::now(),
            server: bench.server.as_ref().and_then(|probe| probe.sample().ok()),
            me: bench.me.sample().ok(),
        }
    }
}

impl Probe {
    /// A probe of `dir`, e.g. `/proc/1234`, whose clock ticks `ticks`
    /// times a second.
    fn new(dir: &str, ticks: u64) -> Probe {
        Probe {
            dir: dir.to_string(),
            ticks,
        }
    }

    /// Reads the process's numbers now.
    fn sample(&self) -> io::Result<ProcSample> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let stat = fs::read_to_string(format!("{}/stat", self.dir))?;
        // The command name (field 2) may hold spaces and parentheses: the
        // fields worth reading start after its last ')'. utime and stime
        // are fields 14 and 15, so 12th and 13th after the name.
        let rest = &stat[stat.rfind(')').ok_or_else(|| invalid("no ')' in stat"))? + 1..];
        let mut fields = rest.split_whitespace().skip(11);
        let mut tick_field = || -> io::Result<u64> {
            fields
                .next()
                .and_then(|field| field.parse().ok())
                .ok_or_else(|| invalid("short stat"))
        };
        let ticks = tick_field()? + tick_field()?;
        let status = fs::read_to_string(format!("{}/status", self.dir))?;
        let field = |name: &str| -> io::Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse().ok())
                .ok_or_else(|| invalid(name))
        };
        Ok(ProcSample {
            cpu: Duration::from_micros(ticks * 1_000_000 / self.ticks),
            rss_kib: field("VmRSS:")?,
            threads: field("Threads:")?,
        })
    }
}

/// Clock ticks per second, from `getconf CLK_TCK`; 100, the Linux value
/// on every common platform, if that fails.
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// Nearest-rank percentile `p` (0 to 100) of sorted values; 0 if empty.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in seconds, for printing.
fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

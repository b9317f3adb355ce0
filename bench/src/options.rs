//! The command line of one measurement: modes, options, defaults, and the
//! checks that refuse runs that make no sense or no end.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::peer::Peer;
use crate::suite::{self, SuiteOptions};

/// The `--help` text.
pub const HELP: &str = "\
chat-bench: a load generator for chat-server (loopback only)

Usage: chat-bench MODE [OPTIONS]
       chat-bench suite [OPTIONS]     (see chat-bench suite --help)

Modes:
  fanout     N clients connect; S of them each send M lines as fast as they
             can, B lines per send call; every client must receive every
             line, in order per sender. Reports deliveries/s and, with
             --server-pid, the server's CPU time per delivery.
  latency    N receivers, plus one more client that sends R lines/s for T
             seconds, each stamped with its send time. Reports percentiles
             of (arrival - send) and, with --server-pid, the server's CPU use.
  idle       N clients finish the TLS handshake, read their greeting and sit
             idle for --hold seconds; with --server-pid, the server's RSS
             and threads per idle connection. Then one more client sends
             one line, and the time until every idle client has it is
             measured. Then every client closes cleanly.
  handshake  W workers, for T seconds, each: connect, full TLS handshake,
             read the first line, close_notify, close. Reports handshakes/s,
             handshake time percentiles and, with --server-pid, server CPU
             per handshake. --resume resumes with TLS 1.3 tickets.
  slow       a fan-out run twice: alone, then beside K clients that never
             read (--stalled). Reports whether the readers still got every
             line, the slowdown, and when the server cut the stalled ones.

Connection:
  --addr HOST:PORT     server to load; must be a loopback address
                       [default: 127.0.0.1:8080]. Several, comma-separated:
                       servers sharing one chat (chat-server --redis), the
                       clients spread over them in turn
  --ca FILE            trust only the CA certificate(s) in FILE [default: certs/ca.crt]
  --server-name NAME   name the server's certificate must hold [default: localhost]
  --peer KIND          the server's kind: secure-chat, go (the Go peer) or
                       ncat (ncat --ssl --chat) [default: secure-chat]
  --connectors K       threads doing TLS handshakes in parallel [default: 4]
  --readers R          threads reading the (non-blocking) clients [default: 2]

Load:
  --clients N          connections [default: 100 for fanout and latency,
                       1000 for idle, 50 for slow]
  --senders S          fanout, slow: clients that send [default: 10; slow: 5]
  --messages M         fanout, slow: lines each sender sends [default: 2000]
  --batch B            fanout, slow: lines per send call [default: 16]
  --size BYTES         length of each chat line's text [default: 64; slow: 1024]
  --rate R             latency: lines per second [default: 200]
  --seconds T          latency: how long to send; handshake: how long to
                       run [default: 5]
  --hold SECS          idle: how long connections sit idle before the
                       server's RSS is read [default: 2]
  --workers W          handshake: connections made in parallel [default: 4]
  --resume             handshake: resume sessions (TLS 1.3 tickets)
  --kx GROUP           handshake: key exchange the client offers: x25519,
                       x25519mlkem768 or default (both) [default: default]
  --stalled K          slow: clients that never read [default: 1]
  --run-wait SECS      slow: how long one run may take to deliver
                       everything before it counts as incomplete [default: 20]
  --stall-wait SECS    slow: after the run beside stalled clients, how long
                       to watch them for the server's cut before closing
                       them [default: 10; the server's stall timeout is 5]
  --close-wait SECS    at the end, how long every client waits for the
                       server's close_notify before the bench cuts it
                       [default: 30]

Measurement:
  --server-pid PID     the server's process: report its CPU time (utime +
                       stime from /proc/PID/stat), RSS and threads; several,
                       comma-separated, are added up (say, the servers and
                       their redis-server)
  --pin                pin chat-bench and every thread of the --server-pid
                       processes to separate cores, as the suite does:
                       the server on the first half of the physical cores
                       this process may use, chat-bench on the rest (on
                       two cores: CPU 0 and CPU 1). A server already running
                       keeps the thread counts it chose for all the cores;
                       for the suite's conditions start it pinned instead
                       (`taskset -c 0 chat-server ...`)
  --timeout SECS       give up after this long: print what was measured and
                       exit with status 1 [default: 60]
  -h, --help           print this help

The bench holds one descriptor per client and raises its own limit on
open files to the hard limit; the server needs as many (`ulimit -n`).
Start chat-server with --rate 0 (no flood control) and, for large runs,
--max-clients. (Its old --queue-lines and --queue-bytes are gone: a burst
no longer cuts a reader that keeps up.)

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
/// Default client count for `slow`: enough readers to see a stall spread.
const DEFAULT_SLOW_CLIENTS: usize = 50;
/// The most connections one run may open: about one loopback port range.
pub const MAX_CLIENTS: usize = 60_000;
/// The most sending clients: each has two threads of its own.
const MAX_SENDERS: usize = 1000;
/// Longest `--size`: the server's default line limit is 4096 bytes, and a
/// line carries a few dozen bytes besides the text.
const MAX_SIZE: usize = 4000;

/// What the bench measures; the first positional argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Throughput when several clients send to many.
    Fanout,
    /// Delay of each line at a steady rate.
    Latency,
    /// Server memory per idle connection, and one broadcast to all.
    Idle,
    /// TLS handshakes per second.
    Handshake,
    /// A fan-out beside clients that never read.
    Slow,
}

impl Mode {
    /// The name used on the command line and in the `RESULT` line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fanout => "fanout",
            Mode::Latency => "latency",
            Mode::Idle => "idle",
            Mode::Handshake => "handshake",
            Mode::Slow => "slow",
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
            "handshake" => Ok(Mode::Handshake),
            "slow" => Ok(Mode::Slow),
            other => Err(format!(
                "unknown mode '{other}': use fanout, latency, idle, handshake, slow or suite"
            )),
        }
    }
}

/// Which key exchange the handshake mode's client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kx {
    /// What rustls offers by default: the post-quantum hybrid, then X25519.
    Default,
    /// Classic X25519 alone.
    X25519,
    /// The hybrid X25519 + ML-KEM-768 alone.
    X25519Mlkem768,
}

impl Kx {
    /// The name used on the command line and in the `RESULT` line.
    pub fn name(self) -> &'static str {
        match self {
            Kx::Default => "default",
            Kx::X25519 => "x25519",
            Kx::X25519Mlkem768 => "x25519mlkem768",
        }
    }
}

impl FromStr for Kx {
    type Err = String;

    fn from_str(text: &str) -> Result<Kx, String> {
        match text {
            "default" => Ok(Kx::Default),
            "x25519" => Ok(Kx::X25519),
            "x25519mlkem768" => Ok(Kx::X25519Mlkem768),
            other => Err(format!(
                "unknown key exchange '{other}': use x25519, x25519mlkem768 or default"
            )),
        }
    }
}

/// Everything the command line of one measurement sets.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to measure.
    pub mode: Mode,
    /// `host:port` of the server; several, comma-separated, for servers
    /// that share one chat.
    pub addr: String,
    /// The CA file to trust.
    pub ca: PathBuf,
    /// The name the server's certificate must hold.
    pub server_name: String,
    /// What kind of server it is.
    pub peer: Peer,
    /// Threads that open connections in parallel.
    pub connectors: usize,
    /// Threads that read the non-blocking clients.
    pub readers: usize,
    /// Connections (receivers, in latency mode; readers, in slow mode).
    pub clients: usize,
    /// Fanout and slow: clients that send.
    pub senders: usize,
    /// Fanout and slow: lines per sender.
    pub messages: u64,
    /// Fanout and slow: lines per send call.
    pub batch: usize,
    /// Length of each line's text, in bytes.
    pub size: usize,
    /// Latency: lines per second.
    pub rate: u64,
    /// Latency: seconds of sending; handshake: seconds of handshakes.
    pub seconds: u64,
    /// Idle: time connections sit idle before the RSS is read.
    pub hold: Duration,
    /// Handshake: parallel workers.
    pub workers: usize,
    /// Handshake: resume sessions.
    pub resume: bool,
    /// Handshake: the key exchange offered.
    pub kx: Kx,
    /// Slow: clients that never read.
    pub stalled: usize,
    /// Slow: how long one run may take to deliver everything.
    pub run_wait: Duration,
    /// Slow: how long to watch the stalled clients for their cut.
    pub stall_wait: Duration,
    /// How long closing may take before the bench cuts what is left.
    pub close_wait: Duration,
    /// The server's process ids, for /proc (their sum is reported).
    pub server_pid: Vec<u32>,
    /// Pin the bench and the servers to separate cores.
    pub pin: bool,
    /// The whole run's time limit.
    pub timeout: Duration,
}

impl Options {
    /// The most connections the run has open at once.
    pub fn connections(&self) -> usize {
        match self.mode {
            Mode::Fanout => self.clients,
            // The extra sender (latency) or broadcaster (idle).
            Mode::Latency | Mode::Idle => self.clients + 1,
            Mode::Handshake => self.workers,
            Mode::Slow => self.clients + self.stalled,
        }
    }
}

/// The outcome of reading the command line.
pub enum Parsed {
    /// Run one measurement.
    Run(Box<Options>),
    /// Run the suite.
    Suite(SuiteOptions),
    /// Print this help and stop.
    Help(&'static str),
}

/// Reads the command line; errors are usage errors.
pub fn parse_args() -> Result<Parsed, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut mode: Option<Mode> = None;
    let mut first = true;
    let mut clients: Option<usize> = None;
    let mut senders: Option<usize> = None;
    let mut size: Option<usize> = None;
    let mut options = Options {
        mode: Mode::Fanout,
        addr: "127.0.0.1:8080".to_string(),
        ca: PathBuf::from("certs/ca.crt"),
        server_name: "localhost".to_string(),
        peer: Peer::SecureChat,
        connectors: 4,
        readers: 2,
        clients: 0,
        senders: 0,
        messages: 2000,
        batch: 16,
        size: 0,
        rate: 200,
        seconds: 5,
        hold: Duration::from_secs(2),
        workers: 4,
        resume: false,
        kx: Kx::Default,
        stalled: 1,
        run_wait: Duration::from_secs(20),
        stall_wait: Duration::from_secs(10),
        close_wait: Duration::from_secs(30),
        server_pid: Vec::new(),
        pin: false,
        timeout: Duration::from_secs(60),
    };
    let secs = |value: u64| Duration::from_secs(value);
    while let Some(arg) = parser.next()? {
        let at_start = std::mem::replace(&mut first, false);
        match arg {
            Value(value) if at_start && value == "suite" => return suite::parse_args(parser),
            Value(value) if mode.is_none() => mode = Some(value.parse()?),
            Long("addr") => options.addr = parser.value()?.parse()?,
            Long("ca") => options.ca = parser.value()?.into(),
            Long("server-name") => options.server_name = parser.value()?.parse()?,
            Long("peer") => options.peer = parser.value()?.parse()?,
            Long("connectors") => options.connectors = parser.value()?.parse()?,
            Long("readers") => options.readers = parser.value()?.parse()?,
            Long("clients") => clients = Some(parser.value()?.parse()?),
            Long("senders") => senders = Some(parser.value()?.parse()?),
            Long("messages") => options.messages = parser.value()?.parse()?,
            Long("batch") => options.batch = parser.value()?.parse()?,
            Long("size") => size = Some(parser.value()?.parse()?),
            Long("rate") => options.rate = parser.value()?.parse()?,
            Long("seconds") => options.seconds = parser.value()?.parse()?,
            Long("hold") => options.hold = secs(parser.value()?.parse()?),
            Long("workers") => options.workers = parser.value()?.parse()?,
            Long("resume") => options.resume = true,
            Long("kx") => options.kx = parser.value()?.parse()?,
            Long("stalled") => options.stalled = parser.value()?.parse()?,
            Long("run-wait") => options.run_wait = secs(parser.value()?.parse()?),
            Long("stall-wait") => options.stall_wait = secs(parser.value()?.parse()?),
            Long("close-wait") => options.close_wait = secs(parser.value()?.parse()?),
            Long("server-pid") => {
                let pids: String = parser.value()?.parse()?;
                options.server_pid = pids
                    .split(',')
                    .map(|pid| pid.trim().parse())
                    .collect::<Result<_, _>>()
                    .map_err(|_| {
                        format!("--server-pid {pids:?}: give process ids, comma-separated")
                    })?;
            }
            Long("pin") => options.pin = true,
            Long("timeout") => options.timeout = secs(parser.value()?.parse()?),
            Short('h') | Long("help") => return Ok(Parsed::Help(HELP)),
            _ => return Err(arg.unexpected()),
        }
    }
    let mode = mode.ok_or("missing MODE: fanout, latency, idle, handshake, slow or suite")?;
    options.mode = mode;
    options.clients = clients.unwrap_or(match mode {
        Mode::Idle => DEFAULT_IDLE_CLIENTS,
        Mode::Slow => DEFAULT_SLOW_CLIENTS,
        Mode::Fanout | Mode::Latency | Mode::Handshake => DEFAULT_CLIENTS,
    });
    options.senders = senders.unwrap_or(if mode == Mode::Slow { 5 } else { 10 });
    options.size = size.unwrap_or(if mode == Mode::Slow { 1024 } else { 64 });
    validate(&options)?;
    Ok(Parsed::Run(Box::new(options)))
}

/// Refuses option values that make no sense or no end.
pub fn validate(o: &Options) -> Result<(), String> {
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    check(
        (1..=MAX_CLIENTS).contains(&o.clients),
        "--clients must be 1 to 60000",
    )?;
    check(
        (1..=256).contains(&o.connectors),
        "--connectors must be 1 to 256",
    )?;
    check((1..=64).contains(&o.readers), "--readers must be 1 to 64")?;
    check(o.size <= MAX_SIZE, "--size must be at most 4000")?;
    check(!o.timeout.is_zero(), "--timeout must be at least 1")?;
    check(
        !o.pin || !o.server_pid.is_empty(),
        "--pin needs --server-pid: the server must be pinned too",
    )?;
    check(
        o.close_wait <= Duration::from_secs(3600),
        "--close-wait must be at most 3600",
    )?;
    match o.mode {
        Mode::Fanout | Mode::Slow => {
            check(
                (1..=o.clients.min(MAX_SENDERS)).contains(&o.senders),
                "--senders must be 1 to --clients, and at most 1000",
            )?;
            check(
                (1..=10_000_000).contains(&o.messages),
                "--messages must be 1 to 10000000",
            )?;
            check((1..=4096).contains(&o.batch), "--batch must be 1 to 4096")?;
            if o.mode == Mode::Slow {
                check(
                    (1..=MAX_CLIENTS).contains(&o.stalled),
                    "--stalled must be 1 to 60000",
                )?;
                check(
                    (1..=3600).contains(&o.run_wait.as_secs()),
                    "--run-wait must be 1 to 3600",
                )?;
                check(
                    o.stall_wait.as_secs() <= 3600,
                    "--stall-wait must be at most 3600",
                )?;
            }
        }
        Mode::Latency => {
            check(
                (1..=100_000).contains(&o.rate),
                "--rate must be 1 to 100000",
            )?;
            check(
                (1..=3600).contains(&o.seconds),
                "--seconds must be 1 to 3600",
            )?;
        }
        Mode::Idle => check(
            o.hold <= Duration::from_secs(3600),
            "--hold must be at most 3600",
        )?,
        Mode::Handshake => {
            check((1..=256).contains(&o.workers), "--workers must be 1 to 256")?;
            check(
                (1..=3600).contains(&o.seconds),
                "--seconds must be 1 to 3600",
            )?;
        }
    }
    if let Some(max) = o.peer.max_connections() {
        let wanted = o.connections();
        check(
            wanted <= max,
            &format!(
                "this run needs {wanted} connections, but {} holds at most about {max} \
                 (its chat mode waits with select(), limited to 1024 descriptors): use \
                 fewer --clients",
                o.peer
            ),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(mode: Mode) -> Options {
        Options {
            mode,
            addr: "127.0.0.1:1".into(),
            ca: PathBuf::from("ca.crt"),
            server_name: "localhost".into(),
            peer: Peer::SecureChat,
            connectors: 4,
            readers: 2,
            clients: 100,
            senders: 10,
            messages: 10,
            batch: 16,
            size: 64,
            rate: 200,
            seconds: 5,
            hold: Duration::from_secs(2),
            workers: 4,
            resume: false,
            kx: Kx::Default,
            stalled: 1,
            run_wait: Duration::from_secs(20),
            stall_wait: Duration::from_secs(10),
            close_wait: Duration::from_secs(30),
            server_pid: Vec::new(),
            pin: false,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn ncat_refuses_big_runs() {
        let mut o = options(Mode::Idle);
        o.peer = Peer::Ncat;
        o.clients = 1000;
        assert!(validate(&o).is_ok());
        o.clients = 1010;
        let err = validate(&o).unwrap_err();
        assert!(err.contains("1011 connections"), "{err}");
        o.peer = Peer::SecureChat;
        o.clients = 15_000;
        assert!(validate(&o).is_ok());
    }

    #[test]
    fn senders_must_be_among_the_clients() {
        let mut o = options(Mode::Fanout);
        o.senders = 101;
        assert!(validate(&o).is_err());
        o.senders = 0;
        assert!(validate(&o).is_err());
        o.senders = 100;
        assert!(validate(&o).is_ok());
    }

    #[test]
    fn pinning_needs_the_servers_pid() {
        let mut o = options(Mode::Fanout);
        o.pin = true;
        assert!(validate(&o).unwrap_err().contains("--server-pid"));
        o.server_pid = vec![42];
        assert!(validate(&o).is_ok());
    }

    #[test]
    fn modes_and_groups_parse() {
        assert_eq!("slow".parse::<Mode>(), Ok(Mode::Slow));
        assert!("fast".parse::<Mode>().is_err());
        assert_eq!("x25519mlkem768".parse::<Kx>(), Ok(Kx::X25519Mlkem768));
        assert!("p256".parse::<Kx>().is_err());
    }
}

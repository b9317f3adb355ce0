//! `chat-server`: parse the command line, start the server, stop on a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use log::LevelFilter;
use secure_chat::error::report;
use secure_chat::server::{self, Limits, Server};
use secure_chat::throttle::RateLimit;
use secure_chat::{logging, tls};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

const HELP: &str = "\
chat-server: a multi-user chat over TLS

Usage: chat-server [OPTIONS]

Options:
  --addr HOST:PORT           address to listen on [default: 127.0.0.1:8080]
  --cert FILE                certificate chain, PEM, leaf first [default: certs/server.crt]
  --key FILE                 private key of the certificate, PEM [default: certs/server.key]
  --handshake-timeout SECS   time a client has to finish the TLS handshake [default: 10]
  --max-line BYTES           longest line a client may send [default: 4096]
  --queue-lines N            lines that may wait for one client before it is
                             disconnected as too slow [default: 4096]
  --queue-bytes BYTES        bytes that may wait for one client [default: 524288]
  --history N                lines each room replays to newcomers; 0 keeps
                             none [default: 50]
  --announce-limit N         rooms with more people than this do not announce
                             who joins and quits [default: 100]
  --max-clients N            clients in the chat at once; more are told
                             'server full' [default: 1000]
  --max-per-ip N             clients from one IP address, and at most 2N
                             connections from it in all [default: no limit]
  --rate LINES_PER_SEC       lines a second each client may send; faster
                             clients are slowed down, never cut off; 0 turns
                             flood control off [default: 5]
  --burst N                  lines a client may send at once [default: 20]
  --write-timeout SECS       a client whose connection takes nothing for this
                             long is taken for dead [default: 30]
  --client-ca FILE           require client certificates signed by the CA in
                             FILE (mutual TLS); each client's nick is then the
                             certificate's common name
  -v, --verbose              more log output (twice: everything, rustls included)
  -q, --quiet                only warnings and errors
  -h, --help                 print this help
  -V, --version              print the version

SIGINT or SIGTERM stops the server: every client is told, every connection
closed (a second signal exits at once). SIGHUP reloads the certificate, key
and client CA for new connections; if they are unusable, the old ones stay.
Logs go to standard error, one line per connection event and never what
anyone said; RUST_LOG=debug works as -v does.
";

struct Args {
    addr: String,
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    limits: Limits,
    level: LevelFilter,
}

enum Parsed {
    Run(Args),
    Exit(&'static str),
}

fn parse_args() -> Result<Parsed, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        addr: server::DEFAULT_ADDR.to_string(),
        cert: PathBuf::from("certs/server.crt"),
        key: PathBuf::from("certs/server.key"),
        client_ca: None,
        limits: Limits::default(),
        level: logging::level_from_env().unwrap_or(LevelFilter::Info),
    };
    let mut rate = RateLimit::default();
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("addr") => args.addr = parser.value()?.parse()?,
            Long("cert") => args.cert = parser.value()?.into(),
            Long("key") => args.key = parser.value()?.into(),
            Long("handshake-timeout") => {
                let secs: u64 = parser.value()?.parse()?;
                args.limits.handshake_timeout = Duration::from_secs(secs.max(1));
            }
            Long("max-line") => args.limits.max_line = parser.value()?.parse()?,
            Long("queue-lines") => args.limits.queue.max_messages = parser.value()?.parse()?,
            Long("queue-bytes") => args.limits.queue.max_bytes = parser.value()?.parse()?,
            Long("history") => args.limits.history = parser.value()?.parse()?,
            Long("announce-limit") => args.limits.announce_limit = parser.value()?.parse()?,
            Long("max-clients") => args.limits.max_clients = parser.value()?.parse()?,
            Long("max-per-ip") => args.limits.max_per_ip = Some(parser.value()?.parse()?),
            Long("rate") => rate.per_second = parser.value()?.parse()?,
            Long("burst") => rate.burst = parser.value()?.parse::<u32>()?.max(1),
            Long("write-timeout") => {
                let secs: u64 = parser.value()?.parse()?;
                args.limits.write_timeout = Duration::from_secs(secs.max(1));
            }
            Long("client-ca") => args.client_ca = Some(parser.value()?.into()),
            Short('v') | Long("verbose") => {
                args.level = match args.level {
                    LevelFilter::Info | LevelFilter::Warn => LevelFilter::Debug,
                    _ => LevelFilter::Trace,
                }
            }
            Short('q') | Long("quiet") => args.level = LevelFilter::Warn,
            Short('h') | Long("help") => return Ok(Parsed::Exit(HELP)),
            Short('V') | Long("version") => {
                return Ok(Parsed::Exit(concat!(
                    "chat-server ",
                    env!("CARGO_PKG_VERSION"),
                    "\n"
                )))
            }
            _ => return Err(arg.unexpected()),
        }
    }
    // --rate 0 turns flood control off, whatever the burst.
    args.limits.rate = (rate.per_second > 0).then_some(rate);
    Ok(Parsed::Run(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Exit(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("chat-server: {err}\nTry 'chat-server --help'.");
            return ExitCode::FAILURE;
        }
    };
    logging::init(args.level);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chat-server: {}", report(&*err));
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    raise_open_files_limit();
    let load = move || tls::server_config(&args.cert, &args.key, args.client_ca.as_deref());
    // Handlers first: a signal that arrives once we are listening must
    // find them in place, not the default action that kills the process.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let server = Server::bind(&args.addr, load()?, args.limits)?;
    let stopper = server.stopper();
    let reloader = server.reloader();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                match signal {
                    SIGHUP => match load() {
                        Ok(config) => {
                            reloader.replace(config);
                            log::info!("reloaded the certificate, key and client CA");
                        }
                        Err(err) => log::error!(
                            "reload failed, still using the previous files: {}",
                            report(&err)
                        ),
                    },
                    _ if stopping => {
                        log::warn!("signal {signal} again: exiting at once");
                        std::process::exit(128 + signal);
                    }
                    _ => {
                        log::info!("signal {signal}: shutting down");
                        stopping = true;
                        // Stopping blocks on nothing but a local connect;
                        // a second signal meanwhile is for someone in a hurry.
                        let stopper = stopper.clone();
                        thread::spawn(move || stopper.stop());
                    }
                }
            }
        })?;
    log::info!("listening on {}", server.local_addr());
    server.run()?;
    log::info!("stopped");
    Ok(())
}

/// Each client costs a file descriptor: raise the soft limit on open files
/// to the hard limit, which the system allows without privileges.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("open files limit: {limit}"),
        Err(err) => log::warn!("cannot raise the open files limit: {err}"),
    }
}

//! `chat-server`: parse the command line, start the server, stop on a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use log::LevelFilter;
use secure_chat::error::report;
use secure_chat::server::{self, Limits, Server};
use secure_chat::{logging, tls};
use signal_hook::consts::{SIGINT, SIGTERM};
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
                             disconnected as too slow [default: 2048]
  --queue-bytes BYTES        bytes that may wait for one client [default: 524288]
  --history N                lines each room replays to newcomers; 0 keeps
                             none [default: 50]
  -v, --verbose              more log output (twice: everything, rustls included)
  -q, --quiet                only warnings and errors
  -h, --help                 print this help
  -V, --version              print the version

SIGINT or SIGTERM stops the server: every client is told, every connection
closed. Logs go to standard error; RUST_LOG=debug works as -v does.
";

struct Args {
    addr: String,
    cert: PathBuf,
    key: PathBuf,
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
        limits: Limits::default(),
        level: logging::level_from_env().unwrap_or(LevelFilter::Info),
    };
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
    let config = tls::server_config(&args.cert, &args.key)?;
    let server = Server::bind(&args.addr, config, args.limits)?;
    log::info!("listening on {}", server.local_addr());

    let stopper = server.stopper();
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut received = signals.forever();
            if let Some(signal) = received.next() {
                log::info!("signal {signal}: shutting down");
                // Stopping blocks on nothing but a local connect; a second
                // signal while it runs is for someone in a hurry.
                thread::spawn(move || stopper.stop());
            }
            if let Some(signal) = received.next() {
                log::warn!("signal {signal} again: exiting at once");
                std::process::exit(128 + signal);
            }
        })?;
    server.run()?;
    log::info!("stopped");
    Ok(())
}

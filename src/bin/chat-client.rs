//! `chat-client`: parse the command line, connect, chat, exit.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use log::LevelFilter;
use secure_chat::client::{self, ClientOptions};
use secure_chat::error::report;
use secure_chat::logging;
use secure_chat::tls::Trust;

const HELP: &str = "\
chat-client: talk to a chat-server over TLS

Usage: chat-client [OPTIONS]

Options:
  --addr HOST:PORT       server to connect to [default: localhost:8080]
  --ca FILE              trust only the CA certificate(s) in FILE
                         [default: certs/ca.crt if it exists, else the public web roots]
  --server-name NAME     name the server's certificate must hold
                         [default: the host part of --addr]
  -v, --verbose          more log output (twice: rustls' handshake log too)
  -h, --help             print this help
  -V, --version          print the version

Type a line and press Enter to send it; 'bye' leaves. End of input (Ctrl-D)
also leaves, after the server's last lines have arrived. The server's
certificate is always verified; there is no option to skip that.
";

/// The CA file `make certs` writes, trusted when present and no --ca is given.
const DEFAULT_CA: &str = "certs/ca.crt";

enum Parsed {
    Run(ClientOptions, LevelFilter),
    Exit(&'static str),
}

fn parse_args() -> Result<Parsed, lexopt::Error> {
    use lexopt::prelude::*;
    let mut addr = client::DEFAULT_ADDR.to_string();
    let mut ca: Option<PathBuf> = None;
    let mut server_name = None;
    let mut level = logging::level_from_env().unwrap_or(LevelFilter::Warn);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("addr") => addr = parser.value()?.parse()?,
            Long("ca") => ca = Some(parser.value()?.into()),
            Long("server-name") => server_name = Some(parser.value()?.parse()?),
            Short('v') | Long("verbose") => {
                level = match level {
                    LevelFilter::Warn | LevelFilter::Error => LevelFilter::Info,
                    LevelFilter::Info => LevelFilter::Debug,
                    _ => LevelFilter::Trace,
                }
            }
            Short('h') | Long("help") => return Ok(Parsed::Exit(HELP)),
            Short('V') | Long("version") => {
                return Ok(Parsed::Exit(concat!(
                    "chat-client ",
                    env!("CARGO_PKG_VERSION"),
                    "\n"
                )))
            }
            _ => return Err(arg.unexpected()),
        }
    }
    let options = ClientOptions {
        addr,
        server_name,
        trust: Trust::choose(ca, Path::new(DEFAULT_CA)),
        timeout: client::CONNECT_TIMEOUT,
    };
    Ok(Parsed::Run(options, level))
}

fn main() -> ExitCode {
    let (options, level) = match parse_args() {
        Ok(Parsed::Run(options, level)) => (options, level),
        Ok(Parsed::Exit(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("chat-client: {err}\nTry 'chat-client --help'.");
            return ExitCode::FAILURE;
        }
    };
    logging::init(level);
    let result = client::connect(&options).and_then(|connected| {
        eprintln!("{}", connected.summary);
        let stdin = io::BufReader::new(io::stdin());
        connected.chat(stdin, &mut io::stdout().lock())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output left (`chat-client | head`): not a failure.
        Err(secure_chat::Error::Io(err)) if err.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("chat-client: {}", report(&err));
            ExitCode::FAILURE
        }
    }
}

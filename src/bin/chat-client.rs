//! `chat-client`: parse the command line, connect, chat, exit.

use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use log::LevelFilter;
use secure_chat::client::{self, ClientOptions};
use secure_chat::error::report;
use secure_chat::line::strip_controls;
use secure_chat::logging;
use secure_chat::protocol::Nick;
use secure_chat::screen::Screen;
use secure_chat::tls::{Identity, Trust};

const HELP: &str = "\
chat-client: talk to a chat-server over TLS

Usage: chat-client [OPTIONS]

Options:
  --addr HOST:PORT       server to connect to [default: localhost:8080]
  --ca FILE              trust only the CA certificate(s) in FILE
                         [default: certs/ca.crt if it exists, else the public web roots]
  --server-name NAME     name the server's certificate must hold
                         [default: the host part of --addr]
  --nick NAME            the name to chat under (same as typing /nick NAME)
  --cert FILE            client certificate, PEM, for a server that requires
                         one (its common name is then your nick)
  --key FILE             the client certificate's private key, PEM
  -v, --verbose          more log output (twice: rustls' handshake log too)
  -h, --help             print this help
  -V, --version          print the version

Type a line and press Enter to send it; /help lists the commands; /quit or
'bye' leaves. End of input (Ctrl-D) also leaves, after the server's last
lines have arrived. Lines are coloured on a terminal unless NO_COLOR is set.
The server's certificate is always verified; there is no option to skip that.
";

/// The CA file `make certs` writes, trusted when present and no --ca is given.
const DEFAULT_CA: &str = "certs/ca.crt";

struct Args {
    options: ClientOptions,
    nick: Option<String>,
    level: LevelFilter,
}

enum Parsed {
    Run(Args),
    Exit(&'static str),
}

fn parse_args() -> Result<Parsed, lexopt::Error> {
    use lexopt::prelude::*;
    let mut addr = client::DEFAULT_ADDR.to_string();
    let mut ca: Option<PathBuf> = None;
    let mut server_name = None;
    let mut nick = None;
    let mut cert: Option<PathBuf> = None;
    let mut key: Option<PathBuf> = None;
    let mut level = logging::level_from_env().unwrap_or(LevelFilter::Warn);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("addr") => addr = parser.value()?.parse()?,
            Long("ca") => ca = Some(parser.value()?.into()),
            Long("server-name") => server_name = Some(parser.value()?.parse()?),
            Long("cert") => cert = Some(parser.value()?.into()),
            Long("key") => key = Some(parser.value()?.into()),
            Long("nick") => {
                let name: String = parser.value()?.parse()?;
                // Checked here too, so a typo fails before connecting.
                if let Err(why) = Nick::parse(&name) {
                    return Err(format!("--nick {name:?} is not a valid nick: {why}").into());
                }
                nick = Some(name);
            }
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
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => Some(Identity { cert, key }),
        (None, None) => None,
        _ => return Err("--cert and --key go together: give both or neither".into()),
    };
    let options = ClientOptions {
        identity,
        addr,
        server_name,
        trust: Trust::choose(ca, Path::new(DEFAULT_CA)),
        timeout: client::CONNECT_TIMEOUT,
    };
    Ok(Parsed::Run(Args {
        options,
        nick,
        level,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Exit(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("chat-client: {err}\nTry 'chat-client --help'.");
            return ExitCode::FAILURE;
        }
    };
    logging::init(args.level);
    let stdout = io::stdout();
    let colour = Screen::wants_colour(
        stdout.is_terminal(),
        std::env::var("NO_COLOR").ok().as_deref(),
    );
    // --nick is the first line sent, as if typed.
    let first = args
        .nick
        .map(|nick| format!("/nick {nick}\n"))
        .unwrap_or_default();
    let input = io::Cursor::new(first).chain(io::BufReader::new(io::stdin()));
    let result = client::connect(&args.options).and_then(|connected| {
        let screen = Screen::new(colour);
        connected.chat(input, &mut stdout.lock(), screen, &mut io::stderr())
    });
    match result {
        // Also when the reader of our output left (`chat-client | head`).
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Parts of the message (names in a certificate) come from the
            // server: no control characters reach the terminal.
            eprintln!("chat-client: {}", strip_controls(report(&err)));
            ExitCode::FAILURE
        }
    }
}

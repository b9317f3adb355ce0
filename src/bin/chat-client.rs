//! `chat-client`: parse the command line, connect, chat, exit.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use log::LevelFilter;
use secure_chat::client::{self, ClientOptions, Connected, Unknown};
use secure_chat::error::report;
use secure_chat::known_servers::{self, KnownServers};
use secure_chat::line::strip_controls;
use secure_chat::logging;
use secure_chat::protocol::Nick;
use secure_chat::screen::Screen;
use secure_chat::terminal;
use secure_chat::tls::{Fingerprint, Identity, Trust};

const HELP: &str = "\
chat-client: talk to a chat-server over TLS

Usage: chat-client [OPTIONS]

Options:
  --addr HOST:PORT       server to connect to [default: localhost:8080]
  --ca FILE              trust only the CA certificate(s) in FILE
                         [default: for a server on this machine (localhost,
                         127.0.0.1, ::1) certs/ca.crt if it exists, else
                         the public web roots]
  --server-name NAME     name the server's certificate must hold
                         [default: the host part of --addr]
  --pin sha256:KEY       trust exactly the server key with this fingerprint
                         (chat-server logs it when it starts), instead of a
                         CA; the certificate's names and dates are not checked
  --known-servers FILE   servers trusted by their key, one a line
                         [default: $XDG_CONFIG_HOME/secure-chat/known_servers,
                         else ~/.config/secure-chat/known_servers]
  --nick NAME            the name to chat under (same as typing /nick NAME)
  --timestamps           the local time (12:34) in front of each line
  --no-timestamps        no time in front of lines
                         [default: times on a terminal, none in a pipe]
  --no-reconnect         on a terminal, exit when the connection drops
                         instead of connecting again
  --cert FILE            client certificate, PEM, for a server that requires
                         one (its common name is then your nick)
  --key FILE             the client certificate's private key, PEM
  -v, --verbose          more log output (twice: rustls' handshake log too)
  -h, --help             print this help
  -V, --version          print the version

Type a line and press Enter to send it; /help lists the commands; /quit or
'bye' leaves. End of input (Ctrl-D) also leaves, after the server's last
lines have arrived. Lines are coloured on a terminal unless NO_COLOR is set.
On a terminal (standard input and output), the line being typed stays at the
bottom: arrow keys for history and editing, Tab completes commands and nicks,
and a dropped connection is made again (with backoff), back in the same nick
and room. In a pipe, lines in and out are plain, as a script wants them.
The server is always verified, by a CA or by its key; there is no option to
skip that. On a terminal, a server whose certificate the CA does not vouch for
is shown with its key's fingerprint, and you are asked whether to trust it: a
yes stores the key in the known-servers file, and from then on a server there
must present that key (a changed one is refused). Without a terminal, such a
server is refused: pass --pin.
";

/// The CA file `make certs` writes, trusted when present, no --ca is given
/// and the server is on this machine ([`Trust::choose`]).
const DEFAULT_CA: &str = "certs/ca.crt";

struct Args {
    options: ClientOptions,
    /// The known-servers file: none with --pin, or if no home is known.
    known_servers: Option<PathBuf>,
    nick: Option<String>,
    /// --timestamps or --no-timestamps, if given.
    timestamps: Option<bool>,
    reconnect: bool,
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
    let mut pin: Option<Fingerprint> = None;
    let mut known_servers: Option<PathBuf> = None;
    let mut timestamps = None;
    let mut reconnect = true;
    let mut level = logging::level_from_env().unwrap_or(LevelFilter::Warn);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("addr") => addr = parser.value()?.parse()?,
            Long("ca") => ca = Some(parser.value()?.into()),
            Long("server-name") => server_name = Some(parser.value()?.parse()?),
            Long("cert") => cert = Some(parser.value()?.into()),
            Long("key") => key = Some(parser.value()?.into()),
            Long("pin") => pin = Some(parser.value()?.parse()?),
            Long("known-servers") => known_servers = Some(parser.value()?.into()),
            Long("timestamps") => timestamps = Some(true),
            Long("no-timestamps") => timestamps = Some(false),
            Long("no-reconnect") => reconnect = false,
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
    let host = client::host_of(&addr);
    if known_servers::is_odd_ipv4(host) {
        return Err(format!(
            "--addr {addr}: write the IPv4 address in full, four numbers with dots \
             (such as 127.0.0.1): {host} is read in more than one way"
        )
        .into());
    }
    let trust = match (pin, ca) {
        (Some(_), Some(_)) => {
            return Err("--pin and --ca exclude each other: a pin trusts one key, not a CA".into())
        }
        (Some(pin), None) => Trust::Pin(pin),
        (None, ca) => Trust::choose(ca, Path::new(DEFAULT_CA), &addr),
    };
    // A pin given on the command line is the whole trust: the file is
    // neither read nor written.
    let known_servers = match trust {
        Trust::Pin(_) => None,
        _ => known_servers.or_else(|| {
            known_servers::default_path(
                std::env::var_os("XDG_CONFIG_HOME"),
                std::env::var_os("HOME"),
            )
        }),
    };
    let options = ClientOptions {
        identity,
        addr,
        server_name,
        trust,
        timeout: client::CONNECT_TIMEOUT,
    };
    Ok(Parsed::Run(Args {
        options,
        known_servers,
        nick,
        timestamps,
        reconnect,
        level,
    }))
}

/// Connects: with `known`, asking the user about an unknown server if
/// stdin and stderr are a terminal (someone is there to see and answer).
fn connect(
    options: &ClientOptions,
    known: Option<&mut KnownServers>,
) -> Result<Connected, secure_chat::Error> {
    let Some(known) = known else {
        return client::connect(options);
    };
    let file = known.path().to_owned();
    let mut ask =
        |unknown: &Unknown| ask_user(unknown, &file, &mut io::stdin().lock(), &mut io::stderr());
    let interactive = io::stdin().is_terminal() && io::stderr().is_terminal();
    let ask = interactive.then_some(&mut ask as &mut dyn FnMut(&Unknown) -> bool);
    client::connect_or_ask(options, known, ask)
}

/// Shows the unknown server on `output`, asks once whether to trust it,
/// and reads the answer from `input`: yes only for `y` or `yes`; anything
/// else, and the end of input, is no.
///
/// It reads through the same buffered stdin the chat reads later, so
/// nothing typed after the answer is lost.
fn ask_user(
    unknown: &Unknown,
    file: &Path,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> bool {
    // The subject and the problem's names come from the server, which may
    // be an impostor's: the fingerprint, which it cannot choose, comes
    // first, and the subject is cut short and kept to one plain line
    // (no controls, no invisible or direction-changing characters), so that
    // it cannot draw a fingerprint line of its own.
    let subject: String = unknown
        .subject
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control() && !is_format_character(*c))
        .take(SUBJECT_SHOWN)
        .collect();
    let shown = strip_controls(format!(
        "The certificate of {} does not verify: {}.",
        unknown.addr, unknown.problem
    ));
    let question = format!(
        "{shown}\n\
         Its key's fingerprint is {}\n\
         It says it is: {subject}\n\
         Answer y only if the server's operator confirms this fingerprint (chat-server\n\
         logs it when it starts): the key is then kept in {} and trusted from now on.\n\
         Trust this server? [y/N] ",
        unknown.fingerprint,
        file.display()
    );
    // The prompt is a courtesy; a failed write leaves the answer to decide.
    let _ = output.write_all(question.as_bytes());
    let _ = output.flush();
    let mut answer = String::new();
    match input.read_line(&mut answer) {
        Ok(0) | Err(_) => {
            let _ = writeln!(output);
            false
        }
        Ok(_) => matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
    }
}

/// How much of a certificate's subject the prompt shows.
const SUBJECT_SHOWN: usize = 60;

/// Unicode's invisible formatting characters (Cf: bidi overrides, zero
/// widths) and line and paragraph separators: they change how text looks
/// without showing themselves.
fn is_format_character(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
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
        .as_ref()
        .map(|nick| format!("/nick {nick}\n"))
        .unwrap_or_default();
    let input = io::Cursor::new(first).chain(io::BufReader::new(io::stdin()));
    // Read before connecting: a damaged file is reported, not ignored.
    let mut known = match args.known_servers.as_deref().map(KnownServers::load) {
        None => None,
        Some(Ok(known)) => Some(known),
        Some(Err(err)) => {
            eprintln!("chat-client: {}", strip_controls(report(&err)));
            return ExitCode::FAILURE;
        }
    };
    if terminal::is_screen() {
        return exit(on_terminal(args, known, colour));
    }
    let timestamps = args.timestamps.unwrap_or(false);
    let result = connect(&args.options, known.as_mut()).and_then(|connected| {
        let screen = Screen::new(colour).with_timestamps(timestamps);
        connected.chat(input, &mut stdout.lock(), screen, &mut io::stderr())
    });
    exit(result)
}

fn exit(result: Result<(), secure_chat::Error>) -> ExitCode {
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

/// The client for a person at a terminal ([`terminal`]).
///
/// Its reconnects use the first connection's TLS configuration, so the
/// trust must be settled before it: a server in the known-servers file is
/// trusted by its stored key. Any other whose certificate does not verify
/// goes through the same question as in a pipe ([`connect`]); after a yes
/// the key is stored, and the terminal client connects again trusting it.
fn on_terminal(
    args: Args,
    mut known: Option<KnownServers>,
    colour: bool,
) -> Result<(), secure_chat::Error> {
    let trusted = |known: Option<&KnownServers>| {
        let server = known_servers::server_key(&args.options.addr);
        match known.and_then(|known| known.lookup(&server)) {
            Some(entry) => ClientOptions {
                trust: Trust::Pin(entry.fingerprint),
                ..args.options.clone()
            },
            None => args.options.clone(),
        }
    };
    let mut options = trusted(known.as_ref());
    let first = match terminal::connect(&options) {
        Ok(first) => first,
        Err(secure_chat::Error::Handshake { .. }) if known.is_some() => {
            // Asks (or explains a changed key) as the pipe client does; a
            // yes gives a connection pinned to the key the user saw, which
            // is kept, and every reconnect trusts that key, whether or not
            // the known-servers file could be written.
            let connected = connect(&args.options, known.as_mut())?;
            if let Some(key) = connected.peer_fingerprint() {
                options = ClientOptions {
                    trust: Trust::Pin(key),
                    ..args.options.clone()
                };
            }
            terminal::adopt(connected, &options)?
        }
        Err(err) => return Err(err),
    };
    let settings = terminal::TerminalSettings {
        nick: args.nick.clone(),
        reconnect: args.reconnect,
        screen: Screen::new(colour).with_timestamps(args.timestamps.unwrap_or(true)),
    };
    terminal::run(first, &options, settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secure_chat::tls::CertProblem;

    fn unknown() -> Unknown {
        Unknown {
            addr: "chat.example.org:8080".into(),
            problem: CertProblem::NotTrusted("UnknownIssuer"),
            fingerprint: Fingerprint::of_spki(b"key"),
            subject: Some("CN=chat\x1b[2J".into()),
        }
    }

    fn answer(typed: &str) -> (bool, String) {
        let mut shown = Vec::new();
        let yes = ask_user(
            &unknown(),
            Path::new("/k/known_servers"),
            &mut typed.as_bytes(),
            &mut shown,
        );
        (yes, String::from_utf8(shown).unwrap())
    }

    #[test]
    fn only_yes_trusts() {
        for typed in ["y\n", "Y\n", " yes \n", "YES"] {
            assert!(answer(typed).0, "{typed:?}");
        }
        for typed in ["\n", "n\n", "no\n", "yess\n", "", "sure\n"] {
            assert!(!answer(typed).0, "{typed:?}");
        }
    }

    #[test]
    fn a_subject_cannot_draw_lines_of_its_own() {
        let long = format!("CN=x,\u{202e} O={}", "y".repeat(200));
        let mut shown = Vec::new();
        let spoof = Unknown {
            subject: Some(long),
            ..unknown()
        };
        ask_user(&spoof, Path::new("/k"), &mut "n\n".as_bytes(), &mut shown);
        let shown = String::from_utf8(shown).unwrap();
        let said = shown
            .lines()
            .find_map(|line| line.strip_prefix("It says it is: "))
            .unwrap();
        assert_eq!(said.chars().count(), SUBJECT_SHOWN, "{said}");
        assert!(!said.contains('\u{202e}'));
    }

    #[test]
    fn the_question_shows_the_fingerprint_and_no_control_characters() {
        let (_, shown) = answer("n\n");
        assert!(
            shown.contains(&Fingerprint::of_spki(b"key").to_string()),
            "{shown}"
        );
        assert!(shown.contains("It says it is: CN=chat[2J\n"), "{shown}");
        // The fingerprint, which the server cannot choose, comes before
        // what it says of itself.
        let key = shown.find("fingerprint is").unwrap();
        assert!(key < shown.find("It says it is").unwrap(), "{shown}");
        assert!(
            shown.contains("certificate not trusted (UnknownIssuer)"),
            "{shown}"
        );
        assert!(shown.contains("/k/known_servers"), "{shown}");
        assert!(shown.ends_with("Trust this server? [y/N] "), "{shown}");
        assert!(!shown.contains('\x1b'), "{shown:?}");
    }
}

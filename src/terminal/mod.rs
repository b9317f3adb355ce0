//! The client for a person at a terminal: a line editor with a prompt,
//! history and Tab completion; each line shown once, when the server has
//! taken it; the local time in front of each line; and coming back by
//! itself when the connection drops.
//!
//! [`Connected::chat`](crate::client::Connected::chat) is the client for
//! pipes and scripts, and stays as it is. This module is chosen by the
//! `chat-client` binary only when standard input and output are both a
//! terminal with a size ([`is_screen`]). Its parts: the keyboard thread
//! (`keyboard`), Tab (`completion`), coming back as the same person
//! (`restore`), and here the connection loop that ties them together.
//!
//! ## Three kinds of thread, and who owns what
//!
//! ```text
//!  keyboard thread                 calling thread (connection loop)     writer thread
//!  ───────────────                 ────────────────────────────────     (one per connection)
//!  rustyline Editor ── a line ──>  Route: the current Outbox, or ─────> outbox::run_writer
//!  (prompt, history,               lines kept while there is none        ═══TLS═══> server
//!   Tab completion)
//!        ^                         LineReader <═══TLS═══ server
//!        │ printed above the        │ each line: read notices as typed values; track nick,
//!        └── prompt (printer) <─────┘ room, secret, who is here; hide what is ours; show the rest
//! ```
//!
//! - The **keyboard thread** owns the line editor (rustyline). It never
//!   touches a connection: it hands each line to the *route*, which the
//!   threads share under a mutex. So the input outlives connections: while
//!   one drops and the next is made, the editor goes on, and a line typed
//!   then waits in the route for the next connection (at most
//!   [`KEPT_WHILE_AWAY`] of them; past that a line is refused with a note:
//!   a bounded wait, and the user knows which lines were not kept).
//! - The **calling thread** runs the connection loop: connect, read lines
//!   until the connection ends, decide whether to come back, wait, connect
//!   again. It owns the connection's reading half and the rustls
//!   `ClientConfig`, one for every attempt: its in-memory session store
//!   keeps the server's ticket, so a reconnect resumes the TLS session
//!   instead of a full handshake. It owns what the client knows of itself
//!   (nick, room, the secret from `/token`, kept in memory only and never
//!   shown), learnt from the server's notices read as typed values
//!   ([`protocol::Notice`](crate::protocol::Notice)), never from their
//!   English; and it prints every server line through rustyline's external
//!   printer, which clears the prompt and the half-typed line, prints, and
//!   draws them again.
//! - Each connection's **writer thread** owns its writing half, as in the
//!   pipe client ([`outbox`](crate::outbox)).
//!
//! When the loop ends (the user left, the server refused us, the
//! certificate failed, or `--no-reconnect`), the calling thread restores
//! the terminal and returns; the keyboard thread may still be waiting in
//! the editor, and ends with the process.
//!
//! ## What the user sees once
//!
//! The server echoes every line it accepts (`chat YOU TEXT`): that echo is
//! the proof, so the typed line is erased from the screen after Enter and
//! only the echo remains. Lines the client sends for itself (`/token`,
//! `/reclaim`, the `/nick` and `/join` that put it back) are not shown, nor
//! is any `token` line or the refusal of a reclaim it handles itself.
//!
//! That is the end of the tour. [`x509`](crate::x509),
//! [`error`](crate::error) and [`logging`](crate::logging) are supporting
//! cast.

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use rustls::ClientConfig;
use rustyline::ExternalPrinter;

use crate::backoff::Backoff;
use crate::client::{self, ClientOptions, Connected};
use crate::duplex::HandshakeError;
use crate::error::{report, Error};
use crate::line::{strip_controls, Frame};
use crate::line_reader::{End, LineReader};
use crate::outbox::Outbox;
use crate::protocol::{ServerLine, WORDING};
use crate::screen::Screen;
use crate::tls;

mod completion;
mod keyboard;
mod restore;

use keyboard::{lock, Common};
use restore::Restorer;

/// Lines typed while there is no connection, kept for the next one.
pub const KEPT_WHILE_AWAY: usize = 20;

/// The first wait before reconnecting; it doubles after each failure...
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// ...up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Turns bracketed paste off again, as rustyline would have on leaving
/// its editor; sent when the loop ends while the editor still waits.
const BRACKETED_PASTE_OFF: &str = "\x1b[?2004l";

/// What the terminal client is asked to do, besides where to connect.
#[derive(Debug, Clone)]
pub struct TerminalSettings {
    /// `--nick`: sent as `/nick NICK` on the first connection.
    pub nick: Option<String>,
    /// Come back after a dropped connection (not `--no-reconnect`).
    pub reconnect: bool,
    /// How lines look (colours, timestamps).
    pub screen: Screen,
}

/// True if standard input and output are a terminal a person looks at:
/// both terminals, and of some size. `script` with piped input makes a
/// terminal of no size (0 by 0), and scripts that drive the client that
/// way keep the plain client.
pub fn is_screen() -> bool {
    io::stdin().is_terminal() && io::stdout().is_terminal() && columns().is_some()
}

/// The width of the terminal on standard output, if it has one.
fn columns() -> Option<usize> {
    let size = rustix::termios::tcgetwinsize(io::stdout()).ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some(usize::from(size.ws_col))
}

/// The first connection, and the TLS configuration that made it, which
/// every reconnect uses again: its session store holds the server's
/// ticket, and that is what lets a reconnect resume.
pub struct First {
    config: Arc<ClientConfig>,
    connected: Connected,
}

/// Makes the first connection, as [`client::connect`] does, and fails as
/// it does, before the terminal is touched.
pub fn connect(options: &ClientOptions) -> Result<First, Error> {
    let config = tls::client_config(&options.trust, options.identity.as_ref())?;
    let connected = connect_once(&config, options)?;
    Ok(First { config, connected })
}

/// A first connection made another way (after the user trusted the
/// server's key at the prompt); reconnects use `options`, which must trust
/// the same server. Its session store starts empty, so the first
/// reconnect does a full handshake.
pub fn adopt(connected: Connected, options: &ClientOptions) -> Result<First, Error> {
    let config = tls::client_config(&options.trust, options.identity.as_ref())?;
    Ok(First { config, connected })
}

/// Chats on the terminal until the user leaves, coming back after each
/// dropped connection unless `settings.reconnect` is false. `options`
/// must be the ones `first` was made with.
///
/// A certificate the client refuses, or our certificate refused, ends the
/// loop with its error; a refusal in words (`error ...`, then the server
/// closes) ends it quietly unless it says it may pass; anything else is
/// retried with exponential backoff and jitter ([`Backoff`]).
pub fn run(first: First, options: &ClientOptions, settings: TerminalSettings) -> Result<(), Error> {
    let First {
        config,
        connected: first,
    } = first;
    // However this ends, a panic included, the terminal is given back as
    // it was: the editor may still be waiting for a key, in raw mode.
    let _terminal = TerminalGuard(rustix::termios::tcgetattr(io::stdin()).ok());
    let common = Arc::new(Common::new());
    let (printer_tx, printer_rx) = crossbeam_channel::bounded(1);
    {
        let common = Arc::clone(&common);
        let screen = settings.screen.clone();
        thread::Builder::new()
            .name("keyboard".into())
            .spawn(move || keyboard::keyboard(common, screen, printer_tx))?;
    }
    let printer = match printer_rx.recv() {
        Ok(Ok(printer)) => printer,
        Ok(Err(err)) => return Err(Error::Io(io::Error::other(err))),
        Err(_) => return Err(Error::Io(io::Error::other("the editor did not start"))),
    };
    let mut connections = ConnectionLoop {
        options,
        config,
        settings,
        common,
        printer,
        restorer: Restorer::new(&WORDING),
        last_words: Vec::new(),
    };
    let result = connections.run(first);
    let last_words = std::mem::take(&mut connections.last_words);
    drop(connections);
    drop(_terminal);
    let mut stdout = io::stdout();
    // The client is ending: a terminal that takes no output leaves
    // nowhere else to say these.
    for line in last_words {
        let _ = writeln!(stdout, "{line}");
    }
    let _ = stdout.flush();
    result
}

/// Gives the terminal back as it was when dropped, and clears the
/// prompt's row.
struct TerminalGuard(Option<rustix::termios::Termios>);

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        // On the way out, and only on a terminal: if it cannot be given
        // back, there is nowhere left to say so.
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                io::stdin(),
                rustix::termios::OptionalActions::Drain,
                saved,
            );
        }
        let mut stdout = io::stdout();
        let _ = write!(stdout, "{BRACKETED_PASTE_OFF}\r\x1b[2K");
        let _ = stdout.flush();
    }
}

/// Dials and shakes hands with `config`.
fn connect_once(config: &Arc<ClientConfig>, options: &ClientOptions) -> Result<Connected, Error> {
    let socket = client::dial(&options.addr, options.timeout)?;
    client::handshake(socket, Arc::clone(config), options)
}

/// How one connection ended.
enum Ending {
    /// The user left: the loop is over.
    Left,
    /// An `error` line, then the server closed: a refusal (nick already
    /// connected, a certificate name that is not a nick). Coming back
    /// would be refused again.
    Refused,
    /// Anything else that did not come from us: worth coming back.
    Dropped(String),
}

/// The calling thread's part: one connection after another.
struct ConnectionLoop<'a> {
    options: &'a ClientOptions,
    config: Arc<ClientConfig>,
    settings: TerminalSettings,
    common: Arc<Common>,
    printer: Box<dyn ExternalPrinter + Send>,
    /// Who we are and where, and getting them back on a new connection.
    restorer: Restorer,
    /// Lines to show after the terminal is given back (see
    /// [`ConnectionLoop::last_word`]).
    last_words: Vec<String>,
}

impl ConnectionLoop<'_> {
    fn run(&mut self, first: Connected) -> Result<(), Error> {
        let mut connected = first;
        let mut returning = false;
        loop {
            let reason = match self.connection(connected, returning)? {
                Ending::Left => return Ok(()),
                Ending::Refused => {
                    self.last_word("the server refused the connection; not reconnecting");
                    return Ok(());
                }
                Ending::Dropped(reason) => reason,
            };
            if !self.settings.reconnect {
                self.last_word(&format!("{reason}; not reconnecting (--no-reconnect)"));
                return Ok(());
            }
            match self.reconnect(reason)? {
                Some(next) => connected = next,
                None => return Ok(()),
            }
            returning = true;
        }
    }

    /// Waits and tries again until a connection is made, the user leaves
    /// (`None`), or a failure that trying again cannot mend.
    fn reconnect(&mut self, mut reason: String) -> Result<Option<Connected>, Error> {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        for attempt in 1u32.. {
            let delay = backoff.next_wait();
            self.note(&format!(
                "{reason}; reconnecting in {:.1} s (attempt {attempt})",
                delay.as_secs_f64()
            ));
            match self.common.leave_rx.recv_timeout(delay) {
                Err(RecvTimeoutError::Timeout) if !self.common.leaving() => {}
                _ => return Ok(None),
            }
            match connect_once(&self.config, self.options) {
                Ok(connected) => return Ok(Some(connected)),
                Err(err) if is_final(&err) => return Err(err),
                Err(err) => {
                    reason = format!("could not reconnect: {}", strip_controls(report(&err)))
                }
            }
        }
        unreachable!("attempts are counted in a u32")
    }

    /// One connection, from its first line to its end.
    fn connection(&mut self, connected: Connected, returning: bool) -> Result<Ending, Error> {
        let resumed = connected.resumed();
        let summary = connected.summary.clone();
        let (conn, socket) = connected.into_parts();
        let mut wiring = client::Wiring::start(conn, socket)?;
        let outbox = wiring.outbox.clone();

        let certificate = self.options.identity.is_some();
        let asked = self.settings.nick.as_deref();
        for line in self.restorer.begin(returning, certificate, asked) {
            send(&outbox, &line);
        }
        {
            let mut route = lock(&self.common.route);
            route.outbox = Some(outbox.clone());
            route.ready = self.restorer.is_done();
            if route.ready {
                for line in route.kept.drain(..) {
                    send(&outbox, &line);
                }
            }
            if route.leaving {
                // The user left while we were connecting.
                outbox.close();
            }
        }
        let greeting = if returning {
            let how = if resumed {
                "TLS session resumed"
            } else {
                "full handshake: the server did not resume the TLS session"
            };
            format!("reconnected to {} ({how})", self.options.addr)
        } else {
            summary
        };
        let result = self.read(&mut wiring.lines, &outbox, greeting);

        // This connection is over: typed lines wait for the next one.
        {
            let mut route = lock(&self.common.route);
            route.outbox = None;
            route.ready = false;
        }
        wiring.finish();
        result
    }

    /// Reads and shows lines until the connection ends. `greeting` is
    /// shown before the first line: only then is the client sure the
    /// server accepted it.
    fn read(
        &mut self,
        lines: &mut LineReader,
        outbox: &Outbox,
        greeting: String,
    ) -> Result<Ending, Error> {
        let mut greeting = Some(greeting);
        // The last line, if it was an error: whether it may pass.
        let mut last_error: Option<(String, bool)> = None;
        loop {
            let end = match lines.next_line() {
                Ok(frame) => {
                    if let Some(greeting) = greeting.take() {
                        self.note(&greeting);
                    }
                    match frame {
                        Frame::Line(line) => {
                            last_error = match ServerLine::parse(&line) {
                                Some(ServerLine::Error(why)) => {
                                    Some((why.to_string(), self.restorer.passes(why)))
                                }
                                _ => None,
                            };
                            self.take(&line, outbox);
                        }
                        Frame::TooLong => {
                            self.note("an over-long line from the server was dropped")
                        }
                        Frame::InvalidUtf8 => self.note("a line from the server was not UTF-8"),
                    }
                    continue;
                }
                Err(end) => end,
            };
            if self.common.leaving() {
                return Ok(Ending::Left);
            }
            return match end {
                // The server says when a refusal may pass (full, or too
                // many connections: often our own ghosts, which it drops
                // within two minutes): those are tried again.
                End::Closed => match last_error {
                    Some((why, true)) => Ok(Ending::Dropped(format!("refused for now ({why})"))),
                    Some(_) => Ok(Ending::Refused),
                    None => Ok(Ending::Dropped("the server closed the connection".into())),
                },
                End::Lost => Ok(Ending::Dropped("connection lost".into())),
                End::Failed(err) if end_is_tls(&err) => {
                    let name = self
                        .options
                        .server_name
                        .clone()
                        .unwrap_or_else(|| client::host_of(&self.options.addr).to_string());
                    Err(client::refusal_or(
                        End::Failed(err),
                        &self.options.addr,
                        &self.options.trust,
                        &name,
                    ))
                }
                End::Failed(err) => Ok(Ending::Dropped(format!("connection failed ({err})"))),
            };
        }
    }

    /// One server line: read its notice as a typed value, learn from it,
    /// move the restoring on, and show the line unless it is ours.
    fn take(&mut self, line: &str, outbox: &Outbox) {
        let parsed = ServerLine::parse(line);
        let notice = match parsed {
            Some(ServerLine::Notice(text)) => self.restorer.notice(text),
            _ => None,
        };
        let step = self.restorer.take(parsed.as_ref(), notice.as_ref());
        lock(&self.common.roster).learn(parsed.as_ref(), notice.as_ref());
        if let Some(note) = &step.note {
            self.note(note);
        }
        for line in &step.send {
            send(outbox, line);
        }
        if step.ready {
            // Back where we were: what was typed meanwhile goes first.
            // Back as someone else, or elsewhere: it stays with the user.
            let kept: Vec<String> = {
                let mut route = lock(&self.common.route);
                route.ready = true;
                route.kept.drain(..).collect()
            };
            for line in kept {
                match &step.not_as_typed {
                    None => send(outbox, &line),
                    Some(why) => self.note(&format!("not sent ({why}): {line}")),
                }
            }
        }
        if step.show {
            let shown = self.settings.screen.render(line);
            self.print(shown);
        }
    }

    /// A line of the client's own that ends the loop: shown once the
    /// terminal is given back, since the editor draws what it is handed
    /// only while it runs, and the loop is about to end it.
    fn last_word(&mut self, text: &str) {
        let shown = self.settings.screen.note(text);
        self.last_words.push(shown);
    }

    /// Shows a line of the client's own.
    fn note(&mut self, text: &str) {
        let shown = self.settings.screen.note(text);
        self.print(shown);
    }

    /// Prints above the prompt; or, once the editor has ended, as is.
    fn print(&mut self, mut text: String) {
        text.push('\n');
        if let Err(err) = self.printer.print(text) {
            log::debug!("printing failed: {err}");
        }
    }
}

/// Queues one of the client's own lines.
fn send(outbox: &Outbox, line: &str) {
    // Refused only once the writer has gone with the connection, whose end
    // the reading side meets by itself.
    let _ = outbox.push_waiting(format!("{line}\n").into());
}

/// True if a read failed in TLS itself: an alert from the server (our
/// certificate refused) or an error rustls raised.
fn end_is_tls(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// True for a connection failure that trying again will not mend: the
/// server's certificate was refused, or the options are wrong.
fn is_final(err: &Error) -> bool {
    match err {
        Error::Resolve { .. } | Error::Connect { .. } | Error::Io(_) => false,
        Error::Handshake { source, .. } => matches!(source, HandshakeError::Tls(_)),
        _ => true,
    }
}

//! The client for a person at a terminal: a line editor with a prompt,
//! history and Tab completion; each line shown once, when the server has
//! taken it; the local time in front of each line; and coming back by
//! itself when the connection drops.
//!
//! [`Connected::chat`](crate::client::Connected::chat) is the client for
//! pipes and scripts, and stays as it is. This module is chosen by the
//! `chat-client` binary only when standard input and output are both a
//! terminal with a size ([`is_screen`]).
//!
//! ## Three kinds of thread, and who owns what
//!
//! ```text
//!  keyboard thread                 calling thread (the "session")      writer thread
//!  ───────────────                 ──────────────────────────────      (one per connection)
//!  rustyline Editor ── a line ──>  Link: the current Outbox, or ──────> outbox::run_writer
//!  (prompt, history,               lines kept while there is none        ═══TLS═══> server
//!   Tab completion)                                                     
//!        ^                         LineReader <═══TLS═══ server
//!        │ printed above the        │ each line: track nick, room, secret and who is
//!        └── prompt (printer) <─────┘ here; hide what is ours; Screen renders the rest
//! ```
//!
//! - The **keyboard thread** owns the line editor (rustyline). It never
//!   touches a connection: it hands each line to the *link*, which the
//!   threads share under a mutex. So the input outlives connections: while
//!   one drops and the next is made, the editor goes on, and a line typed
//!   then waits in the link for the next connection (at most
//!   [`KEPT_WHILE_AWAY`] of them; past that a line is refused with a note:
//!   a bounded wait, and the user knows which lines were not kept).
//! - The **calling thread** runs the session: connect, read lines until the
//!   connection ends, decide whether to come back, wait, connect again. It
//!   owns the connection's reading half and the rustls `ClientConfig`, one
//!   for every attempt: its in-memory session store keeps the server's
//!   ticket, so a reconnect resumes the TLS session instead of a full
//!   handshake. It owns what the client knows of itself (nick, room, the
//!   secret from `/token`, kept in memory only and never shown) and prints
//!   every server line through rustyline's external printer, which clears
//!   the prompt and the half-typed line, prints, and draws them again.
//! - Each connection's **writer thread** owns its writing half, as in the
//!   pipe client ([`outbox`](crate::outbox)).
//!
//! When the session ends (the user left, the server refused us, the
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

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rustls::ClientConfig;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Editor, ExternalPrinter, Helper};
use unicode_width::UnicodeWidthStr;

use crate::client::{self, ClientOptions, Connected};
use crate::duplex::HandshakeError;
use crate::error::{report, Error};
use crate::line::{strip_controls, Frame};
use crate::line_reader::{End, LineReader};
use crate::outbox::Outbox;
use crate::protocol::{self, ServerLine};
use crate::screen::{self, Screen};
use crate::tls;

/// Lines typed while there is no connection, kept for the next one.
pub const KEPT_WHILE_AWAY: usize = 20;

/// The first wait before reconnecting; it doubles after each failure...
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// ...up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The prompt. The same always: rustyline measures a prompt when a line
/// starts, so one that named the room would still name the old one after
/// `/join`, until the next Enter; a wrong prompt is worse than a plain one.
const PROMPT: &str = "> ";

/// Turns bracketed paste off again, as rustyline would have on leaving
/// its editor; sent when the session ends while the editor still waits.
const BRACKETED_PASTE_OFF: &str = "\x1b[?2004l";

/// What the terminal client is asked to do, besides where to connect.
#[derive(Debug, Clone)]
pub struct Settings {
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
/// session with its error; a refusal in words (`error ...`, then the
/// server closes) ends it quietly; anything else is retried with
/// exponential backoff and jitter.
pub fn run(first: First, options: &ClientOptions, settings: Settings) -> Result<(), Error> {
    let First {
        config,
        connected: first,
    } = first;
    // However this ends, a panic included, the terminal is given back as
    // it was: the editor may still be waiting for a key, in raw mode.
    let _terminal = TerminalGuard(rustix::termios::tcgetattr(io::stdin()).ok());
    let shared = Arc::new(Shared::new());
    let (printer_tx, printer_rx) = crossbeam_channel::bounded(1);
    {
        let shared = Arc::clone(&shared);
        let screen = settings.screen.clone();
        thread::Builder::new()
            .name("keyboard".into())
            .spawn(move || keyboard(shared, screen, printer_tx))?;
    }
    let printer = match printer_rx.recv() {
        Ok(Ok(printer)) => printer,
        Ok(Err(err)) => return Err(Error::Io(io::Error::other(err))),
        Err(_) => return Err(Error::Io(io::Error::other("the editor did not start"))),
    };
    let mut session = Session {
        options,
        config,
        settings,
        shared,
        printer,
        me: Me::default(),
        last_words: Vec::new(),
    };
    let result = session.run(first);
    let last_words = std::mem::take(&mut session.last_words);
    drop(session);
    drop(_terminal);
    let mut stdout = io::stdout();
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

/// What the threads share: the current connection's outbox, and what the
/// keyboard thread needs to know of the session.
struct Shared {
    link: Mutex<Link>,
    /// Who is in the room, for Tab.
    roster: Arc<Mutex<Roster>>,
    /// The keyboard thread sends here when the user leaves, to wake a
    /// session waiting to reconnect.
    leave_tx: Sender<()>,
    leave_rx: Receiver<()>,
}

/// Where typed lines go.
#[derive(Default)]
struct Link {
    /// The current connection's outbox, if there is one.
    outbox: Option<Outbox>,
    /// True once the connection is back in its nick and room: until then
    /// typed lines wait in `kept`, so that none is said as a guest in the
    /// lobby.
    ready: bool,
    /// Lines typed while not ready, in order.
    kept: VecDeque<String>,
    /// The user has left (`bye`, `/quit`, end of input): do not come back.
    leaving: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every value here is whole between any two statements that could
    // panic; a panicking thread leaves nothing half done.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn new() -> Shared {
        let (leave_tx, leave_rx) = crossbeam_channel::bounded(1);
        Shared {
            link: Mutex::default(),
            roster: Arc::default(),
            leave_tx,
            leave_rx,
        }
    }

    fn leaving(&self) -> bool {
        lock(&self.link).leaving
    }

    /// Marks the session as ending, and wakes it if it waits.
    fn leave(&self, link: &mut Link) {
        link.leaving = true;
        let _ = self.leave_tx.try_send(());
    }

    /// A line the user typed: to the server now, or kept for later. Returns
    /// a note for the user when the line was kept or refused.
    fn send(&self, line: String) -> Option<String> {
        let mut link = lock(&self.link);
        if link.leaving {
            return None;
        }
        let leaves = says_goodbye(&line);
        if leaves {
            self.leave(&mut link);
        }
        if link.ready {
            if let Some(outbox) = link.outbox.clone() {
                drop(link);
                return match outbox.push_waiting(format!("{line}\n").into()) {
                    Ok(()) => None,
                    Err(_) => Some("the connection just dropped; that line was not sent".into()),
                };
            }
        }
        if leaves {
            // Away, or still restoring the nick and room: there is no one
            // to say goodbye to, or no need to; closing is the goodbye.
            if let Some(outbox) = &link.outbox {
                outbox.close();
            }
            return None;
        }
        if link.kept.len() >= KEPT_WHILE_AWAY {
            return Some(format!(
                "not connected, and {KEPT_WHILE_AWAY} lines wait already: this one was not kept"
            ));
        }
        link.kept.push_back(line);
        let waiting = link.kept.len();
        Some(match link.outbox {
            None => format!("not connected: kept, to be sent once back ({waiting} waiting)"),
            Some(_) => {
                format!("kept until the nick and room are back, then sent ({waiting} waiting)")
            }
        })
    }

    /// The user's input ended: close the connection, and do not come back.
    fn end_of_input(&self) {
        let mut link = lock(&self.link);
        self.leave(&mut link);
        if let Some(outbox) = &link.outbox {
            outbox.close();
        }
    }
}

/// True for the lines after which the server says goodbye and closes.
fn says_goodbye(line: &str) -> bool {
    let line = line.trim();
    line.eq_ignore_ascii_case("bye") || line == "/quit" || line.starts_with("/quit ")
}

/// The keyboard thread: the editor, until the user leaves.
fn keyboard(
    shared: Arc<Shared>,
    screen: Screen,
    printer_tx: Sender<Result<Box<dyn ExternalPrinter + Send>, ReadlineError>>,
) {
    let config = Config::builder()
        .auto_add_history(true)
        .history_ignore_dups(true)
        .and_then(|builder| builder.max_history_size(500))
        .map(|builder| {
            builder
                .completion_type(CompletionType::List)
                .check_cursor_position(false)
                .build()
        });
    let editor = config.and_then(Editor::<Completion, DefaultHistory>::with_config);
    let mut editor = match editor {
        Ok(editor) => editor,
        Err(err) => {
            let _ = printer_tx.send(Err(err));
            return;
        }
    };
    editor.set_helper(Some(Completion {
        roster: Arc::clone(&shared.roster),
    }));
    match editor.create_external_printer() {
        Ok(printer) => {
            let printer: Box<dyn ExternalPrinter + Send> = Box::new(printer);
            if printer_tx.send(Ok(printer)).is_err() {
                return;
            }
        }
        Err(err) => {
            let _ = printer_tx.send(Err(err));
            return;
        }
    }
    loop {
        let read = editor.readline(PROMPT);
        let typed = read.as_deref().unwrap_or("");
        erase_typed(PROMPT, typed);
        match read {
            Ok(line) => {
                // The editor only lets through what was typed; a pasted
                // control character is the server's to refuse, not ours
                // to send to the others' terminals either way.
                let line = strip_controls(line);
                if line.trim().is_empty() {
                    continue;
                }
                let leaves = says_goodbye(&line);
                if let Some(note) = shared.send(line) {
                    let mut stdout = io::stdout();
                    let _ = writeln!(stdout, "{}", screen.note(&note));
                    let _ = stdout.flush();
                }
                if leaves {
                    return;
                }
            }
            // Ctrl-D on an empty line, Ctrl-C: leave, as at the end of a
            // pipe's input.
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => break,
            Err(err) => {
                log::warn!("the line editor failed: {err}");
                break;
            }
        }
        if shared.leaving() {
            return;
        }
    }
    shared.end_of_input();
}

/// Erases the prompt and the line just typed, which the editor leaves on
/// the screen with the cursor on the row below: the server's echo will
/// show it, once. The line took `width / columns + 1` rows: when it fills
/// its last row exactly, the cursor has gone on to an empty row.
fn erase_typed(prompt: &str, typed: &str) {
    let columns = columns().unwrap_or(80);
    let width = prompt.width() + typed.width();
    let rows = width / columns + 1;
    let mut stdout = io::stdout();
    let _ = write!(stdout, "{}\r", "\x1b[1A\x1b[2K".repeat(rows));
    let _ = stdout.flush();
}

/// Tab: commands at the start of a line, nicks elsewhere.
struct Completion {
    roster: Arc<Mutex<Roster>>,
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos].rfind(' ').map_or(0, |space| space + 1);
        let word = &line[start..pos];
        let candidates = if start == 0 && word.starts_with('/') {
            command_candidates(word)
        } else {
            lock(&self.roster).starting_with(word)
        };
        let pairs = candidates
            .into_iter()
            .map(|name| Pair {
                display: name.clone(),
                replacement: format!("{name} "),
            })
            .collect();
        Ok((start, pairs))
    }
}

/// The commands whose names start with `prefix`.
fn command_candidates(prefix: &str) -> Vec<String> {
    protocol::COMMANDS
        .iter()
        .map(|info| info.name)
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

/// The nicks of the room, as learnt from what arrives: senders, arrivals,
/// departures, renames and `/who` answers. No request of its own: it may
/// miss someone who has said nothing since we came, until the next `/who`.
#[derive(Debug, Default)]
struct Roster {
    /// By lower case, as the server compares them; the value as spelled.
    nicks: BTreeMap<String, String>,
}

impl Roster {
    fn add(&mut self, nick: &str) {
        if !nick.is_empty() && !nick.contains(' ') {
            self.nicks
                .insert(nick.to_ascii_lowercase(), nick.to_string());
        }
    }

    fn remove(&mut self, nick: &str) {
        self.nicks.remove(&nick.to_ascii_lowercase());
    }

    /// The nicks that start with `prefix`, in any case.
    fn starting_with(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.to_ascii_lowercase();
        self.nicks
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(_, nick)| nick.clone())
            .collect()
    }

    /// Learns from one server line.
    fn learn(&mut self, line: &ServerLine<'_>) {
        match line {
            ServerLine::Chat { from, .. } | ServerLine::Action { from, .. } => self.add(from),
            ServerLine::Private { from, to, .. } => {
                self.add(from);
                self.add(to);
            }
            ServerLine::Notice(text) => self.learn_notice(text),
            _ => {}
        }
    }

    fn learn_notice(&mut self, text: &str) {
        if text.starts_with("you are in ") {
            // Another room: other people.
            self.nicks.clear();
        } else if let Some(list) = text.strip_prefix("in #") {
            // `/who`: "in #room (N): a, b" or "in #room (N), 1 to 100: a, b, ...; /who 2 for more"
            if let Some((_, names)) = list.split_once(": ") {
                let names = names.split_once(';').map_or(names, |(names, _more)| names);
                for name in names.split(", ") {
                    if name != "..." {
                        self.add(name);
                    }
                }
            }
        } else if let Some((old, new)) = text.split_once(" is now ") {
            self.remove(old);
            self.add(new);
        } else if let Some((nick, _room)) = text.split_once(" joined #") {
            self.add(nick);
        } else if let Some((nick, _room)) = text.split_once(" left #") {
            self.remove(nick);
        } else if let Some(nick) = text
            .strip_suffix(" quit")
            .or_else(|| text.split_once(" quit: ").map(|(nick, _)| nick))
        {
            self.remove(nick);
        }
    }
}

/// What the client knows of itself, to come back as the same person.
#[derive(Default)]
struct Me {
    /// The nick and room to come back to: the last ones known while not
    /// restoring (a reconnect's guest name of a moment is not one).
    nick: Option<String>,
    room: Option<String>,
    /// The nick and room the server last said this connection has.
    nick_now: Option<String>,
    room_now: Option<String>,
    /// The secret from `token NICK SECRET`, for that nick; memory only.
    secret: Option<(String, String)>,
}

/// Where a new connection is in getting back its nick and room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restore {
    /// Back (or never away): typed lines go straight out.
    Done,
    /// `/reclaim` sent: waiting for `you are NICK again` or the refusal.
    Reclaim,
    /// Reclaimed: the next `you are in #ROOM` says where we are.
    RoomAfterReclaim,
    /// `/nick NICK` sent after a refused reclaim: waiting for its answer.
    Nick,
    /// With a certificate: the greeting's `you are in #ROOM` says where.
    Greeting,
    /// `/join #ROOM` sent: waiting for its answer.
    Join,
}

/// How one connection ended.
enum Ending {
    /// The user left: the session is over.
    Left,
    /// An `error` line, then the server closed: a refusal (server full,
    /// nick already connected, too many sessions). Coming back would be
    /// refused again.
    Refused,
    /// Anything else that did not come from us: worth coming back.
    Dropped(String),
}

/// The calling thread's part: one connection after another.
struct Session<'a> {
    options: &'a ClientOptions,
    config: Arc<ClientConfig>,
    settings: Settings,
    shared: Arc<Shared>,
    printer: Box<dyn ExternalPrinter + Send>,
    me: Me,
    /// Lines to show after the terminal is given back (see
    /// [`Session::last_word`]).
    last_words: Vec<String>,
}

impl Session<'_> {
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
        let mut rng = Jitter::new();
        for attempt in 1u32.. {
            let delay = backoff(attempt, rng.next());
            self.note(&format!(
                "{reason}; reconnecting in {:.1} s (attempt {attempt})",
                delay.as_secs_f64()
            ));
            match self.shared.leave_rx.recv_timeout(delay) {
                Err(RecvTimeoutError::Timeout) if !self.shared.leaving() => {}
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

        self.me.nick_now = None;
        self.me.room_now = None;
        let mut restore = self.start(&outbox, returning);
        {
            let mut link = lock(&self.shared.link);
            link.outbox = Some(outbox.clone());
            link.ready = restore == Restore::Done;
            if link.ready {
                for line in link.kept.drain(..) {
                    send(&outbox, &line);
                }
            }
            if link.leaving {
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
        let result = self.read(&mut wiring.lines, &outbox, &mut restore, greeting);

        // This connection is over: typed lines wait for the next one.
        {
            let mut link = lock(&self.shared.link);
            link.outbox = None;
            link.ready = false;
        }
        wiring.finish();
        result
    }

    /// The first lines of a connection, ours: on the first one, `/nick`
    /// if asked and `/token`; on a later one, whatever takes back the nick
    /// and the room. Returns where the restoring starts.
    fn start(&mut self, outbox: &Outbox, returning: bool) -> Restore {
        let certified = self.options.identity.is_some();
        if !returning {
            if let Some(nick) = &self.settings.nick {
                send(outbox, &format!("/nick {nick}"));
            }
            if !certified {
                send(outbox, "/token");
            }
            return Restore::Done;
        }
        if certified {
            // The certificate is the nick; the server puts the new session
            // where the person is, or in the lobby if nobody held it.
            return Restore::Greeting;
        }
        match (&self.me.secret, &self.me.nick) {
            (Some((for_nick, secret)), Some(nick)) if for_nick.eq_ignore_ascii_case(nick) => {
                send(outbox, &format!("/reclaim {nick} {secret}"));
                Restore::Reclaim
            }
            (_, Some(nick)) => {
                let nick = nick.clone();
                send(outbox, &format!("/nick {nick}"));
                send(outbox, "/token");
                Restore::Nick
            }
            _ => {
                send(outbox, "/token");
                Restore::Done
            }
        }
    }

    /// Reads and shows lines until the connection ends. `greeting` is
    /// shown before the first line: only then is the client sure the
    /// server accepted it.
    fn read(
        &mut self,
        lines: &mut LineReader,
        outbox: &Outbox,
        restore: &mut Restore,
        greeting: String,
    ) -> Result<Ending, Error> {
        let mut greeting = Some(greeting);
        let mut last_error: Option<String> = None;
        loop {
            let end = match lines.next_line() {
                Ok(frame) => {
                    if let Some(greeting) = greeting.take() {
                        self.note(&greeting);
                    }
                    match frame {
                        Frame::Line(line) => {
                            last_error = line.strip_prefix("error ").map(str::to_string);
                            self.take(&line, outbox, restore);
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
            if self.shared.leaving() {
                return Ok(Ending::Left);
            }
            return match end {
                // The server says when a refusal may pass (full, or too
                // many connections: often our own ghosts, which it drops
                // within two minutes): those are tried again.
                End::Closed => match last_error {
                    Some(why) if why.contains("try again") => {
                        Ok(Ending::Dropped(format!("refused for now ({why})")))
                    }
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

    /// One server line: learn from it, move the restoring on, and show it
    /// unless it is ours.
    fn take(&mut self, line: &str, outbox: &Outbox, restore: &mut Restore) {
        let parsed = ServerLine::parse(line);
        let mut show = true;
        match parsed {
            Some(ServerLine::Token { nick, secret }) => {
                self.me.secret = Some((nick.to_string(), secret.to_string()));
                show = false;
            }
            Some(ServerLine::Notice(text)) => {
                if let Some(nick) = screen::own_nick_in(text) {
                    self.me.nick_now = Some(nick.to_string());
                }
                let room = text
                    .strip_prefix("you are in ")
                    .and_then(|rest| rest.split(' ').next());
                if let Some(room) = room {
                    self.me.room_now = Some(room.to_string());
                }
                if *restore == Restore::Done {
                    self.me.nick.clone_from(&self.me.nick_now);
                    self.me.room.clone_from(&self.me.room_now);
                }
                self.restoring_notice(text, room, outbox, restore);
            }
            Some(ServerLine::Error(text)) => {
                if *restore == Restore::Reclaim && text.starts_with("cannot reclaim ") {
                    show = false;
                    let nick = self.me.nick.clone().unwrap_or_default();
                    self.note(&format!(
                        "{nick} could not be taken back (the server forgot it): asking for it again"
                    ));
                    send(outbox, &format!("/nick {nick}"));
                    send(outbox, "/token");
                    *restore = Restore::Nick;
                } else if *restore != Restore::Done {
                    // The nick is taken, the room refused, or anything else
                    // unexpected: the user sees why, and goes on from where
                    // the server put us, rather than wait for an answer
                    // that will not come.
                    self.finish_restoring(outbox, restore);
                }
            }
            _ => {}
        }
        if let Some(parsed) = &parsed {
            lock(&self.shared.roster).learn(parsed);
        }
        if show {
            let shown = self.settings.screen.render(line);
            self.print(shown);
        }
    }

    /// Moves the restoring on after a notice; `room` is set for `you are
    /// in #ROOM`.
    fn restoring_notice(
        &mut self,
        text: &str,
        room: Option<&str>,
        outbox: &Outbox,
        restore: &mut Restore,
    ) {
        match *restore {
            Restore::Done => {}
            Restore::Reclaim if self.is_me(text, "you are ", " again") => {
                *restore = Restore::RoomAfterReclaim;
            }
            // The nick was ours already (a restarted server gave this
            // connection the same guest number): nothing to take back.
            Restore::Reclaim if self.is_me(text, "you are already ", "") => {
                self.back_to_room(None, outbox, restore);
            }
            Restore::Nick
                if text.starts_with("you are now ") || text.starts_with("you are already ") =>
            {
                self.back_to_room(None, outbox, restore);
            }
            Restore::RoomAfterReclaim | Restore::Greeting if room.is_some() => {
                self.back_to_room(room, outbox, restore);
            }
            Restore::Join if room.is_some() || text.starts_with("you are already in ") => {
                self.finish_restoring(outbox, restore);
            }
            _ => {}
        }
    }

    /// True if `text` is `before` our nick `after`, exactly (nicks
    /// compared as the server does, ignoring case).
    fn is_me(&self, text: &str, before: &str, after: &str) -> bool {
        let nick = text
            .strip_prefix(before)
            .and_then(|rest| rest.strip_suffix(after));
        match (nick, &self.me.nick) {
            (Some(nick), Some(me)) => nick.eq_ignore_ascii_case(me),
            _ => false,
        }
    }

    /// Joins the room we were in, unless `here` (by default, where the
    /// server last said we are) is that room.
    fn back_to_room(&mut self, here: Option<&str>, outbox: &Outbox, restore: &mut Restore) {
        let here = here
            .or(self.me.room_now.as_deref())
            .unwrap_or(protocol::LOBBY)
            .to_string();
        match &self.me.room {
            Some(room) if !room.eq_ignore_ascii_case(&here) => {
                send(outbox, &format!("/join {room}"));
                *restore = Restore::Join;
            }
            _ => self.finish_restoring(outbox, restore),
        }
    }

    /// Back where we were (or as near as the server let us): this is who
    /// we come back as next time; send what was typed meanwhile.
    fn finish_restoring(&mut self, outbox: &Outbox, restore: &mut Restore) {
        *restore = Restore::Done;
        self.me.nick.clone_from(&self.me.nick_now);
        self.me.room.clone_from(&self.me.room_now);
        let mut link = lock(&self.shared.link);
        link.ready = true;
        for line in link.kept.drain(..) {
            send(outbox, &line);
        }
    }

    /// A line of the client's own that ends the session: shown once the
    /// terminal is given back, since the editor draws what it is handed
    /// only while it runs, and the session is about to end it.
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

/// The wait before attempt `attempt` (from 1): [`FIRST_BACKOFF`] doubling
/// up to [`MAX_BACKOFF`], then moved by up to 25 % either way by `jitter`
/// (0 to 1), so that the clients of a restarted server do not all come
/// back in the same instant.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let base = doubled.min(MAX_BACKOFF);
    base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Numbers from 0 to 1 for [`backoff`]'s jitter. std's hasher keys are
/// random for each process, which is all the randomness jitter needs.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u8(0);
        Jitter(hasher.finish() | 1)
    }

    /// The next number (xorshift).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_limit_within_a_quarter() {
        assert_eq!(backoff(1, 0.5), Duration::from_millis(500));
        assert_eq!(backoff(2, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(3, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(8, 0.5), MAX_BACKOFF);
        assert_eq!(backoff(1000, 0.5), MAX_BACKOFF);
        assert_eq!(backoff(2, 0.0), Duration::from_millis(750));
        assert_eq!(backoff(2, 1.0), Duration::from_millis(1250));
        let mut jitter = Jitter::new();
        for _ in 0..1000 {
            let x = jitter.next();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }

    #[test]
    fn goodbyes_are_recognised() {
        for line in ["bye", "BYE ", "/quit", "/quit lunch"] {
            assert!(says_goodbye(line), "{line}");
        }
        for line in ["byebye", "/quitter", "hello bye"] {
            assert!(!says_goodbye(line), "{line}");
        }
    }

    #[test]
    fn commands_complete_by_prefix() {
        assert_eq!(command_candidates("/jo"), ["/join"]);
        assert_eq!(command_candidates("/who"), ["/who", "/whois"]);
        assert!(command_candidates("/x").is_empty());
    }

    #[test]
    fn the_roster_follows_the_room() {
        let mut roster = Roster::default();
        for line in [
            "notice in #lobby (3): alice, bob, Carol",
            "chat dave hi",
            "notice erin joined #lobby",
            "notice bob is now robert",
            "notice alice quit: lunch",
            "notice dave quit",
            "notice erin left #lobby",
        ] {
            roster.learn(&ServerLine::parse(line).unwrap());
        }
        assert_eq!(roster.starting_with(""), ["Carol", "robert"]);
        assert_eq!(roster.starting_with("c"), ["Carol"]);
        roster.learn(
            &ServerLine::parse("notice in #big (2500), 1 to 100: x, y; /who 2 for more").unwrap(),
        );
        assert_eq!(roster.starting_with("x"), ["x"]);
        assert_eq!(roster.starting_with("y"), ["y"]);
        roster.learn(&ServerLine::parse("notice you are in #rust (1 person here)").unwrap());
        assert!(roster.starting_with("").is_empty());
    }
}

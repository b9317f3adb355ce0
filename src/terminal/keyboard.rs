//! The keyboard thread: the line editor (rustyline) and where each typed
//! line goes, the current connection's outbox or a short wait for the next
//! one. It never touches a connection itself, and knows nothing of what the
//! server says (that is the connection loop's, in the module above).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Config, Editor, ExternalPrinter};
use unicode_width::UnicodeWidthStr;

use super::completion::{Completion, Roster};
use super::{columns, KEPT_WHILE_AWAY};
use crate::line::strip_controls;
use crate::outbox::Outbox;
use crate::screen::Screen;
// Every value the terminal's locks guard is whole between any two
// statements that could panic: a panicking thread leaves nothing half done.
pub(super) use crate::sync::lock;

/// The prompt. The same always: rustyline measures a prompt when a line
/// starts, so one that named the room would still name the old one after
/// `/join`, until the next Enter; a wrong prompt is worse than a plain one.
const PROMPT: &str = "> ";

/// What the keyboard thread and the connection loop have in common: where
/// typed lines go, who is in the room (for Tab), and a way to wake the
/// loop when the user leaves.
pub(super) struct Common {
    pub(super) route: Mutex<Route>,
    /// Who is in the room, for Tab.
    pub(super) roster: Arc<Mutex<Roster>>,
    /// The keyboard thread sends here when the user leaves, to wake a
    /// loop waiting to reconnect.
    leave_tx: Sender<()>,
    pub(super) leave_rx: Receiver<()>,
}

/// Where typed lines go.
#[derive(Default)]
pub(super) struct Route {
    /// The current connection's outbox, if there is one.
    pub(super) outbox: Option<Outbox>,
    /// True once the connection is back in its nick and room: until then
    /// typed lines wait in `kept`, so that none is said as a guest in the
    /// lobby.
    pub(super) ready: bool,
    /// Lines typed while not ready, in order.
    pub(super) kept: VecDeque<String>,
    /// The user has left (`bye`, `/quit`, end of input): do not come back.
    pub(super) leaving: bool,
}

impl Common {
    pub(super) fn new() -> Common {
        let (leave_tx, leave_rx) = crossbeam_channel::bounded(1);
        Common {
            route: Mutex::default(),
            roster: Arc::default(),
            leave_tx,
            leave_rx,
        }
    }

    pub(super) fn leaving(&self) -> bool {
        lock(&self.route).leaving
    }

    /// Marks the session as ending, and wakes the loop if it waits.
    fn leave(&self, route: &mut Route) {
        route.leaving = true;
        // Full means a wake-up already waits, and one is enough.
        let _ = self.leave_tx.try_send(());
    }

    /// A line the user typed: to the server now, or kept for later. Returns
    /// a note for the user when the line was kept or refused.
    fn send(&self, line: String) -> Option<String> {
        let mut route = lock(&self.route);
        if route.leaving {
            return None;
        }
        let leaves = says_goodbye(&line);
        if leaves {
            self.leave(&mut route);
        }
        if route.ready {
            if let Some(outbox) = route.outbox.clone() {
                drop(route);
                return match outbox.push_waiting(format!("{line}\n").into()) {
                    Ok(()) => None,
                    Err(_) => Some("the connection just dropped; that line was not sent".into()),
                };
            }
        }
        if leaves {
            // Away, or still restoring the nick and room: there is no one
            // to say goodbye to, or no need to; closing is the goodbye.
            if let Some(outbox) = &route.outbox {
                outbox.close();
            }
            return None;
        }
        if route.kept.len() >= KEPT_WHILE_AWAY {
            return Some(format!(
                "not connected, and {KEPT_WHILE_AWAY} lines wait already: this one was not kept"
            ));
        }
        route.kept.push_back(line);
        let waiting = route.kept.len();
        Some(match route.outbox {
            None => format!("not connected: kept, to be sent once back ({waiting} waiting)"),
            Some(_) => {
                format!("kept until the nick and room are back, then sent ({waiting} waiting)")
            }
        })
    }

    /// The user's input ended: close the connection, and do not come back.
    fn end_of_input(&self) {
        let mut route = lock(&self.route);
        self.leave(&mut route);
        if let Some(outbox) = &route.outbox {
            outbox.close();
        }
    }
}

/// True for the lines after which the server says goodbye and closes.
fn says_goodbye(line: &str) -> bool {
    let line = line.trim();
    line.eq_ignore_ascii_case("bye") || line == "/quit" || line.starts_with("/quit ")
}

/// The keyboard thread: the editor, until the user leaves. The editor's
/// printer goes to the connection loop through `printer_tx` first.
pub(super) fn keyboard(
    common: Arc<Common>,
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
            // The connection loop waits for this answer; if it has gone,
            // nobody is left to tell.
            let _ = printer_tx.send(Err(err));
            return;
        }
    };
    editor.set_helper(Some(Completion::new(Arc::clone(&common.roster))));
    match editor.create_external_printer() {
        Ok(printer) => {
            let printer: Box<dyn ExternalPrinter + Send> = Box::new(printer);
            if printer_tx.send(Ok(printer)).is_err() {
                return;
            }
        }
        Err(err) => {
            // As above: nobody is left to tell if the loop has gone.
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
                if let Some(note) = common.send(line) {
                    let mut stdout = io::stdout();
                    // A terminal that takes no output leaves no way to
                    // tell the user anything; the editor goes on.
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
        if common.leaving() {
            return;
        }
    }
    common.end_of_input();
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
    // Cosmetic: if the terminal takes no output, the line simply stays.
    let _ = write!(stdout, "{}\r", "\x1b[1A\x1b[2K".repeat(rows));
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn lines_wait_while_away_up_to_a_limit_and_go_once_ready() {
        let common = Common::new();
        let note = common.send("hello".into()).unwrap();
        assert!(note.starts_with("not connected: kept"), "{note}");
        for n in 2..=KEPT_WHILE_AWAY {
            assert!(common.send(format!("line {n}")).is_some());
        }
        let refused = common.send("one too many".into()).unwrap();
        assert!(refused.contains("was not kept"), "{refused}");
        assert_eq!(lock(&common.route).kept.len(), KEPT_WHILE_AWAY);
        assert_eq!(lock(&common.route).kept[0], "hello");
        // Leaving while away closes nothing and wakes the loop.
        assert_eq!(common.send("bye".into()), None);
        assert!(common.leaving());
        assert!(common.leave_rx.try_recv().is_ok());
        assert_eq!(common.send("after".into()), None);
    }
}

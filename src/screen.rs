//! How server lines look on a person's screen: a mark per kind of line,
//! colours and the local time when wanted. Pure text in, text out (so
//! unit-tested). The only escape sequences are the colours added here:
//! lines arrive with their control characters removed ([`crate::line`]).
//!
//! Next: [`terminal`](crate::terminal), the client for a person at a
//! terminal; or the tour's optional last step, `linked`.

use crate::protocol::{Notice, ServerLine};

/// ANSI colour codes: `ESC [ n m`.
const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const MAGENTA: &str = "\x1b[35m";

/// Colours for other people's nicks; a nick always gets the same one, so
/// a conversation is easy to follow. Red is left for errors, green for you.
const NICK_COLOURS: [&str; 6] = [
    "\x1b[33m", // yellow
    "\x1b[34m", // blue
    "\x1b[36m", // cyan
    "\x1b[93m", // bright yellow
    "\x1b[94m", // bright blue
    "\x1b[96m", // bright cyan
];

/// Turns server lines into screen lines, remembering who "you" are.
#[derive(Debug, Clone, Default)]
pub struct Screen {
    colour: bool,
    /// Put the local time (`HH:MM`) in front of each line.
    timestamps: bool,
    /// Learnt from the server's notices of who this client is
    /// ([`Notice::YouAre`] and the like).
    own_nick: Option<String>,
}

impl Screen {
    /// A screen that colours its lines if `colour` is true.
    pub fn new(colour: bool) -> Screen {
        Screen {
            colour,
            timestamps: false,
            own_nick: None,
        }
    }

    /// The same screen, with the local time in front of each line if `on`.
    pub fn with_timestamps(mut self, on: bool) -> Screen {
        self.timestamps = on;
        self
    }

    /// Whether colours should be used: only on a terminal, and never when
    /// `NO_COLOR` is set to something (see no-color.org).
    pub fn wants_colour(is_terminal: bool, no_color: Option<&str>) -> bool {
        is_terminal && no_color.is_none_or(str::is_empty)
    }

    /// The nick the server says this client has, once it has said so.
    pub fn own_nick(&self) -> Option<&str> {
        self.own_nick.as_deref()
    }

    /// How one line from the server is shown.
    pub fn render(&mut self, line: &str) -> String {
        let parsed = ServerLine::parse(line);
        if let Some(ServerLine::Notice(text)) = parsed {
            self.learn(text);
        }
        let shown = match parsed {
            Some(ServerLine::History(inner)) => self.render_history(inner),
            parsed => self.render_kind(parsed, line),
        };
        self.stamp_now(shown)
    }

    /// A line said before this client joined the room, dimmed as a whole.
    fn render_history(&self, inner: &str) -> String {
        let shown = self.render_kind(ServerLine::parse(inner), inner);
        self.paint(DIM, &format!("[history] {}", strip_colours(&shown)))
    }

    /// Learns this client's nick from the notices that say it.
    fn learn(&mut self, notice: &str) {
        if let Some(nick) = Notice::parse(notice).as_ref().and_then(own_nick) {
            self.own_nick = Some(nick.to_string());
        }
    }

    /// How a line of the client's own is shown (a reconnect, a line kept
    /// for later): dimmed, after `--- `, which no server line starts with.
    pub fn note(&self, text: &str) -> String {
        self.stamp_now(self.paint(DIM, &format!("--- {text}")))
    }

    /// The line with the time now in front, if times are on; the clock
    /// (and its time zone lookup) is read only then.
    fn stamp_now(&self, line: String) -> String {
        if self.timestamps {
            self.stamp(line, &clock())
        } else {
            line
        }
    }

    fn stamp(&self, line: String, clock: &str) -> String {
        if self.timestamps {
            format!("{} {line}", self.paint(DIM, clock))
        } else {
            line
        }
    }

    fn render_kind(&self, parsed: Option<ServerLine<'_>>, raw: &str) -> String {
        match parsed {
            Some(ServerLine::Chat { from, text }) => format!("<{}> {text}", self.nick(from)),
            Some(ServerLine::Action { from, text }) => format!("* {} {text}", self.nick(from)),
            Some(ServerLine::Private { from, to, text }) => {
                let head = format!("[{from} -> {to}]");
                format!("{} {text}", self.paint(MAGENTA, &head))
            }
            Some(ServerLine::Notice(text)) => self.paint(DIM, &format!("*** {text}")),
            Some(ServerLine::Error(text)) => {
                self.paint(&format!("{BOLD}{RED}"), &format!("!!! {text}"))
            }
            // The secret itself is never shown: it would end up in
            // scrollback and screenshots. The client keeps it.
            Some(ServerLine::Token { nick, .. }) => self.paint(
                DIM,
                &format!("*** the server gave a secret to take {nick} back after a drop"),
            ),
            // Nested history does not occur; show it as it came.
            Some(ServerLine::History(_)) | None => raw.to_string(),
        }
    }

    fn nick(&self, nick: &str) -> String {
        if self.own_nick.as_deref() == Some(nick) {
            self.paint(&format!("{BOLD}{GREEN}"), nick)
        } else {
            // A small stable hash: the same nick, the same colour.
            let hash = nick
                .bytes()
                .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
            self.paint(NICK_COLOURS[hash % NICK_COLOURS.len()], nick)
        }
    }

    fn paint(&self, colour: &str, text: &str) -> String {
        if self.colour {
            format!("{colour}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

/// The nick a notice says is this client's: on arrival, after `/nick`,
/// after `/reclaim`, or as one more session of a certificate's person.
fn own_nick<'a>(notice: &Notice<'a>) -> Option<&'a str> {
    match *notice {
        Notice::YouAre { nick, .. } | Notice::YouAreNow { nick } | Notice::YouAreBack { nick } => {
            Some(nick)
        }
        _ => None,
    }
}

/// The local time as `HH:MM`. jiff finds the time zone as the C library
/// would (`TZ`, else /etc/localtime), reading the zone files itself; a
/// machine without any gets UTC.
fn clock() -> String {
    let now = jiff::ZonedDateTime::now();
    format!("{:02}:{:02}", now.hour(), now.minute())
}

/// Removes the colours this module adds, so a history line can be shown
/// dimmed as a whole.
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('\x1b') {
        out.push_str(&rest[..start]);
        match rest[start..].find('m') {
            Some(end) => rest = &rest[start + end + 1..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(lines: &[&str]) -> Vec<String> {
        let mut screen = Screen::new(false);
        lines.iter().map(|line| screen.render(line)).collect()
    }

    #[test]
    fn each_kind_has_its_mark() {
        assert_eq!(
            plain(&[
                "chat bob hi there",
                "action bob waves",
                "private bob alice psst",
                "notice Welcome",
                "error nope",
                "history chat bob earlier",
                "history action bob waved",
                "something else",
            ]),
            [
                "<bob> hi there",
                "* bob waves",
                "[bob -> alice] psst",
                "*** Welcome",
                "!!! nope",
                "[history] <bob> earlier",
                "[history] * bob waved",
                "something else",
            ]
        );
    }

    #[test]
    fn no_colour_means_no_escape_at_all() {
        for line in plain(&[
            "chat bob hi",
            "error x",
            "notice you are bob",
            "chat bob hi",
        ]) {
            assert!(!line.contains('\x1b'), "{line:?}");
        }
    }

    #[test]
    fn colours_mark_kinds_and_own_nick() {
        let mut screen = Screen::new(true);
        assert_eq!(
            screen.render("notice you are alice"),
            format!("{DIM}*** you are alice{RESET}")
        );
        assert_eq!(screen.own_nick(), Some("alice"));
        let own = screen.render("chat alice hello");
        assert_eq!(own, format!("<{BOLD}{GREEN}alice{RESET}> hello"));
        let other = screen.render("chat bob hello");
        assert!(
            other.starts_with("<\x1b[") && !other.contains(GREEN),
            "{other:?}"
        );
        assert_eq!(
            screen.render("chat bob again"),
            other.replace("hello", "again")
        );
        assert_eq!(
            screen.render("error bad"),
            format!("{BOLD}{RED}!!! bad{RESET}")
        );
        assert!(screen.render("private bob alice x").starts_with(MAGENTA));
        let history = screen.render("history chat bob old");
        assert_eq!(history, format!("{DIM}[history] <bob> old{RESET}"));
    }

    #[test]
    fn nick_changes_are_followed() {
        let mut screen = Screen::new(false);
        screen.render("notice you are guest1");
        screen.render("notice you are now alice");
        assert_eq!(screen.own_nick(), Some("alice"));
        // Other notices that start alike do not change it.
        screen.render("notice you are in #lobby (2 people here)");
        assert_eq!(screen.own_nick(), Some("alice"));
    }

    #[test]
    fn own_nick_is_read_from_every_form_of_notice() {
        for (notice, nick) in [
            ("you are guest1", Some("guest1")),
            ("you are now alice", Some("alice")),
            ("you are alice again", Some("alice")),
            ("you are alice (2 sessions)", Some("alice")),
            ("you are in #lobby (2 people here)", None),
            ("you are already in #lobby", None),
            ("you are sending too fast", None),
        ] {
            let read = Notice::parse(notice);
            assert_eq!(read.as_ref().and_then(own_nick), nick, "{notice}");
        }
    }

    #[test]
    fn timestamps_come_first_and_only_when_asked() {
        let plain = Screen::new(false);
        assert_eq!(plain.stamp("x".into(), "12:34"), "x");
        let stamped = Screen::new(false).with_timestamps(true);
        assert_eq!(stamped.stamp("x".into(), "12:34"), "12:34 x");
        let coloured = Screen::new(true).with_timestamps(true);
        assert_eq!(
            coloured.stamp("x".into(), "09:05"),
            format!("{DIM}09:05{RESET} x")
        );
        // The real clock: five characters, HH:MM.
        let line = stamped.clone().render("notice hi");
        let (time, rest) = line.split_once(' ').unwrap();
        assert_eq!(rest, "*** hi");
        assert!(time.len() == 5 && time.as_bytes()[2] == b':', "{line:?}");
        let note = stamped.note("lost");
        assert!(note.len() == 14 && note.ends_with(" --- lost"), "{note:?}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(Screen::wants_colour(true, None));
        assert!(Screen::wants_colour(true, Some("")));
        assert!(!Screen::wants_colour(true, Some("1")));
        assert!(!Screen::wants_colour(false, None));
    }
}

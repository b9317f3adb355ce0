//! The chat protocol: what a client's line means, and how server lines look.
//!
//! Lines in, [`Command`]s out; [`ServerLine`]s in, text out. No sockets, no
//! threads: the hub decides what to do, this module only says what was meant.
//! PROTOCOL.md is the user's description of the same rules.

/// The first line every client receives.
pub const WELCOME: &str = "Welcome to the secure chat server!";
/// The answer to a line that says `hi`.
pub const HI_REPLY: &str = "Hola, cómo puedo ayudarte hoy?";
/// The answer to `bye`, just before the server closes the connection.
pub const BYE_REPLY: &str = "Ciao, Buonanotte!";

/// What one line from a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Send this text to the room.
    Say(&'a str),
    /// Leave the chat (`bye` or `/quit`).
    Quit,
    /// A `/command` this server does not know.
    Unknown(&'a str),
}

/// Reads one line from a client; `None` for a blank line, which is ignored.
///
/// A leading `//` sends the rest of the line with a single `/`, so text may
/// start with a slash without being taken for a command.
pub fn parse_command(line: &str) -> Option<Command<'_>> {
    if line.trim().is_empty() {
        return None;
    }
    if line.starts_with("//") {
        // Drop the first slash, keep the second.
        return Some(Command::Say(&line[1..]));
    }
    if let Some(rest) = line.strip_prefix('/') {
        let name = rest.split_whitespace().next().unwrap_or("");
        return Some(match name {
            "quit" => Command::Quit,
            _ => Command::Unknown(name),
        });
    }
    if line.trim().eq_ignore_ascii_case("bye") {
        return Some(Command::Quit);
    }
    Some(Command::Say(line))
}

/// True for the line the original app answered with [`HI_REPLY`].
pub fn is_greeting(text: &str) -> bool {
    text.trim().eq_ignore_ascii_case("hi")
}

/// One line from the server; its first word says what kind it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerLine<'a> {
    /// `chat NICK TEXT`: someone said something in the room (the sender too,
    /// as the acknowledgement that the server took it).
    Chat {
        /// Who said it.
        from: &'a str,
        /// What they said.
        text: &'a str,
    },
    /// `notice TEXT`: the server speaking (welcome, replies, departures).
    Notice(&'a str),
    /// `error TEXT`: something the client sent was refused, and why.
    Error(&'a str),
}

impl ServerLine<'_> {
    /// The line as sent on the wire, `\n` included.
    pub fn to_wire(&self) -> String {
        match self {
            ServerLine::Chat { from, text } => format!("chat {from} {text}\n"),
            ServerLine::Notice(text) => format!("notice {text}\n"),
            ServerLine::Error(text) => format!("error {text}\n"),
        }
    }

    /// Reads a line the server sent (without its `\n`); `None` if it is not
    /// one of the known kinds.
    pub fn parse(line: &str) -> Option<ServerLine<'_>> {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "chat" => {
                let (from, text) = rest.split_once(' ').unwrap_or((rest, ""));
                Some(ServerLine::Chat { from, text })
            }
            "notice" => Some(ServerLine::Notice(rest)),
            "error" => Some(ServerLine::Error(rest)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_said() {
        assert_eq!(parse_command("hello"), Some(Command::Say("hello")));
        assert_eq!(
            parse_command("  spaced  "),
            Some(Command::Say("  spaced  "))
        );
    }

    #[test]
    fn blank_lines_are_ignored() {
        assert_eq!(parse_command(""), None);
        assert_eq!(parse_command(" \t "), None);
    }

    #[test]
    fn double_slash_sends_one_literal_slash() {
        assert_eq!(parse_command("//quit"), Some(Command::Say("/quit")));
        assert_eq!(parse_command("//"), Some(Command::Say("/")));
    }

    #[test]
    fn bye_and_quit_leave() {
        assert_eq!(parse_command("bye"), Some(Command::Quit));
        assert_eq!(parse_command(" BYE "), Some(Command::Quit));
        assert_eq!(parse_command("/quit"), Some(Command::Quit));
        assert_eq!(parse_command("bye now"), Some(Command::Say("bye now")));
    }

    #[test]
    fn unknown_commands_are_named() {
        assert_eq!(parse_command("/frob x"), Some(Command::Unknown("frob")));
        assert_eq!(parse_command("/"), Some(Command::Unknown("")));
    }

    #[test]
    fn greeting_is_recognised_loosely() {
        assert!(is_greeting("hi"));
        assert!(is_greeting(" Hi "));
        assert!(!is_greeting("hi there"));
    }

    #[test]
    fn server_lines_round_trip() {
        let lines = [
            ServerLine::Chat {
                from: "guest1",
                text: "héllo 世界 🙂",
            },
            ServerLine::Chat {
                from: "guest2",
                text: "",
            },
            ServerLine::Notice(WELCOME),
            ServerLine::Error("line too long"),
        ];
        for line in lines {
            let wire = line.to_wire();
            assert!(wire.ends_with('\n'));
            assert_eq!(ServerLine::parse(wire.trim_end_matches('\n')), Some(line));
        }
    }

    #[test]
    fn unknown_server_lines_are_none() {
        assert_eq!(ServerLine::parse("bogus line"), None);
        assert_eq!(ServerLine::parse(""), None);
    }
}

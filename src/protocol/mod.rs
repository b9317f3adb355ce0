//! The chat protocol: what a client's line means, and how server lines look.
//!
//! Lines in, [`Command`]s out; [`ServerLine`]s in, text out; and in
//! [`notice`], the notices a client acts on as typed values. No sockets, no
//! threads: the hub decides what to do, this module only says what was meant.
//! PROTOCOL.md is the user's description of the same rules.
//!
//! Next: [`chat`](crate::chat), which carries the commands out.

use std::fmt;

pub mod moderation;
pub mod notice;

pub use moderation::{Mode, Moderation, Sentence, MODERATION_COMMANDS};
pub use notice::{Notice, Page, Refusal, RoomList, WhoList, Wording, WORDING};

/// The first line every client receives.
pub const WELCOME: &str = "Welcome to the secure chat server!";
/// The answer to a line that says `hi`.
pub const HI_REPLY: &str = "Hola, cómo puedo ayudarte hoy?";
/// The answer to `bye`, just before the server closes the connection.
pub const BYE_REPLY: &str = "Ciao, Buonanotte!";

/// The longest nick or room name, in characters (the room's `#` not counted).
///
/// Long enough for a real name or handle, short enough to line up in a
/// terminal and keep `/who` lists readable.
pub const MAX_NAME_LEN: usize = 24;

/// The room every client starts in.
pub const LOBBY: &str = "#lobby";

/// A nickname that has passed [`Nick::parse`]: 1 to 24 ASCII letters,
/// digits, `_` and `-`, not starting with a digit or `-`.
///
/// ASCII only, on purpose: names are compared without regard to case, and
/// Unicode offers look-alike letters that would let one user pose as another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nick(String);

/// A room name that has passed [`Room::parse`]: `#` and then what a nick
/// may be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Room(String);

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Nothing was given.
    Empty,
    /// More than [`MAX_NAME_LEN`] characters.
    TooLong,
    /// A character other than letters, digits, `_` and `-`.
    BadCharacter,
    /// Starts with a digit or `-`.
    BadStart,
    /// A room name without its leading `#`.
    NoHash,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "it is empty",
            NameError::TooLong => "it is longer than 24 characters",
            NameError::BadCharacter => "only letters, digits, _ and - are allowed",
            NameError::BadStart => "it must not start with a digit or -",
            NameError::NoHash => "room names start with #",
        })
    }
}

fn check_name(name: &str) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty)?;
    if name.chars().count() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(NameError::BadCharacter);
    }
    if first.is_ascii_digit() || first == '-' {
        return Err(NameError::BadStart);
    }
    Ok(())
}

impl Nick {
    /// Checks a proposed nick.
    pub fn parse(name: &str) -> Result<Nick, NameError> {
        check_name(name)?;
        Ok(Nick(name.to_string()))
    }

    /// The nick as its owner spelled it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form two nicks are compared in: `Alice` and `alice` are one user.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl Room {
    /// Checks a proposed room name, `#` included.
    pub fn parse(name: &str) -> Result<Room, NameError> {
        let bare = name.strip_prefix('#').ok_or(NameError::NoHash)?;
        check_name(bare)?;
        Ok(Room(name.to_string()))
    }

    /// The room everyone starts in.
    pub fn lobby() -> Room {
        Room(LOBBY.to_string())
    }

    /// The name as first spelled, `#` included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form two room names are compared in.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Nick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one line from a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Send this text to the room.
    Say(&'a str),
    /// `/me TEXT`: an action, shown as `* alice TEXT`.
    Me(&'a str),
    /// `/nick NAME`: take a new name (not yet validated).
    Nick(&'a str),
    /// `/join #room`: move to another room.
    Join(&'a str),
    /// `/rooms [PAGE]`: list the rooms, a page at a time (not yet
    /// validated).
    Rooms(Option<&'a str>),
    /// `/who [PAGE]`: list the people in this room, a page at a time (not
    /// yet validated).
    Who(Option<&'a str>),
    /// `/whois NAME`: where a user is.
    Whois(&'a str),
    /// `/msg NAME TEXT`: a private message.
    Msg {
        /// The recipient's nick.
        to: &'a str,
        /// The message.
        text: &'a str,
    },
    /// `/topic` shows the room's topic; `/topic TEXT` sets it.
    Topic(Option<&'a str>),
    /// `/help` or `/help COMMAND`.
    Help(Option<&'a str>),
    /// `/quit [REASON]` or `bye`: leave the chat.
    Quit(Option<&'a str>),
    /// `/token`: ask for the secret that takes this nick back after a
    /// dropped connection (see [`ServerLine::Token`]).
    Token,
    /// `/reclaim NICK SECRET`: take `nick` back from a connection of ours
    /// that dropped, with the secret the server gave it.
    Reclaim {
        /// The nick to take back.
        nick: &'a str,
        /// The secret from the last `token` line for it.
        secret: &'a str,
    },
    /// A moderation command (`/kick`, `/ban`, `/mute` and the rest).
    Moderate(Moderation<'a>),
}

/// A `/command` line that could not be understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError<'a> {
    /// No such command.
    Unknown(&'a str),
    /// The command needs an argument that is missing.
    MissingArgument(&'static CommandInfo),
    /// A ban's or mute's duration that is not a number and one unit.
    BadDuration(&'a str),
    /// `/mode` with something other than `+i`, `-i`, `+t` or `-t`.
    BadMode(&'a str),
}

impl fmt::Display for CommandError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(name) => write!(
                f,
                "unknown command /{name}: /help lists the commands; \
                 to send a line that starts with /, type //"
            ),
            CommandError::MissingArgument(info) => {
                write!(f, "{} needs {}: {}", info.name, info.needs, info.usage)
            }
            CommandError::BadDuration(text) => write!(
                f,
                "{text:?} is not a duration: a whole number and s, m, h or d, \
                 such as 30s 10m 2h 7d (at most ten years)"
            ),
            CommandError::BadMode(text) => write!(
                f,
                "{text:?} is not a mode: +i or -i (invite-only), +t or -t (topic lock)"
            ),
        }
    }
}

/// One command's name and help, for `/help` and for error messages.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandInfo {
    /// `/nick`.
    pub name: &'static str,
    /// How to type it: `/nick NAME`.
    pub usage: &'static str,
    /// What its missing argument is called in an error: "a name".
    pub needs: &'static str,
    /// What it does, in one line.
    pub help: &'static str,
}

/// Every command, in the order `/help` lists them.
pub const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        name: "/nick",
        usage: "/nick NAME",
        needs: "a name",
        help: "take the name NAME: 1 to 24 letters, digits, _ or -, not starting with a digit or -",
    },
    CommandInfo {
        name: "/join",
        usage: "/join #ROOM",
        needs: "a room",
        help: "leave this room and enter #ROOM, creating it if nobody is there",
    },
    CommandInfo {
        name: "/rooms",
        usage: "/rooms [PAGE]",
        needs: "",
        help: "list the rooms and how many people are in each, 50 rooms a page",
    },
    CommandInfo {
        name: "/who",
        usage: "/who [PAGE]",
        needs: "",
        help: "list the people in this room, 100 names a page",
    },
    CommandInfo {
        name: "/whois",
        usage: "/whois NAME",
        needs: "a name",
        help: "say which room NAME is in",
    },
    CommandInfo {
        name: "/msg",
        usage: "/msg NAME TEXT",
        needs: "a name and a message",
        help: "send TEXT to NAME alone, wherever they are",
    },
    CommandInfo {
        name: "/me",
        usage: "/me TEXT",
        needs: "some text",
        help: "act: /me waves shows * YOURNAME waves",
    },
    CommandInfo {
        name: "/topic",
        usage: "/topic [TEXT]",
        needs: "",
        help: "show this room's topic, or set it to TEXT",
    },
    CommandInfo {
        name: "/help",
        usage: "/help [COMMAND]",
        needs: "",
        help: "list the commands, or explain one",
    },
    CommandInfo {
        name: "/token",
        usage: "/token",
        needs: "",
        help: "get a secret that lets you take your nick back after a dropped connection \
               (chat-client does this for you)",
    },
    CommandInfo {
        name: "/reclaim",
        usage: "/reclaim NICK SECRET",
        needs: "a nick and its secret",
        help: "take NICK back from a connection of yours that dropped, with the secret \
               from /token",
    },
    CommandInfo {
        name: "/quit",
        usage: "/quit [REASON]",
        needs: "",
        help: "leave the chat (so does bye); the others see REASON",
    },
];

/// The help entry for a command, named with or without its `/`.
pub fn command_info(name: &str) -> Option<&'static CommandInfo> {
    let name = name.trim_start_matches('/');
    all_commands().find(|info| &info.name[1..] == name)
}

/// Every command, in the order `/help` lists them: the everyday ones,
/// then moderation.
pub fn all_commands() -> impl Iterator<Item = &'static CommandInfo> {
    COMMANDS.iter().chain(MODERATION_COMMANDS)
}

fn info(name: &str) -> &'static CommandInfo {
    command_info(name).expect("every parsed command is in COMMANDS")
}

/// Reads one line from a client: `Ok(None)` for a blank line, which is
/// ignored; `Err` for a command that cannot be carried out as typed.
///
/// A leading `//` sends the rest of the line with a single `/`, so text may
/// start with a slash without being taken for a command.
pub fn parse_command(line: &str) -> Result<Option<Command<'_>>, CommandError<'_>> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    if line.starts_with("//") {
        // Drop the first slash, keep the second.
        return Ok(Some(Command::Say(&line[1..])));
    }
    match line.strip_prefix('/') {
        Some(command) => parse_slash_command(command).map(Some),
        None if line.trim().eq_ignore_ascii_case("bye") => Ok(Some(Command::Quit(None))),
        None => Ok(Some(Command::Say(line))),
    }
}

/// Reads a `/command` line, its `/` removed. Kept out of line: a room
/// line, the common case, then pays for none of it.
#[inline(never)]
fn parse_slash_command(rest: &str) -> Result<Command<'_>, CommandError<'_>> {
    let (name, args) = match rest.split_once(char::is_whitespace) {
        Some((name, args)) => (name, args.trim()),
        None => (rest, ""),
    };
    let arg = (!args.is_empty()).then_some(args);
    let required = |command: &'static str| arg.ok_or(CommandError::MissingArgument(info(command)));
    let command = match name {
        "nick" => Command::Nick(first_word(required("nick")?)),
        "join" => Command::Join(first_word(required("join")?)),
        "rooms" => Command::Rooms(arg.map(first_word)),
        "who" => Command::Who(arg.map(first_word)),
        "whois" => Command::Whois(first_word(required("whois")?)),
        "msg" => {
            let (to, text) = required("msg")?
                .split_once(char::is_whitespace)
                .ok_or(CommandError::MissingArgument(info("msg")))?;
            Command::Msg {
                to,
                text: text.trim_start(),
            }
        }
        "me" => Command::Me(required("me")?),
        "topic" => Command::Topic(arg),
        "help" => Command::Help(arg),
        "quit" => Command::Quit(arg),
        "token" => Command::Token,
        "reclaim" => {
            let (nick, secret) = required("reclaim")?
                .split_once(char::is_whitespace)
                .ok_or(CommandError::MissingArgument(info("reclaim")))?;
            Command::Reclaim {
                nick,
                secret: first_word(secret.trim_start()),
            }
        }
        _ => match moderation::parse_moderation(name, arg)? {
            Some(moderation) => Command::Moderate(moderation),
            None => return Err(CommandError::Unknown(name)),
        },
    };
    Ok(command)
}

fn first_word(args: &str) -> &str {
    args.split_whitespace().next().unwrap_or(args)
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
    /// `action NICK TEXT`: someone did something (`/me`).
    Action {
        /// Who did it.
        from: &'a str,
        /// What they did.
        text: &'a str,
    },
    /// `private FROM TO TEXT`: a private message. The recipient gets it,
    /// and so does the sender, as its confirmation.
    Private {
        /// Who sent it.
        from: &'a str,
        /// Who it is for.
        to: &'a str,
        /// The message.
        text: &'a str,
    },
    /// `notice TEXT`: the server speaking (welcome, replies, lists, who
    /// came and went).
    Notice(&'a str),
    /// `error TEXT`: something the client sent was refused, and why.
    Error(&'a str),
    /// `history LINE`: a `chat` or `action` line said before this client
    /// joined the room, replayed on joining.
    History(&'a str),
    /// `token NICK SECRET`: the secret that takes `nick` back after a
    /// dropped connection (`/reclaim NICK SECRET`); sent to a client that
    /// asked with `/token`, again after each nick change, and after each
    /// reclaim, since a secret works once. Meant for the client program,
    /// which keeps it in memory and never shows or stores it.
    Token {
        /// The nick it is for.
        nick: &'a str,
        /// The secret.
        secret: &'a str,
    },
}

impl ServerLine<'_> {
    /// The line as sent on the wire, `\n` included.
    pub fn to_wire(&self) -> String {
        match self {
            ServerLine::Chat { from, text } => format!("chat {from} {text}\n"),
            ServerLine::Action { from, text } => format!("action {from} {text}\n"),
            ServerLine::Private { from, to, text } => format!("private {from} {to} {text}\n"),
            ServerLine::Notice(text) => format!("notice {text}\n"),
            ServerLine::Error(text) => format!("error {text}\n"),
            ServerLine::History(line) => {
                let line = line.strip_suffix('\n').unwrap_or(line);
                format!("history {line}\n")
            }
            ServerLine::Token { nick, secret } => format!("token {nick} {secret}\n"),
        }
    }

    /// Reads a line the server sent (without its `\n`); `None` if it is not
    /// one of the known kinds.
    pub fn parse(line: &str) -> Option<ServerLine<'_>> {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        // Most kinds go on with a nick, then the text.
        let (from, text) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(match kind {
            "chat" => ServerLine::Chat { from, text },
            "action" => ServerLine::Action { from, text },
            "private" => {
                let (to, text) = text.split_once(' ').unwrap_or((text, ""));
                ServerLine::Private { from, to, text }
            }
            "notice" => ServerLine::Notice(rest),
            "error" => ServerLine::Error(rest),
            "history" => ServerLine::History(rest),
            "token" => ServerLine::Token {
                nick: from,
                secret: text,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Command<'_> {
        parse_command(line).unwrap().unwrap()
    }

    #[test]
    fn plain_text_is_said_as_typed() {
        assert_eq!(parsed("hello"), Command::Say("hello"));
        assert_eq!(parsed("  spaced  "), Command::Say("  spaced  "));
    }

    #[test]
    fn blank_lines_are_ignored() {
        assert_eq!(parse_command(""), Ok(None));
        assert_eq!(parse_command(" \t "), Ok(None));
    }

    #[test]
    fn double_slash_sends_one_literal_slash() {
        assert_eq!(parsed("//quit"), Command::Say("/quit"));
        assert_eq!(parsed("//"), Command::Say("/"));
        assert_eq!(parsed("// spaced"), Command::Say("/ spaced"));
    }

    #[test]
    fn bye_and_quit_leave() {
        assert_eq!(parsed("bye"), Command::Quit(None));
        assert_eq!(parsed(" BYE "), Command::Quit(None));
        assert_eq!(parsed("/quit"), Command::Quit(None));
        assert_eq!(
            parsed("/quit  gone fishing "),
            Command::Quit(Some("gone fishing"))
        );
        assert_eq!(parsed("bye now"), Command::Say("bye now"));
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(parsed("/nick alice"), Command::Nick("alice"));
        assert_eq!(parsed("/nick alice extra"), Command::Nick("alice"));
        assert_eq!(parsed("/join #rust"), Command::Join("#rust"));
        assert_eq!(parsed("/rooms"), Command::Rooms(None));
        assert_eq!(parsed("/rooms 2"), Command::Rooms(Some("2")));
        assert_eq!(parsed("/who"), Command::Who(None));
        assert_eq!(parsed("/who 3 more"), Command::Who(Some("3")));
        assert_eq!(parsed("/whois bob"), Command::Whois("bob"));
        assert_eq!(
            parsed("/msg bob  hi there "),
            Command::Msg {
                to: "bob",
                text: "hi there"
            }
        );
        assert_eq!(parsed("/me waves"), Command::Me("waves"));
        assert_eq!(parsed("/topic"), Command::Topic(None));
        assert_eq!(
            parsed("/topic Rust and TLS"),
            Command::Topic(Some("Rust and TLS"))
        );
        assert_eq!(parsed("/help"), Command::Help(None));
        assert_eq!(parsed("/help msg"), Command::Help(Some("msg")));
        assert_eq!(parsed("/who\t"), Command::Who(None));
    }

    #[test]
    fn missing_arguments_name_the_usage() {
        for (line, usage) in [
            ("/nick", "/nick NAME"),
            ("/nick   ", "/nick NAME"),
            ("/join", "/join #ROOM"),
            ("/whois", "/whois NAME"),
            ("/msg", "/msg NAME TEXT"),
            ("/msg bob", "/msg NAME TEXT"),
            ("/me", "/me TEXT"),
        ] {
            let err = parse_command(line).unwrap_err();
            assert!(matches!(err, CommandError::MissingArgument(_)), "{line}");
            assert!(err.to_string().ends_with(usage), "{line}: {err}");
        }
    }

    #[test]
    fn unknown_commands_are_named() {
        let err = parse_command("/frob x").unwrap_err();
        assert_eq!(err, CommandError::Unknown("frob"));
        assert!(err.to_string().starts_with("unknown command /frob: /help"));
        assert_eq!(parse_command("/"), Err(CommandError::Unknown("")));
        // Commands are lower case, as typed in every chat program.
        assert_eq!(parse_command("/NICK a"), Err(CommandError::Unknown("NICK")));
    }

    #[test]
    fn every_command_has_help() {
        for info in all_commands() {
            assert!(info.usage.starts_with(info.name));
            assert_eq!(command_info(info.name), Some(info));
            assert_eq!(command_info(&info.name[1..]), Some(info));
        }
        assert_eq!(command_info("frob"), None);
    }

    #[test]
    fn valid_nicks() {
        for name in ["a", "alice", "Bob_2", "x-y", "_under", &"n".repeat(24)] {
            assert_eq!(Nick::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn invalid_nicks_say_why() {
        assert_eq!(Nick::parse(""), Err(NameError::Empty));
        assert_eq!(Nick::parse(&"n".repeat(25)), Err(NameError::TooLong));
        assert_eq!(Nick::parse("9lives"), Err(NameError::BadStart));
        assert_eq!(Nick::parse("-dash"), Err(NameError::BadStart));
        assert_eq!(Nick::parse("a b"), Err(NameError::BadCharacter));
        assert_eq!(Nick::parse("zoë"), Err(NameError::BadCharacter));
        assert_eq!(Nick::parse("a#b"), Err(NameError::BadCharacter));
    }

    #[test]
    fn nicks_compare_without_case() {
        assert_eq!(
            Nick::parse("Alice").unwrap().key(),
            Nick::parse("aLICE").unwrap().key()
        );
    }

    #[test]
    fn room_names() {
        assert_eq!(Room::parse("#rust").unwrap().as_str(), "#rust");
        assert_eq!(Room::parse("rust"), Err(NameError::NoHash));
        assert_eq!(Room::parse("#"), Err(NameError::Empty));
        assert_eq!(Room::parse("#1x"), Err(NameError::BadStart));
        assert_eq!(Room::parse("##x"), Err(NameError::BadCharacter));
        assert_eq!(Room::parse("#Rust").unwrap().key(), "#rust");
        assert_eq!(Room::lobby().as_str(), LOBBY);
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
            ServerLine::Action {
                from: "alice",
                text: "waves",
            },
            ServerLine::Private {
                from: "alice",
                to: "bob",
                text: "psst, a secret",
            },
            ServerLine::Notice(WELCOME),
            ServerLine::Error("line too long"),
            ServerLine::History("chat alice said this earlier"),
        ];
        for line in lines {
            let wire = line.to_wire();
            assert!(wire.ends_with('\n') && !wire[..wire.len() - 1].contains('\n'));
            assert_eq!(ServerLine::parse(wire.trim_end_matches('\n')), Some(line));
        }
    }

    #[test]
    fn history_wraps_a_whole_wire_line() {
        let said = ServerLine::Chat {
            from: "alice",
            text: "hi",
        }
        .to_wire();
        assert_eq!(
            ServerLine::History(&said).to_wire(),
            "history chat alice hi\n"
        );
    }

    #[test]
    fn unknown_server_lines_are_none() {
        assert_eq!(ServerLine::parse("bogus line"), None);
        assert_eq!(ServerLine::parse(""), None);
    }
}

//! The servers the bench can load, and how each one's lines look.
//!
//! secure-chat and the Go peer speak the protocol of PROTOCOL.md; ncat's
//! `--chat` mode speaks something simpler. Everything the bench needs to
//! know about those differences is here, so the modes stay the same for all.

use std::fmt;
use std::str::FromStr;

use secure_chat::chat::SHUTDOWN_NOTICE;
use secure_chat::protocol::ServerLine;

/// Connections ncat's chat mode can hold.
///
/// It waits with select(), whose descriptor sets end at 1024 on Linux,
/// and holds a few descriptors of its own (standard streams, the
/// listening socket): a thousand clients and a few more fit, and past
/// about 1020 it fails, so the bench refuses runs that need more than
/// this. 1010 leaves room for an idle run of 1000 and its broadcaster.
pub const NCAT_MAX_CONNECTIONS: usize = 1010;

/// Largest write to ncat that keeps lines whole.
///
/// ncat reads 8 KiB at a time and puts `<userN> ` before each piece it
/// read, wherever that piece starts; a line split across two reads would
/// be relayed with a prefix in its middle. Writes of whole lines that fit
/// one read (and one TLS record) arrive as they were sent.
pub const NCAT_MAX_WRITE: usize = 8000;

/// The kind of server being loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// `chat-server` from this project.
    SecureChat,
    /// The Go server used for comparison (either design): the same
    /// greeting and `chat NICK TEXT` lines, echoed to the sender too.
    Go,
    /// `ncat --ssl --chat`: `<announce>` lines instead of a greeting,
    /// `<userN> TEXT` relayed to everyone but the sender, and not always a
    /// close_notify at the end.
    Ncat,
}

/// What one line from the server is, as far as the bench cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A chat line with this text (the bench's own lines among them).
    Chat(&'a str),
    /// A line that says the client is in the chat now.
    Greeting,
    /// A notice the bench has no use for (arrivals, rooms, topics).
    Routine,
    /// Someone else's line, replayed history: not the bench's.
    Foreign,
    /// A line that means trouble: an error, a cut, a shutdown, nonsense.
    Trouble,
}

impl Peer {
    /// The name used on the command line and in the `RESULT` line.
    pub fn name(self) -> &'static str {
        match self {
            Peer::SecureChat => "secure-chat",
            Peer::Go => "go",
            Peer::Ncat => "ncat",
        }
    }

    /// True if a sender receives its own lines back.
    pub fn echoes(self) -> bool {
        self != Peer::Ncat
    }

    /// True if an unclean close (no close_notify from the server) is a
    /// failed check; ncat is only reported on.
    pub fn must_close_cleanly(self) -> bool {
        self != Peer::Ncat
    }

    /// The most connections one run may open against this server.
    pub fn max_connections(self) -> Option<usize> {
        (self == Peer::Ncat).then_some(NCAT_MAX_CONNECTIONS)
    }

    /// The largest write that keeps lines whole on their way through.
    pub fn max_write(self) -> Option<usize> {
        (self == Peer::Ncat).then_some(NCAT_MAX_WRITE)
    }

    /// Sorts one line from the server.
    pub fn classify(self, line: &str) -> Incoming<'_> {
        match self {
            Peer::SecureChat | Peer::Go => classify_protocol(line),
            Peer::Ncat => classify_ncat(line),
        }
    }
}

/// Lines as PROTOCOL.md describes them.
fn classify_protocol(line: &str) -> Incoming<'_> {
    // A server that replays a room's history on joining may replay an
    // earlier run's lines: neither ours nor a problem.
    if line.starts_with("history ") {
        return Incoming::Foreign;
    }
    match ServerLine::parse(line) {
        Some(ServerLine::Chat { text, .. }) => Incoming::Chat(text),
        Some(ServerLine::Notice(text)) if text.starts_with("you are ") => Incoming::Greeting,
        // Someone else cut as too slow (a stalled client, in slow mode):
        // if it was one of the bench's readers, that reader's own end
        // says so.
        Some(ServerLine::Notice(text)) if text.ends_with(" quit: too slow") => Incoming::Routine,
        // Only the notices that mean trouble are checked: servers add
        // routine ones (joins, rooms, topics) as they grow.
        Some(ServerLine::Notice(text)) if text.contains("too slow") || text == SHUTDOWN_NOTICE => {
            Incoming::Trouble
        }
        Some(ServerLine::Notice(_)) => Incoming::Routine,
        _ => Incoming::Trouble,
    }
}

/// Lines of ncat's chat mode: `<announce> ...` for arrivals and departures,
/// `<userN> TEXT` for what others said.
///
/// ncat has no greeting as such, and its end of the handshake is no
/// substitute: in TLS 1.3 the client finishes first, and lines relayed
/// before ncat has taken the newcomer in are lost to it. What ncat sends
/// a newcomer once it has, and only then, is the list of who is already
/// connected: that is the greeting.
fn classify_ncat(line: &str) -> Incoming<'_> {
    if line.starts_with("<announce> already connected") {
        return Incoming::Greeting;
    }
    if line.starts_with("<announce> ") {
        return Incoming::Routine;
    }
    let prefixed = line
        .strip_prefix("<user")
        .and_then(|rest| rest.split_once("> "))
        .filter(|(number, _)| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()));
    match prefixed {
        Some((_, text)) => Incoming::Chat(text),
        // Only the first line of each piece ncat read carries the prefix:
        // the lines after it in the same piece come bare.
        None => Incoming::Chat(line),
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Peer {
    type Err = String;

    fn from_str(text: &str) -> Result<Peer, String> {
        match text {
            "secure-chat" => Ok(Peer::SecureChat),
            "go" => Ok(Peer::Go),
            "ncat" => Ok(Peer::Ncat),
            other => Err(format!(
                "unknown peer '{other}': use secure-chat, go or ncat"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_are_sorted() {
        let peer = Peer::SecureChat;
        assert_eq!(
            peer.classify("chat guest1 b1 0 0 x"),
            Incoming::Chat("b1 0 0 x")
        );
        assert_eq!(peer.classify("notice you are guest1"), Incoming::Greeting);
        assert_eq!(
            peer.classify("notice guest2 joined #lobby"),
            Incoming::Routine
        );
        // Someone else's cut: a reader's own cut shows in how it ended.
        assert_eq!(
            peer.classify("notice guest2 quit: too slow"),
            Incoming::Routine
        );
        assert_eq!(peer.classify("notice you were too slow"), Incoming::Trouble);
        assert_eq!(
            peer.classify(&format!("notice {SHUTDOWN_NOTICE}")),
            Incoming::Trouble
        );
        assert_eq!(peer.classify("history chat bob hi"), Incoming::Foreign);
        assert_eq!(peer.classify("error line too long"), Incoming::Trouble);
        assert_eq!(peer.classify("what is this"), Incoming::Trouble);
    }

    #[test]
    fn ncat_lines_are_sorted() {
        let peer = Peer::Ncat;
        assert_eq!(
            peer.classify("<announce> 127.0.0.1 is connected as <user5>."),
            Incoming::Routine
        );
        assert_eq!(
            peer.classify("<announce> already connected: nobody."),
            Incoming::Greeting
        );
        assert_eq!(
            peer.classify("<user12> b1 0 0 x"),
            Incoming::Chat("b1 0 0 x")
        );
        assert_eq!(peer.classify("b1 0 1 0 x"), Incoming::Chat("b1 0 1 0 x"));
        assert_eq!(peer.classify("<userx> hi"), Incoming::Chat("<userx> hi"));
    }

    #[test]
    fn only_ncat_has_limits() {
        assert_eq!(Peer::SecureChat.max_connections(), None);
        assert_eq!(Peer::Go.max_write(), None);
        assert_eq!(Peer::Ncat.max_connections(), Some(NCAT_MAX_CONNECTIONS));
        assert!(!Peer::Ncat.echoes() && !Peer::Ncat.must_close_cleanly());
        assert_eq!("go".parse::<Peer>(), Ok(Peer::Go));
        assert!("irc".parse::<Peer>().is_err());
    }
}

//! What crosses the seam once the chat is shared: what it asks of the
//! other servers ([`Ask`]) and what they tell it ([`Told`]), with the
//! values inside them. A server alone never makes or meets any of these.

use std::sync::Arc;

use super::RoomLine;
use crate::chat::{ClientId, RoomId};

/// What the chat asks of the other servers. Only a chat shared with
/// others asks ([`Chat::shared`](crate::chat::Chat::shared)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Whether a nick (in lower case) is free everywhere, and take it if
    /// so. The answer comes back as [`Told::Claimed`].
    Claim {
        /// The nick, in lower case.
        name: String,
    },
    /// A nick someone here took on arrival, held for them everywhere from
    /// now on without an answer; should another server have it,
    /// [`Told::NameLost`] comes.
    Hold {
        /// The nick, in lower case.
        name: String,
    },
    /// Nobody here goes by this nick (in lower case) any more.
    Release {
        /// The nick, in lower case.
        name: String,
    },
    /// Every server's (this one's included) part of the answer to
    /// `/who`, `/rooms` or `/whois`; the parts come back as
    /// [`Told::Answered`].
    Query {
        /// Who asked.
        id: ClientId,
        /// What.
        query: Query,
        /// The page asked for, if any (the asker's business only).
        page: Option<String>,
    },
    /// A private line for someone on another server. Whether it arrived
    /// comes back as [`Told::PrivateSent`].
    Private {
        /// Who sent it.
        from: ClientId,
        /// The recipient, in lower case.
        to: String,
        /// The line.
        line: Arc<str>,
    },
}

/// Why an [`Ask`] could not go: the chat answers it itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unasked {
    /// Too much already waits for the other servers.
    Busy,
    /// The other servers cannot be reached now.
    Unreachable,
}

/// A question every server answers for its own users; the asker's
/// server puts the answers together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `/who`: who is in this room (its name).
    Who(String),
    /// `/rooms`: which rooms have people in them, and how many.
    Rooms,
    /// `/whois`: where this nick (in lower case) is.
    Whois(String),
}

impl Query {
    /// The question as one line of text, to travel between servers.
    pub fn encode(&self) -> String {
        match self {
            Query::Who(room) => format!("who {}", room.to_ascii_lowercase()),
            Query::Rooms => "rooms".to_owned(),
            Query::Whois(name) => format!("whois {name}"),
        }
    }

    /// Reads back what [`Query::encode`] wrote.
    pub fn decode(text: &str) -> Option<Query> {
        match text.split_once(' ') {
            Some(("who", room)) => Some(Query::Who(room.to_owned())),
            Some(("whois", name)) => Some(Query::Whois(name.to_owned())),
            None if text == "rooms" => Some(Query::Rooms),
            _ => None,
        }
    }
}

/// How far a question to every server went ([`Told::Answered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every server that heard it answered.
    Every,
    /// Some did not answer in time.
    Partial,
    /// It could not be asked: this server answered alone.
    HereOnly,
}

/// The others' verdict on an [`Ask::Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The name is this server's now, until it lets it go.
    Ours,
    /// Someone on another server has it.
    Taken,
    /// The others could not be asked: nobody can tell whether it is free.
    Down,
    /// Too much waits to ask them now ([`Unasked::Busy`]).
    Busy,
}

/// What became of an [`Ask::Private`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The recipient's server has it.
    Delivered,
    /// Nobody by that name is connected to any server.
    NoOne,
    /// The others could not be asked.
    Down,
}

/// Who asked a [`Told::Question`], to give the answer back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    /// The asking server's run.
    pub server: String,
    /// Its number for the question.
    pub ticket: u64,
}

/// What the other servers tell the chat, in the order it happened.
#[derive(Debug, PartialEq, Eq)]
pub enum Told {
    /// Nothing to do.
    Nothing,
    /// Show a room line here.
    Line(RoomLine),
    /// A room this server joined: what it said before. Its lines waiting
    /// for this follow in `then`.
    Recent {
        /// The room.
        room: RoomId,
        /// Its last chat and action lines, oldest first.
        lines: Vec<Arc<str>>,
        /// Its topic.
        topic: Option<String>,
        /// Lines said here meanwhile that could not go to the others after
        /// all, to be shown here.
        then: Vec<RoomLine>,
    },
    /// A notice for every member of a room.
    TellRoom(RoomId, String),
    /// The others can be reached again: everyone here is told `notice`,
    /// and new nicks can be checked again.
    Reachable {
        /// What everyone here is told.
        notice: &'static str,
        /// Guests' names start with this from now on, if it changed.
        guest_prefix: Option<String>,
    },
    /// The others cannot be reached: everyone here is told `notice`; then
    /// these lines, which were waiting for their rooms' past, are shown
    /// here.
    Unreachable {
        /// What everyone here is told.
        notice: &'static str,
        /// Lines to show here.
        lines: Vec<RoomLine>,
    },
    /// The verdict on an [`Ask::Claim`].
    Claimed(String, Claim),
    /// A nick held here is someone's elsewhere: it lapsed while the others
    /// could not be reached (`true`), or was theirs already.
    NameLost(String, bool),
    /// A private line for someone here (the nick in lower case).
    PrivateIn(String, Arc<str>),
    /// What became of an [`Ask::Private`].
    PrivateSent {
        /// The sender.
        from: ClientId,
        /// The recipient, in lower case.
        to: String,
        /// The line.
        line: Arc<str>,
        /// Whether it arrived.
        sent: Sent,
    },
    /// Another server (or this one) asks this one's part of an answer:
    /// the hub gives it to [`Elsewhere::answer`](super::Elsewhere::answer).
    Question {
        /// Who asks.
        asker: Asker,
        /// What.
        query: Query,
    },
    /// The parts of the answer to an [`Ask::Query`] are in.
    Answered {
        /// Who asked.
        id: ClientId,
        /// What.
        query: Query,
        /// The page asked for.
        page: Option<String>,
        /// Each server's part.
        parts: Vec<String>,
        /// Whether every server that heard the question answered.
        reach: Reach,
    },
    /// An [`Ask::Query`] could not be asked after all: this server
    /// answers it alone, and says so.
    AnswerHere {
        /// Who asked.
        id: ClientId,
        /// What.
        query: Query,
        /// The page asked for.
        page: Option<String>,
    },
}

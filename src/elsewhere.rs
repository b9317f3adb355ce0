//! The one seam between this server's chat and any other servers it is
//! shared with: names, presence, private lines and room lines.
//! It owns the interface ([`Elsewhere`]), the values that cross it, and
//! its implementation for a server alone ([`Alone`]); not the link through
//! Redis, the other implementation (`linked`, behind the `redis` feature).
//!
//! # Why a trait, and how it costs nothing alone
//!
//! The hub is generic over [`Elsewhere`]. A server alone runs the hub with
//! [`Alone`], whose methods are empty or give the line straight back: the
//! compiler inlines them, so a room line goes from the chat to the shards
//! as it would with no seam at all. A linked server runs it with a boxed
//! implementation the hub knows only by this trait (one more indirect call
//! per room line, beside a round trip to Redis).
//!
//! What the chat asks of the others is an [`Ask`] (inside
//! [`Output::Elsewhere`](crate::chat::Output::Elsewhere)); what they tell
//! it back is a [`Told`]. A chat alone never asks: its names, presence and
//! questions are all here.
//!
//! Next: [`hub`](crate::hub), which holds the implementation.

use std::any::Any;
use std::io;
use std::sync::Arc;

use crate::chat::{ClientId, Keep, RoomId};
use crate::hub::Event;
use crate::queue;

/// A room line on its way to the room's members here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLine {
    /// The room.
    pub room: RoomId,
    /// The line, as the members get it.
    pub line: Arc<str>,
    /// Left out, if it is one of this server's clients.
    pub except: Option<ClientId>,
    /// What the room keeps of it.
    pub keep: Keep,
}

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
    /// the hub gives it to [`Elsewhere::answer`].
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

/// Something an implementation of [`Elsewhere`] received on a thread of
/// its own, on its way to the hub ([`Event::Elsewhere`]); only that
/// implementation knows what is inside.
pub struct Arrival(Box<dyn Any + Send>);

impl Arrival {
    /// Wraps what arrived.
    pub fn new<T: Any + Send>(inside: T) -> Arrival {
        Arrival(Box::new(inside))
    }

    /// What arrived, if it is a `T`.
    pub fn open<T: Any>(self) -> Option<T> {
        self.0.downcast().ok().map(|inside| *inside)
    }
}

impl std::fmt::Debug for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Arrival(..)")
    }
}

/// The other servers this chat is shared with, as the hub sees them.
///
/// Only the hub thread calls these, between events; none may wait on the
/// network. `key` arguments give a room's name on every server, asked
/// only when needed (a server alone never asks).
pub trait Elsewhere: Send {
    /// How this server names its guests, when shared: a prefix unlike
    /// every other server's. `None` for a server alone.
    fn guest_prefix(&self) -> Option<String>;

    /// Called once before the hub starts: whatever arrives from the
    /// others from now on goes to the hub through `hub`, as
    /// [`Event::Elsewhere`].
    fn forward(&mut self, hub: queue::Sender<Event>) -> io::Result<()>;

    /// A room line was said here. Given back if it is to be shown here
    /// now; `None` if it went to the others, to be shown when it comes
    /// back ([`Told::Line`]).
    fn say(&mut self, line: RoomLine, key: &dyn Fn() -> Option<String>) -> Option<RoomLine>;

    /// Hands the others what the chat asks; the ask back, with why, if it
    /// cannot go now.
    fn ask(&mut self, ask: Ask) -> Result<(), (Ask, Unasked)>;

    /// This server's part of the answer to a [`Told::Question`].
    fn answer(&self, asker: &Asker, answer: &str);

    /// The first member here entered `room`.
    fn entered(&mut self, room: RoomId, key: &dyn Fn() -> Option<String>);

    /// The last member here left `room`.
    fn emptied(&mut self, room: RoomId);

    /// The event in hand is handled.
    fn event_done(&mut self);

    /// What the hub does with something that arrived ([`Event::Elsewhere`]).
    fn arrived(&mut self, arrival: Arrival) -> Told;
}

impl<E: Elsewhere + ?Sized> Elsewhere for Box<E> {
    fn guest_prefix(&self) -> Option<String> {
        (**self).guest_prefix()
    }
    fn forward(&mut self, hub: queue::Sender<Event>) -> io::Result<()> {
        (**self).forward(hub)
    }
    fn say(&mut self, line: RoomLine, key: &dyn Fn() -> Option<String>) -> Option<RoomLine> {
        (**self).say(line, key)
    }
    fn ask(&mut self, ask: Ask) -> Result<(), (Ask, Unasked)> {
        (**self).ask(ask)
    }
    fn answer(&self, asker: &Asker, answer: &str) {
        (**self).answer(asker, answer);
    }
    fn entered(&mut self, room: RoomId, key: &dyn Fn() -> Option<String>) {
        (**self).entered(room, key);
    }
    fn emptied(&mut self, room: RoomId) {
        (**self).emptied(room);
    }
    fn event_done(&mut self) {
        (**self).event_done();
    }
    fn arrived(&mut self, arrival: Arrival) -> Told {
        (**self).arrived(arrival)
    }
}

/// A server alone: no other servers, so every room line is shown here at
/// once, and nothing is ever asked or arrives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Alone;

impl Elsewhere for Alone {
    fn guest_prefix(&self) -> Option<String> {
        None
    }
    fn forward(&mut self, _hub: queue::Sender<Event>) -> io::Result<()> {
        Ok(())
    }
    #[inline]
    fn say(&mut self, line: RoomLine, _key: &dyn Fn() -> Option<String>) -> Option<RoomLine> {
        Some(line)
    }
    fn ask(&mut self, _ask: Ask) -> Result<(), (Ask, Unasked)> {
        // A chat alone asks nothing (see `Chat::shared`); were it to, there
        // is nobody to ask, and so nothing to wait for.
        Ok(())
    }
    fn answer(&self, _asker: &Asker, _answer: &str) {}
    #[inline]
    fn entered(&mut self, _room: RoomId, _key: &dyn Fn() -> Option<String>) {}
    #[inline]
    fn emptied(&mut self, _room: RoomId) {}
    #[inline]
    fn event_done(&mut self) {}
    fn arrived(&mut self, _arrival: Arrival) -> Told {
        Told::Nothing
    }
}

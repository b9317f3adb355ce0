//! What crosses the seam once the chat is shared: what it asks of the
//! other servers ([`Ask`]) and what they tell it ([`Told`]), with the
//! values inside them. A server alone never makes or meets any of these.

use std::cmp::Ordering;
use std::sync::Arc;

use super::RoomLine;
use crate::chat::{ClientId, RoomId, WHO_PAGE};
use crate::tls::Fingerprint;

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
    /// A kick or a kill of someone on another server, done there.
    /// Whether it reached their server comes back as [`Told::ActSent`].
    Act {
        /// Who asked (a moderator here).
        from: ClientId,
        /// Whom it is done to, in lower case.
        to: String,
        /// What (boxed: the rarest ask, and the largest).
        act: Box<Act>,
    },
    /// A change of a room's rules made here before this server knew them
    /// ([`Waiting::Rules`]), let through in its place among the lines
    /// that waited with it: it adds to what the others have, and is
    /// never refused (while they cannot be reached, it waits).
    Rules {
        /// The room's key ([`Room::key`](crate::protocol::Room::key)).
        room: String,
        /// The rules as the change left them, whole; `None` for none.
        rules: Option<String>,
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

/// What was said or changed here in a room while its past was awaited
/// ([`Told::Recent`]), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// A room line.
    Line(RoomLine),
    /// A change of the room's rules, made before this server knew them.
    Rules {
        /// The room's key ([`Room::key`](crate::protocol::Room::key)).
        room: String,
        /// The rules as the change left them, whole; `None` for none.
        rules: Option<String>,
    },
}

/// A moderator's kick or kill of someone on another server
/// ([`Ask::Act`]), as that server is told it: it checks what it can (that
/// they are in the room; that only a server operator acts on another; that
/// whoever kicks is an operator of the room in its copy of the rules) and
/// does it as if it were made there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Act {
    /// The moderator's nick.
    pub by: String,
    /// Whether the moderator is a server operator on their own server:
    /// what the sender says, not taken by the server that does it, which
    /// checks `key` against its own operators.
    pub server_op: bool,
    /// The key of the moderator's certificate, if they have one: what a
    /// room's operators are named by in its rules.
    pub key: Option<Fingerprint>,
    /// What is done.
    pub deed: Deed,
    /// Why, if they said.
    pub reason: Option<String>,
}

/// What an [`Act`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deed {
    /// `/kick`: sends them from this room (its name) to the lobby, if
    /// they are in it.
    Kick(String),
    /// `/kill`: disconnects them.
    Kill,
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
    /// `/who`: who is in this room, and the first `names` of them in the
    /// room's order (by [`Nick::key`](crate::protocol::Nick::key)): as
    /// many as the page asked for needs, so that each server sends its
    /// share of that page, not its whole part of the room.
    Who {
        /// The room's name.
        room: String,
        /// How many names, at most, each server sends: at most
        /// [`MOST_NAMES_ASKED`].
        names: usize,
    },
    /// `/rooms`: which rooms have people in them, and how many.
    Rooms,
    /// `/whois`: where this nick (in lower case) is.
    Whois(String),
}

/// The most names a [`Query::Who`] asks of each server: 10 pages of
/// `/who`, some 25 KB of names from each. Every server's part of every
/// question waiting comes through the asking server's one subscription to
/// Redis, which Redis cuts past its output limit (32 MB by default): deep
/// pages asked by many at once must not get there. A question for more is
/// nonsense, and not answered; a page past these asks only how many are
/// in the room.
pub const MOST_NAMES_ASKED: usize = 10 * WHO_PAGE;

/// The most people one server's part of a [`Query::Who`] may say are in
/// a room: more than one server could hold (each person has a thread
/// there), so a count past it is nonsense, and the part is left out.
pub const MOST_IN_A_ROOM: usize = 1 << 24;

impl Query {
    /// The question as one line of text, to travel between servers:
    /// `who NAMES ROOM`, `rooms` or `whois NAME`.
    pub fn encode(&self) -> String {
        match self {
            Query::Who { room, names } => format!("who {names} {}", room.to_ascii_lowercase()),
            Query::Rooms => "rooms".to_owned(),
            Query::Whois(name) => format!("whois {name}"),
        }
    }

    /// Reads back what [`Query::encode`] wrote; `None` for anything else,
    /// a count of names that is not a plain number or past
    /// [`MOST_NAMES_ASKED`] included. The `who ROOM` of earlier versions
    /// is not understood: all servers of one chat run one version.
    pub fn decode(text: &str) -> Option<Query> {
        match text.split_once(' ') {
            Some(("who", rest)) => {
                let (names, room) = rest.split_once(' ')?;
                let names = number(names).filter(|&names| names <= MOST_NAMES_ASKED)?;
                Some(Query::Who {
                    room: room.to_owned(),
                    names,
                })
            }
            Some(("whois", name)) => Some(Query::Whois(name.to_owned())),
            None if text == "rooms" => Some(Query::Rooms),
            _ => None,
        }
    }
}

/// One server's part of the answer to a [`Query::Who`], as it travels:
/// how many are in the room there, then the first of their names in the
/// room's order, as many as were asked for: `COUNT NAME...`,
/// space-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhoPart<'a> {
    /// How many are in the room on that server, at most
    /// [`MOST_IN_A_ROOM`].
    pub count: usize,
    /// The first of their names, in the room's order; at most `count`,
    /// and at most the names asked for.
    pub names: Vec<&'a str>,
}

impl<'a> WhoPart<'a> {
    /// The part as one line of text.
    pub fn encode(&self) -> String {
        let mut text = self.count.to_string();
        for name in &self.names {
            text.push(' ');
            text.push_str(name);
        }
        text
    }

    /// The room's order of two nicks: by their keys
    /// ([`Nick::key`](crate::protocol::Nick::key)), as a room keeps its
    /// members, compared without making them.
    pub fn order(a: &str, b: &str) -> Ordering {
        let lower = |byte: u8| byte.to_ascii_lowercase();
        a.bytes().map(lower).cmp(b.bytes().map(lower))
    }

    /// Reads back what [`WhoPart::encode`] wrote, for a question that
    /// asked for `asked` names; `None` if the count is not a plain number
    /// or past [`MOST_IN_A_ROOM`], or if there are more names than it or
    /// than were asked for. (Whether each name is a nick, in order, is
    /// the link's to check: it is what takes parts from outside.)
    pub fn decode(text: &'a str, asked: usize) -> Option<WhoPart<'a>> {
        let mut words = text.split(' ');
        let count = number(words.next()?).filter(|&count| count <= MOST_IN_A_ROOM)?;
        let names: Vec<&str> = words.collect();
        (names.len() <= count.min(asked)).then_some(WhoPart { count, names })
    }
}

/// A number as [`usize`]'s `Display` writes it: digits only, no sign, no
/// leading zero.
fn number(text: &str) -> Option<usize> {
    text.parse()
        .ok()
        .filter(|number: &usize| number.to_string() == text)
}

/// How far a question to every server went ([`Told::Answered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every server that heard it answered.
    Every,
    /// Some did not answer in time.
    Partial,
    /// Not every part that came is in: the parts together passed what
    /// one answer may take, or one was not what a server sends.
    Cut,
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
    /// Show room lines here, in order: lines another server (or this
    /// one) said in a room, come back together, as one batch.
    Lines(Vec<RoomLine>),
    /// A room this server joined: what it said before, and the lines
    /// said here that waited for it (`waiting`).
    Recent {
        /// The room.
        room: RoomId,
        /// Its last chat and action lines, oldest first.
        lines: Vec<Arc<str>>,
        /// Its topic.
        topic: Option<String>,
        /// Its rules, as [`Told::Rules`] gives them; `None` if what Redis
        /// holds for them makes no sense: this server keeps its own.
        rules: Option<Option<String>>,
        /// Whether it is new, for all that matters: nobody ever spoke in
        /// it, set its topic or kept rules for it, on any server.
        fresh: bool,
        /// Lines said and rules changed here meanwhile, in order, not
        /// yet sent to the others: the chat lets through, as new room
        /// lines, the lines its rules allow, and the changes as
        /// [`Ask::Rules`], each in its place.
        waiting: Vec<Waiting>,
    },
    /// A notice for every member of a room.
    TellRoom(RoomId, String),
    /// A room's rules as they are now on every server, whole: they
    /// replace what this server had, and hold for the people here from
    /// now on. (Two changes made at once on two servers: the later one,
    /// in Redis' order, is made again on the earlier, so both hold.)
    Rules {
        /// The room's key ([`Room::key`](crate::protocol::Room::key)).
        room: String,
        /// The rules, as [`Save::Rules`](crate::chat::Save::Rules) holds
        /// them; `None` for none.
        rules: Option<String>,
    },
    /// The server bans as they are now on every server, whole, as
    /// [`Save::ServerBans`](crate::chat::Save::ServerBans) holds them.
    ServerBans(Option<String>),
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
    /// A kick or kill for someone here (the nick in lower case), from a
    /// moderator on another server.
    ActIn(String, Act),
    /// What became of an [`Ask::Act`].
    ActSent {
        /// Who asked.
        from: ClientId,
        /// Whom it was for, in lower case.
        to: String,
        /// What.
        act: Act,
        /// Whether it reached their server.
        sent: Sent,
    },
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

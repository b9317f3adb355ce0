//! The chat itself, as a plain value: who is here under which name, who
//! is in which room, and what each command does and says.
//!
//! [`Chat`] holds no sockets, threads or clocks. Each method takes one
//! thing that happened (a client joined, sent a line, left) and appends
//! to a list what should follow: an [`Output`] is a line for one client
//! or for a room, a move to another room, or a close. The hub thread
//! ([`hub`](crate::hub)) feeds it and delivers what it says; the tests
//! below call it directly.
//!
//! Nothing a client sends, in any order, can make it panic: every lookup
//! of a client or a room that may be gone is checked, and what refers to
//! a client that is no longer here is ignored.
//!
//! Next: [`hub`](crate::hub), the thread that feeds the chat and delivers
//! what it says.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::cluster::{Claim, Sent};
use crate::line::Frame;
use crate::protocol::{
    self, Command, NameError, Nick, Notice, Page, Refusal, Room, RoomList, ServerLine, WhoList,
    COMMANDS,
};

/// Default for how many of a room's last lines a newcomer is shown.
///
/// Enough to see what the conversation is about; small enough that joining
/// a busy room does not flood the screen. 0 keeps no history at all.
pub const HISTORY_LINES: usize = 50;

/// Default for [`ChatSettings::announce_limit`].
///
/// In a room of a hundred, arrivals and departures are still news; in a
/// room of thousands they would be most of the traffic, and when everyone
/// reconnects at once (after a restart), each arrival told to everyone is
/// a storm that grows with the square of the room.
pub const ANNOUNCE_LIMIT: usize = 100;

/// Names per `/who` line: a page of a big room fits well within what a
/// client accepts (24-byte nicks: under 3 KiB), and asking costs the hub
/// a walk of the room's sorted names up to that page, never a sort. (Linked,
/// every server sends its names, and the asker's sorts them all.)
pub const WHO_PAGE: usize = 100;

/// Rooms per `/rooms` line, for the same reasons.
pub const ROOMS_PAGE: usize = 50;

/// The notice every client gets when the server stops.
pub const SHUTDOWN_NOTICE: &str = "server shutting down, goodbye";

/// Linked: why its users left, as the other servers' users are told
/// when a server stops.
pub const SHUTDOWN_QUIT: &str = "their server shut down";

/// Linked, Redis away: why a new nick cannot be taken.
pub const LINK_DOWN_NICK: &str = "the link to the other servers is down, so a new nick cannot \
                                  be checked with them; try again when it is back";

/// Linked, Redis away: why a private line to someone elsewhere cannot go.
pub const LINK_DOWN_MSG: &str = "the link to the other servers is down, so people there \
                                 cannot be reached; try again when it is back";

/// A connection's number, unique for the life of the server; logs use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A room's number, unique for the life of the server: what the writers
/// know a room by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u64);

/// What a client's certificate says, when mutual TLS is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The whole subject, for `/whois` and the log.
    pub subject: String,
    /// The common name, which becomes the client's nick.
    pub common_name: Option<String>,
}

/// What should follow from an event, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A line for one client (`\n` included).
    To {
        /// The client.
        id: ClientId,
        /// The line.
        line: Arc<str>,
    },
    /// A line for everyone in a room, but `except`.
    ToRoom {
        /// The room.
        room: RoomId,
        /// The line.
        line: Arc<str>,
        /// Left out: the one whose news it is, who was told otherwise.
        except: Option<ClientId>,
        /// What the room keeps of it.
        keep: Keep,
    },
    /// The client is in `room` from now on, and in no other.
    Enter {
        /// The client.
        id: ClientId,
        /// Its room.
        room: RoomId,
    },
    /// Nothing more goes to the client: once the lines before this are
    /// sent, close its connection.
    Close {
        /// The client.
        id: ClientId,
    },
    /// Linked only: ask the other servers whether a nick (in lower case)
    /// is free, and take it if so. The answer comes back to
    /// [`Chat::claimed`].
    Claim {
        /// The nick, in lower case.
        name: String,
    },
    /// Linked only: a nick someone here took on arrival, held for them
    /// across the servers from now on without an answer; should another
    /// server have it, [`Chat::name_lost`] is told.
    Hold {
        /// The nick, in lower case.
        name: String,
    },
    /// Linked only: nobody here goes by this nick (in lower case) any more.
    Release {
        /// The nick, in lower case.
        name: String,
    },
    /// Linked only: ask every server (this one included) its part of the
    /// answer to `/who`, `/rooms` or `/whois`; the parts come back to
    /// [`Chat::answered`].
    Query {
        /// Who asked.
        id: ClientId,
        /// What.
        query: Query,
        /// The page asked for, if any (the asker's business only).
        page: Option<String>,
    },
    /// Linked only: a private line for someone on another server. Whether
    /// it arrived comes back to [`Chat::private_sent`].
    Private {
        /// Who sent it.
        from: ClientId,
        /// The recipient, in lower case.
        to: String,
        /// The line.
        line: Arc<str>,
    },
}

/// Linked: a question every server answers for its own users, and the
/// asker's server puts the answers together ([`Chat::local_answer`],
/// [`Chat::answered`]).
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
    /// The question as one line of text, for Redis.
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

/// How far a question to every server went ([`Chat::answered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every server that heard it answered.
    Every,
    /// Some did not answer in time.
    Partial,
    /// It could not be asked: this server answered alone.
    HereOnly,
}

/// What a room keeps of a line said in it, beyond showing it.
///
/// On one server the chat keeps it at once. Linked to other servers
/// ([`Chat::linked`]), the room's one order is the order Redis gives, so
/// the chat keeps a line only when it comes back ([`Chat::heard`]),
/// whichever server it was said on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: a notice of who came or went.
    Nothing,
    /// A chat or action line: it goes into the room's history.
    History,
    /// The line sets the room's topic to this.
    Topic(Arc<str>),
}

/// Default for [`ChatSettings::max_sessions`]: a laptop, a phone and a few
/// reconnects whose old connections are not yet known to be dead (TCP
/// keepalive finds them within two minutes).
pub const MAX_SESSIONS: usize = 5;

/// Bytes of randomness in a reclaim secret: 128 bits, beyond guessing.
const SECRET_BYTES: usize = 16;

/// What the chat needs to know of the server's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatSettings {
    /// The longest line a client may send, named in the error for one longer.
    pub max_line: usize,
    /// Lines of history kept per room.
    pub history: usize,
    /// Rooms with more people than this do not announce who joins or quits.
    pub announce_limit: usize,
    /// With client certificates: the most connections one certificate
    /// identity may have at once.
    pub max_sessions: usize,
}

/// One connection in the chat: a session of a person.
#[derive(Debug)]
struct Session {
    peer: SocketAddr,
    /// Its person, by [`Nick::key`].
    person: String,
    /// It asked for reclaim secrets (`/token`): it gets a new one after each
    /// change of name.
    wants_token: bool,
}

/// Someone in the chat under one nick, in one room, with one or more
/// sessions: several only with client certificates, where the certificate,
/// not the connection, is who someone is.
#[derive(Debug)]
struct Person {
    nick: Nick,
    room: RoomId,
    /// Set with mutual TLS: the nick comes from it and cannot change.
    certificate: Option<PeerCertificate>,
    /// In the order they came; never empty while the person is here.
    sessions: Vec<ClientId>,
    /// Without certificates: the one secret that takes this nick back from
    /// a dropped connection, if one was asked for. Used once.
    secret: Option<[u8; SECRET_BYTES]>,
}

/// A room and what it remembers.
#[derive(Debug)]
struct RoomState {
    name: Room,
    /// The people in it by [`Nick::key`]: sorted, so `/who` walks it in
    /// order.
    members: BTreeSet<String>,
    topic: Option<String>,
    /// The last chat and action lines, as they were sent.
    history: VecDeque<Arc<str>>,
    /// Whether `topic` and `history` are known. Always, on one server;
    /// linked, once Redis has told them ([`Chat::recent`]): until then,
    /// whoever enters is shown them when they come.
    known: bool,
}

/// Everyone in the chat, their rooms, and the rules.
#[derive(Debug)]
pub struct Chat {
    settings: ChatSettings,
    sessions: HashMap<ClientId, Session>,
    /// By [`Nick::key`].
    people: HashMap<String, Person>,
    rooms: HashMap<RoomId, RoomState>,
    /// By [`Room::key`]; sorted, so `/rooms` comes out in order.
    room_names: BTreeMap<String, RoomId>,
    next_room: u64,
    /// One of several servers linked through Redis: rooms' history and
    /// topics are what comes back from Redis, not what is said here.
    linked: bool,
    /// Linked: this server's number among all that ever joined, which
    /// makes its guests' names (`guestN-ID`) unlike any other server's.
    node_number: u64,
    /// Linked: whether Redis can be reached, so that new nicks can be
    /// checked with the other servers.
    link_up: bool,
    /// Linked: nicks asked for (in lower case) until Redis answers: the
    /// session that asked, the nick, and the name it asked under (if it
    /// goes by another by then, the answer is not for it any more).
    claims: HashMap<String, (ClientId, Nick, String)>,
}

impl Chat {
    /// An empty chat.
    pub fn new(settings: ChatSettings) -> Chat {
        Chat {
            settings,
            sessions: HashMap::new(),
            people: HashMap::new(),
            rooms: HashMap::new(),
            room_names: BTreeMap::new(),
            next_room: 0,
            linked: false,
            node_number: 0,
            link_up: true,
            claims: HashMap::new(),
        }
    }

    /// An empty chat, one of several servers linked through Redis: a
    /// room's history and topic change only when its lines come back
    /// ([`Chat::heard`]), and a room's past is what Redis tells
    /// ([`Chat::recent`]). Nicks are one person's on every server: each
    /// is claimed in Redis before anyone here takes it ([`Output::Claim`]),
    /// and guests are named `guestN-ID`, `N` being `node_number`, this
    /// server's number among all that share the Redis.
    pub fn linked(settings: ChatSettings, node_number: u64) -> Chat {
        Chat {
            linked: true,
            node_number,
            ..Chat::new(settings)
        }
    }

    /// Linked: Redis went away (`false`) or came back. While it is away,
    /// nobody can take a new nick: the other servers cannot be asked.
    pub fn set_link_up(&mut self, up: bool) {
        self.link_up = up;
    }

    /// Whether questions about who is where go to every server: linked,
    /// and the link is up.
    fn asks_everyone(&self) -> bool {
        self.linked && self.link_up
    }

    /// Linked with the link down, an answer about this server's users
    /// says it is only that.
    fn only_here(&self, text: Result<String, String>) -> Result<String, String> {
        let mark = |text: String| {
            if self.linked && !self.link_up {
                format!("{text} (this server only: the link to the others is down)")
            } else {
                text
            }
        };
        text.map(mark).map_err(mark)
    }

    /// What `/whois` says of someone here.
    fn whois_text(&self, person: &Person) -> String {
        let mut text = format!("{} is in {}", person.nick, self.room_name(person.room));
        if let Some(cert) = &person.certificate {
            text.push_str(&format!(", certificate {}", cert.subject));
        }
        if person.sessions.len() > 1 {
            text.push_str(&format!(", {} sessions", person.sessions.len()));
        }
        text
    }

    /// Linked: Redis answered an [`Output::Claim`] for `name`.
    pub fn claimed(&mut self, name: &str, claim: Claim, out: &mut Vec<Output>) {
        let Some((id, nick, from)) = self.claims.remove(name) else {
            return;
        };
        // Gone, or renamed meanwhile (`/reclaim`, a lapsed name): it no
        // longer wants this one.
        let asker = self
            .person_of(id)
            .map(|person| person.nick.key())
            .filter(|key| *key == from);
        // Someone here took it meanwhile (a certificate's name, say): it
        // stays theirs.
        let theirs = self.people.contains_key(name);
        match (claim, asker) {
            (Claim::Ours, Some(_)) if theirs => {
                let text = format!("nick {nick} is taken; choose another");
                out.push(to(id, ServerLine::Error(&text)));
            }
            (Claim::Ours, None) if theirs => {}
            // Still here and still wanting it: the name changes now.
            (Claim::Ours, Some(old)) => {
                self.rename(id, nick, out);
                out.push(Output::Release { name: old });
            }
            (Claim::Ours, None) => out.push(Output::Release {
                name: name.to_owned(),
            }),
            (Claim::Taken, Some(_)) => {
                let text = format!("nick {nick} is taken on another server; choose another");
                out.push(to(id, ServerLine::Error(&text)));
            }
            (Claim::Down, Some(_)) => out.push(to(id, ServerLine::Error(LINK_DOWN_NICK))),
            (Claim::Busy, Some(_)) => {
                let text = "the other servers are busy; try /nick again in a moment";
                out.push(to(id, ServerLine::Error(text)));
            }
            (Claim::Taken | Claim::Down | Claim::Busy, None) => {}
        }
    }

    /// Linked: `name`, held by someone here, is someone else's on another
    /// server: it lapsed while Redis was away (`lapsed`), or was theirs
    /// already when this one arrived with it (a certificate's name, say).
    /// A guest or a chosen nick becomes a new guest name; a certificate's
    /// name cannot change, so its sessions are closed.
    pub fn name_lost(&mut self, name: &str, lapsed: bool, out: &mut Vec<Output>) {
        let Some(person) = self.people.get(name) else {
            return;
        };
        let sessions = person.sessions.clone();
        let Some(&first) = sessions.first() else {
            return;
        };
        let text = if lapsed {
            format!(
                "your nick {} lapsed while this server could not reach the others, and \
                 someone there has it now",
                person.nick
            )
        } else {
            format!("{} is connected on another server", person.nick)
        };
        for &id in &sessions {
            out.push(to(id, ServerLine::Error(&text)));
        }
        if person.certificate.is_some() {
            let notice = Notice::Quit {
                nick: person.nick.as_str(),
                reason: None,
            }
            .to_string();
            for id in sessions {
                self.sessions.remove(&id);
                out.push(Output::Close { id });
            }
            self.remove_person_quietly(name, &notice, out);
            return;
        }
        // A guest name of this server's (current) number; should that be
        // the very name lost (Redis lost its data, and the number was
        // given again), one from a range no connection reaches.
        let mut guest = self.free_guest_nick(first);
        if guest.key() == name {
            guest = self.free_guest_nick(ClientId(first.0 + (1 << 40)));
        }
        out.push(Output::Hold { name: guest.key() });
        self.rename(first, guest, out);
    }

    /// Linked: Redis lost its data, and this server has a new number
    /// ([`Chat::linked`]): guests from now on are named by it.
    pub fn set_node_number(&mut self, number: u64) {
        self.node_number = number;
    }

    /// Linked: this server's part of the answer to `query`: the nicks in
    /// the room, space-separated; the rooms and their counts, `NAME
    /// COUNT` pairs; or the `/whois` answer, empty if the nick is not
    /// here.
    pub fn local_answer(&self, query: &Query) -> String {
        match query {
            Query::Who(room) => {
                let Some(state) = self.room_named(room).and_then(|room| self.rooms.get(&room))
                else {
                    return String::new();
                };
                let nicks: Vec<&str> = state
                    .members
                    .iter()
                    .filter_map(|key| self.people.get(key).map(|p| p.nick.as_str()))
                    .collect();
                nicks.join(" ")
            }
            Query::Rooms => {
                let rooms: Vec<String> = self
                    .room_names
                    .values()
                    .filter_map(|room| self.rooms.get(room))
                    .filter(|state| !state.members.is_empty())
                    .map(|state| format!("{} {}", state.name, state.members.len()))
                    .collect();
                rooms.join(" ")
            }
            Query::Whois(name) => self
                .people
                .get(name)
                .map(|person| self.whois_text(person))
                .unwrap_or_default(),
        }
    }

    /// Linked: every server's part of the answer to what `id` asked, and
    /// how far the question went.
    pub fn answered(
        &self,
        id: ClientId,
        query: &Query,
        page: Option<&str>,
        parts: &[String],
        reach: Reach,
        out: &mut Vec<Output>,
    ) {
        if !self.sessions.contains_key(&id) {
            return;
        }
        let text = match query {
            Query::Who(room) => {
                let mut nicks: Vec<&str> = parts.iter().flat_map(|part| part.split(' ')).collect();
                nicks.retain(|nick| !nick.is_empty());
                nicks.sort_by_key(|nick| nick.to_ascii_lowercase());
                nicks.dedup();
                let count = nicks.len();
                page_of("/who", page, count, WHO_PAGE).map(|(page, first)| {
                    let names = nicks.iter().skip(first).take(WHO_PAGE).copied().collect();
                    Notice::Who(WhoList {
                        room,
                        count,
                        page: Page::of(page, count, WHO_PAGE),
                        names,
                        remark: None,
                    })
                    .to_string()
                })
            }
            Query::Rooms => {
                let mut rooms: BTreeMap<String, (&str, usize)> = BTreeMap::new();
                for part in parts {
                    let mut words = part.split(' ');
                    while let (Some(name), Some(count)) = (words.next(), words.next()) {
                        let count: usize = count.parse().unwrap_or(0);
                        let entry = rooms.entry(name.to_ascii_lowercase()).or_insert((name, 0));
                        entry.1 += count;
                    }
                }
                let count = rooms.len();
                page_of("/rooms", page, count, ROOMS_PAGE).map(|(page, first)| {
                    let shown = rooms.values().skip(first).take(ROOMS_PAGE).copied();
                    Notice::Rooms(RoomList {
                        page: Page::of(page, count, ROOMS_PAGE),
                        rooms: shown.collect(),
                        remark: None,
                    })
                    .to_string()
                })
            }
            Query::Whois(name) => parts
                .iter()
                .find(|part| !part.is_empty())
                .cloned()
                .ok_or_else(|| format!("no user named {name} is connected")),
        };
        let text = match (text, reach) {
            (Ok(text), Reach::Partial) => Ok(format!("{text} (not every server answered in time)")),
            (Ok(text), Reach::HereOnly) => Ok(format!(
                "{text} (this server only: the others could not be asked)"
            )),
            (other, _) => other,
        };
        out.push(reply(id, text));
    }

    /// Linked: what `id` asked could not be asked of the other servers
    /// (Redis refused it): this server answers alone, and says so.
    pub fn answer_here(
        &self,
        id: ClientId,
        query: &Query,
        page: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        let here = [self.local_answer(query)];
        self.answered(id, query, page, &here, Reach::HereOnly, out);
    }

    /// Linked: a private line for `to`, who is here, from another server.
    pub fn private_in(&self, to: &str, line: &Arc<str>, out: &mut Vec<Output>) {
        if let Some(person) = self.people.get(to) {
            for &id in &person.sessions {
                let line = Arc::clone(line);
                out.push(Output::To { id, line });
            }
        }
    }

    /// Linked: what became of a private line `from` sent to `to` on
    /// another server. Delivered, it shows in every session of the
    /// sender; otherwise the sender is told why not.
    pub fn private_sent(
        &self,
        from: ClientId,
        to: &str,
        line: &Arc<str>,
        sent: Sent,
        out: &mut Vec<Output>,
    ) {
        let Some(person) = self.person_of(from) else {
            return;
        };
        match sent {
            Sent::Delivered => self.private_in(&person.nick.key(), line, out),
            Sent::NoOne => {
                let text = format!("no user named {to} is connected");
                out.push(self::to(from, ServerLine::Error(&text)));
            }
            Sent::Down => out.push(self::to(from, ServerLine::Error(LINK_DOWN_MSG))),
        }
    }

    /// The room called `name` (in any case), if anyone here is in it.
    pub fn room_named(&self, name: &str) -> Option<RoomId> {
        self.room_names.get(&name.to_ascii_lowercase()).copied()
    }

    /// What every server calls a room: its name, in lower case.
    pub fn room_key(&self, room: RoomId) -> Option<String> {
        self.rooms.get(&room).map(|state| state.name.key())
    }

    /// A line of `room` came back from Redis: the room keeps what `keep`
    /// says. (On one server, rooms keep their lines as they are said.)
    pub fn heard(&mut self, room: RoomId, line: &Arc<str>, keep: &Keep) {
        let max = self.settings.history;
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        match keep {
            Keep::Nothing => {}
            Keep::History => remember(&mut state.history, max, line),
            Keep::Topic(topic) => state.topic = Some(topic.to_string()),
        }
    }

    /// What `room` had said before this server joined it, as Redis keeps
    /// it: its last chat and action lines (oldest first) and its topic.
    /// Everyone in the room now entered before it was known, so each of
    /// their sessions is shown it.
    pub fn recent(
        &mut self,
        room: RoomId,
        lines: impl IntoIterator<Item = Arc<str>>,
        topic: Option<String>,
        out: &mut Vec<Output>,
    ) {
        let max = self.settings.history;
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        state.history.clear();
        for line in lines {
            remember(&mut state.history, max, &line);
        }
        state.topic = topic;
        state.known = true;
        let state = &self.rooms[&room];
        for key in &state.members {
            let Some(person) = self.people.get(key) else {
                continue;
            };
            for &id in &person.sessions {
                show_past(id, state, out);
            }
        }
    }

    /// A notice for every session here (that the link to the other
    /// servers is down, say).
    pub fn tell_everyone(&self, text: &str, out: &mut Vec<Output>) {
        let line: Arc<str> = ServerLine::Notice(text).to_wire().into();
        for &id in self.sessions.keys() {
            out.push(Output::To {
                id,
                line: Arc::clone(&line),
            });
        }
    }

    /// A notice for everyone in `room`.
    pub fn tell_room(&self, room: RoomId, text: &str, out: &mut Vec<Output>) {
        if self.rooms.contains_key(&room) {
            out.push(to_room(room, ServerLine::Notice(text), None));
        }
    }

    /// People in the chat.
    pub fn len(&self) -> usize {
        self.people.len()
    }

    /// True if nobody is in the chat.
    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
    }

    /// A client finished its handshake and was admitted: it gets a name and
    /// the lobby, or a refusal that says why (a certificate whose name is
    /// not a valid nick, or a nick taken by someone else, or too many
    /// sessions). With a certificate whose name is already here, it is one
    /// more session of that person.
    pub fn join(
        &mut self,
        id: ClientId,
        peer: SocketAddr,
        certificate: Option<PeerCertificate>,
        out: &mut Vec<Output>,
    ) {
        if self.sessions.contains_key(&id) {
            log::warn!("{id} {peer}: joined twice; the second is ignored");
            return;
        }
        let nick = match &certificate {
            Some(cert) => match cert.common_name.as_deref().map(Nick::parse) {
                Some(Ok(nick)) => Ok(nick),
                _ => Err(format!(
                    "your certificate's common name ({}) is not a valid nick: \
                     it must be 1 to 24 letters, digits, _ or -, starting with a letter or _",
                    cert.subject
                )),
            },
            None => Ok(self.free_guest_nick(id)),
        };
        let refusal = match &nick {
            Err(why) => Some(why.clone()),
            Ok(nick) => match self.people.get(&nick.key()) {
                None => None,
                // Another session of someone here: the certificate says so.
                Some(person) if certificate.is_some() && person.certificate.is_some() => {
                    let max = self.settings.max_sessions.max(1);
                    (person.sessions.len() >= max).then(|| {
                        Refusal::TooManySessions {
                            nick: nick.as_str(),
                            max,
                        }
                        .to_string()
                    })
                }
                Some(_) => Some(format!("{nick} is already connected")),
            },
        };
        if let Some(why) = refusal {
            log::info!("{id} {peer}: refused: {why}");
            out.push(to(id, ServerLine::Error(&why)));
            out.push(Output::Close { id });
            return;
        }
        let Ok(nick) = nick else {
            return;
        };
        let key = nick.key();
        let session = Session {
            peer,
            person: key.clone(),
            wants_token: false,
        };
        self.sessions.insert(id, session);
        out.push(to(id, ServerLine::Notice(protocol::WELCOME)));
        if let Some(person) = self.people.get_mut(&key) {
            person.sessions.push(id);
            let count = person.sessions.len();
            let nick = &person.nick;
            log::info!("{id} {peer}: joined as {nick}, session {count}");
            let text = Notice::YouAre {
                nick: nick.as_str(),
                sessions: Some(count),
            }
            .to_string();
            out.push(to(id, ServerLine::Notice(&text)));
            let room = person.room;
            self.show_room(id, room, out);
            return;
        }
        log::info!("{id} {peer}: joined as {nick}");
        let text = Notice::YouAre {
            nick: nick.as_str(),
            sessions: None,
        }
        .to_string();
        out.push(to(id, ServerLine::Notice(&text)));
        let lobby = self.room_for(Room::lobby());
        let person = Person {
            nick,
            room: lobby,
            certificate,
            sessions: vec![id],
            secret: None,
        };
        self.people.insert(key.clone(), person);
        if self.linked {
            out.push(Output::Hold { name: key.clone() });
        }
        self.enter_room(&key, lobby, out);
    }

    /// The client sent a line (or something refused as one).
    pub fn line(&mut self, id: ClientId, frame: Frame, out: &mut Vec<Output>) {
        // Lines from a client that said bye still arrive; they are dropped.
        if !self.sessions.contains_key(&id) {
            return;
        }
        let text = match frame {
            Frame::Line(text) => text,
            Frame::TooLong => {
                let text = format!(
                    "line too long: the limit is {} bytes; it was not sent",
                    self.settings.max_line
                );
                return out.push(to(id, ServerLine::Error(&text)));
            }
            Frame::InvalidUtf8 => {
                let text = "line is not valid UTF-8; it was not sent";
                return out.push(to(id, ServerLine::Error(text)));
            }
        };
        match protocol::parse_command(&text) {
            Ok(None) => {}
            Ok(Some(command)) => self.command(id, command, out),
            Err(err) => out.push(to(id, ServerLine::Error(&err.to_string()))),
        }
    }

    /// The client sends faster than its rate limit; its lines are delayed.
    pub fn throttled(&mut self, id: ClientId, out: &mut Vec<Output>) {
        if self.sessions.contains_key(&id) {
            let text = "you are sending too fast: your lines are being delayed (none are lost)";
            out.push(to(id, ServerLine::Error(text)));
        }
    }

    /// The connection ended. If the client was still in the chat, it leaves:
    /// the room is told (`public` is the reason it hears, if any beyond
    /// "quit") unless the person has other sessions, and its connection is
    /// closed. `reason` is for the log.
    pub fn left(
        &mut self,
        id: ClientId,
        public: Option<&str>,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        self.remove_session(id, public, reason, out);
    }

    /// The server is stopping: everyone is told, then closed.
    pub fn shutdown(&mut self, out: &mut Vec<Output>) {
        // Linked, the rooms live on elsewhere: their members there hear
        // who went with this server (here, everyone is told below).
        if self.linked {
            for person in self.people.values() {
                let announce = self
                    .rooms
                    .get(&person.room)
                    .is_some_and(|state| state.members.len() <= self.settings.announce_limit);
                if announce {
                    let text = Notice::Quit {
                        nick: person.nick.as_str(),
                        reason: Some(SHUTDOWN_QUIT),
                    }
                    .to_string();
                    out.push(to_room(person.room, ServerLine::Notice(&text), None));
                }
            }
        }
        let notice: Arc<str> = ServerLine::Notice(SHUTDOWN_NOTICE).to_wire().into();
        for &id in self.sessions.keys() {
            out.push(Output::To {
                id,
                line: Arc::clone(&notice),
            });
            out.push(Output::Close { id });
        }
        self.sessions.clear();
        self.people.clear();
        self.rooms.clear();
        self.room_names.clear();
    }

    /// `guestN`, N the connection's number unless someone took that name;
    /// linked, `guestS-N`, S the server's number.
    fn free_guest_nick(&self, id: ClientId) -> Nick {
        let prefix = if self.linked {
            format!("guest{}-", self.node_number)
        } else {
            "guest".to_owned()
        };
        (id.0..)
            .filter_map(|n| Nick::parse(&format!("{prefix}{n}")).ok())
            .find(|nick| !self.people.contains_key(&nick.key()))
            .unwrap_or_else(|| unreachable!("fewer clients than numbers"))
    }

    /// The session and its person.
    fn person_of(&self, id: ClientId) -> Option<&Person> {
        self.people.get(&self.sessions.get(&id)?.person)
    }

    fn command(&mut self, id: ClientId, command: Command<'_>, out: &mut Vec<Output>) {
        let Some(person) = self.person_of(id) else {
            return;
        };
        let room = person.room;
        match command {
            Command::Say(text) => {
                // The sender's sessions get the line too: the sending one as
                // its acknowledgement, in the same order everyone else sees.
                let from = person.nick.as_str();
                self.say_in_room(room, ServerLine::Chat { from, text }.to_wire(), out);
                if protocol::is_greeting(text) {
                    out.push(to(id, ServerLine::Notice(protocol::HI_REPLY)));
                }
            }
            Command::Me(text) => {
                let from = person.nick.as_str();
                self.say_in_room(room, ServerLine::Action { from, text }.to_wire(), out);
            }
            Command::Nick(name) => self.change_nick(id, name, out),
            Command::Join(name) => self.join_room(id, name, out),
            // Linked, every server answers for its own users.
            Command::Rooms(page) if self.asks_everyone() => out.push(Output::Query {
                id,
                query: Query::Rooms,
                page: page.map(str::to_owned),
            }),
            Command::Rooms(page) => {
                let text = self.rooms_page(page);
                out.push(reply(id, self.only_here(text)));
            }
            Command::Who(page) if self.asks_everyone() => out.push(Output::Query {
                id,
                query: Query::Who(self.room_name(room).to_owned()),
                page: page.map(str::to_owned),
            }),
            Command::Who(page) => {
                let text = self.who_page(room, page);
                out.push(reply(id, self.only_here(text)));
            }
            Command::Whois(name) => {
                let key = name.to_ascii_lowercase();
                let text = match self.people.get(&key) {
                    Some(other) => Ok(self.whois_text(other)),
                    None if self.asks_everyone() && Nick::parse(name).is_ok() => {
                        return out.push(Output::Query {
                            id,
                            query: Query::Whois(key),
                            page: None,
                        });
                    }
                    None => self.only_here(Err(format!("no user named {name} is connected"))),
                };
                out.push(reply(id, text));
            }
            Command::Msg { to: name, text } => match self.people.get(&name.to_ascii_lowercase()) {
                Some(recipient) => {
                    let line: Arc<str> = ServerLine::Private {
                        from: person.nick.as_str(),
                        to: recipient.nick.as_str(),
                        text,
                    }
                    .to_wire()
                    .into();
                    // Every session of both: what one sends appears in
                    // the others.
                    let mut ids = person.sessions.clone();
                    if recipient.nick != person.nick {
                        ids.extend(&recipient.sessions);
                    }
                    for id in ids {
                        let line = Arc::clone(&line);
                        out.push(Output::To { id, line });
                    }
                }
                // Perhaps on another server: Redis knows.
                None if self.linked && Nick::parse(name).is_ok() => {
                    if !self.link_up {
                        return out.push(to(id, ServerLine::Error(LINK_DOWN_MSG)));
                    }
                    let line = ServerLine::Private {
                        from: person.nick.as_str(),
                        to: name,
                        text,
                    }
                    .to_wire()
                    .into();
                    out.push(Output::Private {
                        from: id,
                        to: name.to_ascii_lowercase(),
                        line,
                    });
                }
                None => {
                    let text = format!("no user named {name} is connected");
                    out.push(to(id, ServerLine::Error(&text)));
                }
            },
            Command::Topic(None) => {
                let text = match self.rooms.get(&room) {
                    Some(RoomState {
                        name,
                        topic: Some(topic),
                        ..
                    }) => format!("topic of {name}: {topic}"),
                    _ => format!(
                        "{} has no topic; set one with /topic TEXT",
                        self.room_name(room)
                    ),
                };
                out.push(to(id, ServerLine::Notice(&text)));
            }
            Command::Topic(Some(topic)) => {
                let nick = person.nick.to_string();
                let linked = self.linked;
                let Some(state) = self.rooms.get_mut(&room) else {
                    return;
                };
                if !linked {
                    state.topic = Some(topic.to_string());
                }
                let text = format!("{nick} set the topic of {}: {topic}", state.name);
                out.push(Output::ToRoom {
                    room,
                    line: ServerLine::Notice(&text).to_wire().into(),
                    except: None,
                    keep: Keep::Topic(topic.into()),
                });
            }
            Command::Help(None) => {
                let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
                let text = format!("commands: {}", names.join(" "));
                out.push(to(id, ServerLine::Notice(&text)));
                for info in COMMANDS {
                    let text = format!("{}: {}", info.usage, info.help);
                    out.push(to(id, ServerLine::Notice(&text)));
                }
                let text = "anything else you type is said to the room; \
                            start it with // to say a line that begins with /";
                out.push(to(id, ServerLine::Notice(text)));
            }
            Command::Help(Some(name)) => {
                let text = match protocol::command_info(name) {
                    Some(info) => Ok(format!("{}: {}", info.usage, info.help)),
                    None => Err(format!("no command {name}: /help lists the commands")),
                };
                out.push(reply(id, text));
            }
            Command::Quit(reason) => {
                out.push(to(id, ServerLine::Notice(protocol::BYE_REPLY)));
                let public = reason.map(str::to_string);
                self.remove_session(id, public.as_deref(), "said goodbye", out);
            }
            Command::Token => {
                if person.certificate.is_some() {
                    let text = "your certificate is who you are: no secret is needed to \
                                come back, just connect again";
                    return out.push(to(id, ServerLine::Error(text)));
                }
                let key = person.nick.key();
                if let Some(session) = self.sessions.get_mut(&id) {
                    session.wants_token = true;
                }
                self.give_secret(id, &key, out);
            }
            Command::Reclaim { nick, secret } => self.reclaim(id, nick, secret, out),
        }
    }

    /// A new secret for `key`'s nick, for session `id`: the last one given
    /// stops working.
    fn give_secret(&mut self, id: ClientId, key: &str, out: &mut Vec<Output>) {
        let Some(person) = self.people.get_mut(key) else {
            return;
        };
        let mut secret = [0u8; SECRET_BYTES];
        if fill_random(&mut secret).is_err() {
            // Without randomness no secret is safe to give: say so rather
            // than hand out a guessable one.
            let text = "no secret can be made right now; try /token again later";
            return out.push(to(id, ServerLine::Error(text)));
        }
        person.secret = Some(secret);
        let text = hex(&secret);
        let nick = person.nick.as_str();
        out.push(to(
            id,
            ServerLine::Token {
                nick,
                secret: &text,
            },
        ));
    }

    /// `/reclaim NICK SECRET`: the session takes NICK (and its room) back
    /// from the sessions that hold it, which are closed without a word to
    /// the room: for everyone else, NICK never left.
    fn reclaim(&mut self, id: ClientId, nick: &str, secret: &str, out: &mut Vec<Output>) {
        let key = nick.to_ascii_lowercase();
        let Some(current) = self.sessions.get(&id).map(|s| s.person.clone()) else {
            return;
        };
        if current == key {
            let text = Notice::YouAreAlready { nick }.to_string();
            return out.push(to(id, ServerLine::Notice(&text)));
        }
        let matches = self.people.get(&key).is_some_and(|holder| {
            holder.certificate.is_none()
                && holder
                    .secret
                    .is_some_and(|wanted| same_secret(&wanted, secret))
        });
        if !matches {
            // The same answer whether the nick is free, held without a
            // secret, or the secret is wrong: it tells a guesser nothing.
            let text = Refusal::CannotReclaim { nick }.to_string();
            return out.push(to(id, ServerLine::Error(&text)));
        }
        let Some(holder) = self.people.get_mut(&key) else {
            return;
        };
        // The secret works once.
        holder.secret = None;
        let ghosts = std::mem::replace(&mut holder.sessions, vec![id]);
        let (room, name) = (holder.room, holder.nick.clone());
        for ghost in ghosts {
            self.sessions.remove(&ghost);
            log::info!("{ghost}: replaced by {id}, which reclaimed {name}");
            out.push(Output::Close { id: ghost });
        }
        // The session's own name of a moment ago goes as if it had moved
        // away, told once the session is in its new room.
        if self.linked {
            out.push(Output::Release {
                name: current.clone(),
            });
        }
        let left = self.people.remove(&current).map(|guest| {
            let notice = Notice::Left {
                nick: guest.nick.as_str(),
                room: self.room_name(guest.room),
            }
            .to_string();
            self.leave_room(&current, guest.room);
            (guest.room, notice)
        });
        if let Some(session) = self.sessions.get_mut(&id) {
            session.person = key.clone();
            session.wants_token = true;
        }
        log::info!("{id}: reclaimed {name}");
        let text = Notice::YouAreBack {
            nick: name.as_str(),
        }
        .to_string();
        out.push(to(id, ServerLine::Notice(&text)));
        self.show_room(id, room, out);
        if let Some((old_room, notice)) = left {
            // The session may be in that very room, as its new self.
            self.tell_leaving(old_room, &notice, Some(id), out);
        }
        self.give_secret(id, &key, out);
    }

    fn change_nick(&mut self, id: ClientId, name: &str, out: &mut Vec<Output>) {
        let Some(person) = self.person_of(id) else {
            return;
        };
        let new = match Nick::parse(name) {
            Ok(new) => new,
            Err(why) => return out.push(invalid(id, name, "nick", why, "")),
        };
        let old = &person.nick;
        if new == *old {
            let text = Notice::YouAreAlready { nick: new.as_str() }.to_string();
            return out.push(to(id, ServerLine::Notice(&text)));
        }
        if person.certificate.is_some() {
            let text =
                format!("your nick is {old}, the name in your certificate; it cannot be changed");
            return out.push(to(id, ServerLine::Error(&text)));
        }
        let (old_key, new_key) = (old.key(), new.key());
        // Changing only the case of one's own nick is allowed.
        let other = old_key != new_key;
        if other && (self.people.contains_key(&new_key) || self.claims.contains_key(&new_key)) {
            let text = format!("nick {new} is taken; choose another");
            return out.push(to(id, ServerLine::Error(&text)));
        }
        if self.linked && other {
            // Guests' names are the servers' to give: one taken here could
            // be given to a newcomer on another server.
            if is_guest_name(&new_key) {
                let text = format!(
                    "{new} is a guest name, and the servers give those out; choose another"
                );
                return out.push(to(id, ServerLine::Error(&text)));
            }
            if self.claims.values().any(|(asker, ..)| *asker == id) {
                let text = "wait: the other servers have not yet answered your last /nick";
                return out.push(to(id, ServerLine::Error(text)));
            }
            if !self.link_up {
                return out.push(to(id, ServerLine::Error(LINK_DOWN_NICK)));
            }
            self.claims.insert(new_key.clone(), (id, new, old_key));
            return out.push(Output::Claim { name: new_key });
        }
        self.rename(id, new, out);
    }

    /// Session `id`'s person is called `new` from now on; it and its room
    /// are told.
    fn rename(&mut self, id: ClientId, new: Nick, out: &mut Vec<Output>) {
        let Some(person) = self.person_of(id) else {
            return;
        };
        let (old_key, new_key) = (person.nick.key(), new.key());
        let old = &person.nick;
        let room = person.room;
        log::info!("{id}: {old} is now {new}");
        let notice = Notice::Renamed {
            old: old.as_str(),
            new: new.as_str(),
        }
        .to_string();
        let Some(mut person) = self.people.remove(&old_key) else {
            return;
        };
        // A secret is for one name: the old one's dies with it.
        person.secret = None;
        person.nick = new.clone();
        for session in &person.sessions {
            if let Some(session) = self.sessions.get_mut(session) {
                session.person = new_key.clone();
            }
        }
        self.people.insert(new_key.clone(), person);
        if let Some(state) = self.rooms.get_mut(&room) {
            state.members.remove(&old_key);
            state.members.insert(new_key.clone());
        }
        let text = Notice::YouAreNow { nick: new.as_str() }.to_string();
        out.push(to(id, ServerLine::Notice(&text)));
        out.push(to_room(room, ServerLine::Notice(&notice), Some(id)));
        if self.sessions.get(&id).is_some_and(|s| s.wants_token) {
            self.give_secret(id, &new_key, out);
        }
    }

    fn join_room(&mut self, id: ClientId, name: &str, out: &mut Vec<Output>) {
        let Some(person) = self.person_of(id) else {
            return;
        };
        let target = match Room::parse(name) {
            Ok(target) => target,
            Err(why) => return out.push(invalid(id, name, "room name", why, "# and then ")),
        };
        let current = person.room;
        if self.room_names.get(&target.key()) == Some(&current) {
            let text = Notice::AlreadyIn {
                room: self.room_name(current),
            }
            .to_string();
            return out.push(to(id, ServerLine::Notice(&text)));
        }
        let key = person.nick.key();
        let notice = Notice::Left {
            nick: person.nick.as_str(),
            room: self.room_name(current),
        }
        .to_string();
        self.leave_room(&key, current);
        let room = self.room_for(target);
        if let Some(person) = self.people.get_mut(&key) {
            person.room = room;
        }
        self.enter_room(&key, room, out);
        // Told once the person's sessions are in the new room, so that
        // none of them hears it.
        self.tell_leaving(current, &notice, None, out);
    }

    /// The room named `name`, made if it does not exist yet.
    fn room_for(&mut self, name: Room) -> RoomId {
        if let Some(&room) = self.room_names.get(&name.key()) {
            return room;
        }
        self.next_room += 1;
        let room = RoomId(self.next_room);
        self.room_names.insert(name.key(), room);
        self.rooms.insert(
            room,
            RoomState {
                name,
                members: BTreeSet::new(),
                topic: None,
                history: VecDeque::new(),
                known: !self.linked,
            },
        );
        room
    }

    /// Puts a person into a room (its `room` already says so): the room is
    /// told, then each of its sessions enters and is shown the room.
    fn enter_room(&mut self, key: &str, room: RoomId, out: &mut Vec<Output>) {
        let (Some(person), Some(state)) = (self.people.get(key), self.rooms.get_mut(&room)) else {
            return;
        };
        state.members.insert(key.to_string());
        if state.members.len() <= self.settings.announce_limit {
            // Before the sessions enter, so that none of them hears it.
            // Linked, it is shown only once back from Redis, when they are
            // in: the first (most often the only) is left out by name.
            let notice = Notice::Joined {
                nick: person.nick.as_str(),
                room: state.name.as_str(),
            }
            .to_string();
            let except = if self.linked {
                person.sessions.first().copied()
            } else {
                None
            };
            out.push(to_room(room, ServerLine::Notice(&notice), except));
        }
        for &id in &person.sessions.clone() {
            self.show_room(id, room, out);
        }
    }

    /// One session enters the room its person is in, and is shown it: who
    /// is there, the topic, the history.
    fn show_room(&self, id: ClientId, room: RoomId, out: &mut Vec<Output>) {
        let Some(state) = self.rooms.get(&room) else {
            return;
        };
        out.push(Output::Enter { id, room });
        let text = Notice::YouAreIn {
            room: state.name.as_str(),
            here: state.members.len(),
        }
        .to_string();
        out.push(to(id, ServerLine::Notice(&text)));
        if state.known {
            show_past(id, state, out);
        }
    }

    /// Takes a person out of a room's list; an empty room is forgotten,
    /// except the lobby.
    fn leave_room(&mut self, key: &str, room: RoomId) {
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        state.members.remove(key);
        if !state.members.is_empty() {
            return;
        }
        if state.name.as_str() != protocol::LOBBY {
            self.room_names.remove(&state.name.key());
            self.rooms.remove(&room);
        } else if self.linked {
            // Nobody here hears the lobby any more: what it knew goes
            // stale, and is asked for again when someone comes back.
            state.known = false;
            state.history.clear();
            state.topic = None;
        }
    }

    /// Tells a room someone left it, once its sessions are out of it (but
    /// `except`, a session that may still be there under another name).
    fn tell_leaving(
        &self,
        room: RoomId,
        notice: &str,
        except: Option<ClientId>,
        out: &mut Vec<Output>,
    ) {
        // Linked, the room may live on on other servers, with nobody here.
        let announce = match self.rooms.get(&room) {
            None => self.linked,
            Some(state) if self.linked => state.members.len() < self.settings.announce_limit,
            Some(state) => (1..self.settings.announce_limit).contains(&state.members.len()),
        };
        if announce {
            out.push(to_room(room, ServerLine::Notice(notice), except));
        }
    }

    /// Takes one session out of the chat; its connection is closed once
    /// what is queued for it is sent. If it was its person's last, the
    /// person leaves too, and the room is told (`public` is the reason).
    fn remove_session(
        &mut self,
        id: ClientId,
        public: Option<&str>,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        out.push(Output::Close { id });
        let Some(person) = self.people.get_mut(&session.person) else {
            return;
        };
        person.sessions.retain(|&other| other != id);
        if !person.sessions.is_empty() {
            let left = person.sessions.len();
            log::info!(
                "{id} {}: a session of {} left: {reason}; {left} left",
                session.peer,
                person.nick
            );
            return;
        }
        log::info!("{id} {}: {} left: {reason}", session.peer, person.nick);
        let notice = Notice::Quit {
            nick: person.nick.as_str(),
            reason: public,
        }
        .to_string();
        self.remove_person_quietly(&session.person, &notice, out);
    }

    /// Forgets a person whose sessions are gone or closed, and tells its
    /// room `notice`.
    fn remove_person_quietly(&mut self, key: &str, notice: &str, out: &mut Vec<Output>) {
        let Some(person) = self.people.remove(key) else {
            return;
        };
        if self.linked {
            out.push(Output::Release {
                name: key.to_owned(),
            });
        }
        self.leave_room(key, person.room);
        self.tell_leaving(person.room, notice, None, out);
    }

    /// `/who [PAGE]`: the names in a room, sorted, a page at a time.
    fn who_page(&self, room: RoomId, page: Option<&str>) -> Result<String, String> {
        let Some(state) = self.rooms.get(&room) else {
            return Err("you are in no room".to_string());
        };
        let count = state.members.len();
        let (page, first) = page_of("/who", page, count, WHO_PAGE)?;
        let names = state
            .members
            .iter()
            .skip(first)
            .take(WHO_PAGE)
            .filter_map(|key| self.people.get(key).map(|p| p.nick.as_str()))
            .collect();
        Ok(Notice::Who(WhoList {
            room: state.name.as_str(),
            count,
            page: Page::of(page, count, WHO_PAGE),
            names,
            remark: None,
        })
        .to_string())
    }

    /// `/rooms [PAGE]`: the rooms and how many are in each, sorted.
    fn rooms_page(&self, page: Option<&str>) -> Result<String, String> {
        let count = self.room_names.len();
        let (page, first) = page_of("/rooms", page, count, ROOMS_PAGE)?;
        let rooms = self
            .room_names
            .values()
            .skip(first)
            .take(ROOMS_PAGE)
            .filter_map(|room| self.rooms.get(room))
            .map(|state| (state.name.as_str(), state.members.len()));
        Ok(Notice::Rooms(RoomList {
            page: Page::of(page, count, ROOMS_PAGE),
            rooms: rooms.collect(),
            remark: None,
        })
        .to_string())
    }

    fn room_name(&self, room: RoomId) -> &str {
        self.rooms
            .get(&room)
            .map_or("?", |state| state.name.as_str())
    }

    /// A chat or action line: to everyone in the room, and into its history.
    fn say_in_room(&mut self, room: RoomId, line: String, out: &mut Vec<Output>) {
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        let line: Arc<str> = line.into();
        if !self.linked {
            remember(&mut state.history, self.settings.history, &line);
        }
        out.push(Output::ToRoom {
            room,
            line,
            except: None,
            keep: Keep::History,
        });
    }
}

/// Whether `key` is one of the names linked servers give their guests,
/// `guestS-N`.
fn is_guest_name(key: &str) -> bool {
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    key.strip_prefix("guest")
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(server, number)| digits(server) && digits(number))
}

/// Keeps `line` among a room's last `max` lines.
fn remember(history: &mut VecDeque<Arc<str>>, max: usize, line: &Arc<str>) {
    if max == 0 {
        return;
    }
    while history.len() >= max {
        history.pop_front();
    }
    history.push_back(Arc::clone(line));
}

/// What a newcomer to a room is shown of its past: its topic, and its
/// last lines.
fn show_past(id: ClientId, state: &RoomState, out: &mut Vec<Output>) {
    if let Some(topic) = &state.topic {
        let text = format!("topic of {}: {topic}", state.name);
        out.push(to(id, ServerLine::Notice(&text)));
    }
    for line in &state.history {
        out.push(to(id, ServerLine::History(line)));
    }
}

/// Fills `buf` from the operating system's secure random source, through
/// the same cryptography library rustls uses.
fn fill_random(buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares a secret with what a client typed, in time that depends only
/// on the length, never on where they first differ: a client timing the
/// answers learns nothing of the secret.
fn same_secret(secret: &[u8; SECRET_BYTES], typed: &str) -> bool {
    let wanted = hex(secret);
    let (wanted, typed) = (wanted.as_bytes(), typed.as_bytes());
    if wanted.len() != typed.len() {
        return false;
    }
    wanted
        .iter()
        .zip(typed)
        .fold(0u8, |differ, (a, b)| differ | (a ^ b))
        == 0
}

/// Which page of `count` items was asked for, and the index of its first
/// item; an error that says what can be asked for, for any other.
fn page_of(
    command: &str,
    page: Option<&str>,
    count: usize,
    per_page: usize,
) -> Result<(usize, usize), String> {
    let pages = count.div_ceil(per_page).max(1);
    let page = match page {
        None => 1,
        Some(text) => match text.parse::<usize>() {
            Ok(page) if (1..=pages).contains(&page) => page,
            _ if pages == 1 => {
                return Err(format!("{command} has one page: {command} shows it"));
            }
            _ => {
                return Err(format!(
                    "{command} has {pages} pages: {command} 1 to {command} {pages}"
                ));
            }
        },
    };
    Ok((page, (page - 1) * per_page))
}

/// The error for a nick or room name that breaks the rules, and the rules.
fn invalid(id: ClientId, name: &str, what: &str, why: NameError, prefix: &str) -> Output {
    let text = format!(
        "{name:?} is not a valid {what} ({why}): use {prefix}1 to 24 letters, digits, \
         _ or -, starting with a letter or _"
    );
    to(id, ServerLine::Error(&text))
}

/// One line for one client.
fn to(id: ClientId, line: ServerLine<'_>) -> Output {
    Output::To {
        id,
        line: line.to_wire().into(),
    }
}

/// A notice, or an error, for one client.
fn reply(id: ClientId, text: Result<String, String>) -> Output {
    match text {
        Ok(text) => to(id, ServerLine::Notice(&text)),
        Err(text) => to(id, ServerLine::Error(&text)),
    }
}

fn to_room(room: RoomId, line: ServerLine<'_>, except: Option<ClientId>) -> Output {
    Output::ToRoom {
        room,
        line: line.to_wire().into(),
        except,
        keep: Keep::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const SETTINGS: ChatSettings = ChatSettings {
        max_line: 100,
        history: 3,
        announce_limit: 100,
        max_sessions: 3,
    };

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    /// A chat and a stand-in for the hub and the writers: it keeps who is
    /// in which room from `Enter` and `Close`, and gives each client what
    /// it would have been sent.
    struct Harness {
        chat: Chat,
        rooms: HashMap<ClientId, RoomId>,
        closed: HashSet<ClientId>,
        /// Linked: what the chat asked of the link, in order.
        link: Vec<Output>,
    }

    impl Harness {
        fn new(settings: ChatSettings) -> Harness {
            Harness {
                chat: Chat::new(settings),
                rooms: HashMap::new(),
                closed: HashSet::new(),
                link: Vec::new(),
            }
        }

        /// Server number 7 of several linked ones.
        fn linked() -> Harness {
            Harness {
                chat: Chat::linked(SETTINGS, 7),
                ..Harness::new(SETTINGS)
            }
        }

        /// What the chat asked of the link since the last look.
        fn asked(&mut self) -> Vec<Output> {
            std::mem::take(&mut self.link)
        }

        /// Every line each client gets from `out`, without the `\n`.
        fn deliver(&mut self, out: Vec<Output>) -> HashMap<ClientId, Vec<String>> {
            let mut seen: HashMap<ClientId, Vec<String>> = HashMap::new();
            for output in out {
                match output {
                    Output::To { id, line } => {
                        assert!(!self.closed.contains(&id), "{id} sent a line after close");
                        seen.entry(id).or_default().push(text(&line));
                    }
                    Output::ToRoom {
                        room, line, except, ..
                    } => {
                        for (&id, _) in self.rooms.iter().filter(|(_, &r)| r == room) {
                            if Some(id) != except {
                                seen.entry(id).or_default().push(text(&line));
                            }
                        }
                    }
                    Output::Enter { id, room } => {
                        self.rooms.insert(id, room);
                    }
                    Output::Close { id } => {
                        self.rooms.remove(&id);
                        self.closed.insert(id);
                    }
                    asked @ (Output::Claim { .. }
                    | Output::Hold { .. }
                    | Output::Release { .. }
                    | Output::Query { .. }
                    | Output::Private { .. }) => self.link.push(asked),
                }
            }
            seen
        }

        /// What the link tells the chat: `act` calls the chat with it.
        fn by_link(
            &mut self,
            act: impl FnOnce(&mut Chat, &mut Vec<Output>),
        ) -> HashMap<ClientId, Vec<String>> {
            let mut out = Vec::new();
            act(&mut self.chat, &mut out);
            self.check();
            self.deliver(out)
        }

        /// Redis answers the claim of `name`.
        fn claimed(&mut self, name: &str, claim: Claim) -> HashMap<ClientId, Vec<String>> {
            self.by_link(|chat, out| chat.claimed(name, claim, out))
        }

        fn join(&mut self, n: u64) -> ClientId {
            let id = ClientId(n);
            let seen = self.join_as(id, None);
            assert_eq!(seen[&id][0], format!("notice {}", protocol::WELCOME));
            id
        }

        fn join_as(
            &mut self,
            id: ClientId,
            certificate: Option<PeerCertificate>,
        ) -> HashMap<ClientId, Vec<String>> {
            let mut out = Vec::new();
            self.chat.join(id, peer(), certificate, &mut out);
            self.check();
            self.deliver(out)
        }

        fn send(&mut self, id: ClientId, line: &str) -> HashMap<ClientId, Vec<String>> {
            let mut out = Vec::new();
            self.chat.line(id, Frame::Line(line.to_string()), &mut out);
            self.check();
            self.deliver(out)
        }

        /// What `id` alone is told in answer to `line`.
        fn ask(&mut self, id: ClientId, line: &str) -> Vec<String> {
            self.send(id, line).remove(&id).unwrap_or_default()
        }

        /// `id` sends `line` and is told exactly `replies`.
        #[track_caller]
        fn expect(&mut self, id: ClientId, line: &str, replies: &[&str]) {
            assert_eq!(self.ask(id, line), replies, "in answer to {line:?}");
        }

        fn left(&mut self, id: ClientId, public: Option<&str>) -> HashMap<ClientId, Vec<String>> {
            let mut out = Vec::new();
            self.chat.left(id, public, "test", &mut out);
            self.check();
            self.deliver(out)
        }

        /// The chat's own records agree with each other.
        fn check(&self) {
            let chat = &self.chat;
            for (id, session) in &chat.sessions {
                let person = &chat.people[&session.person];
                assert!(person.sessions.contains(id), "{id} not among its person's");
            }
            let mut sessions = 0;
            for (key, person) in &chat.people {
                assert_eq!(&person.nick.key(), key);
                assert!(!person.sessions.is_empty(), "{key} has no session");
                for id in &person.sessions {
                    assert_eq!(&chat.sessions[id].person, key);
                }
                sessions += person.sessions.len();
                assert!(chat.rooms[&person.room].members.contains(key));
            }
            assert_eq!(sessions, chat.sessions.len());
            let in_rooms: usize = chat.rooms.values().map(|r| r.members.len()).sum();
            assert_eq!(in_rooms, chat.people.len());
            assert_eq!(chat.rooms.len(), chat.room_names.len());
            for (key, room) in &chat.room_names {
                let state = &chat.rooms[room];
                assert_eq!(&state.name.key(), key);
                assert!(!state.members.is_empty() || state.name.as_str() == protocol::LOBBY);
            }
        }
    }

    fn text(line: &str) -> String {
        line.strip_suffix('\n')
            .expect("lines end in \\n")
            .to_string()
    }

    fn nick_of(harness: &Harness, id: ClientId) -> String {
        harness.chat.person_of(id).unwrap().nick.to_string()
    }

    #[test]
    fn a_newcomer_is_welcomed_named_and_put_in_the_lobby() {
        let mut h = Harness::new(SETTINGS);
        let a = h.join(7);
        let seen = h.join_as(ClientId(8), None);
        let b = ClientId(8);
        assert_eq!(
            seen[&b],
            vec![
                format!("notice {}", protocol::WELCOME),
                "notice you are guest8".to_string(),
                "notice you are in #lobby (2 people here)".to_string(),
            ]
        );
        assert_eq!(seen[&a], vec!["notice guest8 joined #lobby"]);
    }

    #[test]
    fn a_guest_number_someone_took_as_a_nick_is_skipped() {
        let mut h = Harness::new(SETTINGS);
        let a = h.join(1);
        h.ask(a, "/nick guest2");
        h.join(2);
        assert_eq!(nick_of(&h, ClientId(2)), "guest3");
    }

    #[test]
    fn what_is_said_reaches_the_room_and_the_sender_once() {
        let mut h = Harness::new(SETTINGS);
        let (a, b) = (h.join(1), h.join(2));
        let seen = h.send(a, "hello");
        assert_eq!(seen[&a], vec!["chat guest1 hello"]);
        assert_eq!(seen[&b], vec!["chat guest1 hello"]);
        let seen = h.send(b, "/me waves");
        assert_eq!(seen[&a], vec!["action guest2 waves"]);
        let seen = h.send(a, "//slash");
        assert_eq!(seen[&b], vec!["chat guest1 /slash"]);
        assert!(h.send(a, "   ").is_empty());
    }

    #[test]
    fn hi_gets_the_original_reply_as_well() {
        let mut h = Harness::new(SETTINGS);
        let a = h.join(1);
        assert_eq!(
            h.ask(a, "Hi"),
            vec![
                "chat guest1 Hi".to_string(),
                format!("notice {}", protocol::HI_REPLY)
            ]
        );
    }

    #[test]
    fn nick_changes_are_checked_and_told_to_the_room() {
        let mut h = Harness::new(SETTINGS);
        let (a, b) = (h.join(1), h.join(2));
        let seen = h.send(a, "/nick Alice");
        assert_eq!(seen[&a], vec!["notice you are now Alice"]);
        assert_eq!(seen[&b], vec!["notice guest1 is now Alice"]);
        h.expect(
            b,
            "/nick alice",
            &["error nick alice is taken; choose another"],
        );
        h.expect(a, "/nick Alice", &["notice you are already Alice"]);
        h.expect(a, "/nick ALICE", &["notice you are now ALICE"]);
        let bad = h.ask(a, "/nick 9lives");
        assert!(
            bad[0].starts_with("error \"9lives\" is not a valid nick"),
            "{bad:?}"
        );
        h.expect(b, "/nick", &["error /nick needs a name: /nick NAME"]);
        // The old name is free again.
        h.expect(b, "/nick guest1", &["notice you are now guest1"]);
    }

    #[test]
    fn a_certificate_gives_the_nick_and_keeps_it() {
        let mut h = Harness::new(SETTINGS);
        let alice = ClientId(1);
        let seen = h.join_as(alice, cert("alice"));
        assert_eq!(seen[&alice][1], "notice you are alice");
        h.expect(
            alice,
            "/nick bob",
            &["error your nick is alice, the name in your certificate; it cannot be changed"],
        );
        h.expect(
            alice,
            "/token",
            &[
                "error your certificate is who you are: no secret is needed to come back, \
               just connect again",
            ],
        );
        let odd = ClientId(3);
        let seen = h.join_as(odd, cert("not a nick"));
        assert!(seen[&odd][0].starts_with("error your certificate's common name (CN=not a nick)"));
        assert!(h.closed.contains(&odd));
        let b = h.join(4);
        h.expect(
            b,
            "/whois ALICE",
            &["notice alice is in #lobby, certificate CN=alice"],
        );
    }

    fn cert(cn: &str) -> Option<PeerCertificate> {
        Some(PeerCertificate {
            subject: format!("CN={cn}"),
            common_name: Some(cn.to_string()),
        })
    }

    #[test]
    fn one_certificate_may_have_several_sessions_that_act_as_one_person() {
        let mut h = Harness::new(SETTINGS);
        let (laptop, phone, bob) = (ClientId(1), ClientId(2), ClientId(3));
        h.join_as(laptop, cert("alice"));
        h.join_as(bob, cert("bob"));
        let seen = h.join_as(phone, cert("Alice"));
        assert_eq!(
            seen[&phone],
            [
                format!("notice {}", protocol::WELCOME),
                "notice you are alice (2 sessions)".to_string(),
                "notice you are in #lobby (2 people here)".to_string(),
            ]
        );
        assert!(!seen.contains_key(&bob), "a second session is not news");
        // What one session says, the other sees, as everyone does.
        let seen = h.send(laptop, "hello");
        for id in [laptop, phone, bob] {
            assert_eq!(seen[&id], ["chat alice hello"]);
        }
        h.expect(bob, "/who", &["notice in #lobby (2): alice, bob"]);
        h.expect(
            bob,
            "/whois alice",
            &["notice alice is in #lobby, certificate CN=alice, 2 sessions"],
        );
        // Private lines reach every session of both.
        let seen = h.send(bob, "/msg alice psst");
        for id in [laptop, phone, bob] {
            assert_eq!(seen[&id], ["private bob alice psst"]);
        }
        let seen = h.send(phone, "/msg bob sent from the phone");
        assert_eq!(seen[&laptop], ["private alice bob sent from the phone"]);
        // One session moves the person, every session with it.
        let seen = h.send(phone, "/join #side");
        assert_eq!(seen[&bob], ["notice alice left #lobby"]);
        for id in [laptop, phone] {
            assert_eq!(seen[&id], ["notice you are in #side (1 person here)"]);
        }
        // A session that goes is not a person who quits; the last one is.
        assert!(h.left(laptop, None).is_empty());
        h.send(bob, "/join #side");
        let seen = h.left(phone, Some("too slow"));
        assert_eq!(seen[&bob], ["notice alice quit: too slow"]);
        assert!(!h.chat.people.contains_key("alice"));
    }

    #[test]
    fn one_certificate_cannot_take_more_than_its_sessions() {
        let mut h = Harness::new(SETTINGS);
        for n in 1..=3 {
            h.join_as(ClientId(n), cert("alice"));
        }
        let fourth = ClientId(4);
        let seen = h.join_as(fourth, cert("alice"));
        assert_eq!(
            seen[&fourth],
            [
                "error alice has 3 sessions already, the most one person may have; close one \
              and try again"
            ]
        );
        assert!(h.closed.contains(&fourth));
        h.left(ClientId(2), None);
        let seen = h.join_as(ClientId(5), cert("alice"));
        assert_eq!(seen[&ClientId(5)][1], "notice you are alice (3 sessions)");
    }

    /// The secret of a `token NICK SECRET` line sent to `id`.
    fn secret_in(seen: &HashMap<ClientId, Vec<String>>, id: ClientId) -> String {
        let line = seen[&id]
            .iter()
            .find(|line| line.starts_with("token "))
            .expect("a token line");
        line.rsplit_once(' ').unwrap().1.to_string()
    }

    #[test]
    fn a_reconnect_takes_its_nick_and_room_back_with_its_secret() {
        let mut h = Harness::new(SETTINGS);
        let (old, bob) = (h.join(1), h.join(2));
        let seen = h.send(old, "/token");
        let first = secret_in(&seen, old);
        assert_eq!(first.len(), 2 * SECRET_BYTES);
        assert_eq!(seen[&old], [format!("token guest1 {first}")]);
        // A new name, a new secret; the old one is dead with the old name.
        let seen = h.send(old, "/nick alice");
        let secret = secret_in(&seen, old);
        assert_ne!(secret, first);
        h.send(old, "/join #rust");
        h.send(bob, "/join #rust");
        // The connection drops without the server knowing; a new one comes.
        let new = h.join(3);
        let wrong = "0".repeat(2 * SECRET_BYTES);
        let refused = "error cannot reclaim alice: no connection of yours holds it with that \
                       secret (if it is free, take it with /nick alice)";
        h.expect(new, &format!("/reclaim alice {wrong}"), &[refused]);
        h.expect(new, &format!("/reclaim alice {first}"), &[refused]);
        let watcher = h.join(9);
        let seen = h.send(new, &format!("/reclaim ALICE {secret}"));
        assert_eq!(seen[&watcher], ["notice guest3 left #lobby"]);
        assert!(h.closed.contains(&old), "the ghost is closed");
        assert!(!seen.contains_key(&bob), "for the room, alice never left");
        let told = &seen[&new];
        assert!(!told.iter().any(|line| line.contains(" left ")), "{told:?}");
        assert_eq!(told[0], "notice you are alice again");
        assert_eq!(told[1], "notice you are in #rust (2 people here)");
        let next = secret_in(&seen, new);
        assert_ne!(next, secret);
        assert_eq!(nick_of(&h, new), "alice");
        // The secret worked once.
        let thief = h.join(4);
        h.expect(thief, &format!("/reclaim alice {secret}"), &[refused]);
        let seen = h.send(new, "back");
        assert_eq!(seen[&bob], ["chat alice back"]);
    }

    #[test]
    fn a_reclaim_in_the_same_room_is_not_news_to_the_reclaimer() {
        let mut h = Harness::new(SETTINGS);
        let (ghost, watcher) = (h.join(1), h.join(2));
        h.send(ghost, "/nick alice");
        let secret = secret_in(&h.send(ghost, "/token"), ghost);
        let new = h.join(3);
        let seen = h.send(new, &format!("/reclaim alice {secret}"));
        assert_eq!(seen[&watcher], ["notice guest3 left #lobby"]);
        assert!(
            !seen[&new].iter().any(|line| line.contains("guest3 left")),
            "{:?}",
            seen[&new]
        );
        assert_eq!(seen[&new][1], "notice you are in #lobby (2 people here)");
    }

    #[test]
    fn without_a_secret_nobody_takes_a_name() {
        let mut h = Harness::new(SETTINGS);
        let (a, b) = (h.join(1), h.join(2));
        h.send(a, "/nick alice");
        // alice never asked for a secret: there is none to guess.
        let refused = "error cannot reclaim alice: no connection of yours holds it with that \
                       secret (if it is free, take it with /nick alice)";
        h.expect(b, "/reclaim alice 00", &[refused]);
        h.expect(
            b,
            "/reclaim alice",
            &["error /reclaim needs a nick and its secret: \
                                           /reclaim NICK SECRET"],
        );
        h.expect(a, "/reclaim alice 00", &["notice you are already alice"]);
        assert_eq!(nick_of(&h, a), "alice");
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        let secret = [0xabu8; SECRET_BYTES];
        let text = hex(&secret);
        assert!(same_secret(&secret, &text));
        assert!(!same_secret(&secret, &text.to_uppercase()));
        assert!(!same_secret(&secret, &text[1..]));
        let mut other = text.clone().into_bytes();
        other[31] = b'0';
        assert!(!same_secret(&secret, std::str::from_utf8(&other).unwrap()));
    }

    #[test]
    fn joining_a_room_moves_you_and_tells_both_rooms() {
        let mut h = Harness::new(SETTINGS);
        let (a, b, c) = (h.join(1), h.join(2), h.join(3));
        h.send(c, "/join #rust");
        let seen = h.send(a, "/join #Rust");
        assert_eq!(seen[&b], vec!["notice guest1 left #lobby"]);
        assert_eq!(seen[&c], vec!["notice guest1 joined #rust"]);
        assert_eq!(seen[&a], vec!["notice you are in #rust (2 people here)"]);
        h.expect(a, "/join #RUST", &["notice you are already in #rust"]);
        let bad = h.ask(a, "/join rust");
        assert!(
            bad[0].starts_with("error \"rust\" is not a valid room name"),
            "{bad:?}"
        );
        // Lines stay in their room.
        let seen = h.send(a, "in rust");
        assert!(seen.contains_key(&c) && !seen.contains_key(&b));
        h.expect(b, "/rooms", &["notice rooms: #lobby (1), #rust (2)"]);
        // An empty room is forgotten; the lobby is not.
        h.send(a, "/join #lobby");
        h.send(c, "/join #lobby");
        h.expect(b, "/rooms", &["notice rooms: #lobby (3)"]);
    }

    #[test]
    fn a_room_keeps_its_topic_and_last_lines_for_newcomers() {
        let mut h = Harness::new(SETTINGS);
        let a = h.join(1);
        h.expect(
            a,
            "/topic",
            &["notice #lobby has no topic; set one with /topic TEXT"],
        );
        h.expect(
            a,
            "/topic tea",
            &["notice guest1 set the topic of #lobby: tea"],
        );
        for n in 1..=4 {
            h.send(a, &format!("line {n}"));
        }
        h.send(a, "/me sips");
        let b = ClientId(2);
        let seen = h.join_as(b, None);
        assert_eq!(
            seen[&b][2..],
            [
                "notice you are in #lobby (2 people here)",
                "notice topic of #lobby: tea",
                "history chat guest1 line 3",
                "history chat guest1 line 4",
                "history action guest1 sips",
            ]
        );
    }

    #[test]
    fn who_lists_the_room_sorted_ignoring_case() {
        let mut h = Harness::new(SETTINGS);
        let (a, b, c) = (h.join(1), h.join(2), h.join(3));
        h.send(a, "/nick zed");
        h.send(b, "/nick Amy");
        h.send(c, "/nick bob");
        h.expect(a, "/who", &["notice in #lobby (3): Amy, bob, zed"]);
        h.expect(a, "/who 2", &["error /who has one page: /who shows it"]);
    }

    #[test]
    fn who_in_a_room_of_thousands_answers_a_page_at_a_time() {
        let settings = ChatSettings {
            announce_limit: 10,
            ..SETTINGS
        };
        let mut h = Harness::new(settings);
        let n = 2_500;
        for i in 1..=n {
            h.join(i);
        }
        let a = ClientId(1);
        let first = h.ask(a, "/who");
        assert_eq!(first.len(), 1);
        let head = "notice in #lobby (2500), 1 to 100: guest1, guest10, guest100, guest1000,";
        assert!(first[0].starts_with(head), "{}", &first[0][..200]);
        assert!(first[0].ends_with("; /who 2 for more"));
        assert!(first[0].len() < 4096, "a page must fit a client's line");
        let last = h.ask(a, "/who 25");
        assert!(last[0].starts_with("notice in #lobby (2500), 2401 to 2500: "));
        assert!(!last[0].contains("for more"));
        h.expect(
            a,
            "/who 26",
            &["error /who has 25 pages: /who 1 to /who 25"],
        );
        h.expect(
            a,
            "/who next",
            &["error /who has 25 pages: /who 1 to /who 25"],
        );
        // Every name, once, over all the pages.
        let mut names = HashSet::new();
        for page in 1..=25 {
            let line = h.ask(a, &format!("/who {page}")).remove(0);
            let list = line.split_once(": ").unwrap().1;
            let list = list.split("; ").next().unwrap();
            for name in list.split(", ") {
                assert!(names.insert(name.to_string()), "{name} twice");
            }
        }
        assert_eq!(names.len(), 2_500);
    }

    #[test]
    fn rooms_come_a_page_at_a_time_too() {
        let mut h = Harness::new(SETTINGS);
        for i in 1..=120 {
            let id = h.join(i);
            h.send(id, &format!("/join #r{i:03}"));
        }
        let a = ClientId(1);
        let first = h.ask(a, "/rooms").remove(0);
        assert!(first.starts_with("notice rooms, 1 to 50: #lobby (0), #r001 (1), "));
        assert!(first.ends_with("; /rooms 2 for more"));
        let last = h.ask(a, "/rooms 3").remove(0);
        assert!(
            last.starts_with("notice rooms, 101 to 121: #r100 (1), "),
            "{last}"
        );
        assert!(last.ends_with("#r120 (1)"));
    }

    fn name(name: &str) -> String {
        name.to_owned()
    }

    #[test]
    fn linked_guests_get_names_no_other_server_gives_and_hold_them() {
        let mut h = Harness::linked();
        let a = h.join(3);
        assert_eq!(nick_of(&h, a), "guest7-3");
        assert_eq!(
            h.asked(),
            vec![Output::Hold {
                name: name("guest7-3")
            }]
        );
        // Nobody takes a guest's name by hand: another server may be
        // about to give it.
        h.expect(
            a,
            "/nick guest2-9",
            &["error guest2-9 is a guest name, and the servers give those out; choose another"],
        );
        assert!(h.asked().is_empty());
        // Leaving lets the name go everywhere.
        h.left(a, None);
        assert_eq!(
            h.asked(),
            vec![Output::Release {
                name: name("guest7-3")
            }]
        );
    }

    #[test]
    fn a_linked_nick_changes_only_once_the_other_servers_agree() {
        let mut h = Harness::linked();
        let a = h.join(1);
        let b = h.join(2);
        h.asked();
        // Asked, not yet taken: nobody is told anything yet.
        assert!(h.send(a, "/nick Alice").is_empty());
        assert_eq!(
            h.asked(),
            vec![Output::Claim {
                name: name("alice")
            }]
        );
        assert_eq!(nick_of(&h, a), "guest7-1");
        // Meanwhile nobody else here may ask for it, nor the asker twice.
        h.expect(
            b,
            "/nick alice",
            &["error nick alice is taken; choose another"],
        );
        h.expect(
            a,
            "/nick carol",
            &["error wait: the other servers have not yet answered your last /nick"],
        );
        let seen = h.claimed("alice", Claim::Ours);
        assert_eq!(seen[&a], vec!["notice you are now Alice"]);
        assert_eq!(seen[&b], vec!["notice guest7-1 is now Alice"]);
        assert_eq!(
            h.asked(),
            vec![Output::Release {
                name: name("guest7-1")
            }]
        );
        // Someone elsewhere has it: the name stays as it was.
        h.send(b, "/nick bob");
        let seen = h.claimed("bob", Claim::Taken);
        assert_eq!(
            seen[&b],
            vec!["error nick bob is taken on another server; choose another"]
        );
        assert_eq!(nick_of(&h, b), "guest7-2");
        // The asker left before the answer: the name goes back at once.
        h.send(b, "/nick dave");
        h.asked();
        h.left(b, None);
        h.asked();
        h.claimed("dave", Claim::Ours);
        assert_eq!(h.asked(), vec![Output::Release { name: name("dave") }]);
    }

    #[test]
    fn a_claim_answered_after_its_asker_was_renamed_is_let_go() {
        let mut h = Harness::linked();
        let a = h.join(1);
        let b = h.join(2);
        h.send(b, "/nick bob");
        h.claimed("bob", Claim::Ours);
        h.asked();
        h.send(a, "/nick alice");
        assert_eq!(
            h.asked(),
            vec![Output::Claim {
                name: name("alice")
            }]
        );
        // Meanwhile its guest name lapsed in an outage and went elsewhere.
        let seen = h.by_link(|chat, out| chat.name_lost("guest7-1", true, out));
        assert_eq!(
            seen[&a][0],
            "error your nick guest7-1 lapsed while this server could not reach the others, \
             and someone there has it now"
        );
        let renamed = nick_of(&h, a);
        assert!(
            renamed.starts_with("guest7-") && renamed != "guest7-1",
            "{renamed}"
        );
        assert_eq!(
            h.asked(),
            vec![Output::Hold {
                name: renamed.to_lowercase()
            }]
        );
        // The old claim comes back granted: not for the new name.
        h.claimed("alice", Claim::Ours);
        assert_eq!(nick_of(&h, a), renamed);
        assert_eq!(
            h.asked(),
            vec![Output::Release {
                name: name("alice")
            }]
        );
        // Someone else's already, on arrival: said as such.
        let seen = h.by_link(|chat, out| chat.name_lost("bob", false, out));
        assert_eq!(seen[&b][0], "error bob is connected on another server");
    }

    #[test]
    fn with_the_link_down_no_new_nick_is_taken() {
        let mut h = Harness::linked();
        let a = h.join(1);
        h.asked();
        h.chat.set_link_up(false);
        h.expect(a, "/nick alice", &[&format!("error {LINK_DOWN_NICK}")]);
        assert!(h.asked().is_empty());
        // Only the case of one's own nick needs nobody's leave.
        h.expect(a, "/nick GUEST7-1", &["notice you are now GUEST7-1"]);
        h.chat.set_link_up(true);
        h.send(a, "/nick alice");
        let seen = h.claimed("alice", Claim::Down);
        assert_eq!(seen[&a], vec![format!("error {LINK_DOWN_NICK}")]);
        h.send(a, "/nick alice");
        let seen = h.claimed("alice", Claim::Busy);
        assert_eq!(
            seen[&a],
            vec!["error the other servers are busy; try /nick again in a moment"]
        );
        assert_eq!(nick_of(&h, a), "GUEST7-1");
    }

    #[test]
    fn a_linked_private_line_shows_once_it_arrived() {
        let mut h = Harness::linked();
        let a = h.join(1);
        h.asked();
        // Not here: perhaps elsewhere; the sender sees it once it arrived.
        assert!(h.send(a, "/msg Zed psst").is_empty());
        let asked = h.asked();
        let [Output::Private { from, to, line }] = asked.as_slice() else {
            panic!("{asked:?}");
        };
        assert_eq!((*from, to.as_str()), (a, "zed"));
        assert_eq!(text(line), "private guest7-1 Zed psst");
        let seen = h.by_link(|chat, out| chat.private_sent(a, "zed", line, Sent::Delivered, out));
        assert_eq!(seen[&a], vec!["private guest7-1 Zed psst"]);
        let seen = h.by_link(|chat, out| chat.private_sent(a, "zed", line, Sent::NoOne, out));
        assert_eq!(seen[&a], vec!["error no user named zed is connected"]);
        // A line from elsewhere for someone here.
        let seen = h.by_link(|chat, out| {
            chat.private_in("guest7-1", &"private zed guest7-1 hi\n".into(), out)
        });
        assert_eq!(seen[&a], vec!["private zed guest7-1 hi"]);
        h.chat.set_link_up(false);
        h.expect(a, "/msg zed again", &[&format!("error {LINK_DOWN_MSG}")]);
    }

    #[test]
    fn linked_who_rooms_and_whois_ask_every_server_and_merge_the_answers() {
        let mut h = Harness::linked();
        let a = h.join(1);
        let b = h.join(2);
        h.send(b, "/join #Tea");
        h.asked();
        assert!(h.send(a, "/who").is_empty());
        let query = Query::Who("#lobby".into());
        assert_eq!(
            h.asked(),
            vec![Output::Query {
                id: a,
                query: query.clone(),
                page: None
            }]
        );
        // This server's part, and another's, put together in one order.
        let here = h.chat.local_answer(&query);
        assert_eq!(here, "guest7-1");
        let mut out = Vec::new();
        let parts = [here, "Zed amy".to_owned()];
        h.chat
            .answered(a, &query, None, &parts, Reach::Every, &mut out);
        assert_eq!(
            h.deliver(out)[&a],
            vec!["notice in #lobby (3): amy, guest7-1, Zed"]
        );
        // Rooms: counts of one room on several servers add up.
        assert_eq!(h.chat.local_answer(&Query::Rooms), "#lobby 1 #Tea 1");
        let parts = ["#lobby 1 #Tea 1".to_owned(), "#tea 4 #rust 2".to_owned()];
        let seen = h.by_link(|chat, out| {
            chat.answered(a, &Query::Rooms, None, &parts, Reach::Partial, out)
        });
        assert_eq!(
            seen[&a],
            vec![
                "notice rooms: #lobby (1), #rust (2), #Tea (5) \
                 (not every server answered in time)"
            ]
        );
        // Whois: someone here is answered at once; anyone else, by all.
        h.expect(a, "/whois guest7-2", &["notice guest7-2 is in #Tea"]);
        assert!(h.send(a, "/whois Zed").is_empty());
        let asked = h.asked();
        assert_eq!(
            asked,
            vec![Output::Query {
                id: a,
                query: Query::Whois("zed".into()),
                page: None
            }]
        );
        let mut out = Vec::new();
        let parts = [String::new(), "Zed is in #rust".to_owned()];
        h.chat.answered(
            a,
            &Query::Whois("zed".into()),
            None,
            &parts,
            Reach::Every,
            &mut out,
        );
        assert_eq!(h.deliver(out)[&a], vec!["notice Zed is in #rust"]);
        // The link down: this server's users only, and said so.
        h.chat.set_link_up(false);
        h.expect(
            a,
            "/who",
            &["notice in #lobby (1): guest7-1 (this server only: the link to the others is down)"],
        );
        for query in [
            Query::Who("#Tea".into()),
            Query::Rooms,
            Query::Whois("x".into()),
        ] {
            assert_eq!(
                Query::decode(&query.encode()).map(|q| q.encode()),
                Some(query.encode())
            );
        }
    }

    #[test]
    fn guest_names_of_linked_servers_are_recognised() {
        for key in ["guest1-2", "guest12-345"] {
            assert!(is_guest_name(key), "{key}");
        }
        for key in [
            "guest1",
            "guest-2",
            "guest1-",
            "guest1-2-3",
            "guesta-1",
            "alice",
        ] {
            assert!(!is_guest_name(key), "{key}");
        }
    }

    #[test]
    fn whois_and_msg_find_people_wherever_they_are() {
        let mut h = Harness::new(SETTINGS);
        let (a, b, c) = (h.join(1), h.join(2), h.join(3));
        h.send(b, "/join #side");
        h.expect(a, "/whois GUEST2", &["notice guest2 is in #side"]);
        h.expect(
            a,
            "/whois nobody",
            &["error no user named nobody is connected"],
        );
        let seen = h.send(a, "/msg Guest2 psst  there");
        assert_eq!(seen[&a], vec!["private guest1 guest2 psst  there"]);
        assert_eq!(seen[&b], vec!["private guest1 guest2 psst  there"]);
        assert!(!seen.contains_key(&c));
        // To oneself: once.
        h.expect(a, "/msg guest1 note", &["private guest1 guest1 note"]);
        h.expect(
            a,
            "/msg ghost hi",
            &["error no user named ghost is connected"],
        );
        h.expect(
            a,
            "/msg guest2",
            &["error /msg needs a name and a message: /msg NAME TEXT"],
        );
    }

    #[test]
    fn help_lists_and_explains_commands() {
        let mut h = Harness::new(SETTINGS);
        let a = h.join(1);
        let all = h.ask(a, "/help");
        assert_eq!(all.len(), COMMANDS.len() + 2);
        assert!(all[0].starts_with("notice commands: /nick /join"));
        h.expect(
            a,
            "/help who",
            &["notice /who [PAGE]: list the people in this room, 100 names a page"],
        );
        h.expect(
            a,
            "/help /frob",
            &["error no command /frob: /help lists the commands"],
        );
        assert!(h.ask(a, "/frob")[0].starts_with("error unknown command /frob"));
    }

    #[test]
    fn quit_says_goodbye_tells_the_room_and_closes() {
        let mut h = Harness::new(SETTINGS);
        let (a, b) = (h.join(1), h.join(2));
        let seen = h.send(a, "/quit gotta go");
        assert_eq!(seen[&a], vec![format!("notice {}", protocol::BYE_REPLY)]);
        assert_eq!(seen[&b], vec!["notice guest1 quit: gotta go"]);
        assert!(h.closed.contains(&a));
        // Its lines after that, and its connection's end, change nothing.
        assert!(h.send(a, "still here?").is_empty());
        assert!(h.left(a, None).is_empty());
        h.expect(b, "/who", &["notice in #lobby (1): guest2"]);
        let seen = h.send(b, "bye");
        assert_eq!(seen[&b], vec![format!("notice {}", protocol::BYE_REPLY)]);
    }

    #[test]
    fn a_lost_connection_leaves_with_the_reason_the_room_is_given() {
        let mut h = Harness::new(SETTINGS);
        let (a, b) = (h.join(1), h.join(2));
        let seen = h.left(a, Some("too slow"));
        assert_eq!(seen[&b], vec!["notice guest1 quit: too slow"]);
        assert!(h.closed.contains(&a));
        let seen = h.left(b, None);
        assert!(seen.is_empty(), "nobody is left to tell");
        assert!(h.chat.is_empty());
    }

    #[test]
    fn big_rooms_do_not_announce_arrivals_and_departures() {
        let settings = ChatSettings {
            announce_limit: 2,
            ..SETTINGS
        };
        let mut h = Harness::new(settings);
        let (a, b) = (h.join(1), h.join(2));
        let seen = h.join_as(ClientId(3), None);
        assert!(!seen.contains_key(&a) && !seen.contains_key(&b));
        let seen = h.left(ClientId(3), None);
        assert!(seen.is_empty());
        let seen = h.left(b, None);
        assert_eq!(seen[&a], vec!["notice guest2 quit"]);
    }

    #[test]
    fn refused_lines_say_why() {
        let mut h = Harness::new(SETTINGS);
        let a = h.join(1);
        let mut out = Vec::new();
        h.chat.line(a, Frame::TooLong, &mut out);
        h.chat.line(a, Frame::InvalidUtf8, &mut out);
        h.chat.throttled(a, &mut out);
        let seen = h.deliver(out);
        assert_eq!(
            seen[&a],
            vec![
                "error line too long: the limit is 100 bytes; it was not sent",
                "error line is not valid UTF-8; it was not sent",
                "error you are sending too fast: your lines are being delayed (none are lost)",
            ]
        );
    }

    #[test]
    fn shutdown_tells_everyone_then_closes_them() {
        let mut h = Harness::new(SETTINGS);
        let (a, b) = (h.join(1), h.join(2));
        let mut out = Vec::new();
        h.chat.shutdown(&mut out);
        let seen = h.deliver(out);
        for id in [a, b] {
            assert_eq!(seen[&id], vec![format!("notice {SHUTDOWN_NOTICE}")]);
            assert!(h.closed.contains(&id));
        }
    }

    #[test]
    fn events_about_strangers_change_nothing() {
        let mut h = Harness::new(SETTINGS);
        let a = h.join(1);
        let stranger = ClientId(99);
        let mut out = Vec::new();
        h.chat
            .line(stranger, Frame::Line("/whois guest1".into()), &mut out);
        h.chat.throttled(stranger, &mut out);
        h.chat.left(stranger, Some("too slow"), "test", &mut out);
        assert!(out.is_empty(), "{out:?}");
        // Joining twice keeps the first.
        h.chat.join(a, peer(), None, &mut out);
        assert!(out.is_empty(), "{out:?}");
        h.check();
    }

    /// Thousands of events in random order, from clients that come, talk,
    /// rename, move and go, some of them twice or after they left: the
    /// chat never panics, its records always agree, and nobody gets a line
    /// after being closed.
    #[test]
    fn no_order_of_events_breaks_the_chat() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            // xorshift64*: a fixed seed, so a failure can be replayed.
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        };
        let lines = [
            "hello",
            "/nick ann",
            "/nick Bob",
            "/nick cy",
            "/join #a",
            "/join #b",
            "/join #lobby",
            "/who",
            "/who 2",
            "/rooms",
            "/whois ann",
            "/msg bob hi",
            "/me waves",
            "/topic t",
            "/topic",
            "/help",
            "/quit",
            "bye",
            "hi",
        ];
        let mut h = Harness::new(ChatSettings {
            announce_limit: 3,
            ..SETTINGS
        });
        let mut next_id = 0;
        for _ in 0..6_000 {
            let id = ClientId(next(next_id + 1) + 1);
            let mut out = Vec::new();
            match next(10) {
                0 => {
                    next_id += 1;
                    let id = ClientId(next_id);
                    h.closed.remove(&id);
                    h.chat.join(id, peer(), None, &mut out);
                }
                1 => h.chat.left(id, None, "test", &mut out),
                2 => h.chat.throttled(id, &mut out),
                _ => {
                    let line = lines[next(lines.len() as u64) as usize];
                    h.chat.line(id, Frame::Line(line.into()), &mut out);
                }
            }
            h.check();
            h.deliver(out);
        }
        assert!(next_id > 300, "the test made too few clients");
    }
}

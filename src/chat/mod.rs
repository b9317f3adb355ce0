//! The chat itself, as a plain value: who is here under which name, who
//! is in which room, and what each command does and says. [`Chat`] holds
//! no sockets or threads (the wall-clock time, for bans and mutes, comes
//! from a [`Clock`] it is given): each method takes one thing that
//! happened and appends what should follow ([`Output`]s) to a list, which
//! the [`hub`](crate::hub) delivers and the unit tests read.
//!
//! Nothing a client sends, in any order, can make it panic: every lookup
//! of a client or a room that may be gone is checked, and what refers to
//! a client no longer here is ignored.
//!
//! Next: [`elsewhere`](crate::elsewhere), the seam to other servers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::elsewhere::Ask;
use crate::line::Frame;
use crate::protocol::{self, Command, Nick, Notice, Refusal, Room, ServerLine};
use crate::seats::Block;
use crate::tls::Fingerprint;

/// Default for how many of a room's last lines a newcomer is shown.
///
/// Enough to see what the conversation is about; small enough that joining
/// a busy room does not flood the screen. 0 keeps no history at all.
pub const HISTORY_LINES: usize = 50;

/// Default for [`ChatSettings::rooms_per_minute`]. A room costs memory
/// here and, with `--redis`, keys in Redis that outlive it for
/// `--room-expiry`: someone who made rooms without end would fill both.
/// Ten a minute is more than any person needs.
pub const ROOMS_PER_MINUTE: usize = 10;

/// Default for [`ChatSettings::announce_limit`].
///
/// In a room of a hundred, arrivals and departures are still news; in a
/// room of thousands they would be most of the traffic, and when everyone
/// reconnects at once (after a restart), each arrival told to everyone is
/// a storm that grows with the square of the room.
pub const ANNOUNCE_LIMIT: usize = 100;

/// Names per `/who` line: a page of a big room fits well within what a
/// client accepts (24-byte nicks: under 3 KiB), and asking costs the hub
/// a walk of the room's sorted names up to that page, never a sort. (Shared,
/// each server sends its count and its first names up to that page's end,
/// and the asker's server merges them.)
pub const WHO_PAGE: usize = 100;

/// Rooms per `/rooms` line, for the same reasons.
pub const ROOMS_PAGE: usize = 50;

/// The notice every client gets when the server stops.
pub const SHUTDOWN_NOTICE: &str = "server shutting down, goodbye";

/// Shared with other servers: why its users left, as the other servers'
/// users are told when a server stops.
pub const SHUTDOWN_QUIT: &str = "their server shut down";

/// Shared, the others out of reach: why a new nick cannot be taken.
pub const LINK_DOWN_NICK: &str = "the link to the other servers is down, so a new nick cannot \
                                  be checked with them; try again when it is back";

/// Shared, the others out of reach: why a private line to someone
/// elsewhere cannot go.
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
///
/// A person is the certificate's key, not its name: two connections are
/// sessions of one person only if their certificates have the same key.
/// Another certificate with the same name, even one the CA signed, is
/// someone else, refused while the first holds the nick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The whole subject, for `/whois` and the log (control characters
    /// removed).
    pub subject: String,
    /// The common name as the certificate has it, which becomes the
    /// client's nick if it is a valid one (so, never with a control
    /// character in it).
    pub common_name: Option<String>,
    /// The fingerprint of the certificate's key: who the person is.
    pub key: Option<Fingerprint>,
}

impl PeerCertificate {
    /// True if `other` is the same person: the same key.
    fn same_key(&self, other: &PeerCertificate) -> bool {
        self.key.is_some() && self.key == other.key
    }
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
    /// A line for everyone in a room, but its `except`.
    ToRoom(RoomLine),
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
        /// Why, for the metrics: the client was told in its own words.
        why: CloseReason,
    },
    /// Something for the other servers this chat is shared with; only a
    /// shared chat ([`Chat::shared`]) asks.
    Elsewhere(Ask),
    /// Moderation's state changed: what to keep across a restart.
    Save(Save),
}

/// Why the chat closes a connection ([`Output::Close`]). The client is
/// told in words before; this is the same reason as a value, for whoever
/// counts closes (the metrics' `chat_server_disconnects_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// It asked to go (`/quit`, or `bye`).
    Quit,
    /// A server operator disconnected it (`/kill`), on this server or on
    /// another one the chat is shared with.
    Killed,
    /// A server ban made while it was here names it (`/serverban`, here
    /// or on another server).
    Banned,
    /// Turned away as it came, before it was in the chat: a server ban
    /// names it, its name is someone else's or no nick, or its person has
    /// every session they may.
    Refused,
    /// Another connection reclaimed its nick with the secret (`/reclaim`):
    /// this one was a ghost.
    Replaced,
    /// Its certificate's name turned out to be someone's on another
    /// server, and a certificate's name cannot change.
    NameLost,
    /// The connection had ended already: the close only lets it go.
    Left,
    /// The server is stopping.
    Shutdown,
}

/// A room line on its way to the room's members: from the chat to the
/// hub, and, shared, to the other servers and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLine {
    /// The room.
    pub room: RoomId,
    /// The line, as the members get it.
    pub line: Arc<str>,
    /// Left out: the one whose news it is, who was told otherwise (only
    /// ever one of this server's clients).
    pub except: Option<ClientId>,
    /// What the room keeps of it.
    pub keep: Keep,
}

/// What a room keeps of a line said in it, beyond showing it.
///
/// The chat keeps a line when it is shown ([`Chat::heard`]): at once on
/// a server alone; shared with other servers ([`Chat::shared`]), when it
/// comes back from them, so that the room's one order is theirs,
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
    /// Bytes of history kept in all rooms together; past it, the biggest
    /// rooms lose their older lines, biggest first, until all together are
    /// under three quarters of it.
    pub history_bytes: usize,
    /// New rooms the people of one address may make in a minute.
    pub rooms_per_minute: usize,
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
    /// A mute may hold for them in their room: looked at only when set,
    /// so that a line costs nobody else anything (see
    /// [`Chat::refresh_muted`]).
    muted: bool,
}

impl Person {
    /// Their certificate's key, which bans, mutes, invitations and
    /// operators by key name them by; `None` for a guest.
    fn certificate_key(&self) -> Option<Fingerprint> {
        self.certificate.as_ref()?.key
    }
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
    history: History,
    /// Whether `topic` and `history` are known. Always, on a server
    /// alone; shared, once the other servers have told them
    /// ([`Told::Recent`](crate::elsewhere::Told::Recent)): until then, whoever enters is shown them when
    /// they come.
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
    /// Bytes of every room's history together (see [`History`]).
    history_total: usize,
    /// When each address (an IPv6 /64: [`Block`]) last made new rooms.
    rooms_made: HashMap<Block, RoomsMade>,
    /// How many addresses `rooms_made` may hold before the windows that
    /// emptied are looked for again.
    rooms_made_limit: usize,
    /// By [`Room::key`]; sorted, so `/rooms` comes out in order.
    room_names: BTreeMap<String, RoomId>,
    next_room: u64,
    /// Guests are named this and a number: `guest` alone; shared, a
    /// prefix no other server gives.
    guest_prefix: String,
    /// Set when the chat is shared with other servers: what it keeps of
    /// them.
    others: Option<Others>,
    /// Operators, bans, mutes and the rooms' modes.
    moderation: ModerationState,
    /// With a store: a room that empties is kept while it keeps something
    /// (see `saved`).
    keeps_empty_rooms: bool,
}

/// What a shared chat keeps of the other servers (see [`Chat::shared`]).
#[derive(Debug)]
struct Others {
    /// Whether they can be reached, so that new nicks can be checked with
    /// them.
    reachable: bool,
    /// Nicks asked for (in lower case) until the others answer: the
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
            history_total: 0,
            rooms_made: HashMap::new(),
            rooms_made_limit: ROOMS_MADE_LOOK,
            room_names: BTreeMap::new(),
            next_room: 0,
            guest_prefix: "guest".to_owned(),
            others: None,
            moderation: ModerationState::default(),
            keeps_empty_rooms: false,
        }
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
                // Shown escaped: the name is the peer's, and may hold what
                // a terminal would obey.
                _ => Err(format!(
                    "your certificate's common name ({}) is not a valid nick: \
                     it must be 1 to 24 letters, digits, _ or -, starting with a letter or _",
                    match &cert.common_name {
                        Some(name) => format!("{name:?}"),
                        None => format!("none in {}", cert.subject),
                    }
                )),
            },
            None => Ok(self.free_guest_nick(id)),
        };
        let mut refusal = match &nick {
            Err(why) => Some(why.clone()),
            Ok(nick) => match self.people.get(&nick.key()) {
                None => None,
                Some(Person {
                    certificate: Some(theirs),
                    nick: held,
                    ..
                }) if certificate
                    .as_ref()
                    .is_some_and(|ours| !ours.same_key(theirs)) =>
                {
                    Some(format!(
                        "{held} is connected with another certificate (another key); \
                         a name is one person's at a time"
                    ))
                }
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
                // A guest took the name (`--guests`): it is the
                // certificate's, whose holder comes first (see below).
                Some(Person {
                    certificate: None, ..
                }) if certificate.is_some() => None,
                Some(_) => Some(format!("{nick} is already connected")),
            },
        };
        let certificate_key = certificate.as_ref().and_then(|cert| cert.key);
        if let (None, Ok(nick)) = (&refusal, &nick) {
            refusal = self.server_ban_refusal(nick, certificate_key, peer, out);
        }
        if let (None, Ok(nick), Some(_)) = (&refusal, &nick, &certificate) {
            self.rename_guest_holding(&nick.key(), out);
        }
        if let Some(why) = refusal {
            log::info!("{id} {peer}: refused: {why}");
            out.push(to(id, ServerLine::Error(&why)));
            out.push(Output::Close {
                id,
                why: CloseReason::Refused,
            });
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
        // The key, for the operators file (`--operators`).
        match certificate_key {
            Some(key) => log::info!("{id} {peer}: joined as {nick}, key {key}"),
            None => log::info!("{id} {peer}: joined as {nick}"),
        }
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
            muted: false,
        };
        self.people.insert(key.clone(), person);
        if self.others.is_some() {
            out.push(Output::Elsewhere(Ask::Hold { name: key.clone() }));
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
                let max = self.settings.max_line;
                let why = format!("line too long: the limit is {max} bytes; it was not sent");
                return out.push(to(id, ServerLine::Error(&why)));
            }
            Frame::InvalidUtf8 => {
                let why = "line is not valid UTF-8; it was not sent";
                return out.push(to(id, ServerLine::Error(why)));
            }
        };
        match protocol::parse_command(&text) {
            Ok(None) => {}
            // What the room hears is the common case, and not a command.
            Ok(Some(Command::Say(text))) => self.say(id, text, out),
            Ok(Some(command)) => self.command(id, command, out),
            Err(err) => out.push(to(id, ServerLine::Error(&err.to_string()))),
        }
    }

    /// A chat line: to everyone in the sender's room, the sender's own
    /// sessions included (the sending one takes it as its acknowledgement,
    /// in the same order everyone else sees).
    fn say(&mut self, id: ClientId, text: &str, out: &mut Vec<Output>) {
        let Some(person) = self.person_of(id) else {
            return;
        };
        if person.muted {
            return self.say_muted(id, text, out);
        }
        let from = person.nick.as_str();
        let line = ServerLine::Chat { from, text };
        out.push(to_room(person.room, line, None, Keep::History));
        self.note_speaker(id, out);
        if protocol::is_greeting(text) {
            out.push(to(id, ServerLine::Notice(protocol::HI_REPLY)));
        }
    }

    /// A line from someone flagged muted: refused while the mute holds;
    /// said if it has ended (the flag is then clear).
    #[cold]
    fn say_muted(&mut self, id: ClientId, text: &str, out: &mut Vec<Output>) {
        if !self.still_muted(id, out) {
            self.say(id, text, out);
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
        self.remove_session(id, CloseReason::Left, public, reason, out);
    }

    /// The server is stopping: everyone is told, then closed.
    pub fn shutdown(&mut self, out: &mut Vec<Output>) {
        // Shared, the rooms live on elsewhere: their members there hear
        // who went with this server (here, everyone is told below).
        if self.others.is_some() {
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
                    out.push(to_room(
                        person.room,
                        ServerLine::Notice(&text),
                        None,
                        Keep::Nothing,
                    ));
                }
            }
        }
        let notice: Arc<str> = ServerLine::Notice(SHUTDOWN_NOTICE).to_wire().into();
        for &id in self.sessions.keys() {
            out.push(Output::To {
                id,
                line: Arc::clone(&notice),
            });
            out.push(Output::Close {
                id,
                why: CloseReason::Shutdown,
            });
        }
        self.sessions.clear();
        self.people.clear();
        self.rooms.clear();
        self.history_total = 0;
        self.room_names.clear();
    }

    /// `guestN`, N the connection's number unless someone took that name;
    /// shared, the server's own prefix before N (`guestS-N`).
    fn free_guest_nick(&self, id: ClientId) -> Nick {
        let prefix = &self.guest_prefix;
        (id.0..)
            .filter_map(|n| Nick::parse(&format!("{prefix}{n}")).ok())
            .find(|nick| !self.people.contains_key(&nick.key()))
            .unwrap_or_else(|| unreachable!("fewer clients than numbers"))
    }

    /// The session and its person.
    fn person_of(&self, id: ClientId) -> Option<&Person> {
        self.people.get(&self.sessions.get(&id)?.person)
    }

    /// Takes one session out of the chat; its connection is closed once
    /// what is queued for it is sent (`why`). If it was its person's last,
    /// the person leaves too, and the room is told (`public` is the reason).
    fn remove_session(
        &mut self,
        id: ClientId,
        why: CloseReason,
        public: Option<&str>,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        out.push(Output::Close { id, why });
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
        if self.others.is_some() {
            out.push(Output::Elsewhere(Ask::Release {
                name: key.to_owned(),
            }));
        }
        if person.certificate.is_none() {
            self.forget_guest_ops(key, out);
        }
        self.leave_room(key, person.room);
        self.tell_leaving(person.room, notice, None, out);
    }
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

/// A line for everyone in `room` but `except`; the room keeps `keep` of
/// it once it is shown ([`Chat::heard`]), here or, shared, when it comes
/// back from the other servers.
fn to_room(room: RoomId, line: ServerLine<'_>, except: Option<ClientId>, keep: Keep) -> Output {
    Output::ToRoom(RoomLine {
        room,
        line: line.to_wire().into(),
        except,
        keep,
    })
}

mod commands;
mod moderation;
mod others;
mod rooms;
mod saved;

use moderation::ModerationState;
pub use moderation::{Clock, Save};
// What a room's rules may hold on linked servers, which the link checks too.
#[cfg(feature = "redis")]
pub(crate) use moderation::check_shared_rules;

use rooms::{History, RoomsMade, ROOMS_MADE_LOOK};

#[cfg(test)]
mod tests;

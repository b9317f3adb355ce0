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

use crate::elsewhere::{Ask, Query};
use crate::line::Frame;
use crate::protocol::{self, Command, NameError, Nick, Room, ServerLine, COMMANDS};

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
/// a walk of the room's sorted names up to that page, never a sort. (Shared,
/// every server sends its names, and the asker's sorts them all.)
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
    /// Something for the other servers this chat is shared with; only a
    /// shared chat ([`Chat::shared`]) asks.
    Elsewhere(Ask),
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
    /// Whether `topic` and `history` are known. Always, on a server
    /// alone; shared, once the other servers have told them
    /// ([`Told::Recent`]): until then, whoever enters is shown them when
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
    /// By [`Room::key`]; sorted, so `/rooms` comes out in order.
    room_names: BTreeMap<String, RoomId>,
    next_room: u64,
    /// Guests are named this and a number: `guest` alone; shared, a
    /// prefix no other server gives.
    guest_prefix: String,
    /// Set when the chat is shared with other servers: what it keeps of
    /// them.
    others: Option<Others>,
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
            room_names: BTreeMap::new(),
            next_room: 0,
            guest_prefix: "guest".to_owned(),
            others: None,
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

    /// The room called `name` (in any case), if anyone here is in it.
    pub fn room_named(&self, name: &str) -> Option<RoomId> {
        self.room_names.get(&name.to_ascii_lowercase()).copied()
    }

    /// What every server calls a room: its name, in lower case.
    pub fn room_key(&self, room: RoomId) -> Option<String> {
        self.rooms.get(&room).map(|state| state.name.key())
    }

    /// A line of `room` is shown here: the room keeps what `keep` says.
    /// Alone, that is as soon as it is said; shared, when it comes back
    /// from the other servers, in the order they give.
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
                        format!(
                            "{nick} has {max} sessions already, the most one person may \
                             have; close one and try again"
                        )
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
            let text = format!("you are {nick} ({count} sessions)");
            out.push(to(id, ServerLine::Notice(&text)));
            let room = person.room;
            self.show_room(id, room, out);
            return;
        }
        log::info!("{id} {peer}: joined as {nick}");
        out.push(to(id, ServerLine::Notice(&format!("you are {nick}"))));
        let lobby = self.room_for(Room::lobby());
        let person = Person {
            nick,
            room: lobby,
            certificate,
            sessions: vec![id],
            secret: None,
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
        // Shared, the rooms live on elsewhere: their members there hear
        // who went with this server (here, everyone is told below).
        if self.others.is_some() {
            for person in self.people.values() {
                let announce = self
                    .rooms
                    .get(&person.room)
                    .is_some_and(|state| state.members.len() <= self.settings.announce_limit);
                if announce {
                    let text = format!("{} quit: {SHUTDOWN_QUIT}", person.nick);
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
            // Shared, every server answers for its own users.
            Command::Rooms(page) if self.asks_everyone() => out.push(Output::Elsewhere(Ask::Query {
                id,
                query: Query::Rooms,
                page: page.map(str::to_owned),
            })),
            Command::Rooms(page) => {
                let text = self.rooms_page(page);
                out.push(reply(id, self.only_here(text)));
            }
            Command::Who(page) if self.asks_everyone() => out.push(Output::Elsewhere(Ask::Query {
                id,
                query: Query::Who(self.room_name(room).to_owned()),
                page: page.map(str::to_owned),
            })),
            Command::Who(page) => {
                let text = self.who_page(room, page);
                out.push(reply(id, self.only_here(text)));
            }
            Command::Whois(name) => {
                let key = name.to_ascii_lowercase();
                let text = match self.people.get(&key) {
                    Some(other) => Ok(self.whois_text(other)),
                    None if self.asks_everyone() && Nick::parse(name).is_ok() => {
                        return out.push(Output::Elsewhere(Ask::Query {
                            id,
                            query: Query::Whois(key),
                            page: None,
                        }));
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
                // Perhaps on another server: the others know.
                None if self.others.is_some() && Nick::parse(name).is_ok() => {
                    if !self.reachable() {
                        return out.push(to(id, ServerLine::Error(LINK_DOWN_MSG)));
                    }
                    let line = ServerLine::Private {
                        from: person.nick.as_str(),
                        to: name,
                        text,
                    }
                    .to_wire()
                    .into();
                    out.push(Output::Elsewhere(Ask::Private {
                        from: id,
                        to: name.to_ascii_lowercase(),
                        line,
                    }));
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
                // Kept when shown ([`Chat::heard`]).
                let Some(state) = self.rooms.get(&room) else {
                    return;
                };
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
            return out.push(to(
                id,
                ServerLine::Notice(&format!("you are already {nick}")),
            ));
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
            let text = format!(
                "cannot reclaim {nick}: no connection of yours holds it with that secret \
                 (if it is free, take it with /nick {nick})"
            );
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
        if self.others.is_some() {
            out.push(Output::Elsewhere(Ask::Release {
                name: current.clone(),
            }));
        }
        let left = self.people.remove(&current).map(|guest| {
            let notice = format!("{} left {}", guest.nick, self.room_name(guest.room));
            self.leave_room(&current, guest.room);
            (guest.room, notice)
        });
        if let Some(session) = self.sessions.get_mut(&id) {
            session.person = key.clone();
            session.wants_token = true;
        }
        log::info!("{id}: reclaimed {name}");
        out.push(to(id, ServerLine::Notice(&format!("you are {name} again"))));
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
            return out.push(to(
                id,
                ServerLine::Notice(&format!("you are already {new}")),
            ));
        }
        if person.certificate.is_some() {
            let text =
                format!("your nick is {old}, the name in your certificate; it cannot be changed");
            return out.push(to(id, ServerLine::Error(&text)));
        }
        let (old_key, new_key) = (old.key(), new.key());
        // Changing only the case of one's own nick is allowed.
        let other = old_key != new_key;
        let claimed = |others: &Others| others.claims.contains_key(&new_key);
        if other && (self.people.contains_key(&new_key) || self.others.as_ref().is_some_and(claimed)) {
            let text = format!("nick {new} is taken; choose another");
            return out.push(to(id, ServerLine::Error(&text)));
        }
        let reachable = self.reachable();
        if let (Some(others), true) = (&mut self.others, other) {
            // Guests' names are the servers' to give: one taken here could
            // be given to a newcomer on another server.
            if is_guest_name(&new_key) {
                let text = format!(
                    "{new} is a guest name, and the servers give those out; choose another"
                );
                return out.push(to(id, ServerLine::Error(&text)));
            }
            if others.claims.values().any(|(asker, ..)| *asker == id) {
                let text = "wait: the other servers have not yet answered your last /nick";
                return out.push(to(id, ServerLine::Error(text)));
            }
            if !reachable {
                return out.push(to(id, ServerLine::Error(LINK_DOWN_NICK)));
            }
            others.claims.insert(new_key.clone(), (id, new, old_key));
            return out.push(Output::Elsewhere(Ask::Claim { name: new_key }));
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
        let notice = format!("{old} is now {new}");
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
        out.push(to(id, ServerLine::Notice(&format!("you are now {new}"))));
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
            let text = format!("you are already in {}", self.room_name(current));
            return out.push(to(id, ServerLine::Notice(&text)));
        }
        let key = person.nick.key();
        let notice = format!("{} left {}", person.nick, self.room_name(current));
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
                known: self.others.is_none(),
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
            // Shared, it is shown only once back from the others, when
            // they are in: the first (most often the only) is left out by
            // name.
            let notice = format!("{} joined {}", person.nick, state.name);
            let except = if self.others.is_some() {
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
        let here = state.members.len();
        let people = if here == 1 { "person" } else { "people" };
        let text = format!("you are in {} ({here} {people} here)", state.name);
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
        } else if self.others.is_some() {
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
        // Shared, the room may live on on other servers, with nobody here.
        let announce = match self.rooms.get(&room) {
            None => self.others.is_some(),
            Some(state) if self.others.is_some() => state.members.len() < self.settings.announce_limit,
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
        let notice = match public {
            None => format!("{} quit", person.nick),
            Some(why) => format!("{} quit: {why}", person.nick),
        };
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
            .filter_map(|key| self.people.get(key).map(|p| p.nick.as_str()));
        Ok(paged(
            format!("in {} ({count})", state.name),
            names,
            ("/who", page, first, count, WHO_PAGE),
        ))
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
            .map(|state| format!("{} ({})", state.name, state.members.len()));
        Ok(paged(
            "rooms".to_string(),
            rooms,
            ("/rooms", page, first, count, ROOMS_PAGE),
        ))
    }

    fn room_name(&self, room: RoomId) -> &str {
        self.rooms
            .get(&room)
            .map_or("?", |state| state.name.as_str())
    }

    /// A chat or action line: to everyone in the room, and into its history.
    fn say_in_room(&mut self, room: RoomId, line: String, out: &mut Vec<Output>) {
        if !self.rooms.contains_key(&room) {
            return;
        }
        // Kept when shown ([`Chat::heard`]).
        out.push(Output::ToRoom {
            room,
            line: line.into(),
            except: None,
            keep: Keep::History,
        });
    }
}

/// Whether `key` is one of the names shared servers give their guests,
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

/// `head: a, b, c` when everything fits on one page; else `head, 101 to
/// 200: ...` and how to ask for the next page.
fn paged(
    head: String,
    items: impl Iterator<Item = impl AsRef<str>>,
    (command, page, first, count, per_page): (&str, usize, usize, usize, usize),
) -> String {
    let mut text = head;
    let shown = count.saturating_sub(first).min(per_page);
    if count > per_page {
        text.push_str(&format!(", {} to {}", first + 1, first + shown));
    }
    text.push_str(": ");
    for (i, item) in items.enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(item.as_ref());
    }
    if first + shown < count {
        text.push_str(&format!("; {command} {} for more", page + 1));
    }
    text
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

mod others;

#[cfg(test)]
mod tests;

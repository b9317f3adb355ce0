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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

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
/// a walk of the room's sorted names up to that page, never a sort.
pub const WHO_PAGE: usize = 100;

/// Rooms per `/rooms` line, for the same reasons.
pub const ROOMS_PAGE: usize = 50;

/// The notice every client gets when the server stops.
pub const SHUTDOWN_NOTICE: &str = "server shutting down, goodbye";

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
}

/// What the chat needs to know of the server's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatSettings {
    /// The longest line a client may send, named in the error for one longer.
    pub max_line: usize,
    /// Lines of history kept per room.
    pub history: usize,
    /// Rooms with more people than this do not announce who joins or quits.
    pub announce_limit: usize,
}

/// A client that is in the chat.
#[derive(Debug)]
struct Member {
    peer: SocketAddr,
    nick: Nick,
    room: RoomId,
    /// Set with mutual TLS: the nick comes from it and cannot change.
    certificate: Option<PeerCertificate>,
}

/// A room and what it remembers.
#[derive(Debug)]
struct RoomState {
    name: Room,
    /// Its members by [`Nick::key`]: sorted, so `/who` walks it in order.
    members: BTreeMap<String, ClientId>,
    topic: Option<String>,
    /// The last chat and action lines, as they were sent.
    history: VecDeque<Arc<str>>,
}

/// Everyone in the chat, their rooms, and the rules.
#[derive(Debug)]
pub struct Chat {
    settings: ChatSettings,
    members: HashMap<ClientId, Member>,
    /// Who has which nick, by [`Nick::key`].
    nicks: HashMap<String, ClientId>,
    rooms: HashMap<RoomId, RoomState>,
    /// By [`Room::key`]; sorted, so `/rooms` comes out in order.
    room_names: BTreeMap<String, RoomId>,
    next_room: u64,
}

impl Chat {
    /// An empty chat.
    pub fn new(settings: ChatSettings) -> Chat {
        Chat {
            settings,
            members: HashMap::new(),
            nicks: HashMap::new(),
            rooms: HashMap::new(),
            room_names: BTreeMap::new(),
            next_room: 0,
        }
    }

    /// People in the chat.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if nobody is in the chat.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A client finished its handshake and was admitted: it gets a name and
    /// the lobby, or a refusal that says why (a certificate whose name is
    /// not a valid nick, or is taken).
    pub fn join(
        &mut self,
        id: ClientId,
        peer: SocketAddr,
        certificate: Option<PeerCertificate>,
        out: &mut Vec<Output>,
    ) {
        if self.members.contains_key(&id) {
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
        let nick = match nick {
            Ok(nick) if self.nicks.contains_key(&nick.key()) => {
                Err(format!("{nick} is already connected"))
            }
            other => other,
        };
        let nick = match nick {
            Ok(nick) => nick,
            Err(why) => {
                log::info!("{id} {peer}: refused: {why}");
                out.push(to(id, ServerLine::Error(&why)));
                out.push(Output::Close { id });
                return;
            }
        };
        log::info!("{id} {peer}: joined as {nick}");
        self.nicks.insert(nick.key(), id);
        out.push(to(id, ServerLine::Notice(protocol::WELCOME)));
        out.push(to(id, ServerLine::Notice(&format!("you are {nick}"))));
        let lobby = self.room_for(Room::lobby());
        self.members.insert(
            id,
            Member {
                peer,
                nick,
                room: lobby,
                certificate,
            },
        );
        self.enter_room(id, lobby, out);
    }

    /// The client sent a line (or something refused as one).
    pub fn line(&mut self, id: ClientId, frame: Frame, out: &mut Vec<Output>) {
        // Lines from a client that said bye still arrive; they are dropped.
        if !self.members.contains_key(&id) {
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
        if self.members.contains_key(&id) {
            let text = "you are sending too fast: your lines are being delayed (none are lost)";
            out.push(to(id, ServerLine::Error(text)));
        }
    }

    /// The connection ended. If the client was still in the chat, it leaves:
    /// the room is told (`public` is the reason it hears, if any beyond
    /// "quit"), and its connection is closed. `reason` is for the log.
    pub fn left(
        &mut self,
        id: ClientId,
        public: Option<&str>,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        self.remove_member(id, public, reason, out);
    }

    /// The server is stopping: everyone is told, then closed.
    pub fn shutdown(&mut self, out: &mut Vec<Output>) {
        let notice: Arc<str> = ServerLine::Notice(SHUTDOWN_NOTICE).to_wire().into();
        for &id in self.members.keys() {
            out.push(Output::To {
                id,
                line: Arc::clone(&notice),
            });
            out.push(Output::Close { id });
        }
        self.members.clear();
        self.nicks.clear();
        self.rooms.clear();
        self.room_names.clear();
    }

    /// `guestN`, N the connection's number unless someone took that name.
    fn free_guest_nick(&self, id: ClientId) -> Nick {
        (id.0..)
            .filter_map(|n| Nick::parse(&format!("guest{n}")).ok())
            .find(|nick| !self.nicks.contains_key(&nick.key()))
            .unwrap_or_else(|| unreachable!("fewer clients than numbers"))
    }

    fn command(&mut self, id: ClientId, command: Command<'_>, out: &mut Vec<Output>) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        let room = member.room;
        match command {
            Command::Say(text) => {
                // The sender gets the line too: its acknowledgement, in the
                // same order everyone else sees.
                let from = member.nick.as_str();
                self.say_in_room(room, ServerLine::Chat { from, text }.to_wire(), out);
                if protocol::is_greeting(text) {
                    out.push(to(id, ServerLine::Notice(protocol::HI_REPLY)));
                }
            }
            Command::Me(text) => {
                let from = member.nick.as_str();
                self.say_in_room(room, ServerLine::Action { from, text }.to_wire(), out);
            }
            Command::Nick(name) => self.change_nick(id, name, out),
            Command::Join(name) => self.join_room(id, name, out),
            Command::Rooms(page) => {
                let text = self.rooms_page(page);
                out.push(reply(id, text));
            }
            Command::Who(page) => {
                let text = self.who_page(room, page);
                out.push(reply(id, text));
            }
            Command::Whois(name) => {
                let text = match self.find_nick(name).and_then(|id| self.members.get(&id)) {
                    Some(other) => {
                        let mut text =
                            format!("{} is in {}", other.nick, self.room_name(other.room));
                        if let Some(cert) = &other.certificate {
                            text.push_str(&format!(", certificate {}", cert.subject));
                        }
                        Ok(text)
                    }
                    None => Err(format!("no user named {name} is connected")),
                };
                out.push(reply(id, text));
            }
            Command::Msg { to: name, text } => {
                match self
                    .find_nick(name)
                    .and_then(|t| Some((t, self.members.get(&t)?)))
                {
                    Some((target, recipient)) => {
                        let line: Arc<str> = ServerLine::Private {
                            from: member.nick.as_str(),
                            to: recipient.nick.as_str(),
                            text,
                        }
                        .to_wire()
                        .into();
                        if target != id {
                            out.push(Output::To {
                                id,
                                line: Arc::clone(&line),
                            });
                        }
                        out.push(Output::To { id: target, line });
                    }
                    None => {
                        let text = format!("no user named {name} is connected");
                        out.push(to(id, ServerLine::Error(&text)));
                    }
                }
            }
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
                let Some(state) = self.rooms.get_mut(&room) else {
                    return;
                };
                state.topic = Some(topic.to_string());
                let text = format!("{} set the topic of {}: {topic}", member.nick, state.name);
                out.push(to_room(room, ServerLine::Notice(&text), None));
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
                self.remove_member(id, public.as_deref(), "said goodbye", out);
            }
        }
    }

    fn change_nick(&mut self, id: ClientId, name: &str, out: &mut Vec<Output>) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        let new = match Nick::parse(name) {
            Ok(new) => new,
            Err(why) => return out.push(invalid(id, name, "nick", why, "")),
        };
        let old = &member.nick;
        if new == *old {
            return out.push(to(
                id,
                ServerLine::Notice(&format!("you are already {new}")),
            ));
        }
        if member.certificate.is_some() {
            let text =
                format!("your nick is {old}, the name in your certificate; it cannot be changed");
            return out.push(to(id, ServerLine::Error(&text)));
        }
        // Changing only the case of one's own nick is allowed.
        if self.nicks.get(&new.key()).is_some_and(|owner| *owner != id) {
            let text = format!("nick {new} is taken; choose another");
            return out.push(to(id, ServerLine::Error(&text)));
        }
        let room = member.room;
        log::info!("{id}: {old} is now {new}");
        let notice = format!("{old} is now {new}");
        let (old_key, new_key) = (old.key(), new.key());
        self.nicks.remove(&old_key);
        self.nicks.insert(new_key.clone(), id);
        if let Some(state) = self.rooms.get_mut(&room) {
            state.members.remove(&old_key);
            state.members.insert(new_key, id);
        }
        out.push(to(id, ServerLine::Notice(&format!("you are now {new}"))));
        out.push(to_room(room, ServerLine::Notice(&notice), Some(id)));
        if let Some(member) = self.members.get_mut(&id) {
            member.nick = new;
        }
    }

    fn join_room(&mut self, id: ClientId, name: &str, out: &mut Vec<Output>) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        let target = match Room::parse(name) {
            Ok(target) => target,
            Err(why) => return out.push(invalid(id, name, "room name", why, "# and then ")),
        };
        let current = member.room;
        if self.room_names.get(&target.key()) == Some(&current) {
            let text = format!("you are already in {}", self.room_name(current));
            return out.push(to(id, ServerLine::Notice(&text)));
        }
        let notice = format!("{} left {}", member.nick, self.room_name(current));
        self.leave_room(id, current, &notice, out);
        let room = self.room_for(target);
        if let Some(member) = self.members.get_mut(&id) {
            member.room = room;
        }
        self.enter_room(id, room, out);
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
                members: BTreeMap::new(),
                topic: None,
                history: VecDeque::new(),
            },
        );
        room
    }

    /// Puts a member into a room (its `room` already says so) and shows it
    /// the room: who is there, the topic, the history.
    fn enter_room(&mut self, id: ClientId, room: RoomId, out: &mut Vec<Output>) {
        let (Some(member), Some(state)) = (self.members.get(&id), self.rooms.get_mut(&room)) else {
            return;
        };
        state.members.insert(member.nick.key(), id);
        out.push(Output::Enter { id, room });
        let here = state.members.len();
        if here <= self.settings.announce_limit {
            let notice = format!("{} joined {}", member.nick, state.name);
            out.push(to_room(room, ServerLine::Notice(&notice), Some(id)));
        }
        let people = if here == 1 { "person" } else { "people" };
        let text = format!("you are in {} ({here} {people} here)", state.name);
        out.push(to(id, ServerLine::Notice(&text)));
        if let Some(topic) = &state.topic {
            let text = format!("topic of {}: {topic}", state.name);
            out.push(to(id, ServerLine::Notice(&text)));
        }
        for line in &state.history {
            out.push(to(id, ServerLine::History(line)));
        }
    }

    /// Takes a member out of its room, telling those who stay; an empty
    /// room is forgotten, except the lobby.
    fn leave_room(&mut self, id: ClientId, room: RoomId, notice: &str, out: &mut Vec<Output>) {
        let (Some(member), Some(state)) = (self.members.get(&id), self.rooms.get_mut(&room)) else {
            return;
        };
        if (2..=self.settings.announce_limit).contains(&state.members.len()) {
            // Told while the leaver is still in the room for the writers
            // (until its next Enter or Close): it is left out by name.
            out.push(to_room(room, ServerLine::Notice(notice), Some(id)));
        }
        state.members.remove(&member.nick.key());
        if state.members.is_empty() && state.name.as_str() != protocol::LOBBY {
            self.room_names.remove(&state.name.key());
            self.rooms.remove(&room);
        }
    }

    /// Takes a member out of the chat; its connection is closed once what
    /// is queued for it is sent. `public` is the reason the room is told.
    fn remove_member(
        &mut self,
        id: ClientId,
        public: Option<&str>,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        log::info!("{id} {}: {} left: {reason}", member.peer, member.nick);
        let notice = match public {
            None => format!("{} quit", member.nick),
            Some(why) => format!("{} quit: {why}", member.nick),
        };
        let room = member.room;
        self.leave_room(id, room, &notice, out);
        if let Some(member) = self.members.remove(&id) {
            self.nicks.remove(&member.nick.key());
        }
        out.push(Output::Close { id });
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
            .values()
            .skip(first)
            .take(WHO_PAGE)
            .filter_map(|id| self.members.get(id).map(|m| m.nick.as_str()));
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

    fn find_nick(&self, name: &str) -> Option<ClientId> {
        self.nicks.get(&name.to_ascii_lowercase()).copied()
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
        if self.settings.history > 0 {
            if state.history.len() >= self.settings.history {
                state.history.pop_front();
            }
            state.history.push_back(Arc::clone(&line));
        }
        out.push(Output::ToRoom {
            room,
            line,
            except: None,
        });
    }
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
    }

    impl Harness {
        fn new(settings: ChatSettings) -> Harness {
            Harness {
                chat: Chat::new(settings),
                rooms: HashMap::new(),
                closed: HashSet::new(),
            }
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
                    Output::ToRoom { room, line, except } => {
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
                }
            }
            seen
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
            assert_eq!(chat.nicks.len(), chat.members.len());
            for (id, member) in &chat.members {
                assert_eq!(chat.nicks.get(&member.nick.key()), Some(id));
                let room = &chat.rooms[&member.room];
                assert_eq!(room.members.get(&member.nick.key()), Some(id));
            }
            let in_rooms: usize = chat.rooms.values().map(|r| r.members.len()).sum();
            assert_eq!(in_rooms, chat.members.len());
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
        harness.chat.members[&id].nick.to_string()
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
        let cert = |cn: &str| PeerCertificate {
            subject: format!("CN={cn}"),
            common_name: Some(cn.to_string()),
        };
        let alice = ClientId(1);
        let seen = h.join_as(alice, Some(cert("alice")));
        assert_eq!(seen[&alice][1], "notice you are alice");
        h.expect(
            alice,
            "/nick bob",
            &["error your nick is alice, the name in your certificate; it cannot be changed"],
        );
        let twin = ClientId(2);
        let seen = h.join_as(twin, Some(cert("Alice")));
        assert_eq!(seen[&twin], vec!["error Alice is already connected"]);
        assert!(h.closed.contains(&twin));
        let odd = ClientId(3);
        let seen = h.join_as(odd, Some(cert("not a nick")));
        assert!(seen[&odd][0].starts_with("error your certificate's common name (CN=not a nick)"));
        assert!(h.closed.contains(&odd));
        let b = h.join(4);
        h.expect(
            b,
            "/whois ALICE",
            &["notice alice is in #lobby, certificate CN=alice"],
        );
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

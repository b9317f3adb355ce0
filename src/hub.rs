//! The hub: one thread that owns everything the sessions share.
//!
//! Sessions never touch each other. Their readers send the hub [`Event`]s;
//! the hub owns nicks, rooms, topics and history, decides, and pushes lines
//! into each recipient's [`Outbox`]. It knows channels and sockets to cut,
//! never TLS.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::line::Frame;
use crate::outbox::{Outbox, Overflow, Wake, Waker};
use crate::protocol::{self, Command, Nick, Room, ServerLine, COMMANDS};

/// Default for how many of a room's last lines a newcomer is shown.
///
/// Enough to see what the conversation is about; small enough that joining
/// a busy room does not flood the screen. 0 keeps no history at all.
pub const HISTORY_LINES: usize = 50;

/// A connection's number, unique for the life of the server; logs use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What sessions tell the hub.
#[derive(Debug)]
pub enum Event {
    /// The accept loop took a connection; its handshake starts now. The hub
    /// keeps the socket so it can cut the connection at shutdown.
    Accepted {
        /// The new connection.
        id: ClientId,
        /// Where it comes from.
        peer: SocketAddr,
        /// Used only to shut the connection down.
        socket: Arc<TcpStream>,
    },
    /// The handshake succeeded: the client may chat. Lines for it go to `outbox`.
    Ready {
        /// The connection.
        id: ClientId,
        /// The writer thread drains it.
        outbox: Outbox,
        /// The client's certificate, when the server asks for one.
        certificate: Option<PeerCertificate>,
    },
    /// The client sent a line (or something that was refused as one).
    Frame {
        /// Who sent it.
        id: ClientId,
        /// What arrived.
        frame: Frame,
    },
    /// The client is sending faster than its rate limit; its reader now
    /// slows down. Sent once per flood.
    Throttled {
        /// The connection.
        id: ClientId,
    },
    /// The connection ended, for the reason given.
    Gone {
        /// The connection.
        id: ClientId,
        /// Why, for the log.
        reason: String,
    },
    /// Every thread of the connection has ended; its socket can be let go.
    Closed {
        /// The connection.
        id: ClientId,
    },
    /// The server is stopping: tell everyone, close every connection.
    Shutdown,
}

/// The notice every client gets when the server stops.
pub const SHUTDOWN_NOTICE: &str = "server shutting down, goodbye";

/// What the hub needs to know of the server's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubSettings {
    /// The longest line a client may send, named in the error for one longer.
    pub max_line: usize,
    /// Lines of history kept per room.
    pub history: usize,
    /// The most members at once; more are refused with `server full`.
    pub max_clients: usize,
    /// The most members from one IP address, if limited.
    pub max_per_ip: Option<usize>,
    /// Rooms with more people than this do not announce who joins or quits.
    pub announce_limit: usize,
}

/// Default for [`HubSettings::announce_limit`].
///
/// In a room of a hundred, arrivals and departures are still news; in a
/// room of thousands they would be most of the traffic, and when everyone
/// reconnects at once (after a restart), each arrival told to everyone is
/// a storm that grows with the square of the room.
pub const ANNOUNCE_LIMIT: usize = 100;

/// What a client's certificate says, when mutual TLS is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The whole subject, for `/whois` and the log.
    pub subject: String,
    /// The common name, which becomes the client's nick.
    pub common_name: Option<String>,
}

/// One connection, from accept to goodbye.
struct Conn {
    peer: SocketAddr,
    socket: Arc<TcpStream>,
    /// `None` until the handshake is done.
    member: Option<Member>,
}

/// A client that is in the chat.
struct Member {
    nick: Nick,
    /// The key of the room it is in (see [`Room::key`]).
    room: String,
    outbox: Outbox,
    /// Set with mutual TLS: the nick comes from it and cannot change.
    certificate: Option<PeerCertificate>,
}

/// A room and what it remembers.
struct RoomState {
    name: Room,
    /// By connection number.
    members: BTreeSet<ClientId>,
    topic: Option<String>,
    /// The last chat and action lines, as they were sent.
    history: VecDeque<Arc<str>>,
}

/// The hub's state. Only the hub thread ever holds it.
struct Hub {
    conns: BTreeMap<ClientId, Conn>,
    /// Connections the chat is done with whose threads have not all ended
    /// (a writer still flushing, or stuck); kept so shutdown can cut them.
    closing: HashMap<ClientId, Arc<TcpStream>>,
    /// Who has which nick, by [`Nick::key`].
    nicks: HashMap<String, ClientId>,
    /// By [`Room::key`]; a `BTreeMap` so `/rooms` comes out sorted.
    rooms: BTreeMap<String, RoomState>,
    settings: HubSettings,
    /// Clients that overflowed while the current event was handled; they are
    /// cut once it is done.
    too_slow: HashMap<ClientId, Overflow>,
    /// Writers given lines in this round while they may be asleep.
    to_wake: Vec<Waker>,
}

/// The most events the hub handles before it wakes the writers it gave
/// lines to. Bounds how long a line can wait in a queue for its writer to
/// be woken: a round of 64 events takes well under a millisecond.
const ROUND: usize = 64;

/// The hub thread's loop: handles events until [`Event::Shutdown`] or until
/// every sender is gone.
///
/// Returns the sockets of the connections still open, so the server can cut
/// any that do not finish closing on their own.
pub fn run(events: Receiver<Event>, settings: HubSettings) -> Vec<Arc<TcpStream>> {
    let mut hub = Hub {
        conns: BTreeMap::new(),
        closing: HashMap::new(),
        nicks: HashMap::new(),
        rooms: BTreeMap::new(),
        settings,
        too_slow: HashMap::new(),
        to_wake: Vec::new(),
    };
    'events: while let Ok(first) = events.recv() {
        // Handle what is already waiting, up to a round's worth, before
        // waking the writers that got lines: under load each wakes once
        // for many lines; with one event at a time, nothing waits longer.
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(event) = next.take() {
            if let Event::Shutdown = event {
                hub.wake_writers();
                hub.shutdown();
                break 'events;
            }
            hub.handle(event);
            hub.drop_slow_clients();
            handled += 1;
            if handled < ROUND {
                next = events.try_recv().ok();
            }
        }
        hub.wake_writers();
    }
    let open = hub.conns.into_values().map(|conn| conn.socket);
    open.chain(hub.closing.into_values()).collect()
}

impl Hub {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Accepted { id, peer, socket } => {
                let conn = Conn {
                    peer,
                    socket,
                    member: None,
                };
                self.conns.insert(id, conn);
            }
            Event::Ready {
                id,
                outbox,
                certificate,
            } => self.join(id, outbox, certificate),
            Event::Frame { id, frame } => self.frame(id, frame),
            Event::Throttled { id } => {
                self.error(
                    id,
                    "you are sending too fast: your lines are being delayed (none are lost)",
                );
            }
            Event::Gone { id, reason } => self.remove(id, None, &reason),
            Event::Closed { id } => {
                self.closing.remove(&id);
                // Closed without a Gone: its handshake thread never started.
                if let Some(conn) = self.conns.remove(&id) {
                    debug_assert!(conn.member.is_none());
                }
            }
            Event::Shutdown => unreachable!("handled by run"),
        }
    }

    /// A client finished its handshake: it gets a name and the lobby, or
    /// a refusal that says why.
    fn join(&mut self, id: ClientId, outbox: Outbox, certificate: Option<PeerCertificate>) {
        let Some(peer) = self.conns.get(&id).map(|conn| conn.peer) else {
            // Gone before its handshake finished; the writer stops when
            // this last outbox is dropped.
            return;
        };
        let members = self.conns.values().filter(|c| c.member.is_some());
        let (count, from_peer) = members.fold((0, 0), |(all, same), c| {
            (all + 1, same + usize::from(c.peer.ip() == peer.ip()))
        });
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
        let refusal = if count >= self.settings.max_clients {
            Some(format!("server full ({count} clients); try again later"))
        } else if self.settings.max_per_ip.is_some_and(|max| from_peer >= max) {
            Some(format!(
                "too many connections from {} ({from_peer}); close one and try again",
                peer.ip()
            ))
        } else {
            match &nick {
                Err(why) => Some(why.clone()),
                Ok(nick) if self.nicks.contains_key(&nick.key()) => {
                    Some(format!("{nick} is already connected"))
                }
                Ok(_) => None,
            }
        };
        if let Some(why) = refusal {
            let _ = outbox.push(ServerLine::Error(&why).to_wire().into());
            outbox.close();
            return self.remove(id, None, &format!("refused: {why}"));
        }
        let nick = nick.expect("refused above");
        log::info!("{id} {peer}: joined as {nick}");
        self.nicks.insert(nick.key(), id);
        let conn = self.conns.get_mut(&id).expect("checked above");
        conn.member = Some(Member {
            nick: nick.clone(),
            room: String::new(),
            outbox,
            certificate,
        });
        self.notice(id, protocol::WELCOME);
        self.notice(id, &format!("you are {nick}"));
        self.enter_room(id, Room::lobby());
    }

    /// `guestN`, N the connection's number unless someone took that name.
    fn free_guest_nick(&self, id: ClientId) -> Nick {
        (id.0..)
            .map(|n| Nick::parse(&format!("guest{n}")).expect("a valid nick"))
            .find(|nick| !self.nicks.contains_key(&nick.key()))
            .expect("some guest number is free")
    }

    fn frame(&mut self, id: ClientId, frame: Frame) {
        // Lines from a client that said bye still arrive; they are dropped.
        if self.member(id).is_none() {
            return;
        }
        let text = match frame {
            Frame::Line(text) => text,
            Frame::TooLong => {
                let text = format!(
                    "line too long: the limit is {} bytes; it was not sent",
                    self.settings.max_line
                );
                return self.error(id, &text);
            }
            Frame::InvalidUtf8 => {
                return self.error(id, "line is not valid UTF-8; it was not sent");
            }
        };
        match protocol::parse_command(&text) {
            Ok(None) => {}
            Ok(Some(command)) => self.command(id, command),
            Err(err) => self.error(id, &err.to_string()),
        }
    }

    fn command(&mut self, id: ClientId, command: Command<'_>) {
        let member = self.member(id).expect("checked by frame");
        let nick = member.nick.clone();
        let room = member.room.clone();
        match command {
            Command::Say(text) => {
                // The sender gets the line too: its acknowledgement, in the
                // same order everyone else sees.
                let line = ServerLine::Chat {
                    from: nick.as_str(),
                    text,
                };
                self.say_in_room(&room, line);
                if protocol::is_greeting(text) {
                    self.notice(id, protocol::HI_REPLY);
                }
            }
            Command::Me(text) => {
                let line = ServerLine::Action {
                    from: nick.as_str(),
                    text,
                };
                self.say_in_room(&room, line);
            }
            Command::Nick(name) => self.change_nick(id, &nick, name),
            Command::Join(name) => match Room::parse(name) {
                Ok(target) if target.key() == room => {
                    let text = format!("you are already in {}", self.room_name(&room));
                    self.notice(id, &text);
                }
                Ok(target) => {
                    let notice = format!("{nick} left {}", self.room_name(&room));
                    self.leave_room(id, &room, &notice);
                    self.enter_room(id, target);
                }
                Err(why) => {
                    let text = format!(
                        "{name:?} is not a valid room name ({why}): use # and then 1 to 24 \
                         letters, digits, _ or -, starting with a letter or _"
                    );
                    self.error(id, &text)
                }
            },
            Command::Rooms => {
                let list: Vec<String> = self
                    .rooms
                    .values()
                    .map(|r| format!("{} ({})", r.name, r.members.len()))
                    .collect();
                self.notice(id, &format!("rooms: {}", list.join(", ")));
            }
            Command::Who => {
                let state = &self.rooms[&room];
                let mut nicks: Vec<&str> = state
                    .members
                    .iter()
                    .filter_map(|m| self.member(*m).map(|m| m.nick.as_str()))
                    .collect();
                nicks.sort_by_key(|n| n.to_ascii_lowercase());
                let text = format!("in {} ({}): {}", state.name, nicks.len(), nicks.join(", "));
                self.notice(id, &text);
            }
            Command::Whois(name) => match self.find_nick(name) {
                Some(other) => {
                    let member = self.member(other).expect("nicks hold members");
                    let mut text =
                        format!("{} is in {}", member.nick, self.room_name(&member.room));
                    if let Some(cert) = &member.certificate {
                        text.push_str(&format!(", certificate {}", cert.subject));
                    }
                    self.notice(id, &text);
                }
                None => self.error(id, &format!("no user named {name} is connected")),
            },
            Command::Msg { to, text } => match self.find_nick(to) {
                Some(target) => {
                    let recipient = self
                        .member(target)
                        .expect("nicks hold members")
                        .nick
                        .clone();
                    let line: Arc<str> = ServerLine::Private {
                        from: nick.as_str(),
                        to: recipient.as_str(),
                        text,
                    }
                    .to_wire()
                    .into();
                    self.deliver(target, Arc::clone(&line));
                    if target != id {
                        self.deliver(id, line);
                    }
                }
                None => self.error(id, &format!("no user named {to} is connected")),
            },
            Command::Topic(None) => {
                let state = &self.rooms[&room];
                let text = match &state.topic {
                    Some(topic) => format!("topic of {}: {topic}", state.name),
                    None => format!("{} has no topic; set one with /topic TEXT", state.name),
                };
                self.notice(id, &text);
            }
            Command::Topic(Some(topic)) => {
                let state = self.rooms.get_mut(&room).expect("members are in a room");
                state.topic = Some(topic.to_string());
                let text = format!("{nick} set the topic of {}: {topic}", state.name);
                self.tell_room(&room, ServerLine::Notice(&text));
            }
            Command::Help(None) => {
                let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
                self.notice(id, &format!("commands: {}", names.join(" ")));
                for info in COMMANDS {
                    self.notice(id, &format!("{}: {}", info.usage, info.help));
                }
                self.notice(id, "anything else you type is said to the room; start it with // to say a line that begins with /");
            }
            Command::Help(Some(name)) => match protocol::command_info(name) {
                Some(info) => self.notice(id, &format!("{}: {}", info.usage, info.help)),
                None => self.error(id, &format!("no command {name}: /help lists the commands")),
            },
            Command::Quit(reason) => {
                self.notice(id, protocol::BYE_REPLY);
                self.remove(id, reason, "said goodbye");
            }
        }
    }

    fn change_nick(&mut self, id: ClientId, old: &Nick, name: &str) {
        let new = match Nick::parse(name) {
            Ok(new) => new,
            Err(why) => {
                let text = format!(
                    "{name:?} is not a valid nick ({why}): use 1 to 24 letters, digits, \
                     _ or -, starting with a letter or _"
                );
                return self.error(id, &text);
            }
        };
        if new == *old {
            return self.notice(id, &format!("you are already {new}"));
        }
        if self.member(id).is_some_and(|m| m.certificate.is_some()) {
            let text =
                format!("your nick is {old}, the name in your certificate; it cannot be changed");
            return self.error(id, &text);
        }
        // Changing only the case of one's own nick is allowed.
        if self.nicks.get(&new.key()).is_some_and(|owner| *owner != id) {
            return self.error(id, &format!("nick {new} is taken; choose another"));
        }
        self.nicks.remove(&old.key());
        self.nicks.insert(new.key(), id);
        let member = self.member_mut(id).expect("checked by frame");
        member.nick = new.clone();
        let room = member.room.clone();
        log::info!("{id}: {old} is now {new}");
        self.notice(id, &format!("you are now {new}"));
        self.tell_room_except(
            &room,
            id,
            ServerLine::Notice(&format!("{old} is now {new}")),
        );
    }

    /// Puts a member into a room, creating the room if needed, and shows it
    /// the room: who is there, the topic, the history.
    fn enter_room(&mut self, id: ClientId, room: Room) {
        let key = room.key();
        let state = self.rooms.entry(key.clone()).or_insert_with(|| RoomState {
            name: room,
            members: BTreeSet::new(),
            topic: None,
            history: VecDeque::new(),
        });
        state.members.insert(id);
        let name = state.name.clone();
        let here = state.members.len();
        let topic = state.topic.clone();
        let history: Vec<Arc<str>> = state.history.iter().cloned().collect();
        let member = self.member_mut(id).expect("entering members exist");
        member.room = key.clone();
        let nick = member.nick.clone();

        if here <= self.settings.announce_limit {
            let notice = format!("{nick} joined {name}");
            self.tell_room_except(&key, id, ServerLine::Notice(&notice));
        }
        let people = if here == 1 { "person" } else { "people" };
        self.notice(id, &format!("you are in {name} ({here} {people} here)"));
        if let Some(topic) = topic {
            self.notice(id, &format!("topic of {name}: {topic}"));
        }
        for line in history {
            self.deliver(id, ServerLine::History(&line).to_wire().into());
        }
    }

    /// Takes a member out of its room, telling those who stay; an empty
    /// room is forgotten, except the lobby.
    fn leave_room(&mut self, id: ClientId, room: &str, notice: &str) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        let was_here = state.members.len();
        state.members.remove(&id);
        if state.members.is_empty() && state.name.as_str() != protocol::LOBBY {
            self.rooms.remove(room);
        } else if was_here <= self.settings.announce_limit {
            self.tell_room(room, ServerLine::Notice(notice));
        }
    }

    /// Removes a connection; a member's writer sends what is queued, then
    /// closes. `public` is the reason the room is told, if any. Harmless
    /// for a connection already gone.
    fn remove(&mut self, id: ClientId, public: Option<&str>, reason: &str) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let peer = conn.peer;
        // Its threads may still be flushing (or stuck); until they end,
        // shutdown may have to cut the socket.
        self.closing.insert(id, conn.socket);
        match conn.member {
            Some(member) => {
                let nick = &member.nick;
                log::info!("{id} {peer}: {nick} left: {reason}");
                member.outbox.close();
                self.nicks.remove(&nick.key());
                let notice = match public {
                    None => format!("{nick} quit"),
                    Some(why) => format!("{nick} quit: {why}"),
                };
                self.leave_room(id, &member.room, &notice);
            }
            None => log::info!("{id} {peer}: closed before joining: {reason}"),
        }
    }

    fn member(&self, id: ClientId) -> Option<&Member> {
        self.conns.get(&id)?.member.as_ref()
    }

    fn member_mut(&mut self, id: ClientId) -> Option<&mut Member> {
        self.conns.get_mut(&id)?.member.as_mut()
    }

    fn find_nick(&self, name: &str) -> Option<ClientId> {
        self.nicks.get(&name.to_ascii_lowercase()).copied()
    }

    fn room_name<'a>(&'a self, key: &'a str) -> &'a str {
        self.rooms.get(key).map_or(key, |state| state.name.as_str())
    }

    fn notice(&mut self, id: ClientId, text: &str) {
        self.deliver(id, ServerLine::Notice(text).to_wire().into());
    }

    fn error(&mut self, id: ClientId, text: &str) {
        self.deliver(id, ServerLine::Error(text).to_wire().into());
    }

    /// Queues one line for one member. A full queue never blocks the hub;
    /// its client is noted and cut once the current event is handled.
    fn deliver(&mut self, id: ClientId, line: Arc<str>) {
        if let Some(member) = self.conns.get(&id).and_then(|c| c.member.as_ref()) {
            queue_line(id, member, line, &mut self.too_slow, &mut self.to_wake);
        }
    }

    fn wake_writers(&mut self) {
        for waker in self.to_wake.drain(..) {
            waker.wake();
        }
    }

    /// A chat or action line: to everyone in the room, and into its history.
    fn say_in_room(&mut self, room: &str, line: ServerLine<'_>) {
        let wire: Arc<str> = line.to_wire().into();
        if self.settings.history > 0 {
            if let Some(state) = self.rooms.get_mut(room) {
                if state.history.len() == self.settings.history {
                    state.history.pop_front();
                }
                state.history.push_back(Arc::clone(&wire));
            }
        }
        self.fan_out(room, wire, None);
    }

    fn tell_room(&mut self, room: &str, line: ServerLine<'_>) {
        self.fan_out(room, line.to_wire().into(), None);
    }

    fn tell_room_except(&mut self, room: &str, except: ClientId, line: ServerLine<'_>) {
        self.fan_out(room, line.to_wire().into(), Some(except));
    }

    /// Sends one line to a room: formatted once, and each queue gets a
    /// pointer to it.
    fn fan_out(&mut self, room: &str, wire: Arc<str>, except: Option<ClientId>) {
        let Some(state) = self.rooms.get(room) else {
            return;
        };
        for &id in &state.members {
            if Some(id) == except {
                continue;
            }
            if let Some(member) = self.conns.get(&id).and_then(|c| c.member.as_ref()) {
                let line = Arc::clone(&wire);
                queue_line(id, member, line, &mut self.too_slow, &mut self.to_wake);
            }
        }
    }

    /// Cuts every client that could not keep up. Each departure is announced,
    /// which may overflow someone else, hence the loop.
    fn drop_slow_clients(&mut self) {
        while let Some(&id) = self.too_slow.keys().next() {
            let overflow = self.too_slow.remove(&id).expect("key just seen");
            let Some(conn) = self.conns.get(&id) else {
                continue;
            };
            log::warn!(
                "{id} {}: disconnected as too slow ({} lines, {} bytes waiting)",
                conn.peer,
                overflow.messages,
                overflow.bytes
            );
            // Its writer may be stuck in a send the peer never reads: only
            // shutting the socket down frees it.
            let _ = conn.socket.shutdown(Shutdown::Both);
            self.remove(id, Some("too slow"), "too slow");
        }
    }

    /// Says goodbye to every member and closes their connections; cuts the
    /// ones still in their handshake.
    fn shutdown(&mut self) {
        let notice: Arc<str> = ServerLine::Notice(SHUTDOWN_NOTICE).to_wire().into();
        for conn in self.conns.values() {
            match &conn.member {
                Some(member) => {
                    // A client too far behind to take one more line is cut
                    // by the server's deadline instead.
                    let _ = member.outbox.push(Arc::clone(&notice));
                    member.outbox.close();
                }
                None => {
                    let _ = conn.socket.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

/// Queues a line for one member. A full queue never blocks the hub: its
/// client is noted in `too_slow` and cut once the current event is handled.
/// A writer that may be asleep goes into `to_wake`.
fn queue_line(
    id: ClientId,
    member: &Member,
    line: Arc<str>,
    too_slow: &mut HashMap<ClientId, Overflow>,
    to_wake: &mut Vec<Waker>,
) {
    match member.outbox.push_without_waking(line) {
        Ok(Wake::Soon) => to_wake.push(member.outbox.waker()),
        Ok(Wake::Now) => member.outbox.wake(),
        Ok(Wake::No) => {}
        Err(overflow) => {
            too_slow.insert(id, overflow);
        }
    }
}

//! The hub: one thread that owns everything the sessions share.
//!
//! Sessions never touch each other. Their threads send the hub [`Event`]s;
//! the hub owns nicks, rooms, topics and history, decides, and hands each
//! writer shard the lines for its clients: one message per line per shard,
//! however many recipients. It knows channels and shards, never sockets or
//! TLS.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::budget::{Budget, Outgoing};
use crate::line::Frame;
use crate::protocol::{self, Command, Nick, Room, ServerLine, COMMANDS};
use crate::queue::Receiver;
use crate::shard::{RoomId, Shard, Slot, To, Work};

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

/// Where a client's lines go: its writer shard, and its place there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// Index of the shard.
    pub shard: usize,
    /// The client's slot in that shard.
    pub slot: Slot,
}

/// What sessions tell the hub.
#[derive(Debug)]
pub enum Event {
    /// The handshake succeeded and a shard has the connection: the client
    /// may chat. Lines for it go to `address`.
    Ready {
        /// The connection.
        id: ClientId,
        /// Where it comes from.
        peer: SocketAddr,
        /// Its shard and slot.
        address: Address,
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
    /// The connection ended; nothing more comes from it.
    Gone {
        /// The connection.
        id: ClientId,
        /// Its shard and slot: the shard hears of the end from the hub, in
        /// the same round as the hub's own last word.
        address: Address,
        /// Why, for the log.
        reason: String,
        /// What the room is told, if anything beyond "quit".
        public: Option<&'static str>,
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

/// A client that is in the chat.
struct Member {
    peer: SocketAddr,
    nick: Nick,
    /// The key of the room it is in (see [`Room::key`]).
    room: String,
    address: Address,
    /// Set with mutual TLS: the nick comes from it and cannot change.
    certificate: Option<PeerCertificate>,
}

/// A room and what it remembers.
struct RoomState {
    id: RoomId,
    name: Room,
    /// By connection number.
    members: BTreeSet<ClientId>,
    /// How many members each shard holds: a line goes only to shards with
    /// someone in the room.
    per_shard: Vec<usize>,
    topic: Option<String>,
    /// The last chat and action lines, as they were sent.
    history: VecDeque<Arc<str>>,
}

/// Work for the shards, gathered during a round of events and handed over
/// at its end: one lock and at most one wake-up per shard per round.
struct Dispatch {
    shards: Vec<Shard>,
    batches: Vec<Vec<Work>>,
}

impl Dispatch {
    fn send_one(&mut self, to: Address, line: Outgoing) {
        self.batches[to.shard].push(Work::Deliver {
            line,
            to: To::One(to.slot),
        });
    }

    /// One message per shard with members in the room, not one per member.
    fn send_room(&mut self, room: &RoomState, line: Outgoing, except: Option<Address>) {
        for (shard, &count) in room.per_shard.iter().enumerate() {
            let except = except.filter(|a| a.shard == shard).map(|a| a.slot);
            if count == usize::from(except.is_some()) {
                continue;
            }
            self.batches[shard].push(Work::Deliver {
                line: line.clone(),
                to: To::Room {
                    room: room.id,
                    except,
                },
            });
        }
    }

    fn enter(&mut self, at: Address, room: RoomId) {
        self.batches[at.shard].push(Work::Enter(at.slot, room));
    }

    fn close(&mut self, at: Address) {
        self.batches[at.shard].push(Work::Close(at.slot));
    }

    fn reader_done(&mut self, at: Address) {
        self.batches[at.shard].push(Work::ReaderDone(at.slot));
    }

    /// Hands every shard what was gathered for it.
    fn hand_over(&mut self) {
        for (shard, batch) in self.shards.iter().zip(&mut self.batches) {
            shard.send_all(batch);
        }
    }
}

/// The hub's state. Only the hub thread ever holds it.
struct Hub {
    members: HashMap<ClientId, Member>,
    /// Members per address, counted only with `max_per_ip`.
    per_ip: HashMap<IpAddr, usize>,
    /// Who has which nick, by [`Nick::key`].
    nicks: HashMap<String, ClientId>,
    /// By [`Room::key`]; a `BTreeMap` so `/rooms` comes out sorted.
    rooms: BTreeMap<String, RoomState>,
    next_room: u64,
    settings: HubSettings,
    dispatch: Dispatch,
    budget: Arc<Budget>,
    /// When the hub last said in the log that it waits for writers.
    last_overload_warning: Option<Instant>,
}

/// The most events the hub handles before it hands the shards their work.
/// Bounds how long a line can wait in the hub: a round of 64 events takes
/// well under a millisecond.
const ROUND: usize = 64;

/// The log says at most this often that the hub waits for the writers.
const OVERLOAD_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The hub thread's loop: handles events until [`Event::Shutdown`], until
/// `stop` is set, or until every sender is gone; then closes every
/// connection it knows of.
///
/// Between events it checks the memory budget: while more lines wait for
/// the writers than the budget allows, it takes no new events, so the
/// readers wait to hand it theirs, and TCP slows the senders down.
pub fn run(
    events: Receiver<Event>,
    settings: HubSettings,
    shards: Vec<Shard>,
    budget: Arc<Budget>,
    stop: Arc<AtomicBool>,
) {
    let batches = shards.iter().map(|_| Vec::new()).collect();
    let mut hub = Hub {
        members: HashMap::new(),
        per_ip: HashMap::new(),
        nicks: HashMap::new(),
        rooms: BTreeMap::new(),
        next_room: 0,
        settings,
        dispatch: Dispatch { shards, batches },
        budget,
        last_overload_warning: None,
    };
    let mut unhandled = Vec::new();
    // Everything already waiting, up to a round's worth, is handled before
    // the shards get their work: under load each shard wakes once for many
    // lines; with one event at a time, nothing waits longer.
    let mut round = Vec::with_capacity(ROUND);
    'events: while events.recv_batch(&mut round, ROUND) {
        let mut batch = round.drain(..);
        while let Some(event) = batch.next() {
            if matches!(event, Event::Shutdown) || stop.load(Ordering::SeqCst) {
                unhandled.extend(batch);
                break 'events;
            }
            hub.handle(event);
            if hub.budget.is_over() {
                hub.wait_for_writers();
            }
        }
        hub.dispatch.hand_over();
    }
    // A client whose end was queued but never handled must still be let
    // go by its shard; those that end from now on find the queue closed
    // and tell their shard themselves.
    for event in unhandled.into_iter().chain(events.close()) {
        if let Event::Gone { address, .. } = event {
            hub.dispatch.reader_done(address);
        }
    }
    hub.shutdown();
}

impl Hub {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Ready {
                id,
                peer,
                address,
                certificate,
            } => self.join(id, peer, address, certificate),
            Event::Frame { id, frame } => self.frame(id, frame),
            Event::Throttled { id } => {
                self.error(
                    id,
                    "you are sending too fast: your lines are being delayed (none are lost)",
                );
            }
            Event::Gone {
                id,
                address,
                reason,
                public,
            } => {
                self.remove(id, public, &reason);
                self.dispatch.reader_done(address);
            }
            Event::Shutdown => unreachable!("handled by run"),
        }
    }

    /// Makes a line that counts against the memory budget until sent.
    fn line(&self, text: String) -> Outgoing {
        Outgoing::new(text, &self.budget)
    }

    /// Waits while the lines waiting for the writers take more than the
    /// memory budget. The shards first get what this round gathered: they
    /// can only send, and so make room, what they have been given.
    fn wait_for_writers(&mut self) {
        self.dispatch.hand_over();
        let now = Instant::now();
        let warn = self
            .last_overload_warning
            .is_none_or(|at| now.duration_since(at) >= OVERLOAD_WARNING_EVERY);
        let used = self.budget.used();
        if warn {
            self.last_overload_warning = Some(now);
            log::warn!(
                "overload: {} MiB of lines wait for the writers (--memory-budget {} MiB): \
                 taking no new lines until they catch up",
                used >> 20,
                self.budget.limit() >> 20
            );
        }
        if let Some(waited) = self.budget.wait_for_room() {
            log::debug!("overload over after {:.3} s", waited.as_secs_f64());
        }
    }

    /// A client finished its handshake: it gets a name and the lobby, or
    /// a refusal that says why.
    fn join(
        &mut self,
        id: ClientId,
        peer: SocketAddr,
        address: Address,
        certificate: Option<PeerCertificate>,
    ) {
        let count = self.members.len();
        let from_peer = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
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
            let line = self.line(ServerLine::Error(&why).to_wire());
            self.dispatch.send_one(address, line);
            self.dispatch.close(address);
            log::info!("{id} {peer}: refused: {why}");
            return;
        }
        let nick = nick.expect("refused above");
        log::info!("{id} {peer}: joined as {nick}");
        self.nicks.insert(nick.key(), id);
        if self.settings.max_per_ip.is_some() {
            *self.per_ip.entry(peer.ip()).or_default() += 1;
        }
        self.members.insert(
            id,
            Member {
                peer,
                nick: nick.clone(),
                room: String::new(),
                address,
                certificate,
            },
        );
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
        let member = &self.members[&id];
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
                    .filter_map(|m| self.members.get(m).map(|m| m.nick.as_str()))
                    .collect();
                nicks.sort_by_key(|n| n.to_ascii_lowercase());
                let text = format!("in {} ({}): {}", state.name, nicks.len(), nicks.join(", "));
                self.notice(id, &text);
            }
            Command::Whois(name) => match self.find_nick(name) {
                Some(other) => {
                    let member = &self.members[&other];
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
                    let recipient = self.members[&target].nick.clone();
                    let wire = ServerLine::Private {
                        from: nick.as_str(),
                        to: recipient.as_str(),
                        text,
                    }
                    .to_wire();
                    let line = self.line(wire);
                    self.deliver(target, line.clone());
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
                self.tell_room(&room, ServerLine::Notice(&text), None);
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
                let public = reason.map(str::to_string);
                self.remove_member(id, public.as_deref(), "said goodbye");
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
        if self.members[&id].certificate.is_some() {
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
        let member = self.members.get_mut(&id).expect("checked by frame");
        member.nick = new.clone();
        let room = member.room.clone();
        log::info!("{id}: {old} is now {new}");
        self.notice(id, &format!("you are now {new}"));
        let notice = format!("{old} is now {new}");
        self.tell_room(&room, ServerLine::Notice(&notice), Some(id));
    }

    /// Puts a member into a room, creating the room if needed, and shows it
    /// the room: who is there, the topic, the history.
    fn enter_room(&mut self, id: ClientId, room: Room) {
        let key = room.key();
        let shards = self.dispatch.shards.len();
        let next_room = &mut self.next_room;
        let state = self.rooms.entry(key.clone()).or_insert_with(|| {
            *next_room += 1;
            RoomState {
                id: RoomId(*next_room),
                name: room,
                members: BTreeSet::new(),
                per_shard: vec![0; shards],
                topic: None,
                history: VecDeque::new(),
            }
        });
        let member = self.members.get_mut(&id).expect("entering members exist");
        state.members.insert(id);
        state.per_shard[member.address.shard] += 1;
        member.room = key.clone();
        let (address, nick) = (member.address, member.nick.clone());
        let (room_id, name, here) = (state.id, state.name.clone(), state.members.len());
        let topic = state.topic.clone();
        let history: Vec<Arc<str>> = state.history.iter().cloned().collect();
        self.dispatch.enter(address, room_id);

        if here <= self.settings.announce_limit {
            let notice = format!("{nick} joined {name}");
            self.tell_room(&key, ServerLine::Notice(&notice), Some(id));
        }
        let people = if here == 1 { "person" } else { "people" };
        self.notice(id, &format!("you are in {name} ({here} {people} here)"));
        if let Some(topic) = topic {
            self.notice(id, &format!("topic of {name}: {topic}"));
        }
        for line in history {
            let line = self.line(ServerLine::History(&line).to_wire());
            self.deliver(id, line);
        }
    }

    /// Takes a member out of its room, telling those who stay; an empty
    /// room is forgotten, except the lobby.
    fn leave_room(&mut self, id: ClientId, room: &str, notice: &str) {
        let Some(shard) = self.members.get(&id).map(|m| m.address.shard) else {
            return;
        };
        let Some(was_here) = self.rooms.get(room).map(|state| state.members.len()) else {
            return;
        };
        if (2..=self.settings.announce_limit).contains(&was_here) {
            // Told while the leaver still counts as a member, as its shard
            // still has it in the room until told otherwise: it is left out
            // by name.
            self.tell_room(room, ServerLine::Notice(notice), Some(id));
        }
        let state = self.rooms.get_mut(room).expect("looked up above");
        state.members.remove(&id);
        state.per_shard[shard] -= 1;
        if state.members.is_empty() && state.name.as_str() != protocol::LOBBY {
            self.rooms.remove(room);
        }
    }

    /// A connection ended: if it was a member, it leaves the chat.
    fn remove(&mut self, id: ClientId, public: Option<&str>, reason: &str) {
        if self.members.contains_key(&id) {
            self.remove_member(id, public, reason);
        }
    }

    /// Takes a member out of the chat; its shard sends what is queued for
    /// it, then closes. `public` is the reason the room is told, if any.
    fn remove_member(&mut self, id: ClientId, public: Option<&str>, reason: &str) {
        let member = &self.members[&id];
        let (nick, room, peer) = (member.nick.clone(), member.room.clone(), member.peer);
        log::info!("{id} {peer}: {nick} left: {reason}");
        let notice = match public {
            None => format!("{nick} quit"),
            Some(why) => format!("{nick} quit: {why}"),
        };
        self.leave_room(id, &room, &notice);
        let member = self.members.remove(&id).expect("looked up above");
        self.nicks.remove(&nick.key());
        if let Some(count) = self.per_ip.get_mut(&peer.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&peer.ip());
            }
        }
        self.dispatch.close(member.address);
    }

    fn find_nick(&self, name: &str) -> Option<ClientId> {
        self.nicks.get(&name.to_ascii_lowercase()).copied()
    }

    fn room_name<'a>(&'a self, key: &'a str) -> &'a str {
        self.rooms.get(key).map_or(key, |state| state.name.as_str())
    }

    fn notice(&mut self, id: ClientId, text: &str) {
        let line = self.line(ServerLine::Notice(text).to_wire());
        self.deliver(id, line);
    }

    fn error(&mut self, id: ClientId, text: &str) {
        let line = self.line(ServerLine::Error(text).to_wire());
        self.deliver(id, line);
    }

    /// Queues one line for one member.
    fn deliver(&mut self, id: ClientId, line: Outgoing) {
        if let Some(member) = self.members.get(&id) {
            self.dispatch.send_one(member.address, line);
        }
    }

    /// A chat or action line: to everyone in the room, and into its history.
    fn say_in_room(&mut self, room: &str, line: ServerLine<'_>) {
        let line = self.line(line.to_wire());
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        if self.settings.history > 0 {
            if state.history.len() == self.settings.history {
                state.history.pop_front();
            }
            state.history.push_back(line.shared_text());
        }
        self.dispatch.send_room(state, line, None);
    }

    fn tell_room(&mut self, room: &str, line: ServerLine<'_>, except: Option<ClientId>) {
        let line = self.line(line.to_wire());
        self.fan_out(room, line, except);
    }

    /// Sends one line to a room: formatted once, shared by every recipient,
    /// and one message to each shard with members there.
    fn fan_out(&mut self, room: &str, line: Outgoing, except: Option<ClientId>) {
        let Some(state) = self.rooms.get(room) else {
            return;
        };
        let except = except
            .and_then(|id| self.members.get(&id))
            .map(|m| m.address);
        self.dispatch.send_room(state, line, except);
    }

    /// Says goodbye to every member and closes their connections.
    fn shutdown(&mut self) {
        let notice = self.line(ServerLine::Notice(SHUTDOWN_NOTICE).to_wire());
        for member in self.members.values() {
            self.dispatch.send_one(member.address, notice.clone());
            self.dispatch.close(member.address);
        }
        self.dispatch.hand_over();
    }
}

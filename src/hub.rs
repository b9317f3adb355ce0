//! The hub: the one thread that owns the chat, and hands each line to the
//! writers once.
//!
//! Reading threads never touch each other. They send the hub [`Event`]s,
//! through one bounded queue. The hub passes each to the [`Chat`], the
//! chat's state and rules as a plain value, and delivers what it answers:
//! one message per line per writer shard with someone in the room, however
//! many recipients. So the hub keeps only what delivery needs: where each
//! client's lines go (its shard and slot) and how many of each room's
//! members each shard holds. It knows shards, never sockets or TLS.
//!
//! With `--classic`, the hub runs the original app's rules
//! ([`Classic`]) instead of the chat's: the same events in, the same kind
//! of [`Output`]s out, so nothing else changes.
//!
//! Next: [`budget`](crate::budget), what the lines on their way cost, then
//! [`shard`](crate::shard), the writers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::budget::{Budget, Outgoing};
use crate::chat::{Chat, ChatSettings, ClientId, Keep, Output, PeerCertificate, RoomId};
use crate::classic::Classic;
use crate::cluster::{Claim, Delivery, Refused, Sent};
use crate::line::Frame;
use crate::linked::{self, Action, Linked, Local};
use crate::queue::Receiver;
use crate::seats::Seat;
use crate::shard::{Shard, Slot, To, Work};

/// Where a client's lines go: its writer shard, and its place there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// Index of the shard.
    pub shard: usize,
    /// The client's slot in that shard.
    pub slot: Slot,
}

/// What reading threads tell the hub.
#[derive(Debug)]
pub enum Event {
    /// The handshake succeeded, the server admitted the client, and a shard
    /// has the connection: the client may chat. Lines for it go to
    /// `address`.
    Ready {
        /// The connection.
        id: ClientId,
        /// Where it comes from.
        peer: SocketAddr,
        /// Its shard and slot.
        address: Address,
        /// The client's certificate, when the server asks for one.
        certificate: Option<PeerCertificate>,
        /// Its place in the chat, given back when the hub closes it.
        seat: Seat,
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
    /// The connection ended; nothing more comes from it. (Its reader tells
    /// its shard itself: the shard lets the client go once it has heard
    /// from both.)
    Gone {
        /// The connection.
        id: ClientId,
        /// Why, for the log.
        reason: String,
        /// What the room is told, if anything beyond "quit".
        public: Option<&'static str>,
    },
    /// The link to the other servers (`--redis`) delivered something.
    Cluster(Delivery),
    /// The server is stopping: tell everyone, close every connection.
    Shutdown,
}

/// Where one client's lines go, and which room its shard has it in.
struct Route {
    address: Address,
    room: Option<RoomId>,
    /// Let go with the route, when the client is closed: from the next
    /// event on, its place is free.
    _seat: Seat,
}

/// Work for the shards, gathered during a round of events and handed over
/// at its end: one lock and at most one wake-up per shard per round.
struct Dispatch {
    shards: Vec<Shard>,
    batches: Vec<Vec<Work>>,
}

impl Dispatch {
    fn push(&mut self, shard: usize, work: Work) {
        if let Some(batch) = self.batches.get_mut(shard) {
            batch.push(work);
        }
    }

    /// Hands every shard what was gathered for it.
    fn hand_over(&mut self) {
        for (shard, batch) in self.shards.iter().zip(&mut self.batches) {
            shard.send_all(batch);
        }
    }
}

/// The rules the hub runs, chosen at start: the chat's, or the original
/// app's. Both take the same events and answer in [`Output`]s; each
/// method below only says which one to ask.
enum Rules {
    Chat(Box<Chat>),
    Classic(Classic),
}

impl Rules {
    /// `node_number`: linked, this server's number among those sharing
    /// the Redis.
    fn new(settings: ChatSettings, classic: bool, node_number: Option<u64>) -> Rules {
        match (classic, node_number) {
            (true, _) => Rules::Classic(Classic::new(settings.max_line)),
            (false, Some(number)) => Rules::Chat(Box::new(Chat::linked(settings, number))),
            (false, None) => Rules::Chat(Box::new(Chat::new(settings))),
        }
    }

    /// The chat, for what only it has (rooms that live beyond this
    /// server). The original app's rules have no rooms.
    fn chat(&mut self) -> Option<&mut Chat> {
        match self {
            Rules::Chat(chat) => Some(chat),
            Rules::Classic(_) => None,
        }
    }

    fn join(
        &mut self,
        id: ClientId,
        peer: SocketAddr,
        certificate: Option<PeerCertificate>,
        out: &mut Vec<Output>,
    ) {
        match self {
            Rules::Chat(chat) => chat.join(id, peer, certificate, out),
            Rules::Classic(classic) => classic.join(id, peer, certificate, out),
        }
    }

    fn line(&mut self, id: ClientId, frame: Frame, out: &mut Vec<Output>) {
        match self {
            Rules::Chat(chat) => chat.line(id, frame, out),
            Rules::Classic(classic) => classic.line(id, frame, out),
        }
    }

    fn throttled(&mut self, id: ClientId, out: &mut Vec<Output>) {
        match self {
            Rules::Chat(chat) => chat.throttled(id, out),
            Rules::Classic(classic) => classic.throttled(id, out),
        }
    }

    fn left(&mut self, id: ClientId, public: Option<&str>, reason: &str, out: &mut Vec<Output>) {
        match self {
            Rules::Chat(chat) => chat.left(id, public, reason, out),
            Rules::Classic(classic) => classic.left(id, public, reason, out),
        }
    }

    fn shutdown(&mut self, out: &mut Vec<Output>) {
        match self {
            Rules::Chat(chat) => chat.shutdown(out),
            Rules::Classic(classic) => classic.shutdown(out),
        }
    }
}

/// The hub's state. Only the hub thread ever holds it.
struct Hub {
    /// Who is here and what each event means: the chat, or `--classic`.
    rules: Rules,
    /// Every client the chat may speak of, from its `Ready` to its close.
    routes: HashMap<ClientId, Route>,
    /// Per room, how many of its members each shard holds: a room's line
    /// goes only to the shards with someone there.
    rooms: HashMap<RoomId, Vec<usize>>,
    dispatch: Dispatch,
    budget: Arc<Budget>,
    /// What the chat answered to the event in hand; kept for its allocation.
    outputs: Vec<Output>,
    /// When the hub last said in the log that it waits for writers.
    last_overload_warning: Option<Instant>,
    /// With `--redis`: the link to the other servers, through which every
    /// room line goes before anyone here sees it.
    linked: Option<Linked>,
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
///
/// `classic` runs the original app's rules ([`Classic`]) instead of the
/// chat's. `linked` makes this server one of several that share their
/// rooms through Redis ([`linked`]); what the link
/// delivers arrives as [`Event::Cluster`].
pub fn run(
    events: Receiver<Event>,
    settings: ChatSettings,
    classic: bool,
    linked: Option<Linked>,
    shards: Vec<Shard>,
    budget: Arc<Budget>,
    stop: Arc<AtomicBool>,
) {
    let batches = shards.iter().map(|_| Vec::new()).collect();
    let mut hub = Hub {
        rules: Rules::new(settings, classic, linked.as_ref().map(Linked::number)),
        linked,
        routes: HashMap::new(),
        rooms: HashMap::new(),
        dispatch: Dispatch { shards, batches },
        budget,
        outputs: Vec::new(),
        last_overload_warning: None,
    };
    // Everything already waiting, up to a round's worth, is handled before
    // the shards get their work: under load each shard wakes once for many
    // lines; with one event at a time, nothing waits longer.
    let mut round = Vec::with_capacity(ROUND);
    'events: while events.recv_batch(&mut round, ROUND) {
        for event in round.drain(..) {
            if matches!(event, Event::Shutdown) || stop.load(Ordering::SeqCst) {
                break 'events;
            }
            hub.handle(event);
            if hub.budget.is_over() {
                hub.wait_for_writers();
            }
        }
        hub.dispatch.hand_over();
    }
    // Events still queued are dropped: the shards close every connection
    // at shutdown, and each reader tells its own shard when it is done.
    hub.shutdown();
}

impl Hub {
    fn handle(&mut self, event: Event) {
        let mut out = std::mem::take(&mut self.outputs);
        match event {
            Event::Ready {
                id,
                peer,
                address,
                certificate,
                seat,
            } => {
                let route = Route {
                    address,
                    room: None,
                    _seat: seat,
                };
                self.routes.insert(id, route);
                self.rules.join(id, peer, certificate, &mut out);
            }
            Event::Frame { id, frame } => self.rules.line(id, frame, &mut out),
            Event::Throttled { id } => self.rules.throttled(id, &mut out),
            Event::Gone { id, reason, public } => {
                self.rules.left(id, public, &reason, &mut out);
                // The rules close everyone they knew; this is for one they
                // never heard of, so that its shard lets it go all the same.
                out.push(Output::Close { id });
            }
            Event::Cluster(delivery) => {
                if let Some(linked) = &mut self.linked {
                    let action = linked.delivered(delivery);
                    self.act(action, &mut out);
                }
            }
            // Handled by `run`; harmless if it ever arrives here.
            Event::Shutdown => {}
        }
        self.deliver(&mut out);
        if let Some(linked) = &mut self.linked {
            linked.event_done();
            linked.pump();
        }
        self.outputs = out;
    }

    /// Does what the link's delivery calls for.
    fn act(&mut self, action: Action, out: &mut Vec<Output>) {
        let Some(chat) = self.rules.chat() else {
            return;
        };
        match action {
            Action::Nothing => {}
            Action::Line(line) => self.show_here(line),
            Action::Recent {
                room,
                lines,
                topic,
                then,
            } => {
                chat.recent(room, lines, topic, out);
                self.deliver(out);
                for line in then {
                    self.show_here(line);
                }
            }
            Action::Claimed(name, claim) => chat.claimed(&name, claim, out),
            Action::NameLost(name, lapsed) => chat.name_lost(&name, lapsed, out),
            Action::AnswerHere { id, query, page } => {
                chat.answer_here(id, &query, page.as_deref(), out);
            }
            Action::PrivateIn(to, line) => chat.private_in(&to, &line, out),
            Action::PrivateSent {
                from,
                to,
                line,
                sent,
            } => chat.private_sent(from, &to, &line, sent, out),
            Action::Question { run, ticket, query } => {
                let answer = chat.local_answer(&query);
                if let Some(linked) = &self.linked {
                    linked.reply(&run, ticket, &answer);
                }
            }
            Action::Answered {
                id,
                query,
                page,
                parts,
                reach,
            } => chat.answered(id, &query, page.as_deref(), &parts, reach, out),
            Action::TellRoom(room, text) => chat.tell_room(room, &text, out),
            Action::LinkUp { history_lost } => {
                chat.set_link_up(true);
                let notice = if history_lost {
                    // New guests get the server's new number.
                    if let Some(linked) = &self.linked {
                        chat.set_node_number(linked.number());
                    }
                    linked::LINK_UP_HISTORY_LOST
                } else {
                    linked::LINK_UP
                };
                chat.tell_everyone(notice, out);
            }
            Action::LinkDown(lines) => {
                chat.set_link_up(false);
                chat.tell_everyone(linked::LINK_DOWN, out);
                self.deliver(out);
                for line in lines {
                    self.show_here(line);
                }
            }
        }
    }

    /// A room line shown here now: the room keeps what it should of it,
    /// and its members here get it.
    fn show_here(&mut self, line: Local) {
        if let Some(chat) = self.rules.chat() {
            chat.heard(line.room, &line.line, &line.keep);
        }
        self.send_room(line.room, line.line, line.except);
    }

    /// A room line the rules said: with the link, it goes to Redis first
    /// (or, if it cannot, is shown here alone); without, straight to the
    /// room.
    fn room_line(&mut self, room: RoomId, line: Arc<str>, except: Option<ClientId>, keep: Keep) {
        let Some(linked) = &mut self.linked else {
            return self.send_room(room, line, except);
        };
        let local = Local {
            room,
            line,
            except,
            keep,
        };
        let rules = &mut self.rules;
        let key = || rules.chat().and_then(|chat| chat.room_key(room));
        if let Some(local) = linked.say(local, key) {
            self.show_here(local);
        }
    }

    /// Turns what the rules said into work for the shards, in order.
    fn deliver(&mut self, out: &mut Vec<Output>) {
        // What the chat answers when the link refuses at once: delivered
        // after the rest.
        let mut answers = Vec::new();
        for output in out.drain(..) {
            match output {
                Output::Claim { name } => {
                    let refused = match self.linked.as_ref().map(|linked| linked.claim(&name)) {
                        Some(Err(Refused::Full)) => Claim::Busy,
                        Some(Err(Refused::Down)) => Claim::Down,
                        _ => continue,
                    };
                    if let Some(chat) = self.rules.chat() {
                        chat.claimed(&name, refused, &mut answers);
                    }
                }
                Output::Hold { name } => {
                    if let Some(linked) = &self.linked {
                        linked.hold(&name);
                    }
                }
                Output::Release { name } => {
                    if let Some(linked) = &self.linked {
                        linked.release(&name);
                    }
                }
                Output::Query { id, query, page } => {
                    let Some(linked) = &mut self.linked else {
                        continue;
                    };
                    if linked.query(id, query.clone(), page.clone()).is_err() {
                        if let Some(chat) = self.rules.chat() {
                            chat.answer_here(id, &query, page.as_deref(), &mut answers);
                        }
                    }
                }
                Output::Private { from, to, line } => {
                    let Some(linked) = &mut self.linked else {
                        continue;
                    };
                    if linked.private(from, to.clone(), Arc::clone(&line)).is_err() {
                        if let Some(chat) = self.rules.chat() {
                            chat.private_sent(from, &to, &line, Sent::Down, &mut answers);
                        }
                    }
                }
                Output::To { id, line } => {
                    if let Some(route) = self.routes.get(&id) {
                        let work = Work::Deliver {
                            line: Outgoing::new(line, &self.budget),
                            to: To::One(route.address.slot),
                        };
                        self.dispatch.push(route.address.shard, work);
                    }
                }
                Output::ToRoom {
                    room,
                    line,
                    except,
                    keep,
                } => self.room_line(room, line, except, keep),
                Output::Enter { id, room } => {
                    let Some(route) = self.routes.get_mut(&id) else {
                        continue;
                    };
                    let shards = self.dispatch.shards.len();
                    let address = route.address;
                    if let Some(old) = route.room.replace(room) {
                        self.leave(old, address.shard);
                    }
                    let new = !self.rooms.contains_key(&room);
                    let counts = self.rooms.entry(room).or_insert_with(|| vec![0; shards]);
                    if let Some(count) = counts.get_mut(address.shard) {
                        *count += 1;
                    }
                    if new {
                        let key = self.rules.chat().and_then(|chat| chat.room_key(room));
                        if let (Some(linked), Some(key)) = (&mut self.linked, key) {
                            linked.entered(room, key);
                        }
                    }
                    self.dispatch
                        .push(address.shard, Work::Enter(address.slot, room));
                }
                Output::Close { id } => {
                    let Some(route) = self.routes.remove(&id) else {
                        continue;
                    };
                    if let Some(room) = route.room {
                        self.leave(room, route.address.shard);
                    }
                    let address = route.address;
                    self.dispatch.push(address.shard, Work::Close(address.slot));
                }
            }
        }
        if !answers.is_empty() {
            self.deliver(&mut answers);
        }
    }

    /// One message per shard with members in the room, not one per member.
    fn send_room(&mut self, room: RoomId, line: Arc<str>, except: Option<ClientId>) {
        let Some(counts) = self.rooms.get(&room) else {
            return;
        };
        let except = except
            .and_then(|id| self.routes.get(&id))
            .map(|route| route.address);
        let line = Outgoing::new(line, &self.budget);
        for (shard, &count) in counts.iter().enumerate() {
            let except = except.filter(|a| a.shard == shard).map(|a| a.slot);
            if count <= usize::from(except.is_some()) {
                continue;
            }
            let work = Work::Deliver {
                line: line.clone(),
                to: To::Room { room, except },
            };
            self.dispatch.push(shard, work);
        }
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
        if let Some(overload) = self.budget.overload().filter(|_| warn) {
            self.last_overload_warning = Some(now);
            log::warn!("{overload}");
        }
        if let Some(waited) = self.budget.wait_for_room() {
            log::debug!("overload over after {:.3} s", waited.as_secs_f64());
        }
    }

    /// Says goodbye to every member and closes every connection the hub
    /// knows of.
    fn shutdown(&mut self) {
        let mut out = std::mem::take(&mut self.outputs);
        self.rules.shutdown(&mut out);
        // Anyone the rules did not know (refused, or between its `Ready`
        // and its close) is closed too.
        out.extend(self.routes.keys().map(|&id| Output::Close { id }));
        self.deliver(&mut out);
        self.dispatch.hand_over();
    }

    /// One member of `room` fewer on `shard`; a room nobody here is in is
    /// forgotten (and, linked, no longer heard).
    fn leave(&mut self, room: RoomId, shard: usize) {
        if let Some(counts) = self.rooms.get_mut(&room) {
            if let Some(count) = counts.get_mut(shard) {
                *count = count.saturating_sub(1);
            }
            if counts.iter().all(|&count| count == 0) {
                self.rooms.remove(&room);
                if let Some(linked) = &mut self.linked {
                    linked.emptied(room);
                }
            }
        }
    }
}

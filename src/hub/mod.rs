//! The hub: the one thread that owns the chat, and hands each line to the
//! writers once.
//!
//! Reading threads never touch each other: they send the hub [`Event`]s
//! through one bounded queue. The hub gives each to the [`Chat`] and
//! delivers what it answers: one message per line per writer shard with
//! someone in the room, however many recipients. It keeps only what
//! delivery needs (`routing`), and knows shards, never sockets or TLS.
//! Room lines pass the seam to other servers, [`Elsewhere`], on the way.
//! With `--classic` it runs the original app's rules ([`Classic`]): the
//! same events in, the same [`Output`]s out.
//!
//! Next: [`budget`](crate::budget), what the lines on their way cost, then
//! [`shard`](crate::shard), the writers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::budget::{Budget, Outgoing};
use crate::chat::{
    Chat, ChatSettings, ClientId, CloseReason, Keep, Output, PeerCertificate, RoomId, RoomLine,
    Save,
};
use crate::classic::Classic;
use crate::elsewhere::{Arrival, Ask, Elsewhere, Told};
use crate::line::Frame;
use crate::metrics::HubFigures;
use crate::queue::Receiver;
use crate::seats::Seat;
use crate::shard::{Shard, Slot, To, Work};
use crate::store::{Change, Feed, Kept};
use crate::tls::Fingerprint;

mod routing;

use routing::Routing;

/// Where a client's lines go: its writer shard, and its slot there.
pub type Address = routing::Place<Slot>;

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
    /// Something arrived from the other servers this chat is shared with
    /// (see [`Elsewhere`]).
    Elsewhere(Arrival),
    /// The server operators, by key, from now on (`--operators`, read
    /// at start and on SIGHUP: see [`Operators`](crate::operators::Operators)).
    Operators(Vec<Fingerprint>),
    /// The server is stopping: tell everyone, close every connection.
    Shutdown,
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
    /// Shared with other servers, the chat names its guests as
    /// `elsewhere` says ([`Elsewhere::guest_prefix`]).
    fn new(settings: ChatSettings, classic: bool, elsewhere: &impl Elsewhere) -> Rules {
        match (classic, elsewhere.guest_prefix()) {
            (true, _) => Rules::Classic(Classic::new(settings.max_line)),
            (false, Some(prefix)) => Rules::Chat(Box::new(Chat::shared(settings, prefix))),
            (false, None) => Rules::Chat(Box::new(Chat::new(settings))),
        }
    }

    /// A room's name on every server, for the seam; none in classic mode.
    fn room_key(&self, room: RoomId) -> Option<String> {
        match self {
            Rules::Chat(chat) => chat.room_key(room),
            Rules::Classic(_) => None,
        }
    }

    /// The chat, for what only it has (rooms, and what the other servers
    /// tell it). The original app's rules have no rooms.
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
struct Hub<E> {
    /// Who is here and what each event means: the chat, or `--classic`.
    rules: Rules,
    /// Every client the chat may speak of, from its `Ready` to its
    /// close, and per room how many of its members each shard holds.
    routing: Routing<Slot>,
    dispatch: Dispatch,
    budget: Arc<Budget>,
    /// What the chat answered to the event in hand; kept for its allocation.
    outputs: Vec<Output>,
    /// When the hub last said in the log that it waits for writers.
    last_overload_warning: Option<Instant>,
    /// The other servers this chat is shared with, if any: every room
    /// line goes through it ([`Elsewhere::say`]) before anyone here sees
    /// it.
    elsewhere: E,
    /// What the hub counts for the metrics; only this thread adds to it.
    figures: Arc<HubFigures>,
    /// With a store (a server alone, not `--classic`): where what the
    /// rooms keep goes on its way to the disk.
    store: Option<Feed>,
}

/// The most events the hub handles before it hands the shards their work.
/// Bounds how long a line can wait in the hub: a round of 64 events takes
/// well under a millisecond.
const ROUND: usize = 64;

/// The log says at most this often that the hub waits for the writers.
const OVERLOAD_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The hub thread's loop: handles events until [`Event::Shutdown`], until
/// `stop` is set, or until every sender is gone; then closes every
/// connection it knows of. `classic` runs the original app's rules
/// ([`Classic`]); `elsewhere` is [`Alone`](crate::elsewhere::Alone) for a
/// server alone. What it counts goes into `figures`. With `store`, the chat starts with the rooms it gave
/// back, and what the rooms keep from then on goes to it.
// Each argument is one thing the hub is handed to own; a struct around
// them would only move the list.
#[allow(clippy::too_many_arguments)]
pub fn run<E: Elsewhere>(
    events: Receiver<Event>,
    settings: ChatSettings,
    classic: bool,
    elsewhere: E,
    shards: Vec<Shard>,
    budget: Arc<Budget>,
    stop: Arc<AtomicBool>,
    figures: Arc<HubFigures>,
    store: Option<Kept>,
) {
    let mut hub = Hub::new(settings, classic, elsewhere, shards, budget, figures);
    if let Some(kept) = store {
        hub.restore(kept);
    }
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

impl<E: Elsewhere> Hub<E> {
    fn new(
        settings: ChatSettings,
        classic: bool,
        elsewhere: E,
        shards: Vec<Shard>,
        budget: Arc<Budget>,
        figures: Arc<HubFigures>,
    ) -> Hub<E> {
        let batches = shards.iter().map(|_| Vec::new()).collect();
        Hub {
            rules: Rules::new(settings, classic, &elsewhere),
            elsewhere,
            routing: Routing::new(shards.len()),
            dispatch: Dispatch { shards, batches },
            budget,
            outputs: Vec::new(),
            last_overload_warning: None,
            figures,
            store: None,
        }
    }

    /// Before the first event: the chat takes back the rooms the store
    /// kept, with their moderation rules, and the server's bans; from now on keeps rooms that empty while they keep
    /// something, and the store gets what they keep.
    fn restore(&mut self, Kept { feed, loaded }: Kept) {
        let Some(chat) = self.rules.chat() else {
            return;
        };
        chat.keep_empty_rooms();
        // A room with rules alone is not made: the rules wait by its key
        // for whoever makes it, and `/rooms` does not list an empty room
        // that keeps nothing to show.
        let shown = loaded
            .rooms
            .iter()
            .filter(|room| room.topic.is_some() || !room.lines.is_empty());
        for room in shown {
            if let Err(why) = chat.restore_room(&room.name, room.topic.as_deref(), &room.lines) {
                log::warn!("store: a room was not restored: {why}");
            }
        }
        for room in &loaded.rooms {
            if let Some(rules) = &room.rules {
                if let Err(why) = chat.restore_rules(&room.name, rules) {
                    log::warn!("store: the rules of {} were not restored: {why}", room.name);
                }
            }
        }
        if let Some(bans) = &loaded.server_bans {
            if let Err(why) = chat.restore_server_bans(bans) {
                log::warn!("store: the server's bans were not restored: {why}");
            }
        }
        self.store = Some(feed);
    }

    /// One event: the rules say what follows, and the hub delivers it.
    fn handle(&mut self, event: Event) {
        let mut out = std::mem::take(&mut self.outputs);
        match event {
            Event::Frame { id, frame } => {
                self.figures.lines_in.add(1);
                self.rules.line(id, frame, &mut out);
            }
            event => self.not_a_line(event, &mut out),
        }
        self.deliver(&mut out);
        self.elsewhere.event_done();
        self.outputs = out;
    }

    /// Turns what the rules said into work for the shards, in order.
    fn deliver(&mut self, out: &mut Vec<Output>) {
        // What the chat answers when an ask cannot go: delivered after the
        // rest.
        let mut answers = Vec::new();
        for output in out.drain(..) {
            match output {
                Output::ToRoom(line) => self.room_line(line),
                Output::To { id, line } => self.send_one(id, line),
                Output::Enter { id, room } => self.enter(id, room),
                Output::Close { id, why } => self.close(id, why),
                Output::Elsewhere(ask) => self.ask(ask, &mut answers),
                Output::Save(save) => self.save(save),
            }
        }
        if !answers.is_empty() {
            self.deliver(&mut answers);
        }
    }

    /// Moderation rules that changed go to the store, with one; shared,
    /// to the other servers (Redis is the store then: a shared server has
    /// no local one, so nothing is written twice); else they live in
    /// memory only.
    fn save(&mut self, save: Save) {
        let Some(feed) = &mut self.store else {
            return self.elsewhere.save(save);
        };
        feed.save(match save {
            Save::Rules { room, rules } => Change::Rules { room, text: rules },
            Save::ServerBans(bans) => Change::ServerBans(bans),
        });
    }

    /// A room line the rules said: shown here now, unless it went to the
    /// other servers first (to be shown when it comes back).
    fn room_line(&mut self, line: RoomLine) {
        let (rules, room) = (&self.rules, line.room);
        if let Some(line) = self.elsewhere.say(line, &|| rules.room_key(room)) {
            self.show_here(line);
        }
    }

    /// A room line shown here now: the room keeps what it should of it,
    /// and its members here get it, in one message per shard with members
    /// in the room, not one per member.
    fn show_here(&mut self, line: RoomLine) {
        self.figures.room_lines.add(1);
        if let Some(chat) = self.rules.chat() {
            chat.heard(line.room, &line.line, &line.keep);
        }
        let room = line.room;
        if let (Some(feed), Rules::Chat(chat)) = (&mut self.store, &self.rules) {
            let name = || chat.room_name_as_written(room);
            match &line.keep {
                Keep::Nothing => {}
                Keep::History => feed.line(room, name, &line.line),
                Keep::Topic(topic) => feed.topic(room, name, topic),
            }
        }
        // Nobody here in the room (a new room's first notice, a linked line
        // after the last member here left): no charge for a line nobody gets.
        let mut shards = self.routing.shards_of(room, line.except).peekable();
        if shards.peek().is_none() {
            return;
        }
        let text = Outgoing::new(line.line, &self.budget);
        for (shard, except) in shards {
            let line = text.clone();
            let to = To::Room { room, except };
            self.dispatch.push(shard, Work::Deliver { line, to });
        }
    }

    /// Every event but a line (`handle` takes those) and the shutdown
    /// (`run` stops there): a client ready or gone, a flood, news from the
    /// other servers.
    fn not_a_line(&mut self, event: Event, out: &mut Vec<Output>) {
        match event {
            Event::Ready {
                id,
                peer,
                address,
                certificate,
                seat,
            } => {
                self.routing.add(id, address, seat);
                self.rules.join(id, peer, certificate, out);
            }
            Event::Throttled { id } => self.rules.throttled(id, out),
            Event::Gone { id, reason, public } => {
                self.rules.left(id, public, &reason, out);
                // The rules close everyone they knew; this is for one they
                // never heard of, so that its shard lets it go all the same.
                out.push(Output::Close {
                    id,
                    why: CloseReason::Left,
                });
            }
            Event::Elsewhere(arrival) => self.arrived(arrival, out),
            Event::Operators(keys) => {
                if let Some(chat) = self.rules.chat() {
                    chat.set_operators(keys);
                }
            }
            Event::Frame { .. } | Event::Shutdown => {
                unreachable!("`handle` takes the lines, and `run` stops at a shutdown")
            }
        }
    }

    /// Does what the other servers' news calls for: the chat takes it,
    /// but for a room line come back, shown here, and the questions to
    /// answer.
    fn arrived(&mut self, arrival: Arrival, out: &mut Vec<Output>) {
        let told = self.elsewhere.arrived(arrival);
        let Some(chat) = self.rules.chat() else {
            return;
        };
        match told {
            // Every room line of a linked server comes back this way: shown
            // at once, with nothing for the chat to decide; a batch in one
            // event, so the writers get it in one hand-over.
            Told::Lines(lines) => {
                for line in lines {
                    self.show_here(line);
                }
            }
            Told::Question { asker, query } => {
                let answer = chat.local_answer(&query);
                self.elsewhere.answer(&asker, &answer);
            }
            told => {
                let then = chat.told(told, out);
                self.deliver(out);
                for line in then {
                    self.show_here(line);
                }
            }
        }
    }

    /// A line for one client.
    fn send_one(&mut self, id: ClientId, line: Arc<str>) {
        if let Some(place) = self.routing.place(id) {
            let work = Work::Deliver {
                line: Outgoing::new(line, &self.budget),
                to: To::One(place.slot),
            };
            self.dispatch.push(place.shard, work);
        }
    }

    /// `id` is in `room` from now on: its shard is told, and the other
    /// servers when it is the first here in `room` or the last in its old one.
    fn enter(&mut self, id: ClientId, room: RoomId) {
        let Some(moved) = self.routing.enter(id, room) else {
            return;
        };
        if let Some(room) = moved.emptied {
            self.elsewhere.emptied(room);
            if let Some(feed) = &mut self.store {
                feed.forget(room);
            }
        }
        if moved.opened.is_some() {
            let rules = &self.rules;
            self.elsewhere.entered(room, &|| rules.room_key(room));
        }
        let place = moved.place;
        self.dispatch
            .push(place.shard, Work::Enter(place.slot, room));
    }

    /// `id` is closed once what is queued for it is sent, for `why`.
    fn close(&mut self, id: ClientId, why: CloseReason) {
        let Some(moved) = self.routing.close(id) else {
            return;
        };
        if let Some(room) = moved.emptied {
            self.elsewhere.emptied(room);
            if let Some(feed) = &mut self.store {
                feed.forget(room);
            }
        }
        let place = moved.place;
        self.dispatch
            .push(place.shard, Work::Close(place.slot, why));
    }

    /// Hands the other servers what the chat asks; if it cannot go, what
    /// the chat answers instead goes into `answers`.
    fn ask(&mut self, ask: Ask, answers: &mut Vec<Output>) {
        if let Err((ask, why)) = self.elsewhere.ask(ask) {
            if let Some(chat) = self.rules.chat() {
                chat.unasked(ask, why, answers);
            }
        }
    }

    /// Waits while the lines waiting for the writers take more than the
    /// memory budget: the hub takes no new events, so the readers wait to
    /// hand it theirs, and TCP slows the senders down. The shards first get
    /// what this round gathered: they can only send, and so make room, what
    /// they have been given.
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
            self.figures.paused(waited);
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
        let why = CloseReason::Shutdown;
        out.extend(self.routing.clients().map(|id| Output::Close { id, why }));
        self.deliver(&mut out);
        self.dispatch.hand_over();
    }
}
